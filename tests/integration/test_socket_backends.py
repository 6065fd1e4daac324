"""Socket backends with the in-repo driver: frames cross a stream socket
behind QEMU's -netdev stream framing (4-byte big-endian length) and a
datagram socket one per datagram, both ways; the device segments what it
sends (no GSO crosses); a peer that goes takes the link down and one that
comes back brings it up; garbage lengths and a peer that does not read
are counted, never fatal, and nothing is lost to backpressure."""
from __future__ import annotations

import os
import socket
import struct
import time
from types import SimpleNamespace

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from tests.support.driver import NET_HDR, VirtioNetDriver
from tests.support.frames import udp_frame
from vnic.backends import Address, DgramBackend, StreamBackend, parse
from vnic.errors import BackendError

LINK_UP = 1
PREFIX = struct.Struct("!I")


def bring_up(sd) -> SimpleNamespace:
    driver = VirtioNetDriver(sd.connect())
    driver.start()
    return SimpleNamespace(harness=sd, device=sd.device, driver=driver)


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Peer:
    """The far end of a stream backend: frames in and out with the length
    prefix."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.settimeout(5)
        self.buf = b""

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(PREFIX.pack(len(f)) + f for f in frames))

    def recv_frames(self, count: int) -> list[bytes]:
        frames = []
        while len(frames) < count:
            if len(self.buf) >= 4 and len(self.buf) >= 4 + PREFIX.unpack_from(self.buf)[0]:
                n = PREFIX.unpack_from(self.buf)[0]
                frames.append(self.buf[4:4 + n])
                self.buf = self.buf[4 + n:]
                continue
            chunk = self.sock.recv(1 << 20)
            assert chunk, f"the device hung up after {len(frames)} of {count} frames"
            self.buf += chunk
        return frames

    def hung_up(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while chunk := self.sock.recv(65536):
                del chunk
        except (ConnectionResetError, TimeoutError):
            return False
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listening(serve, tmp_path):
    """A device on stream-listen:PATH at DRIVER_OK, and connect() for peers."""
    path = f"{tmp_path}/peer.sock"
    sd = serve(backend=StreamBackend(Address.parse(path), listen=True))
    dev = bring_up(sd)
    peers: list[Peer] = []

    def connect() -> Peer:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        peers.append(Peer(s))
        assert wait_for(lambda: dev.device.carrier), "the device never took the peer"
        return peers[-1]

    dev.connect = connect
    yield dev
    for p in peers:
        p.close()
    dev.driver.close()


def link_up(dev) -> bool:
    return bool(dev.driver.net_config()["status"] & LINK_UP)


def tso_frame(payload: int) -> bytes:
    pkt = Ether(src="52:54:00:12:34:56", dst="02:00:00:00:00:01") / \
        IP(src="10.213.0.2", dst="10.213.0.1") / TCP(sport=40000, dport=5201, flags="PA", seq=1000) / \
        bytes(i % 251 for i in range(payload))
    return bytes(pkt)


def checksums_valid(frame: bytes) -> bool:
    pkt = Ether(frame)
    fresh = Ether(frame)
    del fresh[IP].chksum, fresh[TCP].chksum
    fresh = Ether(bytes(fresh))
    return (fresh[IP].chksum, fresh[TCP].chksum) == (pkt[IP].chksum, pkt[TCP].chksum)


def test_no_peer_means_link_down_and_a_peer_brings_it_up(listening):
    d = listening
    assert not link_up(d)
    d.driver.take_irq(d.driver.CONFIG_VECTOR)
    d.connect()
    assert link_up(d)
    assert d.driver.wait_irq(d.driver.CONFIG_VECTOR) >= 1, "no config interrupt for the link change"


def test_guest_frames_reach_the_peer_behind_their_length(listening):
    d = listening
    peer = d.connect()
    frames = [udp_frame(size, i) for i, size in enumerate([60, 64, 1000, 1514, 9014, 42])]
    for f in frames:
        d.driver.transmit(f)
    d.driver.complete_tx(len(frames))
    assert peer.recv_frames(len(frames)) == frames
    st = d.harness.stats()
    assert st["tx_packets"] == len(frames) and st["tx_drops_backend"] == 0


def test_a_super_frame_crosses_as_wire_frames_with_checksums(listening):
    d = listening
    peer = d.connect()
    frame = tso_frame(20000)
    hdr = NET_HDR.pack(1, 1, 54, 1448, 34, 16, 0)        # NEEDS_CSUM, GSO_TCPV4
    d.driver.transmit(frame, header=hdr)
    d.driver.complete_tx()
    segments = peer.recv_frames(-(-20000 // 1448))
    assert all(len(s) <= 14 + 20 + 20 + 1448 for s in segments)
    assert all(checksums_valid(s) for s in segments)
    assert b"".join(bytes(Ether(s)[TCP].payload) for s in segments) == frame[54:]
    assert d.harness.stats()["tx_tso_segments"] == len(segments)


def test_peer_frames_reach_the_guest_even_when_split_mid_frame(listening):
    d = listening
    peer = d.connect()
    d.driver.post_rx(32)
    frames = [udp_frame(size, i, to_guest=True) for i, size in enumerate([60, 1514, 300, 1000])]
    wire = b"".join(PREFIX.pack(len(f)) + f for f in frames)
    for i in range(0, len(wire), 7):                     # 7-byte pieces: lengths split too
        peer.sock.sendall(wire[i:i + 7])
    packets = d.driver.receive(len(frames), timeout=5)
    assert [p.frame for p in packets] == frames


def test_a_peer_that_goes_takes_the_link_down_and_the_next_brings_it_up(listening):
    d = listening
    first = d.connect()
    d.driver.post_rx(8)
    last = udp_frame(200, 7, to_guest=True)
    first.send(last)
    first.close()                                        # its last frame still reaches the guest
    assert [p.frame for p in d.driver.receive(1, timeout=5)] == [last]
    assert wait_for(lambda: not link_up(d))
    assert d.harness.wait_stat("backend_disconnects", 1) == 1
    second = d.connect()
    assert link_up(d)
    frame = udp_frame(100, 1)
    d.driver.transmit(frame)
    d.driver.complete_tx()
    assert second.recv_frames(1) == [frame]


def test_a_length_past_any_frame_drops_the_peer_counted(listening):
    d = listening
    peer = d.connect()
    d.driver.post_rx(8)
    peer.sock.sendall(PREFIX.pack(70000) + bytes(64))
    assert peer.hung_up(), "the device kept a peer speaking garbage"
    st = d.harness.stats()
    assert st["rx_drops_framing"] == 1 and st["backend_disconnects"] == 1
    assert wait_for(lambda: not link_up(d))
    again = d.connect()                                  # the next peer is served as usual
    frame = udp_frame(500, 2, to_guest=True)
    again.send(frame)
    assert [p.frame for p in d.driver.receive(1, timeout=5)] == [frame]


def test_a_runt_is_dropped_and_the_stream_goes_on(listening):
    d = listening
    peer = d.connect()
    d.driver.post_rx(8)
    good = udp_frame(100, 3, to_guest=True)
    peer.send(b"\x01\x02\x03", good)
    assert [p.frame for p in d.driver.receive(1, timeout=5)] == [good]
    assert d.harness.stats()["rx_drops_backend"] == 1
    assert link_up(d)


def test_a_peer_that_does_not_read_holds_tx_back_and_loses_nothing(listening):
    d = listening
    peer = d.connect()
    frames = [udp_frame(9014, i) for i in range(200)]    # 1.8 MB: more than the device keeps
    for f in frames:
        d.driver.transmit(f, kick=False)
    d.driver.kick(1)
    assert d.harness.wait_stat("tx_backend_waits", 1) >= 1
    time.sleep(0.2)
    assert d.harness.stats()["tx_packets"] < len(frames), "nothing held back"
    assert peer.recv_frames(len(frames)) == frames       # the rest follows as the peer reads
    d.driver.complete_tx(len(frames), timeout=5)
    st = d.harness.stats()
    assert st["tx_packets"] == len(frames) and st["tx_drops_backend"] == 0


def listen_unix(path: str) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(5)
    return listener


def test_a_connecting_device_reconnects_after_its_peer_goes(serve, tmp_path):
    path = str(tmp_path / "far.sock")
    listener = listen_unix(path)
    sd = serve(backend=StreamBackend(Address.parse(path), listen=False))
    d = bring_up(sd)
    first = Peer(listener.accept()[0])
    assert link_up(d)
    listener.close()
    os.unlink(path)
    first.close()                                        # gone, and nobody to reconnect to
    assert wait_for(lambda: not link_up(d))
    listener = listen_unix(path)
    second = Peer(listener.accept()[0])                  # it came back by itself
    assert wait_for(lambda: link_up(d))
    frame = udp_frame(300, 4)
    d.driver.transmit(frame)
    d.driver.complete_tx()
    assert second.recv_frames(1) == [frame]
    second.close()
    listener.close()
    d.driver.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dgram_carries_a_frame_per_datagram_both_ways(serve):
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.1", 0))
    far.settimeout(5)
    local = free_udp_port()
    sd = serve(backend=parse(f"dgram:127.0.0.1:{local},127.0.0.1:{far.getsockname()[1]}"))
    d = bring_up(sd)
    assert link_up(d)                                    # no peer to lose
    frames = [udp_frame(size, i) for i, size in enumerate([60, 1514, 700])]
    for f in frames:
        d.driver.transmit(f)
    d.driver.complete_tx(len(frames))
    assert [far.recv(65536) for _ in frames] == frames
    d.driver.post_rx(8)
    back = [udp_frame(size, i, to_guest=True) for i, size in enumerate([1514, 64])]
    for f in back:
        far.sendto(f, ("127.0.0.1", local))
    far.sendto(b"\x00" * 5, ("127.0.0.1", local))        # a runt: counted, dropped
    assert [p.frame for p in d.driver.receive(2, timeout=5)] == back
    assert sd.wait_stat("rx_drops_backend", 1) == 1
    far.close()
    d.driver.close()


def test_dgram_to_nobody_drops_counted_until_someone_binds(serve, tmp_path):
    here, there = str(tmp_path / "here.sock"), str(tmp_path / "there.sock")
    sd = serve(backend=parse(f"dgram:{here},{there}"))
    d = bring_up(sd)
    d.driver.transmit(udp_frame(100, 0))
    d.driver.complete_tx()
    assert sd.wait_stat("tx_drops_backend", 1) == 1
    far = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    far.bind(there)
    far.settimeout(5)
    frame = udp_frame(200, 1)
    d.driver.transmit(frame)
    d.driver.complete_tx()
    assert far.recv(65536) == frame
    far.close()
    d.driver.close()


@pytest.mark.parametrize("spec", ["stream:", "stream:nowhere", "stream:127.0.0.1", "stream:1.2.3.4:0",
                                  "stream-listen:host:80", "dgram:/a", "dgram:/a,/b,/c",
                                  "dgram:127.0.0.1:5000,/b", "stream:/" + "x" * 120])
def test_bad_socket_specs_are_refused_with_a_reason(spec):
    with pytest.raises(BackendError) as e:
        parse(spec)
    assert str(e.value)


def test_a_socket_backend_refuses_more_than_one_queue_pair(tmp_path):
    backend = StreamBackend(Address.parse(str(tmp_path / "s")), listen=True)
    with pytest.raises(BackendError, match="one queue pair"):
        backend.open(queues=2)
    backend.close()
    dgram = DgramBackend(Address.parse("127.0.0.1:1"), Address.parse("127.0.0.1:2"))
    with pytest.raises(BackendError, match="one queue pair"):
        dgram.open(queues=4)


def test_info_shows_whether_the_backend_has_a_peer(tmp_path):
    from vnic.device import Device
    path = str(tmp_path / "info.sock")
    with Device(f"stream-listen:{path}") as dev:
        assert (dev.info()["backend"], dev.info()["carrier"]) == (f"stream-listen:{path}", False)
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        peer.connect(path)
        assert wait_for(lambda: dev.info()["carrier"])
        peer.close()
        assert wait_for(lambda: not dev.info()["carrier"])
