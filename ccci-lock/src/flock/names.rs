//! Lockfile names: the lockfile of a domain, and the domain of a lockfile.
//!
//! A [`Domain`] is a valid DOMAIN already; the one rule kept here is the
//! file system's ([`lockfile_name`]: the lockfile name fits in 255 bytes).
//! The names found in a lock dir are parsed into domains here
//! ([`domain_of`]): that is where they come in. Callers never build file
//! names.

use std::ffi::OsStr;

use ccci_common::cli::UsageError;
use ccci_common::names::shell_quote;
use ccci_common::Domain;

/// Longest lockfile name the file system takes (`NAME_MAX`).
const FILE_NAME_MAX: usize = 255;
/// The lockfile suffix.
pub const SUFFIX: &str = ".lock";
/// The pass lock of `ccci-janitor` in a lock dir; not a domain's lockfile
/// (no domain starts with a dot), so never listed or reaped.
pub const PASS_LOCK: &str = ".janitor.lock";
/// The lock that orders a run's writing of the lock dir's record of where
/// it claims against a janitor's reaps ([`crate::place`]); not a domain's
/// lockfile either.
pub const RECORDS_LOCK: &str = ".records.lock";

/// The lockfile name of `domain`: `<DOMAIN>.lock`. A domain that is valid
/// but too long for a file name (over 250 bytes) is a usage error.
pub fn lockfile_name(domain: &Domain) -> Result<String, UsageError> {
    // Called for every lockfile of a janitor pass: one allocation, no
    // formatting machinery.
    let mut name = String::with_capacity(domain.len() + SUFFIX.len());
    name.push_str(domain);
    name.push_str(SUFFIX);
    if name.len() > FILE_NAME_MAX {
        return Err(UsageError(format!(
            "domain {} is too long for a lockfile name: at most {} bytes",
            shell_quote(domain),
            FILE_NAME_MAX - SUFFIX.len()
        )));
    }
    Ok(name)
}

/// The domain a lockfile name stands for, if it is one of ours.
pub fn domain_of(file_name: &OsStr) -> Option<Domain> {
    let domain = file_name.to_str()?.strip_suffix(SUFFIX)?;
    if file_name.len() > FILE_NAME_MAX {
        return None;
    }
    Domain::parse(domain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockfile_names() {
        let domain = |name: &str| Domain::parse(name).unwrap();
        assert_eq!(
            lockfile_name(&domain("a.example")).unwrap(),
            "a.example.lock"
        );
        assert!(lockfile_name(&domain(&"a".repeat(250))).is_ok());
        let e = lockfile_name(&domain(&"a".repeat(251))).unwrap_err().0;
        assert!(e.contains("too long"), "{e}");
        assert_eq!(
            domain_of(OsStr::new("a.lock.lock")).as_deref(),
            Some("a.lock")
        );
        assert_eq!(domain_of(OsStr::new("a.lck")), None);
        assert_eq!(domain_of(OsStr::new(".lock")), None);
        assert_eq!(domain_of(OsStr::new(".x.tmp.lock")), None);
    }
}
