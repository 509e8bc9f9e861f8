//! The benchmark suite: every relay path and its direct baseline in one run.
//!
//! `cargo bench --bench suite` (`BENCH_QUICK=1` for the short CI run).
//!
//! Paths (each at 1 and N = 16 concurrent clients; "keep-alive" vs a fresh
//! TCP connection per request on every HTTP hop of the path):
//!
//! | id prefix          | path                                                   | direct baseline     |
//! |--------------------|--------------------------------------------------------|---------------------|
//! | `forward.stdio.wK` | stdio → `forward -- echo_server`, K requests in flight | `direct.stdio.wK`   |
//! | `forward.url.wK.*` | stdio → `forward --url` → `http_echo_server`           | `direct.http.cK.*`  |
//! | `reverse.session.cK.*` | K HTTP clients → `reverse --pool session -- echo_server` | `direct.stdio.w1` / `.c16` |
//! | `reverse.shared.cK.*`  | K HTTP clients → `reverse --pool shared -- echo_server`  | `direct.stdio.w1` / `.c16` |
//! | `reverse.shared.modern.cK.*` | as `reverse.shared`, 2026-07-28 clients (no session; bridged to the handshake-era echo server) | `direct.stdio.w1` / `.c16` |
//! | `reverse.url.cK.*` | K HTTP clients → `reverse --url` → `http_echo_server`  | `direct.http.cK.*`  |
//!
//! A stdio relay serves one client, so for `forward` the "N clients" are N
//! requests kept in flight on its stdin (`wN`); `forward.stdio.w32` is there
//! for the forward throughput target. Direct baselines: `direct.stdio.wK`
//! (this harness talks to one `echo_server` over pipes, K in flight),
//! `direct.stdio.cN` (N clients, each with its own `echo_server`),
//! `direct.http.cK.{ka,close}` (K HTTP clients straight to
//! `http_echo_server`). `.ka` = keep-alive, `.close` = `Connection: close`
//! on each request (and, for `--url` paths, `http_echo_server --close`, so
//! the relay's upstream pool cannot reuse connections either). For reverse
//! to stdio, pool reuse is the pool mode: `shared` reuses initialized
//! processes, `session` starts one per session.
//!
//! Every configuration gets fresh processes; all of them run in every round,
//! each direct baseline right before the relays compared with it, the order
//! flipping each round, so machine noise hits all alike. A client
//! sends `tools/call` echo requests (32-byte text) and checks every reply.
//! Per configuration (median over rounds): p50/p95/p99 (µs, from writing a
//! request — connecting first without keep-alive — to its whole reply),
//! throughput (requests / wall time of the timed window), both as ratios to
//! the direct baseline; for relays, CPU time per 1,000 requests
//! (/proc/<pid>/schedstat over the window), RSS when idle with the sessions
//! open and VmHWM after the load. Besides: start-up time of `reverse` to a
//! connectable socket (median of 20 starts), the stripped binary size, and
//! the runtime crate count.
//!
//! Targets are informational: a MISS never fails the run; only a broken run
//! (a wrong or missing reply, a dying process) exits non-zero.
//!
//! Output: a table on stdout, `target/bench-results/<YYYY-MM-DD>-<commit>
//! [-dirty][-quick][-only].json` (figures with units and a regression
//! direction, and every round's figures, read by `examples/bench_compare.rs`;
//! not committed), then the comparison with the committed
//! `benches/baseline.json` (or `BENCH_BASELINE`): each relay's ratios to the
//! same run's direct baseline, flagged only beyond the spread between rounds.
//!
//! Knobs: `BENCH_SECS` (timed seconds per configuration; default 3, quick
//! 1), `BENCH_ROUNDS` (default 3, quick 2), `BENCH_CLIENTS` (default 16),
//! `BENCH_ONLY` (comma-separated id substrings: run only those, plus their
//! baselines), `BENCH_STARTS` (start-up samples, default 20, quick 10),
//! `BENCH_CALLGRIND` (requests a window of the instruction count below;
//! default 2,000, quick 1,000; 0 skips it).
//!
//! Instructions per request, each protocol era, through `reverse --pool
//! shared` (issue 13): `benches/callgrind_eras.py` under callgrind, bridged
//! and end to end (`common::callgrind`), when valgrind and python3 are
//! there and `BENCH_ONLY` is unset or names `shared`. Unlike the CPU
//! figures these do not move with the machine's load.
//! Without `--bench` on the command line (`cargo test --benches`) it runs a
//! tiny smoke test and writes no file.

mod common;

#[path = "../examples/bench_compare.rs"]
#[allow(dead_code)]
mod bench_compare;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use common::callgrind::{self, EraInstructions};
use common::http::{TEXT_BYTES, get_text, make_text};
use common::{
    BoxError, EXIT_TIMEOUT, Head, HttpClient, LogTail, Relay, Result, Rpc, Stats, Watchdog,
    children_of, clock_ticks_per_sec, cpu_ns_schedstat, cpu_ticks, drain_stderr, env_secs,
    env_usize, err, kill_if_ours, loadavg, median, median_opt, median_stats, pass, proc_status_kib,
    prom_by_label, reap_leftovers, relay_binary, round2, round3, runtime_crates,
};

// Targets (informational).
const TARGET_STARTUP_MS: f64 = 5.0;
const TARGET_IDLE_RSS_KIB: f64 = 3.0 * 1024.0;
/// The budget issue 14 set once TLS on the listener and both OAuth roles
/// were in (2.5 MB before).
const TARGET_BINARY_BYTES: u64 = 2_800_000;
const TARGET_FWD_ADDED_P50_US: f64 = 15.0;
const TARGET_FWD_W32_RATIO: f64 = 0.70;
const TARGET_REV_P50_1_US: f64 = 150.0;
const TARGET_REV_RPS_N: f64 = 12_000.0;
const TARGET_REV_RSS_KIB: f64 = 8.0 * 1024.0;
/// A 2026-07-28 request through the shared pool costs no more relay CPU
/// than a handshake-era one (issue 13), within the run's noise.
const TARGET_MODERN_CPU_RATIO: f64 = 1.10;
/// The forward throughput target's window.
const FORWARD_TARGET_WINDOW: usize = 32;

// ---- settings ---------------------------------------------------------------

struct Settings {
    secs: f64,
    warmup_secs: f64,
    idle_wait: Duration,
    rounds: usize,
    clients: usize,
    starts: usize,
    only: Vec<String>,
    quick: bool,
    smoke: bool,
    /// Requests a callgrind window (`BENCH_CALLGRIND`, 0: not measured).
    callgrind: usize,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let smoke = common::smoke_run();
        let quick = common::quick_run();
        let (secs, warmup_secs, idle_ms, rounds, clients, starts) = if smoke {
            (0.1, 0.05, 50, 1, 4, 3)
        } else if quick {
            // Two rounds: the comparison judges a change by the spread
            // between rounds.
            (1.0, 0.2, 100, 2, 16, 10)
        } else {
            (3.0, 0.5, 500, 3, 16, 20)
        };
        let only = std::env::var("BENCH_ONLY")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if smoke {
            return Ok(Settings {
                secs,
                warmup_secs,
                idle_wait: Duration::from_millis(idle_ms),
                rounds,
                clients,
                starts,
                only,
                quick,
                smoke,
                callgrind: 0,
            });
        }
        Ok(Settings {
            secs: env_secs("BENCH_SECS")?.unwrap_or(secs),
            warmup_secs,
            idle_wait: Duration::from_millis(idle_ms),
            rounds: env_usize("BENCH_ROUNDS")?.unwrap_or(rounds),
            clients: env_usize("BENCH_CLIENTS")?.unwrap_or(clients),
            starts: env_usize("BENCH_STARTS")?.unwrap_or(starts),
            // 0 is allowed here: it skips the instruction counts.
            callgrind: match std::env::var("BENCH_CALLGRIND") {
                Ok(v) => v.trim().parse::<usize>().map_err(|_| {
                    common::err(format!("BENCH_CALLGRIND={v:?}: expected a number"))
                })?,
                Err(_) if quick => 1000,
                Err(_) => 2000,
            },
            only,
            quick,
            smoke,
        })
    }
}

// ---- configurations ---------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// One `echo_server`, `clients` requests in flight on its pipes.
    DirectStdio,
    /// `clients` clients, each with its own `echo_server`.
    DirectStdioProcs,
    /// `clients` HTTP clients to `http_echo_server`.
    DirectHttp,
    /// `forward -- echo_server`, `clients` requests in flight.
    Forward,
    /// `forward --url`, `clients` requests in flight.
    ForwardUrl,
    ReverseSession,
    ReverseShared,
    /// `ReverseShared` with 2026-07-28 clients: stateless requests.
    ReverseSharedModern,
    ReverseUrl,
}

impl Mode {
    fn is_relay(self) -> bool {
        !matches!(
            self,
            Mode::DirectStdio | Mode::DirectStdioProcs | Mode::DirectHttp
        )
    }

    fn is_reverse(self) -> bool {
        matches!(
            self,
            Mode::ReverseSession
                | Mode::ReverseShared
                | Mode::ReverseSharedModern
                | Mode::ReverseUrl
        )
    }

    /// Uses `http_echo_server`.
    fn needs_http_server(self) -> bool {
        matches!(self, Mode::DirectHttp | Mode::ForwardUrl | Mode::ReverseUrl)
    }

    /// Drives one stdio pipe with a window of requests in flight.
    fn is_pipe(self) -> bool {
        matches!(self, Mode::DirectStdio | Mode::Forward | Mode::ForwardUrl)
    }
}

#[derive(Clone, Debug)]
struct Case {
    id: String,
    label: String,
    mode: Mode,
    /// Concurrent clients, or requests in flight for pipe modes.
    clients: usize,
    keep_alive: bool,
    /// Index of the direct baseline (None for directs).
    baseline: Option<usize>,
}

fn cases(n: usize) -> Vec<Case> {
    let mut v: Vec<Case> = Vec::new();
    let mut add = |id: String, label: String, mode, clients, keep_alive, baseline: Option<&str>| {
        let baseline = baseline.map(|b| {
            v.iter()
                .position(|c: &Case| c.id == b)
                .expect("baselines come first")
        });
        v.push(Case {
            id,
            label,
            mode,
            clients,
            keep_alive,
            baseline,
        });
    };
    let ka = |k: bool| if k { "ka" } else { "close" };
    let kal = |k: bool| {
        if k { "keep-alive" } else { "conn/request" }
    };
    let windows = [1, n, FORWARD_TARGET_WINDOW];
    for w in windows {
        add(
            format!("direct.stdio.w{w}"),
            format!("direct stdio, {w} in flight"),
            Mode::DirectStdio,
            w,
            true,
            None,
        );
    }
    add(
        format!("direct.stdio.c{n}"),
        format!("direct stdio, {n} clients x server"),
        Mode::DirectStdioProcs,
        n,
        true,
        None,
    );
    for k in [true, false] {
        for c in [1, n] {
            add(
                format!("direct.http.c{c}.{}", ka(k)),
                format!("direct http, {}", kal(k)),
                Mode::DirectHttp,
                c,
                k,
                None,
            );
        }
    }
    for w in windows {
        add(
            format!("forward.stdio.w{w}"),
            format!("forward stdio, {w} in flight"),
            Mode::Forward,
            w,
            true,
            Some(&format!("direct.stdio.w{w}")),
        );
    }
    for k in [true, false] {
        for c in [1, n] {
            add(
                format!("forward.url.w{c}.{}", ka(k)),
                format!("forward --url, {}", kal(k)),
                Mode::ForwardUrl,
                c,
                k,
                Some(&format!("direct.http.c{c}.{}", ka(k))),
            );
        }
    }
    for (mode, name) in [
        (Mode::ReverseSession, "session"),
        (Mode::ReverseShared, "shared"),
        (Mode::ReverseSharedModern, "shared.modern"),
    ] {
        for k in [true, false] {
            for c in [1, n] {
                let base = if c == 1 {
                    "direct.stdio.w1".to_string()
                } else {
                    format!("direct.stdio.c{n}")
                };
                add(
                    format!("reverse.{name}.c{c}.{}", ka(k)),
                    format!("reverse {name}, {}", kal(k)),
                    mode,
                    c,
                    k,
                    Some(&base),
                );
            }
        }
    }
    for k in [true, false] {
        for c in [1, n] {
            add(
                format!("reverse.url.c{c}.{}", ka(k)),
                format!("reverse --url, {}", kal(k)),
                Mode::ReverseUrl,
                c,
                k,
                Some(&format!("direct.http.c{c}.{}", ka(k))),
            );
        }
    }
    v
}

struct Paths {
    relay: PathBuf,
    echo: PathBuf,
    http_echo: PathBuf,
}

// ---- stdio client with a window of requests in flight ---------------------------

fn write_request(out: &mut impl Write, id: u64) -> std::io::Result<()> {
    writeln!(
        out,
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\
         \"params\":{{\"name\":\"echo\",\"arguments\":{{\"text\":\"0123456789abcdef0123456789abcdef\"}}}}}}"
    )?;
    out.flush()
}

/// A stdio MCP peer (an `echo_server`, or a forward relay in front of one):
/// one thread writes requests and reads replies, keeping `window` in flight.
struct PipeLane {
    child: Child,
    pid: i32,
    what: String,
    reaped: bool,
    /// The forward relay's server, once known.
    grandchild: Option<i32>,
    stdin: Option<BufWriter<ChildStdin>>,
    stdout: BufReader<ChildStdout>,
    line: Vec<u8>,
    next_id: u64,
    window: usize,
    log: Arc<Mutex<LogTail>>,
    watchdog: Arc<Watchdog>,
}

impl PipeLane {
    fn spawn(
        mut cmd: Command,
        what: &str,
        window: usize,
        watchdog: &Arc<Watchdog>,
    ) -> Result<Self> {
        let mut child = cmd
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("spawning {what}: {e}")))?;
        let pid = child.id() as i32;
        watchdog.watch_pid(pid);
        let log = Arc::new(Mutex::new(LogTail::default()));
        drain_stderr(
            child.stderr.take().expect("stderr piped"),
            Arc::clone(&log),
            None,
        );
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            unreachable!("both pipes requested")
        };
        let mut lane = PipeLane {
            child,
            pid,
            what: what.to_string(),
            reaped: false,
            grandchild: None,
            stdin: Some(BufWriter::new(stdin)),
            stdout: BufReader::new(stdout),
            line: Vec::with_capacity(512),
            next_id: 2,
            window,
            log,
            watchdog: Arc::clone(watchdog),
        };
        lane.initialize()?;
        Ok(lane)
    }

    fn broken(&self, what: impl std::fmt::Display) -> BoxError {
        let tail = self.log.lock().map(|t| t.tail()).unwrap_or_default();
        err(format!(
            "{} (pid {}): {what}{}\n  stderr tail:\n  {tail}",
            self.what,
            self.pid,
            self.watchdog.note()
        ))
    }

    fn read_reply(&mut self) -> Result<Head> {
        loop {
            self.line.clear();
            match self.stdout.read_until(b'\n', &mut self.line) {
                Ok(0) => return Err(self.broken("EOF on stdout: reply missing")),
                Ok(_) => {}
                Err(e) => return Err(self.broken(format!("reading stdout: {e}"))),
            }
            let head: Head = serde_json::from_slice(&self.line).map_err(|e| {
                self.broken(format!(
                    "unparsable line ({e}): {}",
                    common::http::snippet(&self.line)
                ))
            })?;
            if head.has_method {
                continue;
            }
            if head.has_error || !head.has_result {
                return Err(self.broken(format!(
                    "error reply: {}",
                    common::http::snippet(&self.line)
                )));
            }
            return Ok(head);
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self.stdin.as_mut().expect("stdin open until finish()");
        let res = out
            .write_all(bytes)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        res.map_err(|e| self.broken(format!("writing: {e}")))
    }

    fn initialize(&mut self) -> Result<()> {
        self.send(&common::http::initialize_body(1))?;
        let head = self.read_reply()?;
        if head.id != Some(1) {
            return Err(self.broken(format!("initialize reply has id {:?}", head.id)));
        }
        self.send(common::http::INITIALIZED)?;
        self.watchdog.tick();
        Ok(())
    }
}

impl Lane for PipeLane {
    fn run(
        &mut self,
        until: Instant,
        abort: &AtomicBool,
        mut lat: Option<&mut Vec<u64>>,
    ) -> Result<u64> {
        let mut inflight: HashMap<u64, Instant> = HashMap::with_capacity(self.window * 2);
        let mut n = 0;
        loop {
            while inflight.len() < self.window
                && Instant::now() < until
                && !abort.load(Ordering::Relaxed)
            {
                let id = self.next_id;
                self.next_id += 1;
                let t0 = Instant::now();
                let stdin = self.stdin.as_mut().expect("stdin open");
                if let Err(e) = write_request(stdin, id) {
                    return Err(self.broken(format!("writing request {id}: {e}")));
                }
                inflight.insert(id, t0);
            }
            if inflight.is_empty() {
                return Ok(n);
            }
            let head = self.read_reply()?;
            let now = Instant::now();
            let Some(t0) = head.id.and_then(|id| inflight.remove(&id)) else {
                return Err(self.broken(format!("reply with unexpected id {:?}", head.id)));
            };
            self.watchdog.tick();
            if let Some(l) = lat.as_deref_mut() {
                l.push((now - t0).as_nanos() as u64);
            }
            n += 1;
        }
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        drop(self.stdin.take());
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(st) = self.child.try_wait()? {
                self.reaped = true;
                self.watchdog.unwatch_pid(self.pid);
                return if st.success() {
                    Ok(())
                } else {
                    Err(self.broken(format!("exited with {st} after stdin EOF")))
                };
            }
            if Instant::now() >= deadline {
                // Drop kills and reaps.
                return Err(self.broken("did not exit after stdin EOF"));
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn pid(&self) -> Option<i32> {
        Some(self.pid)
    }

    fn note_children(&mut self) {
        if self.grandchild.is_none() {
            self.grandchild = children_of(self.pid).first().copied();
        }
    }
}

impl Drop for PipeLane {
    fn drop(&mut self) {
        if !self.reaped {
            self.note_children();
            drop(self.stdin.take());
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.watchdog.unwatch_pid(self.pid);
        }
        // The relay's server, orphaned by a kill, is re-parented to us (we
        // are a child subreaper): kill and reap it, but only if it is ours.
        if let Some(gc) = self.grandchild {
            kill_if_ours(gc);
        }
    }
}

// ---- lanes ---------------------------------------------------------------------

/// One client thread's work: requests until a deadline.
trait Lane: Send {
    /// Requests until `until` (or an abort); latencies pushed to `lat` when
    /// given. Returns the number of requests completed.
    fn run(
        &mut self,
        until: Instant,
        abort: &AtomicBool,
        lat: Option<&mut Vec<u64>>,
    ) -> Result<u64>;
    fn finish(self: Box<Self>) -> Result<()>;
    /// The process measured as "the relay" (forward modes).
    fn pid(&self) -> Option<i32> {
        None
    }
    fn note_children(&mut self) {}
    fn init_503s(&self) -> u64 {
        0
    }
}

/// One HTTP client: one session, sequential requests.
struct HttpLane {
    client: Box<HttpClient>,
    index: usize,
    next_id: u64,
    text: String,
    watchdog: Arc<Watchdog>,
}

impl Lane for HttpLane {
    fn run(
        &mut self,
        until: Instant,
        abort: &AtomicBool,
        mut lat: Option<&mut Vec<u64>>,
    ) -> Result<u64> {
        let mut n = 0;
        while Instant::now() < until && !abort.load(Ordering::Relaxed) {
            let id = self.next_id;
            self.next_id += 1;
            make_text(&mut self.text, self.index, id);
            let ns = self.client.call(id, &self.text)?;
            self.watchdog.tick();
            if let Some(l) = lat.as_deref_mut() {
                l.push(ns);
            }
            n += 1;
        }
        Ok(n)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.client.finish()
    }

    fn init_503s(&self) -> u64 {
        self.client.init_503s()
    }
}

// ---- one run of one configuration ----------------------------------------------

#[derive(Default, Clone)]
struct RelayRun {
    rss_start_kib: Option<u64>,
    rss_idle_kib: Option<u64>,
    /// The anonymous part of each (`RssAnon`): heap, stacks and written
    /// data; the rest is the binary's and libc's code and read-only data,
    /// mapped from the page cache (shared, reclaimable).
    anon_start_kib: Option<u64>,
    anon_idle_kib: Option<u64>,
    hwm_kib: Option<u64>,
    cpu_ms_per_1k: Option<f64>,
    cpu_util: Option<f64>,
    init_503s: u64,
    metrics_ok: Option<f64>,
    expected_ok: u64,
    metrics_outcomes: Vec<(String, f64)>,
    metrics_codes: Vec<(String, f64)>,
    problems: Vec<String>,
}

struct CaseRun {
    stats: Stats,
    relay: Option<RelayRun>,
}

/// (case index, round, result).
type RoundRun = (usize, usize, CaseRun);

/// Phase barrier, abort flag and the deadlines the main thread publishes.
struct Phases {
    barrier: Barrier,
    abort: AtomicBool,
    warm_until: OnceLock<Instant>,
    window: OnceLock<(Instant, Instant)>,
    /// Lane 0's process (a forward relay), set before barrier A.
    lane_pid: Mutex<Option<i32>>,
}

struct ThreadOut {
    lat: Vec<u64>,
    calls: u64,
    init_503s: u64,
    finished: Instant,
}

type MakeLane<'a> = dyn Fn(usize) -> Result<Box<dyn Lane>> + Sync + 'a;

/// One client: open (A), idle (B), warm up (C), timed window (D), measured
/// (E), finish. Every thread passes all five barriers whatever happens, so a
/// failure in one never deadlocks the others; it sets `abort` and they stop
/// early.
fn lane_thread(index: usize, make: &MakeLane, phases: &Phases) -> Result<ThreadOut> {
    let mut first_err: Option<BoxError> = None;
    let fail = |e: BoxError, first: &mut Option<BoxError>| {
        phases.abort.store(true, Ordering::Relaxed);
        first.get_or_insert(e);
    };
    let mut lane = match make(index) {
        Ok(l) => Some(l),
        Err(e) => {
            fail(e, &mut first_err);
            None
        }
    };
    if index == 0
        && let Ok(mut p) = phases.lane_pid.lock()
    {
        *p = lane.as_ref().and_then(|l| l.pid());
    }
    let mut calls = 0;
    phases.barrier.wait(); // A: all sessions open
    phases.barrier.wait(); // B: idle RSS taken
    if let (Some(l), Some(&until)) = (lane.as_mut(), phases.warm_until.get())
        && first_err.is_none()
    {
        l.note_children();
        match l.run(until, &phases.abort, None) {
            Ok(n) => calls += n,
            Err(e) => fail(e, &mut first_err),
        }
    }
    phases.barrier.wait(); // C: warm-up done
    phases.barrier.wait(); // D: CPU sampled, window published
    let mut lat = Vec::with_capacity(1 << 16);
    if let (Some(l), Some(&(_, until))) = (lane.as_mut(), phases.window.get())
        && first_err.is_none()
    {
        match l.run(until, &phases.abort, Some(&mut lat)) {
            Ok(n) => calls += n,
            Err(e) => fail(e, &mut first_err),
        }
    }
    let finished = Instant::now();
    phases.barrier.wait(); // E: CPU and memory sampled (a forward relay
    // exits once its stdin closes, so it is measured before that)
    let init_503s = lane.as_ref().map_or(0, |l| l.init_503s());
    if let Some(l) = lane.take()
        && let Err(e) = l.finish()
    {
        fail(e, &mut first_err);
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(ThreadOut {
            lat,
            calls,
            init_503s,
            finished,
        }),
    }
}

fn spawn_http_echo(paths: &Paths, close: bool, watchdog: &Arc<Watchdog>) -> Result<Relay> {
    let mut cmd = Command::new(&paths.http_echo);
    if close {
        cmd.arg("--close");
    }
    Relay::start(cmd, "http_echo_server", watchdog)
}

fn spawn_reverse(
    case: &Case,
    paths: &Paths,
    upstream: Option<SocketAddr>,
    watchdog: &Arc<Watchdog>,
) -> Result<Relay> {
    let mut cmd = Command::new(&paths.relay);
    cmd.args(["reverse", "--listen", "127.0.0.1:0"]);
    match (case.mode, upstream) {
        (Mode::ReverseUrl, Some(up)) => {
            cmd.args(["--url", &format!("http://{up}/mcp")])
                .args(["--max-connections", &case.clients.max(16).to_string()]);
        }
        (Mode::ReverseSession, _) => {
            cmd.args(["--pool", "session"])
                .args(["--max-connections", &case.clients.max(16).to_string(), "--"])
                .arg(&paths.echo);
        }
        (Mode::ReverseShared | Mode::ReverseSharedModern, _) => {
            cmd.args(["--pool", "shared", "--max-connections", "2", "--"])
                .arg(&paths.echo);
        }
        _ => return Err(err("not a reverse case")),
    }
    Relay::start(cmd, "relay", watchdog)
}

fn run_case(case: &Case, s: &Settings, paths: &Paths, watchdog: &Arc<Watchdog>) -> Result<CaseRun> {
    // The HTTP upstream (direct HTTP, and the --url relays).
    let mut upstream = if case.mode.needs_http_server() {
        Some(spawn_http_echo(paths, !case.keep_alive, watchdog)?)
    } else {
        None
    };
    let up_addr = upstream.as_ref().map(|u| u.addr);
    let mut reverse = if case.mode.is_reverse() {
        Some(spawn_reverse(case, paths, up_addr, watchdog)?)
    } else {
        None
    };
    let rss_start_kib = reverse
        .as_ref()
        .and_then(|r| proc_status_kib(r.pid, "VmRSS"));
    let anon_start_kib = reverse
        .as_ref()
        .and_then(|r| proc_status_kib(r.pid, "RssAnon"));
    let http_target = match case.mode {
        Mode::DirectHttp => up_addr,
        _ => reverse.as_ref().map(|r| r.addr),
    };
    let (lanes, window) = if case.mode.is_pipe() {
        (1, case.clients)
    } else {
        (case.clients, 1)
    };
    let make = |i: usize| -> Result<Box<dyn Lane>> {
        match case.mode {
            Mode::DirectStdio | Mode::DirectStdioProcs => Ok(Box::new(PipeLane::spawn(
                Command::new(&paths.echo),
                "echo_server",
                window,
                watchdog,
            )?)),
            Mode::Forward => {
                let mut cmd = Command::new(&paths.relay);
                cmd.args(["forward", "--"]).arg(&paths.echo);
                Ok(Box::new(PipeLane::spawn(cmd, "relay", window, watchdog)?))
            }
            Mode::ForwardUrl => {
                let up = up_addr.ok_or("no upstream")?;
                let mut cmd = Command::new(&paths.relay);
                cmd.args(["forward", "--url", &format!("http://{up}/mcp")])
                    .args(["--max-connections", &window.max(16).to_string()]);
                Ok(Box::new(PipeLane::spawn(cmd, "relay", window, watchdog)?))
            }
            _ => {
                let addr = http_target.ok_or("no HTTP target")?;
                let what = format!("{} client {i}", case.id);
                let client = if case.mode == Mode::ReverseSharedModern {
                    HttpClient::open_modern(addr, !case.keep_alive, what, watchdog)?
                } else {
                    HttpClient::open(addr, !case.keep_alive, what, watchdog)?
                };
                Ok(Box::new(HttpLane {
                    client: Box::new(client),
                    index: i,
                    next_id: 2,
                    text: String::with_capacity(TEXT_BYTES),
                    watchdog: Arc::clone(watchdog),
                }))
            }
        }
    };
    let phases = Phases {
        barrier: Barrier::new(lanes + 1),
        abort: AtomicBool::new(false),
        warm_until: OnceLock::new(),
        window: OnceLock::new(),
        lane_pid: Mutex::new(None),
    };
    let mut rr = RelayRun {
        rss_start_kib,
        anon_start_kib,
        ..RelayRun::default()
    };
    let mut sched0 = None;
    let mut ticks0 = None;
    // CPU (schedstat, ticks) and VmHWM of the relay at the end of the window.
    let mut sample1 = None;
    let outs: Vec<Result<ThreadOut>> = thread::scope(|sc| {
        let handles: Vec<_> = (0..lanes)
            .map(|i| {
                let (make, phases) = (&make, &phases);
                sc.spawn(move || lane_thread(i, make, phases))
            })
            .collect();
        phases.barrier.wait(); // A
        // The process measured: the reverse relay, or lane 0's forward relay.
        let pid = match (&reverse, case.mode.is_relay()) {
            (Some(r), _) => Some(r.pid),
            (None, true) => phases.lane_pid.lock().ok().and_then(|p| *p),
            (None, false) => None,
        };
        if !phases.abort.load(Ordering::Relaxed) {
            thread::sleep(s.idle_wait);
        }
        rr.rss_idle_kib = pid.and_then(|p| proc_status_kib(p, "VmRSS"));
        rr.anon_idle_kib = pid.and_then(|p| proc_status_kib(p, "RssAnon"));
        if let Some(r) = reverse.as_mut() {
            r.note_servers();
        }
        let _ = phases
            .warm_until
            .set(Instant::now() + Duration::from_secs_f64(s.warmup_secs));
        phases.barrier.wait(); // B
        phases.barrier.wait(); // C
        sched0 = pid.and_then(cpu_ns_schedstat);
        ticks0 = pid.and_then(cpu_ticks);
        let start = Instant::now();
        let _ = phases
            .window
            .set((start, start + Duration::from_secs_f64(s.secs)));
        phases.barrier.wait(); // D
        phases.barrier.wait(); // E: every lane is done
        sample1 = pid.map(|p| {
            (
                cpu_ns_schedstat(p),
                cpu_ticks(p),
                proc_status_kib(p, "VmHWM"),
            )
        });
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(err("client thread panicked")))
            })
            .collect()
    });
    let mut outs_ok = Vec::with_capacity(outs.len());
    let mut errors = Vec::new();
    for o in outs {
        match o {
            Ok(o) => outs_ok.push(o),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        let more = if errors.len() > 1 {
            format!(" (and {} more client errors)", errors.len() - 1)
        } else {
            String::new()
        };
        let mut msg = format!("{}: {}{more}", case.id, errors[0]);
        if let Some(r) = reverse.as_ref() {
            let _ = write!(msg, "\n  relay log tail:\n  {}", r.log_tail());
        }
        return Err(err(msg));
    }
    let &(start, _) = phases.window.get().ok_or("no timed window")?;
    let end = outs_ok
        .iter()
        .map(|o| o.finished)
        .max()
        .ok_or("no clients")?;
    let elapsed = end.saturating_duration_since(start);
    let calls: u64 = outs_ok.iter().map(|o| o.calls).sum();
    rr.init_503s = outs_ok.iter().map(|o| o.init_503s).sum();
    let lat: Vec<u64> = outs_ok.into_iter().flat_map(|o| o.lat).collect();
    if lat.is_empty() {
        return Err(err(format!(
            "{}: no request completed in the window",
            case.id
        )));
    }
    let stats = Stats::new(lat, elapsed);
    let per_1k = |secs: f64| secs * 1000.0 / stats.requests as f64 * 1000.0;
    let cpu = |sched1: Option<u64>, ticks1: Option<u64>, rr: &mut RelayRun| {
        let secs = match (sched0, sched1, ticks0, ticks1) {
            (Some(a), Some(b), _, _) => Some(b.saturating_sub(a) as f64 / 1e9),
            (_, _, Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / clock_ticks_per_sec()),
            _ => None,
        };
        if let Some(secs) = secs {
            rr.cpu_ms_per_1k = Some(per_1k(secs));
            rr.cpu_util = Some(secs / elapsed.as_secs_f64());
        }
    };

    if let Some((sched1, ticks1, hwm)) = sample1 {
        cpu(sched1, ticks1, &mut rr);
        rr.hwm_kib = hwm;
    }
    if let Some(mut r) = reverse.take() {
        if !r.alive() {
            return Err(r.broken("exited during the run"));
        }
        r.note_servers();
        // initialize + tools/call; a 2026-07-28 client has no initialize.
        let inits = if case.mode == Mode::ReverseSharedModern {
            0
        } else {
            case.clients as u64
        };
        rr.expected_ok = inits + calls;
        match get_text(r.addr, "/metrics") {
            Ok(text) => {
                rr.metrics_outcomes = prom_by_label(&text, "mcp_relay_requests_total");
                rr.metrics_codes = prom_by_label(&text, "mcp_relay_http_responses_total");
                rr.metrics_ok = rr
                    .metrics_outcomes
                    .iter()
                    .find(|(l, _)| l == "ok")
                    .map(|(_, v)| *v);
            }
            Err(e) => rr.problems.push(format!("GET /metrics failed: {e}")),
        }
        let status = r.shutdown()?;
        if !status.success() {
            rr.problems
                .push(format!("relay exited with {status} after SIGTERM"));
        }
        rr.problems.extend(r.problems());
    }
    if let Some(mut u) = upstream.take() {
        if !u.alive() {
            return Err(u.broken("exited during the run"));
        }
        let _ = u.shutdown();
    }
    Ok(CaseRun {
        stats,
        relay: case.mode.is_relay().then_some(rr),
    })
}

// ---- start-up, binary size ----------------------------------------------------------

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Spawns `reverse --listen 127.0.0.1:PORT -- echo_server` and returns the
/// time from just before spawn(2) to the first successful TCP connect.
fn startup_once(paths: &Paths, watchdog: &Arc<Watchdog>) -> Result<Duration> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t0 = Instant::now();
    let mut child = Command::new(&paths.relay)
        .args(["reverse", "--listen", &addr.to_string(), "--"])
        .arg(&paths.echo)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id() as i32;
    watchdog.watch_pid(pid);
    let deadline = t0 + Duration::from_secs(5);
    let res = loop {
        if TcpStream::connect(addr).is_ok() {
            break Ok(t0.elapsed());
        }
        if let Ok(Some(st)) = child.try_wait() {
            break Err(err(format!(
                "start-up: the relay exited with {st} (port {port} taken?)"
            )));
        }
        if Instant::now() >= deadline {
            break Err(err("start-up: no listening socket within 5 s"));
        }
        thread::sleep(Duration::from_micros(50));
    };
    // SAFETY: kill(2) on our unreaped child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let stop = Instant::now() + EXIT_TIMEOUT;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= stop {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    watchdog.unwatch_pid(pid);
    watchdog.tick();
    res
}

struct Startup {
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    samples: Vec<f64>,
}

fn measure_startup(n: usize, paths: &Paths, watchdog: &Arc<Watchdog>) -> Result<Startup> {
    let mut samples = Vec::with_capacity(n);
    let mut failures = 0;
    while samples.len() < n {
        match startup_once(paths, watchdog) {
            Ok(d) => samples.push(d.as_secs_f64() * 1000.0),
            // A port taken between choosing it and binding it: try again.
            Err(e) if failures < 3 => {
                failures += 1;
                eprintln!("bench: {e}; retrying");
            }
            Err(e) => return Err(e),
        }
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Startup {
        median_ms: median(samples.clone()),
        min_ms: sorted[0],
        max_ms: sorted[sorted.len() - 1],
        samples,
    })
}

/// (on-disk size, stripped size): the stripped size of a `strip`ped copy
/// when `strip` is available (the release profile already strips).
fn binary_sizes(relay: &Path) -> Result<(u64, Option<u64>)> {
    let on_disk = fs::metadata(relay)?.len();
    let tmp = std::env::temp_dir().join(format!("mcp-relay-stripped-{}", std::process::id()));
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&tmp)
        .arg(relay)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
        .filter(|st| st.success())
        .and_then(|_| fs::metadata(&tmp).ok())
        .map(|m| m.len());
    let _ = fs::remove_file(&tmp);
    Ok((on_disk, stripped))
}

// ---- naming the results file ------------------------------------------------------

/// YYYY-MM-DD (UTC) of a unix time (Howard Hinnant's civil_from_days).
fn ymd(unix: u64) -> String {
    let z = (unix / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// (short commit, dirty) of the source tree, if it is a git checkout.
fn git_state() -> (Option<String>, bool) {
    let dir = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = run(&["rev-parse", "--short", "HEAD"]).filter(|c| !c.is_empty());
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    (commit, dirty)
}

// ---- report --------------------------------------------------------------------------

fn kib_mib(k: Option<f64>) -> String {
    k.map_or("-".into(), |k| format!("{:.2}", k / 1024.0))
}

/// Aggregates over rounds for one case.
struct Agg {
    stats: Stats,
    rss_start_kib: Option<f64>,
    rss_idle_kib: Option<f64>,
    anon_start_kib: Option<f64>,
    anon_idle_kib: Option<f64>,
    /// Max over rounds.
    hwm_kib: Option<f64>,
    cpu_ms_per_1k: Option<f64>,
    cpu_util: Option<f64>,
}

fn aggregate(runs: &[&CaseRun]) -> Agg {
    let stats = median_stats(&runs.iter().map(|r| r.stats).collect::<Vec<_>>());
    let rel = || runs.iter().filter_map(|r| r.relay.as_ref());
    Agg {
        stats,
        rss_start_kib: median_opt(rel().map(|r| r.rss_start_kib.map(|k| k as f64))),
        rss_idle_kib: median_opt(rel().map(|r| r.rss_idle_kib.map(|k| k as f64))),
        anon_start_kib: median_opt(rel().map(|r| r.anon_start_kib.map(|k| k as f64))),
        anon_idle_kib: median_opt(rel().map(|r| r.anon_idle_kib.map(|k| k as f64))),
        hwm_kib: rel().filter_map(|r| r.hwm_kib).max().map(|k| k as f64),
        cpu_ms_per_1k: median_opt(rel().map(|r| r.cpu_ms_per_1k)),
        cpu_util: median_opt(rel().map(|r| r.cpu_util)),
    }
}

/// The figures `bench_compare` reads: name → value, unit, direction.
struct Figures(BTreeMap<String, Value>);

impl Figures {
    fn add(&mut self, name: impl Into<String>, value: f64, unit: &str, higher_is_better: bool) {
        if value.is_finite() {
            self.0.insert(
                name.into(),
                json!({"value": round3(value), "unit": unit, "higher_is_better": higher_is_better}),
            );
        }
    }
}

fn main() {
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("bench: FAILED: {e}");
            std::process::exit(1);
        }
    }
}

/// The callgrind count of what a request costs in each era, bridged and
/// end to end (`common::callgrind`): empty when not asked for (a smoke
/// run, `BENCH_CALLGRIND=0`, or `BENCH_ONLY` without `shared`), an error
/// per pairing when it could not be measured.
fn era_instructions(
    s: &Settings,
    paths: &Paths,
) -> Vec<(&'static str, std::result::Result<EraInstructions, String>)> {
    let asked = !s.smoke
        && s.callgrind > 0
        && (s.only.is_empty() || s.only.iter().any(|o| o.contains("shared")));
    if !asked {
        return Vec::new();
    }
    let missing = callgrind::tools_missing();
    [("bridged", false), ("end to end", true)]
        .into_iter()
        .map(|(name, modern_server)| {
            let r = match &missing {
                Some(why) => Err(why.clone()),
                None => {
                    eprintln!(
                        "bench: instructions per request under callgrind, {name}, {} requests a window",
                        s.callgrind
                    );
                    callgrind::era_instructions(
                        &paths.relay,
                        &paths.echo,
                        modern_server,
                        s.callgrind,
                        Duration::from_secs(600),
                    )
                }
            };
            (name, r)
        })
        .collect()
}

fn selected(all: &[Case], only: &[String]) -> Vec<bool> {
    if only.is_empty() {
        return vec![true; all.len()];
    }
    let mut keep: Vec<bool> = all
        .iter()
        .map(|c| only.iter().any(|o| c.id.contains(o.as_str())))
        .collect();
    for (i, c) in all.iter().enumerate() {
        if keep[i]
            && let Some(b) = c.baseline
        {
            keep[b] = true;
        }
    }
    keep
}

fn run() -> Result<()> {
    let t_begin = Instant::now();
    let s = Settings::from_env()?;
    let examples = common::example_binaries(&["echo_server", "http_echo_server"])?;
    let paths = Paths {
        relay: relay_binary(),
        echo: examples[0].clone(),
        http_echo: examples[1].clone(),
    };
    common::become_subreaper();
    let all_cases = cases(s.clients);
    let keep = selected(&all_cases, &s.only);
    let load_before = loadavg();
    let (watchdog, watch_thread) = Watchdog::start();
    let res = (|| -> Result<(Startup, Vec<RoundRun>)> {
        eprintln!("bench: start-up time, {} starts", s.starts);
        let startup = measure_startup(s.starts, &paths, &watchdog)?;
        let rounds = measure(&s, &all_cases, &keep, &paths, &watchdog)?;
        Ok((startup, rounds))
    })();
    watchdog.stop.store(true, Ordering::Relaxed);
    let _ = watch_thread.join();
    reap_leftovers();
    let (startup, rounds) = res?;
    let load_after = loadavg();
    let era_ir = era_instructions(&s, &paths);
    reap_leftovers();
    let (bin_on_disk, bin_stripped) = binary_sizes(&paths.relay)?;
    let bin_bytes = bin_stripped.unwrap_or(bin_on_disk);
    let crates = runtime_crates();

    let aggs: Vec<Option<Agg>> = (0..all_cases.len())
        .map(|ci| {
            let runs: Vec<&CaseRun> = rounds
                .iter()
                .filter(|(c, _, _)| *c == ci)
                .map(|(_, _, r)| r)
                .collect();
            (!runs.is_empty()).then(|| aggregate(&runs))
        })
        .collect();
    let by_id = |id: &str| -> Option<&Agg> {
        all_cases
            .iter()
            .position(|c| c.id == id)
            .and_then(|i| aggs[i].as_ref())
    };
    let n = s.clients;

    // ---- figures ----
    let mut fig = Figures(BTreeMap::new());
    for (c, a) in all_cases.iter().zip(&aggs) {
        let Some(a) = a else { continue };
        let st = a.stats;
        fig.add(format!("{}.p50_us", c.id), st.p50_us, "µs", false);
        fig.add(format!("{}.p95_us", c.id), st.p95_us, "µs", false);
        fig.add(format!("{}.p99_us", c.id), st.p99_us, "µs", false);
        fig.add(
            format!("{}.throughput_rps", c.id),
            st.throughput,
            "req/s",
            true,
        );
        if let Some(d) = c.baseline.and_then(|b| aggs[b].as_ref()) {
            fig.add(
                format!("{}.p50_over_direct", c.id),
                st.p50_us / d.stats.p50_us,
                "x",
                false,
            );
            fig.add(
                format!("{}.throughput_over_direct", c.id),
                st.throughput / d.stats.throughput,
                "x",
                true,
            );
        }
        if let Some(v) = a.cpu_ms_per_1k {
            fig.add(format!("{}.cpu_ms_per_1k", c.id), v, "ms", false);
        }
        if let Some(v) = a.rss_idle_kib {
            fig.add(format!("{}.rss_idle_kib", c.id), v, "KiB", false);
        }
        if let Some(v) = a.hwm_kib {
            fig.add(format!("{}.rss_load_kib", c.id), v, "KiB", false);
        }
    }
    let fwd_added = match (by_id("forward.stdio.w1"), by_id("direct.stdio.w1")) {
        (Some(r), Some(d)) => Some(r.stats.p50_us - d.stats.p50_us),
        _ => None,
    };
    if let Some(v) = fwd_added {
        fig.add("forward.stdio.w1.added_p50_us", v, "µs", false);
    }
    // A reverse relay just started: the median over the session-mode cases.
    let rev_start = |of: fn(&Agg) -> Option<f64>| {
        median_opt(
            all_cases
                .iter()
                .zip(&aggs)
                .filter(|(c, _)| c.mode == Mode::ReverseSession)
                .map(|(_, a)| a.as_ref().and_then(of)),
        )
    };
    let rev_start_rss = rev_start(|a| a.rss_start_kib);
    let rev_start_anon = rev_start(|a| a.anon_start_kib);
    if let Some(v) = rev_start_rss {
        fig.add("reverse.rss_at_start_kib", v, "KiB", false);
    }
    fig.add("startup_ms", startup.median_ms, "ms", false);
    fig.add("binary_bytes", bin_bytes as f64, "bytes", false);
    if let Some(c) = crates {
        fig.add("runtime_crates", c as f64, "crates", false);
    }
    for (name, r) in &era_ir {
        let Ok(e) = r else { continue };
        let key = if *name == "bridged" { "bridged" } else { "e2e" };
        fig.add(format!("eras.{key}.legacy_ir"), e.legacy, "Ir", false);
        fig.add(format!("eras.{key}.same_length_ir"), e.sized, "Ir", false);
        fig.add(format!("eras.{key}.modern_ir"), e.modern, "Ir", false);
        fig.add(
            format!("eras.{key}.session_call_ir"),
            e.session,
            "Ir",
            false,
        );
        fig.add(
            format!("eras.{key}.modern_over_legacy"),
            e.ratio(),
            "x",
            false,
        );
    }

    // ---- targets ----
    let mut targets: Vec<(String, String, String, bool)> = Vec::new();
    let mut target = |name: String, value: String, limit: String, ok: bool| {
        targets.push((name, value, limit, ok));
    };
    target(
        "start-up to a listening socket (median)".into(),
        format!("{:.2} ms", startup.median_ms),
        format!("<= {TARGET_STARTUP_MS} ms"),
        startup.median_ms <= TARGET_STARTUP_MS,
    );
    let fwd_idle = by_id("forward.stdio.w1").and_then(|a| a.rss_idle_kib);
    let fwd_idle_anon = by_id("forward.stdio.w1").and_then(|a| a.anon_idle_kib);
    for (name, v, anon) in [
        (
            "idle RSS: forward stdio, initialized",
            fwd_idle,
            fwd_idle_anon,
        ),
        (
            "idle RSS: reverse, just started",
            rev_start_rss,
            rev_start_anon,
        ),
    ] {
        if let Some(v) = v {
            // The anonymous part beside it: the rest is code and read-only
            // data mapped from the page cache (docs/benchmarks.md).
            let anon = anon.map_or(String::new(), |a| {
                format!(" ({:.2} MiB anonymous)", a / 1024.0)
            });
            target(
                name.into(),
                format!("{:.2} MiB{anon}", v / 1024.0),
                "<= 3 MiB".into(),
                v <= TARGET_IDLE_RSS_KIB,
            );
        }
    }
    target(
        "binary size (stripped)".into(),
        format!("{:.3} MB", bin_bytes as f64 / 1e6),
        "<= 2.8 MB".into(),
        bin_bytes <= TARGET_BINARY_BYTES,
    );
    if let Some(v) = fwd_added {
        target(
            "forward: p50 added, 1 in flight".into(),
            format!("{v:.1} µs"),
            format!("<= {TARGET_FWD_ADDED_P50_US} µs"),
            v <= TARGET_FWD_ADDED_P50_US,
        );
    }
    let w = FORWARD_TARGET_WINDOW;
    if let (Some(r), Some(d)) = (
        by_id(&format!("forward.stdio.w{w}")),
        by_id(&format!("direct.stdio.w{w}")),
    ) {
        let ratio = r.stats.throughput / d.stats.throughput;
        target(
            format!("forward: throughput, {w} in flight, vs direct"),
            format!("{:.1} %", ratio * 100.0),
            format!(">= {:.0} %", TARGET_FWD_W32_RATIO * 100.0),
            ratio >= TARGET_FWD_W32_RATIO,
        );
    }
    for pool in ["session", "shared"] {
        if let Some(a) = by_id(&format!("reverse.{pool}.c1.ka")) {
            target(
                format!("reverse {pool}: 1 client p50"),
                format!("{:.1} µs", a.stats.p50_us),
                format!("<= {TARGET_REV_P50_1_US} µs"),
                a.stats.p50_us <= TARGET_REV_P50_1_US,
            );
        }
        if let Some(a) = by_id(&format!("reverse.{pool}.c{n}.ka")) {
            target(
                format!("reverse {pool}: {n} clients throughput"),
                format!("{:.0} req/s", a.stats.throughput),
                format!(">= {TARGET_REV_RPS_N:.0} req/s"),
                a.stats.throughput >= TARGET_REV_RPS_N,
            );
            if let Some(h) = a.hwm_kib {
                target(
                    format!("reverse {pool}: RSS under load ({n} clients)"),
                    format!("{:.2} MiB", h / 1024.0),
                    "<= 8 MiB".into(),
                    h <= TARGET_REV_RSS_KIB,
                );
            }
        }
    }
    for c in [1, n] {
        if let (Some(m), Some(h)) = (
            by_id(&format!("reverse.shared.modern.c{c}.ka")),
            by_id(&format!("reverse.shared.c{c}.ka")),
        ) && let (Some(mc), Some(hc)) = (m.cpu_ms_per_1k, h.cpu_ms_per_1k)
        {
            let ratio = mc / hc;
            target(
                format!(
                    "reverse shared: a 2026-07-28 request vs a handshake-era one, {c} client(s), relay CPU"
                ),
                format!(
                    "{mc:.1} vs {hc:.1} ms/1k ({:.0} %), p50 {:.1} vs {:.1} µs",
                    ratio * 100.0,
                    m.stats.p50_us,
                    h.stats.p50_us
                ),
                format!("<= {:.0} %", TARGET_MODERN_CPU_RATIO * 100.0),
                ratio <= TARGET_MODERN_CPU_RATIO,
            );
        }
    }
    // The same question counted in instructions (callgrind): no noise, so
    // no allowance for it either. What was not measured is said with the
    // other era figures, below.
    for (name, r) in &era_ir {
        if let Ok(e) = r {
            target(
                format!(
                    "reverse shared: a 2026-07-28 request vs a handshake-era one, {name}, instructions"
                ),
                format!(
                    "{:.0} vs {:.0} Ir ({:.1} %)",
                    e.modern,
                    e.legacy,
                    e.ratio() * 100.0
                ),
                "<= 100 %".into(),
                e.ratio() <= 1.0,
            );
        }
    }

    // ---- warnings ----
    let mut warnings = Vec::new();
    for (ci, round, r) in &rounds {
        let Some(rr) = &r.relay else { continue };
        let id = &all_cases[*ci].id;
        if all_cases[*ci].mode.is_reverse() {
            match rr.metrics_ok {
                Some(ok) if ok as u64 == rr.expected_ok => {}
                Some(ok) => warnings.push(format!(
                    "{id} round {round}: relay counted {ok} ok requests, clients sent {}",
                    rr.expected_ok
                )),
                None => warnings.push(format!("{id} round {round}: no ok count in /metrics")),
            }
        }
        if rr.init_503s > 0 {
            warnings.push(format!(
                "{id} round {round}: {} initialize requests got 503 (queue_full) while the \
                 sessions opened at once on a cold pool, and were retried",
                rr.init_503s
            ));
        }
        let retried = |v: f64| v as u64 == rr.init_503s;
        for (outcome, v) in &rr.metrics_outcomes {
            if outcome != "ok" && *v > 0.0 && !(outcome == "queue_full" && retried(*v)) {
                warnings.push(format!(
                    "{id} round {round}: {v} requests with outcome {outcome}"
                ));
            }
        }
        for (code, v) in &rr.metrics_codes {
            if !matches!(code.as_str(), "200" | "202")
                && *v > 0.0
                && !(code == "503" && retried(*v))
            {
                warnings.push(format!("{id} round {round}: {v} HTTP {code} responses"));
            }
        }
        for p in &rr.problems {
            warnings.push(format!("{id} round {round}: {p}"));
        }
    }

    // ---- stdout ----
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let (commit, dirty) = git_state();
    println!();
    println!(
        "mcp-relay benchmark suite: {} round(s), {} s per configuration (+{} s warm-up), \
         {n} clients, {cpus} CPU(s), commit {}{}{}",
        s.rounds,
        s.secs,
        s.warmup_secs,
        commit.as_deref().unwrap_or("?"),
        if dirty { " (dirty)" } else { "" },
        if s.smoke {
            " [smoke run: no --bench]"
        } else if s.quick {
            " [BENCH_QUICK]"
        } else {
            ""
        }
    );
    println!(
        "load average before/after: {} / {} (other load skews the numbers)",
        load_before.as_deref().unwrap_or("?"),
        load_after.as_deref().unwrap_or("?")
    );
    println!(
        "figures: median over rounds (VmHWM: max); latency µs per request; ratios vs the \
         direct baseline named in the last column; CPU = relay CPU ms per 1,000 requests"
    );
    println!();
    println!(
        "{:<26} {:>3} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>7} {:>5} {:>7} {:>7}  baseline",
        "configuration",
        "cli",
        "p50",
        "p95",
        "p99",
        "req/s",
        "p50/D",
        "thr/D",
        "CPU/1k",
        "CPU%",
        "RSSidle",
        "VmHWM"
    );
    println!(
        "{:<26} {:>3} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>7} {:>5} {:>7} {:>7}",
        "", "", "µs", "µs", "µs", "", "", "", "ms", "", "MiB", "MiB"
    );
    println!("{}", "-".repeat(132));
    let mut last_family = "";
    for (c, a) in all_cases.iter().zip(&aggs) {
        let Some(a) = a else { continue };
        let family = c.id.split('.').take(2).last().unwrap_or_default();
        let family = &c.id[..c.id.find(family).unwrap_or(0) + family.len()];
        if !last_family.is_empty() && family != last_family {
            println!();
        }
        last_family = family;
        let st = a.stats;
        let d = c.baseline.and_then(|b| aggs[b].as_ref());
        println!(
            "{:<26} {:>3} {:>8.1} {:>8.1} {:>8.1} {:>8.0} {:>6} {:>6} {:>7} {:>5} {:>7} {:>7}  {}",
            c.id,
            c.clients,
            st.p50_us,
            st.p95_us,
            st.p99_us,
            st.throughput,
            d.map_or("-".into(), |d| format!("{:.2}", st.p50_us / d.stats.p50_us)),
            d.map_or("-".into(), |d| format!(
                "{:.3}",
                st.throughput / d.stats.throughput
            )),
            a.cpu_ms_per_1k.map_or("-".into(), |v| format!("{v:.1}")),
            a.cpu_util
                .map_or("-".into(), |v| format!("{:.0}", v * 100.0)),
            kib_mib(a.rss_idle_kib),
            kib_mib(a.hwm_kib),
            c.baseline.map_or("", |b| all_cases[b].id.as_str()),
        );
    }
    println!();
    println!(
        "start-up (reverse, spawn to a successful connect): median {:.2} ms, min {:.2}, max {:.2} \
         over {} starts",
        startup.median_ms,
        startup.min_ms,
        startup.max_ms,
        startup.samples.len()
    );
    println!(
        "binary: {bin_bytes} bytes stripped ({:.3} MB){}; on disk {bin_on_disk} bytes  {}",
        bin_bytes as f64 / 1e6,
        if bin_stripped.is_none() {
            " [strip unavailable: on-disk size]"
        } else {
            ""
        },
        paths.relay.display()
    );
    println!(
        "runtime crates (cargo tree -e normal, mcp-relay included): {}",
        crates.map_or("unavailable".to_string(), |n| n.to_string())
    );
    if let Some(v) = rev_start_rss {
        println!(
            "reverse RSS right after start (no session): {:.2} MiB",
            v / 1024.0
        );
    }
    for (name, r) in &era_ir {
        if let Err(why) = r {
            println!("eras, {name} (callgrind): not measured ({why})");
        }
        if let Ok(e) = r {
            println!(
                "eras, {name} (callgrind, Ir): handshake-era {:.0}, same length {:.0}, 2026-07-28 {:.0} \
                 ({:.1} %, {:.1} % of the same length); a call in its own handshake-era session {:.0}{}",
                e.legacy,
                e.sized,
                e.modern,
                e.ratio() * 100.0,
                e.ratio_same_length() * 100.0,
                e.session,
                e.break_even_calls().map_or(
                    String::from("; a 2026-07-28 request costs no more at any session length"),
                    |c| format!("; the eras cost the same at {c:.1} calls a session")
                )
            );
        }
    }
    println!();
    println!("targets (informational; a MISS never fails the run):");
    for (name, value, limit, ok) in &targets {
        println!("  {:<4} {name:<44} {value:>14}  ({limit})", pass(*ok));
    }
    for w in &warnings {
        println!("warning: {w}");
    }

    // ---- JSON ----
    let unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let date = ymd(unix);
    let case_json = |ci: usize| {
        let c = &all_cases[ci];
        let a = aggs[ci].as_ref()?;
        Some(json!({
            "id": c.id,
            "label": c.label,
            "clients": c.clients,
            "keep_alive": c.keep_alive,
            "baseline": c.baseline.map(|b| all_cases[b].id.clone()),
            "stats": a.stats.json(),
            "relay": c.mode.is_relay().then(|| json!({
                "rss_start_kib": a.rss_start_kib,
                "rss_idle_kib": a.rss_idle_kib,
                "vmhwm_kib_max": a.hwm_kib,
                "cpu_ms_per_1k_requests": a.cpu_ms_per_1k.map(round3),
                "cpu_utilization": a.cpu_util.map(round3),
            })),
        }))
    };
    let doc = json!({
        "benchmark": "mcp-relay suite",
        "schema": 1,
        "date": date,
        "unix_time": unix,
        "commit": commit,
        "dirty": dirty,
        "quick": s.quick,
        "settings": {
            "seconds_per_configuration": s.secs,
            "warmup_seconds": s.warmup_secs,
            "idle_wait_ms": s.idle_wait.as_millis() as u64,
            "rounds": s.rounds,
            "clients": s.clients,
            "startup_samples": s.starts,
            "only": s.only,
            "text_bytes": TEXT_BYTES,
            "aggregate": "median over rounds; vmhwm: max over rounds",
        },
        "machine": {
            "cpus": cpus,
            "kernel": common::kernel(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "figures": fig.0,
        "startup_ms": {
            "median": round3(startup.median_ms),
            "min": round3(startup.min_ms),
            "max": round3(startup.max_ms),
            "samples": startup.samples.iter().map(|&x| round3(x)).collect::<Vec<_>>(),
        },
        "binary": {"stripped_bytes": bin_stripped, "on_disk_bytes": bin_on_disk},
        "runtime_crates": crates,
        "configurations": (0..all_cases.len()).filter_map(case_json).collect::<Vec<_>>(),
        "rounds": rounds.iter().map(|(ci, round, r)| json!({
            "round": round,
            "config": all_cases[*ci].id,
            "stats": r.stats.json(),
            "relay": r.relay.as_ref().map(|x| json!({
                "rss_start_kib": x.rss_start_kib,
                "rss_idle_kib": x.rss_idle_kib,
                "vmhwm_kib": x.hwm_kib,
                "cpu_ms_per_1k_requests": x.cpu_ms_per_1k.map(round3),
                "initialize_503_retries": x.init_503s,
                "metrics_requests_ok": x.metrics_ok,
                "client_requests": x.expected_ok,
            })),
        })).collect::<Vec<_>>(),
        "targets": targets.iter().map(|(name, value, limit, ok)| json!({
            "name": name, "value": value, "limit": limit, "pass": ok,
        })).collect::<Vec<_>>(),
        "warnings": warnings,
        "wall_seconds": round2(t_begin.elapsed().as_secs_f64()),
    });
    if s.smoke {
        println!("\nsmoke run: no JSON written (run via `cargo bench --bench suite`)");
        return Ok(());
    }
    // Results of a run are build output: under target/ (beside this bench's
    // binary, target/<profile>/deps/suite-*), never committed.
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench-results");
    fs::create_dir_all(&dir)?;
    let name = format!(
        "{date}-{}{}{}{}.json",
        commit.as_deref().unwrap_or("nogit"),
        if dirty { "-dirty" } else { "" },
        if s.quick { "-quick" } else { "" },
        if s.only.is_empty() { "" } else { "-only" }
    );
    let path = dir.join(name);
    fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
    println!("\nresults: {}", path.display());
    println!("wall time: {:.1} s", t_begin.elapsed().as_secs_f64());

    // ---- comparison with the baseline ----
    let baseline = std::env::var_os("BENCH_BASELINE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/baseline.json"));
    if baseline.exists() {
        println!();
        match bench_compare::compare_files(&baseline, &path) {
            Ok(text) => print!("{text}"),
            // Never fails the run: the comparison is for reading.
            Err(e) => println!("comparison with {} failed: {e}", baseline.display()),
        }
    } else {
        println!(
            "\nno baseline at {} (copy a results file there to compare)",
            baseline.display()
        );
    }
    Ok(())
}

/// Runs every selected configuration once per round, each baseline next to
/// its relays; the order flips every round so none always runs first or
/// last.
fn measure(
    s: &Settings,
    all_cases: &[Case],
    keep: &[bool],
    paths: &Paths,
    watchdog: &Arc<Watchdog>,
) -> Result<Vec<RoundRun>> {
    let mut out = Vec::new();
    // Each direct baseline runs right before the relays compared with it,
    // so a ratio's two sides are measured close together in time.
    let mut grouped: Vec<usize> = Vec::with_capacity(all_cases.len());
    for (d, c) in all_cases.iter().enumerate() {
        if c.baseline.is_none() {
            grouped.push(d);
            grouped.extend((0..all_cases.len()).filter(|&i| all_cases[i].baseline == Some(d)));
        }
    }
    for round in 1..=s.rounds {
        let mut order: Vec<usize> = grouped.iter().copied().filter(|&i| keep[i]).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for ci in order {
            let c = &all_cases[ci];
            eprintln!("bench: round {round}/{} {}", s.rounds, c.id);
            let r = run_case(c, s, paths, watchdog)?;
            reap_leftovers();
            out.push((ci, round, r));
        }
    }
    Ok(out)
}
