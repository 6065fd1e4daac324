"""Transmit: guest frames through the device to the null backend (counted)
and to a TAP in a private namespace (captured and compared byte for byte)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import driver as D
from tests.support.driver import NET_HDR, NET_HDR_LEN, TX
from tests.support.frames import udp_frame


def test_null_backend_counts_packets_and_bytes(served_device):
    d, sd = served_device.driver, served_device.harness
    sizes = [60, 64, 128, 1000, 1514, 9014, 42]
    for i, size in enumerate(sizes):
        d.transmit(udp_frame(size, i))
    used = d.complete_tx(len(sizes))
    assert [u.length for u in used] == [0] * len(sizes)    # TX buffers are read-only: nothing written
    stats = sd.stats()
    assert stats["tx_packets"] == len(sizes)
    assert stats["tx_bytes"] == sum(sizes)
    assert stats["tx_drops_malformed"] == stats["tx_drops_backend"] == 0
    assert stats["chain_errors"] == stats["dma_errors"] == 0


def test_tx_interrupt_fires(served_device):
    d, sd = served_device.driver, served_device.harness
    d.take_irq(d.queue_vector(TX))
    d.transmit(udp_frame(100))
    d.complete_tx()
    assert d.wait_irq(d.queue_vector(TX)) >= 1
    assert sd.stats()["tx_interrupts"] >= 1


def test_many_frames_fill_and_wrap_the_ring(served_device):
    d, sd = served_device.driver, served_device.harness
    total = 0
    for _round in range(3):
        for i in range(200):
            frame = udp_frame(60 + i, i)
            total += len(frame)
            d.transmit(frame, kick=(i % 50 == 49))
        d.complete_tx(200)
    assert sd.stats()["tx_packets"] == 600
    assert sd.stats()["tx_bytes"] == total


@pytest.mark.parametrize("header", [
    NET_HDR.pack(1, 0, 0, 0, 34, 6, 0),        # NEEDS_CSUM
    NET_HDR.pack(0, 1, 54, 1448, 0, 0, 0),     # GSO_TCPV4
    NET_HDR.pack(0, 3, 42, 1000, 0, 0, 0),     # GSO_UDP
    NET_HDR.pack(0, 5, 42, 1000, 0, 0, 0),     # GSO_UDP_L4
])
def test_offload_requests_that_were_not_negotiated_are_dropped(served_device, header):
    """A guest must not get offloads it did not negotiate (whatever is offered)."""
    d, sd = served_device.driver, served_device.harness
    d.start(accept=1 << D.F_VERSION_1 | 1 << D.F_MRG_RXBUF | 1 << D.F_EVENT_IDX)
    d.transmit(udp_frame(100), header=header)
    d.transmit(udp_frame(100))
    d.complete_tx(2)
    stats = sd.stats()
    drops = {k: v for k, v in stats.items() if k.startswith("tx_drops_") and v}
    # counted by reason where the engine has one, else as malformed
    assert drops == ({"tx_drops_unnegotiated": 1} if "tx_drops_unnegotiated" in stats
                     else {"tx_drops_malformed": 1})
    assert stats["tx_packets"] == 1
    assert not d.status & 0x40                 # a drop, not a device error


@pytest.mark.parametrize("frame_len", [0, 13, 65536, 70000])
def test_frames_of_impossible_size_are_dropped(served_device, frame_len):
    d, sd = served_device.driver, served_device.harness
    d.transmit(bytes(frame_len), pieces=[NET_HDR_LEN, 40000])
    d.transmit(udp_frame(60))
    d.complete_tx(2)
    stats = sd.stats()
    assert stats["tx_drops_malformed"] == 1 and stats["tx_packets"] == 1 and stats["tx_bytes"] == 60


def test_header_split_across_descriptors(served_device):
    d, sd = served_device.driver, served_device.harness
    d.transmit(udp_frame(100), pieces=[1, 3, 5, 2, 1, 7])   # header in five pieces
    d.complete_tx()
    assert sd.stats()["tx_packets"] == 1


# ---- to a TAP, byte for byte -------------------------------------------------------

LAYOUTS = {
    "one descriptor": dict(),
    "header apart": dict(pieces=[NET_HDR_LEN]),
    "many pieces": dict(pieces=[NET_HDR_LEN, 14, 20, 8, 1, 100]),
    "indirect": dict(indirect=True, pieces=[NET_HDR_LEN, 14]),
    "indirect one piece": dict(indirect=True),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tap_receives_the_exact_frames(tap_device, layout):
    d, tap = tap_device.driver, tap_device.tap
    frames = [udp_frame(size, i) for i, size in enumerate([42, 60, 61, 500, 1024, 1514])]
    for frame in frames:
        d.transmit(frame, **LAYOUTS[layout])
    d.complete_tx(len(frames))
    assert tap.capture(len(frames)) == frames
    stats = tap_device.harness.stats()
    assert stats["tx_packets"] == len(frames) and stats["tx_bytes"] == sum(map(len, frames))


def test_tap_receives_a_jumbo_frame_from_a_scattered_chain(tap_device):
    d, tap = tap_device.driver, tap_device.tap
    frame = udp_frame(9014, 7)
    d.transmit(frame, pieces=[NET_HDR_LEN] + [97] * 80)
    d.complete_tx()
    assert tap.capture(1) == [frame]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(42, 1514), cuts=st.lists(st.integers(1, 600), max_size=6), indirect=st.booleans())
def test_tap_frames_survive_any_scatter_layout(tap_device, size, cuts, indirect):
    d, tap = tap_device.driver, tap_device.tap
    frame = udp_frame(size, size)
    d.transmit(frame, pieces=cuts, indirect=indirect)
    d.complete_tx()
    assert tap.capture(1) == [frame]
