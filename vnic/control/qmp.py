"""Replug the NIC through QEMU's monitor (QMP), so the guest renegotiates.

A changed feature offer only reaches a guest when its driver negotiates
again.  Unplugging the device and plugging it back (device_del, wait for
DEVICE_DELETED, device_add with the same id, bus, slot and socket) makes
that happen at once, the way a hot-swap would on real hardware.

QEMU must run with a QMP socket (`-qmp unix:PATH,server=on,wait=off`) and
the device must have an id (`vnic vm` does both; by hand see the README).

QEMU up to 11.1.3 at least aborts when a vfio-user-pci device with MSI-X is
unplugged (hw/vfio-user/pci.c: the PBA region is torn down in the instance
finalizer, after the BAR region that contains it is gone: "Assertion
`subregion->container == mr' failed").  Unplugging would kill the guest, so
replug refuses those versions with an explanation and the guest-side way to
renegotiate; RENEGOTIATE_IN_GUEST is that way.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError

from ..errors import ReplugError

DEFAULT_DEVICE_ID = "vnic0"
# Newest QEMU seen to abort on vfio-user-pci unplug (see above).
UNPLUG_ABORTS_UP_TO = (11, 1, 3)
RENEGOTIATE_IN_GUEST = (
    "p=$(basename $(dirname $(readlink -f /sys/class/net/eth0/device))); "
    "echo $p > /sys/bus/pci/drivers/virtio-pci/unbind; echo $p > /sys/bus/pci/drivers/virtio-pci/bind")


def device_spec(socket_path: str | Path, device_id: str | None = DEFAULT_DEVICE_ID) -> dict[str, Any]:
    """The vfio-user-pci device that attaches to a vnic socket, as QMP/-device JSON."""
    spec: dict[str, Any] = {"driver": "vfio-user-pci", "socket": {"type": "unix", "path": str(socket_path)}}
    if device_id:
        spec["id"] = device_id
    return spec


async def _placement(qmp: QMPClient, device_id: str) -> dict[str, str]:
    """bus and addr of the device now, so the replugged one lands in the same slot."""
    where: dict[str, str] = {}
    path = f"/machine/peripheral/{device_id}"
    try:
        bus = await qmp.execute("qom-get", {"path": path, "property": "parent_bus"})
    except ExecuteError:
        raise ReplugError(f"QEMU has no device with id {device_id!r} "
                          f"(give the vfio-user-pci device id={device_id})") from None
    if isinstance(bus, str) and bus:
        where["bus"] = bus.rstrip("/").rsplit("/", 1)[-1]
    buses: Any = await qmp.execute("query-pci")        # QMP's JSON
    for pci_bus in buses:
        for d in pci_bus.get("devices", []):
            if d.get("qdev_id") == device_id:
                where["addr"] = f"{d['slot']:02x}.{d['function']}"
    return where


async def _refuse_if_unplug_aborts(qmp: QMPClient) -> None:
    reply: Any = await qmp.execute("query-version")
    v = reply["qemu"]
    version = (v["major"], v["minor"], v["micro"])
    if version <= UNPLUG_ABORTS_UP_TO:
        raise ReplugError(
            f"QEMU {'.'.join(map(str, version))} aborts when it unplugs a vfio-user-pci device "
            "(a QEMU bug in hw/vfio-user/pci.c), so vnic will not ask it to; the new offer is "
            "in force at the guest's next negotiation: reboot the guest, or rebind its driver "
            f"from inside the guest: {RENEGOTIATE_IN_GUEST}")


async def _replug(qmp_path: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    device_id: str = spec["id"]
    qmp = QMPClient("vnic")
    try:
        await asyncio.wait_for(qmp.connect(qmp_path), timeout)
    except (TimeoutError, QMPError, OSError) as exc:
        raise ReplugError(f"cannot reach QEMU's QMP socket {qmp_path}: {exc}") from None
    try:
        await _refuse_if_unplug_aborts(qmp)
        spec = {**spec, **await _placement(qmp, device_id)}
        with qmp.listener("DEVICE_DELETED") as events:
            await qmp.execute("device_del", {"id": device_id})
            try:
                await asyncio.wait_for(_deleted(events, device_id), timeout)
            except TimeoutError:
                raise ReplugError(
                    f"the guest did not release {device_id} within {timeout:.0f} s "
                    "(is it running, with ACPI PCI hotplug?); the device stays plugged") from None
        await qmp.execute("device_add", spec)
        return spec
    except ExecuteError as exc:
        raise ReplugError(f"QEMU refused: {exc}") from None
    finally:
        await qmp.disconnect()


async def _deleted(events: EventListener, device_id: str) -> None:
    async for event in events:
        data: Any = event.get("data", {})
        if data.get("device") == device_id:
            return


def replug(qmp_path: str | Path, spec: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Unplug the device spec["id"] and plug spec back; returns what was added.
    Blocks until the guest has released the device (it must cooperate)."""
    if not spec.get("id"):
        raise ReplugError("the device needs an id to be replugged")
    return asyncio.run(_replug(str(qmp_path), spec, timeout))
