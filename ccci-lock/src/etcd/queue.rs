//! A lock's queue: our key put under `P/lock/D/` (or found there), taken
//! out, and waited on until it is the oldest (invariant 1 of [`super`]:
//! owner = oldest key).
//!
//! Waiting uses etcd's watch, re-opened every [`WATCH_SESSION`], never an
//! unbounded request; etcd not answering while the lease lives only
//! delays the wait (invariant 6).

use std::time::{Duration, Instant};

use anyhow::bail;

use super::backend::{is_unreachable, Etcd};
use super::lease::Lease;
use super::messages::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, Int, KeyValue, PutRequest, RangeRequest,
    RangeResponse, RequestOp, SortOrder, SortTarget, TxnRequest, TxnResponse, B64,
};
use super::watch::Watched;

/// How long one watch stays open before the waiter looks again.
pub(super) const WATCH_SESSION: Duration = Duration::from_secs(5);
/// The pause before a waiter asks again after etcd did not answer.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A key we put in a lock's queue.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) key: String,
    pub(super) rev: i64,
}

/// A read of `key` alone, as one operation of a transaction.
pub(super) fn range(key: &str) -> RequestOp {
    RequestOp::Range(RangeRequest::key(key))
}

/// The key under `pfx` created first (`Ascend`) or last (`Descend`),
/// without its value.
fn end_of_queue(pfx: &str, order: SortOrder) -> RangeRequest {
    RangeRequest {
        sort_order: Some(order),
        sort_target: Some(SortTarget::Create),
        limit: Some(Int(1)),
        keys_only: Some(true),
        ..RangeRequest::prefix(pfx)
    }
}

/// The transaction that puts our key `key` (with `value`) under `pfx`, or
/// finds it there, and reads the oldest key (and `also`, when given).
fn queue_txn(pfx: &str, key: &str, lease: &Lease, also: Option<&str>, value: B64) -> TxnRequest {
    let oldest = RequestOp::Range(end_of_queue(pfx, SortOrder::Ascend));
    let mut success = vec![
        RequestOp::Put(PutRequest {
            key: B64::of(key),
            lease: Some(Int(lease.id())),
            value,
        }),
        oldest.clone(),
    ];
    let mut failure = vec![range(key), oldest];
    if let Some(also) = also {
        success.push(range(also));
        failure.push(range(also));
    }
    TxnRequest {
        compare: vec![Compare::created_at(key, 0)],
        success,
        failure,
    }
}

/// What [`queue_txn`]'s answer says: our key's place, whether it is the
/// oldest, and `also` as read; `revision` is the revision the transaction
/// was applied at.
fn queued(
    name: &str,
    key: String,
    answer: &TxnResponse,
    also: Option<&str>,
    revision: i64,
) -> anyhow::Result<(Queued, bool, Option<KeyValue>)> {
    let rev = if answer.succeeded {
        revision
    } else {
        answer.range(0).first().map_or(0, |kv| kv.create_revision.0)
    };
    let first = answer.range(1).first().map_or(0, |kv| kv.create_revision.0);
    if rev == 0 || first == 0 {
        bail!("etcd gave an unexpected answer while locking {name}");
    }
    let read = also.and_then(|_| answer.range(2).first().cloned());
    Ok((Queued { key, rev }, first == rev, read))
}

impl Etcd {
    /// Puts our key in the queue of lock `name` (or finds it there) and
    /// tells whether it is the oldest.
    pub(super) fn enqueue(
        &self,
        name: &str,
        lease: &Lease,
        limit: Option<Instant>,
    ) -> anyhow::Result<(Queued, bool)> {
        self.enqueue_as(name, lease, limit, B64::default())
    }

    /// [`Etcd::enqueue`], with `value` in our key: the record of the
    /// holder we will be, for the holder before us to hand the lock over
    /// with (the `claim` module).
    pub(super) fn enqueue_as(
        &self,
        name: &str,
        lease: &Lease,
        limit: Option<Instant>,
        value: B64,
    ) -> anyhow::Result<(Queued, bool)> {
        self.queue_up(name, lease, limit, None, value)
            .map(|(queued, first, _)| (queued, first))
    }

    /// [`Etcd::enqueue_as`], taking the lock and writing the claim in one
    /// write when nobody is queued: a transaction that, when no key is
    /// under the lock's prefix, puts our key and `claim` (key, value) at
    /// once; otherwise it queues as [`Etcd::enqueue_as`] does, in a
    /// transaction inside the first. The third value says whether the
    /// claim was written (then we hold the lock and nobody waited).
    ///
    /// The claim is so written under our lock, as invariant 2 of
    /// [`super`] wants: in the revision that makes our key the only one,
    /// and so the oldest.
    pub(super) fn enqueue_claiming(
        &self,
        name: &str,
        lease: &Lease,
        limit: Option<Instant>,
        value: B64,
        claim: (&str, B64),
    ) -> anyhow::Result<(Queued, bool, bool)> {
        let pfx = format!("{name}/");
        let key = format!("{pfx}{:x}", lease.id());
        let put_key = RequestOp::Put(PutRequest {
            key: B64::of(&key),
            lease: Some(Int(lease.id())),
            value: value.clone(),
        });
        let answer = self.txn(
            &TxnRequest {
                compare: vec![Compare::none_under(&pfx)],
                success: vec![
                    put_key,
                    RequestOp::Put(PutRequest {
                        key: B64::of(claim.0),
                        lease: None,
                        value: claim.1,
                    }),
                ],
                failure: vec![RequestOp::Txn(Box::new(queue_txn(
                    &pfx, &key, lease, None, value,
                )))],
            },
            limit,
        )?;
        if answer.succeeded {
            let rev = answer.header.revision.0;
            return Ok((Queued { key, rev }, true, true));
        }
        let inner = answer
            .responses
            .first()
            .and_then(|op| op.response_txn.as_deref())
            .cloned()
            .unwrap_or_default();
        // A transaction's answer inside another has no revision of its
        // own: it is the outer one's.
        let (queued, first, _) = queued(name, key, &inner, None, answer.header.revision.0)?;
        Ok((queued, first, false))
    }

    /// [`Etcd::enqueue`], also reading the key `also` in the same
    /// transaction: when our key is the oldest, its value as it is under
    /// our lock (`None`: no such key), with no second round trip.
    pub(super) fn enqueue_reading(
        &self,
        name: &str,
        lease: &Lease,
        limit: Option<Instant>,
        also: Option<&str>,
    ) -> anyhow::Result<(Queued, bool, Option<KeyValue>)> {
        self.queue_up(name, lease, limit, also, B64::default())
    }

    fn queue_up(
        &self,
        name: &str,
        lease: &Lease,
        limit: Option<Instant>,
        also: Option<&str>,
        value: B64,
    ) -> anyhow::Result<(Queued, bool, Option<KeyValue>)> {
        let pfx = format!("{name}/");
        let key = format!("{pfx}{:x}", lease.id());
        let answer = self.txn(&queue_txn(&pfx, &key, lease, also, value), limit)?;
        let revision = answer.header.revision.0;
        queued(name, key, &answer, also, revision)
    }

    /// Takes our key out of a queue. Only our lease ever names it.
    pub(super) fn withdraw(&self, key: &str) {
        let _ = self.call::<_, DeleteRangeResponse>(
            "/v3/kv/deleterange",
            &DeleteRangeRequest::key(key),
            None,
        );
    }

    /// Waits until `queued` is the oldest key of lock `name` or `limit`
    /// passes (`Ok(false)`). While the lease lives, etcd being briefly
    /// unreachable (a restart, a leader election) only delays the wait:
    /// the waiter keeps its place until the lease itself is lost.
    pub(super) fn wait_turn(
        &self,
        name: &str,
        queued: &Queued,
        lease: &Lease,
        limit: Option<Instant>,
        mut waiting: impl FnMut(),
    ) -> anyhow::Result<bool> {
        let pfx = format!("{name}/");
        let can_retry = || !lease.is_lost() && limit.is_none_or(|l| Instant::now() < l);
        loop {
            // Our key (still ours?), the newest key older than ours, and
            // the oldest key.
            let look = TxnRequest {
                compare: vec![],
                success: vec![
                    range(&queued.key),
                    RequestOp::Range(RangeRequest {
                        max_create_revision: Some(Int(queued.rev - 1)),
                        ..end_of_queue(&pfx, SortOrder::Descend)
                    }),
                    RequestOp::Range(end_of_queue(&pfx, SortOrder::Ascend)),
                ],
                failure: vec![],
            };
            let answer = match self.txn(&look, limit) {
                Ok(answer) => answer,
                Err(e) if is_unreachable(&e) && can_retry() => {
                    std::thread::sleep(RETRY_PAUSE);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let ours = answer.range(0).first().map(|kv| kv.create_revision.0);
            if ours != Some(queued.rev) {
                bail!(
                    "lost the lease while waiting for {name}: etcd removed our place in the queue"
                );
            }
            let before = answer.range(1);
            let Some(before) = before.first() else {
                return Ok(true);
            };
            waiting();
            let session_end = Instant::now() + WATCH_SESSION;
            let until = limit.map_or(session_end, |l| l.min(session_end));
            if limit.is_some_and(|l| Instant::now() >= l) {
                return Ok(false);
            }
            let key = String::from_utf8_lossy(&before.key.0).into_owned();
            // When the key before ours is the oldest, its deletion makes
            // ours the oldest: no key created later can be older than ours.
            // Taking the lock then needs no second look (the claim's
            // guarded write still checks that our key is there).
            let oldest = answer.range(2).first().map(|kv| kv.create_revision.0);
            let next_is_oldest = oldest.is_some() && oldest == Some(before.create_revision.0);
            // A watch otherwise only tells us when to look again; a failed
            // one means looking again a little later. It watches from now
            // (see `watch_from_now`): whether the key went in between our
            // look and the watch is read once the watch is there.
            let gone = || match self.call::<_, RangeResponse>(
                "/v3/kv/range",
                &RangeRequest {
                    keys_only: Some(true),
                    ..RangeRequest::key(&key)
                },
                limit,
            ) {
                Ok(answer) if answer.first().is_some() => None,
                Ok(_) => Some(Watched::Deleted),
                Err(_) => Some(Watched::Changed),
            };
            match self.inner.client.watch_from_now(&key, until, &gone) {
                Ok(Watched::Deleted) if next_is_oldest => return Ok(true),
                Ok(_) => {}
                Err(_) => std::thread::sleep(RETRY_PAUSE),
            }
        }
    }
}
