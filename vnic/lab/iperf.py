"""iperf3 between the test guest and an `iperf3 -s` in a network namespace.

One guest boot runs both directions (booting under TCG costs seconds):
tx = guest to host (guest is the sender), rx = host to guest (`-R`).
Works with any NIC arguments: QEMU's built-in virtio-net or vfio-user-pci.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

from vnic.lab.guest import GuestProcess, GuestResult
from vnic.lab.netns import GUEST_IP, HOST_IP, NetNS

SERVER = HOST_IP.split("/")[0]
PORT = 5201


DIRECTIONS = {"tx": "guest->host", "rx": "host->guest"}
# Each direction's JSON report between markers, printed as soon as it is
# done (so that a console watcher can show it: Progress).
SECTIONS = (("tx", "@@TX@@", "@@TXEND@@"), ("rx", "@@RX@@", "@@DONE@@"))


def guest_script(server: str = SERVER, seconds: int = 3, port: int = PORT,
                 extra: str = "") -> str:
    """Shell run in the guest: a ping, then iperf3 both ways, JSON between markers."""
    base = f"iperf3 -c {server} -p {port} -t {seconds} -J {extra}".strip()
    return (f"ping -c 1 -W 5 {server} >/dev/null 2>&1 || echo ping-failed; "
            f"{base} >/tmp/tx.json 2>&1; a=$?; echo @@TX@@; cat /tmp/tx.json; echo @@TXEND@@; "
            f"{base} -R >/tmp/rx.json 2>&1; b=$?; echo @@RX@@; cat /tmp/rx.json; echo @@DONE@@; "
            "exit $((a|b))")


def _section(output: str, start: str, end: str) -> str:
    m = re.search(re.escape(start) + r"\n(.*?)" + re.escape(end), output, re.S)
    return m.group(1) if m else ""


def _receiver_sum(report: dict) -> dict:
    end = report.get("end", {})
    return end.get("sum_received") or end.get("sum") or {}


def gbps(report: dict) -> float:
    """Receiver-side throughput of one iperf3 -J report, in Gbit/s."""
    return _receiver_sum(report).get("bits_per_second", 0.0) / 1e9


def received_bytes(report: dict) -> int:
    """Payload bytes the receiving side of one iperf3 -J report counted."""
    return int(_receiver_sum(report).get("bytes", 0))


def parse_output(output: str) -> dict:
    """{tx_gbps, rx_gbps, tx, rx} from the guest script's output.

    Raises RuntimeError with iperf3's own message if a direction failed.
    """
    res: dict[str, Any] = {}
    for key, a, b in SECTIONS:
        report = _report(key, _section(output, a, b))
        res[key] = report
        res[f"{key}_gbps"] = gbps(report)
    res["tx_retransmits"] = retransmits(res["tx"])
    return res


def _report(key: str, text: str) -> dict:
    try:
        report = json.loads(text)
    except ValueError:
        raise RuntimeError(f"iperf3 {key}: no JSON report: {text[-1000:]!r}") from None
    if "error" in report:
        raise RuntimeError(f"iperf3 {key}: {report['error']}")
    return report


def retransmits(report: dict) -> int | None:
    """The sender's TCP retransmits in one iperf3 -J report."""
    return report.get("end", {}).get("sum_sent", {}).get("retransmits")


class Progress:
    """Watches the guest's console (GuestProcess echo=) and says, as they
    happen, that the guest booted and what each iperf3 direction gave."""


    def __init__(self, log, seconds: int):
        self.log, self.seconds = log, seconds
        self.console = ""
        self.said: set[str] = set()
        # what is still to be said: the boot, and with iperf3 both directions
        self.waiting = {"ready"} | ({key for key, _, _ in SECTIONS} if seconds else set())
        self.t0 = time.monotonic()

    def feed(self, chunk: str) -> None:
        if not self.waiting - self.said:
            return                       # everything said: stop keeping the console
        self.console += chunk.replace("\r", "")
        if "ready" not in self.said and "@@VNIC-READY" in self.console:
            nxt = f"; iperf3 guest->host for {self.seconds} s" if self.seconds else ""
            self._say("ready", f"guest booted ({self._elapsed()}){nxt}")
        for key, start, end in SECTIONS:
            if key in self.waiting - self.said and end in self.console:
                self._direction(key, _section(self.console, start, end))

    def _direction(self, key: str, text: str) -> None:
        try:
            report = _report(key, text)
        except RuntimeError as e:
            self._say(key, str(e))
            return
        more = f", {retransmits(report)} retransmits" if key == "tx" else ""
        nxt = f"; iperf3 host->guest for {self.seconds} s" if key == "tx" else ""
        self._say(key, f"{DIRECTIONS[key]}: {gbps(report):.2f} Gbit/s{more} ({self._elapsed()}){nxt}")

    def _say(self, key: str, text: str) -> None:
        self.said.add(key)
        self.log(f"vnic: {text}")

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.t0:.1f} s"


def run_iperf_pair(qemu, image, nic_args, ns: NetNS, seconds: int = 3,
                   guest_ip: str = GUEST_IP, extra: str = "", timeout: float | None = None,
                   **guest_kw) -> dict:
    """Boot the guest with `nic_args`, run iperf3 both ways against `iperf3 -s` in `ns`.

    The NIC's host side must already be in `ns` with HOST_IP (e.g.
    ns.open_tap()); a vfio-user server must be listening before this call.
    Returns {tx_gbps, rx_gbps, tx, rx (iperf3 JSON), tx_retransmits, guest}.
    """
    server = ns.popen(["iperf3", "-s", "-p", str(PORT)], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    try:
        ns.wait_listening(PORT)
        timeout = timeout or 120 + 4 * seconds
        with GuestProcess(qemu, image, nic_args, guest_script(seconds=seconds, extra=extra),
                          ip=guest_ip, timeout=timeout, **guest_kw) as g:
            res: GuestResult = g.wait()
    finally:
        ns.stop(server)
    if res.error or res.rc is None:
        raise RuntimeError(f"guest failed: {res.error}\n{res.console_log[-3000:]}")
    out = parse_output(res.output)
    out["guest"] = res
    return out


def describe(res: dict) -> str:
    """Both directions' Gbit/s and the retransmits, on one line for people."""
    return (f"guest->host {res['tx_gbps']:.2f} Gbit/s, host->guest {res['rx_gbps']:.2f} Gbit/s"
            f" (retransmits {res['tx_retransmits']})")
