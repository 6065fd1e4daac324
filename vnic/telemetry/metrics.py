"""Counters for people and for monitoring: a rich table (with rates when
watching) and a Prometheus exporter on loopback.

Counter names are the device's own (Linux ethtool / virtio_net style);
Prometheus sees them as vnic_<name>_total with a `queue` label."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import REGISTRY, CollectorRegistry
from rich.console import Console, JustifyMethod
from rich.live import Live
from rich.table import Table

from .flows import FlowsResult

PerQueue = list[dict[str, int]]


def table(per_queue: PerQueue, previous: PerQueue | None = None, interval: float = 1.0,
          show_zero: bool = False) -> Table:
    """Counters per queue pair (and their rates since `previous`)."""
    t = Table(title="vnic counters", show_lines=False)
    t.add_column("counter")
    for q in range(len(per_queue)):
        t.add_column(f"pair {q}", justify="right")
        if previous:
            t.add_column("/s", justify="right", style="cyan")
    for name in per_queue[0]:
        values = [row[name] for row in per_queue]
        if not show_zero and not any(values):
            continue
        cells = []
        for q, value in enumerate(values):
            cells.append(f"{value:,}")
            if previous:
                cells.append(f"{(value - previous[q][name]) / interval:,.0f}")
        t.add_row(name, *cells)
    return t


def _size(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if n < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}P"


def _endpoint(addr: str | None, port: int) -> str:
    if addr is None:
        return "-"
    addr = f"[{addr}]" if ":" in addr and port else addr
    return f"{addr}:{port}" if port else addr


def flow_table(result: FlowsResult) -> Table:
    """`vnic stats --flows`: one row per flow, as the control socket gives them."""
    info = result["table"]
    t = Table(title=f"vnic flows: {info['entries']} held (bound {info['max_entries']} per queue pair), "
                    f"{info['evictions']} evicted")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("dir", "left"), ("proto", "left"), ("source", "left"), ("destination", "left"),
        ("packets", "right"), ("bytes", "right"), ("last seen", "right"), ("offloads", "left"))
    for name, justify in columns:
        t.add_column(name, justify=justify)
    for f in result["flows"]:
        t.add_row(f["direction"], f["protocol"], _endpoint(f["src"], f["src_port"]),
                  _endpoint(f["dst"], f["dst_port"]), f"{f['packets']:,}", _size(f["bytes"]),
                  f"{f['last_seen_ago']:.1f}s ago", ",".join(f["offloads"]) or "-")
    return t


def watch_flows(read: Callable[[], FlowsResult], interval: float = 1.0, count: int | None = None,
                console: Console | None = None) -> None:
    """Live flow table, refreshed every interval (until Ctrl-C, or `count` frames)."""
    shown = 0
    with Live(flow_table(read()), console=console, refresh_per_second=4) as live:
        while count is None or shown < count:
            time.sleep(interval)
            live.update(flow_table(read()))
            shown += 1


def watch(read: Callable[[], PerQueue], interval: float = 1.0, count: int | None = None,
          console: Console | None = None) -> None:
    """Live view, refreshed every interval (until Ctrl-C, or `count` frames)."""
    previous = read()
    shown = 0
    with Live(table(previous), console=console, refresh_per_second=4) as live:
        while count is None or shown < count:
            time.sleep(interval)
            now = read()
            live.update(table(now, previous, interval))
            previous = now
            shown += 1


class DeviceCollector:
    """Prometheus collector that reads the C counters at scrape time."""

    def __init__(self, read: Callable[[], PerQueue]):
        self.read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        """One counter family per device counter, labelled by queue pair;
        prometheus_client calls it at every scrape."""
        rows = self.read()
        for name in rows[0]:
            family = CounterMetricFamily(f"vnic_{name}", f"vnic device counter {name}", labels=["queue"])
            for q, row in enumerate(rows):
                family.add_metric([str(q)], row[name])
            yield family


def serve_metrics(read: Callable[[], PerQueue], port: int,
                  registry: CollectorRegistry = REGISTRY) -> tuple[WSGIServer, threading.Thread]:
    """Expose the counters on http://127.0.0.1:port/metrics (loopback only)."""
    from prometheus_client import start_http_server
    registry.register(DeviceCollector(read))
    return start_http_server(port, addr="127.0.0.1", registry=registry)
