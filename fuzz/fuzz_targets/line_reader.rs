//! Stdio framing (`proto::framing::LineReader`): newline-delimited messages
//! from a child's stdout or the host's stdin, fed in pseudo-random reads,
//! half through `push` and half through `read_from` on a reader that also
//! says WouldBlock and Interrupted.
//!
//! Checks, against the input split on '\n':
//! - no frame contains '\n'; a `Line` is at most `max` bytes, never blank,
//!   and is exactly its input line (less one trailing '\r');
//! - every line longer than `max` (after that '\r') is reported `Oversize`
//!   with its true length, its start (the first 4096 bytes, or all that
//!   was buffered when it passed a `max` below that) and its last 512
//!   bytes, and is never
//!   delivered as a `Line`; the framing stays in step (frames come out in
//!   input order, one per non-blank line);
//! - after each drain at most `max` bytes stay buffered.
#![no_main]

use std::io::{self, Read};

use fuzz_util::{Rng, splits};
use libfuzzer_sys::fuzz_target;
use mcp_relay::proto::framing::{Frame, KEEP_HEAD, KEEP_TAIL, LineReader, ReadResult};

/// Hands out its pieces one read at a time, with the odd WouldBlock or
/// Interrupted first.
struct Reads<'a> {
    piece: &'a [u8],
    hiccup: u8,
}

impl Read for Reads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.hiccup {
            1 => {
                self.hiccup = 0;
                return Err(io::ErrorKind::Interrupted.into());
            }
            2 => {
                self.hiccup = 0;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            _ => {}
        }
        let n = buf.len().min(self.piece.len());
        buf[..n].copy_from_slice(&self.piece[..n]);
        self.piece = &self.piece[n..];
        Ok(n)
    }
}

#[derive(Debug)]
enum Got {
    Line(Vec<u8>),
    Over {
        len: usize,
        head: Vec<u8>,
        tail: Vec<u8>,
    },
}

fn drain(r: &mut LineReader, max: usize, out: &mut Vec<Got>) {
    let mut n = 0;
    while let Some(frame) = r.next_frame() {
        n += 1;
        assert!(n < 1 << 20, "next_frame loops");
        out.push(match frame {
            Frame::Line(line) => {
                assert!(!line.contains(&b'\n'), "line contains LF");
                assert!(line.len() <= max, "line of {} over max {max}", line.len());
                Got::Line(line.to_vec())
            }
            Frame::Oversize(o) => {
                assert!(o.head.len() <= KEEP_HEAD && o.tail.len() <= KEEP_TAIL);
                assert!(!o.head.contains(&b'\n') && !o.tail.contains(&b'\n'));
                Got::Over {
                    len: o.len,
                    head: o.head,
                    tail: o.tail,
                }
            }
        });
    }
    assert!(
        r.buffered() <= max,
        "{} bytes buffered, max {max}",
        r.buffered()
    );
}

fuzz_target!(|data: &[u8]| {
    let mut rng = Rng::from_data(data);
    let max = rng.pick(&[1, 16, 200, 5000]);
    let mut r = LineReader::new(max);
    let mut got = Vec::new();
    for piece in splits(data, &mut rng) {
        if rng.below(2) == 0 {
            r.push(piece);
        } else {
            // 1: Interrupted first, 2: WouldBlock first, 0: neither.
            let hiccup = if piece.is_empty() {
                0
            } else {
                (rng.below(4) % 3) as u8
            };
            let mut src = Reads { piece, hiccup };
            // A read offers at least 4 KiB; loop until the piece is in.
            let mut turns = 0;
            while !src.piece.is_empty() || src.hiccup != 0 {
                turns += 1;
                assert!(turns < 1 << 16);
                match r.read_from(&mut src).expect("no real errors") {
                    ReadResult::Data { n, .. } => assert!(n > 0),
                    ReadResult::WouldBlock => {}
                    ReadResult::Eof => panic!("Eof with bytes left"),
                }
                drain(&mut r, max, &mut got);
            }
            if piece.is_empty() {
                let mut empty = Reads { piece, hiccup: 0 };
                assert!(matches!(r.read_from(&mut empty), Ok(ReadResult::Eof)));
            }
        }
        drain(&mut r, max, &mut got);
    }

    // The reference: complete input lines, in order.
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let partial = lines.pop().unwrap_or_default();
    let mut frames = got.iter().peekable();
    for raw in lines {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let blank = line.iter().all(u8::is_ascii_whitespace);
        // Longer than max while still in flight (a line of max bytes plus
        // CR is, until its LF comes): may be reported oversize, and then
        // with the CR counted.
        if raw.len() > max {
            let this_one = match frames.peek() {
                Some(Got::Over { len, head, tail }) if *len == line.len() || *len == raw.len() => {
                    let whole = if *len == raw.len() { raw } else { line };
                    // The head is what was buffered when the line passed
                    // max, up to KEEP_HEAD: shorter when max < KEEP_HEAD.
                    raw.starts_with(head)
                        && head.len() >= KEEP_HEAD.min(max + 1).min(*len)
                        && whole.ends_with(tail)
                        && tail.len() == KEEP_TAIL.min(*len)
                }
                _ => false,
            };
            if this_one {
                frames.next();
                continue;
            }
            // A blank line may also be skipped; any other over max must be
            // reported, with its true length, start and end.
            assert!(
                line.len() <= max || blank,
                "line {:?} over max {max} not reported as such: next frame {:?}",
                String::from_utf8_lossy(line),
                frames.peek()
            );
        }
        // Blank lines are skipped.
        if blank {
            continue;
        }
        match frames.next() {
            Some(Got::Line(l)) => assert_eq!(l, line, "line altered"),
            other => panic!("line {line:?} came out as {other:?}"),
        }
    }
    assert!(frames.next().is_none(), "frames beyond the input's lines");
    assert_eq!(r.has_partial(), !partial.is_empty());
});
