"""Every error vnic raises, under one root, and the one way a C return code
becomes one of them.

    VnicError                 catch this to catch anything vnic raises
    ├── ProtocolError         a vfio-user request refused: .errno goes in the reply
    ├── DeviceError           the device model or its C data plane refused (.errno)
    ├── BackendError          a backend could not be opened or configured (.errno)
    ├── ReplugError           QEMU could not replug the device over QMP
    └── ConfigError           a bad value from the CLI, the control socket or a caller
        ├── FeatureError      a bad --features change
        └── ControlError      a control-socket request refused, or the socket unreachable

ConfigError is also a ValueError and the others with an errno are OSErrors
(their .errno and .strerror as the standard library sets them), so that code
written against the built-in classes keeps working.
"""
from __future__ import annotations

import errno as _errno
import os


class VnicError(Exception):
    """The root of every exception vnic raises on purpose."""


class _ErrnoError(VnicError, OSError):
    """An error that carries an errno (positive) and a message."""

    errno: int                  # always set: OSError's own is int | None

    def __init__(self, err: int, message: str):
        OSError.__init__(self, err, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ProtocolError(_ErrnoError):
    """A vfio-user request vnic answers with an error reply carrying errno."""


class DeviceError(_ErrnoError):
    """The device model or its C data plane refused an operation.  expected
    marks a refusal clients provoke routinely (a probe): logged quietly."""

    def __init__(self, err: int, message: str, expected: bool = False):
        super().__init__(err, message)
        self.expected = expected


class BackendError(_ErrnoError):
    """A backend could not be opened, attached or reconfigured."""

    def __init__(self, err_or_message: int | str, message: str | None = None):
        if isinstance(err_or_message, str):   # a bad spec: no system call failed
            err, message = _errno.EINVAL, err_or_message
        else:
            err = err_or_message
        super().__init__(err, message or os.strerror(err))


class ReplugError(VnicError, RuntimeError):
    """QEMU could not unplug and replug the device (QMP unreachable, refused,
    or a QEMU known to abort on vfio-user unplug)."""


class ConfigError(VnicError, ValueError):
    """A value from the CLI, the control socket, a config file or a caller
    that vnic refuses; the message says which and what is accepted."""


class FeatureError(ConfigError):
    """A `--features` change that names an unknown or unimplemented feature."""


class ControlError(ConfigError):
    """A control-socket request was refused, or the socket did not answer."""


def check(rc: int, what: str, exc: type[_ErrnoError] = DeviceError) -> int:
    """Return rc if it is >= 0; for a negative rc (-errno, as every vnic_*
    C call returns on failure) raise exc with errno's text after `what`."""
    if rc >= 0:
        return rc
    raise exc(-rc, f"{what}: {os.strerror(-rc)}")
