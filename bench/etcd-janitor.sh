#!/usr/bin/env bash
# What one janitor pass on etcd costs when there are many claims: N (1000)
# claims of one kind under a prefix of their own, then a pass over them,
#
#   ccci-janitor --etcd URL --etcd-prefix P [--json] [--min-age 1h] -- true
#
# median wall time of ROUNDS (11) passes, for each kind:
#   foreign  orphans of another host: only read, never locked
#   live     this host's claims, each with a lock key under a lease: held
#   young    this host's orphans, younger than --min-age 1h
# and once, REAPED (100) orphans of this host reaped by `true`, for the cost
# of a reap (a guarded transaction to take it, one to stamp the reaper, one
# to delete the claim) beside that of a look.
#
# The claims are written with `etcdctl txn` (100 keys a transaction), not
# by runs, so that setting up does not dwarf the pass. A single-member etcd
# is started on free loopback ports in a temporary directory and stopped at
# the end; the janitor's lock dir is there too.
#
#   bench/etcd-janitor.sh       # N=1000 ROUNDS=11 REAPED=100
#
# Target: a pass over 1,000 claims in at most 1 s.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-1000}
ROUNDS=${ROUNDS:-11}
REAPED=${REAPED:-100}

for tool in etcd etcdctl; do
    command -v "$tool" >/dev/null || { echo "bench/etcd-janitor.sh: $tool is missing (etcd-server, etcd-client)" >&2; exit 1; }
done
bin=$("$root/contrib/cargo-build-tools" --release)/ccci-janitor

work=$(mktemp -d "${TMPDIR:-/tmp}/ccci-bench-janitor.XXXXXX")
etcd_pid=
cleanup() {
    [ -n "$etcd_pid" ] && kill -KILL "$etcd_pid" 2>/dev/null && wait "$etcd_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { # a port nobody answers on
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}
client=$(free_port)
peer=$(free_port)
url=http://127.0.0.1:$client
etcd --name bench --data-dir "$work/data" \
    --listen-client-urls "$url" --advertise-client-urls "$url" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "bench=http://127.0.0.1:$peer" >"$work/etcd.log" 2>&1 &
etcd_pid=$!
ctl() { etcdctl --endpoints "$url" "$@"; }
for _ in $(seq 200); do
    ctl endpoint health >/dev/null 2>&1 && break
    sleep 0.05
done
ctl endpoint health >/dev/null 2>&1 || { cat "$work/etcd.log" >&2; exit 1; }

host=$(hostname)
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
hour_ago=$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ)
lease=$(ctl lease grant 3600 | awk '{print $2}')

# fill PREFIX KIND COUNT: COUNT claims of KIND under PREFIX, by transactions.
fill() {
    local prefix=$1 kind=$2 count=$3 i record
    for ((i = 0; i < count; i++)); do
        if ((i % 50 == 0)); then
            ((i == 0)) || printf '\n\n'
            printf '\n'
        fi
        case $kind in
            foreign) record="{\"pid\":$((1000 + i)),\"run_id\":\"r$i\",\"since\":\"$hour_ago\",\"host\":\"elsewhere\"}" ;;
            young) record="{\"pid\":$((1000 + i)),\"run_id\":\"r$i\",\"since\":\"$now\",\"host\":\"$host\"}" ;;
            *) record="{\"pid\":$((1000 + i)),\"run_id\":\"r$i\",\"since\":\"$hour_ago\",\"host\":\"$host\"}" ;;
        esac
        printf 'put %s/claim/app-%04d.example "%s"\n' "$prefix" "$i" "${record//\"/\\\"}"
        if [ "$kind" = live ]; then
            printf 'put --lease=%s %s/lock/app-%04d.example/%x ""\n' "$lease" "$prefix" "$i" "$i"
        fi
    done | awk 'BEGIN { RS = "\n\n\n" } { printf "%s\n\n\n", $0 > ("'"$work"'/txn." NR) }'
    for f in "$work"/txn.*; do
        ctl txn <"$f" >/dev/null
        rm "$f"
    done
}

now_us() { echo "${EPOCHREALTIME/./}"; }
median() { printf '%s\n' $1 | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
# pass PREFIX FLAGS...: wall time (us) of one janitor pass.
pass() {
    local prefix=$1 t0 t1
    shift
    t0=$(now_us)
    CCCI_APP_LOCK_DIR=$work/locks "$bin" --etcd "$url" --etcd-prefix "$prefix" "$@" -- true >/dev/null 2>"$work/err" ||
        { cat "$work/err" >&2; exit 1; }
    t1=$(now_us)
    echo $((t1 - t0))
}

echo "janitor passes over $N claims each, median of $ROUNDS, one local etcd ($(etcd --version | head -1))"
printf '%-44s %10s\n' "" "wall (ms)"
for kind in foreign live young; do
    fill "/j-$kind" "$kind" "$N"
    for flags in "" "--json"; do
        walls=
        for _ in $(seq "$ROUNDS"); do
            walls+="$(pass "/j-$kind" --min-age 1h $flags) "
        done
        printf '%-44s %10.1f\n' "$N $kind claims, --min-age 1h $flags" "$(awk -v a="$(median "$walls")" 'BEGIN { print a / 1000 }')"
    done
    left=$(ctl get --prefix --keys-only "/j-$kind/claim/" | grep -c . || true)
    ctl get --print-value-only "/j-$kind/claim/app-0000.example" | grep -q '"host":' ||
        { echo "bench/etcd-janitor.sh: the $kind claims hold no record" >&2; exit 1; }
    [ "$left" = "$N" ] || { echo "bench/etcd-janitor.sh: the $kind pass changed the claims ($left of $N left)" >&2; exit 1; }
done
fill /j-reap orphan "$REAPED"
w=$(pass /j-reap)
left=$(ctl get --prefix --keys-only /j-reap/claim/ | grep -c . || true)
[ "$left" = 0 ] || { echo "bench/etcd-janitor.sh: $left orphans were not reaped" >&2; exit 1; }
printf '%-44s %10.1f  (%.1f ms a reap)\n' "$REAPED orphans of this host, reaped by true" \
    "$(awk -v a="$w" 'BEGIN { print a / 1000 }')" "$(awk -v a="$w" -v n="$REAPED" 'BEGIN { print a / 1000 / n }')"
