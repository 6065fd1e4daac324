"""The control socket: JSON lines over a UNIX socket (mode 0600).

Requests: {"cmd": "info"}, {"cmd": "stats", "per_queue": false},
          {"cmd": "link", "up": false}, {"cmd": "announce"},
          {"cmd": "features", "enable": ["tso4"], "disable": ["uso"], "replug": false},
          {"cmd": "mode", "tx": "segment"|"passthrough", "rx_coalesce": true,
           "tap_gro_us": 2000},   (any subset; the result shows the modes now)
          {"cmd": "replug"}   (QEMU unplugs and replugs the NIC: the guest renegotiates)
          {"cmd": "flows", "top": 20, "sort": "bytes"|"packets"|"last_seen"}
          {"cmd": "reset", "replug": false}  (start-up offer, modes and link; counters from 0)
          {"cmd": "sandbox"}  (who the process runs as, and what it may still do)
          {"cmd": "capture", "action": "start", "file": "/abs/x.pcapng", "snaplen": 65535,
           "direction": "rx"|"tx"|"both", "what": "wire"|"guest", "buffer_kib": 4096}
          {"cmd": "capture", "action": "stop"|"status"}   (stop: the final status)
          {"cmd": "faults", "set": {"drop": 1, "duplicate": 0.5, "corrupt": 0, "bad_csum": 0, "reorder": 5,
           "delay": 20, "jitter": 5, "rate": 100, "seed": 7, "queue": 0, "direction": "rx"|"tx"|"both"}}
           (percentages, ms, Mbit/s; what is left out is 0)
          {"cmd": "faults", "rx_starve_ms": 500, "flap_ms": 2000}   (episodes, undone by a timer)
          {"cmd": "faults", "clear": true}   {"cmd": "faults"}   (the faults in force)
Reply:    {"ok": true, "result": ...} or {"ok": false, "error": "..."}

A bad request gets an error reply; the connection and the device go on.
"""
from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import sandbox
from ..errors import ControlError, ReplugError
from ..net.faults import FaultSpec, FaultsState
from ..telemetry.capture import CaptureSpec, CaptureStatus

if TYPE_CHECKING:                 # vnic.device imports this package
    from ..device import Device, Modes
    from ..telemetry.flows import FlowsResult

log = logging.getLogger(__name__)
MAX_LINE = 64 * 1024

Request = dict[str, Any]          # one decoded request line (any JSON values)


def _names(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ControlError("feature names are a list of strings or a comma list")
    return [v.strip() for v in value if v.strip()]


def _flag(request: Request, name: str) -> bool:
    value = request.get(name, False)
    if not isinstance(value, bool):
        raise ControlError(f'"{name}" is true or false')
    return value


def _replug(device: Device, request: Request | None = None) -> dict[str, Any]:
    try:
        return {"replugged": device.replug()}
    except ReplugError as exc:
        raise ControlError(f"replug failed: {exc}") from None


def _features(device: Device, request: Request) -> dict[str, Any]:
    spec = ",".join([f"+{n}" for n in _names(request.get("enable"))] +
                    [f"-{n}" for n in _names(request.get("disable"))])
    replug = _flag(request, "replug")
    offered = device.change_features(spec) if spec else device.offered_features
    note: str | None
    if replug:
        _replug(device)
        note = "replugged: the guest has renegotiated"
    else:
        note = "changes take effect when the guest next negotiates (or with replug)" if spec else None
    return {"offered": offered, "negotiated": device.negotiated_features, "note": note}


def _reset(device: Device, request: Request) -> dict[str, Any]:
    replug = _flag(request, "replug")
    info = device.reset()
    if replug:
        _replug(device)
    return {**info, "replugged": replug}


def _mode(device: Device, request: Request) -> Modes:
    # Device.set_mode checks every value (any JSON may come) before changing any
    return device.set_mode(tx=request.get("tx"), rx_coalesce=request.get("rx_coalesce"),
                           tap_gro_us=request.get("tap_gro_us"))


def _link(device: Device, request: Request) -> dict[str, bool]:
    up = request.get("up")
    if not isinstance(up, bool):
        raise ControlError('link needs "up": true or false')
    device.set_link(up)
    return {"link_up": up}


def _announce(device: Device, request: Request) -> dict[str, bool]:
    if not device.announce():
        raise ControlError("the guest did not negotiate guest_announce")
    return {"announced": True}


def _flows(device: Device, request: Request) -> FlowsResult:
    top, sort = request.get("top"), request.get("sort", "bytes")
    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 0):
        raise ControlError('"top" is a number of flows (0 or more)')
    if not isinstance(sort, str):
        raise ControlError('"sort" is bytes, packets or last_seen')
    return device.flows(top=top, sort=sort)


CAPTURE_FIELDS = ("file", "snaplen", "direction", "what", "buffer_kib")


def _capture(device: Device, request: Request) -> CaptureStatus:
    action = request.get("action", "status")
    if action == "start":
        if "file" not in request:
            raise ControlError('capture start needs "file": an absolute path')
        return device.capture.start(CaptureSpec(**{k: request[k] for k in CAPTURE_FIELDS if k in request}))
    if action == "stop":
        return device.capture.stop()
    if action == "status":
        return device.capture.status()
    raise ControlError(f'capture "action" is start, stop or status, not {action!r}')


FAULT_FIELDS = ("drop", "duplicate", "corrupt", "bad_csum", "reorder", "delay", "jitter", "rate", "seed",
                "queue", "direction")


def _faults(device: Device, request: Request) -> FaultsState:
    if _flag(request, "clear"):
        device.episodes.close()
        return device.set_faults(FaultSpec())
    asked = request.get("set")
    if asked is not None:
        if not isinstance(asked, dict) or set(asked) - set(FAULT_FIELDS):
            raise ControlError(f'faults "set" is an object of {", ".join(FAULT_FIELDS)}')
        device.set_faults(FaultSpec(**asked))
    if "rx_starve_ms" in request:
        device.episodes.starve_rx(request["rx_starve_ms"])
    if "flap_ms" in request:
        device.episodes.flap(request["flap_ms"])
    return device.faults()


def _stats(device: Device, request: Request) -> dict[str, int] | list[dict[str, int]]:
    return device.per_queue_stats() if request.get("per_queue") else device.stats()


COMMANDS: dict[str, Callable[[Device, Request], object]] = {
    "info": lambda device, request: device.info(),
    "stats": _stats,
    "flows": _flows,
    "link": _link,
    "features": _features,
    "mode": _mode,
    "announce": _announce,
    "replug": _replug,
    "reset": _reset,
    "sandbox": lambda device, request: sandbox.report(),
    "capture": _capture,
    "faults": _faults,
}


def handle(device: Device, request: Request) -> object:
    """Run one decoded request on device and return its result (JSON values).
    Raises ControlError for an unknown command or a bad argument; a
    ConfigError (FeatureError included) from the device passes through."""
    name = request.get("cmd")
    command = COMMANDS.get(name) if isinstance(name, str) else None     # any JSON may come
    if command is None:
        raise ControlError(f"unknown command {request.get('cmd')!r}; known: {', '.join(COMMANDS)}")
    return command(device, request)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(MAX_LINE)
            if not line:
                return
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ControlError("a request is a JSON object")
                reply: dict[str, object] = {"ok": True, "result": handle(self.server.device, request)}
            except (ValueError, ControlError) as exc:     # FeatureError is a ValueError
                reply = {"ok": False, "error": str(exc)}
            try:
                self.wfile.write(json.dumps(reply).encode() + b"\n")
            except OSError:
                return                      # client went away mid-reply


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    device: Device


class ControlServer:
    """The control socket at path (mode 0600; a file already there is replaced)
    for device. Nothing is served before start()."""

    def __init__(self, path: str | Path, device: Device):
        self.path = Path(path)
        if self.path.exists():
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = _Server(str(self.path), _Handler)
        finally:
            os.umask(old)
        self._server.device = device

    def start(self) -> None:
        """Serve requests from a daemon thread; each connection gets its own
        thread."""
        threading.Thread(target=self._server.serve_forever, name="vnic-control", daemon=True).start()

    def close(self) -> None:
        """Stop serving and remove the socket."""
        self._server.shutdown()
        self._server.server_close()
        sandbox.remove_socket(self.path)
