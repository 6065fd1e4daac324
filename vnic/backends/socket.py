"""Socket backends, which need no root and no TAP: frames cross a stream
socket with QEMU's -netdev stream framing (what passt speaks too), or a
datagram socket a frame per datagram (QEMU's -netdev dgram).  The data
plane's side is native/stream.c and native/dgram.c; this file makes and
watches the connections.

    stream:ADDR            connect to ADDR, and again whenever the peer goes
    stream-listen:ADDR     listen on ADDR, one peer at a time
    dgram:LOCAL,REMOTE     bind LOCAL, send to REMOTE

ADDR is a UNIX socket path (it contains a '/') or HOST:PORT with HOST an
IP literal ([::1]:PORT for IPv6).

A stream backend's peer comes and goes: a watcher thread connects (every
RETRY_S while there is no peer) or accepts, hands the connected fd to the
device (peer_changed), waits for the peer to hang up (POLLRDHUP, without
reading: the data plane reads), and tells the device it went, which takes
the link down in the guest until the next peer.  A datagram socket has no
peer to lose: its link stays up."""
from __future__ import annotations

import ipaddress
import logging
import os
import select
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._native import lib
from ..errors import BackendError, check

log = logging.getLogger(__name__)
PeerChanged = Callable[[int], None]     # the connected fd, or -1 when the peer went


@dataclass(frozen=True)
class Address:
    """Where a socket backend binds or connects: a UNIX path, or an IP and
    a port."""
    family: int
    path: str | None = None
    host: str | None = None
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> Address:
        """A path (with a '/') or HOST:PORT / [V6]:PORT.  Raises
        BackendError for anything else."""
        if "/" in text:
            if len(text.encode()) > 107:
                raise BackendError(f"socket path {text!r} is longer than a UNIX socket takes (107 bytes)")
            return cls(socket.AF_UNIX, path=text)
        host, sep, port = text.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ip = ipaddress.ip_address(host)
            number = int(port)
        except ValueError:
            ip, number = None, -1
        if not sep or ip is None or not 0 < number < 65536:
            raise BackendError(f"bad socket address {text!r}: use a path (with a '/'), HOST:PORT or [V6]:PORT")
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        return cls(family, host=str(ip), port=number)

    def sockaddr(self) -> str | tuple[str, int]:
        """What bind() and connect() take."""
        return self.path if self.path else (str(self.host), self.port)

    def sockaddr_bytes(self) -> bytes:
        """The address as the C struct sockaddr_un / _in / _in6 the data
        plane sends to."""
        family = struct.pack("=H", self.family)
        if self.path:
            return family + self.path.encode() + b"\0"
        ip = socket.inet_pton(self.family, str(self.host))
        port = struct.pack("!H", self.port)
        if self.family == socket.AF_INET:
            return family + port + ip + bytes(8)
        return family + port + bytes(4) + ip + bytes(4)

    def __str__(self) -> str:
        if self.path:
            return self.path
        return f"[{self.host}]:{self.port}" if self.family == socket.AF_INET6 else f"{self.host}:{self.port}"


def _socket(addr: Address, kind: int) -> socket.socket:
    return socket.socket(addr.family, kind | socket.SOCK_CLOEXEC)


def _bind(sock: socket.socket, addr: Address) -> None:
    """Bind, taking over a UNIX path only from a socket nobody listens on."""
    if addr.path and os.path.exists(addr.path):
        if not Path(addr.path).is_socket():
            raise BackendError(f"{addr.path} exists and is not a socket")
        if _answers(addr):
            raise BackendError(f"{addr.path}: another process listens there")
        os.unlink(addr.path)
    try:
        sock.bind(addr.sockaddr())
    except OSError as e:
        raise BackendError(e.errno or 0, f"cannot bind {addr}: {e.strerror}") from None


def _answers(addr: Address) -> bool:
    probe = _socket(addr, socket.SOCK_STREAM)
    try:
        probe.connect(addr.sockaddr())
        return True
    except OSError:
        return False
    finally:
        probe.close()


class _Stop:
    """A pipe whose read end becomes readable once stop() is called: the
    watcher's waits include it."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_CLOEXEC)
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        os.write(self.w, b"x")

    def wait(self, fd: int, events: int, timeout: float | None = None) -> int:
        """The events of fd that came (0 on timeout or stop)."""
        poller = select.poll()
        poller.register(fd, events)
        poller.register(self.r, select.POLLIN)
        for got_fd, got in poller.poll(None if timeout is None else int(timeout * 1000)):
            if got_fd == fd and not self.stopped:
                return got
        return 0

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


class StreamBackend:
    """A stream socket to one peer at a time: connect to address (listen
    False) or accept on it (listen True).  open() binds or tries a first
    connection; watch() starts the thread that follows the peer."""
    kind = lib.VNIC_BACKEND_STREAM
    RETRY_S = 0.5                       # between connection attempts while there is no peer
    HANGUP = select.POLLRDHUP | select.POLLHUP | select.POLLERR

    def __init__(self, address: Address, listen: bool):
        self.address = address
        self.listen = listen
        self.peer: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._stop = _Stop()
        self._thread: threading.Thread | None = None
        self._bound_path: str | None = None

    @property
    def fds(self) -> list[int]:
        """The connected socket's fd, or -1 while there is no peer."""
        return [self.peer.fileno() if self.peer else -1]

    def describe(self) -> str:
        """The backend spec: stream:ADDR or stream-listen:ADDR."""
        return f"stream{'-listen' if self.listen else ''}:{self.address}"

    def open(self, queues: int = 1) -> None:
        """Listen, or try to connect once (no peer yet is no error: the link
        is down until one comes).  Raises BackendError for more than one
        queue pair or an address that cannot be bound."""
        _one_pair(self, queues)
        if self.listen:
            self._listener = _socket(self.address, socket.SOCK_STREAM)
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _bind(self._listener, self.address)
            self._listener.listen(1)
            self._bound_path = self.address.path
        else:
            self.peer = self._connect()
            if not self.peer:
                log.warning("%s: no peer yet; the link is down until one answers", self.describe())

    def owned_paths(self) -> list[str]:
        """The socket path this backend created (to hand to an unprivileged user)."""
        return [self._bound_path] if self._bound_path else []

    def attached(self, native: object, peer_changed: PeerChanged) -> None:
        """The device took the first fd: follow the peer from now on."""
        self.watch(peer_changed)

    def watch(self, peer_changed: PeerChanged) -> None:
        """Follow the peer in a thread: peer_changed(fd) when one comes,
        peer_changed(-1) when it goes."""
        self._thread = threading.Thread(target=self._follow, args=(peer_changed,),
                                        name=f"vnic-{self.describe()}", daemon=True)
        self._thread.start()

    def connected(self) -> bool:
        """Is there a peer now?"""
        return self.peer is not None

    def _connect(self) -> socket.socket | None:
        sock = _socket(self.address, socket.SOCK_STREAM)
        try:
            sock.connect(self.address.sockaddr())
        except OSError:
            sock.close()
            return None
        return _tuned(sock)

    def _next_peer(self) -> socket.socket | None:
        """Wait for the next peer (None once stopped)."""
        while not self._stop.stopped:
            if self.listen:
                assert self._listener is not None
                if self._stop.wait(self._listener.fileno(), select.POLLIN):
                    conn, _ = self._listener.accept()
                    return _tuned(conn)
            elif sock := self._connect():
                return sock
            else:
                self._stop.wait(self._stop.r, 0, self.RETRY_S)
        return None

    def _follow(self, peer_changed: PeerChanged) -> None:
        while not self._stop.stopped:
            if self.peer is None:
                self.peer = self._next_peer()
                if self.peer is None:
                    return
                log.info("%s: peer connected", self.describe())
                peer_changed(self.peer.fileno())
            if self._stop.wait(self.peer.fileno(), self.HANGUP) == 0:
                return                   # stopped: close() lets go of the peer
            log.warning("%s: peer went away; link down until it is back", self.describe())
            peer_changed(-1)
            self.peer.close()
            self.peer = None

    def kernel_drops(self) -> int:
        """0: what a socket could not take waits in the device, counted."""
        return 0

    def drop_privileges(self) -> None:
        """Nothing held needs root."""

    def close(self) -> None:
        """Stop following, close the peer and the listener, remove the
        socket path this backend bound."""
        self._stop.stop()
        if self._thread:
            self._thread.join(timeout=5)
        for sock in (self.peer, self._listener):
            if sock:
                sock.close()
        self.peer = self._listener = None
        if self._bound_path:
            from ..sandbox import remove_socket
            remove_socket(self._bound_path)
            self._bound_path = None
        self._stop.close()


def _tuned(sock: socket.socket) -> socket.socket:
    """The data plane's socket: non-blocking, no Nagle delay on TCP (the
    device batches frames itself)."""
    sock.setblocking(False)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _one_pair(backend: StreamBackend | DgramBackend, queues: int) -> None:
    if queues != 1:
        raise BackendError(f"{backend.describe()} carries one queue pair, not {queues}: frames of "
                           "several queues would interleave on one socket (use --queues 1)")


class DgramBackend:
    """A datagram socket bound to local and connected to remote."""
    kind = lib.VNIC_BACKEND_DGRAM

    def __init__(self, local: Address, remote: Address):
        if local.family != remote.family:
            raise BackendError(f"dgram:{local},{remote}: both ends must be paths, or both IPv4, or both IPv6")
        self.local, self.remote = local, remote
        self.sock: socket.socket | None = None
        self._bound_path: str | None = None

    @property
    def fds(self) -> list[int]:
        """The socket's fd (-1 before open)."""
        return [self.sock.fileno() if self.sock else -1]

    def describe(self) -> str:
        """The backend spec: dgram:LOCAL,REMOTE."""
        return f"dgram:{self.local},{self.remote}"

    def open(self, queues: int = 1) -> None:
        """Bind local (remote need not be bound yet: what is sent before
        it is, is dropped and counted).  Raises
        BackendError for more than one queue pair or an address that
        cannot be bound."""
        _one_pair(self, queues)
        sock = _socket(self.local, socket.SOCK_DGRAM)
        _bind(sock, self.local)
        self._bound_path = self.local.path
        self.sock = sock
        sock.setblocking(False)

    def attached(self, native: object, peer_changed: PeerChanged) -> None:
        """The device took the socket: tell it where datagrams go."""
        raw = self.remote.sockaddr_bytes()
        check(lib.vnic_dgram_set_remote(native, raw, len(raw)), f"{self.describe()}: far end", BackendError)

    def owned_paths(self) -> list[str]:
        """The socket path this backend created."""
        return [self._bound_path] if self._bound_path else []

    def kernel_drops(self) -> int:
        """0: the socket's own drops are the receiver's to count."""
        return 0

    def drop_privileges(self) -> None:
        """Nothing held needs root."""

    def close(self) -> None:
        """Close the socket, remove its path."""
        if self.sock:
            self.sock.close()
            self.sock = None
        if self._bound_path:
            from ..sandbox import remove_socket
            remove_socket(self._bound_path)
            self._bound_path = None
