"""The packed ring as a real Linux guest (6.12) drives it, against the
split ring in the same suite: the guest negotiates VIRTIO_F_RING_PACKED
when it is offered (bit 34 of its /sys/bus/virtio/devices/*/features),
iperf3 moves traffic both ways, and 256 MiB of random bytes cross each way
with SHA-256 equal.  The guest streams what it sends (no 256 MiB file in
its RAM): a fifo hands the same bytes to sha256sum and to nc."""
from __future__ import annotations

import hashlib
import json
import os
import re

import pytest

from vnic.lab.iperf import gbps

from .support import HOST4, IPERF_PORT, Link, section

pytestmark = pytest.mark.e2e

MIB = 256
DOWN_PORT, UP_PORT = 7011, 7012
F_RING_PACKED = 34

GUEST = ("echo @@FEATURES@@; cut -c$((F + 1)) /sys/bus/virtio/devices/*/features; echo @@IPERF@@; "
         f"iperf3 -c {HOST4} -p {IPERF_PORT} -t 2 -J >/tmp/up.json; echo up_rc=$?; "
         f"iperf3 -c {HOST4} -p {IPERF_PORT} -t 2 -R -J >/tmp/down.json; echo down_rc=$?; "
         "echo @@IPERF_UP@@; cat /tmp/up.json; echo @@IPERF_DOWN@@; cat /tmp/down.json; rm /tmp/*.json; "
         f"echo @@DOWN@@; nc {HOST4} {DOWN_PORT} </dev/null | sha256sum; "
         f"echo @@UP@@; mkfifo /tmp/f; sha256sum </tmp/f >/tmp/sha & "
         f"head -c {MIB << 20} /dev/urandom | tee /tmp/f | nc {HOST4} {UP_PORT} >/dev/null; "
         "echo rc=$?; wait; cat /tmp/sha; echo @@END@@").replace("$((F + 1))", str(F_RING_PACKED + 1))


def sha_in(text: str) -> str:
    m = re.search(r"^([0-9a-f]{64})  -$", text, re.M)
    assert m, f"no sha256sum in:\n{text}"
    return m.group(1)


@pytest.mark.parametrize("features,bit", [pytest.param("", "1", id="packed"),
                                          pytest.param("-packed", "0", id="split")])
def test_guest_ring_layout_carries_iperf_and_256_mib_both_ways(qemu, image, features, bit):
    data = os.urandom(MIB << 20)
    with Link(features=features) as link:
        link.iperf_server()
        down = link.tcp_once(HOST4, DOWN_PORT, send=data)
        up = link.tcp_once(HOST4, UP_PORT)
        res = link.run(qemu, image, GUEST, timeout=300)
        assert up.wait(20) and down.wait(20), "a host-side transfer did not finish"
        c = link.dev.stats()
    out = res.output
    assert section(out, "FEATURES").split() == [bit], out
    up_gbps, down_gbps = (gbps(json.loads(section(out, name))) for name in ("IPERF_UP", "IPERF_DOWN"))
    assert "up_rc=0" in out and "down_rc=0" in out and up_gbps > 0 and down_gbps > 0
    assert down.error is None and up.error is None, (down.error, up.error)
    assert sha_in(section(out, "DOWN")) == hashlib.sha256(data).hexdigest()
    text_up = section(out, "UP")
    assert "rc=0" in text_up and up.size == MIB << 20
    assert up.sha256 == sha_in(text_up)
    assert c["chain_errors"] == 0 and c["dma_errors"] == 0
    print(f"\n{'packed' if bit == '1' else 'split'} ring: iperf3 guest->host {up_gbps:.2f} Gbit/s, "
          f"host->guest {down_gbps:.2f} Gbit/s; {MIB} MiB each way, sha256 equal; "
          f"device tx {c['tx_packets']} rx {c['rx_packets']} packets")
