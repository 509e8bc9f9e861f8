//! Load generator and massif reader for `benches/memory.sh`.
//!
//! ```text
//! load steady   --addr IP:PORT [--clients 16] [--seconds 60] [--t0-ns NS]
//! load sessions --addr IP:PORT --count N [--connections 8] [--pid PID]
//!               [--before-ms 3000] [--after-ms 3000] [--ping-ms 20] [--t0-ns NS]
//! load massif   FILE --window FROM_MS TO_MS [--window FROM_MS TO_MS]
//!               [--limit-pct P] [--per N]
//! ```
//!
//! - `steady`: N clients, each with its own MCP session on its own
//!   keep-alive connection, send `tools/call` echo requests back to back for
//!   the given time, every reply checked. Prints `load_start_ms=`,
//!   `load_end_ms=` (ms since `--t0-ns`, a unix time in ns: when the relay
//!   was started, so the marks line up with massif's clock), the request
//!   count and a line per second.
//! - `sessions`: pings `GET /healthz` for `--before-ms`, opens N sessions
//!   (`initialize` + `notifications/initialized`; one first, then the rest
//!   over `--connections` keep-alive connections) and leaves them idle,
//!   pinging for `--after-ms`. Prints the phase marks, and with `--pid` the
//!   relay's VmRSS before and after (and per session).
//! - `massif`: reads a massif output file (`--time-unit=ms`) and prints the
//!   heap (`mem_heap_B`) in each window: snapshots, min, median, max. With
//!   two windows: the change of the median; with `--limit-pct` it exits 1
//!   when the heap grew more than that; with `--per N` it prints the change
//!   divided by N.
//!
//! Exit status: 0, 1 on a failed request or a limit exceeded, 2 on bad usage.

#[path = "../benches/common/http.rs"]
mod http;

use std::net::SocketAddr;
use std::process::exit;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Http, call_echo, get_text, make_text, open_session};

const USAGE: &str = "usage:
  load steady   --addr IP:PORT [--clients 16] [--seconds 60] [--t0-ns NS]
  load sessions --addr IP:PORT --count N [--connections 8] [--pid PID]
                [--before-ms 3000] [--after-ms 3000] [--ping-ms 20] [--t0-ns NS]
  load massif   FILE --window FROM_MS TO_MS [--window FROM_MS TO_MS] [--limit-pct P] [--per N]";

fn usage() -> ! {
    eprintln!("{USAGE}");
    exit(2)
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("load: {msg}");
    exit(1)
}

struct Args(Vec<String>);

impl Args {
    fn opt<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        let i = self.0.iter().position(|a| a == name)?;
        match self.0.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(v) => Some(v),
            None => usage(),
        }
    }

    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        self.opt(name).unwrap_or(default)
    }

    fn windows(&self) -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        for (i, a) in self.0.iter().enumerate() {
            if a == "--window" {
                let p = |k: usize| -> f64 {
                    self.0
                        .get(i + k)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| usage())
                };
                out.push((p(1), p(2)));
            }
        }
        out
    }
}

/// Milliseconds since `t0` (unix ns), or since this process started.
struct Clock {
    t0_ns: u128,
}

impl Clock {
    fn new(t0: Option<u128>) -> Clock {
        Clock {
            t0_ns: t0.unwrap_or_else(unix_ns),
        }
    }

    fn ms(&self) -> f64 {
        (unix_ns().saturating_sub(self.t0_ns)) as f64 / 1e6
    }
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn vm_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

fn main() {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() {
        usage();
    }
    let cmd = argv.remove(0);
    match cmd.as_str() {
        "steady" => steady(&Args(argv)),
        "sessions" => sessions(&Args(argv)),
        "massif" => {
            if argv.is_empty() {
                usage();
            }
            let file = argv.remove(0);
            massif(&file, &Args(argv));
        }
        _ => usage(),
    }
}

fn addr(args: &Args) -> SocketAddr {
    args.opt("--addr").unwrap_or_else(|| usage())
}

fn steady(args: &Args) {
    let addr = addr(args);
    let clients: usize = args.get("--clients", 16);
    let secs: f64 = args.get("--seconds", 60.0);
    let clock = Clock::new(args.opt("--t0-ns"));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicBool::new(false));
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        match open_session(addr, false, None) {
            Ok((http, sid, _)) => conns.push((http, sid)),
            Err(e) => fail(format!("opening a session: {e}")),
        }
    }
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    println!("load_start_ms={:.0}", clock.ms());
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, (mut http, sid))| {
            let (done, stop, failed) = (Arc::clone(&done), Arc::clone(&stop), Arc::clone(&failed));
            thread::spawn(move || {
                let (mut body, mut text) = (Vec::with_capacity(256), String::new());
                let mut id = 2;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    make_text(&mut text, i, id);
                    if let Err(e) = call_echo(&mut http, &sid, &mut body, id, &text) {
                        eprintln!("load: client {i}: {e}");
                        failed.store(true, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                    id += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut last = 0;
    let mut next = start + Duration::from_secs(1);
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(50));
        if Instant::now() >= next {
            let n = done.load(Ordering::Relaxed);
            println!(
                "t={:>3.0}s requests={n} rate={}/s",
                start.elapsed().as_secs_f64(),
                n - last
            );
            last = n;
            next += Duration::from_secs(1);
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let n = done.load(Ordering::Relaxed);
    println!("load_end_ms={:.0}", clock.ms());
    println!(
        "requests={n} seconds={:.1} rps={:.0}",
        start.elapsed().as_secs_f64(),
        n as f64 / start.elapsed().as_secs_f64()
    );
    if failed.load(Ordering::Relaxed) {
        fail("a request failed");
    }
}

/// `GET /healthz` every `ping` until `for_ms` passed.
fn ping_for(addr: SocketAddr, for_ms: u64, ping: Duration) {
    let until = Instant::now() + Duration::from_millis(for_ms);
    while Instant::now() < until {
        if let Err(e) = get_text(addr, "/healthz") {
            fail(format!("GET /healthz: {e}"));
        }
        thread::sleep(ping);
    }
}

fn sessions(args: &Args) {
    let addr = addr(args);
    let count: usize = args.opt("--count").unwrap_or_else(|| usage());
    let connections: usize = args.get("--connections", 8).max(1);
    let pid: Option<i32> = args.opt("--pid");
    let before: u64 = args.get("--before-ms", 3000);
    let after: u64 = args.get("--after-ms", 3000);
    let ping = Duration::from_millis(args.get("--ping-ms", 20));
    let clock = Clock::new(args.opt("--t0-ns"));

    println!("baseline_from_ms={:.0}", clock.ms());
    ping_for(addr, before, ping);
    let rss0 = pid.and_then(|p| vm_kib(p, "VmRSS"));
    println!("baseline_to_ms={:.0}", clock.ms());

    let t_open = Instant::now();
    // One session first: a cold pool (shared mode) starts its process.
    let mut first = match open_session(addr, false, None) {
        Ok((http, _, _)) => Some(http),
        Err(e) => fail(format!("session 1: {e}")),
    };
    let rest = count.saturating_sub(1);
    let retries = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..connections)
        .map(|c| {
            let n = rest / connections + usize::from(c < rest % connections);
            let retries = Arc::clone(&retries);
            // Connection 0 goes on with the first session's connection.
            let mut conn: Option<Http> = if c == 0 { first.take() } else { None };
            thread::spawn(move || {
                for k in 0..n {
                    match open_session(addr, false, conn.take()) {
                        Ok((http, _, r)) => {
                            retries.fetch_add(r, Ordering::Relaxed);
                            conn = Some(http);
                        }
                        Err(e) => fail(format!("connection {c}, session {}: {e}", k + 2)),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    println!(
        "opened={count} open_seconds={:.2} initialize_503_retries={}",
        t_open.elapsed().as_secs_f64(),
        retries.load(Ordering::Relaxed)
    );
    println!("idle_from_ms={:.0}", clock.ms());
    ping_for(addr, after, ping);
    println!("idle_to_ms={:.0}", clock.ms());
    if let (Some(p), Some(r0)) = (pid, rss0) {
        let r1 = vm_kib(p, "VmRSS").unwrap_or_else(|| fail("relay gone"));
        let hwm = vm_kib(p, "VmHWM").unwrap_or(0);
        println!("rss_before_kib={r0}");
        println!("rss_after_kib={r1}");
        println!("vmhwm_kib={hwm}");
        println!(
            "rss_per_session_bytes={:.0}",
            (r1 as f64 - r0 as f64) * 1024.0 / count as f64
        );
    }
}

struct Snapshot {
    time_ms: f64,
    heap: u64,
}

fn read_massif(file: &str) -> Vec<Snapshot> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| fail(format!("{file}: {e}")));
    if !text.contains("time_unit: ms") {
        fail(format!("{file}: not a massif file with --time-unit=ms"));
    }
    let mut out = Vec::new();
    let mut time = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("time=") {
            time = v.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("mem_heap_B=")
            && let (Some(t), Ok(h)) = (time.take(), v.trim().parse::<u64>())
        {
            out.push(Snapshot {
                time_ms: t,
                heap: h,
            });
        }
    }
    out
}

struct Window {
    n: usize,
    min: u64,
    median: f64,
    max: u64,
}

fn window(snaps: &[Snapshot], from: f64, to: f64) -> Option<Window> {
    let mut v: Vec<u64> = snaps
        .iter()
        .filter(|s| s.time_ms >= from && s.time_ms <= to)
        .map(|s| s.heap)
        .collect();
    if v.is_empty() {
        // No allocation in the window: the heap is what the last snapshot
        // before it says.
        let last = snaps.iter().rev().find(|s| s.time_ms < from)?;
        v.push(last.heap);
    }
    v.sort_unstable();
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0
    };
    Some(Window {
        n,
        min: v[0],
        median,
        max: v[n - 1],
    })
}

fn massif(file: &str, args: &Args) {
    let snaps = read_massif(file);
    let wins = args.windows();
    if wins.is_empty() {
        usage();
    }
    println!(
        "massif: {} snapshots, {:.1} s to {:.1} s",
        snaps.len(),
        snaps.first().map_or(0.0, |s| s.time_ms / 1000.0),
        snaps.last().map_or(0.0, |s| s.time_ms / 1000.0)
    );
    let mut got = Vec::new();
    for (k, &(from, to)) in wins.iter().enumerate() {
        let w = window(&snaps, from, to)
            .unwrap_or_else(|| fail(format!("no snapshot at or before {from} ms")));
        println!(
            "window{} from_ms={from:.0} to_ms={to:.0} snapshots={} heap_min_B={} heap_median_B={:.0} heap_max_B={}",
            k + 1,
            w.n,
            w.min,
            w.median,
            w.max
        );
        got.push(w);
    }
    if let [a, b] = got.as_slice() {
        let pct = |x: f64, y: f64| (y - x) / x * 100.0;
        let growth = pct(a.median, b.median);
        println!(
            "heap_change_median_B={:.0} heap_change_median_pct={growth:.3} heap_change_max_pct={:.3} heap_change_min_pct={:.3}",
            b.median - a.median,
            pct(a.max as f64, b.max as f64),
            pct(a.min as f64, b.min as f64)
        );
        if let Some(per) = args.opt::<f64>("--per") {
            println!("heap_per_unit_B={:.0}", (b.median - a.median) / per);
        }
        if let Some(limit) = args.opt::<f64>("--limit-pct") {
            if growth > limit {
                println!("FAIL: the heap grew {growth:.3}% (limit {limit}%)");
                exit(1);
            }
            println!("PASS: heap growth {growth:.3}% (limit {limit}%)");
        }
    }
}
