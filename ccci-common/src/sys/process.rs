//! This process and its children: its name, its parent-death signal,
//! becoming a child subreaper, and reaping children (`waitpid`, retried on
//! `EINTR`).

use std::io;

/// Sets this process's parent-death signal (`PR_SET_PDEATHSIG`).
pub fn set_parent_death_signal(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG reads only its integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets this process's name as `ps -o comm` and `/proc/PID/comm` show it
/// (at most 15 bytes are kept).
pub fn set_process_name(name: &str) -> io::Result<()> {
    let name =
        std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of which the kernel
    // copies at most 16 bytes; `name` lives for the duration of the call.
    if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `waitpid` for `pid` (retrying on `EINTR`); with `nohang`, `Ok(None)`
/// while it runs. The status is a raw wait status.
pub fn wait_pid(pid: libc::pid_t, nohang: bool) -> io::Result<Option<std::process::ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only the stack-local status.
        match unsafe { libc::waitpid(pid, &mut status, flags) } {
            0 => return Ok(None),
            p if p > 0 => return Ok(Some(std::process::ExitStatus::from_raw(status))),
            _ => {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(e);
                }
            }
        }
    }
}

/// `prctl(PR_SET_CHILD_SUBREAPER)`: from now on, a descendant whose
/// parent exits is re-parented to this process instead of to init, so
/// that [`wait_any`] sees every process the children started, also one
/// that left its process group or session.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What [`wait_any`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// This child ended with this status; it is reaped.
    Reaped(libc::pid_t, std::process::ExitStatus),
    /// Children exist, none has ended.
    Running,
    /// No child is left.
    NoChildren,
}

/// `waitpid(-1, WNOHANG)`: reaps any one child that has ended.
pub fn wait_any() -> io::Result<Waited> {
    use std::os::unix::process::ExitStatusExt;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only the stack-local status.
        match unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } {
            0 => return Ok(Waited::Running),
            p if p > 0 => {
                return Ok(Waited::Reaped(
                    p,
                    std::process::ExitStatus::from_raw(status),
                ))
            }
            _ => {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::ECHILD) => return Ok(Waited::NoChildren),
                    _ => return Err(e),
                }
            }
        }
    }
}
