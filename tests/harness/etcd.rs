//! A real etcd server for the tests of the etcd backend (SPEC §8).
//!
//! [`Etcd::start`] runs Debian's `etcd` on loopback ports of its own, with a
//! data dir in a temp dir, and returns once it answers `/health` (a probe
//! bounded by [`crate::deadline`], never a sleep). etcd cannot bind port 0,
//! so ports are picked by binding port 0 and releasing it; a server that
//! then finds its port taken fails at once and is started again on new
//! ports. Dropping an [`Etcd`] kills and reaps the server. [`Cluster`]
//! starts three members that know each other.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One etcd member.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    name: String,
    client: u16,
    peer: u16,
    cluster: String,
    token: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `GET path` on `127.0.0.1:port`, the whole answer; `None` on any error.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

impl Etcd {
    /// A single-member cluster, healthy.
    pub fn start() -> Etcd {
        for _ in 0..5 {
            let (client, peer) = (free_port(), free_port());
            let name = "solo".to_string();
            let cluster = format!("{name}=http://127.0.0.1:{peer}");
            let mut etcd = Etcd::new(name, client, peer, cluster);
            etcd.spawn();
            if etcd.wait_healthy() {
                return etcd;
            }
        }
        panic!("etcd did not start on free ports five times");
    }

    fn new(name: String, client: u16, peer: u16, cluster: String) -> Etcd {
        let dir = tempfile::Builder::new()
            .prefix("ccci-etcd-")
            .tempdir()
            .expect("temp dir");
        Etcd {
            child: None,
            token: dir
                .path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            dir,
            name,
            client,
            peer,
            cluster,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let client = format!("http://127.0.0.1:{}", self.client);
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            // Fast elections keep restarts and member loss short.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot run etcd: install etcd-server (see .ci/run)");
        self.child = Some(child);
    }

    /// Whether `/health` says so (a member of a cluster without a leader
    /// is not healthy).
    pub fn healthy(&self) -> bool {
        http_get(self.client, "/health").is_some_and(|r| r.contains("\"health\":\"true\""))
    }

    /// Waits until healthy; `false` if the server died first (a port taken).
    fn wait_healthy(&mut self) -> bool {
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        while !self.healthy() {
            if let Some(child) = self.child.as_mut() {
                if child.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return false;
                }
            }
            assert!(
                start.elapsed() < crate::deadline(),
                "etcd was not healthy within {:?}\n{}",
                crate::deadline(),
                self.log()
            );
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        true
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("etcd is running").id()
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server (SIGKILL) and reaps it; the data dir stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the killed server again on the same ports and data, and waits
    /// until it is healthy.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        assert!(
            self.wait_healthy(),
            "etcd did not come back\n{}",
            self.log()
        );
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing.
    pub fn pause(&self) {
        crate::kill(self.pid(), libc::SIGSTOP);
    }

    /// SIGCONT after [`Etcd::pause`].
    pub fn resume(&self) {
        crate::kill(self.pid(), libc::SIGCONT);
    }

    /// `etcdctl ARGS` against this server; its stdout, or a panic with its
    /// stderr.
    pub fn ctl(&self, args: &[&str]) -> String {
        etcdctl(&self.endpoint(), args)
    }

    /// The keys (and values) under `prefix`, one `key=value` each, sorted.
    pub fn dump(&self, prefix: &str) -> Vec<String> {
        let out = self.ctl(&["get", "--prefix", prefix]);
        let lines: Vec<&str> = out.lines().collect();
        let mut kvs: Vec<String> = lines
            .chunks(2)
            .map(|kv| format!("{}={}", kv[0], kv.get(1).unwrap_or(&"")))
            .collect();
        kvs.sort();
        kvs
    }

    /// The data dir's parent, for failure messages.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `etcdctl --endpoints ENDPOINTS ARGS` (API v3); its stdout.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--command-timeout", "5s"])
        .args(args)
        .output()
        .expect("cannot run etcdctl: install etcd-client (see .ci/run)");
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill(); // SIGKILL ends a stopped process too
    }
}

/// A three-member cluster on loopback.
pub struct Cluster {
    /// The members.
    pub members: Vec<Etcd>,
}

impl Cluster {
    /// Three members, all healthy.
    pub fn start() -> Cluster {
        for _ in 0..5 {
            let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
            let cluster = ports
                .iter()
                .enumerate()
                .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
                .collect::<Vec<_>>()
                .join(",");
            let mut members: Vec<Etcd> = ports
                .iter()
                .enumerate()
                .map(|(i, &(client, peer))| {
                    Etcd::new(format!("m{i}"), client, peer, cluster.clone())
                })
                .collect();
            // One token for the three.
            let token = members[0].token.clone();
            for m in &mut members {
                m.token = token.clone();
                m.spawn();
            }
            if members.iter_mut().all(Etcd::wait_healthy) {
                return Cluster { members };
            }
        }
        panic!("a three-member etcd cluster did not start five times");
    }

    /// Every member's client URL, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(Etcd::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }
}
