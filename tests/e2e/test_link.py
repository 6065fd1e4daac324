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
from vnic.lab.guest import GuestProcess
from vnic.lab.netns import NetNS

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


VLAN_GUEST = """
ip link add link eth0 name eth0.42 type vlan id 42 && ip link set eth0.42 up &&
ip addr add 10.42.0.2/24 dev eth0.42 && echo VLAN-UP
sleep 8
ethtool -K eth0 rx-gro-hw off && echo GRO-OFF
sleep 3
ip link set eth0 promisc on && echo PROMISC-ON
sleep 3
"""


def _arp_who_has(ip: str, vlan: int, src_mac: str) -> bytes:
    from scapy.layers.l2 import ARP, Dot1Q, Ether
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=src_mac) / Dot1Q(vlan=vlan) /
                 ARP(op=1, hwsrc=src_mac, psrc=ip.rsplit(".", 1)[0] + ".1", pdst=ip))


SOL_PACKET, PACKET_AUXDATA, TP_STATUS_VLAN_VALID = 263, 8, 0x10


def _tagged_arp_replies(sock, vlan: int, timeout: float) -> int:
    """ARP replies the device sent on `vlan`.  The host stack takes the tag
    off received frames, so it comes from the packet socket's aux data."""
    import struct

    from scapy.layers.l2 import ARP, Ether
    n, deadline = 0, time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, anc, _, addr = sock.recvmsg(65536, 64)
        except TimeoutError:
            break
        vids = [struct.unpack_from("=IIIHHHH", d) for lvl, typ, d in anc
                if lvl == SOL_PACKET and typ == PACKET_AUXDATA]
        on_vlan = any(a[0] & TP_STATUS_VLAN_VALID and a[5] & 0xFFF == vlan for a in vids)
        f = Ether(data)
        if addr[2] != 4 and on_vlan and ARP in f and f[ARP].op == 2:
            n += 1
    return n


def test_guest_vlan_subinterface_offload_toggle_and_promisc(qemu, image):
    """Real guest commands program the device: a VLAN subinterface adds its
    VID to the filter (frames of that VLAN reach the guest and it answers,
    other VLANs are filtered and counted), `ethtool -K rx-gro-hw off` turns
    the guest's receive offloads off through CTRL_GUEST_OFFLOADS (and the
    TAP stops handing the device super-frames), promisc on lets all in."""
    import socket

    from tests.support.tapns import in_netns

    from .support import TAP, Link

    with Link() as link:
        sock = in_netns(link.ns.name, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                                            socket.htons(3)))
        link.defer(sock.close)
        in_netns(link.ns.name, lambda: sock.bind((TAP, 3)))
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        g = link.guest(qemu, image, VLAN_GUEST, timeout=150)
        deadline = time.monotonic() + 120
        while "VLAN-UP" not in g.console() and g.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        vlan_state = link.dev.net.filter_state()
        filtered0 = link.dev.stats()["rx_filtered_vlan"]
        sock.send(_arp_who_has("10.42.0.2", 42, link.tap_mac))
        answered_42 = _tagged_arp_replies(sock, 42, 3)
        sock.send(_arp_who_has("10.43.0.2", 43, link.tap_mac))
        time.sleep(1)
        filtered_43 = link.dev.stats()["rx_filtered_vlan"] - filtered0
        tap_before = link.tap_features()

        while "GRO-OFF" not in g.console() and g.proc.poll() is None:
            time.sleep(0.1)
        time.sleep(0.5)
        offload_state = link.dev.net.filter_state()
        tap_after = link.tap_features()

        while "PROMISC-ON" not in g.console() and g.proc.poll() is None:
            time.sleep(0.1)
        time.sleep(0.5)
        promisc_state = link.dev.net.filter_state()
        filtered1 = link.dev.stats()["rx_filtered_vlan"]
        sock.send(_arp_who_has("10.43.0.2", 43, link.tap_mac))
        time.sleep(1)
        filtered_in_promisc = link.dev.stats()["rx_filtered_vlan"] - filtered1
        res = g.wait()

    assert res.rc == 0, f"{res.error}\n{res.output}"
    assert vlan_state["vlans"] >= 1 and not vlan_state["promisc"], vlan_state
    assert answered_42 >= 1, "the guest did not answer on its VLAN"
    assert filtered_43 >= 1
    assert {"guest_tso4", "guest_tso6"} <= set(vlan_state["guest_offloads"])
    assert not {"guest_tso4", "guest_tso6"} & set(offload_state["guest_offloads"]), offload_state
    assert tap_before["tx-tcp-segmentation"] == "on" and tap_after["tx-tcp-segmentation"] == "off"
    assert promisc_state["promisc"] and filtered_in_promisc == 0
