"""One-copy receive: the TAP's read lands each frame straight in the guest's
posted buffers (rx_direct_packets counts them; rx_copied_bytes, the bytes
the device copied itself, stays 0 once it knows the frame sizes), for every
size from 60 bytes to a 64 KiB super-frame and in every buffer layout, and
the bounce path's rules still hold: a frame larger than what is posted
waits whole, and a refused frame leaves none of its bytes in guest memory.
scapy parses every delivered frame."""
from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.integration.test_rx_offload import inject_gso, tcp_superframe
from tests.support import driver as D
from tests.support.driver import NET_HDR, NET_HDR_LEN, RX
from tests.support.frames import PEER_MAC, udp_frame
from vnic.errors import ConfigError

NO_MRG = 1 << D.F_MRG_RXBUF
GSO_TCPV4, NEEDS_CSUM = 1, 1
CTRL_RX, PROMISC, OK = 0, 0, 0
MARK = b"\xa5\x5a\xc3\x3c" * 4              # a refused frame's payload, to look for


def udp_checksum_right(frame: bytes) -> bool:
    """scapy's own checksum of the frame's UDP datagram equals the one it carries."""
    pkt = Ether(frame)
    carried = pkt[UDP].chksum
    del pkt[UDP].chksum
    return Ether(bytes(pkt))[UDP].chksum == carried


def receive_all(dev, frames: list[bytes], timeout: float = 3.0) -> list[bytes]:
    for f in frames:
        dev.tap.send(f)
    return [p.frame for p in dev.driver.receive(len(frames), timeout=timeout)]


def test_frames_of_every_wire_size_land_once(tap_device):
    d, sd = tap_device.driver, tap_device.harness
    d.post_rx(64, size=1536)
    sizes = [60, 61, 64, 99, 255, 256, 511, 1000, 1499, 1513, 1514]
    frames = [udp_frame(n, i, to_guest=True) for i, n in enumerate(sizes)]
    got = receive_all(tap_device, frames)
    assert got == frames
    assert all(udp_checksum_right(f) and Ether(f)[UDP].dport == 5201 for f in got)
    s = sd.stats()
    assert (s["rx_packets"], s["rx_direct_packets"], s["rx_copied_bytes"]) == (len(sizes), len(sizes), 0)


def test_frames_spanning_small_buffers(tap_device):
    """64-byte mergeable buffers: a full-size frame takes 24 of them."""
    d, sd = tap_device.driver, tap_device.harness
    d.post_rx(200, size=64)
    frames = [udp_frame(n, i, to_guest=True) for i, n in enumerate([1514, 60, 1000, 1514])]
    for f in frames:
        tap_device.tap.send(f)
    packets = d.receive(len(frames), timeout=3)
    assert [p.frame for p in packets] == frames
    assert [p.num_buffers for p in packets] == [-(-(NET_HDR_LEN + len(f)) // 64) for f in frames]
    s = sd.stats()
    assert s["rx_direct_packets"] == 4 and s["rx_copied_bytes"] == 0


def test_superframes_up_to_64k_in_mergeable_buffers(tap_device):
    """A TAP's TCP super-frames (not coalescing's to merge): one copy each,
    the spill behind a frame larger than any before it copied once, and
    none for the next of that size."""
    d, sd = tap_device.driver, tap_device.harness
    d.post_rx(250, size=4096)
    for payload in (2000, 30000, 65000):            # 65000: near the most the host stack hands whole
        frame = tcp_superframe(payload)
        for _ in range(2):
            before = sd.stats()["rx_copied_bytes"]
            inject_gso(tap_device.tap, frame, 1448)
            [p] = d.receive(1, timeout=5)
            flags, gso_type, _h, gso_size, csum_start, csum_offset, nbufs = NET_HDR.unpack(p.header)
            assert (gso_type, gso_size, csum_start, csum_offset) == (GSO_TCPV4, 1448, 34, 16)
            assert flags & NEEDS_CSUM and nbufs == -(-(NET_HDR_LEN + len(frame)) // 4096)
            assert p.frame[54:] == frame[54:] and bytes(Ether(p.frame)[TCP].payload) == frame[54:]
            assert Ether(p.frame)[IP].len == len(frame) - 14
            d.post_rx(nbufs, size=4096)
        assert sd.stats()["rx_copied_bytes"] == before      # the second of the size: none
    s = sd.stats()
    assert s["rx_direct_packets"] == 6 and s["rx_gso_packets"] == 6


def test_big_packets_layout_without_mergeable_buffers(tap_device):
    """Linux's layout for a TSO guest without MRG_RXBUF: one chain of 17
    pages per packet; a super-frame and a small frame each fill one."""
    d = tap_device.driver
    d.start(drop=NO_MRG)
    assert d.has(7) and not d.has(D.F_MRG_RXBUF)
    d.post_rx(4, size=17 * 4096, pieces=17)
    big = tcp_superframe(40000)
    inject_gso(tap_device.tap, big, 1448)
    small = udp_frame(300, 7, to_guest=True)
    tap_device.tap.send(small)
    first, second = d.receive(2, timeout=5)
    assert first.frame[54:] == big[54:] and NET_HDR.unpack(first.header)[1] == GSO_TCPV4
    assert second.frame == small and udp_checksum_right(second.frame)
    assert [len(p.used) for p in (first, second)] == [1, 1]
    assert tap_device.harness.stats()["rx_direct_packets"] == 2


def test_frame_larger_than_what_is_posted_waits_whole(tap_device):
    """Three 256-byte buffers for a 1400-byte frame: it waits (in the bounce
    buffer), arrives whole when more come, and the ones after it go straight
    to the guest again."""
    d, sd = tap_device.driver, tap_device.harness
    d.post_rx(3, size=256)
    frame = udp_frame(1400, 3, to_guest=True)
    tap_device.tap.send(frame)
    assert sd.wait_stat("rx_no_buffer", 1) >= 1
    assert d.queues[RX].used_idx == 0
    d.post_rx(40, size=256)
    [p] = d.receive(1)
    assert p.frame == frame and p.num_buffers == 6
    # copied: what had landed in the three buffers out to the bounce buffer, then all of it in
    assert sd.stats()["rx_direct_packets"] == 0 and sd.stats()["rx_copied_bytes"] == 3 * 256 - NET_HDR_LEN + 1400
    after = [udp_frame(700, i, to_guest=True) for i in range(4)]
    assert receive_all(tap_device, after) == after
    assert sd.stats()["rx_direct_packets"] == 4


def test_refused_frame_leaves_no_bytes_in_guest_buffers(tap_device):
    d, sd = tap_device.driver, tap_device.harness
    chains = d.post_rx(8, size=1536)
    assert d.control(CTRL_RX, PROMISC, b"\0") == OK
    other = bytes(Ether(src=PEER_MAC, dst="02:00:00:00:00:99") / IP(src="10.213.0.1", dst="10.213.0.9")
                  / UDP(sport=9, dport=9) / Raw(MARK * 80))
    tap_device.tap.send(other)
    assert sd.wait_stat("rx_filtered_mac", 1) == 1
    for c in chains:
        for iova, size, _w in c.buffers:
            assert MARK not in d.mem.read(iova, size)
    mine = udp_frame(900, 1, to_guest=True)
    assert receive_all(tap_device, [mine]) == [mine]          # the cleared buffers serve it
    assert sd.stats()["rx_direct_packets"] == 1


def test_bounce_mode_delivers_the_same_frames_with_a_copy_each(tap_device):
    """`--rx-copy bounce` (set_rx_copy): the path before one-copy receive,
    to compare with; switched at run time, the frames are the same."""
    d, sd = tap_device.driver, tap_device.harness
    d.post_rx(32, size=1536)
    first = [udp_frame(n, i, to_guest=True) for i, n in enumerate([60, 700, 1514])]
    assert receive_all(tap_device, first) == first
    sd.device.set_rx_copy("bounce")
    second = [udp_frame(n, 10 + i, to_guest=True) for i, n in enumerate([60, 700, 1514])]
    assert receive_all(tap_device, second) == second
    s = sd.stats()
    assert s["rx_direct_packets"] == 3 and s["rx_copied_bytes"] == sum(map(len, second))
    with pytest.raises(ConfigError, match="RX copy mode"):
        sd.device.set_rx_copy("twice")
