"""The control socket from a client's side: one JSON request line, one
reply line (see server.py for the requests).  `vnic ctl` and `vnic stats`
use it; so can any Python script:

    from vnic.control import Client
    Client("/run/vnic0.ctl").link(False)
"""
from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from ..errors import ControlError

if TYPE_CHECKING:                 # vnic.device imports this package
    from ..device import DeviceInfo, Modes
    from ..telemetry.capture import CaptureStatus
    from ..telemetry.flows import FlowsResult


def request(path: str | Path, cmd: dict[str, Any], timeout: float = 90) -> dict[str, Any]:
    """One request to a running `vnic serve --control PATH`.  The timeout is
    generous: a replug waits for the guest to release the device.  Returns
    the reply object.  Raises ControlError if nothing listens at path, no
    reply comes within timeout seconds, or the connection closes without
    one."""
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
    reply: dict[str, Any] = json.loads(data)
    return reply


class Client:
    """The control socket from Python: `vnic.control.Client(path).stats()`.

    Each method is one request (see vnic.control.server) and returns its
    result.  Every one raises ControlError if the socket is unreachable or
    silent for timeout seconds, or refuses the request (the message is the
    server's)."""

    def __init__(self, path: str | Path, timeout: float = 90):
        self.path, self.timeout = path, timeout

    def call(self, cmd: str, **args: Any) -> Any:
        """Send {"cmd": cmd, **args} and return the reply's result. Raises
        ControlError if the server refuses the request or cannot be reached."""
        reply = request(self.path, {"cmd": cmd, **args}, self.timeout)
        if not reply.get("ok"):
            raise ControlError(reply.get("error", "request failed"))
        return reply["result"]

    def info(self) -> DeviceInfo:
        """Device.info() of the served device: MAC, MTU, backend, link, offered
        and negotiated features, modes and receive filter."""
        result: DeviceInfo = self.call("info")
        return result

    @overload
    def stats(self, per_queue: Literal[False] = False) -> dict[str, int]: ...
    @overload
    def stats(self, per_queue: Literal[True]) -> list[dict[str, int]]: ...
    @overload
    def stats(self, per_queue: bool) -> dict[str, int] | list[dict[str, int]]: ...

    def stats(self, per_queue: bool = False) -> dict[str, int] | list[dict[str, int]]:
        """Device counters since start or the last reset: the totals, or one
        dict per queue pair with per_queue."""
        result: dict[str, int] | list[dict[str, int]] = self.call("stats", per_queue=per_queue)
        return result

    def link(self, up: bool) -> dict[str, bool]:
        """Carrier up or down; the guest sees the change at once. Returns
        {"link_up": up}."""
        result: dict[str, bool] = self.call("link", up=up)
        return result

    def announce(self) -> dict[str, bool]:
        """Ask the guest to announce itself (gratuitous ARP). Raises
        ControlError if the guest did not negotiate guest_announce."""
        result: dict[str, bool] = self.call("announce")
        return result

    def features(self, enable: Iterable[str] = (), disable: Iterable[str] = (),
                 replug: bool = False) -> dict[str, Any]:
        """Enable and disable offered features by name; the guest sees the new
        offer at its next negotiation, or at once with replug. Returns the
        offer, what the guest negotiated and a note. Raises ControlError for
        an unknown, unimplemented or required feature, or a failed replug."""
        result: dict[str, Any] = self.call("features", enable=list(enable), disable=list(disable),
                                           replug=replug)
        return result

    def flows(self, top: int | None = None, sort: str = "bytes") -> FlowsResult:
        """Per-flow statistics (see vnic.telemetry.flows.FlowsResult), the top
        largest first by sort: "bytes", "packets" or "last_seen". Raises
        ControlError for a bad top or sort."""
        result: FlowsResult = self.call("flows", sort=sort, **({} if top is None else {"top": top}))
        return result

    def replug(self) -> dict[str, Any]:
        """QEMU unplugs and replugs the NIC; returns once it is plugged back.
        Raises ControlError if the NIC is served without --qmp or the replug
        fails (see Device.replug)."""
        result: dict[str, Any] = self.call("replug")
        return result

    def sandbox(self) -> dict[str, Any]:
        """Who the served device runs as, its capabilities, seccomp mode and
        what probes of forbidden actions fail with (vnic.sandbox.report)."""
        result: dict[str, Any] = self.call("sandbox")
        return result

    def reset(self, replug: bool = False) -> dict[str, Any]:
        """Back to the start-up offer, modes and link up, counters and flows
        from zero (Device.reset()); with replug the guest also renegotiates
        now. Returns Device.info() and "replugged". Raises ControlError if
        the modes or the replug are refused."""
        result: dict[str, Any] = self.call("reset", replug=replug)
        return result

    def mode(self, tx: str | None = None, rx_coalesce: bool | None = None,
             tap_gro_us: int | None = None) -> Modes:
        """Change any of the TX mode, receive coalescing and the TAP's host GRO
        timeout in microseconds (None leaves one as it is); returns the
        modes now. Raises ControlError for a refused value, and then nothing
        has changed."""
        args = {k: v for k, v in (("tx", tx), ("rx_coalesce", rx_coalesce),
                                  ("tap_gro_us", tap_gro_us)) if v is not None}
        result: Modes = self.call("mode", **args)
        return result

    def capture(self, file: str | Path, snaplen: int | None = None, direction: str = "both",
                what: str = "wire", buffer_kib: int | None = None) -> CaptureStatus:
        """Start a pcapng capture into file (made absolute here: the server
        may run elsewhere); direction rx, tx or both; what wire (frames to
        and from the backend) or guest (as the guest sees them, headers in
        comments).  Returns the capture's status.  Raises ControlError if
        a capture is on, the file cannot be written or a value is refused."""
        args: dict[str, Any] = {"action": "start", "file": os.path.abspath(file),
                                "direction": direction, "what": what}
        args.update({k: v for k, v in (("snaplen", snaplen), ("buffer_kib", buffer_kib)) if v is not None})
        result: CaptureStatus = self.call("capture", **args)
        return result

    def capture_stop(self) -> CaptureStatus:
        """Stop the capture; its final status (packets written, drops).
        Raises ControlError if none is on."""
        result: CaptureStatus = self.call("capture", action="stop")
        return result

    def capture_status(self) -> CaptureStatus:
        """The capture now ({"running": false} when none is on)."""
        result: CaptureStatus = self.call("capture", action="status")
        return result

    def faults(self, drop: float = 0, duplicate: float = 0, corrupt: float = 0, bad_csum: float = 0,
               reorder: float = 0, delay: float = 0, jitter: float = 0, rate: float = 0,
               seed: int = 0, queue: int | None = None, direction: str = "both") -> dict[str, Any]:
        """Inject faults (percent of frames; delay and jitter in ms, rate
        in Mbit/s; seed for replay) on one queue pair or all, one direction
        or both: these replace the faults in force there.  Returns the
        faults in force (Device.faults()).  Raises ControlError for a
        refused value (nothing changes then)."""
        spec = {"drop": drop, "duplicate": duplicate, "corrupt": corrupt, "bad_csum": bad_csum,
                "reorder": reorder, "delay": delay, "jitter": jitter, "rate": rate,
                "seed": seed, "queue": queue, "direction": direction}
        result: dict[str, Any] = self.call("faults", set=spec)
        return result

    def starve_rx(self, ms: int) -> dict[str, Any]:
        """No frames reach the guest for ms milliseconds; the faults in force."""
        result: dict[str, Any] = self.call("faults", rx_starve_ms=ms)
        return result

    def flap(self, ms: int) -> dict[str, Any]:
        """The link down now, up after ms milliseconds; the faults in force."""
        result: dict[str, Any] = self.call("faults", flap_ms=ms)
        return result

    def clear_faults(self) -> dict[str, Any]:
        """No injected faults and no episode under way; the faults in force."""
        result: dict[str, Any] = self.call("faults", clear=True)
        return result

    def faults_state(self) -> dict[str, Any]:
        """The faults in force (Device.faults())."""
        result: dict[str, Any] = self.call("faults")
        return result
