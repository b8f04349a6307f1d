//! Ending this process by a signal, as if the signal had killed it, so a
//! parent sees the death of the command a tool wrapped (SPEC §1 "Signal
//! deaths propagate"), and never with a core dump.

/// Ends this process by signal `sig`, as if the signal had killed it, after
/// flushing stdout and stderr (SPEC §1 "Signal deaths propagate"). A parent
/// sees a signal death (a shell's `$?` is 128+N), exactly what it would have
/// seen had it waited for the command we wrapped.
///
/// No core dump is written, whatever the signal's default action: the
/// process is made non-dumpable (`PR_SET_DUMPABLE` 0, which also stops a
/// `core_pattern` pipe such as systemd-coredump) and `RLIMIT_CORE` is set to
/// 0. The signal gets its default disposition and is unblocked, then raised.
/// Only when the process is still alive after that (a signal whose default
/// action is to ignore or to stop, which never kills a child and so should
/// not reach here) does it `exit(128 + sig)` instead.
///
/// Call it only after every cleanup is done: destructors of live values do
/// not run.
pub fn end_by_signal(sig: libc::c_int) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let stops = matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    );
    if (1..=libc::SIGRTMAX()).contains(&sig) && !stops && sig != libc::SIGKILL {
        raise_by_default(sig);
    } else if sig == libc::SIGKILL {
        // SAFETY: SIGKILL cannot be caught, blocked or ignored, and makes no
        // core; raise only sends it to this thread.
        unsafe {
            libc::raise(sig);
        }
    }
    // Still alive: the signal's default action does not kill.
    std::process::exit(128 + sig.clamp(0, 127))
}

/// Ends this process by `sig`'s default action, without a core dump:
/// no core limit, not dumpable, `sig` set to its default, unblocked in this
/// thread, raised. Async-signal-safe (a signal handler calls it too).
pub(super) fn raise_by_default(sig: libc::c_int) {
    // SAFETY: prctl and setrlimit read only their integer arguments and
    // the stack-local `none`; signal installs SIG_DFL (no handler code);
    // the set is stack-local and initialised by sigemptyset; raise sends
    // a signal to this thread. None of them touches Rust-managed memory.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0);
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::block_signals;

    /// Set in a re-run of this test binary: the signal the child ends by,
    /// optionally ignored and blocked first (`QUIT:hostile`).
    const END_BY: &str = "CCCI_TEST_END_BY_SIGNAL";

    /// Not a test of its own: the body of the child that
    /// `a_child_that_ends_by_a_signal_is_seen_killed_without_core` runs.
    #[test]
    fn end_by_signal_child() {
        let Some(how) = std::env::var_os(END_BY) else {
            return;
        };
        let how = how.into_string().unwrap();
        let (sig, hostile) = match how.split_once(':') {
            Some((sig, _)) => (sig.parse().unwrap(), true),
            None => (how.parse().unwrap(), false),
        };
        if hostile {
            // What a tool may have inherited or set up itself.
            block_signals(&[sig]).unwrap();
            // SAFETY: test only: SIG_IGN runs no handler code; setrlimit
            // reads the stack-local limit. Core files allowed, so that a
            // missing guard against them would show.
            unsafe {
                libc::signal(sig, libc::SIG_IGN);
                let all = libc::rlimit {
                    rlim_cur: libc::RLIM_INFINITY,
                    rlim_max: libc::RLIM_INFINITY,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &all);
            }
        }
        print!("unflushed output");
        end_by_signal(sig);
    }

    #[test]
    fn a_child_that_ends_by_a_signal_is_seen_killed_without_core() {
        use std::os::unix::process::ExitStatusExt;
        let cwd = tempfile::tempdir().unwrap();
        let run = |how: String| {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "sys::end::tests::end_by_signal_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(END_BY, &how)
                .current_dir(cwd.path())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(stdout.contains("unflushed output"), "{how}: {stdout:?}");
            out.status
        };
        for sig in [
            libc::SIGTERM,
            libc::SIGALRM,
            libc::SIGQUIT,
            libc::SIGABRT,
            libc::SIGSEGV,
            libc::SIGUSR1,
            libc::SIGKILL,
        ] {
            for how in [sig.to_string(), format!("{sig}:hostile")] {
                let status = run(how.clone());
                assert_eq!(status.signal(), Some(sig), "{how}: {status:?}");
                assert!(!status.core_dumped(), "{how}: dumped core");
            }
        }
        // A signal whose default action is to ignore cannot kill: 128+N.
        let status = run(libc::SIGCHLD.to_string());
        assert_eq!(status.code(), Some(128 + libc::SIGCHLD));
        let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
        assert!(left.is_empty(), "files left behind: {left:?}");
    }
}
