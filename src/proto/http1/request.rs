//! The server side's reader: [`RequestParser`] turns the bytes of one client
//! connection into [`Event`]s, each [`Request`] complete with its body, and
//! [`Request`] answers what the relay asks of one (a header, the path, a
//! query parameter, whether Accept lists a media type).

use std::mem;

use super::chunked::ChunkDecoder;
use super::fields::Fields;
use super::index::{HeaderIndex, Known, Lookup};
use super::{
    Error, HeadScan, Limits, MAX_HEADERS, chunked_only, compact, content_length, header_all,
    keep_alive, ows, ows_bytes, skip_empty_lines,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request-target as sent, e.g. `/mcp?x=1`.
    pub target: String,
    /// 0 or 1.
    pub minor_version: u8,
    /// Names lower-cased, values trimmed of surrounding whitespace; read
    /// through [`Request::headers`] (it is indexed, so it does not change).
    headers: Fields,
    /// Where the names the relay asks for are in `headers`.
    index: HeaderIndex,
    pub body: Vec<u8>,
    /// Whether the connection may carry another request (RFC 9112 §9.3).
    pub keep_alive: bool,
}

impl Request {
    /// A request with these header fields (values trimmed), indexed for
    /// lookups; names are lower-cased here.
    pub fn new(
        method: String,
        target: String,
        minor_version: u8,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        keep_alive: bool,
    ) -> Request {
        let bytes = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        let mut fields = Fields::with_capacity(headers.len(), bytes);
        for (name, value) in &headers {
            fields.push(name, value);
        }
        Request::with_fields(method, target, minor_version, fields, body, keep_alive)
    }

    /// [`Request::new`] with the fields gathered already.
    fn with_fields(
        method: String,
        target: String,
        minor_version: u8,
        headers: Fields,
        body: Vec<u8>,
        keep_alive: bool,
    ) -> Request {
        let index = HeaderIndex::new(headers.iter().map(|(name, _)| name));
        Request {
            method,
            target,
            minor_version,
            headers,
            index,
            body,
            keep_alive,
        }
    }

    /// Every header field, in order: names lower-cased, values trimmed.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone {
        self.headers.iter()
    }

    /// The part of the header list that holds every field line named `k`:
    /// the lines from its first to its last occurrence, none when absent.
    fn lines(&self, k: Known) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.headers.range(self.range_of(Some(k)))
    }

    /// Where in the header list the lines named `k` are (all of it for a
    /// name the index does not know, `None`).
    fn range_of(&self, k: Option<Known>) -> std::ops::Range<usize> {
        match k.map(|k| self.index.lookup(k)) {
            Some(Lookup::Within(range)) => range,
            Some(Lookup::Unindexed) | None => 0..self.headers.len(),
        }
    }

    /// The first value of a header the relay asks for: no other name is
    /// compared.
    pub fn known(&self, k: Known) -> Option<&str> {
        self.known_all(k).next()
    }

    /// Every value of a header the relay asks for, in order.
    pub fn known_all(&self, k: Known) -> impl Iterator<Item = &str> {
        let name = k.name();
        self.lines(k)
            .filter(move |(n, _)| {
                #[cfg(test)]
                super::testing::COMPARED.with(|c| c.set(c.get() + 1));
                *n == name
            })
            .map(|(_, v)| v)
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        match Known::of(name) {
            Some(k) => self.known(k),
            None => header_all(self.headers.iter(), name).next(),
        }
    }

    /// Every value of a header, in order, one per field line.
    pub fn header_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        header_all(self.headers.range(self.range_of(Known::of(name))), name)
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
        self.accepts_all([media])
    }

    /// [`accepts`](Self::accepts) for every one of `media`, the header read
    /// once (a Streamable HTTP POST asks for two types).
    pub fn accepts_all<const N: usize>(&self, media: [&str; N]) -> bool {
        self.accepts_plain(&media).unwrap_or_else(|| {
            let wants = media.map(|m| m.split_once('/').map(|(t, s)| (ows(t), ows(s))));
            self.accepts_ranges(&wants)
        })
    }

    /// [`accepts_all`](Self::accepts_all)'s common case, read bytewise:
    /// the Accept lines hold no parameter and no wildcard, and each of
    /// `media` (a `type/subtype`) is one of their ranges exactly, as a
    /// client's `application/json, text/event-stream` is. Every range that
    /// matches is then exact and acceptable: true. `None` otherwise, and
    /// [`accepts_ranges`](Self::accepts_ranges) decides (this is a few
    /// times cheaper on the usual header).
    fn accepts_plain<const N: usize>(&self, media: &[&str; N]) -> Option<bool> {
        let mut found = [false; N];
        for value in self.known_all(Known::Accept) {
            let value = value.as_bytes();
            if value.iter().any(|&c| c == b';' || c == b'*') {
                return None;
            }
            for range in value.split(|&c| c == b',') {
                let range = ows_bytes(range);
                for (m, found) in media.iter().zip(found.iter_mut()) {
                    *found |= range == m.as_bytes();
                }
            }
        }
        // A slash in each type (a bytewise look: `contains` calls out to memchr).
        let typed = |m: &&str| m.bytes().any(|b| b == b'/');
        (found.iter().all(|&f| f) && media.iter().all(typed)).then_some(true)
    }

    /// [`accepts_all`](Self::accepts_all) in full (RFC 9110 §12.5.1: the
    /// most specific matching range decides, `q=0` refuses). Public for the
    /// fuzz target that holds the common case to it.
    #[doc(hidden)]
    pub fn accepts_ranges<const N: usize>(&self, wants: &[Option<(&str, &str)>; N]) -> bool {
        // Per wanted type: (specificity, acceptable) of the best range so far.
        let mut best: [Option<(u8, bool)>; N] = [None; N];
        let ranges = self
            .known_all(Known::Accept)
            .flat_map(|v| v.split(','))
            .map(ows)
            .filter(|s| !s.is_empty());
        for range in ranges {
            let mut parts = range.split(';');
            let Some((ty, sub)) = parts.next().and_then(|r| r.split_once('/')) else {
                continue;
            };
            let (ty, sub) = (ows(ty), ows(sub));
            // Read when a wanted type matches this range, once.
            let mut refused = None;
            for (want, best) in wants.iter().zip(best.iter_mut()) {
                let Some((want_type, want_sub)) = *want else {
                    continue;
                };
                let specificity = if ty == "*" && sub == "*" {
                    0
                } else if ty.eq_ignore_ascii_case(want_type) && sub == "*" {
                    1
                } else if ty.eq_ignore_ascii_case(want_type) && sub.eq_ignore_ascii_case(want_sub) {
                    2
                } else {
                    continue;
                };
                let refused = *refused.get_or_insert_with(|| {
                    parts.by_ref().any(|p| {
                        p.split_once('=').is_some_and(|(k, v)| {
                            ows(k).eq_ignore_ascii_case("q") && q_is_zero(ows(v))
                        })
                    })
                });
                if best.is_none_or(|(s, _)| specificity > s) {
                    *best = Some((specificity, !refused));
                }
            }
        }
        best.iter().all(|b| b.is_some_and(|(_, ok)| ok))
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
                .known(Known::Expect)
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
    let bytes = parsed
        .headers
        .iter()
        .map(|h| h.name.len() + h.value.len())
        .sum();
    let mut headers = Fields::with_capacity(parsed.headers.len(), bytes);
    for h in parsed.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            return Err(Error::BadRequest("header value is not UTF-8"));
        };
        headers.push(h.name, ows(value));
    }
    let mut req = Request::with_fields(
        method.to_owned(),
        target.to_owned(),
        minor_version,
        headers,
        Vec::new(),
        false,
    );
    if req.known_all(Known::Host).nth(1).is_some() {
        return Err(Error::BadRequest("more than one Host header"));
    }
    req.keep_alive = keep_alive(minor_version, req.lines(Known::Connection));
    Ok(req)
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
    let length = content_length(req.lines(Known::ContentLength))?;
    if req.known(Known::TransferEncoding).is_some() {
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
        chunked_only(req.lines(Known::TransferEncoding))?;
        return Ok(Framing::Chunked(ChunkDecoder::default()));
    }
    match length {
        Some(n) if n > limits.max_body as u64 => Err(Error::BodyTooLarge),
        // Not above max_body, so it fits.
        Some(n) => Ok(Framing::Length(n as usize)),
        None => Ok(Framing::Length(0)),
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
