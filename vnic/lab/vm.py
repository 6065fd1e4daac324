"""`vnic vm`: boot the test guest with a vnic NIC and run something in it.

Everything it creates is private and torn down on the way out, also when
interrupted: a network namespace holding the TAP (host side 10.213.0.1),
an iperf3 server inside it, the vfio-user server, and QEMU (with a QMP
socket, so the device can be replugged).  The device is a child `vnic
serve` (vnic.lab.served), confined as users run it: it gives up root once
set up.  With control=PATH the device is scriptable while the guest runs
(`vnic ctl --control PATH ...`).
"""
from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from vnic.lab.image import ensure_guest_image

from ..backends.tap import TapBackend
from ..errors import ControlError
from ..telemetry.capture import CaptureSpec, CaptureStatus
from ..virtio import features as feat
from . import iperf
from .guest import GuestProcess
from .netns import GUEST_IP, NetNS
from .qemu import ensure_qemu
from .served import ServedChild

TAP_NAME = "vnic0"


@dataclass
class VmResult:
    """What `vnic vm` reports: the guest command's outcome, the features the
    guest negotiated, the device counters and the iperf3 rates."""
    rc: int | None
    output: str
    error: str | None
    guest_features: list[str]          # what the guest driver negotiated
    counters: dict[str, int]
    tx_gbps: float | None = None       # guest to host
    rx_gbps: float | None = None       # host to guest
    boot_s: float | None = None
    extra: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        """The result as `vnic vm --json` prints it."""
        return {
            "tx_gbps": self.tx_gbps, "rx_gbps": self.rx_gbps, "rc": self.rc, "error": self.error,
            "guest_features": self.guest_features, "counters": self.counters,
            "boot_s": self.boot_s, "output": self.output, **self.extra,
        }


# What the summary shows: the offloads a user checks first, then counters.
SUMMARY_FEATURES = ("csum", "tso4", "tso6", "uso", "ufo", "guest_csum", "guest_tso4", "guest_tso6",
                    "guest_uso4", "mrg_rxbuf", "packed", "event_idx", "mq", "rss")
SUMMARY_COUNTERS = (             # label, counters, what joins them
    ("packets guest->host", ("tx_packets",), ""),
    ("TSO super-frames -> segments", ("tx_tso_packets", "tx_tso_segments"), " -> "),
    ("checksums completed (tx)", ("tx_csum_offloaded",), ""),
    ("packets host->guest", ("rx_packets",), ""),
    ("coalesced super-frames <- segments", ("rx_coalesced_packets", "rx_coalesced_segments"), " <- "),
    ("checksums valid / partial (rx)", ("rx_csum_valid", "rx_csum_completed"), " / "),
    ("waits for guest buffers", ("rx_no_buffer",), ""),
)


def summary(res: VmResult) -> Table:
    """A short table for people: both directions, the offloads negotiated and
    the counters that matter, drops and errors summed."""
    t = Table(title="vnic vm", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    if res.tx_gbps is not None:
        retrans = res.extra.get("tx_retransmits")
        t.add_row("iperf3 guest->host", f"{res.tx_gbps:.2f} Gbit/s ({retrans} retransmits)")
        t.add_row("iperf3 host->guest", f"{res.rx_gbps:.2f} Gbit/s")
    if res.boot_s is not None:
        t.add_row("guest boot", f"{res.boot_s:.1f} s")
    got = set(res.guest_features)
    t.add_row("negotiated", " ".join(f if f in got else f"[dim]-{f}[/dim]" for f in SUMMARY_FEATURES))
    c = res.counters
    for label, names, sep in SUMMARY_COUNTERS:
        t.add_row(label, sep.join(f"{c.get(n, 0):,}" for n in names))
    drops = {k: v for k, v in c.items() if v and ("drops" in k or k.endswith("_errors") or k == "mem_faults")}
    t.add_row("drops, errors", ", ".join(f"{k} {v:,}" for k, v in sorted(drops.items())) or "none")
    return t


def guest_feature_names(ready: dict) -> list[str]:
    """The READY line carries /sys/class/net/eth0/device/features: one
    character per feature bit, bit 0 first."""
    bits = ready.get("features", "")
    return feat.names(sum(1 << i for i, c in enumerate(bits) if c == "1"))


def _tap_offloads_off_once_negotiated(dev: ServedChild, ns: NetNS) -> None:
    """Negotiation turns the TAP's offloads on for the guest; turn the host
    side's segmentation off right after, from a watcher thread."""
    def watch() -> None:
        deadline = time.monotonic() + 120
        while not dev.client.info()["negotiated_features"] and time.monotonic() < deadline:
            time.sleep(0.05)
        ns.run(["ethtool", "-K", TAP_NAME, "tso", "off", "gso", "off"])
    threading.Thread(target=watch, name="tap-offloads-off", daemon=True).start()


def vm(iperf_seconds: int | None = None, cmd: str | None = None, features: str = "",
       mtu: int = 1500, timeout: float | None = None, tx_mode: str = "segment",
       rx_coalesce: bool = True, tap_offloads: bool = True, control: str | None = None,
       flow_table_max: int | None = None, tap_gro_us: int = TapBackend.DEFAULT_GRO_FLUSH_US,
       smp: int = 1, queues: int | None = None, pcap: CaptureSpec | None = None,
       faults: str | None = None, rx_copy: str = "direct", log=print, console=None) -> VmResult:
    """Boot the guest with a vnic NIC; run iperf3 both ways and/or cmd.

    smp: the guest's vCPUs; queues: the NIC's queue pairs (default: smp,
    as a Linux guest uses one pair per online CPU).

    tap_offloads=False turns segmentation offloads off on the host side of
    the TAP, so the host sends wire-size frames (as traffic from a real
    network would arrive) and the device's receive coalescing has work.

    faults: `vnic serve --faults` SPEC, injected from the start.

    pcap: capture into a pcapng file from the device's start (the file is
    complete once this returns; result.extra["capture"] says what it holds).

    log gets a line per step as it happens (set-up with timings, the boot,
    each iperf3 direction's result); console, if given, every piece of the
    guest's serial console."""
    if iperf_seconds is None and cmd is None:
        cmd = "ip -s link show eth0"
    queues = smp if queues is None else queues
    feat.apply_changes(feat.default_offer(queues), features)   # a bad name fails here, clearly
    t0 = time.monotonic()
    qemu = ensure_qemu(log=log)
    image = ensure_guest_image(log=log)
    log(f"vnic: QEMU and the guest image ready ({time.monotonic() - t0:.1f} s)")
    serve_args = ["--mtu", str(mtu), "--tx-mode", tx_mode, "--rx-coalesce", "on" if rx_coalesce else "off",
                  "--tap-gro", str(tap_gro_us), "--queues", str(queues), "--rx-copy", rx_copy]
    serve_args += (["--features", features] if features else []) + \
        (["--flow-table-max", str(flow_table_max)] if flow_table_max is not None else [])
    serve_args += pcap_args(pcap) + (["--faults", faults] if faults else [])
    with NetNS() as ns, tempfile.TemporaryDirectory(prefix="vnic-vm-") as tmp:
        ns.add_tap(TAP_NAME, multi_queue=queues > 1)
        qmp_path = Path(tmp) / "qmp.sock"
        with ServedChild(f"tap:{TAP_NAME}@{ns.name}", tmp, serve_args, control, qmp_path) as dev:
            if not tap_offloads:
                _tap_offloads_off_once_negotiated(dev, ns)
            if control:
                log(f"vnic: control socket {control} (vnic ctl --control {control} ...)")
            monitor = ["-qmp", f"unix:{qmp_path},server=on,wait=off"]
            sandbox = dev.client.sandbox()          # what the device may still do, for --json
            log(f"vnic: device serving on a TAP in namespace {ns.name} ({time.monotonic() - t0:.1f} s); "
                f"booting the guest ({smp} vCPU{'s' if smp > 1 else ''}, {queues} queue "
                f"pair{'s' if queues > 1 else ''})")
            watch = _Console(log, iperf_seconds, console)
            try:
                result = _run(qemu, image, dev.nic, monitor, ns, dev, iperf_seconds, cmd, timeout, smp, watch)
            finally:
                for line in dev.log_records():      # what the device warned about
                    log(f"vnic serve: {line}")
            result.extra["sandbox"] = sandbox
            if pcap:
                result.extra["capture"] = _capture_done(dev, log)
            return result


def pcap_args(spec: CaptureSpec | None) -> list[str]:
    """`vnic serve` options for the capture spec (none for None)."""
    if not spec:
        return []
    return ["--pcap", spec.file, "--pcap-what", spec.what, "--pcap-direction", spec.direction,
            "--pcap-snaplen", str(spec.snaplen), "--pcap-buffer", str(spec.buffer_kib)]


def _capture_done(dev: ServedChild, log) -> CaptureStatus:
    """Stop the capture while the device still serves, so the file is
    whole; its final status."""
    try:
        status = dev.client.capture_stop()
    except ControlError:                  # stopped already, through --control
        log("vnic: the capture was stopped during the run")
        return CaptureStatus(running=False)
    log(f"vnic: captured {status['packets_written']} frames into {status['file']} "
        f"({status['ring_drops']} dropped for a full ring)")
    return status


class _Console:
    """The guest's console as it comes: to iperf.Progress (the boot, each
    direction's result) and to the caller's console function, if any."""

    def __init__(self, log, iperf_seconds: int | None, console):
        self.progress = iperf.Progress(log, iperf_seconds or 0)
        self.console = console

    def feed(self, chunk: str) -> None:
        self.progress.feed(chunk)
        if self.console:
            self.console(chunk)


def _run(qemu, image, nic, monitor, ns, dev, iperf_seconds, cmd, timeout, smp, watch) -> VmResult:
    """Boot the guest; iperf3 both ways or the command; the result with counters."""
    if iperf_seconds is not None:
        res = iperf.run_iperf_pair(qemu, image, nic, ns, seconds=iperf_seconds,
                                   extra="", timeout=timeout, extra_args=monitor, smp=smp, echo=watch.feed)
        guest = res["guest"]
        return VmResult(guest.rc, guest.output, guest.error,
                        guest_feature_names(guest.ready), dev.stats(),
                        tx_gbps=res["tx_gbps"], rx_gbps=res["rx_gbps"],
                        boot_s=guest.boot_s,
                        extra={"tx_retransmits": res["tx_retransmits"],
                               "iperf_tx_bytes": iperf.received_bytes(res["tx"]),
                               "iperf_rx_bytes": iperf.received_bytes(res["rx"])})
    with GuestProcess(qemu, image, nic, cmd, ip=GUEST_IP, timeout=timeout or 180,
                      extra_args=monitor, smp=smp, echo=watch.feed) as g:
        guest = g.wait()
    return VmResult(guest.rc, guest.output, guest.error,
                    guest_feature_names(guest.ready), dev.stats(), boot_s=guest.boot_s)
