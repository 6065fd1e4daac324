"""The TAP backend inside a private network namespace, with a packet socket
on the TAP's host side to see and inject frames.

    with TapNamespace() as tn:
        with ServedDevice(backend=tn.backend) as sd:   # opens the TAP in the namespace
            tn.send(frame)                             # arrives at the device's RX
            tn.capture(1)                              # what the device transmitted

IPv6 is switched off in the namespace before the TAP exists, so the kernel
sends nothing of its own (router solicitations, MLD) onto the wire: every
frame the device receives is one the test injected.
"""
from __future__ import annotations

import ctypes
import os
import socket
import threading
import time

from vnic.backends.tap import TapBackend
from vnic.lab.netns import NetNS

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def in_netns(name: str, fn):
    """Run fn() on a thread that entered network namespace `name`
    (setns changes only the calling thread; sockets keep their namespace)."""
    libc = ctypes.CDLL(None, use_errno=True)
    result: dict = {}

    def run() -> None:
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns {name}: {os.strerror(err)}")
            result["value"] = fn()
        except BaseException as exc:
            result["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


class TapNamespace:
    def __init__(self, ifname: str = "vnictap0"):
        self.ifname = ifname
        self.ns: NetNS | None = None
        self.backend: TapBackend | None = None
        self._sock: socket.socket | None = None

    def __enter__(self) -> TapNamespace:
        self.ns = NetNS().__enter__()
        try:
            for knob in ("all", "default"):
                r = self.ns.run(["sysctl", "-qw", f"net.ipv6.conf.{knob}.disable_ipv6=1"])
                if r.returncode != 0:
                    raise RuntimeError(f"cannot disable IPv6 in {self.ns.name}: {r.stderr}")
            self.backend = TapBackend(self.ifname, self.ns.name)
        except BaseException:
            self.ns.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.backend is not None:
            self.backend.close()
        if self.ns is not None:
            self.ns.close()
            self.ns = None

    @property
    def sock(self) -> socket.socket:
        """An AF_PACKET socket on the TAP, opened inside the namespace
        (the TAP must exist: open the device first)."""
        if self._sock is None:
            def open_socket() -> socket.socket:
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                s.bind((self.ifname, ETH_P_ALL))
                return s
            self._sock = in_netns(self.ns.name, open_socket)
        return self._sock

    def send(self, frame: bytes) -> None:
        """Put a frame on the TAP's wire: the device receives it."""
        self.sock.send(frame)

    def capture(self, count: int, timeout: float = 2.0) -> list[bytes]:
        """Frames the device transmitted (arriving at the host side), in order."""
        frames: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(frames) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(1 << 17)
            except TimeoutError:
                break
            if addr[2] != PACKET_OUTGOING:          # not our own injections
                frames.append(data)
        return frames

    def drain(self) -> int:
        """Discard anything already captured."""
        n = 0
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(1 << 17)
                n += 1
        except BlockingIOError:
            pass
        return n
