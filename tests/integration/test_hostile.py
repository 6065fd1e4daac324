"""A hostile client and a hostile guest.

Malformed vfio-user messages get an error reply with an errno and the
session goes on (proved by a successful request afterwards); only a broken
stream closes the session, and then the server takes the next client.
Hostile descriptor chains put the device in NEEDS_RESET (status bit 0x40
and a config interrupt), are counted, never crash the process, and a reset
with a fresh negotiation brings a working device back."""
from __future__ import annotations

import errno
import gc
import json
import os
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import driver as D
from tests.support.client import GUEST_IOVA, VfioUserClient
from tests.support.driver import NET_HDR_LEN, RX, TX, VirtioNetDriver
from tests.support.frames import udp_frame
from tests.support.rings import PACKED_DESC
from vnic.vfio_user import protocol as P
from vnic.vfio_user.protocol import Command, Header

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def open_fds() -> int:
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def assert_no_fd_leak(action, repeat: int = 20) -> None:
    """Run action `repeat` times: leaking even one fd a run shows as `repeat`
    more open fds.  (Exact counts would be flaky: an earlier test's device
    may be released, closing its fds, while this test runs.)"""
    action()                              # anything created once, lazily
    before = open_fds()
    for _ in range(repeat):
        action()
    assert open_fds() < before + repeat // 2, "fds leak"


def assert_session_works(client: VfioUserClient) -> None:
    flags, regions, _ = client.device_info()
    assert flags & P.DEVICE_FLAGS_PCI and regions == 9
    assert client.config_read(0, 4) == bytes.fromhex("f41a4110")


def expect_error(client: VfioUserClient, command: int, body: bytes = b"", fds=(), flags: int = 0) -> int:
    reply = client.request(command, body, fds, flags, check=False)
    assert reply.is_error, f"{command} {body[:32].hex()} was accepted"
    assert reply.errno != 0
    assert reply.header.size == P.HEADER_SIZE
    return reply.errno


@pytest.fixture
def client(serve):
    sd = serve()
    c = sd.connect()
    c.served = sd
    return c


# ==== malformed messages ========================================================

@pytest.mark.parametrize("command,body", [
    (Command.DMA_MAP, bytes(10)),
    (Command.DMA_UNMAP, bytes(8)),
    (Command.DEVICE_GET_REGION_INFO, bytes(12)),
    (Command.DEVICE_GET_IRQ_INFO, bytes(4)),
    (Command.DEVICE_SET_IRQS, bytes(16)),
    (Command.REGION_READ, bytes(15)),
    (Command.REGION_WRITE, bytes(2)),
    (Command.REGION_WRITE_MULTI, bytes(4)),
    (Command.VERSION, bytes(3)),
])
def test_truncated_body_gets_einval(client, command, body):
    assert expect_error(client, command, body) == errno.EINVAL
    assert_session_works(client)


def test_region_write_multi_claiming_more_entries_than_it_carries(client):
    body = struct.pack("<Q", 5) + P.MULTI_WRITE_ENTRY.pack(0, 7, 2, bytes(8))
    assert expect_error(client, Command.REGION_WRITE_MULTI, body) == errno.EINVAL
    body = struct.pack("<Q", 1) + P.MULTI_WRITE_ENTRY.pack(0, 7, 9, bytes(8))   # count > 8
    assert expect_error(client, Command.REGION_WRITE_MULTI, body) == errno.EINVAL
    assert_session_works(client)


def test_size_smaller_than_header_closes_the_session_only(client):
    sd = client.served
    client.send_raw(Header(1, Command.DEVICE_GET_INFO, 8, 0).pack())
    assert client.wait_closed(), "the server kept a stream it cannot resynchronise"
    assert sd.wait_sessions(1)
    assert_session_works(sd.connect())


def test_stream_ending_inside_a_body_closes_the_session_only(client):
    sd = client.served
    client.send_raw(Header(2, Command.REGION_READ, P.HEADER_SIZE + 100, 0).pack() + bytes(10))
    client.close()
    assert sd.wait_sessions(1)
    assert_session_works(sd.connect())


def test_oversize_message_gets_e2big_and_the_session_continues(client):
    size = P.MAX_MSG_SIZE + 1
    msg_id = client.send(Command.REGION_WRITE, bytes(size - P.HEADER_SIZE))
    reply = client.wait_reply(msg_id)
    assert reply.is_error and reply.errno == errno.E2BIG
    client.send(Command.REGION_WRITE, bytes(size - P.HEADER_SIZE), flags=P.FLAG_NO_REPLY)
    assert client.quiet_for(0.1) == []                      # NO_REPLY: silent even on error
    assert_session_works(client)


@pytest.mark.parametrize("command", [0, 6, 11, 12, 14, 16, 99, 0xFFFF])
def test_unknown_or_unsupported_command_gets_enosys(client, command):
    assert expect_error(client, command, bytes(24)) == errno.ENOSYS
    assert_session_works(client)


def test_version_must_come_first(serve):
    sd = serve()
    c = sd.connect(attach=False)
    assert expect_error(c, Command.DEVICE_GET_INFO, P.DEVICE_INFO.pack(16, 0, 0, 0)) == errno.EINVAL
    c.version()
    assert_session_works(c)


@pytest.mark.parametrize("body,err", [
    (struct.pack("<HH", 0, 0) + b"{broken\0", errno.EINVAL),
    (struct.pack("<HH", 0, 0) + b"[]\0", errno.EINVAL),
    (struct.pack("<HH", 1, 0) + json.dumps({"capabilities": {}}).encode() + b"\0", errno.ENOTSUP),
])
def test_bad_version_is_refused_and_a_good_one_still_works(serve, body, err):
    c = serve().connect(attach=False)
    assert expect_error(c, Command.VERSION, body) == err
    c.version()
    assert_session_works(c)


@pytest.mark.parametrize("region", [9, 100, 0xFFFFFFFF, 0, 2, 6, 8])
def test_bad_region_index(client, region):
    assert expect_error(client, Command.REGION_READ, P.REGION_ACCESS.pack(0, region, 4)) == errno.EINVAL
    assert expect_error(client, Command.REGION_WRITE, P.REGION_ACCESS.pack(0, region, 4) + bytes(4)) == errno.EINVAL
    assert_session_works(client)


@pytest.mark.parametrize("index,argsz", [(9, 32), (0xFFFFFFFF, 32), (7, 16)])
def test_bad_region_info_request(client, index, argsz):
    body = P.REGION_INFO.pack(argsz, 0, index, 0, 0, 0)
    assert expect_error(client, Command.DEVICE_GET_REGION_INFO, body) == errno.EINVAL
    assert_session_works(client)


@pytest.mark.parametrize("region,offset,count", [
    (7, 256, 1), (7, 255, 2), (7, 0, 257), (4, 0x4000, 4), (4, 0x3FFE, 4), (1, 0x1000, 1),
    (4, 2**64 - 1, 4), (4, 2**63, 2), (7, 0, 2**32 - 1), (4, 0, P.MAX_DATA_XFER + 1),
    (7, 0, 0), (4, 0x14, 0),                                  # count 0
])
def test_region_access_out_of_range(client, region, offset, count):
    assert expect_error(client, Command.REGION_READ, P.REGION_ACCESS.pack(offset, region, count)) == errno.EINVAL
    body = P.REGION_ACCESS.pack(offset, region, count) + bytes(min(count, 64))
    assert expect_error(client, Command.REGION_WRITE, body) == errno.EINVAL
    assert_session_works(client)


def test_region_write_shorter_than_its_count(client):
    body = P.REGION_ACCESS.pack(0x04, 7, 4) + b"\x06\x00"
    assert expect_error(client, Command.REGION_WRITE, body) == errno.EINVAL
    assert_session_works(client)


def test_dma_map_of_bad_ranges(client):
    mem = client.memory
    expect = {
        "size 0": dict(iova=0x3_0000_0000, size=0),
        "wraps past 2**64": dict(iova=2**64 - 4096, size=8192),
        "overlaps the mapped guest RAM": dict(iova=GUEST_IOVA + 4096, size=4096),
        "beyond the memfd": dict(iova=0x3_0000_0000, size=mem.size * 2),
        "offset beyond the memfd": dict(iova=0x3_0000_0000, size=4096, offset=mem.size),
        "unaligned offset": dict(iova=0x3_0000_0000, size=4096, offset=100),
        "not an mmappable fd": dict(iova=0x3_0000_0000, size=4096, fd=client.sock.fileno()),
    }
    for what, kw in expect.items():
        reply = client.dma_map(check=False, **kw)
        assert reply.is_error and reply.errno in (errno.EINVAL, errno.EEXIST, errno.ENODEV), what
    assert list(client.served.device.memory.mappings) == [(GUEST_IOVA, mem.size)]
    assert_session_works(client)


def test_dma_map_with_two_fds(client):
    body = P.DMA_MAP.pack(32, 3, 0, 0x3_0000_0000, 4096)
    assert expect_error(client, Command.DMA_MAP, body, fds=[client.memory.fd, client.memory.fd]) == errno.EINVAL
    assert_session_works(client)


def test_dma_unmap_of_unknown_ranges(client):
    assert client.dma_unmap(iova=0x5_0000_0000, size=4096, check=False).errno == errno.ENOENT
    assert client.dma_unmap(iova=GUEST_IOVA, size=4096, check=False).errno == errno.ENOENT   # not the whole map
    assert client.dma_unmap(flags=P.DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, check=False).errno == errno.ENOTSUP
    assert_session_works(client)


def test_dma_map_table_full(client):
    """More maps than max_dma_maps announced: ENOSPC, and the table stays usable."""
    limit = client.server_caps["capabilities"]["max_dma_maps"]
    for i in range(limit - 1):                              # one slot holds guest RAM already
        client.dma_map(iova=0x10_0000_0000 + i * 4096, size=4096, fd=None)
    reply = client.dma_map(iova=0x20_0000_0000, size=4096, fd=None, check=False)
    assert reply.is_error and reply.errno == errno.ENOSPC
    client.dma_unmap(iova=0x10_0000_0000, size=4096)
    client.dma_map(iova=0x20_0000_0000, size=4096, fd=None)
    assert_session_works(client)


@pytest.mark.parametrize("index,start,count,nfds,flags", [
    (2, 4, 1, 1, P.IRQ_SET_DATA_EVENTFD | P.IRQ_SET_ACTION_TRIGGER),       # vector 4 of 0..3
    (2, 0, 5, 5, P.IRQ_SET_DATA_EVENTFD | P.IRQ_SET_ACTION_TRIGGER),
    (2, 2**32 - 1, 2, 2, P.IRQ_SET_DATA_EVENTFD | P.IRQ_SET_ACTION_TRIGGER),
    (2, 0, 0, 1, P.IRQ_SET_DATA_EVENTFD | P.IRQ_SET_ACTION_TRIGGER),       # count 0 with an fd
    (2, 0, 2, 1, P.IRQ_SET_DATA_EVENTFD | P.IRQ_SET_ACTION_TRIGGER),       # fewer fds than vectors
    (2, 0, 1, 1, P.IRQ_SET_DATA_EVENTFD | P.IRQ_SET_ACTION_MASK),
    (2, 0, 1, 1, 0),                                                      # no data type, no action
    (2, 0, 1, 1, 0xFFFFFFFF),
    (0, 0, 1, 1, P.IRQ_SET_DATA_EVENTFD | P.IRQ_SET_ACTION_TRIGGER),       # INTx: none
    (1, 0, 1, 1, P.IRQ_SET_DATA_EVENTFD | P.IRQ_SET_ACTION_TRIGGER),       # MSI: none
    (3, 0, 1, 1, P.IRQ_SET_DATA_EVENTFD | P.IRQ_SET_ACTION_TRIGGER),       # ERR
    (7, 0, 1, 1, P.IRQ_SET_DATA_EVENTFD | P.IRQ_SET_ACTION_TRIGGER),
])
def test_set_irqs_with_bad_vectors_leaks_nothing(client, index, start, count, nfds, flags):
    def bad_request():
        fds = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(nfds)]
        try:
            reply = client.set_irqs(start, fds, index=index, flags=flags, count=count, check=False)
            assert reply.is_error and reply.errno == errno.EINVAL
        finally:
            for fd in fds:
                os.close(fd)
    assert_no_fd_leak(bad_request)
    assert_session_works(client)


def test_disable_all_with_fds_attached_leaks_nothing(client):
    def disable_all():
        fds = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(2)]
        client.set_irqs(0, fds, flags=P.IRQ_SET_DATA_NONE | P.IRQ_SET_ACTION_TRIGGER, count=0)
        for fd in fds:
            os.close(fd)
    assert_no_fd_leak(disable_all)
    assert_session_works(client)


def test_too_many_fds_in_one_message(client):
    def crowded():
        fds = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(P.MAX_MSG_FDS + 4)]
        try:
            reply = client.set_irqs(0, fds, count=3, check=False)
            assert reply.is_error and reply.errno == errno.EINVAL
        finally:
            for fd in fds:
                os.close(fd)
    assert_no_fd_leak(crowded)
    assert_session_works(client)


def test_fds_on_commands_that_take_none_are_closed(client):
    def stray_fds():
        fd = os.eventfd(0, os.EFD_CLOEXEC)
        client.request(Command.DEVICE_GET_INFO, P.DEVICE_INFO.pack(16, 0, 0, 0), fds=[fd, fd, fd])
        client.request(Command.REGION_READ, P.REGION_ACCESS.pack(0, 7, 4), fds=[fd])
        # a doorbell write carrying an fd is not taken by the fast path; still no leak
        client.request(Command.REGION_WRITE, P.REGION_ACCESS.pack(0x3000, 4, 2) + b"\0\0", fds=[fd])
        os.close(fd)
    assert_no_fd_leak(stray_fds)
    assert_session_works(client)


@pytest.mark.parametrize("command", [Command.DEVICE_GET_INFO, Command.REGION_WRITE, Command.VERSION])
def test_request_with_the_reply_flag(client, command):
    body = {Command.DEVICE_GET_INFO: P.DEVICE_INFO.pack(16, 0, 0, 0),
            Command.REGION_WRITE: P.REGION_ACCESS.pack(0x3004, 4, 2) + b"\x01\x00",   # a doorbell
            Command.VERSION: P.pack_version({})}[command]
    msg_id = client.send(command, body, flags=P.FLAG_REPLY)
    reply = client.wait_reply(msg_id, command)
    assert reply.is_error and reply.errno == errno.EINVAL
    client.send(command, body, flags=P.FLAG_REPLY | P.FLAG_NO_REPLY)
    assert client.quiet_for(0.1) == []
    assert_session_works(client)


def test_replies_keep_the_request_ids(client):
    for msg_id in (0, 1, 0x7FFF, 0x8000, 0xFFFF):
        client.send(Command.REGION_READ, P.REGION_ACCESS.pack(0, 7, 2), msg_id=msg_id)
        reply = client.wait_reply(msg_id)
        assert reply.header.command == Command.REGION_READ and not reply.is_error


def test_pipelined_requests_are_answered_in_order(client):
    ids = [client.send(Command.REGION_READ, P.REGION_ACCESS.pack(off, 7, 4)) for off in range(0, 200, 4)]
    ids.append(client.send(99))
    replies = [client.recv() for _ in ids]
    assert [r.header.id for r in replies] == ids
    assert replies[-1].errno == errno.ENOSYS
    assert b"".join(r.body[16:] for r in replies[:-1]) == client.config_read(0, 200)


@FUZZ
@given(command=st.integers(0, 20), body=st.binary(max_size=80), msg_id=st.integers(0, 0xFFFF),
       reply_flag=st.booleans())
def test_garbage_bodies_always_get_one_reply(client, command, body, msg_id, reply_flag):
    """Well-framed messages with random bodies: exactly one answer each,
    error or not, and the session keeps working."""
    flags = P.FLAG_REPLY if reply_flag else 0
    client.send(command, body, flags=flags, msg_id=msg_id)
    if reply_flag and command in (Command.DMA_READ, Command.DMA_WRITE):
        # what looks like a (late) answer to the server's own DMA request is dropped
        assert client.quiet_for(0.02) == []
        assert_session_works(client)
        return
    reply = client.wait_reply(msg_id, command, timeout=1)
    assert reply.is_reply
    if reply.is_error:
        assert reply.errno != 0
    assert client.quiet_for(0) == []
    assert_session_works(client)


@FUZZ
@given(garbage=st.binary(min_size=1, max_size=200))
def test_garbage_streams_never_kill_the_server(serve_once, garbage):
    """Any byte stream: replies or a closed session, and the next client is served."""
    sd = serve_once
    c = VfioUserClient(sd.path)
    c.version()
    c.send_raw(garbage)
    c.quiet_for(0.005)
    c.close()
    sd.sessions += 1
    assert sd.wait_sessions(sd.sessions)
    assert sd.alive


@pytest.fixture
def serve_once(serve):
    sd = serve()
    sd.sessions = 0
    yield sd
    assert_session_works(sd.connect())


# ==== hostile descriptor chains ====================================================

@pytest.fixture
def dev(served_device):
    return served_device


def frame_buffer(d: VirtioNetDriver, size: int = 60) -> tuple[int, int]:
    buf = d.mem.alloc(NET_HDR_LEN + size)
    d.mem.write(buf, bytes(NET_HDR_LEN) + udp_frame(size))
    return buf, NET_HDR_LEN + size


def publish(q, descs, head: int = 0, table: int | None = None) -> None:
    """Write (addr, len, flags, next) descriptors as they are: split, at
    table index 0 on and head made available; packed, at the ring's next
    free slots with buffer ID head (next has no meaning there), the first
    descriptor last.  With table: into that indirect table."""
    if isinstance(q, D.PackedQueue):
        publish_packed(q, descs, head, table)
        return
    for i, (addr, length, flags, nxt) in enumerate(descs):
        q.write_desc(i, addr, length, flags, nxt, table)
    if table is None:
        q.put_avail(head)


def publish_packed(q, descs, head: int, table: int | None) -> None:
    if table is not None:
        for i, (addr, length, flags, _) in enumerate(descs):
            q.mem.write(table + 16 * i, PACKED_DESC.pack(addr, length, 0, flags))
        return
    start = q.next_avail
    for i, (addr, length, flags, _) in reversed(list(enumerate(descs))):
        ctr = q.advance(start, i)
        q.write_desc(ctr, addr, length, head, flags | q.avail_bits(ctr))
    q.next_avail = q.advance(start, len(descs))


NEXT, WRITE, INDIRECT = D.VRING_DESC_F_NEXT, D.VRING_DESC_F_WRITE, D.VRING_DESC_F_INDIRECT


def indirect(d, q, entries, ring_flags=INDIRECT, length=None):
    table = d.mem.alloc(16 * max(len(entries), 1))
    publish(q, entries, table=table)
    publish(q, [(table, 16 * len(entries) if length is None else length, ring_flags, 0)])


def case_outside(d, q):
    publish(q, [(0x1000, 72, 0, 0)])


def case_straddles_end(d, q):
    publish(q, [(d.mem.iova + d.mem.size - 16, 72, 0, 0)])


def case_near_2_64(d, q):
    publish(q, [(2**64 - 32, 72, 0, 0)])


def case_huge_length(d, q):
    buf, _ = frame_buffer(d)
    publish(q, [(buf, 0xFFFFFFFF, 0, 0)])


def case_loop(d, q):
    buf, _ = frame_buffer(d)
    publish(q, [(buf, 36, NEXT, 1), (buf + 36, 36, NEXT, 0)])


def case_self_loop(d, q):
    buf, n = frame_buffer(d)
    publish(q, [(buf, n, NEXT, 0)])


def case_zero_length(d, q):
    buf, _n = frame_buffer(d)
    publish(q, [(buf, 36, NEXT, 1), (buf, 0, NEXT, 2), (buf + 36, 36, 0, 0)])


def case_next_out_of_range(d, q):
    buf, n = frame_buffer(d)
    publish(q, [(buf, n, NEXT, 256)])


def case_head_out_of_range(d, q):
    buf, n = frame_buffer(d)
    q.write_desc(0, buf, n)
    q.put_avail(256)


def case_head_ffff(d, q):
    q.put_avail(0xFFFF)


def case_avail_jump(d, q):
    buf, n = frame_buffer(d)
    q.write_desc(0, buf, n)
    q.put_avail(0)
    q.set_avail_idx(q.size + 1)


def case_write_only(d, q):
    buf, n = frame_buffer(d)
    publish(q, [(buf, n, WRITE, 0)])


def case_writable_after_readable(d, q):
    buf, _n = frame_buffer(d)
    publish(q, [(buf, 36, NEXT, 1), (buf + 36, 36, WRITE, 0)])


def case_nested_indirect(d, q):
    inner = d.mem.alloc(16)
    buf, n = frame_buffer(d)
    publish(q, [(buf, n, 0, 0)], table=inner)
    indirect(d, q, [(inner, 16, INDIRECT, 0)])


def case_indirect_with_next(d, q):
    buf, n = frame_buffer(d)
    indirect(d, q, [(buf, n, 0, 0)], ring_flags=INDIRECT | NEXT)


def case_indirect_odd_length(d, q):
    buf, n = frame_buffer(d)
    indirect(d, q, [(buf, n, 0, 0)], length=24)


def case_indirect_zero_length(d, q):
    buf, n = frame_buffer(d)
    indirect(d, q, [(buf, n, 0, 0)], length=0)


def case_indirect_too_long(d, q):
    buf, _ = frame_buffer(d, 1100)
    entries = [(buf + i, 1, NEXT, i + 1) for i in range(1025)]
    entries[-1] = (buf + 1024, 1, 0, 0)
    indirect(d, q, entries)


def case_indirect_outside(d, q):
    publish(q, [(0x1000, 32, INDIRECT, 0)])


def case_indirect_loop(d, q):
    buf, _ = frame_buffer(d)
    indirect(d, q, [(buf, 36, NEXT, 1), (buf + 36, 36, NEXT, 0)])


def case_indirect_next_beyond_table(d, q):
    buf, _ = frame_buffer(d)
    indirect(d, q, [(buf, 36, NEXT, 1), (buf + 36, 36, NEXT, 2)])


def case_indirect_entry_outside(d, q):
    indirect(d, q, [(0x2000, 72, 0, 0)])


def case_chain_around_the_ring(d, q):
    """packed: every descriptor of the ring available and chained: the walk
    must stop at the ring's size, not go round for ever."""
    buf, _ = frame_buffer(d)
    publish(q, [(buf, 1, NEXT, 0)] * q.size)


def case_buffer_id_out_of_range(d, q):
    buf, n = frame_buffer(d)
    publish(q, [(buf, n, 0, 0)], head=q.size)


def case_buffer_id_ffff(d, q):
    buf, n = frame_buffer(d)
    publish(q, [(buf, n, 0, 0)], head=0xFFFF)


# what both layouts share
COMMON_CASES = {
    "descriptor outside guest memory": (case_outside, "dma_errors"),
    "descriptor straddling the end of memory": (case_straddles_end, "dma_errors"),
    "descriptor near 2**64": (case_near_2_64, "dma_errors"),
    "descriptor length 0xffffffff": (case_huge_length, "dma_errors"),
    "zero-length descriptor": (case_zero_length, "chain_errors"),
    "write-only descriptor in TX": (case_write_only, "chain_errors"),
    "writable after readable in TX": (case_writable_after_readable, "chain_errors"),
    "nested indirect": (case_nested_indirect, "chain_errors"),
    "indirect with NEXT": (case_indirect_with_next, "chain_errors"),
    "indirect length not a multiple of 16": (case_indirect_odd_length, "chain_errors"),
    "indirect length 0": (case_indirect_zero_length, "chain_errors"),
    "indirect table of 1025 entries": (case_indirect_too_long, "chain_errors"),
    "indirect table outside memory": (case_indirect_outside, "dma_errors"),
    "indirect entry outside memory": (case_indirect_entry_outside, "dma_errors"),
}
PACKED_CASES = {
    "chain around the whole ring": (case_chain_around_the_ring, "chain_errors"),
    "buffer id out of range": (case_buffer_id_out_of_range, "chain_errors"),
    "buffer id 0xffff": (case_buffer_id_ffff, "chain_errors"),
}
SPLIT_CASES = {
    "loop via next": (case_loop, "chain_errors"),
    "descriptor pointing to itself": (case_self_loop, "chain_errors"),
    "next index out of range": (case_next_out_of_range, "chain_errors"),
    "head index out of range": (case_head_out_of_range, "chain_errors"),
    "head index 0xffff": (case_head_ffff, "chain_errors"),
    "avail idx jumps past the ring": (case_avail_jump, "chain_errors"),
    "loop inside an indirect table": (case_indirect_loop, "chain_errors"),
    "next beyond the indirect table": (case_indirect_next_beyond_table, "chain_errors"),
}


def wait_needs_reset(d: VirtioNetDriver, timeout: float = 2.0) -> int:
    deadline = time.monotonic() + timeout
    while not (status := d.status) & D.DEVICE_NEEDS_RESET:
        assert time.monotonic() < deadline, f"device status {status:#x}: no NEEDS_RESET"
        time.sleep(0.001)
    return status


def assert_failed_then_recovers(dev, counter: str, before: dict) -> None:
    d, sd = dev.driver, dev.harness
    status = wait_needs_reset(d)
    assert status & D.DRIVER_OK                              # the driver's bits stay
    assert d.wait_irq(d.CONFIG_VECTOR) >= 1, "no config interrupt for NEEDS_RESET"
    assert d.read_isr() & 2
    after = sd.stats()
    other = "dma_errors" if counter == "chain_errors" else "chain_errors"
    assert after[counter] == before[counter] + 1
    assert after[other] == before[other]
    assert after["tx_packets"] == before["tx_packets"]
    assert sd.alive
    # the reset that the driver owes the device, then everything works again
    d.forget_queues()
    d.start()
    assert not d.status & D.DEVICE_NEEDS_RESET
    d.transmit(udp_frame(60, 1))
    d.transmit(udp_frame(61, 2))
    d.complete_tx(2)
    assert sd.stats()["tx_packets"] == after["tx_packets"] + 2


def hostile_tx(dev, build, counter) -> None:
    d = dev.driver
    d.take_irq(d.CONFIG_VECTOR)
    d.read_isr()
    before = dev.harness.stats()
    build(d, d.queues[TX])
    d.kick(TX, force=True)
    assert_failed_then_recovers(dev, counter, before)


@pytest.mark.parametrize("case", COMMON_CASES)
def test_hostile_tx_chain_needs_reset(dev, case):
    hostile_tx(dev, *COMMON_CASES[case])


@pytest.mark.ring("split")
@pytest.mark.parametrize("case", SPLIT_CASES)
def test_hostile_split_tx_chain_needs_reset(dev, case):
    hostile_tx(dev, *SPLIT_CASES[case])


@pytest.mark.ring("packed")
@pytest.mark.parametrize("case", PACKED_CASES)
def test_hostile_packed_tx_chain_needs_reset(dev, case):
    hostile_tx(dev, *PACKED_CASES[case])


def test_indirect_without_negotiating_it(dev):
    d = dev.driver
    d.start(drop=1 << D.F_INDIRECT_DESC)
    d.take_irq(d.CONFIG_VECTOR)
    before = dev.harness.stats()
    d.transmit(udp_frame(60), indirect=True)
    assert_failed_then_recovers(dev, "chain_errors", before)


def test_failed_device_leaves_later_frames_alone(dev):
    d, sd = dev.driver, dev.harness
    case_writable_after_readable(d, d.queues[TX])
    d.kick(TX, force=True)
    wait_needs_reset(d)
    q = d.queues[TX]
    buf, n = frame_buffer(d)
    publish(q, [(buf, n, 0, 0)], head=5)
    d.kick(TX, force=True)
    time.sleep(0.1)
    assert q.used_idx == 0 and sd.stats()["tx_packets"] == 0


def test_chain_as_long_as_the_ring_is_fine(dev):
    d, sd = dev.driver, dev.harness
    frame = udp_frame(400)
    d.transmit(frame, pieces=[1] * 255)                      # 256 descriptors = the whole table
    d.complete_tx()
    assert sd.stats()["tx_packets"] == 1 and sd.stats()["tx_bytes"] == 400


def test_indirect_table_of_1024_entries_is_fine(tap_device):
    d, tap = tap_device.driver, tap_device.tap
    frame = udp_frame(1200, 5)
    d.transmit(frame, pieces=[1] * 1023, indirect=True)
    d.complete_tx()
    assert tap.capture(1) == [frame]


@pytest.mark.ring("split")
@FUZZ
@given(descs=st.lists(st.tuples(st.sampled_from(["buf", "buf+7", "ring", "zero", "low", "end", "top"]),
                                st.sampled_from([0, 1, 12, 26, 72, 4096, 0xFFFFFFFF]),
                                st.integers(0, 7), st.integers(0, 258)),
                      min_size=1, max_size=6),
       head=st.integers(0, 257), jump=st.sampled_from([1, 1, 1, 2, 300]))
def test_random_descriptor_tables_never_crash(dev, descs, head, jump):
    d, sd = dev.driver, dev.harness
    d.forget_queues()
    d.start()
    q = d.queues[TX]
    before = sd.stats()               # the worker may look at the ring before the kick
    buf, _ = frame_buffer(d, 4096)
    where = {"buf": buf, "buf+7": buf + 7, "ring": q.desc, "zero": 0, "low": 0xFFFF_F000,
             "end": d.mem.iova + d.mem.size - 8, "top": 2**64 - 16}
    for i, (addr, length, flags, nxt) in enumerate(descs):
        q.write_desc(i, where[addr], length, flags, nxt)
    q.mem.set_u16(q.avail + 4, head)
    q.set_avail_idx(jump)
    d.kick(TX, force=True)
    deadline = time.monotonic() + 2
    while True:
        failed = bool(d.status & D.DEVICE_NEEDS_RESET)     # first: errors are counted before
        now = sd.stats()                                     # the device is marked failed
        handled = sum(now[k] - before[k] for k in now if k == "tx_packets" or k.startswith("tx_drops"))
        if failed or handled >= jump:
            break
        assert time.monotonic() < deadline, "chain neither used nor refused"
    if failed:
        assert now["chain_errors"] + now["dma_errors"] == before["chain_errors"] + before["dma_errors"] + 1
    assert sd.alive


PACKED_FLAGS = st.sets(st.sampled_from([NEXT, WRITE, INDIRECT, D.VRING_PACKED_DESC_F_AVAIL,
                                         D.VRING_PACKED_DESC_F_USED])).map(sum)


@pytest.mark.ring("packed")
@FUZZ
@given(descs=st.lists(st.tuples(st.sampled_from(["buf", "buf+7", "ring", "zero", "low", "end", "top"]),
                                st.sampled_from([0, 1, 12, 26, 72, 4096, 0xFFFFFFFF]),
                                PACKED_FLAGS, st.integers(0, 258)),
                      min_size=1, max_size=6))
def test_random_packed_rings_never_crash(dev, descs):
    """Any flags, IDs, lengths and addresses in the ring: if the first
    descriptor is available the device uses chains or fails, else it
    waits; never a crash, never more than one error counted."""
    d, sd = dev.driver, dev.harness
    d.forget_queues()
    d.start()
    q = d.queues[TX]
    before = sd.stats()
    buf, _ = frame_buffer(d, 4096)
    where = {"buf": buf, "buf+7": buf + 7, "ring": q.desc, "zero": 0, "low": 0xFFFF_F000,
             "end": d.mem.iova + d.mem.size - 8, "top": 2**64 - 16}
    for i, (addr, length, flags, ident) in reversed(list(enumerate(descs))):
        q.write_desc(i, where[addr], length, ident, flags)
    d.kick(TX, force=True)
    first = descs[0][2]
    available = bool(first & D.VRING_PACKED_DESC_F_AVAIL) and not first & D.VRING_PACKED_DESC_F_USED
    deadline = time.monotonic() + (2 if available else 0.05)
    while True:
        failed = bool(d.status & D.DEVICE_NEEDS_RESET)
        now = sd.stats()
        handled = sum(now[k] - before[k] for k in now if k == "tx_packets" or k.startswith("tx_drops"))
        if failed or handled or time.monotonic() > deadline:
            break
    assert failed or handled or not available, "an available chain neither used nor refused"
    if not available:
        assert not failed and not handled
    if failed:
        assert now["chain_errors"] + now["dma_errors"] == before["chain_errors"] + before["dma_errors"] + 1
    assert sd.alive


# ==== hostile RX chains (need frames: TAP) ============================================

def rx_failure(dev, build, counter: str) -> None:
    d, tap = dev.driver, dev.tap
    d.take_irq(d.CONFIG_VECTOR)
    before = dev.harness.stats()
    build(d, d.queues[RX])
    d.kick(RX, force=True)
    tap.send(udp_frame(200, to_guest=True))
    wait_needs_reset(d)
    assert d.wait_irq(d.CONFIG_VECTOR) >= 1
    assert dev.harness.stats()[counter] == before[counter] + 1
    assert dev.harness.stats()["rx_packets"] == before["rx_packets"]
    d.forget_queues()
    d.start()
    d.post_rx(4)
    frame = udp_frame(300, 9, to_guest=True)
    tap.send(frame)
    got = d.receive(1)[0].frame
    if got != frame:                                        # the frame the bad chain refused
        got = d.receive(1)[0].frame
    assert got == frame


def test_readable_descriptor_in_rx(tap_device):
    def build(d, q):
        buf = d.mem.alloc(2048)
        publish(q, [(buf, 1024, NEXT, 1), (buf + 1024, 1024, WRITE, 0)])
    rx_failure(tap_device, build, "chain_errors")


def test_rx_buffer_outside_guest_memory(tap_device):
    rx_failure(tap_device, lambda d, q: publish(q, [(0x4000, 2048, WRITE, 0)]), "dma_errors")


def test_rx_buffer_straddling_the_end_of_memory(tap_device):
    def build(d, q):
        publish(q, [(d.mem.iova + d.mem.size - 100, 2048, WRITE, 0)])
    rx_failure(tap_device, build, "dma_errors")


def test_rx_first_buffer_smaller_than_the_header(tap_device):
    def build(d, q):
        small, big = d.mem.alloc(8), d.mem.alloc(2048)
        if isinstance(q, D.PackedQueue):
            publish(q, [(small, 8, WRITE, 0)], head=0)
            publish(q, [(big, 2048, WRITE, 0)], head=1)
            return
        publish(q, [(small, 8, WRITE, 0)], head=0)
        q.write_desc(1, big, 2048, WRITE)
        q.put_avail(1)
    rx_failure(tap_device, build, "chain_errors")


def test_rx_into_read_only_memory(tap_device):
    """A region QEMU mapped read-only must never be written."""
    d = tap_device.driver
    ro = os.memfd_create("ro")
    os.ftruncate(ro, 1 << 16)
    try:
        d.client.dma_map(iova=0x3_0000_0000, size=1 << 16, fd=ro, flags=P.DMA_FLAG_READ)
        rx_failure(tap_device, lambda d, q: publish(q, [(0x3_0000_0000, 2048, WRITE, 0)]), "dma_errors")
        assert os.pread(ro, 4096, 0) == bytes(4096)
    finally:
        os.close(ro)
