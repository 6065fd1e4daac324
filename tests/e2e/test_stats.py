"""The device's counters, read as a user would (control socket, JSON), agree
with the real guest's own interface counters after iperf3 both ways, and
the per-flow table shows the iperf3 flows with the offloads they used."""
from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from vnic.control import Client, ControlServer

from .support import HOST4, Link

pytestmark = pytest.mark.e2e

GUEST = f"""
iperf3 -c {HOST4} -t 2 >/dev/null && iperf3 -c {HOST4} -t 2 -R >/dev/null || exit 2
sleep 1
s=/sys/class/net/eth0/statistics
echo "COUNTERS $(cat $s/rx_packets) $(cat $s/rx_bytes) $(cat $s/tx_packets) $(cat $s/tx_bytes)"
sleep 5
"""
# Frames may cross between the guest's read and ours (ARP, IPv6 ND), and the
# guest counts a sent frame only when the device has given its buffer back.
IN_FLIGHT = 8


def test_stats_json_matches_the_guests_own_counters(qemu, image):
    with Link() as link:
        link.iperf_server()
        server = ControlServer(link.tmp / "ctl.sock", link.dev)
        server.start()
        link.defer(server.close)
        g = link.guest(qemu, image, GUEST, timeout=150)
        deadline = time.monotonic() + 120
        while not (m := re.search(r"COUNTERS (\d+) (\d+) (\d+) (\d+)", g.console())):
            assert g.proc.poll() is None and time.monotonic() < deadline, g.console()[-3000:]
            time.sleep(0.05)
        device = Client(link.tmp / "ctl.sock").stats()
        flows = Client(link.tmp / "ctl.sock").flows(top=4)
        shown = subprocess.run([sys.executable, "-m", "vnic.cli", "stats", "--control",
                                str(link.tmp / "ctl.sock"), "--flows", "--top", "3"],
                               capture_output=True, text=True, timeout=30)
        res = g.wait()
    assert res.rc == 0, res.output
    rx_packets, rx_bytes, tx_packets, _tx_bytes = map(int, m.groups())
    # iperf3 really ran both ways (host to guest in bytes: with GSO a packet holds up to 64 KiB)
    assert rx_bytes > 10 * 2**20 and tx_packets > 1_000

    # host to guest: every frame the device delivered is one the guest counted
    assert 0 <= device["rx_packets"] - rx_packets <= IN_FLIGHT
    assert 0 <= device["rx_bytes"] - rx_bytes <= IN_FLIGHT * 1514
    # guest to host: the guest counts a TSO/USO super-frame once, the device
    # counts the frames it cut from it
    cut = (device["tx_tso_segments"] - device["tx_tso_packets"] +
           device["tx_uso_segments"] - device["tx_uso_packets"] +
           device["tx_ufo_fragments"] - device["tx_ufo_packets"])
    assert device["tx_tso_packets"] > 0
    assert 0 <= device["tx_packets"] - cut - tx_packets <= IN_FLIGHT
    dropped = sum(v for k, v in device.items() if k.startswith("tx_drops"))
    assert dropped == 0

    # the flow table: iperf3's data flows lead, each way, with what the device did for them
    assert shown.returncode == 0, shown.stderr
    assert f"{HOST4}:5201" in shown.stdout and "tso" in shown.stdout, shown.stdout
    top = flows["flows"]
    assert flows["table"]["entries"] >= 2 and flows["table"]["evictions"] == 0
    assert len(top) == 4 and top[0]["bytes"] >= top[1]["bytes"] >= top[2]["bytes"]
    sent = [f for f in top if f["direction"] == "tx" and f["dst"] == HOST4 and f["dst_port"] == 5201]
    got = [f for f in top if f["direction"] == "rx" and f["src"] == HOST4 and f["src_port"] == 5201]
    assert sent and got, top
    assert sent[0]["protocol"] == "tcp" and "tso" in sent[0]["offloads"]
    assert sent[0]["packets"] > 1_000 and got[0]["packets"] > 1_000
    assert sent[0]["bytes"] > 10 * 2**20 and got[0]["bytes"] > 10 * 2**20
