//! Responses we write: the status line, the header fields and the body's
//! framing (Content-Length, or chunks for a stream such as SSE), appended to
//! the caller's buffer.

use std::io::Write;

use crate::proto::decimal::Decimal;

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
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(Decimal::new(body.len() as u64).as_bytes());
        out.extend_from_slice(b"\r\n");
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

pub(super) fn status_has_body(status: u16) -> bool {
    !(100..200).contains(&status) && status != 204 && status != 304
}

fn write_head_start(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)]) {
    // Written bytewise: the formatting machinery cost ~550 instructions a
    // response here (issue 13's profiles).
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(Decimal::new(u64::from(status)).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http1::Error;

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
}
