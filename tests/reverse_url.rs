//! Integration tests for `mcp-relay reverse --url URL`: the relay serves MCP
//! Streamable HTTP on 127.0.0.1 (this test is the client) and relays every
//! client session to its own session of an upstream MCP Streamable HTTP
//! server, which is a small fake (`common::fake::Fake`).
//!
//! ```text
//! test (HTTP client) → mcp-relay reverse --listen 127.0.0.1:P --url http://127.0.0.1:Q/mcp → fake
//! ```
//!
//! Harness rules:
//! - The fakes are blocking std code on threads (one acceptor, one thread per
//!   connection, every read bounded by [`TICK`] so each thread sees its stop
//!   flag), except the churn test's fake, which serves ~1,000 connections at
//!   once from one `mio` loop. A fake stops and joins its threads when
//!   dropped. Responses are hand-written HTTP/1.1.
//! - Every relay gets a free port (another is tried if it cannot bind) and
//!   is killed and reaped by [`Relay`]'s Drop, which also prints its log when
//!   the test failed. The relay runs with `--log-level debug` except in the
//!   churn test (`info`: the CPU measured there is the relay's, not its
//!   logger's).
//! - Every read has a deadline, every loop is bounded, every test body runs
//!   under [`bounded`]. The churn test runs alone ([`EXCLUSIVE`]): it loads
//!   both cores while it sets up 1,000 sessions, which would distort the
//!   timing assertions of the others, and they would distort its CPU and
//!   spread measurements.
//!
//! Timing assertions measure from just before the request is written to the
//! socket to the moment its answer has been read, so the measured time is
//! never shorter than the relay's and a lower bound of "the documented
//! timeout" is sound. Upper bounds are the documented timeout + 10% +
//! [`MARGIN`].

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::fake::{
    After, AsksOnGet, Conn, Fake, Handler, NO_GET_STREAM, Req, TICK, echo_reply, handler, progress,
    reply_to, server_note, summaries, take_request, upper_bound,
};
use common::http::{Http, IO, Response, Sse, SseEvent, SseNext, VERSION, mcp_headers, post};
use common::relay::Relay;
use common::{RELAY, SHORT, call, call_with, echo_text, error_kind, initialize, initialized};

/// Hard cap on each test, setup and teardown included (the churn test has
/// its own, [`CHURN_LIMIT`]).
const TEST_LIMIT: Duration = Duration::from_secs(25);

/// `--name` of every relay: `data.upstream` of its errors.
const NAME: &str = "fake";

/// Taken for reading by every test, for writing by the churn test, which
/// then runs alone.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// Runs a test body on its own thread and fails the test if it takes longer
/// than `limit` (counted once the test may run, see [`EXCLUSIVE`]). A panic
/// in the body is re-raised as is.
fn bounded_with(limit: Duration, exclusive: bool, body: impl FnOnce() + Send + 'static) {
    let name = thread::current().name().unwrap_or("?").to_owned();
    let _shared;
    let _alone;
    if exclusive {
        _alone = EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner());
    } else {
        _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    }
    let t0 = Instant::now();
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => {
            handle.join().expect("test body");
            eprintln!("[{name}] passed in {:?}", t0.elapsed());
        }
        Err(RecvTimeoutError::Disconnected) => {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        // The body thread is left behind; its relay and fakes go with the
        // test process.
        Err(RecvTimeoutError::Timeout) => panic!("test still running after {limit:?}"),
    }
}

fn bounded(body: impl FnOnce() + Send + 'static) {
    bounded_with(TEST_LIMIT, false, body);
}

/// Waits (bounded) until `pred` holds.
fn wait_until(timeout: Duration, what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !pred() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        thread::sleep(Duration::from_millis(5));
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

/// (utime, stime) of `pid`, in seconds.
fn cpu_times(pid: i32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    let rest = &text[text.rfind(')').expect("stat has a command") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15.
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(hz > 0, "sysconf(_SC_CLK_TCK)");
    (utime as f64 / hz as f64, stime as f64 / hz as f64)
}

// ---- MCP over HTTP -----------------------------------------------------------

/// A client session on its own keep-alive connection.
struct Session {
    http: Http,
    sid: String,
    next_id: u64,
}

impl Session {
    /// `initialize` on a new connection; the initialize reply is returned
    /// with the session.
    fn initialize(port: u16) -> (Session, Response) {
        let mut http = Http::connect(port);
        let resp = post(&mut http, None, &initialize(json!(0)));
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
        (
            Session {
                http,
                sid,
                next_id: 0,
            },
            resp,
        )
    }

    /// `initialize` + `notifications/initialized` (202).
    fn open(port: u16) -> Session {
        let (mut s, _) = Session::initialize(port);
        let ack = s.post(&initialized());
        assert_eq!(ack.status(), 202, "notifications/initialized: {ack:?}");
        s
    }

    fn post(&mut self, msg: &Value) -> Response {
        post(&mut self.http, Some(&self.sid), msg)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A `tools/call echo` that must be answered 200; returns the reply.
    fn call(&mut self, text: &str) -> Value {
        let id = self.id();
        let resp = self.post(&call(json!(id), text));
        assert_eq!(resp.status(), 200, "tools/call {text:?}: {resp:?}");
        let reply = resp.rpc();
        assert_eq!(reply["id"], json!(id), "tools/call {text:?}: {reply}");
        reply
    }

    fn call_ok(&mut self, text: &str) {
        let reply = self.call(text);
        assert_eq!(echo_text(&reply), Some(text), "tools/call reply: {reply}");
    }

    fn delete(&mut self) -> Response {
        let sid = self.sid.clone();
        self.http.request(
            "DELETE",
            "/mcp",
            &[("Mcp-Session-Id", &sid), ("MCP-Protocol-Version", VERSION)],
            b"",
        )
    }

    /// The client's GET stream on a new connection.
    fn open_get(&self, port: u16, last_event_id: Option<&str>) -> Sse {
        let mut h = Http::connect(port);
        let mut headers = vec![
            ("Accept", "text/event-stream"),
            ("Mcp-Session-Id", self.sid.as_str()),
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
}

// ============================================================================
// The relay under test
// ============================================================================

/// `mcp-relay reverse --listen 127.0.0.1:P --name fake --url URL ARGS`.
fn start_relay(url: &str, args: &[&str]) -> Relay {
    Relay::reverse(NAME).args(["--url", url]).args(args).start()
}

// ============================================================================
// The fake upstream (thread per connection: tests/common/fake.rs)
// ============================================================================

// ---- MCP messages and the well-behaved server ---------------------------------

/// The upstream's sessions: issued by `initialize`, ended by DELETE or by
/// the test (`expire`).
#[derive(Default)]
struct UpSessions {
    issued: AtomicUsize,
    live: Mutex<HashSet<String>>,
}

impl UpSessions {
    fn issue(&self) -> String {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let sid = format!("upstream-session-{n}");
        self.live.lock().unwrap().insert(sid.clone());
        sid
    }

    fn is_live(&self, sid: Option<&str>) -> bool {
        sid.is_some_and(|s| self.live.lock().unwrap().contains(s))
    }

    fn expire(&self, sid: &str) -> bool {
        self.live.lock().unwrap().remove(sid)
    }
}

/// A well-behaved Streamable HTTP server: initialize → 200 JSON + a new
/// `Mcp-Session-Id`; a request without a session id → 400, naming an unknown
/// (or ended) session → 404;
/// notifications and responses → 202; `tools/call` echo → 200 JSON, or an
/// SSE response (two progress events if a token was given, then the reply)
/// when the arguments say `"sse": true`; GET → an SSE stream held open
/// (ended by closing the connection if its session ends); DELETE → 200.
fn standard(req: &Req, conn: &mut Conn, up: &UpSessions) -> After {
    let msg = req.json();
    if req.method == "POST" && msg["method"] == "initialize" {
        let sid = up.issue();
        let reply = reply_to(&msg).expect("initialize reply");
        return conn.json(&[("mcp-session-id", &sid)], &reply);
    }
    // As the SDK servers do: no session id → 400, an unknown one → 404.
    if req.session().is_none() {
        let body = json!({"jsonrpc": "2.0", "id": null,
                          "error": {"code": -32000, "message": "Bad Request: Mcp-Session-Id header is required"}});
        return conn.respond(
            400,
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        );
    }
    if !up.is_live(req.session()) {
        let body = json!({"jsonrpc": "2.0", "id": null,
                          "error": {"code": -32001, "message": "Session not found"}});
        return conn.respond(
            404,
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        );
    }
    match req.method.as_str() {
        "POST" => {
            let Some(reply) = reply_to(&msg) else {
                return conn.respond(202, &[], b"");
            };
            if msg.pointer("/params/arguments/sse") == Some(&json!(true)) {
                if !conn.sse_start() {
                    return After::Close;
                }
                if let Some(tok) = msg.pointer("/params/_meta/progressToken") {
                    conn.sse_event(Some("p1"), &progress(tok, 1).to_string());
                    conn.sse_event(Some("p2"), &progress(tok, 2).to_string());
                }
                conn.sse_event(Some("r1"), &reply.to_string());
                conn.sse_end();
                return After::KeepAlive;
            }
            conn.json(&[], &reply)
        }
        "GET" => {
            if conn.sse_start() {
                let sid = req.session().map(str::to_owned);
                conn.hold_until(|| !up.is_live(sid.as_deref()));
            }
            After::Close
        }
        "DELETE" => {
            up.expire(req.session().unwrap_or_default());
            conn.respond(200, &[], b"")
        }
        _ => conn.respond(405, &[], b""),
    }
}

fn well_behaved(up: &Arc<UpSessions>) -> Handler {
    let up = up.clone();
    handler(move |req, conn| standard(req, conn, &up))
}

fn gets(reqs: &[Req]) -> Vec<&Req> {
    reqs.iter().filter(|r| r.method == "GET").collect()
}

// ============================================================================
// 1. Round trip: sessions map, JSON replies, SSE streamed through
// ============================================================================

/// initialize gets the relay's own session id (not the upstream's), which
/// the relay maps to the upstream's on every later request; a JSON reply
/// comes back as JSON; an SSE reply streams through event by event: the
/// progress events reach the client while the upstream is still working on
/// the reply (it pauses 300 ms between the last progress event and the
/// reply), and before the reply.
#[test]
fn round_trip_json_and_streamed_sse() {
    bounded(|| {
        let up = Arc::new(UpSessions::default());
        let reply_sent: Arc<Mutex<Option<Instant>>> = Arc::default();
        let (up2, sent) = (up.clone(), reply_sent.clone());
        let fake = Fake::start(handler(move |req, conn| {
            let msg = req.json();
            if req.is_post_of("tools/call") && msg["params"]["arguments"]["text"] == "slow" {
                let tok = msg["params"]["_meta"]["progressToken"].clone();
                if !conn.sse_start() {
                    return After::Close;
                }
                conn.sse_event(Some("e1"), &progress(&tok, 1).to_string());
                conn.sse_event(Some("e2"), &progress(&tok, 2).to_string());
                if !conn.wait(Duration::from_millis(300)) {
                    return After::Close;
                }
                *sent.lock().unwrap() = Some(Instant::now());
                conn.sse_event(Some("e3"), &echo_reply(&msg["id"], "slow").to_string());
                conn.sse_end();
                return After::KeepAlive;
            }
            standard(req, conn, &up2)
        }));
        let relay = start_relay(&fake.url(), &[]);

        // initialize: the relay's own session id.
        let (mut s, resp) = Session::initialize(relay.port);
        assert_eq!(
            resp.header("content-type"),
            Some("application/json"),
            "{resp:?}"
        );
        let reply = resp.rpc();
        assert_eq!(
            reply["result"]["serverInfo"]["name"], "fake-http-upstream",
            "{reply}"
        );
        assert_eq!(reply["result"]["protocolVersion"], VERSION, "{reply}");
        let seen = fake.wait_for("initialize", SHORT, |r| {
            r.iter().any(|q| q.is_post_of("initialize"))
        });
        let init = seen.iter().find(|q| q.is_post_of("initialize")).unwrap();
        assert_eq!(init.session(), None, "initialize carried a session id");
        assert_eq!(init.json()["params"]["protocolVersion"], VERSION);
        assert_eq!(up.issued.load(Ordering::SeqCst), 1);
        let upstream_sid = "upstream-session-1";
        assert_ne!(s.sid, upstream_sid, "the relay passed the upstream's id on");
        assert!(
            !s.sid.contains(upstream_sid) && s.sid.len() >= 16,
            "relay session id {:?} is not its own random id",
            s.sid
        );

        // initialized: 202 at once; upstream gets it with its session id
        // and the negotiated version.
        let ack = s.post(&initialized());
        assert_eq!(ack.status(), 202, "{ack:?}");
        let seen = fake.wait_for("notifications/initialized", SHORT, |r| {
            r.iter().any(|q| q.is_post_of("notifications/initialized"))
        });
        let q = seen
            .iter()
            .find(|q| q.is_post_of("notifications/initialized"))
            .unwrap();
        assert_eq!(q.session(), Some(upstream_sid), "{}", q.summary());
        assert_eq!(q.header("mcp-protocol-version"), Some(VERSION));

        // tools/call → JSON.
        let resp = s.post(&call(json!(7), "hello ✓"));
        assert_eq!(resp.status(), 200, "{resp:?}");
        assert_eq!(
            resp.header("content-type"),
            Some("application/json"),
            "{resp:?}"
        );
        assert_eq!(resp.json()["id"], 7, "{resp:?}");
        assert_eq!(echo_text(&resp.json()), Some("hello ✓"));
        let seen = fake.seen();
        let q = seen.iter().find(|q| q.is_post_of("tools/call")).unwrap();
        assert_eq!(q.session(), Some(upstream_sid));
        assert_eq!(q.json()["id"], 7, "the relay changed the request id");

        // tools/call with progress → SSE streamed through.
        let msg = call_with(json!(8), json!({"text": "slow"}), Some(json!("tok-8")));
        let body = serde_json::to_vec(&msg).unwrap();
        let sid = s.sid.clone();
        s.http
            .send_request("POST", "/mcp", &mcp_headers(Some(&sid)), &body)
            .expect("send");
        let head = s
            .http
            .read_head(Instant::now() + IO)
            .expect("SSE response head");
        let http = std::mem::replace(&mut s.http, relay.http());
        let mut sse = Sse::open(http, head);
        let mut got: Vec<(Instant, SseEvent)> = Vec::new();
        loop {
            match sse.next(IO) {
                SseNext::Event(ev) => got.push((Instant::now(), ev)),
                SseNext::End => break,
                other => panic!("SSE reply ended early: {other:?}; got {got:?}"),
            }
        }
        let msgs: Vec<Value> = got.iter().map(|(_, e)| e.json()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert_eq!(msgs[0]["method"], "notifications/progress", "{msgs:?}");
        assert_eq!(msgs[0]["params"]["progress"], 1, "{msgs:?}");
        assert_eq!(msgs[1]["params"]["progress"], 2, "{msgs:?}");
        assert_eq!(msgs[2]["id"], 8, "{msgs:?}");
        assert_eq!(echo_text(&msgs[2]), Some("slow"), "{msgs:?}");
        for (_, ev) in &got {
            assert!(
                !ev.id.as_deref().unwrap_or("").starts_with('e'),
                "the upstream's event id leaked through: {ev:?}"
            );
        }
        let first_progress = got[0].0;
        let reply_at = got[2].0;
        let sent = reply_sent.lock().unwrap().expect("the fake sent the reply");
        let gap = reply_at.saturating_duration_since(first_progress);
        eprintln!(
            "first progress {:?} before the reply; the fake sent the reply {:?} after the client had progress",
            gap,
            sent.saturating_duration_since(first_progress)
        );
        assert!(
            first_progress < sent,
            "the first progress event reached the client only after the upstream sent the reply: buffered"
        );
        assert!(
            gap >= Duration::from_millis(250),
            "progress arrived only {gap:?} before the reply (the upstream paused 300 ms): buffered"
        );
    });
}

// ============================================================================
// 2. Keep-alive reuse of upstream connections
// ============================================================================

/// Distinct upstream connections that carried a POST.
fn post_connections(reqs: &[Req]) -> HashSet<usize> {
    reqs.iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.conn)
        .collect()
}

/// 200 sequential requests over one client session ride at most
/// `--max-connections` upstream connections (in practice one: each request
/// finds the previous one's connection idle); the session's GET stream has a
/// connection of its own. Then 4 sessions × 25 concurrent requests (the
/// fake takes 10 ms per reply) still stay within the cap.
#[test]
fn keep_alive_connections_are_reused_within_max_connections() {
    bounded(|| {
        const MAX: usize = 2;
        let up = Arc::new(UpSessions::default());
        let up2 = up.clone();
        let fake = Fake::start(handler(move |req, conn| {
            if req.json()["params"]["arguments"]["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("slow"))
                && !conn.wait(Duration::from_millis(10))
            {
                return After::Close;
            }
            standard(req, conn, &up2)
        }));
        let relay = start_relay(&fake.url(), &["--max-connections", &MAX.to_string()]);
        let mut s = Session::open(relay.port);
        fake.wait_for("the GET stream", SHORT, |r| !gets(r).is_empty());
        let t0 = Instant::now();
        for i in 0..200 {
            s.call_ok(&format!("sequential {i}"));
        }
        let elapsed = t0.elapsed();
        let seen = fake.seen();
        let posts = seen.iter().filter(|r| r.method == "POST").count();
        let post_conns = post_connections(&seen);
        eprintln!(
            "{posts} POSTs in {elapsed:?} over {} upstream connection(s) {:?}; {} accepted in all (GET stream included)",
            post_conns.len(),
            post_conns,
            fake.connections()
        );
        assert_eq!(posts, 202, "initialize + initialized + 200 calls");
        assert!(
            post_conns.len() <= MAX,
            "{} connections carried POSTs (--max-connections {MAX}): {post_conns:?}",
            post_conns.len()
        );
        assert_eq!(
            gets(&seen).len(),
            1,
            "{}",
            summaries(&gets(&seen).into_iter().cloned().collect::<Vec<_>>())
        );
        assert!(
            fake.connections() <= MAX + 1,
            "{} upstream connections accepted",
            fake.connections()
        );

        // Concurrent: 4 sessions (4 more GET streams) × 25 requests.
        let before = fake.connections();
        let port = relay.port;
        run_threads(4, |t| {
            let mut s = Session::open(port);
            for i in 0..25 {
                s.call_ok(&format!("slow {t}/{i}"));
            }
        });
        let seen = fake.seen();
        let post_conns = post_connections(&seen);
        let new_gets = gets(&seen).len() - 1;
        eprintln!(
            "after 4 x 25 concurrent calls: POSTs over {} connection(s) {post_conns:?}; {} accepted, {new_gets} of them GET streams",
            post_conns.len(),
            fake.connections() - before
        );
        assert!(
            post_conns.len() <= MAX,
            "{} connections carried POSTs (--max-connections {MAX}): {post_conns:?}",
            post_conns.len()
        );
        assert!(
            fake.connections() <= MAX + 5,
            "{} upstream connections for {MAX} pooled + 5 GET streams",
            fake.connections()
        );
    });
}

/// An upstream that answers every POST with `Connection: close` (and closes)
/// cannot have its connections reused: each request opens a new one. This
/// documents the cost (one TCP handshake per request) and checks that no
/// request fails for it (the relay must never write to a connection the
/// upstream announced it would close).
#[test]
fn connection_close_upstream_needs_a_connection_per_request() {
    bounded(|| {
        let up = Arc::new(UpSessions::default());
        let up2 = up.clone();
        let fake = Fake::start(handler(move |req, conn| {
            let msg = req.json();
            if req.method == "POST" {
                let sid;
                let mut headers = vec![("connection", "close")];
                let reply = if msg["method"] == "initialize" {
                    sid = up2.issue();
                    headers.push(("mcp-session-id", &sid));
                    reply_to(&msg)
                } else {
                    reply_to(&msg)
                };
                return match reply {
                    Some(r) => conn.json(&headers, &r),
                    None => conn.respond(202, &headers, b""),
                };
            }
            standard(req, conn, &up2)
        }));
        let relay = start_relay(&fake.url(), &["--max-connections", "2"]);
        let mut s = Session::open(relay.port);
        for i in 0..200 {
            s.call_ok(&format!("close {i}"));
        }
        let seen = fake.seen();
        let posts = seen.iter().filter(|r| r.method == "POST").count();
        let post_conns = post_connections(&seen);
        eprintln!(
            "Connection: close upstream: {posts} POSTs over {} connections; {} accepted in all",
            post_conns.len(),
            fake.connections()
        );
        assert_eq!(posts, 202);
        assert_eq!(
            post_conns.len(),
            posts,
            "each POST should have had a connection of its own"
        );
    });
}

// ============================================================================
// 3. The upstream GET stream
// ============================================================================

/// After `notifications/initialized` the relay opens the upstream GET stream
/// with the upstream's session id. Its messages reach the client's GET
/// stream under the relay's own event ids. When the upstream drops the
/// stream after event id 2, the relay reconnects with `Last-Event-ID: 2`,
/// drops the replayed event 2 and delivers 3 and 4: the client sees 1..4
/// once each. The client's own resume (`Last-Event-ID` to the relay) is
/// served from the relay's replay buffer without touching the upstream.
#[test]
fn upstream_get_stream_reaches_the_client_and_resumes_without_duplicates() {
    bounded(|| {
        let up = Arc::new(UpSessions::default());
        let go = Arc::new(AtomicBool::new(false));
        let get_count = Arc::new(AtomicUsize::new(0));
        let (up2, go2, count2) = (up.clone(), go.clone(), get_count.clone());
        let fake = Fake::start(handler(move |req, conn| {
            if req.method != "GET" {
                return standard(req, conn, &up2);
            }
            let k = count2.fetch_add(1, Ordering::SeqCst);
            if !conn.sse_start() {
                return After::Close;
            }
            match k {
                0 => {
                    // Wait for the test, send 1 and 2, then drop the
                    // connection mid-stream (no last chunk).
                    if conn.hold_until(|| go2.load(Ordering::SeqCst)) {
                        return After::Close;
                    }
                    conn.sse_event(Some("1"), &server_note(1).to_string());
                    conn.sse_event(Some("2"), &server_note(2).to_string());
                    let _ = conn.wait(Duration::from_millis(50));
                }
                1 => {
                    // A resumed stream replays what it may have lost.
                    conn.sse_event(Some("2"), &server_note(2).to_string());
                    conn.sse_event(Some("3"), &server_note(3).to_string());
                    conn.sse_event(Some("4"), &server_note(4).to_string());
                    conn.hold();
                }
                _ => {
                    conn.hold();
                }
            }
            After::Close
        }));
        let relay = start_relay(&fake.url(), &[]);
        let port = relay.port;
        let mut s = Session::open(port);
        let seen = fake.wait_for("the upstream GET", SHORT, |r| !gets(r).is_empty());
        let get = gets(&seen)[0].clone();
        assert_eq!(
            get.session(),
            Some("upstream-session-1"),
            "{}",
            get.summary()
        );
        assert_eq!(get.header("accept"), Some("text/event-stream"));
        assert_eq!(get.header("mcp-protocol-version"), Some(VERSION));
        assert_eq!(get.header("last-event-id"), None);

        // A streamed reply first, so the session's event ids have moved on.
        let resp = s.post(&call_with(
            json!(1),
            json!({"text": "sse", "sse": true}),
            Some(json!("t1")),
        ));
        assert!(resp.head.is_sse(), "{resp:?}");
        let post_ids: Vec<Option<String>> = resp.events().into_iter().map(|e| e.id).collect();
        eprintln!("POST stream event ids: {post_ids:?}");

        let mut stream = s.open_get(port, None);
        go.store(true, Ordering::SeqCst);
        let mut got: Vec<(String, u64)> = Vec::new();
        while got.len() < 4 {
            // The upstream's only stream dropping is a lone drop: the
            // relay reconnects within the base window (250 ms).
            let ev = stream.expect_event(Duration::from_secs(5), "server events 1..4");
            let m = ev.json();
            assert_eq!(m["method"], "notifications/message", "{m}");
            got.push((
                ev.id.clone().expect("event id"),
                m["params"]["data"]["n"].as_u64().expect("n"),
            ));
        }
        match stream.next(Duration::from_millis(500)) {
            SseNext::Timeout => {}
            other => panic!("after events 1..4: {other:?} (a duplicate?); got {got:?}"),
        }
        let ns: Vec<u64> = got.iter().map(|(_, n)| *n).collect();
        assert_eq!(ns, vec![1, 2, 3, 4], "events on the client's stream");
        let ids: Vec<u64> = got
            .iter()
            .map(|(id, _)| {
                id.parse()
                    .unwrap_or_else(|_| panic!("relay event id {id:?}"))
            })
            .collect();
        eprintln!("client GET stream event ids: {ids:?} (upstream's: 1, 2, 3, 4)");
        assert!(
            ids.windows(2).all(|w| w[1] == w[0] + 1),
            "relay event ids not consecutive: {ids:?}"
        );
        assert_ne!(ids, vec![1, 2, 3, 4], "the upstream's ids were passed on");

        let seen = fake.seen();
        let g = gets(&seen);
        assert_eq!(g.len(), 2, "{}", summaries(&seen));
        assert_eq!(
            g[1].header("last-event-id"),
            Some("2"),
            "{}",
            g[1].summary()
        );
        assert_eq!(g[1].session(), Some("upstream-session-1"));

        // The client resumes from the relay's id of event 2: 3 and 4 again,
        // same ids, from the relay's buffer.
        drop(stream);
        let last = got[1].0.clone();
        let mut again = s.open_get(port, Some(&last));
        let replay: Vec<(Option<String>, u64)> = (0..2)
            .map(|_| {
                let ev = again.expect_event(SHORT, "replayed events");
                let n = ev.json()["params"]["data"]["n"].as_u64().unwrap();
                (ev.id, n)
            })
            .collect();
        assert_eq!(
            replay,
            vec![(Some(got[2].0.clone()), 3), (Some(got[3].0.clone()), 4)],
            "replay after Last-Event-ID {last}"
        );
        match again.next(Duration::from_millis(300)) {
            SseNext::Timeout => {}
            other => panic!("after the replay: {other:?}"),
        }
        assert_eq!(
            gets(&fake.seen()).len(),
            2,
            "the client's resume reached the upstream"
        );
    });
}

// ============================================================================
// 4. Upstream 404: the session is gone
// ============================================================================

/// The upstream forgets the session; the next request gets 404 from it. That
/// request is answered with `upstream_status` (status 404), the relay ends
/// the client session, so the client's next request gets HTTP 404, and a
/// new initialize gives a new session on both sides that works.
#[test]
fn upstream_404_on_a_request_ends_the_client_session() {
    bounded(|| {
        let up = Arc::new(UpSessions::default());
        let fake = Fake::start(well_behaved(&up));
        let relay = start_relay(&fake.url(), &[]);
        let port = relay.port;
        let mut s = Session::open(port);
        s.call_ok("before");
        fake.wait_for("the GET stream", SHORT, |r| !gets(r).is_empty());
        let mut stream = s.open_get(port, None);

        assert!(up.expire("upstream-session-1"));
        let reply = s.call("after expiry");
        eprintln!("request that met the upstream's 404: {reply}");
        assert_eq!(error_kind(&reply), Some("upstream_status"), "{reply}");
        assert_eq!(reply["error"]["data"]["status"], 404, "{reply}");
        assert_eq!(reply["error"]["code"], -32006, "{reply}");
        assert_eq!(reply["error"]["data"]["upstream"], NAME, "{reply}");

        let resp = s.post(&call(json!("next"), "next"));
        assert_eq!(
            resp.status(),
            404,
            "the ended session still answers: {resp:?}"
        );
        match stream.next(SHORT) {
            SseNext::End | SseNext::Closed(_) => {}
            other => panic!("the client's GET stream outlived its session: {other:?}"),
        }

        let mut s2 = Session::open(port);
        assert_ne!(s2.sid, s.sid);
        s2.call_ok("new session");
        let seen = fake.seen();
        let q = seen
            .iter()
            .rev()
            .find(|q| q.is_post_of("tools/call"))
            .unwrap();
        assert_eq!(q.session(), Some("upstream-session-2"), "{}", q.summary());
    });
}

/// The upstream drops the GET stream and answers the reconnect with 404:
/// the relay ends the client session (its GET stream ends, its next request
/// gets 404), and the client can start over.
#[test]
fn upstream_404_on_the_get_reconnect_ends_the_client_session() {
    bounded(|| {
        let up = Arc::new(UpSessions::default());
        let fake = Fake::start(well_behaved(&up));
        let relay = start_relay(&fake.url(), &[]);
        let port = relay.port;
        let mut s = Session::open(port);
        fake.wait_for("the GET stream", SHORT, |r| !gets(r).is_empty());
        let mut stream = s.open_get(port, None);
        let t0 = Instant::now();
        // The fake's GET holder sees its session gone and closes.
        assert!(up.expire("upstream-session-1"));
        match stream.next(Duration::from_secs(5)) {
            SseNext::End | SseNext::Closed(_) => {}
            other => panic!("the client's GET stream did not end: {other:?}"),
        }
        eprintln!(
            "client stream ended {:?} after the upstream forgot the session",
            t0.elapsed()
        );
        let seen = fake.seen();
        let g = gets(&seen);
        assert_eq!(g.len(), 2, "{}", summaries(&seen));
        let resp = s.post(&call(json!("next"), "next"));
        assert_eq!(resp.status(), 404, "{resp:?}");
        let mut s2 = Session::open(port);
        s2.call_ok("new session");
    });
}

// ============================================================================
// 5. DELETE propagates
// ============================================================================

/// The client's DELETE ends its session, and the relay ends the upstream
/// session with DELETE and its id (and stops the upstream GET stream).
#[test]
fn client_delete_becomes_upstream_delete() {
    bounded(|| {
        let up = Arc::new(UpSessions::default());
        let fake = Fake::start(well_behaved(&up));
        let relay = start_relay(&fake.url(), &[]);
        let mut s = Session::open(relay.port);
        s.call_ok("hello");
        fake.wait_for("the GET stream", SHORT, |r| !gets(r).is_empty());
        let resp = s.delete();
        assert_eq!(resp.status(), 200, "{resp:?}");
        let seen = fake.wait_for("DELETE", SHORT, |r| r.iter().any(|q| q.method == "DELETE"));
        let deletes: Vec<&Req> = seen.iter().filter(|q| q.method == "DELETE").collect();
        assert_eq!(deletes.len(), 1, "{}", summaries(&seen));
        assert_eq!(deletes[0].session(), Some("upstream-session-1"));
        assert_eq!(deletes[0].header("mcp-protocol-version"), Some(VERSION));
        let resp = s.post(&call(json!("after"), "after"));
        assert_eq!(resp.status(), 404, "{resp:?}");
        thread::sleep(Duration::from_millis(300));
        assert_eq!(
            gets(&fake.seen()).len(),
            1,
            "the relay reconnected the GET stream of a deleted session"
        );
    });
}

// ============================================================================
// 6. Failures map to typed errors
// ============================================================================

/// Nothing listens on the upstream port: initialize is answered with
/// `connect_failed` (code -32005).
#[test]
fn refused_upstream_is_connect_failed() {
    bounded(|| {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/mcp");
        let relay = start_relay(&url, &[]);
        let mut http = relay.http();
        let t0 = Instant::now();
        let resp = post(&mut http, None, &initialize(json!(1)));
        eprintln!(
            "initialize with the upstream refusing: {:?} after {:?}",
            resp,
            t0.elapsed()
        );
        assert_eq!(resp.status(), 200, "{resp:?}");
        let reply = resp.rpc();
        assert_eq!(reply["id"], 1, "{reply}");
        assert_eq!(error_kind(&reply), Some("connect_failed"), "{reply}");
        assert_eq!(reply["error"]["code"], -32005, "{reply}");
        assert_eq!(reply["error"]["data"]["upstream"], NAME, "{reply}");
    });
}

/// An HTTP 500 to a tools/call is `upstream_status` with `data.status` 500
/// (code -32006); the session carries on.
#[test]
fn upstream_500_is_upstream_status() {
    bounded(|| {
        let up = Arc::new(UpSessions::default());
        let up2 = up.clone();
        let fake = Fake::start(handler(move |req, conn| {
            if req.json()["params"]["arguments"]["text"] == "fail" {
                let body = json!({"jsonrpc": "2.0", "id": req.json()["id"],
                                  "error": {"code": -32603, "message": "boom"}});
                return conn.respond(
                    500,
                    &[("content-type", "application/json")],
                    body.to_string().as_bytes(),
                );
            }
            standard(req, conn, &up2)
        }));
        let relay = start_relay(&fake.url(), &[]);
        let mut s = Session::open(relay.port);
        let reply = s.call("fail");
        eprintln!("500 from the upstream: {reply}");
        assert_eq!(error_kind(&reply), Some("upstream_status"), "{reply}");
        assert_eq!(reply["error"]["data"]["status"], 500, "{reply}");
        assert_eq!(reply["error"]["code"], -32006, "{reply}");
        s.call_ok("still works");
    });
}

/// The upstream never answers: with `--response-timeout 400ms` the client
/// gets `response_timeout` (code -32001) between 400 ms and 400 ms + 10% +
/// [`MARGIN`], and the upstream receives `notifications/cancelled` for the
/// request on the same upstream session. The session carries on.
#[test]
fn silent_upstream_is_response_timeout_and_gets_cancelled() {
    bounded(|| {
        let up = Arc::new(UpSessions::default());
        let up2 = up.clone();
        let fake = Fake::start(handler(move |req, conn| {
            if req.json()["params"]["arguments"]["text"] == "hang" {
                conn.hold();
                return After::Close;
            }
            standard(req, conn, &up2)
        }));
        let timeout = Duration::from_millis(400);
        let relay = start_relay(&fake.url(), &["--response-timeout", "400ms"]);
        let mut s = Session::open(relay.port);
        let sid = s.sid.clone();
        let body = serde_json::to_vec(&call(json!(42), "hang")).unwrap();
        let t0 = Instant::now();
        s.http
            .send_request("POST", "/mcp", &mcp_headers(Some(&sid)), &body)
            .expect("send");
        let resp = s
            .http
            .read_response(Instant::now() + IO)
            .expect("an answer");
        let elapsed = t0.elapsed();
        let reply = resp.rpc();
        eprintln!("silent upstream: {reply} after {elapsed:?}");
        assert_eq!(error_kind(&reply), Some("response_timeout"), "{reply}");
        assert_eq!(reply["error"]["code"], -32001, "{reply}");
        assert_eq!(reply["id"], 42, "{reply}");
        assert_eq!(
            reply["error"]["data"]["response_timeout_ms"], 400,
            "{reply}"
        );
        assert!(
            elapsed >= timeout && elapsed <= upper_bound(timeout),
            "response_timeout after {elapsed:?}, expected {timeout:?}..{:?}",
            upper_bound(timeout)
        );
        let seen = fake.wait_for("notifications/cancelled", SHORT, |r| {
            r.iter().any(|q| q.is_post_of("notifications/cancelled"))
        });
        let c = seen
            .iter()
            .find(|q| q.is_post_of("notifications/cancelled"))
            .unwrap();
        assert_eq!(c.json()["params"]["requestId"], 42, "{}", c.summary());
        assert_eq!(c.session(), Some("upstream-session-1"));
        s.call_ok("still works");
    });
}

/// Issue 13: a request the client cancelled (`notifications/cancelled`)
/// stayed in flight until the session ended and was then answered
/// `upstream_closed`. Now the cancel goes to the upstream and the request's
/// POST, which had sent nothing yet, ends at once with an empty event
/// stream (no JSON-RPC answer: MCP has the receiver of a cancellation not
/// answer it); the relay lets its upstream exchange go.
#[test]
fn client_cancel_ends_the_request_at_once() {
    bounded(|| {
        let up = Arc::new(UpSessions::default());
        let up2 = up.clone();
        let fake = Fake::start(handler(move |req, conn| {
            if req.json()["params"]["arguments"]["text"] == "hang" {
                conn.hold();
                return After::Close;
            }
            standard(req, conn, &up2)
        }));
        let relay = start_relay(&fake.url(), &[]);
        let mut s = Session::open(relay.port);
        let sid = s.sid.clone();
        let mut h = Http::connect(relay.port);
        let body = serde_json::to_vec(&call(json!(42), "hang")).unwrap();
        h.send_request("POST", "/mcp", &mcp_headers(Some(&sid)), &body)
            .expect("send");
        fake.wait_for("the call upstream", SHORT, |r| {
            r.iter().any(|q| q.is_post_of("tools/call"))
        });
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                            "params": {"requestId": 42, "reason": "test"}});
        assert_eq!(post(&mut s.http, Some(&sid), &cancel).status(), 202);
        let resp = h
            .read_response(Instant::now() + SHORT)
            .expect("the cancelled request's POST ends at once");
        assert_eq!(resp.status(), 200, "{resp:?}");
        assert_eq!(resp.header("content-type"), Some("text/event-stream"));
        assert!(resp.events().is_empty(), "answered: {:?}", resp.events());
        let seen = fake.wait_for("notifications/cancelled", SHORT, |r| {
            r.iter().any(|q| q.is_post_of("notifications/cancelled"))
        });
        let c = seen
            .iter()
            .find(|q| q.is_post_of("notifications/cancelled"))
            .unwrap();
        assert_eq!(c.json()["params"]["requestId"], 42, "{}", c.summary());
        s.call_ok("still works");
    });
}

/// An `initialize` the upstream never answered (here: nothing listens)
/// must not leave a client session behind. MCP (2025-06-18, Session
/// Management) has the server assign a session id "by including it in an
/// `Mcp-Session-Id` header on the HTTP response containing the
/// InitializeResult": there is no InitializeResult here and no upstream
/// session the relay's session could map to. So the failed initialize
/// leaves no session (the id it came with, if any, gets 404, so a client
/// that tries it starts over) and `mcp_relay_sessions` stays 0.
///
/// Regression test: at acd3627 the relay answered the error with an
/// `Mcp-Session-Id`, kept that session until `--session-idle-timeout` (one
/// more per retried initialize), and forwarded its later requests to the
/// upstream without any `Mcp-Session-Id` (a real server answers 400, so the
/// client never learned to re-initialize). 7a7d556 ends the session.
#[test]
fn failed_initialize_leaves_no_session() {
    bounded(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = format!("http://{addr}/mcp");
        let relay = start_relay(&url, &["--retries", "0"]);
        let mut http = relay.http();
        let resp = post(&mut http, None, &initialize(json!(1)));
        assert_eq!(error_kind(&resp.rpc()), Some("connect_failed"), "{resp:?}");
        let sid = resp.header("mcp-session-id").map(str::to_owned);
        let sessions = relay_sessions(&relay);

        // The upstream comes up; the client tries the id it was given.
        let listener = TcpListener::bind(addr).expect("rebind the upstream port");
        let up = Arc::new(UpSessions::default());
        let fake = Fake::serve(listener, well_behaved(&up));
        let mut used = None;
        if let Some(sid) = &sid {
            let r = post(
                &mut http,
                Some(sid),
                &call(json!(2), "with the failed session"),
            );
            used = Some((r.status(), String::from_utf8_lossy(&r.body).into_owned()));
        }
        let upstream_saw = summaries(&fake.seen());
        eprintln!(
            "failed initialize: Mcp-Session-Id {sid:?}; mcp_relay_sessions {sessions}; \
             a request with that id: {used:?}; the upstream saw:\n{upstream_saw}"
        );
        assert!(
            sid.is_none() || used.as_ref().is_some_and(|(status, _)| *status == 404),
            "the session of a failed initialize ({sid:?}) is still served: {used:?}\n\
             the upstream saw:\n{upstream_saw}"
        );
        assert_eq!(sessions, 0, "a failed initialize left a session");
        // And a fresh start works.
        let mut s = Session::open(relay.port);
        s.call_ok("fresh");
    });
}

/// `mcp_relay_sessions{upstream="fake"}` from /metrics.
fn relay_sessions(relay: &Relay) -> u64 {
    let m = common::prom::Scrape::parse(relay.metrics_text());
    m.value("mcp_relay_sessions", &[("upstream", NAME)])
        .unwrap_or_else(|| panic!("no mcp_relay_sessions in /metrics:\n{}", m.text)) as u64
}

// ============================================================================
// More of the upstream side
// ============================================================================

/// A server→client request sent inside a tools/call's SSE response reaches
/// the client on that response's stream (it has no GET stream open); the
/// client's answer, POSTed to the relay, reaches the upstream on the same
/// upstream session, and then the tool's reply comes.
#[test]
fn server_to_client_request_round_trip() {
    bounded(|| {
        let up = Arc::new(UpSessions::default());
        let answer: Arc<Mutex<Option<Req>>> = Arc::default();
        let (up2, answer2) = (up.clone(), answer.clone());
        let fake = Fake::start(handler(move |req, conn| {
            let msg = req.json();
            if req.method == "POST" && msg["id"] == "srv-1" && msg.get("method").is_none() {
                *answer2.lock().unwrap() = Some(req.clone());
                return conn.respond(202, &[], b"");
            }
            if req.is_post_of("tools/call") && msg["params"]["arguments"]["text"] == "ask" {
                if !conn.sse_start() {
                    return After::Close;
                }
                let ask = json!({"jsonrpc": "2.0", "id": "srv-1", "method": "roots/list"});
                conn.sse_event(Some("a1"), &ask.to_string());
                let deadline = Instant::now() + SHORT;
                while answer2.lock().unwrap().is_none() && Instant::now() < deadline {
                    if !conn.wait(TICK) {
                        return After::Close;
                    }
                }
                let roots = answer2
                    .lock()
                    .unwrap()
                    .as_ref()
                    .map(|r| r.json()["result"]["roots"].clone());
                let text = format!("roots: {}", roots.unwrap_or(Value::Null));
                conn.sse_event(Some("a2"), &echo_reply(&msg["id"], &text).to_string());
                conn.sse_end();
                return After::KeepAlive;
            }
            standard(req, conn, &up2)
        }));
        let relay = start_relay(&fake.url(), &[]);
        let port = relay.port;
        let mut s = Session::open(port);
        let sid = s.sid.clone();
        let body = serde_json::to_vec(&call(json!(5), "ask")).unwrap();
        s.http
            .send_request("POST", "/mcp", &mcp_headers(Some(&sid)), &body)
            .expect("send");
        let head = s.http.read_head(Instant::now() + IO).expect("head");
        let http = std::mem::replace(&mut s.http, relay.http());
        let mut sse = Sse::open(http, head);
        let ask = sse.expect_event(SHORT, "the server's roots/list").json();
        assert_eq!(ask["method"], "roots/list", "{ask}");
        let reply = json!({"jsonrpc": "2.0", "id": ask["id"],
                           "result": {"roots": [{"uri": "file:///tmp", "name": "tmp"}]}});
        let ack = s.post(&reply);
        assert_eq!(ack.status(), 202, "{ack:?}");
        let result = sse.expect_event(SHORT, "the tool's reply").json();
        assert_eq!(result["id"], 5, "{result}");
        assert_eq!(
            echo_text(&result),
            Some(r#"roots: [{"name":"tmp","uri":"file:///tmp"}]"#),
            "{result}"
        );
        let got = answer
            .lock()
            .unwrap()
            .clone()
            .expect("the answer reached the upstream");
        assert_eq!(
            got.session(),
            Some("upstream-session-1"),
            "{}",
            got.summary()
        );
        assert_eq!(
            ask["id"], "srv-1",
            "the relay renamed the server's request id"
        );
    });
}

/// How many fresh sessions the GET-stream-first tests run (issue 12, 4):
/// without the hold, 2–3 runs in 40 lost the race.
const GET_FIRST_ROUNDS: usize = 200;

/// A server that asks the client (`sampling/createMessage`) on the session's
/// GET stream as soon as the first call after `notifications/initialized`
/// arrives finds that stream open: the relay holds the session's POSTs until
/// its GET stream is open. The client sees the request on the call's
/// response stream (it has no GET stream of its own), answers it, and gets
/// the tool's reply. One relay and one fake, a fresh session each round.
#[test]
fn server_requests_on_the_get_stream_right_after_initialized_reach_the_client() {
    bounded(|| {
        let up = Arc::new(AsksOnGet::default());
        let fake = Fake::start(up.handler());
        let relay = start_relay(&fake.url(), &[]);
        let mut answers = relay.http();
        let mut missed = Vec::new();
        for round in 0..GET_FIRST_ROUNDS {
            let Session { mut http, sid, .. } = Session::open(relay.port);
            let body = serde_json::to_vec(&call(json!(1), "ask")).unwrap();
            http.send_request("POST", "/mcp", &mcp_headers(Some(&sid)), &body)
                .expect("send tools/call");
            let deadline = Instant::now() + IO;
            let head = http.read_head(deadline).expect("tools/call head");
            assert_eq!(head.status, 200, "round {round}: {head:?}");
            let first = if head.is_sse() {
                Sse::open(http, head)
            } else {
                // No request came first: the reply alone, as JSON.
                let body = http.read_body(&head, deadline).expect("tools/call body");
                assert!(
                    String::from_utf8_lossy(&body).contains(NO_GET_STREAM),
                    "round {round}"
                );
                missed.push(round);
                continue;
            };
            let mut sse = first;
            let ask = sse.expect_event(SHORT, "the server's request").json();
            assert_eq!(
                ask["method"], "sampling/createMessage",
                "round {round}: {ask}"
            );
            let text = format!("pong {round}");
            let ack = post(&mut answers, Some(&sid), &AsksOnGet::sampled(&ask, &text));
            assert_eq!(ack.status(), 202, "round {round}: {ack:?}");
            let reply = sse.expect_event(SHORT, "the tool's reply").json();
            let want = format!("sampled: {text}");
            assert_eq!(
                echo_text(&reply),
                Some(want.as_str()),
                "round {round}: {reply}"
            );
            let bye = answers.request(
                "DELETE",
                "/mcp",
                &[("Mcp-Session-Id", &sid), ("MCP-Protocol-Version", VERSION)],
                b"",
            );
            assert_eq!(bye.status(), 200, "round {round}: {bye:?}");
        }
        let failures = up.failures.lock().unwrap().clone();
        assert!(
            missed.is_empty() && failures.is_empty(),
            "{} of {GET_FIRST_ROUNDS} calls reached the upstream before their GET stream \
             ({NO_GET_STREAM}): sessions {failures:?}; rounds {missed:?}",
            failures.len()
        );
    });
}

/// An upstream without a GET stream (405) is not asked again: one GET, no
/// reconnects, and the session works.
#[test]
fn upstream_get_405_is_not_retried() {
    bounded(|| {
        let up = Arc::new(UpSessions::default());
        let up2 = up.clone();
        let fake = Fake::start(handler(move |req, conn| {
            if req.method == "GET" {
                return conn.respond(405, &[("allow", "POST, DELETE")], b"");
            }
            standard(req, conn, &up2)
        }));
        let relay = start_relay(&fake.url(), &["--reconnect-base", "100ms"]);
        let mut s = Session::open(relay.port);
        fake.wait_for("the GET", SHORT, |r| !gets(r).is_empty());
        thread::sleep(Duration::from_millis(1500));
        s.call_ok("works without a GET stream");
        let seen = fake.seen();
        assert_eq!(gets(&seen).len(), 1, "{}", summaries(&seen));
    });
}

/// An upstream that issues no session id (stateless): the client still gets
/// the relay's session id; requests go upstream without one; the relay does
/// not try to open a GET stream it could not name a session for.
#[test]
fn stateless_upstream_without_session_id() {
    bounded(|| {
        let fake = Fake::start(handler(|req, conn| {
            let msg = req.json();
            match (req.method.as_str(), reply_to(&msg)) {
                ("POST", Some(reply)) => conn.json(&[], &reply),
                ("POST", None) => conn.respond(202, &[], b""),
                _ => conn.respond(405, &[], b""),
            }
        }));
        let relay = start_relay(&fake.url(), &[]);
        let mut s = Session::open(relay.port);
        s.call_ok("stateless 1");
        s.call_ok("stateless 2");
        thread::sleep(Duration::from_millis(300));
        let seen = fake.seen();
        assert!(
            seen.iter().all(|r| r.session().is_none()),
            "{}",
            summaries(&seen)
        );
        assert!(gets(&seen).is_empty(), "{}", summaries(&seen));
        assert_eq!(s.delete().status(), 200);
    });
}

/// `--idle-timeout 300ms`: a pooled upstream connection idle that long is
/// closed (between 300 ms and 300 ms + 10% + MARGIN after its last
/// response), and the next request opens a new one. The session's GET
/// stream is not a pooled connection and stays open.
#[test]
fn idle_upstream_connections_close_after_idle_timeout() {
    bounded(|| {
        let up = Arc::new(UpSessions::default());
        let fake = Fake::start(well_behaved(&up));
        let relay = start_relay(&fake.url(), &["--idle-timeout", "300ms"]);
        let mut s = Session::open(relay.port);
        let seen = fake.wait_for("the GET stream", SHORT, |r| !gets(r).is_empty());
        let get_conn = gets(&seen)[0].conn;
        s.call_ok("one");
        let last = fake
            .seen()
            .into_iter()
            .rev()
            .find(|r| r.is_post_of("tools/call"))
            .unwrap();
        let timeout = Duration::from_millis(300);
        wait_until(SHORT, "the idle connection closed", || {
            fake.closed().iter().any(|(c, _)| *c == last.conn)
        });
        let (_, closed_at) = fake
            .closed()
            .into_iter()
            .find(|(c, _)| *c == last.conn)
            .unwrap();
        let idle = closed_at.saturating_duration_since(last.at);
        eprintln!(
            "pooled connection #{} closed after {idle:?} idle",
            last.conn
        );
        assert!(
            idle >= timeout && idle <= upper_bound(timeout),
            "closed after {idle:?} idle, expected {timeout:?}..{:?}",
            upper_bound(timeout)
        );
        s.call_ok("two");
        let again = fake
            .seen()
            .into_iter()
            .rev()
            .find(|r| r.is_post_of("tools/call"))
            .unwrap();
        assert_ne!(again.conn, last.conn);
        assert!(
            !fake.closed().iter().any(|(c, _)| *c == get_conn),
            "the GET stream's connection was closed as idle"
        );
    });
}

/// A GET stream that keeps failing (503) past `--reconnect-max-elapsed`
/// ends the session: never later than the budget (the relay gives up early
/// rather than gathering its attempts at the deadline), the client's GET
/// stream ends and its next request gets 404.
#[test]
fn get_stream_failing_past_reconnect_max_elapsed_ends_the_session() {
    bounded(|| {
        let up = Arc::new(UpSessions::default());
        let up2 = up.clone();
        let fake = Fake::start(handler(move |req, conn| {
            if req.method == "GET" {
                return conn.respond(503, &[], b"");
            }
            standard(req, conn, &up2)
        }));
        let budget = Duration::from_secs(1);
        let relay = start_relay(
            &fake.url(),
            &["--reconnect-base", "100ms", "--reconnect-max-elapsed", "1s"],
        );
        let port = relay.port;
        let (mut s, _) = Session::initialize(port);
        let mut stream = s.open_get(port, None);
        let t0 = Instant::now();
        assert_eq!(s.post(&initialized()).status(), 202);
        match stream.next(budget + SHORT) {
            SseNext::End | SseNext::Closed(_) => {}
            other => panic!("the client's GET stream did not end: {other:?}"),
        }
        let ended = t0.elapsed();
        let seen = fake.seen();
        let attempts: Vec<Duration> = gets(&seen)
            .iter()
            .map(|r| r.at.saturating_duration_since(t0))
            .collect();
        eprintln!("session ended {ended:?} after initialized; GET attempts at {attempts:?}");
        assert!(
            ended <= upper_bound(budget),
            "gave up after {ended:?}, budget {budget:?}"
        );
        assert!(attempts.len() >= 2, "{}", summaries(&seen));
        relay.wait_stderr("could not be restored", SHORT);
        let resp = s.post(&call(json!(1), "after"));
        assert_eq!(resp.status(), 404, "{resp:?}");
    });
}

// ============================================================================
// 7. Churn: 1,000 sessions whose GET streams fail together
// ============================================================================

const CHURN_LIMIT: Duration = Duration::from_secs(50);
const CHURN_SESSIONS: usize = 1000;
const CHURN_THREADS: usize = 8;
/// How long the relay's CPU is measured while every stream is in backoff.
const CPU_WINDOW: Duration = Duration::from_secs(10);
/// The relay's CPU budget over [`CPU_WINDOW`]: 5% of one core.
///
/// That budget is for the relay as shipped (an optimized build): measured
/// 0.37-0.39 s here (user 0.11 s, system 0.26 s: mostly the kernel's TCP
/// work for ~2,000 reconnect attempts). `cargo test` without `--release`
/// runs the unoptimized binary, which measured 1.57-1.60 s (user 1.32 s) for
/// the same attempts: 44% of its samples zero-fill the 16 KiB read buffer
/// that `Transport::read_plain` resizes before every read, a byte loop with
/// overflow checks when unoptimized and a memset when optimized. So an
/// unoptimized build gets 4 x the budget, which still catches any
/// per-session polling or spinning (that would cost whole cores); run with
/// `--release` for the 5% check itself.
const CPU_BUDGET_SECS: f64 = 0.5;
/// The same budget for an unoptimized relay binary, used only when no
/// up-to-date optimized one exists (see [`perf_relay`]).
const CPU_BUDGET_UNOPTIMIZED_SECS: f64 = 2.0;
/// At most this share (%) of the first reconnects may land in one 100 ms.
///
/// 15% is the requirement, met by the relay as shipped (optimized: 6.7-7.3%
/// measured). The relay handles every drop of one `poll` batch before it
/// looks at its timers, so the delays drawn below the time P it takes to
/// handle the 1,000 drops all fire together when it is done: P / 2 s of the
/// herd lands in one window on top of the ~5% of a uniform spread. P is
/// ~20 ms optimized, but 100-230 ms unoptimized (the same zero-filling as in
/// [`CPU_BUDGET_SECS`]), which measured 9-13% there. An unoptimized build is
/// held to 25% (P up to ~400 ms on a slower box), still far from a
/// synchronized herd (~100% in one window), plus the percentile span check,
/// which a narrowed window fails.
const SPREAD_LIMIT_PCT: usize = 15;
const SPREAD_LIMIT_UNOPTIMIZED_PCT: usize = 25;
/// The last first reconnect: the 2 s herd window, plus the time to handle
/// the restart (P above) and a margin.
const HERD_LATEST: Duration = Duration::from_millis(3000);

/// The relay binary to measure performance on: the optimized build
/// (`target/release/mcp-relay`, which CI builds first for its short
/// benchmark) when it is newer than every source file, so the 5% and 15%
/// requirements are checked on what ships; otherwise the unoptimized test
/// binary with the looser limits above. Returns (path, optimized).
fn perf_relay() -> (std::path::PathBuf, bool) {
    let debug = Path::new(RELAY);
    if !cfg!(debug_assertions) {
        return (debug.to_path_buf(), true);
    }
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    fn newest(dir: &Path, best: &mut Option<std::time::SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                newest(&path, best);
            } else if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
                *best = Some(best.map_or(t, |b| b.max(t)));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut source = modified(&root.join("Cargo.toml"));
    newest(&root.join("src"), &mut source);
    let release = debug
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("release").join("mcp-relay"));
    match (release, source) {
        (Some(r), Some(src)) if modified(&r).is_some_and(|t| t >= src) => (r, true),
        _ => (debug.to_path_buf(), false),
    }
}

/// `TcpExt: ListenOverflows` from /proc/net/netstat: SYNs dropped because an
/// accept queue was full, machine-wide.
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let [names, values] = lines.as_slice() else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// A listening socket on 127.0.0.1 with a backlog of 4096 (std uses 128,
/// which 1,000 streams reconnecting can overflow: the kernel then drops
/// SYNs and the connects complete only after its 1 s / 3 s retries).
fn wide_listener() -> TcpListener {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket syscalls on a descriptor created here and handed
    // to a TcpListener (which closes it) right away.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        let listener = TcpListener::from_raw_fd(fd);
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let rc = libc::bind(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
        assert_eq!(
            libc::listen(fd, 4096),
            0,
            "listen: {}",
            io::Error::last_os_error()
        );
        listener
    }
}

/// What the churn fake saw.
#[derive(Default)]
struct ChurnLog {
    /// GET streams open right now.
    open_gets: usize,
    /// When the fake closed every GET stream at once.
    restarted_at: Option<Instant>,
    /// GETs after the restart: arrival time and session id.
    gets_after: Vec<(Instant, String)>,
    /// Each session's first GET after the restart.
    first_after: HashMap<String, Instant>,
    posts: usize,
    accepted: usize,
}

/// A fake MCP server for 1,000 sessions: one `mio` loop on a thread, so its
/// own cost does not depend on how many connections are open. Before the
/// restart, GET opens an SSE stream that stays open; `restart` closes them
/// all at once, and from then on every GET is answered 503 (no Retry-After).
struct ChurnFake {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    restart: Arc<AtomicBool>,
    log: Arc<Mutex<ChurnLog>>,
    thread: Option<JoinHandle<()>>,
}

struct ChurnConn {
    stream: mio::net::TcpStream,
    buf: Vec<u8>,
    out: Vec<u8>,
    get_stream: bool,
    close_when_flushed: bool,
}

impl ChurnConn {
    /// Writes what it can. False: the connection is finished.
    fn flush(&mut self) -> bool {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return false,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        !self.close_when_flushed
    }
}

impl ChurnFake {
    fn start() -> ChurnFake {
        let std_listener = wide_listener();
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let restart = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<ChurnLog>> = Arc::default();
        let thread = {
            let (stop, restart, log) = (stop.clone(), restart.clone(), log.clone());
            thread::spawn(move || churn_loop(std_listener, stop, restart, log))
        };
        ChurnFake {
            addr,
            stop,
            restart,
            log,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
}

impl Drop for ChurnFake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn churn_loop(
    std_listener: TcpListener,
    stop: Arc<AtomicBool>,
    restart: Arc<AtomicBool>,
    log: Arc<Mutex<ChurnLog>>,
) {
    use mio::{Events, Interest, Poll, Token};
    const LISTENER: Token = Token(usize::MAX);
    let mut poll = Poll::new().expect("poll");
    let mut listener = mio::net::TcpListener::from_std(std_listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .expect("register listener");
    let mut conns: HashMap<usize, ChurnConn> = HashMap::new();
    let mut next = 0usize;
    let mut sessions = 0usize;
    let mut restarted = false;
    let mut events = Events::with_capacity(1024);
    while !stop.load(Ordering::SeqCst) {
        if !restarted && restart.load(Ordering::SeqCst) {
            // The upstream "restarts": every GET stream ends at once.
            restarted = true;
            let streams: Vec<usize> = conns
                .iter()
                .filter(|(_, c)| c.get_stream)
                .map(|(k, _)| *k)
                .collect();
            for k in streams {
                if let Some(mut c) = conns.remove(&k) {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
            }
            let mut l = log.lock().unwrap();
            l.open_gets = 0;
            l.restarted_at = Some(Instant::now());
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(10))) {
            assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll: {e}");
            continue;
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let k = next;
                            next += 1;
                            poll.registry()
                                .register(
                                    &mut stream,
                                    Token(k),
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .expect("register");
                            conns.insert(
                                k,
                                ChurnConn {
                                    stream,
                                    buf: Vec::new(),
                                    out: Vec::new(),
                                    get_stream: false,
                                    close_when_flushed: false,
                                },
                            );
                            log.lock().unwrap().accepted += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => panic!("accept: {e}"),
                    }
                }
                continue;
            }
            let k = ev.token().0;
            let Some(c) = conns.get_mut(&k) else {
                continue;
            };
            let mut alive = true;
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                let mut tmp = [0u8; 16 * 1024];
                loop {
                    match c.stream.read(&mut tmp) {
                        Ok(0) => {
                            alive = false;
                            break;
                        }
                        Ok(n) => c.buf.extend_from_slice(&tmp[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            alive = false;
                            break;
                        }
                    }
                }
                while let Some(req) = take_request(&mut c.buf, k) {
                    churn_answer(&req, c, restarted, &mut sessions, &log);
                }
            }
            if alive {
                alive = c.flush();
            }
            if !alive && let Some(mut c) = conns.remove(&k) {
                if c.get_stream {
                    log.lock().unwrap().open_gets -= 1;
                }
                let _ = poll.registry().deregister(&mut c.stream);
            }
        }
    }
}

fn churn_answer(
    req: &Req,
    c: &mut ChurnConn,
    restarted: bool,
    sessions: &mut usize,
    log: &Mutex<ChurnLog>,
) {
    let respond = |c: &mut ChurnConn, status: &str, headers: &str, body: &str| {
        c.out.extend_from_slice(
            format!(
                "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    };
    match req.method.as_str() {
        "POST" => {
            log.lock().unwrap().posts += 1;
            let msg = req.json();
            match reply_to(&msg) {
                Some(reply) if msg["method"] == "initialize" => {
                    *sessions += 1;
                    let h = format!(
                        "content-type: application/json\r\nmcp-session-id: churn-{}\r\n",
                        *sessions
                    );
                    respond(c, "200 OK", &h, &reply.to_string());
                }
                Some(reply) => respond(
                    c,
                    "200 OK",
                    "content-type: application/json\r\n",
                    &reply.to_string(),
                ),
                None => respond(c, "202 Accepted", "", ""),
            }
        }
        "GET" if !restarted => {
            c.out.extend_from_slice(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                  cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            c.get_stream = true;
            log.lock().unwrap().open_gets += 1;
        }
        "GET" => {
            let sid = req.session().unwrap_or("?").to_owned();
            let mut l = log.lock().unwrap();
            l.first_after.entry(sid.clone()).or_insert(req.at);
            l.gets_after.push((req.at, sid));
            respond(c, "503 Service Unavailable", "connection: close\r\n", "");
            c.close_when_flushed = true;
        }
        "DELETE" => respond(c, "200 OK", "", ""),
        _ => respond(c, "405 Method Not Allowed", "", ""),
    }
}

/// The largest number of `times` (sorted) within any `window`.
fn densest(times: &[Duration], window: Duration) -> usize {
    let mut best = 0;
    let mut j = 0;
    for i in 0..times.len() {
        while times[i] - times[j] >= window {
            j += 1;
        }
        best = best.max(i + 1 - j);
    }
    best
}

/// 1,000 client sessions (8 threads, one keep-alive connection each, so 8
/// client connections in all) open their upstream GET streams; the upstream
/// then "restarts": it closes every stream at once and answers every GET
/// with 503 from then on. The first reconnect attempts must be spread (no
/// 100 ms window with more than 15% of them: with so many drops together
/// the relay draws the first delay from [0, 2 s], the first four streams
/// from narrower windows), and while every stream is in backoff the relay
/// must use less than 5% of one core over 10 s.
#[test]
fn churn_1000_sessions_in_backoff_are_cheap_and_spread() {
    bounded_with(CHURN_LIMIT, true, || {
        let overflows0 = listen_overflows();
        let fake = ChurnFake::start();
        let (binary, optimized) = perf_relay();
        let (spread_limit, cpu_budget, herd_latest) = if optimized {
            (
                SPREAD_LIMIT_PCT,
                CPU_BUDGET_SECS,
                Duration::from_millis(2500),
            )
        } else {
            (
                SPREAD_LIMIT_UNOPTIMIZED_PCT,
                CPU_BUDGET_UNOPTIMIZED_SECS,
                HERD_LATEST,
            )
        };
        let relay = Relay::reverse(NAME)
            .args(["--url", &fake.url(), "--log-level", "info"])
            .binary(&binary)
            .start();
        let port = relay.port;

        let t0 = Instant::now();
        let sids: Vec<String> = run_threads(CHURN_THREADS, |t| {
            let mut http = Http::connect(port);
            let mut sids = Vec::new();
            for _ in (t..CHURN_SESSIONS).step_by(CHURN_THREADS) {
                let resp = post(&mut http, None, &initialize(json!(0)));
                assert_eq!(resp.status(), 200, "initialize: {resp:?}");
                let sid = resp
                    .header("mcp-session-id")
                    .expect("session id")
                    .to_owned();
                let ack = post(&mut http, Some(&sid), &initialized());
                assert_eq!(ack.status(), 202, "initialized: {ack:?}");
                sids.push(sid);
            }
            sids
        })
        .into_iter()
        .flatten()
        .collect();
        assert_eq!(
            sids.iter().collect::<HashSet<_>>().len(),
            CHURN_SESSIONS,
            "distinct sessions"
        );
        let opened = t0.elapsed();
        wait_until(
            Duration::from_secs(15),
            "1,000 upstream GET streams open",
            || fake.log.lock().unwrap().open_gets >= CHURN_SESSIONS,
        );
        eprintln!(
            "{CHURN_SESSIONS} sessions opened in {opened:?}; all GET streams open after {:?}",
            t0.elapsed()
        );

        // The upstream restarts: every stream drops at once.
        fake.restart.store(true, Ordering::SeqCst);
        wait_until(SHORT, "the restart", || {
            fake.log.lock().unwrap().restarted_at.is_some()
        });
        let restarted_at = fake.log.lock().unwrap().restarted_at.unwrap();
        // Every session's first reconnect lands within [0, 2 s].
        wait_until(
            Duration::from_secs(8),
            "a first reconnect of every session",
            || fake.log.lock().unwrap().first_after.len() >= CHURN_SESSIONS,
        );

        // All in backoff now: measure.
        eprintln!(
            "measuring relay pid {} for {CPU_WINDOW:?}, every stream in backoff",
            relay.pid
        );
        let (u0, s0) = cpu_times(relay.pid);
        let m0 = Instant::now();
        thread::sleep(CPU_WINDOW);
        let (u1, s1) = cpu_times(relay.pid);
        let m1 = Instant::now();
        let (utime, stime) = (u1 - u0, s1 - s0);
        let cpu = utime + stime;

        // Copied out: an assertion failing below must not poison the
        // fake's lock while its thread still runs.
        let (gets_after, first, accepted, posts) = {
            let l = fake.log.lock().unwrap();
            (
                l.gets_after.clone(),
                l.first_after.clone(),
                l.accepted,
                l.posts,
            )
        };
        let overflows = listen_overflows() - overflows0;
        let mut offsets: Vec<Duration> = first
            .values()
            .map(|t| t.saturating_duration_since(restarted_at))
            .collect();
        offsets.sort();
        let dense = densest(&offsets, Duration::from_millis(100));
        let pct = |q: usize| offsets[(offsets.len() * q / 100).min(offsets.len() - 1)];
        let span = pct(90).saturating_sub(pct(10));
        let mut per_100ms = vec![0usize; 25];
        for o in &offsets {
            per_100ms[(o.as_millis() / 100).min(24) as usize] += 1;
        }
        let in_window: Vec<Duration> = gets_after
            .iter()
            .filter(|(at, _)| *at >= m0 && *at < m1)
            .map(|(at, _)| *at - m0)
            .collect();
        let seconds = CPU_WINDOW.as_secs() as usize;
        let mut per_second = vec![0usize; seconds];
        for o in &in_window {
            per_second[(o.as_secs() as usize).min(seconds - 1)] += 1;
        }
        let dense_window = densest(&in_window, Duration::from_millis(100));
        let report = format!(
            "first reconnects after the restart: {} sessions, from {:?} to {:?} (10th..90th percentile span {span:?}); densest 100 ms: {dense} ({:.1}%); per 100 ms: {per_100ms:?}\n\
             CPU over {CPU_WINDOW:?} in backoff: {cpu:.3} s ({:.1}% of a core; user {utime:.3} s, system {stime:.3} s); GET attempts then: {} (per second {per_second:?}; densest 100 ms {dense_window})\n\
             fake: {} connections accepted, {} POSTs, {} GETs after the restart; kernel listen-queue overflows during the test: {overflows}",
            offsets.len(),
            offsets.first().copied().unwrap_or_default(),
            offsets.last().copied().unwrap_or_default(),
            100.0 * dense as f64 / offsets.len() as f64,
            100.0 * cpu / CPU_WINDOW.as_secs_f64(),
            in_window.len(),
            accepted,
            posts,
            gets_after.len(),
        );
        eprintln!("{report}");
        assert_eq!(offsets.len(), CHURN_SESSIONS, "{report}");
        eprintln!(
            "relay {}: spread limit {spread_limit}% per 100 ms, last first reconnect by {herd_latest:?}",
            binary.display()
        );
        assert_eq!(
            overflows, 0,
            "the fake's accept queue overflowed: timings are the kernel's SYN retries, not the relay's\n{report}"
        );
        assert!(
            dense * 100 <= spread_limit * CHURN_SESSIONS,
            "first reconnects synchronized: {dense} of {CHURN_SESSIONS} in one 100 ms window (limit {spread_limit}%)\n{report}"
        );
        assert!(
            span >= Duration::from_secs(1),
            "first reconnects not spread over the herd window: 10th..90th percentile within {span:?}\n{report}"
        );
        assert!(
            *offsets.last().unwrap() <= herd_latest,
            "a first reconnect came after the 2 s herd window (limit {herd_latest:?})\n{report}"
        );
        let build = if optimized {
            "optimized build"
        } else {
            "unoptimized build: 4 x the 5% budget, see CPU_BUDGET_SECS"
        };
        eprintln!("CPU budget {cpu_budget} s ({build})");
        assert!(
            cpu < cpu_budget,
            "relay used {cpu:.3} s of CPU over {CPU_WINDOW:?} with every stream in backoff (limit {cpu_budget} s, {build})\n{report}"
        );
        assert!(
            in_window.is_empty() || dense_window * 100 <= 15 * in_window.len().max(100),
            "GET attempts synchronized during backoff: {dense_window} of {} in one 100 ms window\n{report}",
            in_window.len()
        );
        // The relay still serves.
        let mut s = Session::initialize(port).0;
        let resp = s.post(&initialized());
        assert_eq!(resp.status(), 202, "{resp:?}");
    });
}

// ============================================================================
// Regression: a URL upstream beside a command upstream (--config)
// ============================================================================

/// With `--config` serving a command upstream ("a", listed first) and a URL
/// upstream ("z"), ending a session of "z" — by the client's DELETE or by
/// idle expiry — must end its upstream session on "z". The relay used to
/// look the session's upstream up after removing the session, fall back to
/// upstream 0 (the command) and send nothing: the upstream session and its
/// GET stream leaked.
#[test]
fn config_mixed_upstreams_end_the_right_upstream_session() {
    bounded(|| {
        let up = Arc::new(UpSessions::default());
        let fake = Fake::start(well_behaved(&up));
        let dir = std::env::temp_dir().join(format!("mcp-relay-mixed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cfg_path = dir.join("relay.json");
        let echo = common::echo_server()
            .to_str()
            .expect("utf-8 path")
            .to_string();
        let doc = json!({
            "upstreams": {
                "a": {"command": [echo]},
                "z": {"url": fake.url(), "session_idle_timeout": "1s"}
            }
        });
        std::fs::write(&cfg_path, serde_json::to_vec(&doc).expect("json")).expect("config");
        let relay = Relay::reverse(NAME)
            .args([std::ffi::OsStr::new("--config"), cfg_path.as_os_str()])
            .start();
        let port = relay.port;
        let open = || -> (Http, String) {
            let mut h = Http::connect(port);
            let body = serde_json::to_vec(&initialize(json!(0))).expect("json");
            let r = h.request("POST", "/mcp/z", &mcp_headers(None), &body);
            assert_eq!(r.status(), 200, "initialize on z: {r:?}");
            let sid = r.header("mcp-session-id").expect("session id").to_string();
            let body = serde_json::to_vec(&initialized()).expect("json");
            let r = h.request("POST", "/mcp/z", &mcp_headers(Some(&sid)), &body);
            assert_eq!(r.status(), 202, "initialized on z: {r:?}");
            (h, sid)
        };
        // 1. The client's DELETE.
        let (mut h, sid) = open();
        fake.wait_for("the first GET stream", SHORT, |r| !gets(r).is_empty());
        let r = h.request(
            "DELETE",
            "/mcp/z",
            &[("Mcp-Session-Id", &sid), ("MCP-Protocol-Version", VERSION)],
            b"",
        );
        assert_eq!(r.status(), 200, "{r:?}");
        let seen = fake.wait_for("DELETE of upstream-session-1", SHORT, |r| {
            r.iter()
                .any(|q| q.method == "DELETE" && q.session() == Some("upstream-session-1"))
        });
        assert_eq!(gets(&seen).len(), 1, "{}", summaries(&seen));
        // 2. Idle expiry (session_idle_timeout 1s on "z").
        let (_h2, _sid2) = open();
        fake.wait_for(
            "DELETE of upstream-session-2",
            Duration::from_secs(5),
            |r| {
                r.iter()
                    .any(|q| q.method == "DELETE" && q.session() == Some("upstream-session-2"))
            },
        );
    });
}
