//! One lease per process, kept alive by a thread.
//!
//! - **Lost is decided by our own clock, early.** A keep-alive sent at `t`
//!   and answered with TTL `T` means the server will not expire the lease
//!   before `t + T` (it renewed it at or after `t`). The thread counts the
//!   lease lost at that point unless a later keep-alive was answered, so
//!   COMMAND is told to stop no later than the server can hand the lock to
//!   someone else. The clock is `CLOCK_BOOTTIME`: it never jumps with the
//!   wall clock and keeps counting while the host is suspended, when etcd's
//!   clock keeps counting too.
//! - **A member that does not answer is left quickly**: a keep-alive tries
//!   the next endpoint after a quarter of the TTL, so one member stopped
//!   or cut off past the TTL costs the lease nothing while the others
//!   answer.
//! - **A server that says the lease is gone is believed at once** (a
//!   keep-alive answered with no TTL: expired or revoked).
//! - **Reported once, to everyone who asked.** Each listener is called once,
//!   from the keep-alive thread; one that registers after the loss is
//!   called at once, so no loss is missed.
//! - **Revoked on drop**, after the thread has stopped: a clean exit frees
//!   every lock of the process at once instead of after the TTL.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::client::{CallError, Client, ATTEMPT};
use super::messages::{
    Int, LeaseGrantRequest, LeaseGrantResponse, LeaseIdRequest, LeaseKeepAliveAnswer,
    LeaseRevokeResponse,
};

/// A listener told when the lease is lost.
pub type OnLost = Box<dyn FnOnce() + Send>;

/// Time on `CLOCK_BOOTTIME`.
pub fn boottime() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .unwrap_or_default()
}

#[derive(Default)]
struct State {
    /// Boot time until which the lease is certainly alive on the server.
    alive_until: Duration,
    lost: bool,
    stop: bool,
    listeners: Vec<OnLost>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// A granted lease and its keep-alive thread.
pub struct Lease {
    client: Arc<Client>,
    id: i64,
    ttl: Duration,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Lease {
    /// Grants a lease of `ttl` (whole seconds) and starts keeping it alive.
    pub fn grant(
        client: Arc<Client>,
        ttl: Duration,
        deadline: Instant,
    ) -> Result<Lease, CallError> {
        let sent = boottime();
        let (answer, text): (LeaseGrantResponse, _) = client.call_answering(
            "/v3/lease/grant",
            &LeaseGrantRequest {
                ttl: Int(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            },
            deadline,
            ATTEMPT,
        )?;
        let id = answer.id.0;
        let granted = answer.ttl.0;
        if id == 0 || granted <= 0 {
            return Err(CallError::Refused(grant_refused(&answer, &text)));
        }
        // The server may raise a TTL below its minimum; its answer is the truth.
        let ttl = Duration::from_secs(granted as u64);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                alive_until: sent + ttl,
                ..State::default()
            }),
            wake: Condvar::new(),
        });
        let thread = {
            let client = Arc::clone(&client);
            let shared = Arc::clone(&shared);
            // Never the thread a process-directed TERM is handed to: that
            // must reach the main thread, which forwards it to COMMAND.
            ccci_common::sys::spawn_without_signals("etcd-keepalive", move || {
                keep_alive(&client, id, ttl, &shared)
            })
            .map_err(|e| CallError::Refused(format!("cannot start the keep-alive thread: {e}")))?
        };
        Ok(Lease {
            client,
            id,
            ttl,
            shared,
            thread: Some(thread),
        })
    }

    /// The lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The granted TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the lease is lost (or may already be, by our clock).
    pub fn is_lost(&self) -> bool {
        let st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.lost || boottime() >= st.alive_until
    }

    /// Calls `listener` once when the lease is lost (at once if it is).
    pub fn on_lost(&self, listener: OnLost) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.lost {
            drop(st);
            listener();
        } else {
            st.listeners.push(listener);
        }
    }
}

/// What a grant answer without a usable lease says happened; `text` is the
/// answer as etcd wrote it.
fn grant_refused(answer: &LeaseGrantResponse, text: &str) -> String {
    let (id, granted) = (answer.id.0, answer.ttl.0);
    if let Some(error) = answer.error.as_deref().filter(|e| !e.is_empty()) {
        return format!("etcd refused to grant a lease: {error}");
    }
    if id == 0 {
        // Shown compact, as any JSON value of it would be written.
        let shown = serde_json::from_str::<serde_json::Value>(text)
            .map_or_else(|_| text.to_string(), |v| v.to_string());
        let text: String = shown.chars().take(200).collect();
        return format!("etcd's answer to the lease grant names no lease id: {text}");
    }
    format!(
        "etcd granted lease {id:x} with a TTL of {granted}s, which would expire at once; \
         refusing to lock with it"
    )
}

fn lose(shared: &Shared) {
    let listeners = {
        let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.lost = true;
        if st.stop {
            return; // revoked by us: nobody is listening any more
        }
        std::mem::take(&mut st.listeners)
    };
    for listener in listeners {
        listener();
    }
}

fn keep_alive(client: &Client, id: i64, ttl: Duration, shared: &Shared) {
    let every = (ttl / 3).max(Duration::from_millis(200));
    let retry = (ttl / 10).clamp(Duration::from_millis(50), Duration::from_millis(500));
    // A member that stopped answering (SIGSTOPped, cut off, without a
    // leader) is left after a quarter of the TTL, so the other members are
    // tried with time to spare before the lease would run out.
    let attempt = (ttl / 4).max(Duration::from_millis(250));
    let mut next = boottime() + every;
    loop {
        let alive_until = {
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let now = boottime();
                if st.stop {
                    return;
                }
                if now >= st.alive_until {
                    drop(st);
                    return lose(shared);
                }
                if now >= next {
                    break;
                }
                let wait = next.min(st.alive_until) - now;
                st = shared
                    .wake
                    .wait_timeout(st, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            st.alive_until
        };
        let sent = boottime();
        let deadline = Instant::now() + alive_until.saturating_sub(sent);
        match client.call_trying(
            "/v3/lease/keepalive",
            &LeaseIdRequest { id: Int(id) },
            deadline,
            attempt,
        ) {
            Ok(LeaseKeepAliveAnswer { result }) => {
                let granted = result.ttl.0;
                if granted <= 0 {
                    return lose(shared); // expired or revoked on the server
                }
                let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                st.alive_until = st
                    .alive_until
                    .max(sent + Duration::from_secs(granted as u64));
                next = sent + every;
            }
            Err(CallError::Refused(_) | CallError::Setup(_) | CallError::BadToken(_)) => {
                return lose(shared)
            }
            Err(CallError::Unreachable(_)) => next = boottime() + retry,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let lost = self.is_lost();
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            st.stop = true;
        }
        self.shared.wake.notify_all();
        // Not joined: a keep-alive in flight to an unreachable etcd must not
        // delay the exit. A stopped thread reports nothing.
        drop(self.thread.take());
        if lost {
            return; // nothing to revoke, and etcd may not answer
        }
        // Best effort: if etcd cannot be reached the lease expires by itself.
        let deadline = Instant::now() + self.ttl.min(Duration::from_secs(2));
        let _ = self.client.call::<_, LeaseRevokeResponse>(
            "/v3/lease/revoke",
            &LeaseIdRequest { id: Int(self.id) },
            deadline,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::grant_refused;
    use crate::etcd::messages::decode;

    fn refused(text: &str) -> String {
        grant_refused(&decode(text.as_bytes()).unwrap(), text)
    }

    #[test]
    fn a_grant_without_a_lease_says_what_etcd_did() {
        let zero = refused(r#"{"ID": "7", "TTL": "0"}"#);
        assert!(zero.contains("lease 7 with a TTL of 0s"), "{zero}");
        let none = refused(r#"{"header": {}}"#);
        assert!(
            none.contains("names no lease id: {\"header\":{}}"),
            "{none}"
        );
        let error = refused(r#"{"ID": "0", "error": "too many"}"#);
        assert!(
            error.contains("refused to grant a lease: too many"),
            "{error}"
        );
    }
}
