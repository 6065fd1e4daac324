#!/usr/bin/env bash
# The test suite, in two tiers:
#   bash scripts/test.sh           set up (idempotent), then the fast tier,
#                                  the sanitizer tier (scripts/sanitize.sh:
#                                  integration and engine tests on an
#                                  ASan+UBSan build), the fuzz tier
#                                  (scripts/fuzz.sh, 15 s a target), a short
#                                  soak (benchmarks/soak.py), then every test, e2e
#                                  (real QEMU, real guest kernel) included; a
#                                  test the machine cannot run fails
#                                  (VNIC_REQUIRE_ALL=1), never skips
#   bash scripts/test.sh --fast    lint (ruff), type check (mypy), unit and
#                                  engine tests: no QEMU, no guest, ~1 minute
# Extra arguments go to pytest: the fast tier's with --fast, else the full run's.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
if [ "${1:-}" = "--fast" ]; then
    fast=1
    shift
fi
if [ "$fast" = 1 ]; then
    bash scripts/setup.sh --python      # the venv and the data plane; no QEMU, no guest
else
    bash scripts/setup.sh
fi
VENV="${VNIC_CACHE:-$HOME/.cache/vnic}/venv"
PY="$VENV/bin/python"

echo "test: fast tier (ruff, mypy, unit, engine)"
"$VENV/bin/ruff" check .
"$VENV/bin/mypy"
if [ "$fast" = 1 ]; then
    exec "$PY" -m pytest -q -ra tests/unit tests/engine "$@"
fi
"$PY" -m pytest -q -ra tests/unit tests/engine
echo "test: sanitizer tier"
bash scripts/sanitize.sh
echo "test: fuzz tier (every target, bounded: seeds and regressions, then 15 s each)"
bash scripts/fuzz.sh --seconds 15
echo "test: soak, short (3 QEMU kills, 3 resets from the guest, 20 DMA remaps)"
"$PY" benchmarks/soak.py --kills 3 --resets 3 --remaps 20 --check
echo "test: full suite"
VNIC_REQUIRE_ALL=1 exec "$PY" -m pytest -ra "$@"
