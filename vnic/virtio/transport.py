"""Modern virtio-over-PCI transport (virtio 1.2, section 4.1).

The transport owns config space, the MSI-X BAR and the virtio BAR (common
configuration, notifications, ISR, device configuration) and runs the
device status machine.  The device behind it (vnic.net.virtio_net) supplies
features, device configuration and the data plane.
"""
from __future__ import annotations

import errno
import logging
import os
import struct
from typing import Any, Protocol

from ..errors import DeviceError
from ..pci import config as pcicfg
from ..pci import msix as msixmod
from ..pci.config import Bar, ConfigSpace
from ..pci.msix import Msix
from ..pci.region import (
    CONFIG_REGION,
    IRQ_ERR,
    IRQ_MSIX,
    NUM_IRQS,
    NUM_REGIONS,
    Region,
    empty_region,
)
from ..vfio_user.dma import DmaTable
from .features import F
from .queues import MAX_QUEUE_SIZE, NO_VECTOR, QueueConfig

log = logging.getLogger(__name__)

VIRTIO_VENDOR = 0x1AF4
MODERN_DEVICE_BASE = 0x1040
CAP_ID_VENDOR = 0x09

CAP_COMMON, CAP_NOTIFY, CAP_ISR, CAP_DEVICE, CAP_PCI_CFG = 1, 2, 3, 4, 5

MSIX_BAR = 1
VIRTIO_BAR = 4
WINDOW = 0x1000
COMMON_OFF, ISR_OFF, DEVICE_OFF, NOTIFY_OFF = 0x0000, 0x1000, 0x2000, 0x3000
COMMON_LEN = 0x38
NOTIFY_MULTIPLIER = 4
VIRTIO_BAR_SIZE = 0x4000

# device status bits
ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK = 1, 2, 4, 8
NEEDS_RESET, FAILED = 0x40, 0x80

# common configuration registers: name -> (offset, size)
COMMON_REGS = {
    "device_feature_select": (0x00, 4),
    "device_feature": (0x04, 4),
    "driver_feature_select": (0x08, 4),
    "driver_feature": (0x0C, 4),
    "config_msix_vector": (0x10, 2),
    "num_queues": (0x12, 2),
    "device_status": (0x14, 1),
    "config_generation": (0x15, 1),
    "queue_select": (0x16, 2),
    "queue_size": (0x18, 2),
    "queue_msix_vector": (0x1A, 2),
    "queue_enable": (0x1C, 2),
    "queue_notify_off": (0x1E, 2),
    "queue_desc": (0x20, 8),
    "queue_driver": (0x28, 8),
    "queue_device": (0x30, 8),
}


class VirtioBackend(Protocol):
    """What a virtio device type supplies to the transport."""
    device_type: int
    subsystem_id: int
    class_code: int
    num_queues: int

    def offered_features(self) -> int:
        """The offered feature bits."""

    def config_read(self, offset: int, count: int) -> bytes:
        """count bytes of the device configuration from offset."""

    def config_write(self, offset: int, data: bytes) -> None:
        """A driver write to the device configuration."""

    def start(self, features: int, queues: list[QueueConfig], config_vector: int) -> bool:
        """DRIVER_OK: start with the negotiated features and queues. False if
        the device refuses."""

    def reset(self) -> None:
        """Device reset."""

    def kick(self, queue: int) -> None:
        """The driver notified queue."""

    def read_isr(self) -> int:
        """Read and clear the ISR status byte."""

    def failed(self) -> bool:
        """True if the device needs a reset (NEEDS_RESET)."""

    def set_vector(self, queue: int | None, vector: int) -> None:
        """Send queue's interrupts (with queue None, configuration changes) to
        MSI-X vector."""

    # MSI-X eventfds (msix.VectorSink) and guest memory
    @property
    def memory(self) -> DmaTable:
        """Guest memory as the vfio-user client has mapped it."""

    def check_vector_fd(self, fd: int) -> None:
        """Raise DeviceError unless fd may signal a vector (an eventfd)."""

    def set_vector_fd(self, vector: int, fd: int) -> None:
        """Signal vector through eventfd fd from now on (-1: no eventfd)."""

    def trigger_vector(self, vector: int) -> None:
        """Signal vector now."""

    def mask_vector(self, vector: int, masked: bool) -> None:
        """Mask or unmask vector."""

    def attach_channel(self, chan: Any) -> None:
        """The vfio-user channel (a cffi pointer) is up."""

    def detach_channel(self) -> None:
        """The vfio-user channel is about to be freed."""


class VirtioPciTransport:
    """The virtio PCI transport in front of device: config space with the
    virtio and MSI-X capabilities, the MSI-X and virtio BARs, all as
    vfio-user regions (regions), and the device status machine. It is the
    DeviceModel a vfio-user Server serves."""

    def __init__(self, device: VirtioBackend):
        self.device = device
        self.config = ConfigSpace(
            vendor=VIRTIO_VENDOR, device=MODERN_DEVICE_BASE + device.device_type,
            class_code=device.class_code, revision=1,
            subsys_vendor=VIRTIO_VENDOR, subsys_id=device.subsystem_id,
            bars=[Bar(MSIX_BAR, 0x1000), Bar(VIRTIO_BAR, VIRTIO_BAR_SIZE)])
        self.msix = Msix(self.config, vectors=device.num_queues + 1, bar=MSIX_BAR)
        self._add_virtio_caps()
        self.queues = [QueueConfig() for _ in range(device.num_queues)]
        self.generation = 0
        self._reset_state()
        self.regions: list[Region] = [empty_region() for _ in range(NUM_REGIONS)]
        self.regions[MSIX_BAR] = self.msix.region
        self.regions[VIRTIO_BAR] = Region(VIRTIO_BAR_SIZE, self._bar_read, self._bar_write)
        self.regions[CONFIG_REGION] = Region(pcicfg.CONFIG_SIZE, self.config.read, self.config.write)

    # ---- capabilities ----------------------------------------------------------
    def _virtio_cap(self, cfg_type: int, offset: int, length: int, extra: bytes = b"",
                    wmask: bytes | None = None) -> int:
        cap_len = 16 + len(extra)
        body = struct.pack("<BBBB2xII", cap_len, cfg_type, VIRTIO_BAR, 0, offset, length) + extra
        return self.config.add_capability(CAP_ID_VENDOR, body, wmask)

    def _add_virtio_caps(self) -> None:
        self._virtio_cap(CAP_COMMON, COMMON_OFF, COMMON_LEN)
        self._virtio_cap(CAP_NOTIFY, NOTIFY_OFF, WINDOW, struct.pack("<I", NOTIFY_MULTIPLIER))
        self._virtio_cap(CAP_ISR, ISR_OFF, 4)
        self._virtio_cap(CAP_DEVICE, DEVICE_OFF, WINDOW)
        # PCI configuration access window: the driver writes bar/offset/length
        # into the cap, then reads or writes pci_cfg_data.  The mask is laid
        # over the body (cap_len, cfg_type, bar, id, 2 pad, offset, length).
        wmask = bytes([0, 0, 0xFF, 0, 0, 0]) + b"\xff" * 8
        self.pci_cfg_cap = self._virtio_cap(CAP_PCI_CFG, 0, 0, bytes(4), wmask)
        data_off = self.pci_cfg_cap + 16
        self.config.hook(data_off, 4, self._pci_cfg_read, self._pci_cfg_write)

    def _pci_cfg_window(self) -> tuple[int, int, int]:
        cap = self.pci_cfg_cap
        bar = self.config.data[cap + 4]
        offset, length = struct.unpack_from("<II", self.config.data, cap + 8)
        return bar, offset, length

    def _pci_cfg_read(self, rel: int, count: int) -> bytes:
        bar, offset, length = self._pci_cfg_window()
        if bar != VIRTIO_BAR or length not in (1, 2, 4) or offset + length > VIRTIO_BAR_SIZE:
            return bytes(count)
        value = self._bar_read(offset, length).ljust(4, b"\0")
        return value[rel:rel + count]

    def _pci_cfg_write(self, rel: int, data: bytes) -> None:
        bar, offset, length = self._pci_cfg_window()
        if bar == VIRTIO_BAR and length in (1, 2, 4) and offset + length <= VIRTIO_BAR_SIZE \
                and rel == 0 and len(data) >= length:
            self._bar_write(offset, data[:length])

    # ---- the virtio BAR ----------------------------------------------------
    def _bar_read(self, offset: int, count: int) -> bytes:
        window, rel = divmod(offset, WINDOW)
        if window == COMMON_OFF // WINDOW:
            return self._common_read(rel, count)
        if window == ISR_OFF // WINDOW:
            return bytes([self.device.read_isr()]).ljust(count, b"\0") if rel == 0 else bytes(count)
        if window == DEVICE_OFF // WINDOW:
            return self.device.config_read(rel, count)
        return bytes(count)               # notify area reads as zero

    def _bar_write(self, offset: int, data: bytes) -> None:
        window, rel = divmod(offset, WINDOW)
        if window == COMMON_OFF // WINDOW:
            self._common_write(rel, data)
        elif window == DEVICE_OFF // WINDOW:
            self.device.config_write(rel, data)
        elif window == NOTIFY_OFF // WINDOW:
            queue = rel // NOTIFY_MULTIPLIER
            if rel % NOTIFY_MULTIPLIER == 0 and queue < len(self.queues):
                self.device.kick(queue)

    # ---- common configuration ---------------------------------------------------
    def _reset_state(self) -> None:
        self.status = 0
        self.device_feature_select = 0
        self.driver_feature_select = 0
        self.driver_features = 0
        self.config_vector = NO_VECTOR
        self.queue_select = 0
        for q in self.queues:
            q.reset()

    def _selected(self) -> QueueConfig | None:
        return self.queues[self.queue_select] if self.queue_select < len(self.queues) else None

    def _get(self, name: str) -> int:
        q = self._selected()
        if name == "device_feature":
            return self.device.offered_features() >> (32 * self.device_feature_select) & 0xFFFFFFFF \
                if self.device_feature_select < 2 else 0
        if name == "driver_feature":
            return self.driver_features >> (32 * self.driver_feature_select) & 0xFFFFFFFF \
                if self.driver_feature_select < 2 else 0
        if name == "device_status":
            return self.status | (NEEDS_RESET if self.device.failed() else 0)
        if name == "config_msix_vector":
            return self.config_vector
        if name == "num_queues":
            return len(self.queues)
        if name == "config_generation":
            return self.generation & 0xFF
        if name == "queue_select":
            return self.queue_select
        if name == "queue_notify_off":
            return self.queue_select if q else 0
        if q is None:
            return 0
        return {
            "queue_size": q.size, "queue_msix_vector": q.msix_vector,
            "queue_enable": int(q.enabled), "queue_desc": q.desc,
            "queue_driver": q.driver, "queue_device": q.device,
        }.get(name, getattr(self, name, 0))

    def _set(self, name: str, value: int) -> None:
        q = self._selected()
        if name == "device_feature_select":
            self.device_feature_select = value
        elif name == "driver_feature_select":
            self.driver_feature_select = value
        elif name == "driver_feature":
            if self.driver_feature_select < 2 and not self.status & FEATURES_OK:
                shift = 32 * self.driver_feature_select
                self.driver_features = self.driver_features & ~(0xFFFFFFFF << shift) | value << shift
        elif name == "config_msix_vector":
            self.config_vector = self._valid_vector(value)
            self.device.set_vector(None, self.config_vector)
        elif name == "device_status":
            self._set_status(value)
        elif name == "queue_select":
            self.queue_select = value
        elif q is not None:
            self._set_queue(q, name, value)

    def _set_queue(self, q: QueueConfig, name: str, value: int) -> None:
        if name == "queue_msix_vector":
            q.msix_vector = self._valid_vector(value)
            self.device.set_vector(self.queue_select, q.msix_vector)
            return
        if self.status & DRIVER_OK:
            return                     # ring layout is fixed while the device runs
        if name == "queue_size":
            if 0 < value <= MAX_QUEUE_SIZE and (self._packed or not value & (value - 1)):
                q.size = value             # split rings must be a power of two (2.7)
        elif name == "queue_enable":
            q.enabled = value == 1
        elif name in ("queue_desc", "queue_driver", "queue_device"):
            setattr(q, name.removeprefix("queue_"), value)

    @property
    def _packed(self) -> bool:
        return bool(self.driver_features >> F.RING_PACKED & 1)

    def _valid_vector(self, vector: int) -> int:
        return vector if vector < self.msix.vectors else NO_VECTOR

    def _set_status(self, value: int) -> None:
        value &= 0xFF
        if value == 0:
            self.reset()
            return
        # a driver may only add bits (virtio 1.2, 3.1.1); clearing one, e.g.
        # FEATURES_OK to renegotiate under running queues, is ignored
        value |= self.status
        new = value & ~self.status
        if new & FEATURES_OK and not self._features_acceptable():
            value &= ~FEATURES_OK      # the driver reads it back and gives up
        if new & DRIVER_OK and value & FEATURES_OK:
            if not self.device.start(self.driver_features, self.queues, self.config_vector):
                log.warning("device failed to start; NEEDS_RESET")
        self.status = value & ~NEEDS_RESET

    def _features_acceptable(self) -> bool:
        offered = self.device.offered_features()
        extra = self.driver_features & ~offered
        if extra:
            log.warning("driver accepted features we did not offer: %#x", extra)
            return False
        if not self.driver_features >> F.VERSION_1 & 1:
            log.warning("driver did not accept VERSION_1; legacy drivers are not supported")
            return False
        return True

    def _common_read(self, offset: int, count: int) -> bytes:
        out = bytearray(count)
        for name, (reg_off, size) in COMMON_REGS.items():
            lo, hi = max(offset, reg_off), min(offset + count, reg_off + size)
            if lo < hi:
                raw = self._get(name).to_bytes(size, "little")
                out[lo - offset:hi - offset] = raw[lo - reg_off:hi - reg_off]
        return bytes(out)

    def _common_write(self, offset: int, data: bytes) -> None:
        for name, (reg_off, size) in COMMON_REGS.items():
            lo, hi = max(offset, reg_off), min(offset + len(data), reg_off + size)
            if lo < hi:
                raw = bytearray(self._get(name).to_bytes(size, "little"))
                raw[lo - reg_off:hi - reg_off] = data[lo - offset:hi - offset]
                self._set(name, int.from_bytes(raw, "little"))

    # ---- whole-device events ---------------------------------------------------
    def reset(self) -> None:
        """Device reset: from the driver (status 0) or from DEVICE_RESET."""
        self.device.reset()
        self._reset_state()

    def config_changed(self) -> None:
        """The device configuration changed: bump config_generation (the caller
        raises the interrupt)."""
        self.generation += 1

    # ---- what the vfio-user session calls -------------------------------------
    @property
    def memory(self) -> DmaTable:
        """The device's DMA table."""
        return self.device.memory

    def irq_info(self, index: int) -> tuple[int, int]:
        """(flags, count) of vfio interrupt index: MSI-X has one vector per
        queue plus one for configuration changes, INTx, MSI and REQ none.
        Raises DeviceError (EINVAL) for ERR (an expected probe) and unknown
        indices."""
        if index >= NUM_IRQS or index == IRQ_ERR:
            # no AER: QEMU takes an error reply for ERR silently
            raise DeviceError(errno.EINVAL, f"no interrupt index {index}", expected=index == IRQ_ERR)
        count = self.msix.vectors if index == IRQ_MSIX else 0   # no INTx (pin 0), no MSI
        return 1, count                                          # VFIO_IRQ_INFO_EVENTFD

    def set_irqs(self, index: int, flags: int, start: int, count: int, fds: list[int], data: bytes) -> None:
        """SET_IRQS: only MSI-X has vectors (see vnic.pci.msix.set_irqs).
        Raises DeviceError (EINVAL) for any other index, after closing fds."""
        if index != IRQ_MSIX:
            for fd in fds:
                os.close(fd)
            raise DeviceError(errno.EINVAL, f"interrupt index {index} has no vectors")
        msixmod.set_irqs(self.msix, self.device, flags, start, count, fds, data)

    def device_reset(self) -> None:
        """DEVICE_RESET from the client: a device reset."""
        self.reset()

    def attach_channel(self, chan: Any) -> None:
        """Hand the session's channel to the device."""
        self.device.attach_channel(chan)

    def detach_channel(self) -> None:
        """Take the channel away from the device."""
        self.device.detach_channel()

    def client_gone(self) -> None:
        """The vfio-user client went away: forget everything it gave us."""
        self.reset()
        self.memory.unmap_all()
        for v in range(self.msix.vectors):
            self.device.set_vector_fd(v, -1)
