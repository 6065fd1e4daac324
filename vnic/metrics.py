"""Counters for people and for monitoring: a rich table (with rates when
watching) and a Prometheus exporter on loopback.

Counter names are the device's own (Linux ethtool / virtio_net style);
Prometheus sees them as vnic_<name>_total with a `queue` label."""
from __future__ import annotations

import time
from typing import Callable

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import REGISTRY, CollectorRegistry
from rich.console import Console
from rich.live import Live
from rich.table import Table

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

    def collect(self):
        rows = self.read()
        for name in rows[0]:
            family = CounterMetricFamily(f"vnic_{name}", f"vnic device counter {name}", labels=["queue"])
            for q, row in enumerate(rows):
                family.add_metric([str(q)], row[name])
            yield family


def serve_metrics(read: Callable[[], PerQueue], port: int,
                  registry: CollectorRegistry = REGISTRY):
    """Expose the counters on http://127.0.0.1:port/metrics (loopback only)."""
    from prometheus_client import start_http_server
    registry.register(DeviceCollector(read))
    return start_http_server(port, addr="127.0.0.1", registry=registry)
