"""A device region as vfio-user exposes it: PCI BARs and config space."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

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
    """A device region of size bytes; accesses go to read(offset, count) and
    write(offset, data)."""
    size: int
    read: Callable[[int, int], bytes]
    write: Callable[[int, bytes], None]


def empty_region() -> Region:
    """A region of size 0 (an absent BAR): any access raises IndexError."""
    def no_access(*_args: object) -> NoReturn:
        raise IndexError("region has no size")
    return Region(0, no_access, no_access)


