"""`vnic serve` started as root gives root up once its TAP and sockets are
open: it runs as nobody with no capabilities, no_new_privs and a seccomp
filter, cannot open /etc/shadow or execve, and still serves a guest with
iperf3 both ways.  `--user root` keeps root (and says so)."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from vnic import control
from vnic.lab.iperf import run_iperf_pair
from vnic.lab.netns import NetNS

from .test_cli import read_attach_args

pytestmark = pytest.mark.e2e
VNIC = [sys.executable, "-m", "vnic.cli"]


def serve(ns: NetNS, sock_dir, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    sock, ctl = sock_dir / "vnic.sock", sock_dir / "vnic.ctl"
    proc = subprocess.Popen(VNIC + ["serve", "--socket", str(sock), "--backend", f"tap:vnic0@{ns.name}",
                                    "--control", str(ctl), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, read_attach_args(proc)


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return err


def test_serve_drops_root_and_still_carries_iperf_both_ways(qemu, image, sock_dir):
    """Two queue pairs for a one-vCPU guest, which uses one: the steering
    program for that was loaded before the drop (bpf() is refused after)."""
    with NetNS() as ns:
        ns.add_tap("vnic0", multi_queue=True)
        proc, nic = serve(ns, sock_dir, "--queues", "2")
        ctl = sock_dir / "vnic.ctl"
        try:
            box = control.Client(ctl).sandbox()
            assert box["user"] == "nobody" and box["uid"] != 0
            assert int(box["capabilities"], 16) == 0
            assert box["no_new_privs"] and box["seccomp"] == "filter"
            assert box["all_threads_confined"]          # the bounding set too, on every thread
            assert box["probes"] == {"open /etc/shadow": "EACCES", "execve": "EPERM",
                                     "setuid 0": "EPERM", "raw socket": "EPERM"}
            res = run_iperf_pair(qemu, image, nic, ns, seconds=2)
            assert res["tx_gbps"] > 0 and res["rx_gbps"] > 0
            counters = control.Client(ctl).stats()
            assert counters["tx_packets"] > 1000 and counters["rx_packets"] > 1000
            assert counters["chain_errors"] == counters["dma_errors"] == counters["mem_faults"] == 0
            assert control.Client(ctl).info()["rx_steering"] == "ebpf"
        finally:
            err = stop(proc)
        assert "Traceback" not in err
        assert not (sock_dir / "vnic.sock").exists()       # removed as nobody: it was handed over


def test_serve_as_root_on_request_keeps_root_and_warns(sock_dir):
    with NetNS() as ns:
        ns.add_tap("vnic0")
        proc, _nic = serve(ns, sock_dir, "--user", "root")
        try:
            box = control.Client(sock_dir / "vnic.ctl").sandbox()
            assert box["uid"] == 0 and box["seccomp"] == "off" and not box["all_threads_confined"]
            assert box["probes"]["execve"] == "ENOENT"    # it ran: only the file was missing
        finally:
            err = stop(proc)
        assert "running as root (--user root)" in err


def test_serve_with_an_unknown_user_fails_before_opening_anything(tmp_path):
    r = subprocess.run(VNIC + ["serve", "--socket", str(tmp_path / "s"), "--user", "no-such-user-vnic"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "no-such-user-vnic: no such user" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "s").exists()
