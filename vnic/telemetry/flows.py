"""Per-flow statistics: the C flow tables (one per queue pair) copied into a
numpy structured array, and rows for people and tools: addresses as text,
offloads by name, ages in seconds.

A flow is one direction of a 5-tuple ("tx": guest to backend, "rx":
backend to guest).  Its packets and bytes are what the device put on the
wire or into the guest, as tx_packets/tx_bytes and rx_packets/rx_bytes
count them: a TSO super-frame counts its segments, a coalesced one counts
once.  Non-IP frames make one flow per ethertype and direction."""
from __future__ import annotations

import ipaddress
import time
from typing import Any, TypedDict

import numpy as np

from .._native import ffi, lib
from ..errors import ConfigError

_NUMPY_TYPES = {"uint8_t": "u1", "uint16_t": "<u2", "uint32_t": "<u4", "uint64_t": "<u8"}


def _dtype(ctype: str) -> np.dtype:
    """The numpy twin of a C struct of unsigned integers and arrays of them."""
    names, formats, offsets = [], [], []
    for name, field in ffi.typeof(ctype).fields:
        t = field.type
        formats.append((_NUMPY_TYPES[t.item.cname], t.length) if t.kind == "array"
                       else _NUMPY_TYPES[t.cname])
        names.append(name)
        offsets.append(field.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": ffi.sizeof(ctype)})


DTYPE = _dtype("struct vnic_flow_record")
INFO_FIELDS = [name for name, _ in ffi.typeof("struct vnic_flow_table_info").fields]
# bit -> name: "csum", "tso", ..., "csum_completed"
OFFLOADS = {bit: name.removeprefix("VNIC_FLOW_").lower()
            for bit, name in sorted(ffi.typeof("enum vnic_flow_offload").elements.items())}
DIRECTIONS = {lib.VNIC_FLOW_TX: "tx", lib.VNIC_FLOW_RX: "rx"}
DEFAULT_MAX = lib.VNIC_FLOW_TABLE_DEFAULT
LIMIT = lib.VNIC_FLOW_TABLE_LIMIT
# What flows can be sorted by (largest, or most recent, first).
SORT_FIELDS = {"bytes": "bytes", "packets": "packets", "last_seen": "last_seen_ns"}

IP_PROTOCOLS = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 51: "ah",
                58: "icmpv6", 132: "sctp"}
ETHERTYPES = {0x0806: "arp", 0x8035: "rarp", 0x88CC: "lldp", 0x888E: "eapol", 0x88F7: "ptp",
              0x8847: "mpls", 0x8863: "pppoe-discovery", 0x8864: "pppoe"}


class FlowRow(TypedDict):
    """One flow as row() gives it (and the control socket sends it)."""
    direction: str                # "tx" or "rx"
    queue_pair: int
    ip_version: int | None        # 4, 6, or None for a non-IP frame
    ethertype: int
    protocol: str                 # "tcp", "udp", ..., "ip-proto-N" or "ethertype-0xNNNN"
    protocol_number: int
    src: str | None
    dst: str | None
    src_port: int
    dst_port: int
    packets: int
    bytes: int
    offloads: list[str]           # offload_names() of the flow's offload bits
    first_seen_ago: float         # seconds
    last_seen_ago: float


class FlowsResult(TypedDict):
    """Device.flows() and the control socket's "flows" reply."""
    table: dict[str, int]         # info(): entries, capacity, max_entries, evictions, grows
    flows: list[FlowRow]


def info(native: Any) -> dict[str, int]:
    """entries, capacity (summed over queue pairs), max_entries (the bound
    of each pair's table, 0: off), evictions and grows (summed)."""
    out = ffi.new("struct vnic_flow_table_info *")
    lib.vnic_flows_info(native, out)
    return {name: int(getattr(out, name)) for name in INFO_FIELDS}


def snapshot(native: Any) -> np.ndarray:
    """Every flow held, all queue pairs, as a DTYPE array (a copy)."""
    room = info(native)["entries"] + 64       # flows may come while we copy
    while True:
        buf = ffi.new("struct vnic_flow_record[]", room)
        n: int = lib.vnic_flows_snapshot(native, buf, room)
        if n <= room:
            records: np.ndarray = np.frombuffer(ffi.buffer(buf), dtype=DTYPE, count=n).copy()
            return records
        room = n + n // 4


def _address(raw: np.ndarray, version: int) -> str | None:
    if version == 4:
        return str(ipaddress.IPv4Address(bytes(raw[12:])))      # stored v4-mapped
    if version == 6:
        return str(ipaddress.IPv6Address(bytes(raw)))
    return None


def _protocol(record: np.void) -> str:
    if record["ip_version"]:
        number = int(record["protocol"])
        return IP_PROTOCOLS.get(number, f"ip-proto-{number}")
    ethertype = int(record["ethertype"])
    return ETHERTYPES.get(ethertype, f"ethertype-{ethertype:#06x}")


def offload_names(bits: int) -> list[str]:
    """Names of the offload bits set in bits ("csum", "tso", ...)."""
    return [name for bit, name in OFFLOADS.items() if bits & bit]


def row(record: np.void, now_ns: int) -> FlowRow:
    """One flow for people and JSON."""
    version = int(record["ip_version"])
    return {
        "direction": DIRECTIONS[int(record["direction"])],
        "queue_pair": int(record["queue_pair"]),
        "ip_version": version or None,
        "ethertype": int(record["ethertype"]),
        "protocol": _protocol(record),
        "protocol_number": int(record["protocol"]),
        "src": _address(record["src_addr"], version),
        "dst": _address(record["dst_addr"], version),
        "src_port": int(record["src_port"]),
        "dst_port": int(record["dst_port"]),
        "packets": int(record["packets"]),
        "bytes": int(record["bytes"]),
        "offloads": offload_names(int(record["offloads"])),
        "first_seen_ago": max(0, now_ns - int(record["first_seen_ns"])) / 1e9,
        "last_seen_ago": max(0, now_ns - int(record["last_seen_ns"])) / 1e9,
    }


def rows(records: np.ndarray, top: int | None = None, sort: str = "bytes",
         now_ns: int | None = None) -> list[FlowRow]:
    """Flows largest first by `sort` ("bytes", "packets", or "last_seen":
    most recent first), the first `top` of them if given."""
    if sort not in SORT_FIELDS:
        raise ConfigError(f"cannot sort flows by {sort!r}: use {', '.join(SORT_FIELDS)}")
    if top is not None and top < 0:
        raise ConfigError(f"top must be at least 0, not {top}")
    # the workers' clock: CLOCK_MONOTONIC, as time.monotonic_ns() reads it on Linux
    now_ns = time.monotonic_ns() if now_ns is None else now_ns
    order = np.argsort(records[SORT_FIELDS[sort]], kind="stable")[::-1]
    return [row(records[i], now_ns) for i in order[:top]]
