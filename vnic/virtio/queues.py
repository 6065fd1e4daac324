"""Per-virtqueue configuration as the driver programs it through the common
configuration structure."""
from __future__ import annotations

from dataclasses import dataclass

from .._native import lib

NO_VECTOR: int = lib.VNIC_NO_VECTOR               # VIRTIO_MSI_NO_VECTOR
MAX_QUEUE_SIZE: int = lib.VNIC_MAX_QUEUE_SIZE     # the size the device offers


@dataclass
class QueueConfig:
    """One virtqueue as the driver sets it up through the common configuration:
    size, MSI-X vector, enable and the ring addresses."""
    size: int = MAX_QUEUE_SIZE
    msix_vector: int = NO_VECTOR
    enabled: bool = False
    desc: int = 0
    driver: int = 0        # avail ring
    device: int = 0        # used ring

    def reset(self) -> None:
        """Back to the defaults (device reset)."""
        QueueConfig.__init__(self)
