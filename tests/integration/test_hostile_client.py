"""A hostile or broken vfio-user client (not the guest): fds that are not
eventfds, DMA requests it never answers, guest memory it shrinks under a
running device, DMA_MAP fds and offsets no file can back.  Each gets a
specific error or NEEDS_RESET with a counter; the server never blocks,
never dies, and serves the next client."""
from __future__ import annotations

import errno
import fcntl
import os
import time

import pytest

from tests.support import driver as D
from tests.support.client import GuestMemory, VfioUserClient, VfioUserError
from tests.support.driver import TX, VirtioNetDriver
from tests.support.frames import udp_frame
from vnic._native import lib
from vnic.vfio_user import protocol as P

EVENTFD_MAX = 0xFFFF_FFFF_FFFF_FFFE          # an eventfd counter that cannot take another write


def assert_serves_a_new_client(sd) -> None:
    client = sd.connect()
    d = VirtioNetDriver(client).start()
    before = sd.stats()["tx_packets"]
    d.transmit(udp_frame(80))
    d.complete_tx(1)
    assert sd.stats()["tx_packets"] == before + 1
    d.close()
    client.close()


def ring_doorbell(d: VirtioNetDriver, index: int) -> None:
    """Notify queue index without looking at its ring (driver.kick reads the
    ring's event index first)."""
    q = d.queues[index]
    offset = d.caps.notify.offset + q.notify_off * d.caps.notify_multiplier
    d.client.region_write(d.caps.notify.bar, offset, index.to_bytes(2, "little"), posted=True)


# ---- interrupt fds --------------------------------------------------------------

def test_a_pipe_as_msix_fd_is_refused_and_nothing_applied(served_device):
    d, client = served_device.driver, served_device.client
    r, w = os.pipe()
    try:
        good = os.eventfd(0, os.EFD_CLOEXEC)
        with pytest.raises(VfioUserError) as err:
            client.set_irqs(0, [good, w])        # one bad fd spoils the whole request
        assert err.value.errno == errno.EINVAL
        os.close(good)
        d.transmit(udp_frame(60))                # the old eventfds still signal
        d.complete_tx(1)
        assert d.wait_irq(1 + TX) >= 1
    finally:
        os.close(r)
        os.close(w)


def test_a_full_eventfd_never_blocks_a_worker(served_device):
    """A client that fills its eventfd's counter: the write would block on a
    blocking eventfd.  The device made it non-blocking at SET_IRQS, so the
    worker goes on and a DEVICE_RESET is answered at once."""
    d, sd, client = served_device.driver, served_device.harness, served_device.client
    full = os.eventfd(0, os.EFD_CLOEXEC)         # blocking, as a hostile client would pass it
    try:
        os.eventfd_write(full, EVENTFD_MAX)
        client.set_irqs(1 + TX, [full])
        for i in range(4):
            d.transmit(udp_frame(60 + i))
        d.complete_tx(4)
        start = time.monotonic()
        client.device_reset()
        assert time.monotonic() - start < 1.0
        assert not lib.vnic_dev_running(sd.device.native)
    finally:
        os.close(full)


# ---- DMA requests the client never answers -------------------------------------------

def test_unanswered_dma_reads_do_not_delay_reset(serve):
    sd = serve()
    client = sd.connect(attach=False)
    client.version()
    client.dma_map(fd=None)                      # guest RAM reached by DMA_READ/DMA_WRITE
    d = VirtioNetDriver(client).start()
    client.answer_dma = False
    for i in range(8):
        d.transmit(udp_frame(60 + i), kick=i == 7)
    assert client.wait_ignored_dma(1)
    start = time.monotonic()
    client.device_reset()
    assert time.monotonic() - start < 1.0
    client.answer_dma = True
    d.forget_queues()
    d.start()
    d.transmit(udp_frame(70))
    d.complete_tx(1)


def test_a_quiesce_waits_briefly_then_gives_up_on_dma(serve):
    """DMA_MAP while a DMA_READ hangs: the device stops its workers for the
    map, gives the request a short grace, then fails it (NEEDS_RESET,
    counted) instead of waiting for the request's own timeout."""
    sd = serve()
    client = sd.connect(attach=False)
    client.version()
    client.dma_map(fd=None)
    d = VirtioNetDriver(client).start()
    client.answer_dma = False
    d.transmit(udp_frame(60))
    assert client.wait_ignored_dma(1)
    extra = os.memfd_create("extra")
    os.ftruncate(extra, 1 << 20)
    try:
        start = time.monotonic()
        client.dma_map(iova=0x2_0000_0000, size=1 << 20, fd=extra)
        assert time.monotonic() - start < 1.0
    finally:
        os.close(extra)
    assert d.status & D.DEVICE_NEEDS_RESET
    assert sd.stats()["dma_errors"] >= 1


# ---- guest memory that shrinks under the device ---------------------------------------

def test_truncated_guest_memory_fails_the_device_not_the_server(serve):
    """A client maps an unsealed memfd, then truncates it while traffic runs.
    The worker's next access raises SIGBUS: the device goes NEEDS_RESET with
    mem_faults counted, and the server serves the next client."""
    sd = serve()
    mem = GuestMemory()
    client = sd.connect(memory=mem)
    d = VirtioNetDriver(client).start()
    for i in range(3):
        d.transmit(udp_frame(60 + i))
    d.complete_tx(3)
    os.ftruncate(mem.fd, 0)                      # from here the test must not touch mem
    ring_doorbell(d, TX)                         # the worker reads the ring: SIGBUS
    assert sd.wait_stat("mem_faults", 1) == 1
    assert d.status & D.DEVICE_NEEDS_RESET       # config space: a message, not memory
    assert d.wait_irq(d.CONFIG_VECTOR) >= 1
    assert lib.vnic_dev_error(sd.device.native) == lib.VNIC_ERR_MEM_FAULT
    d.close()
    client.close()
    mem.close()
    assert sd.wait_sessions(1)
    assert_serves_a_new_client(sd)


def test_sealed_memfd_is_taken(serve):
    """QEMU's memory-backend-memfd seals its memfd against shrinking: the
    kind of guest RAM that can never vanish."""
    sd = serve()
    client = sd.connect(attach=False)
    client.version()
    fd = os.memfd_create("sealed", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, 1 << 20)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        client.dma_map(iova=0x1_0000_0000, size=1 << 20, fd=fd)
        [mapping] = sd.device.transport.memory.mappings.values()
        assert mapping.sealed
    finally:
        os.close(fd)


# ---- DMA_MAP fds and offsets ---------------------------------------------------------

def dma_map_error(client: VfioUserClient, fd: int, offset: int = 0, size: int = 1 << 20) -> int:
    reply = client.dma_map(iova=0x3_0000_0000, size=size, offset=offset, fd=fd, check=False)
    assert reply.is_error
    return reply.errno


@pytest.mark.parametrize("offset,size", [
    (1 << 20, 1 << 20),                          # past the end of a 1 MiB file
    (0, 2 << 20),                                # longer than the file
    (4096 + 1, 4096),                            # not page-aligned
    (1 << 63, 4096),                             # beyond off_t: OverflowError before
    ((1 << 64) - 4096, 4096),
    (0, (1 << 63) + 4096),
])
def test_dma_map_beyond_its_file_is_refused(served_device, offset, size):
    sd, client = served_device.harness, served_device.client
    fd = os.memfd_create("small")
    try:
        os.ftruncate(fd, 1 << 20)
        assert dma_map_error(client, fd, offset, size) == errno.EINVAL
    finally:
        os.close(fd)
    assert client.request(P.Command.DEVICE_GET_INFO).body   # still served
    assert sd.server.sessions_served == 0


def test_dma_map_of_a_pipe_is_refused(served_device):
    client = served_device.client
    r, w = os.pipe()
    try:
        assert dma_map_error(client, r) == errno.EINVAL
    finally:
        os.close(r)
        os.close(w)
