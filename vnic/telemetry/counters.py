"""Device counters: the C array of struct vnic_queue_stats seen as a numpy
structured array, without copying (one row per queue pair)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .._native import ffi, lib

FIELDS = [name for name, _ in ffi.typeof("struct vnic_queue_stats").fields]
DTYPE = np.dtype([(name, "<u8") for name in FIELDS])


def view(native: Any) -> np.ndarray:
    """Live view of the device's per-queue-pair counters (reads are racy by
    a few packets while workers run, like any NIC's)."""
    pairs = lib.vnic_dev_queue_pairs(native)
    raw = ffi.buffer(lib.vnic_dev_stats(native), DTYPE.itemsize * pairs)
    counters: np.ndarray = np.frombuffer(raw, dtype=DTYPE, count=pairs)
    return counters


def totals(counters: np.ndarray) -> dict[str, int]:
    """Each counter summed over the queue pairs."""
    return {name: int(counters[name].sum()) for name in FIELDS}


def per_queue(counters: np.ndarray) -> list[dict[str, int]]:
    """One dict of counters per queue pair."""
    return [{name: int(row[name]) for name in FIELDS} for row in counters]
