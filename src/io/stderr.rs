//! Drains a child's stderr into the log, line by line, with caps.
//!
//! A child that writes to stderr faster than anyone reads would block on a
//! full pipe and stall; a child that floods would drown the log. So stderr is
//! always read, each line is cut at `MAX_LINE` bytes, and at most
//! `LINES_PER_SEC` lines per second are logged; the rest are counted and
//! reported as one "suppressed" line when the window turns over.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::fd::Fd;

pub const MAX_LINE: usize = 4096;
pub const LINES_PER_SEC: u32 = 200;
/// Read budget per wakeup so a flooding child cannot starve the loop.
const READ_BUDGET: usize = 256 * 1024;

pub struct StderrLog {
    name: String,
    line: Vec<u8>,
    truncated: bool,
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

pub enum Drain {
    /// Would block: wait for the next readable event.
    Idle,
    /// Budget spent with data left: call again on a later turn.
    More,
    /// End of file or error: the pipe is finished.
    Closed,
}

impl StderrLog {
    pub fn new(name: &str) -> Self {
        StderrLog {
            name: name.to_string(),
            line: Vec::new(),
            truncated: false,
            window_start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    pub fn drain(&mut self, fd: &mut Fd, now: Instant) -> Drain {
        let mut buf = [0u8; 16 * 1024];
        let mut taken = 0;
        loop {
            if taken >= READ_BUDGET {
                return Drain::More;
            }
            match fd.file.read(&mut buf) {
                Ok(0) => {
                    self.finish(now);
                    return Drain::Closed;
                }
                Ok(n) => {
                    taken += n;
                    self.feed(&buf[..n], now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drain::Idle,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.finish(now);
                    return Drain::Closed;
                }
            }
        }
    }

    fn feed(&mut self, mut bytes: &[u8], now: Instant) {
        while let Some(pos) = memchr::memchr(b'\n', bytes) {
            self.append(&bytes[..pos]);
            self.emit(now);
            bytes = &bytes[pos + 1..];
        }
        self.append(bytes);
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit(&mut self, now: Instant) {
        let window_over = self
            .window_start
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1));
        if window_over {
            if self.suppressed > 0 {
                log::warn!(
                    "[{}] {} stderr lines suppressed (over {} lines/s)",
                    self.name,
                    self.suppressed,
                    LINES_PER_SEC
                );
            }
            self.window_start = Some(now);
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < LINES_PER_SEC {
            self.logged += 1;
            let text = String::from_utf8_lossy(&self.line);
            let text = text.trim_end_matches('\r');
            if self.truncated {
                log::info!(
                    "[{}] {} … (line cut at {} bytes)",
                    self.name,
                    text,
                    MAX_LINE
                );
            } else {
                log::info!("[{}] {}", self.name, text);
            }
        } else {
            self.suppressed += 1;
        }
        self.line.clear();
        self.truncated = false;
    }

    fn finish(&mut self, now: Instant) {
        if !self.line.is_empty() {
            self.emit(now);
        }
        if self.suppressed > 0 {
            log::warn!(
                "[{}] {} stderr lines suppressed",
                self.name,
                self.suppressed
            );
            self.suppressed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_over_the_rate_are_counted_not_logged() {
        let t0 = Instant::now();
        let mut log = StderrLog::new("t");
        for _ in 0..(LINES_PER_SEC + 50) {
            log.feed(b"x\n", t0);
        }
        assert_eq!(log.logged, LINES_PER_SEC);
        assert_eq!(log.suppressed, 50);
        // Next window: the counter resets.
        log.feed(b"y\n", t0 + Duration::from_secs(1));
        assert_eq!(log.logged, 1);
        assert_eq!(log.suppressed, 0);
    }

    #[test]
    fn long_lines_are_cut_and_partial_lines_wait_for_their_end() {
        let t0 = Instant::now();
        let mut log = StderrLog::new("t");
        log.feed(&vec![b'a'; MAX_LINE * 3], t0);
        assert_eq!(log.line.len(), MAX_LINE);
        assert!(log.truncated);
        log.feed(b"tail\n", t0);
        assert!(log.line.is_empty());
        assert_eq!(log.logged, 1);
    }
}
