//! The COMMAND a tool starts, and starting it the same way in every tool:
//! [`Program`] (argv, added environment, stdin and stdout), [`command`]
//! from a command line, [`run`] and [`exec`], and the one message and
//! status (126 or 127) for a COMMAND that cannot be started (SPEC §1).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::process::Command;

use super::{spawn, Outcome, Watch};
use crate::cli::UsageError;
use crate::exit::{self, Ended};

/// A COMMAND to start: its argv, what it gets added to our environment,
/// and where its stdin and stdout go (by default: ours).
#[derive(Debug)]
pub struct Program {
    pub(super) argv: Vec<OsString>,
    pub(super) env: Vec<(OsString, OsString)>,
    pub(super) stdin: Option<OwnedFd>,
    pub(super) stdout: Option<OwnedFd>,
}

impl Program {
    /// `program` with no arguments.
    pub fn new(program: impl Into<OsString>) -> Program {
        Program {
            argv: vec![program.into()],
            // Set again, empty, as this process got them (cli::dropped_empty).
            env: crate::cli::dropped_empty()
                .iter()
                .map(|k| (k.clone(), OsString::new()))
                .collect(),
            stdin: None,
            stdout: None,
        }
    }

    /// Adds one argument.
    pub fn arg(&mut self, arg: impl Into<OsString>) -> &mut Self {
        self.argv.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = A>, A: Into<OsString>>(&mut self, args: I) -> &mut Self {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets environment variables for the child (on top of ours).
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The child reads from `fd`.
    pub fn stdin(&mut self, fd: OwnedFd) -> &mut Self {
        self.stdin = Some(fd);
        self
    }

    /// The child writes its stdout to `fd`.
    pub fn stdout(&mut self, fd: OwnedFd) -> &mut Self {
        self.stdout = Some(fd);
        self
    }

    /// The program, as given.
    pub fn get_program(&self) -> &OsStr {
        &self.argv[0]
    }

    /// The same as a std [`Command`], for [`exec`].
    fn command(&self) -> io::Result<Command> {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]).envs(self.env.iter().cloned());
        if let Some(fd) = &self.stdin {
            cmd.stdin(fd.try_clone()?);
        }
        if let Some(fd) = &self.stdout {
            cmd.stdout(fd.try_clone()?);
        }
        Ok(cmd)
    }
}

/// The `COMMAND [ARG...]` of a command line as a [`Program`]; an empty one
/// is a usage error.
pub fn command(argv: &[OsString]) -> Result<Program, UsageError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| UsageError("no COMMAND given".into()))?;
    let mut cmd = Program::new(program);
    cmd.args(args);
    Ok(cmd)
}

/// Says that `cmd` could not be started (its program quoted visibly) and
/// returns the status for it: 127 when not found, else 126.
pub fn cannot_start(cmd: &Program, e: &io::Error) -> u8 {
    crate::say!("cannot run {}: {e}", crate::cli::quote(cmd.get_program()));
    exit::from_spawn_error(e)
}

/// How a started COMMAND finished.
#[derive(Debug, Clone, Copy)]
pub enum Finished {
    /// It ran and ended.
    Ran(Outcome),
    /// It could not be started (already reported): 126 or 127.
    NotStarted(u8),
}

impl Finished {
    /// How a tool that only passes COMMAND's ending on ends: with its
    /// status, by its signal, or 126/127.
    pub fn ended(&self) -> Ended {
        match self {
            Finished::Ran(outcome) => outcome.ended(),
            Finished::NotStarted(code) => Ended::Code(*code),
        }
    }
}

/// Starts `cmd` under `watch` and waits for it ([`spawn`], then
/// [`Supervised::wait`](super::Supervised::wait)); a command that cannot be started is reported.
pub fn run(cmd: &mut Program, watch: Watch) -> io::Result<Finished> {
    match spawn(cmd, watch) {
        Ok(child) => Ok(Finished::Ran(child.wait()?)),
        Err(e) => Ok(Finished::NotStarted(cannot_start(cmd, &e))),
    }
}

/// Replaces this process with `cmd`; returns only when that failed, with
/// the status to exit with (126 or 127), after reporting it. The caller
/// resets the signal state first ([`sys::reset_signals`](crate::sys::reset_signals)).
pub fn exec(cmd: &mut Program) -> u8 {
    use std::os::unix::process::CommandExt;
    let e = match cmd.command() {
        Ok(mut command) => command.exec(),
        Err(e) => e,
    };
    cannot_start(cmd, &e)
}
