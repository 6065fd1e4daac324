"""The device's transmit offloads as a real Linux guest (6.12) uses them.

A vnic NIC on a TAP inside a private namespace; on the host side of the TAP:
dumpcap capturing what the device put on the wire (only frames with the
guest's source MAC), UDP sockets and an iperf3 server inside the namespace.
tshark re-verifies every IP/TCP/UDP checksum of the capture and scapy
parses fragments; the device counters say which offload path each frame
took.  Guest traffic comes from iperf3 and from vnic-send
(guest_images/tools/vnic-send.c), whose payload byte i of buffer seq is
(i*7 + seq) & 0xff.

What the 6.12 guest does (measured, and asserted below):
- TSO4/TSO6 and checksum offload are on by default; with -tso4,-tso6 the
  driver shows TSO off [fixed] and sends no TSO frames.
- tx-udp-segmentation (USO) is offered and negotiated but the driver leaves
  it off until `ethtool -K eth0 tx-udp-segmentation on`: virtio_net puts
  NETIF_F_GSO_UDP_L4 only in hw_features.
- UFO: Linux dropped UFO hardware offload in 4.14, so a GSO_UDP frame from
  a packet socket is fragmented in software by the guest before virtio_net:
  the device sees ordinary IP fragments (tx_ufo_packets stays 0).  The
  device's own UFO path is covered by tests/engine.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from vnic.lab.iperf import received_bytes
from vnic.lab.netns import NetNS

from .support import GUEST4, GUEST6, HOST4, HOST6, IPERF_PORT, MTU, TAP, Link, section

pytestmark = pytest.mark.e2e

NO_TSHARK = not all(os.path.exists(f"/usr/bin/{t}") for t in ("tshark", "dumpcap"))
needs_tshark = pytest.mark.skipif(NO_TSHARK, reason="tshark/dumpcap missing: run scripts/setup.sh")


def pattern(n: int, seq: int = 0) -> bytes:
    """vnic-send's payload: byte i of buffer seq is (i*7 + seq) & 0xff."""
    return bytes((i * 7 + seq) & 0xFF for i in range(n))


# ---- the host side of the link: a capture (the rest is in support.py) ----------

class Capture:
    """dumpcap on the TAP inside the namespace: frames the device sent
    (source MAC = the guest's), full snaplen, at most `count` frames."""

    def __init__(self, ns: NetNS, path: Path, src_mac: str, count: int, on_stop=None):
        self.ns, self.path, self.stderr = ns, path, ""
        self.stats_at_end: dict | None = None
        self.proc = ns.popen(["dumpcap", "-q", "-i", TAP, "-P", "-s", "262144", "-B", "64",
                              "-f", f"ether src {src_mac}", "-c", str(count),
                              "-a", "duration:150", "-w", str(path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        ready = threading.Event()

        def pump() -> None:
            try:
                for line in self.proc.stderr:
                    lines.append(line)
                    if "Capturing on" in line:
                        ready.set()
            except (OSError, ValueError):  # the pipe closed under us
                pass
            # dumpcap stopped (count reached or told to): what had the device done by then?
            if on_stop:
                self.stats_at_end = on_stop()
            ready.set()

        self._lines = lines
        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        if not ready.wait(15) or self.proc.poll() is not None:
            raise RuntimeError(f"dumpcap did not start: {''.join(lines)}")

    def stop(self) -> Path:
        """Stop dumpcap (if the count did not) and return the capture file.
        Idempotent; also the cleanup path."""
        for sig, wait in ((signal.SIGINT, 10), (signal.SIGKILL, 5)):
            if self.proc.poll() is not None:
                break
            if sig == signal.SIGINT:
                time.sleep(0.3)           # frames still in flight
            try:
                os.killpg(self.proc.pid, sig)    # on SIGINT dumpcap flushes and exits
                self.proc.wait(timeout=wait)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self._pump.join(timeout=5)        # it has read dumpcap's final statistics
        self.ns.stop(self.proc)           # forget it, close its pipe
        self.stderr = "".join(self._lines)
        return self.path

    @property
    def dropped(self) -> int | None:
        m = re.search(r"received/dropped on interface '[^']*': \d+/(\d+)", self.stderr)
        return int(m.group(1)) if m else None


def start_capture(link: Link, path: Path, count: int) -> Capture:
    """Capture into `path` (pytest's tmp_path keeps it for a post-mortem)."""
    cap = Capture(link.ns, path, link.dev.mac, count, on_stop=link.dev.stats)
    link.defer(cap.stop)
    return cap


# ---- checking captures -------------------------------------------------------------

TSHARK_FIELDS = ["frame.number", "frame.len", "eth.type", "ip.proto", "ip.checksum.status",
                 "tcp.checksum.status", "udp.checksum.status", "tcp.len", "tcp.checksum",
                 "tcp.checksum_calculated"]


def tshark_frames(pcap: Path) -> list[dict[str, list[str]]]:
    """Per frame, the TSHARK_FIELDS values, with IP/TCP/UDP checksum checking
    on (status 1 good, 0 bad; tshark reassembles IP fragments and checks the
    UDP checksum over the whole datagram)."""
    r = subprocess.run(["tshark", "-r", str(pcap), "-n",
                        "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
                        "-o", "udp.check_checksum:TRUE", "-T", "fields", "-E", "occurrence=a",
                        "-E", "aggregator=;", *(arg for f in TSHARK_FIELDS for arg in ("-e", f))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = []
    for line in r.stdout.splitlines():
        cols = line.split("\t")
        rows.append({f: [v for v in c.split(";") if v] for f, c in zip(TSHARK_FIELDS, cols, strict=False)})
    return rows


def checksum_census(rows) -> dict[str, dict[str, int]]:
    """{ip|tcp|udp: {good, bad}} over all frames (inner headers of ICMP errors
    included)."""
    census = {}
    for proto in ("ip", "tcp", "udp"):
        values = [v for r in rows for v in r[f"{proto}.checksum.status"]]
        census[proto] = {"good": values.count("1"), "bad": values.count("0")}
    return census


def assert_no_bad_checksums(rows, need_good=("ip",)) -> dict:
    census = checksum_census(rows)
    bad = [r["frame.number"][0] for r in rows
           if "0" in r["ip.checksum.status"] + r["tcp.checksum.status"] + r["udp.checksum.status"]]
    assert not bad, f"frames with a bad checksum: {bad[:20]} ({census})"
    for proto in need_good:
        assert census[proto]["good"] > 0, f"tshark verified no {proto} checksum: {census}"
    return census


def assert_wire_sized(rows) -> int:
    """No frame larger than MTU + Ethernet header (+4 for a VLAN tag); returns the largest."""
    sizes = [int(r["frame.len"][0]) for r in rows]
    vlan = {r["frame.number"][0] for r in rows if "0x8100" in r["eth.type"]}
    too_big = [(r["frame.number"][0], int(r["frame.len"][0])) for r in rows
               if int(r["frame.len"][0]) > MTU + 14 + (4 if r["frame.number"][0] in vlan else 0)]
    assert not too_big, f"frames above MTU on the wire: {too_big[:20]}"
    return max(sizes)


def guest_iperf(seconds: int) -> str:
    return (f"iperf3 -c {HOST4} -p {IPERF_PORT} -t {seconds} -J >/tmp/iperf.json 2>&1; r=$?; "
            "echo @@IPERF@@; cat /tmp/iperf.json; echo @@END@@; [ $r = 0 ]")


def iperf_bytes(output: str) -> int:
    return received_bytes(json.loads(section(output, "IPERF")))


# ---- default features: one boot, three tests ---------------------------------------

PLAIN_UDP = [(1000, 3), (1472, 1), (1, 1)]      # (bytes, count): none needs fragmenting
UDP_PORT = 9002


@pytest.fixture(scope="module")
def default_run(qemu, image, tmp_path_factory):
    """Default features: ethtool -k, plain UDP datagrams, then iperf3 for 2 s,
    all captured.  Counters are also read once the UDP datagrams have all
    arrived (the guest then sleeps 1 s before iperf3 starts)."""
    if NO_TSHARK:
        pytest.skip("tshark/dumpcap missing: run scripts/setup.sh")
    sends = " && ".join(f"vnic-send udp {HOST4} {UDP_PORT} {n} {c}" for n, c in PLAIN_UDP)
    cmd = (f"echo @@ETHTOOL@@; ethtool -k eth0; echo @@UDP@@; {sends}; sleep 1; "
           + guest_iperf(2))
    n_udp = sum(c for _, c in PLAIN_UDP)
    with Link(tap_gro_us=0) as link:           # the capture must see wire frames, not GRO's
        link.iperf_server()
        sink = link.udp_sink(HOST4, UDP_PORT)
        cap = start_capture(link, tmp_path_factory.mktemp("default") / "tx.pcap", count=8000)
        g = link.guest(qemu, image, cmd)
        udp_arrived = sink.wait_for(n_udp, timeout=120)
        after_udp = link.dev.stats()
        res = g.wait()
        assert res.rc == 0 and res.error is None, f"{res.error}\n{res.output}"
        pcap = cap.stop()
        out = {"res": res, "after_udp": after_udp, "udp_arrived": udp_arrived,
               "datagrams": list(sink.datagrams), "counters": link.dev.stats(),
               "at_capture_end": cap.stats_at_end, "dropped": cap.dropped,
               "rows": tshark_frames(pcap)}
    return out


def test_ethtool_shows_default_offloads_and_guest_uses_tso(default_run):
    text = section(default_run["res"].output, "ETHTOOL")
    for line in ("tx-checksumming: on", "tx-checksum-ip-generic: on",
                 "tcp-segmentation-offload: on", "tx-tcp-segmentation: on",
                 "tx-tcp6-segmentation: on", "tx-tcp-ecn-segmentation: on"):
        assert re.search(rf"^\s*{line}$", text, re.M), f"{line!r} not in:\n{text}"
    # USO is negotiated and available, but virtio_net leaves it off until asked
    # (ethtool -K eth0 tx-udp-segmentation on, see test_uso_...).
    assert re.search(r"^tx-udp-segmentation: off$", text, re.M), text
    c = default_run["counters"]
    print(f"\ndefault features, iperf3 2 s: {iperf_bytes(default_run['res'].output)} B; "
          f"tso {c['tx_tso_packets']} super-frames -> {c['tx_tso_segments']} segments, "
          f"csum {c['tx_csum_offloaded']}")
    assert c["tx_tso_packets"] > 0
    assert c["tx_tso_segments"] >= 2 * c["tx_tso_packets"]


def test_tso_frames_on_the_wire_are_mtu_sized_with_good_checksums(default_run):
    rows, c = default_run["rows"], default_run["counters"]
    census = assert_no_bad_checksums(rows, need_good=("ip", "tcp"))
    largest = assert_wire_sized(rows)
    full = sum(1 for r in rows if r["tcp.len"] and int(r["tcp.len"][0]) == MTU - 40 - 12)
    at_end = default_run["at_capture_end"]
    print(f"\ncaptured {len(rows)} guest frames (dumpcap dropped {default_run['dropped']}), "
          f"largest {largest} B, {full} full-size TCP segments; checksums {census}; "
          f"device tso segments at capture end {at_end and at_end['tx_tso_segments']}, "
          f"final {c['tx_tso_segments']}")
    assert largest == MTU + 14, "no full-size frame: was there any bulk TCP in the capture?"
    assert full > 100
    # The capture ran from before boot until `count` frames: the device had
    # segmented TSO frames by then, so segments it made are among those checked.
    assert at_end is not None and at_end["tx_tso_segments"] > 0
    assert c["tx_drops_headers"] == c["tx_drops_gso_size"] == c["tx_drops_gso_type"] == 0
    assert c["tx_drops_unnegotiated"] == c["tx_drops_backend"] == 0


def test_checksum_offload_udp_and_tcp(default_run):
    d = default_run
    assert d["udp_arrived"], f"only {len(d['datagrams'])} UDP datagrams arrived"
    expect = [pattern(n, seq) for n, count in PLAIN_UDP for seq in range(count)]
    got = [data for data, _src in d["datagrams"]]
    assert got == expect
    assert {src for _, src in d["datagrams"]} == {GUEST4}
    # Until the UDP datagrams had arrived the guest sent nothing else that
    # asks for a checksum (ARP, IPv6 ND/MLD carry software checksums).
    udp_csum = d["after_udp"]["tx_csum_offloaded"]
    tcp_csum = d["counters"]["tx_csum_offloaded"] - udp_csum
    print(f"\ncsum offloaded: {udp_csum} during the UDP phase ({len(expect)} datagrams), "
          f"{tcp_csum} during iperf3 (TCP segments that were not TSO)")
    assert udp_csum >= len(expect)
    assert tcp_csum > 0
    assert d["after_udp"]["tx_tso_packets"] == 0
    rows = d["rows"]
    udp_rows = [r for r in rows if r["udp.checksum.status"] and r["ip.proto"] == ["17"]]
    assert sum(r["udp.checksum.status"] == ["1"] for r in udp_rows) >= len(expect)
    assert_no_bad_checksums(rows, need_good=("ip", "tcp", "udp"))


# ---- TSO off -------------------------------------------------------------------------

def test_tso_off_guest_sends_no_tso_frames(qemu, image):
    with Link(features="-tso4,-tso6") as link:
        link.iperf_server()
        res = link.run(qemu, image, "echo @@ETHTOOL@@; ethtool -k eth0; " + guest_iperf(1))
        c = link.dev.stats()
    text = section(res.output, "ETHTOOL")
    assert re.search(r"^tcp-segmentation-offload: off$", text, re.M), text
    assert re.search(r"^\s*tx-tcp-segmentation: off \[fixed\]$", text, re.M), text
    assert re.search(r"^\s*tx-tcp6-segmentation: off \[fixed\]$", text, re.M), text
    assert re.search(r"^tx-checksumming: on$", text, re.M), text
    sent = iperf_bytes(res.output)
    print(f"\nTSO off: iperf3 1 s moved {sent} B in {c['tx_packets']} frames, "
          f"csum offloaded {c['tx_csum_offloaded']}, tso {c['tx_tso_packets']}")
    assert sent > 100_000
    assert c["tx_tso_packets"] == 0 and c["tx_tso_segments"] == 0
    # every data segment still had its checksum completed by the device
    assert c["tx_csum_offloaded"] >= sent // 1448


# ---- USO ---------------------------------------------------------------------------

USO_GSO = 1000
USO_V4 = (45_321, 2)          # bytes per super-buffer, buffers
USO_V6 = (30_007, 1)
USO_PORT = 9000


def check_uso_datagrams(datagrams, total: int, count: int, src: str) -> None:
    nseg = math.ceil(total / USO_GSO)
    assert len(datagrams) == count * nseg, [len(d) for d, _ in datagrams]
    for seq in range(count):
        mine = datagrams[seq * nseg:(seq + 1) * nseg]
        sizes = [len(d) for d, _ in mine]
        assert sizes == [USO_GSO] * (nseg - 1) + [total - USO_GSO * (nseg - 1)], sizes
        expect = pattern(total, seq)
        for k, (d, s) in enumerate(mine):
            assert s == src
            assert d == expect[k * USO_GSO:(k + 1) * USO_GSO], f"buffer {seq} segment {k}"
        assert b"".join(d for d, _ in mine) == expect


@needs_tshark
def test_uso_segments_udp_super_buffers(qemu, image, tmp_path):
    (t4, n4), (t6, n6) = USO_V4, USO_V6
    cmd = ("ethtool -K eth0 tx-udp-segmentation on && echo @@ETHTOOL@@ && ethtool -k eth0 && "
           f"ip -6 addr add {GUEST6}/64 dev eth0 nodad && echo @@SEND@@ && "
           f"vnic-send uso {HOST4} {USO_PORT} {t4} {USO_GSO} {n4} && "
           f"vnic-send uso {HOST6} {USO_PORT} {t6} {USO_GSO} {n6}")
    with Link(tap_gro_us=0) as link:
        sink4, sink6 = link.udp_sink(HOST4, USO_PORT), link.udp_sink(HOST6, USO_PORT)
        cap = start_capture(link, tmp_path / "tx.pcap", count=1000)
        res = link.run(qemu, image, cmd)
        nseg = n4 * math.ceil(t4 / USO_GSO) + n6 * math.ceil(t6 / USO_GSO)
        sink4.wait_for(n4 * math.ceil(t4 / USO_GSO), 10)
        sink6.wait_for(n6 * math.ceil(t6 / USO_GSO), 10)
        rows = tshark_frames(cap.stop())
        c = link.dev.stats()
        got4, got6 = list(sink4.datagrams), list(sink6.datagrams)
    assert re.search(r"^tx-udp-segmentation: on$", section(res.output, "ETHTOOL"), re.M)
    print(f"\nUSO: {n4}x{t4} B over IPv4 + {n6}x{t6} B over IPv6, gso_size {USO_GSO}: "
          f"received {len(got4)} + {len(got6)} datagrams; device uso {c['tx_uso_packets']} "
          f"super-frames -> {c['tx_uso_segments']} segments, csum offloaded "
          f"{c['tx_csum_offloaded']}")
    check_uso_datagrams(got4, t4, n4, GUEST4)
    check_uso_datagrams(got6, t6, n6, GUEST6)
    # each super-buffer crossed the device whole and was segmented there
    assert c["tx_uso_packets"] == n4 + n6
    assert c["tx_uso_segments"] == nseg
    udp = [r for r in rows if r["udp.checksum.status"]]
    assert len(udp) == nseg
    assert_no_bad_checksums(rows, need_good=("ip", "udp"))
    assert_wire_sized(rows)
    assert all(int(r["frame.len"][0]) <= 14 + 40 + 8 + USO_GSO for r in udp)


# ---- UFO -----------------------------------------------------------------------------

UFO_TOTAL = 8000
UFO_FRAG4, UFO_FRAG6 = 1480, 1448            # IP payload per fragment: 20 + 1480, 40 + 8 + 1448
UFO_PORT = 9001


@needs_tshark
def test_ufo_datagrams_leave_as_correct_ip_fragments(qemu, image, tmp_path):
    from scapy.all import IP, UDP, Ether, IPv6, IPv6ExtHdrFragment, rdpcap

    with Link(tap_gro_us=0) as link:
        mac = link.tap_mac
        cmd = (f"ip -6 addr add {GUEST6}/64 dev eth0 nodad && echo @@SEND@@ && "
               f"vnic-send ufo eth0 {mac} {GUEST4} {HOST4} {UFO_PORT} {UFO_TOTAL} {UFO_FRAG4} && "
               f"vnic-send ufo eth0 {mac} {GUEST6} {HOST6} {UFO_PORT} {UFO_TOTAL} {UFO_FRAG6}")
        sink4, sink6 = link.udp_sink(HOST4, UFO_PORT), link.udp_sink(HOST6, UFO_PORT)
        cap = start_capture(link, tmp_path / "tx.pcap", count=1000)
        res = link.run(qemu, image, cmd)
        sink4.wait_for(1, 10)
        sink6.wait_for(1, 10)
        pcap = cap.stop()
        c = link.dev.stats()
        got4, got6 = list(sink4.datagrams), list(sink6.datagrams)
    m = re.search(r"ip id (\d+)", section(res.output, "SEND"))
    assert m, res.output
    ip_id = int(m.group(1))

    # the host reassembled each datagram and got every byte
    assert [(d, s) for d, s in got4] == [(pattern(UFO_TOTAL), GUEST4)]
    assert [(d, s) for d, s in got6] == [(pattern(UFO_TOTAL), GUEST6)]

    frames = [f for f in rdpcap(str(pcap)) if Ether in f]
    dlen = 8 + UFO_TOTAL                              # UDP header + payload, what is cut up
    frags4 = [f[IP] for f in frames if IP in f and f[IP].dst == HOST4 and f[IP].proto == 17
              and (f[IP].flags.MF or f[IP].frag)]
    assert len(frags4) == math.ceil(dlen / UFO_FRAG4)
    assert {p.id for p in frags4} == {ip_id}
    assert [p.frag * 8 for p in frags4] == list(range(0, dlen, UFO_FRAG4))
    assert [bool(p.flags.MF) for p in frags4] == [True] * (len(frags4) - 1) + [False]
    assert [p.len - 20 for p in frags4] == [min(UFO_FRAG4, dlen - o)
                                           for o in range(0, dlen, UFO_FRAG4)]
    assert frags4[0][UDP].len == dlen and frags4[0][UDP].dport == UFO_PORT

    frags6 = [f[IPv6] for f in frames if IPv6 in f and IPv6ExtHdrFragment in f
              and f[IPv6].dst == HOST6]
    fh = [p[IPv6ExtHdrFragment] for p in frags6]
    assert len(frags6) == math.ceil(dlen / UFO_FRAG6)
    assert len({h.id for h in fh}) == 1
    assert [h.offset * 8 for h in fh] == list(range(0, dlen, UFO_FRAG6))
    assert [h.m for h in fh] == [1] * (len(fh) - 1) + [0]
    assert all(h.nh == 17 for h in fh)

    rows = tshark_frames(pcap)
    census = assert_no_bad_checksums(rows, need_good=("ip", "udp"))
    assert census["udp"]["good"] >= 2                 # both reassembled datagrams verified
    assert_wire_sized(rows)
    print(f"\nUFO: {UFO_TOTAL} B datagram -> {len(frags4)} IPv4 fragments (id {ip_id}) and "
          f"{len(frags6)} IPv6 fragments; device ufo packets {c['tx_ufo_packets']}, "
          f"fragments {c['tx_ufo_fragments']}; checksums {census}")
    # Linux (since 4.14) fragments GSO_UDP in software before the driver:
    # the device only ever sees finished fragments from a Linux guest.
    assert c["tx_ufo_packets"] == 0 and c["tx_ufo_fragments"] == 0
    assert c["tx_drops_gso_type"] == c["tx_drops_unnegotiated"] == c["tx_drops_headers"] == 0


# ---- host GRO on the TAP -----------------------------------------------------------

def _tso_run_counting_acks(qemu, image, tap_gro_us: int) -> tuple[dict, str, str]:
    """iperf3 guest to host for 2 s; the device's counters, the guest's output,
    and the TAP's gro_flush_timeout while the device ran."""
    with Link(tap_gro_us=tap_gro_us) as link:
        link.iperf_server()
        timeout_seen = link.ns.run(["cat", f"/sys/class/net/{TAP}/gro_flush_timeout"]).stdout.strip()
        res = link.run(qemu, image, guest_iperf(2))
        c = link.dev.stats()
        link.dev.close()
        timeout_after = link.ns.run(["cat", f"/sys/class/net/{TAP}/gro_flush_timeout"]).stdout.strip()
    assert res.rc == 0 and res.error is None, f"{res.error}\n{res.output}"
    assert iperf_bytes(res.output) > 1_000_000
    return c, timeout_seen, timeout_after


def test_host_gro_merges_the_devices_segments_so_the_guest_gets_one_ack_per_burst(qemu, image):
    # The device still cuts every super-frame into wire segments; with host
    # GRO the host's TCP sees them merged again and ACKs once per merged
    # packet, without it about every second segment (the ACKs are what the
    # device receives for the guest: rx_packets).
    on, seen_on, after_on = _tso_run_counting_acks(qemu, image, 2000)
    off, seen_off, _ = _tso_run_counting_acks(qemu, image, 0)
    per_on = on["rx_packets"] / on["tx_tso_packets"]
    per_off = off["rx_packets"] / off["tx_tso_packets"]
    print(f"\nACKs per TSO super-frame: host GRO on {per_on:.1f} "
          f"({on['tx_tso_segments'] / on['tx_tso_packets']:.0f} segments each), off {per_off:.1f}")
    assert on["tx_tso_segments"] > 10 * on["tx_tso_packets"] > 0      # the device did segment
    assert seen_on == "2000000" and seen_off == "0"
    assert after_on == "0", "the TAP's own gro_flush_timeout is given back when the device closes"
    assert per_on < 2.5
    assert per_off > 2 * per_on
