//! Responses we read from an upstream HTTP server: [`ResponseParser`] turns
//! the bytes of one upstream connection into response heads and streams
//! their bodies out as they arrive.

use std::mem;

use super::chunked::ChunkDecoder;
use super::write::status_has_body;
use super::{
    Error, HeadScan, Limits, MAX_HEADERS, chunked_only, compact, content_length, header_all,
    keep_alive, ows, pairs, skip_empty_lines,
};

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
        header_all(pairs(&self.headers), name).next()
    }

    pub fn header_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        header_all(pairs(&self.headers), name)
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
    let keep_alive = keep_alive(minor_version, pairs(&headers));
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
    let length = content_length(pairs(&resp.headers))?;
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
        chunked_only(pairs(&resp.headers))?;
        return Ok(BodyKind::Chunked);
    }
    Ok(length.map_or(BodyKind::UntilClose, BodyKind::Length))
}

#[cfg(test)]
mod tests {
    use super::*;

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
