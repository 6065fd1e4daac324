"""The control queue: receive modes, MAC tables, the MAC address, VLAN
filtering, guest offloads and announce acks, each checked by what the
device then accepts or filters; malformed commands get VIRTIO_NET_ERR."""
from __future__ import annotations

import os
import struct

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from tests.support.driver import CTRL
from tests.support.frames import GUEST_MAC, PEER_MAC

OK, ERR = 0, 1
RX, MAC, VLAN, ANNOUNCE, OFFLOADS = 0, 1, 2, 3, 5
PROMISC, ALLMULTI, ALLUNI, NOMULTI, NOUNI, NOBCAST = range(6)
OTHER_MAC = "02:00:00:00:00:99"
MCAST = "01:00:5e:00:00:42"
BCAST = "ff:ff:ff:ff:ff:ff"


def mac_bytes(mac: str) -> bytes:
    return bytes(int(b, 16) for b in mac.split(":"))


def frame(dst: str, tag: int | None = None, seq: int = 0) -> bytes:
    p = Ether(src=PEER_MAC, dst=dst)
    if tag is not None:
        p = p / Dot1Q(vlan=tag)
    return bytes(p / IP(src="10.213.0.1", dst="10.213.0.2", id=seq) / UDP(sport=9, dport=9) / bytes(64))


def delivered(dev, frames: list[bytes], marker: bytes | None = None) -> list[bytes]:
    """Which of these frames the guest receives (sent with a marker frame
    last, which the filter passes, so nothing is waited for in vain)."""
    d, tap = dev.driver, dev.tap
    marker = marker or frame(BCAST, seq=0xBEEF)
    for f in frames + [marker]:
        tap.send(f)
    got = []
    while True:
        [p] = d.receive(1, timeout=3)
        if p.frame == marker:
            return got
        got.append(p.frame)


def table(*macs: str) -> bytes:
    return struct.pack("<I", len(macs)) + b"".join(mac_bytes(m) for m in macs)


@pytest.fixture
def ctrl_dev(tap_device):
    d = tap_device.driver
    assert CTRL in d.queues, "the control queue was negotiated"
    d.post_rx(128)
    return tap_device


def test_promiscuous_until_the_driver_turns_it_off(ctrl_dev):
    d = ctrl_dev.driver
    to_other = frame(OTHER_MAC)
    assert delivered(ctrl_dev, [to_other]) == [to_other]         # promiscuous after reset
    assert d.control(RX, PROMISC, b"\0") == OK
    assert delivered(ctrl_dev, [to_other, frame(GUEST_MAC)]) == [frame(GUEST_MAC)]
    assert ctrl_dev.harness.stats()["rx_filtered_mac"] == 1


def test_unicast_and_multicast_tables(ctrl_dev):
    d = ctrl_dev.driver
    d.control(RX, PROMISC, b"\0")
    mine, other, mc = frame(GUEST_MAC), frame(OTHER_MAC), frame(MCAST)
    assert delivered(ctrl_dev, [mine, other, mc]) == [mine]
    assert d.control(MAC, 0, table(OTHER_MAC) + table(MCAST)) == OK
    assert delivered(ctrl_dev, [mine, other, mc]) == [mine, other, mc]
    assert d.control(RX, ALLMULTI, b"\1") == OK
    assert d.control(MAC, 0, table() + table()) == OK
    assert delivered(ctrl_dev, [other, frame("01:00:5e:11:22:33")]) == [frame("01:00:5e:11:22:33")]


def test_extra_rx_modes(ctrl_dev):
    d, sd = ctrl_dev.driver, ctrl_dev.harness
    d.control(RX, PROMISC, b"\0")
    other, bc, mc, mine = frame(OTHER_MAC), frame(BCAST, seq=1), frame(MCAST), frame(GUEST_MAC)
    to_me = frame(GUEST_MAC, seq=0xBEEF)
    assert d.control(RX, NOBCAST, b"\1") == OK
    assert d.control(RX, ALLUNI, b"\1") == OK
    assert d.control(RX, ALLMULTI, b"\1") == OK
    assert delivered(ctrl_dev, [other, bc, mc], marker=to_me) == [other, mc]
    assert d.control(RX, NOMULTI, b"\1") == OK                       # beats ALLMULTI
    assert delivered(ctrl_dev, [mc, bc], marker=to_me) == []
    assert d.control(RX, NOBCAST, b"\0") == OK
    assert d.control(RX, NOUNI, b"\1") == OK                         # even my own address
    assert delivered(ctrl_dev, [mine, other]) == []
    assert sd.stats()["rx_filtered_mac"] == 5


def test_mac_address_set_changes_what_is_mine(ctrl_dev):
    d = ctrl_dev.driver
    d.control(RX, PROMISC, b"\0")
    assert d.control(MAC, 1, mac_bytes(OTHER_MAC)) == OK
    assert d.net_config()["mac"] == mac_bytes(OTHER_MAC)
    assert delivered(ctrl_dev, [frame(GUEST_MAC), frame(OTHER_MAC)]) == [frame(OTHER_MAC)]
    assert d.control(MAC, 1, mac_bytes(MCAST)) == ERR                # a multicast address


def test_vlan_filter(ctrl_dev):
    d = ctrl_dev.driver
    d.control(RX, PROMISC, b"\0")
    tagged5, tagged7 = frame(GUEST_MAC, tag=5), frame(GUEST_MAC, tag=7)
    assert delivered(ctrl_dev, [tagged5, tagged7]) == []
    assert d.control(VLAN, 0, struct.pack("<H", 5)) == OK
    assert delivered(ctrl_dev, [tagged5, tagged7]) == [tagged5]
    assert d.control(VLAN, 1, struct.pack("<H", 5)) == OK
    assert delivered(ctrl_dev, [tagged5]) == []
    assert ctrl_dev.harness.stats()["rx_filtered_vlan"] == 4
    assert d.control(VLAN, 0, struct.pack("<H", 4096)) == ERR


def test_guest_offloads_switch_receive_checksum_flags(ctrl_dev):
    d = ctrl_dev.driver
    good = frame(GUEST_MAC)
    ctrl_dev.tap.send(good)
    [p] = d.receive(1)
    assert p.header[0] == 2                                           # DATA_VALID
    assert d.control(OFFLOADS, 0, struct.pack("<Q", 0)) == OK
    ctrl_dev.tap.send(good)
    [p] = d.receive(1)
    assert p.header[0] == 0
    assert d.control(OFFLOADS, 0, struct.pack("<Q", 1 << 30)) == ERR  # not a guest offload
    # Linux lists GUEST_HDRLEN with its offloads: accepted, and only GUEST_CSUM is on
    assert d.control(OFFLOADS, 0, struct.pack("<Q", 1 << 59 | 1 << 1)) == OK
    ctrl_dev.tap.send(good)
    [p] = d.receive(1)
    assert p.header[0] == 2


def test_announce_and_ack(ctrl_dev):
    d, device = ctrl_dev.driver, ctrl_dev.harness.device
    assert device.announce()
    assert d.net_config()["status"] & 2
    assert d.wait_irq(d.CONFIG_VECTOR)
    assert d.control(ANNOUNCE, 0) == OK
    assert not d.net_config()["status"] & 2


@pytest.mark.parametrize("cls,cmd,data", [
    (RX, PROMISC, b""),                  # missing the on/off byte
    (RX, 9, b"\1"),                      # no such rx mode
    (MAC, 0, struct.pack("<I", 1000)),   # claims more entries than it carries
    (MAC, 0, table(OTHER_MAC)),          # the multicast table is missing
    (MAC, 7, b""),
    (VLAN, 0, b"\5"),                    # a 1-byte VLAN ID
    (ANNOUNCE, 0, b"\1"),                # ack takes no data
    (OFFLOADS, 0, b"\0" * 4),
    (42, 0, b""),                        # no such class
])
def test_malformed_commands_get_err_and_the_device_goes_on(ctrl_dev, cls, cmd, data):
    d = ctrl_dev.driver
    before = ctrl_dev.harness.stats()
    assert d.control(cls, cmd, data) == ERR
    after = ctrl_dev.harness.stats()
    assert after["ctrl_errors"] == before["ctrl_errors"] + 1
    assert d.control(RX, PROMISC, b"\1") == OK                      # still serving
    assert not d.status & 0x40


def test_a_4gib_control_descriptor_is_refused_not_copied(ctrl_dev):
    """A readable piece as long as 4 GiB - 1 must not wrap the length check
    of the control-command buffer (it once overflowed it)."""
    d, client = ctrl_dev.driver, ctrl_dev.driver.client
    big = os.memfd_create("vnic-test-big")
    try:
        os.ftruncate(big, 5 << 30)                 # sparse: no memory is used
        client.dma_map(iova=0x40_0000_0000, size=5 << 30, fd=big)
        head = d.mem.alloc(2, 8)
        d.mem.write(head, bytes([RX, PROMISC]))
        ack = d.mem.alloc(1, 8)
        d.mem.write(ack, b"\xee")
        d.queues[CTRL].add([(head, 2, False), (0x40_0000_0000, 0xFFFFFFFF, False), (ack, 1, True)],
                                   owned=[head, ack])
        d.kick(CTRL, force=True)
        [used] = d.wait_used(CTRL, 1)
        assert d.mem.read(ack, 1)[0] == ERR
        d.queues[CTRL].release_chain(used.chain)
        assert d.control(RX, PROMISC, b"\1") == OK             # and the device goes on
        assert ctrl_dev.harness.alive
    finally:
        os.close(big)
