#!/usr/bin/env bash
# The sanitizer tier: the data plane built with ASan+UBSan (native/build.py
# --sanitize, into $VNIC_CACHE/sanitize), then the integration and engine
# tests (no QEMU) against that build.  Any sanitizer report aborts the test
# process, so the tier fails.  Extra arguments go to pytest.
#   bash scripts/sanitize.sh                 (after scripts/setup.sh --python)
set -euo pipefail
cd "$(dirname "$0")/.."
VNIC_CACHE="${VNIC_CACHE:-$HOME/.cache/vnic}"
PY="$VNIC_CACHE/venv/bin/python"
OUT="$VNIC_CACHE/sanitize"

echo "sanitize: building the data plane with ASan+UBSan into $OUT"
rm -rf "$OUT"
mkdir -p "$OUT"
"$PY" native/build.py --sanitize "$OUT" > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
SO=$(ls "$OUT"/vnic/_native.*.so)
[[ "$(nm -D "$SO")" == *__asan_init* ]] || { echo "sanitize: $SO has no ASan checks"; exit 1; }

# Python is not built with ASan: its runtime must be loaded first.  Python's
# own allocations never freed at exit are not ours: no leak checking.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so)"
# Reports go to files too: pytest's capture loses what a process prints as
# it aborts.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allow_user_segv_handler=1:log_path=$OUT/report"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$OUT/report"
export VNIC_NATIVE_DIR="$OUT"
"$PY" -c 'import vnic._native as n, sys; sys.exit(0 if n.__file__.startswith(sys.argv[1]) else f"sanitize: loaded {n.__file__}")' "$OUT"
echo "sanitize: integration and engine tests against the sanitized build"
rc=0
"$PY" -m pytest -q -ra -p no:cacheprovider tests/integration tests/engine "$@" || rc=$?
if compgen -G "$OUT/report.*" > /dev/null; then
    echo "sanitize: sanitizer reports:"
    cat "$OUT"/report.*
    exit 1
fi
exit $rc
