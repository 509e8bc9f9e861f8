//! Shared harness for the relay's integration tests: the relay under test
//! (`relay.rs`), the HTTP client (`http.rs`), the fake HTTP
//! upstream (`fake.rs`), the interop tests' helpers (`interop.rs`), and here
//! the `echo_server` example, temp files, process identities and MCP
//! messages.

#![allow(dead_code)]

pub mod authz;
pub mod fake;
pub mod hostile;
pub mod http;
pub mod interop;
pub mod loopback;
pub mod matrix;
pub mod prom;
pub mod relay;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
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
        if self.state().is_some_and(|s| s != 'Z') {
            // SAFETY: kill(2) on a pid verified to be the process we started.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
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

/// Lines of a child's output, with their arrival times.
pub type StderrLines = Arc<Mutex<Vec<(Instant, String)>>>;

/// Calls `f` with each line of `pipe` (with its newline, if any) until EOF,
/// a read error, or `f` returning false.
pub fn read_lines(pipe: impl std::io::Read, mut f: impl FnMut(String) -> bool) {
    let mut r = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if !f(String::from_utf8_lossy(&buf).into_owned()) {
                    return;
                }
            }
        }
    }
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
        read_lines(pipe, |line| {
            let line = line.trim_end().to_owned();
            on_line(&line);
            sink.lock().unwrap().push((Instant::now(), line));
            true
        });
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

/// Memory of process `pid` from /proc/PID/status, in KiB: (resident now,
/// peak resident). `None` once the process is gone.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Flood tests hold this while they attack, so that no two floods of one
/// test binary share this machine's cores: each measures the relay (its
/// memory, and a fresh session answered within a second) under its own
/// attack, not under its neighbours'. Other tests still run beside them.
pub fn one_flood_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static FLOODS: Mutex<()> = Mutex::new(());
    FLOODS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
