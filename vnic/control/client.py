"""The control socket from a client's side: one JSON request line, one
reply line (see server.py for the requests).  `vnic ctl` and `vnic stats`
use it; so can any Python script:

    from vnic.control import Client
    Client("/run/vnic0.ctl").link(False)
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

from ..errors import ControlError


def request(path: str | Path, cmd: dict, timeout: float = 90) -> dict:
    """One request to a running `vnic serve --control PATH`.  The timeout is
    generous: a replug waits for the guest to release the device."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError as exc:
            raise ControlError(f"no vnic control socket at {path} ({exc.strerror}): "
                               f"is `vnic serve --control {path}` running?") from None
        data = b""
        try:
            s.sendall(json.dumps(cmd).encode() + b"\n")
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(f"no reply from {path} within {timeout:.0f} s") from None
    if not data:
        raise ControlError(f"{path} closed the connection without a reply")
    return json.loads(data)


class Client:
    """The control socket from Python: `vnic.control.Client(path).stats()`."""

    def __init__(self, path: str | Path, timeout: float = 90):
        self.path, self.timeout = path, timeout

    def call(self, cmd: str, **args):
        reply = request(self.path, {"cmd": cmd, **args}, self.timeout)
        if not reply.get("ok"):
            raise ControlError(reply.get("error", "request failed"))
        return reply["result"]

    def info(self) -> dict:
        return self.call("info")

    def stats(self, per_queue: bool = False):
        return self.call("stats", per_queue=per_queue)

    def link(self, up: bool) -> dict:
        return self.call("link", up=up)

    def announce(self) -> dict:
        return self.call("announce")

    def features(self, enable=(), disable=(), replug: bool = False) -> dict:
        return self.call("features", enable=list(enable), disable=list(disable), replug=replug)

    def flows(self, top: int | None = None, sort: str = "bytes") -> dict:
        return self.call("flows", sort=sort, **({} if top is None else {"top": top}))

    def replug(self) -> dict:
        """QEMU unplugs and replugs the NIC; returns once it is plugged back."""
        return self.call("replug")

    def reset(self, replug: bool = False) -> dict:
        return self.call("reset", replug=replug)

    def mode(self, tx: str | None = None, rx_coalesce: bool | None = None,
             tap_gro_us: int | None = None) -> dict:
        args = {k: v for k, v in (("tx", tx), ("rx_coalesce", rx_coalesce),
                                  ("tap_gro_us", tap_gro_us)) if v is not None}
        return self.call("mode", **args)
