#!/usr/bin/env python3
"""Smoke test of the guest tooling with QEMU's built-in virtio-net (the baseline).

Builds (or finds) QEMU and the guest image, boots the guest with
`-netdev tap,fd=N,vhost=off -device virtio-net-pci` on a TAP whose host side is
10.213.0.1/24 in a private network namespace, pings, shows the NIC's driver and
offloads, then runs iperf3 both ways and prints Gbit/s.

    python3 scripts/guest-smoke.py [--seconds 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from vnic.lab.guest import run_guest
from vnic.lab.image import ensure_guest_image
from vnic.lab.iperf import describe, run_iperf_pair
from vnic.lab.netns import NetNS
from vnic.lab.qemu import ensure_qemu

MAC = "52:54:00:12:34:56"
PROBE = ("ping -c 3 -W 2 10.213.0.1 && ethtool -i eth0 && ethtool -k eth0 | "
         "grep -E 'segmentation|checksum|scatter' && cat /sys/class/net/eth0/device/features")


def builtin_nic_args(tap_fd: int) -> list[str]:
    return ["-netdev", f"tap,id=n0,fd={tap_fd},vhost=off",
            "-device", f"virtio-net-pci,netdev=n0,mac={MAC}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=3, help="iperf3 -t per direction")
    ap.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    args = ap.parse_args()

    t = time.monotonic()
    qemu = ensure_qemu()
    t_qemu = time.monotonic() - t
    t = time.monotonic()
    image = ensure_guest_image()
    t_image = time.monotonic() - t
    print(f"guest kernel {image.info['kernel_version']}, modules {image.info['modules_loaded']}")

    with NetNS() as ns:
        fd = ns.open_tap("tap0")
        nic = builtin_nic_args(fd)
        print(f"namespace {ns.name}: tap0 10.213.0.1/24, QEMU gets the TAP as fd {fd}")

        r = run_guest(qemu, image, nic, PROBE, pass_fds=[fd], timeout=120)
        print(f"boot to READY {r.boot_s:.1f} s, whole run {r.elapsed_s:.1f} s; "
              f"guest says {r.ready}")
        print(r.output)
        if not r.ok:
            print(f"FAILED rc={r.rc} error={r.error}\n{r.console_log[-3000:]}", file=sys.stderr)
            return 1

        t = time.monotonic()
        res = run_iperf_pair(qemu, image, nic, ns, seconds=args.seconds, pass_fds=[fd])
        print(f"iperf3 {args.seconds} s each way, built-in virtio-net, TCG: {describe(res)} "
              f"[{time.monotonic() - t:.0f} s]")

    summary = {"qemu": qemu.version, "qemu_s": round(t_qemu, 1), "image_s": round(t_image, 1),
               "boot_s": round(r.boot_s, 2), "tx_gbps": round(res["tx_gbps"], 3),
               "rx_gbps": round(res["rx_gbps"], 3), "tx_retransmits": res["tx_retransmits"]}
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
