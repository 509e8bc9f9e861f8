//! Requests in flight for one client (a session in `reverse`, the host in
//! `forward`).
//!
//! Each request is entered once under its JSON-RPC id and leaves once:
//! answered ([`Inflight::finish`]), or failed during teardown
//! ([`Inflight::drain`]). A second entry under an id still in flight is
//! refused, so a client that reuses an id gets an error instead of a
//! crossed answer. Progress tokens map to the request that announced them;
//! a token leaves with its request and never outlives it.
//!
//! The table holds the response timer's handle for the owner but never
//! touches a timer wheel or a clock: [`Deadlines::next`] computes when a
//! request expires from times the owner passes in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::proto::jsonrpc::Id;
use crate::reactor::TimerId;

/// How long a request may wait for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Silence allowed since the request or its last progress (0: none).
    pub response_timeout: Duration,
    /// Total time allowed since the request, progress or not (0: none).
    pub max_request_time: Duration,
}

impl Deadlines {
    /// Expiry of a request sent at `started` whose last sign of life was at
    /// `activity`: the response timeout after `activity`, capped by the
    /// maximum request time after `started`. `None`: it never expires.
    pub fn next(&self, started: Instant, activity: Instant) -> Option<Instant> {
        let silence = (!self.response_timeout.is_zero()).then(|| activity + self.response_timeout);
        let cap = (!self.max_request_time.is_zero()).then(|| started + self.max_request_time);
        match (silence, cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// One request in flight. `R` is where its answer goes, as the owner
/// understands it (a client connection, a stream, the process it was
/// written to).
#[derive(Debug)]
pub struct Request<R> {
    pub started: Instant,
    pub progress: Option<Id>,
    /// `initialize` is never cancelled (MCP), so the owner must know.
    pub initialize: bool,
    /// The owner's response timer, cancelled by the owner when the request
    /// leaves.
    pub timer: Option<TimerId>,
    pub route: R,
    /// The id exactly as the client wrote it, when that is not how
    /// `Id::to_json` writes it (`1e0`, `-0`, `"\u0061"`): the reply and any
    /// relay error for the request carry it back, whatever spelling the
    /// server used (issue 11, class 13). `None` for the common case.
    pub id_text: Option<Box<str>>,
    /// A `tools/list` to an upstream with a tool filter: its reply is
    /// filtered on the way back (set by the owner after `begin`; only these
    /// replies are parsed).
    pub tools_list: bool,
}

impl<R> Request<R> {
    /// Keeps the client's spelling of `id` if it is not the canonical one.
    pub fn keep_spelling(&mut self, id: &Id, raw: &str) {
        if !id.is_spelled(raw) {
            self.id_text = Some(raw.into());
        }
    }

    /// The spelling a message for this request must carry, if `raw` (how
    /// the server wrote the id) is not it; `None` when `raw` will do.
    pub fn respelling(&self, id: &Id, raw: &str) -> Option<String> {
        match &self.id_text {
            Some(t) if &**t == raw => None,
            Some(t) => Some(t.to_string()),
            None if id.is_spelled(raw) => None,
            None => Some(id.to_json()),
        }
    }
}

/// The id is already in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate;

#[derive(Debug)]
pub struct Inflight<R> {
    reqs: HashMap<Id, Request<R>>,
    /// Progress token → the id of the request that announced it.
    progress: HashMap<Id, Id>,
}

impl<R> Default for Inflight<R> {
    fn default() -> Self {
        Inflight {
            reqs: HashMap::new(),
            progress: HashMap::new(),
        }
    }
}

impl<R> Inflight<R> {
    /// Enters a request. Refused if `id` is in flight already. A progress
    /// token already used by another request in flight is not taken over:
    /// progress keeps going to the first announcer.
    pub fn begin(
        &mut self,
        id: Id,
        now: Instant,
        progress: Option<Id>,
        initialize: bool,
        route: R,
    ) -> Result<&mut Request<R>, Duplicate> {
        use std::collections::hash_map::Entry;
        let slot = match self.reqs.entry(id) {
            Entry::Occupied(_) => return Err(Duplicate),
            Entry::Vacant(v) => v,
        };
        if let Some(t) = &progress {
            self.progress
                .entry(t.clone())
                .or_insert_with(|| slot.key().clone());
        }
        Ok(slot.insert(Request {
            started: now,
            progress,
            initialize,
            timer: None,
            route,
            id_text: None,
            tools_list: false,
        }))
    }

    /// Takes a request out: its one answer is now the caller's to send.
    /// `None` if it already left (answered, failed or never entered).
    pub fn finish(&mut self, id: &Id) -> Option<Request<R>> {
        let req = self.reqs.remove(id)?;
        if let Some(t) = &req.progress
            && self.progress.get(t) == Some(id)
        {
            self.progress.remove(t);
        }
        Some(req)
    }

    /// Every request still in flight, taken out (teardown). The table is
    /// empty afterwards, so none can be answered twice.
    pub fn drain(&mut self) -> Vec<(Id, Request<R>)> {
        self.progress.clear();
        self.reqs.drain().collect()
    }

    /// Forgets everything, keeping the tables' capacity; nothing to do
    /// when nothing is in flight (every progress token names a request in
    /// flight, `check`).
    pub fn clear(&mut self) {
        self.progress.clear();
        self.reqs.clear();
    }

    pub fn get(&self, id: &Id) -> Option<&Request<R>> {
        self.reqs.get(id)
    }

    pub fn get_mut(&mut self, id: &Id) -> Option<&mut Request<R>> {
        self.reqs.get_mut(id)
    }

    /// The request a progress token belongs to.
    pub fn by_progress(&self, token: &Id) -> Option<(&Id, &Request<R>)> {
        let id = self.progress.get(token)?;
        self.reqs.get_key_value(id)
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.reqs.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.reqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Id, &Request<R>)> {
        self.reqs.iter()
    }

    /// Every progress token names a request in flight that announced it.
    pub fn check(&self) {
        for (t, id) in &self.progress {
            let req = self.reqs.get(id);
            assert!(
                req.is_some_and(|r| r.progress.as_ref() == Some(t)),
                "progress token {t} points at {id}, which is not its request in flight"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn id(n: i64) -> Id {
        Id::Num(n)
    }

    fn sid(s: &str) -> Id {
        Id::Str(s.into())
    }

    #[test]
    fn deadline_is_silence_capped_by_total_time() {
        let t0 = Instant::now();
        let both = Deadlines {
            response_timeout: ms(100),
            max_request_time: ms(250),
        };
        assert_eq!(both.next(t0, t0), Some(t0 + ms(100)));
        // Progress at 90 ms restarts the silence clock...
        assert_eq!(both.next(t0, t0 + ms(90)), Some(t0 + ms(190)));
        // ...but never past the cap.
        assert_eq!(both.next(t0, t0 + ms(200)), Some(t0 + ms(250)));
        let silence_only = Deadlines {
            response_timeout: ms(100),
            max_request_time: Duration::ZERO,
        };
        assert_eq!(silence_only.next(t0, t0 + ms(1_000)), Some(t0 + ms(1_100)));
        let cap_only = Deadlines {
            response_timeout: Duration::ZERO,
            max_request_time: ms(300),
        };
        assert_eq!(cap_only.next(t0, t0 + ms(1_000)), Some(t0 + ms(300)));
        let never = Deadlines {
            response_timeout: Duration::ZERO,
            max_request_time: Duration::ZERO,
        };
        assert_eq!(never.next(t0, t0), None);
    }

    #[test]
    fn each_request_leaves_exactly_once() {
        let t0 = Instant::now();
        let mut f: Inflight<&str> = Inflight::default();
        f.begin(id(1), t0, Some(sid("p1")), false, "a")
            .expect("new id");
        f.begin(sid("x"), t0, None, true, "b").expect("new id");
        assert_eq!(f.begin(id(1), t0, None, false, "c").err(), Some(Duplicate));
        assert_eq!(f.len(), 2);
        f.check();
        let r = f.finish(&id(1)).expect("in flight");
        assert_eq!(r.route, "a");
        assert!(f.finish(&id(1)).is_none(), "a second answer is refused");
        assert!(f.by_progress(&sid("p1")).is_none(), "token left with it");
        // The id is free again once answered.
        f.begin(id(1), t0 + ms(5), None, false, "d")
            .expect("reuse after answer");
        f.check();
    }

    #[test]
    fn progress_finds_its_request_and_is_not_taken_over() {
        let t0 = Instant::now();
        let mut f: Inflight<u8> = Inflight::default();
        f.begin(id(1), t0, Some(sid("tok")), false, 1).expect("new");
        // A second request announcing the same token does not steal it.
        f.begin(id(2), t0, Some(sid("tok")), false, 2).expect("new");
        assert_eq!(
            f.by_progress(&sid("tok")).map(|(i, _)| i.clone()),
            Some(id(1))
        );
        // When the second leaves, the first keeps its token...
        f.finish(&id(2));
        assert_eq!(f.by_progress(&sid("tok")).map(|(_, r)| r.route), Some(1));
        f.check();
        // ...and when the first leaves, the token is gone.
        f.finish(&id(1));
        assert!(f.by_progress(&sid("tok")).is_none());
        f.check();
    }

    #[test]
    fn a_request_gives_back_its_clients_spelling() {
        let t0 = Instant::now();
        let mut f: Inflight<()> = Inflight::default();
        let r = f.begin(id(1), t0, None, false, ()).expect("new");
        r.keep_spelling(&id(1), "1e0");
        assert_eq!(r.respelling(&id(1), "1.0").as_deref(), Some("1e0"));
        assert_eq!(r.respelling(&id(1), "1e0"), None);
        let r = f.begin(id(2), t0, None, false, ()).expect("new");
        r.keep_spelling(&id(2), "2");
        assert!(r.id_text.is_none(), "the canonical spelling is not stored");
        assert_eq!(r.respelling(&id(2), "2"), None);
        assert_eq!(r.respelling(&id(2), "2.0").as_deref(), Some("2"));
    }

    #[test]
    fn drain_takes_everything_once() {
        let t0 = Instant::now();
        let mut f: Inflight<()> = Inflight::default();
        for n in 0..10 {
            f.begin(id(n), t0, Some(id(100 + n)), n == 0, ())
                .expect("new");
        }
        let mut drained: Vec<i64> = f
            .drain()
            .into_iter()
            .map(|(i, _)| match i {
                Id::Num(n) => n,
                other => panic!("unexpected id {other}"),
            })
            .collect();
        drained.sort_unstable();
        assert_eq!(drained, (0..10).collect::<Vec<_>>());
        assert!(f.is_empty());
        assert!(f.drain().is_empty());
        assert!(f.by_progress(&id(100)).is_none());
        f.check();
    }

    #[test]
    fn clear_forgets_requests_and_tokens_and_keeps_room() {
        let t0 = Instant::now();
        let mut f: Inflight<()> = Inflight::default();
        for n in 0..10 {
            f.begin(id(n), t0, Some(id(100 + n)), false, ())
                .expect("new");
        }
        let room = f.reqs.capacity();
        f.clear();
        assert!(f.is_empty() && f.progress.is_empty());
        assert_eq!(f.reqs.capacity(), room);
        assert!(f.by_progress(&id(100)).is_none());
        // The same ids and tokens are new again.
        f.begin(id(1), t0, Some(id(101)), false, ()).expect("new");
        assert!(f.by_progress(&id(101)).is_some_and(|(i, _)| *i == id(1)));
        f.check();
    }
}
