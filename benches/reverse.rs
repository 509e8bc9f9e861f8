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

use std::collections::VecDeque;
use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// The last 16 bytes of every tool argument; the first 16 are the client
/// index and request id in hex, so a reply routed to the wrong session or
/// request cannot pass the check.
const TEXT_TAIL: &str = "0123456789abcdef";
const TEXT_BYTES: usize = 32;
const PROTOCOL_VERSION: &str = "2025-06-18";
const MCP_PATH: &str = "/mcp";
/// No reply at all for this long means the run is broken.
const STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Socket read/write timeout: a backstop behind the watchdog.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the relay may take to print its listening address.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process may take to exit (stdin EOF, or SIGTERM for the relay).
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Relay stderr lines kept for error reports.
const LOG_TAIL: usize = 40;
/// `initialize` answered 503 (the relay's pool queue is full, e.g. many
/// sessions opening on a cold shared pool): retried this often, this far apart.
const INIT_RETRIES: u32 = 200;
const INIT_RETRY_DELAY: Duration = Duration::from_millis(10);

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

fn err(msg: impl Into<String>) -> Box<dyn Error + Send + Sync> {
    msg.into().into()
}

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

fn env_usize(name: &str) -> Result<Option<usize>> {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(err(format!("{name}={v:?}: expected a positive integer"))),
        },
        Err(_) => Ok(None),
    }
}

fn env_secs(name: &str) -> Result<Option<f64>> {
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

// ---- locating the binaries --------------------------------------------------

fn relay_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcp-relay"))
}

fn modified(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// `target/<profile>/examples/echo_server`, next to this bench's `deps/`;
/// built with `cargo build --release --example echo_server` when missing or
/// older than its source (`cargo bench --bench reverse` does not build it).
fn echo_server_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| err(format!("unexpected bench location {}", exe.display())))?;
    let candidate = profile_dir.join("examples").join("echo_server");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/echo_server.rs");
    if let (Some(bin), Some(src)) = (modified(&candidate), modified(&source))
        && bin >= src
    {
        return Ok(candidate);
    }
    eprintln!("bench: building echo_server (cargo build --release --example echo_server)");
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--example",
            "echo_server",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(err(format!("building echo_server failed ({})", out.status)));
    }
    // The artifact message names the executable wherever the target dir is.
    for line in out.stdout.split(|&b| b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "echo_server"
            && let Some(path) = msg["executable"].as_str()
        {
            return Ok(PathBuf::from(path));
        }
    }
    if candidate.exists() {
        return Ok(candidate);
    }
    Err(err("cargo built echo_server but did not say where"))
}

// ---- watchdog ---------------------------------------------------------------

/// Kills every registered child when no reply arrives for `STALL_TIMEOUT`,
/// so a blocked read in the harness turns into an EOF and a clean error.
struct Watchdog {
    progress: AtomicU64,
    pids: Mutex<Vec<i32>>,
    tripped: AtomicBool,
    stop: AtomicBool,
}

impl Watchdog {
    fn start() -> (Arc<Watchdog>, thread::JoinHandle<()>) {
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

    fn tick(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    fn watch_pid(&self, pid: i32) {
        if let Ok(mut p) = self.pids.lock() {
            p.push(pid);
        }
    }

    fn unwatch_pid(&self, pid: i32) {
        if let Ok(mut p) = self.pids.lock() {
            p.retain(|&x| x != pid);
        }
    }

    fn note(&self) -> &'static str {
        if self.tripped.load(Ordering::Relaxed) {
            " (killed by the stall watchdog)"
        } else {
            ""
        }
    }
}

// ---- /proc --------------------------------------------------------------------

fn proc_status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Fields of /proc/<pid>/stat after "(comm)", which may hold spaces; index
/// 0 is field 3 (state).
fn proc_stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn parent_of(pid: i32) -> Option<i32> {
    proc_stat_fields(pid)?.get(1)?.parse().ok()
}

/// utime + stime (fields 14 and 15), in clock ticks.
fn cpu_ticks(pid: i32) -> Option<u64> {
    let f = proc_stat_fields(pid)?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Time on CPU in ns (first field of /proc/<pid>/schedstat): a finer cross
/// check of the tick counts. The relay is single-threaded, so its main
/// thread is the whole process.
fn cpu_ns_schedstat(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn children_of(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn loadavg() -> Option<String> {
    let s = fs::read_to_string("/proc/loadavg").ok()?;
    Some(s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

// ---- requests and replies ------------------------------------------------------

/// The tool argument for request `id` of client `client`: 32 bytes.
fn make_text(out: &mut String, client: usize, id: u64) {
    out.clear();
    let _ = write!(out, "{:02x}{:014x}{TEXT_TAIL}", client & 0xff, id);
    debug_assert_eq!(out.len(), TEXT_BYTES);
}

fn call_body(out: &mut Vec<u8>, id: u64, text: &str) {
    out.clear();
    let _ = write!(
        out,
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\
         \"params\":{{\"name\":\"echo\",\"arguments\":{{\"text\":\"{text}\"}}}}}}"
    );
}

fn initialize_body(id: u64) -> Vec<u8> {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"initialize\",\"params\":\
         {{\"protocolVersion\":\"{PROTOCOL_VERSION}\",\"capabilities\":{{}},\
         \"clientInfo\":{{\"name\":\"mcp-relay-bench\",\"version\":\"0.1.0\"}}}}}}"
    )
    .into_bytes()
}

const INITIALIZED: &[u8] = b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}";

fn snippet(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(300)])
        .trim_end()
        .to_string()
}

/// Checks a `tools/call` reply: right id, no error, the text echoed back.
fn check_call(v: &Value, id: u64, text: &str) -> std::result::Result<(), String> {
    if v.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(format!("expected reply {id}, got {v}"));
    }
    if v.get("error").is_some() {
        return Err(format!("error reply: {v}"));
    }
    match v.pointer("/result/content/0/text").and_then(Value::as_str) {
        Some(t) if t == text => Ok(()),
        _ => Err(format!("reply {id} does not echo {text:?}: {v}")),
    }
}

fn check_initialize(v: &Value, id: u64) -> std::result::Result<(), String> {
    if v.get("id").and_then(Value::as_u64) != Some(id)
        || v.pointer("/result/protocolVersion").is_none()
    {
        return Err(format!("bad initialize reply: {v}"));
    }
    Ok(())
}

/// One client's side of an MCP session.
trait Rpc {
    /// `tools/call` echo; returns the round trip in ns (verification excluded).
    fn call(&mut self, id: u64, text: &str) -> Result<u64>;
    /// Ends the session cleanly.
    fn finish(self: Box<Self>) -> Result<()>;
    /// `initialize` attempts answered 503 and retried.
    fn init_503s(&self) -> u64 {
        0
    }
}

// ---- DIRECT: stdio client ------------------------------------------------------

struct StdioClient {
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
    fn spawn(echo: &Path, watchdog: &Arc<Watchdog>) -> Result<StdioClient> {
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
        c.send(INITIALIZED)?;
        Ok(c)
    }

    fn broken(&self, what: impl std::fmt::Display) -> Box<dyn Error + Send + Sync> {
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
        call_body(&mut body, id, text);
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

// ---- RELAY: a minimal HTTP/1.1 client ----------------------------------------------

/// One parsed response; the body stays in the connection's buffer.
struct Resp {
    status: u16,
    json: bool,
    session: Option<String>,
    body: Range<usize>,
}

/// A connection to the relay. With `close_each`, every request goes on a
/// fresh connection with `Connection: close` (then read to EOF and dropped).
struct Http {
    addr: SocketAddr,
    host: String,
    close_each: bool,
    stream: Option<TcpStream>,
    req: Vec<u8>,
    buf: Vec<u8>,
    filled: usize,
    /// Bytes of the previous response, dropped at the next read.
    consumed: usize,
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

impl Http {
    fn new(addr: SocketAddr, close_each: bool) -> std::io::Result<Http> {
        let stream = if close_each {
            None
        } else {
            Some(connect(addr)?)
        };
        Ok(Http {
            addr,
            host: addr.to_string(),
            close_each,
            stream,
            req: Vec::with_capacity(512),
            buf: vec![0; 16 * 1024],
            filled: 0,
            consumed: 0,
        })
    }

    fn body(&self, r: &Resp) -> &[u8] {
        &self.buf[r.body.clone()]
    }

    /// Sends one request (one write) and reads its response; returns it with
    /// the round trip in ns, `connect` included when `close_each`.
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        session: Option<&str>,
        body: &[u8],
    ) -> std::result::Result<(Resp, u64), String> {
        self.req.clear();
        let _ = write!(
            self.req,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.host
        );
        if method == "POST" {
            self.req.extend_from_slice(
                b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n",
            );
        }
        if let Some(sid) = session {
            let _ = write!(
                self.req,
                "mcp-session-id: {sid}\r\nmcp-protocol-version: {PROTOCOL_VERSION}\r\n"
            );
        }
        if self.close_each {
            self.req.extend_from_slice(b"Connection: close\r\n");
        }
        let _ = write!(self.req, "Content-Length: {}\r\n\r\n", body.len());
        self.req.extend_from_slice(body);

        let t0 = Instant::now();
        if self.close_each {
            self.stream = Some(connect(self.addr).map_err(|e| format!("connect: {e}"))?);
            self.filled = 0;
            self.consumed = 0;
        }
        let stream = self.stream.as_mut().ok_or("no connection")?;
        stream
            .write_all(&self.req)
            .map_err(|e| format!("writing request: {e}"))?;
        let resp = self.read_response()?;
        let ns = t0.elapsed().as_nanos() as u64;
        if self.close_each {
            // Let the relay close first (its TIME_WAIT, not our ports), then
            // drop our end. Not part of the latency; part of the throughput.
            let mut stream = self.stream.take().ok_or("no connection")?;
            if self.filled != self.consumed {
                return Err("bytes after a Connection: close response".into());
            }
            let mut scratch = [0u8; 256];
            loop {
                match stream.read(&mut scratch) {
                    Ok(0) => break,
                    Ok(_) => return Err("bytes after a Connection: close response".into()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("waiting for the relay to close: {e}")),
                }
            }
        }
        Ok((resp, ns))
    }

    fn read_more(&mut self) -> std::result::Result<(), String> {
        if self.filled == self.buf.len() {
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
        let stream = self.stream.as_mut().ok_or("no connection")?;
        loop {
            match stream.read(&mut self.buf[self.filled..]) {
                Ok(0) => return Err("EOF: the relay closed the connection".into()),
                Ok(n) => {
                    self.filled += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading response: {e}")),
            }
        }
    }

    fn read_response(&mut self) -> std::result::Result<Resp, String> {
        if self.consumed > 0 {
            self.buf.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
        // Head.
        let (head_len, status, json, session, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            match r.parse(&self.buf[..self.filled]) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = r.code.unwrap_or(0);
                    let mut json = false;
                    let mut session = None;
                    let mut len = None;
                    for h in r.headers.iter() {
                        let name = h.name;
                        if name.eq_ignore_ascii_case("content-length") {
                            len = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<usize>().ok());
                            if len.is_none() {
                                return Err(format!("bad Content-Length {:?}", snippet(h.value)));
                            }
                        } else if name.eq_ignore_ascii_case("content-type") {
                            json = h.value.starts_with(b"application/json");
                        } else if name.eq_ignore_ascii_case("mcp-session-id") {
                            session = Some(String::from_utf8_lossy(h.value).into_owned());
                        } else if name.eq_ignore_ascii_case("transfer-encoding") {
                            return Err(format!(
                                "status {status}: Transfer-Encoding {:?} (expected Content-Length)",
                                snippet(h.value)
                            ));
                        }
                    }
                    let len = len.ok_or_else(|| format!("status {status}: no Content-Length"))?;
                    if len > MAX_BODY {
                        return Err(format!("Content-Length {len} too large"));
                    }
                    break (n, status, json, session, len);
                }
                Ok(httparse::Status::Partial) => {
                    if self.filled >= MAX_HEAD {
                        return Err("response head too large".into());
                    }
                    self.read_more()?;
                }
                Err(e) => {
                    return Err(format!(
                        "unparsable response ({e}): {}",
                        snippet(&self.buf[..self.filled])
                    ));
                }
            }
        };
        // Body.
        let end = head_len + body_len;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        while self.filled < end {
            self.read_more()?;
        }
        self.consumed = end;
        Ok(Resp {
            status,
            json,
            session,
            body: head_len..end,
        })
    }
}

struct HttpClient {
    http: Http,
    session: String,
    init_503s: u64,
    body: Vec<u8>,
    what: String,
    watchdog: Arc<Watchdog>,
}

impl HttpClient {
    /// Connects, then `initialize` (taking the session id) and
    /// `notifications/initialized`.
    fn open(
        addr: SocketAddr,
        close_each: bool,
        what: String,
        watchdog: &Arc<Watchdog>,
    ) -> Result<HttpClient> {
        let broken = |e: String| err(format!("{what}: {e}{}", watchdog.note()));
        let mut init_503s = 0;
        let (mut http, r) = loop {
            let mut http =
                Http::new(addr, close_each).map_err(|e| broken(format!("connect: {e}")))?;
            let (r, _) = http
                .exchange("POST", MCP_PATH, None, &initialize_body(1))
                .map_err(|e| broken(format!("initialize: {e}")))?;
            if r.status == 503 && init_503s < u64::from(INIT_RETRIES) {
                // Retried on a fresh connection: the relay may close this one.
                init_503s += 1;
                thread::sleep(INIT_RETRY_DELAY);
                continue;
            }
            break (http, r);
        };
        let body = http.body(&r);
        if r.status != 200 || !r.json {
            return Err(broken(format!(
                "initialize: status {} (json: {}, after {init_503s} 503s): {}",
                r.status,
                r.json,
                snippet(body)
            )));
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| broken(format!("initialize reply ({e}): {}", snippet(body))))?;
        check_initialize(&v, 1).map_err(broken)?;
        let session = r
            .session
            .ok_or_else(|| broken("initialize reply has no mcp-session-id".into()))?;
        let (r, _) = http
            .exchange("POST", MCP_PATH, Some(&session), INITIALIZED)
            .map_err(|e| broken(format!("notifications/initialized: {e}")))?;
        if r.status != 202 {
            return Err(broken(format!(
                "notifications/initialized: status {} (expected 202): {}",
                r.status,
                snippet(http.body(&r))
            )));
        }
        watchdog.tick();
        Ok(HttpClient {
            http,
            session,
            init_503s,
            body: Vec::with_capacity(256),
            what,
            watchdog: Arc::clone(watchdog),
        })
    }

    fn broken(&self, what: impl std::fmt::Display) -> Box<dyn Error + Send + Sync> {
        err(format!("{}: {what}{}", self.what, self.watchdog.note()))
    }
}

impl Rpc for HttpClient {
    fn call(&mut self, id: u64, text: &str) -> Result<u64> {
        call_body(&mut self.body, id, text);
        let (r, ns) = self
            .http
            .exchange("POST", MCP_PATH, Some(&self.session), &self.body)
            .map_err(|e| self.broken(format!("request {id}: {e}")))?;
        let body = self.http.body(&r);
        if r.status != 200 || !r.json {
            return Err(self.broken(format!(
                "request {id}: status {} (json: {}): {}",
                r.status,
                r.json,
                snippet(body)
            )));
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| self.broken(format!("reply {id} ({e}): {}", snippet(body))))?;
        check_call(&v, id, text).map_err(|e| self.broken(e))?;
        Ok(ns)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(()) // dropping the stream closes the connection
    }

    fn init_503s(&self) -> u64 {
        self.init_503s
    }
}

/// `GET /metrics` on a fresh connection.
fn fetch_metrics(addr: SocketAddr) -> std::result::Result<String, String> {
    let mut http = Http::new(addr, true).map_err(|e| e.to_string())?;
    let (r, _) = http.exchange("GET", "/metrics", None, b"")?;
    let body = String::from_utf8_lossy(http.body(&r)).into_owned();
    if r.status != 200 {
        return Err(format!("GET /metrics: status {}: {body}", r.status));
    }
    Ok(body)
}

/// Sums of `family{label="value"} N` samples, by label value.
fn prom_by_label(text: &str, family: &str) -> Vec<(String, f64)> {
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

// ---- the relay process -----------------------------------------------------------

#[derive(Default)]
struct LogTail {
    lines: VecDeque<String>,
    /// WARN/ERROR lines (first few).
    problems: Vec<String>,
}

struct Relay {
    child: Child,
    pid: i32,
    addr: SocketAddr,
    /// Its echo_server processes, as last seen; killed on a dirty exit.
    servers: Vec<i32>,
    log: Arc<Mutex<LogTail>>,
    reaped: bool,
    watchdog: Arc<Watchdog>,
}

impl Relay {
    fn spawn(
        relay: &Path,
        echo: &Path,
        pool: &str,
        max_connections: usize,
        watchdog: &Arc<Watchdog>,
    ) -> Result<Relay> {
        let mut child = Command::new(relay)
            .args(["reverse", "--listen", "127.0.0.1:0", "--pool", pool])
            .args(["--max-connections", &max_connections.to_string(), "--"])
            .arg(echo)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("spawning the relay: {e}")))?;
        let pid = child.id() as i32;
        watchdog.watch_pid(pid);
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(LogTail::default()));
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let log2 = Arc::clone(&log);
        // Drains the relay's log (so it never blocks on a full pipe) and
        // reports the listening address. Detached: ends at EOF.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some((_, rest)) = line.split_once("listening on http://")
                    && let Some(addr) = rest.split('/').next()
                    && let Ok(addr) = addr.parse::<SocketAddr>()
                {
                    let _ = tx.send(addr);
                }
                if let Ok(mut t) = log2.lock() {
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
        let mut r = Relay {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
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

    fn log_tail(&self) -> String {
        self.log
            .lock()
            .map(|t| t.lines.iter().cloned().collect::<Vec<_>>().join("\n  "))
            .unwrap_or_default()
    }

    fn problems(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|t| t.problems.clone())
            .unwrap_or_default()
    }

    fn broken(&self, what: impl std::fmt::Display) -> Box<dyn Error + Send + Sync> {
        err(format!(
            "relay (pid {}): {what}{}\n  relay log tail:\n  {}",
            self.pid,
            self.watchdog.note(),
            self.log_tail()
        ))
    }

    fn note_servers(&mut self) {
        for pid in children_of(self.pid) {
            if !self.servers.contains(&pid) {
                self.servers.push(pid);
            }
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then waits for the relay to close its servers and exit.
    fn shutdown(&mut self) -> Result<ExitStatus> {
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
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills and reaps the relay's servers that were re-parented to us (we
    /// are a child subreaper) — only those, never anything else.
    fn reap_servers(&mut self) {
        let me = std::process::id() as i32;
        for &pid in &self.servers {
            if parent_of(pid) == Some(me) {
                // SAFETY: kill(2) and waitpid(2) on our own (adopted) child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
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

// ---- statistics -------------------------------------------------------------------

#[derive(Clone, Copy, Default)]
struct Stats {
    requests: u64,
    p50_us: f64,
    p95_us: f64,
    p99_us: f64,
    max_us: f64,
    mean_us: f64,
    throughput: f64,
}

impl Stats {
    fn new(mut lat_ns: Vec<u64>, elapsed: Duration) -> Stats {
        lat_ns.sort_unstable();
        let n = lat_ns.len();
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

    fn json(&self) -> Value {
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

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
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

/// Per-metric median across rounds.
fn median_stats(all: &[Stats]) -> Stats {
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

fn median_opt(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = v.flatten().collect();
    (!v.is_empty()).then(|| median(v))
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
    let mut first_err: Option<Box<dyn Error + Send + Sync>> = None;
    let fail = |e: Box<dyn Error + Send + Sync>, first: &mut Option<_>| {
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
        Some(p) => Some(Relay::spawn(
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

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

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

/// Reaps any zombie children left over (ours only: waitpid on our own pid
/// space), once every `Child` handle is gone.
fn reap_leftovers() {
    loop {
        // SAFETY: waitpid(2) with WNOHANG on our own children.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if r <= 0 {
            break;
        }
    }
}

fn run() -> Result<()> {
    let s = Settings::from_env()?;
    let paths = Paths {
        relay: relay_binary(),
        echo: echo_server_binary()?,
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
