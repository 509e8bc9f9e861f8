//! The engine's read budget and pause (issue 11, classes 3 and 5) on a real
//! loopback connection: an upstream that floods an SSE response is read at
//! most [`READ_BUDGET`] per turn, the rest is left for the next turn
//! (`has_backlog`), and a paused exchange is not read at all.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::*;
use crate::reactor::token::{self, Source};

fn engine(port: u16) -> HttpClient {
    let cfg = HttpConfig {
        url: Url::parse(&format!("http://127.0.0.1:{port}/mcp")).expect("url"),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        response_timeout: Duration::ZERO,
        max_request_time: Duration::ZERO,
        max_connections: 4,
        idle_timeout: Duration::from_secs(60),
        headers: Vec::new(),
        retries: 0,
        retry_base: Duration::from_millis(100),
        retry_cap: Duration::from_secs(1),
        max_message_size: 1 << 20,
        tls: None,
    };
    HttpClient::new(cfg, 0, Rng::seeded(1)).expect("engine")
}

/// A server that answers one GET with an SSE stream of events until the
/// engine closes the connection (or 30 s pass): never a fixed amount, which
/// a loaded machine's many short reads could use up before the test has
/// seen the socket full often enough. The counter
/// grows each time a write finds the socket full: once it has grown after
/// a moment, every buffer between the server and the engine was full at
/// that moment ([`wait_full`]).
fn flooder() -> (u16, Arc<AtomicUsize>, thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let stalls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&stalls);
    let t = thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut req = [0u8; 4096];
        let _ = s.read(&mut req);
        s.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
              transfer-encoding: chunked\r\n\r\n",
        )
        .expect("head");
        let ev = format!(
            "data: {{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":{{\"p\":\"{}\"}}}}\n\n",
            "x".repeat(900)
        );
        let chunk = format!("{:x}\r\n{ev}\r\n", ev.len());
        s.set_nonblocking(true).expect("nonblocking");
        // Bounded: the test ends within its own deadlines, and the engine
        // closing the connection ends the writes.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut at = 0;
        while Instant::now() < deadline {
            match s.write(&chunk.as_bytes()[at..]) {
                Ok(0) => return,
                Ok(n) => {
                    at += n;
                    if at == chunk.len() {
                        at = 0;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    counter.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
        s.set_nonblocking(false).expect("blocking");
        let _ = s.read(&mut req);
    });
    (port, stalls, t)
}

/// Waits until the flooder finds its socket full after this call: from then
/// on, until the engine reads, the engine's socket holds all the kernel
/// lets it buffer, so a read there cannot come back empty.
fn wait_full(stalls: &AtomicUsize) {
    let seen = stalls.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stalls.load(Ordering::SeqCst) == seen {
        assert!(
            Instant::now() < deadline,
            "the flooder never filled the socket"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Feeds the engine the events of one `poll`; returns the bytes of the
/// messages that came out.
fn turn(c: &mut HttpClient, poll: &mut Poll, events: &mut Events) -> usize {
    poll.poll(events, Some(Duration::from_millis(50)))
        .expect("poll");
    let now = Instant::now();
    for ev in events.iter() {
        if let Source::Http { conn, .. } = token::source(ev.token()) {
            c.on_ready(conn, true, true, poll.registry(), now);
        }
    }
    delivered(c)
}

fn delivered(c: &mut HttpClient) -> usize {
    let mut out = Vec::new();
    c.take_events(&mut out);
    out.iter()
        .map(|e| match e {
            Event::Message { data, .. } => data.len(),
            _ => 0,
        })
        .sum()
}

/// Poll turns until a read stops at the budget (the engine has backlog);
/// returns the bytes handed over meanwhile.
fn until_backlog(c: &mut HttpClient, poll: &mut Poll, events: &mut Events) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = 0;
    while !c.has_backlog() {
        assert!(Instant::now() < deadline, "no read ever hit the budget");
        let n = turn(c, poll, events);
        assert!(n <= READ_BUDGET, "one turn handed over {n} bytes");
        got += n;
    }
    got
}

#[test]
fn a_flooding_connection_is_read_one_budget_per_turn_and_not_while_paused() {
    let (port, stalls, server) = flooder();
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(16);
    let mut c = engine(port);
    let now = Instant::now();
    c.set_addrs(
        vec![format!("127.0.0.1:{port}").parse().expect("addr")],
        poll.registry(),
        now,
    );
    let ex = c.submit(
        Request::stream("/mcp".into(), Vec::new()),
        poll.registry(),
        now,
    );
    let mut got = until_backlog(&mut c, &mut poll, &mut events);
    assert!(c.take_limit_counts().read_budget >= 1);
    // A later turn reads at most one budget, without a new event. (A read
    // that finds less than a budget ends the backlog, and the next bytes
    // come with an event: the poll turns of `until_backlog`.)
    for _ in 0..3 {
        got += until_backlog(&mut c, &mut poll, &mut events);
        wait_full(&stalls);
        c.read_backlog(poll.registry(), Instant::now());
        let n = delivered(&mut c);
        assert!(n > 0 && n <= READ_BUDGET, "a backlog turn handed over {n}");
        got += n;
    }
    // Paused: nothing is read, and nothing is left to do this turn.
    got += until_backlog(&mut c, &mut poll, &mut events);
    c.pause(ex);
    assert!(c.is_paused(ex));
    assert!(!c.has_backlog(), "a paused exchange is not backlog");
    c.read_backlog(poll.registry(), Instant::now());
    assert_eq!(delivered(&mut c), 0);
    assert_eq!(turn(&mut c, &mut poll, &mut events), 0);
    assert_eq!(c.take_limit_counts().read_paused, 1);
    // Resumed: reading goes on where it stopped, without a new event.
    c.resume(ex);
    assert!(c.has_backlog());
    wait_full(&stalls);
    c.read_backlog(poll.registry(), Instant::now());
    let n = delivered(&mut c);
    assert!(n > 0 && n <= READ_BUDGET, "after resume: {n}");
    got += n;
    // The same for the pause of every connection (forward: stdout full).
    got += until_backlog(&mut c, &mut poll, &mut events);
    c.set_paused_all(true);
    assert!(!c.has_backlog());
    c.read_backlog(poll.registry(), Instant::now());
    assert_eq!(delivered(&mut c), 0);
    c.set_paused_all(false);
    assert!(c.has_backlog());
    assert!(got > 4 * 900);
    c.close_all(poll.registry());
    drop(c);
    let _ = server.join();
}
