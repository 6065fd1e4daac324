"""The benchmark harness drives the real TX/RX/coalescing paths: every frame
it posts must come out (a harness that silently dropped frames would make
the figures lie).  Speed itself is measured by `vnic bench engine`."""
from __future__ import annotations

import errno

import pytest

from vnic._native import lib


@pytest.mark.parametrize("packed", [0, 1], ids=["split", "packed"])
@pytest.mark.parametrize("size", [64, 1500, 9000])
def test_tx_path_harness_sends_every_frame(size, packed):
    assert lib.vnic_bench_tx_path(size, 64, 20, packed) > 0


@pytest.mark.parametrize("packed", [0, 1], ids=["split", "packed"])
@pytest.mark.parametrize("size", [64, 1500, 9000])
def test_rx_path_harness_delivers_every_frame(size, packed):
    # 20 rounds of 32 frames go round the 256-entry ring: the wrap is driven too
    assert lib.vnic_bench_rx_path(size, 32, 20, packed) > 0


def test_coalescing_harness_merges_every_segment():
    assert lib.vnic_bench_coalesce(44, 20) > 0


def test_harness_refuses_impossible_setups():
    assert lib.vnic_bench_rx_path(9000, 64, 1, 0) == -errno.EINVAL      # more buffers than the ring
    assert lib.vnic_bench_coalesce(100, 1) == -errno.EINVAL          # beyond 64 KiB


@pytest.mark.parametrize("rx", [0, 1])
@pytest.mark.parametrize("threads", [1, 2, 4])
def test_scaling_harness_moves_every_frame_on_every_pair(rx, threads):
    # -EIO would mean some pair's worker path lost frames
    assert lib.vnic_bench_scale(rx, 64, threads, 20) > 0


def test_scaling_harness_refuses_impossible_setups():
    assert lib.vnic_bench_scale(0, 64, 0, 1) == -errno.EINVAL
    assert lib.vnic_bench_scale(1, 64, 17, 1) == -errno.EINVAL        # beyond 16 pairs
    assert lib.vnic_bench_scale(1, 1600, 1, 1) == -errno.EINVAL       # beyond one 1536-byte buffer


@pytest.mark.parametrize("size", [64, 1500])
def test_rss_harness_hashes_and_reports_every_frame(size):
    # -EIO would mean a frame went unhashed, unreported or lost
    assert lib.vnic_bench_rx_rss_path(size, 32, 20) > 0


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_fault_harness_drops_only_while_armed(mode):
    # -EIO would mean frames went missing uncounted, or a cleared spec still dropped
    assert lib.vnic_bench_tx_faults_path(64, 64, 20, mode) > 0


def test_fault_harness_refuses_unknown_modes():
    assert lib.vnic_bench_tx_faults_path(64, 64, 20, 3) == -errno.EINVAL
