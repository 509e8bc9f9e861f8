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

use std::fmt;
use std::io::Write;
use std::mem;

/// Header fields httparse may return; more is 431 like an oversized head.
const MAX_HEADERS: usize = 64;
/// A chunk-size line (with its extensions) longer than this is 400.
const MAX_CHUNK_LINE: usize = 4096;
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

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request-target as sent, e.g. `/mcp?x=1`.
    pub target: String,
    /// 0 or 1.
    pub minor_version: u8,
    /// Names lower-cased, values trimmed of surrounding whitespace.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the connection may carry another request (RFC 9112 §9.3).
    pub keep_alive: bool,
}

impl Request {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_all(&self.headers, name).next()
    }

    /// Every value of a header, in order, one per field line.
    pub fn header_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        header_all(&self.headers, name)
    }

    /// The target's path, without the query. An absolute-form target
    /// (`http://host/mcp`, RFC 9112 §3.2.2) gives its path too.
    pub fn path(&self) -> &str {
        let mut t = self.target.as_str();
        if let Some((scheme, after)) = t.split_once("://")
            && (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        {
            t = after.find('/').map_or("/", |j| &after[j..]);
        }
        t.split('?').next().unwrap_or(t)
    }

    /// The value of `key` in the query string, percent-decoded as
    /// application/x-www-form-urlencoded (so `+` is a space), the way the MCP
    /// SDKs read `session_id`. First match wins; a key without `=` gives "".
    pub fn query_param(&self, key: &str) -> Option<String> {
        let (_, query) = self.target.split_once('?')?;
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(k, _)| percent_decode(k) == key)
            .map(|(_, v)| percent_decode(v))
    }

    /// Whether an Accept header lists `media` (`type/subtype`), directly or
    /// as `type/*` or `*/*`. The most specific matching range decides, and
    /// `q=0` there means "not acceptable" (RFC 9110 §12.5.1). No Accept header
    /// lists nothing: MCP requires clients to send one, so absence is false.
    pub fn accepts(&self, media: &str) -> bool {
        let Some((want_type, want_sub)) = media.split_once('/') else {
            return false;
        };
        let (want_type, want_sub) = (ows(want_type), ows(want_sub));
        // (specificity, acceptable) of the best range so far.
        let mut best: Option<(u8, bool)> = None;
        for range in list(&self.headers, "accept") {
            let mut parts = range.split(';');
            let Some((ty, sub)) = parts.next().and_then(|r| r.split_once('/')) else {
                continue;
            };
            let (ty, sub) = (ows(ty), ows(sub));
            let specificity = if ty == "*" && sub == "*" {
                0
            } else if ty.eq_ignore_ascii_case(want_type) && sub == "*" {
                1
            } else if ty.eq_ignore_ascii_case(want_type) && sub.eq_ignore_ascii_case(want_sub) {
                2
            } else {
                continue;
            };
            let refused = parts.any(|p| {
                p.split_once('=')
                    .is_some_and(|(k, v)| ows(k).eq_ignore_ascii_case("q") && q_is_zero(ows(v)))
            });
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, !refused));
            }
        }
        best.is_some_and(|(_, ok)| ok)
    }
}

/// `0`, `0.`, `0.0`, `0.000`: a weight that refuses (RFC 9110 §12.4.2).
fn q_is_zero(q: &str) -> bool {
    match q.split_once('.') {
        Some((int, frac)) => int == "0" && frac.bytes().all(|b| b == b'0'),
        None => q == "0",
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex(hi).zip(hex(lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (b, escaped) {
            (_, Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            // A stray `%` stays as it is, as WHATWG's decoder does.
            (other, None) => {
                out.push(other);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// What [`RequestParser::next_event`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete request, body included.
    Request(Request),
    /// Headers complete with `Expect: 100-continue` and a body still to
    /// come: the caller may write `100 Continue` now (RFC 9110 §10.1.1).
    ContinueExpected,
}

/// Incremental parser for the requests on one client connection.
pub struct RequestParser {
    limits: Limits,
    buf: Vec<u8>,
    /// First unconsumed byte of `buf`; offsets in the state are relative to it.
    start: usize,
    state: State,
    /// Bytes examined by scans and by httparse, for the slowloris test.
    #[cfg(test)]
    work: usize,
}

enum State {
    /// Waiting for a complete head.
    Head(HeadScan),
    /// Head parsed; reading its body into `req.body`.
    Body {
        req: Request,
        framing: Framing,
        /// `Expect: 100-continue` not yet answered with an event.
        continue_pending: bool,
    },
    /// A request ended the connection; later bytes are ignored.
    Closed,
    /// Refused with this error; the caller answers and closes.
    Failed(Error),
}

enum Framing {
    /// Bytes still to read.
    Length(usize),
    Chunked(ChunkDecoder),
}

impl RequestParser {
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            buf: Vec::new(),
            start: 0,
            state: State::Head(HeadScan::default()),
            #[cfg(test)]
            work: 0,
        }
    }

    /// Appends received bytes. Ignored once the parser has failed or a
    /// request has closed the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        if matches!(self.state, State::Closed | State::Failed(_)) {
            return;
        }
        compact(&mut self.buf, &mut self.start);
        self.buf.extend_from_slice(bytes);
    }

    /// The next event from buffered bytes; `Ok(None)` means more bytes are
    /// needed. Call it until `Ok(None)`: pipelined requests come out one per
    /// call, in order. After an `Err` the parser is poisoned and returns the
    /// same error again; the caller answers `err.status()` and closes.
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        let result = match self.state {
            State::Failed(e) => return Err(e),
            State::Closed => return Ok(None),
            State::Head(_) => self.read_head(),
            State::Body { .. } => self.read_body(),
        };
        if let Err(e) = result {
            self.state = State::Failed(e);
            self.buf = Vec::new();
            self.start = 0;
        }
        result
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Part of a request has arrived but not all of it (for the
    /// `http-request` timeout).
    pub fn mid_request(&self) -> bool {
        match self.state {
            State::Head(_) => self.buffered() > 0,
            State::Body { .. } => true,
            State::Closed | State::Failed(_) => false,
        }
    }

    /// The current request's head is parsed and its body is being read.
    pub fn headers_done(&self) -> bool {
        matches!(self.state, State::Body { .. })
    }

    fn read_head(&mut self) -> Result<Option<Event>, Error> {
        let State::Head(scan) = &mut self.state else {
            return Ok(None);
        };
        // RFC 9112 §2.2: ignore empty lines before the request line.
        if scan.first_lf.is_none() && skip_empty_lines(&self.buf, &mut self.start) {
            *scan = HeadScan::default();
        }
        let avail = &self.buf[self.start..];
        #[cfg(test)]
        {
            self.work += avail.len() - scan.scanned;
        }
        let end = scan.find_end(avail);
        // Judge the request line as soon as it is whole, so garbage is 400
        // (or an HTTP/2 preface 505) at once rather than 431 later.
        if !scan.line_checked
            && let Some(lf) = scan.first_lf
        {
            scan.line_checked = true;
            #[cfg(test)]
            {
                self.work += lf + 1;
            }
            check_request_line(&avail[..=lf])?;
        }
        let Some(end) = end else {
            if avail.len() > self.limits.max_header {
                return Err(Error::HeaderTooLarge);
            }
            return Ok(None);
        };
        if end > self.limits.max_header {
            return Err(Error::HeaderTooLarge);
        }
        #[cfg(test)]
        {
            self.work += end;
        }
        let req = parse_request_head(&avail[..end])?;
        self.start += end;
        let framing = request_framing(&req, &self.limits)?;
        // RFC 9110 §10.1.1: an HTTP/1.0 client's expectation is ignored.
        let continue_pending = req.minor_version == 1
            && req
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            && !matches!(framing, Framing::Length(0));
        self.state = State::Body {
            req,
            framing,
            continue_pending,
        };
        self.read_body()
    }

    fn read_body(&mut self) -> Result<Option<Event>, Error> {
        let State::Body {
            req,
            framing,
            continue_pending,
        } = &mut self.state
        else {
            return Ok(None);
        };
        let avail = &self.buf[self.start..];
        let done = match framing {
            Framing::Length(left) => {
                let take = (*left).min(avail.len());
                req.body.extend_from_slice(&avail[..take]);
                self.start += take;
                *left -= take;
                *left == 0
            }
            Framing::Chunked(dec) => {
                let max_body = self.limits.max_body as u64;
                let (used, done) =
                    dec.decode(avail, &mut req.body, max_body, self.limits.max_header)?;
                self.start += used;
                done
            }
        };
        if !done {
            // Only now, so a body that came with its head needs no 100.
            return Ok(mem::take(continue_pending).then_some(Event::ContinueExpected));
        }
        let next = if req.keep_alive {
            State::Head(HeadScan::default())
        } else {
            self.buf = Vec::new();
            self.start = 0;
            State::Closed
        };
        match mem::replace(&mut self.state, next) {
            State::Body { req, .. } => Ok(Some(Event::Request(req))),
            _ => Ok(None),
        }
    }
}

/// Validates a request line (with its line ending) on its own.
fn check_request_line(line: &[u8]) -> Result<(), Error> {
    let mut headers = [httparse::EMPTY_HEADER; 1];
    match httparse::Request::new(&mut headers).parse(line) {
        Ok(_) => Ok(()),
        Err(e) => Err(request_error(e, line)),
    }
}

fn parse_request_head(head: &[u8]) -> Result<Request, Error> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut raw);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(Error::BadRequest("malformed request head")),
        Err(e) => return Err(request_error(e, head)),
    }
    let (Some(method), Some(target), Some(minor_version)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Err(Error::BadRequest("malformed request line"));
    };
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            return Err(Error::BadRequest("header value is not UTF-8"));
        };
        headers.push((h.name.to_ascii_lowercase(), ows(value).to_owned()));
    }
    if header_all(&headers, "host").nth(1).is_some() {
        return Err(Error::BadRequest("more than one Host header"));
    }
    let keep_alive = keep_alive(minor_version, &headers);
    Ok(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        minor_version,
        headers,
        body: Vec::new(),
        keep_alive,
    })
}

fn request_error(e: httparse::Error, head: &[u8]) -> Error {
    match e {
        httparse::Error::TooManyHeaders => Error::HeaderTooLarge,
        httparse::Error::Version if names_a_version(head) => Error::VersionNotSupported,
        httparse::Error::HeaderName | httparse::Error::HeaderValue => {
            Error::BadRequest("malformed header field")
        }
        httparse::Error::NewLine => Error::BadRequest("malformed line ending"),
        _ => Error::BadRequest("malformed request line"),
    }
}

/// The request line ends in `HTTP/<digits>[.<digits>]`: a version we do not
/// speak (505) rather than a line we cannot read (400).
fn names_a_version(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(head);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or(line);
    let Some(number) = version.strip_prefix(b"HTTP/") else {
        return false;
    };
    let mut parts = number.splitn(2, |&b| b == b'.');
    let digits = |p: &[u8]| !p.is_empty() && p.iter().all(u8::is_ascii_digit);
    parts.next().is_some_and(digits) && parts.next().is_none_or(digits)
}

/// RFC 9112 §6: how the request's body is delimited.
fn request_framing(req: &Request, limits: &Limits) -> Result<Framing, Error> {
    let length = content_length(&req.headers)?;
    if req.header("transfer-encoding").is_some() {
        // §6.1: both is how requests are smuggled past a proxy.
        if length.is_some() {
            return Err(Error::BadRequest(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if req.minor_version == 0 {
            return Err(Error::BadRequest(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        chunked_only(&req.headers)?;
        return Ok(Framing::Chunked(ChunkDecoder::default()));
    }
    match length {
        Some(n) if n > limits.max_body as u64 => Err(Error::BodyTooLarge),
        // Not above max_body, so it fits.
        Some(n) => Ok(Framing::Length(n as usize)),
        None => Ok(Framing::Length(0)),
    }
}

/// RFC 9110 §8.6: Content-Length repeated, or given as a list, is accepted
/// only when every value is the same number.
fn content_length(headers: &[(String, String)]) -> Result<Option<u64>, Error> {
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
fn chunked_only(headers: &[(String, String)]) -> Result<(), Error> {
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
fn keep_alive(minor_version: u8, headers: &[(String, String)]) -> bool {
    let (mut close, mut keep) = (false, false);
    for option in list(headers, "connection") {
        close |= option.eq_ignore_ascii_case("close");
        keep |= option.eq_ignore_ascii_case("keep-alive");
    }
    !close && (minor_version >= 1 || keep)
}

fn header_all<'a>(headers: &'a [(String, String)], name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The elements of a comma-separated list header across all its field
/// lines (RFC 9110 §5.6.1), trimmed, empty ones dropped.
fn list<'a>(headers: &'a [(String, String)], name: &str) -> impl Iterator<Item = &'a str> {
    header_all(headers, name)
        .flat_map(|v| v.split(','))
        .map(ows)
        .filter(|s| !s.is_empty())
}

/// Trims optional whitespace (SP and HTAB, RFC 9110 §5.6.3).
fn ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

// ---------------------------------------------------------------------------
// Shared by both parsers
// ---------------------------------------------------------------------------

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

/// Decodes the chunked transfer coding (RFC 9112 §7.1) as bytes arrive.
#[derive(Default)]
struct ChunkDecoder {
    state: Chunk,
    /// Bytes of the current line already searched for its LF.
    scanned: usize,
    /// Decoded bytes so far.
    decoded: u64,
    /// Bytes of trailer section so far.
    trailers: usize,
}

#[derive(Default)]
enum Chunk {
    /// Expecting `size[;ext]CRLF`.
    #[default]
    Size,
    /// This many data bytes still to copy.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer fields, ignored, until an empty line.
    Trailers,
}

impl ChunkDecoder {
    /// Decodes what `buf` holds, appending data to `out`. Returns the bytes
    /// consumed and whether the body ended. A body whose decoded size would
    /// pass `max_body` is refused as soon as a chunk size says so.
    fn decode(
        &mut self,
        buf: &[u8],
        out: &mut Vec<u8>,
        max_body: u64,
        max_trailers: usize,
    ) -> Result<(usize, bool), Error> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                Chunk::Size => {
                    let Some(lf) = self.find_lf(rest) else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err(Error::BadRequest("chunk size line too long"));
                        }
                        return Ok((pos, false));
                    };
                    if lf >= MAX_CHUNK_LINE {
                        return Err(Error::BadRequest("chunk size line too long"));
                    }
                    // httparse reads an empty line as size 0; it is not one.
                    if !rest.first().is_some_and(u8::is_ascii_hexdigit) {
                        return Err(Error::BadRequest("invalid chunk size"));
                    }
                    let size = match httparse::parse_chunk_size(&rest[..=lf]) {
                        Ok(httparse::Status::Complete((n, size))) if n == lf + 1 => size,
                        _ => return Err(Error::BadRequest("invalid chunk size")),
                    };
                    if size > max_body.saturating_sub(self.decoded) {
                        return Err(Error::BodyTooLarge);
                    }
                    self.decoded += size;
                    pos += lf + 1;
                    self.state = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    let take = left.min(rest.len() as u64) as usize;
                    out.extend_from_slice(&rest[..take]);
                    pos += take;
                    if left > take as u64 {
                        self.state = Chunk::Data(left - take as u64);
                        return Ok((pos, false));
                    }
                    self.state = Chunk::DataEnd;
                }
                Chunk::DataEnd => {
                    match rest {
                        // CRLF only, as httparse demands of size lines.
                        [b'\r', b'\n', ..] => pos += 2,
                        [] | [b'\r'] => return Ok((pos, false)),
                        _ => return Err(Error::BadRequest("chunk data not followed by CRLF")),
                    }
                    self.state = Chunk::Size;
                }
                Chunk::Trailers => {
                    let Some(lf) = self.find_lf(rest) else {
                        if self.trailers + rest.len() > max_trailers {
                            return Err(Error::HeaderTooLarge);
                        }
                        return Ok((pos, false));
                    };
                    self.trailers += lf + 1;
                    if self.trailers > max_trailers {
                        return Err(Error::HeaderTooLarge);
                    }
                    pos += lf + 1;
                    if matches!(rest[..lf], [] | [b'\r']) {
                        *self = ChunkDecoder::default();
                        return Ok((pos, true));
                    }
                }
            }
        }
    }

    /// The LF ending the line at the start of `rest`, resuming where the
    /// last search stopped.
    fn find_lf(&mut self, rest: &[u8]) -> Option<usize> {
        let from = self.scanned.min(rest.len());
        match memchr::memchr(b'\n', &rest[from..]) {
            Some(off) => {
                self.scanned = 0;
                Some(from + off)
            }
            None => {
                self.scanned = rest.len();
                None
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Responses we write
// ---------------------------------------------------------------------------

/// The reason phrase for a status; "" for one not listed (the phrase is
/// optional, RFC 9112 §4).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Writes a complete response with Content-Length. Framing headers in
/// `headers` (Content-Length, Transfer-Encoding, Connection) are skipped:
/// they are this function's to write. `keep_alive = false` adds
/// `Connection: close`. 1xx, 204 and 304 get neither Content-Length nor
/// body (RFC 9110 §8.6, §6.4.1).
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    let has_body = status_has_body(status);
    write_head_start(out, status, headers);
    if has_body {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    write_head_end(out, keep_alive);
    if has_body {
        out.extend_from_slice(body);
    }
}

/// Writes a response head for a body sent in chunks (Transfer-Encoding:
/// chunked), e.g. an SSE stream. Header handling as in [`write_response`].
pub fn write_chunked_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    keep_alive: bool,
) {
    write_head_start(out, status, headers);
    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    write_head_end(out, keep_alive);
}

/// One chunk. Empty data writes nothing: an empty chunk would end the body.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Ends a chunked body (no trailers).
pub fn write_last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

/// The interim answer to `Expect: 100-continue`.
pub fn write_continue(out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
}

fn status_has_body(status: u16) -> bool {
    !(100..200).contains(&status) && status != 204 && status != 304
}

fn write_head_start(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)]) {
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", status, reason_phrase(status));
    for (name, value) in headers {
        if ["content-length", "transfer-encoding", "connection"]
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f))
        {
            continue;
        }
        put_field(out, name);
        out.extend_from_slice(b": ");
        put_field(out, value);
        out.extend_from_slice(b"\r\n");
    }
}

fn write_head_end(out: &mut Vec<u8>, keep_alive: bool) {
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Values may come from upstream (a session id): CR, LF or NUL would end the
/// field line early and let it inject headers, so they become spaces.
fn put_field(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().map(|b| {
        if matches!(b, b'\r' | b'\n' | 0) {
            b' '
        } else {
            b
        }
    }));
}

// ---------------------------------------------------------------------------
// Responses we read (upstream HTTP)
// ---------------------------------------------------------------------------

/// A response head; the body comes from [`ResponseParser::next_body`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// 0 or 1.
    pub minor_version: u8,
    /// Names lower-cased; values trimmed, non-UTF-8 bytes replaced (an
    /// upstream's odd header should not fail the whole response).
    pub headers: Vec<(String, String)>,
    /// The upstream allows another request on this connection. A body of
    /// kind [`BodyKind::UntilClose`] ends it regardless.
    pub keep_alive: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_all(&self.headers, name).next()
    }

    pub fn header_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        header_all(&self.headers, name)
    }
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Length(u64),
    Chunked,
    /// Ends when the upstream closes; call [`ResponseParser::on_eof`] then.
    UntilClose,
    /// HEAD, 204, 304.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProgress {
    /// More body to come.
    Partial,
    /// The body is complete; the parser is ready for the next response.
    Done,
}

/// Incremental parser for the responses on one upstream connection, reused
/// across keep-alive responses. The body is streamed out, never buffered
/// whole, so `max_body` does not apply here: the caller bounds what it keeps
/// (an SSE body may run for hours). `max_header` applies to heads and
/// trailers.
pub struct ResponseParser {
    limits: Limits,
    buf: Vec<u8>,
    start: usize,
    state: ResponseState,
    /// The next response answers a HEAD request.
    no_body: bool,
}

enum ResponseState {
    Head(HeadScan),
    Body(ResponseBody),
    /// Ended by EOF after an until-close body.
    Closed,
    Failed(Error),
}

enum ResponseBody {
    Length(u64),
    Chunked(ChunkDecoder),
    UntilClose,
}

impl ResponseParser {
    pub fn new(limits: Limits) -> Self {
        ResponseParser {
            limits,
            buf: Vec::new(),
            start: 0,
            state: ResponseState::Head(HeadScan::default()),
            no_body: false,
        }
    }

    /// Call when sending a request, before its response's head is read:
    /// `no_body` for HEAD, whose response has headers but no body. Applies to
    /// the next final response only.
    pub fn begin_response(&mut self, no_body: bool) {
        self.no_body = no_body;
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if matches!(self.state, ResponseState::Closed | ResponseState::Failed(_)) {
            return;
        }
        compact(&mut self.buf, &mut self.start);
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next final response's head; `Ok(None)` until it is complete (or
    /// while the previous body is unfinished). 1xx interim responses are
    /// skipped (RFC 9110 §15.2); 101 is an error, since the relay never asks
    /// to upgrade.
    pub fn next_head(&mut self) -> Result<Option<(Response, BodyKind)>, Error> {
        let result = self.read_head();
        if let Err(e) = result {
            self.fail(e);
        }
        result
    }

    /// Appends the body bytes available so far to `out`, decoded.
    /// `Done` once the body is complete (at once for an empty body, or when
    /// no response is in progress). An until-close body ends only with
    /// [`on_eof`](Self::on_eof).
    pub fn next_body(&mut self, out: &mut Vec<u8>) -> Result<BodyProgress, Error> {
        let result = self.read_body(out);
        if let Err(e) = result {
            self.fail(e);
        }
        result
    }

    /// The upstream closed. Ends an until-close body (drain `next_body`
    /// first); anywhere else the response was cut short, which is an error.
    pub fn on_eof(&mut self) -> Result<BodyProgress, Error> {
        match self.state {
            ResponseState::Body(ResponseBody::UntilClose) | ResponseState::Closed => {
                self.state = ResponseState::Closed;
                Ok(BodyProgress::Done)
            }
            ResponseState::Failed(e) => Err(e),
            ResponseState::Head(_) | ResponseState::Body(_) => {
                let e = Error::BadRequest("connection closed before the response was complete");
                self.fail(e);
                Err(e)
            }
        }
    }

    fn fail(&mut self, e: Error) {
        self.state = ResponseState::Failed(e);
        self.buf = Vec::new();
        self.start = 0;
    }

    fn read_head(&mut self) -> Result<Option<(Response, BodyKind)>, Error> {
        loop {
            let scan = match &mut self.state {
                ResponseState::Head(scan) => scan,
                ResponseState::Failed(e) => return Err(*e),
                ResponseState::Body(_) | ResponseState::Closed => return Ok(None),
            };
            if scan.first_lf.is_none() && skip_empty_lines(&self.buf, &mut self.start) {
                *scan = HeadScan::default();
            }
            let avail = &self.buf[self.start..];
            let Some(end) = scan.find_end(avail) else {
                if avail.len() > self.limits.max_header {
                    return Err(Error::HeaderTooLarge);
                }
                return Ok(None);
            };
            if end > self.limits.max_header {
                return Err(Error::HeaderTooLarge);
            }
            let resp = parse_response_head(&avail[..end])?;
            self.start += end;
            if (100..200).contains(&resp.status) {
                if resp.status == 101 {
                    return Err(Error::BadRequest("unexpected 101 Switching Protocols"));
                }
                self.state = ResponseState::Head(HeadScan::default());
                continue;
            }
            let kind = response_body_kind(&resp, mem::take(&mut self.no_body))?;
            self.state = match kind {
                BodyKind::None | BodyKind::Length(0) => ResponseState::Head(HeadScan::default()),
                BodyKind::Length(n) => ResponseState::Body(ResponseBody::Length(n)),
                BodyKind::Chunked => {
                    ResponseState::Body(ResponseBody::Chunked(ChunkDecoder::default()))
                }
                BodyKind::UntilClose => ResponseState::Body(ResponseBody::UntilClose),
            };
            return Ok(Some((resp, kind)));
        }
    }

    fn read_body(&mut self, out: &mut Vec<u8>) -> Result<BodyProgress, Error> {
        let avail = &self.buf[self.start..];
        let body = match &mut self.state {
            ResponseState::Body(body) => body,
            ResponseState::Failed(e) => return Err(*e),
            ResponseState::Head(_) | ResponseState::Closed => return Ok(BodyProgress::Done),
        };
        let done = match body {
            ResponseBody::Length(left) => {
                let take = (*left).min(avail.len() as u64) as usize;
                out.extend_from_slice(&avail[..take]);
                self.start += take;
                *left -= take as u64;
                *left == 0
            }
            ResponseBody::Chunked(dec) => {
                let (used, done) = dec.decode(avail, out, u64::MAX, self.limits.max_header)?;
                self.start += used;
                done
            }
            ResponseBody::UntilClose => {
                out.extend_from_slice(avail);
                self.start += avail.len();
                false
            }
        };
        if done {
            self.state = ResponseState::Head(HeadScan::default());
            Ok(BodyProgress::Done)
        } else {
            Ok(BodyProgress::Partial)
        }
    }
}

fn parse_response_head(head: &[u8]) -> Result<Response, Error> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut raw);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeaderTooLarge),
        Err(httparse::Error::Version) => return Err(Error::VersionNotSupported),
        _ => return Err(Error::BadRequest("malformed response head")),
    }
    let (Some(status), Some(minor_version)) = (parsed.code, parsed.version) else {
        return Err(Error::BadRequest("malformed status line"));
    };
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value);
            (h.name.to_ascii_lowercase(), ows(&value).to_owned())
        })
        .collect();
    let keep_alive = keep_alive(minor_version, &headers);
    Ok(Response {
        status,
        minor_version,
        headers,
        keep_alive,
    })
}

/// RFC 9112 §6.3, in its order. Both Transfer-Encoding and Content-Length is
/// refused rather than resolved in Transfer-Encoding's favour: on a reused
/// connection a wrong guess would misframe every later response.
fn response_body_kind(resp: &Response, no_body: bool) -> Result<BodyKind, Error> {
    if no_body || !status_has_body(resp.status) {
        return Ok(BodyKind::None);
    }
    let length = content_length(&resp.headers)?;
    if resp.header("transfer-encoding").is_some() {
        if length.is_some() {
            return Err(Error::BadRequest(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if resp.minor_version == 0 {
            return Err(Error::BadRequest(
                "Transfer-Encoding in an HTTP/1.0 response",
            ));
        }
        chunked_only(&resp.headers)?;
        return Ok(BodyKind::Chunked);
    }
    Ok(length.map_or(BodyKind::UntilClose, BodyKind::Length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> RequestParser {
        RequestParser::new(Limits::default())
    }

    fn small(max_header: usize, max_body: usize) -> RequestParser {
        RequestParser::new(Limits {
            max_header,
            max_body,
        })
    }

    /// Every event the buffered bytes give, stopping at "need more" or an error.
    fn drain(p: &mut RequestParser) -> Vec<Result<Event, Error>> {
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

    fn one_request(bytes: &[u8]) -> Request {
        let mut p = parser();
        p.feed(bytes);
        match drain(&mut p).as_slice() {
            [Ok(Event::Request(r))] => r.clone(),
            other => panic!("expected one request, got {other:?}"),
        }
    }

    fn error_of(bytes: &[u8]) -> Error {
        let mut p = parser();
        p.feed(bytes);
        match drain(&mut p).pop() {
            Some(Err(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn with_header(name: &str, value: &str) -> Request {
        one_request(format!("GET / HTTP/1.1\r\nHost: x\r\n{name}: {value}\r\n\r\n").as_bytes())
    }

    #[test]
    fn a_simple_request_parses_with_lowercased_names_and_trimmed_values() {
        let r = one_request(b"POST /mcp?x=1 HTTP/1.1\r\nHost: relay\r\nContent-Type:  application/json \r\nContent-Length: 2\r\n\r\n{}");
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/mcp?x=1");
        assert_eq!(r.minor_version, 1);
        assert_eq!(
            r.headers[1],
            ("content-type".to_owned(), "application/json".to_owned())
        );
        assert_eq!(r.header("CONTENT-TYPE"), Some("application/json"));
        assert_eq!(r.body, b"{}");
        assert!(r.keep_alive);
    }

    #[test]
    fn pipelined_requests_come_out_in_order_one_per_call() {
        let mut p = parser();
        p.feed(b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\n\r\nGET /d");
        let targets: Vec<String> = drain(&mut p)
            .into_iter()
            .map(|ev| match ev {
                Ok(Event::Request(r)) => {
                    format!("{} {}", r.target, String::from_utf8_lossy(&r.body))
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(targets, ["/a ", "/b abc", "/c "]);
        assert!(p.mid_request());
        assert_eq!(p.buffered(), 6);
        p.feed(b" HTTP/1.1\r\n\r\n");
        assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if r.target == "/d"));
        assert!(!p.mid_request());
    }

    #[test]
    fn a_head_split_at_every_byte_boundary_parses_the_same() {
        let raw = b"POST /mcp HTTP/1.1\r\nHost: h\r\nAccept: application/json\r\nContent-Length: 5\r\n\r\nhello";
        let whole = one_request(raw);
        for cut in 0..raw.len() {
            let mut p = parser();
            p.feed(&raw[..cut]);
            assert_eq!(p.next_event(), Ok(None), "cut at {cut}");
            p.feed(&raw[cut..]);
            assert_eq!(
                p.next_event(),
                Ok(Some(Event::Request(whole.clone()))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn empty_lines_before_the_request_line_are_skipped() {
        // RFC 9112 §2.2.
        let r = one_request(b"\r\n\n\r\nGET /x HTTP/1.1\r\n\r\n");
        assert_eq!(r.target, "/x");
        // Even when they trickle in, and a lone CR waits for its LF.
        let mut p = parser();
        for b in b"\r\n\r\nGET /y HTTP/1.1\r\n\r\n" {
            assert_eq!(p.next_event(), Ok(None));
            p.feed(&[*b]);
        }
        assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if r.target == "/y"));
    }

    #[test]
    fn an_oversized_head_is_431_before_its_blank_line_arrives() {
        let mut p = small(100, 1000);
        p.feed(b"GET / HTTP/1.1\r\n");
        p.feed(format!("X-Big: {}\r\n", "a".repeat(70)).as_bytes());
        assert_eq!(p.next_event(), Ok(None));
        p.feed(b"X-More: 1\r\n");
        assert_eq!(p.next_event(), Err(Error::HeaderTooLarge));
        assert_eq!(Error::HeaderTooLarge.status(), 431);
        // Poisoned: the same error again, and later bytes are dropped.
        p.feed(b"\r\n");
        assert_eq!(p.buffered(), 0);
        assert_eq!(p.next_event(), Err(Error::HeaderTooLarge));
    }

    #[test]
    fn a_complete_head_over_the_limit_is_431_too() {
        let mut p = small(30, 1000);
        p.feed(b"GET / HTTP/1.1\r\nX-A: 0123456789\r\n\r\n");
        assert_eq!(p.next_event(), Err(Error::HeaderTooLarge));
    }

    #[test]
    fn more_than_64_header_fields_is_431() {
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for i in 0..65 {
            raw.push_str(&format!("X-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(error_of(raw.as_bytes()), Error::HeaderTooLarge);
    }

    #[test]
    fn content_length_over_the_limit_is_413_without_waiting_for_the_body() {
        let mut p = small(1000, 10);
        p.feed(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n");
        assert_eq!(p.next_event(), Err(Error::BodyTooLarge));
        assert_eq!(Error::BodyTooLarge.status(), 413);
        // At the limit is fine.
        let mut p = small(1000, 10);
        p.feed(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789");
        assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if r.body == b"0123456789"));
        // A number too big for u64 is just too large.
        let e = error_of(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n");
        assert_eq!(e, Error::BodyTooLarge);
    }

    #[test]
    fn content_length_must_be_one_number() {
        // RFC 9110 §8.6: identical repeats are that value.
        let r =
            one_request(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc");
        assert_eq!(r.body, b"abc");
        for bad in [
            "3\r\nContent-Length: 4",
            "3, 4",
            "abc",
            "-1",
            "+3",
            "0x3",
            "",
            "3,",
        ] {
            let raw = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\nabc");
            assert!(
                matches!(error_of(raw.as_bytes()), Error::BadRequest(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_body_arrives_across_feeds_and_leaves_the_buffer_as_it_comes() {
        let mut p = parser();
        p.feed(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234");
        assert_eq!(p.next_event(), Ok(None));
        assert!(p.headers_done() && p.mid_request());
        assert_eq!(p.buffered(), 0);
        p.feed(b"56789");
        assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if r.body == b"0123456789"));
        assert!(!p.headers_done());
    }

    #[test]
    fn a_request_without_length_or_chunking_has_an_empty_body() {
        let mut p = parser();
        p.feed(b"POST / HTTP/1.1\r\n\r\nGET");
        assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if r.body.is_empty()));
        assert_eq!(p.buffered(), 3);
    }

    const CHUNKED: &[u8] = b"POST /mcp HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;name=value\r\nhello\r\n\
        1 ; quoted=\"x;y\"\r\n,\r\n\
        6\r\n world\r\n\
        0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n";

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers_ignored() {
        let mut p = parser();
        p.feed(CHUNKED);
        p.feed(b"GET /next HTTP/1.1\r\n\r\n");
        let events = drain(&mut p);
        assert!(matches!(&events[0], Ok(Event::Request(r)) if r.body == b"hello, world"));
        assert!(matches!(&events[1], Ok(Event::Request(r)) if r.target == "/next"));
    }

    #[test]
    fn chunked_bodies_split_at_every_byte_boundary_decode_the_same() {
        for cut in 0..CHUNKED.len() {
            let mut p = parser();
            p.feed(&CHUNKED[..cut]);
            assert_eq!(p.next_event(), Ok(None), "cut at {cut}");
            p.feed(&CHUNKED[cut..]);
            assert!(
                matches!(p.next_event(), Ok(Some(Event::Request(r))) if r.body == b"hello, world"),
                "cut at {cut}"
            );
            assert_eq!(p.buffered(), 0);
        }
    }

    #[test]
    fn a_chunked_body_over_the_limit_is_413_as_soon_as_a_size_says_so() {
        let mut p = small(1000, 8);
        p.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n4\r\n");
        assert_eq!(p.next_event(), Err(Error::BodyTooLarge));
        // Enormous sizes do not overflow anything.
        let e =
            error_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n");
        assert_eq!(e, Error::BodyTooLarge);
    }

    #[test]
    fn malformed_chunks_are_400() {
        for body in [
            "zz\r\n",
            "5\r\nhelloX\r\n",
            "5\r\nhello\n0\r\n",
            "\r\n",
            "5\nhello\r\n0\r\n\r\n",
        ] {
            let raw = format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
            assert!(
                matches!(error_of(raw.as_bytes()), Error::BadRequest(_)),
                "{body:?}"
            );
        }
        let long_ext = format!("1;{}", "e".repeat(MAX_CHUNK_LINE));
        let raw = format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{long_ext}");
        assert!(matches!(error_of(raw.as_bytes()), Error::BadRequest(_)));
    }

    #[test]
    fn transfer_encoding_rules() {
        let te = |v: &str, extra: &str| {
            error_of(format!("POST / HTTP/1.1\r\nTransfer-Encoding: {v}\r\n{extra}\r\n").as_bytes())
        };
        // RFC 9112 §6.1: both framings at once is how requests are smuggled.
        assert!(matches!(
            te("chunked", "Content-Length: 5\r\n"),
            Error::BadRequest(_)
        ));
        assert_eq!(te("gzip", "").status(), 501);
        assert_eq!(te("gzip, chunked", "").status(), 501);
        assert_eq!(te("chunked, chunked", "").status(), 400);
        assert_eq!(te("", "").status(), 400);
        let e = error_of(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert_eq!(e.status(), 400);
        // Case and a list split over field lines are fine.
        let r = one_request(b"POST / HTTP/1.1\r\nTransfer-Encoding: \r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n");
        assert!(r.body.is_empty());
    }

    #[test]
    fn expect_100_continue_is_announced_before_the_body_is_read() {
        let mut p = parser();
        p.feed(b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(p.next_event(), Ok(Some(Event::ContinueExpected)));
        assert_eq!(p.next_event(), Ok(None));
        p.feed(b"ab");
        assert_eq!(p.next_event(), Ok(None));
        p.feed(b"cd");
        assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if r.body == b"abcd"));

        let mut out = Vec::new();
        write_continue(&mut out);
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn expect_100_continue_is_not_announced_when_there_is_nothing_to_wait_for() {
        let events = |raw: &[u8]| {
            let mut p = parser();
            p.feed(raw);
            drain(&mut p)
                .into_iter()
                .map(|e| matches!(e, Ok(Event::ContinueExpected)))
                .collect::<Vec<_>>()
        };
        // Body already here.
        assert_eq!(
            events(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"),
            [false]
        );
        // No body.
        assert_eq!(
            events(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n"),
            [false]
        );
        assert_eq!(
            events(b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"),
            [false]
        );
        // RFC 9110 §10.1.1: an HTTP/1.0 client's expectation is ignored.
        assert_eq!(
            events(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"),
            Vec::<bool>::new()
        );
        // Chunked, not yet complete: announced.
        assert_eq!(
            events(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi"),
            [true]
        );
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_options() {
        let ka = |version: &str, conn: Option<&str>| {
            let conn = conn
                .map(|c| format!("Connection: {c}\r\n"))
                .unwrap_or_default();
            one_request(format!("GET / HTTP/1.{version}\r\n{conn}\r\n").as_bytes()).keep_alive
        };
        assert!(ka("1", None));
        assert!(!ka("1", Some("close")));
        assert!(!ka("1", Some("Upgrade, Close")));
        assert!(!ka("0", None));
        assert!(ka("0", Some("Keep-Alive")));
        assert!(!ka("0", Some("keep-alive, close")));
    }

    #[test]
    fn after_a_closing_request_later_bytes_are_ignored() {
        // RFC 9112 §9.6: no further requests after `close`.
        let mut p = parser();
        p.feed(b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
        assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if !r.keep_alive));
        assert_eq!(p.next_event(), Ok(None));
        p.feed(b"GET /c HTTP/1.1\r\n\r\n");
        assert_eq!(p.next_event(), Ok(None));
        assert_eq!(p.buffered(), 0);
        assert!(!p.mid_request());
    }

    #[test]
    fn a_malformed_request_line_is_400_as_soon_as_it_ends() {
        for line in [
            "GET /\r\n",
            "GET  / HTTP/1.1\r\n",
            "GET / HTTP/1.1 x\r\n",
            "\x16\x03\x01 TLS\r\n",
            "GET / FTP/1.0\r\n",
        ] {
            let mut p = parser();
            p.feed(line.as_bytes());
            assert!(
                matches!(p.next_event(), Err(Error::BadRequest(_))),
                "{line:?}"
            );
        }
        assert!(matches!(
            error_of(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"),
            Error::BadRequest(_)
        ));
        assert!(matches!(
            error_of(b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n"),
            Error::BadRequest(_)
        ));
    }

    #[test]
    fn other_http_versions_and_the_http2_preface_are_505() {
        for line in [
            "GET / HTTP/1.2\r\n",
            "GET / HTTP/2\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/0.9\r\n",
        ] {
            let mut p = parser();
            p.feed(line.as_bytes());
            assert_eq!(p.next_event(), Err(Error::VersionNotSupported), "{line:?}");
        }
        assert_eq!(Error::VersionNotSupported.status(), 505);
    }

    #[test]
    fn a_non_utf8_header_value_is_400() {
        let e = error_of(b"GET / HTTP/1.1\r\nX-Name: caf\xe9\r\n\r\n");
        assert_eq!(e, Error::BadRequest("header value is not UTF-8"));
    }

    #[test]
    fn two_host_headers_are_400() {
        assert_eq!(
            error_of(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").status(),
            400
        );
    }

    #[test]
    fn headers_are_found_case_insensitively_first_or_all() {
        let r = one_request(b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nX-B: 3\r\n\r\n");
        assert_eq!(r.header("x-A"), Some("1"));
        assert_eq!(r.header_all("X-A").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(r.header("x-c"), None);
    }

    #[test]
    fn accept_lists_are_matched_by_media_range() {
        let both = with_header("Accept", "application/json, text/event-stream");
        assert!(both.accepts("application/json"));
        assert!(both.accepts("text/event-stream"));
        assert!(!both.accepts("text/html"));

        let any = with_header("Accept", "*/*");
        assert!(any.accepts("text/event-stream"));

        let text = with_header("Accept", "TEXT/*;q=0.5 , Application/JSON;charset=utf-8");
        assert!(text.accepts("text/event-stream"));
        assert!(text.accepts("application/json"));
        assert!(!text.accepts("image/png"));

        // The most specific range decides, and q=0 refuses.
        let refuse = with_header("Accept", "*/*, text/event-stream; q=0.000");
        assert!(!refuse.accepts("text/event-stream"));
        assert!(refuse.accepts("application/json"));

        // Several Accept lines form one list; no Accept lists nothing.
        let split = one_request(
            b"GET / HTTP/1.1\r\nAccept: application/json\r\nAccept: text/event-stream\r\n\r\n",
        );
        assert!(split.accepts("text/event-stream"));
        assert!(!one_request(b"GET / HTTP/1.1\r\n\r\n").accepts("application/json"));
    }

    #[test]
    fn query_parameters_are_percent_decoded() {
        let r = one_request(
            b"GET /messages?x=1&session_id=abc%20d&plus=a+b&bad=%zz&flag HTTP/1.1\r\n\r\n",
        );
        assert_eq!(r.path(), "/messages");
        assert_eq!(r.query_param("session_id").as_deref(), Some("abc d"));
        assert_eq!(r.query_param("plus").as_deref(), Some("a b"));
        assert_eq!(r.query_param("bad").as_deref(), Some("%zz"));
        assert_eq!(r.query_param("flag").as_deref(), Some(""));
        assert_eq!(r.query_param("missing"), None);
        let enc = one_request(b"GET /?session%5Fid=%E2%9C%93 HTTP/1.1\r\n\r\n");
        assert_eq!(enc.query_param("session_id").as_deref(), Some("\u{2713}"));
    }

    #[test]
    fn path_strips_the_query_and_an_absolute_form_authority() {
        assert_eq!(one_request(b"GET /mcp HTTP/1.1\r\n\r\n").path(), "/mcp");
        assert_eq!(
            one_request(b"GET http://relay:8080/mcp?a=b HTTP/1.1\r\n\r\n").path(),
            "/mcp"
        );
        assert_eq!(
            one_request(b"GET HTTP://relay HTTP/1.1\r\n\r\n").path(),
            "/"
        );
        assert_eq!(one_request(b"OPTIONS * HTTP/1.1\r\n\r\n").path(), "*");
    }

    #[test]
    fn a_slowloris_that_never_ends_its_head_costs_linear_work() {
        let mut p = parser();
        let mut fed = 0;
        p.feed(b"GET / HTTP/1.1\r\n");
        let verdict = loop {
            // Short lines, so line feeds keep the scanner busy.
            let b = if fed % 20 == 19 { b'\n' } else { b'a' };
            p.feed(&[b]);
            fed += 1;
            match p.next_event() {
                Ok(None) => continue,
                other => break other,
            }
        };
        assert_eq!(verdict, Err(Error::HeaderTooLarge));
        assert_eq!(fed, 16 * 1024 - 16 + 1);
        // Each byte scanned about once, plus httparse over the request line.
        assert!(p.work <= 2 * 16 * 1024, "work {}", p.work);
    }

    #[test]
    fn a_slowloris_request_under_the_limits_parses_with_linear_work() {
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for i in 0..60 {
            raw.push_str(&format!("X-Pad-{i}: {}\r\n", "a".repeat(200)));
        }
        raw.push_str("\r\n");
        assert!(raw.len() < 16 * 1024);
        let mut p = parser();
        for b in raw.as_bytes() {
            assert_eq!(p.next_event(), Ok(None));
            p.feed(&[*b]);
        }
        assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if r.headers.len() == 60));
        assert!(
            p.work <= 4 * raw.len(),
            "work {} for {} bytes",
            p.work,
            raw.len()
        );
    }

    #[test]
    fn the_buffer_stays_within_head_limit_plus_one_read() {
        let mut p = small(1024, 4096);
        let read = [b'a'; 700];
        p.feed(b"GET / HTTP/1.1\r\nX: ");
        for _ in 0..10 {
            p.feed(&read);
            assert!(p.buffered() <= 1024 + read.len());
            if p.next_event().is_err() {
                break;
            }
        }
        assert_eq!(p.next_event(), Err(Error::HeaderTooLarge));
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn response_writers_produce_exact_bytes() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            200,
            &[("Content-Type", "application/json")],
            b"{}",
            true,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );

        out.clear();
        write_response(&mut out, 404, &[], b"", false);
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );

        out.clear();
        write_response(
            &mut out,
            202,
            &[("Content-Length", "99"), ("Connection", "x")],
            b"",
            true,
        );
        assert_eq!(out, b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");

        // RFC 9110 §8.6: no Content-Length (and no body) on a 204.
        out.clear();
        write_response(&mut out, 204, &[], b"ignored", true);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");

        out.clear();
        write_chunked_head(
            &mut out,
            200,
            &[("Content-Type", "text/event-stream")],
            true,
        );
        write_chunk(&mut out, b"");
        write_chunk(&mut out, b"data: x\n\n01234567");
        write_last_chunk(&mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
              11\r\ndata: x\n\n01234567\r\n0\r\n\r\n"
        );

        out.clear();
        write_chunked_head(&mut out, 200, &[], false);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn header_values_cannot_inject_lines() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            200,
            &[("Mcp-Session-Id", "a\r\nSet-Cookie: x")],
            b"",
            true,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nMcp-Session-Id: a  Set-Cookie: x\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn reason_phrases_cover_the_statuses_the_relay_uses() {
        for status in [
            200, 202, 204, 400, 401, 403, 404, 405, 406, 408, 411, 413, 415, 421, 429, 431, 500,
            501, 502, 503, 504, 505,
        ] {
            assert!(!reason_phrase(status).is_empty(), "{status}");
        }
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(299), "");
        assert_eq!(Error::BadRequest("why").to_string(), "400 Bad Request: why");
    }

    // -- ResponseParser --

    fn responses() -> ResponseParser {
        ResponseParser::new(Limits::default())
    }

    #[test]
    fn a_content_length_response_reads_its_body() {
        let mut p = responses();
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":");
        let (resp, kind) = p.next_head().unwrap().unwrap();
        assert_eq!((resp.status, kind), (200, BodyKind::Length(7)));
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert!(resp.keep_alive);
        let mut body = Vec::new();
        assert_eq!(p.next_body(&mut body), Ok(BodyProgress::Partial));
        p.feed(b"1}");
        assert_eq!(p.next_body(&mut body), Ok(BodyProgress::Done));
        assert_eq!(body, b"{\"a\":1}");
    }

    #[test]
    fn a_chunked_response_streams_out_as_chunks_arrive() {
        let mut p = responses();
        p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(p.next_head().unwrap().unwrap().1, BodyKind::Chunked);
        let mut body = Vec::new();
        let mut seen = Vec::new();
        for piece in [
            &b"9\r\ndata: a\n"[..],
            b"\n\r\n9\r\nda",
            b"ta: b\n\n\r",
            b"\n0\r\n",
            b"\r\n",
        ] {
            p.feed(piece);
            let progress = p.next_body(&mut body).unwrap();
            seen.push((String::from_utf8_lossy(&body).into_owned(), progress));
        }
        assert_eq!(
            seen,
            [
                ("data: a\n".to_owned(), BodyProgress::Partial),
                ("data: a\n\nda".to_owned(), BodyProgress::Partial),
                ("data: a\n\ndata: b\n\n".to_owned(), BodyProgress::Partial),
                ("data: a\n\ndata: b\n\n".to_owned(), BodyProgress::Partial),
                ("data: a\n\ndata: b\n\n".to_owned(), BodyProgress::Done),
            ]
        );
    }

    #[test]
    fn a_response_without_framing_runs_until_close() {
        let mut p = responses();
        p.feed(b"HTTP/1.0 200 OK\r\n\r\nabc");
        let (resp, kind) = p.next_head().unwrap().unwrap();
        assert_eq!(kind, BodyKind::UntilClose);
        assert!(!resp.keep_alive);
        let mut body = Vec::new();
        assert_eq!(p.next_body(&mut body), Ok(BodyProgress::Partial));
        p.feed(b"def");
        assert_eq!(p.next_body(&mut body), Ok(BodyProgress::Partial));
        assert_eq!(p.on_eof(), Ok(BodyProgress::Done));
        assert_eq!(body, b"abcdef");
    }

    #[test]
    fn interim_responses_are_skipped() {
        let mut p = responses();
        p.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
        let (resp, kind) = p.next_head().unwrap().unwrap();
        assert_eq!((resp.status, kind), (202, BodyKind::Length(0)));
        assert_eq!(p.next_body(&mut Vec::new()), Ok(BodyProgress::Done));

        let mut p = responses();
        p.feed(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        assert!(p.next_head().is_err());
    }

    #[test]
    fn no_body_responses_end_at_their_head() {
        let mut p = responses();
        p.feed(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(p.next_head().unwrap().unwrap().1, BodyKind::None);
        assert_eq!(p.next_body(&mut Vec::new()), Ok(BodyProgress::Done));
        assert_eq!(p.next_head().unwrap().unwrap().1, BodyKind::None);
        // A HEAD response advertises a length it does not send.
        p.begin_response(true);
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(p.next_head().unwrap().unwrap().1, BodyKind::None);
        // The hint applied to that response only.
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!(p.next_head().unwrap().unwrap().1, BodyKind::Length(1));
    }

    #[test]
    fn one_parser_reads_responses_back_to_back_on_a_kept_alive_connection() {
        let mut p = responses();
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\nHTTP/1.1 500 Internal Server Error\r\nContent-Length: 1\r\n\r\nc");
        let mut bodies = Vec::new();
        while let Some((resp, _)) = p.next_head().unwrap() {
            // The head is not ready while a body is unfinished.
            let mut body = Vec::new();
            assert_eq!(p.next_body(&mut body), Ok(BodyProgress::Done));
            bodies.push((resp.status, body));
        }
        assert_eq!(
            bodies,
            [
                (200, b"a".to_vec()),
                (200, b"b".to_vec()),
                (500, b"c".to_vec())
            ]
        );
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn a_head_is_not_read_before_the_previous_body_ends() {
        let mut p = responses();
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\na");
        assert!(p.next_head().unwrap().is_some());
        assert_eq!(p.next_head(), Ok(None));
    }

    #[test]
    fn a_response_cut_short_is_an_error() {
        let mut p = responses();
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\na");
        p.next_head().unwrap();
        assert!(p.on_eof().is_err());
        assert!(p.next_body(&mut Vec::new()).is_err());
    }

    #[test]
    fn ambiguous_or_bad_response_framing_is_an_error() {
        for head in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/2 200\r\n\r\n",
        ] {
            let mut p = responses();
            p.feed(head.as_bytes());
            assert!(p.next_head().is_err(), "{head:?}");
        }
    }

    #[test]
    fn an_oversized_response_head_is_refused_before_it_ends() {
        let mut p = ResponseParser::new(Limits {
            max_header: 64,
            max_body: 0,
        });
        p.feed(b"HTTP/1.1 200 OK\r\nX-Big: ");
        p.feed(&[b'a'; 64]);
        assert_eq!(p.next_head(), Err(Error::HeaderTooLarge));
    }
}
