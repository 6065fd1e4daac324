"""Constants that C and Python share are declared once, in native/vnic.h's
cdef part, and Python reads them from lib.  These tests fail if the Python
side and C ever disagree (an enum member missing on one side, a struct
layout packed differently), and pin the values the specifications fix
(virtio 1.2, vfio-user) so that C cannot drift from them either."""
from __future__ import annotations

import pytest

from vnic._native import ffi, lib
from vnic.net import tx_engine
from vnic.telemetry import counters
from vnic.vfio_user import protocol as P
from vnic.virtio import queues
from vnic.virtio.features import F


def lib_names(prefix: str, *skip: str) -> dict[str, int]:
    return {n.removeprefix(prefix): getattr(lib, n) for n in dir(lib)
            if n.startswith(prefix) and n.removeprefix(prefix) not in skip}


def struct_layout(ctype: str) -> list[tuple[str, int, int]]:
    return [(name, field.offset, ffi.sizeof(field.type)) for name, field in ffi.typeof(ctype).fields]


def test_every_feature_bit_is_declared_on_both_sides():
    assert {f.name: f.value for f in F} == lib_names("VNIC_F_")


@pytest.mark.parametrize("name,bit", [("CSUM", 0), ("MAC", 5), ("MRG_RXBUF", 15), ("MQ", 22),
                                      ("RING_EVENT_IDX", 29), ("VERSION_1", 32), ("HOST_USO", 56),
                                      ("SPEED_DUPLEX", 63)])
def test_feature_bits_are_the_spec_numbers(name, bit):
    assert F[name] == bit


def test_every_vfio_user_command_is_declared_on_both_sides():
    commands = lib_names("VFIO_USER_", "F_REPLY", "F_NO_REPLY", "F_ERROR", "MAX_MSG_FDS",
                         "MAX_DATA_XFER", "MAX_MSG_SIZE")
    assert {c.name: c.value for c in P.Command} == commands
    assert (P.Command.VERSION, P.Command.DMA_READ, P.Command.REGION_WRITE_MULTI) == (1, 11, 15)


def test_vfio_user_header_packs_as_the_c_struct():
    fields = ["id", "command", "size", "flags", "error"]
    assert [name for name, _, _ in struct_layout("struct vfio_user_header")] == fields
    packed = P.HEADER.pack(0x1234, 0x0A0B, 0x11223344, 0x55667788, 0x99AABBCC)   # every field distinct
    c = ffi.new("struct vfio_user_header *")
    ffi.memmove(c, packed, len(packed))
    assert [getattr(c, f) for f in fields] == list(P.HEADER.unpack(packed))
    assert P.HEADER_SIZE == ffi.sizeof("struct vfio_user_header") == 16
    assert (P.FLAG_REPLY, P.FLAG_NO_REPLY, P.FLAG_ERROR) == (0x1, 0x10, 0x20)


def test_virtio_net_hdr_packs_as_the_c_struct():
    layout = struct_layout("struct virtio_net_hdr")
    assert [n for n, _, _ in layout] == ["flags", "gso_type", "hdr_len", "gso_size", "csum_start",
                                         "csum_offset", "num_buffers"]
    values = [i + 1 for i in range(len(layout))]
    packed = tx_engine.NET_HDR.pack(*values)
    c = ffi.new("struct virtio_net_hdr *")
    ffi.memmove(c, packed, len(packed))
    assert [getattr(c, n) for n, _, _ in layout] == values
    assert tx_engine.NET_HDR.size == ffi.sizeof("struct virtio_net_hdr") == lib.VNIC_NET_HDR_SIZE == 12


def test_gso_types_and_header_flags_are_the_spec_numbers():
    assert (tx_engine.GSO_NONE, tx_engine.GSO_TCPV4, tx_engine.GSO_UDP, tx_engine.GSO_TCPV6,
            tx_engine.GSO_UDP_L4, tx_engine.GSO_ECN) == (0, 1, 3, 4, 5, 0x80)
    assert (tx_engine.NEEDS_CSUM, lib.VNIC_HDR_F_DATA_VALID) == (1, 2)


def test_every_drop_reason_has_its_counter():
    reasons = set(tx_engine.DROP_REASONS.values())
    assert reasons == {"headers", "csum_range", "gso_size", "gso_type", "unnegotiated", "backend"}
    assert len(reasons) == lib.VNIC_TX_DROP_COUNT - 1            # all but VNIC_TX_SENT
    assert {f"tx_drops_{r}" for r in reasons} <= set(counters.FIELDS)


def test_limits_python_offers_are_the_c_ones():
    assert P.MAX_DMA_MAPS == lib.VNIC_MAX_DMA_REGIONS
    assert P.MAX_MSG_SIZE == P.MAX_DATA_XFER + 4096
    assert queues.MAX_QUEUE_SIZE == lib.VNIC_MAX_QUEUE_SIZE <= lib.VNIC_MAX_RING_SIZE
    assert queues.NO_VECTOR == 0xFFFF
    assert counters.DTYPE.itemsize == ffi.sizeof("struct vnic_queue_stats")
