//! The engine's read budget and pause (issue 11, classes 3 and 5) on a real
//! loopback connection: an upstream that floods an SSE response is read at
//! most [`READ_BUDGET`] per turn, the rest is left for the next turn
//! (`has_backlog`), and a paused exchange is not read at all.

use std::io::{Read, Write};
use std::net::TcpListener;
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

/// A server that answers one GET with an SSE stream of `total` bytes of
/// events, then holds the connection until the test ends.
fn flooder(total: usize) -> (u16, thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
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
        let mut sent = 0;
        while sent < total {
            if s.write_all(chunk.as_bytes()).is_err() {
                return;
            }
            sent += chunk.len();
        }
        let _ = s.read(&mut req);
    });
    (port, t)
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

#[test]
fn a_flooding_connection_is_read_one_budget_per_turn_and_not_while_paused() {
    let (port, server) = flooder(8 << 20);
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
    // Until the flood has filled the socket and one read stopped at the
    // budget.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = 0;
    while !c.has_backlog() {
        assert!(Instant::now() < deadline, "no read ever hit the budget");
        let n = turn(&mut c, &mut poll, &mut events);
        assert!(n <= READ_BUDGET, "one turn handed over {n} bytes");
        got += n;
    }
    assert!(c.take_limit_counts().read_budget >= 1);
    // Each later turn reads at most one budget, without a new event.
    for _ in 0..3 {
        c.read_backlog(poll.registry(), Instant::now());
        let n = delivered(&mut c);
        assert!(n > 0 && n <= READ_BUDGET, "a backlog turn handed over {n}");
        got += n;
    }
    // Paused: nothing is read, and nothing is left to do this turn.
    c.pause(ex);
    assert!(c.is_paused(ex));
    assert!(!c.has_backlog(), "a paused exchange is not backlog");
    c.read_backlog(poll.registry(), Instant::now());
    assert_eq!(delivered(&mut c), 0);
    let _ = turn(&mut c, &mut poll, &mut events);
    assert_eq!(c.take_limit_counts().read_paused, 1);
    // Resumed: reading goes on where it stopped, without a new event.
    c.resume(ex);
    assert!(c.has_backlog());
    c.read_backlog(poll.registry(), Instant::now());
    let n = delivered(&mut c);
    assert!(n > 0 && n <= READ_BUDGET, "after resume: {n}");
    got += n;
    // The same for the pause of every connection (forward: stdout full).
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
