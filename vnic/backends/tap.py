"""The TAP backend: frames go to and come from a Linux TAP interface.

The TAP is opened with a 12-byte vnet header (the guest's own header size)
so offload metadata can cross later.  `tap:IF@NS` opens it inside network
namespace NS: a helper thread enters the namespace just for the open, since
setns() changes only the calling thread and a TAP lives in the namespace
where it was created.

Host GRO (on by default): in segment mode the device writes every wire
segment of a super-frame to the TAP, and without GRO the host's TCP would
handle each one and ACK every second one, an ACK flood the guest must
process.  The TAP is opened with IFF_NAPI so the frames pass the host's
GRO, and gro_flush_timeout keeps a merged packet open across our writes
(each write is its own NAPI poll; without the timeout GRO would flush after
every frame).  The timeout bounds how long a segment without PSH waits for
its successor.  It must be long: re-arming a short timer on every frame
costs a timer reprogramming each time (measured here, in a VM: 500 us
halves throughput, 2 ms doubles it).  A capture on the TAP then shows the
merged packets, as on any receiving host with GRO; `gro_flush_us=0` (CLI
`--tap-gro off`) gives wire-exact captures.  set_gro() changes the timeout
while the device runs; at 0 GRO still runs but flushes at the end of every
write's NAPI poll, so nothing merges across writes and the host and its
captures see each wire frame.  A TAP opened without GRO cannot gain it
later, IFF_NAPI being fixed at open.  gro_flush_us is the value in force:
if the kernel refuses the timeout at open, it is what the TAP has.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import subprocess
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from .._native import ffi, lib
from ..errors import BackendError, ConfigError
from .netlink import LinkStats

CLONE_NEWNET = 0x40000000
log = logging.getLogger(__name__)
T = TypeVar("T")


class TapBackend:
    """The TAP interface ifname, inside network namespace netns if given;
    nothing is opened before open(). gro_flush_us: how long the host's GRO
    may hold a merged packet, in microseconds (0: no host GRO; see the
    module docstring). Raises ConfigError for a timeout outside
    0..MAX_GRO_FLUSH_US."""
    kind = lib.VNIC_BACKEND_TAP
    DEFAULT_GRO_FLUSH_US = 2000
    MAX_GRO_FLUSH_US = 1_000_000

    def __init__(self, ifname: str, netns: str | None = None,
                 gro_flush_us: int = DEFAULT_GRO_FLUSH_US):
        if not 0 <= gro_flush_us <= self.MAX_GRO_FLUSH_US:
            raise ConfigError(f"host GRO flush timeout {gro_flush_us} us: "
                             f"use 0 (off) to {self.MAX_GRO_FLUSH_US}")
        self.ifname = ifname
        self.netns = netns
        self.gro_flush_us = gro_flush_us
        self._saved_gro_timeout: str | None = None
        self._napi = False                  # opened with IFF_NAPI: GRO can be tuned live
        self.fds: list[int] = []            # one per queue pair
        self._stats: LinkStats | None = None   # netlink, in the TAP's namespace
        self.confined = False               # root given up: no sysfs writes any more

    @property
    def fd(self) -> int:
        """The first queue's fd (-1 when closed)."""
        return self.fds[0] if self.fds else -1

    def describe(self) -> str:
        """The backend spec: tap:IFNAME or tap:IFNAME@NETNS."""
        return f"tap:{self.ifname}" + (f"@{self.netns}" if self.netns else "")

    def open(self, queues: int = 1) -> None:
        """Open the TAP (creating it if it does not exist) with a vnet header,
        one queue per queue pair (IFF_MULTI_QUEUE when more than one), bring
        it up and set its GRO flush timeout. Raises BackendError if the TAP
        or the namespace cannot be opened (a TAP that exists without
        multiqueue cannot take more than one queue),
        subprocess.CalledProcessError if `ip link set up` fails. A timeout
        the kernel refuses is logged, and gro_flush_us becomes what the TAP
        has."""
        opener = partial(self._open_queues, queues)
        self.fds = _in_netns(self.netns, opener) if self.netns else opener()
        self._stats = _in_netns(self.netns, LinkStats) if self.netns else LinkStats()
        cmd = ["ip"] + (["-n", self.netns] if self.netns else []) + ["link", "set", "dev", self.ifname, "up"]
        subprocess.run(cmd, check=True, capture_output=True)
        self._napi = bool(self.gro_flush_us)
        if self.gro_flush_us and not self._hold_gro(self.gro_flush_us * 1000):
            log.warning("%s: cannot set gro_flush_timeout: the host merges fewer segments",
                        self.describe())
            current = self._sysfs("gro_flush_timeout")
            self.gro_flush_us = int(current) // 1000 if current and current.isdigit() else 0

    def set_gro(self, us: int) -> None:
        """Change how long the host's GRO holds merged segments, live (0: off).
        Raises ConfigError for a value that is not a whole number in range, a
        TAP that is not open or was opened without GRO (to turn it on), or a
        timeout the kernel refuses."""
        if isinstance(us, bool) or not isinstance(us, int) or not 0 <= us <= self.MAX_GRO_FLUSH_US:
            raise ConfigError(f"host GRO flush timeout {us!r}: a whole number of microseconds, "
                             f"0 (off) to {self.MAX_GRO_FLUSH_US}")
        if self.fd < 0:
            raise ConfigError(f"{self.describe()} is not open: give the timeout to the constructor")
        if us == self.gro_flush_us:
            return                           # in force already (reset asks for it again)
        if self.confined:
            raise ConfigError(f"{self.describe()}: changing host GRO needs root, which vnic serve gave "
                              "up after set-up; give the timeout at start (--tap-gro), or serve with "
                              "--user root")
        if us and not self._napi:
            raise ConfigError(f"{self.describe()} was opened without host GRO (--tap-gro off); "
                             "serve it with --tap-gro on or MICROSECONDS to turn GRO on")
        if not self._hold_gro(us * 1000):
            raise ConfigError(f"{self.describe()}: cannot set gro_flush_timeout")
        self.gro_flush_us = us

    def _hold_gro(self, timeout_ns: int) -> bool:
        """Set the TAP's gro_flush_timeout, remembering the value it had
        before our first change (close() puts it back)."""
        old = self._sysfs("gro_flush_timeout")
        if old is None or self._sysfs("gro_flush_timeout", str(timeout_ns)) is None:
            return False
        if self._saved_gro_timeout is None:
            self._saved_gro_timeout = old
        return True

    def _sysfs(self, attr: str, value: str | None = None) -> str | None:
        """Read (or write) /sys/class/net/IF/attr as the TAP's namespace sees it."""
        path = f"/sys/class/net/{self.ifname}/{attr}"
        cmd = (["ip", "netns", "exec", self.netns] if self.netns else []) + \
            (["cat", path] if value is None else ["tee", path])
        r = subprocess.run(cmd, input=value, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    def _open_queues(self, queues: int) -> list[int]:
        """queues fds of the TAP, opened here (all or none)."""
        fds: list[int] = []
        try:
            for _ in range(queues):
                fds.append(self._open_here(multi_queue=queues > 1))
        except BackendError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def _open_here(self, multi_queue: bool) -> int:
        name = ffi.new("char[]", 16)
        fd: int = lib.vnic_tap_open(self.ifname.encode(), name, 16, 1 if self.gro_flush_us else 0,
                                    int(multi_queue))
        if fd < 0:
            hint = " (are you root? is /dev/net/tun there?)" if -fd in (1, 2, 13) else ""
            if -fd == errno.EINVAL and multi_queue:
                hint = " (an existing TAP made without multiqueue? delete it or use --queues 1)"
            raise BackendError(-fd, f"cannot open TAP {self.ifname}: {os.strerror(-fd)}{hint}")
        return fd

    def kernel_drops(self) -> int:
        """Frames the kernel dropped on their way to us because the TAP's
        queue (txqueuelen) was full: what happens while the guest posts no
        receive buffers for longer than the queue lasts.  0 if the interface
        is gone."""
        dropped = self._stats.tx_dropped(self.ifname) if self._stats else None
        return dropped or 0                # None: the interface is gone, nothing to count

    def drop_privileges(self) -> None:
        """vnic is giving up root: from now on host GRO stays as it is (a
        change asks for root), and close() cannot put the old timeout
        back (logged)."""
        self.confined = True

    def close(self) -> None:
        """Give the TAP back the gro_flush_timeout it had before open() and
        close it. A second call does nothing."""
        if self._saved_gro_timeout is not None:     # a TAP that outlives us gets it back
            if self.confined:
                log.info("%s: gro_flush_timeout stays %d us (restoring it needs root)",
                         self.describe(), self.gro_flush_us)
            else:
                self._sysfs("gro_flush_timeout", self._saved_gro_timeout)
            self._saved_gro_timeout = None
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        if self._stats:
            self._stats.close()
            self._stats = None


def _in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Run fn in a thread that has entered /run/netns/NETNS."""
    path = f"/run/netns/{netns}"
    if not os.path.exists(path):
        raise BackendError(2, f"network namespace {netns!r} does not exist (create it: ip netns add {netns})")
    libc = ctypes.CDLL(None, use_errno=True)
    result: dict[str, Any] = {}

    def run() -> None:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                result["error"] = BackendError(err, f"cannot enter netns {netns}: {os.strerror(err)}")
                return
            result["value"] = fn()
        except Exception as exc:        # handed to the caller's thread
            result["error"] = exc
        finally:
            os.close(target)
            # the thread ends here and takes its namespace with it

    thread = threading.Thread(target=run, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    value: T = result["value"]
    return value
