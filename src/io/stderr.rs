//! Drains a child's stderr into the log, line by line, with caps.
//!
//! A child that writes to stderr faster than anyone reads would block on a
//! full pipe and stall; a child that floods would drown the log. So stderr is
//! always read, each line is cut at `MAX_LINE` bytes, and at most
//! `LINES_PER_SEC` lines per second are logged per process (the logger's
//! `limit::Window`); the rest are counted and reported as one "suppressed"
//! line when the window turns over. Lines are logged under
//! `logging::STDERR_TARGET`, escaped (`logging::Escaped`: no control byte or
//! invalid UTF-8 from the child reaches the relay's log).

use std::io::{self, Read};
use std::time::Instant;

use super::fd::Fd;
use crate::logging::limit::Window;
use crate::logging::{self, Escaped, STDERR_TARGET};

pub const MAX_LINE: usize = 4096;
pub const LINES_PER_SEC: u32 = 200;
/// Read budget per wakeup so a flooding child cannot starve the loop.
const READ_BUDGET: usize = 256 * 1024;

pub struct StderrLog {
    name: String,
    line: Vec<u8>,
    truncated: bool,
    window: Window,
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
            window: Window::new(LINES_PER_SEC),
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
        let admit = self.window.admit(now);
        if admit.ended > 0 {
            self.report(admit.ended, true);
        }
        if admit.log {
            let mut line = &self.line[..];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            let text = Escaped::cut(line, MAX_LINE);
            if self.truncated {
                log::info!(
                    target: STDERR_TARGET,
                    "[{}] {} … (line cut at {} bytes)",
                    self.name,
                    text,
                    MAX_LINE
                );
            } else {
                log::info!(target: STDERR_TARGET, "[{}] {}", self.name, text);
            }
        } else {
            logging::count_suppressed(1);
        }
        self.line.clear();
        self.truncated = false;
    }

    fn report(&self, n: u64, over_rate: bool) {
        let why = if over_rate {
            format!(" (over {LINES_PER_SEC} lines/s)")
        } else {
            String::new()
        };
        log::warn!(
            target: STDERR_TARGET,
            "[{}] {n} stderr lines suppressed{why}",
            self.name
        );
    }

    fn finish(&mut self, now: Instant) {
        if !self.line.is_empty() {
            self.emit(now);
        }
        let n = self.window.take_all();
        if n > 0 {
            self.report(n, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_over_the_rate_are_counted_not_logged() {
        let t0 = Instant::now();
        let mut log = StderrLog::new("t");
        for _ in 0..(LINES_PER_SEC + 50) {
            log.feed(b"x\n", t0);
        }
        assert_eq!(log.window.due(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(log.window.clone().take_all(), 50);
        // Next window: the counter resets.
        log.feed(b"y\n", t0 + Duration::from_secs(1));
        assert_eq!(log.window.due(), None);
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
        assert_eq!(log.window.due(), None);
    }
}
