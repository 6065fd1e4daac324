"""Packet capture: what the device sent and received, in pcapng files read
back by tshark and scapy.  The wire side shows frames after segmentation
and before coalescing, with valid checksums; the guest side shows
super-frames once, their virtio-net header in the packet comment; counts
and directions equal the device's counters; a writer that cannot keep up
costs captured frames (counted), never the NIC's."""
from __future__ import annotations

import math
import os
import threading

import pytest

from tests.engine.frames import partial_csum
from tests.integration.test_flows import GSO_TCPV4, frame, gso_header, send
from tests.integration.test_rx_coalesce import MSS, inject_without_buffers, receive_all, segments
from tests.support import pcapng
from tests.support.driver import NET_HDR
from tests.support.frames import udp_frame
from vnic.errors import ConfigError
from vnic.telemetry.capture import Capture, CaptureSpec

pytestmark = pytest.mark.ring("split")     # captures are of frames, not of ring layouts
GSO_NAMES = {0: "none", GSO_TCPV4: "tcpv4"}


def tso_request(payload: int = 10000) -> tuple[bytes, bytes]:
    """A guest TCP super-frame with its partial checksum, and its header."""
    return partial_csum(frame("tcp", payload=payload)), gso_header(GSO_TCPV4, 1448, 34, 54, False)


def test_wire_shows_the_segments_with_valid_checksums(served_device, capture_on):
    d = served_device.driver
    cap, path = capture_on(served_device, what="wire")
    guest_frame, header = tso_request()
    send(d, [guest_frame], header=header)
    status = cap.stop()
    packets = pcapng.read(path)
    assert len(packets) == math.ceil(10000 / 1448) == status["packets_written"] == status["captured"]
    assert pcapng.directions(packets) == (0, len(packets))
    assert sum(p.length - 54 for p in packets) == 10000
    for p in packets:
        assert p.checksums == (pcapng.CHECKSUM_GOOD, pcapng.CHECKSUM_GOOD)    # IP and TCP
        assert p.comment == "" and p.queue == 0 and p.interface == "vnic:test"
        assert p.length <= 1514 and p.captured == p.length
    assert served_device.harness.stats()["tx_packets"] == len(packets)


def test_guest_side_shows_the_super_frame_once_with_its_header(served_device, capture_on):
    d = served_device.driver
    cap, path = capture_on(served_device, what="guest")
    guest_frame, header = tso_request()
    send(d, [guest_frame, udp_frame(200)], header=None)
    send(d, [guest_frame], header=header)
    cap.stop()
    plain, plain_udp, tso = pcapng.read(path)
    assert tso.data == guest_frame and tso.length == len(guest_frame)
    assert tso.comment == ("virtio_net_hdr flags=0x01 gso_type=tcpv4 gso_size=1448 hdr_len=54 "
                           "csum_start=34 csum_offset=16")
    asked_nothing = "virtio_net_hdr flags=0x00 gso_type=none gso_size=0 hdr_len=0 csum_start=0 csum_offset=0"
    assert plain.comment == plain_udp.comment == asked_nothing
    assert plain.data == guest_frame
    assert pcapng.directions([plain, plain_udp, tso]) == (0, 3)


def test_received_segments_on_the_wire_one_super_frame_for_the_guest(tap_device, capture_on):
    d, sd = tap_device.driver, tap_device.harness
    assert d.has(7)                                     # GUEST_TSO4: the device coalesces
    # the guest side first, while the guest has no buffers: the 8 are read in one batch
    before = sd.stats()["rx_packets"]
    cap, guest = capture_on(tap_device, "guest.pcapng", what="guest", direction="rx")
    inject_without_buffers(tap_device, segments(8, seq=1000))
    d.post_rx(64, size=4096)
    got = receive_all(d, 8 * MSS)
    cap.stop()
    delivered = sd.stats()["rx_packets"] - before
    cap, wire = capture_on(tap_device, "wire.pcapng", what="wire", direction="rx")
    inject_without_buffers(tap_device, segments(8, seq=1000 + 8 * MSS))
    receive_all(d, 8 * MSS)
    cap.stop()

    on_wire = pcapng.read(wire)
    assert len(on_wire) == 8 and pcapng.directions(on_wire) == (8, 0)
    assert [p.data for p in on_wire] == segments(8, seq=1000 + 8 * MSS)
    given = pcapng.read(guest)
    assert len(given) == len(got) == delivered
    assert [p.data for p in given] == [bytes(p.frame) for p in got]
    # each comment is the header the guest found in its buffers
    for packet, received in zip(given, got, strict=True):
        flags, gso, hdr_len, gso_size, start, offset, buffers = NET_HDR.unpack(received.header)
        assert packet.comment == (f"virtio_net_hdr flags=0x{flags:02x} gso_type={GSO_NAMES[gso]} "
                                  f"gso_size={gso_size} hdr_len={hdr_len} csum_start={start} "
                                  f"csum_offset={offset} num_buffers={buffers}")
    assert any("gso_type=tcpv4 gso_size=1448" in p.comment for p in given), "nothing was coalesced"
    assert sum(len(p.data) - 66 for p in given) == 8 * MSS


def test_counts_and_directions_equal_the_device_counters(tap_device, capture_on):
    d, sd = tap_device.driver, tap_device.harness
    cap, path = capture_on(tap_device, what="wire", direction="both")
    d.post_rx(32)
    for i in range(5):
        tap_device.tap.send(udp_frame(300 + i, i, to_guest=True))
    d.receive(5)
    send(d, [udp_frame(100 + i, i) for i in range(7)])
    status = cap.stop()
    stats = sd.stats()
    packets = pcapng.read(path)
    assert pcapng.directions(packets) == (stats["rx_packets"], stats["tx_packets"]) == (5, 7)
    assert status["captured"] == stats["capture_packets"] == 12 and stats["capture_drops"] == 0


def test_direction_and_snaplen_are_honoured(served_device, capture_on):
    d = served_device.driver
    cap, path = capture_on(served_device, direction="rx", name="rx.pcapng")
    send(d, [udp_frame(1000)])
    cap.stop()
    assert pcapng.read(path) == []
    cap, path = capture_on(served_device, snaplen=100, name="short.pcapng")
    sent = udp_frame(1000)
    send(d, [sent])
    cap.stop()
    [p] = pcapng.read(path)
    assert (p.captured, p.length, p.data) == (100, 1000, sent[:100])


def test_a_full_ring_counts_drops_and_never_holds_the_nic(served_device, tmp_path):
    """A FIFO nobody reads: the writer blocks, the 64 KiB ring fills, frames
    beyond it are capture_drops, and every frame still goes out."""
    d, sd = served_device.driver, served_device.harness
    fifo = tmp_path / "live"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    cap = Capture(sd.device.native, "vnic:test")
    cap.start(CaptureSpec(str(fifo), snaplen=2048, buffer_kib=64))
    frames = [udp_frame(1000, i) for i in range(400)]
    for i in range(0, len(frames), 50):
        send(d, frames[i:i + 50])
    assert sd.stats()["tx_packets"] == 400
    mid = cap.status()
    assert mid["ring_drops"] > 0 and mid["captured"] + mid["ring_drops"] == 400
    assert sd.stats()["capture_drops"] == mid["ring_drops"]
    os.set_blocking(reader, True)
    data = bytearray()
    drained = threading.Thread(target=lambda: data.extend(b"".join(iter_read(reader))))
    drained.start()
    status = cap.stop()
    drained.join(10)
    os.close(reader)
    (tmp_path / "got.pcapng").write_bytes(data)
    packets = pcapng.read(tmp_path / "got.pcapng")
    assert len(packets) == status["packets_written"] == mid["captured"]
    order = [frames.index(p.data) for p in packets]
    assert order == sorted(order) and order[0] == 0       # the first ones, in order


def iter_read(fd: int):
    while chunk := os.read(fd, 1 << 16):
        yield chunk


# ---- bad requests ------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    (CaptureSpec("relative.pcapng"), "absolute path"),
    (CaptureSpec("/tmp/x.pcapng", snaplen=0), "snaplen"),
    (CaptureSpec("/tmp/x.pcapng", snaplen=True), "snaplen"),
    (CaptureSpec("/tmp/x.pcapng", snaplen=10**9), "snaplen"),
    (CaptureSpec("/tmp/x.pcapng", direction="up"), "direction"),
    (CaptureSpec("/tmp/x.pcapng", direction=["rx"]), "direction"),  # type: ignore[arg-type]
    (CaptureSpec("/tmp/x.pcapng", what="both"), "what"),
    (CaptureSpec("/tmp/x.pcapng", buffer_kib=1), "buffer_kib"),
    (CaptureSpec("/tmp/x.pcapng", buffer_kib=64, snaplen=65535), "cannot hold two frames"),
    (CaptureSpec("/nonexistent/dir/x.pcapng"), "No such file"),
])
def test_bad_captures_are_refused_and_nothing_is_left_on(served_device, spec, message):
    cap = Capture(served_device.device.native, "vnic:test")
    with pytest.raises(ConfigError, match=message):
        cap.start(spec)
    assert cap.status() == {"running": False}
    with pytest.raises(ConfigError, match="no capture is on"):
        cap.stop()


def test_one_capture_at_a_time(served_device, capture_on, tmp_path):
    cap, path = capture_on(served_device)
    with pytest.raises(ConfigError, match="already on"):
        cap.start(CaptureSpec(str(tmp_path / "other.pcapng")))
    assert not (tmp_path / "other.pcapng").exists()
    assert cap.status()["running"] is True and cap.status()["file"] == str(path)
