"""A vfio-user client that plays QEMU 11.1's `vfio-user-pci`, for tests.

It connects to the server's UNIX socket and speaks the protocol the way QEMU
does: VERSION with JSON capabilities, DMA_MAP of guest RAM as a memfd in
SCM_RIGHTS, DEVICE_GET_INFO / GET_REGION_INFO / GET_IRQ_INFO, SET_IRQS with
eventfds, REGION_READ / REGION_WRITE (doorbells posted with NO_REPLY), and
DEVICE_RESET.  It can also send raw bytes, for hostile tests.

A reader thread takes every message off the socket, like QEMU's receive
side: replies are queued for whoever waits on them (always with a timeout,
so a test never hangs), and DMA_READ / DMA_WRITE requests from the server
(guest memory mapped without a file descriptor) are answered from the
guest memory at once.

Guest memory is a memfd mapped here as well (GuestMemory): the client maps
it into the server with DMA_MAP and keeps its own mapping to play the guest.
Its default IOVA lies above 4 GiB to catch 32-bit truncation.
"""
from __future__ import annotations

import array
import errno
import json
import mmap
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from vnic.pci.region import CONFIG_REGION, IRQ_MSIX
from vnic.vfio_user import protocol as P
from vnic.vfio_user.protocol import Command, Header

DEFAULT_TIMEOUT = 5.0
GUEST_IOVA = 0x1_0000_0000
GUEST_SIZE = 16 << 20

# QEMU's capabilities (hw/vfio-user/proxy.c, caps_json): migration dict,
# max fds, max transfer, page sizes, map count, write_multiple.
QEMU_CAPABILITIES = {
    "capabilities": {
        "migration": {"pgsize": 4096, "max_bitmap_size": 256 << 20},
        "max_msg_fds": 16,
        "max_data_xfer_size": 1 << 20,
        "pgsizes": 4096,
        "max_dma_maps": 65535,
        "write_multiple": True,
    }
}


class VfioUserError(OSError):
    """The server answered a request with an error reply."""

    def __init__(self, command: int, err: int):
        try:
            name = Command(command).name
        except ValueError:
            name = f"command {command}"
        super().__init__(err, f"{name}: {os.strerror(err) if err else 'error reply without errno'}")
        self.command = command


@dataclass
class Message:
    header: Header
    body: bytes
    fds: list[int] = field(default_factory=list)

    @property
    def is_reply(self) -> bool:
        return bool(self.header.flags & P.FLAG_REPLY)

    @property
    def is_error(self) -> bool:
        return bool(self.header.flags & P.FLAG_ERROR)

    @property
    def errno(self) -> int:
        return self.header.error


# ---- guest memory ------------------------------------------------------------

class GuestMemory:
    """Guest RAM: a memfd mapped here, seen by the device at `iova`.

    A small first-fit allocator hands out guest-physical ranges for rings
    and buffers."""

    def __init__(self, size: int = GUEST_SIZE, iova: int = GUEST_IOVA):
        self.size = size
        self.iova = iova
        self.fd = os.memfd_create("vnic-test-guest", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._free: list[tuple[int, int]] = [(0, size)]     # (offset, length), sorted
        self._used: dict[int, int] = {}                    # offset -> length

    # -- allocation --
    def alloc(self, size: int, align: int = 16) -> int:
        """Zeroed guest memory; returns its IOVA."""
        if size <= 0:
            raise ValueError("allocation of nothing")
        for i, (start, length) in enumerate(self._free):
            aligned = -(-start // align) * align
            if aligned + size > start + length:
                continue
            pieces = [(start, aligned - start), (aligned + size, start + length - aligned - size)]
            self._free[i:i + 1] = [p for p in pieces if p[1]]
            self._used[aligned] = size
            self.map[aligned:aligned + size] = bytes(size)
            return self.iova + aligned
        raise MemoryError(f"guest memory exhausted allocating {size} bytes")

    def free(self, iova: int) -> None:
        offset = iova - self.iova
        length = self._used.pop(offset)
        self._free.append((offset, length))
        self._free.sort()
        merged: list[tuple[int, int]] = []
        for start, n in self._free:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            else:
                merged.append((start, n))
        self._free = merged

    @property
    def allocated(self) -> int:
        return sum(self._used.values())

    # -- access --
    def contains(self, iova: int, length: int) -> bool:
        return self.iova <= iova and iova + length <= self.iova + self.size

    def _offset(self, iova: int, length: int) -> int:
        if not self.contains(iova, length):
            raise ValueError(f"{iova:#x}+{length:#x} is outside guest memory")
        return iova - self.iova

    def read(self, iova: int, length: int) -> bytes:
        off = self._offset(iova, length)
        return self.map[off:off + length]

    def write(self, iova: int, data: bytes) -> None:
        off = self._offset(iova, len(data))
        self.map[off:off + len(data)] = data

    def fill(self, iova: int, length: int, byte: int) -> None:
        self.write(iova, bytes([byte]) * length)

    def u16(self, iova: int) -> int:
        return struct.unpack_from("<H", self.map, self._offset(iova, 2))[0]

    def u32(self, iova: int) -> int:
        return struct.unpack_from("<I", self.map, self._offset(iova, 4))[0]

    # Ring fields are read by the device while we write them: store each in
    # one copy.  struct.pack_into zeroes its target before packing into it,
    # so the device could read 0 (an avail idx of 0 looks hostile).
    def set_u16(self, iova: int, value: int) -> None:
        self.write(iova, struct.pack("<H", value & 0xFFFF))

    def set_u32(self, iova: int, value: int) -> None:
        self.write(iova, struct.pack("<I", value & 0xFFFFFFFF))

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


# ---- the client ----------------------------------------------------------------

class VfioUserClient:
    def __init__(self, path: str, memory: GuestMemory | None = None,
                 timeout: float = DEFAULT_TIMEOUT):
        self.path = str(path)
        self.timeout = timeout
        self.memory = memory if memory is not None else GuestMemory()
        self._own_memory = memory is None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(self.path)
        # The socket stays blocking for the reader thread; sends poll with
        # their own deadline (see _send_bytes), so nothing waits forever.
        self.sock.settimeout(None)
        self._next_id = 1
        self._inbox: list[Message] = []
        self._cond = threading.Condition()
        self._eof = False
        self._closing = False
        self.server_caps: dict = {}
        self.regions: dict[int, tuple[int, int, int]] = {}   # filled by attach()
        self.irqs: dict[int, int] = {}
        self.config = b""
        self.dma_requests_served = 0          # DMA_READ/DMA_WRITE from the server
        self.answer_dma = True                # False: a client that never replies to them
        self.dma_requests_ignored = 0
        self._reader = threading.Thread(target=self._reader_main, name="vfio-user-client", daemon=True)
        self._reader.start()

    # ---- lifetime -------------------------------------------------------------
    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.join(self.timeout)
        self.sock.close()
        with self._cond:
            for msg in self._inbox:
                _close_fds(msg.fds)
            self._inbox.clear()
        if self._own_memory:
            self.memory.close()

    def __enter__(self) -> VfioUserClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def closed_by_server(self) -> bool:
        with self._cond:
            return self._eof

    def wait_closed(self, timeout: float | None = None) -> bool:
        """True once the server has closed the stream."""
        with self._cond:
            return self._cond.wait_for(lambda: self._eof, timeout or self.timeout)

    # ---- sending --------------------------------------------------------------
    def new_id(self) -> int:
        msg_id = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFF
        return msg_id

    def send(self, command: int, body: bytes = b"", fds: list[int] | tuple = (),
             flags: int = 0, msg_id: int | None = None, size: int | None = None) -> int:
        """Send one message; `size` overrides the header's size field (hostile)."""
        msg_id = self.new_id() if msg_id is None else msg_id
        hdr = Header(msg_id, command, P.HEADER_SIZE + len(body) if size is None else size, flags)
        self._send_bytes(hdr.pack() + body, fds)
        return msg_id

    def send_raw(self, data: bytes, fds: list[int] | tuple = ()) -> None:
        """Put bytes on the stream as they are (hostile tests)."""
        self._send_bytes(data, fds)

    def _send_bytes(self, data: bytes, fds) -> None:
        deadline = time.monotonic() + self.timeout
        view = memoryview(data)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLOUT)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError(f"send to {self.path} did not finish in {self.timeout} s")
            try:
                n = self.sock.sendmsg([view], ancillary, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except BlockingIOError:
                continue
            ancillary = []                       # fds ride on the first byte only
            view = view[n:]
            if not view:
                return

    # ---- receiving ------------------------------------------------------------
    def _recv_exact(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def _read_message(self) -> Message | None:
        fds = array.array("i")
        data, ancdata, _flags, _addr = self.sock.recvmsg(
            P.HEADER_SIZE, socket.CMSG_SPACE(P.MAX_MSG_FDS * fds.itemsize))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        if not data:
            _close_fds(list(fds))
            return None
        if len(data) < P.HEADER_SIZE:
            rest = self._recv_exact(P.HEADER_SIZE - len(data))
            if rest is None:
                _close_fds(list(fds))
                return None
            data += rest
        header = Header.unpack(data)
        if header.size < P.HEADER_SIZE:
            raise ConnectionError(f"server sent a message of size {header.size}")
        body = self._recv_exact(header.size - P.HEADER_SIZE) if header.size > P.HEADER_SIZE else b""
        if body is None:
            _close_fds(list(fds))
            return None
        return Message(header, body, list(fds))

    def _reader_main(self) -> None:
        try:
            while True:
                msg = self._read_message()
                if msg is None:
                    break
                if not msg.is_reply and msg.header.command in (Command.DMA_READ, Command.DMA_WRITE):
                    self._take_dma(msg)
                    continue
                with self._cond:
                    self._inbox.append(msg)
                    self._cond.notify_all()
        except (OSError, ConnectionError):
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _take_dma(self, msg: Message) -> None:
        if self.answer_dma:
            self._serve_dma(msg)
            return
        _close_fds(msg.fds)
        with self._cond:
            self.dma_requests_ignored += 1
            self._cond.notify_all()

    def wait_ignored_dma(self, count: int = 1, timeout: float | None = None) -> bool:
        """Wait until `count` DMA requests went unanswered (answer_dma False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.dma_requests_ignored >= count, _t(timeout, self.timeout))

    def _serve_dma(self, msg: Message) -> None:
        """Answer the server's DMA_READ / DMA_WRITE from guest memory."""
        _close_fds(msg.fds)
        self.dma_requests_served += 1
        if len(msg.body) < P.DMA_ACCESS.size:
            self._send_bytes(P.error_reply(msg.header, errno.EINVAL), ())
            return
        iova, count = P.DMA_ACCESS.unpack_from(msg.body)
        if not self.memory.contains(iova, count):
            self._send_bytes(P.error_reply(msg.header, errno.EFAULT), ())
        elif msg.header.command == Command.DMA_READ:
            self._send_bytes(P.reply(msg.header, msg.body[:16] + self.memory.read(iova, count)), ())
        else:
            self.memory.write(iova, msg.body[16:16 + count])
            self._send_bytes(P.reply(msg.header, msg.body[:16]), ())

    def recv(self, timeout: float | None = None) -> Message:
        """The next message from the server, whatever it is."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._inbox or self._eof, _t(timeout, self.timeout)):
                raise TimeoutError("no message from the server")
            if not self._inbox:
                raise ConnectionError("the server closed the connection")
            return self._inbox.pop(0)

    def wait_reply(self, msg_id: int, command: int | None = None, timeout: float | None = None) -> Message:
        def find():
            for i, m in enumerate(self._inbox):
                if m.is_reply and m.header.id == msg_id and (command is None or m.header.command == command):
                    return i
            return None

        with self._cond:
            if not self._cond.wait_for(lambda: find() is not None or self._eof, _t(timeout, self.timeout)):
                raise TimeoutError(f"no reply to message {msg_id}")
            i = find()
            if i is None:
                raise ConnectionError(f"the server closed the connection before answering {msg_id}")
            return self._inbox.pop(i)

    def quiet_for(self, seconds: float) -> list[Message]:
        """Wait `seconds`; return whatever arrived meanwhile (expect [])."""
        time.sleep(seconds)
        with self._cond:
            got, self._inbox = self._inbox, []
        return got

    def request(self, command: int, body: bytes = b"", fds: list[int] | tuple = (),
                flags: int = 0, check: bool = True, timeout: float | None = None) -> Message:
        """Send a request and wait for its reply; error replies raise unless check=False."""
        msg_id = self.send(command, body, fds, flags)
        reply = self.wait_reply(msg_id, command, timeout)
        _close_fds(reply.fds)
        if check and reply.is_error:
            raise VfioUserError(command, reply.errno)
        return reply

    # ---- commands, as QEMU sends them ----------------------------------------------
    def version(self, caps: dict | None = None, major: int = P.MAJOR, minor: int = P.MINOR) -> dict:
        body = P.VERSION.pack(major, minor) + json.dumps(caps or QEMU_CAPABILITIES).encode() + b"\0"
        reply = self.request(Command.VERSION, body)
        _major, _minor, self.server_caps = P.parse_version(reply.body)
        return self.server_caps

    def dma_map(self, iova: int | None = None, size: int | None = None, offset: int = 0,
                fd: int | bool | None = True, flags: int = P.DMA_FLAG_READ | P.DMA_FLAG_WRITE,
                check: bool = True) -> Message:
        """Map guest memory (all of it by default).  fd=None maps without a
        file descriptor (the server then uses DMA_READ/DMA_WRITE)."""
        iova = self.memory.iova if iova is None else iova
        size = self.memory.size if size is None else size
        fds = [self.memory.fd] if fd is True else ([] if fd in (None, False) else [fd])
        body = P.DMA_MAP.pack(P.DMA_MAP.size, flags, offset, iova, size)
        return self.request(Command.DMA_MAP, body, fds, check=check)

    def dma_unmap(self, iova: int | None = None, size: int | None = None, flags: int = 0,
                  check: bool = True) -> Message:
        iova = self.memory.iova if iova is None else iova
        size = self.memory.size if size is None else size
        return self.request(Command.DMA_UNMAP, P.DMA_UNMAP.pack(P.DMA_UNMAP.size, flags, iova, size),
                            check=check)

    def device_info(self) -> tuple[int, int, int]:
        """(flags, num_regions, num_irqs)"""
        reply = self.request(Command.DEVICE_GET_INFO, P.DEVICE_INFO.pack(P.DEVICE_INFO.size, 0, 0, 0))
        _argsz, flags, regions, irqs = P.DEVICE_INFO.unpack_from(reply.body)
        return flags, regions, irqs

    def region_info(self, index: int, argsz: int = P.REGION_INFO.size) -> tuple[int, int, int]:
        """(flags, size, offset) of region `index`."""
        reply = self.request(Command.DEVICE_GET_REGION_INFO,
                             P.REGION_INFO.pack(argsz, 0, index, 0, 0, 0))
        _argsz, flags, got, _cap, size, offset = P.REGION_INFO.unpack_from(reply.body)
        assert got == index, f"GET_REGION_INFO answered region {got} for {index}"
        return flags, size, offset

    def irq_info(self, index: int) -> tuple[int, int]:
        """(flags, count) of IRQ index `index`."""
        reply = self.request(Command.DEVICE_GET_IRQ_INFO, P.IRQ_INFO.pack(P.IRQ_INFO.size, 0, index, 0))
        _argsz, flags, got, count = P.IRQ_INFO.unpack_from(reply.body)
        assert got == index
        return flags, count

    def set_irqs(self, start: int, fds: list[int], index: int = IRQ_MSIX,
                 flags: int = P.IRQ_SET_DATA_EVENTFD | P.IRQ_SET_ACTION_TRIGGER,
                 count: int | None = None, data: bytes = b"", check: bool = True) -> Message:
        """SET_IRQS as QEMU sends it: argsz 20, eventfds in SCM_RIGHTS."""
        count = len(fds) if count is None else count
        body = P.IRQ_SET.pack(P.IRQ_SET.size, flags, index, start, count) + data
        return self.request(Command.DEVICE_SET_IRQS, body, fds, check=check)

    def region_read(self, region: int, offset: int, count: int) -> bytes:
        reply = self.request(Command.REGION_READ, P.REGION_ACCESS.pack(offset, region, count))
        got_off, got_region, got_count = P.REGION_ACCESS.unpack_from(reply.body)
        data = reply.body[P.REGION_ACCESS.size:]
        assert (got_off, got_region, got_count) == (offset, region, count), "REGION_READ reply mismatch"
        assert len(data) == count, f"REGION_READ returned {len(data)} of {count} bytes"
        return data

    def region_write(self, region: int, offset: int, data: bytes, posted: bool = False) -> None:
        """A REGION_WRITE; posted=True sends it NO_REPLY like QEMU's doorbells."""
        body = P.REGION_ACCESS.pack(offset, region, len(data)) + data
        if posted:
            self.send(Command.REGION_WRITE, body, flags=P.FLAG_NO_REPLY)
            return
        reply = self.request(Command.REGION_WRITE, body)
        got_off, got_region, got_count = P.REGION_ACCESS.unpack_from(reply.body)
        assert (got_off, got_region, got_count) == (offset, region, len(data)), "REGION_WRITE reply mismatch"

    def config_read(self, offset: int, count: int) -> bytes:
        return self.region_read(CONFIG_REGION, offset, count)

    def config_write(self, offset: int, data: bytes) -> None:
        self.region_write(CONFIG_REGION, offset, data)

    def device_reset(self) -> None:
        self.request(Command.DEVICE_RESET)

    def attach(self) -> VfioUserClient:
        """What QEMU does when the device is realized: negotiate, learn the
        device, read config space, map guest RAM."""
        self.version()
        flags, regions, irqs = self.device_info()
        assert flags & P.DEVICE_FLAGS_PCI, "not a PCI device"
        self.regions = {i: self.region_info(i) for i in range(regions)}
        self.irqs = {}
        for index in range(irqs):
            reply = self.request(Command.DEVICE_GET_IRQ_INFO,
                                 P.IRQ_INFO.pack(P.IRQ_INFO.size, 0, index, 0), check=False)
            if not reply.is_error:
                self.irqs[index] = P.IRQ_INFO.unpack_from(reply.body)[3]
        self.config = self.config_read(0, self.regions[CONFIG_REGION][1])
        self.dma_map()
        return self


def _t(timeout: float | None, default: float) -> float:
    return default if timeout is None else timeout


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
