"""`vnic bench offloads`: what the device's TX offloads buy the guest, in one run.

The guest boots again and again under the same QEMU, alternating vnic with
every offload offered and vnic with csum, tso4, tso6, ufo and uso withheld
(the guest then segments and checksums in software), each time with iperf3
both ways.  Unless --no-builtin, QEMU's own virtio-net with csum on and off runs
in the same rounds as the reference for what this guest gains on a device
that is not vnic, and for vnic against it with offloads on.  --tx-mode picks
how vnic hands super-frames to the TAP: cut into wire frames (segment, the
default) or whole (passthrough, which is what the built-in device does).
The rounds are interleaved so that drift on a noisy machine hits every
configuration alike; ratios are of the medians.
"""
from __future__ import annotations

import json
import statistics

from vnic.errors import ConfigError
from vnic.lab.image import ensure_guest_image
from vnic.lab.qemu import ensure_qemu

from . import iperf_parity as bench_iperf

NO_OFFLOADS = "-csum,-tso4,-tso6,-ufo,-uso"
GOAL_TX_RATIO = 3.0          # issue 3: guest to host, offloads on against off

# name -> how to boot it (qemu, image, seconds, tx_mode); the vnic pair always
# runs, the built-in pair unless --no-builtin
CONFIGS = {
    "vnic_on": lambda q, i, s, m: bench_iperf.vnic(q, i, s, tx_mode=m),
    "vnic_off": lambda q, i, s, m: bench_iperf.vnic(q, i, s, tx_mode=m, features=NO_OFFLOADS),
    "builtin_on": lambda q, i, s, m: bench_iperf.builtin(q, i, s),
    # csum=off also withdraws the TSO/UFO/USO that depend on it
    "builtin_off": lambda q, i, s, m: bench_iperf.builtin(q, i, s, device_props=",csum=off"),
}


def run(seconds: int = 5, rounds: int = 3, builtin: bool = True, tx_mode: str = "segment",
        log=print) -> dict:
    """rounds interleaved rounds of every configuration, each one guest boot,
    and the ratios of the medians. Raises ConfigError if rounds or seconds
    is below 1, RuntimeError if a guest or iperf3 fails."""
    if rounds < 1 or seconds < 1:
        raise ConfigError("rounds and seconds must be at least 1")
    qemu = ensure_qemu(log=log)
    image = ensure_guest_image(log=log)
    names = [n for n in CONFIGS if builtin or n.startswith("vnic")]
    tx: dict[str, list[float]] = {n: [] for n in names}
    rx: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names:
            res = CONFIGS[n](qemu, image, seconds, tx_mode)
            tx[n].append(round(res["tx_gbps"], 3))
            rx[n].append(round(res["rx_gbps"], 3))
            log(f"bench: round {r + 1}/{rounds} {n}: guest->host {res['tx_gbps']:.2f}, "
                f"host->guest {res['rx_gbps']:.2f} Gbit/s")
    med = {n: round(statistics.median(tx[n]), 3) for n in names}
    out = {"seconds": seconds, "rounds": rounds, "qemu": qemu.version, "no_offloads": NO_OFFLOADS,
           "vnic_tx_mode": tx_mode,
           "tx_gbps": tx, "rx_gbps": rx, "tx_median_gbps": med,
           "tx_ratio": bench_iperf.ratio(med["vnic_on"], med["vnic_off"]),
           "tx_round_ratios": [bench_iperf.ratio(a, b) for a, b in zip(tx["vnic_on"], tx["vnic_off"], strict=False)],
           "goal_tx_ratio": GOAL_TX_RATIO}
    if builtin:
        out["builtin_tx_ratio"] = bench_iperf.ratio(med["builtin_on"], med["builtin_off"])
        out["vnic_to_builtin_on"] = bench_iperf.ratio(med["vnic_on"], med["builtin_on"])
    return out


LABELS = {"vnic_on": "vnic, offloads on", "vnic_off": "vnic, offloads off",
          "builtin_on": "built-in, csum=on", "builtin_off": "built-in, csum=off"}


def _shown(ratio: float | None) -> str:
    return "-" if ratio is None else str(ratio)      # None: the baseline measured 0


def main(seconds: int = 5, rounds: int = 3, builtin: bool = True, tx_mode: str = "segment",
         as_json: bool = False) -> int:
    """Run and print the medians and ratios (JSON with as_json); returns the
    exit status, 0."""
    res = run(seconds, rounds, builtin, tx_mode, log=(lambda *_: None) if as_json else print)
    if as_json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"guest->host Gbit/s, iperf3 {seconds} s, median of {rounds} interleaved rounds, "
          f"QEMU {res['qemu']}, vnic tx {res['vnic_tx_mode']}")
    for n, med in res["tx_median_gbps"].items():
        rounds_text = " ".join(f"{v:.2f}" for v in res["tx_gbps"][n])
        print(f"  {LABELS[n]:22}{med:>7.2f}   rounds: {rounds_text}")
    print(f"  {'vnic on / off':22}{_shown(res['tx_ratio']):>7}   (goal {GOAL_TX_RATIO})")
    if builtin:
        print(f"  {'built-in on / off':22}{_shown(res['builtin_tx_ratio']):>7}")
        print(f"  {'vnic / built-in, on':22}{_shown(res['vnic_to_builtin_on']):>7}   (goal 1.0)")
    return 0
