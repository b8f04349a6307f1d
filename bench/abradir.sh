#!/usr/bin/env bash
# What preparing a run's ABRA_DIR with one recipe costs, side by side with
# its anchor, a plain `git clone --local` of the same recipe, and with a full
# copy (`cp -a`). The recipe is generated once: 5,000 files, 2,000 commits.
#
#   bench/abradir.sh            # ROUNDS=9 by default
#   ROUNDS=21 bench/abradir.sh
#
# Target: ccci-abradir --recipe costs at most 1.2x the clone, and far less
# than the copy in disk space. The three are interleaved round by round so
# that load from elsewhere on the machine hits them alike; medians are
# reported. Nothing outside a temporary directory is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-9}
FILES=5000
COMMITS=2000

# cargo says where the release build is (CARGO_TARGET_DIR is honoured)
bin=$(contrib/cargo-build-tools --release)/ccci-abradir

work=$(mktemp -d "${TMPDIR:-/tmp}/ccci-bench-abradir.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 700 "$work"
canonical=$work/abra
repo=$canonical/recipes/bench
mkdir -p "$canonical/servers" "$canonical/catalogue" "$work/runs" "$work/clones" "$work/copies"

# One commit adds every file; each later commit changes three of them; a tag
# every 100 commits, as recipe versions.
echo "generating a recipe of $FILES files and $COMMITS commits..."
git init -q -b main "$repo"
LC_ALL=C awk -v files="$FILES" -v commits="$COMMITS" '
function data(s) { printf "data %d\n%s\n", length(s), s }
BEGIN {
    for (c = 1; c <= commits; c++) {
        printf "commit refs/heads/main\nmark :%d\n", c
        printf "committer Bench <bench@example.org> %d +0000\n", 1700000000 + c
        data("release " c)
        if (c > 1) printf "from :%d\n", c - 1
        if (c == 1) {
            for (f = 0; f < files; f++) {
                printf "M 644 inline d%02d/file%04d.yml\n", f % 50, f
                data("name: file" f "\nversion: 1\n")
            }
        } else {
            for (k = 0; k < 3; k++) {
                f = (c * 7 + k * 1667) % files
                printf "M 644 inline d%02d/file%04d.yml\n", f % 50, f
                data("name: file" f "\nversion: " c "\n")
            }
        }
        if (c % 100 == 0) printf "reset refs/tags/v%d\nfrom :%d\n\n", c / 100, c
    }
}' | git -C "$repo" fast-import --quiet
git -C "$repo" reset -q --hard main
echo "recipe: $(git -C "$repo" ls-files | wc -l) files, $(git -C "$repo" rev-list --count main) commits, $(du -sh "$repo/.git" | cut -f1) in .git"

now() { echo "${EPOCHREALTIME/./}"; } # microseconds

declare -a t_abradir t_clone t_copy t_layout
run_layout() { "$bin" --run-id "layout-$1" --pid $$ --runs-dir "$work/runs" --canonical "$canonical" >/dev/null; }
run_abradir() { "$bin" --run-id "bench-$1" --pid $$ --runs-dir "$work/runs" --canonical "$canonical" --recipe bench >/dev/null; }
run_clone() { git clone --local --quiet "$repo" "$work/clones/$1"; }
run_copy() { cp -a "$repo" "$work/copies/$1"; }

# Disk space each adds to the canonical recipe (du counts a hardlinked file
# once, under the first path it meets).
run_abradir warm
run_clone warm
run_copy warm
new_kb() { du -sk "$repo" "$1" | tail -1 | cut -f1; }
disk_abradir=$(new_kb "$work/runs/bench-warm-$$/abra/recipes/bench")
disk_clone=$(new_kb "$work/clones/warm")
disk_copy=$(new_kb "$work/copies/warm")
"$bin" clean --run-id bench-warm --pid $$ --runs-dir "$work/runs"
rm -rf "$work/clones/warm" "$work/copies/warm"

for ((i = 0; i < ROUNDS; i++)); do
    # Rotate the order, so no method always runs first (or last) in a round.
    for k in 0 1 2 3; do
        case $(((i + k) % 4)) in
            0) s=$(now); run_abradir "$i"; t_abradir+=($(($(now) - s))) ;;
            1) s=$(now); run_clone "$i"; t_clone+=($(($(now) - s))) ;;
            2) s=$(now); run_copy "$i"; t_copy+=($(($(now) - s))) ;;
            3) s=$(now); run_layout "$i"; t_layout+=($(($(now) - s))) ;;
        esac
    done
    "$bin" clean --run-id "bench-$i" --pid $$ --runs-dir "$work/runs"
    "$bin" clean --run-id "layout-$i" --pid $$ --runs-dir "$work/runs"
    rm -rf "$work/clones/$i" "$work/copies/$i"
done

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
m_abradir=$(median "${t_abradir[@]}")
m_clone=$(median "${t_clone[@]}")
m_copy=$(median "${t_copy[@]}")
m_layout=$(median "${t_layout[@]}")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "median of $ROUNDS rounds, interleaved; new disk = space added next to the canonical recipe"
printf '%-40s %10s %12s %14s\n' "" "time (ms)" "vs clone" "new disk (KiB)"
printf '%-40s %10.1f %12s %14s\n' "git clone --local (anchor)" "$(ratio "$m_clone" 1000)" "1.00" "$disk_clone"
printf '%-40s %10.1f %12s %14s\n' "ccci-abradir --recipe" "$(ratio "$m_abradir" 1000)" "$(ratio "$m_abradir" "$m_clone")" "$disk_abradir"
printf '%-40s %10.1f %12s %14s\n' "ccci-abradir, no recipe (fixed cost)" "$(ratio "$m_layout" 1000)" "$(ratio "$m_layout" "$m_clone")" "-"
printf '%-40s %10.1f %12s %14s\n' "cp -a (full copy)" "$(ratio "$m_copy" 1000)" "$(ratio "$m_copy" "$m_clone")" "$disk_copy"
echo
echo "ccci-abradir / clone: $(ratio "$m_abradir" "$m_clone") (target <= 1.20)"
echo "ccci-abradir / copy:  time $(ratio "$m_abradir" "$m_copy"), disk $(ratio "$disk_abradir" "$disk_copy")"
