"""SET_IRQS on the MSI-X index: eventfd runs, triggers, masks, and that every
fd handed in is either kept or closed, whatever the request."""
from __future__ import annotations

import errno
import gc
import os

import pytest

from vnic.errors import DeviceError
from vnic.pci import msix as M
from vnic.pci.config import Bar, ConfigSpace
from vnic.vfio_user import protocol as P

TRIGGER_EVENTFD = P.IRQ_SET_DATA_EVENTFD | P.IRQ_SET_ACTION_TRIGGER


class Sink:
    def __init__(self):
        self.fds: dict[int, int] = {}
        self.triggered: list[int] = []
        self.masked: dict[int, bool] = {}

    def check_vector_fd(self, fd):
        if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[eventfd]":
            raise DeviceError(errno.EINVAL, "not an eventfd")

    def set_vector_fd(self, vector, fd):
        old = self.fds.pop(vector, -1)
        if old >= 0:
            os.close(old)
        if fd >= 0:
            self.fds[vector] = fd

    def trigger_vector(self, vector):
        self.triggered.append(vector)

    def mask_vector(self, vector, masked):
        self.masked[vector] = masked

    def close(self):
        for fd in self.fds.values():
            os.close(fd)


@pytest.fixture
def msix():
    return M.Msix(ConfigSpace(0x1AF4, 0x1041, 0x020000, 1, 0x1AF4, 1, [Bar(1, 0x1000)]), vectors=3, bar=1)


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()


def open_fds() -> int:
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def eventfds(n):
    return [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(n)]


def test_eventfd_run_assigns_vectors(msix, sink):
    fds = eventfds(2)
    M.set_irqs(msix, sink, TRIGGER_EVENTFD, 1, 2, fds, b"")
    assert sink.fds == {1: fds[0], 2: fds[1]}
    M.set_irqs(msix, sink, TRIGGER_EVENTFD, 1, 1, [], b"")          # a run without fds de-assigns
    assert sink.fds == {2: fds[1]}


def test_trigger_and_mask_with_bool_data(msix, sink):
    M.set_irqs(msix, sink, P.IRQ_SET_DATA_BOOL | P.IRQ_SET_ACTION_TRIGGER, 0, 3, [], b"\1\0\1")
    assert sink.triggered == [0, 2]
    M.set_irqs(msix, sink, P.IRQ_SET_DATA_NONE | P.IRQ_SET_ACTION_MASK, 1, 1, [], b"")
    assert sink.masked == {1: True}


@pytest.mark.parametrize("flags,start,count,nfds,data", [
    (P.IRQ_SET_DATA_NONE | P.IRQ_SET_ACTION_TRIGGER, 0, 0, 2, b""),   # disable all, fds sent along
    (TRIGGER_EVENTFD, 2, 2, 2, b""),                                   # beyond the table
    (TRIGGER_EVENTFD, 0, 0, 1, b""),                                   # count 0
    (TRIGGER_EVENTFD, 0, 2, 1, b""),                                   # fewer fds than vectors
    (P.IRQ_SET_DATA_EVENTFD | P.IRQ_SET_ACTION_MASK, 0, 1, 1, b""),    # eventfd only triggers
    (P.IRQ_SET_DATA_EVENTFD | P.IRQ_SET_DATA_BOOL | P.IRQ_SET_ACTION_TRIGGER, 0, 1, 1, b""),
    (P.IRQ_SET_DATA_BOOL | P.IRQ_SET_ACTION_TRIGGER, 0, 3, 1, b"\1"),  # short bool data
    (0, 0, 1, 1, b""),                                                 # no data type, no action
])
def test_no_request_leaks_the_fds_it_carries(msix, sink, flags, start, count, nfds, data):
    before = open_fds()
    for _ in range(10):
        try:
            M.set_irqs(msix, sink, flags, start, count, eventfds(nfds), data)
        except DeviceError as exc:
            assert exc.errno == errno.EINVAL
    # each run leaking would show as 10 or more (exact counts are racy: an
    # earlier test's device may close its fds when released)
    assert open_fds() - len(sink.fds) < before + 5


def test_disable_all_clears_every_vector(msix, sink):
    M.set_irqs(msix, sink, TRIGGER_EVENTFD, 0, 3, eventfds(3), b"")
    M.set_irqs(msix, sink, P.IRQ_SET_DATA_NONE | P.IRQ_SET_ACTION_TRIGGER, 0, 0, [], b"")
    assert sink.fds == {}


def test_table_bar_reads_and_pba_is_zero(msix):
    assert msix.region.read(12, 4) == b"\1\0\0\0"        # vectors start masked
    msix.region.write(0, b"\xaa" * 4)
    assert msix.region.read(0, 4) == b"\xaa" * 4
    assert msix.region.read(msix.pba_offset, 8) == bytes(8)


def test_a_request_with_one_bad_fd_applies_none_and_closes_all(msix, sink):
    r, w = os.pipe()
    os.close(r)
    fds = eventfds(2) + [w]
    with pytest.raises(DeviceError):
        M.set_irqs(msix, sink, TRIGGER_EVENTFD, 0, 3, fds, b"")
    assert sink.fds == {}
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
