"""Packet capture into a pcapng file, as `vnic ctl capture` and `--pcap`
ask for it.  The C data plane does the work (native/capture.c copies frames
into a ring per queue pair, native/pcapng.c's thread writes the file); this
module checks the request, opens the file and reports what was written.

The file's packets carry their direction (inbound: toward the guest), their
queue pair and, for frames with a virtio-net header, that header as a
comment; tshark shows them as frame.packet_flags_direction,
frame.interface_queue and frame.comment."""
from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass
from typing import Any, TypedDict

from .._native import ffi, lib
from ..errors import ConfigError
from . import counters

DIRECTIONS = {"rx": lib.VNIC_CAPTURE_RX, "tx": lib.VNIC_CAPTURE_TX, "both": lib.VNIC_CAPTURE_BOTH}
WHAT = {"wire": lib.VNIC_CAPTURE_WIRE, "guest": lib.VNIC_CAPTURE_GUEST}
SNAPLEN_MAX = lib.VNIC_CAPTURE_SNAPLEN_MAX
BUFFER_KIB_DEFAULT = lib.VNIC_CAPTURE_RING_DEFAULT // 1024
BUFFER_KIB_RANGE = (lib.VNIC_CAPTURE_RING_MIN // 1024, lib.VNIC_CAPTURE_RING_MAX // 1024)


class CaptureStatus(TypedDict, total=False):
    """What a capture has done: frames the workers copied (captured) and
    could not copy for a full ring (ring_drops), packets and bytes in the
    file, frames lost to a write error (write_drops, write_error)."""
    running: bool
    file: str
    what: str
    direction: str
    snaplen: int
    captured: int
    ring_drops: int
    packets_written: int
    bytes_written: int
    write_drops: int
    write_error: str | None


@dataclass(frozen=True)
class CaptureSpec:
    """One capture request, checked by check()."""
    file: str
    snaplen: int = SNAPLEN_MAX
    direction: str = "both"
    what: str = "wire"
    buffer_kib: int = BUFFER_KIB_DEFAULT

    def check(self) -> CaptureSpec:
        """self, or ConfigError saying which value is refused."""
        if not isinstance(self.file, str) or not os.path.isabs(self.file):
            raise ConfigError(f"capture file must be an absolute path, not {self.file!r}")
        _in_range("snaplen", self.snaplen, 1, SNAPLEN_MAX)
        _in_range("buffer_kib", self.buffer_kib, *BUFFER_KIB_RANGE)
        if not isinstance(self.direction, str) or self.direction not in DIRECTIONS:
            raise ConfigError(f"capture direction is one of {', '.join(DIRECTIONS)}, not {self.direction!r}")
        if not isinstance(self.what, str) or self.what not in WHAT:
            raise ConfigError(f"capture what is one of {', '.join(WHAT)}, not {self.what!r}")
        return self


def _in_range(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"capture {name} is a whole number from {low} to {high}, not {value!r}")


def _open(path: str) -> int:
    """The file, created or emptied; non-blocking, so that a FIFO (a live
    `tshark -i FIFO`) must have its reader already and a full one never
    holds the writer past a stop."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        why = "a FIFO with no reader yet" if exc.errno == errno.ENXIO else exc.strerror
        raise ConfigError(f"cannot write the capture file {path}: {why}") from None


class Capture:
    """The device's one capture: start(), status(), stop().  Thread-safe
    (the control socket and the CLI may both ask)."""

    def __init__(self, native: Any, name: str):
        self._native, self._name = native, name
        self._lock = threading.Lock()
        self._spec: CaptureSpec | None = None
        self._fd = -1
        self._base = (0, 0)                 # capture_packets, capture_drops at start

    def start(self, spec: CaptureSpec) -> CaptureStatus:
        """Start capturing as spec says.  ConfigError for a bad spec, a file
        that cannot be written or a capture already on."""
        spec.check()
        cfg = self._config(spec)
        if lib.vnic_capture_check(cfg) < 0:
            raise ConfigError(f"capture buffer_kib {spec.buffer_kib} cannot hold two frames of "
                              f"snaplen {spec.snaplen} bytes: give a larger buffer or a smaller snaplen")
        with self._lock:
            if self._spec:
                raise ConfigError(f"a capture is already on (into {self._spec.file}): stop it first")
            fd = cfg.fd = _open(spec.file)
            rc = lib.vnic_capture_start(self._native, cfg)
            if rc < 0:
                os.close(fd)
                raise ConfigError(f"capture start: {os.strerror(-rc)}")
            self._spec, self._fd, self._base = spec, fd, self._counts()
            return self._status_locked()

    def stop(self) -> CaptureStatus:
        """Stop and close the file; the final status.  ConfigError if no
        capture is on."""
        with self._lock:
            if not self._spec:
                raise ConfigError("no capture is on")
            out = ffi.new("struct vnic_capture_status *")
            lib.vnic_capture_stop(self._native, out)
            status = self._report(out)
            os.close(self._fd)
            self._spec, self._fd = None, -1
            return status

    def status(self) -> CaptureStatus:
        """The capture now ({"running": False} when none is on)."""
        with self._lock:
            return self._status_locked()

    def close(self) -> None:
        """Stop a capture left on (the device is closing)."""
        if self._spec:
            self.stop()

    def _status_locked(self) -> CaptureStatus:
        if not self._spec:
            return CaptureStatus(running=False)
        out = ffi.new("struct vnic_capture_status *")
        lib.vnic_capture_status(self._native, out)
        return self._report(out)

    def _config(self, spec: CaptureSpec) -> Any:
        cfg = ffi.new("struct vnic_capture_config *")
        cfg.fd, cfg.snaplen, cfg.ring_bytes = -1, spec.snaplen, spec.buffer_kib * 1024
        cfg.directions, cfg.what = DIRECTIONS[spec.direction], WHAT[spec.what]
        cfg.ifname = self._name.encode()[:lib.VNIC_CAPTURE_NAME_MAX - 1]
        return cfg

    def _counts(self) -> tuple[int, int]:
        rows = counters.view(self._native)
        return int(rows["capture_packets"].sum()), int(rows["capture_drops"].sum())

    def _report(self, out: Any) -> CaptureStatus:
        assert self._spec
        packets, drops = self._counts()
        return CaptureStatus(
            running=bool(out.running), file=self._spec.file, what=self._spec.what,
            direction=self._spec.direction, snaplen=self._spec.snaplen,
            captured=packets - self._base[0], ring_drops=drops - self._base[1],
            packets_written=int(out.packets_written), bytes_written=int(out.bytes_written),
            write_drops=int(out.write_drops),
            write_error=os.strerror(out.write_errno) if out.write_errno else None)

