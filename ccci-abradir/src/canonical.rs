//! The canonical abra dir a run's tree links to and clones from, and the
//! recipes asked for: checked before anything is created, so a run whose
//! canonical dir or recipe is missing is refused with nothing to clean up
//! (and never with a `servers` link that dangles). Nothing here writes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ccci_common::dirs;
use ccci_common::names::{self, quote_path};

use crate::{CATALOGUE, RECIPES, SERVERS};

/// A recipe NAME as given to `--recipe`: the grammar of a DOMAIN (one path
/// component of `[A-Za-z0-9._-]`, starting with a letter or digit, so never
/// `..` nor one of our hidden temporaries). Shaped for clap's `value_parser`.
pub fn recipe_name(value: &str) -> Result<String, String> {
    names::domain(value).map_err(|_| {
        format!(
            "not a valid recipe name: it must be 1-{} bytes of letters, digits, '.', '_' or \
             '-', starting with a letter or digit",
            names::DOMAIN_MAX
        )
    })
}

/// The canonical abra dir: read (and linked to), never written. It is not
/// held to the ownership rule of the directories we write into, but every
/// path taken from it is absolute, so the links stay right wherever abra runs.
#[derive(Debug, Clone)]
pub struct Canonical {
    root: PathBuf,
}

impl Canonical {
    /// Checks `path` (made absolute, symlinks not resolved): it must be a
    /// directory with a `servers/` directory, or the run's `servers` link
    /// would dangle and abra could not record its apps.
    pub fn open(path: &Path) -> anyhow::Result<Canonical> {
        let root = dirs::absolute(path);
        let how =
            "set --canonical or CCCI_CANONICAL_ABRA_DIR to the abra dir the server was added to";
        match std::fs::metadata(&root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => bail!(
                "canonical abra dir {} is not a directory; {how}",
                quote_path(&root)
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "canonical abra dir {} does not exist; {how}",
                quote_path(&root)
            ),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot read canonical abra dir {}", quote_path(&root))
                })
            }
        }
        let canonical = Canonical { root };
        let servers = canonical.servers();
        if !servers.is_dir() {
            bail!(
                "canonical abra dir {} has no servers/ directory ({} is missing or not a \
                 directory); add the server there first (ABRA_DIR={} abra server add …), or {how}",
                quote_path(&canonical.root),
                quote_path(&servers),
                quote_path(&canonical.root)
            );
        }
        Ok(canonical)
    }

    /// The canonical dir's absolute path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The target of every run's `servers` link.
    pub fn servers(&self) -> PathBuf {
        self.root.join(SERVERS)
    }

    /// The target of every run's `catalogue` link.
    pub fn catalogue(&self) -> PathBuf {
        self.root.join(CATALOGUE)
    }

    /// Whether the canonical dir has a catalogue (a run gets the link then).
    pub fn has_catalogue(&self) -> bool {
        self.catalogue().exists()
    }

    /// The canonical clone of recipe `name`, which must be a directory.
    pub fn recipe(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.root.join(RECIPES).join(name);
        if !path.is_dir() {
            bail!(
                "canonical recipe {} not found: {} is missing or not a directory; fetch it \
                 into the canonical abra dir first (ABRA_DIR={} abra recipe fetch {name})",
                names::shell_quote(name),
                quote_path(&path),
                quote_path(&self.root)
            );
        }
        Ok(path)
    }
}

/// A recipe to clone: its name and its canonical clone.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The name, `recipes/NAME`.
    pub name: String,
    /// The canonical clone it is cloned from.
    pub source: PathBuf,
}

impl Recipe {
    /// Looks `names` up in `canonical`; fails, before anything is created,
    /// when one is missing. Duplicates are dropped.
    pub fn resolve(canonical: &Canonical, names: &[String]) -> anyhow::Result<Vec<Recipe>> {
        let mut out: Vec<Recipe> = Vec::new();
        for name in names {
            if out.iter().all(|r| &r.name != name) {
                out.push(Recipe {
                    name: name.clone(),
                    source: canonical.recipe(name)?,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_names() {
        for ok in ["wordpress", "keycloak-collabora", "a_b.c", "0"] {
            assert_eq!(recipe_name(ok).as_deref(), Ok(ok));
        }
        for bad in ["", ".", "..", "../x", "a/b", ".wp.1.tmp", "-x", "a b"] {
            let e = recipe_name(bad).unwrap_err();
            assert!(e.contains("recipe name"), "{bad:?}: {e}");
        }
    }
}
