"""RSS with a real guest: a 2-vCPU Linux guest on a 2-pair vnic NIC
configures receive-side scaling itself (RSS_CONFIG with its default
spread table), `ethtool -x eth0` shows the table the device took,
`ethtool -X eth0 equal 1` moves every received frame to queue 0 (the
guest's own per-queue counters show it), `ethtool -X eth0 weight 1 3`
spreads them again."""
from __future__ import annotations

import re

import pytest

from tests.e2e.support import HOST4, IPERF_PORT, Link, section
from tests.e2e.test_multiqueue import irq_counts

pytestmark = pytest.mark.e2e

# the RX vectors' interrupts: Linux 6.12 keeps per-queue packet counts
# out of ethtool -S, and a queue that receives nothing raises none
RX_QUEUE_STATS = "grep -E 'virtio0-input' /proc/interrupts"
GUEST = f"""
echo @@TABLE@@; ethtool -x eth0
echo @@BEFORE_EQ@@; {RX_QUEUE_STATS}
ethtool -X eth0 equal 1; echo eq=$?
iperf3 -c {HOST4} -p {IPERF_PORT} -t 3 -P 4 -R | grep -E 'SUM.*receiver'
echo @@AFTER_EQ@@; {RX_QUEUE_STATS}
echo @@TABLE_EQ@@; ethtool -x eth0
ethtool -X eth0 weight 1 3; echo weight=$?
iperf3 -c {HOST4} -p {IPERF_PORT} -t 3 -P 16 -R | grep -E 'SUM.*receiver'
echo @@AFTER_WEIGHT@@; {RX_QUEUE_STATS}
echo @@TABLE_WEIGHT@@; ethtool -x eth0
echo @@FEATURES@@; cat /sys/bus/virtio/devices/virtio0/features
echo @@END@@
"""


def rx_queue_packets(text: str) -> list[int]:
    """Interrupts of virtio0-input.0 and .1, summed over the guest's CPUs."""
    return [irq_counts(text, f"virtio0-input.{q}") for q in (0, 1)]


def table_entries(text: str) -> list[int]:
    """The queues of `ethtool -x`'s indirection table, in order."""
    rows = re.findall(r"^\s*\d+:((?:\s+\d+)+)\s*$", text, re.M)
    return [int(n) for row in rows for n in row.split()]


def test_the_guest_steers_received_traffic_with_its_table(qemu, image):
    with Link(queues=2, smp=2) as link:
        link.iperf_server()
        res = link.run(qemu, image, GUEST, timeout=300)
        rows = link.dev.per_queue_stats()
        info = link.dev.info()
    out = res.output
    print("\n" + "\n".join(f"pair {i}: rx {r['rx_packets']} steered away {r['rx_rss_steered']} "
                           f"hashed {r['rx_rss_hashed']} hand-off waits {r['rx_rss_handoff_waits']}"
                           for i, r in enumerate(rows)))
    assert "RSS hash key" in section(out, "TABLE")
    assert table_entries(section(out, "TABLE")) == [i % 2 for i in range(128)]    # Linux's default
    # equal 1: what arrived during the transfer all came on queue 0
    assert "eq=0" in out
    assert table_entries(section(out, "TABLE_EQ")) == [0] * 128
    before, after = rx_queue_packets(section(out, "BEFORE_EQ")), rx_queue_packets(section(out, "AFTER_EQ"))
    assert after[0] - before[0] > 100 and after[1] == before[1], (before, after)
    # weight 1 3: a quarter of the table on queue 0, the rest on queue 1, both used again
    assert "weight=0" in out
    weighted = table_entries(section(out, "TABLE_WEIGHT"))
    assert weighted.count(0) == 32 and weighted.count(1) == 96
    spread = rx_queue_packets(section(out, "AFTER_WEIGHT"))
    assert spread[1] - after[1] > 100 and spread[0] > after[0], (after, spread)
    # the device did the steering (a full hand-off ring makes the reader
    # wait, never drop) and hashed what it reported
    assert sum(r["rx_rss_steered"] for r in rows) > 0
    assert all(r["rx_rss_hashed"] > 0 for r in rows)
    assert sum(r["chain_errors"] + r["dma_errors"] for r in rows) == 0
    bits = section(out, "FEATURES").strip()                 # bit 0 first
    assert bits[60] == "1" and bits[57] == "1", bits        # RSS and HASH_REPORT negotiated
    assert not info["needs_reset"]
