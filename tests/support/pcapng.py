"""Reading vnic's capture files with tools nobody here wrote: tshark for
what each packet block says (direction, queue, comment, lengths, checksum
verdicts) and scapy for the frames' bytes."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from scapy.utils import rdpcap

INBOUND, OUTBOUND = 1, 2          # pcapng epb_flags direction: toward the guest, from it
FIELDS = ("frame.packet_flags_direction", "frame.interface_queue", "frame.len", "frame.cap_len",
          "frame.comment", "frame.interface_name", "ip.checksum.status", "tcp.checksum.status",
          "udp.checksum.status")
CHECKSUM_GOOD = "1"               # tshark's *.checksum.status for a verified checksum


@dataclass
class Packet:
    direction: int
    queue: int
    length: int
    captured: int
    comment: str
    interface: str
    checksums: tuple[str, ...]     # the ip, tcp and udp statuses tshark gave (empty: absent)
    data: bytes


def read(path: str | Path) -> list[Packet]:
    """Every packet of a pcapng file as tshark and scapy see it; fails the
    test if tshark cannot read it."""
    out = subprocess.run(["tshark", "-r", str(path), "-o", "ip.check_checksum:TRUE",
                          "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
                          "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f",
                          *[a for f in FIELDS for a in ("-e", f)]],
                         capture_output=True, text=True)
    assert out.returncode == 0, f"tshark cannot read {path}: {out.stderr}"
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    frames = rdpcap(str(path)) if rows else []
    assert len(frames) == len(rows), "tshark and scapy disagree on the packet count"
    return [Packet(int(r[0], 16) & 3, int(r[1] or -1), int(r[2]), int(r[3]), r[4], r[5],
                   tuple(s for s in r[6:9] if s), bytes(f)) for r, f in zip(rows, frames, strict=True)]


def directions(packets: list[Packet]) -> tuple[int, int]:
    """(inbound, outbound) packet counts."""
    return (sum(p.direction == INBOUND for p in packets), sum(p.direction == OUTBOUND for p in packets))
