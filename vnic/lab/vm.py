"""`vnic vm`: boot the test guest with a vnic NIC and run something in it.

Everything it creates is private and torn down on the way out, also when
interrupted: a network namespace holding the TAP (host side 10.213.0.1),
an iperf3 server inside it, the vfio-user server, and QEMU (with a QMP
socket, so the device can be replugged).  The device is a child `vnic
serve` (vnic.lab.served), confined as users run it: it gives up root once
set up.  With control=PATH the device is scriptable while the guest runs
(`vnic ctl --control PATH ...`).
"""
from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from vnic.lab.image import ensure_guest_image

from ..backends.tap import TapBackend
from ..virtio import features as feat
from . import iperf
from .guest import GuestProcess
from .netns import GUEST_IP, NetNS
from .qemu import ensure_qemu
from .served import ServedChild

TAP_NAME = "vnic0"


@dataclass
class VmResult:
    """What `vnic vm` reports: the guest command's outcome, the features the
    guest negotiated, the device counters and the iperf3 rates."""
    rc: int | None
    output: str
    error: str | None
    guest_features: list[str]          # what the guest driver negotiated
    counters: dict[str, int]
    tx_gbps: float | None = None       # guest to host
    rx_gbps: float | None = None       # host to guest
    boot_s: float | None = None
    extra: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        """The result as `vnic vm --json` prints it."""
        return {
            "tx_gbps": self.tx_gbps, "rx_gbps": self.rx_gbps, "rc": self.rc, "error": self.error,
            "guest_features": self.guest_features, "counters": self.counters,
            "boot_s": self.boot_s, "output": self.output, **self.extra,
        }


def guest_feature_names(ready: dict) -> list[str]:
    """The READY line carries /sys/class/net/eth0/device/features: one
    character per feature bit, bit 0 first."""
    bits = ready.get("features", "")
    return feat.names(sum(1 << i for i, c in enumerate(bits) if c == "1"))


def _tap_offloads_off_once_negotiated(dev: ServedChild, ns: NetNS) -> None:
    """Negotiation turns the TAP's offloads on for the guest; turn the host
    side's segmentation off right after, from a watcher thread."""
    def watch() -> None:
        deadline = time.monotonic() + 120
        while not dev.client.info()["negotiated_features"] and time.monotonic() < deadline:
            time.sleep(0.05)
        ns.run(["ethtool", "-K", TAP_NAME, "tso", "off", "gso", "off"])
    threading.Thread(target=watch, name="tap-offloads-off", daemon=True).start()


def vm(iperf_seconds: int | None = None, cmd: str | None = None, features: str = "",
       mtu: int = 1500, timeout: float | None = None, tx_mode: str = "segment",
       rx_coalesce: bool = True, tap_offloads: bool = True, control: str | None = None,
       flow_table_max: int | None = None, tap_gro_us: int = TapBackend.DEFAULT_GRO_FLUSH_US,
       smp: int = 1, queues: int | None = None, log=print) -> VmResult:
    """Boot the guest with a vnic NIC; run iperf3 both ways and/or cmd.

    smp: the guest's vCPUs; queues: the NIC's queue pairs (default: smp,
    as a Linux guest uses one pair per online CPU).

    tap_offloads=False turns segmentation offloads off on the host side of
    the TAP, so the host sends wire-size frames (as traffic from a real
    network would arrive) and the device's receive coalescing has work."""
    if iperf_seconds is None and cmd is None:
        cmd = "ip -s link show eth0"
    queues = smp if queues is None else queues
    feat.apply_changes(feat.default_offer(queues), features)   # a bad name fails here, clearly
    qemu = ensure_qemu(log=log)
    image = ensure_guest_image(log=log)
    serve_args = ["--mtu", str(mtu), "--tx-mode", tx_mode, "--rx-coalesce", "on" if rx_coalesce else "off",
                  "--tap-gro", str(tap_gro_us), "--queues", str(queues)]
    serve_args += (["--features", features] if features else []) + \
        (["--flow-table-max", str(flow_table_max)] if flow_table_max is not None else [])
    with NetNS() as ns, tempfile.TemporaryDirectory(prefix="vnic-vm-") as tmp:
        ns.add_tap(TAP_NAME, multi_queue=queues > 1)
        qmp_path = Path(tmp) / "qmp.sock"
        with ServedChild(f"tap:{TAP_NAME}@{ns.name}", tmp, serve_args, control, qmp_path) as dev:
            if not tap_offloads:
                _tap_offloads_off_once_negotiated(dev, ns)
            if control:
                log(f"vnic: control socket {control} (vnic ctl --control {control} ...)")
            monitor = ["-qmp", f"unix:{qmp_path},server=on,wait=off"]
            sandbox = dev.client.sandbox()          # what the device may still do, for --json
            try:
                result = _run(qemu, image, dev.nic, monitor, ns, dev, iperf_seconds, cmd, timeout, smp)
            finally:
                for line in dev.log_records():      # what the device warned about
                    log(f"vnic serve: {line}")
            result.extra["sandbox"] = sandbox
            return result


def _run(qemu, image, nic, monitor, ns, dev, iperf_seconds, cmd, timeout, smp) -> VmResult:
    """Boot the guest; iperf3 both ways or the command; the result with counters."""
    if iperf_seconds is not None:
        res = iperf.run_iperf_pair(qemu, image, nic, ns, seconds=iperf_seconds,
                                   extra="", timeout=timeout, extra_args=monitor, smp=smp)
        guest = res["guest"]
        return VmResult(guest.rc, guest.output, guest.error,
                        guest_feature_names(guest.ready), dev.stats(),
                        tx_gbps=res["tx_gbps"], rx_gbps=res["rx_gbps"],
                        boot_s=guest.boot_s,
                        extra={"tx_retransmits": res["tx_retransmits"],
                               "iperf_tx_bytes": iperf.received_bytes(res["tx"]),
                               "iperf_rx_bytes": iperf.received_bytes(res["rx"])})
    with GuestProcess(qemu, image, nic, cmd, ip=GUEST_IP, timeout=timeout or 180,
                      extra_args=monitor, smp=smp) as g:
        guest = g.wait()
    return VmResult(guest.rc, guest.output, guest.error,
                    guest_feature_names(guest.ready), dev.stats(), boot_s=guest.boot_s)
