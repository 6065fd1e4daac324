#!/usr/bin/env bash
# The test suite: set up (idempotent), then run every test, the e2e ones
# (real QEMU, real guest kernel) included.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VNIC_CACHE:-$HOME/.cache/vnic}/venv"
exec "$VENV/bin/python" -m pytest -ra "$@"
