//! A message a stdio server wrote over several lines.
//!
//! The stdio transport is one message per line, so a server that
//! pretty-prints its reply sends several lines, none of them a message, and
//! the relay drops each (issue 11, classes 1 and 12). The request that reply
//! was for must still be answered (`invalid_reply`) rather than left to its
//! response timeout, but its id is on none of the lines in a form
//! [`jsonrpc::recover_id`] accepts (`  "id": 7,` alone has no object around
//! it). [`SplitTracker`] watches a server's lines beside the framing: a line
//! that opens an object or array it does not close (`{`) starts a run, the
//! run is followed bracket by bracket (outside strings) until that value
//! closes, and the id is then recovered from the run as if it were one line.
//!
//! It only observes: every line still goes its usual way (dropped, with its
//! warning), nothing is joined into a message. Bounded: a run keeps
//! [`KEEP_HEAD`] bytes from its start and [`KEEP_TAIL`] from its end, and is
//! abandoned once it passes the largest message (`max`) without closing.
//! A line that is a whole message never starts a run, so a well-behaved
//! server costs one look at the ends of each line.

use crate::proto::framing::{KEEP_HEAD, KEEP_TAIL};
use crate::proto::jsonrpc::{self, Id};

/// Watches one stdio server's stdout lines for a value split over lines.
#[derive(Debug)]
pub struct SplitTracker {
    max: usize,
    /// A run is open: its value has not closed yet.
    open: bool,
    /// Brackets open in the run (outside strings).
    depth: usize,
    /// Bytes of the run so far (lines plus one LF each).
    seen: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// What a line did to the run.
#[derive(Debug, PartialEq, Eq)]
pub enum Split {
    /// No run, or the run goes on.
    None,
    /// A run closed with this line; the value it spanned names this id (at
    /// its top level).
    Closed(Option<Id>),
    /// A run passed `max` bytes without closing: abandoned.
    Abandoned,
}

impl SplitTracker {
    /// `max`: the largest message, in bytes (`--max-message-size`).
    pub fn new(max: usize) -> SplitTracker {
        SplitTracker {
            max,
            open: false,
            depth: 0,
            seen: 0,
            head: Vec::new(),
            tail: Vec::new(),
        }
    }

    /// One line of the server's stdout (without its line end), after it
    /// went its usual way.
    pub fn observe(&mut self, line: &[u8]) -> Split {
        if !self.open {
            let t = line.trim_ascii();
            let opens = matches!(t.first(), Some(b'{' | b'['));
            let closes = matches!(t.last(), Some(b'}' | b']'));
            if !opens || closes {
                return Split::None;
            }
            self.open = true;
            self.depth = 0;
            self.seen = 0;
        }
        self.seen = self.seen.saturating_add(line.len() + 1);
        if self.head.len() < KEEP_HEAD {
            let room = KEEP_HEAD - self.head.len();
            self.head.extend_from_slice(&line[..line.len().min(room)]);
            if line.len() < room {
                self.head.push(b'\n');
            }
        }
        self.tail.extend_from_slice(line);
        self.tail.push(b'\n');
        if self.tail.len() > 2 * KEEP_TAIL {
            self.tail.drain(..self.tail.len() - KEEP_TAIL);
        }
        if self.scan(line) {
            let tail = &self.tail[self.tail.len().saturating_sub(KEEP_TAIL)..];
            let id = jsonrpc::recover_id(&self.head, tail);
            self.reset();
            return Split::Closed(id);
        }
        if self.seen > self.max {
            self.reset();
            return Split::Abandoned;
        }
        Split::None
    }

    /// Follows the brackets of `line`; true when the run's value closed.
    /// A string cannot span lines in JSON, so each line starts outside one.
    fn scan(&mut self, line: &[u8]) -> bool {
        let mut in_string = false;
        let mut escaped = false;
        for &b in line {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return true;
                    }
                }
                _ => {}
            }
        }
        false
    }

    fn reset(&mut self) {
        self.open = false;
        self.depth = 0;
        self.seen = 0;
        self.head.clear();
        self.tail.clear();
        if self.head.capacity() > 2 * KEEP_HEAD {
            self.head.shrink_to(KEEP_HEAD);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut SplitTracker, text: &str) -> Vec<Split> {
        text.lines()
            .map(|l| t.observe(l.as_bytes()))
            .filter(|s| *s != Split::None)
            .collect()
    }

    #[test]
    fn a_pretty_printed_reply_names_its_id_when_it_closes() {
        let reply = serde_json::json!({"jsonrpc": "2.0", "id": 7,
            "result": {"content": [{"type": "text", "text": "a } \" { ] ["}],
                       "meta": {"id": 99}}});
        let mut t = SplitTracker::new(1 << 20);
        let pretty = serde_json::to_string_pretty(&reply).unwrap();
        assert_eq!(feed(&mut t, &pretty), [Split::Closed(Some(Id::Num(7)))]);
        // The id last, a string, after a nested "id" and with CRLF ends.
        let text =
            "{\r\n \"result\": {\"id\": 99},\r\n \"jsonrpc\": \"2.0\",\r\n \"id\": \"a\"\r\n}";
        assert_eq!(
            feed(&mut t, text),
            [Split::Closed(Some(Id::Str("a".into())))]
        );
    }

    #[test]
    fn whole_lines_never_start_a_run() {
        let mut t = SplitTracker::new(1 << 20);
        let lines = [
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            r#"  [{"jsonrpc":"2.0","id":2,"result":{}}]  "#,
            "a banner line {",
            "\"id\": 3,",
            "}",
        ];
        for l in lines {
            assert_eq!(t.observe(l.as_bytes()), Split::None, "{l}");
        }
        assert!(!t.open);
    }

    #[test]
    fn a_run_without_a_top_level_id_closes_with_none() {
        let mut t = SplitTracker::new(1 << 20);
        // A batch, and an object whose only "id" is nested.
        let text = "[\n  {\"id\": 1, \"result\": {}}\n]\n{\n  \"params\": {\n    \"id\": 5\n  }\n}";
        assert_eq!(
            feed(&mut t, text),
            [Split::Closed(None), Split::Closed(None)]
        );
        // A dangling `{`, then messages: the run sees them nested.
        let text = "{\n{\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{}}\n}";
        assert_eq!(feed(&mut t, text), [Split::Closed(None)]);
    }

    #[test]
    fn a_run_that_never_closes_is_abandoned_past_max_and_stays_bounded() {
        let mut t = SplitTracker::new(1000);
        assert_eq!(t.observe(b"{"), Split::None);
        let line = [b'x'; 300];
        let mut out = Vec::new();
        for _ in 0..10 {
            out.push(t.observe(&line));
            assert!(t.head.len() <= KEEP_HEAD + 1);
            assert!(t.tail.len() <= 2 * KEEP_TAIL + line.len() + 1);
        }
        assert_eq!(out[3], Split::Abandoned);
        assert!(out.iter().filter(|s| **s == Split::Abandoned).count() == 1);
        // Then a new run works as usual.
        assert_eq!(
            feed(&mut t, "{\n\"id\": 3\n}"),
            [Split::Closed(Some(Id::Num(3)))]
        );
    }

    #[test]
    fn a_long_reply_is_recovered_from_its_tail() {
        let mut t = SplitTracker::new(1 << 20);
        let mut text = String::from("{\n  \"result\": [\n");
        for n in 0..2000 {
            text.push_str(&format!("    {n},\n"));
        }
        text.push_str("    0\n  ],\n  \"jsonrpc\": \"2.0\",\n  \"id\": 12\n}");
        assert!(text.len() > KEEP_HEAD);
        assert_eq!(feed(&mut t, &text), [Split::Closed(Some(Id::Num(12)))]);
    }
}
