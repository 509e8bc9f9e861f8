//! Code shared by the benchmark harnesses (`forward`, `reverse`, `suite`):
//! settings from the environment, locating and building the binaries, the
//! stall watchdog, /proc readings, statistics, the MCP clients (stdio and
//! HTTP), the process wrapper for servers that print a listening address, and
//! the callgrind run of the era comparison (`callgrind`).
//!
//! Each bench uses a subset, hence `dead_code` is allowed here.

#![allow(dead_code)]

pub mod callgrind;
pub mod http;

use std::collections::VecDeque;
use std::error::Error;
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Value, json};

use self::http::{Http, check_call, check_initialize, initialize_body, snippet};

pub type BoxError = Box<dyn Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, BoxError>;

/// No reply at all for this long means the run is broken.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a server may take to print its listening address.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process may take to exit (stdin EOF, or SIGTERM).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Server stderr lines kept for error reports.
pub const LOG_TAIL: usize = 40;

pub fn err(msg: impl Into<String>) -> BoxError {
    msg.into().into()
}

// ---- settings ---------------------------------------------------------------

pub fn env_usize(name: &str) -> Result<Option<usize>> {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(err(format!("{name}={v:?}: expected a positive integer"))),
        },
        Err(_) => Ok(None),
    }
}

pub fn env_secs(name: &str) -> Result<Option<f64>> {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 && x <= 3600.0 => Ok(Some(x)),
            _ => Err(err(format!(
                "{name}={v:?}: expected seconds (0 < s <= 3600)"
            ))),
        },
        Err(_) => Ok(None),
    }
}

/// Run as `cargo test --benches` would (no `--bench` argument).
pub fn smoke_run() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

pub fn quick_run() -> bool {
    std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1")
}

// ---- locating the binaries --------------------------------------------------

pub fn relay_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcp-relay"))
}

fn modified(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// `target/<profile>/examples/<name>` for each name, next to this bench's
/// `deps/`; the missing or stale ones (older than their source) are built
/// with one `cargo build --profile bench --example A --example B ...`
/// (`cargo bench` does not build examples).
pub fn example_binaries(names: &[&str]) -> Result<Vec<PathBuf>> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| err(format!("unexpected bench location {}", exe.display())))?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths: Vec<Option<PathBuf>> = names
        .iter()
        .map(|name| {
            let candidate = profile_dir.join("examples").join(name);
            let source = manifest.join(format!("examples/{name}.rs"));
            match (modified(&candidate), modified(&source)) {
                (Some(bin), Some(src)) if bin >= src => Some(candidate),
                _ => None,
            }
        })
        .collect();
    let stale: Vec<&str> = names
        .iter()
        .zip(&paths)
        .filter(|(_, p)| p.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !stale.is_empty() {
        // The bench profile (release settings, same target dir) shares the
        // dependencies `cargo bench` just built; `--release` would rebuild
        // them under the release profile.
        let mut args = vec!["build", "--profile", "bench"];
        for n in &stale {
            args.extend(["--example", n]);
        }
        args.push("--message-format=json-render-diagnostics");
        eprintln!(
            "bench: building {} (cargo {})",
            stale.join(", "),
            args.join(" ")
        );
        let out = Command::new(env!("CARGO"))
            .args(&args)
            .current_dir(manifest)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            return Err(err(format!(
                "building {} failed ({})",
                stale.join(", "),
                out.status
            )));
        }
        // The artifact messages name the executables wherever the target is.
        for line in out.stdout.split(|&b| b == b'\n') {
            let Ok(msg) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if msg["reason"] != "compiler-artifact" {
                continue;
            }
            for (name, path) in names.iter().zip(paths.iter_mut()) {
                if path.is_none()
                    && msg["target"]["name"] == *name
                    && let Some(exe) = msg["executable"].as_str()
                {
                    *path = Some(PathBuf::from(exe));
                }
            }
        }
    }
    names
        .iter()
        .zip(paths)
        .map(|(name, p)| {
            p.or_else(|| {
                let c = profile_dir.join("examples").join(name);
                c.exists().then_some(c)
            })
            .ok_or_else(|| err(format!("cargo built {name} but did not say where")))
        })
        .collect()
}

pub fn echo_server_binary() -> Result<PathBuf> {
    Ok(example_binaries(&["echo_server"])?.remove(0))
}

// ---- watchdog ---------------------------------------------------------------

/// Kills every registered child when no reply arrives for `STALL_TIMEOUT`,
/// so a blocked read in the harness turns into an EOF and a clean error.
pub struct Watchdog {
    progress: AtomicU64,
    pids: Mutex<Vec<i32>>,
    pub tripped: AtomicBool,
    pub stop: AtomicBool,
}

impl Watchdog {
    pub fn start() -> (Arc<Watchdog>, thread::JoinHandle<()>) {
        let w = Arc::new(Watchdog {
            progress: AtomicU64::new(0),
            pids: Mutex::new(Vec::new()),
            tripped: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let w2 = Arc::clone(&w);
        let handle = thread::spawn(move || w2.watch());
        (w, handle)
    }

    fn watch(&self) {
        let mut last = self.progress.load(Ordering::Relaxed);
        let mut since = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(200));
            let now = self.progress.load(Ordering::Relaxed);
            let pids = self.pids.lock().map(|p| p.clone()).unwrap_or_default();
            if now != last || pids.is_empty() {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= STALL_TIMEOUT {
                eprintln!(
                    "bench: no reply for {}s; killing children {pids:?}",
                    STALL_TIMEOUT.as_secs()
                );
                self.tripped.store(true, Ordering::Relaxed);
                for pid in pids {
                    // SAFETY: plain kill(2) on a child we have not reaped yet.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                since = Instant::now();
            }
        }
    }

    pub fn tick(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    pub fn watch_pid(&self, pid: i32) {
        if let Ok(mut p) = self.pids.lock() {
            p.push(pid);
        }
    }

    pub fn unwatch_pid(&self, pid: i32) {
        if let Ok(mut p) = self.pids.lock() {
            p.retain(|&x| x != pid);
        }
    }

    pub fn note(&self) -> &'static str {
        if self.tripped.load(Ordering::Relaxed) {
            " (killed by the stall watchdog)"
        } else {
            ""
        }
    }
}

// ---- /proc --------------------------------------------------------------------

pub fn proc_status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Fields of /proc/<pid>/stat after "(comm)", which may hold spaces; index
/// 0 is field 3 (state).
pub fn proc_stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

pub fn parent_of(pid: i32) -> Option<i32> {
    proc_stat_fields(pid)?.get(1)?.parse().ok()
}

/// utime + stime (fields 14 and 15), in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let f = proc_stat_fields(pid)?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Time on CPU in ns (first field of /proc/<pid>/schedstat): finer than the
/// tick counts. The relay is single-threaded, so its main thread is the
/// whole process.
pub fn cpu_ns_schedstat(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

pub fn children_of(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn loadavg() -> Option<String> {
    let s = fs::read_to_string("/proc/loadavg").ok()?;
    Some(s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

pub fn kernel() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|k| k.trim().to_string())
}

/// Makes this process the reaper of its descendants' orphans (a relay's
/// servers when the relay dies), so they can be reaped too.
pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only changes who reaps orphans.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Reaps any zombie children left over (ours only: waitpid on our own pid
/// space), once every `Child` handle is gone.
pub fn reap_leftovers() {
    loop {
        // SAFETY: waitpid(2) with WNOHANG on our own children.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if r <= 0 {
            break;
        }
    }
}

/// Kills and reaps `pid` if it is our child (an adopted orphan) — only then.
pub fn kill_if_ours(pid: i32) {
    if parent_of(pid) == Some(std::process::id() as i32) {
        // SAFETY: kill(2) and waitpid(2) on our own (adopted) child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}

// ---- statistics -------------------------------------------------------------------

#[derive(Clone, Copy, Default, Debug)]
pub struct Stats {
    pub requests: u64,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    pub throughput: f64,
}

impl Stats {
    pub fn new(mut lat_ns: Vec<u64>, elapsed: Duration) -> Stats {
        lat_ns.sort_unstable();
        let n = lat_ns.len();
        if n == 0 {
            return Stats::default();
        }
        // Nearest-rank percentile.
        let pct = |q: f64| {
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            lat_ns[rank - 1] as f64 / 1000.0
        };
        Stats {
            requests: n as u64,
            p50_us: pct(0.50),
            p95_us: pct(0.95),
            p99_us: pct(0.99),
            max_us: lat_ns[n - 1] as f64 / 1000.0,
            mean_us: lat_ns.iter().sum::<u64>() as f64 / n as f64 / 1000.0,
            throughput: n as f64 / elapsed.as_secs_f64(),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "requests": self.requests,
            "p50_us": round2(self.p50_us),
            "p95_us": round2(self.p95_us),
            "p99_us": round2(self.p99_us),
            "max_us": round2(self.max_us),
            "mean_us": round2(self.mean_us),
            "throughput_rps": self.throughput.round(),
        })
    }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn median_u64(v: &[u64]) -> u64 {
    median(v.iter().map(|&x| x as f64).collect()).round() as u64
}

/// Per-metric median across rounds.
pub fn median_stats(all: &[Stats]) -> Stats {
    let m = |f: fn(&Stats) -> f64| median(all.iter().map(f).collect());
    Stats {
        requests: median(all.iter().map(|s| s.requests as f64).collect()).round() as u64,
        p50_us: m(|s| s.p50_us),
        p95_us: m(|s| s.p95_us),
        p99_us: m(|s| s.p99_us),
        max_us: m(|s| s.max_us),
        mean_us: m(|s| s.mean_us),
        throughput: m(|s| s.throughput),
    }
}

pub fn median_opt(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = v.flatten().collect();
    (!v.is_empty()).then(|| median(v))
}

pub fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

// ---- size and crates ------------------------------------------------------------------

/// Crates in the runtime dependency tree (`cargo tree -e normal`, mcp-relay
/// included), each counted once.
pub fn runtime_crates() -> Option<usize> {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-e", "normal", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end().trim_end_matches(" (*)"))
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort_unstable();
    lines.dedup();
    (!lines.is_empty()).then_some(lines.len())
}

// ---- reply parsing ------------------------------------------------------------

/// Just enough of a server message: its id and which kind it is.
#[derive(Default)]
pub struct Head {
    pub id: Option<u64>,
    pub has_result: bool,
    pub has_error: bool,
    pub has_method: bool,
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Head, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Head;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON-RPC object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Head, A::Error> {
                let mut h = Head::default();
                while let Some(key) = map.next_key::<&'de str>()? {
                    match key {
                        "id" => h.id = map.next_value::<Option<u64>>()?,
                        k => {
                            map.next_value::<IgnoredAny>()?;
                            match k {
                                "result" => h.has_result = true,
                                "error" => h.has_error = true,
                                "method" => h.has_method = true,
                                _ => {}
                            }
                        }
                    }
                }
                Ok(h)
            }
        }
        d.deserialize_map(V)
    }
}

// ---- MCP clients ------------------------------------------------------------------

/// One client's side of an MCP session.
pub trait Rpc {
    /// `tools/call` echo; returns the round trip in ns (verification excluded).
    fn call(&mut self, id: u64, text: &str) -> Result<u64>;
    /// Ends the session cleanly.
    fn finish(self: Box<Self>) -> Result<()>;
    /// `initialize` attempts answered 503 and retried.
    fn init_503s(&self) -> u64 {
        0
    }
}

/// A stdio MCP server spawned by the harness (DIRECT), one request at a time.
pub struct StdioClient {
    child: Child,
    pid: i32,
    reaped: bool,
    stdin: Option<BufWriter<ChildStdin>>,
    stdout: BufReader<ChildStdout>,
    line: Vec<u8>,
    body: Vec<u8>,
    watchdog: Arc<Watchdog>,
}

impl StdioClient {
    pub fn spawn(echo: &Path, watchdog: &Arc<Watchdog>) -> Result<StdioClient> {
        let mut child = Command::new(echo)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| err(format!("spawning echo_server: {e}")))?;
        let pid = child.id() as i32;
        watchdog.watch_pid(pid);
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            unreachable!("both pipes requested")
        };
        let mut c = StdioClient {
            child,
            pid,
            reaped: false,
            stdin: Some(BufWriter::new(stdin)),
            stdout: BufReader::new(stdout),
            line: Vec::with_capacity(512),
            body: Vec::with_capacity(256),
            watchdog: Arc::clone(watchdog),
        };
        let body = initialize_body(1);
        c.send(&body)?;
        let v = c.read_reply()?;
        check_initialize(&v, 1).map_err(|e| c.broken(e))?;
        c.send(http::INITIALIZED)?;
        Ok(c)
    }

    fn broken(&self, what: impl fmt::Display) -> BoxError {
        err(format!("direct: {what}{}", self.watchdog.note()))
    }

    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let out = self.stdin.as_mut().expect("stdin open until finish()");
        let res = out
            .write_all(msg)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        res.map_err(|e| self.broken(format!("writing to echo_server: {e}")))
    }

    /// Reads lines until a response (skipping server notifications/requests).
    fn read_reply(&mut self) -> Result<Value> {
        loop {
            self.line.clear();
            match self.stdout.read_until(b'\n', &mut self.line) {
                Ok(0) => return Err(self.broken("EOF on stdout: reply missing")),
                Ok(_) => {}
                Err(e) => return Err(self.broken(format!("reading stdout: {e}"))),
            }
            let v: Value = serde_json::from_slice(&self.line).map_err(|e| {
                self.broken(format!("unparsable line ({e}): {}", snippet(&self.line)))
            })?;
            if v.get("method").is_none() {
                return Ok(v);
            }
        }
    }
}

impl Rpc for StdioClient {
    fn call(&mut self, id: u64, text: &str) -> Result<u64> {
        let mut body = std::mem::take(&mut self.body);
        http::call_body(&mut body, id, text);
        let t0 = Instant::now();
        let sent = self.send(&body);
        self.body = body;
        sent?;
        let v = self.read_reply()?;
        let ns = t0.elapsed().as_nanos() as u64;
        check_call(&v, id, text).map_err(|e| self.broken(e))?;
        Ok(ns)
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
                    Err(self.broken(format!("echo_server exited with {st}")))
                };
            }
            if Instant::now() >= deadline {
                // Drop kills and reaps.
                return Err(self.broken("echo_server did not exit after stdin EOF"));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for StdioClient {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.watchdog.unwatch_pid(self.pid);
    }
}

/// An MCP session over HTTP (the relay's front end or `http_echo_server`).
pub struct HttpClient {
    http: Http,
    /// `None`: a 2026-07-28 client (stateless requests, no session).
    session: Option<String>,
    init_503s: u64,
    body: Vec<u8>,
    what: String,
    watchdog: Arc<Watchdog>,
}

impl HttpClient {
    /// Connects, then `initialize` and `notifications/initialized`.
    pub fn open(
        addr: SocketAddr,
        close_each: bool,
        what: String,
        watchdog: &Arc<Watchdog>,
    ) -> Result<HttpClient> {
        let (http, session, init_503s) = http::open_session(addr, close_each, None)
            .map_err(|e| err(format!("{what}: {e}{}", watchdog.note())))?;
        watchdog.tick();
        Ok(HttpClient {
            http,
            session: Some(session),
            init_503s,
            body: Vec::with_capacity(256),
            what,
            watchdog: Arc::clone(watchdog),
        })
    }
}

impl HttpClient {
    /// A 2026-07-28 client: connects; no `initialize`, no session.
    pub fn open_modern(
        addr: SocketAddr,
        close_each: bool,
        what: String,
        watchdog: &Arc<Watchdog>,
    ) -> Result<HttpClient> {
        let http = Http::new(addr, close_each)
            .map_err(|e| err(format!("{what}: connect: {e}{}", watchdog.note())))?;
        watchdog.tick();
        Ok(HttpClient {
            http,
            session: None,
            init_503s: 0,
            body: Vec::with_capacity(512),
            what,
            watchdog: Arc::clone(watchdog),
        })
    }
}

impl Rpc for HttpClient {
    fn call(&mut self, id: u64, text: &str) -> Result<u64> {
        match &self.session {
            Some(sid) => http::call_echo(&mut self.http, sid, &mut self.body, id, text),
            None => http::call_echo_modern(&mut self.http, &mut self.body, id, text),
        }
        .map_err(|e| err(format!("{}: {e}{}", self.what, self.watchdog.note())))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(()) // dropping the stream closes the connection
    }

    fn init_503s(&self) -> u64 {
        self.init_503s
    }
}

/// Sums of `family{label="value"} N` samples, by label value.
pub fn prom_by_label(text: &str, family: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(family).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let label = labels
            .split_once('"')
            .and_then(|(_, r)| r.split_once('"'))
            .map_or(labels, |(v, _)| v)
            .to_string();
        match out.iter_mut().find(|(l, _)| *l == label) {
            Some((_, sum)) => *sum += v,
            None => out.push((label, v)),
        }
    }
    out
}

// ---- a server process that listens ----------------------------------------------

#[derive(Default)]
pub struct LogTail {
    lines: VecDeque<String>,
    /// WARN/ERROR lines (first few).
    problems: Vec<String>,
}

impl LogTail {
    /// The last lines, joined for an error report.
    pub fn tail(&self) -> String {
        self.lines.iter().cloned().collect::<Vec<_>>().join("\n  ")
    }
}

/// Drains a child's stderr into `log` (so it never blocks on a full pipe)
/// and sends every address of a "listening on http://ADDR/..." line to
/// `tx`. Detached: ends at EOF.
pub fn drain_stderr(
    stderr: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<LogTail>>,
    tx: Option<mpsc::Sender<SocketAddr>>,
) {
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &tx
                && let Some((_, rest)) = line.split_once("listening on http://")
                && let Some(addr) = rest.split('/').next()
                && let Ok(addr) = addr.trim().parse::<SocketAddr>()
            {
                let _ = tx.send(addr);
            }
            if let Ok(mut t) = log.lock() {
                if (line.starts_with("[WARN") || line.starts_with("[ERROR"))
                    && t.problems.len() < 10
                {
                    t.problems.push(line.clone());
                }
                if t.lines.len() == LOG_TAIL {
                    t.lines.pop_front();
                }
                t.lines.push_back(line);
            }
        }
    });
}

/// A process that serves HTTP (`mcp-relay reverse`, `http_echo_server`):
/// started, its address read from its "listening on" log line, stopped with
/// SIGTERM. Its children (a relay's servers) are reaped too.
pub struct Relay {
    child: Child,
    pub pid: i32,
    pub addr: SocketAddr,
    what: String,
    /// Its child processes, as last seen; killed on a dirty exit.
    pub servers: Vec<i32>,
    log: Arc<Mutex<LogTail>>,
    reaped: bool,
    watchdog: Arc<Watchdog>,
}

impl Relay {
    /// Spawns `cmd` (stdin and stdout null, stderr drained) and waits for
    /// its listening address.
    pub fn start(mut cmd: Command, what: &str, watchdog: &Arc<Watchdog>) -> Result<Relay> {
        let mut child = cmd
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("spawning {what}: {e}")))?;
        let pid = child.id() as i32;
        watchdog.watch_pid(pid);
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(LogTail::default()));
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        drain_stderr(stderr, Arc::clone(&log), Some(tx));
        let mut r = Relay {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            what: what.to_string(),
            servers: Vec::new(),
            log,
            reaped: false,
            watchdog: Arc::clone(watchdog),
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => r.addr = addr,
            Err(_) => {
                let st = r.child.try_wait().ok().flatten();
                return Err(r.broken(format!(
                    "no \"listening on\" line within {}s (exit status: {st:?})",
                    START_TIMEOUT.as_secs()
                )));
            }
        }
        Ok(r)
    }

    pub fn log_tail(&self) -> String {
        self.log.lock().map(|t| t.tail()).unwrap_or_default()
    }

    pub fn problems(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|t| t.problems.clone())
            .unwrap_or_default()
    }

    pub fn broken(&self, what: impl fmt::Display) -> BoxError {
        err(format!(
            "{} (pid {}): {what}{}\n  log tail:\n  {}",
            self.what,
            self.pid,
            self.watchdog.note(),
            self.log_tail()
        ))
    }

    pub fn note_servers(&mut self) {
        for pid in children_of(self.pid) {
            if !self.servers.contains(&pid) {
                self.servers.push(pid);
            }
        }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then waits for the process to close its servers and exit.
    pub fn shutdown(&mut self) -> Result<ExitStatus> {
        // SAFETY: kill(2) on our unreaped child.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(st) = self.child.try_wait()? {
                self.reaped = true;
                self.watchdog.unwatch_pid(self.pid);
                self.reap_servers();
                return Ok(st);
            }
            if Instant::now() >= deadline {
                // Drop kills and reaps.
                return Err(self.broken(format!(
                    "did not exit within {}s of SIGTERM",
                    EXIT_TIMEOUT.as_secs()
                )));
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Kills and reaps the servers that were re-parented to us (we are a
    /// child subreaper) — only those, never anything else.
    fn reap_servers(&mut self) {
        for &pid in &self.servers {
            kill_if_ours(pid);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if !self.reaped {
            self.note_servers();
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.watchdog.unwatch_pid(self.pid);
        }
        self.reap_servers();
    }
}
