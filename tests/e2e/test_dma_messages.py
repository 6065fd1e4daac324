"""Guest RAM that is not shared memory: QEMU maps it without file
descriptors and vnic reaches every ring and buffer through DMA_READ /
DMA_WRITE messages.  Slow, but it must work, and it must say so."""
from __future__ import annotations

import logging

import pytest

from vnic.backends.tap import TapBackend
from vnic.device import Device
from vnic.lab.guest import GuestProcess
from vnic.lab.netns import NetNS

pytestmark = pytest.mark.e2e


def test_guest_without_shared_memory_works_through_messages(qemu, image, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="vnic.vfio_user.dma")
    with NetNS() as ns:
        ns.add_tap("vnic0")
        with Device(TapBackend("vnic0", ns.name)) as dev:
            dev.serve(tmp_path / "vnic.sock")
            with GuestProcess(qemu, image, dev.qemu_args(), "ping -c 3 -W 5 10.213.0.1",
                              timeout=150, shared_memory=False) as g:
                res = g.wait()
            warned = dev.net.memory.warned_no_fd      # set when rings lie in fd-less memory
            counters = dev.stats()
    assert res.rc == 0, f"{res.error}\n{res.output}"
    assert "3 packets received" in res.output
    assert warned, "guest RAM came with file descriptors after all"
    assert "DMA_READ/DMA_WRITE messages" in caplog.text
    assert counters["tx_packets"] >= 3 and counters["rx_packets"] >= 3
    assert counters["dma_errors"] == 0
