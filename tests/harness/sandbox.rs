//! Per-test directories and the command builder.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::proc::{Output, Proc};

const TOKEN_VAR: &str = "CCCI_TEST_TOKEN";

/// A test's private world: directories for every `CCCI_*` variable, and
/// commands that use them. See the crate doc.
pub struct Sandbox {
    root: tempfile::TempDir,
    token: String,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A new sandbox; its root is mode 0700 and owned by us, so the tools
    /// accept directories created inside it.
    pub fn new() -> Sandbox {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let root = tempfile::Builder::new()
            .prefix("ccci-test-")
            .tempdir()
            .expect("temp dir");
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::create_dir(root.path().join("home")).unwrap();
        let token = format!(
            "{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            root.path().file_name().unwrap().to_string_lossy()
        );
        Sandbox { root, token }
    }

    /// The sandbox root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// `root/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// `CCCI_APP_LOCK_DIR` of this sandbox (not created in advance).
    pub fn lock_dir(&self) -> PathBuf {
        self.path("locks")
    }

    /// The lockfile of `domain`.
    pub fn lockfile(&self, domain: &str) -> PathBuf {
        self.lock_dir().join(format!("{domain}.lock"))
    }

    /// `CCCI_STATE_DIR` of this sandbox (not created in advance).
    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    /// `CCCI_RUNS_DIR` of this sandbox (not created in advance).
    pub fn runs_dir(&self) -> PathBuf {
        self.path("runs")
    }

    /// `CCCI_CANONICAL_ABRA_DIR` of this sandbox (not created in advance).
    pub fn canonical_dir(&self) -> PathBuf {
        self.path("abra")
    }

    /// A command running `program` in this sandbox: `CCCI_*` variables of
    /// the outer environment removed and this sandbox's set, `HOME` inside
    /// the sandbox, the tools first on `PATH`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Cmd {
        let desc = program.as_ref().to_string_lossy().into_owned();
        let mut cmd = Command::new(program);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CCCI_") {
                cmd.env_remove(key);
            }
        }
        crate::ensure_built(); // scripts find the tools on PATH
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.stub_dir(), crate::bin_dir()];
        paths.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(paths).unwrap())
            .env("HOME", self.path("home"))
            .env("CCCI_APP_LOCK_DIR", self.lock_dir())
            .env("CCCI_STATE_DIR", self.state_dir())
            .env("CCCI_RUNS_DIR", self.runs_dir())
            .env("CCCI_CANONICAL_ABRA_DIR", self.canonical_dir())
            .env(TOKEN_VAR, &self.token)
            .current_dir(self.root())
            .stdin(Stdio::null());
        Cmd {
            cmd,
            desc,
            input: None,
        }
    }

    /// The directory for stub programs (first on every command's `PATH`).
    pub fn stub_dir(&self) -> PathBuf {
        self.path("stubs")
    }

    /// Puts the stub `abra` (`tests/harness/abra-stub.sh`: abra's documented
    /// command line, app state in files) first on `PATH`, and returns the
    /// directory of its swarm state (`ABRA_STUB_SWARM`, under `HOME`).
    pub fn install_abra_stub(&self) -> PathBuf {
        let dir = self.stub_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let abra = dir.join("abra");
        std::fs::write(&abra, crate::ABRA_STUB).unwrap();
        std::fs::set_permissions(&abra, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.path("home/.abra-stub-swarm")
    }

    /// A command like [`Sandbox::command`], but as a newcomer's shell has it:
    /// no directory on `PATH` holds a ccci tool (neither this build nor an
    /// install), so a script must find or build the tools itself.
    pub fn command_without_tools(&self, program: impl AsRef<OsStr>) -> Cmd {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let bare: Vec<PathBuf> = std::env::split_paths(&path)
            .filter(|dir| !crate::TOOLS.iter().any(|tool| dir.join(tool).exists()))
            .collect();
        self.command(program)
            .env("PATH", std::env::join_paths(bare).unwrap())
    }

    /// A command running one of the five tools.
    pub fn tool(&self, tool: &str) -> Cmd {
        self.command(crate::bin(tool)).describe(tool)
    }

    /// `sh -c script` in this sandbox.
    pub fn sh(&self, script: &str) -> Cmd {
        self.command("sh")
            .args(["-c", script])
            .describe(&format!("sh -c {script:?}"))
    }

    /// `ccci-lock -n DOMAIN -- true`: 0 when the lock of `domain` was free
    /// (and is free again), 75 while somebody holds it.
    pub fn try_lock(&self, domain: &str) -> i32 {
        self.tool("ccci-lock")
            .args(["-n", domain, "--", "true"])
            .run()
            .code()
    }

    /// Every live process started from this sandbox (by token).
    pub fn processes(&self) -> Vec<u32> {
        let needle = format!("{TOKEN_VAR}={}", self.token);
        let mut pids = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(env) = std::fs::read(entry.path().join("environ")) {
                if env.split(|&b| b == 0).any(|var| var == needle.as_bytes()) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// A listing of the sandbox, for failure messages.
    pub fn listing(&self) -> String {
        let out = Command::new("ls")
            .args(["-laR"])
            .arg(self.root())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Kill stragglers until none is left (a dying shell may fork once more).
        for _ in 0..50 {
            let pids = self.processes();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                crate::kill(pid, libc::SIGKILL);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// A command being built; see [`Sandbox::command`].
pub struct Cmd {
    cmd: Command,
    desc: String,
    input: Option<Vec<u8>>,
}

impl Cmd {
    fn describe(mut self, desc: &str) -> Cmd {
        self.desc = desc.to_string();
        self
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.desc.push(' ');
        self.desc.push_str(&arg.as_ref().to_string_lossy());
        self.cmd.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    /// Sets a variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.cmd.env(key, value);
        self
    }

    /// Runs the command in `dir` (default: the sandbox root).
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.cmd.current_dir(dir);
        self
    }

    /// Removes a variable.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Cmd {
        self.cmd.env_remove(key);
        self
    }

    /// Gives the command a pipe on stdin (see [`Proc::send`]).
    pub fn piped_stdin(mut self) -> Cmd {
        self.cmd.stdin(Stdio::piped());
        self
    }

    /// Feeds `input` on stdin (for [`Cmd::run`]).
    pub fn stdin_bytes(self, input: impl Into<Vec<u8>>) -> Cmd {
        let mut cmd = self.piped_stdin();
        cmd.desc.push_str(" <input");
        cmd.input = Some(input.into());
        cmd
    }

    /// Runs `f` in the child between fork and exec (to set up inherited
    /// state such as ignored signals or an armed timer, as a caller would).
    ///
    /// # Safety
    /// `f` must be async-signal-safe.
    pub unsafe fn pre_exec(
        mut self,
        f: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Cmd {
        // SAFETY: forwarded to the caller's contract.
        unsafe {
            self.cmd.pre_exec(f);
        }
        self
    }

    /// The command line, for messages.
    pub fn description(&self) -> &str {
        &self.desc
    }

    /// Starts the command in a process group of its own.
    pub fn spawn(mut self) -> Proc {
        self.cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let input = self.input.take();
        let child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.desc));
        let mut proc = Proc::new(child, self.desc);
        if let Some(input) = input {
            proc.send_bytes(&input);
            proc.close_stdin();
        }
        proc
    }

    /// Runs the command to its end with its stdout a pipe whose reader is
    /// already gone, so its first write fails (`EPIPE`): how a tool behaves
    /// when its output is cut short (`tool | head -0`), without the race of a
    /// shell pipeline, whose parent shell may still hold the read end.
    pub fn run_into_closed_pipe(mut self) -> Output {
        let (reader, writer) = std::io::pipe().expect("cannot make a pipe");
        drop(reader);
        self.cmd
            .stdout(writer)
            .stderr(Stdio::piped())
            .process_group(0);
        let child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.desc));
        Proc::new(child, self.desc).wait()
    }

    /// Runs the command to its end (within the deadline) and returns its output.
    pub fn run(self) -> Output {
        self.spawn().wait()
    }

    /// Runs a long script (the demo, a build) to its end, within `n`
    /// deadlines, and returns its output.
    pub fn run_within_deadlines(self, n: u32) -> Output {
        self.spawn().wait_within(crate::deadline() * n)
    }
}
