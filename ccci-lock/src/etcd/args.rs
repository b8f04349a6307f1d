//! The etcd flags shared by `ccci-lock` and `ccci-janitor` (SPEC §8).

use std::path::PathBuf;
use std::time::Duration;

use ccci_common::cli::UsageError;
use ccci_common::duration;
use ccci_common::names::shell_quote;

use super::{client, prefix, ttl, Auth, Config, Tls, DEFAULT_PREFIX, DEFAULT_TTL};

/// `--etcd`, `--etcd-prefix`, `--ttl`, and the TLS and authentication
/// settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EtcdArgs {
    /// Lock on etcd instead of a lock dir: endpoints http://HOST:PORT or https://HOST:PORT[,...], tried in turn
    #[arg(
        long = "etcd",
        value_name = "URL[,URL...]",
        env = "CCCI_ETCD_ENDPOINTS",
        hide_env_values = true
    )]
    pub endpoints: Option<String>,

    /// With --etcd: the key prefix [default: /ccci]
    #[arg(
        long,
        value_name = "PREFIX",
        env = "CCCI_ETCD_PREFIX",
        hide_env_values = true
    )]
    pub etcd_prefix: Option<String>,

    /// With --etcd: the lease TTL; a holder that dies frees its locks within it [default: 10s]
    #[arg(long, value_name = "DURATION", env = "CCCI_ETCD_TTL", hide_env_values = true,
          value_parser = parse_ttl)]
    pub ttl: Option<Duration>,

    /// With https endpoints: the CA certificates (PEM) that etcd's certificate must chain to [default: /etc/ssl/certs/ca-certificates.crt]
    #[arg(
        long,
        value_name = "FILE",
        env = "CCCI_ETCD_CACERT",
        hide_env_values = true
    )]
    pub etcd_cacert: Option<PathBuf>,

    /// With https endpoints: the client certificate (PEM) to show etcd; needs --etcd-key
    #[arg(
        long,
        value_name = "FILE",
        env = "CCCI_ETCD_CERT",
        hide_env_values = true
    )]
    pub etcd_cert: Option<PathBuf>,

    /// With https endpoints: the client certificate's private key (PEM); needs --etcd-cert
    #[arg(
        long,
        value_name = "FILE",
        env = "CCCI_ETCD_KEY",
        hide_env_values = true
    )]
    pub etcd_key: Option<PathBuf>,

    /// With --etcd: authenticate to etcd as NAME; needs --etcd-password-file
    #[arg(
        long,
        value_name = "NAME",
        env = "CCCI_ETCD_USER",
        hide_env_values = true
    )]
    pub etcd_user: Option<String>,

    /// With --etcd-user: the file holding the password (first line); regular, owned by root or you, not writable by group or others
    #[arg(
        long,
        value_name = "FILE",
        env = "CCCI_ETCD_PASSWORD_FILE",
        hide_env_values = true
    )]
    pub etcd_password_file: Option<PathBuf>,
}

/// Where a setting came from: its flag when it is on the command line
/// (before `--`), else its variable.
fn source(flag: &'static str, env: &'static str) -> &'static str {
    let eq = format!("{flag}=");
    if std::env::args_os()
        .take_while(|a| a != "--")
        .any(|a| a == flag || a.to_string_lossy().starts_with(&eq))
    {
        flag
    } else {
        env
    }
}

impl EtcdArgs {
    /// The checked settings; `None` when etcd was not asked for (then
    /// `--etcd-prefix` and `--ttl` are ignored, as their variables may be
    /// set for every tool of a host).
    pub fn config(&self) -> Result<Option<Config>, UsageError> {
        let Some(list) = &self.endpoints else {
            return Ok(None);
        };
        let from = source("--etcd", "CCCI_ETCD_ENDPOINTS");
        let endpoints = client::endpoints(list, from)?;
        let prefix = match &self.etcd_prefix {
            Some(p) => prefix(p, "--etcd-prefix")?,
            None => DEFAULT_PREFIX.to_string(),
        };
        let ttl = self.ttl.unwrap_or(DEFAULT_TTL);
        let tls = Tls {
            cacert: self.etcd_cacert.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
        };
        match (&tls.cert, &tls.key) {
            (Some(cert), None) => {
                return Err(UsageError(format!(
                    "{} {} needs a private key: give --etcd-key or CCCI_ETCD_KEY too",
                    source("--etcd-cert", "CCCI_ETCD_CERT"),
                    shell_quote(&cert.to_string_lossy())
                )))
            }
            (None, Some(key)) => {
                return Err(UsageError(format!(
                    "{} {} needs its certificate: give --etcd-cert or CCCI_ETCD_CERT too",
                    source("--etcd-key", "CCCI_ETCD_KEY"),
                    shell_quote(&key.to_string_lossy())
                )))
            }
            _ => {}
        }
        let auth = match (&self.etcd_user, &self.etcd_password_file) {
            (None, None) => None,
            (Some(user), Some(file)) => {
                if user.chars().any(char::is_control) {
                    return Err(UsageError(format!(
                        "{} {} is not a usable etcd user name",
                        source("--etcd-user", "CCCI_ETCD_USER"),
                        shell_quote(user)
                    )));
                }
                Some(Auth {
                    user: user.clone(),
                    password_file: file.clone(),
                })
            }
            (Some(user), None) => {
                return Err(UsageError(format!(
                    "{} {} needs a password: give --etcd-password-file or CCCI_ETCD_PASSWORD_FILE (a password is never taken from the command line)",
                    source("--etcd-user", "CCCI_ETCD_USER"),
                    shell_quote(user)
                )))
            }
            (None, Some(file)) => {
                return Err(UsageError(format!(
                    "{} {} names no user: give --etcd-user or CCCI_ETCD_USER too",
                    source("--etcd-password-file", "CCCI_ETCD_PASSWORD_FILE"),
                    shell_quote(&file.to_string_lossy())
                )))
            }
        };
        Ok(Some(Config {
            endpoints,
            prefix,
            ttl,
            tls,
            auth,
        }))
    }

    /// The command line that gives `config` to another `ccci-lock` (the
    /// keeper of `--hold`): flags, so that settings given as flags reach
    /// it as well as those from variables.
    pub fn to_args(config: &Config) -> Vec<std::ffi::OsString> {
        let mut out: Vec<std::ffi::OsString> = vec![
            "--etcd".into(),
            config.endpoints.join(",").into(),
            "--etcd-prefix".into(),
            config.prefix.clone().into(),
            "--ttl".into(),
            format!("{}s", config.ttl.as_secs()).into(),
        ];
        let files = [
            ("--etcd-cacert", &config.tls.cacert),
            ("--etcd-cert", &config.tls.cert),
            ("--etcd-key", &config.tls.key),
        ];
        for (flag, file) in files {
            if let Some(file) = file {
                out.push(flag.into());
                out.push(file.clone().into());
            }
        }
        if let Some(auth) = &config.auth {
            out.push("--etcd-user".into());
            out.push(auth.user.clone().into());
            out.push("--etcd-password-file".into());
            out.push(auth.password_file.clone().into());
        }
        out
    }
}

fn parse_ttl(value: &str) -> Result<Duration, String> {
    let parsed = duration::parse(value)?;
    ttl(parsed, "").map_err(|_| {
        format!(
            "{} is too short: an etcd lease lasts at least 1s",
            shell_quote(value)
        )
    })
}
