//! The etcd backend (SPEC §8): the same lock protocol across hosts.
//!
//! # Keys
//!
//! For a key prefix `P` (default `/ccci`) and a DOMAIN `D`:
//! - `P/lock/D/<lease id in hex>`: one key per process that holds or waits
//!   for `D`'s lock, attached to that process's lease. This is exactly the
//!   layout of etcd's own lock (the `v3lock` service, `etcdctl lock`), so
//!   either kind of client excludes the other.
//! - `P/claim/D`: the claim, the lockfile's counterpart, holding the JSON
//!   holder record. It has no lease: it outlives a holder that dies.
//! - `P/janitor/<host>/<lease id>`: the lock of a janitor pass of `<host>`
//!   ([`Etcd::for_janitor_of`]). Each host's janitor settles only its own
//!   host's claims, so passes of different hosts need not exclude each
//!   other; two passes of one host must (SPEC §4 "One pass at a time").
//!
//! # Invariants
//!
//! 1. **Owner = oldest key.** A process owns `D`'s lock while its key exists
//!    and has the smallest create revision under `P/lock/D/`. A key is only
//!    ever created with a revision above every existing one, so once a key
//!    is the oldest it stays the oldest until it is deleted: by its owner,
//!    or by etcd when the lease expires. The create revision is the fencing
//!    token `CCCI_LOCK_REVISION`; each new owner's is larger.
//! 2. **The claim moves only under the lock.** Every write or delete of
//!    `P/claim/D` is a transaction that compares the writer's lock key's
//!    create revision: a holder whose lease has expired cannot write or
//!    delete the claim, even if it does not know yet that it lost. This is
//!    invariant 2 of the flock backend (unlink only while holding).
//! 3. **A leftover claim means "maybe an app to reap".** A holder whose
//!    COMMAND exits normally deletes the claim and its lock key in one
//!    guarded transaction, then revokes its lease; one that is killed, or
//!    whose COMMAND is killed, leaves the claim, and its lease ends its lock
//!    within the TTL.
//! 4. **A lock lost is reported.** The lease is kept alive by a thread
//!    ([`lease`]); when it cannot be (etcd unreachable past the TTL, lease
//!    revoked), every claim of the process reports the loss, early by our
//!    own clock, so COMMAND is told to stop before another host can own
//!    the lock. A holder also watches its own lock key, so a lease revoked
//!    or a key deleted behind its back is reported at once, not at the
//!    next keep-alive.
//! 5. **Looking never queues.** `--list`, `-v` and the janitor's look at a
//!    held domain only read; the janitor enqueues a key only for a domain
//!    with a claim and no key at all, and withdraws it at once if it is not
//!    the oldest, so a concurrent `-n` on a free domain is never refused
//!    because someone looked.
//! 6. **Bounded.** Every request has a deadline (at most [`CALL_TIMEOUT`],
//!    and never past `-w`); waiting uses etcd's watch, re-opened every few
//!    seconds, never an unbounded request. Taking a lock fails (125) when
//!    etcd does not answer within the deadline; once a key is queued, a
//!    waiter and a holder's guarded writes ask again for as long as the lease
//!    lives, so an etcd outage shorter than the TTL (a restart, a leader
//!    election) delays them without failing them. A write retried after a
//!    timeout is safe: each is a compare-guarded transaction.

pub mod args;
pub mod client;
pub mod lease;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use ccci_common::cli::UsageError;
use ccci_common::names::{self, shell_quote};
use ccci_common::supervise::LossNotifier;

use self::client::{b64, int, prefix_end, unb64, CallError, Client, Watched};
use self::lease::{Lease, OnLost};
use crate::{Acquired, Backend, Claim, Holder, PassLock, Probe, Status, Wait};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/ccci";
/// The default lease TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The longest one request may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one watch stays open before the waiter looks again.
const WATCH_SESSION: Duration = Duration::from_secs(5);
/// The pause before a waiter asks again after etcd did not answer.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Where and how: the checked settings of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `http://HOST:PORT` or `https://HOST:PORT` each.
    pub endpoints: Vec<String>,
    /// The key prefix, without a trailing `/`.
    pub prefix: String,
    /// The lease TTL, whole seconds.
    pub ttl: Duration,
    /// The files for `https://` endpoints.
    pub tls: Tls,
    /// The user to authenticate as, if any.
    pub auth: Option<Auth>,
}

/// `--etcd-cacert`, `--etcd-cert`, `--etcd-key`: paths, read when the
/// client is made (a file that cannot be used is status 125 then).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// The CA certificates etcd's certificate must chain to; the system's
    /// bundle when `None`.
    pub cacert: Option<PathBuf>,
    /// The client certificate (chain).
    pub cert: Option<PathBuf>,
    /// Its private key.
    pub key: Option<PathBuf>,
}

/// `--etcd-user` and `--etcd-password-file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The etcd user.
    pub user: String,
    /// The file holding its password, checked as SPEC §1 asks of a file
    /// that is trusted ([`ccci_common::fs::read_trusted_file`]).
    pub password_file: PathBuf,
}

/// Checks a key prefix (`--etcd-prefix`): not empty, printable, no
/// trailing `/` (one is dropped).
pub fn prefix(value: &str, from: &str) -> Result<String, UsageError> {
    let trimmed = value.trim_end_matches('/');
    if trimmed.is_empty() || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(UsageError(format!(
            "{from} {} is not a usable etcd key prefix: expected a path such as /ccci",
            shell_quote(value)
        )));
    }
    Ok(trimmed.to_string())
}

/// Checks a lease TTL (`--ttl`): at least one second; etcd counts whole
/// seconds, so a fraction rounds up.
pub fn ttl(value: Duration, from: &str) -> Result<Duration, UsageError> {
    if value < Duration::from_secs(1) {
        return Err(UsageError(format!(
            "{from} {} is too short: an etcd lease lasts at least 1s",
            shell_quote(&format!("{value:?}"))
        )));
    }
    let secs = value.as_secs() + u64::from(value.subsec_nanos() > 0);
    Ok(Duration::from_secs(secs))
}

/// The etcd backend. Cheap to clone; one lease per process, granted when
/// first needed and shared by every lock the process takes.
#[derive(Debug, Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Arc<Client>,
    prefix: String,
    ttl: Duration,
    lease: Mutex<Option<Arc<Lease>>>,
    /// The lock name of a janitor pass: `P/janitor/<host>`, or `P/janitor`.
    pass_name: String,
}

/// A key we put in a lock's queue.
#[derive(Debug)]
struct Queued {
    key: String,
    rev: i64,
}

fn etcd_error(e: CallError) -> anyhow::Error {
    anyhow!(e)
}

/// Whether a failed call may succeed when asked again: etcd did not
/// answer. A refusal (permission denied, a token refused twice, a TLS
/// failure) stays one, so it is never waited out.
fn is_unreachable(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<CallError>(),
        Some(CallError::Unreachable(_))
    )
}

fn kvs(answer: &Value) -> &[Value] {
    answer["kvs"].as_array().map_or(&[], Vec::as_slice)
}

fn holder_of(value: &Value) -> Option<Holder> {
    serde_json::from_slice(&unb64(value)).ok()
}

fn age_of(holder: Option<&Holder>) -> Duration {
    holder
        .and_then(|h| h.since.as_deref())
        .and_then(|s| humantime::parse_rfc3339(s).ok())
        .map_or(Duration::ZERO, |t| {
            SystemTime::now()
                .duration_since(t)
                .unwrap_or(Duration::ZERO)
        })
}

fn range(key: &str) -> Value {
    json!({"request_range": {"key": b64(key)}})
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
    /// one part of a key: [`check_host`].
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

    fn call(&self, path: &str, body: &Value, limit: Option<Instant>) -> anyhow::Result<Value> {
        let mut deadline = Instant::now() + CALL_TIMEOUT;
        if let Some(limit) = limit {
            deadline = deadline.min(limit);
        }
        self.inner
            .client
            .call(path, body, deadline)
            .map_err(etcd_error)
    }

    fn txn(
        &self,
        compare: Value,
        success: Value,
        failure: Value,
        limit: Option<Instant>,
    ) -> anyhow::Result<Value> {
        let body = json!({"compare": compare, "success": success, "failure": failure});
        self.call("/v3/kv/txn", &body, limit)
    }

    fn lock_name(&self, domain: &str) -> String {
        format!("{}/lock/{domain}", self.inner.prefix)
    }

    fn claim_key(&self, domain: &str) -> String {
        format!("{}/claim/{domain}", self.inner.prefix)
    }

    /// The process's lease, granted now if there is none (or it was lost).
    fn lease(&self, limit: Option<Instant>) -> anyhow::Result<Arc<Lease>> {
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

    /// Puts our key in the queue of lock `name` (or finds it there) and
    /// tells whether it is the oldest.
    fn enqueue(
        &self,
        name: &str,
        lease: &Lease,
        limit: Option<Instant>,
    ) -> anyhow::Result<(Queued, bool)> {
        self.enqueue_reading(name, lease, limit, None)
            .map(|(queued, first, _)| (queued, first))
    }

    /// [`Etcd::enqueue`], also reading the key `also` in the same
    /// transaction: when our key is the oldest, its value as it is under
    /// our lock (`None`: no such key), with no second round trip.
    fn enqueue_reading(
        &self,
        name: &str,
        lease: &Lease,
        limit: Option<Instant>,
        also: Option<&str>,
    ) -> anyhow::Result<(Queued, bool, Option<Value>)> {
        let pfx = format!("{name}/");
        let key = format!("{pfx}{:x}", lease.id());
        let oldest = json!({"request_range": {
            "key": b64(&pfx), "range_end": b64(prefix_end(&pfx)),
            "sort_order": "ASCEND", "sort_target": "CREATE", "limit": "1", "keys_only": true}});
        let mut success = vec![
            json!({"request_put": {"key": b64(&key), "value": "", "lease": lease.id().to_string()}}),
            oldest.clone(),
        ];
        let mut failure = vec![range(&key), oldest];
        if let Some(also) = also {
            success.push(range(also));
            failure.push(range(also));
        }
        let answer = self.txn(
            json!([{"key": b64(&key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}]),
            Value::Array(success),
            Value::Array(failure),
            limit,
        )?;
        let responses = &answer["responses"];
        let rev = if answer["succeeded"].as_bool() == Some(true) {
            int(&answer["header"]["revision"])
        } else {
            kvs(&responses[0]["response_range"])
                .first()
                .map_or(0, |kv| int(&kv["create_revision"]))
        };
        let first = kvs(&responses[1]["response_range"])
            .first()
            .map_or(0, |kv| int(&kv["create_revision"]));
        if rev == 0 || first == 0 {
            bail!("etcd gave an unexpected answer while locking {name}");
        }
        let read = also.and_then(|_| kvs(&responses[2]["response_range"]).first().cloned());
        Ok((Queued { key, rev }, first == rev, read))
    }

    /// Takes our key out of a queue. Only our lease ever names it.
    fn withdraw(&self, key: &str) {
        let _ = self.call("/v3/kv/deleterange", &json!({"key": b64(key)}), None);
    }

    /// Waits until `queued` is the oldest key of lock `name` or `limit`
    /// passes (`Ok(false)`). While the lease lives, etcd being briefly
    /// unreachable (a restart, a leader election) only delays the wait:
    /// the waiter keeps its place until the lease itself is lost.
    fn wait_turn(
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
            let answer = match self.txn(
                json!([]),
                json!([range(&queued.key), {"request_range": {
                    "key": b64(&pfx), "range_end": b64(prefix_end(&pfx)),
                    "max_create_revision": (queued.rev - 1).to_string(),
                    "sort_order": "DESCEND", "sort_target": "CREATE", "limit": "1", "keys_only": true}},
                    {"request_range": {
                    "key": b64(&pfx), "range_end": b64(prefix_end(&pfx)),
                    "sort_order": "ASCEND", "sort_target": "CREATE", "limit": "1", "keys_only": true}}]),
                json!([]),
                limit,
            ) {
                Ok(answer) => answer,
                Err(e) if is_unreachable(&e) && can_retry() => {
                    std::thread::sleep(RETRY_PAUSE);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let ours = kvs(&answer["responses"][0]["response_range"])
                .first()
                .map(|kv| int(&kv["create_revision"]));
            if ours != Some(queued.rev) {
                bail!(
                    "lost the lease while waiting for {name}: etcd removed our place in the queue"
                );
            }
            let Some(before) = kvs(&answer["responses"][1]["response_range"]).first() else {
                return Ok(true);
            };
            waiting();
            let session_end = Instant::now() + WATCH_SESSION;
            let until = limit.map_or(session_end, |l| l.min(session_end));
            if limit.is_some_and(|l| Instant::now() >= l) {
                return Ok(false);
            }
            let key = String::from_utf8_lossy(&unb64(&before["key"])).into_owned();
            let from = int(&answer["header"]["revision"]) + 1;
            // When the key before ours is the oldest, its deletion makes
            // ours the oldest: no key created later can be older than ours.
            // Taking the lock then needs no second look (the claim's
            // guarded write still checks that our key is there).
            let oldest = kvs(&answer["responses"][2]["response_range"])
                .first()
                .map(|kv| int(&kv["create_revision"]));
            let next_is_oldest =
                oldest.is_some() && oldest == Some(int(&before["create_revision"]));
            // A watch otherwise only tells us when to look again; a failed
            // one means looking again a little later.
            match self.inner.client.watch_once(&key, from, until) {
                Ok(Watched::Deleted) if next_is_oldest => return Ok(true),
                Ok(_) => {}
                Err(_) => std::thread::sleep(RETRY_PAUSE),
            }
        }
    }

    fn read_claim(
        &self,
        domain: &str,
        limit: Option<Instant>,
    ) -> anyhow::Result<Option<Option<Holder>>> {
        let answer = self.call(
            "/v3/kv/range",
            &json!({"key": b64(self.claim_key(domain))}),
            limit,
        )?;
        Ok(kvs(&answer).first().map(|kv| holder_of(&kv["value"])))
    }

    fn claim(
        &self,
        lease: Arc<Lease>,
        domain: &str,
        queued: Queued,
        holder: Option<Holder>,
    ) -> EtcdClaim {
        EtcdClaim {
            etcd: self.clone(),
            lease,
            domain: domain.to_string(),
            queued,
            holder,
            released: false,
            watching: None,
        }
    }

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

    /// Domain names below `P/<what>/`, for keys whose next part is one.
    fn names_below(&self, what: &str, keys: &[Value]) -> Vec<String> {
        let pfx = format!("{}/{what}/", self.inner.prefix);
        let mut out: Vec<String> = keys
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8(unb64(&kv["key"])).ok()?;
                let rest = key.strip_prefix(&pfx)?;
                let domain = rest.split('/').next()?;
                names::domain(domain).ok().map(|_| domain.to_string())
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn below(&self, what: &str, keys_only: bool) -> anyhow::Result<Value> {
        let pfx = format!("{}/{what}/", self.inner.prefix);
        self.call(
            "/v3/kv/range",
            &json!({"key": b64(&pfx), "range_end": b64(prefix_end(&pfx)), "keys_only": keys_only}),
            None,
        )
    }
}

/// Checks that `domain` can name a lock on etcd: any valid DOMAIN (SPEC §1)
/// can, since a key has no length limit that a domain reaches and a domain
/// holds no `/`.
pub fn check_domain(domain: &str) -> Result<(), UsageError> {
    names::domain(domain)
        .map(drop)
        .map_err(|why| UsageError(format!("invalid domain {}: {why}", shell_quote(domain))))
}

/// Checks that `host` (a host name, as `gethostname(2)` gives it, or a
/// `--adopt-host` value) can name a host in a claim and one part of an etcd
/// key: 1 to 64 bytes (`HOST_NAME_MAX`), printable, no blank, no `/`.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("a host name is not empty".into());
    }
    if host.len() > 64 {
        return Err("a host name has at most 64 bytes".into());
    }
    if host
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '/')
    {
        return Err("a host name has no blank, control character or '/'".into());
    }
    Ok(())
}

fn check(domain: &str) -> anyhow::Result<()> {
    Ok(check_domain(domain)?)
}

impl Backend for Etcd {
    type Claim = EtcdClaim;

    fn check_domain(&self, domain: &str) -> Result<(), UsageError> {
        check_domain(domain)
    }

    /// `P/janitor/<host>`, a lock like a domain's, taken without waiting. A
    /// dry run only looks: any key under it means a pass is running.
    fn pass_lock(&self, create: bool) -> anyhow::Result<PassLock> {
        if create {
            return Ok(match self.try_pass()? {
                Some(guard) => PassLock::Held(Box::new(guard)),
                None => PassLock::Busy,
            });
        }
        let pfx = format!("{}/", self.inner.pass_name);
        let queue = self.call(
            "/v3/kv/range",
            &json!({"key": b64(&pfx), "range_end": b64(prefix_end(&pfx)), "count_only": true}),
            None,
        )?;
        Ok(if int(&queue["count"]) > 0 {
            PassLock::Busy
        } else {
            PassLock::Missing
        })
    }

    fn acquire(
        &self,
        domain: &str,
        wait: Wait,
        waiting: &mut dyn FnMut(Option<&Holder>),
    ) -> anyhow::Result<Acquired<EtcdClaim>> {
        check(domain)?;
        let limit = match wait {
            // An instant beyond the clock's range: as good as forever.
            Wait::AtMost(d) => Instant::now().checked_add(d),
            _ => None,
        };
        let lease = self.lease(limit)?;
        let name = self.lock_name(domain);
        let (queued, first) = self.enqueue(&name, &lease, limit)?;
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
            Ok(true) => Ok(Acquired::Held(self.claim(lease, domain, queued, None))),
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

    /// Two round trips for an orphan: one read (the claim, and whether any
    /// lock key exists: a transaction of reads only, which etcd answers
    /// without a write), then our key queued in a transaction that also
    /// reads the claim again, as it is once the lock is ours.
    fn probe(&self, domain: &str) -> anyhow::Result<Probe<EtcdClaim>> {
        check(domain)?;
        let name = self.lock_name(domain);
        let pfx = format!("{name}/");
        let claim_key = self.claim_key(domain);
        let look = self.txn(
            json!([]),
            json!([range(&claim_key), {"request_range": {
                "key": b64(&pfx), "range_end": b64(prefix_end(&pfx)), "count_only": true}}]),
            json!([]),
            None,
        )?;
        let Some(kv) = kvs(&look["responses"][0]["response_range"]).first() else {
            return Ok(Probe::Missing);
        };
        let holder = holder_of(&kv["value"]);
        if int(&look["responses"][1]["response_range"]["count"]) > 0 {
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
                claim.holder = holder_of(&kv["value"]);
                Ok(Probe::Acquired(claim))
            }
        }
    }

    fn create(&self, domain: &str) -> anyhow::Result<Option<EtcdClaim>> {
        check(domain)?;
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
            json!([
                {"key": b64(&claim_key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"},
                {"key": b64(&queued.key), "target": "CREATE", "result": "EQUAL", "create_revision": queued.rev.to_string()},
            ]),
            json!([{"request_put": {"key": b64(&claim_key), "value": b64(serde_json::to_vec(&record)?)}}]),
            json!([]),
            None,
        )?;
        let claim = self.claim(lease, domain, queued, Some(record));
        if answer["succeeded"].as_bool() == Some(true) {
            Ok(Some(claim))
        } else {
            Ok(None) // the claim exists (or our lease just ended): someone else's
        }
    }

    fn domains(&self) -> anyhow::Result<Vec<String>> {
        let claims = self.below("claim", true)?;
        Ok(self.names_below("claim", kvs(&claims)))
    }

    fn list(&self) -> anyhow::Result<Vec<Status>> {
        let claims = self.below("claim", false)?;
        let locks = self.below("lock", true)?;
        let held = self.names_below("lock", kvs(&locks));
        let pfx = format!("{}/claim/", self.inner.prefix);
        let mut out: Vec<Status> = kvs(&claims)
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8(unb64(&kv["key"])).ok()?;
                let domain = key.strip_prefix(&pfx)?;
                names::domain(domain).ok()?;
                Some(Status {
                    domain: domain.to_string(),
                    held: held.binary_search_by(|d| d.as_str().cmp(domain)).is_ok(),
                    holder: holder_of(&kv["value"]),
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

/// A lock we hold on etcd. Dropping it releases the lock (deletes our key)
/// and keeps the claim.
#[derive(Debug)]
pub struct EtcdClaim {
    etcd: Etcd,
    lease: Arc<Lease>,
    domain: String,
    queued: Queued,
    holder: Option<Holder>,
    released: bool,
    /// Set to stop the watch on our lock key ([`Claim::watch_loss`]) before
    /// we delete the key ourselves.
    watching: Option<Arc<AtomicBool>>,
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
        if let Ok(answer) = etcd.call("/v3/kv/range", &json!({"key": b64(key)}), None) {
            let ours = kvs(&answer).first().map(|kv| int(&kv["create_revision"]));
            if ours != Some(rev) {
                if !stop.load(Ordering::SeqCst) {
                    lost.notify();
                }
                return;
            }
            from = from.max(int(&answer["header"]["revision"]) + 1);
        }
        if !looked {
            std::thread::sleep(RETRY_PAUSE);
        }
    }
}

impl EtcdClaim {
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
    fn guarded(&self, ops: Value) -> anyhow::Result<Value> {
        loop {
            match self
                .etcd
                .txn(json!([self.ours()]), ops.clone(), json!([]), None)
            {
                Err(e) if is_unreachable(&e) && !self.lease.is_lost() => {
                    std::thread::sleep(RETRY_PAUSE)
                }
                answer => return answer,
            }
        }
    }

    fn ours(&self) -> Value {
        json!({"key": b64(&self.queued.key), "target": "CREATE", "result": "EQUAL",
               "create_revision": self.queued.rev.to_string()})
    }
}

impl Claim for EtcdClaim {
    fn domain(&self) -> &str {
        &self.domain
    }

    fn stamp(&mut self, holder: &Holder) -> anyhow::Result<()> {
        let key = self.etcd.claim_key(&self.domain);
        let value = serde_json::to_vec(holder)?;
        let answer =
            self.guarded(json!([{"request_put": {"key": b64(&key), "value": b64(value)}}]))?;
        if answer["succeeded"].as_bool() != Some(true) {
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
            ("CCCI_LOCK_DOMAIN", self.domain.clone().into()),
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
        let claim_key = self.etcd.claim_key(&self.domain);
        let answer = self
            .guarded(json!([{"request_delete_range": {"key": b64(&claim_key)}},
                            {"request_delete_range": {"key": b64(&self.queued.key)}}]))
            .with_context(|| format!("cannot remove the claim of {}", self.domain))?;
        if answer["succeeded"].as_bool() != Some(true) {
            // Our key is gone. Either an attempt that timed out was applied
            // after all (etcd answered late), or the lease ended first. With
            // the claim gone there is nothing left to say: nothing stays for
            // the janitor.
            if matches!(self.etcd.read_claim(&self.domain, None), Ok(None)) {
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
            self.etcd.withdraw(&self.queued.key);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        assert_eq!(prefix("/ccci/", "--etcd-prefix").unwrap(), "/ccci");
        assert!(prefix("/", "--etcd-prefix").is_err());
        assert!(prefix("/a b", "--etcd-prefix")
            .unwrap_err()
            .0
            .contains("'/a b'"));
        assert!(ttl(Duration::ZERO, "--ttl")
            .unwrap_err()
            .0
            .contains("--ttl"));
        assert!(ttl(Duration::from_millis(500), "--ttl").is_err());
        assert_eq!(
            ttl(Duration::from_millis(1500), "--ttl").unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(ttl(Duration::from_secs(10), "--ttl").unwrap(), DEFAULT_TTL);
    }
}
