//! Server-Sent Events (WHATWG HTML §9.2): the writer for the streams the
//! relay sends and an incremental decoder for the streams it reads from an
//! HTTP upstream. Bytes in, bytes or events out; the caller does the I/O and
//! the HTTP framing (chunks) around them.
//!
//! The decoder hands an event's data over as the bytes that were sent: it
//! never replaces bytes that are not UTF-8 (as a browser would), so that a
//! message that is not UTF-8 reaches the relay's check (`jsonrpc::peek`)
//! and becomes an error there instead of a different, valid message.
//!
//! One deviation from the spec's dispatch rule: a block with an `id` field
//! but no `data` field is reported, with empty data, instead of being
//! dropped. MCP servers may prime a stream with such an event to hand the
//! client a resumption point before any message (MCP 2025-11-25, Streamable
//! HTTP), and a relay that forwards events must see it.

use std::fmt;
use std::mem;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Appends one event. Multi-line data becomes one `data:` line per line
/// (split on CRLF, LF or CR), so the receiver joins them back with LF. Line
/// breaks in `id` and `event` would end the field early, so they are
/// dropped, and so is NUL in `id` (a receiver ignores an id containing it).
pub fn write_event(out: &mut Vec<u8>, id: Option<&str>, event: Option<&str>, data: &[u8]) {
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend(id.bytes().filter(|b| !matches!(b, b'\r' | b'\n' | 0)));
        out.push(b'\n');
    }
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend(event.bytes().filter(|b| !matches!(b, b'\r' | b'\n')));
        out.push(b'\n');
    }
    for line in lines(data) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Tells the client how long to wait before reconnecting.
pub fn write_retry(out: &mut Vec<u8>, ms: u64) {
    out.extend_from_slice(format!("retry: {ms}\n\n").as_bytes());
}

/// A comment, which clients ignore: a keep-alive that stops idle timeouts
/// in proxies between us and the client from closing the stream.
pub fn write_comment(out: &mut Vec<u8>, text: &str) {
    for line in lines(text.as_bytes()) {
        out.extend_from_slice(b": ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// The lines of `text`, split on CRLF, LF or CR; always at least one.
fn lines(mut text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let Some(i) = memchr::memchr2(b'\r', b'\n', text) else {
            done = true;
            return Some(text);
        };
        let line = &text[..i];
        let skip = if text[i..].starts_with(b"\r\n") { 2 } else { 1 };
        text = &text[i + skip..];
        Some(line)
    })
}

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id` field of this event's block, if it had one (`Some("")`
    /// resets the last event ID). Unlike a browser's `lastEventId`, it does
    /// not carry over from earlier events, so a relay can forward each event
    /// as it came; [`SseDecoder::last_event_id`] has the carried-over value.
    pub id: Option<String>,
    /// The `event` field; "message" when absent or empty.
    pub event: String,
    /// The `data` lines joined with LF, byte for byte as sent (not checked
    /// as UTF-8). Empty for an id-only block.
    pub data: Vec<u8>,
    /// The `retry` field of this block, if valid.
    pub retry: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseError {
    /// An event (or a single line) passed the decoder's limit. The decoder
    /// cannot resynchronise reliably, so it stays failed.
    EventTooLarge { max: usize },
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::EventTooLarge { max } => write!(f, "SSE event larger than {max} bytes"),
        }
    }
}

impl std::error::Error for SseError {}

/// Incremental decoder for one event stream (WHATWG HTML §9.2.6).
pub struct SseDecoder {
    max_event: usize,
    /// The line being received, without its terminator.
    line: Vec<u8>,
    /// Nothing decoded yet: a BOM may still be arriving (its bytes wait in
    /// `line`).
    at_start: bool,
    /// The last feed ended in CR; an LF opening the next one belongs to it.
    after_cr: bool,
    /// Spec's data buffer: each `data` field's value plus LF.
    data: Vec<u8>,
    event_type: String,
    block_id: Option<String>,
    block_retry: Option<u64>,
    /// Spec's "last event ID buffer": set by `id` fields, kept across events.
    id_buffer: String,
    /// Spec's "last event ID string": the buffer as of the last dispatch,
    /// what a reconnect sends as `Last-Event-ID`.
    last_id: String,
    retry: Option<u64>,
    failed: bool,
}

impl SseDecoder {
    /// `max_event` bounds the bytes of one event's data plus the line being
    /// read, so memory stays bounded whatever the upstream sends.
    pub fn new(max_event: usize) -> Self {
        SseDecoder {
            max_event,
            line: Vec::new(),
            at_start: true,
            after_cr: false,
            data: Vec::new(),
            event_type: String::new(),
            block_id: None,
            block_retry: None,
            id_buffer: String::new(),
            last_id: String::new(),
            retry: None,
            failed: false,
        }
    }

    /// Decodes `bytes`, appending each event completed by them to `out`.
    /// Events are complete at their blank line; a stream that ends before
    /// one drops the partial event, as the spec says.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.failed {
            return Err(self.too_large());
        }
        if self.at_start {
            bytes = self.strip_bom(bytes);
            if self.at_start {
                return Ok(());
            }
        }
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if let [b'\n', rest @ ..] = bytes {
                bytes = rest;
            }
        }
        while let Some(i) = memchr::memchr2(b'\r', b'\n', bytes) {
            self.extend_line(&bytes[..i])?;
            let mut next = i + 1;
            if bytes[i] == b'\r' {
                match bytes.get(next) {
                    Some(b'\n') => next += 1,
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            let line = mem::take(&mut self.line);
            let result = self.process_line(&line, out);
            self.line = line;
            self.line.clear();
            result?;
            bytes = &bytes[next..];
        }
        self.extend_line(bytes)
    }

    /// The ID a reconnect should send as `Last-Event-ID`: the last `id`
    /// seen (it persists across events; one containing NUL is ignored), as
    /// of the last dispatched block. None when empty.
    pub fn last_event_id(&self) -> Option<&str> {
        Some(self.last_id.as_str()).filter(|id| !id.is_empty())
    }

    /// The last valid `retry` the server sent, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Collects BOM bytes at the very start of the stream and drops them once
    /// whole. Bytes that turn out not to be a BOM stay in `line` as content.
    fn strip_bom<'a>(&mut self, mut bytes: &'a [u8]) -> &'a [u8] {
        while let [b, rest @ ..] = bytes {
            if BOM.get(self.line.len()) != Some(b) {
                self.at_start = false;
                break;
            }
            self.line.push(*b);
            bytes = rest;
            if self.line.len() == BOM.len() {
                self.line.clear();
                self.at_start = false;
                break;
            }
        }
        bytes
    }

    fn extend_line(&mut self, part: &[u8]) -> Result<(), SseError> {
        if self.line.len() + part.len() + self.data.len() > self.max_event {
            return Err(self.fail());
        }
        self.line.extend_from_slice(part);
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let (name, value) = match line {
            [] => {
                self.dispatch(out);
                return Ok(());
            }
            [b':', ..] => return Ok(()),
            _ => match memchr::memchr(b':', line) {
                Some(i) => match &line[i + 1..] {
                    [b' ', value @ ..] | value => (&line[..i], value),
                },
                None => (line, &[][..]),
            },
        };
        if name == b"data" {
            // As sent: a message that is not UTF-8 must fail the relay's
            // check, not turn into another one with U+FFFD in it.
            if self.data.len() + value.len() + 1 > self.max_event {
                return Err(self.fail());
            }
            self.data.extend_from_slice(value);
            self.data.push(b'\n');
            return Ok(());
        }
        // The other fields are the relay's own business (event type, resume
        // point): decoded as the spec says, invalid bytes replaced.
        let value = String::from_utf8_lossy(value);
        match name {
            b"event" => self.event_type = value.into_owned(),
            b"id" if !value.contains('\0') => {
                self.id_buffer = value.into_owned();
                self.block_id = Some(self.id_buffer.clone());
            }
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // Digits only, so failing means overflow: ignore it.
                if let Ok(ms) = value.parse() {
                    self.retry = Some(ms);
                    self.block_retry = Some(ms);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The blank line: hand over the event and reset the block's buffers.
    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        self.last_id.clone_from(&self.id_buffer);
        let id = self.block_id.take();
        let retry = self.block_retry.take();
        let event = mem::take(&mut self.event_type);
        let mut data = mem::take(&mut self.data);
        // Spec: no data, no event. Ours: unless it carries an id (priming).
        if data.is_empty() && id.is_none() {
            return;
        }
        if data.ends_with(b"\n") {
            data.pop();
        }
        out.push(SseEvent {
            id,
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
            retry,
        });
    }

    fn fail(&mut self) -> SseError {
        self.failed = true;
        self.line = Vec::new();
        self.data = Vec::new();
        self.too_large()
    }

    fn too_large(&self) -> SseError {
        SseError::EventTooLarge {
            max: self.max_event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> (Vec<SseEvent>, SseDecoder) {
        let mut d = SseDecoder::new(1 << 20);
        let mut out = Vec::new();
        for chunk in chunks {
            d.feed(chunk, &mut out).unwrap();
        }
        (out, d)
    }

    fn decode(stream: &[u8]) -> Vec<SseEvent> {
        decode_all(&[stream]).0
    }

    fn message(data: &str) -> SseEvent {
        SseEvent {
            id: None,
            event: "message".to_owned(),
            data: data.as_bytes().to_vec(),
            retry: None,
        }
    }

    #[test]
    fn write_event_produces_exact_bytes() {
        let mut out = Vec::new();
        write_event(
            &mut out,
            Some("42"),
            Some("message"),
            b"{\"jsonrpc\":\"2.0\"}",
        );
        assert_eq!(
            out,
            b"id: 42\nevent: message\ndata: {\"jsonrpc\":\"2.0\"}\n\n"
        );

        out.clear();
        write_event(&mut out, None, None, b"one\r\ntwo\rthree\nfour");
        assert_eq!(out, b"data: one\ndata: two\ndata: three\ndata: four\n\n");

        out.clear();
        write_event(&mut out, Some("a\r\nb\0"), Some("x\ny"), b"");
        assert_eq!(out, b"id: ab\nevent: xy\ndata: \n\n");
    }

    #[test]
    fn retry_and_comments_produce_exact_bytes() {
        let mut out = Vec::new();
        write_retry(&mut out, 3000);
        write_comment(&mut out, "keep-alive");
        write_comment(&mut out, "two\nlines");
        assert_eq!(out, b"retry: 3000\n\n: keep-alive\n\n: two\n: lines\n\n");
        let (events, d) = decode_all(&[&out]);
        assert!(events.is_empty());
        assert_eq!(d.retry(), Some(3000));
    }

    #[test]
    fn events_round_trip_through_writer_and_decoder() {
        let cases: [(Option<&str>, Option<&str>, &str); 5] = [
            (Some("1"), None, "{\"id\":1}"),
            (None, Some("endpoint"), "/messages?session_id=abc"),
            (Some("2"), Some("message"), "line one\nline two\n"),
            (None, None, " leading space and trailing \n"),
            (None, None, ""),
        ];
        let mut stream = Vec::new();
        for (id, event, data) in cases {
            write_event(&mut stream, id, event, data.as_bytes());
        }
        let expected: Vec<SseEvent> = cases
            .iter()
            .map(|(id, event, data)| SseEvent {
                id: id.map(str::to_owned),
                event: event.unwrap_or("message").to_owned(),
                data: data.as_bytes().to_vec(),
                retry: None,
            })
            .collect();
        assert_eq!(decode(&stream), expected);
        // And split at every byte boundary.
        for cut in 0..stream.len() {
            assert_eq!(
                decode_all(&[&stream[..cut], &stream[cut..]]).0,
                expected,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn lines_end_in_crlf_lf_or_cr() {
        assert_eq!(
            decode(b"data: a\r\ndata: b\rdata: c\n\r"),
            [message("a\nb\nc")]
        );
        assert_eq!(
            decode(b"data: a\r\r\n\ndata: b\n\n"),
            [message("a"), message("b")]
        );
    }

    #[test]
    fn a_crlf_split_across_feeds_ends_one_line() {
        // CR at the end of one feed, LF at the start of the next: one line
        // end, not an empty line that would dispatch.
        let (events, _) = decode_all(&[b"data: a\r", b"\ndata: b\r", b"", b"\n\r", b"\n"]);
        assert_eq!(events, [message("a\nb")]);
        // A CR then something else: the CR alone ended the line.
        let (events, _) = decode_all(&[b"data: a\r", b"\r"]);
        assert_eq!(events, [message("a")]);
    }

    #[test]
    fn a_leading_bom_is_stripped_once_even_when_split() {
        assert_eq!(decode(b"\xEF\xBB\xBFdata: a\n\n"), [message("a")]);
        let (events, _) = decode_all(&[
            b"\xEF",
            b"",
            b"\xBB",
            b"\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n",
        ]);
        assert_eq!(events, [message("a")]);
        // Not a BOM after all: those bytes are content (a field name here).
        let (events, _) = decode_all(&[b"\xEF\xBB", b"data: a\n\n"]);
        assert!(events.is_empty());
    }

    #[test]
    fn fields_follow_the_spec() {
        // Comments are ignored; a field without a colon has an empty value;
        // only one leading space is removed; unknown fields are ignored.
        let stream = b": comment\ndata\ndata:  two spaces\ndata:no space\nfoo: bar\n\n";
        assert_eq!(decode(stream), [message("\n two spaces\nno space")]);
        // An empty event name means "message".
        assert_eq!(decode(b"event:\ndata: x\n\n"), [message("x")]);
        let named = decode(b"event: ping\ndata: x\n\n");
        assert_eq!(named[0].event, "ping");
    }

    #[test]
    fn a_block_without_data_is_not_dispatched_but_a_bare_data_line_is() {
        assert!(decode(b"event: ping\n\n\n\n").is_empty());
        assert_eq!(decode(b"data\n\n"), [message("")]);
    }

    #[test]
    fn an_id_only_block_is_reported_as_a_priming_event() {
        let (events, d) = decode_all(&[b"id: prime-1\n\n"]);
        assert_eq!(
            events,
            [SseEvent {
                id: Some("prime-1".to_owned()),
                event: "message".to_owned(),
                data: Vec::new(),
                retry: None,
            }]
        );
        assert_eq!(d.last_event_id(), Some("prime-1"));
    }

    #[test]
    fn the_last_event_id_persists_across_events() {
        let (events, d) = decode_all(&[b"id: 7\ndata: a\n\ndata: b\n\n"]);
        assert_eq!(events[0].id.as_deref(), Some("7"));
        // The event itself reports only its own block's id…
        assert_eq!(events[1].id, None);
        // …while the decoder remembers what a reconnect should send.
        assert_eq!(d.last_event_id(), Some("7"));

        // An id containing NUL is ignored; an empty one resets.
        let (_, d) = decode_all(&[b"id: 7\n\nid: 8\0\n\n"]);
        assert_eq!(d.last_event_id(), Some("7"));
        let (events, d) = decode_all(&[b"id: 7\n\nid\ndata: x\n\n"]);
        assert_eq!(events[1].id.as_deref(), Some(""));
        assert_eq!(d.last_event_id(), None);

        // Taken up only at dispatch: a cut-off block does not count.
        let (_, d) = decode_all(&[b"id: 7\n\nid: 8\ndata: partial\n"]);
        assert_eq!(d.last_event_id(), Some("7"));
    }

    #[test]
    fn retry_takes_ascii_digits_only() {
        let (events, d) = decode_all(&[b"retry: 1500\ndata: x\n\n"]);
        assert_eq!(events[0].retry, Some(1500));
        assert_eq!(d.retry(), Some(1500));
        for bad in [
            "retry: 1.5",
            "retry: -1",
            "retry: 10ms",
            "retry:",
            "retry: 99999999999999999999999",
        ] {
            let (_, d) = decode_all(&[b"retry: 5\n\n", bad.as_bytes(), b"\n\n"]);
            assert_eq!(d.retry(), Some(5), "{bad:?}");
        }
    }

    #[test]
    fn data_that_is_not_utf8_is_handed_over_as_sent() {
        // Split inside the invalid sequence and across lines: the bytes
        // come out as they went in, never replaced with U+FFFD.
        let stream = b"data: {\"id\":1,\"t\":\"\xff\xe2\x82\"}\ndata: \xc3\n\n";
        let expected = b"{\"id\":1,\"t\":\"\xff\xe2\x82\"}\n\xc3".to_vec();
        for cut in 0..stream.len() {
            let (events, _) = decode_all(&[&stream[..cut], &stream[cut..]]);
            assert_eq!(events.len(), 1, "cut at {cut}");
            assert_eq!(events[0].data, expected, "cut at {cut}");
        }
        // Other fields are decoded as the spec says (replaced).
        let (events, d) = decode_all(&[b"id: a\xffb\nevent: x\xff\ndata: y\n\n"]);
        assert_eq!(events[0].event, "x\u{FFFD}");
        assert_eq!(d.last_event_id(), Some("a\u{FFFD}b"));
    }

    #[test]
    fn an_oversized_event_is_an_error_and_the_decoder_stays_failed() {
        let mut d = SseDecoder::new(16);
        let mut out = Vec::new();
        d.feed(b"data: 0123456789\n\n", &mut out).unwrap();
        assert_eq!(out, [message("0123456789")]);
        // Many small lines add up.
        let e = d.feed(b"data: 01234567\ndata: 01234567\n", &mut out);
        assert_eq!(e, Err(SseError::EventTooLarge { max: 16 }));
        assert!(d.feed(b"\n", &mut out).is_err());
        // A single line without an end is bounded too.
        let mut d = SseDecoder::new(16);
        d.feed(b": 0123456789", &mut out).unwrap();
        assert!(d.feed(b"0123456789", &mut out).is_err());
        assert_eq!(out.len(), 1);
    }
}
