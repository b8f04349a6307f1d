//! Watches: one watch on one key through the gateway's streaming
//! `/v3/watch`, given up at a deadline.
//!
//! Bounded like every call: the stream is read line by line, one line (one
//! event batch) at most [`MAX_WATCH_LINE`] bytes, and refused past it (fail
//! closed, never buffered on). A watch only reads, so giving it up at any
//! moment is harmless.

use std::io::BufRead;
use std::time::{Duration, Instant};

use super::client::{CallError, Client};
use super::messages::{decode, Int, WatchCreateRequest, WatchMessage, WatchRequest, B64};

/// The longest line of a watch stream (one event batch).
pub const MAX_WATCH_LINE: usize = 1 << 20;

/// What a watch saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// Nothing, until the deadline or the end of the stream.
    Quiet,
    /// The key was deleted.
    Deleted,
    /// Something else (a put, the watch cancelled by etcd): look again.
    Changed,
}

/// Reads one line of at most `limit` bytes (with its `\n`) into `line`;
/// `Ok(false)` at the end of the stream.
fn bounded_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<bool> {
    line.clear();
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(!line.is_empty());
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > limit {
            return Err(std::io::Error::other(format!(
                "a line longer than {limit} bytes"
            )));
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if done {
            return Ok(true);
        }
    }
}

impl Client {
    /// Opens a watch on `key` from `revision` and returns when an event
    /// arrives or `deadline` passes (`Quiet`). A watch only reads, so
    /// giving it up at any moment is harmless. A line of the stream longer
    /// than [`MAX_WATCH_LINE`], or an error in it, is an error.
    ///
    /// A watch from a revision etcd has already passed is put among its
    /// *unsynced* watchers, which etcd catches up only every 100 ms: its
    /// events may come that much late. A waiter, whose turn is on the
    /// critical path of every hand-off, uses [`Client::watch_from_now`].
    pub fn watch_once(
        &self,
        key: &str,
        revision: i64,
        deadline: Instant,
    ) -> Result<Watched, CallError> {
        self.watch(key, revision, deadline, &|| None)
    }

    /// [`Client::watch_once`] from now (etcd's current revision, which the
    /// watch sees every event after), heard of at once. Once etcd says the
    /// watch is there, `created` is called, and what it returns (`Some`)
    /// ends the watch: the caller looks once more there, so that nothing
    /// between its last look and the watch is missed.
    pub fn watch_from_now(
        &self,
        key: &str,
        deadline: Instant,
        created: &dyn Fn() -> Option<Watched>,
    ) -> Result<Watched, CallError> {
        self.watch(key, 0, deadline, created)
    }

    fn watch(
        &self,
        key: &str,
        revision: i64,
        deadline: Instant,
        created: &dyn Fn() -> Option<Watched>,
    ) -> Result<Watched, CallError> {
        let body = WatchRequest {
            create_request: WatchCreateRequest {
                key: B64::of(key),
                start_revision: Int(revision),
            },
        };
        let outcome = self.send(
            super::client::WATCH,
            &body,
            deadline,
            Duration::MAX,
            |resp| {
                let mut lines = std::io::BufReader::with_capacity(
                    8 << 10,
                    resp.body_mut().with_config().limit(u64::MAX).reader(),
                );
                let mut line = Vec::new();
                loop {
                    match bounded_line(&mut lines, &mut line, MAX_WATCH_LINE) {
                        Ok(false) => return Ok(Ok(Watched::Quiet)),
                        Ok(true) => {
                            let msg: WatchMessage = decode(&line).unwrap_or_default();
                            if let Some(error) = msg.error {
                                return Ok(Err(CallError::Refused(format!(
                                    "the watch on {key} failed: {}",
                                    error.message.as_deref().unwrap_or("an error")
                                ))));
                            }
                            if msg.result.created {
                                if let Some(seen) = created() {
                                    return Ok(Ok(seen));
                                }
                            }
                            let events = &msg.result.events;
                            if !events.is_empty() {
                                let deleted = events.iter().any(|e| e.kind == "DELETE");
                                return Ok(Ok(if deleted {
                                    Watched::Deleted
                                } else {
                                    Watched::Changed
                                }));
                            }
                            if msg.result.canceled {
                                return Ok(Ok(Watched::Changed));
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Other => {
                            return Ok(Err(CallError::Refused(format!(
                                "the watch stream on {key} sent {e}"
                            ))));
                        }
                        // The deadline cut the stream: nothing happened.
                        Err(_) => return Ok(Ok(Watched::Quiet)),
                    }
                }
            },
        );
        match outcome {
            Ok(inner) => inner,
            Err(CallError::Unreachable(_)) if Instant::now() >= deadline => Ok(Watched::Quiet),
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines_are_bounded() {
        let mut input: &[u8] = b"{\"a\":1}\nxxxxxxxxxxxxxxxx";
        let mut line = Vec::new();
        assert!(bounded_line(&mut input, &mut line, 10).unwrap());
        assert_eq!(line, b"{\"a\":1}\n");
        let e = bounded_line(&mut input, &mut line, 10).unwrap_err();
        assert!(e.to_string().contains("longer than 10 bytes"), "{e}");
    }
}
