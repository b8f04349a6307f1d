//! A running child with line channels, deadlines and cleanup on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

/// A running child; see the crate doc.
pub struct Proc {
    child: Child,
    desc: String,
    stdin: Option<ChildStdin>,
    lines: Receiver<(Stream, String)>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

fn reader(
    stream: impl Read + Send + 'static,
    kind: Stream,
    tx: mpsc::Sender<(Stream, String)>,
    all: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut stream = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stream.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    all.lock().unwrap().push_str(&line);
                    let _ = tx.send((kind, line.trim_end_matches('\n').to_string()));
                }
            }
        }
    })
}

impl Proc {
    pub(crate) fn new(mut child: Child, desc: String) -> Proc {
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        // A child whose stdout is not ours to read (see
        // `Cmd::run_into_closed_pipe`) has no stdout reader.
        let readers = [
            child
                .stdout
                .take()
                .map(|out| reader(out, Stream::Out, tx.clone(), stdout.clone())),
            Some(reader(
                child.stderr.take().unwrap(),
                Stream::Err,
                tx,
                stderr.clone(),
            )),
        ]
        .into_iter()
        .flatten()
        .collect();
        Proc {
            stdin: child.stdin.take(),
            child,
            desc,
            lines,
            stdout,
            stderr,
            readers,
            status: None,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What was captured so far, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "command: {}\n--- stdout ---\n{}--- stderr ---\n{}--- processes in its session ---\n{}",
            self.desc,
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap(),
            session_processes(self.child.id())
        )
    }

    fn expect(&mut self, want: Stream, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let left = crate::deadline().saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok((stream, line)) if stream == want && line.contains(needle) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!(
                    "timed out waiting for a line containing {needle:?}\n{}",
                    self.report()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the process closed its output before a line containing {needle:?}; \
                     status {:?}\n{}",
                    self.child.try_wait().ok().flatten(),
                    self.report()
                ),
            }
        }
    }

    /// Waits (within the deadline) for a stdout line containing `needle`.
    pub fn expect_stdout(&mut self, needle: &str) -> String {
        self.expect(Stream::Out, needle)
    }

    /// Waits (within the deadline) for a stderr line containing `needle`.
    pub fn expect_stderr(&mut self, needle: &str) -> String {
        self.expect(Stream::Err, needle)
    }

    /// Stdout captured so far.
    pub fn stdout_so_far(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Writes `bytes` to the child's stdin (see [`crate::Cmd::piped_stdin`]).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is not piped");
        // The child may be gone already; the test's assertions will say so.
        let _ = stdin.write_all(bytes).and_then(|()| stdin.flush());
    }

    /// Writes one line to the child's stdin.
    pub fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    /// Closes the child's stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends `sig` to the child (while it is not reaped yet).
    pub fn signal(&self, sig: libc::c_int) {
        if self.status.is_none() {
            crate::kill(self.pid(), sig);
        }
    }

    /// Whether the child has ended (and reaps it if so).
    pub fn has_exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status.is_some()
    }

    /// Waits (within the deadline) for the child to end; returns its output.
    pub fn wait(self) -> Output {
        self.wait_within(crate::deadline())
    }

    /// Waits at most `limit` for the child to end (for a whole script such
    /// as the demo, which is many steps of a deadline each); returns its
    /// output.
    pub fn wait_within(mut self, limit: std::time::Duration) -> Output {
        let start = Instant::now();
        while !self.has_exited() {
            if start.elapsed() > limit {
                panic!(
                    "timed out waiting for the process to end\n{}",
                    self.report()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        self.stdin = None;
        for reader in self.readers.drain(..) {
            // The readers end when every holder of the pipes has exited; a
            // background grandchild may keep them open, so do not wait forever.
            let start = Instant::now();
            while !reader.is_finished() && start.elapsed() < crate::deadline() / 6 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        Output {
            status: self.status.unwrap(),
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
            desc: self.desc.clone(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let pid = self.pid() as libc::pid_t;
            // SAFETY: kill(2) has no memory effects; the child is not reaped
            // yet, so neither its pid nor its group id can have been reused.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
    }
}

/// A finished command.
#[derive(Debug)]
pub struct Output {
    /// Its wait status.
    pub status: ExitStatus,
    /// All of stdout.
    pub stdout: String,
    /// All of stderr.
    pub stderr: String,
    desc: String,
}

impl Output {
    /// The shell's `$?`: the exit code, or 128+N for signal N.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }

    /// Panics (with everything captured) unless `$?` is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Output {
        assert_eq!(self.code(), code, "unexpected status\n{self}");
        self
    }

    /// Panics unless the process itself ended by signal `sig` (not by
    /// `exit(128+N)`), without a core dump.
    #[track_caller]
    pub fn expect_ended_by(&self, sig: libc::c_int) -> &Output {
        assert_eq!(
            self.status.signal(),
            Some(sig),
            "expected an end by signal {sig}\n{self}"
        );
        assert!(!self.status.core_dumped(), "dumped core\n{self}");
        self
    }

    /// Panics unless stderr contains `needle`.
    #[track_caller]
    pub fn expect_stderr(&self, needle: &str) -> &Output {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{self}"
        );
        self
    }

    /// Panics unless stdout contains `needle`.
    #[track_caller]
    pub fn expect_stdout(&self, needle: &str) -> &Output {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{self}"
        );
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\nstatus: {} ($? = {})\n--- stdout ---\n{}--- stderr ---\n{}",
            self.desc,
            self.status,
            self.code(),
            self.stdout,
            self.stderr
        )
    }
}

/// What `ps` says of the processes in the session of `pid` and of those
/// whose parent is `pid` (a child subreaper keeps what left the session),
/// for a report when a process did not end: who is still running, in what
/// state, waiting on what.
fn session_processes(pid: u32) -> String {
    let out = std::process::Command::new("ps")
        .args(["-e", "-o", "pid,ppid,pgid,sid,stat,wchan:20,args"])
        .output();
    let Ok(out) = out else {
        return "(ps did not run)\n".into();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let mut shown = lines.next().map(|h| format!("{h}\n")).unwrap_or_default();
    let mut family = std::collections::HashSet::from([pid.to_string()]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    // Descendants of pid, by parent, until no more are found.
    loop {
        let before = family.len();
        for row in &rows {
            if row.len() > 1 && family.contains(row[1]) {
                family.insert(row[0].to_string());
            }
        }
        if family.len() == before {
            break;
        }
    }
    for (row, line) in rows.iter().zip(text.lines().skip(1)) {
        if row.len() > 3 && (family.contains(row[0]) || row[3] == pid.to_string()) {
            shown.push_str(line);
            shown.push('\n');
        }
    }
    shown
}
