//! What the janitor and `--list` read of etcd: every claim and every held
//! lock under the prefix, and the lock of a janitor pass.
//!
//! Looking never queues (invariant 5 of [`super`]): these are reads, and a
//! dry run's look at the pass lock only counts its keys.

use std::sync::Arc;

use ccci_common::Domain;

use super::backend::{holder_of, Etcd};
use super::lease::Lease;
use super::messages::{KeyValue, RangeRequest, RangeResponse};
use crate::{PassLock, Status};

impl Etcd {
    /// Takes the lock of a janitor pass (`P/janitor/<host>`, see
    /// [`Etcd::for_janitor_of`]) without waiting; `None` when another pass
    /// holds it. Dropping the answer releases it.
    pub fn try_pass(&self) -> anyhow::Result<Option<PassGuard>> {
        let lease = self.lease(None)?;
        let (queued, first) = self.enqueue(&self.inner.pass_name, &lease, None)?;
        if !first {
            self.withdraw(&queued.key);
            return Ok(None);
        }
        Ok(Some(PassGuard {
            etcd: self.clone(),
            _lease: lease,
            key: queued.key,
        }))
    }

    /// Domains below `P/<what>/`, for keys whose next part is one: parsed
    /// here, where they come in; other keys are left out.
    fn names_below(&self, what: &str, keys: &[KeyValue]) -> Vec<Domain> {
        let pfx = format!("{}/{what}/", self.inner.prefix);
        let mut out: Vec<Domain> = keys
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8(kv.key.0.clone()).ok()?;
                let rest = key.strip_prefix(&pfx)?;
                let domain = rest.split('/').next()?;
                Domain::parse(domain).ok()
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn below(&self, what: &str, keys_only: bool) -> anyhow::Result<RangeResponse> {
        let pfx = format!("{}/{what}/", self.inner.prefix);
        self.call(
            "/v3/kv/range",
            &RangeRequest {
                keys_only: Some(keys_only),
                ..RangeRequest::prefix(&pfx)
            },
            None,
        )
    }

    /// The janitor's pass lock ([`crate::Backend::pass_lock`]): `P/janitor/<host>`,
    /// a lock like a domain's, taken without waiting. A dry run only looks:
    /// any key under it means a pass is running.
    pub(super) fn pass(&self, create: bool) -> anyhow::Result<PassLock> {
        if create {
            return Ok(match self.try_pass()? {
                Some(guard) => PassLock::Held(Box::new(guard)),
                None => PassLock::Busy,
            });
        }
        let pfx = format!("{}/", self.inner.pass_name);
        let queue: RangeResponse = self.call(
            "/v3/kv/range",
            &RangeRequest {
                count_only: Some(true),
                ..RangeRequest::prefix(&pfx)
            },
            None,
        )?;
        Ok(if queue.count.0 > 0 {
            PassLock::Busy
        } else {
            PassLock::Missing
        })
    }

    /// The domains with a claim ([`crate::Backend::domains`]).
    pub(super) fn claimed(&self) -> anyhow::Result<Vec<Domain>> {
        let claims = self.below("claim", true)?;
        Ok(self.names_below("claim", &claims.kvs))
    }

    /// Every claim and every held lock ([`crate::Backend::list`]), by domain.
    pub(super) fn statuses(&self) -> anyhow::Result<Vec<Status>> {
        let claims = self.below("claim", false)?;
        let locks = self.below("lock", true)?;
        let held = self.names_below("lock", &locks.kvs);
        let pfx = format!("{}/claim/", self.inner.prefix);
        let mut out: Vec<Status> = claims
            .kvs
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8(kv.key.0.clone()).ok()?;
                let domain = Domain::parse(key.strip_prefix(&pfx)?).ok()?;
                Some(Status {
                    held: held.binary_search(&domain).is_ok(),
                    domain,
                    holder: holder_of(&kv.value),
                    locker: None,
                })
            })
            .collect();
        // A lock taken an instant ago, whose claim is not written yet.
        for domain in held {
            if !out.iter().any(|s| s.domain == domain) {
                out.push(Status {
                    domain,
                    held: true,
                    holder: None,
                    locker: None,
                });
            }
        }
        out.sort_by(|a, b| a.domain.cmp(&b.domain));
        Ok(out)
    }
}

/// The lock of a janitor pass; released on drop.
#[derive(Debug)]
pub struct PassGuard {
    etcd: Etcd,
    _lease: Arc<Lease>,
    key: String,
}

impl Drop for PassGuard {
    fn drop(&mut self) {
        self.etcd.withdraw(&self.key);
    }
}
