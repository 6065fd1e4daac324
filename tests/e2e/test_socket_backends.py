"""Socket backends with real guests: two guests cabled back to back
through two `vnic serve` instances on a stream socket (one with no
capabilities at all, one that became `nobody`), a vnic guest against a
guest on QEMU's own -netdev stream, and a vnic guest reaching a TCP
server on loopback through passt, unprivileged user-mode networking.
No TAP anywhere."""
from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from vnic.lab.cable import SERVER_IP, run_pair
from vnic.lab.guest import GuestProcess
from vnic.lab.iperf import received_bytes
from vnic.lab.netns import NetNS
from vnic.lab.served import NO_CAPABILITIES, ServedChild
from vnic.sandbox import proc_status

from .support import section

A_IP = SERVER_IP
PORT = 5201


def capabilities(child: ServedChild) -> int:
    assert child.proc is not None
    return int(proc_status(f"/proc/{child.proc.pid}/status")["CapEff"], 16)


def check_pair(res) -> None:
    assert res.pinged, res.client.output[-2000:]
    assert received_bytes(res.report()) > 1_000_000
    assert "server-done" in res.server.output


def test_two_guests_cabled_through_two_unprivileged_vnic_devices(qemu, image, sock_dir):
    cable = sock_dir / "cable.sock"
    (sock_dir / "a").mkdir()
    (sock_dir / "b").mkdir()
    with ServedChild(f"stream-listen:{cable}", sock_dir / "a", setpriv=NO_CAPABILITIES) as a, \
            ServedChild(f"stream:{cable}", sock_dir / "b") as b:
        assert capabilities(a) == 0 and a.child_ids()[0] == 0      # root in name only
        assert b.child_ids()[0] != 0 and capabilities(b) == 0      # became nobody
        res = run_pair(qemu, image, a.nic, b.nic)
        sa, sb = a.stats(), b.stats()
    print(f"cable: A tx {sa['tx_packets']} rx {sa['rx_packets']} coalesced {sa['rx_coalesced_packets']}; "
          f"B tx {sb['tx_packets']} tso segments {sb['tx_tso_segments']} waits {sb['tx_backend_waits']}")
    check_pair(res)
    assert sb["tx_tso_segments"] > 0, "the sending device did not segment"
    assert sa["rx_coalesced_packets"] > 0, "the receiving device did not coalesce"
    assert sa["rx_drops_framing"] == sb["rx_drops_framing"] == 0
    assert sb["tx_drops_backend"] == 0


def test_a_vnic_guest_and_a_qemu_netdev_stream_guest_talk(qemu, image, sock_dir):
    cable = sock_dir / "cable.sock"
    with ServedChild(f"stream-listen:{cable}", sock_dir) as a:
        builtin = ["-netdev", f"stream,id=n0,server=off,addr.type=unix,addr.path={cable}",
                   "-device", "virtio-net-pci,netdev=n0"]
        res = run_pair(qemu, image, a.nic, builtin)
        sa = a.stats()
    check_pair(res)
    assert sa["rx_packets"] > 0 and sa["tx_packets"] > 0


@pytest.fixture
def passt_ns():
    """A namespace for passt with a TAP as its template interface (passt
    copies the host's addressing from the interface with the default
    route) and loopback for the server the guest reaches."""
    if not shutil.which("passt"):
        pytest.fail("passt is not installed: scripts/setup.sh installs it")
    with NetNS() as ns:
        ns.add_tap("tmpl0", addr="10.213.0.1/24")
        ns.run(["ip", "route", "add", "default", "via", "10.213.0.254", "dev", "tmpl0", "onlink"], check=True)
        yield ns


def test_a_vnic_guest_reaches_loopback_through_passt(qemu, image, sock_dir, passt_ns):
    sock = sock_dir / "passt.sock"
    passt = passt_ns.popen(["passt", "-f", "-q", "-a", A_IP, "-n", "24", "-g", "10.213.0.1",
                            "-i", "tmpl0", "--socket", str(sock)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sock.exists(), "passt did not make its socket"
    server = passt_ns.popen(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(PORT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    passt_ns.wait_listening(PORT)
    with ServedChild(f"stream:{sock}", sock_dir) as v:
        # the gateway's address is passt's way to the host's loopback
        cmd = f"iperf3 -c 10.213.0.1 -p {PORT} -t 2 -J > /tmp/r; echo @@iperf@@; cat /tmp/r; echo @@end@@"
        with GuestProcess(qemu, image, v.nic, cmd=cmd, ip=f"{A_IP}/24", timeout=180) as g:
            r = g.wait()
        st = v.stats()
    passt_ns.stop(server)
    passt_ns.stop(passt)
    report = json.loads(section(r.output, "iperf"))
    print(f"passt: {received_bytes(report)} bytes; vnic tx {st['tx_packets']} rx {st['rx_packets']}")
    assert "error" not in report and received_bytes(report) > 100_000
    assert st["rx_drops_framing"] == 0 and st["backend_disconnects"] == 0
