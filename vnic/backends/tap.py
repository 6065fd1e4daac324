"""The TAP backend: frames go to and come from a Linux TAP interface.

The TAP is opened with a 12-byte vnet header (the guest's own header size)
so offload metadata can cross later.  `tap:IF@NS` opens it inside network
namespace NS: a helper thread enters the namespace just for the open, since
setns() changes only the calling thread and a TAP lives in the namespace
where it was created.
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import threading

from .._native import ffi, lib

CLONE_NEWNET = 0x40000000


class TapError(OSError):
    pass


class TapBackend:
    kind = lib.VNIC_BACKEND_TAP

    def __init__(self, ifname: str, netns: str | None = None):
        self.ifname = ifname
        self.netns = netns
        self.fd = -1

    def describe(self) -> str:
        return f"tap:{self.ifname}" + (f"@{self.netns}" if self.netns else "")

    def open(self) -> None:
        if self.netns:
            self.fd = _in_netns(self.netns, self._open_here)
        else:
            self.fd = self._open_here()
        cmd = ["ip"] + (["-n", self.netns] if self.netns else []) + ["link", "set", "dev", self.ifname, "up"]
        subprocess.run(cmd, check=True, capture_output=True)

    def _open_here(self) -> int:
        name = ffi.new("char[]", 16)
        fd = lib.vnic_tap_open(self.ifname.encode(), name, 16)
        if fd < 0:
            hint = " (are you root? is /dev/net/tun there?)" if -fd in (1, 2, 13) else ""
            raise TapError(-fd, f"cannot open TAP {self.ifname}: {os.strerror(-fd)}{hint}")
        return fd

    def kernel_drops(self) -> int:
        """Frames the kernel dropped on their way to us because the TAP's
        queue (txqueuelen) was full: what happens while the guest posts no
        receive buffers for longer than the queue lasts."""
        cmd = ["ip", "-j", "-s"] + (["-n", self.netns] if self.netns else []) + \
            ["link", "show", "dev", self.ifname]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            return 0                       # the interface is gone: nothing to count
        return int(json.loads(r.stdout)[0]["stats64"]["tx"]["dropped"])

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _in_netns(netns: str, fn):
    """Run fn in a thread that has entered /run/netns/NETNS."""
    path = f"/run/netns/{netns}"
    if not os.path.exists(path):
        raise TapError(2, f"network namespace {netns!r} does not exist (create it: ip netns add {netns})")
    libc = ctypes.CDLL(None, use_errno=True)
    result: dict = {}

    def run() -> None:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                result["error"] = TapError(err, f"cannot enter netns {netns}: {os.strerror(err)}")
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
    return result["value"]
