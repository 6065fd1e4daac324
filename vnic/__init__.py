"""vnic: an out-of-process virtio-net NIC served to QEMU over vfio-user."""
