#!/usr/bin/env bash
# Bounded fuzzing run of every cargo-fuzz target in fuzz/ (see fuzz/README.md).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    (default: 20 s, every target)
#
# Builds the targets once (release, debug assertions and overflow checks on, ASan),
# then runs each for SECONDS_PER_TARGET from the committed seed corpus
# (fuzz/corpus/<target>, never written to: new inputs go to a scratch corpus), with
# libFuzzer's limits on memory: -rss_limit_mb=1024 and -malloc_limit_mb=64, so an
# allocation driven by an unchecked length fails the run. Prints the executions per
# target; exits non-zero if any target crashed, leaked, hung or hit a limit, after
# printing the end of its log and the path of the input that did it (replay it with
# the command printed).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-20}
shift || true
case "$secs" in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
    ;;
esac

# cargo-fuzz drives nightly-only rustc flags (-Zsanitizer, coverage options); the
# installed stable toolchain accepts them with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz missing: installing it (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
flags=(-O -a) # release, with debug assertions and overflow checks

echo "building ${#targets[@]} fuzz targets: ${targets[*]}"
start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "built in $(($(date +%s) - start)) s"

work=$(mktemp -d "${TMPDIR:-/tmp}/walship-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p fuzz/artifacts

failed=()
printf '%-14s %12s %8s %10s %8s\n' target executions exec/s corpus cov
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t" "fuzz/artifacts/$t"
    log="$work/$t.log"
    dict=()
    if [ -f "fuzz/dict/$t.dict" ]; then
        dict=(-dict="fuzz/dict/$t.dict")
    fi
    rc=0
    cargo fuzz run "${flags[@]}" "$t" "$work/corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=1024 -malloc_limit_mb=64 -timeout=25 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" "${dict[@]}" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    if [ -z "$execs" ]; then
        execs=$(sed -n 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' "$log" | tail -n 1)
    fi
    speed=$(sed -n 's/^stat::average_exec_per_sec: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    units=$(sed -n 's/^#[0-9]*[[:space:]]*DONE.*corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' "$log" | tail -n 1)
    cov=$(sed -n 's/^#[0-9]*[[:space:]]*DONE[[:space:]]*cov: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
    printf '%-14s %12s %8s %10s %8s\n' "$t" "${execs:-?}" "${speed:-?}" "${units:-?}" "${cov:-?}"
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        echo "---- $t FAILED (exit $rc); end of its log:"
        tail -n 80 "$log"
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        if [ -n "$artifact" ]; then
            echo "---- artifact: $artifact"
            echo "---- replay:   RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $t $artifact"
        fi
        echo "----"
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzzing ok: ${#targets[@]} targets, ${secs} s each"
