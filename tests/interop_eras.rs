//! Interop across protocol eras (issue 13, docs/eras.md): the official Python
//! MCP SDK 2.x client, in its default `auto` mode, through
//! `mcp-relay forward -- echo_server` (a handshake-era stdio server). The
//! relay initializes the server itself and answers the client's
//! `server/discover`, so the client negotiates 2026-07-28 instead of falling
//! back to `initialize`; tools/list and a call with progress work.
//!
//! A second test puts a Python SDK 1.x server (`tests/interop/handshake_server_v1.py`,
//! FastMCP) behind the relay: its tool asks the client for input with
//! `elicitation/create` during the call, which reaches the 2.x client as an
//! `InputRequiredResult` round.
//!
//! The client side is `tests/interop/forward_modern.py`. It needs a Python
//! with `mcp>=2,<3`: `INTEROP_PYTHON2`, else the virtualenv
//! `target/test-deps/venv2`; the 1.x server runs under the 1.x virtualenv
//! `target/test-deps/venv`. The tests provision both (`.ci/install-deps.sh`);
//! without them a test fails, saying what to install.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::interop::{self, python_imports};

const RELAY: &str = env!("CARGO_BIN_EXE_mcp-relay");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const SCRIPT: &str = "tests/interop/forward_modern.py";
const TIMEOUT: Duration = Duration::from_secs(60);

/// The Python with the 2.x SDK, or why there is none.
fn python2() -> Result<PathBuf, String> {
    interop::python2("anyio, mcp_types, mcp.client.client")
}

/// Runs the script with `flags` for the relay in front of the echo server;
/// returns (success, stdout, report).
fn run_script(python: &Path, flags: &[&str], expect: &str) -> (bool, String, String) {
    let server = common::echo_server().to_string_lossy().into_owned();
    run_script_with(python, flags, &[&server], &[("INTEROP_EXPECT", expect)])
}

fn run_script_with(
    python: &Path,
    flags: &[&str],
    server: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let root = Path::new(MANIFEST_DIR);
    let mut cmd = Command::new(python);
    cmd.arg(root.join(SCRIPT))
        .arg(RELAY)
        .args(flags)
        .arg("--")
        .args(server)
        .envs(env.iter().copied())
        .current_dir(root);
    interop::run_script(cmd, &format!("flags {flags:?}"), TIMEOUT)
}

#[test]
fn python_sdk_2_client_negotiates_2026_through_forward_to_a_handshake_era_server() {
    let python = match python2() {
        Ok(p) => p,
        Err(e) => interop::missing("interop_eras", &e),
    };
    for flags in [&[][..], &["--upstream-protocol", "legacy"][..]] {
        let (ok, stdout, report) = run_script(&python, flags, "2026-07-28");
        assert!(
            ok,
            "the 2.x client did not get 2026-07-28 through the bridge\n{report}"
        );
        eprintln!("{flags:?}: {}", stdout.trim_end());
    }
    interop::ran("interop_eras::python_sdk_2_client_negotiates_2026_through_forward");
}

#[test]
fn upstream_protocol_modern_passes_through_and_the_client_falls_back() {
    // `modern` tells the relay the server is modern: nothing is bridged, the
    // handshake-era server refuses discover and the client falls back to
    // initialize, which passes through. What the relay did before issue 13.
    let python = match python2() {
        Ok(p) => p,
        Err(e) => interop::missing("interop_eras", &e),
    };
    let (ok, stdout, report) =
        run_script(&python, &["--upstream-protocol", "modern"], "2025-11-25");
    assert!(ok, "the fallback through a passing relay broke\n{report}");
    eprintln!("{}", stdout.trim_end());
    interop::ran("interop_eras::upstream_protocol_modern_passes_through");
}

#[test]
fn a_python_sdk_1_server_asking_for_input_and_sending_updates_reaches_the_2_x_client() {
    let python2 = match python2() {
        Ok(p) => p,
        Err(e) => interop::missing("interop_eras", &e),
    };
    let python1 = interop::python();
    if let Err(e) = python_imports(&python1, "mcp.server.fastmcp") {
        interop::missing("interop_eras", &e);
    }
    let server = Path::new(MANIFEST_DIR).join("tests/interop/handshake_server_v1.py");
    let server = server.to_string_lossy().into_owned();
    let env = [
        ("INTEROP_ELICIT", "1"),
        ("INTEROP_LISTEN", "1"),
        ("INTEROP_PROGRESS", "0"),
    ];
    let (ok, stdout, report) = run_script_with(&python2, &[], &[&python1, &server], &env);
    assert!(ok, "elicitation did not cross the era bridge\n{report}");
    assert!(
        stdout.contains("elicitation answered: 'hello relay'"),
        "{report}"
    );
    eprintln!("{}", stdout.trim_end());
    interop::ran("interop_eras::a_python_sdk_1_server_asking_for_input");
}
