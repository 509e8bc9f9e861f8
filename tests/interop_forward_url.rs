//! Interop: the official Python MCP SDK stdio client talks, through
//! `mcp-relay forward --url http://127.0.0.1:PORT/mcp`, to real MCP Streamable
//! HTTP servers:
//!
//! * `@modelcontextprotocol/server-everything` in `streamableHttp` mode (the
//!   TypeScript SDK's server transport, with an event store);
//! * `tests/interop/fastmcp_server.py`, a Python SDK FastMCP server (which
//!   rejects a `Host` other than `127.0.0.1:*`/`localhost:*` with 421).
//!
//! One test per server. Each starts the server on a free port and waits
//! (bounded) for it to accept connections, runs
//! `tests/interop/forward_url_client.py` (which spawns the relay with
//! `--log-level debug` over stdio and runs initialize, tools, echo, progress,
//! roots or logging, ping, and checks the relay exits 0 by itself once its
//! stdin closes) with a hard timeout, then checks from the server's own log
//! that the relay opened the GET stream and ended the session with DELETE.
//! Every process is killed and reaped on every path (the server by
//! `Upstream`'s Drop); a failure prints the script's output (the relay's
//! stderr included) and the server's.
//!
//! The test provisions its peers itself (`.ci/install-deps.sh`, into
//! target/test-deps/, once per test binary); if that fails, the test fails
//! with a message saying what to install. It never passes without running.
//!
//! Debugging: `cargo test --test interop_forward_url -- --nocapture` prints
//! each script's summary and the server's log; or start a server by hand
//! (`PORT=3001 node .../server-everything/dist/index.js streamableHttp`,
//! `target/test-deps/venv/bin/python tests/interop/fastmcp_server.py 3002`) and run the script against
//! it, with `INTEROP_DIRECT=1` to bypass the relay:
//! `target/test-deps/venv/bin/python tests/interop/forward_url_client.py everything target/debug/mcp-relay -- forward --url http://127.0.0.1:3001/mcp`.

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

const RELAY: &str = env!("CARGO_BIN_EXE_mcp-relay");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const SERVER_JS: &str = "@modelcontextprotocol/server-everything/dist/index.js";
const FASTMCP_SERVER: &str = "tests/interop/fastmcp_server.py";
const SCRIPT: &str = "tests/interop/forward_url_client.py";
/// The script stops itself after 60 s; this is the harness's backstop.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(75);
/// Time for a server to accept connections once started.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Time for a server's log to show a request the relay has already made.
const LOG_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for a server to exit after SIGTERM before the tree is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    Everything,
    FastMcp,
}

impl Server {
    /// The script's profile name.
    fn profile(self) -> &'static str {
        match self {
            Server::Everything => "everything",
            Server::FastMcp => "fastmcp",
        }
    }

    /// What the server prints (stdout or stderr) once its socket is bound:
    /// with the port accepting, this tells our server from a stranger that
    /// took the port between probing and binding.
    fn ready_marker(self, port: u16) -> String {
        match self {
            Server::Everything => format!("listening on port {port}"),
            Server::FastMcp => format!("Uvicorn running on http://127.0.0.1:{port}"),
        }
    }

    /// Log evidence (in the server's stdout) that the relay opened the
    /// session's GET stream.
    fn get_marker(self) -> &'static str {
        match self {
            Server::Everything => "Establishing new SSE stream for session",
            Server::FastMcp => "upstream: GET /mcp ",
        }
    }

    /// Log evidence (in the server's stdout) that the relay ended the
    /// session with DELETE.
    fn delete_marker(self) -> &'static str {
        match self {
            Server::Everything => "Received session termination request",
            Server::FastMcp => "upstream: DELETE /mcp ",
        }
    }
}

/// A prerequisite missing after provisioning: the test fails, never passes.
fn missing(what: &str) -> ! {
    interop::missing("interop_forward_url", what);
}

/// A running upstream MCP server; stopped and reaped on drop.
struct Upstream {
    child: Option<Child>,
    port: u16,
    cmdline: String,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    threads: Vec<thread::JoinHandle<()>>,
    /// How the server ended, once stopped.
    ended: Option<String>,
}

impl Upstream {
    /// Starts the server on a free port and waits until it accepts
    /// connections. Retries on a fresh port if it exits early (the port may
    /// have been taken between probing and binding).
    fn start(server: Server, node: Option<&Path>, python: &str) -> Upstream {
        let mut failures = String::new();
        for _ in 0..3 {
            match Upstream::try_start(server, node, python) {
                Ok(upstream) => return upstream,
                Err(e) => failures.push_str(&e),
            }
        }
        panic!("{server:?} server did not come up:\n{failures}");
    }

    fn try_start(server: Server, node: Option<&Path>, python: &str) -> Result<Upstream, String> {
        let root = Path::new(MANIFEST_DIR);
        let port = free_port();
        let (mut cmd, cmdline) = match server {
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
        cmd.current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        // Reaped by Upstream::stop (also on drop), which clippy cannot see.
        #[allow(clippy::zombie_processes)]
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn `{cmdline}`: {e}\n"))?;
        let (stdout, out_thread) = drain(child.stdout.take().unwrap());
        let (stderr, err_thread) = drain(child.stderr.take().unwrap());
        let mut upstream = Upstream {
            child: Some(child),
            port,
            cmdline,
            stdout,
            stderr,
            threads: vec![out_thread, err_thread],
            ended: None,
        };
        let marker = server.ready_marker(port);
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            let exited = upstream.child.as_mut().unwrap().try_wait();
            if let Ok(Some(status)) = exited {
                upstream.stop();
                return Err(format!(
                    "`{}` exited before accepting connections: {status}\n{}",
                    upstream.cmdline,
                    upstream.output()
                ));
            }
            if upstream.output().contains(&marker) && accepts(port) {
                return Ok(upstream);
            }
            thread::sleep(Duration::from_millis(25));
        }
        upstream.stop();
        Err(format!(
            "`{}`: not accepting connections (with `{marker}` logged) within {READY_TIMEOUT:?}\n{}",
            upstream.cmdline,
            upstream.output()
        ))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    fn stdout(&self) -> String {
        snapshot(&self.stdout)
    }

    fn output(&self) -> String {
        format!(
            "--- server stdout ---\n{}\n--- server stderr ---\n{}\n",
            snapshot(&self.stdout),
            snapshot(&self.stderr)
        )
    }

    /// Waits (bounded) for `needle` in the server's stdout.
    fn logged(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGTERM, a bounded wait, then SIGKILL for the whole tree; always
    /// reaps. Idempotent.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let ended = match child.try_wait() {
            Ok(Some(s)) => format!("had already exited: {s}"),
            _ => {
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGTERM);
                }
                match wait_bounded(&mut child, STOP_TIMEOUT) {
                    Ok(Some(s)) => format!("exited after SIGTERM: {s}"),
                    Ok(None) => {
                        kill_tree(&mut child);
                        format!("still running {STOP_TIMEOUT:?} after SIGTERM; killed")
                    }
                    Err(e) => {
                        kill_tree(&mut child);
                        format!("{e}; killed")
                    }
                }
            }
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        for t in self.threads.drain(..) {
            join_bounded(t, deadline);
        }
        self.ended = Some(ended);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

struct ScriptRun {
    cmdline: String,
    /// None: timed out and killed.
    status: Option<ExitStatus>,
    elapsed: Duration,
    stdout: String,
    stderr: String,
}

fn run_script(mut cmd: Command, cmdline: String) -> ScriptRun {
    cmd.current_dir(MANIFEST_DIR)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let started = Instant::now();
    // Every path below reaps the child: wait_bounded, or kill_tree (which
    // waits) on error and timeout; clippy cannot see through kill_tree.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{cmdline}`: {e}"));
    let (out_buf, out_thread) = drain(child.stdout.take().unwrap());
    let (err_buf, err_thread) = drain(child.stderr.take().unwrap());
    let status = match wait_bounded(&mut child, SCRIPT_TIMEOUT) {
        Ok(Some(s)) => Some(s),
        Ok(None) => {
            kill_tree(&mut child);
            None
        }
        Err(e) => {
            kill_tree(&mut child);
            panic!("`{cmdline}`: {e}");
        }
    };
    let elapsed = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(5);
    join_bounded(out_thread, deadline);
    join_bounded(err_thread, deadline);
    ScriptRun {
        cmdline,
        status,
        elapsed,
        stdout: snapshot(&out_buf),
        stderr: snapshot(&err_buf),
    }
}

fn interop(server: Server) {
    let root = Path::new(MANIFEST_DIR);
    let script = root.join(SCRIPT);
    assert!(script.is_file(), "missing {}", script.display());

    let python = python();
    let node = match server {
        Server::Everything => {
            if let Err(e) = python_imports(&python, "anyio, mcp.client.stdio, mcp.client.session") {
                missing(&e);
            }
            let server_js = interop::deps().node_modules.join(SERVER_JS);
            if !server_js.is_file() {
                missing(&format!(
                    "npm package not installed: {} not found",
                    server_js.display()
                ));
            }
            let node = interop::deps().node.clone();
            Some(node)
        }
        Server::FastMcp => {
            let server_py = root.join(FASTMCP_SERVER);
            assert!(server_py.is_file(), "missing {}", server_py.display());
            if let Err(e) = python_imports(
                &python,
                "anyio, uvicorn, mcp.client.stdio, mcp.client.session, mcp.server.fastmcp",
            ) {
                missing(&e);
            }
            None
        }
    };

    let mut upstream = Upstream::start(server, node.as_deref(), &python);
    let url = upstream.url();
    let relay_args = ["forward", "--url", &url, "--log-level", "debug"];
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg(server.profile())
        .arg(RELAY)
        .arg("--")
        .args(relay_args)
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("INTEROP_DIRECT");
    let cmdline = format!(
        "{python} {} {} {RELAY} -- {}",
        script.display(),
        server.profile(),
        relay_args.join(" ")
    );
    let run = run_script(cmd, cmdline);

    // The relay has exited (or been killed with the script): whatever it sent
    // has reached the server, bar its log line being flushed.
    let ok = run.status.is_some_and(|s| s.success()) && run.stdout.contains("interop ok");
    let opened_get = !ok || upstream.logged(server.get_marker(), LOG_TIMEOUT);
    let deleted = !ok || upstream.logged(server.delete_marker(), LOG_TIMEOUT);
    upstream.stop();

    let report = format!(
        "server: {}\nserver {}\nscript: {}\nelapsed: {:.2?}\n--- script stdout ---\n{}\n--- script stderr (relay stderr included) ---\n{}\n{}--- end ---",
        upstream.cmdline,
        upstream.ended.as_deref().unwrap_or("?"),
        run.cmdline,
        run.elapsed,
        run.stdout,
        run.stderr,
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
    assert!(
        opened_get,
        "the server never logged `{}`: the relay did not open the session's GET stream\n{report}",
        server.get_marker()
    );
    assert!(
        deleted,
        "the server never logged `{}`: the relay exited without ending the session with DELETE\n{report}",
        server.delete_marker()
    );
    eprintln!("{}", run.stdout.trim_end());
    eprintln!("{}", run.stderr.trim_end());
    eprintln!("{}", upstream.output().trim_end());
    eprintln!("server {}", upstream.ended.as_deref().unwrap_or("?"));
}

#[test]
fn python_sdk_forward_url_to_server_everything() {
    interop(Server::Everything);
    interop::ran("interop_forward_url::python_sdk_forward_url_to_server_everything");
}

#[test]
fn python_sdk_forward_url_to_fastmcp() {
    interop(Server::FastMcp);
    interop::ran("interop_forward_url::python_sdk_forward_url_to_fastmcp");
}
