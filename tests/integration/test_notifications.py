"""Interrupts and kicks with and without EVENT_IDX: interrupts fire when
they should and stay quiet when the driver asks, and honest notification
suppression on the driver's side never loses a wake-up."""
from __future__ import annotations

import time

import pytest

from tests.support import driver as D
from tests.support.driver import RX, TX
from tests.support.frames import udp_frame

EVENT_IDX = 1 << D.F_EVENT_IDX
MODES = {"event_idx": 0, "no_event_idx": EVENT_IDX}


def wait_used_idx(q, value: int, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while q.used_idx != value:
        assert time.monotonic() < deadline, f"used idx {q.used_idx}, want {value}"
        time.sleep(0.0005)


@pytest.mark.parametrize("mode", MODES)
def test_tx_interrupt_fires(served_device, mode):
    d = served_device.driver
    d.start(drop=MODES[mode])
    assert d.has(D.F_EVENT_IDX) == (mode == "event_idx")
    for i in range(5):
        d.transmit(udp_frame(100, i))
        d.complete_tx()
        assert d.wait_irq(d.queue_vector(TX)) >= 1, f"no interrupt for frame {i}"


@pytest.mark.parametrize("mode", MODES)
def test_rx_interrupt_fires(tap_device, mode):
    d, tap = tap_device.driver, tap_device.tap
    d.start(drop=MODES[mode])
    d.post_rx(16)
    for i in range(5):
        tap.send(udp_frame(100, i, to_guest=True))
        assert d.receive(1)[0].frame == udp_frame(100, i, to_guest=True)
        assert d.wait_irq(d.queue_vector(RX)) >= 1, f"no interrupt for frame {i}"


@pytest.mark.parametrize("mode", MODES)
def test_honest_kick_suppression_loses_no_wakeup(served_device, mode):
    d, sd = served_device.driver, served_device.harness
    d.start(drop=MODES[mode])
    sent = 0
    for burst in (1, 2, 3, 50, 1, 7, 100, 1):
        for i in range(burst):
            d.transmit(udp_frame(60, sent + i))          # kick() honours avail_event / NO_NOTIFY
        sent += burst
        d.complete_tx(burst)
    assert sd.stats()["tx_packets"] == sent


def test_event_idx_device_publishes_avail_event(served_device):
    d = served_device.driver
    assert d.has(D.F_EVENT_IDX)
    q = d.queues[TX]
    for n in range(1, 4):
        d.transmit(udp_frame(60))
        d.complete_tx()
        deadline = time.monotonic() + 2
        while q.kick_event != q.avail_position:            # "kick me at the next buffer"
            assert time.monotonic() < deadline, (q.kick_event, q.avail_position)
            time.sleep(0.0005)
        assert q.avail_position == n


def test_event_idx_used_event_suppresses_interrupts(served_device):
    d, sd = served_device.driver, served_device.harness
    q, vector = d.queues[TX], d.queue_vector(TX)
    d.transmit(udp_frame(60, 0))
    wait_used_idx(q, 1)
    assert d.wait_irq(vector) >= 1
    q.interrupt_at(3)                  # interrupt once used idx moves past 3
    for n in (2, 3):
        d.transmit(udp_frame(60, n))
        wait_used_idx(q, n)
        time.sleep(0.05)
        assert d.take_irq(vector) == 0, f"interrupt at used idx {n}"
    d.transmit(udp_frame(60, 4))
    wait_used_idx(q, 4)
    assert d.wait_irq(vector) >= 1
    assert sd.stats()["tx_packets"] == 4


def test_no_interrupt_flag_without_event_idx(served_device):
    d, sd = served_device.driver, served_device.harness
    d.start(drop=EVENT_IDX)
    q, vector = d.queues[TX], d.queue_vector(TX)
    q.suppress_interrupts(True)
    before = sd.stats()["tx_interrupts"]
    d.transmit(udp_frame(60))
    d.complete_tx()
    time.sleep(0.05)
    assert d.take_irq(vector) == 0
    assert sd.stats()["tx_interrupts"] == before
    q.suppress_interrupts(False)
    d.transmit(udp_frame(60))
    d.complete_tx()
    assert d.wait_irq(vector) >= 1


def test_isr_reports_queue_interrupts(served_device):
    d = served_device.driver
    d.read_isr()
    d.transmit(udp_frame(60))
    d.complete_tx()
    assert d.read_isr() & 1
    assert d.read_isr() == 0                             # read clears it
