"""Counters from the outside: `vnic serve --control --metrics-port` as a user
starts it, read with `vnic stats` (table, JSON, per queue) and scraped by
Prometheus' text format on loopback."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from rich.console import Console

from vnic.telemetry.metrics import table

VNIC = [sys.executable, "-m", "vnic.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    port = free_port()
    ctl = tmp_path / "ctl"
    proc = subprocess.Popen(VNIC + ["serve", "--socket", str(tmp_path / "sock"), "--backend", "null",
                                    "--control", str(ctl), "--metrics-port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not ctl.exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    yield ctl, port
    proc.terminate()
    assert proc.wait(timeout=20) == 0


def scrape(port: int) -> str:
    deadline = time.monotonic() + 10
    while True:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_metrics_endpoint_scrapes(served):
    _, port = served
    text = scrape(port)
    assert 'vnic_tx_packets_total{queue="0"} 0.0' in text
    assert 'vnic_rx_coalesced_packets_total{queue="0"}' in text


def test_vnic_stats_json_and_table(served):
    ctl, _ = served
    r = subprocess.run(VNIC + ["stats", "--control", str(ctl), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    counters = json.loads(r.stdout)
    assert counters["tx_packets"] == 0 and "rx_csum_valid" in counters
    r = subprocess.run(VNIC + ["stats", "--control", str(ctl), "--json", "--per-queue"],
                       capture_output=True, text=True)
    assert len(json.loads(r.stdout)) == 1
    r = subprocess.run(VNIC + ["stats", "--control", str(ctl), "--all"], capture_output=True, text=True)
    assert r.returncode == 0 and "tx_tso_segments" in r.stdout


def test_table_shows_rates():
    before = [{"rx_packets": 100, "tx_packets": 0}]
    after = [{"rx_packets": 350, "tx_packets": 0}]
    console = Console(record=True, width=100)
    console.print(table(after, before, interval=0.5))
    text = console.export_text()
    assert "350" in text and "500" in text          # 250 packets in 0.5 s
    assert "tx_packets" not in text                 # zero counters are hidden


def test_stats_against_a_missing_socket_is_a_clear_error(tmp_path):
    r = subprocess.run(VNIC + ["stats", "--control", str(tmp_path / "nothing")], capture_output=True, text=True)
    assert r.returncode == 1 and "nothing" in r.stderr
