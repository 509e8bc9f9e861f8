//! Hostname resolution off the loop thread.
//!
//! `getaddrinfo` (behind `ToSocketAddrs`) blocks, for seconds when a name
//! server is slow, so it must not run on the loop: nothing on the loop
//! thread may block. Lookups go to one worker thread through a queue; answers come back
//! through another, and a `mio::Waker` wakes the loop to `drain` them.
//!
//! Every answer, including the immediate ones (literal IP addresses, an empty
//! name, the queue cap), is delivered the same way: queued for `drain` with a
//! wake signalled, never returned from `resolve` itself. The owner therefore
//! has one path for answers and is never re-entered from `resolve`.
//!
//! The worker starts with the first lookup that needs it and ends when the
//! `Resolver` is dropped (the queues are marked closed). It is not joined: a
//! lookup in progress finishes on its own and its answer is discarded, so
//! dropping never blocks the loop. Lookups run one at a time, so a slow name
//! delays the ones queued behind it; the owner's connect timeout covers that.
//!
//! A `mio::Poll` supports a single `Waker`; the `Resolver` owns it.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

use mio::{Registry, Token, Waker};

/// Lookups handed to the worker and not yet drained: queued, running, or
/// answered but not yet collected. Above this, `resolve` answers at once with
/// an error, which bounds both queues.
pub const MAX_OUTSTANDING: usize = 1024;

/// One answer: the caller's id and the addresses (never empty) or a reason.
pub type Answer = (u64, Result<Vec<SocketAddr>, String>);

struct Lookup {
    id: u64,
    host: String,
    port: u16,
}

/// What the loop thread and the worker share: a plain queue each way under
/// one lock (std's channels cost about 20 KB of code for the two types).
struct Queues {
    /// Lookups the worker has not taken yet.
    requests: VecDeque<Lookup>,
    /// Answers the loop has not drained yet.
    answers: Vec<Answer>,
    /// The `Resolver` was dropped: the worker ends, its answers unwanted.
    closed: bool,
}

struct Shared {
    queues: Mutex<Queues>,
    /// Signalled when a lookup is queued or the resolver closes.
    wanted: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        // The lock is never held across anything that can panic; and a
        // panic aborts the process anyway.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct Resolver {
    waker: Arc<Waker>,
    shared: Arc<Shared>,
    /// The worker thread was started (with the first lookup needing it).
    started: bool,
    /// Answers produced on the loop thread, waiting for `drain`.
    immediate: Vec<Answer>,
    outstanding: usize,
    cap: usize,
}

impl Resolver {
    /// Creates the Poll's waker on `token`; call `drain` on events for it.
    pub fn new(reg: &Registry, token: Token) -> std::io::Result<Resolver> {
        Resolver::with_cap(reg, token, MAX_OUTSTANDING)
    }

    fn with_cap(reg: &Registry, token: Token, cap: usize) -> std::io::Result<Resolver> {
        let waker = Arc::new(Waker::new(reg, token)?);
        Ok(Resolver {
            waker,
            shared: Arc::new(Shared {
                queues: Mutex::new(Queues {
                    requests: VecDeque::new(),
                    answers: Vec::new(),
                    closed: false,
                }),
                wanted: Condvar::new(),
            }),
            started: false,
            immediate: Vec::new(),
            outstanding: 0,
            cap,
        })
    }

    /// Starts resolving `host` (a name, an IP literal, or a bracketed IPv6
    /// literal as found in URLs) for `port`. The answer, tagged with `id`,
    /// comes out of a later `drain`.
    pub fn resolve(&mut self, id: u64, host: String, port: u16) {
        if let Some(ip) = literal_ip(&host) {
            self.answer_now(id, Ok(vec![SocketAddr::new(ip, port)]));
            return;
        }
        if host.is_empty() {
            self.answer_now(id, Err("empty host name".into()));
            return;
        }
        if self.outstanding >= self.cap {
            self.answer_now(
                id,
                Err(format!("{host}: too many pending lookups ({})", self.cap)),
            );
            return;
        }
        if let Err(e) = self.start_worker() {
            self.answer_now(
                id,
                Err(format!("{host}: cannot start resolver thread: {e}")),
            );
            return;
        }
        self.shared
            .lock()
            .requests
            .push_back(Lookup { id, host, port });
        self.shared.wanted.notify_one();
        self.outstanding += 1;
    }

    /// Moves every answer available now into `out`. Call on the waker's token.
    pub fn drain(&mut self, out: &mut Vec<Answer>) {
        out.append(&mut self.immediate);
        let mut q = self.shared.lock();
        self.outstanding = self.outstanding.saturating_sub(q.answers.len());
        out.append(&mut q.answers);
    }

    fn answer_now(&mut self, id: u64, result: Result<Vec<SocketAddr>, String>) {
        self.immediate.push((id, result));
        wake(&self.waker);
    }

    fn start_worker(&mut self) -> std::io::Result<()> {
        if !self.started {
            let shared = Arc::clone(&self.shared);
            let waker = Arc::clone(&self.waker);
            thread::Builder::new()
                .name("dns".into())
                .spawn(move || work(&shared, &waker))?;
            self.started = true;
        }
        Ok(())
    }
}

impl Drop for Resolver {
    /// Ends the worker once its lookup in progress (if any) returns; queued
    /// lookups are dropped unanswered, as nobody is left to drain them.
    fn drop(&mut self) {
        let mut q = self.shared.lock();
        q.closed = true;
        q.requests.clear();
        drop(q);
        self.shared.wanted.notify_all();
    }
}

/// The worker: one blocking lookup at a time until the `Resolver` is
/// dropped.
fn work(shared: &Shared, waker: &Waker) {
    loop {
        let Lookup { id, host, port } = {
            let mut q = shared.lock();
            loop {
                if q.closed {
                    return;
                }
                if let Some(l) = q.requests.pop_front() {
                    break l;
                }
                q = shared
                    .wanted
                    .wait(q)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let answer = lookup(&host, port);
        let mut q = shared.lock();
        if q.closed {
            return;
        }
        q.answers.push((id, answer));
        drop(q);
        wake(waker);
    }
}

fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match (host, port).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(format!("{host}: no addresses"))
            } else {
                Ok(addrs)
            }
        }
        Err(e) => Err(format!("{host}: {e}")),
    }
}

fn literal_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

fn wake(waker: &Waker) {
    if let Err(e) = waker.wake() {
        crate::log_warn!("resolver: cannot wake the loop: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::{Duration, Instant};

    const WAKE: Token = Token(7);

    /// Polls until `want` answers were drained (60 s at most: a lookup of a
    /// missing name may wait for resolv.conf timeouts).
    fn collect(poll: &mut Poll, res: &mut Resolver, want: usize) -> Vec<Answer> {
        let mut events = Events::with_capacity(8);
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while out.len() < want {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("resolver answers within 60 s");
            poll.poll(&mut events, Some(left)).expect("poll");
            for ev in events.iter() {
                assert_eq!(ev.token(), WAKE);
                res.drain(&mut out);
            }
        }
        out
    }

    fn answer_for(answers: &[Answer], id: u64) -> &Result<Vec<SocketAddr>, String> {
        let found = answers.iter().find(|(i, _)| *i == id);
        &found.expect("an answer for every id").1
    }

    #[test]
    fn localhost_resolves_to_a_loopback_address() {
        let mut poll = Poll::new().expect("poll");
        let mut res = Resolver::new(poll.registry(), WAKE).expect("resolver");
        res.resolve(1, "localhost".into(), 8443);
        let answers = collect(&mut poll, &mut res, 1);
        let addrs = answer_for(&answers, 1)
            .as_ref()
            .expect("localhost resolves");
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8443)
        );
        assert_eq!(res.outstanding, 0);
    }

    #[test]
    fn ip_literals_are_answered_without_the_worker() {
        let mut poll = Poll::new().expect("poll");
        let mut res = Resolver::new(poll.registry(), WAKE).expect("resolver");
        res.resolve(1, "127.0.0.1".into(), 80);
        res.resolve(2, "::1".into(), 81);
        res.resolve(3, "[::1]".into(), 82);
        // Answers wait for `drain` like any other, behind a wake.
        let answers = collect(&mut poll, &mut res, 3);
        let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 80);
        let v6 = |port| SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port);
        assert_eq!(answer_for(&answers, 1), &Ok(vec![v4]));
        assert_eq!(answer_for(&answers, 2), &Ok(vec![v6(81)]));
        assert_eq!(answer_for(&answers, 3), &Ok(vec![v6(82)]));
        assert!(!res.started, "no thread for literals");
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_it() {
        let mut poll = Poll::new().expect("poll");
        let mut res = Resolver::new(poll.registry(), WAKE).expect("resolver");
        res.resolve(9, "no-such-host.invalid".into(), 443);
        res.resolve(10, String::new(), 443);
        let answers = collect(&mut poll, &mut res, 2);
        let err = answer_for(&answers, 9)
            .as_ref()
            .expect_err("must not resolve");
        assert!(err.contains("no-such-host.invalid"), "{err}");
        assert_eq!(
            answer_for(&answers, 10),
            &Err("empty host name".to_string())
        );
    }

    #[test]
    fn dropping_the_resolver_ends_its_worker() {
        let mut poll = Poll::new().expect("poll");
        let mut res = Resolver::new(poll.registry(), WAKE).expect("resolver");
        res.resolve(1, "localhost".into(), 1);
        assert!(answer_for(&collect(&mut poll, &mut res, 1), 1).is_ok());
        assert!(res.started);
        // The worker holds the shared queues while it runs.
        let shared = Arc::downgrade(&res.shared);
        drop(res);
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.upgrade().is_some() {
            assert!(
                Instant::now() < deadline,
                "the worker outlived its resolver"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn lookups_beyond_the_cap_fail_at_once() {
        let mut poll = Poll::new().expect("poll");
        let mut res = Resolver::with_cap(poll.registry(), WAKE, 2).expect("resolver");
        for id in 1..=3 {
            res.resolve(id, "localhost".into(), 1);
        }
        // Outstanding counts until drained, so the third is refused however
        // fast the worker is.
        assert_eq!(res.outstanding, 2);
        let answers = collect(&mut poll, &mut res, 3);
        assert!(answer_for(&answers, 1).is_ok());
        assert!(answer_for(&answers, 2).is_ok());
        let err = answer_for(&answers, 3).as_ref().expect_err("over the cap");
        assert!(err.contains("too many pending lookups"), "{err}");
        assert_eq!(res.outstanding, 0);
        // Room again once drained.
        res.resolve(4, "localhost".into(), 1);
        assert!(answer_for(&collect(&mut poll, &mut res, 1), 4).is_ok());
    }
}
