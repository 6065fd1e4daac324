"""Where the device's frames go: a TAP interface, a socket, or nowhere
(null).

A backend spec on the command line is `tap:IFNAME`, `tap:IFNAME@NETNS`,
`stream:ADDR`, `stream-listen:ADDR`, `dgram:LOCAL,REMOTE` or `null`
(ADDR: a UNIX socket path with a '/', or HOST:PORT; see socket.py)."""
from __future__ import annotations

from ..errors import BackendError
from .null import NullBackend
from .socket import Address, DgramBackend, StreamBackend
from .tap import TapBackend

__all__ = ["Backend", "BackendError", "DgramBackend", "NullBackend", "StreamBackend", "TapBackend",
           "parse", "parse_tap_gro"]

Backend = NullBackend | TapBackend | StreamBackend | DgramBackend
SPECS = "tap:IFNAME, tap:IFNAME@NETNS, stream:ADDR, stream-listen:ADDR, dgram:LOCAL,REMOTE or null"


def parse(spec: str, tap_gro_us: int = TapBackend.DEFAULT_GRO_FLUSH_US) -> Backend:
    """The backend a spec names, not opened yet.  tap_gro_us: how long the
    host's GRO may hold a TAP's merged segments (0: no GRO).  Raises
    BackendError for an unknown spec or a bad interface name, ConfigError for
    a tap_gro_us out of range."""
    kind, _, arg = spec.partition(":")
    if kind == "null" and not arg:
        return NullBackend()
    if kind == "tap" and arg:
        ifname, _, netns = arg.partition("@")
        if not ifname or len(ifname) > 15 or "/" in ifname or " " in ifname:
            raise BackendError(f"bad interface name {ifname!r} (1 to 15 characters, no '/' or space)")
        return TapBackend(ifname, netns or None, gro_flush_us=tap_gro_us)
    if kind in ("stream", "stream-listen") and arg:
        return StreamBackend(Address.parse(arg), listen=kind == "stream-listen")
    if kind == "dgram" and arg.count(",") == 1:
        local, remote = arg.split(",")
        return DgramBackend(Address.parse(local), Address.parse(remote))
    raise BackendError(f"unknown backend {spec!r}: use {SPECS}")


def parse_tap_gro(value: str) -> int:
    """--tap-gro on|off|MICROSECONDS as a GRO flush timeout in microseconds.
    Raises BackendError for anything else."""
    if value == "on":
        return TapBackend.DEFAULT_GRO_FLUSH_US
    if value == "off":
        return 0
    try:
        us = int(value)
    except ValueError:
        us = -1
    if not 0 <= us <= TapBackend.MAX_GRO_FLUSH_US:
        raise BackendError(f"--tap-gro {value!r}: use on, off or microseconds "
                           f"(0 to {TapBackend.MAX_GRO_FLUSH_US})")
    return us
