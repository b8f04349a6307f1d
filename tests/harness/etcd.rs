//! A real etcd server for the tests of the etcd backend (SPEC §8).
//!
//! [`Etcd::start`] runs Debian's `etcd` on loopback ports of its own, with a
//! data dir in a temp dir, and returns once it answers `/health` (a probe
//! bounded by [`crate::deadline`], never a sleep). etcd cannot bind port 0,
//! so ports are picked by binding port 0 and releasing it; a server that
//! then finds its port taken fails at once and is started again on new
//! ports. Dropping an [`Etcd`] kills and reaps the server. [`Cluster`]
//! starts three members that know each other. [`Etcd::start_secure`] serves
//! clients over TLS (certificates made by openssl, [`Pki`]) and can turn
//! on etcd's authentication.
//!
//! One file: the single server, the TLS one and the cluster share the
//! spawning, port picking and health probing.

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
    /// Extra server flags (TLS, auth token TTL).
    extra: Vec<String>,
    /// `https` or `http`.
    scheme: &'static str,
    /// A plain-HTTP port serving `/health` (`--listen-metrics-urls`).
    health: u16,
    /// Flags every `etcdctl` call gets (`--cacert`…, `--user`).
    ctl_flags: Vec<String>,
}

/// Certificates for a TLS etcd, made with openssl in a temp dir: a CA, a
/// server certificate for 127.0.0.1 signed by it, a client certificate
/// signed by it, and a second CA (with its own client certificate) that
/// etcd does not trust. The client certificate has no CommonName: with
/// `--client-cert-auth` and authentication on, etcd's gateway refuses one
/// that has (the user comes from the token, never from the certificate).
pub struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cannot run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// Makes the certificates.
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("ccci-pki-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for ca in ["ca", "other-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={ca}"),
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                ],
            );
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, subject, ca, ext) in [
            ("server", "/CN=server", "ca", "server.ext"),
            ("client", "/O=ccci-client", "ca", "client.ext"),
            ("named", "/CN=ci", "ca", "client.ext"),
            ("stranger", "/O=stranger", "other-ca", "client.ext"),
        ] {
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    subject,
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    ext,
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        }
        Pki { dir }
    }

    /// `NAME.pem` or `NAME.key` (`ca`, `other-ca`, `server`, `client`,
    /// `named` (a client certificate with a CommonName), `stranger`).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

impl Default for Pki {
    fn default() -> Pki {
        Pki::new()
    }
}

/// How [`Etcd::start_secure`] runs its server.
#[derive(Default)]
pub struct Secure<'a> {
    /// Serve clients over TLS with these certificates.
    pub pki: Option<&'a Pki>,
    /// With `pki`: require a client certificate signed by the CA.
    pub client_cert_auth: bool,
    /// Turn on authentication: user `root` (password `rootpw`) and user
    /// `ci` with the given password, allowed everything below `/`.
    pub ci_password: Option<&'a str>,
    /// etcd's `--auth-token-ttl`, seconds.
    pub token_ttl: Option<u32>,
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
            extra: Vec::new(),
            scheme: "http",
            health: free_port(),
            ctl_flags: Vec::new(),
        }
    }

    /// A single member serving clients as `how` says, healthy, with
    /// authentication turned on when asked.
    pub fn start_secure(how: &Secure) -> Etcd {
        for _ in 0..5 {
            let (client, peer) = (free_port(), free_port());
            let name = "solo".to_string();
            let cluster = format!("{name}=http://127.0.0.1:{peer}");
            let mut etcd = Etcd::new(name, client, peer, cluster);
            if let Some(pki) = how.pki {
                etcd.scheme = "https";
                let p = |f: &str| pki.path(f).to_string_lossy().into_owned();
                etcd.extra.extend([
                    "--cert-file".into(),
                    p("server.pem"),
                    "--key-file".into(),
                    p("server.key"),
                ]);
                etcd.ctl_flags.extend([
                    "--cacert".into(),
                    p("ca.pem"),
                    "--cert".into(),
                    p("client.pem"),
                    "--key".into(),
                    p("client.key"),
                ]);
                if how.client_cert_auth {
                    etcd.extra.extend([
                        "--client-cert-auth".into(),
                        "--trusted-ca-file".into(),
                        p("ca.pem"),
                    ]);
                }
            }
            if let Some(ttl) = how.token_ttl {
                etcd.extra
                    .extend(["--auth-token-ttl".into(), ttl.to_string()]);
            }
            etcd.spawn();
            if !etcd.wait_healthy() {
                continue;
            }
            if let Some(password) = how.ci_password {
                for args in [
                    vec!["user", "add", "root", "--new-user-password=rootpw"],
                    vec!["role", "add", "root"],
                    vec!["user", "grant-role", "root", "root"],
                    vec![
                        "user",
                        "add",
                        "ci",
                        &format!("--new-user-password={password}"),
                    ],
                    vec!["role", "add", "ci"],
                    vec![
                        "role",
                        "grant-permission",
                        "ci",
                        "--prefix=true",
                        "readwrite",
                        "/",
                    ],
                    vec!["user", "grant-role", "ci", "ci"],
                    vec!["auth", "enable"],
                ] {
                    etcd.ctl(&args);
                }
                etcd.ctl_flags.push("--user=root:rootpw".into());
            }
            return etcd;
        }
        panic!("etcd did not start on free ports five times");
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
        let client = format!("{}://127.0.0.1:{}", self.scheme, self.client);
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let health = format!("http://127.0.0.1:{}", self.health);
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
            .args(["--listen-metrics-urls", &health])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .args(&self.extra)
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
        http_get(self.health, "/health").is_some_and(|r| r.contains("\"health\":\"true\""))
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

    /// The client URL, `http://127.0.0.1:PORT` (or `https://`).
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client)
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
        let mut all: Vec<&str> = self.ctl_flags.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        etcdctl(&self.endpoint(), &all)
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

    /// The index of the member that is the leader now (asked of every
    /// member; panics when none says it leads).
    pub fn leader(&self) -> usize {
        let out = etcdctl(&self.endpoints(), &["endpoint", "status", "-w", "json"]);
        let status: serde_json::Value = serde_json::from_str(&out).expect("endpoint status JSON");
        let rows = status.as_array().expect("a list");
        for row in rows {
            let s = &row["Status"];
            if s["header"]["member_id"] == s["leader"] {
                let url = row["Endpoint"].as_str().unwrap_or("");
                if let Some(i) = self.members.iter().position(|m| m.endpoint() == url) {
                    return i;
                }
            }
        }
        panic!("no member leads: {out}");
    }

    /// Waits until every member that runs says it is healthy.
    pub fn wait_healthy(&mut self) {
        for m in &mut self.members {
            if m.child.is_some() {
                assert!(m.wait_healthy(), "a member died\n{}", m.log());
            }
        }
    }
}
