"""The README's Python API example runs as written and prints what it says."""
from __future__ import annotations

import subprocess
import sys

from tests.support.readme import block_using


def test_readme_device_example_runs_as_written(tmp_path):
    block = block_using("vnic.Device(")
    r = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    args, offered, tx_packets = r.stdout.splitlines()
    assert '"driver":"vfio-user-pci"' in args.replace(" ", "") and "/tmp/vnic-readme.sock" in args
    assert "tso4" in offered and "event_idx" not in offered     # the example's -event_idx
    assert tx_packets == "0"
    assert "Traceback" not in r.stderr
