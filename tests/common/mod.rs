//! Shared harness for the relay's integration tests: runs `mcp-relay forward`
//! around the `echo_server` example with every pipe serviced by a thread, so
//! no test ever blocks without a timeout, and kills and reaps everything it
//! started when dropped (even when a test panics).
//!
//! - stdin is owned by a writer thread fed over a channel: writes never block
//!   the test, and a relay that stops reading cannot deadlock it;
//! - stdout is read line by line by a thread and handed over a channel, read
//!   with `recv_timeout`;
//! - stderr is collected (with arrival times) by a thread, so the relay can
//!   always log; the collected lines are shown when an expectation fails.

#![allow(dead_code)]

pub mod fake;
pub mod http;
pub mod interop;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const RELAY: &str = env!("CARGO_BIN_EXE_mcp-relay");

/// Generous upper bound for anything that should be quick.
pub const SHORT: Duration = Duration::from_secs(5);

/// Path of the `echo_server` example, built once if `cargo test` did not
/// build it (e.g. `cargo test --test forward`).
pub fn echo_server() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/forward-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps");
        let path = profile_dir
            .join("examples")
            .join(format!("echo_server{}", std::env::consts::EXE_SUFFIX));
        if !path.is_file() {
            build_echo_server(profile_dir);
        }
        assert!(
            path.is_file(),
            "echo_server not found at {}",
            path.display()
        );
        path
    })
}

fn build_echo_server(profile_dir: &Path) {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--example", "echo_server"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    if let Some(target_dir) = profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target_dir);
    }
    let mut child = cmd
        .spawn()
        .expect("spawn cargo build --example echo_server");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match child.try_wait().expect("try_wait on cargo") {
            Some(status) => {
                assert!(
                    status.success(),
                    "cargo build --example echo_server: {status}"
                );
                return;
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("cargo build --example echo_server took over 600 s");
            }
            None => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A file under the temp dir, unique per process and test, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(test: &str, what: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "mcp-relay-test-{}-{test}-{what}",
            std::process::id()
        ));
        let _ = fs::remove_file(&path);
        TempFile(path)
    }

    pub fn path_str(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }

    pub fn read(&self) -> String {
        fs::read_to_string(&self.0).unwrap_or_default()
    }

    /// Polls the file until `pred` holds on its content (or panics after
    /// `timeout`); returns the content.
    pub fn wait_for(&self, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.read();
            if pred(&text) {
                return text;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: {what} not seen within {timeout:?}; content:\n{text}",
                    self.0.display()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

// ---- processes ------------------------------------------------------------

/// A process identified by pid and kernel start time, so a recycled pid is
/// never mistaken for it.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    pub pid: i32,
    starttime: Option<u64>,
}

/// (state, start time) from /proc/<pid>/stat.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces or parens: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 3 is the state; field 22 the start time.
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

impl Proc {
    pub fn new(pid: i32) -> Proc {
        Proc {
            pid,
            starttime: proc_stat(pid).map(|(_, t)| t),
        }
    }

    /// This process's entry in /proc (`None`: gone, or the pid was reused).
    /// A zombie still has one, with state `Z`.
    pub fn state(&self) -> Option<char> {
        let (state, start) = proc_stat(self.pid)?;
        (Some(start) == self.starttime).then_some(state)
    }

    pub fn is_gone(&self) -> bool {
        self.state().is_none()
    }

    pub fn assert_gone(&self, what: &str) {
        if let Some(state) = self.state() {
            panic!(
                "{what}: pid {} still in /proc with state {state}{}",
                self.pid,
                if state == 'Z' { " (zombie)" } else { "" }
            );
        }
    }

    /// SIGKILL, only if it is still the same process (and not a zombie).
    pub fn kill_if_alive(&self) {
        self.kill();
    }

    /// SIGKILL, only if it is still the same process.
    fn kill(&self) {
        if self.state().is_some_and(|s| s != 'Z') {
            // SAFETY: kill(2) on a pid verified to be the process we started.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

/// What the stdout reader thread hands over.
enum Out {
    Line(String),
    Eof,
}

/// One read from the relay's stdout.
#[derive(Debug)]
pub enum Recv {
    Msg(Value),
    Timeout,
    Eof,
}

pub type StderrLines = Arc<Mutex<Vec<(Instant, String)>>>;

/// A running `mcp-relay forward -- echo_server ...`.
pub struct Relay {
    child: Child,
    pub pid: i32,
    input: Option<Sender<Vec<u8>>>,
    writer_done: Receiver<()>,
    out: Receiver<Out>,
    stdout_eof: bool,
    /// Every stdout line received so far, raw.
    pub raw_stdout: Vec<String>,
    stderr: StderrLines,
    stderr_done: Receiver<()>,
    status: Option<ExitStatus>,
    /// When `try_status` first saw the relay exited.
    pub exited_at: Option<Instant>,
    servers: Vec<Proc>,
}

impl Relay {
    /// `mcp-relay forward RELAY_ARGS -- echo_server SERVER_ARGS`. Logs at
    /// info level unless `relay_args` sets `--log-level`.
    pub fn start(relay_args: &[&str], server_args: &[&str]) -> Relay {
        let mut cmd = Command::new(RELAY);
        cmd.arg("forward").args(relay_args);
        if !relay_args.iter().any(|a| a.starts_with("--log-level")) {
            cmd.args(["--log-level", "info"]);
        }
        cmd.arg("--").arg(echo_server()).args(server_args);
        Relay::spawn(cmd)
    }

    /// `mcp-relay forward --url ... RELAY_ARGS` (no server command; `relay_args`
    /// must contain `--url`), with `env` added to the relay's environment.
    /// Logs at info level unless `relay_args` sets `--log-level`.
    pub fn start_url(relay_args: &[&str], env: &[(&str, &str)]) -> Relay {
        let mut cmd = Command::new(RELAY);
        cmd.arg("forward").args(relay_args);
        if !relay_args.iter().any(|a| a.starts_with("--log-level")) {
            cmd.args(["--log-level", "info"]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Relay::spawn(cmd)
    }

    /// Spawns `cmd` (a complete `mcp-relay` command line) with every pipe
    /// serviced by a thread.
    fn spawn(mut cmd: Command) -> Relay {
        cmd.env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn mcp-relay");
        let pid = child.id() as i32;

        let mut stdin = child.stdin.take().expect("relay stdin");
        let (input, chunks) = mpsc::channel::<Vec<u8>>();
        let (done_tx, writer_done) = mpsc::channel();
        thread::spawn(move || {
            for chunk in chunks {
                if let Err(e) = stdin.write_all(&chunk).and_then(|()| stdin.flush()) {
                    eprintln!("writing to the relay's stdin failed: {e}");
                    break;
                }
            }
            drop(stdin);
            let _ = done_tx.send(());
        });

        let stdout = child.stdout.take().expect("relay stdout");
        let (out_tx, out) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        if out_tx.send(Out::Line(line)).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = out_tx.send(Out::Eof);
        });

        let stderr_pipe = child.stderr.take().expect("relay stderr");
        let stderr: StderrLines = Arc::default();
        let sink = Arc::clone(&stderr);
        let (stderr_tx, stderr_done) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stderr_pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                        sink.lock().unwrap().push((Instant::now(), line));
                    }
                }
            }
            let _ = stderr_tx.send(());
        });

        Relay {
            child,
            pid,
            input: Some(input),
            writer_done,
            out,
            stdout_eof: false,
            raw_stdout: Vec::new(),
            stderr,
            stderr_done,
            status: None,
            exited_at: None,
            servers: Vec::new(),
        }
    }

    // ---- stdin ----------------------------------------------------------

    pub fn send_bytes(&self, bytes: impl Into<Vec<u8>>) {
        self.input
            .as_ref()
            .expect("stdin already closed")
            .send(bytes.into())
            .expect("stdin writer thread ended");
    }

    /// Writes `msg` as one line.
    pub fn send(&self, msg: &Value) {
        self.send_bytes(line(msg));
    }

    /// Closes the relay's stdin once everything queued has been written.
    pub fn close_stdin(&mut self) {
        self.input = None;
        match self.writer_done.recv_timeout(Duration::from_secs(10)) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {}
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "queued stdin not written within 10 s\n{}",
                    self.stderr_dump()
                )
            }
        }
    }

    // ---- stdout ---------------------------------------------------------

    /// The next stdout line, parsed; every line must be JSON.
    pub fn recv(&mut self, timeout: Duration) -> Recv {
        if self.stdout_eof {
            return Recv::Eof;
        }
        match self.out.recv_timeout(timeout) {
            Ok(Out::Line(l)) => {
                self.raw_stdout.push(l.clone());
                match serde_json::from_str(&l) {
                    Ok(v) => Recv::Msg(v),
                    Err(e) => panic!(
                        "relay wrote a non-JSON line on stdout ({e}): {l:?}\n{}",
                        self.stderr_dump()
                    ),
                }
            }
            Ok(Out::Eof) | Err(RecvTimeoutError::Disconnected) => {
                self.stdout_eof = true;
                Recv::Eof
            }
            Err(RecvTimeoutError::Timeout) => Recv::Timeout,
        }
    }

    /// The next message; panics on timeout or EOF.
    pub fn expect_msg(&mut self, timeout: Duration, what: &str) -> Value {
        match self.recv(timeout) {
            Recv::Msg(v) => v,
            other => panic!(
                "waiting for {what}: got {other:?} after {timeout:?}\n{}",
                self.stderr_dump()
            ),
        }
    }

    /// The next message, which must be the response to `id`.
    pub fn expect_response(&mut self, id: &Value, timeout: Duration) -> Value {
        let v = self.expect_msg(timeout, &format!("the response to {id}"));
        assert_eq!(
            v.get("id"),
            Some(id),
            "expected the response to {id}, got {v}\n{}",
            self.stderr_dump()
        );
        assert!(
            v.get("result").is_some() || v.get("error").is_some(),
            "not a response: {v}"
        );
        v
    }

    /// Asserts nothing arrives on stdout for `quiet`.
    pub fn expect_silence(&mut self, quiet: Duration) {
        match self.recv(quiet) {
            Recv::Timeout => {}
            other => panic!("expected silence on stdout, got {other:?}"),
        }
    }

    /// Reads stdout until EOF (panics if it does not come within `timeout`),
    /// returning the messages that were still to come.
    pub fn drain_to_eof(&mut self, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Recv::Msg(v) => rest.push(v),
                Recv::Eof => return rest,
                Recv::Timeout => panic!(
                    "stdout not closed within {timeout:?}\n{}",
                    self.stderr_dump()
                ),
            }
        }
    }

    /// `initialize` (id `"init"`) + `notifications/initialized`; returns the
    /// initialize result.
    pub fn handshake(&mut self) -> Value {
        self.send(&initialize(json!("init")));
        let reply = self.expect_response(&json!("init"), SHORT);
        assert!(
            reply["result"]["serverInfo"].is_object(),
            "bad initialize reply: {reply}"
        );
        self.send(&initialized());
        reply
    }

    /// Sends `tools/call echo` and expects its own text back.
    pub fn echo_ok(&mut self, id: Value, text: &str) {
        self.send(&call(id.clone(), text));
        let reply = self.expect_response(&id, SHORT);
        assert_eq!(echo_text(&reply), Some(text), "reply: {reply}");
    }

    // ---- stderr / processes ----------------------------------------------

    pub fn stderr_lines(&self) -> Vec<(Instant, String)> {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stderr_text(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        let mut s = String::new();
        for (_, l) in lines.iter() {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// The last lines of the relay's log, for failure messages.
    pub fn stderr_dump(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        let from = lines.len().saturating_sub(40);
        let mut s = format!("--- relay stderr (last {} lines) ---\n", lines.len() - from);
        for (_, l) in &lines[from..] {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// Waits until the relay's log has a line containing `needle`.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((t, _)) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|(_, l)| l.contains(needle))
            {
                return *t;
            }
            if Instant::now() > deadline {
                panic!(
                    "{needle:?} not logged within {timeout:?}\n{}",
                    self.stderr_dump()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Server pids from the relay's `started pid N` log lines, in order.
    fn logged_server_pids(&self) -> Vec<i32> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, l)| {
                let rest = &l[l.find("started pid ")? + "started pid ".len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .collect()
    }

    /// The `n`-th server the relay started (0-based), waiting for its log line.
    pub fn server(&mut self, n: usize) -> Proc {
        let deadline = Instant::now() + SHORT;
        loop {
            let pids = self.logged_server_pids();
            for &pid in &pids[self.servers.len().min(pids.len())..] {
                self.servers.push(Proc::new(pid));
            }
            if let Some(p) = self.servers.get(n) {
                return *p;
            }
            if Instant::now() > deadline {
                panic!("server #{n} pid not logged\n{}", self.stderr_dump());
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        assert!(self.status.is_none(), "relay already exited");
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.pid, sig) };
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait on relay");
            if self.status.is_some() {
                self.exited_at = Some(Instant::now());
            }
        }
        self.status
    }

    /// Waits (bounded) for the relay to exit, then for its log to be read
    /// to the end, so log assertions see every line.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                let _ = self.stderr_done.recv_timeout(SHORT);
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "relay still running {timeout:?} later\n{}",
                    self.stderr_dump()
                );
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Servers first, while the relay (their parent) still holds their
        // pids: a server that ignores SIGTERM would outlive the relay.
        let pids = self.logged_server_pids();
        for &pid in &pids[self.servers.len().min(pids.len())..] {
            self.servers.push(Proc::new(pid));
        }
        for s in &self.servers {
            s.kill();
        }
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- messages ---------------------------------------------------------------

/// `msg` serialised as one newline-terminated line.
pub fn line(msg: &Value) -> Vec<u8> {
    let mut v = serde_json::to_vec(msg).expect("serialise");
    v.push(b'\n');
    v
}

pub fn initialize(id: Value) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "mcp-relay-tests", "version": "0"},
        },
    })
}

pub fn initialized() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

/// `tools/call` of `echo` with `text`.
pub fn call(id: Value, text: &str) -> Value {
    call_with(id, json!({"text": text}), None)
}

/// `tools/call` of `echo` with these arguments and, optionally, a progress token.
pub fn call_with(id: Value, arguments: Value, progress_token: Option<Value>) -> Value {
    let mut params = json!({"name": "echo", "arguments": arguments});
    if let Some(tok) = progress_token {
        params["_meta"] = json!({"progressToken": tok});
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

/// The text of an echo reply.
pub fn echo_text(reply: &Value) -> Option<&str> {
    reply.pointer("/result/content/0/text")?.as_str()
}

/// `error.data.kind` of a relay error.
pub fn error_kind(reply: &Value) -> Option<&str> {
    reply.pointer("/error/data/kind")?.as_str()
}

// ---- helpers shared by the reverse-mode tests ------------------------------

/// The pid in a relay log line `... started pid N ...`.
pub fn started_pid(line: &str) -> Option<i32> {
    let rest = &line[line.find("started pid ")? + "started pid ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Collects the lines of `pipe` (with arrival times) on a thread, calling
/// `on_line` for each as it arrives; the receiver gets `()` at EOF.
pub fn collect_lines<R: std::io::Read + Send + 'static>(
    pipe: R,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> (StderrLines, Receiver<()>) {
    let lines: StderrLines = Arc::default();
    let sink = Arc::clone(&lines);
    let (done_tx, done) = mpsc::channel();
    thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    on_line(&line);
                    sink.lock().unwrap().push((Instant::now(), line));
                }
            }
        }
        let _ = done_tx.send(());
    });
    (lines, done)
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, read, released).
/// Another process may take it before it is used: callers retry.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// The children of `ppid` with their states, from a scan of /proc/*/stat.
pub fn children_of(ppid: i32) -> Vec<(i32, char)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = text.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
        // Fields after the command: state, then ppid.
        let state = fields.first().and_then(|f| f.chars().next());
        let parent = fields.get(1).and_then(|f| f.parse::<i32>().ok());
        if let (Some(state), Some(parent)) = (state, parent)
            && parent == ppid
        {
            out.push((pid, state));
        }
    }
    out
}

/// Open file descriptors of `pid` (entries of /proc/<pid>/fd).
pub fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}
