"""Building guest super-frames with scapy and checking what the device made
of them, scapy being the independent oracle: every output frame is parsed,
its checksums recomputed by scapy, its fields compared with what a correct
stack sends, and the payload reassembled."""
from __future__ import annotations

import struct

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

SRC4, DST4 = "192.0.2.1", "192.0.2.2"          # never leave the process
SRC6, DST6 = "2001:db8::1", "2001:db8::2"


def l2(vlans: int) -> Ether:
    p = Ether(src="52:54:00:00:00:01", dst="52:54:00:00:00:02")
    for i in range(vlans):
        p = p / Dot1Q(vlan=100 + i)
    return p


def tcp_frame(payload: bytes, v6: bool = False, vlans: int = 0, options=(), flags="PA",
              seq: int = 1000, ip_id: int = 7) -> bytes:
    l3 = IPv6(src=SRC6, dst=DST6) if v6 else IP(src=SRC4, dst=DST4, id=ip_id, flags="DF")
    return bytes(l2(vlans) / l3 / TCP(sport=40000, dport=5201, seq=seq, flags=flags,
                                      options=list(options), window=512) / Raw(payload))


def udp_frame(payload: bytes, v6: bool = False, vlans: int = 0, ip_id: int = 9) -> bytes:
    l3 = IPv6(src=SRC6, dst=DST6) if v6 else IP(src=SRC4, dst=DST4, id=ip_id)
    return bytes(l2(vlans) / l3 / UDP(sport=4000, dport=5001) / Raw(payload))


def offsets(frame: bytes) -> tuple[int, int, int]:
    """(l3 offset, l4 offset, header length) of a frame we built."""
    p = Ether(frame)
    l3 = 14 + 4 * p.layers().count(Dot1Q)
    ip = p[IPv6] if IPv6 in p else p[IP]
    l4 = l3 + (40 if IPv6 in p else ip.ihl * 4)
    if TCP in p:
        return l3, l4, l4 + p[TCP].dataofs * 4
    return l3, l4, l4 + 8


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    return _fold(sum(struct.unpack(f"!{len(data) // 2}H", data)))


def partial_csum(frame: bytes) -> bytes:
    """Put the pseudo-header sum in the L4 checksum field, as a Linux guest
    does for CHECKSUM_PARTIAL, and return the frame."""
    p = Ether(frame)
    l3, l4, _ = offsets(frame)
    l4_len = len(frame) - l4
    if IPv6 in p:
        pseudo = frame[l3 + 8:l3 + 40] + struct.pack("!IxxxB", l4_len, p[IPv6].nh)
    else:
        pseudo = frame[l3 + 12:l3 + 20] + struct.pack("!xBH", p[IP].proto, l4_len)
    field = l4 + (16 if TCP in p else 6)
    return frame[:field] + struct.pack("!H", ones_sum(pseudo)) + frame[field + 2:]


def checksums_valid(frame: bytes, l4: bool = True) -> bool:
    """Scapy recomputes the frame's checksums (IP, and TCP/UDP unless l4 is
    False, as for IP fragments); all must match what the device wrote."""
    p = Ether(frame)
    layers = [layer for layer in (IP, TCP, UDP) if layer in p and (l4 or layer is IP)]
    fresh = p.copy()
    for layer in layers:
        del fresh[layer].chksum
    rebuilt = Ether(bytes(fresh))
    return all(p[layer].chksum == rebuilt[layer].chksum for layer in layers)


def frag_header(frame: bytes):
    p = Ether(frame)
    return p[IPv6ExtHdrFragment] if IPv6ExtHdrFragment in p else None
