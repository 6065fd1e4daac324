"""Fault injection under a real guest: with 1 % of frames dropped both
ways (a fixed seed) TCP still moves 16 MiB each way with SHA-256 equal,
iperf3 runs to completion both ways, and the guest's own TCP
retransmission counter rises while the device counts the drops it made."""
from __future__ import annotations

import hashlib
import json
import os
import re

import pytest

from vnic.lab.iperf import received_bytes
from vnic.lab.iperf import retransmits as iperf_retransmits
from vnic.net.faults import FaultSpec

from .support import HOST4, IPERF_PORT, Link, section
from .test_packed import sha_in

pytestmark = pytest.mark.e2e

MIB = 16
DOWN_PORT, UP_PORT = 7021, 7022
RETRANS = "awk '/^Tcp:/ && $13 ~ /^[0-9]+$/ {print \"retrans=\" $13}' /proc/net/snmp"
GUEST = (f"echo @@BEFORE@@; {RETRANS}; "
         f"echo @@DOWN@@; nc {HOST4} {DOWN_PORT} </dev/null | sha256sum; "
         f"echo @@UP@@; mkfifo /tmp/f; sha256sum </tmp/f >/tmp/sha & "
         f"head -c {MIB << 20} /dev/urandom | tee /tmp/f | nc {HOST4} {UP_PORT} >/dev/null; "
         f"echo rc=$?; wait; cat /tmp/sha; "
         f"echo @@IPERF_UP@@; iperf3 -c {HOST4} -p {IPERF_PORT} -t 2 -J; "
         f"echo @@IPERF_DOWN@@; iperf3 -c {HOST4} -p {IPERF_PORT} -t 2 -R -J; "
         f"echo @@AFTER@@; {RETRANS}; echo @@END@@")


def retransmits(text: str) -> int:
    m = re.search(r"retrans=(\d+)", text)
    assert m, f"no TCP counters in:\n{text}"
    return int(m.group(1))


def test_one_percent_drop_both_ways_keeps_tcp_whole(qemu, image):
    data = os.urandom(MIB << 20)
    with Link() as link:
        link.dev.set_faults(FaultSpec(drop=1, seed=2026))
        down = link.tcp_once(HOST4, DOWN_PORT, send=data)
        up = link.tcp_once(HOST4, UP_PORT)
        link.iperf_server()
        res = link.run(qemu, image, GUEST, timeout=300)
        assert up.wait(30) and down.wait(30), "a host-side transfer did not finish"
        c = link.dev.stats()
    out = res.output
    assert down.error is None and up.error is None, (down.error, up.error)
    assert sha_in(section(out, "DOWN")) == hashlib.sha256(data).hexdigest()
    text_up = section(out, "UP")
    assert "rc=0" in text_up and up.size == MIB << 20 and up.sha256 == sha_in(text_up)
    assert retransmits(section(out, "AFTER")) > retransmits(section(out, "BEFORE"))
    assert c["fault_tx_drops"] > 0 and c["fault_rx_drops"] > 0
    iperf = {d: json.loads(section(out, f"IPERF_{d}")) for d in ("UP", "DOWN")}
    assert all("error" not in r and received_bytes(r) > 0 for r in iperf.values()), iperf
    print(f"\n1 % drop: device dropped {c['fault_tx_drops']} of {c['tx_packets'] + c['fault_tx_drops']} "
          f"wire frames out, {c['fault_rx_drops']} in; guest retransmitted "
          f"{retransmits(section(out, 'AFTER')) - retransmits(section(out, 'BEFORE'))} segments; "
          f"iperf3 2 s up {received_bytes(iperf['UP'])} B ({iperf_retransmits(iperf['UP'])} retransmits), "
          f"down {received_bytes(iperf['DOWN'])} B")
