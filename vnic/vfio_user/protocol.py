"""vfio-user wire format: message header, commands, and the body layouts we
speak (they mirror the kernel's VFIO ioctl structs).

Reference: QEMU docs/interop/vfio-user.rst.  Everything is little-endian.
"""
from __future__ import annotations

import enum
import errno
import json
import struct
from dataclasses import dataclass
from typing import Any

from .._native import lib
from ..errors import ProtocolError

# Commands, flags, limits and the header layout are shared with the C
# channel (native/chan.c): native/vnic.h declares them once and they are
# read from lib here; tests/unit/test_shared_constants.py checks HEADER
# against struct vfio_user_header.
HEADER = struct.Struct("<HHIII")          # id, command, size, flags, error
HEADER_SIZE = HEADER.size

FLAG_REPLY: int = lib.VFIO_USER_F_REPLY
FLAG_NO_REPLY: int = lib.VFIO_USER_F_NO_REPLY
FLAG_ERROR: int = lib.VFIO_USER_F_ERROR

MAX_MSG_FDS: int = lib.VFIO_USER_MAX_MSG_FDS
MAX_DATA_XFER: int = lib.VFIO_USER_MAX_DATA_XFER
# the largest message we accept: a full data transfer plus its headers
MAX_MSG_SIZE: int = lib.VFIO_USER_MAX_MSG_SIZE
PGSIZE = 4096
MAX_DMA_MAPS: int = lib.VNIC_MAX_DMA_REGIONS    # the C DMA table's size


class Command(enum.IntEnum):
    """vfio-user command numbers (enum vfio_user_command in native/vnic.h)."""
    VERSION = lib.VFIO_USER_VERSION
    DMA_MAP = lib.VFIO_USER_DMA_MAP
    DMA_UNMAP = lib.VFIO_USER_DMA_UNMAP
    DEVICE_GET_INFO = lib.VFIO_USER_DEVICE_GET_INFO
    DEVICE_GET_REGION_INFO = lib.VFIO_USER_DEVICE_GET_REGION_INFO
    DEVICE_GET_REGION_IO_FDS = lib.VFIO_USER_DEVICE_GET_REGION_IO_FDS
    DEVICE_GET_IRQ_INFO = lib.VFIO_USER_DEVICE_GET_IRQ_INFO
    DEVICE_SET_IRQS = lib.VFIO_USER_DEVICE_SET_IRQS
    REGION_READ = lib.VFIO_USER_REGION_READ
    REGION_WRITE = lib.VFIO_USER_REGION_WRITE
    DMA_READ = lib.VFIO_USER_DMA_READ
    DMA_WRITE = lib.VFIO_USER_DMA_WRITE
    DEVICE_RESET = lib.VFIO_USER_DEVICE_RESET
    DIRTY_PAGES = lib.VFIO_USER_DIRTY_PAGES
    REGION_WRITE_MULTI = lib.VFIO_USER_REGION_WRITE_MULTI


@dataclass(frozen=True)
class Header:
    """The 16-byte header of every vfio-user message."""
    id: int
    command: int
    size: int
    flags: int
    error: int = 0

    @classmethod
    def unpack(cls, data: bytes | memoryview) -> Header:
        """The header at the start of data."""
        return cls(*HEADER.unpack_from(data))

    def pack(self) -> bytes:
        """The header as its 16 bytes."""
        return HEADER.pack(self.id, self.command, self.size, self.flags, self.error)

    @property
    def wants_reply(self) -> bool:
        """False for a message sent with FLAG_NO_REPLY."""
        return not self.flags & FLAG_NO_REPLY


def reply(request: Header, body: bytes = b"") -> bytes:
    """The reply to request, carrying body."""
    return Header(request.id, request.command, HEADER_SIZE + len(body), FLAG_REPLY).pack() + body


def error_reply(request: Header, err: int) -> bytes:
    """The error reply to request, carrying errno err."""
    return Header(request.id, request.command, HEADER_SIZE, FLAG_REPLY | FLAG_ERROR, err).pack()


def need(body: bytes | memoryview, size: int, what: str) -> None:
    """Raise ProtocolError (EINVAL) if body is shorter than size bytes; what
    names the message."""
    if len(body) < size:
        raise ProtocolError(errno.EINVAL, f"{what}: body of {len(body)} bytes, need {size}")


# ---- VERSION ---------------------------------------------------------------
VERSION = struct.Struct("<HH")
MAJOR, MINOR = 0, 0


def server_capabilities(write_multiple: bool = False) -> dict[str, Any]:
    """Our side of VERSION: the JSON object with the capabilities we offer."""
    caps: dict[str, Any] = {
        "max_msg_fds": MAX_MSG_FDS,
        "max_data_xfer_size": MAX_DATA_XFER,
        "pgsizes": PGSIZE,
        "max_dma_maps": MAX_DMA_MAPS,
    }
    if write_multiple:
        caps["write_multiple"] = True
    return {"capabilities": caps}


def parse_version(body: bytes | memoryview) -> tuple[int, int, dict[str, Any]]:
    """Major, minor and the capabilities object of a VERSION body. Raises
    ProtocolError for a short body or capabilities that are not a JSON
    object."""
    need(body, VERSION.size, "VERSION")
    major, minor = VERSION.unpack_from(body)
    raw = bytes(body[VERSION.size:]).split(b"\0", 1)[0]
    caps: dict[str, Any] = {}
    if raw:
        try:
            caps = json.loads(raw)
        except ValueError as exc:
            raise ProtocolError(errno.EINVAL, f"VERSION: capabilities are not JSON: {exc}") from None
        except RecursionError:
            raise ProtocolError(errno.EINVAL, "VERSION: capabilities nest too deeply") from None
        if not isinstance(caps, dict):
            raise ProtocolError(errno.EINVAL, "VERSION: capabilities must be a JSON object")
    return major, minor, caps


def pack_version(caps: dict[str, Any]) -> bytes:
    """A VERSION body: our version and caps as NUL-terminated JSON."""
    return VERSION.pack(MAJOR, MINOR) + json.dumps(caps).encode() + b"\0"


# ---- DMA_MAP / DMA_UNMAP ---------------------------------------------------
DMA_MAP = struct.Struct("<IIQQQ")          # argsz, flags, offset, address, size
DMA_UNMAP = struct.Struct("<IIQQ")         # argsz, flags, address, size
DMA_FLAG_READ = 1
DMA_FLAG_WRITE = 2
DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1
DMA_UNMAP_FLAG_ALL = 2

# ---- DEVICE_GET_INFO -------------------------------------------------------
DEVICE_INFO = struct.Struct("<IIII")       # argsz, flags, num_regions, num_irqs
DEVICE_FLAGS_RESET = 1
DEVICE_FLAGS_PCI = 2

# ---- DEVICE_GET_REGION_INFO ------------------------------------------------
REGION_INFO = struct.Struct("<IIIIQQ")     # argsz, flags, index, cap_offset, size, offset
REGION_FLAG_READ = 1
REGION_FLAG_WRITE = 2
REGION_FLAG_MMAP = 4
REGION_FLAG_CAPS = 8
CAP_HEADER = struct.Struct("<HHI")         # id, version, next
CAP_SPARSE_MMAP = 1
SPARSE_HEADER = struct.Struct("<II")       # nr_areas, reserved
SPARSE_AREA = struct.Struct("<QQ")         # offset, size

# ---- REGION_READ / REGION_WRITE --------------------------------------------
REGION_ACCESS = struct.Struct("<QII")      # offset, region, count
MULTI_WRITE_ENTRY = struct.Struct("<QII8s")  # offset, region, count, data[8]

# ---- IRQs ------------------------------------------------------------------
IRQ_INFO = struct.Struct("<IIII")          # argsz, flags, index, count
IRQ_INFO_EVENTFD = 1
IRQ_INFO_MASKABLE = 2
IRQ_INFO_AUTOMASKED = 4
IRQ_INFO_NORESIZE = 8
IRQ_SET = struct.Struct("<IIIII")          # argsz, flags, index, start, count
# vfio_irq_set flags: one data type and one action
IRQ_SET_DATA_NONE = 1
IRQ_SET_DATA_BOOL = 2
IRQ_SET_DATA_EVENTFD = 4
IRQ_SET_ACTION_MASK = 8
IRQ_SET_ACTION_UNMASK = 16
IRQ_SET_ACTION_TRIGGER = 32

# ---- DMA_READ / DMA_WRITE (server to client) -------------------------------
DMA_ACCESS = struct.Struct("<QQ")          # address, count
