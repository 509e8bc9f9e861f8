//! Newline-delimited message framing (MCP stdio transport).
//!
//! Handles partial lines across reads, many messages per read and messages up
//! to `max` bytes. A longer message is not buffered: once a line passes `max`
//! the reader switches to discarding until the next newline, keeping only a
//! head and a tail of the line so the caller can still recover a request's
//! `id` and answer it. Framing is never lost.

use std::io::{self, Read};

/// Bytes of an oversized line kept from its start and from its end.
pub const KEEP_HEAD: usize = 4096;
pub const KEEP_TAIL: usize = 512;
/// Room offered to one read: starts small, so an idle connection costs
/// little, and doubles while reads fill it, up to the maximum.
const READ_CHUNK_MIN: usize = 4 * 1024;
const READ_CHUNK_MAX: usize = 64 * 1024;
/// Capacity kept once a large message has been consumed.
const RETAIN: usize = 64 * 1024;

/// What the reader produced from its buffer.
pub enum Frame<'a> {
    /// One complete line, without its `\n` (and without a trailing `\r`).
    Line(&'a [u8]),
    /// A line longer than the limit was dropped.
    Oversize(Oversize),
}

#[derive(Debug)]
pub struct Oversize {
    pub len: usize,
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

pub enum ReadResult {
    /// Read this many bytes; frames may be available. `drained` is true when
    /// the read returned less than asked: for a pipe or socket the kernel
    /// buffer is then empty, so an edge-triggered reader may skip the read
    /// that would only say EAGAIN (epoll(7)), unless a hang-up is pending.
    Data {
        n: usize,
        drained: bool,
    },
    WouldBlock,
    Eof,
}

pub struct LineReader {
    buf: Vec<u8>,
    /// Start of the first unconsumed byte.
    start: usize,
    /// End of the valid bytes; `buf[end..]` is spare room.
    end: usize,
    /// Bytes in `buf[start..scanned]` are known to hold no newline.
    scanned: usize,
    max: usize,
    discarding: Option<Oversize>,
    /// Bytes the next read asks for (see READ_CHUNK_MIN).
    chunk: usize,
}

impl LineReader {
    pub fn new(max: usize) -> Self {
        LineReader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanned: 0,
            max,
            discarding: None,
            chunk: READ_CHUNK_MIN,
        }
    }

    /// Bytes buffered and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// True when a partial line (or an oversized one being discarded) is
    /// pending, i.e. an EOF now would cut a message.
    pub fn has_partial(&self) -> bool {
        self.buffered() > 0 || self.discarding.is_some()
    }

    /// One `read` call into the buffer.
    pub fn read_from<R: Read>(&mut self, src: &mut R) -> io::Result<ReadResult> {
        self.make_room(self.chunk);
        let asked = self.buf.len() - self.end;
        let res = loop {
            match src.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match res {
            Ok(0) => Ok(ReadResult::Eof),
            Ok(n) => {
                self.end += n;
                if n == asked {
                    // The source had more than we asked for: ask for more.
                    self.chunk = (self.chunk * 2).min(READ_CHUNK_MAX);
                }
                Ok(ReadResult::Data {
                    n,
                    drained: n < asked,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadResult::WouldBlock),
            Err(e) => Err(e),
        }
    }

    /// Appends bytes directly (tests, and sources that are not `Read`).
    pub fn push(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Ensures `want` writable bytes after `end`. The buffer stays
    /// initialised up to its length, so reads need no per-call zeroing.
    fn make_room(&mut self, want: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
            if self.buf.len() > RETAIN {
                self.buf.truncate(RETAIN);
                self.buf.shrink_to(RETAIN);
            }
        }
        if self.buf.len() - self.end >= want {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < want {
            self.buf.resize(self.end + want, 0);
        }
    }

    /// The next complete frame, if any.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        loop {
            let from = self.scanned.max(self.start);
            match memchr::memchr(b'\n', &self.buf[from..self.end]) {
                Some(off) => {
                    let end = from + off;
                    let line_start = self.start;
                    self.start = end + 1;
                    self.scanned = self.start;
                    if let Some(mut over) = self.discarding.take() {
                        over.len += end - line_start;
                        keep_tail(&mut over.tail, &self.buf[line_start..end]);
                        return Some(Frame::Oversize(over));
                    }
                    let mut line = &self.buf[line_start..end];
                    if let [rest @ .., b'\r'] = line {
                        line = rest;
                    }
                    if line.iter().all(|b| b.is_ascii_whitespace()) {
                        continue;
                    }
                    if line.len() > self.max {
                        return Some(Frame::Oversize(Oversize {
                            len: line.len(),
                            head: line[..KEEP_HEAD.min(line.len())].to_vec(),
                            tail: line[line.len().saturating_sub(KEEP_TAIL)..].to_vec(),
                        }));
                    }
                    return Some(Frame::Line(line));
                }
                None => {
                    self.scanned = self.end;
                    let pending = self.end - self.start;
                    if let Some(over) = &mut self.discarding {
                        over.len += pending;
                        keep_tail(&mut over.tail, &self.buf[self.start..self.end]);
                        self.start = self.end;
                    } else if pending > self.max {
                        let line = &self.buf[self.start..self.end];
                        self.discarding = Some(Oversize {
                            len: pending,
                            head: line[..KEEP_HEAD.min(line.len())].to_vec(),
                            tail: line[line.len() - KEEP_TAIL.min(line.len())..].to_vec(),
                        });
                        self.start = self.end;
                    }
                    return None;
                }
            }
        }
    }
}

fn keep_tail(tail: &mut Vec<u8>, more: &[u8]) {
    if more.len() >= KEEP_TAIL {
        tail.clear();
        tail.extend_from_slice(&more[more.len() - KEEP_TAIL..]);
    } else {
        tail.extend_from_slice(more);
        if tail.len() > KEEP_TAIL {
            tail.drain(..tail.len() - KEEP_TAIL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(r: &mut LineReader) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(f) = r.next_frame() {
            out.push(match f {
                Frame::Line(l) => String::from_utf8_lossy(l).into_owned(),
                Frame::Oversize(o) => format!("<oversize {}>", o.len),
            });
        }
        out
    }

    #[test]
    fn partial_lines_wait_and_many_lines_come_out_of_one_read() {
        let mut r = LineReader::new(100);
        r.push(b"{\"a\":1}\n{\"b\"");
        assert_eq!(frames(&mut r), vec!["{\"a\":1}"]);
        r.push(b":2}\r\n\n  \n{\"c\":3}\n{\"d\":4}\n");
        assert_eq!(frames(&mut r), vec!["{\"b\":2}", "{\"c\":3}", "{\"d\":4}"]);
        assert!(!r.has_partial());
    }

    #[test]
    fn an_oversized_line_is_dropped_and_the_next_one_survives() {
        let mut r = LineReader::new(10_000);
        let big = format!("{{\"id\":7,\"x\":\"{}\"}}", "y".repeat(50_000));
        // Fed in pieces, as reads would deliver it.
        for chunk in big.as_bytes().chunks(3000) {
            r.push(chunk);
            assert!(r.next_frame().is_none());
        }
        assert!(r.buffered() <= 10_000 + 3000);
        r.push(b"\n{\"ok\":true}\n");
        match r.next_frame() {
            Some(Frame::Oversize(o)) => {
                assert_eq!(o.len, big.len());
                assert!(o.head.starts_with(b"{\"id\":7,"));
                assert!(o.tail.ends_with(b"yy\"}"));
                assert_eq!(o.tail.len(), KEEP_TAIL);
            }
            _ => panic!("expected oversize"),
        }
        assert_eq!(frames(&mut r), vec!["{\"ok\":true}"]);
    }

    #[test]
    fn an_oversized_line_in_one_read_is_reported_too() {
        let mut r = LineReader::new(8);
        r.push(b"0123456789\nabc\n");
        assert_eq!(frames(&mut r), vec!["<oversize 10>", "abc"]);
    }

    #[test]
    fn reads_from_a_source() {
        let mut r = LineReader::new(100);
        let mut src: &[u8] = b"one\ntwo";
        assert!(matches!(
            r.read_from(&mut src).unwrap(),
            ReadResult::Data {
                n: 7,
                drained: true
            }
        ));
        assert_eq!(frames(&mut r), vec!["one"]);
        assert!(r.has_partial());
        assert!(matches!(r.read_from(&mut src).unwrap(), ReadResult::Eof));
    }
}
