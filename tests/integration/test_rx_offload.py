"""Receive offloads: the device verifies checksums for the guest
(DATA_VALID), flags bad ones for the guest to drop, hands TCP super-frames
from the TAP to a guest that negotiated GUEST_TSO4 whole, and never gives
a guest an offload it did not negotiate."""
from __future__ import annotations

import socket
import struct

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from tests.engine.frames import partial_csum
from tests.support.driver import NET_HDR
from tests.support.frames import GUEST_MAC, PEER_MAC, udp_frame
from tests.support.tapns import in_netns

DATA_VALID, NEEDS_CSUM = 2, 1
GSO_TCPV4 = 1
SOL_PACKET, PACKET_VNET_HDR = 263, 15
# GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN, GUEST_UFO, GUEST_USO4/6
GUEST_OFFLOADS = sum(1 << bit for bit in (1, 7, 8, 9, 10, 54, 55))


def header(packet) -> tuple:
    return NET_HDR.unpack(packet.header)


def corrupt_udp_checksum(frame: bytes) -> bytes:
    field = 14 + 20 + 6
    (value,) = struct.unpack_from("!H", frame, field)
    return frame[:field] + struct.pack("!H", value ^ 0x0101) + frame[field + 2:]


def test_checksums_verified_for_the_guest(tap_device):
    d, tap, sd = tap_device.driver, tap_device.tap, tap_device.harness
    assert d.has(1), "the guest negotiated GUEST_CSUM"
    d.post_rx(8)
    good, bad = udp_frame(600, 1, to_guest=True), corrupt_udp_checksum(udp_frame(600, 2, to_guest=True))
    tap.send(good)
    tap.send(bad)
    first, second = d.receive(2)
    assert header(first)[0] == DATA_VALID and first.frame == good
    assert header(second)[0] == 0 and second.frame == bad      # delivered, the guest drops it
    stats = sd.stats()
    assert (stats["rx_csum_valid"], stats["rx_csum_bad"]) == (1, 1)


def test_no_checksum_flags_without_guest_csum(tap_device):
    d, tap, sd = tap_device.driver, tap_device.tap, tap_device.harness
    d.start(drop=GUEST_OFFLOADS)
    assert not d.has(1)
    d.post_rx(8)
    tap.send(udp_frame(600, 1, to_guest=True))
    [packet] = d.receive(1)
    assert header(packet)[:6] == (0, 0, 0, 0, 0, 0)
    assert sd.stats()["rx_csum_valid"] == 0


def tcp_superframe(payload_len: int) -> bytes:
    """A TCP super-frame with the pseudo-header sum in its checksum field,
    as the host stack hands one to a device that segments."""
    payload = bytes((i * 3) & 0xFF for i in range(payload_len))
    frame = bytes(Ether(src=PEER_MAC, dst=GUEST_MAC) / IP(src="10.213.0.1", dst="10.213.0.2", flags="DF")
                  / TCP(sport=5201, dport=40000, seq=1, flags="A") / payload)
    return partial_csum(frame)


def inject_gso(tap_ns, frame: bytes, mss: int) -> None:
    """Send a TCP super-frame onto the TAP's wire as the host stack would:
    through a packet socket with a virtio_net_hdr asking for TSO."""
    def send() -> None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            s.bind((tap_ns.ifname, 0))
            hdr = struct.pack("<BBHHHH", NEEDS_CSUM, GSO_TCPV4, 54, mss, 34, 16)
            s.send(hdr + frame)
        finally:
            s.close()
    in_netns(tap_ns.ns.name, send)


def test_tcp_superframe_reaches_a_tso_guest_whole(tap_device):
    d, tap, sd = tap_device.driver, tap_device.tap, tap_device.harness
    assert d.has(7), "the guest negotiated GUEST_TSO4"
    d.post_rx(64, size=4096)
    frame = tcp_superframe(30000)
    inject_gso(tap, frame, 1448)
    [packet] = d.receive(1, timeout=5)
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset, _n = header(packet)
    assert (gso_type, gso_size) == (GSO_TCPV4, 1448)
    assert flags & NEEDS_CSUM and (csum_start, csum_offset) == (34, 16)
    assert packet.frame[54:] == frame[54:]
    assert sd.stats()["rx_gso_packets"] == 1


def test_guest_without_tso_gets_wire_size_frames(tap_device):
    d, tap, sd = tap_device.driver, tap_device.tap, tap_device.harness
    d.start(drop=GUEST_OFFLOADS)
    d.post_rx(64)
    frame = tcp_superframe(30000)
    inject_gso(tap, frame, 1448)
    packets = d.receive(21, timeout=5)                       # ceil(30000 / 1448)
    assert all(header(p)[1] == 0 and len(p.frame) <= 1514 for p in packets)
    assert b"".join(p.frame[54:] for p in packets) == frame[54:]
    assert sd.stats()["rx_gso_packets"] == 0


def test_lying_ip_lengths_are_left_to_the_guest(tap_device):
    """An IP total length of 0 (or shorter than the headers) once wrapped the
    checksum length to ~4 GiB: such frames must arrive unverified, no crash."""
    d, tap, sd = tap_device.driver, tap_device.tap, tap_device.harness
    d.post_rx(8)
    frames = []
    for length in (0, 20, 30):
        f = bytearray(bytes(Ether(src=PEER_MAC, dst=GUEST_MAC) / IP(src="10.213.0.1", dst="10.213.0.2")
                            / TCP(sport=1, dport=2) / bytes(100)))
        struct.pack_into("!H", f, 14 + 2, length)
        frames.append(bytes(f))
        tap.send(bytes(f))
    got = d.receive(3)
    assert [p.frame for p in got] == frames
    assert all(header(p)[0] == 0 for p in got)               # not claimed as verified
    assert sd.stats()["rx_csum_valid"] == 0 and sd.alive
