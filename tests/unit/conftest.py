"""Unit fixtures: the device model without a server or a client."""
from __future__ import annotations

import pytest

from vnic.backends.null import NullBackend
from vnic.net.virtio_net import VirtioNet


@pytest.fixture
def net():
    device = VirtioNet(NullBackend(), mac=bytes.fromhex("525400abcdef"), mtu=1500)
    yield device
    device.close()


@pytest.fixture
def transport(net):
    return net.transport
