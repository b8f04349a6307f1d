//! A lock we hold on etcd ([`EtcdClaim`]): the claim written and removed
//! only under our lock (invariant 2 of [`super`]: every write of `P/claim/D`
//! is a transaction comparing our lock key's create revision, so a holder
//! whose lease ended cannot touch it), and a lock lost reported at once
//! (invariant 4: a watch on our own lock key, beside the lease's clock).
//!
//! A hand-off costs one write: a holder that releases while a wrap waits
//! next in the queue writes that waiter's record (queued in its lock key,
//! [`crate::Backend::acquire_as`]) into the claim in the same guarded
//! transaction that deletes its own key, comparing the waiter's key too.
//! The claim so moves only under the lock (the releaser owns it until the
//! transaction, the waiter from it), and the waiter, woken, only reads
//! that the claim names it, where it would otherwise write it itself.

use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use ccci_common::supervise::LossNotifier;

use super::backend::{age_of, holder_of, is_unreachable, Etcd};
use super::lease::{Lease, OnLost};
use super::messages::{
    Compare, DeleteRangeRequest, Int, PutRequest, RangeRequest, RangeResponse, RequestOp,
    SortOrder, SortTarget, TxnRequest, TxnResponse, B64,
};
use super::queue::{Queued, RETRY_PAUSE, WATCH_SESSION};
use super::watch::Watched;
use crate::{Claim, Holder};
use ccci_common::Domain;

impl Etcd {
    /// The claim of `domain`, whose lock `queued` is now ours.
    pub(super) fn claim(
        &self,
        lease: Arc<Lease>,
        domain: &Domain,
        queued: Queued,
        holder: Option<Holder>,
    ) -> EtcdClaim {
        EtcdClaim {
            etcd: self.clone(),
            lease,
            domain: domain.clone(),
            queued,
            holder,
            released: false,
            watching: None,
            handed: None,
            alone: false,
        }
    }
}

/// A lock we hold on etcd. Dropping it releases the lock (deletes our key)
/// and keeps the claim.
#[derive(Debug)]
pub struct EtcdClaim {
    etcd: Etcd,
    lease: Arc<Lease>,
    domain: Domain,
    queued: Queued,
    pub(super) holder: Option<Holder>,
    released: bool,
    /// Set to stop the watch on our lock key ([`Claim::watch_loss`]) before
    /// we delete the key ourselves.
    watching: Option<Arc<AtomicBool>>,
    /// Our record, written into the claim by the holder before us as it
    /// handed the lock over (or by ourselves as we took the lock alone),
    /// until [`Claim::stamp`] takes it.
    handed: Option<Holder>,
    /// Nobody was queued when we took the lock: a release first tries the
    /// one transaction that deletes claim and key if still nobody waits.
    alone: bool,
}

/// Watches our lock key `key` (created at `rev`) until `stop` is set, and
/// reports a loss as soon as etcd deletes it: a lease revoked, the key
/// deleted by hand, or the lease expired while we were cut off. Every event
/// is checked with a read before it counts; etcd not answering is left to
/// the lease's own clock.
fn watch_key(etcd: &Etcd, key: &str, rev: i64, stop: &AtomicBool, lost: &LossNotifier) {
    let mut from = rev + 1;
    while !stop.load(Ordering::SeqCst) {
        let until = Instant::now() + WATCH_SESSION;
        let looked = match etcd.inner.client.watch_once(key, from, until) {
            Ok(Watched::Quiet) if Instant::now() >= until => continue,
            Ok(Watched::Deleted | Watched::Changed) => true,
            // Ended early or failed: look, then pause before watching again.
            Ok(Watched::Quiet) | Err(_) => false,
        };
        // Our own release deletes the key: nothing to look at.
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(answer) =
            etcd.call::<_, RangeResponse>("/v3/kv/range", &RangeRequest::key(key), None)
        {
            let ours = answer.first().map(|kv| kv.create_revision.0);
            if ours != Some(rev) {
                if !stop.load(Ordering::SeqCst) {
                    lost.notify();
                }
                return;
            }
            from = from.max(answer.header.revision.0 + 1);
        }
        if !looked {
            std::thread::sleep(RETRY_PAUSE);
        }
    }
}

impl EtcdClaim {
    /// Looks whether the holder before us wrote `record` into the claim as
    /// it handed the lock over: a read, while our key is still there. If
    /// it did not (or etcd does not answer), [`Claim::stamp`] writes the
    /// claim as always.
    pub(super) fn take_handed(&mut self, record: &Holder, limit: Option<Instant>) {
        let claim_key = self.etcd.claim_key(&self.domain);
        let look = TxnRequest {
            compare: vec![Compare::created_at(&self.queued.key, self.queued.rev)],
            success: vec![super::queue::range(&claim_key)],
            failure: vec![],
        };
        let Ok(answer) = self.etcd.txn(&look, limit) else {
            return;
        };
        if !answer.succeeded {
            return;
        }
        self.handed = answer
            .range(0)
            .first()
            .and_then(|kv| holder_of(&kv.value))
            .filter(|found| found.same_holder(record));
    }

    /// The lock was taken alone, its claim written with our key
    /// ([`Etcd::enqueue_claiming`]): `stamp` has nothing to write, and the
    /// release tries [`EtcdClaim::release_alone`] first.
    pub(super) fn claimed_alone(&mut self, stamped: Holder) {
        self.handed = Some(stamped);
        self.alone = true;
    }

    /// Deletes the claim and our key in one transaction if nobody is queued
    /// after us (every key under the lock created at our revision or
    /// before: ours alone); `false` when somebody is, or the transaction
    /// was not applied (the caller goes on as for a queue).
    fn release_alone(&self) -> bool {
        let txn = TxnRequest {
            compare: vec![
                Compare::created_at(&self.queued.key, self.queued.rev),
                Compare::none_under_after(&self.lock_prefix(), self.queued.rev),
            ],
            success: self.delete_claim_and_key_ops(),
            failure: vec![],
        };
        matches!(self.etcd.txn(&txn, None), Ok(answer) if answer.succeeded)
    }

    /// The next holder, if it is a wrap that queued its record: the oldest
    /// key after ours, its create revision, and that record.
    fn next_waiter(&self) -> Option<(String, i64, Holder)> {
        let pfx = self.lock_prefix();
        let next = RangeRequest {
            min_create_revision: Some(Int(self.queued.rev + 1)),
            sort_order: Some(SortOrder::Ascend),
            sort_target: Some(SortTarget::Create),
            limit: Some(Int(1)),
            ..RangeRequest::prefix(&pfx)
        };
        let answer: RangeResponse = self.etcd.call("/v3/kv/range", &next, None).ok()?;
        let kv = answer.first()?;
        let holder = holder_of(&kv.value)?;
        Some((
            String::from_utf8_lossy(&kv.key.0).into_owned(),
            kv.create_revision.0,
            holder,
        ))
    }

    /// Releases while handing the claim to the next waiter (see the module
    /// docs); `false` when there is none to hand it to, or the transaction
    /// was not applied (then the caller removes the claim as always).
    fn hand_over(&mut self) -> bool {
        let Some((key, rev, next)) = self.next_waiter() else {
            return false;
        };
        let Ok(value) = serde_json::to_vec(&next.stamped_now()) else {
            return false;
        };
        let claim_key = self.etcd.claim_key(&self.domain);
        let txn = TxnRequest {
            compare: vec![
                Compare::created_at(&self.queued.key, self.queued.rev),
                Compare::created_at(&key, rev),
            ],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: B64::of(&claim_key),
                    lease: None,
                    value: B64(value),
                }),
                RequestOp::DeleteRange(DeleteRangeRequest::key(&self.queued.key)),
            ],
            failure: vec![],
        };
        matches!(self.etcd.txn(&txn, None), Ok(answer) if answer.succeeded)
    }

    /// Deletes the claim and our lock key in one transaction, while we own
    /// the lock ([`EtcdClaim::guarded`]).
    fn delete_claim_and_key(&self) -> anyhow::Result<TxnResponse> {
        self.guarded(self.delete_claim_and_key_ops())
    }

    /// The two deletes of a release: the claim, then our lock key.
    fn delete_claim_and_key_ops(&self) -> Vec<RequestOp> {
        let claim_key = self.etcd.claim_key(&self.domain);
        vec![
            RequestOp::DeleteRange(DeleteRangeRequest::key(&claim_key)),
            RequestOp::DeleteRange(DeleteRangeRequest::key(&self.queued.key)),
        ]
    }

    /// The prefix of our lock's queue, `P/lock/D/`.
    fn lock_prefix(&self) -> String {
        format!("{}/", self.etcd.lock_name(&self.domain))
    }

    /// The fencing token: our lock key's create revision.
    pub fn revision(&self) -> i64 {
        self.queued.rev
    }

    /// Calls `listener` once if the lease under this lock is lost (at once
    /// if it already is).
    pub fn on_lost(&self, listener: OnLost) {
        self.lease.on_lost(listener);
    }

    /// A transaction doing `ops` only while we own the lock. While the
    /// lease lives, etcd not answering (a restart, a leader election) is
    /// waited out: the lock is ours until the lease is lost. A refusal is
    /// not: it would be refused again.
    fn guarded(&self, ops: Vec<RequestOp>) -> anyhow::Result<TxnResponse> {
        let txn = TxnRequest {
            compare: vec![Compare::created_at(&self.queued.key, self.queued.rev)],
            success: ops,
            failure: vec![],
        };
        loop {
            match self.etcd.txn(&txn, None) {
                Err(e) if is_unreachable(&e) && !self.lease.is_lost() => {
                    std::thread::sleep(RETRY_PAUSE)
                }
                answer => return answer,
            }
        }
    }
}

impl Claim for EtcdClaim {
    fn domain(&self) -> &Domain {
        &self.domain
    }

    fn stamp(&mut self, holder: &Holder) -> anyhow::Result<()> {
        if let Some(handed) = self.handed.take() {
            if handed.same_holder(holder) {
                self.holder = Some(handed);
                return Ok(());
            }
        }
        let key = self.etcd.claim_key(&self.domain);
        let value = serde_json::to_vec(holder)?;
        let answer = self.guarded(vec![RequestOp::Put(PutRequest {
            key: B64::of(&key),
            lease: None,
            value: B64(value),
        })])?;
        if !answer.succeeded {
            bail!(
                "lost the lock of {} before its claim could be written",
                self.domain
            );
        }
        self.holder = Some(holder.clone());
        Ok(())
    }

    fn age(&self) -> anyhow::Result<Duration> {
        Ok(age_of(self.holder.as_ref()))
    }

    fn holder(&self) -> Option<Holder> {
        self.holder.clone()
    }

    fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("CCCI_LOCK_DOMAIN", self.domain.as_str().into()),
            ("CCCI_LOCK_REVISION", self.queued.rev.to_string().into()),
        ]
    }

    /// Reported by the lease (lost by our clock, or etcd says it is gone:
    /// noticed at the next keep-alive) and, at once, by a watch on our own
    /// lock key: a revoked lease or a deleted key stops COMMAND within
    /// about a round trip, whatever the TTL.
    fn watch_loss(&mut self, notifier: LossNotifier) {
        let notifier = Arc::new(notifier);
        let by_lease = Arc::clone(&notifier);
        self.lease.on_lost(Box::new(move || by_lease.notify()));
        let stop = Arc::new(AtomicBool::new(false));
        if let Some(old) = self.watching.replace(Arc::clone(&stop)) {
            old.store(true, Ordering::SeqCst);
        }
        let etcd = self.etcd.clone();
        let key = self.queued.key.clone();
        let rev = self.queued.rev;
        let spawned = ccci_common::sys::spawn_without_signals("etcd-watch-key", move || {
            watch_key(&etcd, &key, rev, &stop, &notifier)
        });
        // Without the thread the lease still reports the loss, later.
        drop(spawned);
    }

    fn remove(mut self) -> anyhow::Result<()> {
        self.stop_watching();
        if self.alone && self.handed.is_none() && self.release_alone() {
            self.released = true;
            return Ok(());
        }
        if self.handed.is_none() && self.hand_over() {
            self.released = true;
            return Ok(());
        }
        let answer = self
            .delete_claim_and_key()
            .with_context(|| format!("cannot remove the claim of {}", self.domain))?;
        if !answer.succeeded {
            // Our key is gone. Either an attempt that timed out was applied
            // after all (etcd answered late), or the lease ended first. With
            // the claim gone, or naming the holder after us (a hand-over
            // that etcd applied but did not confirm), there is nothing left
            // to say: nothing of ours stays for the janitor.
            let ours = |h: &Option<Holder>| match (h, &self.holder) {
                (Some(found), Some(we)) => found.same_holder(we),
                _ => true,
            };
            let gone = match self.etcd.read_claim(&self.domain, None) {
                Ok(None) => true,
                Ok(Some(found)) => !ours(&found) && !self.lease.is_lost(),
                Err(_) => false,
            };
            if gone {
                self.released = true;
                return Ok(());
            }
            bail!(
                "lost the lock of {} before its claim could be removed; the claim stays for the janitor",
                self.domain
            );
        }
        self.released = true;
        Ok(())
    }
}

impl EtcdClaim {
    /// Ends the watch on our key: what follows deletes it.
    fn stop_watching(&mut self) {
        if let Some(stop) = self.watching.take() {
            stop.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for EtcdClaim {
    fn drop(&mut self) {
        self.stop_watching();
        // A lost lease took the key with it; etcd may not answer anyway.
        if !self.released && !self.lease.is_lost() {
            if self.handed.is_some() {
                // Nothing ran: the claim the holder before us wrote for us
                // goes with our key, as if we had never been handed it.
                let _ = self.delete_claim_and_key();
                return;
            }
            self.etcd.withdraw(&self.queued.key);
        }
    }
}
