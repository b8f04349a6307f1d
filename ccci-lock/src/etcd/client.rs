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

use std::fmt;
use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

use ccci_common::cli::UsageError;
use ccci_common::dirs::Role;
use ccci_common::names::{quote_path, shell_quote};

use super::{Auth, Tls};

/// The longest one attempt of a call may take before the next endpoint (or
/// the same one again) is tried: a member that lost its leader holds a
/// request until its own timeout, while a retry after the election (well
/// under a second by default) succeeds.
const ATTEMPT: Duration = Duration::from_secs(2);
/// The pause after every endpoint failed once.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The largest answer read (a `--list` of thousands of claims fits).
pub const MAX_ANSWER: u64 = 4 << 20;
/// The largest error answer read (4xx, 5xx): only its message is used.
const MAX_ERROR: u64 = 64 << 10;
/// The largest header block of an answer.
pub const MAX_HEADER: usize = 64 << 10;
/// The longest line of a watch stream (one event batch).
pub const MAX_WATCH_LINE: usize = 1 << 20;
/// The largest certificate, key or password file read.
const MAX_FILE: usize = 1 << 20;
/// The CA bundle used when `--etcd-cacert` is not given (Debian's, and
/// most distributions').
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The password file, for messages and the safety checks.
const PASSWORD_FILE: Role = Role {
    what: "etcd password file",
    flag: "--etcd-password-file",
    env: "CCCI_ETCD_PASSWORD_FILE",
};

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

/// Checks one endpoint URL: `http://HOST:PORT` or `https://HOST:PORT`,
/// nothing after but an optional `/`. Returns it without the slash.
pub fn endpoint(url: &str, from: &str) -> Result<String, UsageError> {
    let bad = |why: &str| {
        UsageError(format!(
            "{from} {} is not a usable etcd endpoint: {why}",
            shell_quote(url)
        ))
    };
    let uri: ureq::http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        _ => return Err(bad("expected http://HOST:PORT or https://HOST:PORT")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(bad("expected http://HOST:PORT or https://HOST:PORT"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("expected http://HOST:PORT with no path"));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// Parses a comma-separated endpoint list (`--etcd`, `CCCI_ETCD_ENDPOINTS`).
pub fn endpoints(list: &str, from: &str) -> Result<Vec<String>, UsageError> {
    let urls: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| endpoint(s, from))
        .collect::<Result<_, _>>()?;
    if urls.is_empty() {
        return Err(UsageError(format!(
            "{from} {} names no etcd endpoint",
            shell_quote(list)
        )));
    }
    Ok(urls)
}

/// Base64, as the gateway carries keys and values.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes of a base64 field; empty when missing or malformed.
pub fn unb64(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default()
}

/// An int64 field: the gateway writes them as strings, and leaves out zeros.
pub fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The end of the range of every key that starts with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// What a watch saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// Nothing, until the deadline or the end of the stream.
    Quiet,
    /// The key was deleted.
    Deleted,
    /// Something else (a put, the watch cancelled by etcd): look again.
    Changed,
}

/// What the client needs to talk to etcd, made once from the settings.
struct Setup {
    agent: ureq::Agent,
    /// Where the trusted CAs came from, for messages.
    trusted: String,
    /// The user and its password.
    login: Option<(String, String, std::path::PathBuf)>,
}

/// The gateway client.
pub struct Client {
    setup: Result<Setup, String>,
    endpoints: Vec<String>,
    current: AtomicUsize,
    /// The auth token, when logged in.
    token: Mutex<Option<Arc<str>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

fn read_small(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", quote_path(path)))?;
    let mut out = Vec::new();
    file.take(MAX_FILE as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot read {what} {}: {e}", quote_path(path)))?;
    if out.len() > MAX_FILE {
        return Err(format!(
            "{what} {} is larger than {MAX_FILE} bytes",
            quote_path(path)
        ));
    }
    Ok(out)
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_small(path, what)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {} is not valid PEM: {e}", quote_path(path)))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {} holds no PEM certificate",
            quote_path(path)
        ));
    }
    Ok(certs)
}

/// The TLS settings of the agent, checked: every file read and parsed, the
/// client key matching its certificate.
fn tls_config(tls: &Tls) -> Result<ureq::tls::TlsConfig, String> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    // ring, not aws-lc: it builds with a C compiler alone and links
    // statically. Its provider lacks only post-quantum key exchange, which
    // etcd (Go's TLS) negotiates down from anyway.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (ca_path, ca_what) = match &tls.cacert {
        Some(path) => (path.as_path(), "etcd CA file (--etcd-cacert)"),
        None => (
            Path::new(SYSTEM_CA),
            "system CA bundle (give --etcd-cacert for a private CA)",
        ),
    };
    let roots = certificates(ca_path, ca_what)?;
    let mut store = rustls::RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(roots.iter().cloned());
    if added == 0 {
        return Err(format!(
            "{ca_what} {} holds no usable CA certificate",
            quote_path(ca_path)
        ));
    }
    let mut builder = TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(RootCerts::new_with_certs(
            &roots
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect::<Vec<_>>(),
        ))
        .unversioned_rustls_crypto_provider(Arc::clone(&provider));
    if let (Some(cert_path), Some(key_path)) = (&tls.cert, &tls.key) {
        let chain = certificates(cert_path, "etcd client certificate (--etcd-cert)")?;
        let key_what = "etcd client key (--etcd-key)";
        let pem = read_small(key_path, key_what)?;
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            format!(
                "{key_what} {} holds no usable PEM private key: {e}",
                quote_path(key_path)
            )
        })?;
        // ureq would panic on a key that does not fit its certificate:
        // check here, where it can be said.
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
            |e| {
                format!(
                    "cannot use etcd client certificate {} with key {}: {e}",
                    quote_path(cert_path),
                    quote_path(key_path)
                )
            },
        )?;
        let chain: Vec<Certificate<'static>> = chain
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let key = PrivateKey::from_pem(&pem).map_err(|e| {
            format!(
                "{key_what} {} holds no usable PEM private key: {e}",
                quote_path(key_path)
            )
        })?;
        builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(builder.build())
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
    let login = match auth {
        None => None,
        Some(auth) => {
            let bytes =
                ccci_common::fs::read_trusted_file(&PASSWORD_FILE, &auth.password_file, MAX_FILE)
                    .map_err(|e| format!("{e:#}"))?;
            let text = String::from_utf8(bytes).map_err(|_| {
                format!(
                    "etcd password file {} is not UTF-8",
                    quote_path(&auth.password_file)
                )
            })?;
            let password = text.lines().next().unwrap_or("").to_string();
            Some((auth.user.clone(), password, auth.password_file.clone()))
        }
    };
    let trusted = match &tls.cacert {
        Some(path) => format!("--etcd-cacert {}", quote_path(path)),
        None => format!("the system CA bundle {SYSTEM_CA} (give --etcd-cacert for a private CA)"),
    };
    Ok(Setup {
        agent: config.build().new_agent(),
        trusted,
        login,
    })
}

/// Whether a failed request is one that no retry will mend: the TLS
/// handshake failed (a certificate refused by us or by etcd).
fn is_tls_failure(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) | ureq::Error::Pem(_) => true,
        ureq::Error::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
        _ => false,
    }
}

fn tls_hint(e: &ureq::Error, trusted: &str) -> String {
    let text = e.to_string();
    if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        format!("etcd's certificate is not signed by a CA of {trusted}")
    } else if text.contains("CertificateRequired")
        || text.contains("BadCertificate")
        || text.contains("bad certificate")
        || text.contains("certificate required")
    {
        "etcd refused our client certificate (give --etcd-cert and --etcd-key signed by a CA that etcd trusts)".into()
    } else {
        "the TLS handshake failed".into()
    }
}

/// Reads one line of at most `limit` bytes (with its `\n`) into `line`;
/// `Ok(false)` at the end of the stream.
fn bounded_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<bool> {
    line.clear();
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(!line.is_empty());
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > limit {
            return Err(std::io::Error::other(format!(
                "a line longer than {limit} bytes"
            )));
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if done {
            return Ok(true);
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
    pub fn call(&self, path: &str, body: &Value, deadline: Instant) -> Result<Value, CallError> {
        self.call_trying(path, body, deadline, ATTEMPT)
    }

    /// [`Client::call`], giving up on an endpoint after `attempt` (at most
    /// [`ATTEMPT`]) instead: a keep-alive must reach another member well
    /// before its lease runs out when the one in use stops answering.
    pub fn call_trying(
        &self,
        path: &str,
        body: &Value,
        deadline: Instant,
        attempt: Duration,
    ) -> Result<Value, CallError> {
        let mut renewed = false;
        loop {
            let text = self.send(path, body, deadline, attempt.min(ATTEMPT), |resp| {
                resp.body_mut()
                    .with_config()
                    .limit(MAX_ANSWER)
                    .read_to_string()
            })?;
            let answer: Value = serde_json::from_str(&text).map_err(|e| {
                CallError::Unreachable(format!("a malformed answer to {path}: {e}"))
            })?;
            // A streaming call (a keep-alive) carries its error in a 200
            // answer: a refused token is renewed there too, once.
            let error = &answer["error"];
            let message = error["message"].as_str().unwrap_or("");
            if error["http_code"] == 401 || message.contains("invalid auth token") {
                if !renewed && self.forget_token() {
                    renewed = true;
                    continue;
                }
                return Err(CallError::Refused(format!("{path}: {message}")));
            }
            return Ok(answer);
        }
    }

    /// Drops the token so that the next call authenticates again; `false`
    /// when no user is configured (nothing to renew).
    fn forget_token(&self) -> bool {
        let has_login = matches!(&self.setup, Ok(setup) if setup.login.is_some());
        if has_login {
            *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        has_login
    }

    /// Opens a watch on `key` from `revision` and returns when an event
    /// arrives or `deadline` passes (`Quiet`). A watch only reads, so
    /// giving it up at any moment is harmless. A line of the stream longer
    /// than [`MAX_WATCH_LINE`], or an error in it, is an error.
    pub fn watch_once(
        &self,
        key: &str,
        revision: i64,
        deadline: Instant,
    ) -> Result<Watched, CallError> {
        let body =
            json!({"create_request": {"key": b64(key), "start_revision": revision.to_string()}});
        let outcome = self.send("/v3/watch", &body, deadline, Duration::MAX, |resp| {
            let mut lines = std::io::BufReader::with_capacity(
                8 << 10,
                resp.body_mut().with_config().limit(u64::MAX).reader(),
            );
            let mut line = Vec::new();
            loop {
                match bounded_line(&mut lines, &mut line, MAX_WATCH_LINE) {
                    Ok(false) => return Ok(Ok(Watched::Quiet)),
                    Ok(true) => {
                        let msg: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
                        let result = &msg["result"];
                        if let Some(error) = msg.get("error") {
                            return Ok(Err(CallError::Refused(format!(
                                "the watch on {key} failed: {}",
                                error["message"].as_str().unwrap_or("an error")
                            ))));
                        }
                        if let Some(events) = result["events"].as_array().filter(|e| !e.is_empty())
                        {
                            let deleted = events.iter().any(|e| e["type"] == "DELETE");
                            return Ok(Ok(if deleted {
                                Watched::Deleted
                            } else {
                                Watched::Changed
                            }));
                        }
                        if result["canceled"].as_bool() == Some(true) {
                            return Ok(Ok(Watched::Changed));
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Other => {
                        return Ok(Err(CallError::Refused(format!(
                            "the watch stream on {key} sent {e}"
                        ))));
                    }
                    // The deadline cut the stream: nothing happened.
                    Err(_) => return Ok(Ok(Watched::Quiet)),
                }
            }
        });
        match outcome {
            Ok(inner) => inner,
            Err(CallError::Unreachable(_)) if Instant::now() >= deadline => Ok(Watched::Quiet),
            Err(other) => Err(other),
        }
    }

    /// The token to send, authenticating first when there is none.
    fn token(&self, setup: &Setup, deadline: Instant) -> Result<Option<Arc<str>>, CallError> {
        let Some((user, password, file)) = &setup.login else {
            return Ok(None);
        };
        if let Some(token) = self.token.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(Some(token));
        }
        let body = json!({"name": user, "password": password});
        let text = self
            .send_once(
                setup,
                "/v3/auth/authenticate",
                &body,
                deadline,
                ATTEMPT,
                None,
                &|resp: &mut ureq::http::Response<ureq::Body>| {
                    resp.body_mut()
                        .with_config()
                        .limit(MAX_ERROR)
                        .read_to_string()
                },
            )
            .map_err(|e| match e {
                CallError::Refused(why) | CallError::BadToken(why) => CallError::Setup(format!(
                    "etcd refused to authenticate user {} with the password in {}: {why}",
                    shell_quote(user),
                    quote_path(file)
                )),
                other => other,
            })?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let Some(token) = answer["token"].as_str().filter(|t| !t.is_empty()) else {
            return Err(CallError::Setup(format!(
                "etcd answered the authentication of user {} with no token",
                shell_quote(user)
            )));
        };
        let token: Arc<str> = Arc::from(token);
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&token));
        Ok(Some(token))
    }

    fn send<T>(
        &self,
        path: &str,
        body: &Value,
        deadline: Instant,
        attempt: Duration,
        read: impl Fn(&mut ureq::http::Response<ureq::Body>) -> Result<T, ureq::Error>,
    ) -> Result<T, CallError> {
        let setup = self
            .setup
            .as_ref()
            .map_err(|why| CallError::Setup(why.clone()))?;
        let mut renewed = false;
        loop {
            let token = self.token(setup, deadline)?;
            match self.send_once(
                setup,
                path,
                body,
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
    fn send_once<T>(
        &self,
        setup: &Setup,
        path: &str,
        body: &Value,
        deadline: Instant,
        attempt: Duration,
        token: Option<&str>,
        read: &dyn Fn(&mut ureq::http::Response<ureq::Body>) -> Result<T, ureq::Error>,
    ) -> Result<T, CallError> {
        let body = body.to_string();
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
            let mut request = setup
                .agent
                .post(&url)
                .config()
                .timeout_global(Some(left.min(attempt).max(Duration::from_millis(1))))
                .build()
                .header("Content-Type", "application/json");
            if let Some(token) = token {
                request = request.header("Authorization", token);
            }
            let answer = request.send(&body);
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
                        let text = resp
                            .body_mut()
                            .with_config()
                            .limit(MAX_ERROR)
                            .read_to_string()
                            .unwrap_or_default();
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
                    let text = resp
                        .body_mut()
                        .with_config()
                        .limit(MAX_ERROR)
                        .read_to_string()
                        .unwrap_or_default();
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
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let msg = v["message"]
        .as_str()
        .or(v["error"].as_str())
        .map(str::to_string)
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
    fn endpoint_urls() {
        assert_eq!(
            endpoint("http://127.0.0.1:2379", "--etcd").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            endpoint("http://etcd:2379/", "--etcd").unwrap(),
            "http://etcd:2379"
        );
        for bad in [
            "127.0.0.1:2379",
            "http://",
            "ftp://x",
            "http://x/v3",
            "http://u@x:1",
            "x y",
        ] {
            let e = endpoint(bad, "--etcd").unwrap_err().0;
            assert!(
                e.contains("--etcd") && e.contains("not a usable"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            endpoint("https://x:2379/", "--etcd").unwrap(),
            "https://x:2379"
        );
        assert_eq!(
            endpoints("http://a:1, http://b:2", "--etcd").unwrap().len(),
            2
        );
        assert!(endpoints(" , ", "CCCI_ETCD_ENDPOINTS").is_err());
    }

    #[test]
    fn watch_lines_are_bounded() {
        let mut input: &[u8] = b"{\"a\":1}\nxxxxxxxxxxxxxxxx";
        let mut line = Vec::new();
        assert!(bounded_line(&mut input, &mut line, 10).unwrap());
        assert_eq!(line, b"{\"a\":1}\n");
        let e = bounded_line(&mut input, &mut line, 10).unwrap_err();
        assert!(e.to_string().contains("longer than 10 bytes"), "{e}");
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

    #[test]
    fn gateway_encodings() {
        assert_eq!(int(&json!("42")), 42);
        assert_eq!(int(&json!(7)), 7);
        assert_eq!(int(&Value::Null), 0);
        assert_eq!(unb64(&json!(b64("/ccci/x"))), b"/ccci/x");
        assert_eq!(prefix_end("/a/"), b"/a0");
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80");
    }
}
