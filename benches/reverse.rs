//! Round-trip benchmark for `mcp-relay reverse` (MCP Streamable HTTP).
//!
//! Configurations, run interleaved (the order flips every round) so machine
//! noise hits all of them:
//!
//! - DIRECT: this harness spawns `echo_server` and talks to its stdin/stdout,
//!   one client, window 1: what an MCP round trip costs with no relay and no
//!   HTTP;
//! - RELAY session mode (`--pool session --max-connections 16`) and RELAY
//!   shared mode (`--pool shared --max-connections 2`), each with 1 client and
//!   with 16 concurrent clients;
//! - RELAY shared mode, 1 client, no keep-alive: a fresh TCP connection per
//!   request (`Connection: close`), to show what connection reuse saves.
//!
//! Every relay configuration gets a fresh relay on `127.0.0.1:0` (the port is
//! read from its "listening on" log line). A client is one thread with its
//! own keep-alive TCP connection (TCP_NODELAY; each request written with one
//! write) and its own MCP session: `initialize`, `notifications/initialized`,
//! then sequential `tools/call` echo requests whose 32-byte text is unique per
//! client and request; every reply's id and text are checked. An
//! `initialize` answered 503 (pool queue full: 16 sessions opening at once on
//! a cold shared pool exceed its default `--max-waiting` of 4 x 2) is retried
//! 10 ms later on a new connection and reported as a warning. Phases: all
//! clients initialize, the relay idles for a second (idle RSS), a warm-up,
//! then the timed window, all clients starting together. Latency is from
//! before the request is written (before `connect` without keep-alive) until
//! the whole reply is read; throughput is requests / wall time of the window.
//!
//! Reported per configuration (median over rounds): p50/p95/p99 (µs),
//! throughput, ratio to DIRECT, the relay's CPU time per 1,000 requests
//! (utime+stime from /proc/<pid>/stat over the timed window), its VmRSS when
//! idle with the sessions open and its VmHWM after the load; plus the relay's
//! own `/metrics` request count, checked against what the clients sent.
//! Targets are informational (a MISS never fails the run; only a broken run —
//! a wrong or missing reply, a dying process — exits non-zero).
//!
//! Output: a table on stdout and `bench-results/reverse-<unix time>.json`.
//!
//! Knobs: `BENCH_SECS` (timed seconds per configuration, default 5),
//! `BENCH_ROUNDS` (default 3), `BENCH_CLIENTS` (concurrent clients, default
//! 16), `BENCH_QUICK=1` (1 s, 2 rounds). Without `--bench` on the command line
//! (i.e. under `cargo test --benches`) it runs a tiny smoke test and writes no
//! file.

mod common;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use common::http::{PROTOCOL_VERSION, TEXT_BYTES, get_text, make_text};
use common::{
    BoxError, HttpClient, Relay, Result, Rpc, Stats, StdioClient, Watchdog, clock_ticks_per_sec,
    cpu_ns_schedstat, cpu_ticks, env_secs, env_usize, err, loadavg, median_opt, median_stats, pass,
    proc_status_kib, prom_by_label, reap_leftovers, relay_binary, round2, round3,
};

// Targets (informational).
const TARGET_P50_1_US: f64 = 150.0;
const TARGET_RPS_N: f64 = 12_000.0;
const TARGET_RSS_KIB: u64 = 8 * 1024;

// For scale: figures quoted in the issue, not measured by this harness.
const QUOTED: &[(&str, &str)] = &[
    (
        "supergateway 4.0.0",
        "~775 req/s, p50 1.0 ms at 1 client, 188 MB RSS",
    ),
    ("Python mcp-proxy 0.13", "~650 req/s, p50 1.7 ms"),
];

// ---- settings ---------------------------------------------------------------

struct Settings {
    secs: f64,
    warmup_secs: f64,
    idle_wait: Duration,
    rounds: usize,
    clients: usize,
    quick: bool,
    /// Run as `cargo test` would (no `--bench`): tiny counts, no JSON file.
    smoke: bool,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let smoke = !std::env::args().any(|a| a == "--bench");
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
        let (secs, warmup_secs, idle_ms, rounds, clients) = if smoke {
            (0.2, 0.05, 200, 1, 4)
        } else if quick {
            (1.0, 0.2, 1000, 2, 16)
        } else {
            (5.0, 0.5, 1000, 3, 16)
        };
        let (secs, rounds, clients) = if smoke {
            (secs, rounds, clients)
        } else {
            (
                env_secs("BENCH_SECS")?.unwrap_or(secs),
                env_usize("BENCH_ROUNDS")?.unwrap_or(rounds),
                env_usize("BENCH_CLIENTS")?.unwrap_or(clients),
            )
        };
        Ok(Settings {
            secs,
            warmup_secs,
            idle_wait: Duration::from_millis(idle_ms),
            rounds,
            clients,
            quick,
            smoke,
        })
    }
}

/// Starts `mcp-relay reverse` on an ephemeral port in front of `echo`.
fn spawn_relay(
    relay: &Path,
    echo: &Path,
    pool: &str,
    max_connections: usize,
    watchdog: &Arc<Watchdog>,
) -> Result<Relay> {
    let mut cmd = Command::new(relay);
    cmd.args(["reverse", "--listen", "127.0.0.1:0", "--pool", pool])
        .args(["--max-connections", &max_connections.to_string(), "--"])
        .arg(echo);
    Relay::start(cmd, "relay", watchdog)
}

/// `GET /metrics` on a fresh connection.
fn fetch_metrics(addr: std::net::SocketAddr) -> std::result::Result<String, String> {
    get_text(addr, "/metrics")
}

// ---- configurations ---------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Stdio,
    KeepAlive,
    Close,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pool {
    Session,
    Shared,
}

impl Pool {
    fn arg(self) -> &'static str {
        match self {
            Pool::Session => "session",
            Pool::Shared => "shared",
        }
    }

    fn max_connections(self) -> usize {
        match self {
            Pool::Session => 16,
            Pool::Shared => 2,
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    /// Short id, used in JSON.
    id: String,
    label: String,
    pool: Option<Pool>,
    clients: usize,
    transport: Transport,
}

fn cases(n: usize) -> Vec<Case> {
    let relay = |pool: Pool, clients: usize, transport: Transport| {
        let ka = transport == Transport::KeepAlive;
        Case {
            id: format!(
                "{}_{clients}{}",
                pool.arg(),
                if ka { "" } else { "_no_keepalive" }
            ),
            label: format!(
                "{} --max-conn {}{}",
                pool.arg(),
                pool.max_connections(),
                if ka { "" } else { ", no keep-alive" }
            ),
            pool: Some(pool),
            clients,
            transport,
        }
    };
    vec![
        Case {
            id: "direct_1".into(),
            label: "DIRECT (stdio)".into(),
            pool: None,
            clients: 1,
            transport: Transport::Stdio,
        },
        relay(Pool::Session, 1, Transport::KeepAlive),
        relay(Pool::Session, n, Transport::KeepAlive),
        relay(Pool::Shared, 1, Transport::KeepAlive),
        relay(Pool::Shared, n, Transport::KeepAlive),
        relay(Pool::Shared, 1, Transport::Close),
    ]
}

struct Paths {
    relay: PathBuf,
    echo: PathBuf,
}

#[derive(Default)]
struct RelayRun {
    rss_start_kib: Option<u64>,
    rss_idle_kib: Option<u64>,
    hwm_kib: Option<u64>,
    cpu_ticks: Option<u64>,
    cpu_ms_per_1k: Option<f64>,
    cpu_ms_per_1k_schedstat: Option<f64>,
    cpu_util: Option<f64>,
    servers: usize,
    /// `initialize` requests answered 503 and retried.
    init_503s: u64,
    metrics_ok: Option<f64>,
    expected_ok: u64,
    metrics_outcomes: Vec<(String, f64)>,
    metrics_codes: Vec<(String, f64)>,
    exit: String,
    clean_exit: bool,
    problems: Vec<String>,
}

struct CaseRun {
    stats: Stats,
    elapsed: Duration,
    relay: Option<RelayRun>,
}

/// What the client threads share: the phase barrier, the abort flag and the
/// phase deadlines that the main thread publishes between barriers.
struct Phases {
    barrier: Barrier,
    abort: AtomicBool,
    warm_until: OnceLock<Instant>,
    window: OnceLock<(Instant, Instant)>,
}

struct ThreadOut {
    lat: Vec<u64>,
    calls: u64,
    init_503s: u64,
    finished: Instant,
}

/// Sequential calls until `until` (or an abort); returns the call count.
fn call_loop(
    c: &mut dyn Rpc,
    client: usize,
    next_id: &mut u64,
    until: Instant,
    phases: &Phases,
    watchdog: &Watchdog,
    mut lat: Option<&mut Vec<u64>>,
) -> Result<u64> {
    let mut text = String::with_capacity(TEXT_BYTES);
    let mut n = 0;
    while Instant::now() < until && !phases.abort.load(Ordering::Relaxed) {
        let id = *next_id;
        *next_id += 1;
        make_text(&mut text, client, id);
        let ns = c.call(id, &text)?;
        watchdog.tick();
        if let Some(l) = lat.as_deref_mut() {
            l.push(ns);
        }
        n += 1;
    }
    Ok(n)
}

/// One client: open (A), idle (B), warm up (C), timed window (D), finish.
/// Every thread passes all four barriers whatever happens, so a failure in
/// one never deadlocks the others; it sets `abort` and they stop early.
fn client_thread(
    client: usize,
    make: &(dyn Fn(usize) -> Result<Box<dyn Rpc>> + Sync),
    phases: &Phases,
    watchdog: &Watchdog,
) -> Result<ThreadOut> {
    let mut first_err: Option<BoxError> = None;
    let fail = |e: BoxError, first: &mut Option<_>| {
        phases.abort.store(true, Ordering::Relaxed);
        first.get_or_insert(e);
    };
    let mut c = match make(client) {
        Ok(c) => Some(c),
        Err(e) => {
            fail(e, &mut first_err);
            None
        }
    };
    let mut next_id = 2;
    let mut calls = 0;
    phases.barrier.wait(); // A: all sessions open
    phases.barrier.wait(); // B: idle RSS taken
    if let (Some(cl), Some(&until)) = (c.as_mut(), phases.warm_until.get())
        && first_err.is_none()
    {
        match call_loop(
            cl.as_mut(),
            client,
            &mut next_id,
            until,
            phases,
            watchdog,
            None,
        ) {
            Ok(n) => calls += n,
            Err(e) => fail(e, &mut first_err),
        }
    }
    phases.barrier.wait(); // C: warm-up done
    phases.barrier.wait(); // D: CPU sampled, window published
    let mut lat = Vec::with_capacity(1 << 16);
    if let (Some(cl), Some(&(_, until))) = (c.as_mut(), phases.window.get())
        && first_err.is_none()
    {
        match call_loop(
            cl.as_mut(),
            client,
            &mut next_id,
            until,
            phases,
            watchdog,
            Some(&mut lat),
        ) {
            Ok(n) => calls += n,
            Err(e) => fail(e, &mut first_err),
        }
    }
    let finished = Instant::now();
    let init_503s = c.as_ref().map_or(0, |c| c.init_503s());
    if let Some(c) = c.take()
        && let Err(e) = c.finish()
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

fn run_case(case: &Case, s: &Settings, paths: &Paths, watchdog: &Arc<Watchdog>) -> Result<CaseRun> {
    let mut relay = match case.pool {
        Some(p) => Some(spawn_relay(
            &paths.relay,
            &paths.echo,
            p.arg(),
            p.max_connections(),
            watchdog,
        )?),
        None => None,
    };
    let rss_start_kib = relay.as_ref().and_then(|r| proc_status_kib(r.pid, "VmRSS"));
    let addr = relay.as_ref().map(|r| r.addr);
    let make = |client: usize| -> Result<Box<dyn Rpc>> {
        match (case.transport, addr) {
            (Transport::Stdio, _) => Ok(Box::new(StdioClient::spawn(&paths.echo, watchdog)?)),
            (t, Some(addr)) => Ok(Box::new(HttpClient::open(
                addr,
                t == Transport::Close,
                format!("{} client {client}", case.id),
                watchdog,
            )?)),
            (_, None) => Err(err("an HTTP case without a relay")),
        }
    };
    let phases = Phases {
        barrier: Barrier::new(case.clients + 1),
        abort: AtomicBool::new(false),
        warm_until: OnceLock::new(),
        window: OnceLock::new(),
    };
    let mut rr = RelayRun {
        rss_start_kib,
        ..RelayRun::default()
    };
    let mut cpu0 = None;
    let mut sched0 = None;
    let outs: Vec<Result<ThreadOut>> = thread::scope(|sc| {
        let handles: Vec<_> = (0..case.clients)
            .map(|i| {
                let (make, phases) = (&make, &phases);
                sc.spawn(move || client_thread(i, make, phases, watchdog))
            })
            .collect();
        phases.barrier.wait(); // A
        if !phases.abort.load(Ordering::Relaxed) {
            thread::sleep(s.idle_wait);
        }
        if let Some(r) = relay.as_mut() {
            rr.rss_idle_kib = proc_status_kib(r.pid, "VmRSS");
            r.note_servers();
        }
        let _ = phases
            .warm_until
            .set(Instant::now() + Duration::from_secs_f64(s.warmup_secs));
        phases.barrier.wait(); // B
        phases.barrier.wait(); // C
        if let Some(r) = relay.as_ref() {
            cpu0 = cpu_ticks(r.pid);
            sched0 = cpu_ns_schedstat(r.pid);
        }
        let start = Instant::now();
        let _ = phases
            .window
            .set((start, start + Duration::from_secs_f64(s.secs)));
        phases.barrier.wait(); // D
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
        if let Some(r) = relay.as_ref() {
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

    let Some(mut r) = relay else {
        return Ok(CaseRun {
            stats,
            elapsed,
            relay: None,
        });
    };
    if !r.alive() {
        return Err(r.broken("exited during the run"));
    }
    let cpu1 = cpu_ticks(r.pid);
    let sched1 = cpu_ns_schedstat(r.pid);
    rr.hwm_kib = proc_status_kib(r.pid, "VmHWM");
    r.note_servers();
    rr.servers = r.servers.len();
    let per_1k = |secs: f64| secs * 1000.0 / stats.requests as f64 * 1000.0;
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        let ticks = b.saturating_sub(a);
        let secs = ticks as f64 / clock_ticks_per_sec();
        rr.cpu_ticks = Some(ticks);
        rr.cpu_ms_per_1k = Some(per_1k(secs));
        rr.cpu_util = Some(secs / elapsed.as_secs_f64());
    }
    if let (Some(a), Some(b)) = (sched0, sched1) {
        rr.cpu_ms_per_1k_schedstat = Some(per_1k(b.saturating_sub(a) as f64 / 1e9));
    }
    rr.expected_ok = case.clients as u64 + calls; // initialize + tools/call
    match fetch_metrics(r.addr) {
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
    rr.exit = status.to_string();
    rr.clean_exit = status.success();
    rr.problems.extend(r.problems());
    Ok(CaseRun {
        stats,
        elapsed,
        relay: Some(rr),
    })
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
    /// Max over rounds.
    hwm_kib: Option<f64>,
    cpu_ms_per_1k: Option<f64>,
    cpu_ms_per_1k_schedstat: Option<f64>,
    cpu_util: Option<f64>,
}

fn aggregate(runs: &[&CaseRun]) -> Agg {
    let stats = median_stats(&runs.iter().map(|r| r.stats).collect::<Vec<_>>());
    let rel = || runs.iter().filter_map(|r| r.relay.as_ref());
    Agg {
        stats,
        rss_start_kib: median_opt(rel().map(|r| r.rss_start_kib.map(|k| k as f64))),
        rss_idle_kib: median_opt(rel().map(|r| r.rss_idle_kib.map(|k| k as f64))),
        hwm_kib: rel().filter_map(|r| r.hwm_kib).max().map(|k| k as f64),
        cpu_ms_per_1k: median_opt(rel().map(|r| r.cpu_ms_per_1k)),
        cpu_ms_per_1k_schedstat: median_opt(rel().map(|r| r.cpu_ms_per_1k_schedstat)),
        cpu_util: median_opt(rel().map(|r| r.cpu_util)),
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

fn run() -> Result<()> {
    let s = Settings::from_env()?;
    let paths = Paths {
        relay: relay_binary(),
        echo: common::echo_server_binary()?,
    };
    // Adopt the relay's servers if the relay dies, so they can be reaped too.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only changes who reaps orphans.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let all_cases = cases(s.clients);
    let load_before = loadavg();
    let (watchdog, watch_thread) = Watchdog::start();
    let res = measure(&s, &all_cases, &paths, &watchdog);
    watchdog.stop.store(true, Ordering::Relaxed);
    let _ = watch_thread.join();
    reap_leftovers();
    let rounds = res?;
    let load_after = loadavg();

    let aggs: Vec<Agg> = (0..all_cases.len())
        .map(|ci| {
            let runs: Vec<&CaseRun> = rounds
                .iter()
                .filter(|(c, _, _)| *c == ci)
                .map(|(_, _, r)| r)
                .collect();
            aggregate(&runs)
        })
        .collect();
    let direct = aggs[0].stats;
    let find = |pool: Pool, clients: usize, t: Transport| {
        all_cases
            .iter()
            .position(|c| c.pool == Some(pool) && c.clients == clients && c.transport == t)
            .expect("case exists")
    };
    let (se1, sen) = (
        find(Pool::Session, 1, Transport::KeepAlive),
        find(Pool::Session, s.clients, Transport::KeepAlive),
    );
    let (sh1, shn) = (
        find(Pool::Shared, 1, Transport::KeepAlive),
        find(Pool::Shared, s.clients, Transport::KeepAlive),
    );
    let shc = find(Pool::Shared, 1, Transport::Close);

    let n = s.clients;
    let rss_line = |ci: usize| {
        let k = aggs[ci].hwm_kib;
        (
            k.map_or("unavailable".into(), |k| format!("{:.2} MiB", k / 1024.0)),
            k.is_some_and(|k| k <= TARGET_RSS_KIB as f64),
        )
    };
    let mut targets: Vec<(String, String, String, bool)> = Vec::new();
    for (ci, name) in [(se1, "session"), (sh1, "shared")] {
        let p50 = aggs[ci].stats.p50_us;
        targets.push((
            format!("{name}, 1 client: p50"),
            format!("{p50:.1} µs"),
            format!("<= {TARGET_P50_1_US} µs"),
            p50 <= TARGET_P50_1_US,
        ));
    }
    for (ci, name) in [(sen, "session"), (shn, "shared")] {
        let t = aggs[ci].stats.throughput;
        targets.push((
            format!("{name}, {n} clients: throughput"),
            format!("{t:.0} req/s"),
            format!(">= {TARGET_RPS_N:.0} req/s"),
            t >= TARGET_RPS_N,
        ));
    }
    for (ci, name) in [(sen, "session"), (shn, "shared")] {
        let (v, ok) = rss_line(ci);
        targets.push((
            format!("{name}, {n} clients: relay VmHWM"),
            v,
            format!("<= {} MiB", TARGET_RSS_KIB / 1024),
            ok,
        ));
    }

    let mut warnings = Vec::new();
    for (ci, round, r) in &rounds {
        let Some(rr) = &r.relay else { continue };
        let id = &all_cases[*ci].id;
        if !rr.clean_exit {
            warnings.push(format!(
                "{id} round {round}: relay exited with {} after SIGTERM",
                rr.exit
            ));
        }
        match rr.metrics_ok {
            Some(ok) if ok as u64 == rr.expected_ok => {}
            Some(ok) => warnings.push(format!(
                "{id} round {round}: relay counted {ok} ok requests, clients sent {}",
                rr.expected_ok
            )),
            None => warnings.push(format!("{id} round {round}: no ok count in /metrics")),
        }
        if rr.init_503s > 0 {
            warnings.push(format!(
                "{id} round {round}: {} initialize requests got 503 (queue_full) while the \
                 sessions opened at once on a cold pool, and were retried",
                rr.init_503s
            ));
        }
        // The retried 503s are reported just above.
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
    println!();
    println!(
        "mcp-relay reverse benchmark: {} round(s), {} s per configuration (+{} s warm-up), \
         {n} concurrent clients, {} CPU(s){}",
        s.rounds,
        s.secs,
        s.warmup_secs,
        cpus,
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
        "figures: median over rounds (VmHWM: max); latency µs per request, from write \
         (connect without keep-alive) to the whole reply; ratios vs DIRECT 1 client"
    );
    println!();
    println!(
        "{:<34} {:>3} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>9} {:>5} {:>8} {:>8}",
        "configuration",
        "cli",
        "p50",
        "p95",
        "p99",
        "req/s",
        "p50/D",
        "thr/D",
        "CPUms/1k",
        "CPU%",
        "RSS idle",
        "VmHWM"
    );
    println!(
        "{:<34} {:>3} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>9} {:>5} {:>8} {:>8}",
        "", "", "µs", "µs", "µs", "", "", "", "relay", "relay", "MiB", "MiB"
    );
    println!("{}", "-".repeat(128));
    for (c, a) in all_cases.iter().zip(&aggs) {
        let st = a.stats;
        println!(
            "{:<34} {:>3} {:>8.1} {:>8.1} {:>8.1} {:>8.0} {:>6.2} {:>6.3} {:>9} {:>5} {:>8} {:>8}",
            c.label,
            c.clients,
            st.p50_us,
            st.p95_us,
            st.p99_us,
            st.throughput,
            st.p50_us / direct.p50_us,
            st.throughput / direct.throughput,
            a.cpu_ms_per_1k.map_or("-".into(), |v| format!("{v:.1}")),
            a.cpu_util
                .map_or("-".into(), |v| format!("{:.0}", v * 100.0)),
            kib_mib(a.rss_idle_kib),
            kib_mib(a.hwm_kib),
        );
    }
    println!();
    let ka = aggs[sh1].stats;
    let cl = aggs[shc].stats;
    println!(
        "connection reuse (shared, 1 client): keep-alive p50 {:.1} µs, {:.0} req/s; a connection \
         per request p50 {:.1} µs (+{:.1} µs), {:.0} req/s ({:.2}x)",
        ka.p50_us,
        ka.throughput,
        cl.p50_us,
        cl.p50_us - ka.p50_us,
        cl.throughput,
        ka.throughput / cl.throughput
    );
    println!(
        "relay RSS right after start (no session): {} MiB (session mode), {} MiB (shared mode)",
        kib_mib(aggs[se1].rss_start_kib),
        kib_mib(aggs[sh1].rss_start_kib)
    );
    println!(
        "CPUms/1k = relay utime+stime (/proc/<pid>/stat, {} ticks/s) per 1,000 requests over \
         the timed window (= µs per request); schedstat cross-check: {}",
        clock_ticks_per_sec(),
        all_cases
            .iter()
            .zip(&aggs)
            .filter_map(|(c, a)| a
                .cpu_ms_per_1k_schedstat
                .map(|v| format!("{} {v:.1}", c.id)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!("for scale (quoted, not measured):");
    for (what, figures) in QUOTED {
        println!("  {what:<22} {figures}   (quoted, not measured)");
    }
    println!();
    println!("per round (p50 µs / p99 µs / req/s / relay CPU ms per 1k):");
    for (ci, round, r) in &rounds {
        println!(
            "  round {round} {:<28} p50 {:>8.1}  p99 {:>8.1}  {:>8.0} req/s  cpu {:>6}  hwm {:>6} KiB",
            all_cases[*ci].id,
            r.stats.p50_us,
            r.stats.p99_us,
            r.stats.throughput,
            r.relay
                .as_ref()
                .and_then(|x| x.cpu_ms_per_1k)
                .map_or("-".into(), |v| format!("{v:.1}")),
            r.relay
                .as_ref()
                .and_then(|x| x.hwm_kib)
                .map_or("-".into(), |v| v.to_string()),
        );
    }
    println!();
    println!("targets (informational):");
    for (name, value, limit, ok) in &targets {
        println!("  {:<4} {name:<36} {value:>14}  ({limit})", pass(*ok));
    }
    for w in &warnings {
        println!("warning: {w}");
    }

    // ---- JSON ----
    let unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let case_json = |ci: usize| {
        let (c, a) = (&all_cases[ci], &aggs[ci]);
        json!({
            "id": c.id,
            "label": c.label,
            "pool": c.pool.map(Pool::arg),
            "max_connections": c.pool.map(Pool::max_connections),
            "clients": c.clients,
            "keep_alive": c.transport != Transport::Close,
            "transport": if c.transport == Transport::Stdio { "stdio" } else { "http" },
            "stats": a.stats.json(),
            "over_direct": {
                "p50": round3(a.stats.p50_us / direct.p50_us),
                "p99": round3(a.stats.p99_us / direct.p99_us),
                "throughput": round3(a.stats.throughput / direct.throughput),
            },
            "relay": c.pool.map(|_| json!({
                "rss_start_kib": a.rss_start_kib,
                "rss_idle_kib": a.rss_idle_kib,
                "vmhwm_kib_max": a.hwm_kib,
                "cpu_ms_per_1k_requests": a.cpu_ms_per_1k.map(round3),
                "cpu_ms_per_1k_requests_schedstat": a.cpu_ms_per_1k_schedstat.map(round3),
                "cpu_utilization": a.cpu_util.map(round3),
            })),
        })
    };
    let doc = json!({
        "benchmark": "mcp-relay reverse",
        "unix_time": unix,
        "settings": {
            "seconds_per_configuration": s.secs,
            "warmup_seconds": s.warmup_secs,
            "idle_wait_ms": s.idle_wait.as_millis() as u64,
            "rounds": s.rounds,
            "clients": s.clients,
            "quick": s.quick,
            "smoke": s.smoke,
            "text_bytes": TEXT_BYTES,
            "protocol_version": PROTOCOL_VERSION,
            "aggregate": "median over rounds; vmhwm: max over rounds",
            "clock_ticks_per_sec": clock_ticks_per_sec(),
        },
        "machine": {
            "cpus": cpus,
            "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|k| k.trim().to_string()),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "binaries": {
            "relay": paths.relay.display().to_string(),
            "echo_server": paths.echo.display().to_string(),
        },
        "configurations": (0..all_cases.len()).map(case_json).collect::<Vec<_>>(),
        "connection_reuse_shared_1": {
            "keepalive_p50_us": round2(ka.p50_us),
            "no_keepalive_p50_us": round2(cl.p50_us),
            "added_p50_us": round2(cl.p50_us - ka.p50_us),
            "throughput_ratio_keepalive_over_no_keepalive": round3(ka.throughput / cl.throughput),
        },
        "quoted_not_measured": QUOTED.iter().map(|(w, f)| json!({"what": w, "figures": f})).collect::<Vec<_>>(),
        "rounds": rounds.iter().map(|(ci, round, r)| json!({
            "round": round,
            "config": all_cases[*ci].id,
            "stats": r.stats.json(),
            "elapsed_s": round3(r.elapsed.as_secs_f64()),
            "relay": r.relay.as_ref().map(|x| json!({
                "rss_start_kib": x.rss_start_kib,
                "rss_idle_kib": x.rss_idle_kib,
                "vmhwm_kib": x.hwm_kib,
                "cpu_ticks": x.cpu_ticks,
                "cpu_ms_per_1k_requests": x.cpu_ms_per_1k.map(round3),
                "cpu_ms_per_1k_requests_schedstat": x.cpu_ms_per_1k_schedstat.map(round3),
                "cpu_utilization": x.cpu_util.map(round3),
                "servers_seen": x.servers,
                "initialize_503_retries": x.init_503s,
                "metrics_requests_ok": x.metrics_ok,
                "client_requests": x.expected_ok,
                "exit": x.exit,
            })),
        })).collect::<Vec<_>>(),
        "targets": targets.iter().map(|(name, value, limit, ok)| json!({
            "name": name, "value": value, "limit": limit, "pass": ok,
        })).collect::<Vec<_>>(),
        "warnings": warnings,
    });
    if s.smoke {
        println!("\nsmoke run: no JSON written (run via `cargo bench --bench reverse`)");
        return Ok(());
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!("reverse-{unix}.json"));
    fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
    println!("\nresults: {}", path.display());
    Ok(())
}

/// Runs every configuration once per round; the order flips every round so
/// none always runs first or last.
fn measure(
    s: &Settings,
    all_cases: &[Case],
    paths: &Paths,
    watchdog: &Arc<Watchdog>,
) -> Result<Vec<(usize, usize, CaseRun)>> {
    let mut out = Vec::new();
    for round in 1..=s.rounds {
        let mut order: Vec<usize> = (0..all_cases.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for ci in order {
            let c = &all_cases[ci];
            eprintln!(
                "bench: round {round}/{} {} ({} client{})",
                s.rounds,
                c.id,
                c.clients,
                if c.clients == 1 { "" } else { "s" }
            );
            let r = run_case(c, s, paths, watchdog)?;
            out.push((ci, round, r));
        }
    }
    Ok(out)
}
