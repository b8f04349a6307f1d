//! A small client for etcd's v3 JSON gateway (`POST /v3/...`), the API etcd
//! documents for clients without gRPC.
//!
//! - **Bounded.** Every call has a deadline; no request outlives it, so a
//!   caller that must give up at a time (`-w`, a lease's expiry) can. Every
//!   read has a size bound too: headers [`MAX_HEADER`], an answer
//!   [`MAX_ANSWER`], one line of a watch stream [`MAX_WATCH_LINE`]. An
//!   answer past its bound is refused at once (fail closed, never buffered
//!   on), so a server that floods cannot make the process grow.
//! - **Several endpoints.** A call goes to the endpoint that answered last;
//!   when that one cannot be reached, answers 5xx (no leader, shutting
//!   down) or takes longer than [`ATTEMPT`], the next is tried, round after
//!   round, until the deadline. Only calls that are safe
//!   to repeat are made (puts guarded by a compare, deletes, reads, lease
//!   grants whose lost duplicates expire on their own).
//! - **TLS and authentication.** `https://` endpoints are reached through
//!   rustls (ring), trusting only `--etcd-cacert` (else the system bundle),
//!   with `--etcd-cert`/`--etcd-key` as the client certificate. A TLS
//!   failure (a certificate refused by either side) is not retried: it
//!   would fail the same way again. With `--etcd-user`, the client asks
//!   `/v3/auth/authenticate` for a token once and sends it in the
//!   `Authorization` header; a call that etcd refuses because the token
//!   is invalid (expired) authenticates again and is sent once more.
//! - **No surprises from the environment.** No proxy variable is honoured
//!   and no redirect is followed: the endpoints are the ones given.
//! - **No lookup for an address.** An endpoint given as an IP address is
//!   connected to as it is ([`Literal`]); only a name is looked up, with
//!   its deadline. ureq's own resolver starts a thread for every call,
//!   pooled connection or not, which on a busy host costs a scheduling
//!   delay on each request of a hand-off.
//!
//! This file holds the transport (endpoints, retries, bounds, errors); the
//! TLS settings are in `tls.rs`, the token in `auth.rs`, the
//! watch stream in `watch.rs`, and the messages sent and read in
//! `messages.rs`.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use ccci_common::names::{quote_path, shell_quote};

use super::auth::{login, Login};
use super::messages::{decode, ErrorBody, StreamFailure};
use super::tls::{is_tls_failure, tls_config, tls_hint};
use super::{Auth, Tls};

pub use super::config::{endpoint, endpoints};
pub use super::messages::{b64, prefix_end};
pub use super::tls::SYSTEM_CA;
pub use super::watch::{Watched, MAX_WATCH_LINE};

/// The gateway's watch stream (`watch.rs`).
pub(super) const WATCH: &str = "/v3/watch";
/// The longest one attempt of a call may take before the next endpoint (or
/// the same one again) is tried: a member that lost its leader holds a
/// request until its own timeout, while a retry after the election (well
/// under a second by default) succeeds.
pub(super) const ATTEMPT: Duration = Duration::from_secs(2);
/// The pause after every endpoint failed once.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The largest answer read (a `--list` of thousands of claims fits).
pub const MAX_ANSWER: u64 = 4 << 20;
/// The largest error answer read (4xx, 5xx): only its message is used.
pub(super) const MAX_ERROR: u64 = 64 << 10;
/// The largest header block of an answer.
pub const MAX_HEADER: usize = 64 << 10;

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// No endpoint answered before the deadline; the text says what the
    /// last one did.
    Unreachable(String),
    /// etcd answered with an error (HTTP 4xx), or broke the protocol (an
    /// answer too large, a redirect).
    Refused(String),
    /// The client cannot talk to etcd at all: a TLS file or the password
    /// file cannot be used, or a certificate was refused. The text says
    /// which and why.
    Setup(String),
    /// etcd refused the auth token (expired or invalid): authenticate
    /// again. Never seen outside this module.
    BadToken(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Unreachable(why) => write!(f, "cannot reach etcd: {why}"),
            CallError::Refused(why) | CallError::BadToken(why) => {
                write!(f, "etcd refused the request: {why}")
            }
            CallError::Setup(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for CallError {}

/// What the client needs to talk to etcd, made once from the settings.
pub(super) struct Setup {
    agent: ureq::Agent,
    /// The agent for watch streams, with connections of its own: a stream
    /// holds its connection while it lasts, and one taken from `agent`
    /// would leave the next call (a release, on the critical path of a
    /// hand-off) to open another, a full TLS handshake on `https://`.
    streams: ureq::Agent,
    /// Where the trusted CAs came from, for messages.
    trusted: String,
    /// The user and its password.
    pub(super) login: Option<Login>,
}

/// The gateway client.
pub struct Client {
    pub(super) setup: Result<Setup, String>,
    endpoints: Vec<String>,
    current: AtomicUsize,
    /// The auth token, when logged in.
    pub(super) token: Mutex<Option<Arc<str>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

fn make_setup(endpoints: &[String], tls: &Tls, auth: Option<&Auth>) -> Result<Setup, String> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .max_response_header_size(MAX_HEADER);
    if endpoints.iter().any(|e| e.starts_with("https://")) {
        config = config.tls_config(tls_config(tls)?);
    }
    let login = auth.map(login).transpose()?;
    let trusted = match &tls.cacert {
        Some(path) => format!("--etcd-cacert {}", quote_path(path)),
        None => format!("the system CA bundle {SYSTEM_CA} (give --etcd-cacert for a private CA)"),
    };
    let config = config.build();
    let agent = |config| {
        ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::default(),
            Literal::default(),
        )
    };
    Ok(Setup {
        agent: agent(config.clone()),
        streams: agent(config),
        trusted,
        login,
    })
}

/// A resolver that returns an endpoint's IP address as it is, and leaves
/// names to ureq's own (which honours the deadline with a thread).
#[derive(Debug, Default)]
struct Literal(ureq::unversioned::resolver::DefaultResolver);

/// The socket address of `uri` when its host is an IP address (IPv6 in
/// brackets, as in a URL); the port is the scheme's default when absent.
fn literal_addr(uri: &ureq::http::Uri) -> Option<std::net::SocketAddr> {
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: std::net::IpAddr = host.parse().ok()?;
    let default = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let port = uri.port_u16().unwrap_or(default);
    Some(std::net::SocketAddr::new(ip, port))
}

impl ureq::unversioned::resolver::Resolver for Literal {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        match literal_addr(uri) {
            Some(addr) => {
                let mut addrs = self.empty();
                addrs.push(addr);
                Ok(addrs)
            }
            None => self.0.resolve(uri, config, timeout),
        }
    }
}

impl Client {
    /// A client for `endpoints` (checked by [`endpoints`]). The TLS files
    /// and the password file are read now; when one cannot be used, every
    /// call fails with [`CallError::Setup`] saying why.
    pub fn new(endpoints: Vec<String>, tls: &Tls, auth: Option<&Auth>) -> Client {
        Client {
            setup: make_setup(&endpoints, tls, auth),
            endpoints,
            current: AtomicUsize::new(0),
            token: Mutex::new(None),
        }
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// POSTs `body` to `path` (`/v3/kv/range`…) and returns the answer, or
    /// fails by `deadline`.
    pub fn call<Q: Serialize, A: DeserializeOwned + Default>(
        &self,
        path: &str,
        body: &Q,
        deadline: Instant,
    ) -> Result<A, CallError> {
        self.call_trying(path, body, deadline, ATTEMPT)
    }

    /// [`Client::call`], giving up on an endpoint after `attempt` (at most
    /// [`ATTEMPT`]) instead: a keep-alive must reach another member well
    /// before its lease runs out when the one in use stops answering.
    pub fn call_trying<Q: Serialize, A: DeserializeOwned + Default>(
        &self,
        path: &str,
        body: &Q,
        deadline: Instant,
        attempt: Duration,
    ) -> Result<A, CallError> {
        self.call_answering(path, body, deadline, attempt)
            .map(|(answer, _)| answer)
    }

    /// [`Client::call_trying`], also returning the answer's text, for a
    /// message that shows what etcd said.
    pub fn call_answering<Q: Serialize, A: DeserializeOwned + Default>(
        &self,
        path: &str,
        body: &Q,
        deadline: Instant,
        attempt: Duration,
    ) -> Result<(A, String), CallError> {
        let mut renewed = false;
        loop {
            let text = self.send(path, body, deadline, attempt.min(ATTEMPT), |resp| {
                resp.body_mut()
                    .with_config()
                    .limit(MAX_ANSWER)
                    .read_to_string()
            })?;
            let answer: A = decode(text.as_bytes()).map_err(|e| {
                CallError::Unreachable(format!("a malformed answer to {path}: {e}"))
            })?;
            // A streaming call (a keep-alive) carries its error in a 200
            // answer: a refused token is renewed there too, once.
            let failure: StreamFailure = decode(text.as_bytes()).unwrap_or_default();
            let message = failure.error.message.as_deref().unwrap_or("");
            if failure.error.http_code == Some(401) || message.contains("invalid auth token") {
                if !renewed && self.forget_token() {
                    renewed = true;
                    continue;
                }
                return Err(CallError::Refused(format!("{path}: {message}")));
            }
            return Ok((answer, text));
        }
    }

    pub(super) fn send<Q: Serialize, T>(
        &self,
        path: &str,
        body: &Q,
        deadline: Instant,
        attempt: Duration,
        read: impl Fn(&mut ureq::http::Response<ureq::Body>) -> Result<T, ureq::Error>,
    ) -> Result<T, CallError> {
        let setup = self
            .setup
            .as_ref()
            .map_err(|why| CallError::Setup(why.clone()))?;
        let body = serde_json::to_string(body)
            .map_err(|e| CallError::Setup(format!("cannot write the request to {path}: {e}")))?;
        let mut renewed = false;
        loop {
            let token = self.token(setup, deadline)?;
            match self.send_once(
                setup,
                path,
                &body,
                deadline,
                attempt,
                token.as_deref(),
                &read,
            ) {
                Err(CallError::BadToken(why)) if token.is_some() && !renewed => {
                    // Expired (or the member lost it): log in again, once.
                    let mut slot = self.token.lock().unwrap_or_else(|e| e.into_inner());
                    if slot.as_deref() == token.as_deref() {
                        *slot = None;
                    }
                    drop(slot);
                    renewed = true;
                    let _ = why;
                }
                Err(CallError::BadToken(why)) => return Err(CallError::Refused(why)),
                other => return other,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_once<T>(
        &self,
        setup: &Setup,
        path: &str,
        body: &str,
        deadline: Instant,
        attempt: Duration,
        token: Option<&str>,
        read: &dyn Fn(&mut ureq::http::Response<ureq::Body>) -> Result<T, ureq::Error>,
    ) -> Result<T, CallError> {
        let n = self.endpoints.len();
        let mut at = self.current.load(Ordering::Relaxed) % n;
        let mut last = String::from("no time left");
        // Endpoints whose TLS handshake failed in this call: when all have,
        // no retry will mend it.
        let mut tls_failed = vec![false; n];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CallError::Unreachable(last));
            }
            let endpoint = &self.endpoints[at];
            let url = format!("{endpoint}{path}");
            let agent = if path == WATCH {
                &setup.streams
            } else {
                &setup.agent
            };
            let mut request = agent
                .post(&url)
                .config()
                .timeout_global(Some(left.min(attempt).max(Duration::from_millis(1))))
                .build()
                .header("Content-Type", "application/json");
            if let Some(token) = token {
                request = request.header("Authorization", token);
            }
            let answer = request.send(body);
            let failed = match answer {
                Err(e) if is_tls_failure(&e) => {
                    let why = format!(
                        "TLS with etcd at {endpoint} failed: {}: {e}",
                        tls_hint(&e, &setup.trusted)
                    );
                    tls_failed[at] = true;
                    if tls_failed.iter().all(|&f| f) {
                        return Err(CallError::Setup(why));
                    }
                    why
                }
                Err(e) => format!("{endpoint}: {e}"),
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    if (300..500).contains(&status) {
                        let location = resp
                            .headers()
                            .get("location")
                            .and_then(|l| l.to_str().ok())
                            .map(str::to_string);
                        let text = read_short(&mut resp).unwrap_or_default();
                        let why = if status < 400 {
                            redirected(status, endpoint, path, location.as_deref())
                        } else {
                            format!("{endpoint}{path}: {}", message(status, &text))
                        };
                        if status == 401 || text.contains("invalid auth token") {
                            return Err(CallError::BadToken(why));
                        }
                        if text.contains("CommonName of client sending a request against gateway") {
                            return Err(CallError::Setup(format!(
                                "{why} (with authentication on, etcd's JSON gateway refuses a client \
                                 certificate that has a CommonName: give --etcd-cert a certificate \
                                 without a CommonName, and the user with --etcd-user)"
                            )));
                        }
                        if text.contains("user name is empty") {
                            return Err(CallError::Setup(format!(
                                "{why} (etcd requires authentication: give --etcd-user and --etcd-password-file)"
                            )));
                        }
                        return Err(CallError::Refused(why));
                    }
                    if status < 300 {
                        self.current.store(at, Ordering::Relaxed);
                        return read(&mut resp).map_err(|e| match e {
                            ureq::Error::BodyExceedsLimit(limit) => CallError::Refused(format!(
                                "{endpoint}{path}: the answer is larger than {limit} bytes; \
                                 refusing to read more"
                            )),
                            e => CallError::Unreachable(format!("{endpoint}: {e}")),
                        });
                    }
                    let text = read_short(&mut resp).unwrap_or_default();
                    format!("{endpoint}: {}", message(status, &text))
                }
            };
            last = failed;
            at = (at + 1) % n;
            if at == self.current.load(Ordering::Relaxed) % n {
                // Every endpoint failed once: pause briefly before the next round.
                std::thread::sleep(
                    RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now())),
                );
            }
        }
    }
}

/// What a 3xx answer means: etcd's gateway never redirects, so something
/// else (a proxy, another service on the port) answered.
/// The text of an answer that is short by nature (an error's body, a
/// token), read up to [`MAX_ERROR`] bytes and no further.
pub(super) fn read_short(
    resp: &mut ureq::http::Response<ureq::Body>,
) -> Result<String, ureq::Error> {
    resp.body_mut()
        .with_config()
        .limit(MAX_ERROR)
        .read_to_string()
}

fn redirected(status: u16, endpoint: &str, path: &str, location: Option<&str>) -> String {
    let to = match location {
        Some(l) => format!("to {}", shell_quote(l)),
        None => "with no Location".to_string(),
    };
    format!(
        "{endpoint}{path} answered HTTP {status}, a redirect {to}, which is not followed \
         (etcd never redirects: is {endpoint} an etcd client URL?)"
    )
}

fn message(status: u16, text: &str) -> String {
    let v: ErrorBody = decode(text.as_bytes()).unwrap_or_default();
    let msg = v
        .message
        .or(v.error)
        .unwrap_or_else(|| text.trim().chars().take(200).collect());
    if msg.is_empty() {
        return format!("HTTP {status} with an empty answer");
    }
    format!("HTTP {status}: {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_used_as_it_is_and_a_name_is_looked_up() {
        let at = |u: &str| literal_addr(&u.parse().unwrap()).map(|a| a.to_string());
        assert_eq!(
            at("http://127.0.0.1:2379/v3/kv/range").as_deref(),
            Some("127.0.0.1:2379")
        );
        assert_eq!(at("https://[::1]/v3/watch").as_deref(), Some("[::1]:443"));
        assert_eq!(at("http://10.0.0.1/v3").as_deref(), Some("10.0.0.1:80"));
        assert_eq!(at("http://etcd-1.example.org:2379/v3"), None);
        assert_eq!(at("http://localhost:2379/v3"), None);
    }

    #[test]
    fn a_redirect_says_where_to() {
        let m = redirected(
            307,
            "http://a:1",
            "/v3/kv/range",
            Some("http://b:2/v3/kv/range"),
        );
        assert!(
            m.contains("HTTP 307, a redirect to 'http://b:2/v3/kv/range', which is not followed"),
            "{m}"
        );
        assert_eq!(message(500, ""), "HTTP 500 with an empty answer");
    }
}
