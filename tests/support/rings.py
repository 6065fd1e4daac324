"""The two virtqueue layouts of virtio 1.2 from the driver's side: split
(2.7: descriptor table, avail ring, used ring) and packed (2.8: one ring of
descriptors with wrap counters, two event suppression structures).

Both offer what VirtioNetDriver uses: add() a chain of buffers, pop_used()
what the device returned, should_kick() from the device's suppression,
used_idx (chains the device has returned so far, mod 2^16) and free().
The rest is each layout's raw access, for tests that write what a hostile
or unusual driver would.  The layouts come from the specification, not
from the device's code.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .client import GuestMemory

VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT = 1, 2, 4
VRING_AVAIL_F_NO_INTERRUPT = 1
VRING_USED_F_NO_NOTIFY = 1
VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED = 1 << 7, 1 << 15
RING_EVENT_FLAGS_ENABLE, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_DESC = 0, 1, 2
EVENT_WRAP = 1 << 15                       # in an event suppression's desc field
PACKED_DESC = struct.Struct("<QIHH")        # struct pvirtq_desc: addr, len, id, flags
EVENT = struct.Struct("<HH")                # struct pvirtq_event_suppress: desc (off | wrap), flags


class DriverError(Exception):
    """The device did what no correct device does, or the driver ran out of
    room (descriptors, buffer IDs): the root of the test driver's errors."""


def vring_need_event(event: int, new: int, old: int) -> bool:
    """virtio 1.2, 2.7.10: should the other side be notified?"""
    return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF




@dataclass
class Chain:
    """A descriptor chain the driver made available."""
    head: int
    buffers: list[tuple[int, int, bool]]    # (iova, length, device-writable)
    descs: list[int]                        # ring descriptors it occupies
    owned: list[int] = field(default_factory=list)   # allocations freed with the chain
    table: int | None = None                # indirect table

    def written(self, mem: GuestMemory, length: int) -> bytes:
        """The first `length` bytes the device wrote into the writable buffers."""
        out = bytearray()
        for iova, size, writable in self.buffers:
            if writable and len(out) < length:
                out += mem.read(iova, min(size, length - len(out)))
        return bytes(out)


@dataclass
class Used:
    chain: Chain
    length: int


class Ring:
    """What both layouts do alike: chains and their buffers, freeing them."""
    mem: GuestMemory
    desc: int
    chains: dict[int, Chain]

    @property
    def areas(self) -> tuple[int, int, int]:
        """The ring's three allocations: descriptors, driver and device area."""
        raise NotImplementedError

    def release_chain(self, chain: Chain) -> None:
        for iova in chain.owned:
            self.mem.free(iova)
        chain.owned.clear()

    def free(self) -> None:
        for chain in self.chains.values():
            self.release_chain(chain)
            if chain.table is not None:
                self.mem.free(chain.table)
        self.chains.clear()
        for iova in self.areas:
            self.mem.free(iova)


class SplitQueue(Ring):
    """Descriptor table, avail ring and used ring in guest memory
    (virtio 1.2, 2.7), driven from the driver's side."""

    def __init__(self, mem: GuestMemory, index: int, size: int, event_idx: bool):
        self.mem, self.index, self.size, self.event_idx = mem, index, size, event_idx
        self.desc = mem.alloc(16 * size, 16)
        self.avail = mem.alloc(6 + 2 * size, 2)
        self.used = mem.alloc(6 + 8 * size, 4)
        self.free_descs = list(range(size))
        self.avail_idx = 0                 # shadow of avail->idx
        self.last_used = 0                 # next used entry to read
        self.kicked_idx = 0                # avail idx at the last notification decision
        self.chains: dict[int, Chain] = {}
        self.notify_off = 0

    @property
    def areas(self) -> tuple[int, int, int]:
        return self.desc, self.avail, self.used

    @property
    def driver_area(self) -> int:
        return self.avail

    @property
    def device_area(self) -> int:
        return self.used

    # -- raw access, also for hostile tests --
    def write_desc(self, i: int, addr: int, length: int, flags: int = 0, nxt: int = 0,
                   table: int | None = None) -> None:
        base = self.desc if table is None else table
        self.mem.write(base + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def put_avail(self, head: int) -> None:
        """Put head in the next avail slot and publish it (ring entry before idx)."""
        self.mem.set_u16(self.avail + 4 + 2 * (self.avail_idx % self.size), head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.mem.set_u16(self.avail + 2, self.avail_idx)

    def set_avail_idx(self, value: int) -> None:
        self.avail_idx = value & 0xFFFF
        self.mem.set_u16(self.avail + 2, self.avail_idx)

    @property
    def used_idx(self) -> int:
        return self.mem.u16(self.used + 2)

    @property
    def used_flags(self) -> int:
        return self.mem.u16(self.used)

    @property
    def avail_event(self) -> int:
        """Written by the device (EVENT_IDX): kick when avail idx passes it."""
        return self.mem.u16(self.used + 4 + 8 * self.size)

    @property
    def kick_event(self) -> int | None:
        """Where the device wants a kick (EVENT_IDX): an avail index."""
        return self.avail_event if self.event_idx else None

    def set_used_event(self, value: int) -> None:
        self.mem.set_u16(self.avail + 4 + 2 * self.size, value)

    # -- notification suppression, in the terms both layouts share --
    @property
    def avail_position(self) -> int:
        """Where the next chain goes: the avail index."""
        return self.avail_idx

    def interrupt_at(self, position: int) -> None:
        """EVENT_IDX: interrupt once the used index passes position."""
        self.set_used_event(position)

    def suppress_interrupts(self, on: bool) -> None:
        self.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT if on else 0)

    def set_avail_flags(self, flags: int) -> None:
        self.mem.set_u16(self.avail, flags)

    # -- chains --
    def add(self, buffers: list[tuple[int, int, bool]], indirect: bool = False,
            owned: list[int] | None = None) -> Chain:
        """Make a chain of (iova, length, writable) buffers available."""
        if not buffers:
            raise ValueError("empty chain")
        if indirect:
            table = self.mem.alloc(16 * len(buffers), 16)
            for i, (iova, length, writable) in enumerate(buffers):
                last = i == len(buffers) - 1
                self.write_desc(i, iova, length, (0 if last else VRING_DESC_F_NEXT) |
                                (VRING_DESC_F_WRITE if writable else 0), 0 if last else i + 1, table)
            head = self._take(1)[0]
            self.write_desc(head, table, 16 * len(buffers), VRING_DESC_F_INDIRECT)
            chain = Chain(head, buffers, [head], list(owned or []), table)
        else:
            descs = self._take(len(buffers))
            for i, (iova, length, writable) in enumerate(buffers):
                last = i == len(buffers) - 1
                self.write_desc(descs[i], iova, length, (0 if last else VRING_DESC_F_NEXT) |
                                (VRING_DESC_F_WRITE if writable else 0), 0 if last else descs[i + 1])
            chain = Chain(descs[0], buffers, descs, list(owned or []))
        self.chains[chain.head] = chain
        self.put_avail(chain.head)
        return chain

    def _take(self, n: int) -> list[int]:
        if len(self.free_descs) < n:
            raise DriverError(f"queue {self.index}: {n} descriptors wanted, {len(self.free_descs)} free")
        taken, self.free_descs = self.free_descs[:n], self.free_descs[n:]
        return taken

    def pop_used(self) -> list[Used]:
        """Everything the device has returned since the last call."""
        out = []
        end = self.used_idx
        while self.last_used != end:
            slot = self.used + 4 + 8 * (self.last_used % self.size)
            head, length = struct.unpack_from("<II", self.mem.read(slot, 8))
            chain = self.chains.pop(head, None)
            if chain is None:
                raise DriverError(f"queue {self.index}: device returned unknown head {head}")
            self.free_descs.extend(chain.descs)
            if chain.table is not None:
                self.mem.free(chain.table)
            out.append(Used(chain, length))
            self.last_used = (self.last_used + 1) & 0xFFFF
        if self.event_idx:
            self.set_used_event(self.last_used)      # interrupt me on the next one
        return out

    def should_kick(self) -> bool:
        """Notification suppression from the driver's side (2.7.10)."""
        old, new = self.kicked_idx, self.avail_idx
        self.kicked_idx = new
        if self.event_idx:
            return vring_need_event(self.avail_event, new, old)
        return not self.used_flags & VRING_USED_F_NO_NOTIFY



class PackedQueue(Ring):
    """A packed virtqueue (virtio 1.2, 2.8), driven from the driver's side.

    Positions are ring counters in [0, 2 * size): slot ctr % size, wrap
    counter 1 in the first lap.  Buffer IDs are taken from a free list and
    written in every descriptor of a chain (the device reads the last)."""

    def __init__(self, mem: GuestMemory, index: int, size: int, event_idx: bool):
        self.mem, self.index, self.size, self.event_idx = mem, index, size, event_idx
        self.desc = mem.alloc(16 * size, 16)
        self.driver_area = mem.alloc(EVENT.size, 4)        # driver event suppression
        self.device_area = mem.alloc(EVENT.size, 4)        # device event suppression
        for iova, n in ((self.desc, 16 * size), (self.driver_area, 4), (self.device_area, 4)):
            mem.write(iova, bytes(n))
        self.next_avail = 0
        self.next_used = 0
        self.kicked = 0                    # next_avail at the last notification decision
        self.returned = 0                  # chains taken back, mod 2^16
        self.free_count = size
        self.free_ids = list(range(size))
        self.chains: dict[int, Chain] = {}
        self.notify_off = 0

    @property
    def areas(self) -> tuple[int, int, int]:
        return self.desc, self.driver_area, self.device_area

    # -- ring counters --
    def wrap(self, ctr: int) -> bool:
        return ctr < self.size

    def advance(self, ctr: int, n: int) -> int:
        return (ctr + n) % (2 * self.size)

    def avail_bits(self, ctr: int) -> int:
        """AVAIL = wrap counter, USED = its inverse: available (2.8.1)."""
        return VRING_PACKED_DESC_F_AVAIL if self.wrap(ctr) else VRING_PACKED_DESC_F_USED

    # -- raw access, also for hostile tests --
    def read_desc(self, ctr: int) -> tuple[int, int, int, int]:
        return PACKED_DESC.unpack(self.mem.read(self.desc + 16 * (ctr % self.size), 16))

    def write_desc(self, ctr: int, addr: int, length: int, ident: int, flags: int) -> None:
        """Write a whole descriptor at ring counter ctr (flags as given)."""
        self.mem.write(self.desc + 16 * (ctr % self.size), PACKED_DESC.pack(addr, length, ident, flags))

    def set_flags(self, ctr: int, flags: int) -> None:
        self.mem.set_u16(self.desc + 16 * (ctr % self.size) + 14, flags)

    def is_used(self, ctr: int) -> bool:
        flags = self.read_desc(ctr)[3]
        w = self.wrap(ctr)
        return bool(flags & VRING_PACKED_DESC_F_AVAIL) == w and bool(flags & VRING_PACKED_DESC_F_USED) == w

    @property
    def device_event(self) -> tuple[int, int]:
        """(desc, flags) the device wrote: when it wants to be kicked."""
        return EVENT.unpack(self.mem.read(self.device_area, EVENT.size))

    @property
    def kick_event(self) -> int | None:
        """Where the device wants a kick (RING_EVENT_FLAGS_DESC): a ring counter."""
        desc, flags = self.device_event
        if flags != RING_EVENT_FLAGS_DESC:
            return None
        return (desc & ~EVENT_WRAP) + (0 if desc & EVENT_WRAP else self.size)

    def set_driver_event(self, flags: int, ctr: int = 0) -> None:
        """When the driver wants interrupts: ENABLE, DISABLE or DESC at ctr."""
        desc = ctr % self.size | (EVENT_WRAP if self.wrap(ctr) else 0)
        self.mem.set_u16(self.driver_area, desc)
        self.mem.set_u16(self.driver_area + 2, flags)

    # -- notification suppression, in the terms both layouts share --
    @property
    def avail_position(self) -> int:
        """Where the next chain goes: a ring counter."""
        return self.next_avail

    def interrupt_at(self, position: int) -> None:
        """EVENT_IDX: interrupt once the descriptor at position is used."""
        self.set_driver_event(RING_EVENT_FLAGS_DESC, position)

    def suppress_interrupts(self, on: bool) -> None:
        self.set_driver_event(RING_EVENT_FLAGS_DISABLE if on else RING_EVENT_FLAGS_ENABLE)

    # -- chains --
    def add(self, buffers: list[tuple[int, int, bool]], indirect: bool = False,
            owned: list[int] | None = None) -> Chain:
        """Make a chain of (iova, length, writable) buffers available: every
        descriptor but the first written whole, the first's flags last."""
        if not buffers:
            raise ValueError("empty chain")
        table = None
        if indirect:
            table = self.mem.alloc(16 * len(buffers), 16)
            for i, (iova, length, writable) in enumerate(buffers):
                self.mem.write(table + 16 * i, PACKED_DESC.pack(iova, length, 0,
                                                                VRING_DESC_F_WRITE if writable else 0))
            ring = [(table, 16 * len(buffers), VRING_DESC_F_INDIRECT)]
        else:
            ring = [(iova, length, VRING_DESC_F_WRITE if w else 0) for iova, length, w in buffers]
        if len(ring) > self.free_count or not self.free_ids:
            raise DriverError(f"queue {self.index}: {len(ring)} descriptors wanted, {self.free_count} free")
        ident = self.free_ids.pop(0)
        start, ctrs = self.next_avail, []
        for i, (addr, length, flags) in enumerate(ring):
            ctr = self.advance(start, i)
            flags |= (VRING_DESC_F_NEXT if i < len(ring) - 1 else 0) | self.avail_bits(ctr)
            if i == 0:
                first_flags = flags
                self.mem.write(self.desc + 16 * (ctr % self.size), struct.pack("<QIH", addr, length, ident))
            else:
                self.write_desc(ctr, addr, length, ident, flags)
            ctrs.append(ctr)
        self.set_flags(start, first_flags)
        self.next_avail = self.advance(start, len(ring))
        self.free_count -= len(ring)
        chain = Chain(ident, buffers, ctrs, list(owned or []), table)
        self.chains[ident] = chain
        return chain

    def pop_used(self) -> list[Used]:
        """Everything the device has returned since the last call."""
        out = []
        while self.chains and self.is_used(self.next_used):
            _, length, ident, _ = self.read_desc(self.next_used)
            chain = self.chains.pop(ident, None)
            if chain is None:
                raise DriverError(f"queue {self.index}: device returned unknown buffer id {ident}")
            self.next_used = self.advance(self.next_used, len(chain.descs))
            self.free_count += len(chain.descs)
            self.free_ids.append(ident)
            if chain.table is not None:
                self.mem.free(chain.table)
            out.append(Used(chain, length))
            self.returned = (self.returned + 1) & 0xFFFF
        if self.event_idx:
            self.set_driver_event(RING_EVENT_FLAGS_DESC, self.next_used)   # interrupt me on the next one
        return out

    @property
    def used_idx(self) -> int:
        """Chains the device has returned, those not yet popped included."""
        n, ctr, ids = self.returned, self.next_used, set()
        while self.is_used(ctr):
            ident = self.read_desc(ctr)[2]
            chain = self.chains.get(ident)
            if chain is None or ident in ids:
                break
            ids.add(ident)
            n, ctr = n + 1, self.advance(ctr, len(chain.descs))
        return n & 0xFFFF

    def should_kick(self) -> bool:
        """Notification suppression from the driver's side (2.8.10)."""
        old, new = self.kicked, self.next_avail
        self.kicked = new
        if self.device_event[1] == RING_EVENT_FLAGS_DISABLE:
            return False
        event = self.kick_event
        if event is None or not self.event_idx:
            return True
        span = 2 * self.size
        return (new - event - 1) % span < (new - old) % span

