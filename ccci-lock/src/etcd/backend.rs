//! The etcd backend itself ([`Etcd`]): its connection and lease, the keys
//! it names, and the [`Backend`] operations built on the lock's queue
//! ([`super::queue`]): take a lock, probe an orphan, create a claim.
//!
//! Every request has a deadline, at most [`CALL_TIMEOUT`] and never past
//! `-w` (invariant 6 of [`super`]); taking a lock fails when etcd does not
//! answer within it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::anyhow;
use serde::de::DeserializeOwned;
use serde::Serialize;

use ccci_common::cli::UsageError;
use ccci_common::Domain;

use super::claim::EtcdClaim;
use super::client::{CallError, Client};
use super::config::{check_domain, Config};
use super::lease::Lease;
use super::messages::{
    Compare, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse, B64,
};
use super::queue::{range, Queued};
use crate::{Acquired, Backend, Holder, PassLock, Probe, Status, Wait};

/// The longest one request may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The etcd backend. Cheap to clone; one lease per process, granted when
/// first needed and shared by every lock the process takes.
#[derive(Debug, Clone)]
pub struct Etcd {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) client: Arc<Client>,
    pub(super) prefix: String,
    ttl: Duration,
    lease: Mutex<Option<Arc<Lease>>>,
    /// The lock name of a janitor pass: `P/janitor/<host>`, or `P/janitor`.
    pub(super) pass_name: String,
}

fn etcd_error(e: CallError) -> anyhow::Error {
    anyhow!(e)
}

/// Whether a failed call may succeed when asked again: etcd did not
/// answer. A refusal (permission denied, a token refused twice, a TLS
/// failure) stays one, so it is never waited out.
pub(super) fn is_unreachable(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<CallError>(),
        Some(CallError::Unreachable(_))
    )
}

/// The holder record of a claim's value; `None` when it is not one.
pub(super) fn holder_of(value: &B64) -> Option<Holder> {
    serde_json::from_slice(&value.0).ok()
}

pub(super) fn age_of(holder: Option<&Holder>) -> Duration {
    holder
        .and_then(|h| h.since.as_deref())
        .and_then(|s| humantime::parse_rfc3339(s).ok())
        .map_or(Duration::ZERO, |t| {
            SystemTime::now()
                .duration_since(t)
                .unwrap_or(Duration::ZERO)
        })
}

impl Etcd {
    /// A backend for `config`. Nothing is contacted yet.
    pub fn new(config: Config) -> Etcd {
        let pass_name = format!("{}/janitor", config.prefix);
        Etcd::with_pass_name(config, pass_name)
    }

    /// The backend of a janitor of `host`: its pass lock is `host`'s own,
    /// `P/janitor/<host>`, so a pass on one host never keeps another host's
    /// janitor from settling that host's claims. `host` must be usable as
    /// one part of a key: [`check_host`](super::check_host).
    pub fn for_janitor_of(config: Config, host: &str) -> Etcd {
        let pass_name = format!("{}/janitor/{host}", config.prefix);
        Etcd::with_pass_name(config, pass_name)
    }

    fn with_pass_name(config: Config, pass_name: String) -> Etcd {
        Etcd {
            inner: Arc::new(Inner {
                client: Arc::new(Client::new(
                    config.endpoints,
                    &config.tls,
                    config.auth.as_ref(),
                )),
                prefix: config.prefix,
                ttl: config.ttl,
                lease: Mutex::new(None),
                pass_name,
            }),
        }
    }

    pub(super) fn call<Q: Serialize, A: DeserializeOwned + Default>(
        &self,
        path: &str,
        body: &Q,
        limit: Option<Instant>,
    ) -> anyhow::Result<A> {
        let mut deadline = Instant::now() + CALL_TIMEOUT;
        if let Some(limit) = limit {
            deadline = deadline.min(limit);
        }
        self.inner
            .client
            .call(path, body, deadline)
            .map_err(etcd_error)
    }

    pub(super) fn txn(
        &self,
        txn: &TxnRequest,
        limit: Option<Instant>,
    ) -> anyhow::Result<TxnResponse> {
        self.call("/v3/kv/txn", txn, limit)
    }

    pub(super) fn lock_name(&self, domain: &Domain) -> String {
        format!("{}/lock/{domain}", self.inner.prefix)
    }

    pub(super) fn claim_key(&self, domain: &Domain) -> String {
        format!("{}/claim/{domain}", self.inner.prefix)
    }

    /// The process's lease, granted now if there is none (or it was lost).
    pub(super) fn lease(&self, limit: Option<Instant>) -> anyhow::Result<Arc<Lease>> {
        let mut slot = self.inner.lease.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lease) = slot.as_ref().filter(|l| !l.is_lost()) {
            return Ok(Arc::clone(lease));
        }
        let mut deadline = Instant::now() + CALL_TIMEOUT;
        if let Some(limit) = limit {
            deadline = deadline.min(limit);
        }
        let lease = Arc::new(
            Lease::grant(Arc::clone(&self.inner.client), self.inner.ttl, deadline)
                .map_err(etcd_error)?,
        );
        *slot = Some(Arc::clone(&lease));
        Ok(lease)
    }

    pub(super) fn read_claim(
        &self,
        domain: &Domain,
        limit: Option<Instant>,
    ) -> anyhow::Result<Option<Option<Holder>>> {
        let answer: RangeResponse = self.call(
            "/v3/kv/range",
            &RangeRequest::key(&self.claim_key(domain)),
            limit,
        )?;
        Ok(answer.first().map(|kv| holder_of(&kv.value)))
    }
}

impl Etcd {
    /// [`Backend::acquire`], queuing with `record` in our lock key when
    /// given; then, woken as the holder before us released, the claim may
    /// already hold `record` ([`EtcdClaim::take_handed`]).
    fn acquire_with(
        &self,
        domain: &Domain,
        wait: Wait,
        waiting: &mut dyn FnMut(Option<&Holder>),
        record: Option<&Holder>,
    ) -> anyhow::Result<Acquired<EtcdClaim>> {
        let limit = match wait {
            // An instant beyond the clock's range: as good as forever.
            Wait::AtMost(d) => Instant::now().checked_add(d),
            _ => None,
        };
        let lease = self.lease(limit)?;
        let name = self.lock_name(domain);
        let (queued, first) = match record {
            Some(record) => {
                // A wrap: with nobody queued, the lock and the claim in one
                // write (the claim stamped now, as `stamp` would).
                let stamped = record.clone().stamped_now();
                let claim_key = self.claim_key(domain);
                let (queued, first, claimed) = self.enqueue_claiming(
                    &name,
                    &lease,
                    limit,
                    B64(serde_json::to_vec(record)?),
                    (&claim_key, B64(serde_json::to_vec(&stamped)?)),
                )?;
                if claimed {
                    let mut claim = self.claim(lease, domain, queued, None);
                    claim.claimed_alone(stamped);
                    return Ok(Acquired::Held(claim));
                }
                (queued, first)
            }
            None => self.enqueue(&name, &lease, limit)?,
        };
        if first {
            return Ok(Acquired::Held(self.claim(lease, domain, queued, None)));
        }
        let busy = |this: &Etcd, queued: &Queued| -> anyhow::Result<Acquired<EtcdClaim>> {
            this.withdraw(&queued.key);
            let holder = this.read_claim(domain, None).ok().flatten().flatten();
            Ok(Acquired::Busy(holder))
        };
        if wait == Wait::Never {
            return busy(self, &queued);
        }
        let mut told = false;
        let mut tell = || {
            if !std::mem::replace(&mut told, true) {
                let holder = self.read_claim(domain, limit).ok().flatten().flatten();
                waiting(holder.as_ref());
            }
        };
        match self.wait_turn(&name, &queued, &lease, limit, &mut tell) {
            Ok(true) => {
                let mut claim = self.claim(lease, domain, queued, None);
                if let Some(record) = record {
                    claim.take_handed(record, limit);
                }
                Ok(Acquired::Held(claim))
            }
            Ok(false) => busy(self, &queued),
            Err(e) => {
                self.withdraw(&queued.key);
                if limit.is_some_and(|l| Instant::now() >= l) && !lease.is_lost() {
                    return busy(self, &queued);
                }
                Err(e)
            }
        }
    }
}

impl Backend for Etcd {
    type Claim = EtcdClaim;

    fn check_domain(&self, domain: &Domain) -> Result<(), UsageError> {
        check_domain(domain)
    }

    /// `P/janitor/<host>`, a lock like a domain's, taken without waiting. A
    /// dry run only looks: any key under it means a pass is running.
    fn pass_lock(&self, create: bool) -> anyhow::Result<PassLock> {
        self.pass(create)
    }

    fn acquire(
        &self,
        domain: &Domain,
        wait: Wait,
        waiting: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<Acquired<EtcdClaim>> {
        self.acquire_with(domain, wait, waiting, None)
    }

    /// Queues with `record` in our lock key, so that the holder before us
    /// can write it into the claim as it releases (the `claim` module).
    fn acquire_as(
        &self,
        domain: &Domain,
        wait: Wait,
        waiting: &mut dyn FnMut(Option<&Holder>),
        record: &Holder,
    ) -> anyhow::Result<Acquired<EtcdClaim>> {
        self.acquire_with(domain, wait, waiting, Some(record))
    }

    /// Two round trips for an orphan: one read (the claim, and whether any
    /// lock key exists: a transaction of reads only, which etcd answers
    /// without a write), then our key queued in a transaction that also
    /// reads the claim again, as it is once the lock is ours.
    fn probe(&self, domain: &Domain) -> anyhow::Result<Probe<EtcdClaim>> {
        let name = self.lock_name(domain);
        let pfx = format!("{name}/");
        let claim_key = self.claim_key(domain);
        let look = self.txn(
            &TxnRequest {
                compare: vec![],
                success: vec![
                    range(&claim_key),
                    RequestOp::Range(RangeRequest {
                        count_only: Some(true),
                        ..RangeRequest::prefix(&pfx)
                    }),
                ],
                failure: vec![],
            },
            None,
        )?;
        let Some(kv) = look.range(0).first() else {
            return Ok(Probe::Missing);
        };
        let holder = holder_of(&kv.value);
        if look.range(1).count.0 > 0 {
            let age = age_of(holder.as_ref());
            return Ok(Probe::Held { holder, age });
        }
        let lease = self.lease(None)?;
        let (queued, first, now) = self.enqueue_reading(&name, &lease, None, Some(&claim_key))?;
        if !first {
            self.withdraw(&queued.key);
            let age = age_of(holder.as_ref());
            return Ok(Probe::Held { holder, age });
        }
        let mut claim = self.claim(lease, domain, queued, None);
        // Read again with our key queued, owning the lock: a claim deleted
        // or rewritten since the first look belongs to whoever got there
        // first.
        match now {
            None => Ok(Probe::Moved),
            Some(kv) => {
                claim.holder = holder_of(&kv.value);
                Ok(Probe::Acquired(claim))
            }
        }
    }

    fn create(&self, domain: &Domain) -> anyhow::Result<Option<EtcdClaim>> {
        let lease = self.lease(None)?;
        let (queued, first) = self.enqueue(&self.lock_name(domain), &lease, None)?;
        if !first {
            self.withdraw(&queued.key);
            return Ok(None);
        }
        let claim_key = self.claim_key(domain);
        // The claim names this host from its first write on: a janitor that
        // dies before it stamps its own record leaves a claim that its
        // host's next pass still knows as its own (a claim naming no host
        // is nobody's, and left alone).
        let record = Holder {
            reaper: Some(true),
            ..Holder::this_process(None)
        };
        let answer = self.txn(
            &TxnRequest {
                compare: vec![
                    Compare::created_at(&claim_key, 0),
                    Compare::created_at(&queued.key, queued.rev),
                ],
                success: vec![RequestOp::Put(PutRequest {
                    key: B64::of(&claim_key),
                    lease: None,
                    value: B64(serde_json::to_vec(&record)?),
                })],
                failure: vec![],
            },
            None,
        )?;
        let claim = self.claim(lease, domain, queued, Some(record));
        if answer.succeeded {
            Ok(Some(claim))
        } else {
            Ok(None) // the claim exists (or our lease just ended): someone else's
        }
    }

    fn domains(&self) -> anyhow::Result<Vec<Domain>> {
        self.claimed()
    }

    fn list(&self) -> anyhow::Result<Vec<Status>> {
        self.statuses()
    }
}
