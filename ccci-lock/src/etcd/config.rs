//! The checked settings of the etcd backend: endpoints, key prefix, lease
//! TTL, TLS files and user (what `--etcd` and its flags give, SPEC §8),
//! and the checks of the names that become parts of keys (domains, which
//! etcd takes as they are, and hosts).

use std::path::PathBuf;
use std::time::Duration;

use ccci_common::cli::UsageError;
use ccci_common::names::shell_quote;
use ccci_common::Domain;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/ccci";
/// The default lease TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

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

/// Checks that `domain` can name a lock on etcd: any [`Domain`] (a valid
/// DOMAIN, SPEC §1) can, since a key has no length limit that a domain
/// reaches and a domain holds no `/`. Etcd adds no rule of its own.
pub fn check_domain(domain: &Domain) -> Result<(), UsageError> {
    let _ = domain;
    Ok(())
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
}
