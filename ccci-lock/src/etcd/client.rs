//! A small client for etcd's v3 JSON gateway (`POST /v3/...`), the API etcd
//! documents for clients without gRPC.
//!
//! - **Bounded.** Every call has a deadline; no request outlives it, so a
//!   caller that must give up at a time (`-w`, a lease's expiry) can.
//! - **Several endpoints.** A call goes to the endpoint that answered last;
//!   when that one cannot be reached, answers 5xx (no leader, shutting
//!   down) or takes longer than [`ATTEMPT`], the next is tried, round after
//!   round, until the deadline. Only calls that are safe
//!   to repeat are made (puts guarded by a compare, deletes, reads, lease
//!   grants whose lost duplicates expire on their own).
//! - **No surprises from the environment.** No proxy variable is honoured
//!   and no redirect is followed: the endpoints are the ones given.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use ccci_common::cli::UsageError;
use ccci_common::names::shell_quote;

/// The longest one attempt of a call may take before the next endpoint (or
/// the same one again) is tried: a member that lost its leader holds a
/// request until its own timeout, while a retry after the election (well
/// under a second by default) succeeds.
const ATTEMPT: Duration = Duration::from_secs(2);
/// The pause after every endpoint failed once.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// No endpoint answered before the deadline; the text says what the
    /// last one did.
    Unreachable(String),
    /// etcd answered with an error (HTTP 4xx).
    Refused(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Unreachable(why) => write!(f, "cannot reach etcd: {why}"),
            CallError::Refused(why) => write!(f, "etcd refused the request: {why}"),
        }
    }
}

impl std::error::Error for CallError {}

/// Checks one endpoint URL: `http://HOST:PORT`, nothing after but an
/// optional `/`. Returns it without the slash.
pub fn endpoint(url: &str, from: &str) -> Result<String, UsageError> {
    let bad = |why: &str| {
        UsageError(format!(
            "{from} {} is not a usable etcd endpoint: {why}",
            shell_quote(url)
        ))
    };
    let uri: ureq::http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "https is not supported; reach etcd over http on a private network or a local TLS proxy",
            ))
        }
        _ => return Err(bad("expected http://HOST:PORT")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(bad("expected http://HOST:PORT"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("expected http://HOST:PORT with no path"));
    }
    Ok(format!("http://{authority}"))
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

/// The gateway client.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    current: AtomicUsize,
}

impl Client {
    /// A client for `endpoints` (checked by [`endpoints`]).
    pub fn new(endpoints: Vec<String>) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .build()
            .new_agent();
        Client {
            agent,
            endpoints,
            current: AtomicUsize::new(0),
        }
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// POSTs `body` to `path` (`/v3/kv/range`…) and returns the answer, or
    /// fails by `deadline`.
    pub fn call(&self, path: &str, body: &Value, deadline: Instant) -> Result<Value, CallError> {
        let text = self.send(path, body, deadline, ATTEMPT, |resp| {
            resp.body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()
        })?;
        serde_json::from_str(&text)
            .map_err(|e| CallError::Unreachable(format!("a malformed answer to {path}: {e}")))
    }

    /// Opens a watch on `key` from `revision` and returns when an event
    /// arrives (`true`) or `deadline` passes (`false`). A watch only reads,
    /// so giving it up at any moment is harmless.
    pub fn watch_once(
        &self,
        key: &str,
        revision: i64,
        deadline: Instant,
    ) -> Result<bool, CallError> {
        let body =
            json!({"create_request": {"key": b64(key), "start_revision": revision.to_string()}});
        let outcome = self.send("/v3/watch", &body, deadline, Duration::MAX, |resp| {
            let mut lines = BufReader::new(resp.body_mut().as_reader());
            let mut line = String::new();
            loop {
                line.clear();
                match lines.read_line(&mut line) {
                    Ok(0) => return Ok(false),
                    Ok(_) => {
                        let msg: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                        let result = &msg["result"];
                        if result["events"].as_array().is_some_and(|e| !e.is_empty())
                            || result["canceled"].as_bool() == Some(true)
                            || msg.get("error").is_some()
                        {
                            return Ok(true);
                        }
                    }
                    // The deadline cut the stream: nothing happened.
                    Err(_) => return Ok(false),
                }
            }
        });
        match outcome {
            Err(CallError::Unreachable(_)) if Instant::now() >= deadline => Ok(false),
            other => other,
        }
    }

    fn send<T>(
        &self,
        path: &str,
        body: &Value,
        deadline: Instant,
        attempt: Duration,
        read: impl Fn(&mut ureq::http::Response<ureq::Body>) -> Result<T, ureq::Error>,
    ) -> Result<T, CallError> {
        let body = body.to_string();
        let n = self.endpoints.len();
        let mut at = self.current.load(Ordering::Relaxed) % n;
        let mut last = String::from("no time left");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CallError::Unreachable(last));
            }
            let url = format!("{}{path}", self.endpoints[at]);
            let answer = self
                .agent
                .post(&url)
                .config()
                .timeout_global(Some(left.min(attempt).max(Duration::from_millis(1))))
                .build()
                .header("Content-Type", "application/json")
                .send(&body);
            let failed = match answer {
                Err(e) => format!("{}: {e}", self.endpoints[at]),
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    if (300..500).contains(&status) {
                        let text = resp.body_mut().read_to_string().unwrap_or_default();
                        return Err(CallError::Refused(message(status, &text)));
                    }
                    if status < 300 {
                        self.current.store(at, Ordering::Relaxed);
                        return read(&mut resp).map_err(|e| {
                            CallError::Unreachable(format!("{}: {e}", self.endpoints[at]))
                        });
                    }
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    format!("{}: {}", self.endpoints[at], message(status, &text))
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

fn message(status: u16, text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let msg = v["message"]
        .as_str()
        .or(v["error"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| text.trim().chars().take(200).collect());
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
        assert!(endpoint("https://x:2379", "--etcd")
            .unwrap_err()
            .0
            .contains("https"));
        assert_eq!(
            endpoints("http://a:1, http://b:2", "--etcd").unwrap().len(),
            2
        );
        assert!(endpoints(" , ", "CCCI_ETCD_ENDPOINTS").is_err());
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
