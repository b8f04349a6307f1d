//! The one exit-status table of every ccci tool (SPEC §1).
//!
//! Code, `--help`, man pages and `docs/exit-status.md` all use [`TABLE`], so
//! they cannot drift apart. A tool that wraps a COMMAND passes the command's
//! own status through; every status below 125 that a tool produces itself is
//! named here.

/// Success.
pub const SUCCESS: u8 = 0;
/// `ccci-janitor`: at least one reap failed. `ccci-state get`: no such value.
/// `ccci-lock --release`: a domain is not held for PID.
pub const FAILURE: u8 = 1;
/// Usage error or invalid input: bad flag, invalid domain, run id, name or
/// duration. Nothing was created.
pub const USAGE: u8 = 2;
/// The lock is busy: `--nonblock`, or `--wait` ran out (`EX_TEMPFAIL`).
pub const BUSY: u8 = 75;
/// The tool itself failed: unsafe or unusable directory, I/O error, refused
/// to run.
pub const TOOL_FAILED: u8 = 125;
/// COMMAND was found but could not be executed.
pub const CANNOT_EXECUTE: u8 = 126;
/// COMMAND was not found.
pub const NOT_FOUND: u8 = 127;
/// COMMAND was killed by signal N: the status is `SIGNALED + N`.
pub const SIGNALED: u8 = 128;
/// The deadline fired: COMMAND died of SIGALRM (`128 + 14`).
pub const DEADLINE: u8 = SIGNALED + libc::SIGALRM as u8;

/// Every row of the table: (status, meaning), in the order documented.
pub const TABLE: &[(&str, &str)] = &[
    ("0", "success"),
    (
        "1",
        "ccci-janitor: at least one reap failed; ccci-state get: no such value; ccci-lock --release: a domain is not held for PID",
    ),
    (
        "2",
        "usage error or invalid input (bad flag, invalid domain, run id, name or duration); nothing was created",
    ),
    (
        "75",
        "lock busy: --nonblock, or --wait ran out (EX_TEMPFAIL)",
    ),
    (
        "125",
        "the tool itself failed (unsafe or unusable directory, I/O error, etcd unreachable, lock lost, refused to run)",
    ),
    ("126", "COMMAND found but not executable"),
    ("127", "COMMAND not found"),
    (
        "128+N",
        "COMMAND was killed by signal N (142 = SIGALRM deadline, 143 = SIGTERM): the tool ends by that same signal, without a core dump",
    ),
    ("other", "COMMAND's own exit status, passed through"),
];

/// The table as plain text for `--help` (`after_help`).
pub fn help_section() -> String {
    let mut out = String::from("Exit status:\n");
    for (status, meaning) in TABLE {
        out.push_str(&format!("  {status:<6} {meaning}\n"));
    }
    out.push_str("\nSee docs/exit-status.md or the man page for details.");
    out
}

/// The shell-visible status of a child that ended: its exit code, or
/// `128 + N` when signal N killed it.
pub fn from_wait_status(status: std::process::ExitStatus) -> u8 {
    Ended::from_wait_status(status).shell_status()
}

/// How a tool ends: with an exit status, or by a signal (SPEC §1 "Signal
/// deaths propagate"). A tool whose COMMAND was killed by signal N ends by
/// signal N itself, after its own cleanup, so that whoever waits for the
/// tool sees what it would have seen waiting for COMMAND: a shell still
/// shows 128+N, and a wrapping tool (ccci-lock around ccci-guard) sees a
/// signal death and keeps its lockfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Exit with this status.
    Code(u8),
    /// End by this signal (see [`crate::sys::end_by_signal`]).
    Signal(libc::c_int),
}

impl Ended {
    /// How a child that ended with `status` ended.
    pub fn from_wait_status(status: std::process::ExitStatus) -> Ended {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Ended::Code(code as u8),
            (None, Some(sig)) => Ended::Signal(sig),
            (None, None) => Ended::Code(TOOL_FAILED),
        }
    }

    /// The status a shell shows for this ending: the code, or `128 + N`.
    pub fn shell_status(self) -> u8 {
        match self {
            Ended::Code(code) => code,
            Ended::Signal(sig) => SIGNALED.saturating_add(sig as u8),
        }
    }

    /// Ends this process this way: `exit`, or [`crate::sys::end_by_signal`].
    pub fn end(self) -> ! {
        match self {
            Ended::Code(code) => {
                use std::io::Write;
                let _ = std::io::stdout().flush();
                std::process::exit(i32::from(code))
            }
            Ended::Signal(sig) => crate::sys::end_by_signal(sig),
        }
    }
}

impl From<u8> for Ended {
    fn from(code: u8) -> Ended {
        Ended::Code(code)
    }
}

/// The status for a COMMAND that could not be started (spawn or exec
/// failed with `e`): 127 when it was not found, else 126.
pub fn from_spawn_error(e: &std::io::Error) -> u8 {
    if e.kind() == std::io::ErrorKind::NotFound {
        NOT_FOUND
    } else {
        CANNOT_EXECUTE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    /// Every status that is a constant of its own, in the order of the table.
    const NAMED: [u8; 7] = [
        SUCCESS,
        FAILURE,
        USAGE,
        BUSY,
        TOOL_FAILED,
        CANNOT_EXECUTE,
        NOT_FOUND,
    ];

    #[test]
    fn constants_match_the_spec_table() {
        assert_eq!(NAMED, [0, 1, 2, 75, 125, 126, 127]);
        assert_eq!(DEADLINE, 142);
        assert_eq!(SIGNALED + libc::SIGTERM as u8, 143);
    }

    #[test]
    fn table_rows_name_every_constant() {
        let statuses: Vec<&str> = TABLE.iter().map(|(s, _)| *s).collect();
        for code in NAMED {
            assert!(statuses.contains(&code.to_string().as_str()), "{code}");
        }
        assert!(help_section().contains("142 = SIGALRM deadline"));
    }

    #[test]
    fn docs_exit_status_page_has_every_row() {
        let page = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/exit-status.md"
        ))
        .unwrap();
        for (status, meaning) in TABLE {
            let row = format!("| {status} | {meaning} |");
            assert!(page.contains(&row), "docs/exit-status.md lacks {row:?}");
        }
    }

    #[test]
    fn spawn_errors_map_to_126_and_127() {
        use std::io::{Error, ErrorKind};
        assert_eq!(from_spawn_error(&Error::from(ErrorKind::NotFound)), 127);
        assert_eq!(
            from_spawn_error(&Error::from(ErrorKind::PermissionDenied)),
            126
        );
    }

    #[test]
    fn wait_status_maps_exit_codes_and_signals() {
        assert_eq!(from_wait_status(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(from_wait_status(ExitStatus::from_raw(libc::SIGTERM)), 143);
        assert_eq!(from_wait_status(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(
            Ended::from_wait_status(ExitStatus::from_raw(libc::SIGALRM)),
            Ended::Signal(libc::SIGALRM)
        );
        assert_eq!(
            Ended::from_wait_status(ExitStatus::from_raw(9 << 8)),
            Ended::Code(9)
        );
        assert_eq!(Ended::Signal(libc::SIGALRM).shell_status(), DEADLINE);
        assert_eq!(Ended::from(3), Ended::Code(3));
    }
}
