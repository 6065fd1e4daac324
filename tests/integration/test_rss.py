"""Receive-side scaling and hash reporting (VIRTIO_NET_F_RSS, HASH_REPORT)
through the in-repo driver: the driver's RSS_CONFIG picks the receive
queue of every frame the TAP hands the device, the v1_hash header
carries the Toeplitz hash the published vectors give, and a config that
breaks a rule is refused whole."""
from __future__ import annotations

import struct
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from tests.support import driver as D
from tests.support.frames import GUEST_MAC, PEER_MAC
from tests.support.rss_vectors import IPV4, IPV6, KEY
from tests.support.tapns import TapNamespace
from vnic.telemetry import counters
from vnic.virtio.features import DEFAULT, F

OK, ERR = 0, 1
PAIRS = 2
IPV4_T, TCPV4, UDPV4, IPV6_T, TCPV6, UDPV6 = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
ALL = 0x3F
REPORT = {"ipv4": 1, "tcpv4": 2, "udpv4": 3, "ipv6": 4, "tcpv6": 5, "udpv6": 6}
SPREAD = [i % PAIRS for i in range(128)]          # Linux's default table for 2 pairs

pytestmark = [pytest.mark.root, pytest.mark.netns]


def per_queue(sd) -> list[dict[str, int]]:
    return counters.per_queue(sd.device.counters)


def tcp_frame(dst: str, dport: int, src: str, sport: int, seq: int = 0, payload: bytes = b"x" * 32,
              flags: str = "A") -> bytes:
    ip = IPv6(src=src, dst=dst) if ":" in dst else IP(src=src, dst=dst)
    return bytes(Ether(src=PEER_MAC, dst=GUEST_MAC) / ip / TCP(sport=sport, dport=dport, seq=seq, flags=flags) /
                 Raw(payload))


def udp_frame(dst: str, dport: int, src: str, sport: int) -> bytes:
    ip = IPv6(src=src, dst=dst) if ":" in dst else IP(src=src, dst=dst)
    return bytes(Ether(src=PEER_MAC, dst=GUEST_MAC) / ip / UDP(sport=sport, dport=dport) / Raw(b"y" * 20))


@pytest.fixture
def rss_tap(serve):
    with TapNamespace() as tn:
        sd = serve(backend=tn.backend, queue_pairs=PAIRS)
        d = D.VirtioNetDriver(sd.connect()).start()
        assert d.has(F.RSS) and d.has(F.HASH_REPORT) and d.hdr_len == 20
        tn.drain()
        for pair in range(PAIRS):
            d.post_rx(128, pair=pair)
        yield sd, d, tn
        d.close()


def receive_any(d, count: int, timeout: float = 5.0) -> list[tuple[int, D.RxPacket]]:
    """count packets from whichever pair has them, as (pair, packet), in
    the order each pair delivered them."""
    got: list[tuple[int, D.RxPacket]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        for pair in range(PAIRS):
            try:
                got += [(pair, p) for p in d.receive(1, timeout=0.02, pair=pair)]
            except TimeoutError:
                continue
    assert len(got) == count, f"{len(got)} of {count} frames arrived"
    return got


def test_config_space_offers_key_table_and_hash_types(rss_tap):
    _sd, d, _tn = rss_tap
    raw = d.client.region_read(d.caps.device.bar, d.caps.device.offset, 24)
    key_size, table_len, types = struct.unpack_from("<BHI", raw, 17)
    assert (key_size, table_len, types) == (40, 128, ALL)     # no _EX types claimed


VECTOR_CASES = {            # rows, hash types, the table's column, hash_report
    "tcpv4": (IPV4, TCPV4, 5), "ipv4": (IPV4, IPV4_T, 4),
    "tcpv6": (IPV6, TCPV6, 5), "ipv6": (IPV6, IPV6_T, 4),
}


@pytest.mark.parametrize("report", VECTOR_CASES)
def test_hashes_are_the_published_ones_and_pick_the_queue(rss_tap, report):
    sd, d, tn = rss_tap
    rows, types, column = VECTOR_CASES[report]
    assert d.set_rss(types, SPREAD, KEY, max_tx_vq=PAIRS) == OK
    for row in rows:
        tn.send(tcp_frame(*row[:4]))
        [(pair, packet)] = receive_any(d, 1)
        assert (packet.hash_value, packet.hash_report) == (row[column], REPORT[report])
        assert pair == SPREAD[row[column] & 127]
    assert sd.stats()["rx_rss_hashed"] == len(rows)


def test_udp_is_hashed_with_ports_only_when_asked(rss_tap):
    _sd, d, tn = rss_tap
    dst, dport, src, sport, ip_only, _ = IPV4[0]
    assert d.set_rss(IPV4_T | TCPV4, SPREAD, KEY, max_tx_vq=PAIRS) == OK
    tn.send(udp_frame(dst, dport, src, sport))
    [(_pair, packet)] = receive_any(d, 1)
    assert (packet.hash_value, packet.hash_report) == (ip_only, REPORT["ipv4"])
    assert d.set_rss(ALL, SPREAD, KEY, max_tx_vq=PAIRS) == OK
    tn.send(udp_frame(dst, dport, src, sport))
    [(_pair, packet)] = receive_any(d, 1)
    assert packet.hash_report == REPORT["udpv4"] and packet.hash_value != ip_only


def test_frames_no_type_covers_go_to_the_unclassified_queue(rss_tap):
    sd, d, tn = rss_tap
    assert d.set_rss(TCPV4, [0] * 128, KEY, max_tx_vq=PAIRS, unclassified=1) == OK
    arp = bytes(Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.1.0.2", pdst="10.1.0.1"))
    for _ in range(4):
        tn.send(arp)
    got = receive_any(d, 4)
    assert {pair for pair, _ in got} == {1}
    assert all(p.hash_report == 0 and p.hash_value == 0 for _, p in got)
    assert sd.stats()["rx_rss_unhashable"] == 4


def test_a_table_of_zeros_moves_every_flow_to_queue_0(rss_tap):
    sd, d, tn = rss_tap
    assert d.set_rss(ALL, [0] * 128, KEY, max_tx_vq=PAIRS) == OK       # ethtool -X eth0 equal 1
    frames = [tcp_frame("10.9.0.1", 5201, "10.9.0.2", 40000 + i) for i in range(32)]
    for frame in frames:
        tn.send(frame)
    got = receive_any(d, 32)
    assert {pair for pair, _ in got} == {0}
    rows = per_queue(sd)
    assert rows[0]["rx_packets"] == 32 and rows[1]["rx_packets"] == 0
    # what the TAP's own steering put on queue 1 was handed to queue 0, never back
    assert rows[0]["rx_rss_steered"] == 0 and rows[1]["rx_rss_handoff_waits"] == 0


def test_each_flow_lands_on_the_queue_its_hash_names_in_order(rss_tap):
    sd, d, tn = rss_tap
    assert d.set_rss(ALL, SPREAD, KEY, max_tx_vq=PAIRS) == OK
    flows, per_flow = 16, 6
    for seq in range(per_flow):
        for f in range(flows):
            tn.send(tcp_frame("10.9.0.1", 5201, "10.9.0.2", 41000 + f, seq=seq * 1000, payload=b"z" * 1000))
    got = receive_any(d, flows * per_flow)
    by_flow: dict[int, list[tuple[int, int, int]]] = {}
    for pair, p in got:
        tcp = TCP(bytes(Ether(p.frame)[IP].payload))
        by_flow.setdefault(tcp.sport, []).append((pair, tcp.seq, p.hash_value))
    assert len(by_flow) == flows
    pairs_used = set()
    for entries in by_flow.values():
        (pair, _, h), = {(e[0], 0, e[2]) for e in entries}                 # one pair, one hash per flow
        assert pair == SPREAD[h & 127]
        assert [e[1] for e in entries] == sorted(e[1] for e in entries)   # in order
        pairs_used.add(pair)
    assert pairs_used == {0, 1}
    assert sum(row["rx_packets"] for row in per_queue(sd)) == flows * per_flow
    assert sum(row["rx_rss_handoff_waits"] for row in per_queue(sd)) == 0


def test_steered_frames_are_read_straight_into_guest_buffers(rss_tap):
    """With steering on, a frame RSS keeps on the pair whose TAP queue it
    came from lands in that pair's buffers with no copy; one it sends to
    the other pair (the kernel spreads flows by a hash of its own) is moved
    out and handed over.  Both kinds arrive whole, on their pair, in order."""
    sd, d, tn = rss_tap
    assert d.set_rss(ALL, SPREAD, KEY, max_tx_vq=PAIRS) == OK
    flows, per_flow = 16, 4
    sent = [tcp_frame("10.9.0.1", 5201, "10.9.0.2", 43000 + f, seq=seq * 700, payload=bytes([f]) * 700, flags="PA")
            for seq in range(per_flow) for f in range(flows)]
    for frame in sent:
        tn.send(frame)
    got = receive_any(d, len(sent))
    assert sorted(p.frame for _, p in got) == sorted(sent)
    for pair, p in got:
        assert pair == SPREAD[p.hash_value & 127]
    for f in range(flows):                                  # each flow in the order sent
        seqs = [TCP(bytes(Ether(p.frame)[IP].payload)).seq for _, p in got if Ether(p.frame)[TCP].sport == 43000 + f]
        assert seqs == [seq * 700 for seq in range(per_flow)]
    rows = per_queue(sd)
    direct = sum(row["rx_direct_packets"] for row in rows)
    steered = sum(row["rx_rss_steered"] for row in rows)
    assert direct > 0 and steered > 0 and direct + steered <= len(sent)


def test_linux_padded_trailer_takes_the_key_after_the_pad_byte(rss_tap):
    """Linux 6.12 sends struct virtio_net_rss_config_trailer with its C
    padding: hash_key_length, one stray byte, then the key."""
    _sd, d, tn = rss_tap
    spec = D.rss_config(TCPV4, SPREAD, KEY, max_tx_vq=PAIRS)
    padded = spec[:-len(KEY)] + b"\xa5" + KEY
    assert d.control(D.CTRL_MQ, D.MQ_RSS_CONFIG, padded) == OK
    row = IPV4[2]
    tn.send(tcp_frame(*row[:4]))
    [(pair, packet)] = receive_any(d, 1)
    assert packet.hash_value == row[5] and pair == SPREAD[row[5] & 127]


def test_rss_config_also_sets_the_pairs_in_use(rss_tap):
    sd, d, _tn = rss_tap
    assert d.set_rss(ALL, SPREAD, KEY, max_tx_vq=2) == OK and sd.device.active_pairs() == 2
    assert d.set_rss(ALL, [0] * 128, KEY, max_tx_vq=1) == OK and sd.device.active_pairs() == 1
    state = sd.device.rss_state()
    assert state["steering"] and state["hash_report"] and state["indirection_table"] == [0] * 128
    assert state["key"] == KEY.hex() and set(state["hash_types"]) == set(REPORT)


def test_hash_config_reports_without_steering(serve):
    with TapNamespace() as tn:
        sd = serve(backend=tn.backend, queue_pairs=1, features=DEFAULT | {F.HASH_REPORT})
        d = D.VirtioNetDriver(sd.connect()).start()
        try:
            assert d.has(F.HASH_REPORT) and not d.has(F.RSS)
            tn.drain()
            d.post_rx(16)
            assert d.set_rss(ALL, [0], KEY, 1) == ERR                  # RSS not negotiated
            assert d.set_hash(TCPV4, KEY) == OK
            row = IPV4[1]
            tn.send(tcp_frame(*row[:4]))
            [packet] = d.receive(1)
            assert (packet.hash_value, packet.hash_report) == (row[5], REPORT["tcpv4"])
            assert packet.frame == tcp_frame(*row[:4])
            assert sd.device.rss_state()["steering"] is False
        finally:
            d.close()


# ---- configs that break a rule: VIRTIO_NET_ERR, the old config kept ------------------

def rss_bytes(types=ALL, table=None, key=KEY, max_tx_vq=PAIRS, unclassified=0) -> bytes:
    return D.rss_config(types, SPREAD if table is None else table, key, max_tx_vq, unclassified)


BAD_CONFIGS = {
    "table of 3": rss_bytes(table=[0, 1, 0]),
    "table of 256": rss_bytes(table=[0] * 256),
    "key of 41 bytes": rss_bytes(key=KEY + b"\0"),
    "ipv6_ex type": rss_bytes(types=ALL | 0x40),
    "unknown type": rss_bytes(types=0x200),
    "queue 200 in the table": rss_bytes(table=[0] * 127 + [200]),
    "queue 2 of 2": rss_bytes(table=[2] * 128),
    "reserved bit": rss_bytes(table=[0x8000] * 128),
    "unclassified queue 5": rss_bytes(unclassified=5),
    "max_tx_vq 0": rss_bytes(max_tx_vq=0),
    "max_tx_vq 3": rss_bytes(max_tx_vq=3),
    "max_tx_vq 65535": rss_bytes(max_tx_vq=0xFFFF),
    "truncated table": rss_bytes()[:100],
    "no key length": rss_bytes()[:8 + 256 + 2],
    "key cut short": rss_bytes()[:-1],
    "two trailing bytes": rss_bytes() + b"\0\0",
    "empty": b"",
}


@pytest.mark.parametrize("data", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_a_bad_rss_config_is_refused_and_changes_nothing(rss_tap, data):
    sd, d, _tn = rss_tap
    good = [1] * 64 + [0] * 64
    assert d.set_rss(TCPV4, good, KEY, max_tx_vq=2) == OK
    before = sd.device.rss_state()
    assert d.control(D.CTRL_MQ, D.MQ_RSS_CONFIG, data) == ERR
    assert sd.device.rss_state() == before and sd.device.active_pairs() == 2
    assert sd.device.failed() is False


def test_a_bad_hash_config_is_refused(rss_tap):
    sd, d, _tn = rss_tap
    assert d.control(D.CTRL_MQ, D.MQ_HASH_CONFIG, struct.pack("<I8xB", 0x400, 0)) == ERR
    assert d.control(D.CTRL_MQ, D.MQ_HASH_CONFIG, struct.pack("<I8xB", ALL, 41) + bytes(41)) == ERR
    assert d.control(D.CTRL_MQ, D.MQ_HASH_CONFIG, struct.pack("<I8x", ALL)) == ERR
    assert sd.device.rss_state()["hash_types"] == []


def test_a_table_naming_a_pair_without_rx_queue_keeps_frames_where_read(serve):
    """A driver that points RSS at a pair whose RX queue it never enabled
    gets its frames on the pair that read them, not a stalled device."""
    with TapNamespace() as tn:
        sd = serve(backend=tn.backend, queue_pairs=PAIRS)
        d = D.VirtioNetDriver(sd.connect())
        try:
            d.client.config_write(D.PCI_COMMAND, struct.pack("<H", D.PCI_COMMAND_MEMORY | D.PCI_COMMAND_MASTER))
            d.reset()
            d.negotiate()
            d.setup_interrupts()
            d.common_write("config_msix_vector", d.CONFIG_VECTOR)
            d.pairs = PAIRS
            for index in (0, 1, 3, d.ctrl_index):               # pair 1's RX queue (2) left out
                d.setup_queue(index)
            d.set_status(D.ACKNOWLEDGE | D.DRIVER | D.FEATURES_OK | D.DRIVER_OK)
            tn.drain()
            d.post_rx(64, pair=0)
            assert d.set_rss(ALL, [1] * 128, KEY, max_tx_vq=PAIRS) == OK
            for i in range(16):
                tn.send(tcp_frame("10.9.0.1", 5201, "10.9.0.2", 42000 + i))
            time.sleep(1)
            rows = per_queue(sd)
            # what pair 0 read stayed on pair 0, delivered; nothing waits for pair 1
            assert rows[0]["rx_rss_steered"] == 0 and rows[0]["rx_packets"] > 0
            assert len(d.receive(rows[0]["rx_packets"], pair=0)) == rows[0]["rx_packets"]
            assert sd.device.failed() is False
        finally:
            d.close()


def test_frames_wait_when_the_other_pairs_inbox_is_full(serve):
    """A flow the kernel queues to pair 0's TAP fd and RSS sends to pair 1,
    while pair 1's guest posts no buffers: pair 0 reads each frame into its
    own buffers and gathers it into pair 1's inbox until that is full
    (2 MiB), then holds the next and stops reading.  When pair 1's buffers
    come, every frame arrives there, whole and in order."""
    with TapNamespace() as tn:
        sd = serve(backend=tn.backend, queue_pairs=PAIRS)
        d = D.VirtioNetDriver(sd.connect()).start()
        try:
            assert tn.ns.run(["ip", "link", "set", tn.ifname, "mtu", "9000"]).returncode == 0
            tn.drain()
            d.post_rx(128, pair=0)
            assert d.set_rss(ALL, [1] * 128, KEY, max_tx_vq=PAIRS) == OK
            sport, probes = read_by_pair_0(sd, tn)
            big = [tcp_frame("10.9.0.1", 5201, "10.9.0.2", sport, seq=1 + i * 8900, payload=bytes([i % 251]) * 8900,
                             flags="PA") for i in range(300)]
            for frame in big:
                tn.send(frame)
            deadline = time.monotonic() + 5
            while per_queue(sd)[0]["rx_rss_handoff_waits"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert per_queue(sd)[0]["rx_rss_handoff_waits"] > 0
            got: list[bytes] = []
            while len(got) < probes + len(big):
                d.post_rx(100, size=9100, pair=1)
                got += [p.frame for p in d.receive(min(100, probes + len(big) - len(got)), timeout=5, pair=1)]
            flow = [f for f in got if Ether(f)[TCP].sport == sport]
            assert flow[1:] == big                              # after its probe, the flood in order
            assert sd.device.failed() is False
        finally:
            d.close()


def read_by_pair_0(sd, tn) -> tuple[int, int]:
    """A source port whose flow the kernel queues to pair 0's TAP fd (one
    frame of it was read there and handed to pair 1), and how many ports
    were tried (a frame each: the others wait in pair 1's TAP queue, which
    pair 1 does not read without buffers)."""
    for tried, sport in enumerate(range(44000, 44064), 1):
        tn.send(tcp_frame("10.9.0.1", 5201, "10.9.0.2", sport, flags="PA"))
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            if per_queue(sd)[0]["rx_rss_steered"]:
                return sport, tried
            time.sleep(0.01)
    raise AssertionError("no flow of 64 was read by pair 0")
