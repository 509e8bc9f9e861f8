//! HTTP/1.1 as bytes in, events and bytes out (RFC 9110, RFC 9112).
//!
//! The server side parses requests ([`RequestParser`]) and writes responses
//! ([`write_response`], [`write_chunked_head`], …); the client side parses
//! upstream responses ([`ResponseParser`]). Nothing here touches a socket:
//! the caller feeds what it read and writes out what these functions append.
//!
//! Memory is bounded by [`Limits`]: a head longer than `max_header` or a body
//! longer than `max_body` is refused as soon as that is known, not once it
//! has arrived, and body bytes leave the read buffer as they arrive. The
//! buffer thus holds at most `max_header` + one read, the body `max_body`,
//! provided the caller drains `next_event` after each `feed` (or stops
//! reading while it does not).
//!
//! Choices where the RFCs leave room:
//! - A request line naming a version other than 1.0/1.1 (including the
//!   HTTP/2 preface `PRI * HTTP/2.0`) is 505; a line that names no version
//!   at all is 400.
//! - Like nginx, any transfer coding other than `chunked` is 501, even
//!   `gzip` alone (RFC 9112 §6.1 would also allow 400 there); `chunked`
//!   twice or an empty Transfer-Encoding is 400, and so is
//!   Transfer-Encoding in an HTTP/1.0 request (§6.1: its framing is faulty).
//! - A missing Host is accepted (§3.2 says 400; local MCP clients and test
//!   tools omit it); more than one Host is 400.
//! - After a request that ends the connection (`Connection: close`, or
//!   HTTP/1.0 without keep-alive) the parser ignores further bytes (§9.6).
//!
//! One file per job: `request` parses requests, `response` parses upstream
//! responses, `chunked` decodes the chunked transfer coding for both, and
//! `write` writes responses. This file holds what they share: [`Limits`],
//! [`Error`], the header-field helpers and the head scanner; `index` locates the
//! header fields the relay asks for once per request.

use std::fmt;

mod chunked;
mod fields;
mod index;
mod request;
mod response;
mod write;

pub use index::Known;
pub use request::{Event, Request, RequestParser};
pub use response::{BodyKind, BodyProgress, Response, ResponseParser};
pub use write::{
    reason_phrase, write_chunk, write_chunked_head, write_continue, write_last_chunk,
    write_response,
};

/// Header fields httparse may return; more is 431 like an oversized head.
const MAX_HEADERS: usize = 64;
/// Buffer capacity kept once a large message has been consumed.
const RETAIN: usize = 64 * 1024;

/// Sizes a peer may make us buffer. Both in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The request line and header fields, blank line included. Default 16 KiB.
    pub max_header: usize,
    /// A request body after chunked decoding. Default 4 MiB.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header: 16 * 1024,
            max_body: 4 * 1024 * 1024,
        }
    }
}

/// Why a message was refused. On the server side each maps to the status to
/// answer with before closing; from [`ResponseParser`] any error means the
/// upstream misbehaved (the caller answers 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// 400: malformed or ambiguous framing; the text says what.
    BadRequest(&'static str),
    /// 431: head over `max_header`, or over 64 header fields.
    HeaderTooLarge,
    /// 413: body over `max_body`.
    BodyTooLarge,
    /// 501: a transfer coding other than `chunked`.
    NotImplemented(&'static str),
    /// 505: an HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
}

impl Error {
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::HeaderTooLarge => 431,
            Error::BodyTooLarge => 413,
            Error::NotImplemented(_) => 501,
            Error::VersionNotSupported => 505,
        }
    }

    /// What went wrong, for a log line or a plain-text error body. The status
    /// line's phrase is [`reason_phrase`]`(self.status())`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::BadRequest(why) | Error::NotImplemented(why) => why,
            Error::HeaderTooLarge => "header section too large",
            Error::BodyTooLarge => "body too large",
            Error::VersionNotSupported => "only HTTP/1.0 and HTTP/1.1 are supported",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status(),
            reason_phrase(self.status()),
            self.reason()
        )
    }
}

impl std::error::Error for Error {}

/// RFC 9110 §8.6: Content-Length repeated, or given as a list, is accepted
/// only when every value is the same number.
fn content_length<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Option<u64>, Error> {
    let mut found = None;
    for value in header_all(headers, "content-length") {
        for item in value.split(',').map(ows) {
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::BadRequest("invalid Content-Length"));
            }
            // Digits only, so failing means overflow: too large for any limit.
            let n = item.parse::<u64>().unwrap_or(u64::MAX);
            if found.is_some_and(|f| f != n) {
                return Err(Error::BadRequest("conflicting Content-Length values"));
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Ok when Transfer-Encoding names exactly `chunked`, once.
fn chunked_only<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> Result<(), Error> {
    let mut chunked = 0;
    for coding in list(headers, "transfer-encoding") {
        if !coding.eq_ignore_ascii_case("chunked") {
            return Err(Error::NotImplemented("transfer coding other than chunked"));
        }
        chunked += 1;
    }
    if chunked == 1 {
        Ok(())
    } else {
        Err(Error::BadRequest("Transfer-Encoding must be chunked, once"))
    }
}

/// RFC 9112 §9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only with
/// `keep-alive`.
fn keep_alive<'a>(minor_version: u8, headers: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
    let (mut close, mut keep) = (false, false);
    for option in list(headers, "connection") {
        close |= option.eq_ignore_ascii_case("close");
        keep |= option.eq_ignore_ascii_case("keep-alive");
    }
    !close && (minor_version >= 1 || keep)
}

fn header_all<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
    name: &str,
) -> impl Iterator<Item = &'a str> {
    headers
        .filter(move |(n, _)| {
            #[cfg(test)]
            testing::COMPARED.with(|c| c.set(c.get() + 1));
            n.eq_ignore_ascii_case(name)
        })
        .map(|(_, v)| v)
}

/// A response's `(name, value)` pairs as [`header_all`] reads them.
fn pairs(headers: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
}

/// The elements of a comma-separated list header across all its field
/// lines (RFC 9110 §5.6.1), trimmed, empty ones dropped.
fn list<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
    name: &str,
) -> impl Iterator<Item = &'a str> {
    header_all(headers, name)
        .flat_map(|v| v.split(','))
        .map(ows)
        .filter(|s| !s.is_empty())
}

/// Trims optional whitespace (SP and HTAB, RFC 9110 §5.6.3).
fn ows(s: &str) -> &str {
    // Bytewise: a char-set pattern decodes every char it looks at, and this
    // runs on every header value and list element of every request. SP and
    // HTAB are single bytes: both ends are char boundaries.
    s.get(ows_range(s.as_bytes())).unwrap_or(s)
}

/// [`ows`] of bytes.
fn ows_bytes(b: &[u8]) -> &[u8] {
    b.get(ows_range(b)).unwrap_or(b)
}

/// Where `b` is once leading and trailing SP and HTAB are cut.
fn ows_range(b: &[u8]) -> std::ops::Range<usize> {
    let blank = |c: &u8| *c == b' ' || *c == b'\t';
    let start = b.iter().position(|c| !blank(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !blank(c)).map_or(start, |i| i + 1);
    start..end
}

/// Finds the end of a head without rescanning: a slowloris sending one byte
/// at a time costs O(n), not O(n²).
#[derive(Default)]
struct HeadScan {
    /// Bytes from the head's start known not to contain its end.
    scanned: usize,
    /// The first line feed: the end of the request (or status) line.
    first_lf: Option<usize>,
    line_checked: bool,
}

impl HeadScan {
    /// The length of the head (through its empty line) if `buf` holds all of
    /// it. Bare LF line endings are accepted, as httparse accepts them.
    fn find_end(&mut self, buf: &[u8]) -> Option<usize> {
        let mut from = self.scanned.min(buf.len());
        while let Some(off) = memchr::memchr(b'\n', &buf[from..]) {
            let lf = from + off;
            self.first_lf.get_or_insert(lf);
            match (buf.get(lf + 1), buf.get(lf + 2)) {
                (Some(b'\n'), _) => return Some(lf + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(lf + 3),
                // Undecided until more bytes come: resume at this LF.
                (None, _) | (Some(b'\r'), None) => {
                    self.scanned = lf;
                    return None;
                }
                _ => from = lf + 1,
            }
        }
        self.scanned = buf.len();
        None
    }
}

/// Consumes CRLF and LF lines at `start`; true if it consumed any.
fn skip_empty_lines(buf: &[u8], start: &mut usize) -> bool {
    let before = *start;
    loop {
        match buf.get(*start..) {
            Some([b'\r', b'\n', ..]) => *start += 2,
            Some([b'\n', ..]) => *start += 1,
            _ => return *start != before,
        }
    }
}

/// Drops consumed bytes so the buffer holds only what is still unparsed.
fn compact(buf: &mut Vec<u8>, start: &mut usize) {
    if *start == 0 {
        return;
    }
    buf.drain(..*start);
    *start = 0;
    if buf.is_empty() && buf.capacity() > RETAIN {
        buf.shrink_to(RETAIN);
    }
}

#[cfg(test)]
mod testing {
    //! The request-parser harness shared by the `request` and `chunked` tests.

    use super::*;

    thread_local! {
        /// Header names compared by lookups on this thread (each test runs
        /// on its own thread), for the lookup-cost tests.
        pub(super) static COMPARED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    pub(super) fn parser() -> RequestParser {
        RequestParser::new(Limits::default())
    }

    pub(super) fn small(max_header: usize, max_body: usize) -> RequestParser {
        RequestParser::new(Limits {
            max_header,
            max_body,
        })
    }

    /// Every event the buffered bytes give, stopping at "need more" or an error.
    pub(super) fn drain(p: &mut RequestParser) -> Vec<Result<Event, Error>> {
        let mut out = Vec::new();
        loop {
            match p.next_event() {
                Ok(Some(ev)) => out.push(Ok(ev)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    pub(super) fn one_request(bytes: &[u8]) -> Request {
        let mut p = parser();
        p.feed(bytes);
        match drain(&mut p).as_slice() {
            [Ok(Event::Request(r))] => r.clone(),
            other => panic!("expected one request, got {other:?}"),
        }
    }

    pub(super) fn error_of(bytes: &[u8]) -> Error {
        let mut p = parser();
        p.feed(bytes);
        match drain(&mut p).pop() {
            Some(Err(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }
}
