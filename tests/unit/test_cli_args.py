"""Bad command-line values are refused by the parser (exit 2, a clear message),
before anything boots: `iperf3 -t 0` would run until the guest timed out."""
from __future__ import annotations

import pytest

from vnic.cli import build_parser


@pytest.mark.parametrize("argv", [
    ["vm", "--iperf", "0"],
    ["vm", "--iperf", "-3"],
    ["bench", "iperf", "--seconds", "0"],
    ["bench", "offloads", "--rounds", "0"],
    ["bench", "offloads", "--seconds", "five"],
])
def test_durations_and_counts_below_one_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "must be at least 1" in err or "not a whole number" in err


def test_unknown_tx_mode_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["bench", "offloads", "--tx-mode", "whole"])
    assert exc.value.code == 2
    assert "invalid choice: 'whole'" in capsys.readouterr().err


def test_offloads_bench_defaults():
    args = build_parser().parse_args(["bench", "offloads"])
    assert (args.seconds, args.rounds, args.builtin, args.tx_mode) == (5, 3, True, "segment")
    assert build_parser().parse_args(["bench", "offloads", "--tx-mode", "passthrough"]).tx_mode == "passthrough"
    assert build_parser().parse_args(["bench", "offloads", "--no-builtin"]).builtin is False


def test_ctl_refuses_a_bad_gro_value_before_calling_the_socket(tmp_path, capsys):
    from vnic.cli import main
    rc = main(["ctl", "--control", str(tmp_path / "absent.ctl"), "mode", "--tap-gro", "soon"])
    assert rc == 1
    assert "--tap-gro 'soon'" in capsys.readouterr().err


def test_queues_on_serve_vm_and_bench_iperf():
    p = build_parser()
    assert p.parse_args(["serve", "--socket", "s"]).queues == 1
    assert p.parse_args(["serve", "--socket", "s", "--queues", "16"]).queues == 16
    vm = p.parse_args(["vm", "--smp", "2"])
    assert (vm.smp, vm.queues) == (2, None)                 # None: as many pairs as vCPUs
    b = p.parse_args(["bench", "iperf", "--queues", "2", "-P", "4"])
    assert (b.queues, b.smp, b.parallel) == (2, None, 4)


@pytest.mark.parametrize("bad", ["0", "17", "-1", "two"])
def test_a_bad_queue_count_is_refused_by_the_parser(bad, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--socket", "s", "--queues", bad])
    assert "queue pair count, 1 to 16" in capsys.readouterr().err
