"""A minimal virtio-net guest driver on top of the test client.

It does what Linux's virtio_pci_modern + virtio_net do, in the smallest
readable form: walk the PCI capability list, find the virtio structures in
their BAR, negotiate features, build split virtqueues in guest memory, post
RX buffers, transmit frames, kick, take MSI-X interrupts from eventfds and
read the used rings.

The layouts here come from the virtio 1.2 specification, not from the
device's code, so the driver is an independent check of the device.
"""
from __future__ import annotations

import os
import select
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from .client import VfioUserClient
from .rings import (  # noqa: F401  (the ring constants, for tests that write rings)
    VRING_AVAIL_F_NO_INTERRUPT,
    VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE,
    VRING_PACKED_DESC_F_AVAIL,
    VRING_PACKED_DESC_F_USED,
    VRING_USED_F_NO_NOTIFY,
    Chain,
    DriverError,
    PackedQueue,
    SplitQueue,
    Used,
    vring_need_event,
)

# ---- virtio 1.2 constants ------------------------------------------------------
PCI_STATUS, PCI_COMMAND, PCI_CAP_PTR = 0x06, 0x04, 0x34
PCI_STATUS_CAP_LIST = 0x10
PCI_COMMAND_MEMORY, PCI_COMMAND_MASTER = 0x2, 0x4
CAP_ID_VENDOR, CAP_ID_MSIX = 0x09, 0x11
MSIX_ENABLE = 0x8000

VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG = 1, 2
VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_CAP_PCI_CFG = 3, 4, 5

ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK = 1, 2, 4, 8
DEVICE_NEEDS_RESET, FAILED = 0x40, 0x80

# struct virtio_pci_common_cfg: name -> (offset, size)
COMMON = {
    "device_feature_select": (0x00, 4), "device_feature": (0x04, 4),
    "driver_feature_select": (0x08, 4), "driver_feature": (0x0C, 4),
    "config_msix_vector": (0x10, 2), "num_queues": (0x12, 2),
    "device_status": (0x14, 1), "config_generation": (0x15, 1),
    "queue_select": (0x16, 2), "queue_size": (0x18, 2),
    "queue_msix_vector": (0x1A, 2), "queue_enable": (0x1C, 2),
    "queue_notify_off": (0x1E, 2), "queue_desc": (0x20, 8),
    "queue_driver": (0x28, 8), "queue_device": (0x30, 8),
}
NO_VECTOR = 0xFFFF

# feature bits
F_MRG_RXBUF = 15
F_INDIRECT_DESC = 28
F_EVENT_IDX = 29
F_VERSION_1 = 32
F_RING_PACKED = 34


NET_HDR = struct.Struct("<BBHHHHH")   # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers
NET_HDR_LEN = NET_HDR.size            # 12: virtio_net_hdr_mrg_rxbuf, always with VERSION_1
RX, TX, CTRL = 0, 1, 2                # one pair; with MQ pair p is 2p, 2p+1 and control 2*pairs
F_CTRL_VQ = 17
F_MQ = 22
F_HASH_REPORT = 57
F_RSS = 60
CTRL_MQ, MQ_VQ_PAIRS_SET, MQ_RSS_CONFIG, MQ_HASH_CONFIG = 4, 0, 1, 2
HASH_FIELDS = struct.Struct("<IHH")   # virtio_net_hdr_v1_hash after the header: value, report, padding


# ---- PCI discovery ---------------------------------------------------------------

@dataclass
class Window:
    """A virtio structure: where it lives in which BAR."""
    bar: int
    offset: int
    length: int


@dataclass
class VirtioCaps:
    common: Window
    notify: Window
    notify_multiplier: int
    isr: Window
    device: Window
    pci_cfg: int | None          # config-space offset of the PCI_CFG access cap


@dataclass
class MsixCap:
    offset: int
    vectors: int
    table_bar: int
    table_offset: int
    pba_bar: int
    pba_offset: int


def capability_list(config: bytes) -> list[tuple[int, int]]:
    """(offset, cap id) of every capability, following the next pointers."""
    if not struct.unpack_from("<H", config, PCI_STATUS)[0] & PCI_STATUS_CAP_LIST:
        return []
    caps = []
    pos = config[PCI_CAP_PTR] & ~3
    while pos:
        if pos < 0x40 or pos + 2 > len(config) or len(caps) >= 48:
            raise DriverError(f"broken capability list at {pos:#x}")
        caps.append((pos, config[pos]))
        pos = config[pos + 1] & ~3
    return caps


def parse_capabilities(config: bytes) -> tuple[VirtioCaps, MsixCap]:
    windows: dict[int, Window] = {}
    multiplier = None
    pci_cfg = None
    msix = None
    for off, cap_id in capability_list(config):
        if cap_id == CAP_ID_MSIX:
            control, table, pba = struct.unpack_from("<HII", config, off + 2)
            msix = MsixCap(off, (control & 0x7FF) + 1, table & 7, table & ~7, pba & 7, pba & ~7)
        elif cap_id == CAP_ID_VENDOR:
            _len, cfg_type, bar, _id, offset, length = struct.unpack_from("<BBBB2xII", config, off + 2)
            if cfg_type == VIRTIO_PCI_CAP_PCI_CFG:
                pci_cfg = off
            elif cfg_type not in windows:          # the first of each type is the preferred one
                windows[cfg_type] = Window(bar, offset, length)
                if cfg_type == VIRTIO_PCI_CAP_NOTIFY_CFG:
                    multiplier = struct.unpack_from("<I", config, off + 16)[0]
    needed = (VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_CAP_ISR_CFG,
              VIRTIO_PCI_CAP_DEVICE_CFG)
    missing = [t for t in needed if t not in windows]
    if missing or msix is None:
        raise DriverError(f"missing virtio caps {missing} or MSI-X ({msix})")
    return VirtioCaps(windows[1], windows[2], multiplier, windows[3], windows[4], pci_cfg), msix


# ---- the driver -----------------------------------------------------------------

@dataclass
class RxPacket:
    header: bytes
    frame: bytes
    used: list[Used]
    hash_value: int | None = None        # with HASH_REPORT: the v1_hash fields
    hash_report: int | None = None

    @property
    def num_buffers(self) -> int:
        return NET_HDR.unpack(self.header)[6]


# The ring layout a driver asks for when its caller does not say: "split",
# "packed", or None (whatever `accept` says).  The tests' `ring` fixture
# sets it, so that every test runs on both layouts.
DEFAULT_RING: str | None = None


class VirtioNetDriver:
    CONFIG_VECTOR = 0

    def __init__(self, client: VfioUserClient, queue_size: int = 256, ring: str | None = None):
        self.client = client
        self.ring = ring or DEFAULT_RING
        self.mem = client.memory
        self.queue_size = queue_size
        config = client.config_read(0, 256)
        self.caps, self.msix = parse_capabilities(config)
        self.features = 0
        self.queues: dict[int, SplitQueue | PackedQueue] = {}
        self.irq_fds: list[int] = []
        self.kicks_sent = 0
        self.kicks_suppressed = 0
        self.pairs = 1                     # queue pairs set up (max_virtqueue_pairs with MQ)
        self._rx_pending: dict[int, list[Used]] = {}

    # ---- register access ------------------------------------------------------
    def _bar_read(self, w: Window, offset: int, size: int) -> int:
        return int.from_bytes(self.client.region_read(w.bar, w.offset + offset, size), "little")

    def _bar_write(self, w: Window, offset: int, size: int, value: int, posted: bool = False) -> None:
        self.client.region_write(w.bar, w.offset + offset, value.to_bytes(size, "little"), posted)

    def common_read(self, name: str) -> int:
        off, size = COMMON[name]
        if size == 8:       # 64-bit registers as two 32-bit halves, like Linux
            return self._bar_read(self.caps.common, off, 4) | self._bar_read(self.caps.common, off + 4, 4) << 32
        return self._bar_read(self.caps.common, off, size)

    def common_write(self, name: str, value: int) -> None:
        off, size = COMMON[name]
        if size == 8:
            self._bar_write(self.caps.common, off, 4, value & 0xFFFFFFFF)
            self._bar_write(self.caps.common, off + 4, 4, value >> 32)
        else:
            self._bar_write(self.caps.common, off, size, value)

    @property
    def status(self) -> int:
        return self.common_read("device_status")

    def set_status(self, value: int) -> None:
        self.common_write("device_status", value)

    def read_isr(self) -> int:
        return self._bar_read(self.caps.isr, 0, 1)

    def net_config(self) -> dict:
        raw = self.client.region_read(self.caps.device.bar, self.caps.device.offset, 12)
        status, pairs, mtu = struct.unpack_from("<HHH", raw, 6)
        return {"mac": raw[:6], "status": status, "max_virtqueue_pairs": pairs, "mtu": mtu}

    def device_features(self) -> int:
        bits = 0
        for sel in (0, 1):
            self.common_write("device_feature_select", sel)
            bits |= self.common_read("device_feature") << (32 * sel)
        return bits

    def write_driver_features(self, bits: int) -> None:
        for sel in (0, 1):
            self.common_write("driver_feature_select", sel)
            self.common_write("driver_feature", bits >> (32 * sel) & 0xFFFFFFFF)

    # ---- bring-up ---------------------------------------------------------------
    def reset(self) -> None:
        """Status 0, then wait for the device to read back 0 (3.1.1)."""
        self.set_status(0)
        deadline = time.monotonic() + self.client.timeout
        while self.status != 0:
            if time.monotonic() > deadline:
                raise DriverError("device did not reset")
            time.sleep(0.001)
        self.forget_queues()

    def forget_queues(self) -> None:
        for q in self.queues.values():
            q.free()
        self.queues.clear()
        self._rx_pending.clear()
        self.pairs = 1

    def negotiate(self, accept: int | None = None, drop: int = 0) -> int:
        """ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns the features.
        accept: bits to accept (default: all offered); drop: bits to refuse."""
        self.set_status(ACKNOWLEDGE)
        self.set_status(ACKNOWLEDGE | DRIVER)
        offered = self.device_features()
        wanted = (offered if accept is None else accept) & ~drop
        if self.ring == "packed":
            if not offered >> F_RING_PACKED & 1:
                raise DriverError("packed rings wanted, the device does not offer them")
            wanted |= 1 << F_RING_PACKED
        elif self.ring == "split":
            wanted &= ~(1 << F_RING_PACKED)
        self.write_driver_features(wanted)
        self.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK)
        if not self.status & FEATURES_OK:
            self.set_status(ACKNOWLEDGE | DRIVER | FAILED)
            raise DriverError(f"device refused features {wanted:#x} (offered {offered:#x})")
        self.features = wanted
        return wanted

    def has(self, bit: int) -> bool:
        return bool(self.features >> bit & 1)

    @property
    def hdr_len(self) -> int:
        """The virtio-net header both ways: 20 bytes with HASH_REPORT."""
        return NET_HDR_LEN + (HASH_FIELDS.size if self.has(F_HASH_REPORT) else 0)

    def setup_interrupts(self) -> None:
        """Enable MSI-X and hand one eventfd per vector over, as QEMU does."""
        control = struct.unpack("<H", self.client.config_read(self.msix.offset + 2, 2))[0]
        self.client.config_write(self.msix.offset + 2, struct.pack("<H", control | MSIX_ENABLE))
        if not self.irq_fds:
            self.irq_fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(self.msix.vectors)]
        self.client.set_irqs(0, self.irq_fds)

    def setup_queue(self, index: int, size: int | None = None) -> SplitQueue | PackedQueue:
        self.common_write("queue_select", index)
        max_size = self.common_read("queue_size")
        if max_size == 0:
            raise DriverError(f"queue {index} does not exist")
        size = min(size or self.queue_size, max_size)
        layout = PackedQueue if self.has(F_RING_PACKED) else SplitQueue
        q = layout(self.mem, index, size, self.has(F_EVENT_IDX))
        self.common_write("queue_size", size)
        self.common_write("queue_desc", q.desc)
        self.common_write("queue_driver", q.driver_area)
        self.common_write("queue_device", q.device_area)
        self.common_write("queue_msix_vector", index + 1)
        if self.common_read("queue_msix_vector") != index + 1:
            raise DriverError(f"queue {index}: MSI-X vector refused")
        q.notify_off = self.common_read("queue_notify_off")
        self.common_write("queue_enable", 1)
        self.queues[index] = q
        return q

    def start(self, accept: int | None = None, drop: int = 0, queue_size: int | None = None,
              before_driver_ok: Callable[[VirtioNetDriver], object] | None = None) -> VirtioNetDriver:
        """The whole bring-up: reset, negotiate, MSI-X, queues, DRIVER_OK
        (before_driver_ok runs right before it, the queues set up)."""
        self.client.config_write(PCI_COMMAND, struct.pack("<H", PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER))
        self.reset()
        self.negotiate(accept, drop)
        self.setup_interrupts()
        self.common_write("config_msix_vector", self.CONFIG_VECTOR)
        if self.common_read("config_msix_vector") != self.CONFIG_VECTOR:
            raise DriverError("config MSI-X vector refused")
        self.pairs = self.net_config()["max_virtqueue_pairs"] if self.has(F_MQ) else 1
        data_queues = tuple(range(2 * self.pairs))
        for index in data_queues + ((self.ctrl_index,) if self.has(F_CTRL_VQ) else ()):
            self.setup_queue(index, queue_size)
        if before_driver_ok:
            before_driver_ok(self)
        self.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
        if self.status & (DEVICE_NEEDS_RESET | FAILED):
            raise DriverError(f"device status {self.status:#x} after DRIVER_OK")
        return self

    @property
    def ctrl_index(self) -> int:
        return 2 * self.pairs

    def set_pairs(self, n: int) -> int:
        """VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET n; returns the ack byte."""
        return self.control(CTRL_MQ, MQ_VQ_PAIRS_SET, struct.pack("<H", n))

    def set_rss(self, hash_types: int, table: list[int], key: bytes, max_tx_vq: int,
                unclassified: int = 0) -> int:
        """VIRTIO_NET_CTRL_MQ_RSS_CONFIG (struct virtio_net_rss_config); the ack."""
        return self.control(CTRL_MQ, MQ_RSS_CONFIG, rss_config(hash_types, table, key, max_tx_vq, unclassified))

    def set_hash(self, hash_types: int, key: bytes) -> int:
        """VIRTIO_NET_CTRL_MQ_HASH_CONFIG (struct virtio_net_hash_config); the ack."""
        return self.control(CTRL_MQ, MQ_HASH_CONFIG,
                            struct.pack("<I8xB", hash_types, len(key)) + key)

    def close(self) -> None:
        for fd in self.irq_fds:
            os.close(fd)
        self.irq_fds = []

    # ---- notifications and interrupts ---------------------------------------------
    def kick(self, index: int, force: bool = False) -> bool:
        """Notify the device (a posted REGION_WRITE of the queue index to its
        doorbell, like QEMU), unless the device asked not to be."""
        q = self.queues[index]
        if not q.should_kick() and not force:
            self.kicks_suppressed += 1
            return False
        offset = self.caps.notify.offset + q.notify_off * self.caps.notify_multiplier
        self.client.region_write(self.caps.notify.bar, offset, struct.pack("<H", index), posted=True)
        self.kicks_sent += 1
        return True

    def wait_irq(self, vector: int, timeout: float = 2.0) -> int:
        """Wait for MSI-X `vector`; returns how many times it fired (0: timeout)."""
        poller = select.poll()
        poller.register(self.irq_fds[vector], select.POLLIN)
        if not poller.poll(timeout * 1000):
            return 0
        return self.take_irq(vector)

    def take_irq(self, vector: int) -> int:
        """Read and clear the vector's eventfd without waiting."""
        try:
            return os.eventfd_read(self.irq_fds[vector])
        except BlockingIOError:
            return 0

    def queue_vector(self, index: int) -> int:
        return index + 1

    # ---- used rings -------------------------------------------------------------
    def wait_used(self, index: int, count: int = 1, timeout: float = 2.0) -> list[Used]:
        """Poll the used ring until `count` entries came back."""
        q = self.queues[index]
        got: list[Used] = []
        deadline = time.monotonic() + timeout
        while True:
            got += q.pop_used()
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue {index}: {len(got)} of {count} used entries after {timeout} s")
            time.sleep(0.0005)

    # ---- virtio-net -------------------------------------------------------------
    def post_rx(self, count: int, size: int = 1526, pieces: int = 1, indirect: bool = False,
                kick: bool = True, pair: int = 0) -> list[Chain]:
        """Post `count` receive chains of `size` bytes, each split into `pieces`
        device-writable buffers, on the RX queue of `pair`."""
        q = self.queues[2 * pair + RX]
        chains = []
        for _ in range(count):
            sizes = _split(size, pieces)
            bufs = [(self.mem.alloc(n, 8), n, True) for n in sizes]
            chains.append(q.add(bufs, indirect, owned=[b[0] for b in bufs]))
        if kick and chains:
            self.kick(2 * pair + RX)
        return chains

    def transmit(self, frame: bytes, header: bytes | None = None, pieces: list[int] | None = None,
                 indirect: bool = False, kick: bool = True, pair: int = 0) -> Chain:
        """Queue one frame with its virtio_net_hdr; `pieces` lists the sizes of
        the leading descriptors (the rest goes in a last one)."""
        header = bytes(NET_HDR_LEN) if header is None else header
        if len(header) == NET_HDR_LEN:            # the hash fields, which the device ignores
            header += bytes(self.hdr_len - NET_HDR_LEN)
        data = header + frame
        sizes = []
        rest = len(data)
        for n in pieces or []:
            n = min(n, rest)
            if n:
                sizes.append(n)
                rest -= n
        if rest:
            sizes.append(rest)
        bufs, pos = [], 0
        for n in sizes:
            iova = self.mem.alloc(n, 8)
            self.mem.write(iova, data[pos:pos + n])
            bufs.append((iova, n, False))
            pos += n
        chain = self.queues[2 * pair + TX].add(bufs, indirect, owned=[b[0] for b in bufs])
        if kick:
            self.kick(2 * pair + TX)
        return chain

    def control(self, cls: int, cmd: int, data: bytes = b"", timeout: float = 2.0) -> int:
        """One control-queue command (virtio 1.2, 5.1.6.5); returns the ack
        byte the device wrote (0 VIRTIO_NET_OK, 1 VIRTIO_NET_ERR)."""
        out = self.mem.alloc(2 + len(data), 8)
        self.mem.write(out, bytes([cls, cmd]) + data)
        ack = self.mem.alloc(1, 8)
        self.mem.write(ack, b"\xee")
        ctrl = self.ctrl_index
        self.queues[ctrl].add([(out, 2 + len(data), False), (ack, 1, True)], owned=[out, ack])
        self.kick(ctrl, force=True)
        [used] = self.wait_used(ctrl, 1, timeout)
        value = self.mem.read(ack, 1)[0]
        self.queues[ctrl].release_chain(used.chain)
        return value

    def complete_tx(self, count: int = 1, timeout: float = 2.0, pair: int = 0) -> list[Used]:
        used = self.wait_used(2 * pair + TX, count, timeout)
        for u in used:
            self.queues[2 * pair + TX].release_chain(u.chain)
        return used

    def receive(self, count: int = 1, timeout: float = 2.0, pair: int = 0) -> list[RxPacket]:
        """Collect `count` packets from the RX used ring of `pair` (following
        num_buffers with MRG_RXBUF) and free their buffers."""
        q = self.queues[2 * pair + RX]
        packets: list[RxPacket] = []
        deadline = time.monotonic() + timeout
        while len(packets) < count:
            self._rx_pending.setdefault(q.index, []).extend(q.pop_used())
            packet = self._take_packet(q)
            if packet is not None:
                packets.append(packet)
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(packets)} of {count} packets after {timeout} s")
            time.sleep(0.0005)
        return packets

    def _take_packet(self, q: SplitQueue | PackedQueue) -> RxPacket | None:
        pending = self._rx_pending.get(q.index, [])
        if not pending:
            return None
        first = pending[0]
        data = first.chain.written(self.mem, first.length)
        if len(data) < self.hdr_len:
            raise DriverError(f"RX buffer of {first.length} bytes holds no header")
        nbufs = NET_HDR.unpack_from(data)[6] if self.has(F_MRG_RXBUF) else 1
        if nbufs < 1:
            raise DriverError("num_buffers is 0")
        if len(pending) < nbufs:
            return None
        used, self._rx_pending[q.index] = pending[:nbufs], pending[nbufs:]
        for u in used[1:]:
            data += u.chain.written(self.mem, u.length)
        for u in used:
            q.release_chain(u.chain)
        packet = RxPacket(data[:NET_HDR_LEN], data[self.hdr_len:], used)
        if self.has(F_HASH_REPORT):
            packet.hash_value, packet.hash_report, _ = HASH_FIELDS.unpack_from(data, NET_HDR_LEN)
        return packet


def rss_config(hash_types: int, table: list[int], key: bytes, max_tx_vq: int, unclassified: int = 0) -> bytes:
    """struct virtio_net_rss_config: table entries are receive queue pairs."""
    return (struct.pack("<IHH", hash_types, len(table) - 1, unclassified) +
            struct.pack(f"<{len(table)}H", *table) + struct.pack("<HB", max_tx_vq, len(key)) + key)


def _split(total: int, pieces: int) -> list[int]:
    base, extra = divmod(total, pieces)
    return [base + (1 if i < extra else 0) for i in range(pieces) if base or i < extra]
