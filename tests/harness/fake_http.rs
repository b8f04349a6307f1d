//! A fake etcd gateway for the tests of the client's bounds: a thread that
//! answers each `POST PATH` as a test says, including answers no etcd
//! gives (a flood without newlines, headers and then silence).
//!
//! Each connection is served by a thread of its own, which ends when the
//! client goes away (a write fails) or the flood's cap is reached; the
//! accepting thread ends when the [`FakeHttp`] is dropped. Nothing here is
//! a process, so nothing is left to reap.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How to answer one request.
#[derive(Clone)]
pub enum Answer {
    /// `200 OK` with this JSON body.
    Json(String),
    /// `200 OK`, then bytes without a newline, `cap` of them at most (so a
    /// client that reads without a bound grows to about `cap`).
    Flood {
        /// The most bytes sent.
        cap: usize,
    },
    /// `200 OK` and headers, then nothing until the client goes away.
    Stall,
    /// `200 OK`, then header lines without end, `cap` bytes at most.
    HeaderFlood {
        /// The most bytes sent.
        cap: usize,
    },
    /// `307` to `location`, with an empty body.
    Redirect(String),
}

/// The server: its URL and a count of requests per path prefix.
pub struct FakeHttp {
    url: String,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
}

type Route = dyn Fn(&str) -> Answer + Send + Sync;

impl FakeHttp {
    /// Starts answering each request by `route(path)`.
    pub fn start(route: impl Fn(&str) -> Answer + Send + Sync + 'static) -> FakeHttp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let route: Arc<Route> = Arc::new(route);
        {
            let stop = Arc::clone(&stop);
            let served = Arc::clone(&served);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let route = Arc::clone(&route);
                            let served = Arc::clone(&served);
                            let stop = Arc::clone(&stop);
                            std::thread::spawn(move || serve(conn, &*route, &served, &stop));
                        }
                        // Not a sleep to synchronise: the accept loop's poll.
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        FakeHttp { url, stop, served }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many requests were answered with a flood or a stall.
    pub fn abnormal_answers(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for FakeHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(conn: TcpStream, route: &Route, abnormal: &AtomicUsize, stop: &AtomicBool) {
    conn.set_nonblocking(false).ok();
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        // One request: the request line, headers, a Content-Length body.
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        match route(&path) {
            Answer::Json(json) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    json.len()
                );
                if out.write_all(head.as_bytes()).is_err()
                    || out.write_all(json.as_bytes()).is_err()
                {
                    return;
                }
            }
            Answer::Redirect(location) => {
                let head = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
                );
                if out.write_all(head.as_bytes()).is_err() {
                    return;
                }
            }
            Answer::Flood { cap } => {
                abnormal.fetch_add(1, Ordering::SeqCst);
                let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n");
                let chunk = vec![b'x'; 64 << 10];
                let mut sent = 0;
                while sent < cap && !stop.load(Ordering::SeqCst) {
                    if out.write_all(&chunk).is_err() {
                        return;
                    }
                    sent += chunk.len();
                }
                return;
            }
            Answer::HeaderFlood { cap } => {
                abnormal.fetch_add(1, Ordering::SeqCst);
                let _ = out.write_all(b"HTTP/1.1 200 OK\r\n");
                let line = format!("X-Filler: {}\r\n", "a".repeat(1000));
                let mut sent = 0;
                while sent < cap && !stop.load(Ordering::SeqCst) {
                    if out.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                    sent += line.len();
                }
                return;
            }
            Answer::Stall => {
                abnormal.fetch_add(1, Ordering::SeqCst);
                let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n");
                // Until the client hangs up (the read ends) or 30 s pass.
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
                return;
            }
        }
    }
}
