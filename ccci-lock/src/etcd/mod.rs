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
//!    invariant 2 of the flock backend (unlink only while holding). The one
//!    other write is a wrap's first, when nobody is queued: the transaction
//!    that creates its lock key also writes the claim, compared on there
//!    being no key under `P/lock/D/` at all, so the writer owns the lock
//!    from that very revision (the `queue` module).
//! 3. **A leftover claim means "maybe an app to reap".** A holder whose
//!    COMMAND exits normally deletes the claim and its lock key in one
//!    guarded transaction, then revokes its lease; one that is killed, or
//!    whose COMMAND is killed, leaves the claim, and its lease ends its lock
//!    within the TTL. When a wrap waits next, with its record queued in its
//!    lock key, the normal exit hands the claim over instead: that record
//!    is written into the claim in the transaction that deletes our key,
//!    guarded by both keys (invariant 2 holds: the writer owns the lock
//!    until that revision, the waiter from it; see the `claim` module).
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
//!
//! # Where what lives
//!
//! - `config.rs`: the checked settings ([`Config`], [`Tls`], [`Auth`]) and
//!   the checks of names that become parts of keys; `args.rs`: the flags.
//! - `backend.rs`: [`Etcd`], its lease and keys, and the [`Backend`]
//!   operations; `queue.rs`: a lock's queue (enqueue, withdraw, wait for
//!   one's turn); `claim.rs`: [`EtcdClaim`], a lock held and its claim;
//!   `scan.rs`: what the janitor and `--list` read, and the janitor's pass
//!   lock.
//! - `lease.rs`: the process's lease and its keep-alive thread.
//! - `client.rs`: the transport to etcd's JSON gateway, with `tls.rs`,
//!   `auth.rs` and `watch.rs`; `messages.rs`: the typed JSON it sends and
//!   reads, in the gateway's `encoding.rs`.
//!
//! [`Backend`]: crate::Backend

pub mod args;
mod auth;
mod backend;
mod claim;
pub mod client;
mod config;
mod encoding;
pub mod lease;
mod messages;
mod queue;
mod scan;
mod tls;
mod watch;

pub use self::backend::{Etcd, CALL_TIMEOUT};
pub use self::claim::EtcdClaim;
pub use self::config::{
    check_domain, check_host, prefix, ttl, Auth, Config, Tls, DEFAULT_PREFIX, DEFAULT_TTL,
};
pub use self::scan::PassGuard;
