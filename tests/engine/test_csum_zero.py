"""A checksum whose one's-complement sum comes out as zero, made on purpose.

UDP transmits a computed 0 as 0xffff (RFC 768: 0 means "no checksum");
TCP has no such rule and transmits 0x0000 (RFC 1624: 0xffff, "-0", cannot
come out of a full computation).  Receivers that verify by summing accept
both, but a strict checker (Wireshark: "TCP Checksum 0xffff instead of
0x0000") flags 0xffff as bad.  Random traffic hits this once in 65536
segments: the e2e TSO capture (tests/e2e/test_offloads.py) saw it in about
one run in ten, which is how it was found.  These tests build the frames
so it happens every time.
"""
from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from vnic.net.tx_engine import GSO_NONE, GSO_TCPV4, NEEDS_CSUM, NetHdr, TxEngine

from .frames import offsets, partial_csum, tcp_frame, udp_frame


def zero_sum_tcp_payload(n: int, **frame_kw) -> bytes:
    """An n-byte payload (n even) whose TCP segment, built with frame_kw,
    has checksum 0x0000: the last two bytes add exactly the missing sum."""
    assert n % 2 == 0 and n >= 2
    payload = bytes((i * 7) & 0xFF for i in range(n - 2)) + b"\0\0"
    c = Ether(tcp_frame(payload, **frame_kw))[TCP].chksum
    payload = payload[:-2] + struct.pack("!H", c)
    assert Ether(tcp_frame(payload, **frame_kw))[TCP].chksum == 0
    return payload


@pytest.mark.parametrize("v6", [False, True])
def test_tcp_checksum_zero_stays_zero_in_completion(v6):
    frame = tcp_frame(zero_sum_tcp_payload(100, v6=v6), v6=v6)
    _, l4, _ = offsets(frame)
    out = TxEngine().run(NetHdr(NEEDS_CSUM, GSO_NONE, 0, 0, l4, 16), partial_csum(frame))
    assert Ether(out[0])[TCP].chksum == 0x0000


def test_tcp_checksum_zero_stays_zero_in_tso():
    mss = 1000
    # segment 0 as the device must produce it: PSH cleared, its own IP length
    seg0 = zero_sum_tcp_payload(mss, flags="A", seq=5000)
    payload = seg0 + bytes(500)
    frame = tcp_frame(payload, flags="PA", seq=5000)
    _, l4, hdr_len = offsets(frame)
    out = TxEngine().run(NetHdr(NEEDS_CSUM, GSO_TCPV4, hdr_len, mss, l4, 16),
                         partial_csum(frame))
    assert len(out) == 2
    assert out[0] == tcp_frame(seg0, flags="A", seq=5000)
    assert Ether(out[0])[TCP].chksum == 0x0000


def test_udp_checksum_zero_is_sent_as_ffff():
    payload = bytes((i * 7) & 0xFF for i in range(98)) + b"\0\0"
    c = Ether(udp_frame(payload))[UDP].chksum
    payload = payload[:-2] + struct.pack("!H", c if c != 0xFFFF else 0)
    frame = udp_frame(payload)
    assert Ether(frame)[UDP].chksum == 0xFFFF          # scapy: computed 0 -> 0xffff
    _, l4, _ = offsets(frame)
    out = TxEngine().run(NetHdr(NEEDS_CSUM, GSO_NONE, 0, 0, l4, 6), partial_csum(frame))
    assert out == [frame]
    assert Ether(out[0])[IP].chksum == Ether(frame)[IP].chksum
