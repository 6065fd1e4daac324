"""The null backend: transmitted frames are counted and discarded, nothing
is ever received.  For tests and benchmarks of the device itself."""
from __future__ import annotations

from .._native import lib


class NullBackend:
    kind = lib.VNIC_BACKEND_NULL
    fd = -1

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def kernel_drops(self) -> int:
        return 0

    def describe(self) -> str:
        return "null"
