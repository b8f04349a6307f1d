//! `ccci-lock --release` (see "How a hold ends" in [`super`]): the
//! caller's side. It asks each domain's keeper to release it, for a request
//! naming the keeper's own PID, and refuses, releasing nothing, when any
//! domain is held by anyone else; the lockfile is unlinked only by the
//! keeper, which holds the lock, never by the releaser itself.

use std::path::Path;

use ccci_common::names::quote_path;
use ccci_common::{exit, say, Domain};

use crate::backend::{Job, Locks};
use crate::report::describe;
use crate::{Backend, FlockDir};

use super::channel::{ask, Answer};
use super::{state, State};

/// `ccci-lock --release`: see the module doc. 0 when every domain was held
/// for `parent` and is released; 1 when some were not held (the others are
/// released); 125, releasing nothing, when any is held by someone else.
///
/// With etcd, who holds a domain is read from its claim on etcd, and its
/// keeper is reached through its socket in the host's `lock_dir`: a domain
/// held by a keeper on another host is refused (125).
pub fn release(
    parent: u32,
    locks: &Locks,
    lock_dir: &Path,
    domains: &[Domain],
) -> anyhow::Result<u8> {
    let dir = FlockDir::open(lock_dir, false)?;
    let job = ReleaseOn {
        dir: dir.as_ref(),
        parent,
        domains,
    };
    match locks.run_if_local(dir.as_ref(), job)? {
        Some(status) => Ok(status),
        None => {
            for domain in domains {
                say!(
                    "{domain} is not held (no lock dir {})",
                    quote_path(lock_dir)
                );
            }
            Ok(exit::FAILURE)
        }
    }
}

/// [`release_on`] as a [`Job`].
pub(super) struct ReleaseOn<'a> {
    dir: Option<&'a FlockDir>,
    parent: u32,
    domains: &'a [Domain],
}

impl Job for ReleaseOn<'_> {
    type Output = u8;

    fn run<B>(self, backend: &B) -> anyhow::Result<u8>
    where
        B: Backend + Clone + Send + 'static,
        B::Claim: Send + 'static,
    {
        release_on(backend, self.dir, self.parent, self.domains)
    }
}

pub(super) fn release_on<B: Backend>(
    backend: &B,
    dir: Option<&FlockDir>,
    parent: u32,
    domains: &[Domain],
) -> anyhow::Result<u8> {
    let mut by_keeper: Vec<(u32, Vec<&Domain>)> = Vec::new();
    let mut not_held = false;
    let mut refused = false;
    for domain in domains {
        match state(backend, domain, parent)? {
            State::Keeper(keeper) => match by_keeper.iter_mut().find(|(k, _)| *k == keeper) {
                Some((_, list)) => list.push(domain),
                None => by_keeper.push((keeper, vec![domain])),
            },
            State::Free { last } => {
                not_held = true;
                match last.filter(|h| h.parent == Some(parent)) {
                    Some(h) => say!(
                        "{domain} is not held: its keeper for pid {parent} (pid {}) is gone; \
                         the lockfile stays for ccci-janitor",
                        h.pid.map_or("?".into(), |p| p.to_string())
                    ),
                    None => say!("{domain} is not held"),
                }
            }
            State::Other(holder, locker) => {
                refused = true;
                say!(
                    "{domain} is held by {}, not for pid {parent}; refusing to release it",
                    describe(holder.as_ref(), locker)
                );
            }
            State::Elsewhere(host) => {
                refused = true;
                say!(
                    "{domain} is held by a keeper for pid {parent} on host {host}, not on this \
                     host; run --release there; refusing to release it"
                );
            }
        }
    }
    if refused {
        say!("nothing released");
        return Ok(exit::TOOL_FAILED);
    }
    let mut failed = false;
    for (keeper, list) in by_keeper {
        let answers = match ask(dir, keeper, "release", parent, &list) {
            Ok(Some(answers)) => answers,
            Ok(None) => {
                not_held = true;
                for domain in &list {
                    say!(
                        "{domain} is not held: its keeper for pid {parent} (pid {keeper}) is \
                         gone; the lockfile stays for ccci-janitor"
                    );
                }
                continue;
            }
            Err(e) => {
                say!("{e:#}");
                failed = true;
                continue;
            }
        };
        for (domain, answer) in list.iter().zip(answers) {
            match answer {
                Answer::Released => {}
                Answer::NotHeld | Answer::Held => {
                    not_held = true;
                    say!("{domain} is not held for pid {parent} (any more)");
                }
                Answer::Failed(why) => {
                    failed = true;
                    say!("{domain}: {why}");
                }
            }
        }
    }
    Ok(if failed {
        exit::TOOL_FAILED
    } else if not_held {
        exit::FAILURE
    } else {
        exit::SUCCESS
    })
}
