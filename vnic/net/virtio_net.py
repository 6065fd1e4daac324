"""The virtio-net device model: configuration, offered features, and the
bridge from the virtio transport to the C data plane (one call per
configuration change, never per packet)."""
from __future__ import annotations

import errno
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._native import ffi, lib
from ..backends import Backend
from ..errors import BackendError, ConfigError, DeviceError, check
from ..telemetry import counters as stats
from ..telemetry import flows as flow_stats
from ..vfio_user.dma import DmaTable
from ..virtio import features as feat
from ..virtio.features import F
from ..virtio.queues import QueueConfig
from ..virtio.transport import VirtioPciTransport

log = logging.getLogger(__name__)

DEVICE_TYPE_NET = 1
STATUS_LINK_UP = 1
STATUS_ANNOUNCE = 2
DUPLEX_FULL = 1
MIN_MTU, MAX_MTU = 68, 65535
TX_MODES = {"segment": lib.VNIC_TX_SEGMENT, "passthrough": lib.VNIC_TX_PASSTHROUGH}
RX_COPY_MODES = {"direct": lib.VNIC_RX_COPY_DIRECT, "bounce": lib.VNIC_RX_COPY_BOUNCE}


MAX_QUEUE_PAIRS: int = lib.VNIC_MAX_QUEUE_PAIRS


def check_queue_pairs(n: object) -> None:
    """Raise ConfigError unless n is a queue pair count the device can serve."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_QUEUE_PAIRS:
        raise ConfigError(f"queue pairs {n!r}: use 1 to {MAX_QUEUE_PAIRS}")


def check_tx_mode(mode: object) -> None:
    """A ValueError naming the modes for anything that is not one (a control
    request may carry any JSON value)."""
    if not isinstance(mode, str) or mode not in TX_MODES:
        raise ConfigError(f"unknown TX mode {mode!r}: use {' or '.join(TX_MODES)}")


def parse_mac(text: str) -> bytes:
    """xx:xx:xx:xx:xx:xx as 6 bytes. Raises ConfigError for another form or a
    multicast address."""
    if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", text):
        raise ConfigError(f"bad MAC address {text!r} (want xx:xx:xx:xx:xx:xx)")
    mac = bytes(int(b, 16) for b in text.split(":"))
    if mac[0] & 1:
        raise ConfigError(f"MAC {text} is a multicast address")
    return mac


# enum vnic_hash_type by the names ethtool and the spec use
HASH_TYPES = {"ipv4": lib.VNIC_HASH_IPV4, "tcpv4": lib.VNIC_HASH_TCPV4, "udpv4": lib.VNIC_HASH_UDPV4,
              "ipv6": lib.VNIC_HASH_IPV6, "tcpv6": lib.VNIC_HASH_TCPV6, "udpv6": lib.VNIC_HASH_UDPV6}


def random_mac() -> bytes:
    """A locally administered unicast address."""
    return bytes([0x52, 0x54, 0x00]) + os.urandom(3)


class VirtioNet:
    """The virtio-net device: its configuration, offered features, link, modes
    and statistics, and the bridge to the C data plane. transport is the
    virtio PCI transport in front of it, which the vfio-user server serves.

    queue_pairs: RX/TX queue pairs (1 to MAX_QUEUE_PAIRS); with more than
    one the device offers MQ and the backend opens a queue per pair.

    The constructor opens backend. It raises ConfigError for a bad MTU, speed,
    queue pair count, features (not Feature members), TX mode or flow table bound, BackendError if the
    backend cannot be opened or attached, and DeviceError if the C device
    cannot be created."""
    device_type = DEVICE_TYPE_NET
    subsystem_id = 0x1100
    class_code = 0x020000          # network controller, ethernet

    def __init__(self, backend: Backend, mac: bytes | None = None, mtu: int = 1500, speed_mbps: int = 10000,
                 features: frozenset[F] | None = None, tx_mode: str = "segment",
                 rx_coalesce: bool = True, flow_table_max: int = flow_stats.DEFAULT_MAX,
                 queue_pairs: int = 1, rx_copy: str = "direct"):
        check_queue_pairs(queue_pairs)
        self.queue_pairs = queue_pairs
        if not MIN_MTU <= mtu <= MAX_MTU:
            raise ConfigError(f"MTU {mtu} outside {MIN_MTU}..{MAX_MTU}")
        if not 0 <= speed_mbps < 0xFFFFFFFF:
            raise ConfigError(f"speed {speed_mbps} Mbit/s out of range")
        self.mac = mac or random_mac()
        self.mtu = mtu
        self.speed_mbps = speed_mbps          # reported with SPEED_DUPLEX (full duplex)
        # default: feat.default_offer(queue_pairs)
        if features is not None and not all(isinstance(f, F) for f in features):
            raise ConfigError("features must be a set of Feature members (a '+name,-name' "
                              "list goes through features.apply_changes)")
        self.features = frozenset(feat.default_offer(queue_pairs) if features is None else features)
        self.link_up = True
        self.negotiated = 0
        self.backend = backend
        self.num_queues = 2 * self.queue_pairs + 1          # the last one is the control queue
        self._lock = threading.RLock()     # session thread vs. control calls
        native = lib.vnic_dev_new(self.queue_pairs)
        if native == ffi.NULL:
            raise DeviceError(errno.ENOMEM, "cannot create the native device")
        self.native = ffi.gc(native, lib.vnic_dev_free)
        lib.vnic_dev_set_mac(self.native, self.mac)
        backend.open(queues=self.queue_pairs)
        self._use_backend_fds(backend.fds)
        # a socket backend's peer: the link is down while there is none
        self.carrier = getattr(backend, "connected", lambda: True)()
        self._peer_ends = 0                # backend_disconnects when the peer in force came
        self._closed = False
        self.memory = DmaTable(self.native, self.quiesced)
        self.set_tx_mode(tx_mode)
        self.set_rx_coalesce(rx_coalesce)
        self.set_rx_copy(rx_copy)
        self.set_flow_table_max(flow_table_max)
        self.counters = stats.view(self.native)
        self.transport = VirtioPciTransport(self)
        if hasattr(backend, "attached"):       # socket backends: the far end, the peer's watcher
            backend.attached(self.native, self.peer_changed)

    # ---- offered features and device configuration -------------------------
    def offered_features(self) -> int:
        """The offer as a feature bit mask."""
        return feat.mask(self.features)

    def steering(self) -> str:
        """How received frames are kept on the pairs in use: "kernel" (the
        TAP's own flow hash over all its queues, or one queue), "ebpf" (a
        steering program over the pairs in use) or "detach" (the queues
        given up are detached: the kernel drops what they held)."""
        names = {lib.VNIC_STEER_NONE: "kernel", lib.VNIC_STEER_PROGRAM: "ebpf",
                 lib.VNIC_STEER_DETACH: "detach"}
        return names[lib.vnic_dev_steering(self.native)]

    def active_pairs(self) -> int:
        """Queue pairs the driver uses now (MQ_VQ_PAIRS_SET; 1 until it says)."""
        n: int = lib.vnic_dev_active_pairs(self.native)
        return n

    @property
    def current_mac(self) -> bytes:
        """The address in force: the driver may set it (CTRL_MAC_ADDR)."""
        out = ffi.new("uint8_t[6]")
        lib.vnic_dev_get_mac(self.native, out)
        return bytes(out)

    def config_read(self, offset: int, count: int) -> bytes:
        """count bytes of struct virtio_net_config from offset (zeros past its
        end)."""
        status = (STATUS_LINK_UP if self.link_up and self.carrier else 0) | \
            (STATUS_ANNOUNCE if lib.vnic_dev_announce_pending(self.native) else 0)
        # struct virtio_net_config: mac, status, max_virtqueue_pairs, mtu, speed, duplex,
        # rss_max_key_size, rss_max_indirection_table_length, supported_hash_types
        raw = self.current_mac + struct.pack("<HHHIBBHI", status, self.queue_pairs, self.mtu,
                                             self.speed_mbps, DUPLEX_FULL, lib.VNIC_RSS_KEY_SIZE,
                                             lib.VNIC_RSS_TABLE_MAX, lib.VNIC_HASH_SUPPORTED)
        return raw[offset:offset + count].ljust(count, b"\0")

    def config_write(self, offset: int, data: bytes) -> None:
        """Ignored (logged at debug level): the device configuration is
        read-only in virtio 1.x."""
        log.debug("ignored device config write at %#x", offset)   # read-only in virtio 1.x

    # ---- lifecycle (from the transport's status machine) ---------------------
    def start(self, features: int, queues: list[QueueConfig], config_vector: int) -> bool:
        """DRIVER_OK: give the data plane the negotiated features and the
        enabled queues, and start its workers. False, logged, if the data
        plane refuses any step."""
        with self._lock:
            if lib.vnic_dev_set_features(self.native, features) < 0:
                log.warning("features changed while the device runs: refused")
                return False
            self.negotiated = features
            lib.vnic_irq_set_config_vector(self.native, config_vector)
            for index, q in enumerate(queues):
                if not q.enabled:
                    continue
                rc = lib.vnic_queue_setup(self.native, index, q.size, q.desc, q.driver, q.device)
                if rc == 0:
                    rc = lib.vnic_queue_set_vector(self.native, index, q.msix_vector)
                if rc == 0:
                    rc = lib.vnic_queue_enable(self.native, index, 1)
                if rc < 0:
                    log.warning("queue %d setup refused: %s", index, os.strerror(-rc))
                    return False
            rc = lib.vnic_dev_start(self.native)
            if rc < 0:
                log.warning("data plane did not start: %s", os.strerror(-rc))
                return False
            self.memory.warn_if_slow({i: q.desc for i, q in enumerate(queues) if q.enabled})
            log.info("driver ready: features %s", ",".join(feat.names(features)))
            return True

    def reset(self) -> None:
        """Device reset: the data plane stops and forgets the driver's state;
        nothing is negotiated any more."""
        with self._lock:
            lib.vnic_dev_reset(self.native)
            self.negotiated = 0

    def failed(self) -> bool:
        """True if the data plane hit an error that needs a device reset
        (NEEDS_RESET)."""
        error: int = lib.vnic_dev_error(self.native)
        return error != 0

    def read_isr(self) -> int:
        """The ISR status byte; reading it clears it, as virtio specifies."""
        isr: int = lib.vnic_dev_read_isr(self.native)
        return isr

    def kick(self, queue: int) -> None:
        """The driver notified queue: wake its worker."""
        lib.vnic_queue_kick(self.native, queue)

    def set_vector(self, queue: int | None, vector: int) -> None:
        """Send queue's interrupts (with queue None, configuration changes) to
        MSI-X vector."""
        if queue is None:
            lib.vnic_irq_set_config_vector(self.native, vector)
        else:
            lib.vnic_queue_set_vector(self.native, queue, vector)

    # ---- MSI-X eventfds --------------------------------------------------------
    def check_vector_fd(self, fd: int) -> None:
        """Raise DeviceError (EINVAL) unless fd is an eventfd; it is made
        non-blocking, so that a worker never waits to signal it."""
        check(lib.vnic_irq_check_fd(fd), f"interrupt fd {fd} (not an eventfd?)", DeviceError)

    def set_vector_fd(self, vector: int, fd: int) -> None:
        """Signal vector through eventfd fd from now on (-1: no eventfd). The
        device owns fd: it is closed if the data plane refuses it."""
        if lib.vnic_irq_set_fd(self.native, vector, fd) < 0 and fd >= 0:
            os.close(fd)

    def trigger_vector(self, vector: int) -> None:
        """Signal vector now."""
        lib.vnic_irq_trigger(self.native, vector)

    def mask_vector(self, vector: int, masked: bool) -> None:
        """Mask or unmask vector."""
        lib.vnic_irq_set_masked(self.native, vector, int(masked))

    # ---- channel ---------------------------------------------------------------
    def attach_channel(self, chan: Any) -> None:
        """Give the data plane the vfio-user channel chan (a cffi pointer): it
        answers doorbells and reaches message-based DMA through it."""
        from ..virtio import transport as t
        lib.vnic_chan_set_notify(chan, self.native, t.VIRTIO_BAR, t.NOTIFY_OFF,
                                 t.NOTIFY_MULTIPLIER, self.num_queues)
        with self.quiesced():
            lib.vnic_chan_attach_dma(chan, self.native)

    def detach_channel(self) -> None:
        """Take the channel away from the data plane before it is freed."""
        with self.quiesced():
            lib.vnic_chan_attach_dma(ffi.NULL, self.native)

    @contextmanager
    def quiesced(self) -> Iterator[None]:
        """Stop the workers around a change to memory they hold pointers into."""
        with self._lock:
            running = lib.vnic_dev_running(self.native)
            lib.vnic_dev_stop(self.native)
            try:
                yield
            finally:
                if running and lib.vnic_dev_start(self.native) < 0:
                    log.warning("data plane did not restart after quiesce; NEEDS_RESET")

    # ---- offload behaviour ---------------------------------------------------------
    def set_tx_mode(self, mode: str) -> None:
        """segment: the device cuts super-frames into wire frames itself;
        passthrough: a TAP backend gets them whole, with their header.
        Raises ConfigError for another mode, or passthrough without a TAP."""
        check_tx_mode(mode)
        rc = lib.vnic_dev_set_tx_mode(self.native, TX_MODES[mode])
        if rc < 0:
            raise ConfigError(f"TX mode {mode} needs a TAP backend, not {self.backend.describe()}")
        self.tx_mode = mode

    def set_rx_copy(self, mode: str) -> None:
        """'direct': the backend reads received frames straight into the
        guest's buffers where it can (one copy); 'bounce': always into a
        buffer of the device's first, then copied (the path before)."""
        if mode not in RX_COPY_MODES:
            raise ConfigError(f"RX copy mode {mode!r} is not one of {', '.join(RX_COPY_MODES)}")
        lib.vnic_dev_set_rx_copy(self.native, RX_COPY_MODES[mode])
        self.rx_copy = mode

    def set_rx_coalesce(self, on: bool) -> None:
        """Merge wire-size TCP segments into super-frames for guests that
        negotiated GUEST_TSO4/6 (with GUEST_CSUM and MRG_RXBUF)."""
        lib.vnic_dev_set_rx_coalesce(self.native, int(on))
        self.rx_coalesce = on

    # ---- link and statistics -----------------------------------------------------
    def set_link(self, up: bool) -> None:
        """The link up or down as asked (vnic ctl link, flaps); a change
        raises a configuration interrupt."""
        if up != self.link_up:
            self.link_up = up
            self._status_changed()

    def set_carrier(self, up: bool) -> None:
        """Whether the backend has a peer; the guest sees the link up only
        with a carrier and set_link(True)."""
        if up != self.carrier:
            self.carrier = up
            self._status_changed()

    def _status_changed(self) -> None:
        self.transport.config_changed()
        lib.vnic_irq_config_changed(self.native)

    def _use_backend_fds(self, fds: list[int]) -> None:
        check(lib.vnic_dev_set_backend(self.native, self.backend.kind, ffi.new("int[]", fds), len(fds)),
              f"backend {self.backend.describe()}", BackendError)

    PEER_DRAIN_S = 2.0        # how long a departed peer's last frames may take to be read

    def peer_changed(self, fd: int) -> None:
        """A socket backend's peer came (its fd) or went (-1): the data
        plane takes the fd and the carrier follows.  Before letting go of
        a peer, the workers get PEER_DRAIN_S to read what it sent last
        (they count a disconnect once they reach its end)."""
        if fd < 0:
            self._await_peer_end()
        with self._lock:
            if self._closed:                 # close() came first: nothing to change
                return
            self._peer_ends = self._disconnects()
            with self.quiesced():
                self._use_backend_fds([fd])
        self.set_carrier(fd >= 0)

    def _disconnects(self) -> int:
        return int(self.counters["backend_disconnects"].sum())

    def _await_peer_end(self) -> None:
        """Give the workers PEER_DRAIN_S to reach the end of what the
        departed peer sent (they count a disconnect there)."""
        deadline = time.monotonic() + self.PEER_DRAIN_S
        while self._disconnects() == self._peer_ends and time.monotonic() < deadline \
                and lib.vnic_dev_running(self.native):
            time.sleep(0.01)

    def announce(self) -> bool:
        """Ask the guest to announce itself (gratuitous ARP after a move).
        False if the driver did not negotiate GUEST_ANNOUNCE."""
        if not self.negotiated >> F.GUEST_ANNOUNCE & 1:
            return False
        self.transport.config_changed()
        lib.vnic_dev_announce(self.native)
        return True

    def filter_state(self) -> dict[str, Any]:
        """The driver's receive filter (promiscuous and multicast modes, MAC in
        force, table sizes and overflows, VLANs), the guest offloads in
        force and the last refused control command, as JSON values."""
        st = ffi.new("struct vnic_filter_state *")
        lib.vnic_dev_filter_state(self.native, st)
        state = {name: getattr(st, name) for name, _ in ffi.typeof("struct vnic_filter_state").fields}
        state["mac"] = ":".join(f"{b:02x}" for b in bytes(st.mac))
        for flag in ("promisc", "allmulti", "alluni", "nomulti", "nouni", "nobcast",
                     "unicast_overflow", "multicast_overflow", "announce_pending"):
            state[flag] = bool(state[flag])
        state["guest_offloads"] = feat.names(st.guest_offloads)
        return state

    def rss_state(self) -> dict[str, Any]:
        """Receive-side scaling as the driver set it: the hash types in force
        (names), whether the indirection table steers (RSS_CONFIG) or hashes
        are only reported (HASH_CONFIG), the table, the unclassified queue
        and the key (hex). All empty until the driver configures it."""
        st = ffi.new("struct vnic_rss_state *")
        lib.vnic_dev_rss_state(self.native, st)
        return {
            "hash_types": [name for name, bit in HASH_TYPES.items() if st.hash_types & bit],
            "steering": bool(st.steering),
            "hash_report": bool(st.report),
            "indirection_table": list(st.table)[:st.table_len] if st.steering else [],
            "unclassified_queue": st.unclassified_queue,
            "key": bytes(st.key).hex(),
        }

    def stats(self) -> dict[str, int]:
        """Device counters, plus the backend's own queue drops (frames the
        host kernel could not hand over while the guest had no buffers)."""
        return {**stats.totals(self.counters), "rx_backend_queue_drops": self.backend.kernel_drops()}

    # ---- per-flow statistics ------------------------------------------------------
    def set_flow_table_max(self, entries: int) -> None:
        """Bound of each queue pair's flow table (0: no flow statistics).
        While running, the workers take it between batches; a bound below
        the flows held empties the table.  Raises ConfigError outside
        0..LIMIT, DeviceError if the data plane refuses."""
        if not 0 <= entries <= flow_stats.LIMIT:
            raise ConfigError(f"flow table bound {entries} outside 0..{flow_stats.LIMIT}")
        with self._lock:                  # the C call must not race start/stop
            rc = lib.vnic_dev_set_flow_table_max(self.native, entries)
        check(rc, "flow table bound")
        self.flow_table_max = entries

    def flows(self, top: int | None = None, sort: str = "bytes") -> list[flow_stats.FlowRow]:
        """The flows seen (see vnic.telemetry.flows.row for the keys), largest first by
        `sort` ("bytes", "packets" or "last_seen"), the `top` first if given."""
        return flow_stats.rows(flow_stats.snapshot(self.native), top=top, sort=sort)

    def flow_table_info(self) -> dict[str, int]:
        """entries, capacity, max_entries, evictions, grows."""
        return flow_stats.info(self.native)

    def clear_flows(self) -> None:
        """Forget every flow (safe while traffic runs; counters keep counting).
        Raises DeviceError if the data plane refuses."""
        with self._lock:
            rc = lib.vnic_flows_clear(self.native)
        check(rc, "clearing flows")

    def prepare_steering(self) -> None:
        """Before the process gives up root: load what steering over fewer
        pairs needs later (a TAP's BPF programs).  A refusal is logged:
        steering then detaches the unused TAP queues instead."""
        rc = lib.vnic_dev_prepare_steering(self.native)
        if rc < 0:
            log.warning("steering programs not loaded (%s): pairs given up will have their TAP "
                        "queues detached", os.strerror(-rc))

    def close(self) -> None:
        """Stop the data plane, let the device release the backend (what would
        outlive its fds, a TAP's steering program, goes) and close it."""
        with self._lock:
            self._closed = True              # a socket backend's watcher changes nothing now
            lib.vnic_dev_stop(self.native)
            lib.vnic_dev_set_backend(self.native, lib.VNIC_BACKEND_NULL, ffi.new("int[]", [-1]), 1)
        self.backend.close()
