"""Soak: one `vnic serve` (sandboxed, as it runs for users) through the
abuse a long-lived device sees, and whether it stays the same process:

  kills    QEMU killed with SIGKILL mid-iperf, then a new QEMU: its
           traffic must flow (counted as a failure if it does not)
  resets   the guest unbinds and rebinds the virtio-pci driver (a device
           reset) while iperf3 runs, then pings through the NIC again
  remaps   a vfio-user client maps and unmaps guest memory under load,
           every tenth time the memory the rings live in (NEEDS_RESET,
           then a reset and a new start must work)

The server's RSS, open fds and threads are read at the start and the end
(idle both times): they must be flat.

    python benchmarks/soak.py                       # 100 kills, 50 resets, 1000 remaps
    python benchmarks/soak.py --kills 3 --resets 3 --remaps 20 --check   (CI)

--check exits 1 on any failure or growth; --json prints the figures as
JSON (keys: kills, kill_failures, resets, reset_failures, remaps,
remap_failures, rss_kib_start, rss_kib_end, fds_start, fds_end,
threads_start, threads_end, seconds)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.client import VfioUserClient  # noqa: E402  (the repo's own test client)
from tests.support.driver import DEVICE_NEEDS_RESET, VirtioNetDriver  # noqa: E402
from tests.support.frames import udp_frame  # noqa: E402
from vnic import control  # noqa: E402
from vnic.lab.guest import GuestProcess  # noqa: E402
from vnic.lab.image import ensure_guest_image  # noqa: E402
from vnic.lab.netns import NetNS  # noqa: E402
from vnic.lab.qemu import ensure_qemu  # noqa: E402
from vnic.sandbox import proc_status  # noqa: E402

SERVER = "10.213.0.1"
KILL_PORT, RESET_PORT = 5201, 5300
RSS_SLACK_KIB = 16 * 1024        # allocator and cache noise; a leak per round shows far above


def process_figures(pid: int) -> dict[str, int]:
    status = proc_status(f"/proc/{pid}/status")
    return {"rss_kib": int(status["VmRSS"].split()[0]), "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": len(os.listdir(f"/proc/{pid}/task"))}


def settle(pid: int, seconds: float = 1.0) -> dict[str, int]:
    """Figures once no client is attached and the device has stopped."""
    time.sleep(seconds)
    return process_figures(pid)


def start_server(ns: NetNS, sock_dir: Path) -> tuple[subprocess.Popen, Path, list[str]]:
    sock, ctl = sock_dir / "vnic.sock", sock_dir / "vnic.ctl"
    proc = subprocess.Popen([sys.executable, "-m", "vnic.cli", "serve", "--socket", str(sock),
                             "--backend", f"tap:vnic0@{ns.name}", "--control", str(ctl)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stdout:
        if "vfio-user-pci" in line:
            args = line.split()
            return proc, ctl, ["-device", args[args.index("-device") + 1].strip("'")]
    raise RuntimeError(f"vnic serve did not start: {proc.stderr.read()}")


def tx_packets(ctl: Path) -> int:
    return int(control.Client(ctl).stats()["tx_packets"])


def wait_traffic(ctl: Path, since: int, packets: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tx_packets(ctl) >= since + packets:
            return True
        time.sleep(0.2)
    return False


def kill_rounds(qemu, image, nic, ns: NetNS, ctl: Path, rounds: int, log) -> int:
    """QEMU killed mid-iperf `rounds` times; failures: rounds whose new
    guest moved no traffic.  Each round has a fresh iperf3 server: the old
    one still waits for the dead guest's connection."""
    failures = 0
    cmd = f"iperf3 -c {SERVER} -p {KILL_PORT} -t 600 >/dev/null 2>&1"
    for i in range(rounds):
        iperf = ns.popen(["iperf3", "-s", "-p", str(KILL_PORT)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        ns.wait_listening(KILL_PORT)
        before = tx_packets(ctl)
        g = GuestProcess(qemu, image, nic, cmd, timeout=300).start()
        try:
            ok = g.wait_ready(120) and wait_traffic(ctl, before, 2000, 60)
        finally:
            g.proc.send_signal(signal.SIGKILL)
            g.kill()
            ns.stop(iperf)
        failures += not ok
        log(f"soak: kill {i + 1}/{rounds}: {'traffic flowed' if ok else 'NO TRAFFIC'}, then SIGKILL")
    return failures


RESET_SCRIPT = (
    "d=$(basename $(dirname $(readlink -f /sys/class/net/eth0/device))); p=/sys/bus/pci/drivers/virtio-pci; ok=0; "
    "for i in $(seq {n}); do iperf3 -c {s} -p $(({port}+i)) -t 3 >/dev/null 2>&1 & sleep 1; "
    "echo $d >$p/unbind; echo $d >$p/bind; sleep 0.5; e=$(ls /sys/bus/pci/devices/$d/virtio*/net/); "
    "ip link set $e up; ip addr add 10.213.0.2/24 dev $e 2>/dev/null; "
    "ping -c 1 -W 5 {s} >/dev/null && ok=$((ok+1)); wait; done; echo @@RESETS $ok")


def reset_rounds(qemu, image, nic, ns: NetNS, rounds: int, log) -> int:
    """One guest resets the device `rounds` times under iperf3; failures:
    rounds after which it could not ping through the NIC."""
    servers = [ns.popen(["iperf3", "-s", "-p", str(RESET_PORT + i)], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL) for i in range(1, rounds + 1)]
    try:
        cmd = RESET_SCRIPT.format(n=rounds, s=SERVER, port=RESET_PORT)
        with GuestProcess(qemu, image, nic, cmd, timeout=120 + 15 * rounds) as g:
            res = g.wait()
    finally:
        for p in servers:
            ns.stop(p)
    ok = next((int(line.split()[1]) for line in res.output.splitlines() if line.startswith("@@RESETS")), 0)
    log(f"soak: {rounds} driver unbind/bind under iperf3: {ok} pinged through afterwards")
    return rounds - ok


def remap_rounds(sock: Path, rounds: int, log) -> int:
    """DMA_MAP/DMA_UNMAP `rounds` times under TX load from a synthetic
    client; every tenth unmaps the rings' memory.  Failures: rounds after
    which frames did not complete."""
    failures = 0
    extra = os.memfd_create("soak-extra")
    os.ftruncate(extra, 1 << 20)
    client = VfioUserClient(str(sock)).attach()
    d = VirtioNetDriver(client).start()
    try:
        for i in range(rounds):
            for k in range(4):
                d.transmit(udp_frame(100 + k, k))
            if i % 10 == 9:
                client.dma_unmap()                   # the rings' memory, under load
                client.dma_map()
                failures += not d.status & DEVICE_NEEDS_RESET
                d.forget_queues()
                d.start()
                continue
            client.dma_map(iova=0x8_0000_0000, size=1 << 20, fd=extra)
            client.dma_unmap(iova=0x8_0000_0000, size=1 << 20)
            try:
                d.complete_tx(4, timeout=5)
            except Exception:
                failures += 1
    finally:
        d.close()
        client.close()
        os.close(extra)
    log(f"soak: {rounds} DMA map/unmap rounds under load: {failures} failed")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--resets", type=int, default=50)
    ap.add_argument("--remaps", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--check", action="store_true", help="exit 1 on a failure or growth")
    args = ap.parse_args()
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    t0 = time.monotonic()
    qemu, image = ensure_qemu(log=log), ensure_guest_image(log=log)
    with NetNS() as ns, tempfile.TemporaryDirectory(prefix="vnic-soak-") as tmp:
        sock_dir = Path(tmp)
        sock_dir.chmod(0o1777)                       # vnic serve runs as nobody
        ns.add_tap("vnic0")
        proc, ctl, nic = start_server(ns, sock_dir)
        try:
            start = settle(proc.pid)
            failures = {"kill_failures": kill_rounds(qemu, image, nic, ns, ctl, args.kills, log)}
            failures["reset_failures"] = reset_rounds(qemu, image, nic, ns, args.resets, log)
            failures["remap_failures"] = remap_rounds(sock_dir / "vnic.sock", args.remaps, log)
            end = settle(proc.pid, 2.0)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    result = {"kills": args.kills, "resets": args.resets, "remaps": args.remaps, **failures,
              **{f"{k}_start": v for k, v in start.items()}, **{f"{k}_end": v for k, v in end.items()},
              "seconds": round(time.monotonic() - t0)}
    grew = (end["fds"] > start["fds"] or end["threads"] > start["threads"]
            or end["rss_kib"] > start["rss_kib"] + RSS_SLACK_KIB)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"soak: server RSS {start['rss_kib']} -> {end['rss_kib']} KiB, fds {start['fds']} -> "
              f"{end['fds']}, threads {start['threads']} -> {end['threads']}; failures: "
              + ", ".join(f"{k} {v}" for k, v in failures.items()) + f" ({result['seconds']} s)")
    return 1 if args.check and (grew or any(failures.values())) else 0


if __name__ == "__main__":
    sys.exit(main())
