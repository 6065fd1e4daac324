"""The Python API: one vnic NIC served over vfio-user.

    import vnic
    with vnic.Device("tap:vnic0", features="-event_idx") as dev:
        dev.serve("/run/vnic0.sock")
        print(dev.qemu_args())       # attach QEMU with these
        ...
        print(dev.stats()["tx_packets"])

The CLI (`vnic serve`, `vnic vm`) is a thin layer over this.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, NotRequired, TypedDict, TypeGuard

import numpy as np

from . import backends
from .backends import Backend, TapBackend
from .control import qmp
from .errors import ConfigError, ReplugError
from .net import faults as fault_injection
from .net.faults import Episodes, FaultSpec, FaultsState
from .net.virtio_net import VirtioNet, check_tx_mode, parse_mac
from .telemetry import counters as stats
from .telemetry.capture import Capture
from .telemetry.flows import FlowsResult
from .vfio_user.session import Server
from .virtio import features as feat


def qemu_device_args(socket_path: str | Path, device_id: str | None = qmp.DEFAULT_DEVICE_ID) -> list[str]:
    """QEMU arguments that attach a vfio-user NIC listening on socket_path.
    The id is what a replug over QMP finds the device by."""
    return ["-device", json.dumps(qmp.device_spec(socket_path, device_id), separators=(",", ":"))]


# QEMU needs guest RAM in shared memory so DMA_MAP carries file descriptors.
def qemu_memory_args(mem_mb: int = 512) -> list[str]:
    """QEMU arguments that give the guest mem_mb MiB of shared memfd RAM:
    vfio-user can then pass guest memory to the device as file descriptors."""
    return ["-object", f"memory-backend-memfd,id=mem,size={mem_mb}M,share=on",
            "-machine", "memory-backend=mem"]


class Modes(TypedDict):
    """The modes in force, as Device.set_mode() returns them (tap_gro_us for
    TAP backends only)."""
    tx: str
    rx_coalesce: bool
    tap_gro_us: NotRequired[int]      # TAP backends only


class DeviceInfo(TypedDict):
    """What Device.info() returns: the device's identity and configuration now
    (tap_gro_us for TAP backends only)."""
    mac: str
    mtu: int
    backend: str
    socket: str | None
    link_up: bool                     # as asked (vnic ctl link); the guest sees it with a carrier
    carrier: bool                     # the backend has a peer (socket backends; always true else)
    offered_features: list[str]
    negotiated_features: list[str]
    needs_reset: bool
    tx_mode: str
    rx_filter: dict[str, Any]
    rx_coalesce: bool
    queue_pairs: int                  # max_virtqueue_pairs
    active_queue_pairs: int           # what the driver uses (MQ_VQ_PAIRS_SET)
    rx_steering: str                  # kernel, ebpf or detach (VirtioNet.steering)
    rss: dict[str, Any]               # VirtioNet.rss_state
    tap_gro_us: NotRequired[int]      # TAP backends only


class _StartUp(TypedDict):
    """What reset() goes back to."""
    features: frozenset[feat.F]
    tx: str
    rx_coalesce: bool
    tap_gro_us: int | None


def _tunable_gro(backend: Backend) -> TypeGuard[TapBackend]:
    """A backend whose host GRO can be tuned (a TAP)."""
    return hasattr(backend, "set_gro")


class Device:
    """One virtio-net NIC: the device model, its C data plane and its backend,
    served over vfio-user once serve() is called. Use it in a `with` block,
    or call close().

    The constructor opens the backend. It raises BackendError for a bad backend
    spec or a backend that cannot be opened, FeatureError for a bad features
    change, ConfigError for a bad MAC, MTU, speed, TX mode (passthrough needs a
    TAP) or flow table bound, and DeviceError if the C device cannot be
    created."""

    def __init__(self, backend: str | Backend = "null", *, mac: str | bytes | None = None,
                 mtu: int = 1500, features: str = "", tx_mode: str = "segment",
                 rx_coalesce: bool = True, speed_mbps: int = 10000,
                 flow_table_max: int | None = None, queues: int = 1, rx_copy: str = "direct"):
        """backend: 'tap:IF', 'tap:IF@NETNS', 'null' or a backend object.
        queues: RX/TX queue pairs (1 to 16); more than one offers MQ, and a
        TAP then has a queue per pair.
        mac: xx:xx:xx:xx:xx:xx or 6 bytes (default: random 52:54:00:xx:xx:xx).
        features: comma list of +name/-name applied to the default offer.
        flow_table_max: flows kept per queue pair (0: no per-flow statistics).
        rx_copy: 'direct' (received frames read straight into the guest's
        buffers where possible) or 'bounce' (through a buffer of the
        device's: the path before one-copy receive, to compare)."""
        self.backend = backends.parse(backend) if isinstance(backend, str) else backend
        offered = feat.apply_changes(feat.default_offer(queues), features)
        self.qmp_path: str | None = None           # QEMU's monitor, for replug
        self.device_id = qmp.DEFAULT_DEVICE_ID
        self._stats_base: dict[str, int] = {}      # totals at the last reset()
        self._queue_base: np.ndarray | None = None  # per-queue rows at the last reset()
        if isinstance(mac, str):
            mac = parse_mac(mac)
        flow_kw = {} if flow_table_max is None else {"flow_table_max": flow_table_max}
        self.net = VirtioNet(self.backend, mac=mac, mtu=mtu, speed_mbps=speed_mbps,
                             features=offered, tx_mode=tx_mode,
                             rx_coalesce=rx_coalesce, queue_pairs=queues, rx_copy=rx_copy, **flow_kw)
        # what `reset` goes back to; the backend is open now: its GRO is what is really in force
        self._initial = _StartUp(features=offered, tx=tx_mode, rx_coalesce=rx_coalesce,
                                 tap_gro_us=self.backend.gro_flush_us if _tunable_gro(self.backend) else None)
        self.server: Server | None = None
        self._thread: threading.Thread | None = None
        self.episodes = Episodes(self.net.native, self.set_link)   # rx starvation, link flaps
        # pcapng capture of what the device sends and receives (start/status/stop)
        self.capture = Capture(self.net.native, f"vnic:{self.backend.describe()}")

    # ---- serving -----------------------------------------------------------
    def serve(self, socket_path: str | Path) -> Device:
        """Listen on socket_path (mode 0600) in a background thread; returns
        self.  Raises RuntimeError if already serving, FileExistsError if
        socket_path is not a socket or another server answers on it."""
        if self.server:
            raise RuntimeError("already serving")
        self.server = Server(socket_path, self.net.transport)
        self._thread = self.server.start()
        return self

    @property
    def socket_path(self) -> Path | None:
        """The vfio-user socket being served; None before serve()."""
        return self.server.path if self.server else None

    def qemu_args(self) -> list[str]:
        """QEMU's -device arguments that attach to this NIC (qemu_device_args
        of the socket and device_id). Raises RuntimeError before serve()."""
        if not self.server:
            raise RuntimeError("not serving yet: call serve() first")
        return qemu_device_args(self.server.path, self.device_id)

    def attach_qmp(self, qmp_path: str | Path, device_id: str = qmp.DEFAULT_DEVICE_ID) -> None:
        """Where QEMU's QMP socket is and the id QEMU knows this NIC by (for
        replug())."""
        self.qmp_path, self.device_id = str(qmp_path), device_id

    def replug(self, timeout: float = 60.0) -> dict[str, Any]:
        """Unplug and replug the NIC through QMP: the guest renegotiates now
        (new offer in force).  Blocks until QEMU has plugged it back, and
        returns the device it added.  Raises ReplugError without attach_qmp()
        or serve(), or if QEMU is unreachable, refuses, does not see the
        guest release the device within timeout seconds, or is a version
        known to abort on the unplug."""
        if not self.qmp_path:
            raise ReplugError("no QMP socket: start QEMU with -qmp unix:PATH,server=on,wait=off "
                                  "and serve with --qmp PATH (vnic vm does this)")
        if not self.server:
            raise ReplugError("not serving: nothing to replug")
        return qmp.replug(self.qmp_path, qmp.device_spec(self.server.path, self.device_id), timeout)

    def close(self) -> None:
        """Stop serving (waiting up to 10 s for the session thread), stop the
        data plane and close the backend."""
        if self.server:
            self.server.close()
            if self._thread:
                self._thread.join(timeout=10)
            self.server = None
        self.capture.close()
        self.episodes.close()
        self.net.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- state -----------------------------------------------------------------
    @property
    def mac(self) -> str:
        """The MAC address the device was configured with, as xx:xx:xx:xx:xx:xx
        (the driver may set another: info()["rx_filter"]["mac"])."""
        return ":".join(f"{b:02x}" for b in self.net.mac)

    @property
    def offered_features(self) -> list[str]:
        """Names of the features offered now; the guest sees a change at its
        next negotiation."""
        return feat.names(self.net.offered_features())

    @property
    def negotiated_features(self) -> list[str]:
        """Names of the features the driver negotiated ([] until it has, and
        after a device reset)."""
        return feat.names(self.net.negotiated)

    def stats(self) -> dict[str, int]:
        """Device totals since start, or since the last reset()."""
        return {k: v - self._stats_base.get(k, 0) for k, v in self.net.stats().items()}

    def reset(self) -> DeviceInfo:
        """Back to the start-up configuration: the offer (the guest sees it at
        its next negotiation), TX mode, coalescing, host GRO, link up;
        counters from zero, no flows, no injected faults.  The modes go first: they are the
        step that can be refused, and then nothing has changed.
        The workers never stop: counters restart from a baseline, not by
        writing under them.  Returns info().  Raises ConfigError if the TAP
        refuses its start-up GRO timeout; nothing has changed then."""
        self.set_mode(tx=self._initial["tx"], rx_coalesce=self._initial["rx_coalesce"],
                      tap_gro_us=self._initial["tap_gro_us"])
        self.net.features = self._initial["features"]
        self.episodes.close()
        self.set_link(True)
        self.set_faults(FaultSpec())
        self.net.clear_flows()
        self._stats_base = self.net.stats()
        self._queue_base = self.net.counters.copy()
        return self.info()

    def set_link(self, up: bool) -> None:
        """Carrier up or down; the guest sees the change at once (configuration
        interrupt)."""
        self.net.set_link(up)

    def announce(self) -> bool:
        """Ask the guest to announce itself (gratuitous ARP after a move).
        False if it did not negotiate guest_announce."""
        return self.net.announce()

    def change_features(self, spec: str) -> list[str]:
        """Change the offer with a +name/-name list; the guest sees it at its
        next negotiation (driver reload, reboot, or a replug).  Returns the
        new offer's names.  Raises FeatureError for an unknown, unimplemented
        or required feature, or one added without its prerequisite; the
        offer is unchanged then."""
        self.net.features = feat.apply_changes(self.net.features, spec)
        return self.offered_features

    def set_mode(self, tx: str | None = None, rx_coalesce: bool | None = None,
                 tap_gro_us: int | None = None) -> Modes:
        """Modes take effect at once.  tap_gro_us: the TAP's host GRO flush
        timeout (0: off); the result shows it for TAP backends only.  The
        GRO change, the one that can fail on a good value, goes first, so a
        refused request changes nothing.  Returns the modes now.  Raises
        ConfigError for an unknown TX mode (or passthrough without a TAP), an
        rx_coalesce that is not a bool, or a GRO timeout that is out of
        range, without a TAP backend, or refused by the TAP."""
        if tap_gro_us is not None and not _tunable_gro(self.backend):
            raise ConfigError(f"host GRO needs a TAP backend, not {self.backend.describe()}")
        if tx is not None:
            check_tx_mode(tx)
        if rx_coalesce is not None and not isinstance(rx_coalesce, bool):
            raise ConfigError(f"rx_coalesce is true or false, not {rx_coalesce!r}")
        if tap_gro_us is not None and _tunable_gro(self.backend):
            self.backend.set_gro(tap_gro_us)
        if tx is not None:
            self.net.set_tx_mode(tx)
        if rx_coalesce is not None:
            self.net.set_rx_coalesce(rx_coalesce)
        return self._modes()

    def _modes(self) -> Modes:
        modes = Modes(tx=self.net.tx_mode, rx_coalesce=self.net.rx_coalesce)
        if _tunable_gro(self.backend):
            modes["tap_gro_us"] = self.backend.gro_flush_us
        return modes

    def set_faults(self, spec: FaultSpec) -> FaultsState:
        """Inject the faults spec names (rates in percent; FaultSpec() clears
        them) from the next frame on; returns faults().  ConfigError for a
        bad rate, seed, queue or direction, and then nothing has changed."""
        fault_injection.apply(self.net.native, self.net.queue_pairs, spec)
        return self.faults()

    def faults(self) -> FaultsState:
        """The faults in force: rates per queue pair and way, and whether a
        starvation or a flap is under way."""
        return FaultsState(queues=fault_injection.state(self.net.native, self.net.queue_pairs),
                           rx_starving=self.episodes.active("rx_starve"),
                           link_flapping=self.episodes.active("flap"))

    def flows(self, top: int | None = None, sort: str = "bytes") -> FlowsResult:
        """Per-flow statistics: {"table": entries/capacity/bound/evictions,
        "flows": [one dict per flow, largest first by `sort`]}; top: only the
        first top flows.  Raises ConfigError for an unknown sort or a negative
        top."""
        return {"table": self.net.flow_table_info(), "flows": self.net.flows(top=top, sort=sort)}

    def per_queue_stats(self) -> list[dict[str, int]]:
        """Counters of each queue pair, since start or the last reset()."""
        rows = stats.per_queue(self.net.counters)
        if self._queue_base is not None:
            rows = [{k: v - int(b[k]) for k, v in row.items()} for row, b in zip(rows, self._queue_base, strict=False)]
        return rows

    def info(self) -> DeviceInfo:
        """The device's identity and configuration now (see DeviceInfo), as
        `vnic ctl info` shows it."""
        info = DeviceInfo(
            mac=self.mac,
            mtu=self.net.mtu,
            backend=self.backend.describe(),
            socket=str(self.socket_path) if self.socket_path else None,
            link_up=self.net.link_up,
            carrier=self.net.carrier,
            offered_features=self.offered_features,
            negotiated_features=self.negotiated_features,
            needs_reset=self.net.failed(),
            tx_mode=self.net.tx_mode,
            rx_filter=self.net.filter_state(),
            rx_coalesce=self.net.rx_coalesce,
            queue_pairs=self.net.queue_pairs,
            active_queue_pairs=self.net.active_pairs(),
            rx_steering=self.net.steering(),
            rss=self.net.rss_state(),
        )
        if _tunable_gro(self.backend):
            info["tap_gro_us"] = self.backend.gro_flush_us
        return info
