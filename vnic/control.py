"""The control socket: JSON lines over a UNIX socket (mode 0600).

Request:  {"cmd": "info"} | {"cmd": "stats"} | {"cmd": "link", "up": false}
Reply:    {"ok": true, "result": ...} or {"ok": false, "error": "..."}

A bad request gets an error reply; the connection and the device go on.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
from pathlib import Path

log = logging.getLogger(__name__)
MAX_LINE = 64 * 1024


class ControlError(ValueError):
    pass


def handle(device, request: dict):
    cmd = request.get("cmd")
    if cmd == "info":
        return device.info()
    if cmd == "stats":
        return device.stats()
    if cmd == "link":
        up = request.get("up")
        if not isinstance(up, bool):
            raise ControlError('link needs "up": true or false')
        device.set_link(up)
        return {"link_up": up}
    raise ControlError(f"unknown command {cmd!r}; known: info, stats, link")


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            line = self.rfile.readline(MAX_LINE)
            if not line:
                return
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ControlError("a request is a JSON object")
                reply = {"ok": True, "result": handle(self.server.device, request)}
            except (ValueError, ControlError) as exc:
                reply = {"ok": False, "error": str(exc)}
            try:
                self.wfile.write(json.dumps(reply).encode() + b"\n")
            except OSError:
                return                      # client went away mid-reply


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


class ControlServer:
    def __init__(self, path: str | Path, device):
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
        threading.Thread(target=self._server.serve_forever, name="vnic-control", daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.path.unlink(missing_ok=True)


def request(path: str | Path, cmd: dict, timeout: float = 10) -> dict:
    """One request to a running `vnic serve --control PATH`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(cmd).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
