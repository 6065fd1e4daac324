"""Receive: frames injected on the TAP's side land in the guest's posted RX
buffers byte for byte, with a correct virtio_net_hdr, with and without
mergeable buffers, and none is lost while the guest has no buffers."""
from __future__ import annotations

import math

import pytest

from tests.support import driver as D
from tests.support.driver import NET_HDR, NET_HDR_LEN, RX, VirtioNetDriver
from tests.support.frames import udp_frame

NO_MRG = 1 << D.F_MRG_RXBUF


def check_header(packet, num_buffers: int) -> None:
    """A plain frame: no GSO, no partial checksum; num_buffers as expected."""
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, nbufs = NET_HDR.unpack(packet.header)
    assert flags & ~2 == 0                       # at most DATA_VALID (a checked checksum)
    assert (gso_type, gso_size) == (0, 0)
    if not flags:
        assert (hdr_len, csum_start, csum_offset) == (0, 0, 0)
    assert nbufs == num_buffers


def restart(dev, **start) -> VirtioNetDriver:
    """Renegotiate on the same connection (e.g. without MRG_RXBUF)."""
    dev.driver.start(**start)
    return dev.driver


def test_mergeable_frame_spans_small_buffers(tap_device):
    d, tap, sd = tap_device.driver, tap_device.tap, tap_device.harness
    assert d.has(D.F_MRG_RXBUF)
    d.post_rx(16, size=256)
    frame = udp_frame(1400, 1, to_guest=True)
    tap.send(frame)
    [packet] = d.receive(1)
    nbufs = math.ceil((NET_HDR_LEN + 1400) / 256)              # 6
    check_header(packet, nbufs)
    assert packet.frame == frame
    assert [u.length for u in packet.used] == [256] * (nbufs - 1) + [NET_HDR_LEN + 1400 - 256 * (nbufs - 1)]
    stats = sd.stats()
    assert (stats["rx_packets"], stats["rx_bytes"], stats["rx_buffers_used"]) == (1, 1400, nbufs)


def test_mergeable_frames_in_order_with_varied_sizes(tap_device):
    d, tap, sd = tap_device.driver, tap_device.tap, tap_device.harness
    d.post_rx(64, size=512, pieces=2)                          # chains of two 256-byte buffers
    frames = [udp_frame(size, i, to_guest=True) for i, size in enumerate([60, 500, 501, 1514, 42, 1000])]
    for frame in frames:
        tap.send(frame)
    packets = d.receive(len(frames))
    assert [p.frame for p in packets] == frames
    for p, frame in zip(packets, frames, strict=False):
        check_header(p, math.ceil((NET_HDR_LEN + len(frame)) / 512))
    assert sd.stats()["rx_packets"] == len(frames)


def test_rx_interrupt_fires(tap_device):
    d, tap = tap_device.driver, tap_device.tap
    d.post_rx(8)
    d.take_irq(d.queue_vector(RX))
    tap.send(udp_frame(100, to_guest=True))
    d.receive(1)
    assert d.wait_irq(d.queue_vector(RX)) >= 1
    assert tap_device.harness.stats()["rx_interrupts"] >= 1


def test_without_mergeable_buffers_one_chain_per_packet(tap_device):
    d = restart(tap_device, drop=NO_MRG)
    tap = tap_device.tap
    assert not d.has(D.F_MRG_RXBUF)
    # Linux's small-buffer layout in two pieces: header, then a full frame
    q = d.queues[RX]
    for _ in range(8):
        hdr, data = d.mem.alloc(NET_HDR_LEN), d.mem.alloc(1514)
        q.add([(hdr, NET_HDR_LEN, True), (data, 1514, True)], owned=[hdr, data])
    d.kick(RX)
    frames = [udp_frame(size, i, to_guest=True) for i, size in enumerate([1400, 60, 1514])]
    for frame in frames:
        tap.send(frame)
    packets = d.receive(3)
    assert [p.frame for p in packets] == frames
    for p, frame in zip(packets, frames, strict=False):
        check_header(p, 1)                                   # num_buffers is 1 without MRG_RXBUF
        assert len(p.used) == 1 and p.used[0].length == NET_HDR_LEN + len(frame)


def test_without_mergeable_buffers_a_too_small_chain_drops_the_frame(tap_device):
    d = restart(tap_device, drop=NO_MRG)
    tap, sd = tap_device.tap, tap_device.harness
    d.post_rx(1, size=256)
    big, small = udp_frame(1400, 1, to_guest=True), udp_frame(200, 2, to_guest=True)
    tap.send(big)
    tap.send(small)
    [packet] = d.receive(1)
    assert packet.frame == small                                # the chain was given back for it
    stats = sd.stats()
    assert stats["rx_drops_too_big"] == 1 and stats["rx_packets"] == 1
    assert not d.status & D.DEVICE_NEEDS_RESET


def test_starved_frames_wait_and_arrive_when_buffers_come(tap_device):
    d, tap, sd = tap_device.driver, tap_device.tap, tap_device.harness
    frames = [udp_frame(100 + i, i, to_guest=True) for i in range(20)]
    for frame in frames:
        tap.send(frame)
    assert sd.wait_stat("rx_no_buffer", 1) >= 1
    assert sd.stats()["rx_packets"] == 0
    d.post_rx(32)
    packets = d.receive(20)
    assert [p.frame for p in packets] == frames
    assert sd.stats()["rx_packets"] == 20


def test_running_out_of_buffers_midway_loses_nothing(tap_device):
    d, tap, sd = tap_device.driver, tap_device.tap, tap_device.harness
    d.post_rx(5)
    frames = [udp_frame(60 + i, i, to_guest=True) for i in range(30)]
    for frame in frames:
        tap.send(frame)
    first = d.receive(5)
    assert sd.wait_stat("rx_no_buffer", 1) >= 1
    got = [p.frame for p in first]
    while len(got) < len(frames):                              # dribble buffers in
        d.post_rx(7)
        got += [p.frame for p in d.receive(min(7, len(frames) - len(got)))]
    assert got == frames
    assert sd.stats()["rx_packets"] == 30 and sd.stats()["rx_drops_too_big"] == 0


@pytest.mark.parametrize("event_idx", [True, False])
def test_mergeable_frame_waits_for_enough_buffers(tap_device, event_idx):
    """A frame that needs more buffers than are posted waits whole (no half
    packet is ever published), and the device asks for the kick that the
    driver's next buffers bring."""
    d = restart(tap_device, drop=0 if event_idx else 1 << D.F_EVENT_IDX)
    tap, sd = tap_device.tap, tap_device.harness
    d.post_rx(3, size=256)
    frame = udp_frame(1400, 3, to_guest=True)
    tap.send(frame)
    assert sd.wait_stat("rx_no_buffer", 1) >= 1
    q = d.queues[RX]
    assert q.used_idx == 0
    if event_idx:
        assert q.kick_event == 3           # kick me when buffers beyond these three come
    d.post_rx(3, size=256)                 # kicks only if the device asked for it
    [packet] = d.receive(1)
    assert packet.frame == frame and packet.num_buffers == 6


@pytest.mark.parametrize("mergeable", [True, False])
def test_indirect_rx_chains(tap_device, mergeable):
    d = restart(tap_device, drop=0 if mergeable else NO_MRG)
    assert d.has(D.F_INDIRECT_DESC)
    d.post_rx(4, size=1526, pieces=3, indirect=True)
    frames = [udp_frame(size, i, to_guest=True) for i, size in enumerate([1514, 77])]
    for frame in frames:
        tap_device.tap.send(frame)
    packets = d.receive(2)
    assert [p.frame for p in packets] == frames
    assert all(p.num_buffers == 1 for p in packets)


def test_buffers_posted_without_a_kick_are_used(tap_device):
    """With EVENT_IDX the device asks for no RX kick while it has buffers; it
    must still find buffers posted quietly."""
    d, tap = tap_device.driver, tap_device.tap
    assert d.has(D.F_EVENT_IDX)
    d.post_rx(4)
    tap.send(udp_frame(80, 0, to_guest=True))
    d.receive(1)
    d.post_rx(4, kick=False)
    frames = [udp_frame(80, i, to_guest=True) for i in range(1, 7)]
    for frame in frames:
        tap.send(frame)
    assert [p.frame for p in d.receive(6)] == frames
