"""Receive coalescing: wire-size TCP segments of one flow reach a guest that
negotiated GUEST_TSO4 as few super-frames, byte-exact, never reordered,
with the flow rules (sequence gaps, PSH, FIN, other flows) respected."""
from __future__ import annotations

import struct
import time

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from tests.support.driver import NET_HDR
from tests.support.frames import GUEST_MAC, PEER_MAC

MSS = 1448
NEEDS_CSUM, GSO_TCPV4 = 1, 1


def segments(count: int, seq: int = 1000, sport: int = 5201, flags: str = "A", ip_id: int = 1,
             mss: int = MSS, last_flags: str | None = None) -> list[bytes]:
    out = []
    for i in range(count):
        payload = bytes(((seq + i * mss + k) * 7) & 0xFF for k in range(mss))
        fl = last_flags if last_flags and i == count - 1 else flags
        out.append(bytes(Ether(src=PEER_MAC, dst=GUEST_MAC)
                         / IP(src="10.213.0.1", dst="10.213.0.2", id=ip_id + i, flags="DF")
                         / TCP(sport=sport, dport=40000, seq=seq + i * mss, flags=fl, window=1000,
                               options=[("NOP", None), ("NOP", None), ("Timestamp", (7, 9))])
                         / payload))
    return out


def inject_without_buffers(dev, frames: list[bytes]) -> None:
    """Queue frames on the TAP while the guest has no RX buffers, so the
    device reads them in one batch once buffers come."""
    for f in frames:
        dev.tap.send(f)
    time.sleep(0.2)


def receive_all(d, expect_payload: int, timeout: float = 5) -> list:
    packets, got = [], 0
    deadline = time.monotonic() + timeout
    while got < expect_payload and time.monotonic() < deadline:
        try:
            batch = d.receive(1, timeout=0.5)
        except TimeoutError:
            continue
        packets += batch
        got += sum(len(p.frame) - 66 for p in batch)
    return packets


def tcp_payloads(packets) -> bytes:
    return b"".join(bytes(Ether(p.frame)[TCP].payload) for p in packets)


def test_segments_of_one_flow_arrive_as_a_super_frame(tap_device):
    d, sd = tap_device.driver, tap_device.harness
    assert d.has(7)
    frames = segments(30)
    inject_without_buffers(tap_device, frames)
    d.post_rx(128, size=2048)
    packets = receive_all(d, 30 * MSS)
    assert tcp_payloads(packets) == b"".join(bytes(Ether(f)[TCP].payload) for f in frames)
    supers = [p for p in packets if NET_HDR.unpack(p.header)[1] == GSO_TCPV4]
    assert supers, "nothing was coalesced"
    assert len(packets) < 30
    for p in supers:
        flags, _gso, hdr_len, gso_size, csum_start, csum_offset, _ = NET_HDR.unpack(p.header)
        assert (flags, hdr_len, gso_size, csum_start, csum_offset) == (NEEDS_CSUM, 66, MSS, 34, 16)
        ip = Ether(p.frame)[IP]
        assert ip.len == len(p.frame) - 14
        fresh = IP(bytes(ip))
        del fresh.chksum
        assert IP(bytes(fresh)).chksum == ip.chksum          # IPv4 header checksum rewritten
        # the TCP field carries the pseudo-header sum for the guest to finish
        pseudo = sum(struct.unpack("!4H", bytes(ip)[12:20])) + 6 + (ip.len - 20)
        while pseudo >> 16:
            pseudo = (pseudo & 0xFFFF) + (pseudo >> 16)
        assert Ether(p.frame)[TCP].chksum == pseudo
    stats = sd.stats()
    assert stats["rx_coalesced_segments"] == sum(
        (len(p.frame) - 66) // MSS for p in supers)
    assert stats["rx_coalesced_packets"] == len(supers)


def test_flow_rules_keep_order_and_boundaries(tap_device):
    d = tap_device.driver
    a = segments(6, seq=1000, sport=5201, last_flags="PA")         # PSH closes
    gap = segments(3, seq=1000 + 6 * MSS + 10, sport=5201, ip_id=50)  # a sequence hole
    b = segments(5, seq=9000, sport=5202, ip_id=200, last_flags="FA")  # FIN is never merged
    mixed = [x for pair in zip(a, b, strict=False) for x in pair] + a[len(b):] + gap
    inject_without_buffers(tap_device, mixed)
    d.post_rx(128, size=2048)
    packets = receive_all(d, (6 + 3 + 5) * MSS)
    by_port: dict[int, list] = {}
    for p in packets:
        tcp = Ether(p.frame)[TCP]
        by_port.setdefault(tcp.sport, []).append(tcp)
    # within each flow, sequence order is the wire order
    for port, tcps in by_port.items():
        seqs = [t.seq for t in tcps]
        assert seqs == sorted(seqs), f"flow {port} reordered"
    flow_a = by_port[5201]
    assert b"".join(bytes(t.payload) for t in flow_a) == \
        b"".join(bytes(Ether(f)[TCP].payload) for f in a + gap)
    # nothing crosses the hole: a segment that starts after it begins a new packet
    assert any(t.seq == 1000 + 6 * MSS + 10 for t in flow_a)
    # the FIN segment arrives on its own, with FIN set
    fins = [t for t in by_port[5202] if t.flags.F]
    assert len(fins) == 1 and len(fins[0].payload) == MSS
    assert b"".join(bytes(t.payload) for t in by_port[5202]) == \
        b"".join(bytes(Ether(f)[TCP].payload) for f in b)


def test_no_coalescing_without_guest_tso(tap_device):
    d, sd = tap_device.driver, tap_device.harness
    d.start(drop=1 << 7 | 1 << 8 | 1 << 9)             # no GUEST_TSO4/6, no GUEST_ECN
    frames = segments(10)
    inject_without_buffers(tap_device, frames)
    d.post_rx(64, size=2048)
    packets = d.receive(10, timeout=5)
    assert [p.frame for p in packets] == frames
    assert sd.stats()["rx_coalesced_packets"] == 0
