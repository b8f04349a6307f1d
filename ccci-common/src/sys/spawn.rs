//! Starting every COMMAND the way `posix_spawn(3)` does: a
//! `clone(CLONE_VM | CLONE_VFORK)` child on a stack of its own that runs
//! only async-signal-safe calls on a plan prepared before it exists, then
//! `execve` with `execvp(3)`'s `PATH` rules. No memory is copied, and a
//! death signal cannot be missed even when this process dies at once.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::{wait_pid, RESET_SIGNALS};

/// A command ready to start with [`spawn`]: every string it needs as a C
/// string, built before the child exists, so the child allocates nothing.
#[derive(Debug)]
pub struct SpawnPlan {
    /// The paths to try, in order: the program itself when it names a path
    /// (has a `/`), else the program in each `PATH` directory, as
    /// `execvp(3)` tries them.
    paths: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// Descriptors the child gets as its stdin and stdout.
    stdin: Option<libc::c_int>,
    stdout: Option<libc::c_int>,
    own_group: bool,
    death_signal: Option<libc::c_int>,
}

/// `PATH` when the environment has none, as glibc's `execvp` assumes.
const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";

impl SpawnPlan {
    /// A plan for `argv` (program first) with this process's environment,
    /// `env` added to it (a name given twice: the last value wins). An
    /// empty `argv`, or a NUL byte in any string, is `InvalidInput`.
    pub fn new(argv: &[OsString], env: &[(OsString, OsString)]) -> io::Result<SpawnPlan> {
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let nul = || io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in an argument");
        let cstr = |bytes: Vec<u8>| CString::new(bytes).map_err(|_| nul());
        let program = argv
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no program"))?;
        let argv = argv
            .iter()
            .map(|a| cstr(a.as_bytes().to_vec()))
            .collect::<io::Result<Vec<_>>>()?;
        let overridden = |name: &[u8]| env.iter().any(|(k, _)| k.as_bytes() == name);
        let mut envp = Vec::new();
        let mut path_var = None;
        let inherited = std::env::vars_os().filter(|(k, _)| !overridden(k.as_bytes()));
        let given = env
            .iter()
            .enumerate()
            // The last of several values for one name.
            .filter(|(i, (k, _))| !env[i + 1..].iter().any(|(later, _)| later == k))
            .map(|(_, kv)| kv.clone());
        for (k, v) in inherited.chain(given) {
            if k.as_bytes() == b"PATH" {
                path_var = Some(v.clone());
            }
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            envp.push(cstr(entry)?);
        }
        let program = program.as_bytes();
        let paths = if program.contains(&b'/') {
            vec![cstr(program.to_vec())?]
        } else if program.is_empty() {
            // execvp("") fails with ENOENT; an empty path does the same.
            vec![cstr(Vec::new())?]
        } else {
            let search = path_var.as_ref().map_or(DEFAULT_PATH, |p| p.as_bytes());
            search
                .split(|&b| b == b':')
                .map(|dir| {
                    // An empty entry is the current directory.
                    let mut path = dir.to_vec();
                    if !path.is_empty() {
                        path.push(b'/');
                    }
                    path.extend_from_slice(program);
                    cstr(path)
                })
                .collect::<io::Result<Vec<_>>>()?
        };
        Ok(SpawnPlan {
            paths,
            argv,
            envp,
            stdin: None,
            stdout: None,
            own_group: false,
            death_signal: None,
        })
    }

    /// The child's stdin is `fd` (which must stay open until [`spawn`]
    /// returns; it may be close-on-exec).
    pub fn stdin(&mut self, fd: BorrowedFd<'_>) -> &mut Self {
        self.stdin = Some(fd.as_raw_fd());
        self
    }

    /// The child's stdout is `fd` (as [`SpawnPlan::stdin`]).
    pub fn stdout(&mut self, fd: BorrowedFd<'_>) -> &mut Self {
        self.stdout = Some(fd.as_raw_fd());
        self
    }

    /// The child starts a process group of its own (`setpgid(0, 0)`).
    pub fn own_group(&mut self, yes: bool) -> &mut Self {
        self.own_group = yes;
        self
    }

    /// The child's parent-death signal; see [`spawn`].
    pub fn death_signal(&mut self, sig: Option<libc::c_int>) -> &mut Self {
        self.death_signal = sig;
        self
    }
}

/// What the child of [`spawn`] reads, and where it leaves its error: all of
/// it in the parent's memory, which the child shares until it execs.
struct ChildPlan {
    paths: Vec<*const libc::c_char>,
    argv: Vec<*const libc::c_char>,
    /// `/bin/sh PATH ARG...`: the second entry is filled in by the child
    /// for a program the kernel cannot execute (`ENOEXEC`), as `execvp`
    /// hands such a file to the shell.
    sh_argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    stdin: libc::c_int,
    stdout: libc::c_int,
    own_group: bool,
    death_signal: libc::c_int,
    parent: libc::pid_t,
    /// The signals that may have a handler ([`super::signals::handled_signals`]).
    handled: u64,
    /// The `errno` of the step that failed, or 0.
    error: std::sync::atomic::AtomicI32,
}

const SH: &std::ffi::CStr = c"/bin/sh";

/// The bytes of stack the child of [`spawn`] runs on. It calls a dozen
/// system-call wrappers and nothing else; glibc's posix_spawn gives its
/// child about as much.
const CHILD_STACK: usize = 32 * 1024;

/// Starts `plan` the way `posix_spawn(3)` does, and returns the child's pid
/// once it has called `execve` (or the error that kept it from running).
///
/// The child is made with `clone(CLONE_VM | CLONE_VFORK)`: it runs in this
/// process's memory, on a stack of its own, while this thread waits until
/// it has exec'd or exited. No page tables are copied and no copy-on-write
/// faults follow, which is what a `fork` costs (std's `Command` forks as
/// soon as a `pre_exec` hook is set). In exchange the child may only make
/// async-signal-safe system calls on data prepared before the clone; it
/// allocates nothing and takes no lock, and its only write to shared memory
/// is its error code (and, for the shell fallback, one prepared slot).
///
/// In the child, in order:
/// 1. Every signal stays blocked from before the clone (this thread blocks
///    them all around it), so no handler of ours can run on shared memory.
///    Each signal with a handler (this process notes each one it installs),
///    and each of [`RESET_SIGNALS`], gets its default disposition: one
///    `sigaction` per such signal, where `posix_spawn(3)` asks about all 64.
/// 2. With a death signal: `PR_SET_PDEATHSIG`.
/// 3. With `own_group`: `setpgid(0, 0)`, before this thread resumes, so
///    the group exists by the time anyone signals it.
/// 4. stdin and stdout are put in place (`dup2`).
/// 5. The signal mask is emptied. Then, with a death signal, if the parent
///    is no longer this process (it was SIGKILLed after the clone and the
///    prctl came too late), the child sends itself the signal at once, as
///    the parent's death would have.
/// 6. `execve` of each path in turn, with `execvp(3)`'s rules: a file not
///    found (`ENOENT`, `ENOTDIR`, ...) moves on to the next `PATH`
///    directory, `EACCES` is remembered and moves on, any other error
///    stops; a file the kernel cannot execute is run by `/bin/sh`. On
///    failure the child writes `errno` where the parent reads it and
///    `_exit(127)`s; the parent reaps it and returns the error, whose
///    `kind()` tells "not found" from "not executable".
pub fn spawn(plan: &SpawnPlan) -> io::Result<libc::pid_t> {
    let pointers = |strings: &[CString]| -> Vec<*const libc::c_char> {
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let sh_argv = std::iter::once(SH.as_ptr())
        .chain(std::iter::once(std::ptr::null())) // the slot for the path
        .chain(plan.argv.iter().skip(1).map(|s| s.as_ptr()))
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let child = ChildPlan {
        paths: plan.paths.iter().map(|p| p.as_ptr()).collect(),
        argv: pointers(&plan.argv),
        sh_argv,
        envp: pointers(&plan.envp),
        stdin: plan.stdin.unwrap_or(-1),
        stdout: plan.stdout.unwrap_or(-1),
        own_group: plan.own_group,
        death_signal: plan.death_signal.unwrap_or(0),
        parent: std::process::id() as libc::pid_t,
        handled: super::signals::handled_signals(),
        error: std::sync::atomic::AtomicI32::new(0),
    };
    // u128: 16-byte alignment, which the x86-64 and aarch64 ABIs want of a
    // stack pointer.
    let mut stack = vec![0u128; CHILD_STACK / 16];
    // SAFETY: the stack grows down: its top is one past the end of the
    // buffer, which stays alive (and unused by this thread) until clone
    // returns, and with CLONE_VFORK it returns only once the child has
    // exec'd (getting memory of its own) or exited. `child` outlives the
    // child's use of it for the same reason; the child only reads it, except
    // for the atomic `error` and the sh_argv slot, which this thread reads
    // only after clone returns. All signals are blocked across the clone, so
    // the child starts with no handler able to run; the old mask is
    // restored before returning.
    let (pid, clone_error) = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let top = stack.as_mut_ptr().add(stack.len()).cast::<libc::c_void>();
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&child as *const ChildPlan).cast_mut().cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        (pid, clone_error)
    };
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    match child.error.load(std::sync::atomic::Ordering::SeqCst) {
        0 => Ok(pid),
        errno => {
            // The child has _exit'ed; reap it so that no zombie is left.
            let _ = wait_pid(pid, false);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// The child of [`spawn`]: see there. Only async-signal-safe calls on the
/// prepared plan; every failure leaves `errno` in the plan and `_exit(127)`.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ChildPlan that `spawn` keeps alive, unmoved and
    // unread until this child execs or exits (CLONE_VFORK). Every call below
    // is a system-call wrapper that touches only stack-local values, the
    // plan's prepared strings and pointer arrays, and this task's own signal
    // state, descriptors and process attributes.
    unsafe {
        let plan = &*(arg as *const ChildPlan);
        let fail = |errno: libc::c_int| -> ! {
            plan.error
                .store(errno.max(1), std::sync::atomic::Ordering::SeqCst);
            libc::_exit(127)
        };
        let errno = || *libc::__errno_location();
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut dfl.sa_mask);
        // One call per signal that needs it, none to ask: RESET_SIGNALS get
        // their default whatever they had, and so does every signal this
        // process gave a handler (noted as it was installed).
        for sig in RESET_SIGNALS {
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
        let mut handled = plan.handled;
        while handled != 0 {
            let sig = handled.trailing_zeros() as libc::c_int + 1;
            handled &= handled - 1;
            if !RESET_SIGNALS.contains(&sig) {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        if plan.death_signal != 0
            && libc::prctl(
                libc::PR_SET_PDEATHSIG,
                plan.death_signal as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
        {
            fail(errno());
        }
        if plan.own_group && libc::setpgid(0, 0) != 0 {
            fail(errno());
        }
        for (from, to) in [(plan.stdin, 0), (plan.stdout, 1)] {
            if from < 0 {
                continue;
            }
            // dup2 onto itself keeps close-on-exec: clear it instead.
            let done = if from == to {
                libc::fcntl(to, libc::F_SETFD, 0)
            } else {
                libc::dup2(from, to)
            };
            if done < 0 {
                fail(errno());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if plan.death_signal != 0 && libc::getppid() != plan.parent {
            libc::kill(libc::getpid(), plan.death_signal);
            libc::_exit(128 + plan.death_signal);
        }
        let mut error = libc::ENOENT;
        let mut denied = false;
        for &path in &plan.paths {
            libc::execve(path, plan.argv.as_ptr(), plan.envp.as_ptr());
            match errno() {
                libc::ENOEXEC => {
                    let slot = plan.sh_argv.as_ptr().add(1).cast_mut();
                    *slot = path;
                    libc::execve(SH.as_ptr(), plan.sh_argv.as_ptr(), plan.envp.as_ptr());
                    fail(errno());
                }
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                e => {
                    error = e;
                    denied = false;
                    break;
                }
            }
            error = errno();
        }
        fail(if denied { libc::EACCES } else { error })
    }
}
