//! The interop matrix of the 2026-07-28 clients (issue 13; the era matrix
//! in docs/transport-compatibility.md): the official TypeScript client 2.x
//! (`@modelcontextprotocol/client`, `tests/interop/ts2_client.mjs`,
//! tests/interop_ts2.rs) and the Python client 2.x (`mcp` 2.x `Client`,
//! `tests/interop/py2_client.py`, tests/interop_py2_client.rs), both in
//! version negotiation `auto` (they probe with `server/discover` and fall
//! back to `initialize`), each through every mode of the relay:
//!
//! | mode | servers |
//! |---|---|
//! | `forward -- CMD` | echo_server (handshake era), server-everything (handshake era), `tests/interop/mcpserver_v2.py` (Python SDK 2.x `MCPServer`, dual-era) over stdio |
//! | `forward --url` | `mcpserver_v2.py` over Streamable HTTP, `tests/interop/fastmcp_server.py` (Python SDK 1.x FastMCP, handshake era) |
//! | `reverse -- CMD`, `--pool session` and `shared` | echo_server, server-everything |
//! | `reverse --url` | `mcpserver_v2.py`, `fastmcp_server.py` over Streamable HTTP |
//!
//! In every cell the client must negotiate 2026-07-28 (each end can reach it
//! through the relay in every cell: the relay bridges handshake-era
//! servers), and runs its steps (the same names and report lines in both
//! scripts): tools listed, a call with progress, a server → client request
//! (elicitation) where the server makes one, a resource subscription with
//! an update where the server has subscribable resources, and a cancelled
//! call. Where the server records what reached it (echo_server `--log`, the
//! Python servers' INTEROP_EVENTS), the test also checks that the
//! cancellation reached the server.
//!
//! A step the relay does not carry in a cell is skipped there
//! (`INTEROP_SKIP`), each with the reason next to it; the report of a run
//! (`--nocapture`) prints every step's outcome.
//!
//! Peers come from `target/test-deps` (`.ci/install-deps.sh`, run by the
//! tests): the npm prefix (the TypeScript client, server-everything), the
//! 1.x virtualenv (FastMCP) and the 2.x one (the Python client,
//! `MCPServer`). A missing peer fails the test, saying what to install.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::TempFile;
use super::interop::{self, HttpPeer};
use super::relay::Relay;

/// The 2026-07-28 client a test binary runs.
#[derive(Clone, Copy)]
pub enum Client {
    TypeScript,
    Python,
}

impl Client {
    /// The test binary's name: markers, temporary files, what is missing.
    fn tag(self) -> &'static str {
        match self {
            Client::TypeScript => "interop_ts2",
            Client::Python => "interop_py2_client",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Client::TypeScript => "the 2.x TypeScript client",
            Client::Python => "the 2.x Python client",
        }
    }

    /// The client's command, before its mode arguments.
    fn command(self) -> Command {
        let root = Path::new(MANIFEST_DIR);
        match self {
            Client::TypeScript => {
                let deps = interop::deps();
                if !deps.node_modules.join(CLIENT_PKG).is_file() {
                    interop::missing(
                        self.tag(),
                        &format!("no {CLIENT_PKG} under {}", deps.node_modules.display()),
                    );
                }
                let mut cmd = Command::new(&deps.node);
                cmd.arg(root.join("tests/interop/ts2_client.mjs"))
                    .env("INTEROP_NODE_MODULES", &deps.node_modules);
                cmd
            }
            Client::Python => {
                let py = interop::python2("anyio, mcp_types, mcp.client.client")
                    .unwrap_or_else(|e| interop::missing(self.tag(), &e));
                let mut cmd = Command::new(py);
                cmd.arg(root.join("tests/interop/py2_client.py"));
                cmd
            }
        }
    }

    fn ran(self, test: &str) {
        interop::ran(&format!("{}::{test}", self.tag()));
    }
}

const RELAY: &str = env!("CARGO_BIN_EXE_mcp-relay");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const CLIENT_PKG: &str = "@modelcontextprotocol/client/package.json";
const EVERYTHING_JS: &str = "@modelcontextprotocol/server-everything/dist/index.js";
const MCPSERVER_V2: &str = "tests/interop/mcpserver_v2.py";
const FASTMCP_V1: &str = "tests/interop/fastmcp_server.py";
/// The client gives up after 90 s; this is the harness's backstop.
const TIMEOUT: Duration = Duration::from_secs(100);
/// How long a cancellation may take to reach the server's record.
const RECORD_WAIT: Duration = Duration::from_secs(5);
/// server-everything takes seconds to start on a loaded machine; the first
/// request waits for it in the queue.
const QUEUE_TIMEOUT: &str = "30s";

fn python2(c: Client) -> PathBuf {
    interop::python2("anyio, mcp_types, mcp.server.mcpserver")
        .unwrap_or_else(|e| interop::missing(c.tag(), &e))
}

fn python1(c: Client) -> PathBuf {
    let py = interop::python();
    if let Err(e) = interop::python_imports(&py, "mcp.server.fastmcp") {
        interop::missing(c.tag(), &e);
    }
    PathBuf::from(py)
}

fn everything_js(c: Client) -> String {
    let js = interop::deps().node_modules.join(EVERYTHING_JS);
    if !js.is_file() {
        interop::missing(c.tag(), &format!("no {}", js.display()));
    }
    js.to_string_lossy().into_owned()
}

/// Where the client reaches the relay.
enum To<'a> {
    /// The client spawns `mcp-relay ARGS…` and talks stdio to it.
    Stdio(&'a [&'a str]),
    /// The relay listens at this URL.
    Http(&'a str),
}

/// One cell: runs the client with `server`'s profile against the relay,
/// skipping `skip` (steps the relay does not carry there: see the callers).
/// Panics with the client's report and `context` unless every step run
/// passed at 2026-07-28.
/// `env` goes to the client, and so to a relay it spawns and that relay's
/// server.
fn cell(
    c: Client,
    what: &str,
    to: To<'_>,
    server: &str,
    skip: &[&str],
    env: &[(&str, &str)],
    context: &dyn Fn() -> String,
) {
    let mut cmd = c.command();
    cmd.env("INTEROP_SERVER", server)
        .env("INTEROP_EXPECT", "2026-07-28")
        .env("INTEROP_SKIP", skip.join(","))
        .envs(env.iter().copied())
        .current_dir(Path::new(MANIFEST_DIR));
    match to {
        To::Stdio(args) => cmd.arg("stdio").arg(RELAY).args(args),
        To::Http(url) => cmd.arg("http").arg(url),
    };
    let (ok, stdout, report) = interop::run_script(cmd, what, TIMEOUT);
    assert!(ok, "{what}: {} failed\n{report}\n{}", c.name(), context());
    assert!(
        stdout.contains("negotiated 2026-07-28 era modern"),
        "{what}: {report}"
    );
    eprintln!("--- {what} ---\n{}", stdout.trim_end());
}

fn no_context() -> String {
    String::new()
}

/// The cancelled call reached the server: echo_server logs each line it
/// reads (`--log`), so the `notifications/cancelled` (the client's over
/// stdio; the relay's when the client closes the call's stream over HTTP)
/// is in it.
fn assert_echo_saw_cancel(log: &TempFile, what: &str) {
    log.wait_for(RECORD_WAIT, what, |t| {
        t.lines().any(|l| l.contains("\"notifications/cancelled\""))
    });
}

/// The Python servers record a cancelled `slow` in INTEROP_EVENTS.
fn assert_python_saw_cancel(events: &TempFile, what: &str) {
    events.wait_for(RECORD_WAIT, what, |t| t.contains("cancelled slow"));
}

/// `forward -- CMD` in front of echo_server, server-everything and
/// `MCPServer` over stdio.
pub fn through_forward_stdio(c: Client) {
    let python2 = python2(c);
    let py2 = python2.to_string_lossy().into_owned();
    let echo = super::echo_server().to_string_lossy().into_owned();
    let everything = everything_js(c);

    // A handshake-era stdio server: the relay initializes it and answers
    // discover. (The TypeScript client probes on a sibling relay process of
    // its own, so two echo servers write the log.)
    let log = TempFile::new(c.tag(), "forward-echo.log");
    let args = ["forward", "--", &echo, "--log", log.path_str()];
    cell(
        c,
        "forward -- echo_server",
        To::Stdio(&args),
        "echo",
        &[],
        &[],
        &|| log.read(),
    );
    assert_echo_saw_cancel(&log, "forward -- echo_server: notifications/cancelled");

    // server-everything (TypeScript SDK 1.x, handshake era): its elicitation
    // request becomes an InputRequiredResult round, resources/subscribe
    // carries subscriptions/listen.
    let args = ["forward", "--", "node", &everything, "stdio"];
    cell(
        c,
        "forward -- server-everything",
        To::Stdio(&args),
        "everything",
        &[],
        &[],
        &no_context,
    );

    // A dual-era stdio server: modern end to end.
    let events = TempFile::new(c.tag(), "forward-mcpserver.events");
    let args = ["forward", "--", &py2, MCPSERVER_V2, "stdio"];
    let env = [("INTEROP_EVENTS", events.path_str())];
    cell(
        c,
        "forward -- mcpserver_v2 (stdio)",
        To::Stdio(&args),
        "mcpserver",
        &[],
        &env,
        &|| events.read(),
    );
    assert_python_saw_cancel(&events, "forward -- mcpserver_v2: cancelled slow");

    c.ran("through_forward_stdio");
}

/// `reverse -- CMD`, both pools, in front of echo_server and
/// server-everything.
pub fn through_reverse_stdio_both_pools(c: Client) {
    let everything = everything_js(c);
    for pool in ["session", "shared"] {
        let log = TempFile::new(c.tag(), &format!("reverse-{pool}-echo.log"));
        let relay = Relay::reverse("echo")
            .args(["--pool", pool, "--queue-timeout", QUEUE_TIMEOUT])
            .echo_server(&["--log", log.path_str()])
            .start();
        let url = format!("{}/mcp", relay.base_url());
        let what = format!("reverse --pool {pool} -- echo_server");
        cell(c, &what, To::Http(&url), "echo", &[], &[], &|| {
            relay.stderr_tail(40)
        });
        assert_echo_saw_cancel(&log, &format!("{what}: notifications/cancelled"));
        drop(relay);

        // server-everything keeps its simulated updates per process (the
        // trigger tool starts them in the process it reaches): the shared
        // pool gets one process, so the listen and the trigger meet. In the
        // session pool every 2026-07-28 request leases a process of its own
        // (there is no session to pin it to), so a trigger never reaches the
        // listen's process: the subscription step is left out there (the
        // listen itself is carried in both pools: tests/reverse_eras.rs,
        // tests/interop_reverse_eras.rs).
        let (size, skip): (&[&str], &[&str]) = match pool {
            "shared" => (&["--max-connections", "1"], &[]),
            _ => (&[], &["subscribe"]),
        };
        let relay = Relay::reverse("everything")
            .args(["--pool", pool, "--queue-timeout", QUEUE_TIMEOUT])
            .args(size)
            .command(["node", &everything, "stdio"])
            .start();
        let url = format!("{}/mcp", relay.base_url());
        let what = format!("reverse --pool {pool} -- server-everything");
        cell(c, &what, To::Http(&url), "everything", skip, &[], &|| {
            relay.stderr_tail(40)
        });
    }
    c.ran("through_reverse_stdio_both_pools");
}

/// `forward --url` and `reverse --url` in front of a Python SDK 2.x
/// `MCPServer` (dual-era: passed through in the modern era) and a Python SDK
/// 1.x FastMCP server (handshake era: bridged). One server of each kind
/// serves all four cells.
pub fn through_forward_url_and_reverse_url(c: Client) {
    let python2 = python2(c);
    let python1 = python1(c);
    let events2 = TempFile::new(c.tag(), "url-mcpserver.events");
    let events1 = TempFile::new(c.tag(), "url-fastmcp.events");
    let modern = HttpPeer::start(
        &python2,
        &[MCPSERVER_V2, "http"],
        &[("INTEROP_EVENTS", events2.path_str())],
    );
    let handshake = HttpPeer::start(
        &python1,
        &[FASTMCP_V1],
        &[("INTEROP_EVENTS", events1.path_str())],
    );
    let trace = |peer: &HttpPeer| format!("--- server ---\n{}{}", peer.trace(), peer.stderr());

    // forward --url, modern server: every step passes through.
    let url = modern.url();
    let args = ["forward", "--url", &url];
    cell(
        c,
        "forward --url mcpserver_v2",
        To::Stdio(&args),
        "mcpserver",
        &[],
        &[],
        &|| trace(&modern),
    );
    assert_python_saw_cancel(&events2, "forward --url mcpserver_v2: cancelled slow");

    // forward --url, handshake-era server: bridged (the server's
    // elicitation as an InputRequiredResult round).
    let url = handshake.url();
    let args = ["forward", "--url", &url];
    cell(
        c,
        "forward --url fastmcp (1.x)",
        To::Stdio(&args),
        "fastmcp",
        &[],
        &[],
        &|| trace(&handshake),
    );
    assert_python_saw_cancel(&events1, "forward --url fastmcp: cancelled slow");

    for (peer, events, profile, skip) in [
        (&modern, &events2, "mcpserver", &[][..]),
        // Relay-owned upstream sessions (docs/eras.md, "Over HTTP").
        (&handshake, &events1, "fastmcp", &[][..]),
    ] {
        let _ = std::fs::remove_file(&events.0);
        let relay = Relay::reverse("url").args(["--url", &peer.url()]).start();
        let url = format!("{}/mcp", relay.base_url());
        let what = format!("reverse --url {profile}");
        cell(c, &what, To::Http(&url), profile, skip, &[], &|| {
            format!("{}\n{}", relay.stderr_tail(40), trace(peer))
        });
        assert_python_saw_cancel(events, &format!("{what}: cancelled slow"));
    }
    c.ran("through_forward_url_and_reverse_url");
}
