//! Interop: the official Python MCP SDK Streamable HTTP client talks to
//! `mcp-relay reverse --url`, which relays each client session to its own
//! session of a real MCP Streamable HTTP server:
//!
//! ```text
//! Python SDK client ──HTTP──▶ mcp-relay reverse --listen 127.0.0.1:P --url http://127.0.0.1:Q/mcp ──HTTP──▶ server
//! ```
//!
//! * `@modelcontextprotocol/server-everything` in `streamableHttp` mode (the
//!   TypeScript SDK's server transport), driven by
//!   `tests/interop/reverse_python.py` in its `url` mode: initialize,
//!   logging, tools, echo, resources, prompts, progress, ping, DELETE → 404;
//! * `tests/interop/fastmcp_server.py` (a Python SDK FastMCP server), driven
//!   by `tests/interop/reverse_url_fastmcp.py`: initialize, tools, echo,
//!   progress, a log notification, ping, DELETE → 404.
//!
//! One test per server. Each starts the server on a free port and waits
//! (bounded) for its ready line and an accepting socket, starts the relay on
//! another free port with `--log-level debug` and waits for `/healthz`, runs
//! the script with a hard timeout and checks its verdict (`interop ok`, exit
//! 0). Then, with the relay still running (so it is the client's DELETE that
//! propagated, not the relay's exit), it checks from the server's own log
//! that the relay opened the upstream GET stream and ended the upstream
//! session with DELETE carrying the upstream's session id, that exactly one
//! upstream session was created for the one client session, and that the
//! relay's own session id (the client's) never reached the server. Every
//! process is stopped (SIGTERM, then SIGKILL of its tree; the relay's
//! servers and children with it) and reaped on every path, by Drop; a failure
//! prints the script's output, the relay's debug log and the server's log.
//!
//! The test provisions its peers itself (`.ci/install-deps.sh`, into
//! target/test-deps/, once per test binary); if that fails, the test fails
//! with a message saying what to install. It never passes without running.
//!
//! Debugging: `cargo test --test interop_reverse_url -- --nocapture` prints
//! each script's summary and the logs; or start the pieces by hand (see the
//! scripts' headers).

mod common;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::free_port;
use common::interop::{
    self, accepts, drain, join_bounded, kill_tree, python, python_imports, snapshot, wait_bounded,
};
use common::relay::Relay;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const SERVER_JS: &str = "@modelcontextprotocol/server-everything/dist/index.js";
const FASTMCP_SERVER: &str = "tests/interop/fastmcp_server.py";
const EVERYTHING_SCRIPT: &str = "tests/interop/reverse_python.py";
const FASTMCP_SCRIPT: &str = "tests/interop/reverse_url_fastmcp.py";
/// The scripts stop themselves after 45-60 s; this is the harness's backstop.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(75);
/// Time for a server to accept connections once started.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Time for a server's log to show a request the relay has already made.
const LOG_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for a process to exit after SIGTERM before its tree is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    Everything,
    FastMcp,
}

impl Server {
    /// What the server prints (stdout or stderr) once its socket is bound:
    /// with the port accepting, this tells our server from a stranger that
    /// took the port between probing and binding.
    fn ready_marker(self, port: u16) -> String {
        match self {
            Server::Everything => format!("listening on port {port}"),
            Server::FastMcp => format!("Uvicorn running on http://127.0.0.1:{port}"),
        }
    }

    /// Log evidence (server stdout) that the relay opened a GET stream.
    fn get_marker(self) -> &'static str {
        match self {
            Server::Everything => "Establishing new SSE stream for session",
            Server::FastMcp => "upstream: GET /mcp ",
        }
    }

    /// Log evidence (server stdout) of a DELETE.
    fn delete_marker(self) -> &'static str {
        match self {
            Server::Everything => "Received session termination request for session ",
            Server::FastMcp => "upstream: DELETE /mcp ",
        }
    }

    /// The upstream session ids the server created, from its log.
    fn created_sessions(self, log: &str) -> Vec<String> {
        match self {
            Server::Everything => log
                .lines()
                .filter_map(|l| l.split("Session initialized with ID: ").nth(1))
                .map(|s| s.trim().to_owned())
                .collect(),
            // FastMCP's trace shows request headers only: the sessions are
            // the distinct ids the relay sent.
            Server::FastMcp => {
                let mut ids: Vec<String> = log
                    .lines()
                    .filter(|l| l.starts_with("upstream: "))
                    .filter_map(|l| quoted_field(l, "session"))
                    .collect();
                ids.sort();
                ids.dedup();
                ids
            }
        }
    }

    /// The session id each DELETE named, from the server's log.
    fn deleted_sessions(self, log: &str) -> Vec<Option<String>> {
        log.lines()
            .filter(|l| l.contains(self.delete_marker()))
            .map(|l| match self {
                Server::Everything => l
                    .split(self.delete_marker())
                    .nth(1)
                    .map(|s| s.trim().to_owned()),
                Server::FastMcp => quoted_field(l, "session"),
            })
            .collect()
    }
}

/// A prerequisite missing after provisioning: the test fails, never passes.
fn missing(what: &str) -> ! {
    interop::missing("interop_reverse_url", what);
}

/// `name='value'` in a FastMCP trace line.
fn quoted_field(line: &str, name: &str) -> Option<String> {
    let rest = line.split(&format!(" {name}='")).nth(1)?;
    Some(rest.split('\'').next()?.to_owned())
}

/// SIGTERM, a bounded wait, then SIGKILL for the whole tree; always reaps.
/// Returns how the process ended.
fn stop_child(child: &mut Child) -> String {
    match child.try_wait() {
        Ok(Some(s)) => format!("had already exited: {s}"),
        _ => {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            match wait_bounded(child, STOP_TIMEOUT) {
                Ok(Some(s)) => format!("exited after SIGTERM: {s}"),
                Ok(None) => {
                    kill_tree(child);
                    format!("still running {STOP_TIMEOUT:?} after SIGTERM; killed")
                }
                Err(e) => {
                    kill_tree(child);
                    format!("{e}; killed")
                }
            }
        }
    }
}

/// A child with both output pipes drained; stopped and reaped on drop.
struct Proc {
    child: Option<Child>,
    cmdline: String,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    threads: Vec<thread::JoinHandle<()>>,
    /// How the process ended, once stopped.
    ended: Option<String>,
}

impl Proc {
    fn spawn(mut cmd: Command, cmdline: String) -> Result<Proc, String> {
        cmd.current_dir(MANIFEST_DIR)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        // Reaped by Proc::stop (also on drop), which clippy cannot see.
        #[allow(clippy::zombie_processes)]
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn `{cmdline}`: {e}\n"))?;
        let (stdout, out_thread) = drain(child.stdout.take().unwrap());
        let (stderr, err_thread) = drain(child.stderr.take().unwrap());
        Ok(Proc {
            child: Some(child),
            cmdline,
            stdout,
            stderr,
            threads: vec![out_thread, err_thread],
            ended: None,
        })
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    fn stdout(&self) -> String {
        snapshot(&self.stdout)
    }

    fn stderr(&self) -> String {
        snapshot(&self.stderr)
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}\n",
            self.stdout(),
            self.stderr()
        )
    }

    /// Idempotent.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.ended = Some(stop_child(&mut child));
        let deadline = Instant::now() + Duration::from_secs(5);
        for t in self.threads.drain(..) {
            join_bounded(t, deadline);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the server on a free port and waits until it accepts connections.
/// Retries on a fresh port if it exits early (the port may have been taken
/// between probing and binding).
fn start_server(server: Server, node: Option<&Path>, python: &str) -> (Proc, u16) {
    let mut failures = String::new();
    for _ in 0..3 {
        let root = Path::new(MANIFEST_DIR);
        let port = free_port();
        let (cmd, cmdline) = match server {
            Server::Everything => {
                let node = node.expect("node is required for server-everything");
                let js = interop::deps().node_modules.join(SERVER_JS);
                let mut cmd = Command::new(node);
                cmd.arg(&js)
                    .arg("streamableHttp")
                    .env("PORT", port.to_string());
                let cmdline = format!(
                    "PORT={port} {} {} streamableHttp",
                    node.display(),
                    js.display()
                );
                (cmd, cmdline)
            }
            Server::FastMcp => {
                let script = root.join(FASTMCP_SERVER);
                let mut cmd = Command::new(python);
                cmd.arg(&script)
                    .arg(port.to_string())
                    .env("PYTHONUNBUFFERED", "1");
                let cmdline = format!("{python} {} {port}", script.display());
                (cmd, cmdline)
            }
        };
        let mut proc = match Proc::spawn(cmd, cmdline) {
            Ok(p) => p,
            Err(e) => {
                failures.push_str(&e);
                continue;
            }
        };
        let marker = server.ready_marker(port);
        let started = Instant::now();
        let failure = loop {
            if let Some(status) = proc.exited() {
                break format!("exited before accepting connections: {status}");
            }
            let out = format!("{}{}", proc.stdout(), proc.stderr());
            if out.contains(&marker) && accepts(port) {
                return (proc, port);
            }
            if started.elapsed() > READY_TIMEOUT {
                break format!(
                    "not accepting connections (with `{marker}` logged) within {READY_TIMEOUT:?}"
                );
            }
            thread::sleep(Duration::from_millis(25));
        };
        proc.stop();
        failures.push_str(&format!("`{}`: {failure}\n{}", proc.cmdline, proc.output()));
    }
    panic!("{server:?} server did not come up:\n{failures}");
}

struct ScriptRun {
    cmdline: String,
    /// None: timed out and killed.
    status: Option<ExitStatus>,
    elapsed: Duration,
    stdout: String,
    stderr: String,
}

fn run_script(cmd: Command, cmdline: String) -> ScriptRun {
    let started = Instant::now();
    let mut script =
        Proc::spawn(cmd, cmdline.clone()).unwrap_or_else(|e| panic!("spawn `{cmdline}`: {e}"));
    let mut status = None;
    let deadline = started + SCRIPT_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(s) = script.exited() {
            status = Some(s);
            break;
        }
        thread::sleep(Duration::from_millis(25));
    }
    // Exited: reaps. Still running: SIGTERM, then kills the tree.
    script.stop();
    ScriptRun {
        cmdline,
        status,
        elapsed: started.elapsed(),
        stdout: script.stdout(),
        stderr: script.stderr(),
    }
}

/// Waits (bounded) for `needle` in the server's stdout.
fn logged(server: &Proc, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if server.stdout().contains(needle) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

fn interop(server: Server) {
    let root = Path::new(MANIFEST_DIR);
    let python = python();
    let (script, node) = match server {
        Server::Everything => {
            let server_js = interop::deps().node_modules.join(SERVER_JS);
            if !server_js.is_file() {
                missing(&format!(
                    "npm package not installed: {} not found",
                    server_js.display()
                ));
            }
            let node = interop::deps().node.clone();
            (root.join(EVERYTHING_SCRIPT), Some(node))
        }
        Server::FastMcp => {
            let server_py = root.join(FASTMCP_SERVER);
            assert!(server_py.is_file(), "missing {}", server_py.display());
            if let Err(e) = python_imports(&python, "uvicorn, mcp.server.fastmcp") {
                missing(&e);
            }
            (root.join(FASTMCP_SCRIPT), None)
        }
    };
    assert!(script.is_file(), "missing {}", script.display());
    if let Err(e) = python_imports(
        &python,
        "anyio, httpx, mcp.client.session, mcp.client.streamable_http",
    ) {
        missing(&e);
    }

    let (mut upstream, up_port) = start_server(server, node.as_deref(), &python);
    let url = format!("http://127.0.0.1:{up_port}/mcp");
    let name = match server {
        Server::Everything => "everything",
        Server::FastMcp => "fastmcp",
    };
    let relay = Relay::reverse(name).args(["--url", &url]).start();
    let base = relay.base_url();

    let mut cmd = Command::new(&python);
    cmd.arg(&script).arg(&base).env("PYTHONUNBUFFERED", "1");
    let mut cmdline = format!("{python} {} {base}", script.display());
    if server == Server::Everything {
        cmd.arg("url");
        cmdline.push_str(" url");
    }
    let run = run_script(cmd, cmdline);
    let ok = run.status.is_some_and(|s| s.success()) && run.stdout.contains("interop ok");

    // With the relay still up: what reached the server.
    let opened_get = ok && logged(&upstream, server.get_marker(), LOG_TIMEOUT);
    let deleted = ok && logged(&upstream, server.delete_marker(), LOG_TIMEOUT);
    let relay_alive = relay.try_status().is_none();
    let server_log = upstream.stdout();
    // The client's (relay's) session id, as the script logged it.
    let client_sid = run
        .stderr
        .lines()
        .find_map(|l| l.split(", session ").nth(1))
        .map(|s| s.trim().to_owned());
    let relay_ended = relay.stop(STOP_TIMEOUT);
    upstream.stop();

    let report = format!(
        "relay: {}\nrelay {}\nserver: {}\nserver {}\nscript: {}\nelapsed: {:.2?}\n\
         --- script stdout ---\n{}\n--- script stderr ---\n{}\n--- relay stderr ---\n{}\n\
         --- server ---\n{}--- end ---",
        relay.cmdline,
        relay_ended,
        upstream.cmdline,
        upstream.ended.as_deref().unwrap_or("?"),
        run.cmdline,
        run.elapsed,
        run.stdout,
        run.stderr,
        relay.stderr_text(),
        upstream.output(),
    );
    let Some(status) = run.status else {
        panic!("interop script timed out after {SCRIPT_TIMEOUT:?} and was killed\n{report}");
    };
    assert!(
        status.success(),
        "interop script failed: {status}\n{report}"
    );
    assert!(
        run.stdout.contains("interop ok"),
        "interop script exited 0 without `interop ok`\n{report}"
    );
    assert!(relay_alive, "the relay exited during the script\n{report}");
    assert!(
        opened_get,
        "the server never logged `{}`: the relay did not open the session's GET stream\n{report}",
        server.get_marker()
    );
    assert!(
        deleted,
        "the server never logged `{}`: the client's DELETE did not reach it\n{report}",
        server.delete_marker()
    );
    let created = server.created_sessions(&server_log);
    let deletes = server.deleted_sessions(&server_log);
    let client_sid =
        client_sid.unwrap_or_else(|| panic!("the script did not log its session id\n{report}"));
    assert_eq!(
        created.len(),
        1,
        "one client session should make one upstream session: {created:?}\n{report}"
    );
    assert_eq!(
        deletes,
        vec![Some(created[0].clone())],
        "the DELETE should name the upstream's session {:?}\n{report}",
        created[0]
    );
    assert_ne!(
        created[0], client_sid,
        "the relay passed the upstream's session id to the client\n{report}"
    );
    assert!(
        !server_log.contains(&client_sid),
        "the relay's own session id {client_sid} reached the server\n{report}"
    );
    eprintln!("{}", run.stdout.trim_end());
    eprintln!("{}", run.stderr.trim_end());
    eprintln!(
        "client session {client_sid} ↔ upstream session {}; DELETE seen by the server",
        created[0]
    );
    eprintln!("relay {relay_ended}");
    eprintln!("server {}", upstream.ended.as_deref().unwrap_or("?"));
}

#[test]
fn python_sdk_reverse_url_to_server_everything() {
    interop(Server::Everything);
    interop::ran("interop_reverse_url::python_sdk_reverse_url_to_server_everything");
}

#[test]
fn python_sdk_reverse_url_to_fastmcp() {
    interop(Server::FastMcp);
    interop::ran("interop_reverse_url::python_sdk_reverse_url_to_fastmcp");
}
