//! The etcd flags shared by `ccci-lock` and `ccci-janitor` (SPEC §8).

use std::time::Duration;

use ccci_common::cli::UsageError;
use ccci_common::duration;
use ccci_common::names::shell_quote;

use super::{client, prefix, ttl, Config, DEFAULT_PREFIX, DEFAULT_TTL};

/// `--etcd`, `--etcd-prefix`, `--ttl`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EtcdArgs {
    /// Lock on etcd instead of a lock dir: endpoints http://HOST:PORT[,...], tried in turn
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
}

impl EtcdArgs {
    /// The checked settings; `None` when etcd was not asked for (then
    /// `--etcd-prefix` and `--ttl` are ignored, as their variables may be
    /// set for every tool of a host).
    pub fn config(&self) -> Result<Option<Config>, UsageError> {
        let Some(list) = &self.endpoints else {
            return Ok(None);
        };
        let on_command_line = std::env::args_os()
            .take_while(|a| a != "--")
            .any(|a| a == "--etcd" || a.to_string_lossy().starts_with("--etcd="));
        let from = if on_command_line {
            "--etcd"
        } else {
            "CCCI_ETCD_ENDPOINTS"
        };
        let endpoints = client::endpoints(list, from)?;
        let prefix = match &self.etcd_prefix {
            Some(p) => prefix(p, "--etcd-prefix")?,
            None => DEFAULT_PREFIX.to_string(),
        };
        let ttl = self.ttl.unwrap_or(DEFAULT_TTL);
        Ok(Some(Config {
            endpoints,
            prefix,
            ttl,
        }))
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
