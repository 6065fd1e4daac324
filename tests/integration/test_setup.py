"""Attach, negotiation and queue setup over the real socket, the way QEMU
and a Linux guest do it."""
from __future__ import annotations

import struct

import pytest

from tests.support import driver as D
from tests.support.client import GUEST_IOVA
from tests.support.driver import RX, TX, DriverError, VirtioNetDriver
from vnic.vfio_user import protocol as P
from vnic.virtio import features as feat


def test_attach_describes_a_pci_device_with_msix(serve):
    sd = serve()
    client = sd.connect()
    assert client.server_caps["capabilities"]["max_msg_fds"] >= 1
    assert client.server_caps["capabilities"]["max_data_xfer_size"] >= 4096
    flags, regions, irqs = client.device_info()
    assert flags & P.DEVICE_FLAGS_PCI and flags & P.DEVICE_FLAGS_RESET
    assert (regions, irqs) == (9, 5)
    sizes = {i: size for i, (_, size, _) in client.regions.items()}
    assert sizes == {0: 0, 1: 0x1000, 2: 0, 3: 0, 4: 0x4000, 5: 0, 6: 0, 7: 256, 8: 0}
    for index in (1, 4, 7):
        assert client.regions[index][0] & (P.REGION_FLAG_READ | P.REGION_FLAG_WRITE) == 3
    assert client.irqs[2] == 4                    # MSI-X: config + RX + TX + control
    assert client.irqs[0] == 0                    # no INTx
    assert client.config[:4] == bytes.fromhex("f41a4110")
    assert list(sd.device.memory.mappings) == [(GUEST_IOVA, client.memory.size)]


def test_bring_up_reaches_driver_ok_with_every_offered_feature(served_device, ring):
    d = served_device.driver
    assert d.status == D.ACKNOWLEDGE | D.DRIVER | D.FEATURES_OK | D.DRIVER_OK
    layout = 0 if ring == "split" else 1 << D.F_RING_PACKED    # the split layout: packed refused
    assert d.features == served_device.device.offered_features() & ~(1 << D.F_RING_PACKED) | layout
    assert served_device.device.negotiated == d.features
    cfg = d.net_config()
    assert cfg["mac"] == bytes.fromhex("525400123456")
    assert cfg["status"] & 1 and cfg["max_virtqueue_pairs"] == 1 and cfg["mtu"] == 1500


def test_queue_registers_read_back_above_4g(served_device):
    d = served_device.driver
    for index in (RX, TX):
        q = d.queues[index]
        d.common_write("queue_select", index)
        assert d.common_read("queue_desc") == q.desc > 0xFFFF_FFFF
        assert d.common_read("queue_driver") == q.driver_area
        assert d.common_read("queue_device") == q.device_area
        assert d.common_read("queue_size") == q.size == 256
        assert d.common_read("queue_enable") == 1
        assert d.common_read("queue_msix_vector") == index + 1
    assert d.common_read("config_msix_vector") == 0


def test_negotiation_of_a_chosen_subset(serve, ring):
    sd = serve()
    d = VirtioNetDriver(sd.connect())
    features = d.start(accept=1 << D.F_VERSION_1).features
    assert features == 1 << D.F_VERSION_1 | (1 << D.F_RING_PACKED if ring == "packed" else 0)
    assert sd.device.negotiated == features
    d.transmit(bytes(60))
    d.complete_tx()
    assert sd.stats()["tx_packets"] == 1
    d.close()


def test_refused_features_leave_the_device_unstarted(serve):
    sd = serve(features=feat.apply_changes(feat.DEFAULT, "-event_idx"))
    d = VirtioNetDriver(sd.connect())
    with pytest.raises(DriverError, match="refused"):
        d.start(accept=d.device_features() | 1 << D.F_EVENT_IDX)
    assert d.status & D.FAILED
    assert not sd.device.negotiated
    d.start()                                    # a driver can reset and try again
    assert not d.has(D.F_EVENT_IDX)
    d.close()


def test_smaller_queues(serve):
    sd = serve()
    d = VirtioNetDriver(sd.connect(), queue_size=16)
    d.start()
    assert d.queues[TX].size == 16
    for _ in range(3):                           # wrap the 16-entry ring several times
        for _ in range(16):
            d.transmit(bytes(60))
        d.complete_tx(16)
    assert sd.stats()["tx_packets"] == 48
    d.close()


def test_posted_writes_get_no_reply(served_device):
    client, d = served_device.client, served_device.driver
    d.kick(TX, force=True)                                     # doorbell, fast path in C
    client.region_write(4, d.caps.common.offset + 0x16, b"\x01\x00", posted=True)   # queue_select
    client.region_write(9, 0, b"\0\0\0\0", posted=True)         # an error, still silent
    assert client.quiet_for(0.2) == []
    assert d.common_read("queue_select") == 1                  # the posted write was applied


def test_doorbell_with_reply_is_answered(served_device):
    client, d = served_device.client, served_device.driver
    offset = d.caps.notify.offset + d.queues[TX].notify_off * d.caps.notify_multiplier
    d.transmit(bytes(60), kick=False)
    client.region_write(4, offset, b"\x01\x00")               # non-posted: waits for the reply
    d.complete_tx()
    assert served_device.harness.stats()["tx_kicks"] >= 1


def test_region_write_multi_reaches_registers(served_device):
    """REGION_WRITE_MULTI (QEMU's batched posted writes) applies each entry."""
    client, d = served_device.client, served_device.driver
    base = d.caps.common.offset
    entries = [(base + 0x16, 4, 2, struct.pack("<H", 1).ljust(8, b"\0")),      # queue_select = 1
               (base + 0x00, 4, 4, struct.pack("<I", 1).ljust(8, b"\0"))]      # device_feature_select = 1
    body = struct.pack("<Q", len(entries)) + b"".join(P.MULTI_WRITE_ENTRY.pack(*e) for e in entries)
    client.send(P.Command.REGION_WRITE_MULTI, body, flags=P.FLAG_NO_REPLY)
    assert client.quiet_for(0.1) == []
    assert d.common_read("queue_select") == 1
    assert d.common_read("device_feature_select") == 1
