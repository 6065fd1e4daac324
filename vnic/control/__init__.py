"""The NIC's control surface: the JSON control socket (server and client)
and QEMU's QMP, which vnic drives to replug the device."""
from ..errors import ControlError
from .client import Client, request
from .server import ControlServer

__all__ = ["Client", "ControlError", "ControlServer", "request"]
