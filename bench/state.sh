#!/bin/sh
# Cost of one `ccci-state incr` against the anchor: the same locked,
# crash-safe increment written in shell (flock(1) on the directory, read,
# write a temporary file, sync, mv). Both run N times in one private
# directory; the ratio is ccci-state's time over the anchor's.
#
#   bench/state.sh [N]        (default N=300; builds the release binary)
set -eu
n=${1:-300}
root=$(cd "$(dirname "$0")/.." && pwd)
# cargo says where the release build is (CARGO_TARGET_DIR is honoured)
bin=$("$root/contrib/cargo-build-tools" --release)/ccci-state
command -v flock >/dev/null || { echo "bench/state.sh: flock(1) is needed (util-linux)" >&2; exit 125; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 700 "$work"
export CCCI_STATE_DIR="$work/state"
eval "$("$bin" --run-id bench env)"
mkdir -m 700 "$work/anchor"

now() { date +%s%N; }

t0=$(now)
i=0
while [ "$i" -lt "$n" ]; do
    "$bin" incr deploys >/dev/null
    i=$((i + 1))
done
t1=$(now)
i=0
while [ "$i" -lt "$n" ]; do
    flock "$work/anchor" sh -c '
        f=$1/count; v=$(cat "$f" 2>/dev/null || echo 0)
        echo $((v + 1)) > "$f.tmp" && sync "$f.tmp" && mv "$f.tmp" "$f"' sh "$work/anchor"
    i=$((i + 1))
done
t2=$(now)

[ "$("$bin" get deploys)" = "$n" ] || { echo "bench/state.sh: wrong count" >&2; exit 1; }
[ "$(cat "$work/anchor/count")" = "$n" ] || { echo "bench/state.sh: anchor miscounted" >&2; exit 1; }
ours=$(( (t1 - t0) / n / 1000 ))
anchor=$(( (t2 - t1) / n / 1000 ))
printf '%-28s %10s %10s %7s\n' "operation (N=$n)" "ccci-state" "anchor" "ratio"
printf '%-28s %8sus %8sus %7s\n' "incr (locked, crash-safe)" "$ours" "$anchor" \
    "$(awk -v a="$ours" -v b="$anchor" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
