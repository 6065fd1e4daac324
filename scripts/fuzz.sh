#!/usr/bin/env bash
# Coverage-guided fuzzing of everything a guest or a client can send:
# libFuzzer (clang) targets for the C data plane and the vfio-user channel
# (tests/fuzz/fuzz_*.c, built with ASan+UBSan), and an atheris target for
# the Python vfio-user session (tests/fuzz/fuzz_session.py).
#   bash scripts/fuzz.sh                      every target, 30 s each
#   bash scripts/fuzz.sh tx --seconds 3600    one target, a long campaign
#   bash scripts/fuzz.sh --runs 10000000      every target, 10 M inputs each
#   bash scripts/fuzz.sh --regress            only replay seeds and regressions
#   bash scripts/fuzz.sh --coverage [TARGET]  line coverage the corpus reaches (llvm-cov)
# Targets: virtq tx rx ctrl headers chan socket session.  Each run first replays
# its seed corpus (tests/fuzz/corpus/TARGET) and saved crashes
# (tests/fuzz/regressions/TARGET): a crash there fails at once.  New
# inputs go to $VNIC_CACHE/fuzz/corpus/TARGET; a crash, hang or sanitizer
# report is saved under $VNIC_CACHE/fuzz/crashes/TARGET/ and fails the
# run: copy it into tests/fuzz/regressions/TARGET/ once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
VNIC_CACHE="${VNIC_CACHE:-$HOME/.cache/vnic}"
PY="$VNIC_CACHE/venv/bin/python"
WORK="$VNIC_CACHE/fuzz"
CC="${FUZZ_CC:-clang-14}"
ALL=(virtq tx rx ctrl headers chan socket session)

targets=()
limit=(-max_total_time=30)
regress=0
coverage=0
while [ $# -gt 0 ]; do
    case "$1" in
        --coverage) coverage=1; shift ;;
        --seconds) limit=(-max_total_time="$2"); shift 2 ;;
        --runs) limit=(-runs="$2"); shift 2 ;;
        --regress) regress=1; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) [[ " ${ALL[*]} " == *" $1 "* ]] || { echo "fuzz: no target '$1' (${ALL[*]})" >&2; exit 2; }
           targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")

command -v "$CC" >/dev/null || { echo "fuzz: $CC not found: run scripts/setup.sh" >&2; exit 1; }
mkdir -p "$WORK/bin"

# the largest input each target reads: frames and commands up to 64 KiB
declare -A MAX_LEN=([virtq]=8192 [tx]=70000 [rx]=70000 [ctrl]=16384 [headers]=2048
                    [chan]=65536 [socket]=200000 [session]=8192)
# the files each target exists to reach, for --coverage
declare -A COVER_FILES=([virtq]="virtq.c split.c packed.c mem.c" [tx]="tx.c gso.c csum.c headers.c faults.c"
                        [rx]="rx.c gro.c rss.c toeplitz.c headers.c csum.c faults.c capture.c" [ctrl]="ctrl.c rss.c mq.c"
                        [headers]="headers.c flow_key.c rss.c toeplitz.c" [chan]="chan.c" [socket]="stream.c dgram.c")
SAN=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1)

build() {      # the data plane once, then each C target linked to it
    local lib="$WORK/bin/libvnic-fuzz.a" objs=() src
    if [ ! -f "$lib" ] || [ -n "$(find native tests/fuzz -newer "$lib" -name '*.[ch]' | head -1)" ]; then
        echo "fuzz: building the data plane with ASan+UBSan and coverage ($CC)"
        rm -rf "$WORK/obj" && mkdir -p "$WORK/obj"
        for src in native/*.c tests/fuzz/harness.c; do
            "$CC" -c -std=gnu11 -Inative "${SAN[@]}" -fsanitize=fuzzer-no-link \
                "$src" -o "$WORK/obj/$(basename "$src" .c).o"
            objs+=("$WORK/obj/$(basename "$src" .c).o")
        done
        rm -f "$lib" && ar rcs "$lib" "${objs[@]}"
        rm -f "$WORK"/bin/fuzz_*
    fi
    for t in "${targets[@]}"; do
        [ "$t" = session ] && continue
        [ -x "$WORK/bin/fuzz_$t" ] || "$CC" -std=gnu11 -Inative "${SAN[@]}" -fsanitize=fuzzer \
            "tests/fuzz/fuzz_$t.c" "$lib" -lpthread -lseccomp -o "$WORK/bin/fuzz_$t"
    done
}

# run TARGET ARGS...: the libFuzzer command line of a target
runner() {
    local t="$1"; shift
    if [ "$t" = session ]; then
        "$PY" tests/fuzz/fuzz_session.py "$@"
    else
        "$WORK/bin/fuzz_$t" "$@"
    fi
}

replay() {     # seeds and saved crashes, each input once
    local t="$1" files=()
    mapfile -t files < <(find "tests/fuzz/corpus/$t" "tests/fuzz/regressions/$t" -type f 2>/dev/null | sort)
    [ ${#files[@]} -gt 0 ] || return 0
    runner "$t" -runs=1 "${files[@]}" > "$WORK/log/$t.replay" 2>&1 || {
        tail -40 "$WORK/log/$t.replay"; echo "fuzz: $t: a seed or regression input fails"; return 1; }
    echo "fuzz: $t: ${#files[@]} seeds and regressions replayed"
}

campaign() {
    local t="$1" log="$WORK/log/$1.log"
    mkdir -p "$WORK/corpus/$t" "$WORK/crashes/$t"
    local start=$SECONDS rc=0
    runner "$t" "${limit[@]}" -max_len="${MAX_LEN[$t]}" -timeout=10 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="$WORK/crashes/$t/" \
        "$WORK/corpus/$t" "tests/fuzz/corpus/$t" > "$log" 2>&1 || rc=$?
    local runs cov msgs edges
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
    msgs=$(grep -o 'vnic-fuzz: messages: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
    edges=$(sed -n 's/.*(\([0-9]*\) inline 8-bit counters).*/\1/p' "$log" | head -1)
    echo "fuzz: $t: $runs inputs${msgs:+ ($msgs vfio-user messages)} in $((SECONDS - start)) s," \
         "coverage $cov edges${edges:+ of $edges instrumented}, $(find "$WORK/crashes/$t" -type f | wc -l) crash files, rc $rc"
    if [ "$rc" != 0 ]; then
        grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -20
        return 1
    fi
}

# Line coverage of a C target's corpus (seeds and what campaigns found):
# built apart with source-based coverage, each input replayed once.
cover() {
    local t="$1" bin="$WORK/cov/fuzz_$1" srcs=() prof="$WORK/cov/$1.profdata"
    [ "$t" = session ] && { echo "fuzz: session: coverage is the Python target's own (cov: in its log)"; return 0; }
    mkdir -p "$WORK/cov"
    "$CC" -std=gnu11 -Inative -O1 -g -fprofile-instr-generate -fcoverage-mapping -fsanitize=fuzzer \
        "tests/fuzz/fuzz_$t.c" tests/fuzz/harness.c native/*.c -lpthread -lseccomp -o "$bin"
    rm -f "$WORK/cov/$t".*.profraw
    LLVM_PROFILE_FILE="$WORK/cov/$t.%p.profraw" "$bin" -runs=0 "$WORK/corpus/$t" "tests/fuzz/corpus/$t" \
        > "$WORK/log/$t.cov" 2>&1 || true
    llvm-profdata-14 merge -sparse "$WORK/cov/$t".*.profraw -o "$prof"
    read -ra srcs <<< "${COVER_FILES[$t]}"
    echo "fuzz: $t: lines of its files that its corpus runs:"
    llvm-cov-14 report "$bin" -instr-profile="$prof" "${srcs[@]/#/native/}" \
        | awk '$1 ~ /\.c$/ || $1 == "TOTAL" {printf "    %-10s %5s lines, %s run\n", $1, $8, $10}'
}

mkdir -p "$WORK/log"
if [ "$coverage" = 1 ]; then
    for t in "${targets[@]}"; do cover "$t"; done
    exit 0
fi
build
failed=0
for t in "${targets[@]}"; do
    replay "$t" || { failed=1; continue; }
    [ "$regress" = 1 ] || campaign "$t" || failed=1
done
exit $failed
