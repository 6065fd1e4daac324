"""`vnic bench cable`: two guests back to back, QEMU's cable against vnic's.

Built-in: two guests on QEMU's own virtio-net, joined by a -netdev stream
pair.  No offload crosses a stream socket, so QEMU offers none and each
guest segments and checksums in software.  vnic: two guests on two vnic
devices joined by a stream cable (stream-listen on one side, stream on
the other): the sending device segments, the receiving one coalesces,
the guests hand over and take 64 KiB super-frames.  Same image, same
QEMU, same run, iperf3 one way; the ratio is vnic / built-in.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from vnic.lab.cable import PairResult, run_pair
from vnic.lab.image import ensure_guest_image
from vnic.lab.qemu import ensure_qemu
from vnic.lab.served import ServedChild

from .iperf_parity import ratio

SOCKET_WAIT_S = 30


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + SOCKET_WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.05)


def builtin(qemu, image, seconds: int, tmp: Path) -> PairResult:
    """QEMU's virtio-net on both ends of a -netdev stream pair (the server
    end listens, the client end connects, reconnecting while it is not up)."""
    cable = tmp / "builtin.sock"
    addr = f"addr.type=unix,addr.path={cable}"
    listen = ["-netdev", f"stream,id=n0,server=on,{addr}", "-device", "virtio-net-pci,netdev=n0"]
    connect = ["-netdev", f"stream,id=n0,server=off,reconnect-ms=200,{addr}",
               "-device", "virtio-net-pci,netdev=n0"]
    return run_pair(qemu, image, listen, connect, seconds)


def vnic(qemu, image, seconds: int, tmp: Path) -> tuple[PairResult, dict, dict]:
    """Two vnic devices cabled by a stream socket; their counters too."""
    cable = tmp / "vnic.sock"
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    tmp.chmod(0o1777)
    with ServedChild(f"stream-listen:{cable}", tmp / "a") as a:
        _wait_for(cable)
        with ServedChild(f"stream:{cable}", tmp / "b") as b:
            res = run_pair(qemu, image, a.nic, b.nic, seconds)
            return res, a.stats(), b.stats()


def run(seconds: int = 5, log=print) -> dict:
    """Both cables, the built-in first.  Raises RuntimeError if a guest or
    iperf3 fails."""
    qemu = ensure_qemu(log=log)
    image = ensure_guest_image(log=log)
    with tempfile.TemporaryDirectory(prefix="vnic-cable-") as tmp:
        log(f"bench: QEMU virtio-net <-> -netdev stream <-> QEMU virtio-net, iperf3 {seconds} s ...")
        t0 = time.monotonic()
        b = builtin(qemu, image, seconds, Path(tmp))
        log(f"bench:   {b.gbps():.2f} Gbit/s ({time.monotonic() - t0:.0f} s)")
        log(f"bench: vnic <-> stream cable <-> vnic, iperf3 {seconds} s ...")
        t0 = time.monotonic()
        v, receiver, sender = vnic(qemu, image, seconds, Path(tmp))
        log(f"bench:   {v.gbps():.2f} Gbit/s ({time.monotonic() - t0:.0f} s)")
    return {
        "seconds": seconds, "qemu": qemu.version,
        "builtin_gbps": round(b.gbps(), 3), "vnic_gbps": round(v.gbps(), 3),
        "ratio": ratio(v.gbps(), b.gbps()),
        "builtin_retransmits": b.retransmits(), "vnic_retransmits": v.retransmits(),
        "vnic_tso_segments": sender["tx_tso_segments"],
        "vnic_coalesced_packets": receiver["rx_coalesced_packets"],
        "vnic_backend_waits": sender["tx_backend_waits"],
    }


def main(seconds: int = 5, as_json: bool = False) -> int:
    """Run and print a table (JSON with as_json); returns the exit status, 0."""
    res = run(seconds, log=(lambda *_: None) if as_json else print)
    if as_json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{'':36}{'Gbit/s':>8}{'retransmits':>13}   (iperf3 {seconds} s one way, QEMU {res['qemu']})")
    print(f"{'QEMU virtio-net, -netdev stream':36}{res['builtin_gbps']:>8.2f}{res['builtin_retransmits']!s:>13}")
    print(f"{'vnic, stream cable':36}{res['vnic_gbps']:>8.2f}{res['vnic_retransmits']!s:>13}"
          f"   (segments {res['vnic_tso_segments']}, coalesced {res['vnic_coalesced_packets']})")
    print(f"{'vnic / built-in':36}{res['ratio']!s:>8}")
    return 0
