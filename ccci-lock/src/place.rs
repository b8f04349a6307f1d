//! Where this host's runs claim, recorded in the host's lock dir, so that a
//! janitor never looks in the wrong place (SPEC §4 "The janitor looks where
//! the runs claim").
//!
//! A janitor reaps a deployed app that has no claim (rule 3). A janitor
//! that looks at another backend than the host's runs, or at another etcd
//! prefix, finds no claim for any live app, and would reap them all. So:
//!
//! - **A run records its place before it claims.** Every holder (a wrap,
//!   `--hold`), on files or on etcd, first makes sure that the lock dir of
//!   its host (`--lock-dir`, `CCCI_APP_LOCK_DIR`, the configuration file or
//!   the default: the same resolution as the janitor's) has the record
//!   `.claims-in.<place>` of its [`Place`]. Present: one `fstatat`, nothing
//!   more. Missing: the run takes the records lock (`.records.lock`,
//!   exclusive, with the lock protocol, waiting as `-n`/`-w` say), writes
//!   the record (write, then rename), and removes the records lock while
//!   holding it.
//! - **A janitor checks the records before it looks, and again before it
//!   reaps.** A pass reads every record of the host's lock dir first (a
//!   janitor on etcd reads its host's lock dir too). One that names another
//!   place: the whole pass is refused (125), saying where the runs claim
//!   and how to point the janitor there; nothing is probed or reaped. Before
//!   its first reap, with that domain's claim held, the pass takes the
//!   records lock (a janitor on etcd creates its host's lock dir for it when
//!   missing) and reads the records again; one naming another place now
//!   ends the pass there, nothing reaped (125). It keeps the records lock
//!   to the end of the pass and removes it while holding it.
//!
//! Why no interleaving reaps a live app: a run's claim exists only after
//! its record does, and a reap happens only under the records lock. If the
//! record was written before the pass took the records lock, the pass reads
//! it and refuses before it reaps. If not, the run's write waits for the
//! records lock, so the run claims, and deploys, only after the pass has
//! ended: no reap of that pass overlaps it. The next pass reads the record
//! and refuses. A run whose record is already there never waits, and a pass
//! that only looks (young and live claims, `-v`, `--json`, a dry run) never
//! takes the records lock, so it never keeps a first run waiting either
//! (SPEC §2 "Looking never blocks anyone").
//!
//! The record names a place, not a run, and stays until removed by hand
//! (after moving a host from files to etcd, say: remove the old record
//! once no run uses that place any more; `ccci-janitor --check` names it),
//! or until a reboot empties a lock dir on tmpfs. Two spellings of one etcd
//! cluster (`localhost` and `127.0.0.1`) are two places: the janitor
//! refuses rather than guess. With one configuration file they agree.

use std::fmt;
use std::path::Path;

use anyhow::Context;
use ccci_common::fs::{FileErrorKind, OpenHow, SafeDir};
use ccci_common::names::quote_path;

use crate::protocol::Wait;
use crate::FlockDir;

/// The record files' names start with this.
pub const RECORD_PREFIX: &str = ".claims-in.";

/// The longest record read.
const MAX_RECORD: u64 = 64 * 1024;

/// A place where claims live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Lockfiles in the lock dir that holds the record.
    Files,
    /// etcd at these endpoints (sorted), under this prefix.
    Etcd {
        /// The endpoints, sorted.
        endpoints: Vec<String>,
        /// The key prefix.
        prefix: String,
    },
    /// A record this version cannot read: treated as another place.
    Unknown(String),
}

impl Place {
    /// The place of an etcd backend with these settings.
    pub fn etcd(endpoints: &[String], prefix: &str) -> Place {
        let mut endpoints = endpoints.to_vec();
        endpoints.sort();
        endpoints.dedup();
        Place::Etcd {
            endpoints,
            prefix: prefix.to_string(),
        }
    }

    /// The record's content: one line.
    fn line(&self) -> String {
        match self {
            Place::Files => "files\n".into(),
            Place::Etcd { endpoints, prefix } => {
                format!("etcd {prefix} {}\n", endpoints.join(","))
            }
            Place::Unknown(text) => format!("{text}\n"),
        }
    }

    fn parse(text: &str) -> Place {
        let line = text.strip_suffix('\n').unwrap_or(text);
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["files"] => Place::Files,
            ["etcd", prefix, endpoints] if !prefix.is_empty() && !endpoints.is_empty() => {
                Place::Etcd {
                    endpoints: endpoints.split(',').map(str::to_string).collect(),
                    prefix: prefix.to_string(),
                }
            }
            _ => Place::Unknown(line.chars().take(200).collect()),
        }
    }

    /// The record's file name: `.claims-in.files`, or `.claims-in.etcd-`
    /// and a hash of the endpoints and prefix.
    pub fn record_name(&self) -> String {
        match self {
            Place::Files => format!("{RECORD_PREFIX}files"),
            other => format!(
                "{RECORD_PREFIX}etcd-{:016x}",
                fnv1a(other.line().as_bytes())
            ),
        }
    }

    /// How to point a janitor at this place, for messages.
    pub fn how_to_point(&self) -> String {
        match self {
            Place::Files => "leave CCCI_ETCD_ENDPOINTS unset (no --etcd) and use the same \
                             lock dir as the runs"
                .into(),
            Place::Etcd { endpoints, prefix } => format!(
                "set CCCI_ETCD_ENDPOINTS={} and CCCI_ETCD_PREFIX={prefix} in the configuration \
                 file (or give --etcd and --etcd-prefix)",
                endpoints.join(",")
            ),
            Place::Unknown(_) => "read the record and remove it if no run claims there".into(),
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Files => f.write_str("in lockfiles of this lock dir"),
            Place::Etcd { endpoints, prefix } => {
                write!(f, "on etcd at {} under {prefix}", endpoints.join(","))
            }
            Place::Unknown(text) => write!(f, "somewhere this janitor cannot read ({text:?})"),
        }
    }
}

/// 64-bit FNV-1a: a stable name for a record (not a security measure: the
/// lock dir is ours alone, and the janitor reads every record's content).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What [`note`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noted {
    /// The record is there.
    Recorded,
    /// It had to be written, and a janitor pass that reaps (or another run
    /// writing its record) held the records lock for longer than `wait`
    /// allowed.
    Busy,
}

/// A run's side: makes sure the lock dir `dir` records `place` before the
/// run claims anything (see the module doc).
pub fn note(dir: &FlockDir, place: &Place, wait: Wait) -> anyhow::Result<Noted> {
    let name = place.record_name();
    let safe = dir.safe_dir();
    let present = |safe: &SafeDir| -> anyhow::Result<bool> {
        Ok(safe
            .stat(&name)
            .with_context(|| format!("cannot stat {}", quote_path(&safe.join(&name))))?
            .is_some())
    };
    if present(safe)? {
        return Ok(Noted::Recorded);
    }
    let Some(lock) = dir.lock_records(wait)? else {
        return Ok(Noted::Busy);
    };
    if !present(safe)? {
        safe.replace(&name, place.line().as_bytes())?;
    }
    lock.remove()?;
    Ok(Noted::Recorded)
}

/// What [`before_reaping`] found.
#[derive(Debug)]
pub enum Reaping {
    /// No record names another place: reap, holding this records lock to
    /// the end of the pass (then remove it while holding it).
    Clear(crate::flock::DirLock),
    /// Records that name another place than the janitor's, with their
    /// paths: reap nothing.
    Elsewhere(Vec<(std::path::PathBuf, Place)>),
    /// The records lock stayed busy for longer than the wait allowed.
    Busy,
}

/// A janitor's side, before the first reap of its pass: takes the records
/// lock of `dir`, waiting as `wait` says, and reads the records again (see
/// the module doc).
pub fn before_reaping(dir: &FlockDir, mine: &Place, wait: Wait) -> anyhow::Result<Reaping> {
    let Some(lock) = dir.lock_records(wait)? else {
        return Ok(Reaping::Busy);
    };
    let found = elsewhere(dir.safe_dir(), mine)?;
    Ok(if found.is_empty() {
        Reaping::Clear(lock)
    } else {
        lock.remove()?;
        Reaping::Elsewhere(found)
    })
}

/// A janitor's side: every place the lock dir `dir` records, with its
/// record's path.
pub fn recorded(dir: &SafeDir) -> anyhow::Result<Vec<(std::path::PathBuf, Place)>> {
    use std::io::Read;
    let mut names = Vec::new();
    dir.each_name(|name| {
        if let Some(name) = name.to_str().filter(|n| n.starts_with(RECORD_PREFIX)) {
            names.push(name.to_string());
        }
    })
    .with_context(|| format!("cannot read lock dir {}", quote_path(dir.path())))?;
    names.sort();
    let mut places = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let file = match dir.open_file(&name, OpenHow::Read) {
            Ok(file) => file,
            Err(e) if matches!(e.kind, FileErrorKind::Missing) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut text = String::new();
        file.take(MAX_RECORD)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read {}", quote_path(&path)))?;
        places.push((path, Place::parse(&text)));
    }
    Ok(places)
}

/// The records of `dir` that name another place than `mine`.
pub fn elsewhere(dir: &SafeDir, mine: &Place) -> anyhow::Result<Vec<(std::path::PathBuf, Place)>> {
    Ok(recorded(dir)?
        .into_iter()
        .filter(|(_, place)| place != mine)
        .collect())
}

/// The message for a pass refused because runs claim `elsewhere` while
/// this janitor looks at `mine`.
pub fn refusal(mine: &Place, lock_dir: &Path, elsewhere: &[(std::path::PathBuf, Place)]) -> String {
    let mut text = String::new();
    for (path, place) in elsewhere {
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(&format!(
            "runs of this host claim {place} ({} records it): {}",
            quote_path(path),
            place.how_to_point()
        ));
    }
    let looks = match mine {
        Place::Files => format!("in lockfiles of {}", quote_path(lock_dir)),
        other => other.to_string(),
    };
    format!(
        "refusing the pass: this janitor looks {looks}, where it would find no claim of \
         those runs and reap their live apps; {text}. If no run claims there any more, \
         remove the record"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let etcd = Place::etcd(&["http://b:2379".into(), "http://a:2379".into()], "/ccci");
        for place in [Place::Files, etcd.clone()] {
            assert_eq!(Place::parse(&place.line()), place);
        }
        assert_eq!(etcd.line(), "etcd /ccci http://a:2379,http://b:2379\n");
        assert!(etcd.record_name().starts_with(".claims-in.etcd-"));
        assert!(!etcd.record_name().ends_with(".lock"));
        let other = Place::etcd(&["http://a:2379".into()], "/other");
        assert_ne!(other.record_name(), etcd.record_name());
        assert!(matches!(Place::parse("nonsense here"), Place::Unknown(_)));
    }

    #[test]
    fn a_run_records_its_place_once_and_a_janitor_elsewhere_sees_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = FlockDir::open(&tmp.path().join("locks"), true)
            .unwrap()
            .unwrap();
        let etcd = Place::etcd(&["http://127.0.0.1:2379".into()], "/ccci");
        assert_eq!(note(&dir, &etcd, Wait::Never).unwrap(), Noted::Recorded);
        assert_eq!(note(&dir, &etcd, Wait::Never).unwrap(), Noted::Recorded);
        let safe = dir.safe_dir();
        assert!(elsewhere(safe, &etcd).unwrap().is_empty());
        let found = elsewhere(safe, &Place::Files).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, etcd);
        // The records lock was removed while held.
        assert!(!tmp.path().join("locks/.records.lock").exists());
    }

    #[test]
    fn a_record_that_must_be_written_waits_for_a_reaping_pass_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = FlockDir::open(&tmp.path().join("locks"), true)
            .unwrap()
            .unwrap();
        // A pass that only looks holds the pass lock, not the records lock.
        let looking = crate::protocol::Backend::pass_lock(&dir, true).unwrap();
        assert!(matches!(looking, crate::protocol::PassLock::Held(_)));
        let etcd = Place::etcd(&["http://a:2379".into()], "/ccci");
        assert_eq!(note(&dir, &etcd, Wait::Never).unwrap(), Noted::Recorded);
        drop(looking);
        // A pass that reaps holds the records lock: a missing record waits.
        let Reaping::Clear(reaping) = before_reaping(&dir, &etcd, Wait::Never).unwrap() else {
            panic!("the records name no other place than etcd's");
        };
        assert_eq!(note(&dir, &Place::Files, Wait::Never).unwrap(), Noted::Busy);
        assert!(recorded(dir.safe_dir()).unwrap().len() == 1);
        reaping.remove().unwrap();
        assert_eq!(
            note(&dir, &Place::Files, Wait::Never).unwrap(),
            Noted::Recorded
        );
        // Now a pass on etcd is told, before it reaps, where the new run claims.
        let Reaping::Elsewhere(found) = before_reaping(&dir, &etcd, Wait::Never).unwrap() else {
            panic!("a record names lockfiles");
        };
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, Place::Files);
        assert!(!tmp.path().join("locks/.records.lock").exists());
    }
}
