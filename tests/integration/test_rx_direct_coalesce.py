"""Receive coalescing in the guest's buffers: a flow's super-frame is built
where the guest reads it (each next segment's payload read straight behind
the flow's), so rx_copied_bytes stays 0 for one flow at a time, across
buffer boundaries and when buffers run out mid-flow; a frame the receive
filter refuses in the middle of a flow leaves none of its bytes behind, and
a frame of another flow is delivered after what came before it.  scapy
parses every delivered frame; payloads are compared byte for byte."""
from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.integration.test_rx_coalesce import MSS, inject_without_buffers, receive_all, segments, tcp_payloads
from tests.support.driver import NET_HDR, NET_HDR_LEN
from tests.support.frames import PEER_MAC

GSO_TCPV4, NEEDS_CSUM = 1, 1
HDRS = 66                                   # Ethernet + IPv4 + TCP with timestamps
CTRL_RX, PROMISC, OK = 0, 0, 0
MARK = b"\xa5\x5a\xc3\x3c" * 4              # a refused frame's payload, to look for


def payload_of(frames: list[bytes]) -> bytes:
    return b"".join(bytes(Ether(f)[TCP].payload) for f in frames)


def assert_super_frame(p, size: int) -> None:
    """p is a valid coalesced frame for the guest, in as many size-byte
    buffers as it needs."""
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, nbufs = NET_HDR.unpack(p.header)
    assert (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) == (NEEDS_CSUM, GSO_TCPV4, HDRS, MSS, 34, 16)
    assert nbufs == -(-(NET_HDR_LEN + len(p.frame)) // size)
    ip = Ether(p.frame)[IP]
    assert ip.len == len(p.frame) - 14
    fresh = IP(bytes(ip))
    del fresh.chksum
    assert IP(bytes(fresh)).chksum == ip.chksum


def arrives_as_one_super_frame(dev, frames: list[bytes], buffers: int, size: int) -> None:
    """frames queued while the guest has no buffers, then buffers posted:
    one valid super-frame carries all their payload."""
    inject_without_buffers(dev, frames)
    dev.driver.post_rx(buffers, size=size)
    packets = receive_all(dev.driver, len(frames) * MSS)
    assert tcp_payloads(packets) == payload_of(frames)
    assert len(packets) == 1
    assert_super_frame(packets[0], size)


def test_one_flow_is_built_in_the_guests_buffers(tap_device):
    arrives_as_one_super_frame(tap_device, segments(30), 64, 2048)
    s = tap_device.harness.stats()
    assert (s["rx_coalesced_packets"], s["rx_coalesced_segments"]) == (1, 30)
    assert (s["rx_direct_packets"], s["rx_copied_bytes"]) == (1, 0)


def test_segments_straddle_small_buffers(tap_device):
    """256-byte buffers: each segment's payload starts inside one and ends
    several later; the super-frame's headers span the first two."""
    arrives_as_one_super_frame(tap_device, segments(20, seq=77), 250, 256)
    assert tap_device.harness.stats()["rx_copied_bytes"] == 0


def test_buffers_running_out_mid_flow_deliver_what_is_there(tap_device):
    """Room for about ten segments: those arrive as one valid super-frame,
    the rest wait (nothing lost) and arrive once the guest posts more."""
    d, sd = tap_device.driver, tap_device.harness
    frames = segments(30, seq=5000)
    inject_without_buffers(tap_device, frames)
    d.post_rx(8, size=2048)
    first = d.receive(1, timeout=5)
    assert_super_frame(first[0], 2048)
    assert len(first[0].frame) <= 8 * 2048 - NET_HDR_LEN
    assert sd.wait_stat("rx_no_buffer", 1) >= 1
    d.post_rx(64, size=2048)
    rest = receive_all(d, 30 * MSS - (len(first[0].frame) - HDRS))
    assert tcp_payloads(first + rest) == payload_of(frames)
    seqs = [Ether(p.frame)[TCP].seq for p in first + rest]
    assert seqs == sorted(seqs)
    assert sd.stats()["rx_coalesced_segments"] == 30


def test_refused_frame_inside_a_flow_leaves_no_bytes(tap_device):
    """A frame for another MAC between two halves of a flow: refused
    (counted), its bytes cleared from behind the flow, and the flow goes on
    as one super-frame."""
    d, sd = tap_device.driver, tap_device.harness
    assert d.control(CTRL_RX, PROMISC, b"\0") == OK
    frames = segments(12, seq=300)
    other = bytes(Ether(src=PEER_MAC, dst="02:00:00:00:00:99") / IP(src="10.213.0.1", dst="10.213.0.9")
                  / UDP(sport=9, dport=9) / Raw(MARK * 80))
    inject_without_buffers(tap_device, frames[:6] + [other] + frames[6:])
    chains = d.post_rx(16, size=2048)
    packets = receive_all(d, 12 * MSS)
    assert tcp_payloads(packets) == payload_of(frames)
    assert len(packets) == 1
    assert_super_frame(packets[0], 2048)
    assert sd.stats()["rx_filtered_mac"] == 1
    for c in chains:
        for iova, size, _w in c.buffers:
            assert MARK not in d.mem.read(iova, size)


def test_another_flow_inside_a_flow_comes_after_it(tap_device):
    """Flow b's segments in the middle of flow a: a's first half is
    delivered before b, each flow's bytes in order, none lost; once b
    closes (PSH), a's second half is coalesced again."""
    d = tap_device.driver
    a = segments(10, seq=1000, sport=5201)
    b = segments(4, seq=9000, sport=5202, ip_id=200, last_flags="PA")
    inject_without_buffers(tap_device, a[:5] + b + a[5:])
    d.post_rx(64, size=2048)
    packets = receive_all(d, 14 * MSS)
    ports = [Ether(p.frame)[TCP].sport for p in packets]
    assert ports[0] == 5201 and 5202 in ports
    assert ports.index(5202) > 0
    by_port: dict[int, list] = {}
    for p in packets:
        by_port.setdefault(Ether(p.frame)[TCP].sport, []).append(p)
    assert tcp_payloads(by_port[5201]) == payload_of(a)
    assert tcp_payloads(by_port[5202]) == payload_of(b)
    assert len(packets) < 14
    for p in packets:
        assert Ether(p.frame)[IP].len == len(p.frame) - 14
