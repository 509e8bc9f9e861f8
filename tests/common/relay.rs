//! The relay under test: one `mcp-relay` process, either `forward` (the test
//! is its stdio client) or `reverse` (it listens on 127.0.0.1 and the test is
//! its HTTP client). Every pipe is serviced by a thread, so no test ever
//! blocks without a timeout, and dropping a [`Relay`] kills and reaps the
//! relay and every server process it logged, even when a test panics (the
//! tail of the relay's log is then printed).
//!
//! - stdin (forward) is owned by a writer thread fed over a channel: writes
//!   never block the test, and a relay that stops reading cannot deadlock it;
//! - stdout (forward) is read line by line by a thread and handed over a
//!   channel, read with `recv_timeout`;
//! - stderr is collected (with arrival times) by a thread, so the relay can
//!   always log; its `started pid N` lines identify the server processes as
//!   they arrive. The collected lines are shown when an expectation fails.
//!
//! A reverse relay gets a free port (another is tried if it cannot bind it)
//! and is ready once `/healthz` answers 200.

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::http::Http;
use super::{
    Proc, RELAY, SHORT, StderrLines, call, children_of, collect_lines, echo_server, echo_text,
    free_port, initialize, initialized, line, read_lines, started_pid,
};

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

/// How to start a [`Relay`]: [`Relay::forward`] or [`Relay::reverse`], then
/// options, then [`Launch::start`]. The relay logs at `info` (forward) or
/// `debug` (reverse) unless the arguments set `--log-level`.
#[must_use]
pub struct Launch {
    binary: PathBuf,
    /// `--name` of a reverse relay; `None`: a forward relay.
    reverse: Option<String>,
    admin: bool,
    args: Vec<OsString>,
    command: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// `RLIMIT_NOFILE` of the relay, if limited.
    max_open_files: Option<libc::rlim_t>,
    /// `--listen` port chosen by the test (a URL naming it is needed
    /// before the start); None: a free one, retried if taken meanwhile.
    port: Option<u16>,
}

impl Launch {
    /// Options, after the mode's own (`--listen`, `--name`, `--admin`).
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Launch {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Listen on `port` (from [`super::free_port`]): for a test that must
    /// name the relay's URL in its arguments, e.g. as an OAuth audience.
    pub fn port(mut self, port: u16) -> Launch {
        self.port = Some(port);
        self
    }

    /// The server command, after `--`.
    pub fn command<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, command: I) -> Launch {
        self.command
            .extend(command.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// `-- echo_server ARGS`.
    pub fn echo_server(self, args: &[&str]) -> Launch {
        self.command([echo_server().as_os_str()]).command(args)
    }

    /// Adds these `(key, value)` variables to the relay's environment.
    pub fn env(mut self, vars: &[(&str, &str)]) -> Launch {
        self.env
            .extend(vars.iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// A reverse relay serves `/healthz` and `/metrics` on a second free port
    /// (`--admin 127.0.0.1:PORT`).
    pub fn admin(mut self) -> Launch {
        self.admin = true;
        self
    }

    /// Limits the relay to `n` open file descriptors (`RLIMIT_NOFILE`).
    pub fn max_open_files(mut self, n: libc::rlim_t) -> Launch {
        self.max_open_files = Some(n);
        self
    }

    /// Runs this `mcp-relay` binary instead of the one cargo built for the
    /// tests.
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Launch {
        self.binary = binary.into();
        self
    }

    /// Starts the relay; a reverse relay is ready (`/healthz` answers 200).
    pub fn start(self) -> Relay {
        let Some(name) = &self.reverse else {
            return Relay::spawn(self.cmd(0, None), "forward", true);
        };
        let mut last_log = String::new();
        for _attempt in 0..8 {
            let port = self.port.unwrap_or_else(free_port);
            let admin_port = self.admin.then(free_port);
            let mut relay = Relay::spawn(self.cmd(port, admin_port), name, false);
            relay.port = port;
            relay.admin_port = admin_port;
            match relay.wait_ready() {
                Ok(()) => return relay,
                Err(exited) => {
                    let _ = relay.stderr_done.lock().unwrap().recv_timeout(SHORT);
                    last_log = relay.stderr_text();
                    assert!(
                        exited && last_log.contains("cannot listen"),
                        "{} did not come up:\n{last_log}",
                        relay.cmdline
                    );
                    // Someone took the port in the meantime: try another.
                }
            }
        }
        panic!("relay could not bind a free port in 8 attempts:\n{last_log}");
    }

    /// The command line; `port` and `admin` only for a reverse relay.
    fn cmd(&self, port: u16, admin: Option<u16>) -> Command {
        let mut cmd = Command::new(&self.binary);
        match &self.reverse {
            None => {
                cmd.arg("forward");
            }
            Some(name) => {
                cmd.arg("reverse")
                    .args(["--listen", &format!("127.0.0.1:{port}")])
                    .args(["--name", name]);
                if let Some(a) = admin {
                    cmd.args(["--admin", &format!("127.0.0.1:{a}")]);
                }
            }
        }
        cmd.args(&self.args);
        let level_set = self
            .args
            .iter()
            .any(|a| a.to_str().is_some_and(|a| a.starts_with("--log-level")));
        if !level_set {
            let level = if self.reverse.is_some() {
                "debug"
            } else {
                "info"
            };
            cmd.args(["--log-level", level]);
        }
        if !self.command.is_empty() {
            cmd.arg("--").args(&self.command);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(n) = self.max_open_files {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe; it runs between fork
            // and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd
    }
}

/// How the relay process stands.
struct Exit {
    child: Child,
    status: Option<ExitStatus>,
    /// When `try_status` first saw the relay exited.
    at: Option<Instant>,
}

/// A forward relay's stdin and stdout, each serviced by a thread.
struct Pipes {
    input: Option<Sender<Vec<u8>>>,
    writer_done: Mutex<Receiver<()>>,
    out: Mutex<Receiver<Out>>,
    eof: bool,
}

impl Pipes {
    fn new(child: &mut Child) -> Pipes {
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
            read_lines(stdout, |line| out_tx.send(Out::Line(line)).is_ok());
            let _ = out_tx.send(Out::Eof);
        });

        Pipes {
            input: Some(input),
            writer_done: Mutex::new(writer_done),
            out: Mutex::new(out),
            eof: false,
        }
    }
}

/// A running `mcp-relay forward` or `mcp-relay reverse`.
pub struct Relay {
    pub pid: i32,
    /// The port a reverse relay listens on (0 for a forward relay).
    pub port: u16,
    /// A reverse relay's `--admin` port, when started with [`Launch::admin`].
    pub admin_port: Option<u16>,
    /// A reverse relay's `--name` (`forward` for a forward relay).
    pub name: String,
    /// The command that started the relay, for failure messages.
    pub cmdline: String,
    /// Every stdout line received so far, raw (forward).
    pub raw_stdout: Vec<String>,
    exit: Mutex<Exit>,
    /// Forward only.
    pipes: Option<Pipes>,
    stderr: StderrLines,
    stderr_done: Mutex<Receiver<()>>,
    /// Every server process the relay logged (`started pid N`), identified
    /// as soon as the line arrived, with the line's arrival time.
    servers: Arc<Mutex<Vec<(Proc, Instant)>>>,
}

impl Relay {
    /// `mcp-relay forward`, to be completed by the [`Launch`] options.
    pub fn forward() -> Launch {
        Launch {
            binary: PathBuf::from(RELAY),
            reverse: None,
            admin: false,
            args: Vec::new(),
            command: Vec::new(),
            env: Vec::new(),
            max_open_files: None,
            port: None,
        }
    }

    /// `mcp-relay reverse --listen 127.0.0.1:PORT --name NAME`, to be
    /// completed by the [`Launch`] options.
    pub fn reverse(name: &str) -> Launch {
        Launch {
            reverse: Some(name.to_owned()),
            ..Relay::forward()
        }
    }

    /// `mcp-relay forward RELAY_ARGS -- echo_server SERVER_ARGS`.
    pub fn start(relay_args: &[&str], server_args: &[&str]) -> Relay {
        Relay::forward()
            .args(relay_args)
            .echo_server(server_args)
            .start()
    }

    /// Spawns `cmd` (a complete `mcp-relay` command line) with every pipe
    /// serviced by a thread: stdin and stdout only if `stdio`.
    fn spawn(mut cmd: Command, name: &str, stdio: bool) -> Relay {
        let piped = || {
            if stdio { Stdio::piped() } else { Stdio::null() }
        };
        cmd.env_remove("RUST_LOG")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(piped())
            .stdout(piped())
            .stderr(Stdio::piped());
        let cmdline = format!("{cmd:?}");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmdline}: {e}"));
        let pid = child.id() as i32;
        let pipes = stdio.then(|| Pipes::new(&mut child));
        let servers: Arc<Mutex<Vec<(Proc, Instant)>>> = Arc::default();
        let sink = Arc::clone(&servers);
        let (stderr, stderr_done) =
            collect_lines(child.stderr.take().expect("relay stderr"), move |line| {
                if let Some(p) = started_pid(line) {
                    sink.lock().unwrap().push((Proc::new(p), Instant::now()));
                }
            });
        Relay {
            pid,
            port: 0,
            admin_port: None,
            name: name.to_owned(),
            cmdline,
            raw_stdout: Vec::new(),
            exit: Mutex::new(Exit {
                child,
                status: None,
                at: None,
            }),
            pipes,
            stderr,
            stderr_done: Mutex::new(stderr_done),
            servers,
        }
    }

    // ---- stdin (forward) ---------------------------------------------------

    fn pipes(&mut self) -> &mut Pipes {
        self.pipes
            .as_mut()
            .expect("a reverse relay has no stdin/stdout")
    }

    pub fn send_bytes(&self, bytes: impl Into<Vec<u8>>) {
        self.pipes
            .as_ref()
            .expect("a reverse relay has no stdin")
            .input
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
        let pipes = self.pipes();
        pipes.input = None;
        let written = pipes
            .writer_done
            .get_mut()
            .unwrap()
            .recv_timeout(Duration::from_secs(10));
        if let Err(RecvTimeoutError::Timeout) = written {
            panic!(
                "queued stdin not written within 10 s\n{}",
                self.stderr_dump()
            );
        }
    }

    // ---- stdout (forward) --------------------------------------------------

    /// The next stdout line, parsed; every line must be JSON.
    pub fn recv(&mut self, timeout: Duration) -> Recv {
        let pipes = self.pipes();
        if pipes.eof {
            return Recv::Eof;
        }
        match pipes.out.get_mut().unwrap().recv_timeout(timeout) {
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
                pipes.eof = true;
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

    // ---- HTTP (reverse) ----------------------------------------------------

    /// Polls `/healthz` until 200. Err(true): the relay exited.
    fn wait_ready(&self) -> Result<(), bool> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = self.ops_port();
        while Instant::now() < deadline {
            if self.try_status().is_some() {
                return Err(true);
            }
            if let Ok(mut h) = Http::try_connect(port)
                && let Ok(r) = h.try_request(
                    "GET",
                    "/healthz",
                    &[("Connection", "close")],
                    b"",
                    Duration::from_secs(2),
                )
                && r.status() == 200
            {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err(false)
    }

    /// Where `/healthz` and `/metrics` are served.
    fn ops_port(&self) -> u16 {
        self.admin_port.unwrap_or(self.port)
    }

    /// A new connection to the relay's listener.
    pub fn http(&self) -> Http {
        Http::connect(self.port)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The text of `/metrics` (which must answer 200).
    pub fn metrics_text(&self) -> String {
        let mut h = Http::connect(self.ops_port());
        let r = h.request("GET", "/metrics", &[("Connection", "close")], b"");
        assert_eq!(r.status(), 200, "{}: /metrics: {r:?}", self.name);
        r.text()
    }

    /// The value of one exact series of `/metrics` (its name and labels as
    /// the relay writes them), 0 when it is absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics_text()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    // ---- stderr --------------------------------------------------------------

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

    /// The last `n` lines of the relay's log, with a header.
    pub fn stderr_tail(&self, n: usize) -> String {
        let lines = self.stderr.lock().unwrap();
        let from = lines.len().saturating_sub(n);
        let mut s = format!(
            "--- relay {} (pid {}) log, last {} of {} lines ---\n",
            self.name,
            self.pid,
            lines.len() - from,
            lines.len()
        );
        for (_, l) in &lines[from..] {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// The last lines of the relay's log, for failure messages.
    pub fn stderr_dump(&self) -> String {
        self.stderr_tail(40)
    }

    /// Waits until the relay's log has a line containing `needle`; returns
    /// when that line arrived.
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

    // ---- processes -------------------------------------------------------------

    /// Every server process the relay logged so far, with when it was logged.
    pub fn servers(&self) -> Vec<(Proc, Instant)> {
        self.servers.lock().unwrap().clone()
    }

    /// The `n`-th server the relay started (0-based), waiting for its log line.
    pub fn server(&self, n: usize) -> Proc {
        let deadline = Instant::now() + SHORT;
        loop {
            if let Some((p, _)) = self.servers.lock().unwrap().get(n) {
                return *p;
            }
            if Instant::now() > deadline {
                panic!("server #{n} pid not logged\n{}", self.stderr_dump());
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Children of the relay that are zombies (exited, not reaped).
    pub fn zombies(&self) -> Vec<i32> {
        children_of(self.pid)
            .into_iter()
            .filter(|(_, s)| *s == 'Z')
            .map(|(p, _)| p)
            .collect()
    }

    pub fn signal(&self, sig: libc::c_int) {
        assert!(self.try_status().is_none(), "relay already exited");
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.pid, sig) };
    }

    pub fn try_status(&self) -> Option<ExitStatus> {
        let mut exit = self.exit.lock().unwrap();
        if exit.status.is_none() {
            exit.status = exit.child.try_wait().expect("try_wait on relay");
            if exit.status.is_some() {
                exit.at = Some(Instant::now());
            }
        }
        exit.status
    }

    /// When [`Relay::try_status`] first saw the relay exited.
    pub fn exited_at(&self) -> Option<Instant> {
        self.exit.lock().unwrap().at
    }

    /// Waits (bounded) for the relay to exit, then for its log to be read to
    /// the end, so log assertions see every line. `None`: still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                let _ = self.stderr_done.lock().unwrap().recv_timeout(SHORT);
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Like [`Relay::wait_timeout`], but the relay must exit.
    pub fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        self.wait_timeout(timeout).unwrap_or_else(|| {
            panic!(
                "relay still running {timeout:?} later\n{}",
                self.stderr_dump()
            )
        })
    }

    /// SIGTERM, up to `grace` for the relay to exit, then SIGKILL for it and
    /// its servers; always reaps. Says how the relay ended.
    pub fn stop(&self, grace: Duration) -> String {
        if let Some(s) = self.try_status() {
            return format!("had already exited: {s}");
        }
        self.signal(libc::SIGTERM);
        if let Some(s) = self.wait_timeout(grace) {
            return format!("exited after SIGTERM: {s}");
        }
        self.kill();
        format!("still running {grace:?} after SIGTERM; killed")
    }

    /// SIGKILL for the servers (first, while the relay, their parent, still
    /// holds their pids: a server that ignores SIGTERM would outlive it) and
    /// any other child, then for the relay, which is reaped.
    fn kill(&self) {
        for (p, _) in self.servers() {
            p.kill_if_alive();
        }
        if self.try_status().is_some() {
            return;
        }
        for (pid, _) in children_of(self.pid) {
            Proc::new(pid).kill_if_alive();
        }
        let mut exit = self.exit.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = exit.child.kill();
        exit.status = exit.child.wait().ok();
        exit.at = Some(Instant::now());
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.stderr_tail(150));
        }
        self.kill();
    }
}
