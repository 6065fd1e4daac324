"""The README's lab example boots the test guest and measures both ways."""
from __future__ import annotations

import subprocess
import sys

from tests.support.readme import block_using


def test_readme_lab_example_runs_as_written(tmp_path, qemu, image):
    block = block_using("vnic.lab.vm")
    r = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    tx, rx = (float(v) for v in r.stdout.split()[-2:])
    assert tx > 0.05 and rx > 0.05          # Gbit/s: iperf3 really ran through the NIC
