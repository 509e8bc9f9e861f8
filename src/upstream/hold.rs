//! Client messages an HTTP upstream session holds back, in order, while its
//! GET stream opens (and, in `forward --url`, while its session is being
//! initialized).
//!
//! A server may send requests (sampling, elicitation) on a session's GET
//! stream right after the client's `notifications/initialized`, in answer to
//! the next POST. If that POST overtakes the GET (it may go out on a pooled
//! keep-alive connection while the GET waits for a new one), the server has
//! nowhere to send them and the client waits for nothing. So once the relay
//! opens the GET stream, the session's POSTs wait until the stream is open
//! (a 200 head), refused or failed, bounded by [`GET_HOLD`] and
//! [`HOLD_CAP`], and then go out in the order they came.

use std::collections::VecDeque;
use std::time::Duration;

use crate::proto::jsonrpc::Id;

/// How long POSTs wait for the GET stream to open. A server answers a GET
/// at once (its head comes before any event); past this the stream is
/// treated as slow, not as a reason to stall the session: the held POSTs go
/// out and the stream carries on opening.
pub const GET_HOLD: Duration = Duration::from_secs(2);

/// How many messages a session holds while its GET stream opens. One more
/// ends the hold early: the held ones go out in order, then it. (Memory is
/// not the reason: a POST sent is buffered by the engine just the same. A
/// client that sends this many at once is not waiting for server requests.)
/// Reaching it is counted (`reverse`:
/// `mcp_relay_http_upstream_limits_total{limit="get_hold_cap"}`) and logged,
/// at most once per 10 s per upstream.
pub const HOLD_CAP: usize = 64;

/// Messages held back, oldest first: each line and, for a request, its id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    queue: VecDeque<(Vec<u8>, Option<Id>)>,
}

impl Held {
    pub fn push(&mut self, line: Vec<u8>, request: Option<Id>) {
        self.queue.push_back((line, request));
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Holding one more would pass [`HOLD_CAP`].
    pub fn is_full(&self) -> bool {
        self.queue.len() >= HOLD_CAP
    }

    /// Takes request `id` out (it timed out while held: the upstream never
    /// saw it, so nothing is sent for it). False if it is not held.
    pub fn remove_request(&mut self, id: &Id) -> bool {
        let before = self.queue.len();
        self.queue.retain(|(_, r)| r.as_ref() != Some(id));
        self.queue.len() != before
    }

    /// `other`'s messages, then these: the queue of a phase handed over to
    /// the next one, which may already hold some of its own.
    pub fn prepend(&mut self, mut other: Held) {
        other.queue.append(&mut self.queue);
        self.queue = other.queue;
    }
}

impl IntoIterator for Held {
    type Item = (Vec<u8>, Option<Id>);
    type IntoIter = std::collections::vec_deque::IntoIter<(Vec<u8>, Option<Id>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.queue.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: u8) -> Vec<u8> {
        vec![b'0' + n]
    }

    #[test]
    fn held_messages_keep_their_order_across_hand_overs_and_removals() {
        let mut a = Held::default();
        a.push(line(1), Some(Id::Num(1)));
        a.push(line(2), None);
        a.push(line(3), Some(Id::Num(3)));
        assert!(a.remove_request(&Id::Num(1)));
        assert!(!a.remove_request(&Id::Num(1)), "already gone");
        assert!(!a.remove_request(&Id::Num(2)), "a notification has no id");
        let mut b = Held::default();
        b.push(line(4), None);
        b.prepend(a);
        let order: Vec<Vec<u8>> = b.into_iter().map(|(l, _)| l).collect();
        assert_eq!(order, [line(2), line(3), line(4)]);
    }

    #[test]
    fn the_cap_is_reached_at_hold_cap() {
        let mut h = Held::default();
        for _ in 0..HOLD_CAP - 1 {
            h.push(line(0), None);
        }
        assert!(!h.is_full());
        h.push(line(0), None);
        assert!(h.is_full());
        assert_eq!(h.len(), HOLD_CAP);
    }
}
