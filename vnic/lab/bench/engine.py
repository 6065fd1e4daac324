"""`vnic bench engine`: the C data plane measured on its own, against
baselines taken in the same run.

- TSO: 64 KiB TCP super-frames (1448-byte MSS) segmented with every
  checksum computed, into the null sink, in GB/s of payload, as a ratio to
  memcpy of the same bytes (the floor any device that touches each byte
  once must pay).
- TX path: frames posted on a TX virtqueue in batches of 64, through the
  queue engine to the null backend, in ns per frame; on a split ring (the
  `tx_ns_*` keys) and on a packed one (`packed_tx_ns_*`), interleaved.
- RX path: frames from the benchmark source into posted 1536-byte
  mergeable buffers, batches of 64, in ns per frame; split and packed
  likewise.  The source's read lands them in the guest's buffers (one
  copy, as the TAP's readv() does); `rx_copies_per_byte_1500` counts the
  copies each delivered byte took, and `rx_1500_to_goal` is the 1500-byte
  cost over (1500-byte memcpy + the 64-byte frame's cost): the goal is at
  most 1.2.  `rx_bounce_ns_per_pkt_*`: the same frames through the bounce
  buffer (the path before one-copy receive), interleaved with it.
- RX coalescing: 44 segments of one TCP flow merged into a super-frame
  built in 4 KiB mergeable buffers, GB/s of payload against memcpy;
  `coalesce_bounce_to_memcpy`: the same through the bounce buffer and the
  flow's own buffer (three copies), interleaved with it;
  `coalesce_floor_to_memcpy`: only the payload's memcpy into the same
  guest buffers, going round the same 1 MiB ring (the most any one-copy
  path could reach: the ring does not stay in this machine's L2);
  `coalesce_copies_per_byte` as above.
- Scaling: the TX and RX paths of one device on 2 queue pairs driven by 2
  threads at once, against 1 pair and 1 thread, frames per second of all
  of them together (64- and 1500-byte frames), as the ratio 2 to 1; on a
  2-core machine the other processes running take from it.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from vnic._native import lib
from vnic.net.tx_engine import GSO_TCPV4, NEEDS_CSUM, NetHdr, TxEngine

SUPERFRAME = 64 * 1024
MSS = 1448
PAGE = 4096


def best_of(fn, tries: int = 5) -> float:
    """Fastest of a few runs: the least disturbed by a noisy machine."""
    return min(fn() for _ in range(tries))


def memcpy_gbps(size: int = SUPERFRAME, repeat: int = 4000) -> float:
    """numpy copies of size-byte blocks, in GB/s: the best of five runs.
    Source and destination lie half a page apart modulo the page, the
    placement memcpy runs fastest at: where two buffers of their own land
    would move the baseline by a quarter from run to run (4 KiB aliasing
    between loads and stores)."""
    room = np.zeros(2 * size + 2 * PAGE, dtype=np.uint8)
    start = -room.ctypes.data % PAGE
    src = room[start:start + size]
    src[:] = np.frombuffer(np.random.default_rng(1).bytes(size), dtype=np.uint8)
    at = start + size + PAGE // 2
    dst = room[at:at + size]

    def run() -> float:
        t = time.perf_counter()
        for _ in range(repeat):
            np.copyto(dst, src)
        return time.perf_counter() - t
    return size * repeat / best_of(run) / 1e9


def tso_gbps(repeat: int = 4000) -> float:
    """TSO of a 64 KiB TCP super-frame into 1448-byte segments with their
    checksums (output not kept), in GB/s of payload: the best of five runs."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    payload = np.random.default_rng(2).bytes(SUPERFRAME - 54)
    frame = bytes(Ether(src="52:54:00:00:00:01", dst="52:54:00:00:00:02")
                  / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(flags="PA") / payload)
    hdr = NetHdr(NEEDS_CSUM, GSO_TCPV4, 54, MSS, 34, 16)
    cuts = list(range(4096 - 12, len(frame), 4096))        # guest pages
    engine = TxEngine()

    def run() -> float:
        t = time.perf_counter()
        engine.run(hdr, frame, cuts, repeat=repeat, keep_output=False)
        return time.perf_counter() - t
    return len(payload) * repeat / best_of(run) / 1e9


def path_ns_per_pkt(bench, size: int, *layout: int, batch: int = 64, rounds: int = 20000) -> float:
    """ns per frame of a C path benchmark (lib.vnic_bench_tx_path or rx_path,
    layout 0 split, 1 packed), the best of five runs. Raises RuntimeError
    if it fails."""
    ns = best_of(lambda: bench(size, batch, rounds, *layout))
    if ns < 0:
        raise RuntimeError(f"{bench.__name__} failed ({ns})")
    return ns


def layouts_ns_per_pkt(bench, size: int, batch: int = 64, rounds: int = 20000) -> tuple[float, float]:
    """(split, packed) ns per frame, runs of the two interleaved so that the
    machine's noise falls on both alike: the best of five each. Raises
    RuntimeError if a run fails."""
    best = [float("inf"), float("inf")]
    for _ in range(5):
        for packed in (0, 1):
            ns = bench(size, batch, rounds, packed)
            if ns < 0:
                raise RuntimeError(f"{bench.__name__} failed on the {('split', 'packed')[packed]} ring ({ns})")
            best[packed] = min(best[packed], ns)
    return best[0], best[1]


def bounce_ns_per_pkt(size: int, batch: int = 64, rounds: int = 20000) -> float:
    """ns per frame of the RX path through the bounce buffer (read there,
    then copied into the guest's buffers: the path before one-copy
    receive), runs interleaved with the one-copy path's so both see the
    same noise: the best of five. Raises RuntimeError if a run fails."""
    best = float("inf")
    for _ in range(5):
        ns = lib.vnic_bench_rx_bounce_path(size, batch, rounds)
        if ns < 0 or lib.vnic_bench_rx_path(size, batch, rounds, 0) < 0:
            raise RuntimeError(f"RX bounce benchmark failed ({ns})")
        best = min(best, ns)
    return best


def rss_ns_per_pkt(size: int = 64) -> float:
    """What RSS adds to the RX path per frame (hash, table, hash header):
    the RX path with it minus without, both measured here, interleaved
    (best of five each). Raises RuntimeError if a benchmark fails."""
    with_rss = path_ns_per_pkt(lib.vnic_bench_rx_rss_path, size)
    plain = path_ns_per_pkt(lib.vnic_bench_rx_path, size, 0)
    return max(0.0, with_rss - plain)


def capture_ns_per_pkt(size: int = 64) -> float:
    """What a wire capture adds to the TX path per frame (the copy into the
    ring, its writer thread writing pcapng to /dev/null beside it): the
    path with it minus without, interleaved, best of five each. Raises
    RuntimeError if a benchmark fails."""
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        best = [float("inf"), float("inf")]
        for _ in range(5):
            for i, ns in enumerate((lib.vnic_bench_tx_path(size, 64, 20000, 0),
                                    lib.vnic_bench_tx_capture_path(size, 64, 20000, fd))):
                if ns < 0:
                    raise RuntimeError(f"capture benchmark failed ({ns})")
                best[i] = min(best[i], ns)
    finally:
        os.close(fd)
    return max(0.0, best[1] - best[0])


def faults_ns_per_pkt(size: int = 64) -> tuple[float, float]:
    """(what 1 % seeded drop adds to the TX path per frame, the cleared path
    over the never-faulted one): interleaved, best of five each. Raises
    RuntimeError if a benchmark fails."""
    best = [float("inf")] * 3
    for _ in range(5):
        for mode in range(3):
            ns = lib.vnic_bench_tx_faults_path(size, 64, 20000, mode)
            if ns < 0:
                raise RuntimeError(f"fault benchmark failed in mode {mode} ({ns})")
            best[mode] = min(best[mode], ns)
    return max(0.0, best[1] - best[0]), best[2] / best[0]


def coalesce_gbps(segs: int = 44, rounds: int = 5000) -> tuple[float, float, float]:
    """Receive coalescing of segs segments into one super-frame, in GB/s of
    payload: (built in the guest's buffers, built in the bounce path's own
    buffer, the copy floor: only the payload's memcpy into those guest
    buffers), runs interleaved, the best of five each. Raises RuntimeError
    if a benchmark fails."""
    benches = (lib.vnic_bench_coalesce, lib.vnic_bench_coalesce_bounce, lib.vnic_bench_coalesce_floor)
    best = [float("inf")] * len(benches)
    for _ in range(5):
        for i, bench in enumerate(benches):
            ns = bench(segs, rounds)
            if ns < 0:
                raise RuntimeError(f"{bench.__name__} failed ({ns})")
            best[i] = min(best[i], ns)
    direct, bounce, floor = (segs * MSS / ns for ns in best)
    return direct, bounce, floor


def rx_copies(size: int, coalescing: bool) -> float:
    """Copies per byte delivered (1.0: straight from the read into the
    guest's buffers). Raises RuntimeError if the benchmark fails."""
    copies = lib.vnic_bench_rx_copies(size, int(coalescing))
    if copies < 0:
        raise RuntimeError(f"copy-count benchmark failed ({copies})")
    return copies


def scale_ratio(rx: bool, size: int, rounds: int = 4000) -> float:
    """Frames per second with 2 threads on 2 pairs over 1 on 1, the best of
    five runs each. Raises RuntimeError if the benchmark fails."""
    def rate(threads: int) -> float:
        fps = max(lib.vnic_bench_scale(int(rx), size, threads, rounds) for _ in range(5))
        if fps < 0:
            raise RuntimeError(f"scaling benchmark failed ({fps})")
        return float(fps)
    one = rate(1)
    return rate(2) / one


def _step(log, what: str, measure):
    """measure() with a progress line before and its time after."""
    t0 = time.monotonic()
    log(f"bench: {what} ...")
    value = measure()
    log(f"bench:   done in {time.monotonic() - t0:.1f} s")
    return value


def run(log=lambda *_: None) -> dict:
    """Every measurement and its ratio to memcpy, as JSON values; log(line)
    says what is being measured as it goes."""
    memcpy = _step(log, "memcpy of 64 KiB blocks (the baseline)", memcpy_gbps)
    tso = _step(log, "TSO of 64 KiB super-frames", tso_gbps)
    coalesce, coalesce_bounce, coalesce_floor = _step(
        log, "receive coalescing, in guest buffers, through the bounce buffer, its copy floor", coalesce_gbps)
    paths = _step(log, "TX and RX paths, split and packed rings, 64 and 1500 bytes", lambda: {
        f"{d}_ns_per_pkt_{size}": layouts_ns_per_pkt(bench, size)
        for d, bench in (("tx", lib.vnic_bench_tx_path), ("rx", lib.vnic_bench_rx_path)) for size in (64, 1500)})
    bounce = _step(log, "RX through the bounce buffer (the path before one-copy), 64 and 1500 bytes",
                   lambda: {size: bounce_ns_per_pkt(size) for size in (64, 1500)})
    copies = _step(log, "copies per received byte", lambda: (rx_copies(1500, False), rx_copies(0, True)))
    scale_tx, scale_rx = _step(log, "scaling, 2 worker threads on 2 pairs over 1 on 1", lambda: (
        min(scale_ratio(False, 64), scale_ratio(False, 1500)),
        min(scale_ratio(True, 64), scale_ratio(True, 1500))))
    rss = _step(log, "RSS hashing and steering", rss_ns_per_pkt)
    capture = _step(log, "wire capture", capture_ns_per_pkt)
    faults, cleared = _step(log, "fault injection, armed and cleared", faults_ns_per_pkt)
    return {
        "memcpy_gbps": round(memcpy, 2),
        "tso_gbps": round(tso, 2),
        "tso_to_memcpy": round(tso / memcpy, 3),
        **{key: round(split, 1) for key, (split, _) in paths.items()},
        **{f"packed_{key}": round(packed, 1) for key, (_, packed) in paths.items()},
        "coalesce_gbps": round(coalesce, 2),
        "coalesce_to_memcpy": round(coalesce / memcpy, 3),
        "coalesce_bounce_to_memcpy": round(coalesce_bounce / memcpy, 3),
        "coalesce_floor_to_memcpy": round(coalesce_floor / memcpy, 3),
        "rx_bounce_ns_per_pkt_64": round(bounce[64], 1),
        "rx_bounce_ns_per_pkt_1500": round(bounce[1500], 1),
        "rx_copies_per_byte_1500": round(copies[0], 3),
        "coalesce_copies_per_byte": round(copies[1], 3),
        "rx_1500_to_goal": round(paths["rx_ns_per_pkt_1500"][0] /
                                 (1500 / memcpy + paths["rx_ns_per_pkt_64"][0]), 3),
        "scale_tx_2q_to_1q": round(scale_tx, 2),
        "scale_rx_2q_to_1q": round(scale_rx, 2),
        "rss_ns_per_pkt": round(rss, 1),
        "capture_ns_per_pkt": round(capture, 1),
        "faults_ns_per_pkt": round(faults, 1),
        "faults_cleared_to_plain": round(cleared, 3),
        "units": "GB/s (10^9 bytes), ns per frame, scaling as frames/s ratios (the smaller of 64 and 1500 bytes)",
    }


def table(res: dict):
    """The results as a rich table: what was measured, the figure, and what
    it is against."""
    from rich.table import Table
    t = Table(title="vnic bench engine (the C data plane alone, one run)")
    t.add_column("measurement")
    t.add_column("figure (split ring)", justify="right")
    t.add_column("packed ring", justify="right")
    t.add_column("unit, against")
    t.add_row("memcpy, 64 KiB blocks", f"{res['memcpy_gbps']:.2f}", "", "GB/s, the baseline")
    t.add_row("TSO 64 KiB -> 1448-byte segments + csums", f"{res['tso_gbps']:.2f}", "",
              f"GB/s = {res['tso_to_memcpy']:.2f} x memcpy")
    for d in ("tx", "rx"):
        for size in (64, 1500):
            key = f"{d}_ns_per_pkt_{size}"
            t.add_row(f"{d.upper()} path, {size}-byte frames, batch 64", f"{res[key]:.1f}",
                      f"{res['packed_' + key]:.1f}", "ns/frame")
    t.add_row("RX coalescing, 44 x 1448-byte segments", f"{res['coalesce_gbps']:.2f}", "",
              f"GB/s = {res['coalesce_to_memcpy']:.2f} x memcpy")
    t.add_row("  the same through the bounce buffer", "", "",
              f"{res['coalesce_bounce_to_memcpy']:.2f} x memcpy")
    t.add_row("  its copy floor: the payload's memcpy into those buffers", "", "",
              f"{res['coalesce_floor_to_memcpy']:.2f} x memcpy")
    t.add_row("RX through the bounce buffer, 64 B / 1500 B",
              f"{res['rx_bounce_ns_per_pkt_64']:.1f} / {res['rx_bounce_ns_per_pkt_1500']:.1f}", "",
              "ns/frame, the path before one-copy receive")
    t.add_row("RX 1500 B / (memcpy 1500 B + RX 64 B)", f"{res['rx_1500_to_goal']:.2f}", "",
              "x, the goal at most 1.2")
    t.add_row("copies per received byte, 1500 B", f"{res['rx_copies_per_byte_1500']:.2f}", "",
              "1 = straight into guest buffers")
    t.add_row("copies per coalesced byte", f"{res['coalesce_copies_per_byte']:.2f}", "", "")
    t.add_row("TX, 2 threads on 2 pairs / 1 on 1", f"{res['scale_tx_2q_to_1q']:.2f}", "", "x frames/s")
    t.add_row("RX, 2 threads on 2 pairs / 1 on 1", f"{res['scale_rx_2q_to_1q']:.2f}", "", "x frames/s")
    t.add_row("RSS hash + table + hash header, 64 B", f"{res['rss_ns_per_pkt']:.1f}", "", "ns/frame added")
    t.add_row("wire capture (ring + pcapng writer), 64 B", f"{res['capture_ns_per_pkt']:.1f}", "",
              "ns/frame added")
    t.add_row("faults armed (1 % drop, seeded), 64 B", f"{res['faults_ns_per_pkt']:.1f}", "", "ns/frame added")
    t.add_row("TX path after faults were cleared", f"{res['faults_cleared_to_plain']:.2f}", "",
              "x never-faulted ns/frame")
    return t


def main(as_json: bool = False) -> int:
    """Run with progress lines, then print a table (JSON only, with
    as_json); returns the exit status, 0."""
    res = run(log=(lambda *_: None) if as_json else print)
    if as_json:
        print(json.dumps(res, indent=2))
        return 0
    from rich.console import Console
    Console(width=None if sys.stdout.isatty() else 120).print(table(res))   # piped: rows kept whole
    return 0
