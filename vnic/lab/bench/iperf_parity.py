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
from pathlib import Path

from vnic.backends.tap import TapBackend
from vnic.device import Device, qemu_device_args
from vnic.lab.image import ensure_guest_image
from vnic.lab.iperf import run_iperf_pair
from vnic.lab.netns import NetNS
from vnic.lab.qemu import ensure_qemu

BUILTIN_MAC = "52:54:00:12:34:56"


def builtin(qemu, image, seconds: int, device_props: str = "") -> dict:
    """device_props: extra virtio-net-pci properties, e.g. ",csum=off"."""
    with NetNS() as ns:
        fd = ns.open_tap("tap0")
        nic = ["-netdev", f"tap,id=n0,fd={fd},vhost=off",
               "-device", f"virtio-net-pci,netdev=n0,mac={BUILTIN_MAC}{device_props}"]
        return run_iperf_pair(qemu, image, nic, ns, seconds=seconds, pass_fds=[fd])


def vnic(qemu, image, seconds: int, tx_mode: str = "segment",
         tap_gro_us: int = TapBackend.DEFAULT_GRO_FLUSH_US, features: str = "") -> dict:
    """features: a --features edit of what the device offers, e.g. "-tso4"."""
    with NetNS() as ns, tempfile.TemporaryDirectory(prefix="vnic-bench-") as tmp:
        ns.add_tap("tap0")
        with Device(TapBackend("tap0", ns.name, gro_flush_us=tap_gro_us), tx_mode=tx_mode,
                    features=features) as dev:
            dev.serve(Path(tmp) / "vnic.sock")
            assert dev.socket_path is not None          # serving
            res = run_iperf_pair(qemu, image, qemu_device_args(dev.socket_path), ns, seconds=seconds)
            res["counters"] = dev.stats()
            return res


def ratio(a: float, b: float) -> float | None:
    """a / b rounded to 3 places; None if b is 0."""
    return round(a / b, 3) if b else None


def run(seconds: int = 5, tx_mode: str = "segment",
        tap_gro_us: int = TapBackend.DEFAULT_GRO_FLUSH_US, log=print) -> dict:
    """QEMU's built-in virtio-net, then vnic, each with iperf3 both ways, and
    vnic's ratios to the built-in. Raises RuntimeError if a guest or iperf3
    fails."""
    qemu = ensure_qemu(log=log)
    image = ensure_guest_image(log=log)
    log(f"bench: built-in virtio-net (TAP, vhost off), iperf3 {seconds} s each way ...")
    b = builtin(qemu, image, seconds)
    log(f"bench: vnic (vfio-user, TAP, tx {tx_mode}, host GRO {tap_gro_us} us), "
        f"iperf3 {seconds} s each way ...")
    v = vnic(qemu, image, seconds, tx_mode, tap_gro_us)
    return {
        "seconds": seconds,
        "vnic_tx_mode": tx_mode,
        "vnic_tap_gro_us": tap_gro_us,
        "qemu": qemu.version,
        "builtin_tx_gbps": round(b["tx_gbps"], 3), "builtin_rx_gbps": round(b["rx_gbps"], 3),
        "vnic_tx_gbps": round(v["tx_gbps"], 3), "vnic_rx_gbps": round(v["rx_gbps"], 3),
        "tx_ratio": ratio(v["tx_gbps"], b["tx_gbps"]), "rx_ratio": ratio(v["rx_gbps"], b["rx_gbps"]),
        "vnic_tx_retransmits": v["tx_retransmits"], "builtin_tx_retransmits": b["tx_retransmits"],
    }


def main(seconds: int = 5, as_json: bool = False, tx_mode: str = "segment",
         tap_gro_us: int = TapBackend.DEFAULT_GRO_FLUSH_US) -> int:
    """Run and print a table (JSON with as_json); returns the exit status, 0."""
    res = run(seconds, tx_mode, tap_gro_us, log=(lambda *_: None) if as_json else print)
    if as_json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{'':22}{'guest->host':>14}{'host->guest':>14}   (Gbit/s, iperf3 {seconds} s, QEMU {res['qemu']})")
    print(f"{'QEMU virtio-net (TAP)':22}{res['builtin_tx_gbps']:>14.2f}{res['builtin_rx_gbps']:>14.2f}")
    print(f"{'vnic (vfio-user, TAP)':22}{res['vnic_tx_gbps']:>14.2f}{res['vnic_rx_gbps']:>14.2f}"
          f"   (tx {res['vnic_tx_mode']}, host GRO {res['vnic_tap_gro_us']} us)")
    print(f"{'vnic / built-in':22}{res['tx_ratio']:>14}{res['rx_ratio']:>14}")
    return 0
