#!/usr/bin/env bash
# Benchmark: one ccci-janitor pass over N unheld, young lockfiles
# (--min-age 1h), against bench/janitor-anchor.py doing open/flock/fstat/
# stat/close per file. Each side is timed as a whole process (start-up
# included), median of RUNS runs, at each N. Targets: janitor/anchor <= 0.3,
# and time growing linearly with N.
#
# Usage: bench/janitor.sh [N...]      (default: 10000 100000; RUNS=5)
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("$@")
((${#sizes[@]})) || sizes=(10000 100000)
runs=${RUNS:-5}

# cargo says where the release build is (CARGO_TARGET_DIR is honoured)
janitor=$(contrib/cargo-build-tools --release)/ccci-janitor
anchor=$PWD/bench/janitor-anchor.py
# The interpreter itself, not a version-manager shim in front of it.
python=$(python3 -c 'import sys; print(sys.executable)')

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Median wall time of `$@` in milliseconds, output discarded.
median_ms() {
    local times=() i start end
    "$@" >/dev/null 2>&1 # warm-up: page cache, dentries
    for ((i = 0; i < runs; i++)); do
        start=$(date +%s%N)
        "$@" >/dev/null 2>&1
        end=$(date +%s%N)
        times+=($(((end - start) / 1000)))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}

printf '%8s  %12s  %12s  %7s  %14s\n' files "janitor ms" "anchor ms" ratio "janitor -v ms"
declare -A fast
for n in "${sizes[@]}"; do
    dir=$tmp/locks-$n
    mkdir -m 700 "$dir"
    "$python" - "$dir" "$n" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    os.close(os.open(f"{d}/app-{i:06d}.ci.example.org.lock", os.O_CREAT | os.O_WRONLY, 0o600))
PY
    young=$("$python" "$anchor" "$dir")
    [ "$young" -eq "$n" ] || { echo "anchor saw $young young lockfiles of $n" >&2; exit 1; }
    j=$(median_ms "$janitor" --lock-dir "$dir" --min-age 1h -- true)
    a=$(median_ms "$python" "$anchor" "$dir")
    # For reference: -v must tell live from young, so it probes every file.
    v=$(median_ms "$janitor" --lock-dir "$dir" --min-age 1h -v -- true)
    fast[$n]=$j
    printf '%8s  %12s  %12s  %7s  %14s\n' "$n" "$j" "$a" "$(awk "BEGIN {printf \"%.3f\", $j / $a}")" "$v"
    rm -rf "$dir"
done
if ((${#sizes[@]} > 1)); then
    first=${sizes[0]} last=${sizes[-1]}
    awk -v a="${fast[$first]}" -v b="${fast[$last]}" -v n="$first" -v m="$last" \
        'BEGIN {printf "growth %d -> %d files: janitor time x%.2f (linear: x%.2f)\n", n, m, b / a, m / n}'
fi
