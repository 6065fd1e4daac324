"""The command line as a user drives it: `vnic serve` attached to a
hand-started QEMU (twice: QEMU restarts), `vnic vm --json`, what `vnic vm
--iperf` prints for people, and `vnic vm` interrupted midway leaving
nothing behind."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time

import pytest

from vnic import control
from vnic.lab.guest import run_guest
from vnic.lab.netns import NetNS, list_namespaces

from .conftest import qemu_pids

pytestmark = pytest.mark.e2e
VNIC = [sys.executable, "-m", "vnic.cli"]


def read_attach_args(proc: subprocess.Popen, timeout: float = 30) -> list[str]:
    """The -device arguments `vnic serve` prints for QEMU."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "vfio-user-pci" in line:
            args = shlex.split(line)
            i = args.index("-device")
            return args[i:i + 2]
    raise AssertionError(f"vnic serve printed no QEMU arguments: {''.join(seen)}")


def test_serve_attach_by_hand_and_survive_qemu_restart(qemu, image, sock_dir):
    sock, ctl = sock_dir / "vnic.sock", sock_dir / "vnic.ctl"
    with NetNS() as ns:
        ns.add_tap("vnic0")
        proc = subprocess.Popen(VNIC + ["serve", "--socket", str(sock), "--backend",
                                        f"tap:vnic0@{ns.name}", "--control", str(ctl)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            nic = read_attach_args(proc)
            assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
            for boot in range(2):           # the second QEMU is a new vfio-user client
                r = run_guest(qemu, image, nic, "ping -c 2 -W 5 10.213.0.1", timeout=120)
                assert r.rc == 0, f"boot {boot}: {r.error}\n{r.output}"
                assert "2 packets received" in r.output
            reply = control.request(ctl, {"cmd": "stats"})
            assert reply["ok"] and reply["result"]["tx_packets"] >= 4
            bad = control.request(ctl, {"cmd": "frobnicate"})
            assert not bad["ok"] and "unknown command" in bad["error"]
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "stopped" in out
        assert not sock.exists()


def test_vm_json(qemu, image):
    r = subprocess.run(VNIC + ["vm", "--cmd", "cat /sys/class/net/eth0/mtu", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["output"].strip() == "1500"
    assert "version_1" in out["guest_features"]
    assert {"tx_gbps", "rx_gbps", "counters", "guest_features"} <= set(out)
    # the device is a child `vnic serve`, confined as users run it
    assert out["sandbox"]["user"] == "nobody" and out["sandbox"]["seccomp"] == "filter"
    assert out["sandbox"]["probes"]["execve"] == "EPERM"


def test_vm_iperf_reads_as_progress_and_a_table(qemu, image):
    """The main job's output: a line per step as it happens, each direction
    as it completes, a summary table; iperf3's raw JSON only with -v."""
    r = subprocess.run(VNIC + ["vm", "--iperf", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    steps = [line for line in out.splitlines() if " vnic: " in line]
    order = ["booting the guest", "guest booted", "guest->host: ", "host->guest: "]
    at = [next(i for i, line in enumerate(steps) if word in line) for word in order]
    assert at == sorted(at), steps
    assert "sum_received" not in out and len(out.splitlines()) < 60      # no raw JSON
    for row in ("iperf3 guest->host", "negotiated", "TSO super-frames -> segments", "drops, errors"):
        assert row in out, out
    assert re.search(r"^iperf3: guest->host [\d.]+ Gbit/s, host->guest [\d.]+ Gbit/s$", out, re.M)


def test_vm_bad_feature_name_is_a_clear_error():
    r = subprocess.run(VNIC + ["vm", "--features", "+turbo"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "unknown feature 'turbo'" in r.stderr and "known:" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_vm_interrupted_leaves_nothing_behind(qemu, image, sig):
    proc = subprocess.Popen(VNIC + ["vm", "--cmd", "sleep 120"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not qemu_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        guests = qemu_pids(proc.pid)
        assert guests, "QEMU never started"
        time.sleep(2)                        # let the guest get going
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    time.sleep(0.5)
    assert not [pid for pid in guests if os.path.exists(f"/proc/{pid}")], "QEMU outlived vnic vm"
    assert not [n for n in list_namespaces() if n.startswith(f"vnic-{proc.pid}-")]
