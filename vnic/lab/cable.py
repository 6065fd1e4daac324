"""Two test guests cabled back to back (no host network in between): one
runs `iperf3 -s`, the other waits for it, pings it and runs iperf3 to it.
Whatever the cable is made of: two vnic devices on a stream socket, QEMU's
own -netdev stream, or one of each.  `vnic bench cable` and the socket
backends' e2e tests both boot their pairs here."""
from __future__ import annotations

from dataclasses import dataclass

from vnic.lab.guest import GuestProcess, GuestResult
from vnic.lab.iperf import PORT, _report, _section, gbps, retransmits

SERVER_IP, CLIENT_IP = "10.213.0.2", "10.213.0.3"
BOOT_SLACK_S = 180                   # two TCG boots at once, then the run
MARKERS = ("@@IPERF@@", "@@END@@")


def server_cmd() -> str:
    """One iperf3 server for one test, then a word that it was served."""
    return f"iperf3 -s -1 -p {PORT} > /dev/null; echo server-done"


def client_cmd(peer: str = SERVER_IP, seconds: int = 3) -> str:
    """Wait for the peer (pings, retried while it boots), ping it, then
    iperf3 to it (retried while its server is not up); the JSON report
    between MARKERS."""
    return (f"for i in $(seq 90); do busybox ping -c 1 -W 1 {peer} > /dev/null && break; done; "
            f"busybox ping -c 3 {peer} && echo ping-ok; "
            f"for i in $(seq 20); do iperf3 -c {peer} -p {PORT} -t {seconds} -J > /tmp/r && break; "
            f"sleep 1; done; echo {MARKERS[0]}; cat /tmp/r; echo {MARKERS[1]}")


@dataclass
class PairResult:
    """What the client guest and the server guest gave."""
    client: GuestResult
    server: GuestResult

    @property
    def pinged(self) -> bool:
        return "ping-ok" in self.client.output

    def report(self) -> dict:
        """The iperf3 JSON report.  Raises RuntimeError if there is none,
        or it is iperf3's error."""
        return _report("client", _section(self.client.output, *MARKERS))

    def gbps(self) -> float:
        return gbps(self.report())

    def retransmits(self) -> int | None:
        return retransmits(self.report())


def run_pair(qemu, image, server_nic, client_nic, seconds: int = 3) -> PairResult:
    """Boot the server guest on server_nic and the client guest on
    client_nic at once; both must already have their far ends up."""
    timeout = BOOT_SLACK_S + 4 * seconds
    with GuestProcess(qemu, image, server_nic, cmd=server_cmd(), ip=f"{SERVER_IP}/24",
                      timeout=timeout) as a, \
            GuestProcess(qemu, image, client_nic, cmd=client_cmd(SERVER_IP, seconds),
                         ip=f"{CLIENT_IP}/24", timeout=timeout) as b:
        client = b.wait()
        server = a.wait()
    return PairResult(client, server)
