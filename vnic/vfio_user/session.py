"""One vfio-user client connection, and the listener that accepts them.

The C channel (native/chan.c) owns the socket: it answers doorbells itself
and queues everything else here.  Each request is decoded, handed to the
device model, and answered; a malformed request gets an error reply with an
errno and the session goes on.  Only a broken stream ends the session.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .._native import ffi, lib
from ..errors import DeviceError, ProtocolError
from ..pci.region import Region
from ..sandbox import remove_socket
from . import protocol as P
from .dma import DmaTable
from .protocol import Command, Header

log = logging.getLogger(__name__)

# A request handler: header, body and the fds that came with it, to the
# reply body (and the fds to send with it).
Handler = Callable[[Header, bytes, list[int]], bytes | tuple[bytes, list[int]]]


class DeviceModel(Protocol):
    """What a session needs from the device it serves."""
    regions: list[Region]

    @property
    def memory(self) -> DmaTable:
        """The DMA table that DMA_MAP and DMA_UNMAP change."""

    def irq_info(self, index: int) -> tuple[int, int]:
        """(flags, count) of interrupt index. Raises DeviceError for an index
        the device lacks."""

    def set_irqs(self, index: int, flags: int, start: int, count: int,
                 fds: list[int], data: bytes) -> None:
        """Apply a SET_IRQS request; fds are the model's to keep or close.
        Raises DeviceError for a bad request."""

    def device_reset(self) -> None:
        """DEVICE_RESET from the client."""

    def attach_channel(self, chan: Any) -> None:
        """The session's C channel (a cffi pointer) is up: doorbells and DMA
        messages go through it."""

    def detach_channel(self) -> None:
        """The channel is about to be freed."""

    def client_gone(self) -> None:
        """The client went away: forget its memory, eventfds and driver state."""


class Session:
    """One client connection on sock, served by run(); the C channel takes the
    socket over. Raises DeviceError (ENOMEM) if the channel cannot be
    created."""

    def __init__(self, sock: socket.socket, model: DeviceModel):
        self.model = model
        self.chan = lib.vnic_chan_new(sock.detach(), P.MAX_MSG_SIZE)
        if self.chan == ffi.NULL:
            raise DeviceError(errno.ENOMEM, "cannot start the vfio-user channel")
        self._chan_lock = threading.Lock()
        self.client_caps: dict[str, Any] = {}
        self.negotiated = False
        self.errors = 0
        self._handlers: dict[int, Handler] = {
            Command.VERSION: self._version,
            Command.DMA_MAP: self._dma_map,
            Command.DMA_UNMAP: self._dma_unmap,
            Command.DEVICE_GET_INFO: self._get_info,
            Command.DEVICE_GET_REGION_INFO: self._region_info,
            Command.DEVICE_GET_IRQ_INFO: self._irq_info,
            Command.DEVICE_SET_IRQS: self._set_irqs,
            Command.REGION_READ: self._region_read,
            Command.REGION_WRITE: self._region_write,
            Command.REGION_WRITE_MULTI: self._region_write_multi,
            Command.DEVICE_RESET: self._reset,
        }

    # ---- loop ---------------------------------------------------------------
    def run(self) -> None:
        """Serve until the client goes away or shutdown() is called.  A bad
        request gets an error reply and the session goes on."""
        buf = ffi.new("uint8_t[]", P.MAX_MSG_SIZE)
        fds = ffi.new("int[]", P.MAX_MSG_FDS)
        nfds = ffi.new("int *")
        self.model.attach_channel(self.chan)
        try:
            while True:
                n = lib.vnic_chan_recv(self.chan, buf, P.MAX_MSG_SIZE, fds, P.MAX_MSG_FDS, nfds)
                if n == lib.VNIC_CHAN_CLOSED:
                    break
                header = Header.unpack(ffi.buffer(buf, P.HEADER_SIZE))
                if n < 0:
                    too_big = n == lib.VNIC_CHAN_TOO_BIG
                    why = "too large" if too_big else "carries too many fds"
                    self._fail(header, ProtocolError(errno.E2BIG if too_big else errno.EINVAL,
                                                     f"message {why}"))
                    continue
                received = [fds[i] for i in range(nfds[0])]
                body = bytes(ffi.buffer(buf, n)[P.HEADER_SIZE:])
                self._dispatch(header, body, received)
        finally:
            self.model.detach_channel()
            with self._chan_lock:              # shutdown() from another thread must not
                chan, self.chan = self.chan, ffi.NULL   # see a freed channel
            lib.vnic_chan_free(chan)

    def shutdown(self) -> None:
        """Make run() return soon. Safe from another thread, also once run()
        has returned."""
        with self._chan_lock:
            if self.chan != ffi.NULL:
                lib.vnic_chan_shutdown(self.chan)

    def _dispatch(self, header: Header, body: bytes, fds: list[int]) -> None:
        handler = self._handlers.get(header.command)
        try:
            if header.flags & P.FLAG_REPLY:
                raise ProtocolError(errno.EINVAL, "unsolicited reply")
            if handler is None:
                raise ProtocolError(errno.ENOSYS, f"unsupported command {header.command}")
            if not self.negotiated and header.command != Command.VERSION:
                raise ProtocolError(errno.EINVAL, "VERSION must come first")
            result = handler(header, body, fds)
            reply_body, reply_fds = result if isinstance(result, tuple) else (result, [])
            if header.wants_reply:
                self._send(P.reply(header, reply_body), reply_fds)
        except (ProtocolError, DeviceError) as exc:
            self._fail(header, exc)
        except Exception as exc:               # a bug must not take the device down
            log.exception("internal error handling command %d", header.command)
            self._fail(header, ProtocolError(errno.EIO, str(exc)))
        finally:
            for fd in fds:                     # handlers dup what they keep
                os.close(fd)

    def _fail(self, header: Header, exc: ProtocolError | DeviceError) -> None:
        self.errors += 1
        level = logging.DEBUG if getattr(exc, "expected", False) else logging.WARNING
        log.log(level, "vfio-user command %d (id %d): %s", header.command, header.id, exc)
        if header.wants_reply:
            self._send(P.error_reply(header, exc.errno), [])

    def _send(self, message: bytes, fds: list[int]) -> None:
        fd_array = ffi.new("int[]", fds) if fds else ffi.NULL
        rc = lib.vnic_chan_send(self.chan, message, len(message), fd_array, len(fds))
        if rc < 0:
            log.warning("reply not sent: %s", os.strerror(-rc))

    # ---- handlers ----------------------------------------------------------------
    def _version(self, header: Header, body: bytes, fds: list[int]) -> bytes:
        major, minor, caps = P.parse_version(body)
        if major != P.MAJOR:
            raise ProtocolError(errno.ENOTSUP, f"client speaks vfio-user {major}.{minor}, we speak 0.0")
        self.client_caps = caps.get("capabilities", {}) if isinstance(caps, dict) else {}
        self.negotiated = True
        # the client's receive buffer is its request's size: keep the reply compact
        return P.pack_version(P.server_capabilities())

    def _dma_map(self, header: Header, body: bytes, fds: list[int]) -> bytes:
        P.need(body, P.DMA_MAP.size, "DMA_MAP")
        _argsz, flags, offset, iova, size = P.DMA_MAP.unpack_from(body)
        if len(fds) > 1:
            raise ProtocolError(errno.EINVAL, "DMA_MAP with more than one fd")
        self.model.memory.map(iova, size, fds[0] if fds else None, offset,
                              writable=bool(flags & P.DMA_FLAG_WRITE))
        return b""

    def _dma_unmap(self, header: Header, body: bytes, fds: list[int]) -> bytes:
        P.need(body, P.DMA_UNMAP.size, "DMA_UNMAP")
        _argsz, flags, iova, size = P.DMA_UNMAP.unpack_from(body)
        if flags & P.DMA_UNMAP_FLAG_GET_DIRTY_BITMAP:
            raise ProtocolError(errno.ENOTSUP, "dirty page tracking is not supported")
        if flags & P.DMA_UNMAP_FLAG_ALL:
            self.model.memory.unmap_all()
        else:
            self.model.memory.unmap(iova, size)
        return b""

    def _get_info(self, header: Header, body: bytes, fds: list[int]) -> bytes:
        return P.DEVICE_INFO.pack(P.DEVICE_INFO.size, P.DEVICE_FLAGS_PCI | P.DEVICE_FLAGS_RESET,
                                  len(self.model.regions), 5)

    def _region_info(self, header: Header, body: bytes, fds: list[int]) -> bytes:
        P.need(body, P.REGION_INFO.size, "GET_REGION_INFO")
        argsz, _flags, index, _cap, _size, _offset = P.REGION_INFO.unpack_from(body)
        if index >= len(self.model.regions):
            raise ProtocolError(errno.EINVAL, f"no region {index}")
        if argsz < P.REGION_INFO.size:
            raise ProtocolError(errno.EINVAL, f"GET_REGION_INFO argsz {argsz} too small")
        region = self.model.regions[index]
        flags = (P.REGION_FLAG_READ | P.REGION_FLAG_WRITE) if region.size else 0
        # No region is mappable: every BAR register must reach us as a message
        # (doorbells, ISR), and an mmap region would also turn off posted writes.
        return P.REGION_INFO.pack(P.REGION_INFO.size, flags, index, 0, region.size, 0)

    def _irq_info(self, header: Header, body: bytes, fds: list[int]) -> bytes:
        P.need(body, P.IRQ_INFO.size, "GET_IRQ_INFO")
        _argsz, _flags, index, _count = P.IRQ_INFO.unpack_from(body)
        flags, count = self.model.irq_info(index)
        return P.IRQ_INFO.pack(P.IRQ_INFO.size, flags, index, count)

    def _set_irqs(self, header: Header, body: bytes, fds: list[int]) -> bytes:
        P.need(body, P.IRQ_SET.size, "SET_IRQS")
        _argsz, flags, index, start, count = P.IRQ_SET.unpack_from(body)
        self.model.set_irqs(index, flags, start, count, [os.dup(fd) for fd in fds],
                            body[P.IRQ_SET.size:])
        return b""

    def _region(self, body: bytes, what: str) -> tuple[Region, int, int, int]:
        P.need(body, P.REGION_ACCESS.size, what)
        offset, index, count = P.REGION_ACCESS.unpack_from(body)
        if index >= len(self.model.regions):
            raise ProtocolError(errno.EINVAL, f"{what}: no region {index}")
        region = self.model.regions[index]
        if count == 0 or count > P.MAX_DATA_XFER or offset + count > region.size:
            raise ProtocolError(errno.EINVAL, f"{what}: {offset:#x}+{count} outside region "
                                              f"{index} of {region.size:#x} bytes")
        return region, offset, index, count

    def _region_read(self, header: Header, body: bytes, fds: list[int]) -> bytes:
        region, offset, index, count = self._region(body, "REGION_READ")
        data = region.read(offset, count)
        return P.REGION_ACCESS.pack(offset, index, count) + data

    def _region_write(self, header: Header, body: bytes, fds: list[int]) -> bytes:
        region, offset, index, count = self._region(body, "REGION_WRITE")
        data = body[P.REGION_ACCESS.size:P.REGION_ACCESS.size + count]
        if len(data) != count:
            raise ProtocolError(errno.EINVAL, f"REGION_WRITE carries {len(data)} of {count} bytes")
        region.write(offset, data)
        return P.REGION_ACCESS.pack(offset, index, count)

    def _region_write_multi(self, header: Header, body: bytes, fds: list[int]) -> bytes:
        P.need(body, 8, "REGION_WRITE_MULTI")
        (n,) = struct.unpack_from("<Q", body)
        if n > 200 or len(body) < 8 + n * P.MULTI_WRITE_ENTRY.size:
            raise ProtocolError(errno.EINVAL, f"REGION_WRITE_MULTI of {n} entries in {len(body)} bytes")
        for i in range(n):
            offset, index, count, data = P.MULTI_WRITE_ENTRY.unpack_from(body, 8 + i * P.MULTI_WRITE_ENTRY.size)
            if count > 8:
                raise ProtocolError(errno.EINVAL, f"REGION_WRITE_MULTI entry of {count} bytes")
            entry = P.REGION_ACCESS.pack(offset, index, count) + data[:count]
            self._region_write(header, entry, [])
        return b""

    def _reset(self, header: Header, body: bytes, fds: list[int]) -> bytes:
        self.model.device_reset()
        return b""


class Server:
    """Listen on a UNIX socket and serve one client at a time, forever.  The
    socket is created at once (mode 0600; a stale one is replaced).  Raises
    FileExistsError if path exists and is not a socket, or another server
    answers on it."""

    def __init__(self, path: str | Path, model: DeviceModel):
        self.path = Path(path)
        self.model = model
        self.sessions_served = 0
        self._session: Session | None = None
        self._stopping = threading.Event()
        self._listener = self._listen()

    def _listen(self) -> socket.socket:
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise FileExistsError(f"{self.path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(self.path))
            except OSError:
                self.path.unlink()             # stale socket from a dead server
            else:
                raise FileExistsError(f"{self.path} is in use by another server")
            finally:
                probe.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)                  # the socket is born 0600
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(1)
        return sock

    def serve_forever(self) -> None:
        """Accept clients one at a time and serve each until it goes away,
        until close(). An accept error not caused by close() propagates."""
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    break
                raise
            log.info("vfio-user client connected on %s", self.path)
            self._session = Session(conn, self.model)
            try:
                self._session.run()
            finally:
                self._session = None
                self.model.client_gone()
                self.sessions_served += 1       # counted once the device is clean again
                log.info("vfio-user client disconnected; waiting for the next one")

    def start(self) -> threading.Thread:
        """Run serve_forever() in a daemon thread, and return the thread."""
        thread = threading.Thread(target=self.serve_forever, name="vnic-vfio-user", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop accepting, end the current session and remove the socket."""
        self._stopping.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        session = self._session
        if session is not None:
            session.shutdown()
        remove_socket(self.path)
