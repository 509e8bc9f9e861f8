//! Round-trip benchmark for `mcp-relay forward`.
//!
//! Measures JSON-RPC `tools/call` round trips against the example echo server
//! in two configurations, run interleaved so machine noise hits both:
//!
//! - DIRECT: this harness spawns `echo_server` and talks to its stdin/stdout;
//! - RELAY: this harness spawns `mcp-relay forward -- echo_server`.
//!
//! Each configuration does `initialize` + `notifications/initialized`, a
//! warm-up, then window 1 (N sequential requests) and window 32 (32 requests
//! kept in flight, M requests). The same client code drives both. It also
//! reports the relay's idle and peak RSS, the release binary size and the
//! runtime crate count, next to informational targets (a MISS never fails the
//! run; only a broken run — a missing reply, a dying process — does).
//!
//! Output: a table on stdout and `bench-results/forward-<unix time>.json`.
//!
//! Knobs: `BENCH_N` (window-1 requests, default 20000), `BENCH_M` (window-32
//! requests, default 100000), `BENCH_QUICK=1` (2000/10000, 2 rounds),
//! `BENCH_ROUNDS` (default 3). Without `--bench` on the command line (i.e.
//! under `cargo test --benches`) it runs a tiny smoke test and writes no file.

mod common;

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use common::{
    BoxError, Head, Result, Stats, Watchdog, children_of, env_usize, err, loadavg, median_stats,
    median_u64, parent_of, pass, proc_status_kib, relay_binary, round2, runtime_crates,
};

const WINDOW: usize = 32;
/// Tool argument: 32 bytes.
const TEXT: &str = "0123456789abcdef0123456789abcdef";
/// How long a child may take to exit after its stdin is closed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_WAIT: Duration = Duration::from_secs(1);

// Targets (informational).
const TARGET_ADDED_P50_US: f64 = 15.0;
const TARGET_W32_RATIO: f64 = 0.70;
const TARGET_IDLE_RSS_KIB: u64 = 3 * 1024;
const TARGET_BINARY_BYTES: u64 = 2_500_000;

// ---- settings ---------------------------------------------------------------

struct Settings {
    n: usize,
    m: usize,
    warmup: usize,
    rounds: usize,
    quick: bool,
    /// Run as `cargo test` would (no `--bench`): tiny counts, no JSON file.
    smoke: bool,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let smoke = !std::env::args().any(|a| a == "--bench");
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
        let (n, m, warmup, rounds) = if smoke {
            (200, 1000, 100, 1)
        } else if quick {
            (2000, 10_000, 1000, 2)
        } else {
            (20_000, 100_000, 1000, 3)
        };
        let (n, m, rounds) = if smoke {
            (n, m, rounds)
        } else {
            (
                env_usize("BENCH_N")?.unwrap_or(n),
                env_usize("BENCH_M")?.unwrap_or(m),
                env_usize("BENCH_ROUNDS")?.unwrap_or(rounds),
            )
        };
        Ok(Settings {
            n,
            m,
            warmup,
            rounds,
            quick,
            smoke,
        })
    }
}

// ---- the client -----------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Config {
    Direct,
    Relay,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Direct => "direct",
            Config::Relay => "relay",
        }
    }
}

struct Client {
    config: Config,
    child: Child,
    reaped: bool,
    /// The relay's echo_server, when known (RELAY only).
    grandchild: Option<i32>,
    stdin: Option<BufWriter<ChildStdin>>,
    stdout: BufReader<ChildStdout>,
    line: Vec<u8>,
    next_id: u64,
    watchdog: Arc<Watchdog>,
}

fn write_request(out: &mut impl Write, id: u64) -> std::io::Result<()> {
    writeln!(
        out,
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\
         \"params\":{{\"name\":\"echo\",\"arguments\":{{\"text\":\"{TEXT}\"}}}}}}"
    )?;
    out.flush()
}

impl Client {
    fn spawn(
        config: Config,
        echo: &Path,
        relay: &Path,
        watchdog: &Arc<Watchdog>,
    ) -> Result<Client> {
        let mut cmd = match config {
            Config::Direct => Command::new(echo),
            Config::Relay => {
                let mut c = Command::new(relay);
                c.arg("forward").arg("--").arg(echo);
                c
            }
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| err(format!("spawning {}: {e}", config.name())))?;
        watchdog.watch_pid(child.id() as i32);
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            unreachable!("both pipes requested")
        };
        Ok(Client {
            config,
            child,
            reaped: false,
            grandchild: None,
            stdin: Some(BufWriter::new(stdin)),
            stdout: BufReader::new(stdout),
            line: Vec::with_capacity(512),
            next_id: 1,
            watchdog: Arc::clone(watchdog),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdin(&mut self) -> &mut BufWriter<ChildStdin> {
        self.stdin.as_mut().expect("stdin open until close()")
    }

    fn broken(&self, what: String) -> BoxError {
        let stalled = if self.watchdog.tripped.load(Ordering::Relaxed) {
            " (killed by the stall watchdog)"
        } else {
            ""
        };
        err(format!("{}: {what}{stalled}", self.config.name()))
    }

    /// Reads the next response (skipping server notifications/requests).
    fn read_reply(
        stdout: &mut BufReader<ChildStdout>,
        line: &mut Vec<u8>,
    ) -> std::result::Result<Head, String> {
        loop {
            line.clear();
            match stdout.read_until(b'\n', line) {
                Ok(0) => return Err("EOF on stdout: reply missing".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading stdout: {e}")),
            }
            let head: Head = serde_json::from_slice(line).map_err(|e| {
                format!(
                    "unparsable line ({e}): {}",
                    String::from_utf8_lossy(&line[..line.len().min(200)])
                )
            })?;
            if head.has_method {
                continue;
            }
            if head.has_error || !head.has_result {
                return Err(format!(
                    "error reply: {}",
                    String::from_utf8_lossy(&line[..line.len().min(300)]).trim_end()
                ));
            }
            return Ok(head);
        }
    }

    fn initialize(&mut self) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let out = self.stdin();
        let res = writeln!(
            out,
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"initialize\",\"params\":\
             {{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{{}},\
             \"clientInfo\":{{\"name\":\"mcp-relay-bench\",\"version\":\"0.1.0\"}}}}}}"
        )
        .and_then(|()| out.flush());
        res.map_err(|e| self.broken(format!("writing initialize: {e}")))?;
        let head = Self::read_reply(&mut self.stdout, &mut self.line)
            .map_err(|e| self.broken(format!("initialize: {e}")))?;
        if head.id != Some(id) {
            return Err(self.broken(format!("initialize reply has id {:?}", head.id)));
        }
        let out = self.stdin();
        let res = out
            .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
            .and_then(|()| out.flush());
        res.map_err(|e| self.broken(format!("writing initialized: {e}")))?;
        if self.config == Config::Relay {
            self.grandchild = children_of(self.pid() as i32).first().copied();
        }
        Ok(())
    }

    /// `count` sequential round trips; returns per-request ns and total time.
    fn window1(&mut self, count: usize) -> Result<(Vec<u64>, Duration)> {
        let mut lat = Vec::with_capacity(count);
        let start = Instant::now();
        for _ in 0..count {
            let id = self.next_id;
            self.next_id += 1;
            let t0 = Instant::now();
            let stdin = self.stdin.as_mut().expect("stdin open");
            write_request(stdin, id)
                .map_err(|e| self.broken(format!("writing request {id}: {e}")))?;
            let head = Self::read_reply(&mut self.stdout, &mut self.line)
                .map_err(|e| self.broken(format!("request {id}: {e}")))?;
            lat.push(t0.elapsed().as_nanos() as u64);
            self.watchdog.tick();
            if head.id != Some(id) {
                return Err(self.broken(format!("expected reply {id}, got {:?}", head.id)));
            }
        }
        Ok((lat, start.elapsed()))
    }

    /// `count` requests with `WINDOW` in flight: a writer thread sends one
    /// request per permit; the reader (this thread) returns a permit per reply.
    fn window_n(&mut self, count: usize) -> Result<(Vec<u64>, Duration)> {
        let base_id = self.next_id;
        self.next_id += count as u64;
        // Send time of request i, as ns since `start` plus one (0 = not sent).
        let sent: Vec<AtomicU64> = (0..count).map(|_| AtomicU64::new(0)).collect();
        let mut seen = vec![false; count];
        let mut lat = Vec::with_capacity(count);
        let (permit_tx, permit_rx) = mpsc::channel::<()>();
        for _ in 0..WINDOW.min(count) {
            permit_tx.send(()).expect("receiver alive");
        }
        let stdin = self.stdin.as_mut().expect("stdin open");
        let stdout = &mut self.stdout;
        let line = &mut self.line;
        let watchdog = &self.watchdog;
        let start = Instant::now();
        let (read_res, write_res) = thread::scope(|s| {
            let sent = &sent;
            let writer = s.spawn(move || -> std::result::Result<(), String> {
                for (i, stamp) in sent.iter().enumerate() {
                    if permit_rx.recv().is_err() {
                        return Ok(()); // the reader gave up; it reports why
                    }
                    let t = start.elapsed().as_nanos() as u64 + 1;
                    stamp.store(t, Ordering::Release);
                    write_request(stdin, base_id + i as u64)
                        .map_err(|e| format!("writing request {}: {e}", base_id + i as u64))?;
                }
                Ok(())
            });
            let read_res = (|| -> std::result::Result<(), String> {
                for got in 0..count {
                    let head = Self::read_reply(stdout, line)
                        .map_err(|e| format!("after {got} of {count} replies: {e}"))?;
                    let now = start.elapsed().as_nanos() as u64 + 1;
                    watchdog.tick();
                    let i = head
                        .id
                        .and_then(|id| id.checked_sub(base_id))
                        .filter(|&i| i < count as u64)
                        .ok_or_else(|| format!("reply with unexpected id {:?}", head.id))?
                        as usize;
                    if std::mem::replace(&mut seen[i], true) {
                        return Err(format!("duplicate reply for id {}", base_id + i as u64));
                    }
                    let t = sent[i].load(Ordering::Acquire);
                    if t == 0 {
                        return Err(format!(
                            "reply for id {} before it was sent",
                            base_id + i as u64
                        ));
                    }
                    lat.push(now.saturating_sub(t));
                    // Ignored error: the writer is done after `count` requests.
                    let _ = permit_tx.send(());
                }
                Ok(())
            })();
            drop(permit_tx);
            let write_res = writer
                .join()
                .unwrap_or_else(|_| Err("writer thread panicked".into()));
            (read_res, write_res)
        });
        let elapsed = start.elapsed();
        read_res.map_err(|e| self.broken(e))?;
        write_res.map_err(|e| self.broken(e))?;
        Ok((lat, elapsed))
    }

    /// Closes stdin and waits for a clean exit; kills on timeout.
    fn close(mut self) -> Result<ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(st) = self.child.try_wait()? {
                self.reaped = true;
                self.watchdog.unwatch_pid(self.pid() as i32);
                return Ok(st);
            }
            if Instant::now() >= deadline {
                return Err(self.broken(format!(
                    "did not exit within {}s of stdin EOF; killed",
                    EXIT_TIMEOUT.as_secs()
                )));
                // Drop kills and reaps.
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.watchdog.unwatch_pid(self.pid() as i32);
        // The relay's server, orphaned by the kill, is re-parented to us (we
        // are a child subreaper): kill and reap it, but only if it is ours.
        if let Some(gc) = self.grandchild
            && parent_of(gc) == Some(std::process::id() as i32)
        {
            // SAFETY: kill(2) and waitpid(2) on our own (adopted) child.
            unsafe {
                libc::kill(gc, libc::SIGKILL);
                libc::waitpid(gc, std::ptr::null_mut(), 0);
            }
        }
    }
}

// ---- one run of one configuration ----------------------------------------------

struct RunResult {
    w1: Stats,
    w32: Stats,
    idle_rss_kib: Option<u64>,
    peak_rss_kib: Option<u64>,
    exit: String,
    clean_exit: bool,
}

fn run_config(
    config: Config,
    s: &Settings,
    echo: &Path,
    relay: &Path,
    watchdog: &Arc<Watchdog>,
) -> Result<RunResult> {
    let mut c = Client::spawn(config, echo, relay, watchdog)?;
    c.initialize()?;
    thread::sleep(IDLE_WAIT);
    let idle_rss_kib = proc_status_kib(c.pid() as i32, "VmRSS");
    c.window1(s.warmup)?;
    let (lat, el) = c.window1(s.n)?;
    let w1 = Stats::new(lat, el);
    let (lat, el) = c.window_n(s.m)?;
    let w32 = Stats::new(lat, el);
    let peak_rss_kib = proc_status_kib(c.pid() as i32, "VmHWM");
    let status = c.close()?;
    Ok(RunResult {
        w1,
        w32,
        idle_rss_kib,
        peak_rss_kib,
        exit: status.to_string(),
        clean_exit: status.success(),
    })
}

struct Row {
    metric: &'static str,
    direct: f64,
    relay: f64,
    /// Digits after the decimal point.
    prec: usize,
    note: String,
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>12} {:>12} {:>12} {:>9}  target",
        "metric", "direct", "relay", "relay-direct", "relay/dir"
    );
    let _ = writeln!(out, "{}", "-".repeat(100));
    for r in rows {
        let p = r.prec;
        let _ = writeln!(
            out,
            "{:<22} {:>12.p$} {:>12.p$} {:>+12.p$} {:>9.3}  {}",
            r.metric,
            r.direct,
            r.relay,
            r.relay - r.direct,
            r.relay / r.direct,
            r.note
        );
    }
    out
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
    let relay = relay_binary();
    let echo = common::echo_server_binary()?;
    // Adopt the relay's server if the relay dies, so it can be reaped too.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only changes who reaps orphans.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let load_before = loadavg();
    let (watchdog, watch_thread) = Watchdog::start();
    let res = measure(&s, &echo, &relay, &watchdog);
    watchdog.stop.store(true, Ordering::Relaxed);
    let _ = watch_thread.join();
    let rounds = res?;
    let load_after = loadavg();

    let pick = |cfg: Config| -> Vec<&RunResult> {
        rounds
            .iter()
            .filter(|(c, _, _)| *c == cfg)
            .map(|(_, _, r)| r)
            .collect()
    };
    let (direct, relayed) = (pick(Config::Direct), pick(Config::Relay));
    let med = |rs: &[&RunResult], f: fn(&RunResult) -> Stats| {
        median_stats(&rs.iter().map(|r| f(r)).collect::<Vec<_>>())
    };
    let (d1, r1) = (med(&direct, |r| r.w1), med(&relayed, |r| r.w1));
    let (d32, r32) = (med(&direct, |r| r.w32), med(&relayed, |r| r.w32));

    let collect = |rs: &[&RunResult], f: fn(&RunResult) -> Option<u64>| -> Vec<u64> {
        rs.iter().filter_map(|r| f(r)).collect()
    };
    let relay_idle = collect(&relayed, |r| r.idle_rss_kib);
    let relay_peak = collect(&relayed, |r| r.peak_rss_kib);
    let echo_idle = collect(&direct, |r| r.idle_rss_kib);
    let relay_idle_kib = (!relay_idle.is_empty()).then(|| median_u64(&relay_idle));
    let relay_peak_kib = relay_peak.iter().copied().max();
    let echo_idle_kib = (!echo_idle.is_empty()).then(|| median_u64(&echo_idle));

    let bin_bytes = fs::metadata(&relay)?.len();
    let bin_mb = bin_bytes as f64 / 1e6;
    let crates = runtime_crates();

    let added_p50 = r1.p50_us - d1.p50_us;
    let w32_ratio = r32.throughput / d32.throughput;
    let targets = [
        (
            "p50 added latency, window 1",
            format!("{added_p50:.1} µs"),
            format!("<= {TARGET_ADDED_P50_US} µs"),
            added_p50 <= TARGET_ADDED_P50_US,
        ),
        (
            "window-32 throughput vs direct",
            format!("{:.1} %", w32_ratio * 100.0),
            format!(">= {:.0} %", TARGET_W32_RATIO * 100.0),
            w32_ratio >= TARGET_W32_RATIO,
        ),
        (
            "relay idle RSS",
            relay_idle_kib.map_or("unavailable".into(), |k| {
                format!("{:.2} MiB", k as f64 / 1024.0)
            }),
            "<= 3 MiB".into(),
            relay_idle_kib.is_some_and(|k| k <= TARGET_IDLE_RSS_KIB),
        ),
        (
            "relay binary size",
            format!("{bin_mb:.3} MB"),
            "<= 2.5 MB".into(),
            bin_bytes <= TARGET_BINARY_BYTES,
        ),
    ];

    let mut warnings = Vec::new();
    for (cfg, round, r) in &rounds {
        if !r.clean_exit {
            warnings.push(format!(
                "{} round {round}: exited with {} after stdin EOF",
                cfg.name(),
                r.exit
            ));
        }
    }

    // ---- stdout ----
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "mcp-relay forward benchmark: {} round(s), window 1: {} req, window {WINDOW}: {} req, \
         warm-up {} req, {} CPU(s){}",
        s.rounds,
        s.n,
        s.m,
        s.warmup,
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
    println!("figures: median over rounds; latencies in µs, throughput in req/s");
    println!();
    let note1 = format!(
        "added {added_p50:.1} µs (<= {TARGET_ADDED_P50_US}) {}",
        pass(added_p50 <= TARGET_ADDED_P50_US)
    );
    let note32 = format!(
        "{:.1} % of direct (>= {:.0} %) {}",
        w32_ratio * 100.0,
        TARGET_W32_RATIO * 100.0,
        pass(w32_ratio >= TARGET_W32_RATIO)
    );
    let row = |metric, d: f64, r: f64, prec, note: &str| Row {
        metric,
        direct: d,
        relay: r,
        prec,
        note: note.to_string(),
    };
    let rows = [
        row("w1 p50 (µs)", d1.p50_us, r1.p50_us, 1, &note1),
        row("w1 p95 (µs)", d1.p95_us, r1.p95_us, 1, ""),
        row("w1 p99 (µs)", d1.p99_us, r1.p99_us, 1, ""),
        row("w1 throughput (req/s)", d1.throughput, r1.throughput, 0, ""),
        row("w32 p50 (µs)", d32.p50_us, r32.p50_us, 1, ""),
        row("w32 p95 (µs)", d32.p95_us, r32.p95_us, 1, ""),
        row("w32 p99 (µs)", d32.p99_us, r32.p99_us, 1, ""),
        row(
            "w32 throughput (req/s)",
            d32.throughput,
            r32.throughput,
            0,
            &note32,
        ),
    ];
    print!("{}", table(&rows));
    println!();
    println!("per round (w1 p50 µs / w32 req/s):");
    for (cfg, round, r) in &rounds {
        println!(
            "  round {round} {:<6} w1 p50 {:>8.1}  p99 {:>8.1}   w32 {:>9.0} req/s  p50 {:>8.1}  p99 {:>8.1}",
            cfg.name(),
            r.w1.p50_us,
            r.w1.p99_us,
            r.w32.throughput,
            r.w32.p50_us,
            r.w32.p99_us
        );
    }
    println!();
    let kib = |k: Option<u64>| {
        k.map_or("unavailable".to_string(), |k| {
            format!("{k} KiB ({:.2} MiB)", k as f64 / 1024.0)
        })
    };
    println!(
        "relay RSS idle (after init + {}s): {}   [echo_server alone: {}]",
        IDLE_WAIT.as_secs(),
        kib(relay_idle_kib),
        kib(echo_idle_kib)
    );
    println!("relay peak RSS (VmHWM after load): {}", kib(relay_peak_kib));
    println!(
        "relay binary: {bin_bytes} bytes ({bin_mb:.3} MB, {:.3} MiB)  {}",
        bin_bytes as f64 / (1024.0 * 1024.0),
        relay.display()
    );
    println!(
        "runtime crates (cargo tree -e normal, incl. mcp-relay): {}",
        crates.map_or("unavailable".to_string(), |n| n.to_string())
    );
    println!();
    println!("targets (informational):");
    for (name, value, limit, ok) in &targets {
        println!("  {:<4} {name:<32} {value:>14}  ({limit})", pass(*ok));
    }
    for w in &warnings {
        println!("warning: {w}");
    }

    // ---- JSON ----
    let unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let doc = json!({
        "benchmark": "mcp-relay forward",
        "unix_time": unix,
        "settings": {
            "window1_requests": s.n,
            "window32_requests": s.m,
            "window": WINDOW,
            "warmup_requests": s.warmup,
            "rounds": s.rounds,
            "quick": s.quick,
            "smoke": s.smoke,
            "text_bytes": TEXT.len(),
            "aggregate": "median over rounds",
        },
        "machine": {
            "cpus": cpus,
            "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|k| k.trim().to_string()),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "binaries": {
            "relay": relay.display().to_string(),
            "echo_server": echo.display().to_string(),
        },
        "direct": {"window1": d1.json(), "window32": d32.json()},
        "relay": {"window1": r1.json(), "window32": r32.json()},
        "relay_minus_direct": {
            "window1": {
                "p50_us": round2(r1.p50_us - d1.p50_us),
                "p95_us": round2(r1.p95_us - d1.p95_us),
                "p99_us": round2(r1.p99_us - d1.p99_us),
                "throughput_rps": (r1.throughput - d1.throughput).round(),
            },
            "window32": {
                "p50_us": round2(r32.p50_us - d32.p50_us),
                "p95_us": round2(r32.p95_us - d32.p95_us),
                "p99_us": round2(r32.p99_us - d32.p99_us),
                "throughput_rps": (r32.throughput - d32.throughput).round(),
            },
        },
        "relay_over_direct": {
            "window1": {
                "p50": round2(r1.p50_us / d1.p50_us),
                "p99": round2(r1.p99_us / d1.p99_us),
                "throughput": (r1.throughput / d1.throughput * 1000.0).round() / 1000.0,
            },
            "window32": {
                "p50": round2(r32.p50_us / d32.p50_us),
                "p99": round2(r32.p99_us / d32.p99_us),
                "throughput": (w32_ratio * 1000.0).round() / 1000.0,
            },
        },
        "added_latency_p50_window1_us": round2(added_p50),
        "rss": {
            "relay_idle_kib": relay_idle_kib,
            "relay_idle_kib_per_round": relay_idle,
            "relay_peak_kib": relay_peak_kib,
            "relay_peak_kib_per_round": relay_peak,
            "echo_server_idle_kib": echo_idle_kib,
        },
        "binary_size": {
            "bytes": bin_bytes,
            "mb": (bin_mb * 1000.0).round() / 1000.0,
            "mib": ((bin_bytes as f64 / 1048576.0) * 1000.0).round() / 1000.0,
        },
        "runtime_crates": crates.map_or(json!("unavailable"), |n| json!(n)),
        "rounds": rounds.iter().map(|(cfg, round, r)| json!({
            "round": round,
            "config": cfg.name(),
            "window1": r.w1.json(),
            "window32": r.w32.json(),
            "idle_rss_kib": r.idle_rss_kib,
            "peak_rss_kib": r.peak_rss_kib,
            "exit": r.exit,
        })).collect::<Vec<_>>(),
        "targets": targets.iter().map(|(name, value, limit, ok)| json!({
            "name": name, "value": value, "limit": limit, "pass": ok,
        })).collect::<Vec<_>>(),
        "warnings": warnings,
    });
    if s.smoke {
        println!("\nsmoke run: no JSON written (run via `cargo bench --bench forward`)");
        return Ok(());
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results");
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!("forward-{unix}.json"));
    fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
    println!("\nresults: {}", path.display());
    Ok(())
}

/// Runs DIRECT and RELAY alternately, `s.rounds` times each.
fn measure(
    s: &Settings,
    echo: &Path,
    relay: &Path,
    watchdog: &Arc<Watchdog>,
) -> Result<Vec<(Config, usize, RunResult)>> {
    let mut out = Vec::new();
    for round in 1..=s.rounds {
        // Alternate which goes first, so neither always runs on a cold/warm box.
        let order = if round % 2 == 1 {
            [Config::Direct, Config::Relay]
        } else {
            [Config::Relay, Config::Direct]
        };
        for cfg in order {
            eprintln!("bench: round {round}/{} {}", s.rounds, cfg.name());
            let r = run_config(cfg, s, echo, relay, watchdog)?;
            out.push((cfg, round, r));
        }
    }
    Ok(out)
}
