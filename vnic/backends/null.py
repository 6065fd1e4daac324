"""The null backend: transmitted frames are counted and discarded, nothing
is ever received.  For tests and benchmarks of the device itself."""
from __future__ import annotations

from typing import ClassVar

from .._native import lib


class NullBackend:
    """A backend that counts and discards transmitted frames and never receives
    one. kind and fds are what the C data plane is given (no fd: -1, shared
    by every queue pair)."""
    kind = lib.VNIC_BACKEND_NULL
    fd = -1
    fds: ClassVar[list[int]] = [-1]

    def open(self, queues: int = 1) -> None:
        """Nothing to open, however many queue pairs."""
        pass

    def close(self) -> None:
        """Nothing to close."""
        pass

    def kernel_drops(self) -> int:
        """Always 0: there is no kernel queue to overflow."""
        return 0

    def drop_privileges(self) -> None:
        """Nothing held needs root."""
        pass

    def describe(self) -> str:
        """The backend spec: "null"."""
        return "null"
