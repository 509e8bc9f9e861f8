//! Interop across protocol eras over HTTP upstreams (issue 13,
//! docs/eras.md): a Python SDK 2.x `MCPServer` over Streamable HTTP
//! (`tests/interop/modern_http_server.py`, which serves both eras on one
//! endpoint) behind `mcp-relay forward --url` and `mcp-relay reverse --url`.
//!
//! - The Python SDK 2.x client (`tests/interop/url_modern.py`, mode `auto`)
//!   negotiates 2026-07-28 through `forward --url` whatever the knob:
//!   `modern` and `auto` pass its requests with the modern headers and no
//!   session (the server's trace shows only `protocol='2026-07-28'`);
//!   `legacy` makes the relay initialize a session itself and bridge. Through
//!   `reverse --url` likewise: its stateless requests pass with their
//!   headers, or (`legacy`) go on a relay-owned upstream session.
//! - The Python SDK 1.x client (`tests/interop/url_handshake_v1.py`) through
//!   `forward --url --upstream-protocol modern`: the relay answers its
//!   `initialize` from `server/discover` and stamps its requests.
//!
//! - The Python SDK 2.x client through `reverse --url` and `forward --url`
//!   to a handshake-era Python SDK 1.x FastMCP server over Streamable HTTP
//!   (`tests/interop/handshake_http_v1.py`, client script
//!   `tests/interop/url_bridged.py`): an elicitation round, a
//!   `subscriptions/listen` hearing a resource update and a tool list
//!   change, and cancellation of an abandoned call.
//! - The Python SDK 1.x client subscribing to a resource of the 2.x server
//!   (`tests/interop/url_subscribe_v1.py`) through both modes: the relay's
//!   `subscriptions/listen` carries the update.
//!
//! Every call works, progress included. The 2.x peers come from
//! `target/test-deps/venv2` (or `INTEROP_PYTHON2`), the 1.x client from
//! `target/test-deps/venv`; a missing peer fails the test, saying what to
//! install.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::interop::{self, HttpPeer, python_imports};
use common::relay::Relay;

const RELAY: &str = env!("CARGO_BIN_EXE_mcp-relay");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const TIMEOUT: Duration = Duration::from_secs(60);

fn python2() -> PathBuf {
    interop::python2("anyio, mcp_types, mcp.client.client, mcp.server.mcpserver")
        .unwrap_or_else(|e| interop::missing("interop_url_eras", &e))
}

/// The 2.x server on a free port; killed (with its children) on drop.
struct Server(interop::HttpPeer);

impl Server {
    fn start(python: &Path) -> Server {
        Server(interop::HttpPeer::start(
            python,
            &["tests/interop/modern_http_server.py"],
            &[],
        ))
    }

    fn url(&self) -> String {
        self.0.url()
    }

    /// The server's request trace so far (`upstream: …` lines).
    fn trace(&self) -> String {
        self.0.trace()
    }
}

/// Runs `python script args…`; (success, stdout, report).
fn run(python: &Path, script: &str, args: &[&str]) -> (bool, String, String) {
    let root = Path::new(MANIFEST_DIR);
    let mut cmd = Command::new(python);
    cmd.arg(root.join(script)).args(args).current_dir(root);
    interop::run_script(cmd, &format!("{script} {args:?}"), TIMEOUT)
}

/// The trace lines added since `before` bytes.
fn since(server: &Server, before: usize) -> String {
    server.trace().get(before..).unwrap_or_default().to_string()
}

#[test]
fn python_sdk_2_client_negotiates_2026_through_forward_url_with_every_knob() {
    let python = python2();
    let server = Server::start(&python);
    let url = server.url();
    for knob in ["auto", "modern", "legacy"] {
        let before = server.trace().len();
        let (ok, stdout, report) = run(
            &python,
            "tests/interop/url_modern.py",
            &["forward", RELAY, &url, "--upstream-protocol", knob],
        );
        let trace = since(&server, before);
        assert!(
            ok,
            "--upstream-protocol {knob}\n{report}\n--- server ---\n{trace}"
        );
        let posts: Vec<&str> = trace
            .lines()
            .filter(|l| l.contains("upstream: POST"))
            .collect();
        assert!(!posts.is_empty(), "{trace}");
        if knob == "legacy" {
            // The relay's own session: initialize, then the bridged calls.
            assert!(trace.contains("session="), "{knob}: {trace}");
            assert!(!trace.contains("protocol='2026-07-28'"), "{knob}: {trace}");
        } else {
            assert!(
                posts
                    .iter()
                    .all(|l| l.contains("protocol='2026-07-28'") && !l.contains("session=")),
                "{knob}: every request modern and sessionless:\n{trace}"
            );
            assert!(
                !trace.contains("GET /mcp"),
                "{knob}: no GET stream:\n{trace}"
            );
        }
        eprintln!(
            "forward --url --upstream-protocol {knob}: {}",
            stdout.trim_end()
        );
    }
    interop::ran("interop_url_eras::python_sdk_2_client_negotiates_2026_through_forward_url");
}

#[test]
fn python_sdk_2_client_negotiates_2026_through_reverse_url_with_every_knob() {
    let python = python2();
    let server = Server::start(&python);
    for knob in ["auto", "modern", "legacy"] {
        let relay = Relay::reverse("eras")
            .args(["--url", &server.url(), "--upstream-protocol", knob])
            .start();
        let target = format!("{}/mcp", relay.base_url());
        let before = server.trace().len();
        let (ok, stdout, report) = run(
            &python,
            "tests/interop/url_modern.py",
            &["reverse", &target],
        );
        let trace = since(&server, before);
        assert!(
            ok,
            "{knob}: {report}\n--- server ---\n{trace}\n{}",
            relay.stderr_dump()
        );
        let posts: Vec<&str> = trace
            .lines()
            .filter(|l| l.contains("upstream: POST"))
            .collect();
        if knob == "legacy" {
            // One relay-owned session carries the client's requests.
            assert!(
                posts
                    .iter()
                    .all(|l| l.contains("session=") || !l.contains("protocol=")),
                "{knob}: {trace}"
            );
            assert!(!trace.contains("protocol='2026-07-28'"), "{knob}: {trace}");
        } else {
            assert!(
                posts
                    .iter()
                    .all(|l| l.contains("protocol='2026-07-28'") && !l.contains("session=")),
                "{knob}: {trace}"
            );
        }
        eprintln!(
            "reverse --url --upstream-protocol {knob}: {}",
            stdout.trim_end()
        );
    }
    interop::ran("interop_url_eras::python_sdk_2_client_negotiates_2026_through_reverse_url");
}

#[test]
fn python_sdk_1_client_reaches_a_2026_server_through_forward_url_modern() {
    let python = python2();
    let python1 = interop::python();
    if let Err(e) = python_imports(&python1, "mcp.client.stdio") {
        interop::missing("interop_url_eras", &e);
    }
    let server = Server::start(&python);
    let url = server.url();
    let (ok, stdout, report) = run(
        Path::new(&python1),
        "tests/interop/url_handshake_v1.py",
        &[RELAY, &url, "--upstream-protocol", "modern"],
    );
    let trace = server.trace();
    assert!(ok, "{report}\n--- server ---\n{trace}");
    assert!(
        trace
            .lines()
            .filter(|l| l.contains("upstream: "))
            .all(|l| l.contains("upstream: POST") && l.contains("protocol='2026-07-28'")),
        "only stamped 2026-07-28 POSTs, no initialize, no GET:\n{trace}"
    );
    eprintln!("1.x client, forward --url modern: {}", stdout.trim_end());
    interop::ran("interop_url_eras::python_sdk_1_client_reaches_a_2026_server_through_forward_url");
}

/// The handshake-era Python SDK 1.x server (FastMCP,
/// `tests/interop/handshake_http_v1.py`) over Streamable HTTP on a free
/// port; killed (with its children) on drop.
fn start_handshake_v1(python1: &str) -> HttpPeer {
    HttpPeer::start(
        Path::new(python1),
        &["tests/interop/handshake_http_v1.py"],
        &[],
    )
}

fn python1_server() -> String {
    let python1 = interop::python();
    if let Err(e) = python_imports(&python1, "mcp.server.fastmcp, anyio") {
        interop::missing("interop_url_eras", &e);
    }
    python1
}

/// The Python SDK 2.x client through `reverse --url` (auto) to the
/// handshake-era Python SDK 1.x server: the relay bridges on its own
/// upstream session; an elicitation round, a listen hearing a resource
/// update and a tool list change (then unsubscribing), and a call the
/// client abandons being cancelled at the server all work.
#[test]
fn python_sdk_2_client_through_reverse_url_to_a_handshake_v1_server() {
    let python = python2();
    let python1 = python1_server();
    let server = start_handshake_v1(&python1);
    let relay = Relay::reverse("bridged")
        .args(["--url", &server.url()])
        .start();
    let target = format!("{}/mcp", relay.base_url());
    let (ok, stdout, report) = run(
        &python,
        "tests/interop/url_bridged.py",
        &["reverse", &target],
    );
    drop(server);
    assert!(ok, "{report}\n{}", relay.stderr_dump());
    eprintln!(
        "2.x client, reverse --url, 1.x server: {}",
        stdout.trim_end()
    );
    interop::ran(
        "interop_url_eras::python_sdk_2_client_through_reverse_url_to_a_handshake_v1_server",
    );
}

/// The same through `forward --url` (auto), over the era link.
#[test]
fn python_sdk_2_client_through_forward_url_to_a_handshake_v1_server() {
    let python = python2();
    let python1 = python1_server();
    let server = start_handshake_v1(&python1);
    let url = server.url();
    let (ok, stdout, report) = run(
        &python,
        "tests/interop/url_bridged.py",
        &["forward", RELAY, &url],
    );
    drop(server);
    assert!(ok, "{report}");
    eprintln!(
        "2.x client, forward --url, 1.x server: {}",
        stdout.trim_end()
    );
    interop::ran(
        "interop_url_eras::python_sdk_2_client_through_forward_url_to_a_handshake_v1_server",
    );
}

/// The Python SDK 1.x client subscribing to a resource of the 2.x server
/// through `forward --url` and `reverse --url` (both `--upstream-protocol
/// modern`): the relay folds `resources/subscribe` into a
/// `subscriptions/listen` toward the server; the server's update reaches
/// the client, and none after `resources/unsubscribe`.
#[test]
fn python_sdk_1_client_subscribes_through_a_listen_to_a_2026_server() {
    let python = python2();
    let python1 = interop::python();
    if let Err(e) = python_imports(&python1, "mcp.client.stdio, mcp.client.streamable_http") {
        interop::missing("interop_url_eras", &e);
    }
    let server = Server::start(&python);
    let url = server.url();
    let (ok, stdout, report) = run(
        Path::new(&python1),
        "tests/interop/url_subscribe_v1.py",
        &["forward", RELAY, &url, "--upstream-protocol", "modern"],
    );
    assert!(ok, "forward: {report}\n--- server ---\n{}", server.trace());
    eprintln!(
        "1.x client subscribing, forward --url: {}",
        stdout.trim_end()
    );
    let relay = Relay::reverse("eras")
        .args(["--url", &url, "--upstream-protocol", "modern"])
        .start();
    let target = format!("{}/mcp", relay.base_url());
    let (ok, stdout, report) = run(
        Path::new(&python1),
        "tests/interop/url_subscribe_v1.py",
        &["reverse", &target],
    );
    assert!(
        ok,
        "reverse: {report}\n--- server ---\n{}\n{}",
        server.trace(),
        relay.stderr_dump()
    );
    let trace = server.trace();
    assert!(
        trace.contains("method='subscriptions/listen'"),
        "the relay listened:\n{trace}"
    );
    eprintln!(
        "1.x client subscribing, reverse --url: {}",
        stdout.trim_end()
    );
    interop::ran(
        "interop_url_eras::python_sdk_1_client_subscribes_through_a_listen_to_a_2026_server",
    );
}
