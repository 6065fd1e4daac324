#!/usr/bin/env bash
# The main job: set up (idempotent), then boot the test guest with a vnic NIC
# and run iperf3 through it, both ways.  Extra arguments go to `vnic vm`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VNIC_CACHE:-$HOME/.cache/vnic}/venv"
exec "$VENV/bin/vnic" vm --iperf 3 "$@"
