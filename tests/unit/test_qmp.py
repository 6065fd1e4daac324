"""The replug conversation with QEMU's monitor, against a scripted QMP peer
(the real QEMU 11.1 aborts on vfio-user unplug, see vnic/qmp.py; the e2e
test checks that vnic refuses it)."""
from __future__ import annotations

import json
import socket
import threading

import pytest

from vnic.control import qmp


class FakeQemu:
    """A QMP server on a UNIX socket: answers like QEMU, records the commands.
    release=False plays a guest that never lets the device go."""

    def __init__(self, path, version=(99, 0, 0), release=True, slot=4):
        self.version, self.release, self.slot = version, release, slot
        self.commands: list[tuple[str, dict]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _reply(self, name: str, args: dict):
        if name == "query-version":
            major, minor, micro = self.version
            return {"qemu": {"major": major, "minor": minor, "micro": micro}, "package": ""}
        if name == "qom-get":
            return "/machine/i440fx/pci.0"
        if name == "query-pci":
            return [{"bus": 0, "devices": [{"qdev_id": "vnic0", "slot": self.slot, "function": 0},
                                           {"qdev_id": "", "slot": 1, "function": 0}]}]
        return {}

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        def send(obj) -> None:
            conn.sendall(json.dumps(obj).encode() + b"\n")
        major, minor, micro = self.version
        send({"QMP": {"version": {"qemu": {"major": major, "minor": minor, "micro": micro},
                                  "package": ""}, "capabilities": []}})
        for msg in self._messages(conn):
            name, args = msg["execute"], msg.get("arguments", {})
            self.commands.append((name, args))
            send({"return": self._reply(name, args), "id": msg.get("id")})
            if name == "device_del" and self.release:
                send({"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/vnic0/x"},
                      "timestamp": {"seconds": 0, "microseconds": 0}})
                send({"event": "DEVICE_DELETED", "data": {"device": "vnic0", "path": "/machine/peripheral/vnic0"},
                      "timestamp": {"seconds": 0, "microseconds": 0}})
        conn.close()

    @staticmethod
    def _messages(conn):
        """The client's JSON objects: QMP needs no newline between them."""
        buf, decoder = "", json.JSONDecoder()
        while chunk := conn.recv(65536):
            buf += chunk.decode()
            while buf.strip():
                try:
                    msg, end = decoder.raw_decode(buf.lstrip())
                except ValueError:
                    break
                buf = buf.lstrip()[end:]
                yield msg

    def names(self) -> list[str]:
        return [n for n, _ in self.commands if n != "qmp_capabilities"]


def test_replug_unplugs_waits_for_the_guest_and_plugs_back_in_the_same_slot(tmp_path):
    fake = FakeQemu(tmp_path / "qmp.sock")
    added = qmp.replug(tmp_path / "qmp.sock", qmp.device_spec("/run/v.sock"), timeout=10)
    assert fake.names() == ["query-version", "qom-get", "query-pci", "device_del", "device_add"]
    assert dict(fake.commands)["device_del"] == {"id": "vnic0"}
    assert dict(fake.commands)["device_add"] == added == {
        "driver": "vfio-user-pci", "socket": {"type": "unix", "path": "/run/v.sock"},
        "id": "vnic0", "bus": "pci.0", "addr": "04.0"}


def test_qemu_versions_that_abort_on_unplug_are_refused_before_anything_happens(tmp_path):
    fake = FakeQemu(tmp_path / "qmp.sock", version=qmp.UNPLUG_ABORTS_UP_TO)
    with pytest.raises(qmp.ReplugError, match="aborts when it unplugs"):
        qmp.replug(tmp_path / "qmp.sock", qmp.device_spec("/run/v.sock"), timeout=10)
    assert fake.names() == ["query-version"]


def test_a_guest_that_keeps_the_device_is_a_clear_error_and_nothing_is_added(tmp_path):
    fake = FakeQemu(tmp_path / "qmp.sock", release=False)
    with pytest.raises(qmp.ReplugError, match="did not release vnic0"):
        qmp.replug(tmp_path / "qmp.sock", qmp.device_spec("/run/v.sock"), timeout=1)
    assert "device_add" not in fake.names()


def test_no_qemu_behind_the_socket_is_a_clear_error(tmp_path):
    with pytest.raises(qmp.ReplugError, match="cannot reach QEMU's QMP socket"):
        qmp.replug(tmp_path / "missing.sock", qmp.device_spec("/run/v.sock"), timeout=2)
