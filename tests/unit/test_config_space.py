"""PCI configuration space as a guest (and QEMU) sees it: identity, the
capability list, BAR sizing, and which bits a guest may change."""
from __future__ import annotations

import itertools
import struct

import pytest

from tests.support import driver as spec
from vnic.pci.config import Bar, ConfigSpace
from vnic.pci.region import CONFIG_REGION


def cfg(transport) -> bytes:
    return transport.regions[CONFIG_REGION].read(0, 256)


def u16(raw, off):
    return struct.unpack_from("<H", raw, off)[0]


def u32(raw, off):
    return struct.unpack_from("<I", raw, off)[0]


def test_identity_is_a_modern_virtio_net_device(transport):
    raw = cfg(transport)
    assert u16(raw, 0x00) == 0x1AF4            # Red Hat / virtio
    assert u16(raw, 0x02) == 0x1041            # 0x1040 + device type 1 (net): modern-only
    assert raw[0x08] >= 1                       # revision 1: modern device
    assert raw[0x09:0x0C] == bytes([0x00, 0x00, 0x02])   # class: network controller, ethernet
    assert raw[0x0E] == 0                       # type-0 header, single function
    assert u16(raw, 0x2C) == 0x1AF4
    assert raw[0x3D] == 0                       # no INTx pin: MSI-X only


def test_capability_list_holds_msix_and_five_virtio_caps(transport):
    raw = cfg(transport)
    assert u16(raw, 0x06) & 0x10, "status must announce a capability list"
    caps = spec.capability_list(raw)
    ids = [cap_id for _, cap_id in caps]
    assert ids.count(spec.CAP_ID_MSIX) == 1
    assert ids.count(spec.CAP_ID_VENDOR) == 5
    offsets = [off for off, _ in caps]
    assert len(set(offsets)) == len(offsets), "capability list loops"
    assert all(off >= 0x40 and off % 4 == 0 for off in offsets)
    cfg_types = sorted(raw[off + 3] for off, cap_id in caps if cap_id == spec.CAP_ID_VENDOR)
    assert cfg_types == [1, 2, 3, 4, 5]          # common, notify, ISR, device, PCI cfg access


def test_virtio_caps_point_inside_bar4(transport):
    caps, msix = spec.parse_capabilities(cfg(transport))
    bar4 = transport.regions[4].size
    for window in (caps.common, caps.notify, caps.isr, caps.device):
        assert window.bar == 4
        assert window.offset + window.length <= bar4
    assert caps.common.length >= 0x38            # all of virtio_pci_common_cfg
    assert caps.isr.length >= 1
    assert caps.device.length >= 12              # mac, status, max_virtqueue_pairs, mtu
    assert caps.notify_multiplier in (0,) or caps.notify_multiplier % 2 == 0
    assert caps.pci_cfg is not None
    # MSI-X: one vector per queue plus config; table and PBA inside BAR1
    assert msix.vectors == 4                    # config, RX, TX, control queue
    assert (msix.table_bar, msix.pba_bar) == (1, 1)
    assert msix.table_offset + 16 * msix.vectors <= msix.pba_offset < transport.regions[1].size


def test_capabilities_do_not_overlap(transport):
    raw = cfg(transport)
    caps = spec.capability_list(raw)
    spans = []
    for off, cap_id in caps:
        length = raw[off + 2] if cap_id == spec.CAP_ID_VENDOR else 12
        spans.append((off, off + length))
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start


@pytest.mark.parametrize("bar,size", [(4, 0x4000), (1, 0x1000)])
def test_bar_sizing(transport, bar, size):
    region = transport.regions[CONFIG_REGION]
    off = 0x10 + 4 * bar
    assert transport.regions[bar].size == size
    region.write(off, b"\xff\xff\xff\xff")
    mask = u32(region.read(off, 4), 0)
    assert mask == (~(size - 1)) & 0xFFFFFFFF          # memory BAR, 32-bit, not prefetchable
    assert (~(mask & ~0xF) + 1) & 0xFFFFFFFF == size
    region.write(off, struct.pack("<I", 0xFE000000))   # the address firmware assigns
    assert u32(region.read(off, 4), 0) == 0xFE000000


@pytest.mark.parametrize("bar", [0, 2, 3, 5])
def test_unimplemented_bars_size_to_zero(transport, bar):
    region = transport.regions[CONFIG_REGION]
    region.write(0x10 + 4 * bar, b"\xff\xff\xff\xff")
    assert region.read(0x10 + 4 * bar, 4) == bytes(4)
    assert transport.regions[bar].size == 0


def test_read_only_fields_stay(transport):
    region = transport.regions[CONFIG_REGION]
    before = region.read(0, 256)
    for off in (0x00, 0x08, 0x0C, 0x2C, 0x30, 0x34, 0x3C):
        region.write(off, b"\xff\xff\xff\xff")
    region.write(0x06, b"\xff\xff")                 # status (RW1C bits: nothing to clear)
    after = region.read(0, 256)
    for off, length in ((0x00, 4), (0x06, 2), (0x08, 4), (0x0E, 1), (0x2C, 4), (0x30, 4), (0x34, 1),
                        (0x3D, 1)):
        assert after[off:off + length] == before[off:off + length], f"offset {off:#x} changed"
    assert after[0x3C] == 0xFF                       # interrupt line is scratch for the OS


def test_command_register_keeps_only_writable_bits(transport):
    region = transport.regions[CONFIG_REGION]
    region.write(0x04, b"\xff\xff")
    assert u16(region.read(0x04, 2), 0) == 0x0547
    region.write(0x04, b"\x06\x00")
    assert u16(region.read(0x04, 2), 0) == 0x0006


def test_capability_bodies_are_read_only(transport):
    region = transport.regions[CONFIG_REGION]
    raw = cfg(transport)
    caps = spec.capability_list(raw)
    for off, cap_id in caps:
        region.write(off, b"\xff\xff\xff\xff")       # id and next pointer
        if cap_id == spec.CAP_ID_VENDOR and raw[off + 3] != spec.VIRTIO_PCI_CAP_PCI_CFG:
            region.write(off + 8, b"\xff" * 8)       # offset and length of the window
    assert spec.capability_list(cfg(transport)) == caps
    assert spec.parse_capabilities(cfg(transport)) == spec.parse_capabilities(raw)


def test_msix_enable_bit_is_writable(transport):
    region = transport.regions[CONFIG_REGION]
    _, msix = spec.parse_capabilities(cfg(transport))
    region.write(msix.offset + 2, struct.pack("<H", 0xFFFF))
    control = u16(region.read(msix.offset + 2, 2), 0)
    assert control == 0xC000 | (msix.vectors - 1)     # enable, mask-all; table size read-only
    assert transport.msix.enabled


def test_pci_cfg_access_window_reaches_bar4(transport):
    """virtio 1.2, 4.1.4.9: program bar/offset/length in the cap, then use pci_cfg_data."""
    region = transport.regions[CONFIG_REGION]
    caps, _ = spec.parse_capabilities(cfg(transport))
    cap = caps.pci_cfg
    status_off = caps.common.offset + spec.COMMON["device_status"][0]
    region.write(cap + 4, bytes([4]))                              # bar
    region.write(cap + 8, struct.pack("<II", status_off, 1))       # offset, length
    region.write(cap + 16, bytes([spec.ACKNOWLEDGE, 0, 0, 0]))     # pci_cfg_data
    assert transport.regions[4].read(status_off, 1)[0] == spec.ACKNOWLEDGE
    assert region.read(cap + 16, 1)[0] == spec.ACKNOWLEDGE
    # another BAR, or a window outside BAR4, reads zeros and writes nothing
    region.write(cap + 4, bytes([1]))
    assert region.read(cap + 4, 1) == bytes([1])
    assert region.read(cap + 16, 4) == bytes(4)
    region.write(cap + 4, bytes([4]))
    region.write(cap + 8, struct.pack("<II", 0x10000, 4))
    assert region.read(cap + 16, 4) == bytes(4)


@pytest.mark.parametrize("offset,count", [(256, 1), (255, 2), (-1, 1), (0, 0), (0, 257)])
def test_config_access_outside_the_space_is_refused(offset, count):
    space = ConfigSpace(0x1AF4, 0x1041, 0x020000, 1, 0x1AF4, 1, [Bar(4, 0x4000)])
    with pytest.raises(IndexError):
        space.read(offset, count)
    with pytest.raises(IndexError):
        space.write(offset, bytes(max(count, 1)) if count else b"")


def test_bar_sizes_must_be_powers_of_two():
    with pytest.raises(ValueError):
        ConfigSpace(0x1AF4, 0x1041, 0x020000, 1, 0x1AF4, 1, [Bar(4, 0x3000)])
