"""Shared fixtures: the server in-process on a temporary socket, the test
client that plays QEMU, and the guest driver on top of it.

Also the markers for what a test needs from the machine (root, netns,
qemu): a test that needs what the machine lacks is skipped with the
reason, unless VNIC_REQUIRE_ALL=1 (scripts/test.sh sets it for the full
suite), where it fails instead, so that CI never passes by skipping."""
from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.driver import VirtioNetDriver
from tests.support.harness import ServedDevice
from tests.support.tapns import TapNamespace

# fixtures that create a TAP inside a private network namespace
NETNS_FIXTURES = {"tap_ns", "tap_device"}


def _has_root() -> bool:
    return os.geteuid() == 0


def _has_netns() -> bool:
    return Path("/dev/net/tun").exists() and shutil.which("ip") is not None


@functools.cache
def _has_qemu() -> bool:
    from vnic.lab.qemu import find_qemu
    return find_qemu() is not None and shutil.which("mmdebstrap") is not None


REQUIREMENTS = {
    "root": (_has_root, "needs root (TAP devices, network namespaces, the guest's QEMU)"),
    "netns": (_has_netns, "needs /dev/net/tun and iproute2's `ip netns`"),
    "qemu": (_has_qemu, "needs a QEMU with vfio-user-pci and mmdebstrap: run scripts/setup.sh"),
}


def pytest_collection_modifyitems(config, items):
    """e2e tests boot guests (qemu, root, netns); TAP fixtures need root and netns."""
    for item in items:
        if item.path.parent.name == "e2e":
            item.add_marker(pytest.mark.qemu)
            item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("qemu") or NETNS_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.root)
            item.add_marker(pytest.mark.netns)


def missing_requirement(item) -> str | None:
    """The reason item cannot run on this machine, or None."""
    for name, (available, reason) in REQUIREMENTS.items():
        if item.get_closest_marker(name) and not available():
            return reason
    return None


def pytest_runtest_setup(item):
    reason = missing_requirement(item)
    if reason is None:
        return
    if os.environ.get("VNIC_REQUIRE_ALL") == "1":
        pytest.fail(f"VNIC_REQUIRE_ALL=1 and this test {reason}", pytrace=False)
    pytest.skip(reason)


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
