//! Bounded, fail-closed I/O with etcd (docs/etcd.md, "Bounds"): a server
//! that floods or stalls ends a run with 125 or 75 in bounded time and
//! bounded memory, and COMMAND never runs. The server is a fake
//! (`ccci_tests::fake_http`): no etcd sends what these tests need.

use std::time::{Duration, Instant};

use ccci_tests::fake_http::{Answer, FakeHttp};
use ccci_tests::{Proc, Sandbox};

const D: &str = "wp-3f2a.ci.example.org";
/// The most a flood sends: far above every bound of the client, so one
/// that buffered it would show it in its peak RSS.
const FLOOD: usize = 256 << 20;
/// The peak RSS a run must stay under.
const RSS_LIMIT_KIB: u64 = 24 << 10;

fn b64(s: &str) -> String {
    // The few keys these answers name, base64 by hand (no dependency).
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A gateway where `D` is held by someone older: the grant, the enqueue
/// and the waiter's look succeed, and the watch answers `watch`.
///
/// One answer serves every transaction. The enqueue reads it as a wrap's
/// (its claim not written: a key is queued; inside, ours queued at 5 after
/// one at 3), the look as ours at 5 with that one before it.
fn held_elsewhere(watch: Answer) -> FakeHttp {
    let other = b64(&format!("/ccci/lock/{D}/1"));
    let ours = r#"{"response_range":{"kvs":[{"key":"x","create_revision":"5"}]}"#;
    let before =
        format!(r#"{{"response_range":{{"kvs":[{{"key":"{other}","create_revision":"3"}}]}}}}"#);
    let queued = format!(r#"{{"succeeded":true,"responses":[{ours}}},{before}]}}"#);
    let txn = format!(
        r#"{{"header":{{"revision":"5"}},"succeeded":false,"responses":[{ours},"response_txn":{queued}}},{before}]}}"#
    );
    FakeHttp::start(move |path| match path {
        "/v3/lease/grant" => Answer::Json(r#"{"ID":"7","TTL":"10"}"#.into()),
        "/v3/lease/keepalive" => Answer::Json(r#"{"result":{"ID":"7","TTL":"10"}}"#.into()),
        "/v3/kv/txn" => Answer::Json(txn.clone()),
        "/v3/watch" => watch.clone(),
        _ => Answer::Json(r#"{"header":{"revision":"5"}}"#.into()),
    })
}

/// Waits for `p` to end, reading its peak RSS (`VmHWM`, KiB) while it
/// runs; returns the highest seen.
fn peak_rss(p: &mut Proc) -> u64 {
    let mut peak = 0;
    let start = Instant::now();
    loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", p.pid())) {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            {
                peak = peak.max(kib);
            }
        }
        if p.has_exited() {
            return peak;
        }
        assert!(start.elapsed() < ccci_tests::deadline(), "{}", p.report());
    }
}

#[test]
fn a_watch_that_floods_without_newlines_ends_in_75_with_a_small_rss() {
    let fake = held_elsewhere(Answer::Flood { cap: FLOOD });
    let sb = Sandbox::new();
    // The tools are built (if need be) before the clock starts.
    let cmd = sb
        .tool("ccci-lock")
        .args(["--etcd", fake.url(), "-w", "4", D, "--", "touch", "ran"]);
    let start = Instant::now();
    let mut p = cmd.spawn();
    let peak = peak_rss(&mut p);
    let took = start.elapsed();
    let out = p.wait();
    out.expect_code(75);
    assert!(fake.abnormal_answers() > 0, "the watch was never opened");
    assert!(
        peak < RSS_LIMIT_KIB,
        "peak RSS {peak} KiB while the watch flooded"
    );
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(!sb.path("ran").exists());
    eprintln!("watch flood: 75 after {took:?}, peak RSS {peak} KiB");
}

#[test]
fn a_watch_that_stalls_ends_in_75_by_the_wait() {
    let fake = held_elsewhere(Answer::Stall);
    let sb = Sandbox::new();
    let cmd = sb
        .tool("ccci-lock")
        .args(["--etcd", fake.url(), "-w", "2", D, "--", "touch", "ran"]);
    let start = Instant::now();
    cmd.run().expect_code(75);
    assert!(fake.abnormal_answers() > 0);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(!sb.path("ran").exists());
}

#[test]
fn an_answer_that_floods_is_refused_at_once_with_125() {
    let fake = FakeHttp::start(|_| Answer::Flood { cap: FLOOD });
    let sb = Sandbox::new();
    // The tools are built (if need be) before the clock starts.
    let cmd = sb
        .tool("ccci-lock")
        .args(["--etcd", fake.url(), "-w", "4", D, "--", "touch", "ran"]);
    let start = Instant::now();
    let mut p = cmd.spawn();
    let peak = peak_rss(&mut p);
    let took = start.elapsed();
    let out = p.wait();
    out.expect_code(125).expect_stderr("larger than");
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(!sb.path("ran").exists());
    eprintln!("answer flood: 125 after {took:?}, peak RSS {peak} KiB");
}

#[test]
fn headers_without_end_are_125_with_a_small_rss() {
    let fake = FakeHttp::start(|_| Answer::HeaderFlood { cap: FLOOD });
    let sb = Sandbox::new();
    // The tools are built (if need be) before the clock starts.
    let cmd = sb
        .tool("ccci-lock")
        .args(["--etcd", fake.url(), "-w", "2", D, "--", "touch", "ran"]);
    let start = Instant::now();
    let mut p = cmd.spawn();
    let peak = peak_rss(&mut p);
    let took = start.elapsed();
    p.wait().expect_code(125).expect_stderr("cannot reach etcd");
    assert!(fake.abnormal_answers() > 0);
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(!sb.path("ran").exists());
    eprintln!("header flood: 125 after {took:?}, peak RSS {peak} KiB");
}

#[test]
fn an_answer_that_stalls_is_125_by_the_call_deadline() {
    let fake = FakeHttp::start(|_| Answer::Stall);
    let sb = Sandbox::new();
    let cmd = sb
        .tool("ccci-lock")
        .args(["--etcd", fake.url(), "-w", "3", D, "--", "touch", "ran"]);
    let start = Instant::now();
    cmd.run()
        .expect_code(125)
        .expect_stderr("cannot reach etcd");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(!sb.path("ran").exists());
}

#[test]
fn a_redirect_is_125_and_says_where_it_pointed() {
    let fake = FakeHttp::start(|_| Answer::Redirect("http://10.9.8.7:2379/v3/lease/grant".into()));
    let sb = Sandbox::new();
    sb.tool("ccci-lock")
        .args(["--etcd", fake.url(), D, "--", "touch", "ran"])
        .run()
        .expect_code(125)
        .expect_stderr(
            "a redirect to 'http://10.9.8.7:2379/v3/lease/grant', which is not followed",
        );
    assert!(!sb.path("ran").exists());
}

#[test]
fn a_grant_with_ttl_0_says_so() {
    let fake = FakeHttp::start(|_| Answer::Json(r#"{"ID":"7","TTL":"0"}"#.into()));
    let sb = Sandbox::new();
    sb.tool("ccci-lock")
        .args(["--etcd", fake.url(), D, "--", "touch", "ran"])
        .run()
        .expect_code(125)
        .expect_stderr("etcd granted lease 7 with a TTL of 0s");
    assert!(!sb.path("ran").exists());
}
