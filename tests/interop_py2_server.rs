//! Handshake-era clients, unchanged, in front of a Python SDK 2.x
//! `MCPServer` (`tests/interop/mcpserver_v2.py`, dual-era) through the relay
//! (issue 13; the era matrix in docs/transport-compatibility.md): the Python
//! SDK 1.x client (`tests/interop/py1_client.py`) and the TypeScript SDK 1.x
//! client (`tests/interop/ts1_client.mjs`), each through
//!
//! - `forward -- CMD` (the server over stdio): passed through;
//! - `reverse -- CMD`, session pool: passed through (the session's
//!   `initialize` goes to its own process);
//! - `reverse -- CMD`, shared pool: the relay probes the server, finds it
//!   modern-capable and drives the process in the 2026-07-28 era, answering
//!   the client's `initialize` from the discover result and stamping its
//!   requests (the server's input rounds carried as `elicitation/create`,
//!   `resources/subscribe` folded into a listen of the session); and the
//!   same with `--upstream-protocol legacy`, which makes the relay
//!   initialize the process instead (its own `initialize`, declaring
//!   elicitation and sampling);
//!
//! and the TypeScript 1.x client through `reverse --url` to the same server
//! over Streamable HTTP (it accepts `initialize`: passed through, session and
//! GET stream included).
//!
//! Each cell runs the clients' steps: `initialize` at a handshake revision,
//! tools, a call with progress, the server's elicitation answered, a
//! resource subscription with an update, and a cancelled call, whose
//! `notifications/cancelled` must reach the server (it records it in
//! INTEROP_EVENTS). Steps the relay does not carry in a cell are skipped there,
//! each with its reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::TempFile;
use common::interop::{self, HttpPeer};
use common::relay::Relay;

const RELAY: &str = env!("CARGO_BIN_EXE_mcp-relay");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const SERVER: &str = "tests/interop/mcpserver_v2.py";
/// The clients give up after 80 s; this is the harness's backstop.
const TIMEOUT: Duration = Duration::from_secs(90);
const RECORD_WAIT: Duration = Duration::from_secs(5);
/// A Python SDK 2.x process takes seconds to start on a loaded machine; the
/// first session waits for it (and the relay's probe) in the queue.
const QUEUE_TIMEOUT: &str = "30s";

#[derive(Clone, Copy)]
enum Client {
    Python1,
    TypeScript1,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Python1 => "Python SDK 1.x",
            Client::TypeScript1 => "TypeScript SDK 1.x",
        }
    }

    fn command(self) -> Command {
        let root = Path::new(MANIFEST_DIR);
        match self {
            Client::Python1 => {
                let py = interop::python();
                if let Err(e) = interop::python_imports(&py, "mcp.client.streamable_http") {
                    interop::missing("interop_py2_server", &e);
                }
                let mut cmd = Command::new(py);
                cmd.arg(root.join("tests/interop/py1_client.py"));
                cmd
            }
            Client::TypeScript1 => {
                let deps = interop::deps();
                let sdk = deps
                    .node_modules
                    .join("@modelcontextprotocol/sdk/package.json");
                if !sdk.is_file() {
                    interop::missing("interop_py2_server", &format!("no {}", sdk.display()));
                }
                let mut cmd = Command::new(&deps.node);
                cmd.arg(root.join("tests/interop/ts1_client.mjs"))
                    .env("INTEROP_NODE_MODULES", &deps.node_modules);
                cmd
            }
        }
    }
}

fn python2() -> PathBuf {
    interop::python2("anyio, mcp_types, mcp.server.mcpserver")
        .unwrap_or_else(|e| interop::missing("interop_py2_server", &e))
}

/// Runs `client` with `args` (`stdio RELAY…` or `http URL`), skipping
/// `skip`, `env` added (a relay it spawns and that relay's server inherit
/// it); panics with its report and `context()` unless every step run passed.
fn cell(
    client: Client,
    what: &str,
    args: &[&str],
    skip: &[&str],
    env: &[(&str, &str)],
    context: &dyn Fn() -> String,
) {
    let what = format!("{}: {what}", client.name());
    let mut cmd = client.command();
    cmd.args(args)
        .env("INTEROP_SKIP", skip.join(","))
        .envs(env.iter().copied())
        .current_dir(MANIFEST_DIR);
    let (ok, stdout, report) = interop::run_script(cmd, &what, TIMEOUT);
    assert!(ok, "{what}\n{report}\n{}", context());
    eprintln!("--- {what} ---\n{}", stdout.trim_end());
}

fn assert_saw_cancel(events: &TempFile, what: &str) {
    events.wait_for(RECORD_WAIT, what, |t| t.contains("cancelled slow"));
}

/// The stdio cells for one client: forward, then reverse in each pool.
fn through_stdio_modes(client: Client, tag: &str) {
    let python2 = python2();
    let py2 = python2.to_string_lossy().into_owned();

    let events = TempFile::new(tag, "forward.events");
    let env = [("INTEROP_EVENTS", events.path_str())];
    cell(
        client,
        "forward -- mcpserver_v2",
        &["stdio", RELAY, "forward", "--", &py2, SERVER, "stdio"],
        &[],
        &env,
        &|| events.read(),
    );
    assert_saw_cancel(&events, "forward: cancelled slow");

    for (pool, flags, skip) in [
        ("session", &[][..], &[][..]),
        // The shared pool drives the dual-era process in the 2026-07-28 era
        // (docs/eras.md, "In `reverse -- CMD`"): the server's input rounds
        // become `elicitation/create` requests to the client, and
        // `resources/subscribe` a listen of the client's session.
        ("shared", &[][..], &[][..]),
        (
            "shared",
            // The relay initializes each process itself, declaring
            // elicitation and sampling: the server's elicitation goes to
            // the one session with a call in flight.
            &["--upstream-protocol", "legacy"][..],
            &[][..],
        ),
    ] {
        let events = TempFile::new(tag, &format!("reverse-{pool}-{}.events", flags.len()));
        let relay = Relay::reverse("py2")
            .args(["--pool", pool, "--queue-timeout", QUEUE_TIMEOUT])
            .args(flags)
            .env(&[("INTEROP_EVENTS", events.path_str())])
            .command([py2.as_str(), SERVER, "stdio"])
            .start();
        let url = format!("{}/mcp", relay.base_url());
        let what = format!("reverse --pool {pool} {flags:?} -- mcpserver_v2");
        // `cancel` runs for every client: the relay ends a cancelled
        // request's POST at once, with no answer (the Python 1.x client
        // raised on the `upstream_closed` answer it used to get at DELETE).
        cell(client, &what, &["http", &url], skip, &[], &|| {
            format!("{}\n{}", relay.stderr_tail(40), events.read())
        });
        if !skip.contains(&"cancel") {
            assert_saw_cancel(&events, &format!("{what}: cancelled slow"));
        }
    }
}

#[test]
fn python_sdk_1_client_reaches_a_python_sdk_2_stdio_server_in_every_stdio_mode() {
    through_stdio_modes(Client::Python1, "py1");
    interop::ran("interop_py2_server::python_sdk_1_client_in_every_stdio_mode");
}

#[test]
fn typescript_sdk_1_client_reaches_a_python_sdk_2_server_in_every_mode() {
    through_stdio_modes(Client::TypeScript1, "ts1");

    let events = TempFile::new("ts1", "url.events");
    let server = HttpPeer::start(
        &python2(),
        &[SERVER, "http"],
        &[("INTEROP_EVENTS", events.path_str())],
    );
    let relay = Relay::reverse("py2-http")
        .args(["--url", &server.url()])
        .start();
    let url = format!("{}/mcp", relay.base_url());
    cell(
        Client::TypeScript1,
        "reverse --url mcpserver_v2 (HTTP)",
        &["http", &url],
        &[],
        &[],
        &|| {
            format!(
                "{}\n{}{}",
                relay.stderr_tail(40),
                server.trace(),
                server.stderr()
            )
        },
    );
    assert_saw_cancel(&events, "reverse --url: cancelled slow");
    interop::ran("interop_py2_server::typescript_sdk_1_client_in_every_mode");
}
