//! Building, verifying and completing a run's tree (guarantees 1-4 of the
//! crate doc): made under a temporary name and renamed into place, or
//! reused only when every part is what it must be.

use ccci_common::names::quote_path;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ccci_common::fs::SafeDir;
use ccci_common::run::{Record, RunKey};
use nix::errno::Errno;
use nix::sys::stat::{FileStat, Mode};

use crate::*;

/// The existing directory `name` of a run's tree (`None` when missing),
/// refused when it is anything but a real directory of ours.
pub(crate) fn existing_dir(
    parent: &SafeDir,
    name: &str,
    run: &Path,
) -> anyhow::Result<Option<SafeDir>> {
    match parent.stat(name)? {
        None => Ok(None),
        Some(st) if !is_dir(&st) => Err(refusal(
            run,
            &format!(
                "{} is not a directory ({})",
                quote_path(&parent.join(name)),
                describe(parent, name)
            ),
        )),
        Some(_) => parent
            .subdir(&RUN_DIR, name, false)
            .map_err(|e| refusal(run, &format!("{e:#}"))),
    }
}

/// Builds the run's tree under a temporary name and renames it to `key`.
/// `Ok(None)`: another call of the same run renamed its tree first; ours is
/// gone and theirs is to be verified.
pub(crate) fn build(
    runs: &SafeDir,
    key: &RunKey,
    canonical: &Canonical,
    recipes: &[Recipe],
) -> anyhow::Result<Option<PathBuf>> {
    let name = key.key();
    let published = publish(runs, &name, |tmp| fill(runs, tmp, key, canonical, recipes))?;
    Ok(published.then(|| runs.join(&name)))
}

/// Makes `name` in `dir` complete or not at all: `make` fills a temporary
/// (`.<name>.<pid>.tmp`), which is then renamed to `name`, and removed
/// instead on any failure. `Ok(false)`: `name` appeared meanwhile (another
/// call of the same run got there first) and ours was dropped.
pub(crate) fn publish(
    dir: &SafeDir,
    name: &str,
    make: impl FnOnce(&str) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let tmp = temporary(name);
    // Left by an earlier process that had our pid and died mid-way.
    tree::remove_tree(dir, dir.path(), OsStr::new(&tmp))?;
    let renamed =
        make(&tmp).and_then(
            |()| match nix::fcntl::renameat(dir, tmp.as_str(), dir, name) {
                Ok(()) => Ok(true),
                Err(Errno::EEXIST) | Err(Errno::ENOTEMPTY) => Ok(false),
                Err(e) => Err(e).with_context(|| {
                    format!(
                        "cannot rename {} to {}",
                        quote_path(&dir.join(&tmp)),
                        quote_path(&dir.join(name))
                    )
                }),
            },
        );
    if !matches!(renamed, Ok(true)) {
        if let Err(e) = tree::remove_tree(dir, dir.path(), OsStr::new(&tmp)) {
            ccci_common::say!("{e:#}");
        }
    }
    renamed
}

/// Makes the complete layout in `runs/tmp`.
pub(crate) fn fill(
    runs: &SafeDir,
    tmp: &str,
    key: &RunKey,
    canonical: &Canonical,
    recipes: &[Recipe],
) -> anyhow::Result<()> {
    let run = create_dir(runs, tmp)?;
    Record::write(&run, key)?;
    let abra = create_dir(&run, ABRA)?;
    link(&abra, SERVERS, &canonical.servers())?;
    if canonical.has_catalogue() {
        link(&abra, CATALOGUE, &canonical.catalogue())?;
    }
    let private = create_dir(&abra, RECIPES)?;
    for recipe in recipes {
        git::clone_local(&recipe.source, &private.join(&recipe.name))?;
    }
    Ok(())
}

/// Verifies an existing run tree (see the crate doc) and adds what is missing.
pub(crate) fn reuse(
    run: &SafeDir,
    canonical: &Canonical,
    recipes: &[Recipe],
) -> anyhow::Result<()> {
    let refuse = |what: String| refusal(run.path(), &what);
    let abra = existing_dir(run, ABRA, run.path())?
        .ok_or_else(|| refuse(format!("{ABRA}/ is missing")))?;
    match read_link(&abra, SERVERS)? {
        Some(target) if target == canonical.servers() => {}
        Some(_) | None => {
            return Err(refuse(format!(
                "{} is not the expected symlink to {} ({})",
                quote_path(&abra.join(SERVERS)),
                quote_path(&canonical.servers()),
                describe(&abra, SERVERS)
            )))
        }
    }
    match read_link(&abra, CATALOGUE)? {
        Some(target) if target == canonical.catalogue() => {}
        None if abra.stat(CATALOGUE)?.is_none() => {
            if canonical.has_catalogue() {
                match link(&abra, CATALOGUE, &canonical.catalogue()) {
                    Ok(()) => {}
                    // A concurrent call of this run made it: verify that one.
                    Err(_) if read_link(&abra, CATALOGUE)? == Some(canonical.catalogue()) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        _ => {
            return Err(refuse(format!(
                "{} is not the expected symlink to {} ({})",
                quote_path(&abra.join(CATALOGUE)),
                quote_path(&canonical.catalogue()),
                describe(&abra, CATALOGUE)
            )))
        }
    }
    let private = existing_dir(&abra, RECIPES, run.path())?
        .ok_or_else(|| refuse(format!("{RECIPES}/ is missing")))?;
    for recipe in recipes {
        // A clone may be group-writable (git follows the umask), so it is
        // not held to the run dir's rules; it only has to be a directory.
        match private.stat(&recipe.name)? {
            Some(st) if is_dir(&st) => {}
            Some(_) => {
                return Err(refuse(format!(
                    "{} is not a directory ({})",
                    quote_path(&private.join(&recipe.name)),
                    describe(&private, &recipe.name)
                )))
            }
            None => add_recipe(&private, recipe)?,
        }
    }
    Ok(())
}

/// Clones `recipe` into an existing run's `recipes/`; a clone another call
/// of this run put there first is kept.
pub(crate) fn add_recipe(private: &SafeDir, recipe: &Recipe) -> anyhow::Result<()> {
    publish(private, &recipe.name, |tmp| {
        git::clone_local(&recipe.source, &private.join(tmp))
    })
    .map(drop)
}

pub(crate) fn create_dir(parent: &SafeDir, name: &str) -> anyhow::Result<SafeDir> {
    nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o700))
        .with_context(|| format!("cannot create {}", quote_path(&parent.join(name))))?;
    parent.subdir(&RUN_DIR, name, false)?.with_context(|| {
        format!(
            "{} vanished while being built",
            quote_path(&parent.join(name))
        )
    })
}

pub(crate) fn link(dir: &SafeDir, name: &str, target: &Path) -> anyhow::Result<()> {
    nix::unistd::symlinkat(target, dir, name).with_context(|| {
        format!(
            "cannot create symlink {} -> {}",
            quote_path(&dir.join(name)),
            quote_path(target)
        )
    })
}

/// The target of the symlink `name`; `None` when it is missing or not a symlink.
pub(crate) fn read_link(dir: &SafeDir, name: &str) -> anyhow::Result<Option<PathBuf>> {
    match nix::fcntl::readlinkat(dir, name) {
        Ok(target) => Ok(Some(PathBuf::from(target))),
        Err(Errno::ENOENT) | Err(Errno::EINVAL) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", quote_path(&dir.join(name)))),
    }
}

pub(crate) fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// What `name` is, for messages: "missing", "a directory", "a symlink to /x"…
pub(crate) fn describe(dir: &SafeDir, name: &str) -> String {
    let st = match dir.stat(name) {
        Ok(Some(st)) => st,
        Ok(None) => return "it is missing".into(),
        Err(e) => return format!("cannot stat it: {e}"),
    };
    match st.st_mode & libc::S_IFMT {
        libc::S_IFLNK => match read_link(dir, name) {
            Ok(Some(target)) => format!("it is a symlink to {}", quote_path(&target)),
            _ => "it is a symlink".into(),
        },
        libc::S_IFDIR => "it is a directory".into(),
        libc::S_IFREG => "it is a regular file".into(),
        _ => "it is a special file".into(),
    }
}
