"""Test support: a vfio-user client that plays QEMU (client.py), a virtio-net
guest driver on top of it (driver.py), an in-process server harness
(harness.py) and network-namespace helpers for the TAP backend (netns.py).
No tests live here."""
