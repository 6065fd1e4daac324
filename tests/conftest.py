"""Shared fixtures: the server in-process on a temporary socket, the test
client that plays QEMU, and the guest driver on top of it."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.support.driver import VirtioNetDriver
from tests.support.harness import ServedDevice
from tests.support.tapns import TapNamespace


@pytest.fixture
def serve():
    """Factory: serve(backend=None, features=...) -> ServedDevice, closed afterwards."""
    served: list[ServedDevice] = []

    def make(**kw) -> ServedDevice:
        sd = ServedDevice(**kw)
        served.append(sd)
        return sd

    yield make
    for sd in reversed(served):
        assert sd.alive, "the server thread died"
        sd.close()


def _bring_up(sd: ServedDevice, **start) -> SimpleNamespace:
    client = sd.connect()
    driver = VirtioNetDriver(client)
    driver.start(**start)
    return SimpleNamespace(harness=sd, server=sd.server, device=sd.device, client=client, driver=driver)


@pytest.fixture
def served_device(serve):
    """(server, device, client, driver) on the null backend, driver at DRIVER_OK
    with every offered feature."""
    dev = _bring_up(serve())
    yield dev
    dev.driver.close()


@pytest.fixture
def tap_ns():
    with TapNamespace() as tn:
        yield tn


@pytest.fixture
def tap_device(tap_ns, serve):
    """Like served_device, on a TAP inside a private namespace; `.tap` sends
    and captures frames on the TAP's side.  tap_ns comes first so that it is
    torn down last, after the device has stopped using the TAP."""
    dev = _bring_up(serve(backend=tap_ns.backend))
    dev.tap = tap_ns
    tap_ns.drain()
    yield dev
    dev.driver.close()
