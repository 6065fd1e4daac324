"""The DMA table: guest memory regions QEMU shares with DMA_MAP.

Regions that come with a file descriptor are mmapped here and handed to the
C data plane as host pointers; regions without one are registered as
message-based and reached through DMA_READ/DMA_WRITE (slow: QEMU sends them
when guest RAM is not a shared memory backend).  The table changes only
while the data plane is quiesced, because workers hold raw pointers.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from .._native import ffi, lib
from ..errors import ProtocolError, check

log = logging.getLogger(__name__)
MAX_OFFSET = (1 << 63) - 1          # off_t


@dataclass
class Mapping:
    """One DMA_MAP region: its place in the guest's IOVA space and, if it came
    with a file descriptor, its mmap and the pointer the data plane holds."""
    iova: int
    size: int
    writable: bool
    map: mmap.mmap | None
    pointer: Any               # cffi pointer keeping the buffer exported
    sealed: bool = False       # the file cannot shrink under the mapping


class DmaTable:
    """The guest memory regions the client has mapped, kept in step with the C
    device native. quiesced() must give a context in which the workers are
    stopped: they hold pointers into these regions."""

    def __init__(self, native: Any, quiesced: Callable[[], AbstractContextManager[None]]):
        self._native = native
        self._quiesced = quiesced
        self.mappings: dict[tuple[int, int], Mapping] = {}
        self.warned_no_fd = False

    def map(self, iova: int, size: int, fd: int | None, offset: int, writable: bool) -> None:
        """DMA_MAP: mmap the region from fd at offset (without an fd it is
        reached by DMA_READ/DMA_WRITE messages) and hand it to the data
        plane. Raises ProtocolError for an empty or overflowing range, an fd
        that cannot be mapped, or a region the data plane refuses."""
        if size == 0 or iova + size > 1 << 64:
            raise ProtocolError(errno.EINVAL, f"DMA_MAP of bad range {iova:#x}+{size:#x}")
        region = None
        pointer = ffi.NULL
        sealed = False
        if fd is not None:
            sealed = check_mappable(fd, offset, size)
            region = self._mmap(fd, offset, size, writable, iova)
            pointer = ffi.from_buffer(region)
        log.debug("DMA_MAP %#x+%#x %s%s", iova, size, "fd" if fd is not None else "no fd",
                  " rw" if writable else " ro")
        with self._quiesced():
            rc = lib.vnic_mem_add(self._native, iova, size, pointer, int(writable))
        if rc < 0:
            self._release(region, pointer)
            check(rc, f"DMA_MAP {iova:#x}+{size:#x}", ProtocolError)
        self.mappings[(iova, size)] = Mapping(iova, size, writable, region, pointer, sealed)

    def by_messages(self, iova: int) -> bool:
        """Is iova in a region mapped without a file descriptor?"""
        return any(m.map is None and m.iova <= iova < m.iova + m.size for m in self.mappings.values())

    def warn_if_slow(self, rings: dict[int, int]) -> None:
        """Warn once if a queue's ring (queue index: address) lies in memory
        reached by messages: then guest RAM itself came without an fd, and
        every packet goes through DMA_READ/DMA_WRITE.  QEMU maps areas a NIC
        never touches (its VGA framebuffer, ROMs) without fds anyway."""
        slow = sorted(q for q, addr in rings.items() if self.by_messages(addr))
        if not slow or self.warned_no_fd:
            return
        self.warned_no_fd = True
        log.warning("guest RAM was shared without a file descriptor (the rings of queue %s are there): "
                    "every packet is reached through DMA_READ/DMA_WRITE messages, which is slow. "
                    "Give QEMU shared RAM: -object memory-backend-memfd,id=mem,size=...,share=on "
                    "-machine memory-backend=mem", ",".join(map(str, slow)))

    @staticmethod
    def _mmap(fd: int, offset: int, size: int, writable: bool, iova: int) -> mmap.mmap:
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        try:
            return mmap.mmap(fd, size, mmap.MAP_SHARED, prot, offset=offset)
        except (OSError, ValueError, OverflowError) as exc:
            raise ProtocolError(errno.EINVAL, f"cannot mmap DMA region {iova:#x}: {exc}") from None

    def unmap(self, iova: int, size: int) -> None:
        """DMA_UNMAP of the region mapped with exactly this iova and size.
        Raises ProtocolError (ENOENT) if there is none."""
        mapping = self.mappings.pop((iova, size), None)
        if mapping is None:
            raise ProtocolError(errno.ENOENT, f"DMA_UNMAP of unknown region {iova:#x}+{size:#x}")
        with self._quiesced():
            lib.vnic_mem_remove(self._native, iova, size)
        self._release(mapping.map, mapping.pointer)

    def unmap_all(self) -> None:
        """Forget every region (DMA_UNMAP with the ALL flag, or the client went
        away)."""
        with self._quiesced():
            lib.vnic_mem_clear(self._native)
        for mapping in self.mappings.values():
            self._release(mapping.map, mapping.pointer)
        self.mappings.clear()

    @staticmethod
    def _release(region: mmap.mmap | None, pointer: Any) -> None:
        if region is not None:
            ffi.release(pointer)
            region.close()


def check_mappable(fd: int, offset: int, size: int) -> bool:
    """Check a DMA_MAP's fd before it is mapped: a regular file (memfd,
    /dev/shm, hugetlbfs) whose size covers offset+size, offset page-aligned.
    Returns whether its seals keep it from shrinking (QEMU's memfd backend
    seals by default); an unsealed file that shrinks later is caught by the
    data plane's SIGBUS guard. Raises ProtocolError (EINVAL) otherwise."""
    if offset > MAX_OFFSET or size > MAX_OFFSET - offset or offset % mmap.ALLOCATIONGRANULARITY:
        raise ProtocolError(errno.EINVAL, f"DMA_MAP offset {offset:#x} size {size:#x}: "
                                          "not page-aligned or beyond any file")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise ProtocolError(errno.EINVAL, "DMA_MAP fd is not a file (memfd, /dev/shm or hugetlbfs)")
    if offset + size > info.st_size:
        raise ProtocolError(errno.EINVAL, f"DMA_MAP of {offset:#x}+{size:#x} beyond the end "
                                          f"of its file ({info.st_size:#x} bytes)")
    return _seals(fd) & fcntl.F_SEAL_SHRINK != 0


def _seals(fd: int) -> int:
    try:
        return fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        return 0                       # a file that takes no seals (not a memfd)
