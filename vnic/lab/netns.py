"""Private network namespaces with a TAP, for tests that must not touch the host.

Uses iproute2 through subprocess (no extra Python dependency).

    with NetNS() as ns:                        # vnic-<pid>-<n>, lo up
        fd = ns.open_tap()                     # TAP "tap0" in ns, 10.213.0.1/24
        ns.popen(["iperf3", "-s"])             # killed when the block exits
        qemu ... -netdev tap,id=n0,fd={fd},vhost=off  (pass_fds=[fd])

open_tap() creates the TAP in the root namespace through /dev/net/tun, then
moves it into the namespace: the fd keeps working after the move, so a QEMU
in the root namespace drives a TAP whose host side lives in the namespace.
add_tap() makes a persistent TAP inside the namespace for a process that runs
there itself (ns.exec_prefix + [...]) and opens it by name.
"""
from __future__ import annotations

import fcntl
import itertools
import os
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

HOST_IP = "10.213.0.1/24"
GUEST_IP = "10.213.0.2/24"
PREFIX = "vnic-"

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR, IFF_MULTI_QUEUE = 0x0002, 0x1000, 0x4000, 0x0100

_counter = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def list_namespaces() -> list[str]:
    """Names of the network namespaces that exist."""
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_pids(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
            time.sleep(0.05)


def delete_namespace(name: str) -> None:
    """Kill every process inside `name`, then delete it."""
    pids = [int(p) for p in _ip("netns", "pids", name, check=False).stdout.split()]
    _kill_pids(pids)
    _ip("netns", "del", name, check=False)


def cleanup_stale() -> list[str]:
    """Delete vnic-<pid>-* namespaces whose creating process is gone."""
    removed = []
    for name in list_namespaces():
        parts = name.split("-")
        if name.startswith(PREFIX) and len(parts) == 3 and parts[1].isdigit():
            if not os.path.exists(f"/proc/{parts[1]}"):
                delete_namespace(name)
                removed.append(name)
    return removed


def open_tun(name: str, vnet_hdr: bool = True, multi_queue: bool = False) -> int:
    """Create a (non-persistent) TAP `name` in this namespace; return its fd.

    vnet_hdr: QEMU enables offloads (TSO, csum) on the TAP only if the fd was
    opened with IFF_VNET_HDR.  multi_queue: each call opens one more queue
    of the same TAP.
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0) | (IFF_MULTI_QUEUE if multi_queue else 0)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
    except OSError:
        os.close(fd)
        raise
    return fd


class NetNS:
    """A uniquely named namespace that is always deleted, with what runs in it."""

    def __init__(self, name: str | None = None):
        self.name = name or f"{PREFIX}{os.getpid()}-{next(_counter)}"
        self.exec_prefix = ["ip", "netns", "exec", self.name]
        self.procs: list[subprocess.Popen] = []
        self.fds: list[int] = []
        self._old_sigterm: Callable[[int, FrameType | None], Any] | int | None = None

    # -- lifetime --------------------------------------------------------
    def __enter__(self) -> NetNS:
        cleanup_stale()
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
            self._trap_sigterm()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop what runs in the namespace, close its TAP fds, delete it and
        put SIGTERM's handler back."""
        for p in self.procs:
            self._stop(p)
        self.procs.clear()
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        delete_namespace(self.name)
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    def _trap_sigterm(self) -> None:
        # Turn SIGTERM into SystemExit so `with` blocks unwind and clean up.
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
            def on_term(signum, frame):
                raise SystemExit(128 + signum)
            self._old_sigterm = signal.signal(signal.SIGTERM, on_term)

    # -- devices ---------------------------------------------------------
    def open_tap(self, tap: str = "tap0", addr: str | None = HOST_IP,
                 vnet_hdr: bool = True) -> int:
        """TAP `tap` inside the namespace with `addr`; returns an fd usable from here.

        The fd is inheritable (pass it with pass_fds) and closed at exit.
        """
        [fd] = self.open_tap_queues(tap, addr, vnet_hdr, queues=1)
        return fd

    def open_tap_queues(self, tap: str = "tap0", addr: str | None = HOST_IP,
                        vnet_hdr: bool = True, queues: int = 1) -> list[int]:
        """open_tap with `queues` queues (multiqueue when more than one): one
        inheritable fd per queue, for QEMU's -netdev tap,fds=A:B."""
        tmp = f"vt{os.getpid() % 100000}x{next(_counter)}"  # unique in the root ns
        fds = [open_tun(tmp, vnet_hdr, multi_queue=queues > 1) for _ in range(queues)]
        self.fds.extend(fds)
        _ip("link", "set", "dev", tmp, "netns", self.name)
        _ip("-n", self.name, "link", "set", "dev", tmp, "name", tap)
        self._up(tap, addr)
        for fd in fds:
            os.set_inheritable(fd, True)
        return fds

    def add_tap(self, tap: str = "tap0", addr: str | None = HOST_IP, multi_queue: bool = False) -> str:
        """A persistent TAP created inside the namespace, for a process run
        there (multi_queue: for a device with more than one queue pair)."""
        _ip("-n", self.name, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr",
            *(["multi_queue"] if multi_queue else []))
        self._up(tap, addr)
        return tap

    def _up(self, dev: str, addr: str | None) -> None:
        if addr:
            _ip("-n", self.name, "addr", "add", addr, "dev", dev)
        _ip("-n", self.name, "link", "set", "dev", dev, "up")

    # -- processes -------------------------------------------------------
    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """Run argv inside the namespace to completion; output captured as text
        unless kw says otherwise."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.exec_prefix + list(argv), **kw)

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
        """Start `argv` inside the namespace; it is killed when the namespace closes."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self.exec_prefix + list(argv), start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen) -> None:
        """Stop p (SIGTERM, then SIGKILL, to its process group) and forget it."""
        self._stop(p)
        if p in self.procs:
            self.procs.remove(p)

    @staticmethod
    def _stop(p: subprocess.Popen) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if p.poll() is not None:
                break
            try:
                os.killpg(p.pid, sig)
                p.wait(timeout=3)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        for f in (p.stdout, p.stderr):
            if f:
                f.close()

    def wait_listening(self, port: int, proto: str = "tcp", timeout: float = 10) -> None:
        """Wait until something listens on `port` inside the namespace."""
        flag = "-ltnH" if proto == "tcp" else "-lunH"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run(["ss", flag, f"sport = :{port}"]).stdout.strip():
                return
            time.sleep(0.1)
        raise TimeoutError(f"nothing listens on {proto}/{port} in {self.name}")
