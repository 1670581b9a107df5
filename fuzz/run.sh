#!/usr/bin/env bash
# Builds the fuzz targets once (cargo-fuzz: address sanitizer, optimized, with debug
# assertions and overflow checks, -O -a) and runs each for a bounded time, two at a time
# (CI has 2 cores). A crash stops nothing else: every target runs, then the script fails
# naming each target that crashed and where its reproducer is
# (fuzz/artifacts/<target>/); rerun one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz -O -a <target> fuzz/artifacts/<target>/<file>
#
# usage: fuzz/run.sh [SECONDS per target, default 30] [target...]
# The seeds in fuzz/corpus/<target>/ (written by fuzz/seeds.py) are copied to a scratch
# corpus, so a run never grows the committed folders.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
shift || true
export PATH="$HOME/.cargo/bin:$PATH"
# cargo-fuzz needs nightly-only flags (-Zsanitizer); the stable toolchain accepts them
# with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1
jobs=${FUZZ_JOBS:-2}

targets=("$@")
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir .)
fi

# Inputs the formats need: a header plus a few records. Bigger inputs only slow the
# search down; the readers' own caps are what keeps large lengths harmless.
max_len() {
    case $1 in
    tar | mongo_archive | rdb | clickhouse_native) echo 16384 ;;
    config | manifest) echo 8192 ;;
    *) echo 256 ;;
    esac
}

echo "fuzz: building ${targets[*]}" >&2
t0=$SECONDS
if (($# == 0)); then
    build=(cargo fuzz build --fuzz-dir . -O -a)
else
    build=(false)
fi
# One cargo invocation builds every target (the crate once, the links in parallel).
if ! "${build[@]}" >build.log 2>&1; then
    if (($# == 0)); then
        cat build.log >&2
        exit 1
    fi
    for t in "${targets[@]}"; do
        cargo fuzz build --fuzz-dir . -O -a "$t" >>build.log 2>&1 || { cat build.log >&2; exit 1; }
    done
fi
echo "fuzz: built in $((SECONDS - t0)) s" >&2

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
run_one() {
    local t=$1
    mkdir -p "$scratch/corpus/$t" "artifacts/$t" "$scratch/files"
    cp corpus/"$t"/* "$scratch/corpus/$t/" 2>/dev/null || true
    # -rss_limit_mb: any input that makes a reader allocate beyond this is a finding
    # (the readers cap lengths read from input); -timeout: one input may not spin.
    if BACKUP_FUZZ_SCRATCH="$scratch/files" cargo fuzz run --fuzz-dir . -O -a "$t" \
        "$scratch/corpus/$t" -- \
        -max_total_time="$secs" -max_len="$(max_len "$t")" -rss_limit_mb=1024 \
        -timeout=10 -artifact_prefix="artifacts/$t/" -print_final_stats=1 \
        >"$scratch/$t.log" 2>&1; then
        echo "fuzz: $t ok: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$scratch/$t.log" | grep -o '[0-9]*$') inputs in ${secs} s" >&2
    else
        echo "fuzz: $t FAILED; reproducer in fuzz/artifacts/$t/" >&2
        grep -a -E 'panicked|ERROR|SUMMARY|Test unit written' "$scratch/$t.log" | head -8 >&2
        touch "$scratch/failed-$t"
    fi
}

running=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

failed=()
for f in "$scratch"/failed-*; do
    [ -e "$f" ] && failed+=("${f##*/failed-}")
done
if ((${#failed[@]})); then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${secs} s each, no crash" >&2
