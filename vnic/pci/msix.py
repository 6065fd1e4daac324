"""MSI-X: the capability in config space and the table/PBA BAR.

QEMU's vfio client emulates the table itself and signals vectors through
the eventfds it hands us with SET_IRQS, so the table kept here only serves
clients that do touch it.  PBA reads do reach us; nothing is pending on our
side because vectors are eventfds, so the PBA reads as zero.
"""
from __future__ import annotations

import errno
import os
import struct
from typing import Protocol

from ..errors import DeviceError
from ..vfio_user.protocol import (
    IRQ_SET_ACTION_MASK,
    IRQ_SET_ACTION_TRIGGER,
    IRQ_SET_ACTION_UNMASK,
    IRQ_SET_DATA_BOOL,
    IRQ_SET_DATA_EVENTFD,
    IRQ_SET_DATA_NONE,
)
from .config import ConfigSpace
from .region import Region

CAP_ID_MSIX = 0x11
ENTRY_SIZE = 16
CONTROL_ENABLE = 0x8000
CONTROL_MASKALL = 0x4000


class Msix:
    """MSI-X with vectors vectors: the capability (added to config) and the BAR
    region holding the table and the PBA, in BAR bar. Raises ValueError if
    they do not fit bar_size."""

    def __init__(self, config: ConfigSpace, vectors: int, bar: int, bar_size: int = 0x1000):
        self.vectors = vectors
        self.table_offset = 0
        self.pba_offset = bar_size // 2
        if vectors * ENTRY_SIZE > self.pba_offset or (vectors + 63) // 64 * 8 > bar_size - self.pba_offset:
            raise ValueError(f"{vectors} MSI-X vectors do not fit a {bar_size:#x} BAR")
        self.table = bytearray(vectors * ENTRY_SIZE)
        for v in range(vectors):                       # vectors start masked
            self.table[v * ENTRY_SIZE + 12] = 1
        body = struct.pack("<HII", vectors - 1, self.table_offset | bar, self.pba_offset | bar)
        self.cap = config.add_capability(CAP_ID_MSIX, body,
                                         wmask=struct.pack("<H", CONTROL_ENABLE | CONTROL_MASKALL))
        self.config = config
        self.region = Region(bar_size, self._read, self._write)

    @property
    def enabled(self) -> bool:
        """The enable bit of the capability's message control."""
        return bool(self.config.u16(self.cap + 2) & CONTROL_ENABLE)

    def _read(self, offset: int, count: int) -> bytes:
        if offset + count <= len(self.table):
            return bytes(self.table[offset:offset + count])
        return bytes(count)

    def _write(self, offset: int, data: bytes) -> None:
        if offset + len(data) <= len(self.table):
            self.table[offset:offset + len(data)] = data


class VectorSink(Protocol):
    """Where MSI-X vectors go: the data plane's eventfd table."""

    def check_vector_fd(self, fd: int) -> None:
        """Raise DeviceError unless fd may signal a vector (an eventfd)."""

    def set_vector_fd(self, vector: int, fd: int) -> None:
        """Signal vector through eventfd fd from now on (-1: no eventfd)."""

    def trigger_vector(self, vector: int) -> None:
        """Signal vector now."""

    def mask_vector(self, vector: int, masked: bool) -> None:
        """Mask or unmask vector."""


def set_irqs(msix: Msix, sink: VectorSink, flags: int, start: int, count: int,
             fds: list[int], data: bytes) -> None:
    """Apply a VFIO SET_IRQS request to the MSI-X index.

    QEMU assigns eventfds in runs: a run of fds replaces those vectors'
    eventfds, a run sent without fds de-assigns them, and DATA_NONE|TRIGGER
    with count 0 disables them all.  Every fd in fds is used or closed.
    Raises DeviceError (EINVAL) for a malformed request."""
    data_type = flags & (IRQ_SET_DATA_NONE | IRQ_SET_DATA_BOOL | IRQ_SET_DATA_EVENTFD)
    action = flags & (IRQ_SET_ACTION_MASK | IRQ_SET_ACTION_UNMASK | IRQ_SET_ACTION_TRIGGER)
    if bin(data_type).count("1") != 1 or bin(action).count("1") != 1:
        _close(fds)
        raise DeviceError(errno.EINVAL, f"SET_IRQS flags {flags:#x}: need one data type and one action")
    if action == IRQ_SET_ACTION_TRIGGER and data_type == IRQ_SET_DATA_NONE and count == 0:
        _close(fds)                    # fds sent along with "disable all" are ours to close
        for v in range(msix.vectors):
            sink.set_vector_fd(v, -1)
        return
    if start + count > msix.vectors or count == 0:
        _close(fds)
        raise DeviceError(errno.EINVAL, f"SET_IRQS vectors {start}+{count} beyond {msix.vectors}")
    if data_type == IRQ_SET_DATA_EVENTFD:
        if action != IRQ_SET_ACTION_TRIGGER or len(fds) not in (0, count):
            _close(fds)
            raise DeviceError(errno.EINVAL, f"SET_IRQS eventfd: {len(fds)} fds for {count} vectors")
        _check_all(sink, fds)
        for i in range(count):
            sink.set_vector_fd(start + i, fds[i] if fds else -1)
        return
    _close(fds)
    if data_type == IRQ_SET_DATA_BOOL and len(data) < count:
        raise DeviceError(errno.EINVAL, "SET_IRQS bool data shorter than count")
    selected = [start + i for i in range(count) if data_type == IRQ_SET_DATA_NONE or data[i]]
    for v in selected:
        if action == IRQ_SET_ACTION_TRIGGER:
            sink.trigger_vector(v)
        else:
            sink.mask_vector(v, action == IRQ_SET_ACTION_MASK)


def _check_all(sink: VectorSink, fds: list[int]) -> None:
    """Every fd fit to signal a vector, or all closed and DeviceError: a
    request applies whole or not at all."""
    try:
        for fd in fds:
            sink.check_vector_fd(fd)
    except DeviceError:
        _close(fds)
        raise


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
