"""Where the device's frames go: a TAP interface or nowhere (null).

A backend spec on the command line is `tap:IFNAME`, `tap:IFNAME@NETNS` or
`null`."""
from __future__ import annotations

from .null import NullBackend
from .tap import TapBackend

Backend = NullBackend | TapBackend


class BackendError(ValueError):
    pass


def parse(spec: str) -> Backend:
    kind, _, arg = spec.partition(":")
    if kind == "null" and not arg:
        return NullBackend()
    if kind == "tap" and arg:
        ifname, _, netns = arg.partition("@")
        if not ifname or len(ifname) > 15 or "/" in ifname or " " in ifname:
            raise BackendError(f"bad interface name {ifname!r} (1 to 15 characters, no '/' or space)")
        return TapBackend(ifname, netns or None)
    raise BackendError(f"unknown backend {spec!r}: use tap:IFNAME, tap:IFNAME@NETNS or null")
