"""make_seeds.py - writes the seed corpus of each fuzz target into
tests/fuzz/corpus/TARGET/: valid inputs in each target's format (see the
first comment of tests/fuzz/fuzz_TARGET.c), built with scapy so that the
fuzzer starts from frames, chains and messages a real guest or QEMU sends.
The seeds are checked in; rerun this after changing a target's format.

    PYTHONPATH=. python tests/fuzz/make_seeds.py
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Dot1Q, Ether

from tests.support.driver import rss_config
from vnic._native import lib
from vnic.vfio_user import protocol as P
from vnic.vfio_user.protocol import Command

CORPUS = Path(__file__).resolve().parent / "corpus"
MAC, PEER = "52:54:00:12:34:56", "52:54:00:00:00:02"
NET_HDR = struct.Struct("<BBHHHHH")           # struct virtio_net_hdr_mrg_rxbuf
NEEDS_CSUM, DATA_VALID = 1, 2
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4, GSO_ECN = 0, 1, 3, 4, 5, 0x80


def bit(*names: str) -> int:
    return sum(1 << getattr(lib, f"VNIC_F_{n}") for n in names)


def frames() -> dict[str, tuple[bytes, bytes]]:
    """Frames with the virtio_net_hdr a sender would give them."""
    eth = Ether(src=PEER, dst=MAC)
    big = bytes(range(256)) * 16
    tcp4 = bytes(eth / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=40000, dport=5201, flags="A") / big)
    tcp6 = bytes(eth / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=40000, dport=5201) / big)
    udp4 = bytes(eth / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=4000, dport=53) / big[:3000])
    udp6 = bytes(eth / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=4000, dport=53) / big[:3000])
    vlan = bytes(eth / Dot1Q(vlan=5) / IP(src="192.0.2.1", dst="192.0.2.2") / TCP() / big[:200])
    frag = bytes(eth / IP(src="192.0.2.1", dst="192.0.2.2", flags="MF", frag=0) / UDP() / big[:100])
    ext6 = bytes(eth / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / TCP() / big[:300])
    small = bytes(eth / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1, dport=2) / (b"x" * 18))
    l4_4, l4_6 = 14 + 20, 14 + 40
    return {
        "udp-plain": (NET_HDR.pack(0, GSO_NONE, 0, 0, 0, 0, 0), small),
        "tcp4-csum": (NET_HDR.pack(NEEDS_CSUM, GSO_NONE, 0, 0, l4_4, 16, 0), tcp4[:1514]),
        "tcp4-tso": (NET_HDR.pack(NEEDS_CSUM, GSO_TCPV4, l4_4 + 20, 1448, l4_4, 16, 0), tcp4),
        "tcp4-tso-ecn": (NET_HDR.pack(NEEDS_CSUM, GSO_TCPV4 | GSO_ECN, l4_4 + 20, 1000, l4_4, 16, 0), tcp4),
        "tcp6-tso": (NET_HDR.pack(NEEDS_CSUM, GSO_TCPV6, l4_6 + 20, 1428, l4_6, 16, 0), tcp6),
        "udp4-ufo": (NET_HDR.pack(NEEDS_CSUM, GSO_UDP, l4_4 + 8, 1472, l4_4, 6, 0), udp4),
        "udp6-uso": (NET_HDR.pack(NEEDS_CSUM, GSO_UDP_L4, l4_6 + 8, 1200, l4_6, 6, 0), udp6),
        "vlan-valid": (NET_HDR.pack(DATA_VALID, GSO_NONE, 0, 0, 0, 0, 0), vlan),
        "frag": (NET_HDR.pack(0, GSO_NONE, 0, 0, 0, 0, 0), frag),
        "ipv6-ext": (NET_HDR.pack(NEEDS_CSUM, GSO_NONE, 0, 0, l4_6 + 8, 16, 0), ext6),
    }


TX_FEATURES = bit("CSUM", "HOST_TSO4", "HOST_TSO6", "HOST_ECN", "HOST_UFO", "HOST_USO")
RX_FEATURES = bit("GUEST_CSUM", "GUEST_TSO4", "GUEST_TSO6", "GUEST_ECN", "GUEST_UFO",
                  "GUEST_USO4", "GUEST_USO6")


def tx_seeds() -> dict[str, bytes]:
    out = {}
    for name, (hdr, frame) in frames().items():
        for mode in (0, 1):
            for features in (TX_FEATURES, TX_FEATURES | bit("MRG_RXBUF", "HASH_REPORT")):
                extra = bytes(8) if features & bit("HASH_REPORT") else b""
                data = hdr + extra + frame
                head = struct.pack("<QB", features, mode)
                kind = "hash" if extra else "plain"
                out[f"{name}-m{mode}-{kind}"] = head + struct.pack("<HB", len(data), 1 + 4 * 2) + data
    return out


def rx_seeds() -> dict[str, bytes]:
    out = {}
    fr = frames()
    for coalesce in (0, 1):
        for mrg, size in ((bit("MRG_RXBUF"), 1526), (0, 4096)):
            head = struct.pack("<QBBH", RX_FEATURES | mrg | bit("HASH_REPORT"), coalesce, 63, size)
            body = b"".join(struct.pack("<H", len(h + f)) + h + f
                            for h, f in (fr["tcp4-csum"], fr["tcp4-csum"], fr["udp-plain"], fr["vlan-valid"]))
            out[f"mixed-c{coalesce}-{'mrg' if mrg else 'big'}"] = head + body
    # a TCP stream the coalescer can merge: consecutive segments of one flow
    eth = Ether(src=PEER, dst=MAC)
    seq = []
    for i in range(6):
        pkt = bytes(eth / IP(src="192.0.2.1", dst="192.0.2.2") /
                    TCP(sport=40000, dport=5201, seq=1000 + 1448 * i, flags="A") / (b"%c" % (65 + i) * 1448))
        hdr = NET_HDR.pack(DATA_VALID, 0, 0, 0, 0, 0, 0)
        seq.append(struct.pack("<H", len(hdr + pkt)) + hdr + pkt)
    out["tcp-stream-coalesce"] = struct.pack("<QBBH", RX_FEATURES | bit("MRG_RXBUF"), 1, 127, 1526) + b"".join(seq)
    return out


def ctrl_seeds() -> dict[str, bytes]:
    features = (bit("CTRL_RX", "CTRL_VLAN", "CTRL_RX_EXTRA", "GUEST_ANNOUNCE", "MQ", "CTRL_MAC_ADDR",
                    "CTRL_GUEST_OFFLOADS", "RSS", "HASH_REPORT") | RX_FEATURES)
    mac = bytes.fromhex("525400abcdef")
    commands = {
        "rx-promisc": bytes([0, 0, 1]),
        "rx-nobcast": bytes([0, 5, 1]),
        "mac-table": bytes([1, 0]) + struct.pack("<I", 1) + mac + struct.pack("<I", 2) + mac * 2,
        "mac-addr": bytes([1, 1]) + mac,
        "vlan-add": bytes([2, 0]) + struct.pack("<H", 100),
        "vlan-del": bytes([2, 1]) + struct.pack("<H", 100),
        "announce-ack": bytes([3, 0]),
        "mq-pairs": bytes([4, 0]) + struct.pack("<H", 2),
        "mq-rss": bytes([4, 1]) + rss_config(0x3F, [0, 1, 2, 3] * 4, bytes(range(40)), 4),
        "mq-hash": bytes([4, 2]) + struct.pack("<I8xB", 0x3F, 40) + bytes(range(40)),
        "offloads": bytes([5, 0]) + struct.pack("<Q", RX_FEATURES),
    }
    out = {name: struct.pack("<Q", features) + struct.pack("<HB", len(c), 1) + c for name, c in commands.items()}
    out["all"] = struct.pack("<Q", features) + b"".join(struct.pack("<HB", len(c), i % 3)
                                                        + c for i, c in enumerate(commands.values()))
    return out


def virtq_seeds() -> dict[str, bytes]:
    out = {}
    qsize = 16
    desc = struct.Struct("<QIHH")
    for cfg, name in ((4 | 0x10, "indirect"), (4 | 0x20, "event-idx"), (4 | 0x40, "rx-chains")):
        table = bytearray(desc.size * qsize)
        write = 2 if cfg & 0x40 else 0
        for i in range(8):                            # chains of two: i*2 -> i*2+1
            desc.pack_into(table, desc.size * 2 * i, 0x3000 + 0x100 * i, 64, 1 | write, 2 * i + 1)
            desc.pack_into(table, desc.size * (2 * i + 1), 0x3080 + 0x100 * i, 64, write, 0)
        if cfg & 0x10:                                # head 15: an indirect table of 3 at 0x4000
            desc.pack_into(table, desc.size * 15, 0x4000, 3 * desc.size, 4, 0)
        heads = [*range(0, 16, 2), 15] + [0] * 7       # 8 chains, then the indirect one
        avail = struct.pack("<HH", 0, 9) + struct.pack("<16H", *heads) + b"\0\0"
        bufs = bytearray(0x2000)
        for j in range(3):
            desc.pack_into(bufs, 0x1000 + desc.size * j, 0x5000 + 0x40 * j, 32, 1 if j < 2 else 0, j + 1)
        out[name] = bytes([cfg, 0]) + bytes(table) + avail[:6 + 2 * qsize] + bytes(bufs)
    out.update(packed_virtq_seeds())
    return out


def packed_virtq_seeds() -> dict[str, bytes]:
    """A packed ring of 12 (not a power of two): five chains of two, then an
    indirect table of 3 at 0x4000, then a slot not yet available."""
    out = {}
    qsize, avail = 12, 1 << 7                        # first lap: AVAIL set, USED clear
    desc = struct.Struct("<QIHH")                    # addr, len, id, flags
    for cfg, rewinds, name in ((0x80 | 0x10, 0x05, "packed"), (0x80 | 0x10 | 0x20 | 0x40, 0x36, "packed-rx-event-idx")):
        write = 2 if cfg & 0x40 else 0
        ring = bytearray(desc.size * qsize)
        for i in range(5):
            desc.pack_into(ring, desc.size * 2 * i, 0x3000 + 0x100 * i, 64, i, 1 | write | avail)
            desc.pack_into(ring, desc.size * (2 * i + 1), 0x3080 + 0x100 * i, 64, i, write | avail)
        desc.pack_into(ring, desc.size * 10, 0x4000, 3 * desc.size, 10, 4 | avail)
        driver_event = struct.pack("<HH", 0x8000 | 3, 2)  # interrupt at slot 3 (EVENT_IDX)
        bufs = bytearray(0x2000)
        for j in range(3):
            desc.pack_into(bufs, 0x1000 + desc.size * j, 0x5000 + 0x40 * j, 32, 0, write)
        out[name] = bytes([cfg, rewinds, qsize - 1]) + bytes(ring) + driver_event + bytes(bufs)
    return out


def headers_seeds() -> dict[str, bytes]:
    return {name: frame for name, (_hdr, frame) in frames().items()}


def chan_seeds() -> dict[str, bytes]:
    def msg(msg_id: int, command: int, body: bytes, flags: int = 0) -> bytes:
        return P.Header(msg_id, command, P.HEADER_SIZE + len(body), flags).pack() + body
    version = P.VERSION.pack(0, 0) + json.dumps({"capabilities": {"max_msg_fds": 16}}).encode() + b"\0"
    doorbell = P.REGION_ACCESS.pack(0x3000, 4, 2) + b"\1\0"
    stream = (msg(1, Command.VERSION, version) + msg(2, Command.DEVICE_GET_INFO, b"") +
              msg(3, Command.REGION_WRITE, doorbell, P.FLAG_NO_REPLY) +
              msg(4, Command.REGION_WRITE, doorbell) +
              msg(5, Command.DMA_READ, P.DMA_ACCESS.pack(0x1000, 4) + b"abcd", P.FLAG_REPLY) +
              msg(6, Command.DEVICE_RESET, b""))
    return {"session": b"\0" + stream, "with-fd": b"\1" + stream, "short": b"\0" + stream[:40]}


def session_seeds() -> dict[str, bytes]:
    def m(command: int, body: bytes, flags: int = 0, fds: int = 0) -> bytes:
        return struct.pack("<HIBH", command, flags, fds, len(body)) + body
    version = P.VERSION.pack(0, 0) + json.dumps({"capabilities": {"max_msg_fds": 16}}).encode() + b"\0"
    dma = P.DMA_MAP.pack(P.DMA_MAP.size, P.DMA_FLAG_READ | P.DMA_FLAG_WRITE, 0, 0x1_0000_0000, 1 << 20)
    irqs = P.IRQ_SET.pack(P.IRQ_SET.size, P.IRQ_SET_DATA_EVENTFD | P.IRQ_SET_ACTION_TRIGGER, 4, 0, 2)
    config = P.REGION_ACCESS.pack(0, 7, 4)
    status = P.REGION_ACCESS.pack(0x14, 0, 1)      # common config device_status (BAR 0 offset)
    bringup = (m(Command.VERSION, version) + m(Command.DEVICE_GET_INFO, b"") +
               m(Command.DEVICE_GET_REGION_INFO, P.REGION_INFO.pack(P.REGION_INFO.size, 0, 0, 0, 0, 0)) +
               m(Command.DEVICE_GET_IRQ_INFO, P.IRQ_INFO.pack(P.IRQ_INFO.size, 0, 4, 0)) +
               m(Command.DMA_MAP, dma, fds=2) + m(Command.DEVICE_SET_IRQS, irqs, fds=9) +
               m(Command.REGION_READ, config) + m(Command.REGION_WRITE, status + b"\x0f") +
               m(Command.DMA_UNMAP, P.DMA_UNMAP.pack(P.DMA_UNMAP.size, 0, 0x1_0000_0000, 1 << 20)) +
               m(Command.DEVICE_RESET, b""))
    return {"bringup": bringup, "version": m(Command.VERSION, version),
            "pipe-irq": m(Command.DEVICE_SET_IRQS, irqs, fds=5)}


def socket_seeds() -> dict[str, bytes]:
    """A stream of length-prefixed frames (kind 0) and the same frames as
    datagrams (kind 1), with and without coalescing; and a stream whose
    second length is garbage."""
    wire = [frame for _hdr, frame in frames().values()]
    stream = b"".join(struct.pack("!I", len(f)) + f for f in wire)
    datagrams = b"".join(struct.pack("<H", len(f)) + f for f in wire)
    return {"stream": bytes([0, 0]) + stream, "stream-coalesce": bytes([0, 1]) + stream,
            "dgram": bytes([1, 0]) + datagrams,
            "garbage": bytes([0, 1]) + struct.pack("!I", len(wire[0])) + wire[0] + b"\xff" * 8}


def main() -> None:
    makers = {"tx": tx_seeds, "rx": rx_seeds, "ctrl": ctrl_seeds, "virtq": virtq_seeds,
              "headers": headers_seeds, "chan": chan_seeds, "socket": socket_seeds,
              "session": session_seeds}
    for target, make in makers.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        for name, data in make().items():
            (folder / f"seed-{name}").write_bytes(data)
        print(f"{target}: {len(list(folder.glob('seed-*')))} seeds")


if __name__ == "__main__":
    main()
