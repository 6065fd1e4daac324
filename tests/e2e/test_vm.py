"""A real Linux guest under QEMU uses a vnic NIC over vfio-user."""
from __future__ import annotations

import re

import pytest

from vnic.lab.vm import vm

pytestmark = pytest.mark.e2e


def test_guest_sees_virtio_net_behind_vfio_user_and_pings(qemu, image):
    res = vm(cmd="ethtool -i eth0; cat /sys/class/net/eth0/device/../vendor "
                 "/sys/class/net/eth0/device/../device; "
                 "cat /sys/class/net/eth0/carrier; ping -c 3 -W 5 10.213.0.1; ethtool eth0",
             log=lambda *_: None)
    assert res.error is None, res.error
    assert res.rc == 0, res.output
    assert "driver: virtio_net" in res.output
    # the PCI function the guest found is ours: modern virtio-net
    assert "0x1af4\n0x1041\n" in res.output
    assert re.search(r"^1$", res.output, re.M), "no carrier"
    assert "3 packets received" in res.output
    assert "Speed: 10000Mb/s" in res.output and "Duplex: Full" in res.output   # SPEED_DUPLEX
    assert "version_1" in res.guest_features
    # ping requests left through the device, replies came back through it
    assert res.counters["tx_packets"] >= 3
    assert res.counters["rx_packets"] >= 3
    assert res.counters["chain_errors"] == 0 and res.counters["dma_errors"] == 0


def test_iperf_both_ways_and_counters_match(qemu, image):
    res = vm(iperf_seconds=2, log=lambda *_: None)
    assert res.error is None, res.error
    assert res.tx_gbps > 0 and res.rx_gbps > 0
    c = res.counters
    # What iperf3's receivers counted crossed the device, plus headers
    # (about 5% at 1448-byte segments) and the control connection.
    sent, received = res.extra["iperf_tx_bytes"], res.extra["iperf_rx_bytes"]
    assert sent <= c["tx_bytes"] <= sent * 1.10 + 1_000_000
    assert received <= c["rx_bytes"] <= received * 1.10 + 1_000_000
    assert c["rx_drops_too_big"] == 0 and c["tx_drops_malformed"] == 0
    assert c["tx_drops_backend"] == 0


def test_features_flag_changes_what_the_guest_negotiates(qemu, image):
    res = vm(cmd="ping -c 2 -W 5 10.213.0.1", features="-event_idx,-mrg_rxbuf,-indirect_desc",
             log=lambda *_: None)
    assert res.rc == 0, res.output + str(res.error)
    for gone in ("event_idx", "mrg_rxbuf", "indirect_desc"):
        assert gone not in res.guest_features
    assert "version_1" in res.guest_features
    assert "2 packets received" in res.output
