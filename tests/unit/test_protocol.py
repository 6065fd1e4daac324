"""The vfio-user message codec: header layout, replies, VERSION bodies, and
the body structs' sizes against the kernel's VFIO structs."""
from __future__ import annotations

import errno
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vnic.vfio_user import protocol as P
from vnic.vfio_user.protocol import Command, Header, ProtocolError


def test_header_layout_is_little_endian_hhiii():
    raw = bytes.fromhex("3412" "0900" "20000000" "01000000" "16000000")
    h = Header.unpack(raw)
    assert (h.id, h.command, h.size, h.flags, h.error) == (0x1234, Command.REGION_READ, 0x20, P.FLAG_REPLY, 22)
    assert h.pack() == raw
    assert P.HEADER_SIZE == 16


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
       st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_header_round_trip(msg_id, command, size, flags, error):
    h = Header(msg_id, command, size, flags, error)
    assert Header.unpack(h.pack()) == h


def test_header_unpack_reads_only_the_first_16_bytes():
    raw = Header(7, Command.VERSION, 20, 0).pack() + b"tail"
    assert Header.unpack(raw).id == 7


def test_no_reply_flag_means_no_reply_wanted():
    assert Header(1, Command.REGION_WRITE, 16, 0).wants_reply
    assert not Header(1, Command.REGION_WRITE, 16, P.FLAG_NO_REPLY).wants_reply


def test_reply_copies_id_and_command_and_sizes_the_body():
    req = Header(0x4242, Command.DEVICE_GET_INFO, 32, 0)
    out = P.reply(req, b"abcd")
    h = Header.unpack(out)
    assert (h.id, h.command, h.size, h.flags, h.error) == (0x4242, Command.DEVICE_GET_INFO, 20, P.FLAG_REPLY, 0)
    assert out[16:] == b"abcd"


def test_error_reply_carries_errno_and_no_body():
    out = P.error_reply(Header(9, Command.DMA_MAP, 48, 0), errno.EFAULT)
    h = Header.unpack(out)
    assert len(out) == 16 and h.size == 16
    assert h.flags == P.FLAG_REPLY | P.FLAG_ERROR
    assert h.error == errno.EFAULT and h.id == 9 and h.command == Command.DMA_MAP


# ---- VERSION ------------------------------------------------------------------

QEMU_CAPS = {"capabilities": {"max_msg_fds": 16, "max_data_xfer_size": 1048576,
                              "migration": {"pgsize": 4096}, "write_multiple": True}}


def version_body(major=0, minor=0, caps: bytes | None = None) -> bytes:
    raw = json.dumps(QEMU_CAPS).encode() + b"\0" if caps is None else caps
    return struct.pack("<HH", major, minor) + raw


def test_parse_version_reads_qemu_capabilities():
    major, minor, caps = P.parse_version(version_body())
    assert (major, minor) == (0, 0)
    assert caps == QEMU_CAPS


def test_parse_version_stops_at_the_nul():
    body = version_body(caps=b'{"capabilities": {}}\0garbage{{{')
    assert P.parse_version(body)[2] == {"capabilities": {}}


def test_parse_version_without_capabilities():
    assert P.parse_version(struct.pack("<HH", 0, 1)) == (0, 1, {})
    assert P.parse_version(struct.pack("<HH", 0, 0) + b"\0") == (0, 0, {})


@pytest.mark.parametrize("raw", [b"{not json}\0", b'{"capabilities":\0', b"\xff\xfe\xfd\0", b"[1, 2]\0",
                                 b"42\0", b'"text"\0'])
def test_parse_version_refuses_bad_json_with_einval(raw):
    with pytest.raises(ProtocolError) as info:
        P.parse_version(version_body(caps=raw))
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_parse_version_refuses_deep_nesting_with_einval(depth):
    """json.loads recurses once per level: a deep VERSION must be refused
    where it enters, not by a RecursionError caught further up."""
    with pytest.raises(ProtocolError) as info:
        P.parse_version(version_body(caps=b"[" * depth + b"]" * depth + b"\0"))
    assert info.value.errno == errno.EINVAL


def test_parse_version_refuses_short_body():
    with pytest.raises(ProtocolError) as info:
        P.parse_version(b"\0\0\0")
    assert info.value.errno == errno.EINVAL


@given(st.binary(max_size=64))
def test_parse_version_fails_only_with_protocol_errors(raw):
    try:
        P.parse_version(raw)
    except ProtocolError as exc:
        assert exc.errno == errno.EINVAL


def test_server_version_round_trips_and_is_nul_terminated():
    body = P.pack_version(P.server_capabilities())
    assert body.endswith(b"\0")
    major, minor, caps = P.parse_version(body)
    assert (major, minor) == (P.MAJOR, P.MINOR)
    c = caps["capabilities"]
    assert c["max_msg_fds"] == P.MAX_MSG_FDS <= 16
    assert c["max_data_xfer_size"] == P.MAX_DATA_XFER
    assert c["pgsizes"] == 4096
    assert "write_multiple" not in c
    assert P.server_capabilities(write_multiple=True)["capabilities"]["write_multiple"] is True


# ---- body structs mirror the kernel's VFIO structs -------------------------------

@pytest.mark.parametrize("name,size", [
    ("DMA_MAP", 32),          # vfio_user_dma_map: argsz, flags, offset, iova, size
    ("DMA_UNMAP", 24),        # argsz, flags, iova, size (bitmap follows when asked)
    ("DEVICE_INFO", 16),      # vfio_device_info
    ("REGION_INFO", 32),      # vfio_region_info
    ("IRQ_INFO", 16),         # vfio_irq_info
    ("IRQ_SET", 20),          # vfio_irq_set without data
    ("REGION_ACCESS", 16),    # offset u64, region u32, count u32
    ("MULTI_WRITE_ENTRY", 24),
    ("DMA_ACCESS", 16),
])
def test_body_struct_sizes(name, size):
    assert getattr(P, name).size == size


def test_commands_have_the_specification_numbers():
    assert [c.value for c in Command] == list(range(1, 16))
    assert Command.REGION_WRITE == 10 and Command.DEVICE_RESET == 13


def test_need_raises_einval_for_short_bodies():
    P.need(b"x" * 8, 8, "X")
    with pytest.raises(ProtocolError) as info:
        P.need(b"x" * 7, 8, "X")
    assert info.value.errno == errno.EINVAL
