"""The device's receive path as a real Linux guest (6.12) uses it.

A vnic NIC on a TAP inside a private namespace (tests/e2e/support.py); the
host side runs an iperf3 server or plain TCP sockets.  What the host sends
reaches the device as the TAP delivers it: super-frames while the TAP's
offloads follow the guest's features, wire-size frames with the host side's
segmentation turned off (tap_offloads=False), which the device coalesces.
A host-local sender leaves TCP checksums partial (NEEDS_CSUM), so the
device's own verification (DATA_VALID, rx_csum_valid) runs only when the
host side's transmit checksumming is off too (tap_csum=False): frames then
arrive checksummed, as from a real network.

Not asserted, only printed: the host's retransmits.  They equal the TAP's
tx_dropped: the TAP's queue (1000 frames) overflows while the device waits
for the guest to post buffers (rx_no_buffer), mostly with wire-size frames.

Each run reads the guest's own receive error counters (/proc/net/snmp,
IpExt, eth0 rx_dropped/rx_errors) before and after the traffic, in the same
boot, and the device's counters say which receive path the frames took.
Data integrity: random files both ways, compared by SHA-256.
"""
from __future__ import annotations

import hashlib
import json
import os
import re

import pytest

from vnic.lab.iperf import gbps, received_bytes
from vnic.lab.vm import guest_feature_names

from .support import GUEST4, HOST4, IPERF_PORT, Link, section

pytestmark = pytest.mark.e2e

# ---- the guest's own counters --------------------------------------------------------

SNAPSHOT = ("cat /proc/net/snmp; grep '^IpExt:' /proc/net/netstat; "
            "echo 'Dev: rx_dropped rx_errors'; "
            "echo \"Dev: $(cat /sys/class/net/eth0/statistics/rx_dropped) "
            "$(cat /sys/class/net/eth0/statistics/rx_errors)\"")

# Receive-side error and drop counters, as present in this kernel's tables.
RX_ERROR = re.compile(r"^(Ip|Icmp|Tcp|Udp|IpExt)\.In\w*(Err|Csum|Discard|Truncated)"
                      r"|^Udp\.RcvbufErrors$|^Dev\.")


def guest_counters(text: str) -> dict[str, int]:
    """'Proto: names' / 'Proto: values' line pairs -> {'Proto.Name': value}."""
    out, names = {}, {}
    for line in text.splitlines():
        proto, sep, rest = line.partition(":")
        if not sep:
            continue
        if proto in names:
            out.update({f"{proto}.{k}": int(v) for k, v in zip(names.pop(proto), rest.split(), strict=False)})
        else:
            names[proto] = rest.split()
    return out


def rx_error_deltas(output: str) -> dict[str, int]:
    """Every receive error/drop counter of the guest: after - before."""
    before = guest_counters(section(output, "BEFORE"))
    after = guest_counters(section(output, "AFTER"))
    keys = [k for k in after if RX_ERROR.search(k)]
    # the tables are there and were parsed: a typo must not pass as "no errors"
    for k in ("Tcp.InCsumErrors", "Tcp.InErrs", "Udp.InCsumErrors", "Ip.InHdrErrors",
              "IpExt.InCsumErrors", "Dev.rx_dropped", "Dev.rx_errors"):
        assert k in keys, f"{k} missing from the guest's counters: {sorted(after)}"
    return {k: after[k] - before[k] for k in keys}


def assert_device_clean(c: dict[str, int]) -> None:
    bad = {k: c[k] for k in ("rx_csum_bad", "rx_drops_too_big", "rx_drops_backend",
                             "rx_drops_offload", "chain_errors", "dma_errors") if c[k]}
    assert not bad, f"device receive errors: {bad}"


# ---- 1. host to guest iperf3 under each receive feature set ----------------------------

def check_default(c, feats):
    assert {"mrg_rxbuf", "guest_csum", "guest_tso4", "guest_tso6"} <= set(feats)
    assert c["rx_gso_packets"] > 0, "no super-frame from the TAP reached the guest"


def check_no_mrg_rxbuf(c, feats):
    assert "mrg_rxbuf" not in feats and "guest_tso4" in feats
    # big-packets layout: every packet, super-frames too, fits one chain
    assert c["rx_buffers_used"] == c["rx_packets"]
    assert c["rx_drops_too_big"] == 0
    assert c["rx_gso_packets"] > 0
    assert c["rx_coalesced_packets"] == 0      # coalescing needs MRG_RXBUF


def check_no_guest_csum(c, feats):
    assert not {"guest_csum", "guest_tso4", "guest_tso6", "guest_ecn", "guest_ufo",
                "guest_uso4", "guest_uso6"} & set(feats)
    assert c["rx_gso_packets"] == 0
    assert c["rx_csum_valid"] == 0             # no DATA_VALID for a guest without GUEST_CSUM
    assert c["rx_coalesced_packets"] == 0


def check_no_guest_tso(c, feats):
    assert "guest_csum" in feats and not {"guest_tso4", "guest_tso6"} & set(feats)
    assert c["rx_gso_packets"] == 0            # the TAP segments TCP itself now
    assert c["rx_coalesced_packets"] == 0      # nothing to coalesce into


def check_coalesced(c, feats):
    assert {"mrg_rxbuf", "guest_csum", "guest_tso4"} <= set(feats)
    assert c["rx_gso_packets"] == 0, "the TAP still sent super-frames"
    assert c["rx_coalesced_packets"] > 0
    assert c["rx_coalesced_segments"] > c["rx_coalesced_packets"]


def check_coalesced_verified(c, feats):
    check_coalesced(c, feats)
    # frames came fully checksummed: the device verified every one it merged
    assert c["rx_csum_valid"] >= c["rx_coalesced_segments"]


# (features, TAP offloads on, TAP transmit checksumming on, check)
VARIANTS = [
    pytest.param("", True, True, check_default, id="default"),
    pytest.param("-mrg_rxbuf", True, True, check_no_mrg_rxbuf, id="no-mrg-rxbuf"),
    pytest.param("-guest_csum", True, True, check_no_guest_csum, id="no-guest-csum"),
    pytest.param("-guest_tso4,-guest_tso6", True, True, check_no_guest_tso, id="no-guest-tso"),
    pytest.param("", False, True, check_coalesced, id="tap-offloads-off"),
    pytest.param("", False, False, check_coalesced_verified, id="tap-offloads-and-csum-off"),
]

IPERF_RX = (f"echo @@BEFORE@@; {SNAPSHOT}; "
            f"iperf3 -c {HOST4} -p {IPERF_PORT} -t 1 -R -J >/tmp/iperf.json 2>&1; r=$?; "
            f"echo @@AFTER@@; {SNAPSHOT}; "
            "echo @@IPERF@@; cat /tmp/iperf.json; echo @@END@@; exit $r")


def host_side(tap_offloads: bool, tap_csum: bool) -> str:
    return ("" if tap_offloads else ", TAP tso/gso off") + ("" if tap_csum else ", TAP tx csum off")


def assert_tap_changed(link: Link) -> None:
    """The host side's offloads were turned off as asked (see support.Link)."""
    r = link.tap_offloads_off
    assert r is not None and r.returncode == 0, r and r.stderr
    f = link.tap_features_set
    assert f["tcp-segmentation-offload"] == "off" and f["generic-segmentation-offload"] == "off"
    assert f["tx-checksumming"] == ("on" if link.tap_csum else "off")


@pytest.mark.parametrize("features,tap_offloads,tap_csum,check", VARIANTS)
def test_host_to_guest_iperf(qemu, image, features, tap_offloads, tap_csum, check):
    with Link(features=features, tap_offloads=tap_offloads, tap_csum=tap_csum) as link:
        link.iperf_server()
        res = link.run(qemu, image, IPERF_RX, timeout=120)
        c = link.dev.stats()
        tap_dropped = link.tap_counter("tx_dropped")
        if not (tap_offloads and tap_csum):
            assert_tap_changed(link)
    report = json.loads(section(res.output, "IPERF"))
    rate, got = gbps(report), received_bytes(report)
    deltas = rx_error_deltas(res.output)
    feats = guest_feature_names(res.ready)
    print(f"\n{features or 'default'}{host_side(tap_offloads, tap_csum)}: "
          f"host->guest {rate:.2f} Gbit/s, {got} B, host retransmits "
          f"{report['end'].get('sum_sent', {}).get('retransmits')}, TAP queue drops "
          f"{tap_dropped}; device rx {c['rx_packets']} packets in {c['rx_buffers_used']} "
          f"buffers, gso {c['rx_gso_packets']}, csum valid {c['rx_csum_valid']} completed "
          f"{c['rx_csum_completed']} bad {c['rx_csum_bad']}, coalesced "
          f"{c['rx_coalesced_packets']} <- {c['rx_coalesced_segments']} segments, "
          f"no-buffer waits {c['rx_no_buffer']}; guest error counters all "
          f"{'0' if not any(deltas.values()) else deltas} ({len(deltas)} checked)")
    assert rate > 0 and got > 100_000
    assert got <= c["rx_bytes"], "the guest received more than the device delivered"
    assert not any(deltas.values()), f"guest counted receive errors/drops: {deltas}"
    assert_device_clean(c)
    assert not link.dev.net.failed()
    check(c, feats)


# ---- 2. data integrity both ways -------------------------------------------------------

SIZE_MB = 24
DOWN_PORT, UP_PORT = 7001, 7002

TRANSFER = (f"nc {HOST4} {DOWN_PORT} </dev/null >/tmp/down; r=$?; echo @@DOWN@@; "
            "echo rc=$r; sha256sum /tmp/down; wc -c </tmp/down; rm /tmp/down; "
            f"dd if=/dev/urandom of=/tmp/up bs=1M count={SIZE_MB} 2>/dev/null; "
            "echo @@UP@@; sha256sum /tmp/up; wc -c </tmp/up; "
            f"nc {HOST4} {UP_PORT} </tmp/up >/dev/null; echo rc=$?; echo @@END@@")


def sha_and_size(text: str) -> tuple[str, int]:
    m = re.search(r"^([0-9a-f]{64})  \S+\n\s*(\d+)$", text, re.M)
    assert m, f"no sha256sum/size in:\n{text}"
    return m.group(1), int(m.group(2))


@pytest.mark.parametrize("tap_offloads,tap_csum", [
    pytest.param(True, True, id="default"),
    pytest.param(False, True, id="tap-offloads-off"),
    pytest.param(False, False, id="tap-offloads-and-csum-off"),
])
def test_random_file_both_ways_arrives_intact(qemu, image, tap_offloads, tap_csum):
    data = os.urandom(SIZE_MB << 20)
    with Link(tap_offloads=tap_offloads, tap_csum=tap_csum) as link:
        down = link.tcp_once(HOST4, DOWN_PORT, send=data)
        up = link.tcp_once(HOST4, UP_PORT)
        res = link.run(qemu, image, TRANSFER, timeout=150)
        assert up.wait(10) and down.wait(10), "a host-side transfer did not finish"
        c = link.dev.stats()
        if not (tap_offloads and tap_csum):
            assert_tap_changed(link)
    assert down.error is None and up.error is None, (down.error, up.error)
    text_down, text_up = section(res.output, "DOWN"), section(res.output, "UP")
    assert "rc=0" in text_down and "rc=0" in text_up, res.output
    got_sha, got_size = sha_and_size(text_down)
    sent_sha, sent_size = sha_and_size(text_up)
    print(f"\ndefault features{host_side(tap_offloads, tap_csum)}: host->guest {got_size} B "
          f"sha256 {'match' if got_sha == hashlib.sha256(data).hexdigest() else 'MISMATCH'}; "
          f"guest->host {up.size} B of {sent_size} sha256 "
          f"{'match' if up.sha256 == sent_sha else 'MISMATCH'}; device rx gso "
          f"{c['rx_gso_packets']}, coalesced {c['rx_coalesced_packets']} <- "
          f"{c['rx_coalesced_segments']}, csum valid {c['rx_csum_valid']}; tx tso "
          f"{c['tx_tso_packets']} -> {c['tx_tso_segments']} segments")
    # host to guest
    assert got_size == len(data)
    assert got_sha == hashlib.sha256(data).hexdigest()
    # guest to host
    assert sent_size == SIZE_MB << 20
    assert up.peer == GUEST4
    assert (up.size, up.sha256) == (sent_size, sent_sha)
    assert_device_clean(c)
    # the bytes took the path under test
    if tap_offloads:
        assert c["rx_gso_packets"] > 0
    else:
        assert c["rx_gso_packets"] == 0
        assert c["rx_coalesced_segments"] > c["rx_coalesced_packets"] > 0
    if not tap_csum:
        assert c["rx_csum_valid"] >= c["rx_coalesced_segments"]
    assert c["tx_tso_packets"] > 0
