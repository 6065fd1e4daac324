"""The modern virtio PCI transport: the common configuration registers and
the device status machine, driven through BAR4 as a driver would."""
from __future__ import annotations

import struct

import pytest

from tests.support import driver as spec
from vnic.virtio.features import F

VERSION_1 = 1 << 32


class Common:
    """virtio_pci_common_cfg accessed through BAR4 at the spec's offsets."""

    def __init__(self, transport):
        self.bar = transport.regions[4]
        caps, _ = spec.parse_capabilities(transport.regions[7].read(0, 256))
        self.base = caps.common.offset
        self.isr = caps.isr.offset
        self.device = caps.device.offset

    def read(self, name: str) -> int:
        off, size = spec.COMMON[name]
        return int.from_bytes(self.bar.read(self.base + off, size), "little")

    def write(self, name: str, value: int) -> None:
        off, size = spec.COMMON[name]
        self.bar.write(self.base + off, value.to_bytes(size, "little"))

    def write32(self, off: int, value: int) -> None:
        self.bar.write(self.base + off, struct.pack("<I", value))

    def read32(self, off: int) -> int:
        return struct.unpack("<I", self.bar.read(self.base + off, 4))[0]

    def offered(self) -> int:
        bits = 0
        for sel in (0, 1):
            self.write("device_feature_select", sel)
            bits |= self.read("device_feature") << (32 * sel)
        return bits

    def accept(self, bits: int) -> None:
        for sel in (0, 1):
            self.write("driver_feature_select", sel)
            self.write("driver_feature", bits >> (32 * sel) & 0xFFFFFFFF)

    def accepted(self) -> int:
        bits = 0
        for sel in (0, 1):
            self.write("driver_feature_select", sel)
            bits |= self.read("driver_feature") << (32 * sel)
        return bits


@pytest.fixture
def common(transport):
    return Common(transport)


def to_features_ok(common: Common, bits: int) -> int:
    common.write("device_status", spec.ACKNOWLEDGE)
    common.write("device_status", spec.ACKNOWLEDGE | spec.DRIVER)
    common.accept(bits)
    common.write("device_status", spec.ACKNOWLEDGE | spec.DRIVER | spec.FEATURES_OK)
    return common.read("device_status")


def test_offered_features_are_the_devices(common, net):
    offered = common.offered()
    assert offered == net.offered_features()
    assert offered & VERSION_1
    common.write("device_feature_select", 2)           # beyond the 64 bits: zero
    assert common.read("device_feature") == 0


def test_features_ok_sticks_for_an_offered_subset(common):
    offered = common.offered()
    status = to_features_ok(common, VERSION_1 | 1 << F.MRG_RXBUF)
    assert status == spec.ACKNOWLEDGE | spec.DRIVER | spec.FEATURES_OK
    assert common.accepted() == VERSION_1 | 1 << F.MRG_RXBUF
    assert offered & (1 << F.MRG_RXBUF)


def unoffered_bits(common) -> list[int]:
    offered = common.offered()
    bits = [b for b in (F.CTRL_VQ, F.MQ, F.GUEST_TSO4, F.HOST_TSO4, F.CSUM, 40, 61, 63)
            if not offered >> b & 1]
    assert len(bits) >= 3
    return bits


def test_features_ok_refused_for_an_unoffered_feature(common):
    for bit in unoffered_bits(common):
        common.write("device_status", 0)
        status = to_features_ok(common, common.offered() | 1 << bit)
        assert not status & spec.FEATURES_OK, f"bit {bit} accepted"
        assert status == spec.ACKNOWLEDGE | spec.DRIVER


def test_features_ok_refused_without_version_1(common):
    status = to_features_ok(common, common.offered() & ~VERSION_1)
    assert not status & spec.FEATURES_OK


def test_driver_may_retry_after_a_refusal(common):
    assert not to_features_ok(common, common.offered() | 1 << unoffered_bits(common)[0]) & spec.FEATURES_OK
    assert to_features_ok(common, VERSION_1) & spec.FEATURES_OK


def test_driver_features_are_frozen_after_features_ok(common):
    to_features_ok(common, VERSION_1)
    common.accept(common.offered())
    assert common.accepted() == VERSION_1


def test_status_zero_resets_everything(common, transport):
    to_features_ok(common, common.offered())
    common.write("config_msix_vector", 0)
    common.write("queue_select", 1)
    common.write("queue_size", 64)
    common.write("queue_msix_vector", 2)
    common.write("queue_desc", 0x1_2345_6000)
    common.write("queue_enable", 1)
    assert common.read("queue_enable") == 1
    common.write("device_status", 0)
    assert common.read("device_status") == 0
    assert common.accepted() == 0
    assert common.read("config_msix_vector") == spec.NO_VECTOR
    assert common.read("queue_select") == 0
    for q in (0, 1):
        common.write("queue_select", q)
        assert common.read("queue_size") == 256
        assert common.read("queue_msix_vector") == spec.NO_VECTOR
        assert common.read("queue_enable") == 0
        assert common.read("queue_desc") == common.read("queue_driver") == common.read("queue_device") == 0


def test_status_keeps_bits_the_driver_sets(common):
    common.write("device_status", spec.ACKNOWLEDGE)
    assert common.read("device_status") == spec.ACKNOWLEDGE
    common.write("device_status", spec.ACKNOWLEDGE | spec.DRIVER | spec.FAILED)
    assert common.read("device_status") == spec.ACKNOWLEDGE | spec.DRIVER | spec.FAILED


@pytest.mark.parametrize("name", ["queue_desc", "queue_driver", "queue_device"])
def test_64bit_queue_address_written_as_two_halves(common, name):
    off = spec.COMMON[name][0]
    common.write("queue_select", 1)
    common.write32(off, 0x89AB_C000)               # low half first, like Linux
    common.write32(off + 4, 0x0000_0001)
    assert common.read(name) == 0x1_89AB_C000
    assert common.read32(off) == 0x89AB_C000 and common.read32(off + 4) == 1
    common.write32(off + 4, 0xFFFF_FFFF)           # either half alone keeps the other
    assert common.read(name) == 0xFFFF_FFFF_89AB_C000
    common.write(name, 0x2_0000_1000)              # one 64-bit access
    assert common.read(name) == 0x2_0000_1000
    common.write("queue_select", 0)
    assert common.read(name) == 0                   # per queue


def test_queues_and_their_notify_offsets(common):
    assert common.read("num_queues") == 3             # RX, TX, control
    seen = set()
    for q in (0, 1, 2):
        common.write("queue_select", q)
        assert common.read("queue_size") == 256
        seen.add(common.read("queue_notify_off"))
    assert len(seen) == 3
    common.write("queue_select", 3)                 # beyond num_queues: size 0 says "no queue"
    assert common.read("queue_size") == 0
    common.write("queue_enable", 1)
    assert common.read("queue_enable") == 0


def test_queue_size_accepts_only_smaller_nonzero_powers_of_two(common):
    common.write("queue_select", 0)
    common.write("queue_size", 64)
    assert common.read("queue_size") == 64
    common.write("queue_size", 0)
    assert common.read("queue_size") == 64
    common.write("queue_size", 1024)
    assert common.read("queue_size") == 64
    common.write("queue_size", 100)                 # split rings wrap only at powers of two
    assert common.read("queue_size") == 64


def test_msix_vectors_beyond_the_table_read_back_no_vector(common):
    common.write("config_msix_vector", 3)
    assert common.read("config_msix_vector") == 3
    common.write("config_msix_vector", 4)           # four vectors: 0..3
    assert common.read("config_msix_vector") == spec.NO_VECTOR
    common.write("queue_select", 0)
    common.write("queue_msix_vector", 99)
    assert common.read("queue_msix_vector") == spec.NO_VECTOR
    common.write("queue_msix_vector", 1)
    assert common.read("queue_msix_vector") == 1


def test_driver_ok_with_rings_outside_guest_memory_needs_reset(common, net):
    """No DMA_MAP at all: the rings cannot be reached, the device must say so
    instead of touching anything."""
    to_features_ok(common, VERSION_1)
    for q in (0, 1):
        common.write("queue_select", q)
        common.write("queue_desc", 0x10000 * (q + 1))
        common.write("queue_driver", 0x10000 * (q + 1) + 0x1000)
        common.write("queue_device", 0x10000 * (q + 1) + 0x2000)
        common.write("queue_enable", 1)
    common.write("device_status", spec.ACKNOWLEDGE | spec.DRIVER | spec.FEATURES_OK | spec.DRIVER_OK)
    status = common.read("device_status")
    assert status & spec.DEVICE_NEEDS_RESET
    assert net.stats()["dma_errors"] >= 1
    common.write("queue_select", 0)
    common.write("queue_desc", 0x5000)              # ring layout frozen after DRIVER_OK
    assert common.read("queue_desc") == 0x10000
    common.write("device_status", 0)
    assert common.read("device_status") == 0        # reset clears NEEDS_RESET


def test_isr_is_read_to_clear_and_link_changes_raise_config_bit(common, net, transport):
    bar = transport.regions[4]
    assert bar.read(common.isr, 1) == b"\0"
    generation = common.read("config_generation")
    net.set_link(False)
    assert bar.read(common.isr, 1)[0] & 2           # configuration change
    assert bar.read(common.isr, 1) == b"\0"         # cleared by the read
    assert common.read("config_generation") != generation
    status = struct.unpack_from("<H", bar.read(common.device + 6, 2))[0]
    assert status & 1 == 0                          # VIRTIO_NET_S_LINK_UP gone
    net.set_link(True)
    assert struct.unpack_from("<H", bar.read(common.device + 6, 2))[0] & 1


def test_device_config_holds_mac_pairs_and_mtu(common, transport):
    raw = transport.regions[4].read(common.device, 12)
    mac, status, pairs, mtu = raw[:6], *struct.unpack_from("<HHH", raw, 6)
    assert mac == bytes.fromhex("525400abcdef")
    assert status & 1 and pairs == 1 and mtu == 1500
    transport.regions[4].write(common.device, b"\0" * 6)   # read-only in virtio 1.x
    assert transport.regions[4].read(common.device, 6) == mac


def test_common_config_byte_access_and_unknown_offsets(common, transport):
    bar = transport.regions[4]
    common.write("device_feature_select", 1)
    full = common.read("device_feature")
    assert bar.read(common.base + 4, 1)[0] == full & 0xFF     # sub-register reads
    assert bar.read(common.base + 0x38, 8) == bytes(8)         # past the structure: zero
