#!/usr/bin/env bash
# A whole CI day with ccci, played on this machine in a temporary directory
# with a stub `abra`: two runs of one app domain (the second waits, then runs),
# private state and ABRA_DIR per run, a run killed mid-deploy, the janitor
# reaping it exactly once, and a deadline firing with teardown.
#
#   ./examples/demo.sh          (builds the tools first; nothing is installed)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
if [ -t 1 ]; then bold=$'\e[1m' dim=$'\e[2m' off=$'\e[0m'; else bold= dim= off=; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
note() { printf '   %s\n' "$*"; }
show() { printf '%s   $ %s%s\n' "$dim" "$*" "$off"; }

step "Building the tools"
# cargo says where it put them (CARGO_TARGET_DIR and cargo's config are honoured)
bindir=$("$top/contrib/cargo-build-tools")
export PATH="$bindir:$PATH"
note "the tools are in $bindir"

work=$(mktemp -d "${TMPDIR:-/tmp}/ccci-demo.XXXXXX")
chmod 700 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

export CCCI_APP_LOCK_DIR=$work/locks CCCI_STATE_DIR=$work/state \
       CCCI_RUNS_DIR=$work/runs CCCI_CANONICAL_ABRA_DIR=$work/abra
unset CCCI_RUN_ID CCCI_HARNESS_PID
note "everything lives in $work (CCCI_APP_LOCK_DIR, CCCI_STATE_DIR, CCCI_RUNS_DIR, CCCI_CANONICAL_ABRA_DIR)"

# waits (at most 30 s) until FILE exists, or until FILE contains TEXT
await() {
    local i
    for i in $(seq 600); do
        if [ -e "$1" ] && { [ -z "${2:-}" ] || grep -q "$2" "$1"; }; then return 0; fi
        sleep 0.05
    done
    echo "demo: ${2:+'$2' in }$1 never appeared" >&2
    exit 1
}
deployed() { local apps; apps=$(ls "$work/deployed"); echo "${apps:-(none)}"; }

step "The server: a canonical abra dir with one recipe, and a stub abra"
mkdir -p "$work/abra/servers/ci.example.org" "$work/abra/recipes" "$work/bin" "$work/deployed"
(
    cd "$work/abra/recipes" && git init -q wordpress && cd wordpress
    git config user.email ci@example.org && git config user.name ci
    echo "version: 1.0.0" > compose.yml && git add . && git commit -qm 1.0.0 && git tag 1.0.0
    echo "version: 1.1.0" > compose.yml && git commit -qam 1.1.0 && git tag 1.1.0
)
cat > "$work/bin/abra" <<'ABRA'
#!/bin/sh
# stub abra: deploy writes the app's .env through $ABRA_DIR/servers and marks it deployed
set -eu
deployed=$(dirname "$0")/../deployed
case "$1 $2" in
    "app deploy")   printf 'DOMAIN=%s\n' "$3" > "$ABRA_DIR/servers/ci.example.org/$3.env"
                    touch "$deployed/$3"; echo "abra: deployed $3" ;;
    "app undeploy") rm -f "$deployed/$3"; echo "abra: undeployed $3" ;;
    "app ls")       ls "$deployed" ;;
    *)              echo "abra: $*" ;;
esac
ABRA
chmod +x "$work/bin/abra"
export PATH="$work/bin:$PATH"
note "recipe wordpress has tags 1.0.0 and 1.1.0; abra deploys by writing servers/ci.example.org/DOMAIN.env"

# One CI run: the harness from the README, with a recipe test that deploys,
# announces itself and waits for "$work/go.<run>" (or its deadline).
cat > "$work/ci-run.sh" <<'RUN'
#!/bin/sh
# ci-run.sh RUN_ID DOMAIN TAG [DEADLINE]
set -eu
export CCCI_RUN_ID=$1 DOMAIN=$2 TAG=$3 WORK=$(dirname "$0")
eval "$(ccci-state env)"
out=$(ccci-abradir --recipe wordpress); eval "$out"
ccci-state incr deploys >/dev/null          # counted BEFORE the app lock, per run
ccci-guard --parent $$ --deadline "${4:-60s}" -- \
    ccci-lock -v --run-id "$CCCI_RUN_ID" "$DOMAIN" -- "$WORK/recipe-test.sh"
RUN
cat > "$work/recipe-test.sh" <<'TEST'
#!/bin/sh
# runs under the app lock: deploy, test, tear down
set -eu
teardown() { abra app undeploy "$DOMAIN" >/dev/null; echo "   [$CCCI_RUN_ID] teardown after $1: undeployed $DOMAIN"; exit "$2"; }
trap 'teardown SIGTERM 143' TERM
trap 'teardown "the deadline (SIGALRM)" 142' ALRM
git -C "$ABRA_DIR/recipes/wordpress" checkout -q "$TAG"
abra app deploy "$DOMAIN" >/dev/null
echo "   [$CCCI_RUN_ID] holds $DOMAIN; deploys=$(ccci-state get deploys); recipe at $(cat "$ABRA_DIR/recipes/wordpress/compose.yml")"
touch "$WORK/in.$CCCI_RUN_ID"
while [ ! -e "$WORK/go.$CCCI_RUN_ID" ]; do sleep 0.05; done
abra app undeploy "$DOMAIN" >/dev/null
echo "   [$CCCI_RUN_ID] done; tests passed"
TEST
chmod +x "$work/ci-run.sh" "$work/recipe-test.sh"

step "1. Two runs of the same app domain"
note "run 101 and run 102 both test wp.ci.example.org; 102 must wait for 101"
"$work/ci-run.sh" 101 wp.ci.example.org 1.0.0 & pids+=($!); r101=$!
await "$work/in.101"
"$work/ci-run.sh" 102 wp.ci.example.org 1.1.0 2> "$work/102.err" & pids+=($!); r102=$!
await "$work/102.err" waiting
note "run 102 says: $(grep waiting "$work/102.err")"
show "ccci-lock --list"
ccci-lock --list | sed 's/^/   /'
note "each run has its own state and ABRA_DIR:"
ls "$work/state" "$work/runs" | sed 's/^/   /'
touch "$work/go.101"; wait "$r101"
await "$work/in.102"; touch "$work/go.102"; wait "$r102"
note "both runs counted exactly one deploy each, and ran one after the other"

step "2. A run killed mid-deploy"
# in a session of its own, so that the whole run can be killed at once
setsid "$work/ci-run.sh" 103 nc.ci.example.org 1.1.0 2>/dev/null & pids+=($!); r103=$!
await "$work/in.103"
note "run 103 holds nc.ci.example.org and has deployed it; now its runner is SIGKILLed"
note "(every process of the run at once, as when a CI runner's container is killed)"
kill -KILL -- "-$r103"; wait "$r103" 2>/dev/null || true
note "left behind: the deployed app ($(deployed)) and its lockfile:"
show "ccci-lock --list"
ccci-lock --list | sed 's/^/   /'

step "3. The janitor (from cron, every 5 minutes) reaps it exactly once"
cat > "$work/reap-app.sh" <<'REAP'
#!/bin/sh
abra app undeploy "$1" >/dev/null && echo "   reap-app.sh: reaped $1" >&2
REAP
chmod +x "$work/reap-app.sh"
abra app ls > "$work/deployed.list"
show "ccci-janitor --deployed deployed.list --only '*.ci.example.org' --warm 'warm-*' -- reap-app.sh"
ccci-janitor --deployed "$work/deployed.list" --only '*.ci.example.org' --warm 'warm-*' -- "$work/reap-app.sh" 2>&1 | sed 's/^/   /'
abra app ls > "$work/deployed.list"
note "second pass, five minutes later: nothing left to do"
ccci-janitor --deployed "$work/deployed.list" --only '*.ci.example.org' -- "$work/reap-app.sh" 2>&1 | sed 's/^/   /'
note "deployed now: $(deployed)"

step "4. A hung test hits its deadline"
note "run 104 gets a 2 s deadline and never finishes"
set +e
"$work/ci-run.sh" 104 wp.ci.example.org 1.0.0 2s 2>/dev/null
status=$?
set -e
note "run 104 ended with status $status (142 = SIGALRM deadline); its teardown ran under the lock"
show "ccci-lock -n wp.ci.example.org -- true"
ccci-lock -n wp.ci.example.org -- true && note "the lock is free again"

step "Done"
note "see docs/concurrency.md for why each step is safe"
