"""`vnic bench iperf`: vnic against QEMU's built-in virtio-net, same run.

The same guest image boots twice under the same QEMU, each time with iperf3
both ways against a server in a private network namespace: first with
QEMU's own virtio-net on a TAP (vhost off, the reference), then with vnic
on a TAP.  Ratios are vnic / built-in; the machine is noisy, so only
figures from one run are compared.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass

from vnic.backends.tap import TapBackend
from vnic.lab.image import ensure_guest_image
from vnic.lab.iperf import run_iperf_pair
from vnic.lab.netns import NetNS
from vnic.lab.qemu import ensure_qemu
from vnic.lab.served import ServedChild

BUILTIN_MAC = "52:54:00:12:34:56"


@dataclass(frozen=True)
class Shape:
    """What both devices are measured with: queue pairs, guest vCPUs and
    iperf3 streams (-P)."""
    queues: int = 1
    smp: int = 1
    parallel: int = 1

    def iperf_args(self) -> str:
        return f"-P {self.parallel}" if self.parallel > 1 else ""


def builtin(qemu, image, seconds: int, device_props: str = "", shape: Shape = Shape()) -> dict:
    """device_props: extra virtio-net-pci properties, e.g. ",csum=off".  With
    several queues: -netdev tap,fds=A:B (QEMU counts the queues) and mq=on, as QEMU's own
    multiqueue NIC is set up."""
    with NetNS() as ns:
        fds = ns.open_tap_queues("tap0", queues=shape.queues)
        if shape.queues > 1:
            netdev = f"tap,id=n0,fds={':'.join(map(str, fds))},vhost=off"
            device_props = f",mq=on,vectors={2 * shape.queues + 2}" + device_props
        else:
            netdev = f"tap,id=n0,fd={fds[0]},vhost=off"
        nic = ["-netdev", netdev, "-device", f"virtio-net-pci,netdev=n0,mac={BUILTIN_MAC}{device_props}"]
        return run_iperf_pair(qemu, image, nic, ns, seconds=seconds, pass_fds=fds,
                              extra=shape.iperf_args(), smp=shape.smp)


def vnic(qemu, image, seconds: int, tx_mode: str = "segment",
         tap_gro_us: int = TapBackend.DEFAULT_GRO_FLUSH_US, features: str = "",
         shape: Shape = Shape()) -> dict:
    """features: a --features edit of what the device offers, e.g. "-tso4"."""
    serve_args = ["--tx-mode", tx_mode, "--tap-gro", str(tap_gro_us), "--queues", str(shape.queues)]
    serve_args += ["--features", features] if features else []
    with NetNS() as ns, tempfile.TemporaryDirectory(prefix="vnic-bench-") as tmp:
        ns.add_tap("tap0", multi_queue=shape.queues > 1)
        with ServedChild(f"tap:tap0@{ns.name}", tmp, serve_args) as dev:   # confined, as users run it
            res = run_iperf_pair(qemu, image, dev.nic, ns, seconds=seconds,
                                 extra=shape.iperf_args(), smp=shape.smp)
            res["counters"] = dev.stats()
            return res


def ratio(a: float, b: float) -> float | None:
    """a / b rounded to 3 places; None if b is 0."""
    return round(a / b, 3) if b else None


def run(seconds: int = 5, tx_mode: str = "segment",
        tap_gro_us: int = TapBackend.DEFAULT_GRO_FLUSH_US, log=print, shape: Shape = Shape()) -> dict:
    """QEMU's built-in virtio-net, then vnic, each with iperf3 both ways, and
    vnic's ratios to the built-in. Raises RuntimeError if a guest or iperf3
    fails."""
    qemu = ensure_qemu(log=log)
    image = ensure_guest_image(log=log)
    log(f"bench: {shape.queues} queue pair(s), {shape.smp} vCPU(s), iperf3 -P {shape.parallel}")
    log(f"bench: built-in virtio-net (TAP, vhost off), iperf3 {seconds} s each way ...")
    b = builtin(qemu, image, seconds, shape=shape)
    log(f"bench: vnic (vfio-user, TAP, tx {tx_mode}, host GRO {tap_gro_us} us), "
        f"iperf3 {seconds} s each way ...")
    v = vnic(qemu, image, seconds, tx_mode, tap_gro_us, shape=shape)
    return {
        "seconds": seconds,
        "queues": shape.queues, "smp": shape.smp, "parallel": shape.parallel,
        "vnic_tx_mode": tx_mode,
        "vnic_tap_gro_us": tap_gro_us,
        "qemu": qemu.version,
        "builtin_tx_gbps": round(b["tx_gbps"], 3), "builtin_rx_gbps": round(b["rx_gbps"], 3),
        "vnic_tx_gbps": round(v["tx_gbps"], 3), "vnic_rx_gbps": round(v["rx_gbps"], 3),
        "tx_ratio": ratio(v["tx_gbps"], b["tx_gbps"]), "rx_ratio": ratio(v["rx_gbps"], b["rx_gbps"]),
        "vnic_tx_retransmits": v["tx_retransmits"], "builtin_tx_retransmits": b["tx_retransmits"],
    }


def main(seconds: int = 5, as_json: bool = False, tx_mode: str = "segment",
         tap_gro_us: int = TapBackend.DEFAULT_GRO_FLUSH_US, shape: Shape = Shape()) -> int:
    """Run and print a table (JSON with as_json); returns the exit status, 0."""
    res = run(seconds, tx_mode, tap_gro_us, log=(lambda *_: None) if as_json else print, shape=shape)
    if as_json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{'':22}{'guest->host':>14}{'host->guest':>14}   (Gbit/s, iperf3 {seconds} s -P {shape.parallel}, "
          f"{shape.queues} queue pair(s), {shape.smp} vCPU(s), QEMU {res['qemu']})")
    print(f"{'QEMU virtio-net (TAP)':22}{res['builtin_tx_gbps']:>14.2f}{res['builtin_rx_gbps']:>14.2f}")
    print(f"{'vnic (vfio-user, TAP)':22}{res['vnic_tx_gbps']:>14.2f}{res['vnic_rx_gbps']:>14.2f}"
          f"   (tx {res['vnic_tx_mode']}, host GRO {res['vnic_tap_gro_us']} us)")
    print(f"{'vnic / built-in':22}{res['tx_ratio']:>14}{res['rx_ratio']:>14}")
    return 0
