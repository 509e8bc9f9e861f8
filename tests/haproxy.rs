//! Scale-out: HAProxy in front of three `mcp-relay reverse` processes, with
//! the configuration of `examples/deploy/haproxy.cfg` (test ports, faster
//! health checks; the stickiness, health check, retry and persistence logic
//! are the example's own lines).
//!
//! - Thirty sessions of twenty calls each, from several threads, half of the
//!   calls on fresh connections: every call succeeds (a call that reached a
//!   relay other than its session's would get 404), each relay's `/metrics`
//!   accounts for exactly the sessions and requests that live there, and
//!   every relay got some.
//! - One relay gets SIGTERM with a slow call in flight (streamed as SSE
//!   through HAProxy, event by event): its `/healthz` answers 503, HAProxy
//!   marks it DOWN, new sessions go to the others (even those that reached it
//!   first: its 503 is retried elsewhere), its own sessions are still served
//!   during the grace, and once it has exited they get 404 (from the relay
//!   their request is redispatched to) and initialize again on the others.
//!   The other relays' sessions see no error at any time.
//! - A second relay is stopped while idle: it exits at once, before HAProxy's
//!   check notices; new sessions are redispatched, its sessions get 404 and
//!   initialize again on the last relay.
//! - A GET stream and a legacy HTTP+SSE session work through the same
//!   configuration.
//!
//! HAProxy is provisioned by the test itself (`.ci/install-deps.sh`: the one
//! on PATH or /usr/sbin, else Debian's package); without it the test fails,
//! saying what to install. Everything listens on 127.0.0.1 on ports found free by binding
//! port 0; every wait is bounded; every process is killed and reaped on drop.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::http::{ACCEPT_BOTH as ACCEPT, Http, IO, Response, SseParser, VERSION, Wait};
use common::prom::Scrape;
use common::relay::Relay;
use common::{
    SHORT, StderrLines, call, call_with, collect_lines, echo_text, error_kind, free_port,
    initialize, initialized,
};

const RELAYS: usize = 3;
const SESSIONS: usize = 30;
const CALLS: usize = 20;
const THREADS: usize = 6;
/// New sessions opened while the stopped relay drains.
const BURST: usize = 6;
/// The slow call: this many progress notifications, this far apart.
const SLOW_STEPS: u64 = 10;
const SLOW_INTERVAL_MS: u64 = 150;
/// Room for the slow call (1.5 s) to finish even on a loaded CI machine.
const SHUTDOWN_GRACE: &str = "5s";
const KILL_GRACE: &str = "500ms";

// ============================================================================
// HTTP (the client is tests/common/http.rs)
// ============================================================================

/// `GET target` on a new connection that closes afterwards.
fn get(port: u16, target: &str) -> Result<Response, Wait> {
    let mut h = Http::try_connect(port).map_err(|e| Wait::Err(e.kind()))?;
    h.try_request("GET", target, &[("Connection", "close")], b"", IO)
}

/// A POST of one MCP message on `http`.
fn post(http: &mut Http, sid: Option<&str>, msg: &Value, close: bool) -> Result<Response, Wait> {
    let mut headers = vec![("Content-Type", "application/json"), ("Accept", ACCEPT)];
    if let Some(s) = sid {
        headers.push(("Mcp-Session-Id", s));
        headers.push(("MCP-Protocol-Version", VERSION));
    }
    if close {
        headers.push(("Connection", "close"));
    }
    http.try_request(
        "POST",
        "/mcp",
        &headers,
        &serde_json::to_vec(msg).unwrap(),
        IO,
    )
}

// ============================================================================
// Client sessions
// ============================================================================

/// What became of one call.
#[derive(Debug)]
enum Outcome {
    Ok,
    /// The session is gone (404, 503, or a relay error in a 200): the client
    /// must initialize again. The text says which.
    Lost(String),
    /// Anything else: never acceptable.
    Bad(String),
}

struct Sess {
    idx: usize,
    sid: String,
    /// The keep-alive connection to HAProxy (or the relay), if open.
    http: Option<Http>,
    next_id: u64,
}

impl Sess {
    /// `initialize` + `notifications/initialized` through `port`.
    fn open(port: u16, idx: usize) -> Result<Sess, String> {
        let mut http = Http::try_connect(port).map_err(|e| format!("connect: {e}"))?;
        let resp = post(&mut http, None, &initialize(json!(0)), false)
            .map_err(|e| format!("initialize: no response ({e:?})"))?;
        if resp.status() != 200 {
            return Err(format!("initialize: {} {}", resp.status(), resp.text()));
        }
        let sid = resp
            .head
            .header("mcp-session-id")
            .ok_or_else(|| format!("initialize reply without Mcp-Session-Id: {resp:?}"))?
            .to_string();
        if resp
            .try_rpc()
            .is_none_or(|r| !r["result"]["serverInfo"].is_object())
        {
            return Err(format!("initialize reply: {}", resp.text()));
        }
        let keep = !resp.head.closes();
        let mut http = if keep {
            http
        } else {
            Http::try_connect(port).map_err(|e| format!("connect: {e}"))?
        };
        let ack = post(&mut http, Some(&sid), &initialized(), false)
            .map_err(|e| format!("notifications/initialized: no response ({e:?})"))?;
        if ack.status() != 202 {
            return Err(format!(
                "notifications/initialized: {} {}",
                ack.status(),
                ack.text()
            ));
        }
        Ok(Sess {
            idx,
            http: (!ack.head.closes()).then_some(http),
            sid,
            next_id: 1,
        })
    }

    /// One `tools/call echo` through `port`: on the session's keep-alive
    /// connection, or on a fresh one that closes after it.
    fn call(&mut self, port: u16, fresh: bool) -> Outcome {
        self.next_id += 1;
        let text = format!("s{}-{}", self.idx, self.next_id);
        let msg = call(json!(self.next_id), &text);
        let mut conn = if fresh { None } else { self.http.take() };
        if conn.is_none() {
            match Http::try_connect(port) {
                Ok(h) => conn = Some(h),
                Err(e) => return Outcome::Bad(format!("connect: {e}")),
            }
        }
        let mut http = conn.unwrap();
        let resp = match post(&mut http, Some(&self.sid), &msg, fresh) {
            Ok(r) => r,
            Err(e) => return Outcome::Bad(format!("{text}: no response ({e:?})")),
        };
        if !fresh && !resp.head.closes() {
            self.http = Some(http);
        }
        match resp.status() {
            200 => {
                let reply = resp.try_rpc().unwrap_or(Value::Null);
                if echo_text(&reply) == Some(text.as_str()) && reply["id"] == json!(self.next_id) {
                    Outcome::Ok
                } else if let Some(kind) = error_kind(&reply) {
                    Outcome::Lost(format!("200 with relay error {kind}"))
                } else {
                    Outcome::Bad(format!("{text}: unexpected reply {reply}"))
                }
            }
            404 => Outcome::Lost("404".into()),
            503 => Outcome::Lost("503".into()),
            s => Outcome::Bad(format!("{text}: HTTP {s}: {}", resp.text())),
        }
    }
}

/// Which relay holds session `sid`: a `ping` straight to each running relay
/// answers 200 on the owner and 404 on the others.
fn owner(relays: &[Relay], sid: &str) -> Option<usize> {
    let mut found = None;
    for (i, r) in relays.iter().enumerate() {
        if r.try_status().is_some() {
            continue;
        }
        let mut h = Http::try_connect(r.port).unwrap_or_else(|e| panic!("{}: connect {e}", r.name));
        let ping = json!({"jsonrpc": "2.0", "id": "probe", "method": "ping"});
        let resp = post(&mut h, Some(sid), &ping, true)
            .unwrap_or_else(|e| panic!("{}: ping {sid}: {e:?}", r.name));
        match resp.status() {
            200 => {
                assert!(found.is_none(), "session {sid} known to two relays");
                found = Some(i);
            }
            404 => {}
            s => panic!("{}: ping {sid}: HTTP {s}: {}", r.name, resp.text()),
        }
    }
    found
}

// ============================================================================
// Metrics
// ============================================================================

/// One `/metrics` scrape, read by a real Prometheus text-format parser
/// (`common::prom`).
struct Metrics(Scrape);

impl Metrics {
    /// The value of one exact series, e.g. `name{a="b"}`; 0 when absent.
    fn get(&self, series: &str) -> f64 {
        self.0.series(series).unwrap_or(0.0)
    }

    fn sessions(&self, name: &str) -> u64 {
        self.get(&format!("mcp_relay_sessions{{upstream=\"{name}\"}}")) as u64
    }

    fn ok(&self) -> u64 {
        self.get("mcp_relay_requests_total{outcome=\"ok\"}") as u64
    }

    fn code(&self, code: u16) -> u64 {
        self.get(&format!(
            "mcp_relay_http_responses_total{{code=\"{code}\"}}"
        )) as u64
    }
}

// ============================================================================
// Processes
// ============================================================================

/// `mcp-relay reverse --name NAME` in the example's session pool, with the
/// test's graces, in front of `echo_server`.
fn start_relay(name: &str) -> Relay {
    Relay::reverse(name)
        .args(["--pool", "session", "--max-connections", "64"])
        .args([
            "--shutdown-grace",
            SHUTDOWN_GRACE,
            "--kill-grace",
            KILL_GRACE,
        ])
        .echo_server(&[])
        .start()
}

/// This file's view of a relay's `/metrics`.
impl Relay {
    fn metrics(&self) -> Metrics {
        Metrics(Scrape::parse(self.metrics_text()))
    }
}

struct Haproxy {
    child: Child,
    port: u16,
    stats_port: u16,
    log: StderrLines,
    config: PathBuf,
}

impl Haproxy {
    fn start(bin: &Path, relays: &[Relay]) -> Haproxy {
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/deploy/haproxy.cfg"),
        )
        .expect("read examples/deploy/haproxy.cfg");
        let ports: Vec<u16> = relays.iter().map(|r| r.port).collect();
        let mut last_log = String::new();
        for attempt in 0..5 {
            let (port, stats_port) = (free_port(), free_port());
            let config = std::env::temp_dir().join(format!(
                "mcp-relay-test-{}-haproxy-{attempt}.cfg",
                std::process::id()
            ));
            std::fs::write(&config, test_config(&example, port, stats_port, &ports))
                .expect("write haproxy config");
            let check = Command::new(bin)
                .args(["-c", "-f"])
                .arg(&config)
                .output()
                .expect("run haproxy -c");
            assert!(
                check.status.success(),
                "haproxy -c rejects the config:\n{}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
            let mut child = Command::new(bin)
                .args(["-db", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn haproxy");
            let (log, _) = collect_lines(child.stdout.take().unwrap(), |_| {});
            let sink = Arc::clone(&log);
            let (_, _) = collect_lines(child.stderr.take().unwrap(), move |l| {
                sink.lock().unwrap().push((Instant::now(), l.to_string()));
            });
            let mut h = Haproxy {
                child,
                port,
                stats_port,
                log,
                config,
            };
            // Up when every relay is UP in both backends.
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && h.child.try_wait().unwrap().is_none() {
                let states = h.states();
                if states.len() == 2 * RELAYS && states.values().all(|s| s == "UP") {
                    return h;
                }
                thread::sleep(Duration::from_millis(50));
            }
            thread::sleep(Duration::from_millis(100));
            last_log = h.log_text();
            assert!(
                h.child.try_wait().unwrap().is_some() && last_log.contains("annot bind"),
                "haproxy did not come up:\n{last_log}\nstates: {:?}",
                h.states()
            );
        }
        panic!("haproxy could not bind free ports in 5 attempts:\n{last_log}");
    }

    /// `backend/server` → status, from the stats page.
    fn states(&self) -> BTreeMap<String, String> {
        let Ok(r) = get(self.stats_port, "/stats;csv") else {
            return BTreeMap::new();
        };
        self.csv(&r.text())
            .into_iter()
            .filter(|row| row[1] != "FRONTEND" && row[1] != "BACKEND")
            .map(|row| (format!("{}/{}", row[0], row[1]), row[17].clone()))
            .collect()
    }

    /// `(retries, redispatches)` of server `name` in the main backend.
    fn retries(&self, name: &str) -> (u64, u64) {
        let r = get(self.stats_port, "/stats;csv").expect("stats");
        let rows = self.csv(&r.text());
        let row = rows
            .iter()
            .find(|row| row[0] == "mcp_relays" && row[1] == name)
            .expect("server row");
        (row[15].parse().unwrap_or(0), row[16].parse().unwrap_or(0))
    }

    fn csv(&self, text: &str) -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
            .filter(|row| row.len() > 17)
            .collect()
    }

    fn log_text(&self) -> String {
        let lines = self.log.lock().unwrap();
        lines.iter().map(|(_, l)| format!("{l}\n")).collect()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(80);
            eprintln!(
                "--- haproxy log, last 80 lines ---\n{}",
                lines[from..].join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// The example configuration with the test's addresses and faster checks.
/// Every rewrite must apply, so the test follows the example's layout.
fn test_config(example: &str, port: u16, stats_port: u16, relays: &[u16]) -> String {
    for line in [
        "stick-table type string len 64",
        "stick store-response res.hdr(mcp-session-id)",
        "stick match req.hdr(mcp-session-id)",
        "option httpchk GET /healthz",
        "http-check expect status 200",
        "option persist",
        "option redispatch",
        "retry-on conn-failure empty-response 503",
    ] {
        assert!(
            example.contains(line),
            "examples/deploy/haproxy.cfg lost `{line}`"
        );
    }
    let mut out = String::new();
    let (mut binds, mut servers, mut checks, mut maxconn) = (0, 0, 0, 0);
    for line in example.lines() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        let words: Vec<&str> = t.split_whitespace().collect();
        let new = match words.as_slice() {
            ["bind", "127.0.0.1:8080", ..] => {
                binds += 1;
                format!("{indent}bind 127.0.0.1:{port}")
            }
            ["bind", "127.0.0.1:8404", ..] => {
                binds += 1;
                format!("{indent}bind 127.0.0.1:{stats_port}")
            }
            // The global limit, small enough for any fd limit.
            ["maxconn", _] => {
                maxconn += 1;
                format!("{indent}maxconn 512")
            }
            ["default-server", ..] => {
                checks += 1;
                let rest = t.replace("inter 2s fall 2 rise 2", "inter 200ms fall 2 rise 1");
                assert_ne!(rest, t, "default-server line changed: {t}");
                format!("{indent}{rest}")
            }
            ["server", name, addr, rest @ ..] => {
                let n: usize = name
                    .strip_prefix("relay")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected server line {t}"));
                assert!((1..=relays.len()).contains(&n), "server line {t}");
                assert!(addr.starts_with("127.0.0.1:"), "server line {t}");
                servers += 1;
                let mut l = format!("{indent}server {name} 127.0.0.1:{}", relays[n - 1]);
                for w in rest {
                    l.push(' ');
                    l.push_str(w);
                }
                l
            }
            _ => line.to_string(),
        };
        out.push_str(&new);
        out.push('\n');
    }
    assert_eq!(
        (binds, servers, checks, maxconn),
        (2, 2 * relays.len(), 1, 1),
        "examples/deploy/haproxy.cfg layout changed"
    );
    out
}

/// Runs `f(i)` on `n` threads, propagating panics.
fn run_threads<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    thread::scope(|s| {
        let handles: Vec<_> = (0..n)
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
// The slow call: a tools/call whose reply is streamed as SSE (progress first)
// ============================================================================

struct Slow {
    status: u16,
    content_type: String,
    /// Arrival time of each event's data.
    events: Vec<(Instant, Value)>,
    error: Option<Wait>,
}

/// Starts the slow call on session `sid` through `port`; the channel gets a
/// message when its first event has arrived.
fn slow_call(port: u16, sid: String) -> (thread::JoinHandle<Slow>, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let mut http = Http::try_connect(port).expect("connect for the slow call");
        let msg = call_with(
            json!("slow"),
            json!({"text": "slow", "progress": SLOW_STEPS, "interval_ms": SLOW_INTERVAL_MS}),
            Some(json!("slow-progress")),
        );
        let headers = [
            ("Content-Type", "application/json"),
            ("Accept", ACCEPT),
            ("Mcp-Session-Id", sid.as_str()),
            ("MCP-Protocol-Version", VERSION),
        ];
        let mut slow = Slow {
            status: 0,
            content_type: String::new(),
            events: Vec::new(),
            error: None,
        };
        let body = serde_json::to_vec(&msg).unwrap();
        let deadline = Instant::now() + IO;
        let head = match http
            .send_request("POST", "/mcp", &headers, &body)
            .map_err(|e| Wait::Err(e.kind()))
            .and_then(|()| http.read_head(deadline))
        {
            Ok(h) => h,
            Err(e) => {
                slow.error = Some(e);
                let _ = tx.send(());
                return slow;
            }
        };
        slow.status = head.status;
        slow.content_type = head.header("content-type").unwrap_or("").to_string();
        if !head.chunked() {
            let _ = tx.send(());
            return slow;
        }
        let mut parser = SseParser::default();
        loop {
            match http.next_chunk(deadline) {
                Ok(Some(data)) => {
                    parser.feed(&data);
                    while let Some(ev) = parser.next_event() {
                        if ev.data.is_empty() {
                            continue;
                        }
                        let v: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
                        slow.events.push((Instant::now(), v));
                        if slow.events.len() == 1 {
                            let _ = tx.send(());
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    slow.error = Some(e);
                    break;
                }
            }
        }
        let _ = tx.send(());
        slow
    });
    (handle, rx)
}

// ============================================================================
// Phase 2 bookkeeping
// ============================================================================

#[derive(Default, Debug)]
struct Tally {
    survivor_ok: u64,
    /// Calls of the stopped relay's sessions answered normally after SIGTERM,
    /// and of those, the ones sent after HAProxy had marked it DOWN.
    victim_ok_after_term: u64,
    victim_ok_after_down: u64,
    /// How the stopped relay's sessions learned they were gone.
    lost: BTreeMap<String, u64>,
    /// The slowest of those answers.
    lost_latency_max: Duration,
    reinit: u64,
    reinit_ok: u64,
    failures: Vec<String>,
}

struct Traffic {
    stop: AtomicBool,
    term_at: Mutex<Option<Instant>>,
    down_at: Mutex<Option<Instant>>,
    tally: Mutex<Tally>,
}

/// Tells the client threads to stop when dropped, so that a failed
/// assertion in the main thread ends the test instead of hanging it.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Traffic {
    fn fail(&self, what: String) {
        let mut t = self.tally.lock().unwrap();
        if t.failures.len() < 20 {
            t.failures.push(what);
        }
    }
}

/// One client thread: calls round-robin over its sessions until told to
/// stop. Sessions of the stopped relay (`victim[i]`) that are lost
/// initialize again; `reinit[i]` is then set and the replacement is used.
fn client_loop(port: u16, sessions: &mut [(Sess, bool)], traffic: &Traffic) {
    let mut round = 0u64;
    while !traffic.stop.load(Ordering::SeqCst) {
        round += 1;
        for (s, victim) in sessions.iter_mut() {
            let fresh = (round + s.idx as u64).is_multiple_of(2);
            let t0 = Instant::now();
            let outcome = s.call(port, fresh);
            let took = t0.elapsed();
            let term_at = *traffic.term_at.lock().unwrap();
            let after_term = term_at.is_some_and(|t| t0 >= t);
            let after_down = traffic.down_at.lock().unwrap().is_some_and(|t| t0 >= t);
            match outcome {
                Outcome::Ok => {
                    let mut t = traffic.tally.lock().unwrap();
                    match (*victim, s.idx >= 1000) {
                        (_, true) => t.reinit_ok += 1,
                        (false, false) => t.survivor_ok += 1,
                        (true, false) if after_term => {
                            t.victim_ok_after_term += 1;
                            t.victim_ok_after_down += u64::from(after_down);
                        }
                        (true, false) => {}
                    }
                }
                Outcome::Lost(why) if *victim && s.idx < 1000 && term_at.is_some() => {
                    {
                        let mut t = traffic.tally.lock().unwrap();
                        *t.lost.entry(why).or_default() += 1;
                        t.lost_latency_max = t.lost_latency_max.max(took);
                    }
                    // Initialize again, through HAProxy, as a client would.
                    match Sess::open(port, s.idx + 1000) {
                        Ok(new) => {
                            *s = new;
                            traffic.tally.lock().unwrap().reinit += 1;
                        }
                        Err(e) => traffic.fail(format!("session {}: re-initialize: {e}", s.idx)),
                    }
                }
                Outcome::Lost(why) | Outcome::Bad(why) => traffic.fail(format!(
                    "session {} ({}, {} ms after SIGTERM: {}): {why}",
                    s.idx,
                    if *victim {
                        "stopped relay"
                    } else {
                        "surviving relay"
                    },
                    term_at.map_or(-1, |t| t0.saturating_duration_since(t).as_millis() as i64),
                    if after_term { "after" } else { "before" },
                )),
            }
        }
    }
}

// ============================================================================
// The test
// ============================================================================

#[test]
fn haproxy_sticky_sessions_and_relay_stop() {
    let bin = common::interop::deps().haproxy.clone();
    assert!(
        bin.exists(),
        "haproxy not provisioned at {}: install haproxy",
        bin.display()
    );

    let names: Vec<String> = (1..=RELAYS).map(|i| format!("relay{i}")).collect();
    let relays: Vec<Relay> = names.iter().map(|n| start_relay(n)).collect();
    let ha = Haproxy::start(&bin, &relays);
    let port = ha.port;

    // ---- 1. Many sessions, all relays up --------------------------------------
    let per_thread: Vec<Vec<Sess>> = run_threads(THREADS, |t| {
        let mut mine: Vec<Sess> = (t..SESSIONS)
            .step_by(THREADS)
            .map(|i| Sess::open(port, i).unwrap_or_else(|e| panic!("session {i}: {e}")))
            .collect();
        for round in 0..CALLS {
            for s in mine.iter_mut() {
                // Alternate: the keep-alive connection, a fresh connection.
                match s.call(port, round % 2 == 1) {
                    Outcome::Ok => {}
                    other => panic!(
                        "session {} call {round} with every relay up: {other:?}",
                        s.idx
                    ),
                }
            }
        }
        mine
    });
    let mut sessions: Vec<Sess> = per_thread.into_iter().flatten().collect();
    sessions.sort_by_key(|s| s.idx);
    assert_eq!(sessions.len(), SESSIONS);

    // Each relay accounts for exactly the sessions it holds and their calls:
    // a call that had reached another relay would have failed with 404.
    let metrics: Vec<Metrics> = relays.iter().map(Relay::metrics).collect();
    let counts: Vec<u64> = metrics
        .iter()
        .zip(&names)
        .map(|(m, n)| m.sessions(n))
        .collect();
    eprintln!("sessions per relay: {counts:?}");
    assert_eq!(counts.iter().sum::<u64>(), SESSIONS as u64, "{counts:?}");
    for (i, m) in metrics.iter().enumerate() {
        assert!(counts[i] >= 1, "{} got no session: {counts:?}", names[i]);
        assert_eq!(
            m.ok(),
            counts[i] * (CALLS as u64 + 1),
            "{}: requests_total{{ok}} is not its sessions' initialize + {CALLS} calls",
            names[i]
        );
        assert_eq!(m.code(404), 0, "{}: some request got 404", names[i]);
    }
    // And each session lives on exactly one relay.
    let mut on: Vec<usize> = Vec::new();
    for s in &sessions {
        on.push(owner(&relays, &s.sid).unwrap_or_else(|| panic!("session {} lost", s.idx)));
    }
    for (i, c) in counts.iter().enumerate() {
        assert_eq!(on.iter().filter(|&&r| r == i).count() as u64, *c);
    }

    // ---- 2. Stop one relay under load -----------------------------------------
    let victim = 1;
    let vname = names[victim].clone();
    let before: Vec<Metrics> = relays.iter().map(Relay::metrics).collect();
    let slow_idx = on.iter().position(|&r| r == victim).unwrap();
    let slow_sess = sessions.remove(slow_idx);
    let slow_on = on.remove(slow_idx);
    assert_eq!(slow_on, victim);

    let traffic = Traffic {
        stop: AtomicBool::new(false),
        term_at: Mutex::new(None),
        down_at: Mutex::new(None),
        tally: Mutex::new(Tally::default()),
    };
    let mut groups: Vec<Vec<(Sess, bool)>> = (0..THREADS).map(|_| Vec::new()).collect();
    for (k, (s, r)) in sessions.into_iter().zip(on).enumerate() {
        groups[k % THREADS].push((s, r == victim));
    }
    let victim_sessions: u64 = groups.iter().flatten().filter(|(_, v)| *v).count() as u64;
    let groups: Vec<Mutex<Vec<(Sess, bool)>>> = groups.into_iter().map(Mutex::new).collect();

    let mut slow = None;
    let mut healthz_503 = None;
    let mut down_at = None;
    let mut down_while_alive = false;
    let mut drain_time: Vec<Sess> = Vec::new();
    let mut exit_status = None;
    let mut term_at = Instant::now();
    let mut exited_at = None;
    thread::scope(|scope| {
        let _stop = StopOnDrop(&traffic.stop);
        for g in &groups {
            let traffic = &traffic;
            scope.spawn(move || client_loop(port, &mut g.lock().unwrap(), traffic));
        }
        // Let the traffic run, start the slow call, stop the relay once the
        // call's first progress event has come through HAProxy.
        thread::sleep(Duration::from_millis(300));
        let (handle, first) = slow_call(port, slow_sess.sid.clone());
        first
            .recv_timeout(IO)
            .expect("the slow call's first event did not arrive");
        *traffic.term_at.lock().unwrap() = Some(Instant::now());
        term_at = Instant::now();
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(relays[victim].pid, libc::SIGTERM) };

        // Its /healthz answers 503 while it drains (asked directly).
        let deadline = Instant::now() + Duration::from_secs(2);
        while healthz_503.is_none() && Instant::now() < deadline {
            match get(relays[victim].port, "/healthz") {
                Ok(r) if r.status() == 503 => healthz_503 = Some(term_at.elapsed()),
                Ok(r) => assert_eq!(r.status(), 200, "/healthz: {r:?}"),
                Err(e) => panic!("{vname} stopped answering /healthz before 503: {e:?}"),
            }
            thread::sleep(Duration::from_millis(10));
        }
        // New sessions now: whether HAProxy has marked it DOWN yet or not
        // (then its 503 is retried on another relay), they must work.
        for b in 0..BURST {
            match Sess::open(port, 2000 + b) {
                Ok(mut s) => {
                    assert!(
                        matches!(s.call(port, false), Outcome::Ok),
                        "new session {b} during the drain"
                    );
                    drain_time.push(s);
                }
                Err(e) => panic!("new session {b} during the drain: {e}"),
            }
        }
        // HAProxy's check sees the 503.
        let deadline = Instant::now() + Duration::from_secs(5);
        while down_at.is_none() && Instant::now() < deadline {
            let state = ha
                .states()
                .get(&format!("mcp_relays/{vname}"))
                .cloned()
                .unwrap_or_default();
            if state.starts_with("DOWN") {
                *traffic.down_at.lock().unwrap() = Some(Instant::now());
                down_at = Some(term_at.elapsed());
                down_while_alive = relays[victim].try_status().is_none();
            }
            thread::sleep(Duration::from_millis(20));
        }
        slow = Some(handle.join().expect("slow call thread"));
        exit_status = relays[victim].wait_timeout(Duration::from_secs(8));
        exited_at = Some(term_at.elapsed());

        // Keep going until every session of the stopped relay has initialized
        // again and made calls on its new relay, and the others went on for a
        // while after the exit.
        let settle = Instant::now() + Duration::from_millis(1000);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let done = {
                let t = traffic.tally.lock().unwrap();
                t.reinit >= victim_sessions && t.reinit_ok >= 3 * victim_sessions
            };
            if (done && Instant::now() > settle) || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        traffic.stop.store(true, Ordering::SeqCst);
    });

    let tally = traffic.tally.into_inner().unwrap();
    let slow = slow.unwrap();
    let (retries, redispatches) = ha.retries(&vname);
    eprintln!(
        "stopped {vname} ({victim_sessions} sessions + the slow one): /healthz 503 after {healthz_503:?}, \
         HAProxy DOWN after {down_at:?} (relay still running: {down_while_alive}), \
         exited after {exited_at:?} with {exit_status:?}; HAProxy retries/redispatches on it: \
         {retries}/{redispatches}\n{tally:#?}"
    );

    assert!(
        tally.failures.is_empty(),
        "calls failed:\n{}",
        tally.failures.join("\n")
    );
    assert!(
        healthz_503.is_some(),
        "{vname} never answered /healthz with 503"
    );
    assert!(down_at.is_some(), "HAProxy never marked {vname} DOWN");
    assert_eq!(drain_time.len(), BURST);
    let status = exit_status.unwrap_or_else(|| panic!("{vname} did not exit"));
    assert_eq!(status.code(), Some(0), "{vname}: {status}");
    for (p, _) in relays[victim].servers() {
        p.assert_gone("server of the stopped relay");
    }

    // The slow call was served in full during the grace, streamed through
    // HAProxy as the server produced it (not buffered to the end).
    assert_eq!(slow.status, 200, "slow call: {:?}", slow.error);
    assert!(
        slow.content_type.starts_with("text/event-stream"),
        "slow call: {}",
        slow.content_type
    );
    assert_eq!(slow.error, None, "slow call cut short");
    assert_eq!(
        slow.events.len() as u64,
        SLOW_STEPS + 1,
        "{:?}",
        slow.events
    );
    let (last_at, last) = slow.events.last().unwrap();
    assert_eq!(echo_text(last), Some("slow"), "slow call reply: {last}");
    let spread = last_at.duration_since(slow.events[0].0);
    let produced = Duration::from_millis(SLOW_INTERVAL_MS * (SLOW_STEPS - 1));
    assert!(
        spread >= produced / 2,
        "SSE events arrived together ({spread:?} apart): buffered on the way"
    );
    assert!(
        slow.events[slow.events.len() - 2].0 > term_at,
        "the slow call should still have been running at SIGTERM"
    );

    // The stopped relay's sessions: served while it drained, then each got a
    // 404 or 503 (or a relay error) and initialized again; all of them.
    assert!(
        tally.victim_ok_after_term >= 1,
        "no session of {vname} was served during its grace"
    );
    // `option persist`: still served there after the health check has
    // marked it DOWN (when that happened well before the relay exited).
    if let (Some(down), Some(exited)) = (down_at, exited_at)
        && down_while_alive
        && exited > down + Duration::from_millis(300)
    {
        assert!(
            tally.victim_ok_after_down >= 1,
            "sessions of {vname} were not served after it was marked DOWN ({down:?}) \
             though it ran until {exited:?}: is `option persist` gone?"
        );
    }
    assert_eq!(tally.reinit, victim_sessions, "{tally:?}");
    assert!(tally.reinit_ok >= 3 * victim_sessions, "{tally:?}");
    assert!(tally.survivor_ok > 0);

    // The slow call's session too: its relay is gone, so 404 (or 503).
    let mut s = slow_sess;
    match s.call(port, true) {
        Outcome::Lost(why) => assert!(why == "404" || why == "503", "{why}"),
        other => panic!("session of the stopped relay after its exit: {other:?}"),
    }
    let mut again = Sess::open(port, 3000).expect("initialize again");
    assert!(matches!(again.call(port, false), Outcome::Ok));

    // The surviving relays hold every session now: their own, the stopped
    // relay's (initialized again, the slow call's included) and the ones
    // opened during the drain.
    let survivors: Vec<&Relay> = relays
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, r)| r)
        .collect();
    let after: Vec<Metrics> = survivors.iter().map(|r| r.metrics()).collect();
    let total: u64 = after
        .iter()
        .zip(&survivors)
        .map(|(m, r)| m.sessions(&r.name))
        .sum();
    assert_eq!(total, SESSIONS as u64 + BURST as u64);
    let got_404: u64 = after
        .iter()
        .zip(relays.iter().enumerate().filter(|(i, _)| *i != victim))
        .map(|(m, (i, _))| m.code(404) - before[i].code(404))
        .sum();
    eprintln!("404s answered by the surviving relays during the stop: {got_404}");
    assert!(got_404 >= 1, "no 404 from the surviving relays");

    // ---- 3. Stop an idle relay ------------------------------------------------
    // No request in flight: it closes its listener and exits at once, before
    // HAProxy's check notices. New sessions are refused there and
    // redispatched; its sessions get 404 from the last relay and initialize
    // again there.
    let mut left: Vec<Sess> = groups
        .into_iter()
        .flat_map(|g| g.into_inner().unwrap())
        .map(|(s, _)| s)
        .collect();
    left.push(again);
    left.extend(drain_time);
    let homes: Vec<usize> = left
        .iter()
        .map(|s| owner(&relays, &s.sid).unwrap_or_else(|| panic!("session {} lost", s.idx)))
        .collect();
    let idle = 2;
    let last = 0;
    let iname = names[idle].clone();
    assert!(homes.contains(&idle) && homes.contains(&last), "{homes:?}");
    let t0 = Instant::now();
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(relays[idle].pid, libc::SIGTERM) };
    // What its /healthz says right away (reported, not asserted: 503 while
    // it drains, or refused once it has closed its listener).
    let idle_healthz = match get(relays[idle].port, "/healthz") {
        Ok(r) => format!("HTTP {}", r.status()),
        Err(e) => format!("{e:?}"),
    };
    for b in 0..BURST {
        let mut s = Sess::open(port, 4000 + b)
            .unwrap_or_else(|e| panic!("new session {b} after stopping {iname}: {e}"));
        assert!(matches!(s.call(port, true), Outcome::Ok));
    }
    let mut lost_idle = BTreeMap::<String, u64>::new();
    for (s, home) in left.iter_mut().zip(&homes) {
        match s.call(port, true) {
            Outcome::Ok => assert_eq!(*home, last, "session {} of {iname} still served", s.idx),
            Outcome::Lost(why) if *home == idle => {
                assert!(why == "404" || why == "503", "session {}: {why}", s.idx);
                *lost_idle.entry(why).or_default() += 1;
                *s = Sess::open(port, s.idx + 5000).expect("initialize again");
                assert!(matches!(s.call(port, false), Outcome::Ok));
            }
            other => panic!("session {} on {}: {other:?}", s.idx, names[*home]),
        }
    }
    let status = relays[idle]
        .wait_timeout(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{iname} did not exit"));
    assert_eq!(status.code(), Some(0), "{iname}: {status}");
    for (p, _) in relays[idle].servers() {
        p.assert_gone("server of the stopped idle relay");
    }
    let (retries, redispatches) = ha.retries(&iname);
    eprintln!(
        "stopped idle {iname}: /healthz right after SIGTERM: {idle_healthz}; exited after \
         {:?}; its sessions: {lost_idle:?}; HAProxy retries/redispatches on it: \
         {retries}/{redispatches}",
        t0.elapsed()
    );
    assert_eq!(
        lost_idle.values().sum::<u64>(),
        homes.iter().filter(|&&h| h == idle).count() as u64
    );
    let m = relays[last].metrics();
    assert_eq!(m.sessions(&names[last]), (left.len() + BURST) as u64);

    // ---- 4. The other transports through the same configuration ---------------
    let s = Sess::open(port, 6000).expect("initialize");
    get_stream_opens(port, &s.sid);
    legacy_roundtrip(port);
    common::interop::ran("haproxy::haproxy_sticky_sessions_and_relay_stop");
}

/// A session's GET stream through HAProxy: its head arrives at once (nothing
/// waits for a first event), and it is an event stream.
fn get_stream_opens(port: u16, sid: &str) {
    let mut http = Http::try_connect(port).expect("connect");
    http.send_request(
        "GET",
        "/mcp",
        &[
            ("Accept", "text/event-stream"),
            ("Mcp-Session-Id", sid),
            ("MCP-Protocol-Version", VERSION),
        ],
        b"",
    )
    .expect("GET /mcp");
    let head = http
        .read_head(Instant::now() + SHORT)
        .expect("GET stream head through HAProxy");
    assert_eq!(head.status, 200, "{head:?}");
    assert!(
        head.header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "{head:?}"
    );
}

/// Legacy HTTP+SSE (2024-11-05) through the `mcp_legacy` backend: the
/// endpoint event, a POSTed initialize, its reply on the stream.
fn legacy_roundtrip(port: u16) {
    let mut stream = Http::try_connect(port).expect("connect");
    stream
        .send_request("GET", "/sse", &[("Accept", "text/event-stream")], b"")
        .expect("GET /sse");
    let deadline = Instant::now() + IO;
    let head = stream.read_head(deadline).expect("GET /sse head");
    assert_eq!(head.status, 200, "{head:?}");
    let mut parser = SseParser::default();
    let mut next_event = |stream: &mut Http| loop {
        if let Some(ev) = parser.next_event() {
            if ev.data.is_empty() {
                continue;
            }
            return ev.data;
        }
        match stream.next_chunk(deadline) {
            Ok(Some(c)) => parser.feed(&c),
            other => panic!("legacy stream through HAProxy: {other:?}"),
        }
    };
    let endpoint = next_event(&mut stream);
    assert!(
        endpoint.starts_with("/messages?session_id="),
        "endpoint event: {endpoint}"
    );
    let mut http = Http::try_connect(port).expect("connect");
    let body = serde_json::to_vec(&initialize(json!(0))).unwrap();
    let resp = http
        .try_request(
            "POST",
            &endpoint,
            &[("Content-Type", "application/json")],
            &body,
            IO,
        )
        .expect("POST /messages");
    assert_eq!(resp.status(), 202, "POST {endpoint}: {resp:?}");
    let reply: Value = serde_json::from_str(&next_event(&mut stream)).expect("JSON event");
    assert_eq!(reply["id"], 0, "{reply}");
    assert!(reply["result"]["serverInfo"].is_object(), "{reply}");
}
