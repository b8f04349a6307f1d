//! A private `ABRA_DIR` for every run (SPEC §5).
//!
//! # Layout
//!
//! ```text
//! <runs dir>/<run key>/abra/            the run's ABRA_DIR
//!     servers   -> <canonical>/servers    shared: app .env files live here
//!     catalogue -> <canonical>/catalogue  shared, when the canonical one exists
//!     recipes/                            private, real directory
//!         NAME/                           local `git clone` of <canonical>/recipes/NAME
//! ```
//!
//! # Guarantees
//!
//! 1. **Complete before visible.** A new run's tree is built under a
//!    temporary name (`.<run key>.<pid>.tmp`) and renamed into place only
//!    when every link and clone is there; a recipe added to an existing run
//!    is cloned as `recipes/.<NAME>.<pid>.tmp` and renamed the same way. A
//!    crash at any instruction leaves a temporary that no later call
//!    accepts (and that `clean` removes), never a half layout under the real
//!    name. The caller prints `ABRA_DIR` only after [`prepare`] returns.
//! 2. **The canonical dir is never written by us.** `servers` and
//!    `catalogue` are symlinks to absolute canonical paths: a run's app
//!    `.env` files land in the canonical tree on purpose, where `abra app ls`
//!    and the janitor see every deployed app. Recipes are private clones,
//!    because abra checks out the version it deploys in `recipes/NAME`: two
//!    runs sharing one working tree would flip each other's checkout
//!    mid-deploy. See [`git`] for why the hardlinked clone is safe.
//! 3. **Reuse is verified.** A second call of the same run accepts the
//!    tree only if the run dir, `abra/` and `recipes/` are real directories
//!    of ours, `servers` (and `catalogue`, when present) are symlinks with
//!    exactly the expected targets and every existing `recipes/NAME` is a
//!    real directory; otherwise it refuses. A symlink in their place could
//!    send abra's checkouts or writes anywhere. Missing recipe clones and a
//!    newly appeared canonical catalogue are added; nothing is re-cloned.
//! 4. **Same run, at once.** Two calls of one run racing to build it both
//!    succeed with one tree: the loser of the rename discards its own copy
//!    and verifies the winner's.
//! 5. **Clean never follows a link.** [`clean`] removes the run's tree with
//!    descriptor-relative `unlinkat`, unlinking `servers` and `catalogue`
//!    as links (see [`tree`]), so canonical files are never deleted. A run
//!    dir that is not a real directory of ours (another uid's, a symlink)
//!    is refused, never removed.
//! 6. **Dead runs do not pile up.** Each run dir records its harness
//!    (`.harness`, the [`ccci_common::run::Record`] that `ccci-state` keeps
//!    too: pid, start time, pid namespace, boot), written into the
//!    temporary before it becomes visible. [`gc`] removes the trees of runs
//!    whose harness has exited or whose pid now names another process, and
//!    the temporaries of builds whose process is gone; a run's tree whose
//!    key was reused (pid reuse) is rebuilt fresh by [`prepare`]. Trees are
//!    removed only while holding their lock (an `flock` on the run dir,
//!    verified by descriptor, [`ccci_common::locked`]), which [`prepare`]
//!    holds while it verifies and completes a tree, so `gc` never removes a
//!    tree that is being reused. A record of another pid namespace is never
//!    judged by our pids; a foreign-owned or symlinked entry is skipped.
//!
//! What lives where: the canonical dir and the recipes asked for in
//! `canonical`; building, verifying and completing a tree in `layout`; the
//! clones in [`git`]; removal without following links in [`tree`]; `gc`'s
//! view of the runs dir in `sweep`; [`prepare`], [`clean`] and [`gc`] here.

#![warn(missing_docs)]
#![deny(unsafe_code)]

mod canonical;
pub mod cli;
pub mod git;
mod layout;
mod sweep;
pub mod tree;

use ccci_common::names::quote_path;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ccci_common::dirs::{Role, RUNS_DIR};
use ccci_common::fs::SafeDir;
use ccci_common::gc::{self};
use ccci_common::locked::{lock_named, Acquired, Name};
use ccci_common::run::{GcEntry, Harness, Record, RunKey};
use ccci_common::sys::FlockOp;

pub use canonical::{recipe_name, Canonical, Recipe};
use layout::*;
use sweep::Runs;

/// The run's `ABRA_DIR`, inside its run dir.
pub const ABRA: &str = "abra";
/// Shared with the canonical dir: servers and their app `.env` files.
pub const SERVERS: &str = "servers";
/// Shared with the canonical dir, when it has one: the recipe catalogue.
pub const CATALOGUE: &str = "catalogue";
/// Private to the run: recipe clones.
pub const RECIPES: &str = "recipes";

/// The directories inside the runs dir, for messages.
const RUN_DIR: Role = Role {
    what: "run dir",
    flag: "--runs-dir",
    env: "CCCI_RUNS_DIR",
};

/// Builds (or verifies and completes) the run `key`'s tree in `runs` and
/// returns its `ABRA_DIR`. See the crate doc for the guarantees.
pub fn prepare(
    runs: &SafeDir,
    key: &RunKey,
    canonical: &Canonical,
    recipes: &[Recipe],
) -> anyhow::Result<PathBuf> {
    let name = key.key();
    let run_path = runs.join(&name);
    for _ in 0..ccci_common::locked::ATTEMPTS {
        let Some(run) = lock_run(runs, &name, &run_path, FlockOp::Exclusive)? else {
            match build(runs, key, canonical, recipes)? {
                Some(built) => return Ok(built.join(ABRA)),
                None => continue, // another call of this run won: verify its tree
            }
        };
        let Acquired::Held(run) = run else {
            unreachable!("a waiting lock is never busy")
        };
        match Record::read(&run) {
            Some(record) if record.is_for(key) && record.harness() == Harness::Replaced => {
                // An earlier run with the same key (its pid was reused):
                // its tree is not ours to adopt.
                ccci_common::say!(
                    "replaced stale run dir {} (its harness pid {} now names another process)",
                    quote_path(&run_path),
                    record.pid
                );
                tree::remove_tree(runs, runs.path(), OsStr::new(&name))?;
                continue;
            }
            Some(_) => {}
            None => {
                Record::write(&run, key)?;
            }
        }
        reuse(&run, canonical, recipes)?;
        return Ok(run.join(ABRA));
    }
    bail!(
        "{} kept being removed or replaced while it was being prepared; try again",
        quote_path(&run_path)
    )
}

/// The existing run dir `name` in `runs`, locked with `op` and verified by
/// descriptor to be what the name names; `None` when it does not exist.
/// Anything but a real directory of ours is refused.
fn lock_run(
    runs: &SafeDir,
    name: &str,
    run_path: &Path,
    op: FlockOp,
) -> anyhow::Result<Option<Acquired<SafeDir>>> {
    let got = lock_named(Name::At(runs.as_fd(), name), run_path, op, || {
        existing_dir(runs, name, run_path)
    })?;
    Ok(match got {
        Acquired::Missing => None,
        other => Some(other),
    })
}

/// Removes the run `key`'s tree from the runs dir `runs_dir`, and any
/// temporary a crashed call of the same run left; symlinks are unlinked,
/// never followed. A missing runs dir or run dir is fine; a run dir that is
/// not a real directory of ours (another uid's, a symlink, writable by
/// others) is refused and left as it is.
pub fn clean(runs_dir: &Path, key: &RunKey) -> anyhow::Result<()> {
    let Some(runs) = SafeDir::open(&RUNS_DIR, runs_dir, false)? else {
        return Ok(());
    };
    let key = key.key();
    let run_path = runs.join(&key);
    let held = match runs.stat(&key)? {
        None => None,
        Some(_) => {
            let refused = |e: anyhow::Error| {
                anyhow::anyhow!("refusing to remove {}: {e:#}", quote_path(&run_path))
            };
            let dir = runs.subdir(&RUN_DIR, &key, false).map_err(refused)?;
            match dir {
                None => None,
                Some(_) => lock_run(&runs, &key, &run_path, FlockOp::Exclusive)?,
            }
        }
    };
    if held.is_some() {
        tree::remove_tree(&runs, runs.path(), OsStr::new(&key))?;
    }
    drop(held);
    let names = runs
        .names()
        .with_context(|| format!("cannot list runs dir {}", quote_path(runs.path())))?;
    for name in names {
        if name.to_str().is_some_and(|n| is_temporary_of(n, &key)) {
            tree::remove_tree(&runs, runs.path(), &name)?;
        }
    }
    Ok(())
}

/// Removes (with `dry_run`, only reports) the trees of runs whose harness
/// is gone (crate doc, guarantee 6) and the temporaries whose maker is
/// gone, in `runs_dir`, and inside the trees it keeps; reports each entry
/// it removed, kept for a reason worth saying, or skipped. A missing runs
/// dir has nothing to collect.
pub fn gc(runs_dir: &Path, dry_run: bool) -> anyhow::Result<Vec<GcEntry>> {
    let Some(runs) = SafeDir::open(&RUNS_DIR, runs_dir, false)? else {
        return Ok(Vec::new());
    };
    gc::sweep(&Runs(runs), dry_run)
}

/// The temporary name a call of this process builds `name` under.
fn temporary(name: &str) -> String {
    format!(".{name}.{}.tmp", std::process::id())
}

/// Whether `entry` is a temporary of `name` made by any process. Names and
/// run keys start with a letter or digit, so `.<name>.<digits>.tmp` can
/// belong to no other name.
fn is_temporary_of(entry: &str, name: &str) -> bool {
    entry
        .strip_prefix('.')
        .and_then(|rest| rest.strip_prefix(name))
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_suffix(".tmp"))
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// The refusal to reuse the run tree at `run`, because of `what`. The way
/// out it names removes exactly the refused tree, and says so.
fn refusal(run: &Path, what: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "refusing to use run dir {}: {what}; `ccci-abradir clean` for this run removes that \
         directory and everything in it (servers and catalogue are unlinked, never followed), \
         and nothing else",
        quote_path(run)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn key(name: &str) -> RunKey {
        RunKey::parse(name).unwrap()
    }

    struct World {
        _tmp: tempfile::TempDir,
        canonical: Canonical,
        runs: SafeDir,
    }

    fn world(catalogue: bool) -> World {
        let tmp = ccci_common::fs::testing::private_tempdir();
        let root = tmp.path().join("abra");
        std::fs::create_dir_all(root.join("servers")).unwrap();
        if catalogue {
            std::fs::create_dir_all(root.join("catalogue")).unwrap();
        }
        let canonical = Canonical::open(&root).unwrap();
        let runs = SafeDir::create(&RUNS_DIR, &tmp.path().join("runs")).unwrap();
        World {
            _tmp: tmp,
            canonical,
            runs,
        }
    }

    #[test]
    fn temporaries_are_told_apart_by_their_exact_shape() {
        assert!(is_temporary_of(".ci-7-42.1234.tmp", "ci-7-42"));
        assert!(!is_temporary_of(".ci-7-42.tmp", "ci-7-42"));
        assert!(!is_temporary_of(".ci-7-42.x1.tmp", "ci-7-42"));
        // Run id "ci-7-42.9" with pid 5 is another run; its temporary is not ours.
        assert!(!is_temporary_of(".ci-7-42.9-5.77.tmp", "ci-7-42"));
        assert!(!is_temporary_of("ci-7-42", "ci-7-42"));
    }

    #[test]
    fn layout_without_recipes_and_reuse() {
        let w = world(false);
        let abra = prepare(&w.runs, &key("r-1"), &w.canonical, &[]).unwrap();
        assert_eq!(abra, w.runs.join("r-1").join("abra"));
        assert_eq!(
            std::fs::read_link(abra.join("servers")).unwrap(),
            w.canonical.servers()
        );
        assert!(abra.join("catalogue").symlink_metadata().is_err());
        let recipes = abra.join("recipes").symlink_metadata().unwrap();
        assert!(recipes.is_dir());
        assert_eq!(recipes.permissions().mode() & 0o777, 0o700);
        // No temporary is left next to the run dir.
        assert_eq!(w.runs.names().unwrap(), vec![OsStr::new("r-1")]);

        // The canonical catalogue appears later: a second call adds the link.
        std::fs::create_dir(w.canonical.catalogue()).unwrap();
        assert_eq!(
            prepare(&w.runs, &key("r-1"), &w.canonical, &[]).unwrap(),
            abra
        );
        assert_eq!(
            std::fs::read_link(abra.join("catalogue")).unwrap(),
            w.canonical.catalogue()
        );
    }

    #[test]
    fn reuse_refuses_wrong_links_and_symlinked_dirs() {
        let w = world(true);
        let abra = prepare(&w.runs, &key("r-1"), &w.canonical, &[]).unwrap();
        let refused = |w: &World| {
            format!(
                "{:#}",
                prepare(&w.runs, &key("r-1"), &w.canonical, &[]).unwrap_err()
            )
        };

        std::fs::remove_file(abra.join("servers")).unwrap();
        symlink("/elsewhere/servers", abra.join("servers")).unwrap();
        let e = refused(&w);
        assert!(e.contains("is not the expected symlink"), "{e}");
        assert!(e.contains("a symlink to /elsewhere/servers"), "{e}");
        assert!(e.contains("ccci-abradir clean"), "{e}");

        std::fs::remove_file(abra.join("servers")).unwrap();
        std::fs::create_dir(abra.join("servers")).unwrap();
        assert!(refused(&w).contains("it is a directory"));
        std::fs::remove_dir(abra.join("servers")).unwrap();
        assert!(refused(&w).contains("it is missing"));
        symlink(w.canonical.servers(), abra.join("servers")).unwrap();

        std::fs::remove_file(abra.join("catalogue")).unwrap();
        symlink("/elsewhere", abra.join("catalogue")).unwrap();
        assert!(refused(&w).contains("catalogue is not the expected symlink"));
        std::fs::remove_file(abra.join("catalogue")).unwrap();

        std::fs::remove_dir(abra.join("recipes")).unwrap();
        symlink(w.canonical.root().join("recipes"), abra.join("recipes")).unwrap();
        let e = refused(&w);
        assert!(e.contains("is a symlink"), "{e}");
    }

    #[test]
    fn a_missing_canonical_recipe_or_servers_dir_is_refused() {
        let w = world(false);
        let e = Recipe::resolve(&w.canonical, &["wp".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("canonical recipe 'wp' not found"));
        std::fs::remove_dir(w.canonical.servers()).unwrap();
        let e = Canonical::open(w.canonical.root()).unwrap_err();
        assert!(format!("{e:#}").contains("has no servers/ directory"));
    }

    #[test]
    fn clean_removes_the_run_and_its_temporaries_only() {
        let w = world(true);
        std::fs::write(w.canonical.servers().join("keep.env"), "X=1").unwrap();
        prepare(&w.runs, &key("r-1"), &w.canonical, &[]).unwrap();
        prepare(&w.runs, &key("r-2"), &w.canonical, &[]).unwrap();
        std::fs::create_dir(w.runs.join(".r-1.99.tmp")).unwrap();
        clean(w.runs.path(), &key("r-1")).unwrap();
        clean(w.runs.path(), &key("r-1")).unwrap();
        assert_eq!(w.runs.names().unwrap(), vec![OsStr::new("r-2")]);
        assert!(w.canonical.servers().join("keep.env").exists());
        assert!(w.canonical.catalogue().is_dir());
        clean(&w.runs.join("missing-runs-dir"), &key("r-1")).unwrap();
    }
}
