"""Capture with the real guest: a wire capture of iperf3 both ways holds
every frame the device sent (segmented, checksums valid) and read, as its
counters say; a guest capture holds the guest's TSO super-frames with their
headers; `vnic vm --pcap` leaves a file tshark reads."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.support import pcapng
from vnic.telemetry.capture import CaptureSpec

from .support import HOST4, Link

pytestmark = pytest.mark.e2e

GUEST = f"""
iperf3 -c {HOST4} -n 4M >/dev/null && iperf3 -c {HOST4} -n 4M -R >/dev/null || exit 2
echo PHASE-GUEST
sleep 4
iperf3 -c {HOST4} -n 4M >/dev/null || exit 2
echo PHASE-DONE
sleep 4
"""


def wait_console(g, marker: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while marker not in g.console():
        assert g.proc.poll() is None and time.monotonic() < deadline, g.console()[-3000:]
        time.sleep(0.05)


def frames_read(stats: dict[str, int]) -> int:
    """Frames the device took from the backend: delivered (a coalesced
    super-frame counts its segments), refused or dropped."""
    return (stats["rx_packets"] + stats["rx_coalesced_segments"] - stats["rx_coalesced_packets"] +
            stats["rx_filtered_mac"] + stats["rx_filtered_vlan"] + stats["rx_drops_offload"] +
            stats["rx_drops_too_big"] + stats["rx_drops_inactive"])


def test_wire_and_guest_captures_of_a_real_guest(qemu, image):
    with Link() as link:
        link.iperf_server()
        wire, guest = link.tmp / "wire.pcapng", link.tmp / "guest.pcapng"
        link.dev.capture.start(CaptureSpec(str(wire)))          # from before the guest boots
        g = link.guest(qemu, image, GUEST, timeout=150)
        wait_console(g, "PHASE-GUEST")
        wire_status = link.dev.capture.stop()
        counted = link.dev.stats()
        link.dev.capture.start(CaptureSpec(str(guest), what="guest", direction="tx", snaplen=128))
        wait_console(g, "PHASE-DONE")
        guest_status = link.dev.capture.stop()
        res = g.wait()
        on_wire, handed = pcapng.read(wire), pcapng.read(guest)     # before link.tmp goes
    assert res.rc == 0, res.output

    inbound, outbound = pcapng.directions(on_wire)
    assert len(on_wire) == wire_status["packets_written"] == wire_status["captured"]
    assert wire_status["ring_drops"] == 0
    # quiet while the capture stopped (the guest sleeps): counters and file agree
    assert outbound == counted["tx_packets"] and inbound == frames_read(counted)
    sent = [p for p in on_wire if p.direction == pcapng.OUTBOUND]
    assert max(p.length for p in sent) <= 1514                 # the device segmented
    tcp = [p for p in sent if len(p.checksums) == 2]
    assert len(tcp) > 1000 and all(p.checksums == ("1", "1") for p in tcp)
    assert any("gso_type=tcpv4" in p.comment for p in on_wire if p.direction == pcapng.INBOUND)

    assert handed and pcapng.directions(handed) == (0, len(handed))
    supers = [p for p in handed if "gso_type=tcpv4" in p.comment]
    assert supers and max(p.length for p in supers) > 1514 and all(p.captured <= 128 for p in handed)
    assert guest_status["packets_written"] == len(handed)


def test_vm_pcap_leaves_a_file_tshark_reads(tmp_path):
    out = tmp_path / "vm.pcapng"
    r = subprocess.run([sys.executable, "-m", "vnic.cli", "vm", "--json", "--pcap", str(out),
                        "--cmd", f"ping -c 3 -W 2 {HOST4}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads(r.stdout)
    packets = pcapng.read(out)
    assert result["capture"]["packets_written"] == len(packets) > 0
    icmp = [p for p in packets if p.data[12:14] == b"\x08\x00" and p.data[23] == 1]   # IPv4, ICMP
    requests = [p for p in icmp if p.data[34] == 8]
    replies = [p for p in icmp if p.data[34] == 0]
    assert len(requests) >= 3 and len(replies) >= 3
    assert {p.direction for p in requests} == {pcapng.OUTBOUND}
    assert {p.direction for p in replies} == {pcapng.INBOUND}
