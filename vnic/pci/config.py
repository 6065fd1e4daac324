"""Type-0 PCI configuration space with a capability list.

QEMU's vfio client reads the whole space once at attach, then forwards every
guest config write and the reads of bits it does not emulate itself
(command, status, interrupt line/pin, vendor capabilities).  BAR registers
and the MSI-X capability body are emulated by QEMU, but we still keep honest
BAR sizing semantics for other clients (and our own test client).
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

CONFIG_SIZE = 256

VENDOR_ID = 0x00
DEVICE_ID = 0x02
COMMAND = 0x04
STATUS = 0x06
REVISION = 0x08
CLASS_PROG = 0x09
HEADER_TYPE = 0x0E
BAR0 = 0x10
SUBSYS_VENDOR = 0x2C
SUBSYS_ID = 0x2E
ROM = 0x30
CAP_PTR = 0x34
INT_LINE = 0x3C
INT_PIN = 0x3D

STATUS_CAP_LIST = 0x10
COMMAND_WRITABLE = 0x0547        # io, mem, master, parity, serr, intx-disable
BAR_MEM32 = 0x0
BAR_MEM64 = 0x4


@dataclass
class Bar:
    """A 32-bit memory BAR: its index and size (a power of two, at least 16
    bytes)."""
    index: int
    size: int                     # power of two, >= 16


# A window in config space served by code (e.g. virtio's PCI_CFG access cap).
ReadHook = Callable[[int, int], bytes]
WriteHook = Callable[[int, bytes], None]


class ConfigSpace:
    """A type-0 PCI configuration space: IDs, BARs, a capability list, hooks
    that serve windows of it by code, and the mask of the bits a guest may
    write. Raises ValueError for a BAR size that is not a power of two of at
    least 16."""

    def __init__(self, vendor: int, device: int, class_code: int, revision: int,
                 subsys_vendor: int, subsys_id: int, bars: list[Bar]):
        self.data = bytearray(CONFIG_SIZE)
        self.wmask = bytearray(CONFIG_SIZE)       # bits the guest may change
        self.bars = {b.index: b for b in bars}
        self._hooks: list[tuple[int, int, ReadHook | None, WriteHook | None]] = []
        self._next_cap = 0x40
        self._last_cap_next = CAP_PTR
        struct.pack_into("<HH", self.data, VENDOR_ID, vendor, device)
        struct.pack_into("<H", self.wmask, COMMAND, COMMAND_WRITABLE)
        self.data[REVISION] = revision
        self.data[CLASS_PROG:CLASS_PROG + 3] = class_code.to_bytes(3, "little")
        struct.pack_into("<HH", self.data, SUBSYS_VENDOR, subsys_vendor, subsys_id)
        self.wmask[INT_LINE] = 0xFF
        for bar in bars:
            if bar.size & (bar.size - 1) or bar.size < 16:
                raise ValueError(f"BAR{bar.index} size {bar.size:#x} is not a power of two >= 16")
            struct.pack_into("<I", self.data, BAR0 + 4 * bar.index, BAR_MEM32)
            struct.pack_into("<I", self.wmask, BAR0 + 4 * bar.index, ~(bar.size - 1) & 0xFFFFFFF0)

    # ---- building ------------------------------------------------------------
    def add_capability(self, cap_id: int, body: bytes, wmask: bytes | None = None) -> int:
        """Append a capability (body excludes id and next); returns its offset.
        wmask: writable bits of the body.  Raises ValueError if the space is
        full."""
        size = (2 + len(body) + 3) & ~3
        off = self._next_cap
        if off + size > CONFIG_SIZE:
            raise ValueError("config space full")
        self.data[off] = cap_id
        self.data[off + 2:off + 2 + len(body)] = body
        if wmask:
            self.wmask[off + 2:off + 2 + len(wmask)] = wmask
        self.data[self._last_cap_next] = off
        self._last_cap_next = off + 1
        self._next_cap = off + size
        struct.pack_into("<H", self.data, STATUS, self.u16(STATUS) | STATUS_CAP_LIST)
        return off

    def hook(self, offset: int, length: int, read: ReadHook | None, write: WriteHook | None) -> None:
        """Serve [offset, offset+length) by code instead of stored bytes."""
        self._hooks.append((offset, length, read, write))

    # ---- access ----------------------------------------------------------------
    def u16(self, off: int) -> int:
        """The little-endian 16-bit value at off."""
        value: int = struct.unpack_from("<H", self.data, off)[0]
        return value

    def u32(self, off: int) -> int:
        """The little-endian 32-bit value at off."""
        value: int = struct.unpack_from("<I", self.data, off)[0]
        return value

    def read(self, offset: int, count: int) -> bytes:
        """count bytes from offset, from a hook if one covers them. Raises
        IndexError for an access outside the space."""
        self._check(offset, count)
        for start, length, read, _ in self._hooks:
            if read and start <= offset and offset + count <= start + length:
                return read(offset - start, count)
        return bytes(self.data[offset:offset + count])

    def write(self, offset: int, data: bytes) -> None:
        """Write data at offset: to a hook if one covers it, else only the bits
        the write mask allows. Raises IndexError for an access outside the
        space."""
        self._check(offset, len(data))
        for start, length, _, write in self._hooks:
            if write and start <= offset and offset + len(data) <= start + length:
                write(offset - start, data)
                return
        for i, byte in enumerate(data):
            pos = offset + i
            mask = self.wmask[pos]
            self.data[pos] = (self.data[pos] & ~mask | byte & mask) & 0xFF

    @staticmethod
    def _check(offset: int, count: int) -> None:
        if count <= 0 or offset < 0 or offset + count > CONFIG_SIZE:
            raise IndexError(f"config access {offset:#x}+{count} outside {CONFIG_SIZE} bytes")

    @property
    def command(self) -> int:
        """The command register."""
        return self.u16(COMMAND)

    def bar_address(self, index: int) -> int:
        """The address in BAR index, flag bits cleared."""
        return self.u32(BAR0 + 4 * index) & ~0xF
