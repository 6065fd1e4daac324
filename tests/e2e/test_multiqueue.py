"""A 2-vCPU Linux guest on a 2-pair vnic NIC: the guest's virtio_net takes
both pairs (ethtool -l), iperf3 -P 4 moves traffic on both pairs both ways
with both pairs' interrupts firing, `ethtool -L eth0 combined 1` and back
work under traffic, and a file crosses intact both ways."""
from __future__ import annotations

import hashlib
import os
import re

import pytest

from tests.e2e.support import HOST4, IPERF_PORT, Link, section
from tests.e2e.test_receive import DOWN_PORT, SIZE_MB, TRANSFER, UP_PORT, sha_and_size

pytestmark = pytest.mark.e2e

GUEST = TRANSFER + f"""
echo @@CHANNELS@@; ethtool -l eth0
echo @@P4@@
iperf3 -c {HOST4} -p {IPERF_PORT} -t 3 -P 4 | grep -E 'SUM.*(sender|receiver)'
iperf3 -c {HOST4} -p {IPERF_PORT} -t 3 -P 4 -R | grep -E 'SUM.*(sender|receiver)'
echo @@IRQ@@; grep virtio0 /proc/interrupts
echo @@SHRINK@@
iperf3 -c {HOST4} -p {IPERF_PORT} -t 6 -P 2 >/tmp/shrink 2>&1 &
pid=$!
sleep 2; ethtool -L eth0 combined 1; echo set1=$?; ethtool -l eth0 | tail -1
sleep 2; ethtool -L eth0 combined 2; echo set2=$?; ethtool -l eth0 | tail -1
wait $pid; echo iperf=$?; grep -E 'SUM.*receiver' /tmp/shrink
echo @@END@@
"""


def irq_counts(text: str, name: str) -> int:
    """Interrupts of one virtio0 vector, summed over the guest's CPUs."""
    m = re.search(rf"^\s*\d+:((?:\s+\d+)+)\s+PCI-MSIX\S*\s+\S+\s+{re.escape(name)}$", text, re.M)
    assert m, f"no {name} in:\n{text}"
    return sum(int(n) for n in m.group(1).split())


def test_two_pairs_carry_traffic_both_ways_and_survive_a_shrink(qemu, image):
    data = os.urandom(SIZE_MB << 20)
    with Link(queues=2, smp=2) as link:
        link.iperf_server()
        down = link.tcp_once(HOST4, DOWN_PORT, send=data)
        up = link.tcp_once(HOST4, UP_PORT)
        res = link.run(qemu, image, GUEST, timeout=300)
        assert up.wait(10) and down.wait(10), "a host-side transfer did not finish"
        rows = link.dev.per_queue_stats()
        info = link.dev.info()
    out = res.output
    print("\n" + "\n".join(f"pair {i}: tx {r['tx_packets']} rx {r['rx_packets']} "
                           f"inactive drops {r['rx_drops_inactive']}" for i, r in enumerate(rows)))
    # the guest took both pairs
    assert re.findall(r"Combined:\s+(\d+)", section(out, "CHANNELS")) == ["2", "2"]
    assert info["queue_pairs"] == 2       # (the guest has gone: back to 1 pair in use)
    # traffic on both pairs, both ways, and both pairs' interrupts
    assert all(r["tx_packets"] > 100 and r["rx_packets"] > 100 for r in rows), rows
    irq = section(out, "IRQ")
    assert irq_counts(irq, "virtio0-input.0") > 0 and irq_counts(irq, "virtio0-input.1") > 0
    assert len(re.findall(r"SUM.*receiver", section(out, "P4"))) == 2
    # combined 1 and back under traffic: iperf3 went on
    shrink = section(out, "SHRINK")
    assert "set1=0" in shrink and "set2=0" in shrink, shrink
    assert re.search(r"iperf=0", shrink) and re.search(r"SUM.*receiver", shrink), shrink
    assert rows[0]["mq_pairs_changes"] >= 3            # the driver's own, then 1, then 2
    # a file both ways, intact
    got_sha, got_size = sha_and_size(section(out, "DOWN"))
    sent_sha, sent_size = sha_and_size(section(out, "UP"))
    assert (got_size, got_sha) == (len(data), hashlib.sha256(data).hexdigest())
    assert (up.size, up.sha256) == (sent_size, sent_sha) and sent_size == SIZE_MB << 20
    assert sum(r["chain_errors"] + r["dma_errors"] for r in rows) == 0
    assert not info["needs_reset"]
