"""Offer changes reach the real guest at its next negotiation.

The guest shows `ethtool -k`, then waits for the host's go (an address the
host adds on its side of the TAP: the guest pings it), rebinds its NIC
driver so it negotiates again, shows `ethtool -k` and runs iperf3.  The host
changes the offer with `vnic ctl features` between the phases, as a user
would.  `vnic ctl replug` must refuse this QEMU (it aborts on vfio-user
unplug) with a clear error and leave the guest running."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from vnic.control import ControlServer
from vnic.control.qmp import RENEGOTIATE_IN_GUEST

from .support import HOST4, TAP, Link

pytestmark = pytest.mark.e2e

GO = ["10.213.0.9", "10.213.0.10"]     # the host's "go" for each phase

GUEST = r"""
ifx() { cat /sys/class/net/eth0/ifindex 2>/dev/null; }
show() { echo "PHASE $1 $(ethtool -k eth0 | grep -E '^\s*tx-tcp6?-segmentation:' | tr -d '\t' | tr '\n' ' ')"; }
renegotiate() {
  old=$(ifx)
  RENEGOTIATE
  i=0; while [ -z "$(ifx)" ] || [ "$(ifx)" = "$old" ]; do sleep 0.1; i=$((i+1)); [ $i -gt 300 ] && return 1; done
  ip link set eth0 up && ip addr add 10.213.0.2/24 dev eth0
  i=0; while [ "$(cat /sys/class/net/eth0/carrier)" != 1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
}
wait_go() { i=0; until ping -c 1 -W 1 $1 >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 120 ] && return 1; done; return 0; }
send() { iperf3 -c HOST -t 2 | grep -E 'sender$' | sed 's/^/IPERF /'; }
show 0
wait_go GO1 || exit 3; renegotiate || exit 4; show 1; send
wait_go GO2 || exit 5; renegotiate || exit 6; show 2; send
""".replace("RENEGOTIATE", RENEGOTIATE_IN_GUEST).replace("HOST", HOST4) \
   .replace("GO1", GO[0]).replace("GO2", GO[1])


def ctl(control, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vnic.cli", "ctl", "--control", str(control), *args],
                          capture_output=True, text=True, timeout=120)


def wait_for(g, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in g.console():
        assert g.proc.poll() is None, f"guest ended before {text!r}:\n{g.console()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} from the guest:\n{g.console()[-3000:]}"
        time.sleep(0.2)


def phases(output: str) -> dict[int, dict[str, str]]:
    out = {}
    for m in re.finditer(r"^PHASE (\d) (.*)$", output, re.M):
        out[int(m.group(1))] = dict(re.findall(r"(tx-tcp6?-segmentation): (on|off)", m.group(2)))
    return out


def test_feature_toggle_reaches_the_guest_at_renegotiation(qemu, image):
    with Link() as link:
        link.iperf_server()
        control = link.tmp / "ctl.sock"
        server = ControlServer(control, link.dev)
        server.start()
        link.defer(server.close)
        qmp_path = link.tmp / "qmp.sock"
        link.dev.attach_qmp(qmp_path)
        g = link.guest(qemu, image, GUEST, timeout=240,
                       extra_args=["-qmp", f"unix:{qmp_path},server=on,wait=off"])
        wait_for(g, "PHASE 0")

        off = ctl(control, "features", "--disable", "tso4")
        assert off.returncode == 0, off.stderr
        assert "tso4" not in json.loads(off.stdout)["offered"]
        # asking QEMU 11.1 to replug would abort it: refused, guest untouched
        refused = ctl(control, "replug")
        assert refused.returncode == 1 and "aborts when it unplugs" in refused.stderr, refused
        assert "/sys/bus/pci/drivers/virtio-pci/unbind" in refused.stderr
        assert g.proc.poll() is None, "QEMU died"
        link.ns.run(["ip", "addr", "add", f"{GO[0]}/24", "dev", TAP], check=True)
        wait_for(g, "PHASE 1")
        negotiated = link.dev.negotiated_features
        before_send = link.dev.stats()["tx_tso_packets"]
        wait_for(g, "IPERF", 60)
        without_tso4 = link.dev.stats()["tx_tso_packets"] - before_send

        on = ctl(control, "features", "--enable", "tso4")
        assert on.returncode == 0, on.stderr
        link.ns.run(["ip", "addr", "add", f"{GO[1]}/24", "dev", TAP], check=True)
        res = g.wait()
        with_tso4 = link.dev.stats()["tx_tso_packets"] - before_send - without_tso4

    assert res.rc == 0, f"rc={res.rc} {res.error}\n{res.output}"
    seen = phases(res.output)
    assert seen[0] == {"tx-tcp-segmentation": "on", "tx-tcp6-segmentation": "on"}, res.output
    assert seen[1] == {"tx-tcp-segmentation": "off", "tx-tcp6-segmentation": "on"}, res.output
    assert seen[2] == {"tx-tcp-segmentation": "on", "tx-tcp6-segmentation": "on"}, res.output
    # iperf3 ran after each renegotiation, and IPv4 TCP was not offloaded without tso4
    rates = re.findall(r"^IPERF .* ([\d.]+) [GM]bits/sec", res.output, re.M)
    assert len(rates) == 2, res.output
    assert without_tso4 == 0 and with_tso4 > 0
    assert "tso4" not in negotiated and "tso6" in negotiated     # vnic's view agrees
