"""A device region as vfio-user exposes it: PCI BARs and config space."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# vfio-pci region indices
BAR_REGIONS = range(6)
ROM_REGION = 6
CONFIG_REGION = 7
VGA_REGION = 8
NUM_REGIONS = 9

# vfio-pci IRQ indices
IRQ_INTX, IRQ_MSI, IRQ_MSIX, IRQ_ERR, IRQ_REQ = range(5)
NUM_IRQS = 5


@dataclass
class Region:
    size: int
    read: Callable[[int, int], bytes]
    write: Callable[[int, bytes], None]


def empty_region() -> Region:
    def no_access(*_args):
        raise IndexError("region has no size")
    return Region(0, no_access, no_access)


class DeviceError(Exception):
    """A request the device refuses; errno travels back to the client."""

    def __init__(self, err: int, message: str, expected: bool = False):
        super().__init__(message)
        self.errno = err
        self.expected = expected       # a probe clients make routinely: don't warn
