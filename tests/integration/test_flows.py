"""Per-flow statistics: guest frames (TX) and TAP frames (RX) show up as
flows with their 5-tuple, packets and bytes as the device counted them, and
the offloads they used; the table grows with the flows up to its bound,
evicts the least recently seen there, can be switched off, and can be
cleared while traffic runs."""
from __future__ import annotations

import math
import threading

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Ether

from tests.engine.frames import partial_csum
from tests.integration.test_rx_coalesce import MSS, inject_without_buffers, receive_all, segments
from tests.integration.test_rx_offload import corrupt_udp_checksum, inject_gso, tcp_superframe
from tests.support.driver import NET_HDR
from tests.support.frames import GUEST_MAC, PEER_MAC, udp_frame
from vnic.backends.null import NullBackend
from vnic.net.virtio_net import VirtioNet
from vnic.telemetry.flows import LIMIT

NEEDS_CSUM = 1
GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4 = 1, 3, 4, 5
SRC4, DST4 = "192.0.2.1", "192.0.2.2"
SRC6, DST6 = "2001:db8::1", "2001:db8::2"


def frame(proto: str = "udp", v6: bool = False, sport: int = 4000, dport: int = 5001,
          payload: int = 64) -> bytes:
    """A guest frame of one flow: UDP or TCP over IPv4 or IPv6."""
    l3 = IPv6(src=SRC6, dst=DST6) if v6 else IP(src=SRC4, dst=DST4)
    l4 = TCP(sport=sport, dport=dport, flags="A") if proto == "tcp" else UDP(sport=sport, dport=dport)
    return bytes(Ether(src=GUEST_MAC, dst=PEER_MAC) / l3 / l4 / bytes(payload))


def send(d, frames: list[bytes], header: bytes | None = None) -> None:
    for f in frames:
        d.transmit(f, header=header)
    d.complete_tx(len(frames))


def by_tuple(flows: list[dict]) -> dict[tuple, dict]:
    return {(f["direction"], f["protocol"], f["src"], f["dst"], f["src_port"], f["dst_port"]): f
            for f in flows}


# ---- transmit --------------------------------------------------------------------

def test_tx_flows_carry_their_five_tuple_packets_and_bytes(served_device):
    d, dev = served_device.driver, served_device.device
    udp_a = [frame("udp", sport=4000, payload=n) for n in (10, 200, 900)]
    udp_b = [frame("udp", sport=4001, payload=33)]
    tcp6 = [frame("tcp", v6=True, sport=40000, dport=80, payload=n) for n in (0, 1400)]
    tcp4 = [frame("tcp", sport=40000, dport=80)]
    send(d, udp_a + tcp6 + udp_b + tcp4)
    flows = by_tuple(dev.flows())
    expected = {
        ("tx", "udp", SRC4, DST4, 4000, 5001): udp_a,
        ("tx", "udp", SRC4, DST4, 4001, 5001): udp_b,
        ("tx", "tcp", SRC6, DST6, 40000, 80): tcp6,
        ("tx", "tcp", SRC4, DST4, 40000, 80): tcp4,
    }
    assert set(flows) == set(expected)
    for key, frames in expected.items():
        f = flows[key]
        assert (f["packets"], f["bytes"]) == (len(frames), sum(map(len, frames))), key
        assert f["ip_version"] == (6 if key[2] == SRC6 else 4)
        assert f["offloads"] == [] and f["queue_pair"] == 0
        assert 0 <= f["last_seen_ago"] <= f["first_seen_ago"] < 10
    stats = dev.stats()
    assert sum(f["packets"] for f in flows.values()) == stats["tx_packets"]
    assert sum(f["bytes"] for f in flows.values()) == stats["tx_bytes"]


def gso_header(gso_type: int, mss: int, l4: int, hdr_len: int, udp: bool) -> bytes:
    return NET_HDR.pack(NEEDS_CSUM, gso_type, hdr_len, mss, l4, 6 if udp else 16, 0)


# frame, header, the flow's offloads, the wire frames the device makes of
# it, and the header bytes each wire frame after the first repeats
OFFLOADED = {
    "tso4": (frame("tcp", payload=10000), gso_header(GSO_TCPV4, 1448, 34, 54, False),
             ["csum", "tso"], math.ceil(10000 / 1448), 54),
    "tso6": (frame("tcp", v6=True, payload=5000), gso_header(GSO_TCPV6, 1000, 54, 74, False),
             ["csum", "tso"], 5, 74),
    "uso6": (frame("udp", v6=True, payload=4000), gso_header(GSO_UDP_L4, 1000, 54, 62, True),
             ["csum", "uso"], 4, 62),
    "ufo4": (frame("udp", payload=3000), gso_header(GSO_UDP, 1480, 34, 42, True),   # IP fragments
             ["csum", "ufo"], math.ceil((8 + 3000) / 1480), 34),
    "csum": (frame("udp", payload=300), NET_HDR.pack(NEEDS_CSUM, 0, 0, 0, 34, 6, 0), ["csum"], 1, 0),
}


@pytest.mark.parametrize("case", OFFLOADED)
def test_offloaded_frames_count_the_wire_frames_and_name_the_offload(served_device, case):
    d, dev = served_device.driver, served_device.device
    guest_frame, header, offloads, wire_frames, repeated = OFFLOADED[case]
    send(d, [partial_csum(guest_frame)], header=header)
    [flow] = dev.flows()
    stats = dev.stats()
    assert flow["offloads"] == offloads
    assert flow["packets"] == wire_frames == stats["tx_packets"]
    assert flow["bytes"] == len(guest_frame) + (wire_frames - 1) * repeated == stats["tx_bytes"]
    assert (flow["src_port"], flow["dst_port"]) == (4000, 5001)


def test_passthrough_hands_the_super_frame_whole(tap_device):
    d, dev = tap_device.driver, tap_device.device
    dev.set_tx_mode("passthrough")
    guest_frame, header, *_ = OFFLOADED["tso4"]
    send(d, [partial_csum(guest_frame)], header=header)
    [flow] = dev.flows()
    assert flow["offloads"] == ["csum", "tso", "passthrough"]
    assert (flow["packets"], flow["bytes"]) == (1, len(guest_frame))


def test_refused_frames_are_no_flow_traffic(served_device):
    d, dev = served_device.driver, served_device.device
    bad_gso = NET_HDR.pack(NEEDS_CSUM, GSO_TCPV4, 54, 0, 34, 16, 0)     # gso_size 0
    d.transmit(frame("tcp", payload=3000), header=bad_gso)
    d.transmit(frame("udp"))
    d.complete_tx(2)
    assert dev.stats()["tx_drops_gso_size"] == 1
    assert [f["protocol"] for f in dev.flows()] == ["udp"]


def test_protocols_without_ports_and_non_ip_frames(served_device):
    d, dev = served_device.driver, served_device.device
    eth = Ether(src=GUEST_MAC, dst=PEER_MAC)
    fragment = bytes(eth / IP(src=SRC4, dst=DST4, flags="MF", frag=0) / UDP(sport=7, dport=9) / bytes(100))
    send(d, [bytes(eth / IP(src=SRC4, dst=DST4) / ICMP() / bytes(20)),
             bytes(eth / IPv6(src=SRC6, dst=DST6) / ICMPv6EchoRequest()),
             bytes(Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=SRC4, pdst=DST4)),
             bytes(Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=SRC4, pdst="192.0.2.9")),
             fragment])
    flows = {f["protocol"]: f for f in dev.flows()}
    assert set(flows) == {"icmp", "icmpv6", "arp", "udp"}
    assert (flows["icmp"]["src"], flows["icmp"]["dst"], flows["icmp"]["src_port"]) == (SRC4, DST4, 0)
    assert (flows["icmpv6"]["ip_version"], flows["icmpv6"]["dst"]) == (6, DST6)
    arp = flows["arp"]                       # one flow for the ethertype, both requests in it
    assert (arp["ip_version"], arp["src"], arp["ethertype"], arp["packets"]) == (None, None, 0x0806, 2)
    # a fragment is keyed without ports: the later fragments of its datagram carry none
    assert (flows["udp"]["src_port"], flows["udp"]["dst_port"], flows["udp"]["src"]) == (0, 0, SRC4)


def test_sorted_by_bytes_packets_or_recency_and_cut_to_top(served_device):
    d, dev = served_device.driver, served_device.device
    send(d, [frame(sport=1, payload=0)] * 5)                 # most packets
    send(d, [frame(sport=2, payload=1000)])                   # most bytes
    send(d, [frame(sport=3, payload=200)] * 2)                # most recent
    ports = lambda flows: [f["src_port"] for f in flows]
    assert ports(dev.flows()) == [2, 3, 1]
    assert ports(dev.flows(sort="packets")) == [1, 3, 2]
    assert ports(dev.flows(sort="last_seen")) == [3, 2, 1]
    assert ports(dev.flows(top=2)) == [2, 3]
    assert dev.flows(top=0) == []
    with pytest.raises(ValueError):
        dev.flows(sort="size")


# ---- receive ---------------------------------------------------------------------

def test_rx_flows_from_the_tap_with_verified_checksums(tap_device):
    d, tap, dev = tap_device.driver, tap_device.tap, tap_device.device
    d.post_rx(16)
    flow_a = [udp_frame(size, seq, to_guest=True) for size, seq in ((100, 0), (600, 1000), (1514, 2000))]
    bad = corrupt_udp_checksum(udp_frame(300, 1, to_guest=True))     # source port 40001
    for f in flow_a + [bad]:
        tap.send(f)
    d.receive(4)
    flows = by_tuple(dev.flows())
    a = flows[("rx", "udp", "10.213.0.2", "10.213.0.1", 40000, 5201)]
    b = flows[("rx", "udp", "10.213.0.2", "10.213.0.1", 40001, 5201)]
    assert (a["packets"], a["bytes"], a["offloads"]) == (3, sum(map(len, flow_a)), ["csum_valid"])
    assert (b["packets"], b["bytes"], b["offloads"]) == (1, len(bad), [])     # delivered unverified
    assert len(flows) == 2


def test_rx_coalesced_flow(tap_device):
    d, dev = tap_device.driver, tap_device.device
    inject_without_buffers(tap_device, segments(30))
    d.post_rx(128, size=2048)
    packets = receive_all(d, 30 * MSS)
    [flow] = dev.flows()
    stats = dev.stats()
    assert (flow["direction"], flow["src"], flow["src_port"], flow["dst_port"]) == ("rx", "10.213.0.1", 5201, 40000)
    assert "coalesced" in flow["offloads"]
    assert flow["packets"] == len(packets) == stats["rx_packets"] < 30
    assert flow["bytes"] == stats["rx_bytes"] == sum(len(p.frame) for p in packets)


def test_rx_gso_super_frame_from_the_backend(tap_device):
    d, tap, dev = tap_device.driver, tap_device.tap, tap_device.device
    d.post_rx(64, size=4096)
    superframe = tcp_superframe(30000)
    inject_gso(tap, superframe, 1448)
    d.receive(1, timeout=5)
    [flow] = dev.flows()
    assert flow["offloads"] == ["gso"]
    assert (flow["packets"], flow["bytes"]) == (1, len(superframe))


# ---- the table ---------------------------------------------------------------------

def test_table_grows_past_its_initial_size(served_device):
    d, dev = served_device.driver, served_device.device
    assert dev.flow_table_info()["capacity"] == 256
    for chunk in range(6):
        send(d, [frame(sport=1000 + 100 * chunk + i, payload=0) for i in range(100)])
    info = dev.flow_table_info()
    assert info["entries"] == 600 and info["evictions"] == 0
    assert info["capacity"] >= 600 and info["grows"] >= 2 and info["max_entries"] == 4096
    assert dev.stats()["flow_table_grows"] == info["grows"]
    flows = dev.flows()
    assert sorted(f["src_port"] for f in flows) == list(range(1000, 1600))
    assert all(f["packets"] == 1 for f in flows)


def test_full_table_evicts_the_least_recently_seen(served_device):
    d, dev = served_device.driver, served_device.device
    dev.set_flow_table_max(16)
    for i in range(40):                      # one flow per batch: each newer than the last
        send(d, [frame(sport=2000 + i)])
    info = dev.flow_table_info()
    assert (info["entries"], info["capacity"], info["max_entries"]) == (16, 16, 16)
    assert info["evictions"] == 24 == dev.stats()["flow_evictions"]
    assert sorted(f["src_port"] for f in dev.flows()) == list(range(2024, 2040))


def test_a_flow_seen_again_is_not_evicted(served_device):
    d, dev = served_device.driver, served_device.device
    dev.set_flow_table_max(16)
    for i in range(40):
        send(d, [frame(sport=2000 + i)])
        send(d, [frame(sport=1)])            # kept fresh
    ports = {f["src_port"]: f for f in dev.flows()}
    assert ports[1]["packets"] == 40


def test_bound_zero_turns_flow_statistics_off(served_device):
    d, dev = served_device.driver, served_device.device
    send(d, [frame(sport=1)])
    dev.set_flow_table_max(0)
    assert dev.flow_table_info() == {"entries": 0, "capacity": 0, "max_entries": 0,
                                     "evictions": 0, "grows": 0}
    send(d, [frame(sport=2)] * 10)
    assert dev.flows() == [] and dev.stats()["tx_packets"] == 11
    dev.set_flow_table_max(100)              # and back on at run time
    send(d, [frame(sport=3)])
    assert [(f["src_port"], f["packets"]) for f in dev.flows()] == [(3, 1)]
    assert dev.flow_table_info()["capacity"] == 100


def test_bound_set_at_construction_and_checked():
    dev = VirtioNet(NullBackend(), flow_table_max=0)
    try:
        assert dev.flow_table_info()["capacity"] == 0 and dev.flows() == []
        for bad in (-1, LIMIT + 1):
            with pytest.raises(ValueError):
                dev.set_flow_table_max(bad)
        dev.set_flow_table_max(LIMIT)
        assert dev.flow_table_info()["max_entries"] == LIMIT
    finally:
        dev.close()


def test_lowering_the_bound_below_the_flows_held_starts_over(served_device):
    d, dev = served_device.driver, served_device.device
    send(d, [frame(sport=i) for i in range(50)])
    dev.set_flow_table_max(64)               # still holds them all
    assert dev.flow_table_info()["entries"] == 50
    dev.set_flow_table_max(20)
    assert dev.flow_table_info()["entries"] == 0
    send(d, [frame(sport=7)])
    assert [f["src_port"] for f in dev.flows()] == [7]


def test_flows_survive_a_guest_reset(served_device):
    d, dev = served_device.driver, served_device.device
    send(d, [frame(sport=5)] * 3)
    d.start()                                # reset and renegotiate
    [flow] = dev.flows()
    assert (flow["src_port"], flow["packets"]) == (5, 3)


def test_clear_while_traffic_runs(served_device):
    d, sd, dev = served_device.driver, served_device.harness, served_device.device
    total = 3000
    window: dict[str, int] = {}
    errors: list[BaseException] = []

    def control() -> None:
        try:
            sd.wait_stat("tx_packets", total // 3, timeout=20)
            for _ in range(20):                  # snapshots while the worker counts
                for f in dev.flows():
                    assert f["packets"] <= total
            window["before"] = dev.stats()["tx_packets"]
            dev.clear_flows()
            window["after"] = dev.stats()["tx_packets"]
        except BaseException as exc:             # reported on the main thread
            errors.append(exc)

    thread = threading.Thread(target=control)
    thread.start()
    for _ in range(total // 100):
        send(d, [frame(sport=9)] * 100)
    thread.join(30)
    assert not errors and not thread.is_alive()
    assert window["after"] < total, "the clear did not happen while traffic ran"
    [flow] = dev.flows()
    # cleared at one moment between the two readings: only what came after counts
    assert total - window["after"] <= flow["packets"] <= total - window["before"]
    dev.clear_flows()                           # and at once while the worker sleeps
    assert dev.flows() == [] and dev.flow_table_info()["entries"] == 0
    assert dev.stats()["tx_packets"] == total and not dev.failed()


@pytest.mark.parametrize("header, reason", [
    (NET_HDR.pack(NEEDS_CSUM, GSO_TCPV4, 54, 0, 34, 16, 0), "tx_drops_gso_size"),      # gso_size 0
    (NET_HDR.pack(NEEDS_CSUM, GSO_TCPV4, 54, 9000, 34, 16, 0), "tx_drops_gso_size"),   # > payload
    (NET_HDR.pack(NEEDS_CSUM, GSO_TCPV6, 54, 1000, 34, 16, 0), "tx_drops_gso_type"),   # v6 on v4
    (NET_HDR.pack(NEEDS_CSUM, GSO_UDP_L4, 42, 1000, 34, 6, 0), "tx_drops_gso_type"),   # USO on TCP
    (NET_HDR.pack(NEEDS_CSUM, 0, 0, 0, 3100, 16, 0), "tx_drops_csum_range"),           # beyond the end
])
def test_passthrough_refuses_what_segmenting_would_refuse(tap_device, header, reason):
    # The host kernel gets a super-frame whole in passthrough mode; the
    # device checks it first, as it would before segmenting, and counts why.
    d, dev = tap_device.driver, tap_device.device
    dev.set_tx_mode("passthrough")
    good_header = OFFLOADED["tso4"][1]
    d.transmit(frame("tcp", payload=3000), header=header)
    d.transmit(partial_csum(OFFLOADED["tso4"][0]), header=good_header)
    d.complete_tx(2)
    stats = dev.stats()
    drops = {k: v for k, v in stats.items() if k.startswith("tx_drops_") and v}
    assert drops == {reason: 1}
    assert stats["tx_passthrough_packets"] == 1 and stats["tx_packets"] == 1
    assert not d.status & 0x40                 # a drop, not a device error
