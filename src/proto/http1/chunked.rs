//! The chunked transfer coding (RFC 9112 §7.1), decoded as bytes arrive.
//! Both parsers read chunked bodies with [`ChunkDecoder`]; writing chunks is
//! in `write`.

use super::Error;

/// A chunk-size line (with its extensions) longer than this is 400.
const MAX_CHUNK_LINE: usize = 4096;

/// Decodes the chunked transfer coding (RFC 9112 §7.1) as bytes arrive.
#[derive(Default)]
pub(super) struct ChunkDecoder {
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
    pub(super) fn decode(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http1::Event;
    use crate::proto::http1::testing::{drain, error_of, parser, small};

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
}
