"""The vnic server run in-process on a temporary socket, for integration tests.

    with ServedDevice() as sd:                   # null backend, all features
        client = sd.connect()                    # a VfioUserClient, attached
        driver = VirtioNetDriver(client).start()
        ...
        sd.stats()["tx_packets"]
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from vnic.backends.null import NullBackend
from vnic.net.virtio_net import VirtioNet
from vnic.vfio_user.session import Server

from .client import VfioUserClient


class ServedDevice:
    def __init__(self, backend=None, features=None, mac: bytes | None = None, mtu: int = 1500,
                 queue_pairs: int = 1):
        # A short directory: UNIX socket paths are limited to 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="vnic-t-"))
        self.path = self.dir / "vnic.sock"
        self.device = VirtioNet(backend or NullBackend(), mac=mac or bytes.fromhex("525400123456"),
                                mtu=mtu, features=features, queue_pairs=queue_pairs)
        self.server = Server(self.path, self.device.transport)
        self.thread = self.server.start()
        self.clients: list[VfioUserClient] = []

    def connect(self, attach: bool = True, **kw) -> VfioUserClient:
        client = VfioUserClient(self.path, **kw)
        self.clients.append(client)
        return client.attach() if attach else client

    def stats(self) -> dict[str, int]:
        return self.device.stats()

    def wait_stat(self, name: str, value: int, timeout: float = 2.0) -> int:
        """Wait until counter `name` reaches `value` (workers count asynchronously)."""
        deadline = time.monotonic() + timeout
        while (got := self.stats()[name]) < value and time.monotonic() < deadline:
            time.sleep(0.001)
        return got

    def wait_sessions(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until `count` sessions have ended (the server is back in accept)."""
        deadline = time.monotonic() + timeout
        while self.server.sessions_served < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.server.close()
        self.thread.join(10)
        assert not self.thread.is_alive(), "server thread did not stop"
        self.device.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ServedDevice:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
