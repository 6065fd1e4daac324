"""Ethernet frames for the data-path tests, built with scapy."""
from __future__ import annotations

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

GUEST_MAC = "52:54:00:12:34:56"
PEER_MAC = "02:00:00:00:00:02"


def udp_frame(length: int, seq: int = 0, to_guest: bool = False) -> bytes:
    """A UDP/IPv4 frame of exactly `length` bytes (>= 42) whose payload
    carries `seq`, so frames can be told apart."""
    src, dst = (PEER_MAC, GUEST_MAC) if to_guest else (GUEST_MAC, PEER_MAC)
    head = Ether(src=src, dst=dst) / IP(src="10.213.0.2", dst="10.213.0.1", id=seq & 0xFFFF) / \
        UDP(sport=40000 + seq % 1000, dport=5201)
    payload_len = length - len(head)
    if payload_len < 0:
        raise ValueError(f"a UDP frame needs at least {len(head)} bytes")
    pattern = seq.to_bytes(4, "big") + bytes(range(256))
    payload = (pattern * (payload_len // len(pattern) + 1))[:payload_len]
    frame = bytes(head / Raw(payload))
    assert len(frame) == length
    return frame
