//! Integration tests for `mcp-relay reverse`, driving the real binary over
//! HTTP/1.1 on 127.0.0.1 in front of a pool of `echo_server` processes.
//!
//! Harness rules: every relay gets its own port (a free one is picked, and
//! another tried if the relay cannot bind it) and is killed and reaped by
//! [`Relay`]'s Drop together with every server process it logged; every read
//! has a deadline; every loop is bounded. The relay runs with
//! `--log-level debug` and its log is printed when a test fails.
//!
//! The HTTP client is a small blocking one on `std::net::TcpStream`
//! (keep-alive, Content-Length and chunked bodies, incremental SSE).
//!
//! Tests written for a defect say, in their docs, what was wrong and what
//! they expect instead.
//!
//! `STRESS_SECS` sets the length of the two stress runs (default 30, as the
//! acceptance criterion asks).

mod common;

use std::collections::HashSet;
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::http::{
    ACCEPT_BOTH, Http, IO, Response, Sse, SseEvent, SseNext, VERSION, Wait, mcp_headers, post,
    post_on,
};
use common::prom::Scrape;
use common::relay::Relay;
use common::{
    Proc, RELAY, SHORT, TempFile, call, call_with, children_of, echo_server, echo_text, error_kind,
    fd_count, free_port, initialize, initialized,
};

/// `--name` of every relay, so metric labels are predictable.
const NAME: &str = "echo";

// ============================================================================
// MCP over HTTP
// ============================================================================

/// A Streamable HTTP client session on its own keep-alive connection.
struct Session {
    http: Http,
    sid: String,
    next_id: u64,
    extra: Vec<(String, String)>,
}

impl Session {
    /// `initialize` (+ `notifications/initialized`) on a new connection.
    fn open(port: u16) -> Session {
        Session::open_with(port, &[])
    }

    fn open_with(port: u16, extra: &[(&str, &str)]) -> Session {
        let mut http = Http::connect(port);
        let resp = post_on(&mut http, None, &initialize(json!(0)), extra, IO)
            .unwrap_or_else(|e| panic!("initialize: no response ({e:?})"));
        assert_eq!(resp.status(), 200, "initialize: {resp:?}");
        let sid = resp
            .header("mcp-session-id")
            .unwrap_or_else(|| panic!("initialize reply without Mcp-Session-Id: {resp:?}"))
            .to_string();
        let reply = resp.rpc();
        assert_eq!(reply["id"], 0, "initialize reply: {reply}");
        assert!(
            reply["result"]["serverInfo"].is_object(),
            "initialize reply: {reply}"
        );
        let mut s = Session {
            http,
            sid,
            next_id: 1,
            extra: extra
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        };
        let ack = s.post(&initialized());
        assert_eq!(ack.status(), 202, "notifications/initialized: {ack:?}");
        s
    }

    fn post(&mut self, msg: &Value) -> Response {
        let extra: Vec<(&str, &str)> = self
            .extra
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        post_on(&mut self.http, Some(&self.sid), msg, &extra, IO)
            .unwrap_or_else(|e| panic!("POST {msg} on session {}: no response ({e:?})", self.sid))
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A `tools/call echo`; returns the HTTP response and the JSON-RPC reply.
    fn call(&mut self, text: &str) -> (Response, Value) {
        let id = self.id();
        let resp = self.post(&call(json!(id), text));
        let reply = if resp.status() == 200 {
            resp.rpc()
        } else {
            Value::Null
        };
        (resp, reply)
    }

    fn call_ok(&mut self, text: &str) {
        let (resp, reply) = self.call(text);
        assert_eq!(resp.status(), 200, "tools/call: {resp:?}");
        assert_eq!(echo_text(&reply), Some(text), "tools/call reply: {reply}");
    }

    fn delete(&mut self) -> Response {
        let sid = self.sid.clone();
        delete_session(&mut self.http, &sid)
    }
}

fn delete_session(http: &mut Http, sid: &str) -> Response {
    http.request(
        "DELETE",
        "/mcp",
        &[("Mcp-Session-Id", sid), ("MCP-Protocol-Version", VERSION)],
        b"",
    )
}

/// A `tools/call` on session `sid` over a brand-new connection must work.
fn fresh_call_ok(port: u16, sid: &str, text: &str) {
    let mut http = Http::connect(port);
    let resp = post(&mut http, Some(sid), &call(json!("fresh"), text));
    assert_eq!(resp.status(), 200, "fresh tools/call: {resp:?}");
    let reply = resp.rpc();
    assert_eq!(echo_text(&reply), Some(text), "fresh tools/call: {reply}");
}

// ============================================================================
// Metrics
// ============================================================================

/// One `/metrics` scrape: its text, and the samples a real Prometheus
/// text-format parser read from it (`common::prom`).
struct Metrics(String, Scrape);

impl Metrics {
    /// The value of one exact series, e.g. `name{a="b"}`.
    fn get(&self, series: &str) -> Option<f64> {
        self.1.series(series)
    }

    fn must(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{}", self.0))
    }

    fn conns(&self, state: &str) -> u64 {
        self.must(&format!(
            "mcp_relay_upstream_connections{{upstream=\"{NAME}\",state=\"{state}\"}}"
        )) as u64
    }

    /// starting + idle + leased: what counts toward `--max-connections`.
    fn live(&self) -> u64 {
        self.conns("starting") + self.conns("idle") + self.conns("leased")
    }

    fn spawned(&self) -> u64 {
        self.must(&format!(
            "mcp_relay_upstream_spawned_total{{upstream=\"{NAME}\"}}"
        )) as u64
    }

    /// Sum over every `reason` of `mcp_relay_upstream_exited_total`.
    fn exited(&self) -> u64 {
        self.1
            .sum("mcp_relay_upstream_exited_total", &[("upstream", NAME)]) as u64
    }

    fn waiting(&self) -> u64 {
        self.must(&format!("mcp_relay_pool_waiting{{upstream=\"{NAME}\"}}")) as u64
    }

    fn sessions(&self) -> u64 {
        self.must(&format!("mcp_relay_sessions{{upstream=\"{NAME}\"}}")) as u64
    }
}

// ============================================================================
// The relay under test
// ============================================================================

/// `mcp-relay reverse --name echo ARGS -- echo_server SERVER_ARGS`.
fn start_relay(args: &[&str], server_args: &[&str]) -> Relay {
    Relay::reverse(NAME)
        .args(args)
        .echo_server(server_args)
        .start()
}

/// This file's view of the relay's `/metrics`.
impl Relay {
    fn metrics(&self) -> Metrics {
        let text = self.metrics_text();
        Metrics(text.clone(), Scrape::parse(text))
    }

    /// Polls /metrics until `pred` holds (panics after `timeout`).
    fn wait_metrics(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.metrics();
            if pred(&m) {
                return m;
            }
            if Instant::now() > deadline {
                panic!("{what}: not reached within {timeout:?}; /metrics:\n{}", m.0);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits (bounded) until `pred` holds.
fn wait_until(timeout: Duration, what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !pred() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `f` on `threads` threads, propagating panics.
fn run_threads<T: Send>(threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                s.spawn({
                    let f = &f;
                    move || f(i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

// ============================================================================
// 1. Shared pool: many sessions, one process
// ============================================================================

#[test]
fn reuse_shared_one_process() {
    const SESSIONS: usize = 50;
    const CALLS: usize = 1000;
    const THREADS: usize = 4;
    let relay = start_relay(&["--pool", "shared", "--max-connections", "1"], &[]);
    let port = relay.port;

    let sessions: Vec<String> = run_threads(THREADS, |t| {
        (t..SESSIONS)
            .step_by(THREADS)
            .map(|_| Session::open(port).sid)
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(sessions.len(), SESSIONS);
    assert_eq!(
        sessions.iter().collect::<HashSet<_>>().len(),
        SESSIONS,
        "session ids are not distinct"
    );

    // 1,000 calls, round-robin over the sessions, on THREADS connections.
    let answered = AtomicU64::new(0);
    run_threads(THREADS, |t| {
        let mut http = relay.http();
        for i in (t..CALLS).step_by(THREADS) {
            let sid = &sessions[i % SESSIONS];
            let text = format!("call {i} on {sid} ✓");
            let resp = post(&mut http, Some(sid), &call(json!(i), &text));
            assert_eq!(resp.status(), 200, "call {i}: {resp:?}");
            let reply = resp.rpc();
            assert_eq!(reply["id"], json!(i), "call {i}: {reply}");
            assert_eq!(echo_text(&reply), Some(text.as_str()), "call {i}: {reply}");
            answered.fetch_add(1, Ordering::Relaxed);
        }
    });
    assert_eq!(answered.load(Ordering::Relaxed), CALLS as u64);

    let m = relay.metrics();
    assert_eq!(
        m.spawned(),
        1,
        "expected exactly one process spawned:\n{}",
        m.0
    );
    assert_eq!(m.sessions(), SESSIONS as u64, "{}", m.0);
    assert_eq!(m.conns("leased"), 1, "{}", m.0);
    assert_eq!(relay.servers().len(), 1, "{}", relay.stderr_text());
}

// ============================================================================
// 2. Session pool: warm spares, the cap, queueing
// ============================================================================

#[test]
fn session_spares() {
    let relay = start_relay(
        &[
            "--pool",
            "session",
            "--max-connections",
            "4",
            "--min-idle",
            "2",
            "--queue-timeout",
            "5s",
            // Not about reclaiming: a loaded machine's slow steps must not
            // make the first sessions idle long enough to lose their process.
            "--session-reclaim-age",
            "60s",
        ],
        &[],
    );
    let port = relay.port;
    let check_cap = |m: &Metrics| {
        assert!(m.live() <= 4, "more than 4 processes:\n{}", m.0);
        assert!(
            children_of(relay.pid)
                .iter()
                .filter(|(_, s)| *s != 'Z')
                .count()
                <= 4 + m.conns("closing") as usize,
            "more than 4 running children"
        );
    };

    // Two warm spares right after start.
    let m = relay.wait_metrics(SHORT, "2 idle spares", |m| m.conns("idle") == 2);
    assert_eq!(m.spawned(), 2, "{}", m.0);
    check_cap(&m);

    // The first session takes a spare; one replacement is spawned.
    let before_init = Instant::now();
    let mut first = Session::open(port);
    first.call_ok("first");
    let m = relay.wait_metrics(SHORT, "replacement spare", |m| {
        m.conns("idle") == 2 && m.conns("leased") == 1
    });
    assert_eq!(m.spawned(), 3, "one replacement spare expected:\n{}", m.0);
    check_cap(&m);

    // Three more sessions: 4 leased, no spare left, still at most 4 processes.
    let mut others: Vec<Session> = (0..3)
        .map(|i| {
            let mut s = Session::open(port);
            s.call_ok(&format!("session {i}"));
            check_cap(&relay.metrics());
            s
        })
        .collect();
    let m = relay.metrics();
    assert_eq!(m.conns("leased"), 4, "{}", m.0);
    assert_eq!(m.conns("idle"), 0, "{}", m.0);
    check_cap(&m);

    // The fifth waits for a process...
    let mut fifth = relay.http();
    fifth
        .send_request(
            "POST",
            "/mcp",
            &mcp_headers(None),
            &serde_json::to_vec(&initialize(json!("fifth"))).unwrap(),
        )
        .expect("send the fifth initialize");
    match fifth.read_head(Instant::now() + Duration::from_millis(1500)) {
        Err(Wait::Timeout) => {}
        other => panic!(
            "the fifth initialize was answered while 4 sessions hold every process: {other:?}"
        ),
    }
    let m = relay.metrics();
    assert_eq!(m.waiting(), 1, "{}", m.0);
    check_cap(&m);

    // ...and gets one as soon as a session ends.
    let pids_before: Vec<(Proc, Instant)> = relay.servers();
    let del = first.delete();
    assert_eq!(del.status(), 200, "DELETE: {del:?}");
    let deleted_at = Instant::now();
    let resp = fifth
        .read_response(Instant::now() + Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("the fifth initialize was not answered after a DELETE: {e:?}"));
    let waited = deleted_at.elapsed();
    assert_eq!(resp.status(), 200, "fifth initialize: {resp:?}");
    assert!(resp.header("mcp-session-id").is_some(), "{resp:?}");
    assert!(
        waited < Duration::from_secs(2),
        "fifth initialize answered {waited:?} after the DELETE"
    );
    let m = relay.metrics();
    assert_eq!(m.waiting(), 0, "{}", m.0);
    check_cap(&m);

    // The process that served the first session was one of the warm spares,
    // started before its initialize was sent: it is the one that goes away
    // once that session is deleted.
    wait_until(SHORT, "the first session's process to exit", || {
        pids_before.iter().any(|(p, _)| p.is_gone())
    });
    let gone: Vec<&(Proc, Instant)> = pids_before.iter().filter(|(p, _)| p.is_gone()).collect();
    assert_eq!(gone.len(), 1, "exactly one process should have exited");
    assert!(
        gone[0].1 < before_init,
        "the first session's process (pid {}) was started after its initialize was sent",
        gone[0].0.pid
    );

    for s in &mut others {
        s.call_ok("still here");
    }
}

// ============================================================================
// 3. A server that exits after one answer
// ============================================================================

#[test]
fn single_shot_server() {
    const ROUNDS: usize = 21;
    // A server that exits right after its first answer counts as a start
    // failure for the pool's backoff; keep the delays short so the rounds
    // do not wait on it (the default would reach several seconds).
    let relay = start_relay(
        &["--restart-base", "10ms", "--restart-max-delay", "100ms"],
        &["--single-shot"],
    );

    // Baseline: descriptors once started and idle.
    let mut baseline = fd_count(relay.pid);
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(25));
        let now = fd_count(relay.pid);
        if now == baseline {
            break;
        }
        baseline = now;
    }

    let exited_before = relay.metrics().exited();
    let mut outcomes: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let mut http = relay.http();
        let resp = post(&mut http, None, &initialize(json!(round)));
        assert_eq!(resp.status(), 200, "round {round} initialize: {resp:?}");
        let sid = resp
            .header("mcp-session-id")
            .expect("Mcp-Session-Id")
            .to_string();
        let reply = resp.rpc();
        assert_eq!(reply["id"], json!(round), "round {round}: {reply}");
        assert!(reply["result"].is_object(), "round {round}: {reply}");

        let ack = post(&mut http, Some(&sid), &initialized());
        assert!(
            matches!(ack.status(), 202 | 404),
            "round {round} notifications/initialized: {ack:?}"
        );
        let resp = post(&mut http, Some(&sid), &call(json!("after"), "x"));
        let outcome = match resp.status() {
            404 => "404".to_string(),
            200 => {
                let r = resp.rpc();
                assert_eq!(r["id"], "after", "round {round}: {r}");
                assert_eq!(
                    error_kind(&r),
                    Some("upstream_closed"),
                    "round {round}: a request to a server that exited: {r}"
                );
                "upstream_closed".to_string()
            }
            _ => panic!("round {round}: unexpected answer {resp:?}"),
        };
        outcomes.push(outcome);
    }
    let n404 = outcomes.iter().filter(|o| *o == "404").count();
    eprintln!(
        "single_shot_server: request after the exit: {n404} x 404, {} x upstream_closed",
        ROUNDS - n404
    );

    let m = relay.wait_metrics(SHORT, "every process counted as exited", |m| {
        m.exited() >= exited_before + ROUNDS as u64
    });
    assert_eq!(m.exited(), exited_before + ROUNDS as u64, "{}", m.0);
    assert_eq!(m.sessions(), 0, "{}", m.0);
    assert_eq!(m.live(), 0, "{}", m.0);
    drop(m);

    // No zombies, every server gone, descriptors back to the baseline.
    wait_until(SHORT, "no zombie children", || relay.zombies().is_empty());
    for (p, _) in relay.servers() {
        wait_until(SHORT, "server processes gone", || p.is_gone());
    }
    assert_eq!(relay.servers().len(), ROUNDS);
    let deadline = Instant::now() + SHORT;
    loop {
        let now = fd_count(relay.pid);
        if now <= baseline {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relay has {now} open descriptors, {baseline} after startup: {:?}",
            std::fs::read_dir(format!("/proc/{}/fd", relay.pid))
                .map(|d| d
                    .flatten()
                    .map(|e| std::fs::read_link(e.path()).unwrap_or_default())
                    .collect::<Vec<_>>())
                .unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Still serving.
    let mut h = relay.http();
    assert_eq!(h.get("/healthz").status(), 200);
}

// ============================================================================
// 4. Stress: 64 clients
// ============================================================================

#[derive(Default, Debug)]
struct Tally {
    sent: u64,
    answered: u64,
    ok: u64,
    sessions: u64,
    deleted: u64,
    /// HTTP status (or JSON-RPC error kind) of answers that were not a
    /// successful echo.
    other: Vec<String>,
    /// Requests that got no answer, with the reason.
    lost: Vec<String>,
    /// Bodies of the unexpected answers, for the report.
    bodies: Vec<String>,
    /// Time since the start of the run of the latest non-200 initialize.
    late_503: Duration,
    /// 404s on a session that was opened at least `STRESS_IDLE` before:
    /// the relay's idle clock does not restart when the initialize is
    /// answered (see `session_idle_clock_restarts_when_initialize_is_answered`).
    idle_clock: u64,
}

/// `--session-idle-timeout` of the stress runs.
const STRESS_IDLE: Duration = Duration::from_secs(2);

fn stress_secs() -> u64 {
    std::env::var("STRESS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

/// xorshift64*: a deterministic per-thread choice of what to do next.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn stress_client(
    port: u16,
    t: usize,
    started: Instant,
    until: Instant,
    stop: &AtomicBool,
) -> Tally {
    let mut tally = Tally::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1).wrapping_mul(0x1000_0000_01B3));
    let mut left_open: Vec<String> = Vec::new();
    let mut http = Http::connect(port);
    let mut n = 0u64;
    // Bounded by time, and by a generous count in case time is misread.
    while Instant::now() < until && !stop.load(Ordering::Relaxed) && n < 100_000 {
        n += 1;
        tally.sent += 1;
        let init_sent = Instant::now();
        let resp = match post_on(&mut http, None, &initialize(json!(n)), &[], IO) {
            Ok(r) => r,
            Err(e) => {
                tally.lost.push(format!("initialize: {e:?}"));
                http = Http::connect(port);
                continue;
            }
        };
        tally.answered += 1;
        if resp.head.closes() {
            http = Http::connect(port);
        }
        if resp.status() != 200 {
            tally.other.push(format!("initialize {}", resp.status()));
            tally.late_503 = tally.late_503.max(started.elapsed());
            tally.bodies.push(format!(
                "initialize {}: {}",
                resp.status(),
                resp.text().trim()
            ));
            continue;
        }
        let Some(sid) = resp.header("mcp-session-id").map(str::to_string) else {
            tally.other.push("initialize without session id".into());
            continue;
        };
        let reply = resp.rpc();
        if !reply["result"].is_object() {
            tally.other.push(format!("initialize error {reply}"));
            continue;
        }
        tally.ok += 1;
        tally.sessions += 1;
        tally.sent += 1;
        match post_on(&mut http, Some(&sid), &initialized(), &[], IO) {
            Ok(r) => {
                tally.answered += 1;
                if r.status() == 404 && init_sent.elapsed() >= STRESS_IDLE {
                    tally.idle_clock += 1;
                } else if r.status() != 202 {
                    tally.other.push(format!("initialized {}", r.status()));
                }
            }
            Err(e) => {
                tally.lost.push(format!("initialized: {e:?}"));
                http = Http::connect(port);
            }
        }
        let calls = 1 + rng.below(5);
        for c in 0..calls {
            let text = format!("t{t} s{n} c{c}");
            tally.sent += 1;
            match post_on(&mut http, Some(&sid), &call(json!(c), &text), &[], IO) {
                Ok(r) => {
                    tally.answered += 1;
                    if r.status() == 200 {
                        let reply = r.rpc();
                        if echo_text(&reply) == Some(text.as_str()) && reply["id"] == json!(c) {
                            tally.ok += 1;
                        } else {
                            tally.other.push(format!(
                                "call {}",
                                error_kind(&reply)
                                    .map_or_else(|| reply.to_string(), str::to_string)
                            ));
                        }
                    } else if r.status() == 404 && init_sent.elapsed() >= STRESS_IDLE {
                        tally.idle_clock += 1;
                    } else {
                        tally.other.push(format!("call {}", r.status()));
                    }
                }
                Err(e) => {
                    tally.lost.push(format!("call: {e:?}"));
                    http = Http::connect(port);
                }
            }
        }
        if rng.below(2) == 0 {
            tally.sent += 1;
            match http.try_request(
                "DELETE",
                "/mcp",
                &[("Mcp-Session-Id", &sid), ("MCP-Protocol-Version", VERSION)],
                b"",
                IO,
            ) {
                Ok(r) => {
                    tally.answered += 1;
                    if r.status() == 200 {
                        tally.deleted += 1;
                    } else if r.status() == 404 && init_sent.elapsed() >= STRESS_IDLE {
                        tally.idle_clock += 1;
                    } else {
                        tally.other.push(format!("delete {}", r.status()));
                    }
                }
                Err(e) => {
                    tally.lost.push(format!("delete: {e:?}"));
                    http = Http::connect(port);
                }
            }
        } else {
            left_open.push(sid);
        }
    }
    // End what was left open (some may have idled out already: 404).
    for sid in left_open {
        let r = delete_session(&mut http, &sid);
        assert!(matches!(r.status(), 200 | 404), "final DELETE: {r:?}");
    }
    tally
}

fn stress(pool: &str, max: u64, extra: &[&str]) {
    const THREADS: usize = 64;
    let max_s = max.to_string();
    let mut args = vec![
        "--pool",
        pool,
        "--max-connections",
        &max_s,
        "--session-idle-timeout",
        "2s", // STRESS_IDLE
        "--queue-timeout",
        "5s",
    ];
    args.extend_from_slice(extra);
    let relay = start_relay(&args, &[]);
    let port = relay.port;
    let min_idle: u64 = extra
        .iter()
        .position(|a| *a == "--min-idle")
        .map_or(0, |i| extra[i + 1].parse().unwrap());
    let m = relay.wait_metrics(SHORT, "spares up", |m| m.conns("idle") == min_idle);
    let (fds0, live0) = settled_fds(&relay, &m);
    let secs = stress_secs();
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let stop = AtomicBool::new(false);
    let peak = AtomicU64::new(0);
    let tallies = thread::scope(|s| {
        // A watcher samples the process count while the clients run.
        let watcher = s.spawn(|| {
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                let m = relay.metrics();
                peak.fetch_max(m.live(), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(100));
            }
        });
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let stop = &stop;
                s.spawn(move || stress_client(port, t, started, until, stop))
            })
            .collect();
        let tallies: Vec<Tally> = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|e| {
                    stop.store(true, Ordering::Relaxed);
                    std::panic::resume_unwind(e)
                })
            })
            .collect();
        stop.store(true, Ordering::Relaxed);
        watcher.join().expect("watcher");
        tallies
    });

    let mut total = Tally::default();
    for t in tallies {
        total.sent += t.sent;
        total.answered += t.answered;
        total.ok += t.ok;
        total.sessions += t.sessions;
        total.deleted += t.deleted;
        total.other.extend(t.other);
        total.lost.extend(t.lost);
        total.bodies.extend(t.bodies);
        total.late_503 = total.late_503.max(t.late_503);
        total.idle_clock += t.idle_clock;
    }
    let mut bodies: Vec<(String, usize)> = Vec::new();
    for o in &total.bodies {
        match bodies.iter_mut().find(|(k, _)| k == o) {
            Some((_, n)) => *n += 1,
            None => bodies.push((o.clone(), 1)),
        }
    }
    if !bodies.is_empty() {
        eprintln!("stress {pool}: bodies of unexpected answers: {bodies:?}");
    }
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for o in &total.other {
        match kinds.iter_mut().find(|(k, _)| k == o) {
            Some((_, n)) => *n += 1,
            None => kinds.push((o.clone(), 1)),
        }
    }
    eprintln!(
        "stress {pool}: {secs}s, {} sent, {} answered, {} ok, {} sessions ({} deleted), peak {} processes, \
         {} x 404 from the idle-clock bug, other answers: {kinds:?}",
        total.sent,
        total.answered,
        total.ok,
        total.sessions,
        total.deleted,
        peak.load(Ordering::Relaxed),
        total.idle_clock,
    );
    assert!(
        total.lost.is_empty(),
        "{} of {} requests got no answer, e.g. {:?}",
        total.lost.len(),
        total.sent,
        &total.lost[..total.lost.len().min(10)]
    );
    assert_eq!(total.sent, total.answered);
    assert!(total.sessions > 0 && total.ok * 4 > total.sent, "{total:?}");
    // Only a new session may be turned away (503 when no process frees up
    // in time); a session once open must work until it is deleted.
    let unexpected: Vec<&(String, usize)> = kinds
        .iter()
        .filter(|(k, _)| k != "initialize 503")
        .collect();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
    if pool == "shared" && kinds.iter().any(|(k, _)| k == "initialize 503") {
        // Shared mode turns a session away only while no process is ready:
        // at the start, if the first process took over --queue-timeout (the
        // 64 initializes at once wait for it, --max-waiting or not).
        assert!(
            total.late_503 < Duration::from_secs(2),
            "shared pool answered 503 {:?} into the run",
            total.late_503
        );
    }
    assert!(peak.load(Ordering::Relaxed) <= max);

    let m = relay.wait_metrics(SHORT, "no session, nothing leased or waiting", |m| {
        m.conns("leased") == 0 && m.waiting() == 0 && m.sessions() == 0
    });
    assert!(m.live() <= max, "{}", m.0);
    // No connection or descriptor leaked: once the closing processes are
    // reaped, the relay holds what it held at the start, plus 3 pipes per
    // extra process.
    let m = relay.wait_metrics(SHORT, "closing processes reaped", |m| {
        m.conns("closing") == 0 && m.conns("starting") == 0
    });
    let deadline = Instant::now() + SHORT;
    loop {
        let (fds, live) = settled_fds(&relay, &m);
        let (a, b) = (fds as i64 - 3 * live as i64, fds0 as i64 - 3 * live0 as i64);
        if a <= b {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "descriptors leaked: {fds} open with {live} processes, {fds0} at the start with {live0}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let m = relay.wait_metrics(SHORT, "client connections closed", |m| {
        m.must("mcp_relay_client_connections") <= 1.0
    });
    drop(m);
    let mut h = relay.http();
    let r = h.get("/healthz");
    assert_eq!((r.status(), r.text().as_str()), (200, "ok\n"));
    Session::open(port).call_ok("after the storm");
}

/// The relay's open descriptors once no client connection of ours is open,
/// with the number of live processes (`m` is a fresh /metrics snapshot).
fn settled_fds(relay: &Relay, m: &Metrics) -> (usize, u64) {
    // The /metrics connection closes right after its response: let the
    // relay see that.
    let live = m.live();
    let mut last = fd_count(relay.pid);
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(25));
        let now = fd_count(relay.pid);
        if now == last {
            break;
        }
        last = now;
    }
    (last, live)
}

#[test]
fn stress_session_pool() {
    stress("session", 16, &["--min-idle", "4"]);
}

#[test]
fn stress_shared_pool() {
    stress("shared", 2, &[]);
}

// ============================================================================
// 5. Crashes, hangs, slow servers
// ============================================================================

#[test]
fn crash_mid_request() {
    // initialize is the first request the server counts, the first call the
    // second: the second call crashes it.
    let relay = start_relay(&[], &["--crash-after", "2"]);
    let mut s = Session::open(relay.port);
    s.call_ok("one");
    let (resp, reply) = s.call("two");
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(
        error_kind(&reply),
        Some("upstream_closed"),
        "the request that crashed the server: {reply}"
    );
    assert_eq!(reply["error"]["code"], -32000, "{reply}");
    assert!(reply["id"].is_u64(), "{reply}");
    let (resp, _) = s.call("three");
    assert_eq!(
        resp.status(),
        404,
        "next request on the crashed session: {resp:?}"
    );

    // The pool recovers: a new session gets a new process.
    let mut s2 = Session::open(relay.port);
    s2.call_ok("new session");
    let m = relay.wait_metrics(SHORT, "the crash counted", |m| {
        m.get(&format!(
            "mcp_relay_upstream_exited_total{{upstream=\"{NAME}\",reason=\"exit_nonzero\"}}"
        )) == Some(1.0)
    });
    assert_eq!(m.spawned(), 2, "{}", m.0);
}

#[test]
fn never_answer_times_out_and_cancels() {
    let log = TempFile::new("reverse-hang", "server-log");
    let relay = start_relay(
        &["--response-timeout", "500ms"],
        &["--never-answer", "--log", log.path_str()],
    );
    let mut s = Session::open(relay.port);
    let t0 = Instant::now();
    let (resp, reply) = s.call("never");
    let took = t0.elapsed();
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(error_kind(&reply), Some("response_timeout"), "{reply}");
    assert_eq!(reply["error"]["code"], -32001, "{reply}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "response_timeout after {took:?}"
    );
    let text = log.wait_for(SHORT, "notifications/cancelled", |t| {
        t.contains("notifications/cancelled")
    });
    let cancel: Value = text
        .lines()
        .filter(|l| l.contains("notifications/cancelled"))
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .next()
        .expect("cancel line");
    assert_eq!(
        cancel["params"]["requestId"], reply["id"],
        "cancel names the request: {cancel}"
    );
    // The session still works for pings (answered even by this server).
    let resp = s.post(&json!({"jsonrpc": "2.0", "id": "p", "method": "ping"}));
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(resp.rpc()["result"], json!({}));
    let m = relay.metrics();
    assert_eq!(
        m.get("mcp_relay_timeouts_total{kind=\"response_timeout\"}"),
        Some(1.0),
        "{}",
        m.0
    );
}

#[test]
fn slow_server_times_out_then_new_session_works() {
    // echo_server has no slow-start switch: the first process the relay
    // starts is slow (--delay-ms 1500 on every request but initialize),
    // later ones are normal.
    let marker = TempFile::new("reverse-slow", "first-spawn");
    let script =
        r#"if (set -C; : > "$0") 2>/dev/null; then exec "$1" --delay-ms 1500; else exec "$1"; fi"#;
    let command = vec![
        "sh".to_string(),
        "-c".to_string(),
        script.to_string(),
        marker.path_str().to_string(),
        echo_server().to_str().unwrap().to_string(),
    ];
    let relay = Relay::reverse(NAME)
        .args(["--response-timeout", "1s"])
        .command(&command)
        .start();

    let mut slow = Session::open(relay.port);
    let t0 = Instant::now();
    let (resp, reply) = slow.call("slow");
    let took = t0.elapsed();
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(error_kind(&reply), Some("response_timeout"), "{reply}");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2500),
        "response_timeout after {took:?}"
    );
    assert_eq!(
        reply["error"]["data"]["response_timeout_ms"], 1000,
        "{reply}"
    );

    let mut fast = Session::open(relay.port);
    fast.call_ok("normal");
    // The slow server's late reply is dropped, not misdelivered.
    thread::sleep(Duration::from_millis(700));
    fast.call_ok("normal again");
}

// ============================================================================
// 6. Shutdown
// ============================================================================

#[test]
fn shutdown_finishes_in_flight_request() {
    let relay_args = ["--shutdown-grace", "3s", "--kill-grace", "1s"];
    let relay = start_relay(&relay_args, &["--delay-ms", "1000"]);
    let mut s = Session::open(relay.port);
    let mut idle = relay.http();
    assert_eq!(idle.get("/healthz").status(), 200);

    let id = s.id();
    s.http
        .send_request(
            "POST",
            "/mcp",
            &mcp_headers(Some(&s.sid.clone())),
            &serde_json::to_vec(&call(json!(id), "in flight")).unwrap(),
        )
        .expect("send");
    thread::sleep(Duration::from_millis(200));
    let children: Vec<Proc> = children_of(relay.pid)
        .into_iter()
        .map(|(p, _)| Proc::new(p))
        .collect();
    assert!(!children.is_empty(), "no server running");
    let t0 = Instant::now();
    relay.signal(libc::SIGTERM);

    let resp = s
        .http
        .read_response(Instant::now() + SHORT)
        .unwrap_or_else(|e| panic!("the in-flight request got no reply after SIGTERM: {e:?}"));
    assert_eq!(resp.status(), 200, "{resp:?}");
    let reply = resp.rpc();
    assert_eq!(echo_text(&reply), Some("in flight"), "{reply}");
    assert!(
        resp.head.closes(),
        "reply during shutdown should close: {resp:?}"
    );

    let bound = Duration::from_secs(3 + 1 + 2);
    let status = relay
        .wait_timeout(bound)
        .unwrap_or_else(|| panic!("relay still running {bound:?} after SIGTERM"));
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(took < bound, "exit took {took:?}");
    // The idle keep-alive connection was closed.
    assert!(idle.closed_by_peer(Instant::now() + SHORT));

    let logged = relay.servers();
    assert!(!logged.is_empty());
    for p in children.iter().chain(logged.iter().map(|(p, _)| p)) {
        p.assert_gone("server after the relay's exit");
    }
    assert!(children_of(relay.pid).is_empty());
    assert!(
        relay.stderr_text().contains("all processes reaped"),
        "{}",
        relay.stderr_tail(30)
    );
}

// ============================================================================
// 7. Bad input
// ============================================================================

/// Sends raw bytes on a new connection; returns the response.
fn raw_exchange(port: u16, bytes: &[u8]) -> Response {
    let mut h = Http::connect(port);
    h.write(bytes).expect("write");
    h.read_response(Instant::now() + IO)
        .unwrap_or_else(|e| panic!("no response to {:?}: {e:?}", String::from_utf8_lossy(bytes)))
}

#[test]
fn bad_input() {
    let relay = start_relay(
        &[
            "--max-header-size",
            "1KiB",
            "--max-body",
            "1KiB",
            "--allow-origin",
            "http://ok.example",
            "--client-header-timeout",
            "500ms",
        ],
        &[],
    );
    let port = relay.port;
    let mut good = Session::open(port);
    let sid = good.sid.clone();
    let mut n = 0;
    let mut healthy = |what: &str| {
        n += 1;
        fresh_call_ok(port, &sid, &format!("after {what} ({n})"));
    };
    let init_body = serde_json::to_vec(&initialize(json!(1))).unwrap();
    let call_body = serde_json::to_vec(&call(json!(1), "x")).unwrap();

    // Malformed request line.
    let r = raw_exchange(port, b"NONSENSE\r\n\r\n");
    assert_eq!(r.status(), 400, "malformed request line: {r:?}");
    healthy("a malformed request line");

    // Head over --max-header-size.
    let pad = "a".repeat(2000);
    let req = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {pad}\r\n\r\n");
    let r = raw_exchange(port, req.as_bytes());
    assert_eq!(r.status(), 431, "oversized head: {r:?}");
    healthy("an oversized head");

    // Body over --max-body.
    let mut h = Http::connect(port);
    let r = post_on(
        &mut h,
        Some(&sid),
        &call(json!(1), &"b".repeat(2000)),
        &[],
        IO,
    )
    .expect("answer to an oversized body");
    assert_eq!(r.status(), 413, "oversized body: {r:?}");
    healthy("an oversized body");

    // Not JSON.
    let mut h = Http::connect(port);
    let r = h.request("POST", "/mcp", &mcp_headers(Some(&sid)), b"{not json");
    assert_eq!(r.status(), 400, "invalid JSON: {r:?}");
    assert_eq!(r.json()["error"]["code"], -32700, "{}", r.text());
    healthy("invalid JSON");

    // A batch on a 2025-06-18 session.
    let batch = json!([call(json!(1), "a"), call(json!(2), "b")]);
    let r = post(&mut h, Some(&sid), &batch);
    assert_eq!(r.status(), 400, "batch on {VERSION}: {r:?}");
    healthy("a batch");

    // No Mcp-Session-Id on a non-initialize request.
    let r = h.request("POST", "/mcp", &mcp_headers(None), &call_body);
    assert_eq!(r.status(), 400, "no session id: {r:?}");
    healthy("a missing session id");

    // Unknown session.
    let r = post(
        &mut h,
        Some("0123456789abcdef0123456789abcdef"),
        &call(json!(1), "x"),
    );
    assert_eq!(r.status(), 404, "unknown session: {r:?}");
    healthy("an unknown session");

    // Accept without text/event-stream.
    let r = h.request(
        "POST",
        "/mcp",
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
            ("Mcp-Session-Id", &sid),
        ],
        &call_body,
    );
    assert_eq!(r.status(), 406, "Accept: application/json only: {r:?}");
    healthy("a wrong Accept");

    // Content-Type not JSON.
    let r = h.request(
        "POST",
        "/mcp",
        &[
            ("Content-Type", "text/plain"),
            ("Accept", ACCEPT_BOTH),
            ("Mcp-Session-Id", &sid),
        ],
        &call_body,
    );
    assert_eq!(r.status(), 415, "Content-Type: text/plain: {r:?}");
    healthy("a wrong Content-Type");

    // Origin.
    let mut h = Http::connect(port);
    let r = post_on(
        &mut h,
        None,
        &initialize(json!(1)),
        &[("Origin", "http://evil.example")],
        IO,
    )
    .expect("answer");
    assert_eq!(r.status(), 403, "Origin http://evil.example: {r:?}");
    let r = post_on(
        &mut h,
        Some(&sid),
        &call(json!(1), "x"),
        &[("Origin", "http://evil.example")],
        IO,
    )
    .expect("answer");
    assert_eq!(
        r.status(),
        403,
        "Origin http://evil.example on a session: {r:?}"
    );
    healthy("a bad Origin");
    let mut ok = Session::open_with(port, &[("Origin", "http://ok.example")]);
    ok.call_ok("allowed origin");
    // Same-origin: a page served from the relay's own scheme, host and port
    // needs no --allow-origin; another port of the same host is another
    // origin.
    for own in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
    ] {
        let mut same = Session::open_with(port, &[("Origin", own.as_str())]);
        same.call_ok("same origin");
    }
    let other_port = format!("http://127.0.0.1:{}", if port == 1 { 2 } else { port - 1 });
    let r = post_on(
        &mut h,
        None,
        &initialize(json!(1)),
        &[("Origin", other_port.as_str())],
        IO,
    )
    .expect("answer");
    assert_eq!(r.status(), 403, "Origin {other_port}: {r:?}");

    // Method not allowed.
    let r = h.request("PUT", "/mcp", &mcp_headers(Some(&sid)), &init_body);
    assert_eq!(r.status(), 405, "PUT /mcp: {r:?}");
    assert!(r.header("allow").is_some(), "405 without Allow: {r:?}");
    healthy("a PUT");

    // Slow head: half a request, then nothing.
    let mut slow = Http::connect(port);
    slow.write(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        .expect("write half a head");
    let t0 = Instant::now();
    healthy("a stalled client started"); // served meanwhile
    let r = slow
        .read_response(t0 + Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("no 408 for a stalled head: {e:?}"));
    let took = t0.elapsed();
    assert_eq!(r.status(), 408, "stalled head: {r:?}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(2),
        "408 after {took:?}"
    );
    assert!(slow.closed_by_peer(Instant::now() + SHORT));
    healthy("a stalled head");

    good.call_ok("the first connection still works");
    let m = relay.metrics();
    assert_eq!(
        m.get("mcp_relay_timeouts_total{kind=\"client_header\"}"),
        Some(1.0),
        "{}",
        m.0
    );
}

#[test]
fn bad_input_auth() {
    let tokens = TempFile::new("reverse-auth", "tokens");
    std::fs::write(&tokens.0, "token-a\n# comment\ntoken-b\n").expect("write token file");
    let relay = start_relay(&["--auth-token-file", tokens.path_str()], &[]);
    let port = relay.port;
    let a = [("Authorization", "Bearer token-a")];
    let b = [("Authorization", "Bearer token-b")];

    let mut h = Http::connect(port);
    let r = post_on(&mut h, None, &initialize(json!(1)), &[], IO).expect("answer");
    assert_eq!(r.status(), 401, "no token: {r:?}");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "401 without WWW-Authenticate: {r:?}"
    );
    let r = post_on(
        &mut h,
        None,
        &initialize(json!(1)),
        &[("Authorization", "Bearer token-c")],
        IO,
    )
    .expect("answer");
    assert_eq!(r.status(), 401, "bad token: {r:?}");
    assert!(r.header("www-authenticate").is_some(), "{r:?}");

    let mut sa = Session::open_with(port, &a);
    sa.call_ok("token a");
    let mut sb = Session::open_with(port, &b);
    sb.call_ok("token b");

    // A's session with B's token: as if it did not exist.
    let mut h = Http::connect(port);
    let r = post_on(&mut h, Some(&sa.sid), &call(json!(1), "x"), &b, IO).expect("answer");
    assert_eq!(r.status(), 404, "A's session used with token B: {r:?}");
    // Without a token at all: 401 first.
    let r = post_on(&mut h, Some(&sa.sid), &call(json!(1), "x"), &[], IO).expect("answer");
    assert_eq!(r.status(), 401, "A's session without a token: {r:?}");
    // /healthz needs no token.
    let r = h.get("/healthz");
    assert_eq!(r.status(), 200, "{r:?}");
    sa.call_ok("a still works");
}

// ============================================================================
// 8. GET streams, progress, Last-Event-ID
// ============================================================================

fn open_get(port: u16, sid: &str, last_event_id: Option<&str>) -> Sse {
    let mut h = Http::connect(port);
    let mut headers = vec![
        ("Accept", "text/event-stream"),
        ("Mcp-Session-Id", sid),
        ("MCP-Protocol-Version", VERSION),
    ];
    if let Some(l) = last_event_id {
        headers.push(("Last-Event-ID", l));
    }
    h.send_request("GET", "/mcp", &headers, b"")
        .expect("send GET");
    let head = h
        .read_head(Instant::now() + IO)
        .unwrap_or_else(|e| panic!("GET stream: no response head ({e:?})"));
    Sse::open(h, head)
}

#[test]
fn get_stream_and_replay() {
    let relay = start_relay(&[], &[]);
    let port = relay.port;
    let mut s = Session::open(port);

    // Progress travels on the POST's own SSE response, the reply last.
    let id = s.id();
    let resp = s.post(&call_with(
        json!(id),
        json!({"text": "with progress", "progress": 3, "interval_ms": 20}),
        Some(json!("tok-1")),
    ));
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert!(
        resp.head.is_sse(),
        "progress should turn the reply into SSE: {resp:?}"
    );
    let events = resp.events();
    assert_eq!(events.len(), 4, "3 progress events + the reply: {events:?}");
    for (i, ev) in events[..3].iter().enumerate() {
        let m = ev.json();
        assert_eq!(m["method"], "notifications/progress", "{m}");
        assert_eq!(m["params"]["progressToken"], "tok-1", "{m}");
        assert_eq!(m["params"]["progress"], json!(i + 1), "{m}");
    }
    let reply = events[3].json();
    assert_eq!(reply["id"], json!(id), "{reply}");
    assert_eq!(echo_text(&reply), Some("with progress"), "{reply}");
    // The connection is reusable after the stream ended.
    s.call_ok("after the stream");

    // A GET stream on the session.
    let mut first = open_get(port, &s.sid, None);
    assert_eq!(first.head.header("cache-control"), Some("no-cache"));
    assert!(matches!(
        first.next(Duration::from_millis(200)),
        SseNext::Timeout
    ));

    // Messages with no request stream to go to land on the GET stream: a
    // call whose POST connection is dropped (a dropped connection is not a
    // cancellation) still reports progress, there.
    // (The relay notices the reset only when a write fails, so the first
    // message after it is lost.)
    orphan_progress(port, &s.sid, "tok-2", 8, 100);
    let mut got: Vec<SseEvent> = Vec::new();
    let deadline = Instant::now() + SHORT;
    while got.len() < 3 && Instant::now() < deadline {
        match first.next(Duration::from_millis(300)) {
            SseNext::Event(ev) => got.push(ev),
            SseNext::Timeout => {}
            other => panic!("GET stream ended early: {other:?}"),
        }
    }
    assert!(
        got.len() >= 3,
        "progress of a call whose connection dropped did not reach the GET stream: {got:?}"
    );
    for ev in &got {
        let m = ev.json();
        assert_eq!(m["method"], "notifications/progress", "{m}");
        assert_eq!(m["params"]["progressToken"], "tok-2", "{m}");
        assert!(ev.id.is_some(), "GET stream events carry ids: {ev:?}");
    }
    let ids: Vec<u64> = got
        .iter()
        .map(|e| e.id.as_ref().unwrap().parse().expect("numeric event id"))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {ids:?}"
    );

    // Reconnect with Last-Event-ID: the old stream is closed, the new one
    // replays what came after that id.
    let resume_from = ids[0].to_string();
    let mut second = open_get(port, &s.sid, Some(&resume_from));
    let mut end_seen = false;
    let deadline = Instant::now() + SHORT;
    while Instant::now() < deadline {
        match first.next(Duration::from_millis(500)) {
            SseNext::Event(ev) => got.push(ev), // raced in before the switch
            SseNext::End => {
                end_seen = true;
                break;
            }
            other => panic!("first GET stream: expected its end, got {other:?}"),
        }
    }
    assert!(end_seen, "the replaced GET stream was not ended");
    let replayed = second.expect_event(SHORT, "the first replayed event");
    assert_eq!(
        replayed.id.as_deref(),
        Some(ids[1].to_string().as_str()),
        "replay must start right after Last-Event-ID {resume_from}: {replayed:?}"
    );
    assert_eq!(replayed, got[1], "replayed event differs from the original");
    // Let the orphaned call finish (8 x 100 ms), collecting the rest: the
    // remaining progress, then its reply (a dropped POST's replies go to the
    // GET stream), each exactly once.
    let mut rest = Vec::new();
    let deadline = Instant::now() + SHORT;
    while !rest
        .iter()
        .any(|e: &SseEvent| e.json().get("result").is_some())
    {
        assert!(
            Instant::now() < deadline,
            "the orphaned call's reply never reached the GET stream: {rest:?}"
        );
        match second.next(Duration::from_millis(200)) {
            SseNext::Event(ev) => rest.push(ev),
            SseNext::Timeout => {}
            other => panic!("second GET stream: {other:?}"),
        }
    }
    let reply = rest.last().unwrap().json();
    assert_eq!(reply["id"], "tok-2", "{reply}");
    assert_eq!(echo_text(&reply), Some("tok-2"), "{reply}");
    let all_ids: Vec<u64> = std::iter::once(&replayed)
        .chain(&rest)
        .map(event_id)
        .collect();
    assert!(
        all_ids.windows(2).all(|w| w[0] < w[1]),
        "duplicated or out-of-order events after the resume: {all_ids:?}"
    );

    // Last-Event-ID: 0 is accepted too, and replaces the stream again.
    let mut third = open_get(port, &s.sid, Some("0"));
    let deadline = Instant::now() + SHORT;
    loop {
        match second.next(Duration::from_millis(500)) {
            SseNext::End => break,
            SseNext::Event(_) => {}
            other => panic!("second GET stream: expected its end, got {other:?}"),
        }
        assert!(Instant::now() < deadline, "second stream not ended");
    }
    // It replays everything still buffered, from the first event on.
    let ev = third.expect_event(SHORT, "replay from 0");
    assert_eq!(
        ev.id.as_deref(),
        Some(ids[0].to_string().as_str()),
        "{ev:?}"
    );

    // DELETE ends the session: the stream ends, the next request gets 404.
    let del = s.delete();
    assert_eq!(del.status(), 200, "{del:?}");
    let deadline = Instant::now() + SHORT;
    loop {
        match third.next(Duration::from_millis(500)) {
            SseNext::End | SseNext::Closed(_) => break,
            SseNext::Event(_) => {}
            SseNext::Timeout => assert!(Instant::now() < deadline, "GET stream survived DELETE"),
        }
    }
    let (resp, _) = s.call("after delete");
    assert_eq!(resp.status(), 404, "{resp:?}");
    let mut h = Http::connect(port);
    let r = h.request(
        "GET",
        "/mcp",
        &[("Accept", "text/event-stream"), ("Mcp-Session-Id", &s.sid)],
        b"",
    );
    assert_eq!(r.status(), 404, "GET on a deleted session: {r:?}");
}

// ============================================================================
// 9. Legacy HTTP+SSE
// ============================================================================

#[test]
fn legacy_sse() {
    let relay = start_relay(&[], &[]);
    let port = relay.port;
    let mut h = Http::connect(port);
    h.send_request("GET", "/sse", &[("Accept", "text/event-stream")], b"")
        .expect("send");
    let head = h.read_head(Instant::now() + IO).expect("GET /sse head");
    let mut sse = Sse::open(h, head);
    let ev = sse.expect_event(SHORT, "the endpoint event");
    assert_eq!(ev.event.as_deref(), Some("endpoint"), "{ev:?}");
    assert!(
        ev.data.starts_with("/messages?session_id="),
        "endpoint data: {:?}",
        ev.data
    );
    let endpoint = ev.data.clone();

    let mut post = Http::connect(port);
    let send = |post: &mut Http, msg: &Value| {
        let r = post.request(
            "POST",
            &endpoint,
            &[("Content-Type", "application/json")],
            &serde_json::to_vec(msg).unwrap(),
        );
        assert_eq!(r.status(), 202, "POST {endpoint} {msg}: {r:?}");
    };
    send(&mut post, &initialize(json!("init")));
    let ev = sse.expect_event(SHORT, "the initialize reply");
    assert_eq!(ev.event.as_deref(), Some("message"), "{ev:?}");
    let reply = ev.json();
    assert_eq!(reply["id"], "init", "{reply}");
    assert!(reply["result"]["serverInfo"].is_object(), "{reply}");

    send(&mut post, &initialized());
    send(&mut post, &call(json!(7), "legacy ✓"));
    let ev = sse.expect_event(SHORT, "the tools/call reply");
    assert_eq!(ev.event.as_deref(), Some("message"), "{ev:?}");
    let reply = ev.json();
    assert_eq!(reply["id"], 7, "{reply}");
    assert_eq!(echo_text(&reply), Some("legacy ✓"), "{reply}");

    // Unknown legacy session: 404.
    let r = post.request(
        "POST",
        "/messages?session_id=nope",
        &[("Content-Type", "application/json")],
        &serde_json::to_vec(&call(json!(1), "x")).unwrap(),
    );
    assert_eq!(r.status(), 404, "{r:?}");
    // Closing the stream ends the session.
    drop(sse);
    relay.wait_metrics(SHORT, "the legacy session ended", |m| m.sessions() == 0);
}

// ============================================================================
// 10. Metrics and health
// ============================================================================

const FAMILIES: &[(&str, &str)] = &[
    ("mcp_relay_upstream_connections", "gauge"),
    ("mcp_relay_upstream_spawned_total", "counter"),
    ("mcp_relay_upstream_exited_total", "counter"),
    ("mcp_relay_pool_waiting", "gauge"),
    ("mcp_relay_sessions", "gauge"),
    ("mcp_relay_sessions_reclaimed_total", "counter"),
    ("mcp_relay_requests_total", "counter"),
    ("mcp_relay_request_duration_seconds", "histogram"),
    ("mcp_relay_timeouts_total", "counter"),
];

fn check_families(m: &Metrics) {
    for (name, kind) in FAMILIES {
        let family =
            m.1.family(name)
                .unwrap_or_else(|| panic!("no family {name}:\n{}", m.0));
        assert_eq!(family.kind, *kind, "type of {name}:\n{}", m.0);
        assert!(!family.help.is_empty(), "no HELP for {name}:\n{}", m.0);
    }
    for state in ["starting", "idle", "leased", "closing"] {
        m.conns(state);
    }
    m.spawned();
    m.waiting();
    m.sessions();
    assert!(
        m.get("mcp_relay_requests_total{outcome=\"ok\"}")
            .unwrap_or(0.0)
            >= 1.0,
        "{}",
        m.0
    );
    assert!(
        m.get("mcp_relay_request_duration_seconds_bucket{le=\"+Inf\"}")
            .is_some(),
        "{}",
        m.0
    );
    assert!(
        m.get("mcp_relay_request_duration_seconds_sum").is_some(),
        "{}",
        m.0
    );
    assert!(m.must("mcp_relay_request_duration_seconds_count") >= 1.0);
    assert!(m.exited() >= 1, "{}", m.0);
    assert!(
        m.get("mcp_relay_timeouts_total{kind=\"response_timeout\"}")
            .is_some(),
        "{}",
        m.0
    );
    // Every sample line parsed: Scrape::parse rejected nothing.
}

/// Traffic that gives every family a sample: a call, a session ended (its
/// process exits), a response timeout.
fn exercise(port: u16) {
    let mut s = Session::open(port);
    s.call_ok("metrics");
    let id = s.id();
    let resp = s.post(&call_with(
        json!(id),
        json!({"text": "h", "hang": true}),
        None,
    ));
    assert_eq!(error_kind(&resp.rpc()), Some("response_timeout"));
    assert_eq!(s.delete().status(), 200);
}

#[test]
fn metrics_and_healthz() {
    let relay = start_relay(&["--response-timeout", "200ms"], &[]);
    let mut h = relay.http();
    let r = h.get("/healthz");
    assert_eq!((r.status(), r.text().as_str()), (200, "ok\n"), "{r:?}");
    exercise(relay.port);
    let m = relay.wait_metrics(SHORT, "the process exit counted", |m| m.exited() >= 1);
    check_families(&m);
    let m = relay.metrics();
    assert_eq!(
        m.get(&format!(
            "mcp_relay_upstream_exited_total{{upstream=\"{NAME}\",reason=\"exit_0\"}}"
        )),
        Some(1.0),
        "{}",
        m.0
    );
}

/// Issue 15: `/metrics` is checked by a real Prometheus text-format parser
/// (`common::prom`), which rejects what Prometheus would reject, and reads
/// label values with quotes and backslashes back as they were.
#[test]
fn metrics_are_read_by_a_real_prometheus_parser() {
    for bad in [
        "mcp_relay_x{a=\"b\" 1\n",
        "mcp_relay_x one\n",
        "# TYPE mcp_relay_x nonsense\nmcp_relay_x 1\n",
    ] {
        assert!(
            Scrape::try_parse(bad.to_owned()).is_err(),
            "the parser accepted {bad:?}"
        );
    }
    let name = r#"we"ird\name"#;
    let relay = Relay::reverse(name).echo_server(&[]).start();
    let mut s = Session::open(relay.port);
    s.call_ok("counted");
    let m = Scrape::parse(relay.metrics_text());
    assert_eq!(
        m.value("mcp_relay_sessions", &[("upstream", name)]),
        Some(1.0),
        "{}",
        m.text
    );
    assert_eq!(
        m.family("mcp_relay_requests_total")
            .map(|f| f.kind.as_str()),
        Some("counter")
    );
}

#[test]
fn metrics_on_admin_listener() {
    let relay = Relay::reverse(NAME)
        .args(["--response-timeout", "200ms"])
        .echo_server(&[])
        .admin()
        .start();
    let admin = relay.admin_port.expect("admin port");
    exercise(relay.port);
    let mut a = Http::connect(admin);
    let r = a.get("/healthz");
    assert_eq!((r.status(), r.text().as_str()), (200, "ok\n"), "{r:?}");
    let m = relay.wait_metrics(SHORT, "the process exit counted", |m| m.exited() >= 1);
    check_families(&m);
    // Not on the main listener any more.
    let mut h = relay.http();
    let r = h.get("/metrics");
    assert_eq!(
        r.status(),
        404,
        "main listener /metrics with --admin: {r:?}"
    );
    // The admin listener serves nothing else.
    let r = a.request(
        "POST",
        "/mcp",
        &mcp_headers(None),
        &serde_json::to_vec(&initialize(json!(1))).unwrap(),
    );
    assert_eq!(r.status(), 404, "admin listener /mcp: {r:?}");
    // MCP still works on the main one.
    Session::open(relay.port).call_ok("main");
}

// ============================================================================
// More edges: pipelining, half-close, chunked bodies, limits, idle timeouts
// ============================================================================

#[test]
fn pipelined_requests_and_half_close() {
    let relay = start_relay(&[], &[]);
    let port = relay.port;
    let s = Session::open(port);

    // Three requests in one write: three responses, in order.
    let mut h = Http::connect(port);
    let mut bytes = Vec::new();
    for i in 0..3 {
        let body = serde_json::to_vec(&call(json!(i), &format!("pipelined {i}"))).unwrap();
        let mut head = format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (n, v) in mcp_headers(Some(&s.sid)) {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        bytes.extend(head.into_bytes());
        bytes.extend(body);
    }
    h.write(&bytes).expect("write");
    for i in 0..3 {
        let r = h
            .read_response(Instant::now() + IO)
            .unwrap_or_else(|e| panic!("pipelined response {i}: {e:?}"));
        assert_eq!(r.status(), 200, "{r:?}");
        let reply = r.rpc();
        assert_eq!(reply["id"], i, "{reply}");
        assert_eq!(echo_text(&reply), Some(format!("pipelined {i}").as_str()));
    }

    // A chunked request body.
    let body = serde_json::to_vec(&call(json!("chunked"), "chunked body")).unwrap();
    let (a, b) = body.split_at(body.len() / 2);
    let mut req =
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n".to_vec();
    for (n, v) in mcp_headers(Some(&s.sid)) {
        req.extend(format!("{n}: {v}\r\n").into_bytes());
    }
    req.extend(b"\r\n");
    for part in [a, b] {
        req.extend(format!("{:x}\r\n", part.len()).into_bytes());
        req.extend(part);
        req.extend(b"\r\n");
    }
    req.extend(b"0\r\n\r\n");
    h.write(&req).expect("write");
    let r = h
        .read_response(Instant::now() + IO)
        .expect("chunked request answered");
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(echo_text(&r.rpc()), Some("chunked body"));

    // A client that half-closes right after its request still gets the answer.
    let mut h = Http::connect(port);
    h.send_request(
        "POST",
        "/mcp",
        &mcp_headers(Some(&s.sid)),
        &serde_json::to_vec(&call(json!("hc"), "half closed")).unwrap(),
    )
    .expect("send");
    h.s.shutdown(Shutdown::Write).expect("shutdown(WR)");
    let r = h
        .read_response(Instant::now() + IO)
        .unwrap_or_else(|e| panic!("a half-closed client got no answer: {e:?}"));
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(echo_text(&r.rpc()), Some("half closed"));
}

/// A client that half-closes right after its request (FIN arriving with
/// the request bytes) gets its answer, and then the connection is closed:
/// nothing more can come on it. Several tries, since whether the FIN lands
/// in the same read as the request is a matter of timing.
#[test]
fn half_closed_client_is_closed_after_its_answer() {
    let relay = start_relay(&[], &[]);
    for attempt in 0..5 {
        let mut h = relay.http();
        h.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("write");
        h.s.shutdown(Shutdown::Write).expect("shutdown(WR)");
        let r = h
            .read_response(Instant::now() + IO)
            .unwrap_or_else(|e| panic!("attempt {attempt}: no answer: {e:?}"));
        assert_eq!(r.status(), 200, "{r:?}");
        let t0 = Instant::now();
        assert!(
            h.closed_by_peer(t0 + Duration::from_secs(2)),
            "attempt {attempt}: the relay answered a half-closed client but kept the \
             connection open for 2 s (it stays until --client-idle-timeout)"
        );
    }
}

#[test]
fn more_bad_requests() {
    let relay = start_relay(&["--max-body", "1KiB"], &[]);
    let port = relay.port;
    let s = Session::open(port);

    // A declared body over --max-body is refused from the head alone.
    let mut h = Http::connect(port);
    let mut head = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n".to_string();
    for (n, v) in mcp_headers(Some(&s.sid)) {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    h.write(head.as_bytes()).expect("write");
    let r = h
        .read_response(Instant::now() + Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("no early 413 for Content-Length over --max-body: {e:?}"));
    assert_eq!(r.status(), 413, "{r:?}");

    // Unsupported MCP-Protocol-Version.
    let mut h = Http::connect(port);
    let body = serde_json::to_vec(&call(json!(1), "x")).unwrap();
    let r = h.request(
        "POST",
        "/mcp",
        &[
            ("Content-Type", "application/json"),
            ("Accept", ACCEPT_BOTH),
            ("Mcp-Session-Id", &s.sid),
            ("MCP-Protocol-Version", "1999-01-01"),
        ],
        &body,
    );
    assert_eq!(r.status(), 400, "unsupported protocol version: {r:?}");

    // DELETE and GET need a session id; an unknown one is 404.
    let r = h.request("DELETE", "/mcp", &[], b"");
    assert_eq!(r.status(), 400, "DELETE without session: {r:?}");
    let r = h.request("DELETE", "/mcp", &[("Mcp-Session-Id", "nope")], b"");
    assert_eq!(r.status(), 404, "DELETE unknown session: {r:?}");
    let r = h.request("GET", "/mcp", &[("Accept", "text/event-stream")], b"");
    assert_eq!(r.status(), 400, "GET without session: {r:?}");
    // An unknown path.
    let r = h.get("/nope");
    assert_eq!(r.status(), 404, "{r:?}");

    // A response-only or notification POST is 202.
    let mut s2 = Session::open(port);
    let r = s2.post(&json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}));
    assert_eq!(r.status(), 202, "{r:?}");
    // Duplicate id in flight: the second is refused, the first unaffected.
    let mut first = Http::connect(port);
    first
        .send_request(
            "POST",
            "/mcp",
            &mcp_headers(Some(&s2.sid)),
            &serde_json::to_vec(&call_with(
                json!(9),
                json!({"text": "slow", "progress": 2, "interval_ms": 300}),
                Some(json!("p")),
            ))
            .unwrap(),
        )
        .expect("send");
    thread::sleep(Duration::from_millis(100));
    let r = s2.post(&call(json!(9), "dup"));
    assert_eq!(error_kind(&r.rpc()), Some("duplicate_id"), "{r:?}");
    let r = first
        .read_response(Instant::now() + IO)
        .expect("first answered");
    assert_eq!(echo_text(&r.rpc()), Some("slow"), "{r:?}");
    s2.call_ok("fine");
}

#[test]
fn session_idle_timeout_ends_session() {
    let relay = start_relay(&["--session-idle-timeout", "1s"], &[]);
    let mut s = Session::open(relay.port);
    s.call_ok("before");
    let m = relay.metrics();
    assert_eq!((m.sessions(), m.conns("leased")), (1, 1), "{}", m.0);
    // An open GET stream keeps a session alive.
    let mut stream = open_get(relay.port, &s.sid, None);
    thread::sleep(Duration::from_millis(1600));
    s.call_ok("kept alive by its stream");
    drop(stream.next(Duration::from_millis(1)));
    drop(stream);
    // Without one, it ends after 1 s of silence and its process is closed.
    let m = relay.wait_metrics(Duration::from_secs(4), "the idle session ended", |m| {
        m.sessions() == 0
    });
    assert_eq!(m.conns("leased"), 0, "{}", m.0);
    let (r, _) = s.call("after");
    assert_eq!(r.status(), 404, "{r:?}");
    relay.wait_metrics(SHORT, "its process exited", |m| m.exited() == 1);
}

#[test]
fn client_limits() {
    let relay = start_relay(
        &["--max-clients", "2", "--client-idle-timeout", "500ms"],
        &[],
    );
    let port = relay.port;
    let mut a = Http::connect(port);
    assert_eq!(a.get("/healthz").status(), 200);
    let mut b = Http::connect(port);
    assert_eq!(b.get("/healthz").status(), 200);
    // A third concurrent connection is turned away with 503.
    let mut c = Http::connect(port);
    let r = c
        .read_response(Instant::now() + SHORT)
        .unwrap_or_else(|e| panic!("no 503 over --max-clients: {e:?}"));
    assert_eq!(r.status(), 503, "{r:?}");
    // Idle keep-alive connections are closed after --client-idle-timeout...
    let t0 = Instant::now();
    assert!(
        a.closed_by_peer(t0 + Duration::from_secs(3)),
        "idle connection kept"
    );
    assert!(
        b.closed_by_peer(t0 + Duration::from_secs(3)),
        "idle connection kept"
    );
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");
    // ...which frees room for new ones.
    let mut d = Http::connect(port);
    assert_eq!(d.get("/healthz").status(), 200);
    let m = relay.metrics();
    assert!(
        m.get("mcp_relay_timeouts_total{kind=\"client_idle\"}")
            .unwrap_or(0.0)
            >= 2.0,
        "{}",
        m.0
    );
}

#[test]
fn shared_crash_ends_every_session() {
    // The relay's own initialize is the server's first request (no
    // `server/discover` probe: legacy); calls 1 and 2 are answered; call 3
    // crashes it.
    let relay = start_relay(
        &[
            "--pool",
            "shared",
            "--max-connections",
            "1",
            "--upstream-protocol",
            "legacy",
        ],
        &["--crash-after", "3"],
    );
    let mut a = Session::open(relay.port);
    let mut b = Session::open(relay.port);
    a.call_ok("a1");
    b.call_ok("b1");
    let (r, reply) = a.call("a2 crashes it");
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(error_kind(&reply), Some("upstream_closed"), "{reply}");
    assert_eq!(reply["id"], json!(a.next_id), "client id restored: {reply}");
    // Every session that lived on the process is gone.
    let (r, _) = a.call("a3");
    assert_eq!(r.status(), 404, "{r:?}");
    let (r, _) = b.call("b2");
    assert_eq!(r.status(), 404, "{r:?}");
    // A new process for new sessions.
    let mut c = Session::open(relay.port);
    c.call_ok("c1");
    let m = relay.metrics();
    assert_eq!(m.spawned(), 2, "{}", m.0);
    assert_eq!(m.sessions(), 1, "{}", m.0);
}

#[test]
fn shared_progress_tokens_stay_per_session() {
    let relay = start_relay(&["--pool", "shared", "--max-connections", "1"], &[]);
    let port = relay.port;
    // Two sessions on one process use the same request id and progress token.
    let results = run_threads(2, |t| {
        let mut s = Session::open(port);
        let mut out = Vec::new();
        for round in 0..5 {
            let text = format!("session {t} round {round}");
            let r = s.post(&call_with(
                json!(1),
                json!({"text": text, "progress": 3, "interval_ms": 5}),
                Some(json!("same-token")),
            ));
            assert_eq!(r.status(), 200, "{r:?}");
            let events = r.events();
            assert_eq!(events.len(), 4, "session {t}: {events:?}");
            for ev in &events[..3] {
                let m = ev.json();
                assert_eq!(m["params"]["progressToken"], "same-token", "{m}");
            }
            let reply = events[3].json();
            assert_eq!(reply["id"], 1, "{reply}");
            out.push(echo_text(&reply).map(str::to_string));
            assert_eq!(out.last().unwrap().as_deref(), Some(text.as_str()));
        }
        out.len()
    });
    assert_eq!(results, vec![5, 5]);
}

#[test]
fn shutdown_grace_expiry_fails_in_flight_request() {
    let relay = start_relay(
        &["--shutdown-grace", "500ms", "--kill-grace", "500ms"],
        &["--delay-ms", "5000"],
    );
    let mut s = Session::open(relay.port);
    let id = s.id();
    let sid = s.sid.clone();
    s.http
        .send_request(
            "POST",
            "/mcp",
            &mcp_headers(Some(&sid)),
            &serde_json::to_vec(&call(json!(id), "too slow")).unwrap(),
        )
        .expect("send");
    thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    relay.signal(libc::SIGTERM);
    // Through the grace the listener stays open for health checks, which
    // get 503, and new sessions are turned away.
    thread::sleep(Duration::from_millis(100));
    let mut late = relay.http();
    let r = late.get("/healthz");
    assert_eq!(r.status(), 503, "/healthz while shutting down: {r:?}");
    let mut late = relay.http();
    let r = post(&mut late, None, &initialize(json!("late")));
    assert_eq!(r.status(), 503, "initialize while shutting down: {r:?}");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    let r = s
        .http
        .read_response(Instant::now() + SHORT)
        .unwrap_or_else(|e| {
            panic!("in-flight request not answered at the end of the grace: {e:?}")
        });
    let took = t0.elapsed();
    assert_eq!(r.status(), 200, "{r:?}");
    let reply = r.rpc();
    assert_eq!(error_kind(&reply), Some("upstream_closed"), "{reply}");
    assert_eq!(reply["id"], json!(id), "{reply}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "answered {took:?} after SIGTERM"
    );
    // After the grace the listener is closed.
    wait_until(SHORT, "the listener closed after the grace", || {
        Http::try_connect(relay.port).is_err()
    });
    // The server sleeps through its stdin closing: kill grace, SIGTERM.
    let bound = Duration::from_millis(500 + 500 * 3 + 2000);
    let status = relay
        .wait_timeout(bound)
        .unwrap_or_else(|| panic!("relay still running {bound:?} after SIGTERM"));
    assert_eq!(status.code(), Some(0), "{status}");
    for (p, _) in relay.servers() {
        p.assert_gone("server after the relay's exit");
    }
}

// ============================================================================
// Resumption, batches, concurrency within a session, timeouts vs progress
// ============================================================================

/// Sends a progress-reporting call on its own connection and drops that
/// connection before the server reports: the progress has no request stream
/// left and goes to the session's GET stream.
fn orphan_progress(port: u16, sid: &str, id: &str, count: u64, interval_ms: u64) {
    let mut h = Http::connect(port);
    let body = serde_json::to_vec(&call_with(
        json!(id),
        json!({"text": id, "progress": count, "interval_ms": interval_ms}),
        Some(json!(id)),
    ))
    .unwrap();
    h.send_request("POST", "/mcp", &mcp_headers(Some(sid)), &body)
        .expect("send");
    // Let the relay take the request before the connection goes away.
    thread::sleep(Duration::from_millis(50));
    h.reset();
}

fn collect_events(sse: &mut Sse, n: usize, what: &str) -> Vec<SseEvent> {
    let mut got = Vec::new();
    let deadline = Instant::now() + SHORT;
    while got.len() < n {
        assert!(Instant::now() < deadline, "{what}: only {got:?}");
        match sse.next(Duration::from_millis(200)) {
            SseNext::Event(ev) => got.push(ev),
            SseNext::Timeout => {}
            other => panic!("{what}: stream ended: {other:?}"),
        }
    }
    got
}

fn event_id(ev: &SseEvent) -> u64 {
    // Events of POST response streams carry a `p` prefix (see the relay's
    // chunk_event_into); the number is the session's event counter either way.
    ev.id
        .as_deref()
        .map(|i| i.trim_start_matches('p'))
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("event without a numeric id: {ev:?}"))
}

/// MCP 2025-06-18 (Resumability): a client resumes a broken stream with GET +
/// `Last-Event-ID`; the server "MUST NOT replay messages that would have been
/// delivered on a different stream". Here the id is that of an event of a
/// POST's SSE response; the GET stream's later events were already delivered
/// on the GET stream and must not come again.
#[test]
fn resume_from_post_event_replays_only_that_stream() {
    let relay = start_relay(&[], &[]);
    let port = relay.port;
    let mut s = Session::open(port);
    let mut g1 = open_get(port, &s.sid, None);

    // A POST answered as SSE: one progress event, then the reply.
    let id = s.id();
    let r = s.post(&call_with(
        json!(id),
        json!({"text": "p", "progress": 1}),
        Some(json!("p")),
    ));
    let post_events = r.events();
    assert_eq!(post_events.len(), 2, "{post_events:?}");
    let post_first = event_id(&post_events[0]);

    // Then two messages on the GET stream, with later ids.
    // (The relay notices the reset only when a write fails, so the first
    // message after it is lost; the rest go to the GET stream.)
    orphan_progress(port, &s.sid, "orphan", 4, 100);
    let on_get = collect_events(&mut g1, 2, "orphaned progress on the GET stream");
    let get_ids: Vec<u64> = on_get.iter().map(event_id).collect();
    assert!(
        get_ids.iter().all(|&i| i > post_first),
        "{get_ids:?} vs {post_first}"
    );

    // The client lost the POST stream after its first event and resumes it.
    // Resume with the id exactly as the POST stream sent it.
    let post_first_raw = post_events[0].id.clone().expect("POST events carry ids");
    let mut resumed = open_get(port, &s.sid, Some(&post_first_raw));
    let mut replayed = Vec::new();
    while let SseNext::Event(ev) = resumed.next(Duration::from_millis(500)) {
        replayed.push(ev);
    }
    let again: Vec<&SseEvent> = replayed
        .iter()
        .filter(|e| on_get.iter().any(|g| g == *e))
        .collect();
    assert!(
        again.is_empty(),
        "resuming the POST stream (Last-Event-ID {post_first}) replayed {} event(s) \
         already delivered on the GET stream: {again:?}",
        again.len()
    );
}

/// Batches are allowed on a session that negotiated 2025-03-26.
fn batch_session(port: u16) -> Session {
    let mut http = Http::connect(port);
    let mut init = initialize(json!(0));
    init["params"]["protocolVersion"] = json!("2025-03-26");
    let resp = post(&mut http, None, &init);
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert_eq!(resp.rpc()["result"]["protocolVersion"], "2025-03-26");
    let sid = resp.header("mcp-session-id").unwrap().to_string();
    let r = post(&mut http, Some(&sid), &initialized());
    assert_eq!(r.status(), 202);
    Session {
        http,
        sid,
        next_id: 1,
        extra: Vec::new(),
    }
}

fn check_batches(pool: &str) {
    let relay = start_relay(&["--pool", pool], &[]);
    let mut s = batch_session(relay.port);
    let batch = json!([
        call(json!(1), "one"),
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "x", "progress": 1}},
        call(json!("two"), "two"),
    ]);
    let r = s.post(&batch);
    assert_eq!(r.status(), 200, "{r:?}");
    let replies = r.json();
    let arr = replies
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {replies}"));
    assert_eq!(arr.len(), 2, "{replies}");
    for (id, text) in [(json!(1), "one"), (json!("two"), "two")] {
        let reply = arr
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no reply to {id}: {replies}"));
        assert_eq!(echo_text(reply), Some(text), "{reply}");
    }
    // Only notifications: 202.
    let r = s.post(&json!([{"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}]));
    assert_eq!(r.status(), 202, "{r:?}");
}

#[test]
fn batch_on_2025_03_26_session() {
    check_batches("session");
}

#[test]
fn batch_on_2025_03_26_session_shared() {
    check_batches("shared");
}

/// docs/errors.md, `duplicate_id`: "A request reuses the id of one still in
/// flight. The new request is not forwarded; the first one is unaffected."
/// The same holds for two requests with one id inside a batch: one must be
/// answered with `duplicate_id` and only one forwarded.
#[test]
fn batch_with_duplicate_ids() {
    let log = TempFile::new("reverse-batch-dup", "server-log");
    let relay = start_relay(&[], &["--log", log.path_str()]);
    let mut s = batch_session(relay.port);
    let r = s.post(&json!([call(json!(5), "first"), call(json!(5), "second")]));
    assert_eq!(r.status(), 200, "{r:?}");
    let replies = r.json();
    // Both requests went to the server?
    thread::sleep(Duration::from_millis(200));
    let forwarded = log
        .read()
        .lines()
        .filter(|l| l.contains("\"tools/call\""))
        .count();
    let arr = replies.as_array().cloned().unwrap_or_default();
    assert!(
        forwarded == 1
            && arr.len() == 2
            && arr.iter().any(|m| error_kind(m) == Some("duplicate_id")),
        "batch with two requests of id 5: {forwarded} forwarded to the server, answer {replies}"
    );
}

#[test]
fn delete_fails_request_in_flight() {
    let relay = start_relay(&[], &[]);
    let mut s = Session::open(relay.port);
    let mut h = Http::connect(relay.port);
    h.send_request(
        "POST",
        "/mcp",
        &mcp_headers(Some(&s.sid)),
        &serde_json::to_vec(&call_with(
            json!("hang"),
            json!({"text": "h", "hang": true}),
            None,
        ))
        .unwrap(),
    )
    .expect("send");
    thread::sleep(Duration::from_millis(100));
    assert_eq!(s.delete().status(), 200);
    let r = h
        .read_response(Instant::now() + SHORT)
        .expect("in-flight request answered");
    let reply = r.rpc();
    assert_eq!(reply["id"], "hang", "{reply}");
    assert_eq!(error_kind(&reply), Some("upstream_closed"), "{reply}");
    relay.wait_metrics(SHORT, "the session's process closed", |m| {
        m.exited() == 1 && m.live() == 0
    });
}

#[test]
fn concurrent_requests_on_one_session() {
    for pool in ["session", "shared"] {
        let relay = start_relay(&["--pool", pool], &["--delay-ms", "20"]);
        let port = relay.port;
        let s = Session::open(port);
        let sid = s.sid.clone();
        let t0 = Instant::now();
        run_threads(4, |t| {
            let mut h = Http::connect(port);
            for i in 0..10 {
                let id = format!("{t}-{i}");
                let r = post(&mut h, Some(&sid), &call(json!(id), &id));
                assert_eq!(r.status(), 200, "{pool}: {r:?}");
                let reply = r.rpc();
                assert_eq!(reply["id"], json!(id), "{pool}: {reply}");
                assert_eq!(echo_text(&reply), Some(id.as_str()), "{pool}: {reply}");
            }
        });
        // The server is sequential: 40 x 20 ms at least.
        assert!(t0.elapsed() >= Duration::from_millis(800));
    }
}

#[test]
fn progress_restarts_response_timeout_until_max_request_time() {
    let relay = start_relay(
        &[
            "--response-timeout",
            "500ms",
            "--max-request-time",
            "1500ms",
        ],
        &[],
    );
    let mut s = Session::open(relay.port);
    // 5 x 200 ms = 1 s in all, > the response timeout, progress every 200 ms.
    let id = s.id();
    let r = s.post(&call_with(
        json!(id),
        json!({"text": "kept alive", "progress": 5, "interval_ms": 200}),
        Some(json!("k")),
    ));
    let events = r.events();
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(echo_text(&events[5].json()), Some("kept alive"));
    // 12 x 200 ms = 2.4 s: cut at --max-request-time however alive it is.
    let id = s.id();
    let t0 = Instant::now();
    let r = s.post(&call_with(
        json!(id),
        json!({"text": "too long", "progress": 12, "interval_ms": 200}),
        Some(json!("k2")),
    ));
    let took = t0.elapsed();
    let reply = r.rpc();
    assert_eq!(error_kind(&reply), Some("response_timeout"), "{reply}");
    assert!(
        took >= Duration::from_millis(1450) && took < Duration::from_millis(2300),
        "cut after {took:?}"
    );
}

#[test]
fn spawn_failure_answers_503() {
    let relay = Relay::reverse(NAME)
        .args(["--queue-timeout", "1s"])
        .command(["/nonexistent/mcp-server"])
        .start();
    let mut h = relay.http();
    let t0 = Instant::now();
    let r = post(&mut h, None, &initialize(json!(1)));
    let took = t0.elapsed();
    assert_eq!(r.status(), 503, "{r:?}");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    assert!(took < Duration::from_secs(3), "503 after {took:?}");
    let m = relay.metrics();
    assert!(
        m.get(&format!(
            "mcp_relay_upstream_exited_total{{upstream=\"{NAME}\",reason=\"spawn_failed\"}}"
        ))
        .unwrap_or(0.0)
            >= 1.0,
        "{}",
        m.0
    );
    assert_eq!(m.sessions(), 0, "{}", m.0);
    // The error names the cause, and comes at once rather than at the queue
    // timeout; the health check reports the upstream as failing.
    assert!(
        r.text().contains("cannot start") && r.text().contains("/nonexistent/mcp-server"),
        "{r:?}"
    );
    assert!(took < Duration::from_secs(1), "503 after {took:?}");
    let health = relay.http().get("/healthz");
    assert_eq!(health.status(), 503, "{health:?}");
    assert!(
        health.text().contains(NAME) && health.text().contains("cannot start"),
        "{health:?}"
    );
    // Still failing: a second initialize is refused at once too.
    let t0 = Instant::now();
    let r = post(&mut relay.http(), None, &initialize(json!(2)));
    assert_eq!(r.status(), 503, "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

#[test]
fn noisy_servers() {
    // A banner line on stdout and a stderr flood: both drained, neither
    // breaks the session.
    let relay = start_relay(&[], &["--banner", "--stderr-flood"]);
    let mut s = Session::open(relay.port);
    let t0 = Instant::now();
    for i in 0..20 {
        s.call_ok(&format!("call {i}"));
    }
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "20 calls took {took:?}");
    let mut h = relay.http();
    let t0 = Instant::now();
    assert_eq!(h.get("/healthz").status(), 200);
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(s.delete().status(), 200);
    relay.wait_metrics(SHORT, "the flooding server closed", |m| {
        m.live() == 0 && m.conns("closing") == 0
    });
}

// ============================================================================
// Known-bug probes: the session idle clock, replies of reset connections
// ============================================================================

/// `--session-idle-timeout` ends sessions "with no traffic this long". A
/// session whose initialize waited in the pool queue must not be ended as
/// idle right after that initialize is answered.
///
/// Timeline (idle 1 s): B is created at 0; its idle timer fires at 1 s while
/// it waits (busy: re-armed for 2 s); it is granted and answered at 1.5 s;
/// its client calls at 2.1 s. The relay's `last_active` is still B's
/// creation time (neither the grant, the answer nor a notification moves
/// it), so at 2 s B counts as idle for 2 s and is ended: the call gets 404.
#[test]
fn session_idle_clock_restarts_when_initialize_is_answered() {
    let relay = start_relay(
        &[
            "--max-connections",
            "1",
            "--session-idle-timeout",
            "1s",
            "--queue-timeout",
            "5s",
        ],
        &[],
    );
    let port = relay.port;
    let mut a = Session::open(port);
    // B waits for A's process.
    let mut b = relay.http();
    b.send_request(
        "POST",
        "/mcp",
        &mcp_headers(None),
        &serde_json::to_vec(&initialize(json!("b"))).unwrap(),
    )
    .expect("send");
    // A stays busy (a call every 300 ms) so that only B's clock is at stake.
    for _ in 0..5 {
        thread::sleep(Duration::from_millis(300));
        assert_eq!(a.call("keep-alive").0.status(), 200);
    }
    assert_eq!(a.delete().status(), 200);
    let r = b
        .read_response(Instant::now() + SHORT)
        .expect("B's initialize answered once A is gone");
    assert_eq!(r.status(), 200, "{r:?}");
    let answered = Instant::now();
    let sid = r.header("mcp-session-id").unwrap().to_string();
    assert_eq!(post(&mut b, Some(&sid), &initialized()).status(), 202);
    // 600 ms of silence: well under the 1 s idle timeout.
    thread::sleep(Duration::from_millis(600));
    let r = post(&mut b, Some(&sid), &call(json!(1), "still mine"));
    assert_eq!(
        r.status(),
        200,
        "session ended {:?} after its initialize was answered (idle timeout 1s): {r:?}",
        answered.elapsed()
    );
}

/// Same clock, a long request: idleness counts from its answer, not from
/// when it was sent.
///
/// Timeline (idle 2 s, the call takes 2.5 s): the timer fires at 2 s (busy:
/// re-armed for 4 s); the answer comes at 2.5 s; `last_active` is the call's
/// start (0), so at 4 s the session is ended, 1.5 s after its answer. The
/// next call at 4.25 s gets 404; a fixed relay keeps it until 4.5 s.
#[test]
fn session_idle_clock_restarts_when_a_request_is_answered() {
    let relay = start_relay(&["--session-idle-timeout", "2s"], &["--delay-ms", "2500"]);
    let mut s = Session::open(relay.port);
    s.call_ok("takes 2.5 s");
    let answered = Instant::now();
    thread::sleep(Duration::from_millis(1750));
    let id = s.id();
    let r = s.post(&call(json!(id), "again"));
    assert_eq!(
        r.status(),
        200,
        "session ended {:?} after its last answer (idle timeout 2s): {r:?}",
        answered.elapsed()
    );
}

/// Notifications are traffic too: Streamable HTTP notifications (and
/// responses) do not move the session's `last_active`, so a session that
/// only sends notifications is ended after the idle timeout.
#[test]
fn session_idle_clock_counts_notifications() {
    let relay = start_relay(&["--session-idle-timeout", "1s"], &[]);
    let mut s = Session::open(relay.port);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1600) {
        let r = s.post(&json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}));
        assert_eq!(
            r.status(),
            202,
            "session ended while it sent a notification every 300 ms (idle timeout 1s), \
             {:?} after it opened: {r:?}",
            t0.elapsed()
        );
        thread::sleep(Duration::from_millis(300));
    }
    s.call_ok("still here");
}

/// Since 61b6eaf a dropped POST's replies go to the session's GET stream.
/// A connection closed by a TCP reset is certainly dropped (it cannot be a
/// half-close), yet the relay treats the read error like a FIN (a possible
/// half-close), keeps the connection, writes the reply into it, and only
/// then sees the write fail; by then the exchange is over (state Idle), so
/// nothing is re-routed and the reply is lost.
#[test]
fn reply_of_reset_post_goes_to_get_stream() {
    let relay = start_relay(&[], &["--delay-ms", "300"]);
    let port = relay.port;
    let s = Session::open(port);
    let mut g = open_get(port, &s.sid, None);
    let mut h = Http::connect(port);
    h.send_request(
        "POST",
        "/mcp",
        &mcp_headers(Some(&s.sid)),
        &serde_json::to_vec(&call(json!("lost"), "lost?")).unwrap(),
    )
    .expect("send");
    thread::sleep(Duration::from_millis(100));
    h.reset();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match g.next(Duration::from_millis(100)) {
            SseNext::Event(ev) => {
                let m = ev.json();
                assert_eq!(m["id"], "lost", "{m}");
                assert_eq!(echo_text(&m), Some("lost?"), "{m}");
                break;
            }
            SseNext::Timeout => assert!(
                Instant::now() < deadline,
                "the reply to a POST whose connection was reset never reached the GET stream"
            ),
            other => panic!("GET stream: {other:?}"),
        }
    }
}

// ============================================================================
// --config: several upstreams on /mcp/NAME
// ============================================================================

/// `reverse --config relay.json`: each upstream is served on its own route
/// with its own pool, a session belongs to its route, and the metrics name
/// every upstream.
#[test]
fn config_file_serves_each_upstream_on_its_route() {
    let dir = std::env::temp_dir().join(format!("mcp-relay-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg_path = dir.join("relay.json");
    let port = free_port();
    let echo = echo_server().to_str().expect("utf-8 path").to_string();
    let doc = json!({
        "listen": format!("127.0.0.1:{port}"),
        "response_timeout": "400ms",
        "upstreams": {
            "plain": {"command": [echo.clone()]},
            "pooled": {"command": [echo.clone()], "pool": "shared", "max_connections": 1},
            "slow": {"command": [echo, "--never-answer"], "response_timeout": "300ms"}
        }
    });
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&doc).unwrap()).expect("write config");
    let mut child = Command::new(RELAY)
        .args(["reverse", "--config"])
        .arg(&cfg_path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn relay");
    let guard = scopeguard(child.id() as i32);
    // Ready when /healthz answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "relay with --config did not come up"
        );
        if let Ok(mut h) = Http::try_connect(port)
            && let Ok(r) = h.try_request("GET", "/healthz", &[("Connection", "close")], b"", IO)
            && r.status() == 200
        {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let open = |name: &str| -> (Http, String) {
        let mut h = Http::connect(port);
        let body = serde_json::to_vec(&initialize(json!(0))).unwrap();
        let r = h
            .try_request(
                "POST",
                &format!("/mcp/{name}"),
                &mcp_headers(None),
                &body,
                IO,
            )
            .expect("initialize");
        assert_eq!(r.status(), 200, "{name}: {r:?}");
        let sid = r.header("mcp-session-id").expect("session id").to_string();
        (h, sid)
    };
    let call_on = |h: &mut Http, name: &str, sid: &str, text: &str| -> Response {
        let msg = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                         "params": {"name": "echo", "arguments": {"text": text}}});
        let body = serde_json::to_vec(&msg).unwrap();
        h.try_request(
            "POST",
            &format!("/mcp/{name}"),
            &mcp_headers(Some(sid)),
            &body,
            Duration::from_secs(5),
        )
        .expect("call")
    };
    let (mut a, sa) = open("plain");
    let r = call_on(&mut a, "plain", &sa, "to plain");
    assert_eq!(r.rpc()["result"]["content"][0]["text"], "to plain", "{r:?}");
    let (mut b, sb) = open("pooled");
    let r = call_on(&mut b, "pooled", &sb, "to pooled");
    assert_eq!(
        r.rpc()["result"]["content"][0]["text"],
        "to pooled",
        "{r:?}"
    );
    // A session belongs to its route: elsewhere it is unknown.
    assert_eq!(call_on(&mut b, "plain", &sb, "wrong route").status(), 404);
    // Each upstream's own knobs: "slow" times out at its 300 ms.
    let (mut c, sc) = open("slow");
    let started = Instant::now();
    let r = call_on(&mut c, "slow", &sc, "never");
    let err = &r.rpc()["error"];
    assert_eq!(err["data"]["kind"], "response_timeout", "{r:?}");
    assert_eq!(err["data"]["upstream"], "slow", "{r:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Unknown routes and the bare path are 404.
    let mut h = Http::connect(port);
    assert_eq!(
        h.request("GET", "/mcp/nope", &[("Accept", "text/event-stream")], b"")
            .status(),
        404
    );
    // Metrics name every upstream.
    let mut h = Http::connect(port);
    let m = Scrape::parse(
        h.request("GET", "/metrics", &[("Connection", "close")], b"")
            .text(),
    );
    for name in ["plain", "pooled", "slow"] {
        assert_eq!(
            m.value("mcp_relay_sessions", &[("upstream", name)]),
            Some(1.0),
            "{name} missing in:\n{}",
            m.text
        );
    }
    drop(guard);
    let status = wait_exit(&mut child, Duration::from_secs(15)).expect("relay exits after SIGTERM");
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);

    /// SIGTERM on drop, so a failing assertion does not leave the relay.
    struct Term(i32);
    impl Drop for Term {
        fn drop(&mut self) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.0, libc::SIGTERM) };
        }
    }
    fn scopeguard(pid: i32) -> Term {
        Term(pid)
    }
    fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

// ============================================================================
// Out of file descriptors: accept pauses instead of spinning
// ============================================================================

/// With its descriptor limit reached, `accept` fails with EMFILE. The relay
/// must neither spin on the still-readable listener nor go deaf: it pauses
/// accepting on a timer and serves again as soon as descriptors free up.
#[test]
fn emfile_pauses_accepting_and_recovers() {
    let relay = Relay::reverse(NAME)
        .args(["--log-level", "warn"])
        .echo_server(&[])
        .max_open_files(40)
        .start();
    let (port, pid) = (relay.port, relay.pid);
    // Hold more connections than the relay has descriptors for.
    let held: Vec<TcpStream> = (0..60)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(
        held.len() >= 40,
        "could only open {} connections",
        held.len()
    );
    thread::sleep(Duration::from_millis(300));
    let cpu_before = cpu_seconds(pid);
    thread::sleep(Duration::from_secs(1));
    let spent = cpu_seconds(pid) - cpu_before;
    // Spinning on a readable listener would burn a whole core; pausing
    // 100 ms between attempts costs next to nothing.
    assert!(
        spent < 0.3,
        "relay used {spent:.2}s of CPU in 1 s while out of descriptors"
    );
    let lines: Vec<String> = relay.stderr_lines().into_iter().map(|l| l.1).collect();
    assert!(
        lines.iter().any(|l| l.contains("pausing")),
        "no pause was logged:\n{}",
        lines.join("\n")
    );
    drop(held);
    // Descriptors are back: the relay serves again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(
            Instant::now() < deadline,
            "relay did not recover after EMFILE"
        );
        if let Ok(mut h) = Http::try_connect(port)
            && let Ok(r) = h.try_request("GET", "/healthz", &[("Connection", "close")], b"", IO)
            && r.status() == 200
        {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// `--sse-keepalive`: an idle GET stream gets an SSE comment at that
/// interval, so proxies with idle timeouts do not cut it; events still flow.
#[test]
fn idle_streams_get_keepalive_comments() {
    let relay = start_relay(&["--sse-keepalive", "200ms"], &[]);
    let port = relay.port;
    let s = Session::open(port);
    let mut h = Http::connect(port);
    let headers = [
        ("Accept", "text/event-stream"),
        ("Mcp-Session-Id", s.sid.as_str()),
        ("MCP-Protocol-Version", VERSION),
    ];
    h.send_request("GET", "/mcp", &headers, b"")
        .expect("send GET");
    let head = h.read_head(Instant::now() + IO).expect("GET head");
    assert!(head.is_sse(), "{head:?}");
    // Two comments within ~2 intervals (generous bound for a busy box).
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut comments = 0;
    while comments < 2 {
        let chunk = h
            .next_chunk(deadline)
            .unwrap_or_else(|e| panic!("no keep-alive comment in time ({e:?}); got {comments}"))
            .expect("stream ended");
        let text = String::from_utf8_lossy(&chunk).into_owned();
        assert!(
            text.starts_with(": keep-alive"),
            "unexpected chunk {text:?}"
        );
        comments += 1;
    }
}

/// Issue 11, class 1: a POST body that is one JSON value with raw newlines
/// (pretty-printed) reaches the server as one line, in both pool modes. It
/// used to be written as is: the server read several broken messages, the
/// request was never answered, and in shared mode a line of it could pass as
/// a request under another session's upstream id.
#[test]
fn pretty_printed_requests_reach_the_server_as_one_line() {
    for mode in ["session", "shared"] {
        let relay = start_relay(&["--pool", mode, "--response-timeout", "3s"], &[]);
        let mut s = Session::open(relay.port);
        // The second line of this body is, on its own, a complete request.
        let inner = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"injected"}}}"#;
        let body = format!(
            "{{\r\n  \"jsonrpc\": \"2.0\",\n  \"id\": 41,\n  \"method\": \"tools/call\",\n  \"params\": {{\n    \"name\": \"echo\",\n    \"arguments\": {{\"text\": \"pretty\", \"extra\":\n{inner}\n}}\n  }}\n}}"
        );
        let sid = s.sid.clone();
        let t0 = Instant::now();
        let r = s
            .http
            .request("POST", "/mcp", &mcp_headers(Some(&sid)), body.as_bytes());
        assert_eq!(r.status(), 200, "{mode}: {r:?}");
        let reply = r.rpc();
        assert_eq!(reply["id"], 41, "{mode}: {reply}");
        assert_eq!(echo_text(&reply), Some("pretty"), "{mode}: {reply}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{mode}: {:?}",
            t0.elapsed()
        );
        // Nothing else came of it: the session works and no stray answer
        // is waiting for it.
        s.call_ok("after");
    }
}

// ============================================================================
// Issue 12: sessions never ended (reclaim) and the shared cold start
// ============================================================================

fn reclaimed(m: &Metrics) -> u64 {
    m.must(&format!(
        "mcp_relay_sessions_reclaimed_total{{upstream=\"{NAME}\"}}"
    )) as u64
}

/// An `initialize` on a new connection; its HTTP status.
fn initialize_status(port: u16) -> u16 {
    let mut http = Http::connect(port);
    post(&mut http, None, &initialize(json!(0))).status()
}

/// What the MCP conformance runner does: 30 sessions one after another,
/// none ever ended, with the default flags (16 processes, a 5 s queue
/// timeout, a 2 s reclaim age). Sessions 17 to 30 are each served by
/// reclaiming the least recently active idle session; a reclaimed session's
/// next request gets 404, and initializing again works.
#[test]
fn sessions_never_ended_are_reclaimed_for_new_ones() {
    const SESSIONS: usize = 30;
    const MAX: usize = 16;
    let relay = start_relay(&[], &[]);
    let mut sessions: Vec<Session> = (0..SESSIONS)
        .map(|i| {
            let mut s = Session::open(relay.port);
            s.call_ok(&format!("session {i}"));
            s
        })
        .collect();
    let m = relay.metrics();
    assert_eq!(reclaimed(&m), (SESSIONS - MAX) as u64, "{}", m.0);
    assert_eq!((m.sessions(), m.conns("leased")), (MAX as u64, MAX as u64));
    assert_eq!(
        m.get("mcp_relay_requests_total{outcome=\"queue_timeout\"}"),
        None
    );
    assert_eq!(
        m.get("mcp_relay_requests_total{outcome=\"queue_full\"}"),
        None
    );
    // The oldest went first: sessions 0..14 are gone, the rest are served.
    sessions[SESSIONS - 1].call_ok("still here");
    let (r, _) = sessions[0].call("gone?");
    assert_eq!(r.status(), 404, "{r:?}");
    // MCP: on 404 the client initializes a new session. The pool is full,
    // so the least recently active of the rest (session 14) gives way.
    let mut again = Session::open(relay.port);
    again.call_ok("back");
    assert_eq!(reclaimed(&relay.metrics()), (SESSIONS - MAX + 1) as u64);
    let (r, _) = sessions[SESSIONS - MAX].call("gone too?");
    assert_eq!(r.status(), 404, "{r:?}");
    sessions[SESSIONS - MAX + 1].call_ok("kept");
    let log = relay.stderr_text();
    assert_eq!(
        log.matches(" reclaimed after ").count(),
        SESSIONS - MAX + 1,
        "{log}"
    );
}

/// `--session-reclaim-age`: `never` keeps the old behaviour (503 after the
/// queue timeout), `0` takes any idle session at once, a busy session (a
/// request in flight, an open stream) is never taken, and a session not yet
/// idle long enough is taken as soon as it is.
#[test]
fn session_reclaim_age_never_zero_busy_and_not_yet() {
    let one = ["--max-connections", "1", "--queue-timeout", "500ms"];
    // never: the waiter times out.
    let relay = start_relay(
        &[&one[..], &["--session-reclaim-age", "never"]].concat(),
        &[],
    );
    let mut a = Session::open(relay.port);
    assert_eq!(initialize_status(relay.port), 503);
    a.call_ok("kept");
    assert_eq!(reclaimed(&relay.metrics()), 0);
    drop(relay);

    // 0: the idle session gives way at once.
    let relay = start_relay(&[&one[..], &["--session-reclaim-age", "0"]].concat(), &[]);
    let mut a = Session::open(relay.port);
    let mut b = Session::open(relay.port);
    b.call_ok("b");
    assert_eq!(a.call("a").0.status(), 404);
    // Busy with an open GET stream: not taken.
    let stream = open_get(relay.port, &b.sid, None);
    assert_eq!(initialize_status(relay.port), 503);
    b.call_ok("b kept");
    // Busy with a request in flight: not taken either.
    drop(stream);
    let mut hung = Http::connect(relay.port);
    let body = serde_json::to_vec(&call_with(
        json!("h"),
        json!({"text": "h", "hang": true}),
        None,
    ))
    .unwrap();
    hung.send_request("POST", "/mcp", &mcp_headers(Some(&b.sid)), &body)
        .expect("send");
    // The call is in the relay's socket before the initialize connects, so
    // it is in flight by the end of the turn that queues the initialize
    // (where reclaiming is decided).
    assert_eq!(initialize_status(relay.port), 503);
    b.call_ok("b still kept");
    assert_eq!(reclaimed(&relay.metrics()), 1);
    drop(relay);

    // 1s: the waiter is served once the idle session is 1 s idle (not at
    // once; the lower bound leaves room for a slow test thread), well before
    // its 5 s queue timeout, with nothing but the relay's own timer to wake
    // it up.
    let relay = start_relay(
        &["--max-connections", "1", "--session-reclaim-age", "1s"],
        &[],
    );
    let mut a = Session::open(relay.port);
    a.call_ok("a");
    let t = Instant::now();
    let mut b = Session::open(relay.port);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(4),
        "served after {waited:?}"
    );
    b.call_ok("b");
    assert_eq!(a.call("a").0.status(), 404);
    assert_eq!(reclaimed(&relay.metrics()), 1);
}

/// Shared mode, one process, cold: 50 sessions arrive at once while the
/// process starts. Every one waits for it (not `--max-waiting`, 4 here) and
/// is served; exactly one process is spawned. Twenty rounds, a fresh relay
/// each, since how many arrive before the process is ready varies.
#[test]
fn shared_cold_start_burst_waits_for_the_one_process() {
    const ROUNDS: usize = 20;
    const SESSIONS: usize = 50;
    for round in 0..ROUNDS {
        let relay = start_relay(&["--pool", "shared", "--max-connections", "1"], &[]);
        let port = relay.port;
        let go = std::sync::Barrier::new(SESSIONS);
        run_threads(SESSIONS, |i| {
            let mut http = Http::connect(port);
            go.wait();
            let resp = post(&mut http, None, &initialize(json!(0)));
            assert_eq!(resp.status(), 200, "round {round}, session {i}: {resp:?}");
            let sid = resp
                .header("mcp-session-id")
                .expect("session id")
                .to_string();
            let text = format!("round {round} session {i}");
            let reply = post(&mut http, Some(&sid), &call(json!(1), &text)).rpc();
            assert_eq!(echo_text(&reply), Some(text.as_str()), "{reply}");
        });
        let m = relay.metrics();
        assert_eq!(m.spawned(), 1, "round {round}: {}", m.0);
        assert_eq!(m.sessions(), SESSIONS as u64, "round {round}: {}", m.0);
        // The log line naming the process may trail the metrics a little.
        relay.server(0);
        assert_eq!(
            relay.servers().len(),
            1,
            "round {round}\n{}",
            relay.stderr_dump()
        );
    }
}

/// Issue 11, class 13: a POST whose method is not a string is answered
/// -32600 at once and not forwarded (it used to reach the server, and the
/// client waited for an answer that never came).
#[test]
fn a_method_that_is_not_a_string_is_an_invalid_request() {
    for mode in ["session", "shared"] {
        let relay = start_relay(&["--pool", mode, "--response-timeout", "3s"], &[]);
        let mut s = Session::open(relay.port);
        let t0 = Instant::now();
        let r = s.post(&json!({"jsonrpc": "2.0", "id": 5, "method": 5}));
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "{mode}: {:?}",
            t0.elapsed()
        );
        assert_eq!(r.status(), 400, "{mode}: {r:?}");
        assert_eq!(r.rpc()["error"]["code"], -32600, "{mode}: {r:?}");
        s.call_ok("after");
    }
}

/// Issue 11, class 12: a server's reply that is not UTF-8 never reaches the
/// client; its request is answered with `invalid_reply` instead, in both pool
/// modes. It used to be passed on as a 200 `application/json` body.
#[test]
fn a_reply_that_is_not_utf8_becomes_an_error_for_its_request() {
    for mode in ["session", "shared"] {
        let relay = start_relay(&["--pool", mode], &["--invalid-utf8"]);
        let mut s = Session::open(relay.port);
        let (r, reply) = s.call("mangled");
        assert_eq!(r.status(), 200, "{mode}: {r:?}");
        assert_eq!(error_kind(&reply), Some("invalid_reply"), "{mode}: {reply}");
        assert_eq!(reply["error"]["code"], -32007, "{mode}: {reply}");
    }
}

/// A `notifications/cancelled` for request `id` of session `sid`.
fn cancel_of(id: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
           "params": {"requestId": id, "reason": "test cancels"}})
}

/// Issue 13: a request the client cancelled stayed in flight until the
/// session ended, when its still open POST got an `upstream_closed` error
/// (after the Python SDK 1.x client had closed its read stream: it raised).
/// Now the client's cancel ends the request's exchange at once and without
/// a JSON-RPC answer (MCP: the receiver of a cancellation does not answer
/// it): a POST that had sent nothing yet gets an empty event stream, one
/// whose stream had started is sent nothing more for that request (the
/// server's late reply is dropped) and ends when the session does, with no
/// answer. The cancel still reaches the server.
fn check_cancel_ends_the_exchange(pool: &str) {
    let log = TempFile::new("reverse-cancel", &format!("server-log-{pool}"));
    let relay = start_relay(&["--pool", pool], &["--log", log.path_str()]);
    let mut s = Session::open(relay.port);

    // Nothing sent yet for the request: an empty event stream, at once.
    let mut h = Http::connect(relay.port);
    let body = call_with(json!("c1"), json!({"text": "h", "hang": true}), None);
    h.send_request(
        "POST",
        "/mcp",
        &mcp_headers(Some(&s.sid)),
        &serde_json::to_vec(&body).unwrap(),
    )
    .expect("send");
    log.wait_for(SHORT, "the call at the server", |t| t.contains("\"hang\""));
    let ack = s.post(&cancel_of("c1"));
    assert_eq!(ack.status(), 202, "{ack:?}");
    let r = h
        .read_response(Instant::now() + SHORT)
        .expect("the cancelled request's POST ends at once");
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("text/event-stream"),
        "{pool}: {r:?}"
    );
    assert!(r.events().is_empty(), "{pool}: answered: {:?}", r.events());
    log.wait_for(SHORT, "the cancel at the server", |t| {
        t.contains("notifications/cancelled")
    });

    // The stream had started (progress): nothing more for that request,
    // not the server's late reply either; the stream ends with the session.
    let mut h = Http::connect(relay.port);
    let body = call_with(
        json!("c2"),
        json!({"text": "late", "progress": 3, "interval_ms": 300}),
        Some(json!("tok")),
    );
    h.send_request(
        "POST",
        "/mcp",
        &mcp_headers(Some(&s.sid)),
        &serde_json::to_vec(&body).unwrap(),
    )
    .expect("send");
    let head = h.read_head(Instant::now() + SHORT).expect("SSE head");
    let mut sse = Sse::open(h, head);
    let first = sse.expect_event(SHORT, "first progress");
    assert_eq!(first.json()["method"], "notifications/progress");
    let ack = s.post(&cancel_of("c2"));
    assert_eq!(ack.status(), 202, "{ack:?}");
    // The server answers at ~900 ms; nothing of it may come.
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        match sse.next(Duration::from_millis(100)) {
            SseNext::Timeout => {}
            SseNext::Event(ev) => {
                assert_eq!(
                    ev.json()["method"],
                    "notifications/progress",
                    "{pool}: the cancelled request was answered: {ev:?}"
                );
            }
            other => panic!("{pool}: the stream ended early: {other:?}"),
        }
    }
    s.call_ok("still there");
    relay.wait_metrics(SHORT, "both cancels counted", |m| {
        m.get("mcp_relay_requests_total{outcome=\"cancelled\"}") == Some(2.0)
    });
    if pool == "session" {
        // (The shared pool's mux drops it before the front sees it.)
        relay.wait_metrics(SHORT, "the late reply dropped", |m| {
            m.get("mcp_relay_messages_dropped_total{reason=\"late_reply\"}") == Some(1.0)
        });
    }
    assert_eq!(s.delete().status(), 200);
    match sse.next(SHORT) {
        SseNext::End => {}
        other => panic!("{pool}: the stream did not end with the session: {other:?}"),
    }
}

#[test]
fn cancel_ends_the_exchange_session_pool() {
    check_cancel_ends_the_exchange("session");
}

#[test]
fn cancel_ends_the_exchange_shared_pool() {
    check_cancel_ends_the_exchange("shared");
}
