"""vnic: an out-of-process virtio-net NIC served to QEMU over vfio-user.

    import vnic
    with vnic.Device("tap:vnic0") as nic:         # or "null", or a Backend
        nic.serve("/run/vnic0.sock")              # QEMU attaches with nic.qemu_args()
        print(nic.stats()["tx_packets"])

    vnic.Client("/run/vnic0.ctl").stats()         # a NIC served with --control

Everything vnic raises on purpose is a vnic.VnicError (see vnic.errors).
"""
import os as _os

# numpy is here only for zero-copy counter views; its BLAS worker threads
# would spin on the cores the data plane needs.  Set before numpy loads.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# A data plane built elsewhere (native/build.py --sanitize DIR) is found
# first: vnic._native then comes from DIR/vnic, everything else from here.
if _os.environ.get("VNIC_NATIVE_DIR"):
    __path__.insert(0, _os.path.join(_os.environ["VNIC_NATIVE_DIR"], "vnic"))

from .control import Client
from .device import Device
from .errors import (
    BackendError,
    ConfigError,
    ControlError,
    DeviceError,
    FeatureError,
    ProtocolError,
    ReplugError,
    VnicError,
)
from .telemetry.capture import CaptureSpec

__all__ = ["BackendError", "CaptureSpec", "Client", "ConfigError", "ControlError", "Device", "DeviceError",
           "FeatureError", "ProtocolError", "ReplugError", "VnicError"]
