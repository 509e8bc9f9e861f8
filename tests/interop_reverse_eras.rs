//! Interop across protocol eras in `reverse -- CMD` (issue 13,
//! docs/eras.md): the official Python MCP SDK 2.x client, in its default
//! `auto` mode, over Streamable HTTP to `mcp-relay reverse` in front of the
//! echo server (a handshake-era stdio server), in both pool modes. The relay
//! answers the client's `server/discover` from an `initialize` it made
//! itself and bridges each request, so the client negotiates 2026-07-28
//! instead of falling back to `initialize`; tools/list and calls (one with
//! progress) work. With `echo_server --elicit --resources` the server's
//! elicitation becomes an `InputRequiredResult` round, a
//! `subscriptions/listen` gets the server's notifications and an abandoned
//! call is cancelled at the server (`tests/interop/reverse_modern_rounds.py`).
//!
//! The client side is `tests/interop/reverse_modern.py`. It needs a Python
//! with `mcp>=2,<3`: `INTEROP_PYTHON2`, else the virtualenv
//! `target/test-deps/venv2` (provisioned by the tests' dependencies, see
//! `tests/common/interop.rs`); without it a test fails, saying what to
//! install.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::interop;
use common::relay::Relay;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const SCRIPT: &str = "tests/interop/reverse_modern.py";
const TIMEOUT: Duration = Duration::from_secs(60);

/// The Python with the 2.x SDK, or why there is none.
fn python2() -> Result<PathBuf, String> {
    interop::python2("anyio, mcp_types, mcp.client.client")
}

/// Runs the client script against `url`; returns (success, stdout, report).
fn run_client(python: &Path, url: &str, expect: &str, name: &str) -> (bool, String, String) {
    let root = Path::new(MANIFEST_DIR);
    let mut cmd = Command::new(python);
    cmd.arg(root.join(SCRIPT))
        .arg(url)
        .env("INTEROP_EXPECT", expect)
        .env("INTEROP_SERVER_NAME", name)
        .current_dir(root);
    interop::run_script(cmd, &format!("url {url}"), TIMEOUT)
}

fn client_through(pool: &str, flags: &[&str], expect: &str) {
    client_through_to(pool, flags, &[], expect, "echo-server");
}

fn client_through_to(pool: &str, flags: &[&str], server: &[&str], expect: &str, name: &str) {
    let python = match python2() {
        Ok(p) => p,
        Err(e) => interop::missing("interop_reverse_eras", &e),
    };
    let relay = Relay::reverse("echo")
        .args(["--pool", pool])
        .args(flags)
        .echo_server(server)
        .start();
    let url = format!("{}/mcp", relay.base_url());
    let (ok, stdout, report) = run_client(&python, &url, expect, name);
    assert!(
        ok,
        "the 2.x client did not end on {expect} through reverse --pool {pool} {flags:?}\n{report}\n{}",
        relay.stderr_tail(40)
    );
    eprintln!("--pool {pool} {flags:?}: {}", stdout.trim_end());
}

#[test]
fn python_sdk_2_client_negotiates_2026_through_the_shared_pool() {
    client_through("shared", &[], "2026-07-28");
    interop::ran(
        "interop_reverse_eras::python_sdk_2_client_negotiates_2026_through_the_shared_pool",
    );
}

#[test]
fn python_sdk_2_client_negotiates_2026_through_the_session_pool() {
    for flags in [&[][..], &["--upstream-protocol", "legacy"][..]] {
        client_through("session", flags, "2026-07-28");
    }
    interop::ran(
        "interop_reverse_eras::python_sdk_2_client_negotiates_2026_through_the_session_pool",
    );
}

/// A dual-era stdio server (`echo_server --modern`) behind the shared pool:
/// the relay drives its process in the modern era, and the 2.x client talks
/// to the server itself (its own discover, its own name).
#[test]
fn python_sdk_2_client_reaches_a_modern_server_through_the_shared_pool() {
    for flags in [&[][..], &["--upstream-protocol", "modern"][..]] {
        client_through_to(
            "shared",
            flags,
            &["--modern"],
            "2026-07-28",
            "echo-server-modern",
        );
    }
    interop::ran(
        "interop_reverse_eras::python_sdk_2_client_reaches_a_modern_server_through_the_shared_pool",
    );
}

/// Beyond requests and results, with `echo_server --elicit --resources`:
/// the server's `elicitation/create` reaches the 2.x client as an
/// `InputRequiredResult` round (answered by its callback, retried), a
/// `subscriptions/listen` gets the server's updated and list-changed
/// notifications, and a call the client abandons (its stream closed) is
/// cancelled at the server (`tests/interop/reverse_modern_rounds.py`).
fn rounds_listen_and_cancel_through(pool: &str) {
    let python = match python2() {
        Ok(p) => p,
        Err(e) => interop::missing("interop_reverse_eras", &e),
    };
    let log = common::TempFile::new("interop-reverse-eras-rounds", pool);
    let relay = Relay::reverse("echo")
        .args(["--pool", pool])
        .echo_server(&["--elicit", "--resources", "--log", log.path_str()])
        .start();
    let url = format!("{}/mcp", relay.base_url());
    let root = Path::new(MANIFEST_DIR);
    let mut cmd = Command::new(&python);
    cmd.arg(root.join("tests/interop/reverse_modern_rounds.py"))
        .arg(&url)
        .current_dir(root);
    let (ok, stdout, report) = interop::run_script(cmd, &format!("url {url}"), TIMEOUT);
    assert!(
        ok,
        "the 2.x client's rounds, listen or cancellation failed through reverse --pool {pool}\n\
         {report}\n{}",
        relay.stderr_tail(40)
    );
    eprintln!("--pool {pool}: {}", stdout.trim_end());
    let seen = log.wait_for(Duration::from_secs(5), "the call's cancellation", |t| {
        t.contains("notifications/cancelled")
    });
    // The hanging call's id at the server is what was cancelled.
    let lines: Vec<serde_json::Value> = seen
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let hung = lines
        .iter()
        .find(|m| m["params"]["arguments"]["hang"] == true)
        .map(|m| m["id"].clone())
        .expect("the hanging call reached the server");
    assert!(
        lines
            .iter()
            .any(|m| m["method"] == "notifications/cancelled" && m["params"]["requestId"] == hung),
        "{seen}"
    );
    assert!(seen.contains("resources/subscribe"), "{seen}");
    assert!(
        lines
            .iter()
            .any(|m| m["id"] == "elicit-1" && m["result"]["content"]["answer"] == "yes"),
        "{seen}"
    );
}

#[test]
fn python_sdk_2_client_gets_input_rounds_listens_and_cancels_through_the_session_pool() {
    rounds_listen_and_cancel_through("session");
    interop::ran(
        "interop_reverse_eras::python_sdk_2_client_gets_input_rounds_listens_and_cancels_through_the_session_pool",
    );
}

#[test]
fn python_sdk_2_client_gets_input_rounds_listens_and_cancels_through_the_shared_pool() {
    rounds_listen_and_cancel_through("shared");
    interop::ran(
        "interop_reverse_eras::python_sdk_2_client_gets_input_rounds_listens_and_cancels_through_the_shared_pool",
    );
}
