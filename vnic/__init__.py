"""vnic: an out-of-process virtio-net NIC served to QEMU over vfio-user."""

import os as _os

# numpy is here only for zero-copy counter views; its BLAS worker threads
# would spin on the cores the data plane needs.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
