"""Fault injection between the device and its backend: drops, duplicates
and corruption both ways, a checksum the device lies about, every fault
counted, the same seed giving the same decisions, clearing restoring
every frame; scapy judges the frames and the checksums."""
from __future__ import annotations

import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from tests.integration.test_capture import tso_request
from tests.integration.test_flows import send
from tests.support import pcapng
from tests.support.driver import NET_HDR
from tests.support.frames import udp_frame
from vnic.errors import ConfigError
from vnic.net.faults import Episodes, FaultSpec, apply, state

pytestmark = pytest.mark.ring("split")     # faults are of frames, not of ring layouts
DATA_VALID = 2
LINK_UP = 1
NONE = {"drop": 0.0, "duplicate": 0.0, "corrupt": 0.0, "bad_csum": 0.0, "reorder": 0.0, "delay": 0.0,
        "jitter": 0.0, "rate": 0.0, "seed": 0}


def inject(dev, **spec) -> None:
    apply(dev.device.native, dev.device.queue_pairs, FaultSpec(**spec))


def udp_checksum_ok(frame: bytes) -> bool:
    pkt = Ether(frame)
    fresh = pkt.copy()
    del fresh[UDP].chksum
    return Ether(bytes(fresh))[UDP].chksum == pkt[UDP].chksum


def survivors(tap_device, frames: list[bytes]) -> list[int]:
    """Send frames from the guest; the indices of those the TAP saw."""
    send(tap_device.driver, frames)
    seen = tap_device.tap.capture(len(frames), timeout=1.0)
    return [frames.index(f) for f in seen]


def test_tx_drops_are_counted_and_replayed_by_the_seed(tap_device):
    sd = tap_device.harness
    frames = [udp_frame(200, i) for i in range(200)]
    inject(tap_device, drop=30, seed=42, direction="tx")
    first = survivors(tap_device, frames)
    stats = sd.stats()
    assert 100 < len(first) < 180 and stats["fault_tx_drops"] == 200 - len(first)
    assert stats["tx_packets"] == len(first)
    inject(tap_device, drop=30, seed=42, direction="tx")      # the same seed again
    assert survivors(tap_device, frames) == first
    inject(tap_device, drop=30, seed=43, direction="tx")
    assert survivors(tap_device, frames) != first
    inject(tap_device)                                          # cleared
    assert survivors(tap_device, frames) == list(range(200))


def test_tx_duplicates_and_corruption(tap_device, capture_on):
    sd = tap_device.harness
    frames = [udp_frame(300, i) for i in range(5)]
    cap, path = capture_on(tap_device, what="wire", direction="tx")
    inject(tap_device, duplicate=100, direction="tx")
    send(tap_device.driver, frames)
    twice = tap_device.tap.capture(10)
    assert twice == [f for f in frames for _ in range(2)]
    cap.stop()
    assert [p.data for p in pcapng.read(path)] == twice      # the capture sees what the wire saw
    inject(tap_device, corrupt=100, direction="tx")
    send(tap_device.driver, frames)
    bent = tap_device.tap.capture(5)
    assert len(bent) == 5 and not any(udp_checksum_ok(f) for f in bent)
    for sent, got in zip(frames, bent, strict=True):
        changed = [i for i in range(len(sent)) if sent[i] != got[i]]
        assert len(changed) == 1 and changed[0] >= 42          # one byte, in the UDP payload
    stats = sd.stats()
    assert (stats["fault_tx_duplicates"], stats["fault_tx_corruptions"]) == (5, 5)
    inject(tap_device)
    send(tap_device.driver, frames)
    assert tap_device.tap.capture(5) == frames                  # the guest's buffers were never touched


def to_guest(n: int, size: int = 300) -> list[bytes]:
    return [udp_frame(size, i, to_guest=True) for i in range(n)]


def deliver(tap_device, frames: list[bytes], expect: int) -> list:
    tap_device.driver.post_rx(64)
    for f in frames:
        tap_device.tap.send(f)
    return tap_device.driver.receive(expect) if expect else []


def test_rx_drops_and_duplicates(tap_device):
    d, sd = tap_device.driver, tap_device.harness
    frames = to_guest(4)
    inject(tap_device, drop=100, direction="rx")
    deliver(tap_device, frames, 0)
    assert sd.wait_stat("fault_rx_drops", 4) == 4
    with pytest.raises(TimeoutError):
        d.receive(1, timeout=0.3)
    inject(tap_device, duplicate=100, direction="rx")
    got = deliver(tap_device, frames, 8)
    assert [p.frame for p in got] == [f for f in frames for _ in range(2)]
    assert sd.stats()["fault_rx_duplicates"] == 4


def test_rx_corruption_is_never_marked_valid(tap_device):
    sd = tap_device.harness
    frames = to_guest(4)
    inject(tap_device, corrupt=100, direction="rx")
    got = deliver(tap_device, frames, 4)
    for sent, p in zip(frames, got, strict=True):
        assert NET_HDR.unpack(p.header)[0] & DATA_VALID == 0
        assert sum(a != b for a, b in zip(sent, p.frame, strict=True)) == 1 and not udp_checksum_ok(p.frame)
    assert sd.stats()["fault_rx_corruptions"] == 4
    inject(tap_device)
    got = deliver(tap_device, frames, 4)
    assert all(NET_HDR.unpack(p.header)[0] & DATA_VALID for p in got)


def test_bad_csum_lies_to_the_guest(tap_device):
    sd = tap_device.harness
    frames = to_guest(3)
    inject(tap_device, bad_csum=100, direction="rx")
    got = deliver(tap_device, frames, 3)
    for sent, p in zip(frames, got, strict=True):
        assert NET_HDR.unpack(p.header)[0] == DATA_VALID
        assert not udp_checksum_ok(p.frame) and bytes(Ether(p.frame)[UDP].payload) == \
            bytes(Ether(sent)[UDP].payload)
        assert Ether(p.frame)[IP].src == Ether(sent)[IP].src
    assert sd.stats()["fault_rx_bad_csums"] == 3


@pytest.mark.parametrize("spec, message", [
    (FaultSpec(drop=-1), "percentage"),
    (FaultSpec(drop=100.5), "percentage"),
    (FaultSpec(duplicate=True), "percentage"),
    (FaultSpec(corrupt="5"), "percentage"),  # type: ignore[arg-type]
    (FaultSpec(seed=-1), "seed"),
    (FaultSpec(seed=2**64), "seed"),
    (FaultSpec(queue=1), "queue pair from 0 to 0"),
    (FaultSpec(direction="up"), "direction"),
    (FaultSpec(bad_csum=1), "needs direction rx"),
    (FaultSpec(reorder=5), "needs a delay"),
    (FaultSpec(delay=10_001), "milliseconds"),
    (FaultSpec(jitter=-1), "milliseconds"),
    (FaultSpec(rate=10**6), "Mbit/s"),
])
def test_bad_fault_requests_change_nothing(served_device, spec, message):
    dev = served_device
    inject(dev, drop=5, seed=9)
    with pytest.raises(ConfigError, match=message):
        apply(dev.device.native, 1, spec)
    assert state(dev.device.native, 1)[0]["tx"] == {**NONE, "drop": 5.0, "seed": 9}


@pytest.mark.parametrize("text, message", [
    ("drop", "name=value"), ("loss=1", "name=value"), ("drop=lots", "not a number"), ("seed=0x", "not a number"),
])
def test_bad_fault_specs_on_the_command_line(text, message):
    with pytest.raises(ConfigError, match=message):
        FaultSpec.parse(text)


def test_fault_spec_from_the_command_line():
    assert FaultSpec.parse("drop=1.5, duplicate=2,seed=0x10,queue=0,direction=rx,bad-csum=3") == \
        FaultSpec(drop=1.5, duplicate=2, seed=16, queue=0, direction="rx", bad_csum=3)


# ---- episodes: receiving stopped, the link flapped -------------------------------

def test_rx_starvation_holds_frames_then_delivers_them(tap_device):
    d, sd = tap_device.driver, tap_device.harness
    episodes = Episodes(sd.device.native, sd.device.set_link)
    frames = to_guest(5)
    d.post_rx(32)
    episodes.starve_rx(400)
    assert episodes.active("rx_starve")
    for f in frames:
        tap_device.tap.send(f)
    with pytest.raises(TimeoutError):
        d.receive(1, timeout=0.2)                 # nothing while starving
    got = d.receive(5, timeout=3)                 # the timer resumes receiving
    assert [p.frame for p in got] == frames and not episodes.active("rx_starve")
    assert sd.stats()["fault_rx_starves"] == 1
    episodes.close()


def test_flap_takes_the_link_down_and_up(served_device):
    d, sd = served_device.driver, served_device.harness
    episodes = Episodes(sd.device.native, sd.device.set_link)
    episodes.flap(300)
    assert not d.net_config()["status"] & LINK_UP and episodes.active("flap")
    deadline = time.monotonic() + 3
    while not d.net_config()["status"] & LINK_UP and time.monotonic() < deadline:
        time.sleep(0.02)
    assert d.net_config()["status"] & LINK_UP and sd.stats()["fault_link_flaps"] == 1
    episodes.close()


@pytest.mark.parametrize("ms", [0, -5, 600_001, 1.5, True, "100"])
def test_bad_episode_lengths_are_refused(served_device, ms):
    sd = served_device.harness
    episodes = Episodes(sd.device.native, sd.device.set_link)
    with pytest.raises(ConfigError, match="milliseconds"):
        episodes.starve_rx(ms)
    with pytest.raises(ConfigError, match="milliseconds"):
        episodes.flap(ms)
    assert not episodes.active("rx_starve") and not episodes.active("flap")
    assert served_device.driver.net_config()["status"] & LINK_UP


# ---- the delay line: delay, jitter, rate, reorder ----------------------------------

def arrival_times(tap_device, count: int, timeout: float = 5.0) -> list[tuple[float, bytes]]:
    """(seconds since now, frame) of the next count frames at the TAP."""
    start, out = time.monotonic(), []
    while len(out) < count and time.monotonic() - start < timeout:
        out += [(time.monotonic() - start, f) for f in tap_device.tap.capture(1, timeout=0.05)]
    return out


def test_tx_delay_holds_frames_in_order(tap_device):
    sd = tap_device.harness
    frames = [udp_frame(200, i) for i in range(10)]
    inject(tap_device, delay=300, jitter=50, direction="tx")
    start = time.monotonic()
    send(tap_device.driver, frames)                       # used at once: held by the device
    got = arrival_times(tap_device, 10)
    sent_after = time.monotonic() - start
    assert [f for _, f in got] == frames                  # jitter never reorders
    assert min(t for t, _ in got) >= 0.2 and sent_after < 5
    assert sd.stats()["fault_tx_delayed"] == 10 and sd.stats()["tx_packets"] == 10


def test_tx_rate_spaces_frames_by_their_bits(tap_device):
    frames = [udp_frame(1250, i) for i in range(10)]      # 10 kbit each
    inject(tap_device, rate=0.1, direction="tx")          # 100 kbit/s: 100 ms a frame
    send(tap_device.driver, frames)
    got = arrival_times(tap_device, 10)
    assert [f for _, f in got] == frames
    assert got[-1][0] - got[0][0] >= 0.8                  # 9 gaps of 100 ms


def test_reorder_lets_frames_overtake_the_held_ones(tap_device, capture_on):
    sd = tap_device.harness
    frames = [udp_frame(200, i) for i in range(40)]
    cap, path = capture_on(tap_device, what="wire", direction="tx")
    inject(tap_device, delay=200, reorder=30, seed=5, direction="tx")
    send(tap_device.driver, frames)
    got = [f for _, f in arrival_times(tap_device, 40)]
    assert sorted(got) == sorted(frames) and got != frames
    cap.stop()
    assert [p.data for p in pcapng.read(path)] == got       # the capture shows the wire's order
    stats = sd.stats()
    assert stats["fault_tx_reordered"] + stats["fault_tx_delayed"] == 40 and stats["fault_tx_reordered"] > 0
    skipped = [frames.index(f) for f in got[:stats["fault_tx_reordered"]]]
    assert skipped == sorted(skipped)                      # those that skipped kept their order


def test_rx_delay_holds_received_frames(tap_device):
    d, sd = tap_device.driver, tap_device.harness
    frames = to_guest(6)
    inject(tap_device, delay=300, direction="rx")
    d.post_rx(32)
    start = time.monotonic()
    for f in frames:
        tap_device.tap.send(f)
    with pytest.raises(TimeoutError):
        d.receive(1, timeout=0.15)
    got = d.receive(6, timeout=3)
    assert [p.frame for p in got] == frames and time.monotonic() - start >= 0.25
    assert sd.stats()["fault_rx_delayed"] == 6


def test_a_full_delay_line_drops_and_counts(served_device):
    d, sd = served_device.driver, served_device.harness
    inject(served_device, delay=3000, direction="tx")      # nothing leaves while we send
    guest_frame, header = tso_request(60000)               # 42 wire segments each
    for _ in range(4):
        send(d, [guest_frame] * 10, header=header)
    stats = sd.stats()
    assert stats["fault_tx_queue_drops"] > 0 and stats["tx_packets"] == 0
    assert stats["fault_tx_delayed"] + stats["fault_tx_queue_drops"] == stats["tx_tso_segments"] == 40 * 42
    inject(served_device)                                   # cleared: the held ones still leave in time
    assert sd.wait_stat("tx_packets", stats["fault_tx_delayed"], timeout=8) == stats["fault_tx_delayed"]
