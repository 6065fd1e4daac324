"""The host side of an e2e link, shared by the e2e tests that boot a guest
against a vnic Device directly (not through `vnic vm`).

    with Link(features="-mrg_rxbuf") as link:      # NetNS + TAP + Device, torn down on exit
        link.iperf_server()                        # iperf3 -s inside the namespace
        sink = link.udp_sink(HOST4, 9000)          # UDP socket inside the namespace
        res = link.run(qemu, image, "iperf3 -c 10.213.0.1 -t 1")
        link.dev.stats()

Sockets are made inside the namespace by a thread that entered it
(tests.support.tapns.in_netns); they keep working from any thread.
"""
from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tests.support.tapns import in_netns
from vnic.backends.tap import TapBackend
from vnic.device import Device
from vnic.lab.guest import GuestProcess, GuestResult
from vnic.lab.netns import GUEST_IP, HOST_IP, NetNS

TAP = "vnic0"
MTU = 1500
HOST4, GUEST4 = HOST_IP.split("/")[0], GUEST_IP.split("/")[0]
HOST6, GUEST6 = "fd00:213::1", "fd00:213::2"
IPERF_PORT = 5201
SO_RCVBUFFORCE = 33            # Linux; the socket module does not name it


def section(output: str, name: str) -> str:
    """Text the guest printed between `echo @@NAME@@` and the next @@ marker."""
    m = re.search(rf"@@{name}@@\n(.*?)(?=@@\w+@@|\Z)", output, re.S)
    assert m, f"no {name} section in the guest output:\n{output}"
    return m.group(1)


class UdpSink:
    """A UDP socket bound inside the namespace; a thread collects datagrams."""

    def __init__(self, ns: NetNS, addr: str, port: int):
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET

        def make() -> socket.socket:
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            s.bind((addr, port))
            return s

        self.sock = in_netns(ns.name, make)
        self.sock.settimeout(0.1)
        self.datagrams: list[tuple[bytes, str]] = []    # (payload, source address)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, src = self.sock.recvfrom(70000)
            except TimeoutError:
                continue
            except OSError:
                return
            self.datagrams.append((data, src[0]))

    def wait_for(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.datagrams) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.datagrams) >= n

    def close(self) -> None:
        time.sleep(0.2)                   # the last datagrams of the guest's run
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


class TcpOnce:
    """A TCP listener inside the namespace serving one connection on a thread.

    send=data: send it all, then half-close and wait for the peer to close.
    send=None: read until the peer half-closes; `received`, `sha256`, `size`
    tell what came.  `error` holds what went wrong, if anything."""

    def __init__(self, ns: NetNS, addr: str, port: int, send: bytes | None = None,
                 timeout: float = 120):
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
            s.listen(1)
            return s

        self.listener = in_netns(ns.name, make)
        self.listener.settimeout(timeout)
        self.send, self.timeout = send, timeout
        self.size = 0
        self.sha256: str | None = None
        self.peer: str | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn, (self.peer, *_) = self.listener.accept()
            with conn:
                conn.settimeout(self.timeout)
                if self.send is not None:
                    conn.sendall(self.send)
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(65536):       # until the guest closes its side
                        pass
                else:
                    h = hashlib.sha256()
                    while chunk := conn.recv(1 << 20):
                        h.update(chunk)
                        self.size += len(chunk)
                    self.sha256 = h.hexdigest()
        except BaseException as exc:              # reported to the test, not lost on a thread
            self.error = exc
        finally:
            self.done.set()

    def wait(self, timeout: float = 30) -> bool:
        return self.done.wait(timeout)

    def close(self) -> None:
        self.listener.close()                     # unblocks accept() if nobody came
        self._thread.join(timeout=5)


class Link:
    """NetNS + TAP + a vnic Device serving it; everything torn down on exit.

    The host side has HOST4 and HOST6 (no DAD); the guest boots with GUEST4
    and adds GUEST6 itself when its command needs IPv6.

    tap_offloads=False: once the driver has negotiated (which sets the TAP's
    offloads from the guest's features), segmentation offloads are turned
    off on the host side of the TAP (as `vnic vm --tap-offloads off` does),
    so the host sends wire-size frames, with partial checksums still left
    to the receiver.  tap_csum=False also turns transmit checksumming off
    there: frames arrive checksummed, as from a real network.  After the
    change `tap_offloads_off` holds ethtool's result and `tap_features_set`
    the TAP's features then (the device resets them when the guest goes).
    rx_coalesce is the Device's.  tap_gro_us is the TAP's host GRO flush
    timeout (0: no host GRO, so a capture on the TAP shows every wire frame).
    queues: the device's queue pairs (the TAP is then multiqueue); smp: the
    guest's vCPUs."""

    def __init__(self, features: str = "", tap_offloads: bool = True, tap_csum: bool = True,
                 rx_coalesce: bool = True, tap_gro_us: int = TapBackend.DEFAULT_GRO_FLUSH_US,
                 queues: int = 1, smp: int = 1):
        self.queues, self.smp = queues, smp
        self.features, self.rx_coalesce, self.tap_gro_us = features, rx_coalesce, tap_gro_us
        self.tap_offloads, self.tap_csum = tap_offloads, tap_csum
        self.tap_offloads_off: subprocess.CompletedProcess | None = None
        self.tap_features_set: dict[str, str] | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Link:
        try:
            s = self._stack
            self.ns = s.enter_context(NetNS())
            self.ns.add_tap(TAP, multi_queue=self.queues > 1)
            r = self.ns.run(["ip", "-6", "addr", "add", f"{HOST6}/64", "dev", TAP, "nodad"])
            if r.returncode != 0:
                raise RuntimeError(f"cannot add {HOST6} to {TAP}: {r.stderr}")
            self.tap_mac = self.ns.run(["cat", f"/sys/class/net/{TAP}/address"]).stdout.strip()
            self.tmp = Path(s.enter_context(tempfile.TemporaryDirectory(prefix="vnic-e2e-")))
            self.dev = s.enter_context(Device(TapBackend(TAP, self.ns.name, gro_flush_us=self.tap_gro_us),
                                              features=self.features,
                                              rx_coalesce=self.rx_coalesce, queues=self.queues))
            if not (self.tap_offloads and self.tap_csum):
                self._tap_offloads_off_once_negotiated()
            self.dev.serve(self.tmp / "vnic.sock")
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def defer(self, fn, *args) -> None:
        """Call fn(*args) when the link is torn down (before the namespace goes)."""
        self._stack.callback(fn, *args)

    def _tap_offloads_off_once_negotiated(self) -> None:
        stop = threading.Event()

        def watch() -> None:
            deadline = time.monotonic() + 150
            while not self.dev.net.negotiated and time.monotonic() < deadline:
                if stop.wait(0.02):
                    return
            if self.dev.net.negotiated:
                off = ["tso", "off", "gso", "off"] + ([] if self.tap_csum else ["tx", "off"])
                self.tap_offloads_off = self.ns.run(["ethtool", "-K", TAP, *off])
                self.tap_features_set = self.tap_features()

        t = threading.Thread(target=watch, name="tap-offloads-off", daemon=True)
        t.start()
        self.defer(t.join, 5)
        self.defer(stop.set)

    def tap_features(self) -> dict[str, str]:
        """`ethtool -k` of the host side of the TAP: {feature: "on"/"off"}."""
        r = self.ns.run(["ethtool", "-k", TAP])
        assert r.returncode == 0, r.stderr
        return {m.group(1): m.group(2)
                for m in re.finditer(r"^\s*([\w-]+): (on|off)", r.stdout, re.M)}

    def tap_counter(self, name: str) -> int:
        """A counter of the host side of the TAP (/sys/class/net/TAP/statistics/NAME):
        tx_dropped counts frames the TAP dropped because the device had not read
        its queue (host to guest)."""
        r = self.ns.run(["cat", f"/sys/class/net/{TAP}/statistics/{name}"])
        assert r.returncode == 0, r.stderr
        return int(r.stdout)

    def udp_sink(self, addr: str, port: int) -> UdpSink:
        sink = UdpSink(self.ns, addr, port)
        self.defer(sink.close)
        return sink

    def tcp_once(self, addr: str, port: int, send: bytes | None = None) -> TcpOnce:
        srv = TcpOnce(self.ns, addr, port, send)
        self.defer(srv.close)
        return srv

    def iperf_server(self) -> None:
        p = self.ns.popen(["iperf3", "-s", "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
        self.defer(self.ns.stop, p)
        self.ns.wait_listening(IPERF_PORT)

    def guest(self, qemu, image, cmd: str, timeout: float = 150, extra_args=()) -> GuestProcess:
        g = GuestProcess(qemu, image, self.dev.qemu_args(), cmd, ip=GUEST_IP, timeout=timeout,
                         extra_args=extra_args, smp=self.smp)
        self.defer(g.kill)
        return g.start()

    def run(self, qemu, image, cmd: str, timeout: float = 150) -> GuestResult:
        res = self.guest(qemu, image, cmd, timeout).wait()
        assert res.rc == 0 and res.error is None, \
            f"guest: rc={res.rc} error={res.error}\n{res.output}\n{res.console_log[-3000:]}"
        return res
