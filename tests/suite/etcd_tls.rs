//! The etcd backend over TLS and with etcd's authentication (docs/etcd.md,
//! "TLS and authentication"): certificates made by openssl for each test,
//! a real etcd started with `--cert-file`, `--client-cert-auth` and users.
//! Every refusal (a CA that does not fit, no client certificate, a wrong
//! password, an unsafe password file) is status 125 with a message naming
//! what failed, and COMMAND never runs.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use ccci_tests::etcd::{Etcd, Pki, Secure};
use ccci_tests::{Cmd, Sandbox};

const D: &str = "wp-3f2a.ci.example.org";
const PASSWORD: &str = "s3cret pass";

struct World {
    sb: Sandbox,
    endpoint: String,
}

impl World {
    fn new(etcd: &Etcd) -> World {
        let sb = Sandbox::new();
        std::fs::write(sb.path("password"), format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(sb.path("password"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        World {
            sb,
            endpoint: etcd.endpoint(),
        }
    }

    /// `ccci-lock` on the endpoint with the prefix and TTL of the tests,
    /// and nothing else.
    fn bare(&self) -> Cmd {
        self.sb
            .tool("ccci-lock")
            .env("CCCI_ETCD_ENDPOINTS", &self.endpoint)
            .env("CCCI_ETCD_PREFIX", "/t")
            .env("CCCI_ETCD_TTL", "2s")
    }

    /// [`World::bare`] with the CA, the client certificate and user `ci`,
    /// half as flags and half as variables.
    fn lock(&self, pki: &Pki) -> Cmd {
        self.lock_trusting(pki, "ca.pem")
    }

    /// [`World::lock`] trusting the CA file `ca` of `pki`.
    fn lock_trusting(&self, pki: &Pki, ca: &str) -> Cmd {
        self.bare()
            .arg("--etcd-cacert")
            .arg(pki.path(ca))
            .env("CCCI_ETCD_CERT", pki.path("client.pem"))
            .env("CCCI_ETCD_KEY", pki.path("client.key"))
            .args(["--etcd-user", "ci"])
            .env("CCCI_ETCD_PASSWORD_FILE", self.password())
    }

    fn password(&self) -> PathBuf {
        self.sb.path("password")
    }

    fn ran(&self) -> bool {
        self.sb.path("ran").exists()
    }
}

fn secure(pki: &Pki) -> Etcd {
    Etcd::start_secure(&Secure {
        pki: Some(pki),
        client_cert_auth: true,
        ci_password: Some(PASSWORD),
        token_ttl: None,
    })
}

#[test]
fn a_wrap_over_tls_with_a_client_certificate_and_a_user_works() {
    let pki = Pki::new();
    let etcd = secure(&pki);
    let w = World::new(&etcd);
    let out = w
        .lock(&pki)
        .args([D, "--", "sh", "-c", "echo rev=$CCCI_LOCK_REVISION"])
        .run();
    out.expect_code(0).expect_stdout("rev=");
    // Held means held, over TLS too: a second client is refused.
    let mut holder = w
        .lock(&pki)
        .args([D, "--", "sh", "-c", "echo ready; read _"])
        .piped_stdin()
        .spawn();
    holder.expect_stdout("ready");
    w.lock(&pki)
        .args(["-n", D, "--", "touch", "ran"])
        .run()
        .expect_code(75);
    holder.send("");
    holder.wait().expect_code(0);
    assert!(!w.ran());
    // A clean exit left nothing behind.
    assert_eq!(etcd.dump("/t"), Vec::<String>::new());
    // --list and a --hold keeper (a re-exec that must get every setting).
    let me = std::process::id().to_string();
    w.lock(&pki)
        .args(["--hold", "--parent", &me, D])
        .run()
        .expect_code(0);
    let list = w.lock(&pki).arg("--list").run();
    list.expect_code(0).expect_stdout(&format!("{D}\theld\t"));
    w.lock(&pki)
        .args(["--release", "--parent", &me, D])
        .run()
        .expect_code(0);
    assert_eq!(etcd.dump("/t"), Vec::<String>::new());
}

#[test]
fn a_ca_that_did_not_sign_etcd_is_125_and_command_never_runs() {
    let pki = Pki::new();
    let etcd = secure(&pki);
    let w = World::new(&etcd);
    w.lock_trusting(&pki, "other-ca.pem")
        .args([D, "--", "touch", "ran"])
        .run()
        .expect_code(125)
        .expect_stderr("not signed by a CA of --etcd-cacert");
    assert!(!w.ran());
}

#[test]
fn no_client_certificate_where_etcd_requires_one_is_125() {
    let pki = Pki::new();
    let etcd = secure(&pki);
    let w = World::new(&etcd);
    let out = w
        .bare()
        .arg("--etcd-cacert")
        .arg(pki.path("ca.pem"))
        .args(["--etcd-user", "ci", "--etcd-password-file"])
        .arg(w.password())
        .args([D, "--", "touch", "ran"])
        .run();
    out.expect_code(125)
        .expect_stderr("TLS with etcd at https://");
    // A certificate from a CA etcd does not trust is no better.
    w.lock(&pki)
        .env("CCCI_ETCD_CERT", pki.path("stranger.pem"))
        .env("CCCI_ETCD_KEY", pki.path("stranger.key"))
        .args([D, "--", "touch", "ran"])
        .run()
        .expect_code(125)
        .expect_stderr("TLS with etcd at https://");
    // A certificate with a CommonName, which etcd's gateway refuses when
    // authentication is on: the message says what to do.
    w.lock(&pki)
        .env("CCCI_ETCD_CERT", pki.path("named.pem"))
        .env("CCCI_ETCD_KEY", pki.path("named.key"))
        .args([D, "--", "touch", "ran"])
        .run()
        .expect_code(125)
        .expect_stderr("without a CommonName");
    // A key that is not the certificate's: said before anything is sent.
    w.lock(&pki)
        .env("CCCI_ETCD_KEY", pki.path("stranger.key"))
        .args([D, "--", "touch", "ran"])
        .run()
        .expect_code(125)
        .expect_stderr("cannot use etcd client certificate");
    assert!(!w.ran());
}

#[test]
fn a_wrong_password_or_no_user_is_125_and_names_what_failed() {
    let pki = Pki::new();
    let etcd = secure(&pki);
    let w = World::new(&etcd);
    std::fs::write(w.sb.path("wrong"), "not it\n").unwrap();
    w.lock(&pki)
        .env("CCCI_ETCD_PASSWORD_FILE", w.sb.path("wrong"))
        .args([D, "--", "touch", "ran"])
        .run()
        .expect_code(125)
        .expect_stderr("etcd refused to authenticate user 'ci' with the password in");
    w.bare()
        .arg("--etcd-cacert")
        .arg(pki.path("ca.pem"))
        .env("CCCI_ETCD_CERT", pki.path("client.pem"))
        .env("CCCI_ETCD_KEY", pki.path("client.key"))
        .args([D, "--", "touch", "ran"])
        .run()
        .expect_code(125)
        .expect_stderr("etcd requires authentication");
    assert!(!w.ran());
}

#[test]
fn an_unsafe_password_file_is_125_and_is_never_read() {
    let pki = Pki::new();
    let etcd = secure(&pki);
    let w = World::new(&etcd);
    std::fs::set_permissions(w.password(), std::fs::Permissions::from_mode(0o622)).unwrap();
    w.lock(&pki)
        .args([D, "--", "touch", "ran"])
        .run()
        .expect_code(125)
        .expect_stderr("is writable by group or others");
    std::fs::set_permissions(w.password(), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(w.password(), w.sb.path("link")).unwrap();
    w.lock(&pki)
        .env("CCCI_ETCD_PASSWORD_FILE", w.sb.path("link"))
        .args([D, "--", "touch", "ran"])
        .run()
        .expect_code(125)
        .expect_stderr("symlink");
    assert!(!w.ran());
}

#[test]
fn bad_tls_and_auth_settings_are_status_2_and_contact_nothing() {
    let sb = Sandbox::new();
    let lock = || sb.tool("ccci-lock").args(["--etcd", "https://127.0.0.1:1"]);
    lock()
        .args(["--etcd-cert", "/x/c.pem", D, "--", "touch", "ran"])
        .run()
        .expect_code(2)
        .expect_stderr("--etcd-cert '/x/c.pem' needs a private key");
    lock()
        .env("CCCI_ETCD_KEY", "/x/k.pem")
        .args([D, "--", "touch", "ran"])
        .run()
        .expect_code(2)
        .expect_stderr("CCCI_ETCD_KEY '/x/k.pem' needs its certificate");
    lock()
        .env("CCCI_ETCD_USER", "ci")
        .args([D, "--", "touch", "ran"])
        .run()
        .expect_code(2)
        .expect_stderr("CCCI_ETCD_USER 'ci' needs a password");
    lock()
        .args(["--etcd-password-file", "/x/pw", D, "--", "touch", "ran"])
        .run()
        .expect_code(2)
        .expect_stderr("names no user");
    lock()
        .args([
            "--etcd-user",
            "c\ti",
            "--etcd-password-file",
            "/x/pw",
            D,
            "--",
            "true",
        ])
        .run()
        .expect_code(2)
        .expect_stderr("$'c\\ti'");
    // A CA file that is missing is the tool's failure, named.
    lock()
        .args([
            "--etcd-cacert",
            "/nonexistent/ca.pem",
            D,
            "--",
            "touch",
            "ran",
        ])
        .run()
        .expect_code(125)
        .expect_stderr("/nonexistent/ca.pem: No such file");
    assert!(!sb.path("ran").exists());
}

#[test]
fn an_expired_auth_token_is_renewed_and_a_long_holder_keeps_its_lock() {
    let pki = Pki::new();
    // Tokens die after 1 s without use; keep-alives come every 2 s (TTL 6 s).
    let etcd = Etcd::start_secure(&Secure {
        pki: Some(&pki),
        client_cert_auth: true,
        ci_password: Some(PASSWORD),
        token_ttl: Some(1),
    });
    let w = World::new(&etcd);
    let mut holder = w
        .lock(&pki)
        .args(["--ttl", "6s", D, "--", "sh", "-c", "echo ready; read _"])
        .piped_stdin()
        .spawn();
    holder.expect_stdout("ready");
    // Three keep-alive periods, each on a token that expired meanwhile:
    // the lock stays held and COMMAND keeps running.
    let lease_line = || etcd.ctl(&["lease", "list"]);
    let first = lease_line();
    let start = std::time::Instant::now();
    let mut checks = 0;
    while start.elapsed() < std::time::Duration::from_secs(7) {
        assert!(!holder.has_exited(), "{}", holder.report());
        assert_eq!(lease_line(), first, "the holder's lease changed");
        checks += 1;
    }
    assert!(checks > 0);
    let ttl = etcd.ctl(&["lease", "timetolive", first.lines().nth(1).unwrap().trim()]);
    assert!(!ttl.contains("already expired"), "{ttl}");
    holder.send("");
    // The claim is deleted on a renewed token, too.
    holder.wait().expect_code(0);
    assert_eq!(etcd.dump("/t"), Vec::<String>::new());
}

#[test]
fn a_keep_alive_that_refuses_the_token_renews_it() {
    // A fake gateway: its first keep-alive answers as etcd's gateway does
    // when a streaming call's token is refused (an error in a 200 answer).
    use ccci_tests::fake_http::{Answer, FakeHttp};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let sb = Sandbox::new();
    std::fs::write(sb.path("password"), "pw\n").unwrap();
    std::fs::set_permissions(sb.path("password"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let logins = Arc::new(AtomicUsize::new(0));
    let keepalives = Arc::new(AtomicUsize::new(0));
    let renewed = sb.path("renewed");
    let fake = {
        let (logins, keepalives) = (Arc::clone(&logins), Arc::clone(&keepalives));
        FakeHttp::start(move |path| {
            let json = match path {
                "/v3/auth/authenticate" => {
                    let n = logins.fetch_add(1, Ordering::SeqCst);
                    format!(r#"{{"token":"t{n}"}}"#)
                }
                "/v3/lease/grant" => r#"{"ID":"7","TTL":"3"}"#.into(),
                "/v3/lease/keepalive" => {
                    if keepalives.fetch_add(1, Ordering::SeqCst) == 0 {
                        r#"{"error":{"grpc_code":16,"http_code":401,"message":"etcdserver: invalid auth token"}}"#.into()
                    } else {
                        if logins.load(Ordering::SeqCst) >= 2 {
                            std::fs::write(&renewed, "").unwrap();
                        }
                        r#"{"result":{"ID":"7","TTL":"3"}}"#.into()
                    }
                }
                "/v3/kv/txn" => r#"{"header":{"revision":"5"},"succeeded":true,"responses":[{},{"response_range":{"kvs":[{"create_revision":"5"}]}}]}"#.into(),
                "/v3/kv/range" => r#"{"header":{"revision":"5"},"kvs":[{"create_revision":"5"}]}"#.into(),
                _ => r#"{"header":{"revision":"5"}}"#.into(),
            };
            Answer::Json(json)
        })
    };
    sb.tool("ccci-lock")
        .args([
            "--etcd",
            fake.url(),
            "--etcd-user",
            "ci",
            "--etcd-password-file",
        ])
        .arg(sb.path("password"))
        .args([
            D,
            "--",
            "sh",
            "-c",
            "while [ ! -e renewed ]; do sleep 0.05; done",
        ])
        .run()
        .expect_code(0);
    assert!(logins.load(Ordering::SeqCst) >= 2);
}
