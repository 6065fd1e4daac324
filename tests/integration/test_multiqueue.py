"""Multiqueue (VIRTIO_NET_F_MQ): several queue pairs, each with its own
worker, and VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET choosing how many the driver
uses.  Pairs beyond that count are neither read nor written; what was
posted on a pair given up is still handled before the command's answer."""
from __future__ import annotations

import os
import struct
import time

import pytest

from tests.support import driver as D
from tests.support.frames import udp_frame
from tests.support.harness import ServedDevice
from tests.support.tapns import TapNamespace, in_netns
from vnic._native import ffi, lib
from vnic.telemetry import counters
from vnic.virtio.features import F

OK, ERR = 0, 1
PAIRS = 4


def per_queue(sd: ServedDevice) -> list[dict[str, int]]:
    return counters.per_queue(sd.device.counters)


@pytest.fixture
def mq_device(serve):
    sd = serve(queue_pairs=PAIRS)
    d = D.VirtioNetDriver(sd.connect()).start()
    yield sd, d
    d.close()


def test_mq_is_offered_with_max_virtqueue_pairs(mq_device):
    sd, d = mq_device
    assert d.has(F.MQ) and d.has(F.CTRL_VQ)
    assert d.net_config()["max_virtqueue_pairs"] == PAIRS
    assert d.pairs == PAIRS and d.ctrl_index == 2 * PAIRS
    assert sd.device.active_pairs() == 1                  # until the driver asks for more


def test_one_pair_offers_no_mq(served_device):
    assert not served_device.driver.has(F.MQ)
    assert served_device.driver.net_config()["max_virtqueue_pairs"] == 1


def test_a_pair_never_in_use_is_not_read_even_when_posted_before_start(serve):
    """Frames a driver posts on pair 2 before DRIVER_OK: pair 2's worker
    starts, finds its pair not in use and parks without reading them (it
    used to finish the pair's queues as if the driver had given it up)."""
    sd = serve(queue_pairs=PAIRS)
    d = D.VirtioNetDriver(sd.connect())
    d.start(before_driver_ok=lambda drv: drv.transmit(udp_frame(100, 1), pair=2, kick=False))
    time.sleep(0.3)
    assert d.queues[2 * 2 + D.TX].pop_used() == []
    assert per_queue(sd)[2]["tx_packets"] == 0
    d.close()


def test_pairs_beyond_the_count_in_use_are_not_read(mq_device):
    sd, d = mq_device
    d.transmit(udp_frame(100, 1), pair=2)
    time.sleep(0.2)
    assert d.queues[2 * 2 + D.TX].pop_used() == []          # pair 2 is not in use yet
    assert per_queue(sd)[2]["tx_packets"] == 0
    assert d.set_pairs(3) == OK
    assert sd.device.active_pairs() == 3
    assert [u.length for u in d.complete_tx(1, pair=2)] == [0]
    assert per_queue(sd)[2]["tx_packets"] == 1


def test_every_pair_in_use_transmits_on_its_own_queue(mq_device):
    sd, d = mq_device
    assert d.set_pairs(PAIRS) == OK
    for pair in range(PAIRS):
        for i in range(pair + 1):
            d.transmit(udp_frame(60 + i, i), pair=pair)
    for pair in range(PAIRS):
        d.complete_tx(pair + 1, pair=pair)
    assert [row["tx_packets"] for row in per_queue(sd)] == [1, 2, 3, 4]
    assert per_queue(sd)[0]["mq_pairs_changes"] == 1


@pytest.mark.parametrize("data", [struct.pack("<H", 0), struct.pack("<H", PAIRS + 1),
                                  struct.pack("<H", 0xFFFF), b"\x02", struct.pack("<I", 2)])
def test_a_bad_pair_count_is_refused_and_changes_nothing(mq_device, data):
    sd, d = mq_device
    assert d.set_pairs(2) == OK
    assert d.control(D.CTRL_MQ, D.MQ_VQ_PAIRS_SET, data) == ERR
    assert d.control(D.CTRL_MQ, 1, struct.pack("<H", 2)) == ERR      # RSS_CONFIG cut short
    assert sd.device.active_pairs() == 2
    assert sd.stats()["ctrl_errors"] == 2 and sd.device.failed() is False


def test_pairs_set_without_mq_negotiated_is_refused(serve):
    sd = serve(queue_pairs=PAIRS)
    d = D.VirtioNetDriver(sd.connect()).start(drop=1 << F.MQ)
    try:
        assert d.pairs == 1 and d.set_pairs(1) == ERR
        d.transmit(udp_frame(80))
        d.complete_tx()
        assert per_queue(sd)[0]["tx_packets"] == 1
    finally:
        d.close()


def test_shrinking_sends_what_was_posted_before_the_answer(mq_device):
    sd, d = mq_device
    assert d.set_pairs(PAIRS) == OK
    for pair in (2, 3):
        for i in range(20):
            d.transmit(udp_frame(200, i), pair=pair, kick=False)   # posted, no doorbell yet
    assert d.set_pairs(2) == OK
    # the answer came after pairs 2 and 3 finished: all 40 frames are out
    assert [row["tx_packets"] for row in per_queue(sd)][2:] == [20, 20]
    for pair in (2, 3):
        assert len(d.complete_tx(20, pair=pair)) == 20
    d.transmit(udp_frame(200, 99), pair=3)                  # given up: no longer read
    time.sleep(0.2)
    assert per_queue(sd)[3]["tx_packets"] == 20
    assert d.set_pairs(4) == OK                             # and back: the frame goes out
    d.complete_tx(1, pair=3)
    assert per_queue(sd)[3]["tx_packets"] == 21


def test_reset_goes_back_to_one_pair(mq_device):
    sd, d = mq_device
    assert d.set_pairs(3) == OK
    d.start()                                               # reset and bring-up again
    assert sd.device.active_pairs() == 1


# ---- a multiqueue TAP ------------------------------------------------------------

@pytest.fixture
def mq_tap(serve):
    with TapNamespace() as tn:
        sd = serve(backend=tn.backend, queue_pairs=2)
        d = D.VirtioNetDriver(sd.connect()).start()
        tn.drain()
        yield sd, d, tn
        d.close()


@pytest.mark.root
@pytest.mark.netns
def test_the_tap_has_a_queue_per_pair(mq_tap):
    _sd, d, tn = mq_tap
    assert len(tn.backend.fds) == 2
    flags = tn.ns.run(["cat", f"/sys/class/net/{tn.ifname}/tun_flags"]).stdout.strip()
    assert int(flags, 16) & 0x100                            # IFF_MULTI_QUEUE
    assert d.set_pairs(2) == OK
    for pair in (0, 1):
        d.transmit(udp_frame(300, pair), pair=pair)
        d.complete_tx(1, pair=pair)
    got = tn.capture(2, timeout=2)
    assert sorted(got) == sorted(udp_frame(300, p) for p in (0, 1))


@pytest.mark.root
@pytest.mark.netns
def test_received_flows_spread_over_the_pairs_in_use_and_stay_on_one(mq_tap):
    sd, d, tn = mq_tap
    assert d.set_pairs(2) == OK
    for pair in (0, 1):
        d.post_rx(128, pair=pair)
    flows = 16
    for i in range(flows * 4):                               # 4 frames of each flow, interleaved
        tn.send(udp_frame(400, i % flows, to_guest=True))
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    received = 0
    deadline = time.monotonic() + 5
    while received < flows * 4 and time.monotonic() < deadline:
        for pair in (0, 1):
            try:
                packets = d.receive(1, timeout=0.05, pair=pair)
            except TimeoutError:
                continue
            received += 1
            seen[pair].add(int.from_bytes(packets[0].frame[42:46], "big"))
    assert received == flows * 4
    assert not seen[0] & seen[1]                             # a flow lands on one pair only
    assert seen[0] and seen[1]                               # and 16 flows use both
    assert [row["rx_packets"] for row in per_queue(sd)] == [4 * len(seen[0]), 4 * len(seen[1])]


@pytest.mark.root
@pytest.mark.netns
def test_with_one_pair_in_use_everything_arrives_on_pair_0(mq_tap):
    sd, d, tn = mq_tap
    d.post_rx(64, pair=0)
    d.post_rx(64, pair=1)
    for i in range(32):
        tn.send(udp_frame(400, i, to_guest=True))
    assert len(d.receive(32, pair=0)) == 32
    rows = per_queue(sd)
    assert rows[0]["rx_packets"] == 32 and rows[1]["rx_packets"] == 0
    assert rows[1]["rx_drops_inactive"] == 0
    assert sd.device.steering() == "ebpf"                   # queue 1 stays attached, unused
    assert d.set_pairs(2) == OK and sd.device.steering() == "kernel"


def frames_per_queue(fds: list[int]) -> list[int]:
    counts = []
    for fd in fds:
        n = 0
        while True:
            try:
                os.read(fd, 70000)
            except BlockingIOError:
                break
            n += 1
        counts.append(n)
    return counts


@pytest.mark.root
@pytest.mark.netns
def test_a_persistent_tap_is_left_without_our_steering_program():
    """While one of two pairs is in use, a steering program keeps frames
    off the TAP's second queue.  A persistent TAP outlives the device: once
    it closes, the next user of the TAP must find the kernel's own flow
    spreading, not our program (which would put every frame on queue 0)."""
    with TapNamespace() as tn:
        tn.ns.run(["ip", "tuntap", "add", "dev", tn.ifname, "mode", "tap", "vnet_hdr", "multi_queue"])
        with ServedDevice(backend=tn.backend, queue_pairs=2) as sd:
            d = D.VirtioNetDriver(sd.connect()).start()
            assert d.set_pairs(1) == OK and sd.device.steering() == "ebpf"
            d.close()
        tn.ns.run(["ip", "link", "set", tn.ifname, "up"])
        name = ffi.new("char[]", 16)
        fds = in_netns(tn.ns.name, lambda: [lib.vnic_tap_open(tn.ifname.encode(), name, 16, 0, 1)
                                            for _ in range(2)])
        try:
            assert min(fds) >= 0
            for fd in fds:
                os.set_blocking(fd, False)
            for i in range(32):
                tn.send(udp_frame(200, i, to_guest=True))
            time.sleep(0.2)
            per_queue_frames = frames_per_queue(fds)
            assert sum(per_queue_frames) == 32
            assert min(per_queue_frames) > 0, per_queue_frames   # both queues get flows again
        finally:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)


def bpf_programs_held() -> int:
    fds = os.listdir("/proc/self/fd")
    links = []
    for fd in fds:
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            pass
    return sum(link == "anon_inode:bpf-prog" for link in links)


@pytest.mark.root
@pytest.mark.netns
def test_a_guest_toggling_pairs_loads_one_program_and_it_goes_at_close():
    """MQ_VQ_PAIRS_SET 1 and 2 a hundred times: the steering program over one
    pair is loaded once and reused (no BPF verifier run per command), and
    the device lets it go when it closes."""
    with TapNamespace() as tn:
        before = bpf_programs_held()
        with ServedDevice(backend=tn.backend, queue_pairs=2) as sd:
            d = D.VirtioNetDriver(sd.connect()).start()
            for _ in range(50):
                assert d.set_pairs(1) == OK and sd.device.steering() == "ebpf"
                assert d.set_pairs(2) == OK and sd.device.steering() == "kernel"
            assert bpf_programs_held() == before + 1
            d.close()
        assert bpf_programs_held() == before
