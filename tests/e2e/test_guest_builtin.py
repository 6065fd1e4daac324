"""The guest tooling end to end, with QEMU's built-in virtio-net as the NIC.

This is the baseline the vfio-user NIC is compared with, and it proves that
booting, the TAP in a namespace, ping, ethtool and iperf3 work on their own.
Needs root, /dev/net/tun and (first run only) the Debian package mirror.
"""
import os
import shutil

import pytest

from vnic.lab.guest import run_guest
from vnic.lab.iperf import run_iperf_pair
from vnic.lab.netns import NetNS, list_namespaces

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or not shutil.which("ip"),
    reason="needs root, /dev/net/tun and iproute2")]


# qemu and image are the session fixtures of tests/e2e/conftest.py, which
# also checks that no namespace or QEMU is left behind.

@pytest.fixture
def ns():
    with NetNS() as n:
        yield n
    assert n.name not in list_namespaces()


def nic(fd):
    return ["-netdev", f"tap,id=n0,fd={fd},vhost=off",
            "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"]


def test_boot_ping_and_offloads_visible(qemu, image, ns):
    fd = ns.open_tap()
    cmd = ("ping -c 3 -W 3 10.213.0.1 && ethtool -k eth0 && "
           "cat /sys/class/net/eth0/device/features")
    r = run_guest(qemu, image, nic(fd), cmd, pass_fds=[fd], timeout=120)
    assert r.ok, r.console_log[-3000:]
    assert r.ready["driver"] == "virtio_net" and r.ready["carrier"] == "1"
    assert "bytes from 10.213.0.1" in r.output  # ping's rc 0 needs one reply; TCG may drop some under load
    assert "tcp-segmentation-offload: on" in r.output
    # Device feature bit 0 (VIRTIO_NET_F_CSUM) as the guest negotiated it.
    assert r.output.strip().splitlines()[-1][0] == "1"


def test_iperf3_both_ways(qemu, image, ns):
    fd = ns.open_tap()
    res = run_iperf_pair(qemu, image, nic(fd), ns, seconds=2, pass_fds=[fd])
    print(f"built-in virtio-net: tx {res['tx_gbps']:.2f} rx {res['rx_gbps']:.2f} Gbit/s")
    assert res["tx_gbps"] > 0.05 and res["rx_gbps"] > 0.05


def test_missing_nic_is_a_clear_error(qemu, image, ns):
    r = run_guest(qemu, image, [], "true", timeout=60)
    assert r.rc is None and r.error.startswith("no-nic")


def test_timeout_kills_qemu(qemu, image, ns):
    r = run_guest(qemu, image, [], "sleep 600", ip=None, timeout=8)
    assert r.error.startswith("timeout") and r.qemu_rc is not None
