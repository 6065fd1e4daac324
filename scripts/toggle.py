#!/usr/bin/env python3
"""Flip the NIC's behaviour while iperf3 runs through it, and print the
throughput in each state.

A guest sends with iperf3 (guest to host) for the whole run; on the host,
every few seconds this script switches the device's TX segmentation mode,
the TAP's host GRO and the link state through the Python API (the same
calls `vnic ctl` makes), and reads the iperf3 server's per-second reports.

    python3 scripts/toggle.py [--seconds-per-state 4]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from vnic.backends.tap import TapBackend
from vnic.device import Device
from vnic.lab.guest import GuestProcess
from vnic.lab.image import ensure_guest_image
from vnic.lab.netns import NetNS
from vnic.lab.qemu import ensure_qemu

STATES = [
    ("tx segment (device cuts TSO frames)", lambda d: d.set_mode(tx="segment")),
    ("tx segment, host GRO off", lambda d: d.set_mode(tap_gro_us=0)),
    ("tx passthrough (host kernel cuts them)",
     lambda d: d.set_mode(tx="passthrough", tap_gro_us=TapBackend.DEFAULT_GRO_FLUSH_US)),
    ("link down", lambda d: d.set_link(False)),
    ("link up, tx segment", lambda d: (d.set_link(True), d.set_mode(tx="segment"))),
]
INTERVAL = re.compile(r"\]\s+[\d.]+-[\d.]+\s+sec\s+[\d.]+ \w?Bytes\s+([\d.]+) ([KMG]?)bits/sec")
UNIT = {"G": 1.0, "M": 1e-3, "K": 1e-6, "": 1e-9}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds-per-state", type=int, default=4)
    args = ap.parse_args()
    per_state = args.seconds_per_state
    total = per_state * len(STATES) + 4

    qemu, image = ensure_qemu(), ensure_guest_image()
    samples: list[tuple[float, float]] = []              # (host time, Gbit/s)
    with NetNS() as ns, tempfile.TemporaryDirectory() as tmp:
        ns.add_tap("vnic0")
        server = ns.popen(["iperf3", "-s", "-i", "1", "--forceflush"], stdout=subprocess.PIPE, text=True)
        ns.wait_listening(5201)

        def read_server() -> None:
            for line in server.stdout:
                if m := INTERVAL.search(line):
                    samples.append((time.monotonic(), float(m.group(1)) * UNIT[m.group(2)]))
        threading.Thread(target=read_server, daemon=True).start()

        with Device(TapBackend("vnic0", ns.name)) as dev:
            dev.serve(Path(tmp) / "vnic.sock")
            guest_cmd = f"iperf3 -c 10.213.0.1 -t {total} -i 0 >/dev/null 2>&1; echo done"
            with GuestProcess(qemu, image, dev.qemu_args(), guest_cmd, timeout=total + 150) as g:
                if not g.wait_ready(150):
                    print("the guest did not come up", file=sys.stderr)
                    return 1
                time.sleep(3)                              # iperf3 connects and ramps up
                windows = []
                for name, apply in STATES:
                    apply(dev)
                    start = time.monotonic()
                    time.sleep(per_state)
                    windows.append((name, start, time.monotonic()))
                dev.set_link(True)
                g.wait()
    print(f"{'state':42} Gbit/s (guest to host, iperf3 server per-second reports)")
    for name, start, end in windows:
        inside = [v for t, v in samples if start + 1 <= t <= end]   # skip the second of the switch
        avg = sum(inside) / len(inside) if inside else 0.0
        print(f"{name:42} {avg:6.2f}   ({len(inside)} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
