//! Pieces of a Streamable HTTP session that need no I/O: its id, the
//! bounded buffer of SSE events kept for `Last-Event-ID` resumption, and the
//! bearer-token check.

use std::collections::VecDeque;

/// A new `Mcp-Session-Id`: 128 bits from the kernel's random source, as 32
/// lowercase hex digits (visible ASCII, as MCP requires).
pub fn new_session_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: getrandom writes at most the remaining length into the buffer.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The last `cap` events sent on a session's GET stream, by event id.
pub struct ReplayBuffer {
    cap: usize,
    events: VecDeque<(u64, Vec<u8>)>,
}

impl ReplayBuffer {
    pub fn new(cap: usize) -> Self {
        ReplayBuffer {
            cap,
            events: VecDeque::new(),
        }
    }

    /// Keeps an event; the oldest is dropped beyond the cap.
    pub fn push(&mut self, id: u64, data: Vec<u8>) {
        if self.cap == 0 {
            return;
        }
        if self.events.len() == self.cap {
            self.events.pop_front();
        }
        self.events.push_back((id, data));
    }

    /// Events after `last_id`, oldest first. The second value is false when
    /// events the client missed have already been dropped (a gap).
    pub fn since(&self, last_id: u64) -> (impl Iterator<Item = &(u64, Vec<u8>)>, bool) {
        let complete = match self.events.front() {
            Some((first, _)) => *first <= last_id.saturating_add(1),
            None => true,
        };
        (
            self.events.iter().filter(move |(id, _)| *id > last_id),
            complete,
        )
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// Bearer tokens accepted by `--auth-token-file`, one per line.
pub struct Tokens {
    tokens: Vec<Vec<u8>>,
}

impl Tokens {
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let tokens: Vec<Vec<u8>> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.as_bytes().to_vec())
            .collect();
        if tokens.is_empty() {
            return Err("no token in the file".into());
        }
        Ok(Tokens { tokens })
    }

    /// Index of the token an `Authorization` header carries, comparing in
    /// constant time so response timing does not reveal a token's prefix.
    pub fn check(&self, authorization: Option<&str>) -> Option<usize> {
        let given = authorization?;
        let (scheme, value) = given.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let value = value.trim().as_bytes();
        let mut found = None;
        for (i, t) in self.tokens.iter().enumerate() {
            if constant_time_eq(t, value) && found.is_none() {
                found = Some(i);
            }
        }
        found
    }
}

/// Compares without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_128_bit_hex_and_distinct() {
        let a = new_session_id().unwrap();
        let b = new_session_id().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn replay_returns_only_what_was_missed_and_reports_gaps() {
        let mut r = ReplayBuffer::new(3);
        for id in 1..=5 {
            r.push(id, format!("e{id}").into_bytes());
        }
        assert_eq!(r.len(), 3);
        let (events, complete) = r.since(3);
        assert_eq!(events.map(|e| e.0).collect::<Vec<_>>(), vec![4, 5]);
        assert!(complete);
        let (events, complete) = r.since(1);
        assert_eq!(events.map(|e| e.0).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(!complete, "event 2 was dropped");
        let (events, _) = r.since(5);
        assert_eq!(events.count(), 0);
    }

    #[test]
    fn tokens_match_exactly_and_by_index() {
        let t = Tokens::parse("# comment\nalpha\n\n beta \n").unwrap();
        assert_eq!(t.check(Some("Bearer alpha")), Some(0));
        assert_eq!(t.check(Some("bearer beta")), Some(1));
        assert_eq!(t.check(Some("Bearer alph")), None);
        assert_eq!(t.check(Some("Basic alpha")), None);
        assert_eq!(t.check(None), None);
        assert!(Tokens::parse("\n# only comments\n").is_err());
    }
}
