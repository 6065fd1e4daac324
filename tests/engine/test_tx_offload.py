"""The C TX offload engine against scapy: checksum completion, TSO4/TSO6,
USO and UFO produce exactly what a correct stack puts on the wire, for any
payload size, MSS, IP version, VLAN tagging, TCP options and guest buffer
layout; malformed requests are dropped and counted by reason."""
from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Ether

from vnic.net.tx_engine import (
    ALL_TX_OFFLOADS,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    GSO_UDP_L4,
    NEEDS_CSUM,
    NetHdr,
    TxDropped,
    TxEngine,
)
from vnic.virtio.features import F

from .frames import checksums_valid, offsets, partial_csum, tcp_frame, udp_frame

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TCP_OPTIONS = st.sampled_from([(), (("MSS", 1460),), (("NOP", None), ("NOP", None), ("Timestamp", (1, 2)))])


@pytest.fixture(scope="module")
def engine():
    return TxEngine()


def cuts_for(length: int, data) -> list[int]:
    """Guest buffer boundaries anywhere in the frame, odd offsets included."""
    points = data.draw(st.lists(st.integers(1, max(1, length - 1)), max_size=6, unique=True))
    return sorted(points)


def bounded_mss(mss: int, size: int) -> int:
    """At most 64 segments per super-frame (Linux's default GSO limit)."""
    return max(min(mss, size), math.ceil(size / 64))


def gso_hdr(frame: bytes, gso_type: int, mss: int) -> NetHdr:
    _, l4, hdr_len = offsets(frame)
    csum_off = 16 if gso_type in (GSO_TCPV4, GSO_TCPV6) or gso_type & GSO_ECN else 6
    return NetHdr(NEEDS_CSUM, gso_type, hdr_len, mss, l4, csum_off)


# ---- checksum completion -----------------------------------------------------

@SETTINGS
@given(size=st.integers(0, 3000), v6=st.booleans(), vlans=st.integers(0, 2),
       udp=st.booleans(), data=st.data())
def test_checksum_completion(engine, size, v6, vlans, udp, data):
    payload = data.draw(st.binary(min_size=size, max_size=size))
    frame = udp_frame(payload, v6, vlans) if udp else tcp_frame(payload, v6, vlans)
    _, l4, _ = offsets(frame)
    guest = partial_csum(frame)
    out = engine.run(NetHdr(NEEDS_CSUM, GSO_NONE, 0, 0, l4, 6 if udp else 16), guest,
                     cuts_for(len(guest), data))
    assert out == [frame]          # scapy computed the same checksum when it built the frame
    assert checksums_valid(out[0])


# ---- TCP segmentation ---------------------------------------------------------

@SETTINGS
@given(size=st.integers(1, 20000), mss=st.integers(64, 9000), v6=st.booleans(),
       vlans=st.integers(0, 2), options=TCP_OPTIONS, fin=st.booleans(), cwr=st.booleans(),
       data=st.data())
def test_tso(engine, size, mss, v6, vlans, options, fin, cwr, data):
    mss = bounded_mss(mss, size)
    payload = bytes((i * 7 + size) & 0xFF for i in range(size))
    flags = "PA" + ("F" if fin else "") + ("C" if cwr else "")
    frame = tcp_frame(payload, v6, vlans, options, flags=flags, seq=0xFFFFF000)
    gso_type = (GSO_TCPV6 if v6 else GSO_TCPV4) | (GSO_ECN if cwr else 0)
    frames = engine.run(gso_hdr(frame, gso_type, mss), partial_csum(frame), cuts_for(len(frame), data))

    n = math.ceil(size / mss)
    assert len(frames) == n
    original = Ether(frame)
    got = b""
    for i, raw in enumerate(frames):
        p = Ether(raw)
        assert checksums_valid(raw), f"segment {i}: bad checksum"
        seg = bytes(p[TCP].payload)
        assert len(seg) == (mss if i < n - 1 else size - mss * (n - 1))
        assert p[TCP].seq == (0xFFFFF000 + mss * i) & 0xFFFFFFFF
        assert p[TCP].options == original[TCP].options
        assert (p[TCP].sport, p[TCP].dport, p[TCP].window, p[TCP].ack) == \
               (original[TCP].sport, original[TCP].dport, original[TCP].window, original[TCP].ack)
        last, first = i == n - 1, i == 0
        assert bool(p[TCP].flags & 0x01) == (fin and last)          # FIN only on the last
        assert bool(p[TCP].flags & 0x08) == last                    # PSH only on the last
        assert bool(p[TCP].flags & 0x80) == (cwr and first)         # CWR only on the first
        if v6:
            assert p[IPv6].plen == len(raw) - offsets(raw)[0] - 40
        else:
            assert p[IP].len == len(raw) - offsets(raw)[0]
            assert p[IP].id == (7 + i) & 0xFFFF and p[IP].flags == "DF"
        got += seg
    assert got == payload


# ---- UDP segmentation (USO) ----------------------------------------------------

@SETTINGS
@given(size=st.integers(1, 20000), mss=st.integers(8, 9000), v6=st.booleans(),
       vlans=st.integers(0, 2), data=st.data())
def test_uso(engine, size, mss, v6, vlans, data):
    mss = bounded_mss(mss, size)
    payload = bytes((i * 13) & 0xFF for i in range(size))
    frame = udp_frame(payload, v6, vlans)
    frames = engine.run(gso_hdr(frame, GSO_UDP_L4, mss), partial_csum(frame), cuts_for(len(frame), data))
    n = math.ceil(size / mss)
    assert len(frames) == n
    got = b""
    for i, raw in enumerate(frames):
        p = Ether(raw)
        assert checksums_valid(raw)
        seg = bytes(p[UDP].payload)
        assert p[UDP].len == 8 + len(seg)
        assert len(seg) == (mss if i < n - 1 else size - mss * (n - 1))
        if not v6:
            assert p[IP].id == (9 + i) & 0xFFFF
        got += seg
    assert got == payload


# ---- UDP fragmentation (UFO) ----------------------------------------------------

@SETTINGS
@given(size=st.integers(1, 20000), mss=st.integers(8, 8000), v6=st.booleans(),
       vlans=st.integers(0, 2), data=st.data())
def test_ufo(engine, size, mss, v6, vlans, data):
    payload = bytes((i * 5 + 1) & 0xFF for i in range(size))
    frame = udp_frame(payload, v6, vlans)
    mss = max(8, bounded_mss(mss, size + 8))
    frag = mss & ~7
    frames = engine.run(gso_hdr(frame, GSO_UDP, mss), partial_csum(frame), cuts_for(len(frame), data))
    datagram_len = 8 + size
    n = math.ceil(datagram_len / frag)
    assert len(frames) == n
    reassembled = b""
    ids = set()
    for i, raw in enumerate(frames):
        p = Ether(raw)
        assert checksums_valid(raw, l4=False)
        more = i < n - 1
        if v6:
            fh = p[IPv6ExtHdrFragment]
            assert (fh.offset * 8, fh.m, fh.nh) == (i * frag, int(more), 17)
            ids.add(fh.id)
            body = bytes(fh.payload)
        else:
            assert (p[IP].frag * 8, bool(p[IP].flags.MF), p[IP].flags.DF) == (i * frag, more, False)
            ids.add(p[IP].id)
            body = bytes(p[IP].payload)
        assert len(body) == (frag if more else datagram_len - frag * (n - 1))
        reassembled += body
    assert len(ids) == 1                     # one datagram, one identification
    # the reassembled datagram is the original one, checksum included
    _, l4, _ = offsets(frame)
    assert reassembled == frame[l4:]


# ---- malformed requests ----------------------------------------------------------

def drop_reason(engine: TxEngine, hdr: NetHdr, frame: bytes) -> str:
    with pytest.raises(TxDropped) as info:
        engine.run(hdr, frame)
    return info.value.reason


def test_malformed_requests_are_dropped_by_reason():
    engine = TxEngine()
    tcp4 = partial_csum(tcp_frame(bytes(3000)))
    tcp6 = partial_csum(tcp_frame(bytes(3000), v6=True))
    udp4 = partial_csum(udp_frame(bytes(3000)))
    cases = [
        (gso_hdr(tcp4, GSO_TCPV4, 0), tcp4, "gso_size"),
        (gso_hdr(tcp4, GSO_TCPV4, 3001), tcp4, "gso_size"),
        (gso_hdr(tcp6, GSO_TCPV4, 1000), tcp6, "gso_type"),            # v4 type on a v6 frame
        (gso_hdr(udp4, GSO_TCPV4, 1000), udp4, "gso_type"),            # TCP type on UDP
        (gso_hdr(tcp4, GSO_UDP_L4, 1000), tcp4, "gso_type"),
        (NetHdr(NEEDS_CSUM, 7, 0, 1000, 34, 16), tcp4, "gso_type"),    # no such type
        (gso_hdr(tcp4, GSO_TCPV4, 1000), tcp4[:40], "headers"),         # cut inside TCP
        (NetHdr(NEEDS_CSUM, GSO_NONE, 0, 0, len(tcp4) - 1, 16), tcp4, "csum_range"),
        (NetHdr(NEEDS_CSUM, GSO_NONE, 0, 0, 34, 60000), tcp4, "csum_range"),
    ]
    for hdr, frame, reason in cases:
        assert drop_reason(engine, hdr, frame) == reason, (hdr, reason)
    c = engine.counters()
    assert c["tx_drops_gso_size"] == 2 and c["tx_drops_gso_type"] == 4
    assert c["tx_drops_headers"] == 1 and c["tx_drops_csum_range"] == 2
    assert c["tx_packets"] == 0


def test_unnegotiated_offloads_are_dropped():
    frame = partial_csum(tcp_frame(bytes(3000)))
    no_tso = TxEngine(ALL_TX_OFFLOADS - {F.HOST_TSO4})
    assert drop_reason(no_tso, gso_hdr(frame, GSO_TCPV4, 1000), frame) == "unnegotiated"
    no_ecn = TxEngine(ALL_TX_OFFLOADS - {F.HOST_ECN})
    assert drop_reason(no_ecn, gso_hdr(frame, GSO_TCPV4 | GSO_ECN, 1000), frame) == "unnegotiated"
    no_csum = TxEngine(frozenset())
    assert drop_reason(no_csum, NetHdr(NEEDS_CSUM, GSO_NONE, 0, 0, 34, 16), frame) == "unnegotiated"
    assert no_tso.counters()["tx_drops_unnegotiated"] == 1


def test_unsupported_headers_are_refused_not_mangled():
    engine = TxEngine()
    # an IPv6 fragment header in front of TCP cannot be segmented
    frag = bytes(Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment()
                 / TCP() / bytes(3000))
    hdr = NetHdr(NEEDS_CSUM, GSO_TCPV6, 0, 1000, 62, 16)
    assert drop_reason(engine, hdr, frag) == "headers"
    # UFO of a datagram with IPv4 options is refused
    opt = bytes(Ether() / IP(src="192.0.2.1", dst="192.0.2.2", options=b"\x94\x04\x00\x00")
                / UDP() / bytes(3000))
    assert drop_reason(engine, NetHdr(NEEDS_CSUM, GSO_UDP, 0, 1480, 38, 6), opt) == "headers"


@settings(max_examples=300, deadline=None)
@given(hdr=st.builds(NetHdr, st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF),
                     st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
       frame=st.binary(min_size=0, max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=5))
def test_garbage_never_crashes(hdr, frame, cuts):
    """Any header and frame either goes out or is dropped with a counted reason."""
    engine = TxEngine()
    try:
        frames = engine.run(hdr, frame, sorted(c for c in cuts if c <= len(frame)))
    except TxDropped:
        c = engine.counters()
        assert sum(v for k, v in c.items() if k.startswith("tx_drops")) == 1
        return
    assert all(len(f) <= 65535 for f in frames)


def test_large_superframe_in_many_guest_buffers(engine):
    """A 64 KiB TSO frame scattered over 4 KiB pages, as Linux sends it."""
    payload = bytes(range(256)) * 255 + bytes(range(80))
    frame = tcp_frame(payload, options=(("NOP", None), ("NOP", None), ("Timestamp", (5, 6))))
    cuts = list(range(66, len(frame), 4096))
    frames = engine.run(gso_hdr(frame, GSO_TCPV4, 1448), partial_csum(frame), cuts)
    assert len(frames) == math.ceil(len(payload) / 1448)
    assert all(checksums_valid(f) for f in frames)
    assert b"".join(bytes(Ether(f)[TCP].payload) for f in frames) == payload
