#!/bin/sh
# A stub `abra` for tests and the demo: the part of abra's command line that
# ccci-reap-abra, ccci-janitor-pass and a CI harness use, with the same
# commands, flags and output shapes, and app state kept in files.
#
#   abra app new RECIPE --server S --domain D [--secrets]    writes the .env
#   abra app deploy DOMAIN                                    "starts" its stack
#   abra app undeploy DOMAIN          stack goes after ABRA_STUB_CONVERGE status checks
#   abra app remove|rm DOMAIN --force removes volumes, secrets and .env (refused while deployed)
#   abra app ls [--machine] [--status] [--server S]
#   global: --no-input/-n, --debug/-d
#
# Any other command or flag is refused (status 1, "unknown flag"), so a
# script that relies on an undocumented flag fails here as it would on a
# real server. Short flags are accepted as abra spells them (-m, -S, -s,
# -D, -f, -n).
#
# State: apps are `.env` files under $ABRA_DIR/servers/<server>/ (ABRA_DIR
# defaults to ~/.abra, as abra's); the swarm is $ABRA_STUB_SWARM (default
# ~/.abra-stub-swarm): <domain>.stack while deployed, <domain>.volume and
# <domain>.secret until removed, <domain>.stopping while an undeploy
# converges, and `calls`, one line per call. A file `fail-<command>` there
# (fail-ls, fail-undeploy, fail-remove, fail-deploy, fail-new) makes that
# command fail with status 1, as an unreachable server would.
set -eu
abra_dir=${ABRA_DIR:-$HOME/.abra}
swarm=${ABRA_STUB_SWARM:-$HOME/.abra-stub-swarm}
mkdir -p "$swarm"
echo "$*" >> "$swarm/calls"

die() { echo "abra: $*" >&2; exit 1; }

[ "${1:-}" = app ] || die "unknown command '${1:-}' (this stub knows only 'app')"
shift
cmd=${1:-}
[ -n "$cmd" ] && shift
[ "$cmd" = rm ] && cmd=remove

machine= status= force= server= domain= recipe= args=
while [ "$#" -gt 0 ]; do
    case "$cmd:$1" in
        *:--no-input | *:-n | *:--debug | *:-d) ;;
        ls:--machine | ls:-m) machine=1 ;;
        ls:--status | ls:-S) status=1 ;;
        ls:--server | ls:-s | new:--server | new:-s)
            [ "$#" -ge 2 ] || die "flag needs an argument: $1"
            server=$2; shift ;;
        new:--domain | new:-D)
            [ "$#" -ge 2 ] || die "flag needs an argument: $1"
            domain=$2; shift ;;
        new:--secrets | new:-S) ;;
        remove:--force | remove:-f) force=1 ;;
        *:-*) die "unknown flag: $1 (for 'abra app $cmd')" ;;
        *) args="$args $1" ;;
    esac
    shift
done
set -f
# shellcheck disable=SC2086 # positional arguments, split on purpose
set -- $args
set +f
[ ! -e "$swarm/fail-$cmd" ] || die "cannot reach the server (fail-$cmd)"

# env_of DOMAIN: the app's .env file, if any
env_of() {
    for f in "$abra_dir"/servers/*/"$1.env"; do
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}
one_domain() {
    [ "$#" -eq 1 ] || die "'abra app $cmd' takes one app domain"
    env_of "$1" >/dev/null || die "cannot find app with name $1"
}

case $cmd in
    new)
        [ "$#" -eq 1 ] || die "'abra app new' takes one recipe"
        [ -n "$domain" ] && [ -n "$server" ] || die "'abra app new' needs --server and --domain with --no-input"
        mkdir -p "$abra_dir/servers/$server"
        ! env_of "$domain" >/dev/null || die "$domain already exists"
        printf 'TYPE=%s\nDOMAIN=%s\n' "$1" "$domain" > "$abra_dir/servers/$server/$domain.env"
        echo "abra: new app $domain ($1) on $server" ;;
    deploy)
        one_domain "$@"
        [ ! -e "$swarm/$1.stack" ] || die "$1 is already deployed"
        touch "$swarm/$1.stack" "$swarm/$1.volume" "$swarm/$1.secret"
        echo "abra: deployed $1" ;;
    undeploy)
        one_domain "$@"
        [ -e "$swarm/$1.stack" ] || die "$1 is not deployed?"
        echo "${ABRA_STUB_CONVERGE:-2}" > "$swarm/$1.stopping"
        echo "abra: undeploying $1" ;;
    remove)
        one_domain "$@"
        [ -n "$force" ] || die "'abra app remove' asks for confirmation; --force skips it"
        [ ! -e "$swarm/$1.stack" ] || die "$1 is still deployed. Run \"abra app undeploy $1\""
        rm -f "$swarm/$1.volume" "$swarm/$1.secret" "$(env_of "$1")"
        echo "abra: removed $1 (volumes, secrets, .env)" ;;
    ls)
        [ "$#" -eq 0 ] || die "'abra app ls' takes no arguments"
        apps=
        for f in "$abra_dir"/servers/*/*.env; do
            [ -f "$f" ] || continue
            s=${f%/*}; s=${s##*/}
            [ -z "$server" ] || [ "$server" = "$s" ] || continue
            d=${f##*/}; d=${d%.env}
            st=unknown
            if [ -n "$status" ]; then
                if [ -e "$swarm/$d.stopping" ]; then
                    read -r left < "$swarm/$d.stopping"
                    if [ "$left" -le 0 ]; then
                        rm -f "$swarm/$d.stack" "$swarm/$d.stopping"
                    else
                        echo $((left - 1)) > "$swarm/$d.stopping"
                    fi
                fi
                [ -e "$swarm/$d.stack" ] && st=deployed
            fi
            apps="$apps$s $d $st
"
        done
        if [ -n "$machine" ]; then
            # {"<server>": {"apps": [{"server", "domain", "status", ...}], "appCount": N}}
            printf '%s' "$apps" | awk -v status="$status" '
                NF == 3 { n[$1]++; line[$1] = line[$1] (n[$1] > 1 ? "," : "") \
                    sprintf("{\"server\":\"%s\",\"recipe\":\"stub\",\"domain\":\"%s\"%s}", $1, $2, \
                        status ? sprintf(",\"status\":\"%s\"", $3) : "") }
                END { printf "{"; sep = ""
                      for (s in n) { printf "%s\"%s\":{\"apps\":[%s],\"appCount\":%d}", sep, s, line[s], n[s]; sep = "," }
                      print "}" }'
        else
            printf 'SERVER DOMAIN STATUS\n%s' "$apps"
        fi ;;
    *) die "unknown command 'app $cmd'" ;;
esac
