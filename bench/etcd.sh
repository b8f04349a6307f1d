#!/usr/bin/env bash
# What a wrap on etcd costs, side by side with its anchor, `etcdctl lock`
# running the same command under the same lock name on the same etcd:
#
#   ccci-lock --etcd URL bench.example -- true
#   etcdctl --endpoints URL lock /bench/lock/bench.example true
#
# Both grant a lease, take etcd's lock, run `true`, release and revoke.
# ccci-lock also writes and deletes the claim (two guarded transactions) and
# keeps the lease alive from a thread. Rounds are interleaved so that load
# from elsewhere hits both alike; medians are reported, wall time measured
# here, peak RSS by /usr/bin/time (%M). A single-member etcd is started on
# free loopback ports in a temporary directory and stopped at the end.
#
# Then the same over TLS: a second etcd serving clients on https with
# --client-cert-auth (a CA, a server and a client certificate made by
# openssl in the temporary directory), and both clients given the CA, the
# client certificate and its key:
#
#   ccci-lock --etcd https://… --etcd-cacert CA --etcd-cert C --etcd-key K bench.example -- true
#   etcdctl --endpoints https://… --cacert CA --cert C --key K lock /bench/lock/bench.example true
#
#   bench/etcd.sh               # ROUNDS=31 by default
#
# Last, contention: CONTENDERS (4) loops of WRAPS (50) wraps each on one
# domain at once, the total wall time of ccci-lock beside etcdctl lock's.
#
# Targets: ccci-lock <= 0.3x etcdctl's wall time and <= 0.25x its peak RSS
# (issue 23; <= 1.0x and <= 0.5x before); contended, <= 0.8x etcdctl lock's
# total. With curl, the requests each makes per wrap, as etcd counts them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-31}
CONTENDERS=${CONTENDERS:-4}
WRAPS=${WRAPS:-50}

for tool in etcd etcdctl /usr/bin/time openssl; do
    command -v "$tool" >/dev/null || { echo "bench/etcd.sh: $tool is missing (etcd-server, etcd-client, time, openssl)" >&2; exit 1; }
done
# The tools as `make` builds them (statically linked: what `make install`
# installs), from the directory make records (cargo's own answer, so
# CARGO_TARGET_DIR and cargo's config are honoured); BIN_DIR=DIR measures
# other ones (e.g. a dynamic build, `make STATIC=`).
if [ -n "${BIN_DIR:-}" ]; then
    bin=$BIN_DIR/ccci-lock
else
    record=$(mktemp "${TMPDIR:-/tmp}/ccci-bench-built.XXXXXX")
    make -s -C "$root" --no-print-directory build PROFILE=release BUILT="$record" >&2
    bin=$(sed -n 's/^BUILT_BIN := //p' "$record")/ccci-lock
    rm -f "$record"
fi
[ -x "$bin" ] || { echo "bench/etcd.sh: no ccci-lock at $bin" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/ccci-bench-etcd.XXXXXX")
etcd_pid=
tls_pid=
cleanup() {
    [ -n "$etcd_pid" ] && kill -KILL "$etcd_pid" 2>/dev/null && wait "$etcd_pid" 2>/dev/null || true
    [ -n "$tls_pid" ] && kill -KILL "$tls_pid" 2>/dev/null && wait "$tls_pid" 2>/dev/null || true
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
# up PID LOG CMD...: waits until CMD succeeds, while etcd PID lives.
up() {
    local pid=$1 log=$2 _
    shift 2
    for _ in $(seq 200); do
        "$@" --dial-timeout 1s endpoint health >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench/etcd.sh: etcd did not start:" >&2
    cat "$log" >&2
    exit 1
}
up "$etcd_pid" "$work/etcd.log" etcdctl --endpoints "$url"

# The TLS etcd: certificates first (quietly), then the server.
pki=$work/pki
mkdir "$pki"
(
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca -keyout ca.key -out ca.pem
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >server.ext
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    for n in server client; do
        openssl req -newkey rsa:2048 -nodes -subj "/O=bench-$n" -keyout "$n.key" -out "$n.csr"
        openssl x509 -req -in "$n.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile "$n.ext" -out "$n.pem"
    done
) >"$work/openssl.log" 2>&1 || { cat "$work/openssl.log" >&2; exit 1; }
tls_client=$(free_port)
tls_peer=$(free_port)
tls_url=https://127.0.0.1:$tls_client
etcd --name tls --data-dir "$work/tls-data" \
    --listen-client-urls "$tls_url" --advertise-client-urls "$tls_url" \
    --cert-file "$pki/server.pem" --key-file "$pki/server.key" \
    --trusted-ca-file "$pki/ca.pem" --client-cert-auth \
    --listen-peer-urls "http://127.0.0.1:$tls_peer" --initial-advertise-peer-urls "http://127.0.0.1:$tls_peer" \
    --initial-cluster "tls=http://127.0.0.1:$tls_peer" >"$work/tls-etcd.log" 2>&1 &
tls_pid=$!
ctl_tls=(etcdctl --endpoints "$tls_url" --cacert "$pki/ca.pem" --cert "$pki/client.pem" --key "$pki/client.key")
ccci_tls=("$bin" --etcd "$tls_url" --etcd-cacert "$pki/ca.pem" --etcd-cert "$pki/client.pem" --etcd-key "$pki/client.key")
up "$tls_pid" "$work/tls-etcd.log" "${ctl_tls[@]}"

now() { echo "${EPOCHREALTIME/./}"; } # microseconds
# run NAME CMD...: appends wall (us) and peak RSS (KiB) of one run.
declare -A wall rss
run() {
    local name=$1 t0 t1
    shift
    t0=$(now)
    /usr/bin/time -o "$work/time" -f '%M' "$@" >/dev/null
    t1=$(now)
    wall[$name]+="$((t1 - t0)) "
    rss[$name]+="$(tail -1 "$work/time") "
}
# One warm-up each, not counted.
"$bin" --etcd "$url" bench.example -- true
etcdctl --endpoints "$url" lock /bench/lock/bench.example true >/dev/null
"${ccci_tls[@]}" bench.example -- true
"${ctl_tls[@]}" lock /bench/lock/bench.example true >/dev/null
# Requests per wrap, as etcd counts them (grpc_server_started_total per
# method, read from its /metrics before and after one run of each; the JSON
# gateway's calls are counted there too, as the gRPC calls it makes).
calls() {
    curl -s "$url/metrics" | awk '/^grpc_server_started_total/ {
        m = $0; sub(/.*grpc_method="/, "", m); sub(/".*/, "", m); n[m] += $NF
    } END { for (m in n) print m, n[m] }' | sort
}
delta() {
    join -a 2 -e 0 -o 0,1.2,2.2 "$1" "$2" | awk '$3 - $2 > 0 {
        printf "%s %d, ", $1, $3 - $2; t += $3 - $2 } END { printf "%d in all", t }'
}
requests=
if command -v curl >/dev/null; then
    calls >"$work/calls0"
    "$bin" --etcd "$url" bench.example -- true
    calls >"$work/calls1"
    etcdctl --endpoints "$url" lock /bench/lock/bench.example true >/dev/null
    calls >"$work/calls2"
    requests="requests per wrap: ccci-lock $(delta "$work/calls0" "$work/calls1"); etcdctl lock $(delta "$work/calls1" "$work/calls2")"
fi
for _ in $(seq "$ROUNDS"); do
    run ccci "$bin" --etcd "$url" bench.example -- true
    run etcdctl etcdctl --endpoints "$url" lock /bench/lock/bench.example true
    run flock "$bin" --lock-dir "$work/locks" bench.example -- true
    run ccci_tls "${ccci_tls[@]}" bench.example -- true
    run etcdctl_tls "${ctl_tls[@]}" lock /bench/lock/bench.example true
done

median() { printf '%s\n' $1 | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
w_c=$(median "${wall[ccci]}") w_e=$(median "${wall[etcdctl]}") w_f=$(median "${wall[flock]}")
r_c=$(median "${rss[ccci]}") r_e=$(median "${rss[etcdctl]}") r_f=$(median "${rss[flock]}")
w_ct=$(median "${wall[ccci_tls]}") w_et=$(median "${wall[etcdctl_tls]}")
r_ct=$(median "${rss[ccci_tls]}") r_et=$(median "${rss[etcdctl_tls]}")

echo "median of $ROUNDS rounds, interleaved, on one local etcd ($(etcd --version | head -1))"
printf '%-44s %10s %10s %12s %10s\n' "" "wall (ms)" "vs etcdctl" "peak RSS KiB" "vs etcdctl"
printf '%-44s %10.1f %10s %12s %10s\n' "etcdctl lock NAME true (anchor)" "$(ratio "$w_e" 1000)" 1.00 "$r_e" 1.00
printf '%-44s %10.1f %10s %12s %10s\n' "ccci-lock --etcd URL D -- true" "$(ratio "$w_c" 1000)" "$(ratio "$w_c" "$w_e")" "$r_c" "$(ratio "$r_c" "$r_e")"
printf '%-44s %10.1f %10s %12s %10s\n' "ccci-lock D -- true (flock, for scale)" "$(ratio "$w_f" 1000)" "$(ratio "$w_f" "$w_e")" "$r_f" "$(ratio "$r_f" "$r_e")"
printf '%-44s %10.1f %10s %12s %10s\n' "etcdctl lock over TLS (anchor)" "$(ratio "$w_et" 1000)" 1.00 "$r_et" 1.00
printf '%-44s %10.1f %10s %12s %10s\n' "ccci-lock --etcd https://... over TLS" "$(ratio "$w_ct" 1000)" "$(ratio "$w_ct" "$w_et")" "$r_ct" "$(ratio "$r_ct" "$r_et")"
echo
echo "over TLS (client certificates): wall $(ratio "$w_ct" "$w_et"), peak RSS $(ratio "$r_ct" "$r_et") of etcdctl lock over TLS"
echo "ccci-lock --etcd / etcdctl lock: wall $(ratio "$w_c" "$w_e") (target <= 0.30), peak RSS $(ratio "$r_c" "$r_e") (target <= 0.25)"
[ -z "$requests" ] || echo "$requests"

# contend CMD...: CONTENDERS loops of WRAPS runs of CMD at once; prints the
# total wall time in ms.
contend() {
    local t0 t1 i pids=()
    t0=$(now)
    for i in $(seq "$CONTENDERS"); do
        (for _ in $(seq "$WRAPS"); do "$@" >/dev/null || exit 1; done) &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i"; done
    t1=$(now)
    echo $(((t1 - t0) / 1000))
}
c_c=$(contend "$bin" --etcd "$url" -w 60s bench.example -- true)
c_e=$(contend etcdctl --endpoints "$url" lock /bench/lock/bench.example true)
echo "contended, $CONTENDERS x $WRAPS wraps of one domain: ccci-lock ${c_c} ms, etcdctl lock ${c_e} ms: $(ratio "$c_c" "$c_e") (target <= 0.80)"
