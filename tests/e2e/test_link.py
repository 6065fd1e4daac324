"""Link state is scriptable: taking the link down and up on the device is
seen by the real guest's driver (carrier) within a second, through the
config-change interrupt; the guest's receive filter is programmed through
the control queue by real guest commands."""
from __future__ import annotations

import re
import time

import pytest

from vnic.backends.tap import TapBackend
from vnic.device import Device
from vnic.guest import GuestProcess
from vnic.netns import NetNS

pytestmark = pytest.mark.e2e

# the guest prints its carrier every 0.2 s for 8 s, stamped with its uptime
CARRIER_LOG = ("i=0; while [ $i -lt 40 ]; do echo \"$(cut -d' ' -f1 /proc/uptime) "
               "$(cat /sys/class/net/eth0/carrier)\"; sleep 0.2; i=$((i+1)); done")


def test_link_down_and_up_reach_the_guest(qemu, image, tmp_path):
    with NetNS() as ns:
        ns.add_tap("vnic0")
        with Device(TapBackend("vnic0", ns.name)) as dev:
            dev.serve(tmp_path / "vnic.sock")
            with GuestProcess(qemu, image, dev.qemu_args(), CARRIER_LOG, timeout=150) as g:
                assert g.wait_ready(120), "guest never came up"
                time.sleep(2)
                dev.set_link(False)
                time.sleep(3)
                dev.set_link(True)
                res = g.wait()
    samples = [line.split() for line in res.output.splitlines() if re.fullmatch(r"[\d.]+ [01]", line)]
    states = [s for _, s in samples]
    assert res.rc == 0, res.error
    assert "1" in states and "0" in states, states
    first_down = states.index("0")
    assert "1" in states[:first_down], "the link started down"
    assert "1" in states[first_down:], "the link never came back"
    # it was down for about the 3 s we held it down, not a flicker: at least 2 s of samples
    down = [float(t) for t, s in samples if s == "0"]
    assert max(down) - min(down) >= 2.0


def test_guest_programs_its_receive_filter(qemu, image, tmp_path):
    cmd = ("ip link set eth0 promisc off; ip maddr add 01:00:5e:00:00:42 dev eth0; "
           "ip link set eth0 allmulticast on; sleep 1")
    with NetNS() as ns:
        ns.add_tap("vnic0")
        with Device(TapBackend("vnic0", ns.name)) as dev:
            dev.serve(tmp_path / "vnic.sock")
            states = []
            with GuestProcess(qemu, image, dev.qemu_args(), cmd, timeout=150) as g:
                assert g.wait_ready(120)
                deadline = time.monotonic() + 60
                while g.proc.poll() is None and time.monotonic() < deadline:
                    states.append(dev.net.filter_state())
                    time.sleep(0.2)
                res = g.wait()
            counters = dev.stats()
    assert res.rc == 0, res.error
    assert counters["ctrl_commands"] >= 3 and counters["ctrl_errors"] == 0
    # the guest turned promiscuous mode off and all-multicast on, with its multicast list
    assert any(not s["promisc"] and s["allmulti"] and s["multicast_entries"] >= 1 for s in states), states[-1]
