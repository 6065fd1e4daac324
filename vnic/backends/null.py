"""The null backend: transmitted frames are counted and discarded, nothing
is ever received.  For tests and benchmarks of the device itself."""
from __future__ import annotations

from .._native import lib


class NullBackend:
    """A backend that counts and discards transmitted frames and never receives
    one. kind and fd are what the C data plane is given."""
    kind = lib.VNIC_BACKEND_NULL
    fd = -1

    def open(self) -> None:
        """Nothing to open."""
        pass

    def close(self) -> None:
        """Nothing to close."""
        pass

    def kernel_drops(self) -> int:
        """Always 0: there is no kernel queue to overflow."""
        return 0

    def describe(self) -> str:
        """The backend spec: "null"."""
        return "null"
