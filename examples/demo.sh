#!/usr/bin/env bash
# A whole CI day with ccci, played on this machine in a temporary directory
# with a stub `abra`: a proxy and a warm app that no janitor pass touches, two
# runs of one app domain (the second waits, then runs), private state and
# ABRA_DIR per run, a run that holds a dependency app with --hold and is
# SIGKILLed mid-test, the janitor pass reaping both its apps exactly once
# with ccci-reap-abra, and a deadline firing with teardown.
#
#   ./examples/demo.sh          (builds the tools first; nothing is installed)
#
# Needs: cargo, git, jq, setsid (util-linux), timeout, sha256sum and
# mktemp (coreutils), sed and awk; each is checked first.
set -euo pipefail

# Every program the demo, its stub abra and the janitor pass need, with the
# Debian package that provides it.
missing=()
for pair in cargo:cargo git:git jq:jq setsid:util-linux timeout:coreutils \
    sha256sum:coreutils mktemp:coreutils sed:sed awk:mawk; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair%%:*} (${pair#*:})")
done
if ((${#missing[@]})); then
    printf 'demo.sh: missing programs: %s\n' "${missing[*]}" >&2
    echo "demo.sh: install them (e.g. as root: apt-get install jq git), or run 'make check' as root, which installs what the tests and this demo need" >&2
    exit 1
fi

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
cleanup() {
    # Only the runs still running (or not yet waited for): a pid this shell
    # has waited for may already name another process.
    local pid
    for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null || true; done
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
# the apps abra lists, with their deployment status
deployed() {
    abra app ls --status | awk 'NR > 1 { printf "%s%s (%s)", sep, $2, $3; sep = ", " } END { if (!NR || NR == 1) printf "(none)"; print "" }'
}

step "The server: abra with a proxy and a warm app deployed, and one recipe per app"
mkdir -p "$work/abra/servers/ci.example.org" "$work/abra/recipes" "$work/bin"
for recipe in wordpress nextcloud mariadb; do
    (
        cd "$work/abra/recipes" && git init -q "$recipe" && cd "$recipe"
        git config user.email ci@example.org && git config user.name ci
        echo "version: 1.0.0" > compose.yml && git add . && git commit -qm 1.0.0 && git tag 1.0.0
        echo "version: 1.1.0" > compose.yml && git commit -qam 1.1.0 && git tag 1.1.0
    )
done
# The stub abra of the test suite: abra's documented command line (app new,
# deploy, undeploy, remove, ls), apps as .env files, the swarm in files.
install -m 0755 "$top/tests/harness/abra-stub.sh" "$work/bin/abra"
export PATH="$work/bin:$PATH" ABRA_DIR=$work/abra ABRA_STUB_SWARM=$work/swarm CCCI_REAP_POLL=0.05
abra app new traefik --server ci.example.org --domain traefik.ci.example.org --no-input >/dev/null
abra app deploy traefik.ci.example.org --no-input >/dev/null
abra app new wordpress --server ci.example.org --domain warm-wordpress.ci.example.org --no-input >/dev/null
abra app deploy warm-wordpress.ci.example.org --no-input >/dev/null
note "deployed: $(deployed)"
note "CI runs deploy <4 letters of the recipe>-<6 hex>.ci.example.org; nothing else is theirs"

# One CI run: the harness from the README, with a recipe test that deploys
# the app (and its dependencies, each held with --hold), announces itself and
# waits for "$work/go.<run>" (or its deadline), then tears down.
cat > "$work/ci-run.sh" <<'RUN'
#!/bin/sh
# ci-run.sh RUN_ID RECIPE DOMAIN TAG [DEADLINE] [DEPENDENCY_RECIPE DEPENDENCY_DOMAIN]
set -eu
export CCCI_RUN_ID=$1 RECIPE=$2 DOMAIN=$3 TAG=$4 WORK=$(dirname "$0")
export DEP_RECIPE=${6:-} DEP_DOMAIN=${7:-}
eval "$(ccci-state env)"
out=$(ccci-abradir --recipe "$RECIPE"); eval "$out"
ccci-state incr deploys >/dev/null          # counted BEFORE the app lock, per run
ccci-guard --parent $$ --deadline "${5:-60s}" -- \
    ccci-lock -v --run-id "$CCCI_RUN_ID" "$DOMAIN" -- "$WORK/recipe-test.sh"
RUN
cat > "$work/recipe-test.sh" <<'TEST'
#!/bin/sh
# runs under the app lock: deploy (with the dependency), test, tear down
set -eu
reap=$TOP/contrib/ccci-reap-abra      # undeploy, wait until gone, remove
teardown() {
    if [ -n "$DEP_DOMAIN" ]; then
        "$reap" "$DEP_DOMAIN" 2>/dev/null && ccci-lock --release --parent $$ "$DEP_DOMAIN"
    fi
    "$reap" "$DOMAIN" 2>/dev/null
}
trap 'teardown; echo "   [$CCCI_RUN_ID] teardown after SIGTERM"; exit 143' TERM
trap 'teardown; echo "   [$CCCI_RUN_ID] teardown after the deadline (SIGALRM): $DOMAIN removed"; exit 142' ALRM
git -C "$ABRA_DIR/recipes/$RECIPE" checkout -q "$TAG"
if [ -n "$DEP_DOMAIN" ]; then
    ccci-lock --hold --parent $$ "$DEP_DOMAIN"     # held while this shell lives
    abra app new "$DEP_RECIPE" --server ci.example.org --domain "$DEP_DOMAIN" --no-input >/dev/null
    abra app deploy "$DEP_DOMAIN" --no-input >/dev/null
fi
abra app new "$RECIPE" --server ci.example.org --domain "$DOMAIN" --no-input >/dev/null
abra app deploy "$DOMAIN" --no-input >/dev/null
echo "   [$CCCI_RUN_ID] holds $DOMAIN${DEP_DOMAIN:+ and $DEP_DOMAIN}; deploys=$(ccci-state get deploys); recipe at $(cat "$ABRA_DIR/recipes/$RECIPE/compose.yml")"
touch "$WORK/in.$CCCI_RUN_ID"
while [ ! -e "$WORK/go.$CCCI_RUN_ID" ]; do sleep 0.05; done
teardown
echo "   [$CCCI_RUN_ID] done; tests passed"
TEST
chmod +x "$work/ci-run.sh" "$work/recipe-test.sh"
export TOP=$top
wp=word-3f2a01.ci.example.org nc=next-c0ffee.ci.example.org db=mari-c0ffee.ci.example.org

step "1. Two runs of the same app domain"
note "run 101 and run 102 both test $wp; 102 must wait for 101"
"$work/ci-run.sh" 101 wordpress $wp 1.0.0 & r101=$!
await "$work/in.101"
"$work/ci-run.sh" 102 wordpress $wp 1.1.0 2> "$work/102.err" & r102=$!
await "$work/102.err" waiting
note "run 102 says: $(grep waiting "$work/102.err")"
show "ccci-lock --list"
ccci-lock --list | sed 's/^/   /'
note "each run has its own state and ABRA_DIR:"
ls "$work/state" "$work/runs" | sed 's/^/   /'
touch "$work/go.101"; wait "$r101"
await "$work/in.102"; touch "$work/go.102"; wait "$r102"
note "both runs counted exactly one deploy each, and ran one after the other"

step "2. A run with a dependency, killed mid-test"
note "run 103 tests nextcloud on $nc; it deploys mariadb on $db first,"
note "holding that domain with: ccci-lock --hold --parent \$\$ $db"
# in a session of its own, so that the whole run can be killed at once
setsid "$work/ci-run.sh" 103 nextcloud $nc 1.1.0 60s mariadb $db 2>/dev/null & r103=$!
await "$work/in.103"
show "ccci-lock --list"
ccci-lock --list | sed 's/^/   /'
note "now its runner is SIGKILLed: every process of the run at once, as when a"
note "CI runner's container is killed; the keeper of the --hold sees its parent die"
kill -KILL -- "-$r103"; wait "$r103" 2>/dev/null || true
for i in $(seq 600); do
    ! ccci-lock --list | grep -q held && break
    sleep 0.05
done
note "left behind: both apps, deployed; both claims (free lockfiles):"
show "ccci-lock --list"
ccci-lock --list | sed 's/^/   /'
note "deployed: $(deployed)"

step "3. The janitor pass (cron or systemd, every 5 minutes) reaps them exactly once"
show "CCCI_ONLY='????-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f].ci.example.org' CCCI_WARM='warm-*' ccci-janitor-pass"
CCCI_ONLY='????-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f].ci.example.org' CCCI_WARM='warm-*' "$top/contrib/ccci-janitor-pass" 2>&1 | sed 's/^/   /'
note "second pass, five minutes later: nothing left to do"
CCCI_ONLY='????-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f].ci.example.org' CCCI_WARM='warm-*' "$top/contrib/ccci-janitor-pass" 2>&1 | sed 's/^/   /'
note "deployed now: $(deployed)"
note "the proxy and the warm app were never candidates: they do not match CCCI_ONLY"
note "it also ran ccci-state gc and ccci-abradir gc: the state files and ABRA_DIRs of"
note "runs whose harness process is gone (101, 102, 103) are collected:"
show "ls state runs"
ls "$work/state" "$work/runs" | sed 's/^/   /'

step "4. A hung test hits its deadline"
note "run 104 gets a 2 s deadline and never finishes"
set +e
"$work/ci-run.sh" 104 wordpress $wp 1.0.0 2s 2>/dev/null
status=$?
set -e
note "run 104 ended with status $status (142 = SIGALRM deadline); its teardown ran under the lock"
show "ccci-lock -n $wp -- true"
ccci-lock -n $wp -- true && note "the lock is free again"
note "deployed now: $(deployed)"

step "Done"
note "see docs/concurrency.md for why each step is safe"
