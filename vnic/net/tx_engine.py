"""The C TX offload engine driven directly, without a guest or a queue: for
tests (scapy as the oracle) and benchmarks.  Production traffic reaches the
same C code from the worker threads."""
from __future__ import annotations

import errno
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .._native import ffi, lib
from ..errors import DeviceError
from ..telemetry import counters as stats
from ..virtio.features import F, mask

NET_HDR = struct.Struct("<BBHHHHH")    # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers
NEEDS_CSUM: int = lib.VNIC_HDR_F_NEEDS_CSUM
GSO_NONE, GSO_TCPV4, GSO_UDP = lib.VNIC_GSO_NONE, lib.VNIC_GSO_TCPV4, lib.VNIC_GSO_UDP
GSO_TCPV6, GSO_UDP_L4, GSO_ECN = lib.VNIC_GSO_TCPV6, lib.VNIC_GSO_UDP_L4, lib.VNIC_GSO_ECN

ALL_TX_OFFLOADS = frozenset({F.CSUM, F.HOST_TSO4, F.HOST_TSO6, F.HOST_ECN, F.HOST_UFO, F.HOST_USO})
_DROP = "VNIC_TX_DROP_"
# enum vnic_tx_drop's values to reason names, as the tx_drops_<reason> counters spell them
DROP_REASONS: dict[int, str] = {getattr(lib, n): n.removeprefix(_DROP).lower() for n in sorted(dir(lib))
                                if n.startswith(_DROP) and n != _DROP + "COUNT"}


@dataclass
class NetHdr:
    """A struct virtio_net_hdr as a guest puts it in front of a TX frame
    (num_buffers always 0)."""
    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def pack(self) -> bytes:
        """The header as the 12 little-endian bytes the guest writes."""
        return NET_HDR.pack(self.flags, self.gso_type, self.hdr_len, self.gso_size,
                            self.csum_start, self.csum_offset, 0)


class TxDropped(DeviceError):
    """The engine refused the frame; reason names the drop counter."""

    def __init__(self, reason: str):
        super().__init__(errno.EINVAL, f"frame dropped: {reason}")
        self.reason = reason


class TxEngine:
    """The C TX offload engine on its own, with features negotiated (VERSION_1
    always); run() returns what a guest TX frame becomes on the wire.
    max_frames bounds the wire frames one run may produce."""

    def __init__(self, features: Iterable[int] = ALL_TX_OFFLOADS, max_frames: int = 1024):
        self._engine = ffi.gc(lib.vnic_tx_engine_new(mask(features) | 1 << F.VERSION_1),
                              lib.vnic_tx_engine_free)
        self._stats = ffi.new("struct vnic_queue_stats *")
        self._max = max_frames
        self._out = ffi.new("uint8_t[]", max_frames * 1600 + 70000)
        self._lens = ffi.new("uint32_t[]", max_frames)

    def counters(self) -> dict[str, int]:
        """The engine's counters so far, named as the device's."""
        raw = np.frombuffer(ffi.buffer(self._stats), dtype=stats.DTYPE)
        return stats.totals(raw)

    def run(self, hdr: NetHdr, frame: bytes, cuts: Sequence[int] = (), repeat: int = 1,
            keep_output: bool = True) -> list[bytes]:
        """Frames the device would put on the wire for one guest TX frame,
        the frame split into guest buffers at `cuts`, run `repeat` times (a
        benchmark); keep_output=False returns [].  Raises TxDropped, a
        DeviceError, if the engine drops the frame."""
        pkt = hdr.pack() + frame
        cut_arr = ffi.new("uint32_t[]", list(cuts)) if cuts else ffi.NULL
        out = self._out if keep_output else ffi.NULL
        n: int = lib.vnic_tx_engine_run(self._engine, pkt, len(pkt), cut_arr, len(cuts), out,
                                   len(self._out), self._lens, self._max, repeat, self._stats)
        if n < 0:
            raise TxDropped(DROP_REASONS.get(-n, str(-n)))
        if not keep_output:
            return []
        frames: list[bytes] = []
        pos = 0
        for i in range(n):
            frames.append(bytes(ffi.buffer(self._out + pos, self._lens[i])))
            pos += self._lens[i]
        return frames
