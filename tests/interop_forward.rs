//! Interop: the official Python MCP SDK client talks to the reference
//! `@modelcontextprotocol/server-everything` server (stdio mode) through
//! `mcp-relay forward -- node .../server-everything/dist/index.js stdio`.
//!
//! The client side lives in `tests/interop/forward_everything.py`; this test
//! only locates the pieces, runs the script with a hard timeout and checks
//! its verdict.
//! The test provisions its peers itself (`.ci/install-deps.sh`, into
//! target/test-deps/, once per test binary); if that fails, the test fails
//! with a message saying what to install. It never passes without running.
//!
//! Debugging: `RUST_LOG=... cargo test --test interop_forward -- --nocapture`
//! (the script passes the environment through to the relay), or run the
//! script by hand, with `INTEROP_DIRECT=1` to bypass the relay.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::interop::{self, drain, join_bounded, kill_tree, python, python_imports};

const RELAY: &str = env!("CARGO_BIN_EXE_mcp-relay");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const SERVER_JS: &str = "@modelcontextprotocol/server-everything/dist/index.js";
const SCRIPT: &str = "tests/interop/forward_everything.py";
const TIMEOUT: Duration = Duration::from_secs(90);

/// A prerequisite missing after provisioning: the test fails, never passes.
fn missing(what: &str) -> ! {
    interop::missing("interop_forward", what);
}

fn python_has_mcp(python: &str) -> Result<(), String> {
    python_imports(python, "anyio, mcp.client.stdio, mcp.client.session")
}

#[test]
fn python_sdk_client_through_forward_to_server_everything() {
    let root = Path::new(MANIFEST_DIR);
    let server_js = interop::deps().node_modules.join(SERVER_JS);
    let script = root.join(SCRIPT);
    assert!(script.is_file(), "missing {}", script.display());

    let python = python();
    if let Err(e) = python_has_mcp(&python) {
        missing(&e);
    }
    if !server_js.is_file() {
        missing(&format!(
            "npm package not installed: {} not found",
            server_js.display()
        ));
    }
    let node = interop::deps().node.clone();

    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg(RELAY)
        .arg("--")
        .arg(&node)
        .arg(&server_js)
        .arg("stdio")
        .current_dir(root)
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("INTEROP_DIRECT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);

    let cmdline = format!(
        "{python} {} {RELAY} -- {} {} stdio",
        script.display(),
        node.display(),
        server_js.display()
    );
    let started = Instant::now();
    // Every path below reaps the child: try_wait in the loop, or kill_tree
    // (which waits) on error and timeout; clippy cannot see through kill_tree.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{cmdline}`: {e}"));
    let (out_buf, out_thread) = drain(child.stdout.take().unwrap());
    let (err_buf, err_thread) = drain(child.stderr.take().unwrap());

    let mut status = None;
    while started.elapsed() < TIMEOUT {
        match child.try_wait() {
            Ok(Some(s)) => {
                status = Some(s);
                break;
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                kill_tree(&mut child);
                panic!("try_wait on `{cmdline}`: {e}");
            }
        }
    }
    let timed_out = status.is_none();
    if timed_out {
        kill_tree(&mut child);
    }
    let elapsed = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(5);
    join_bounded(out_thread, deadline);
    join_bounded(err_thread, deadline);
    let stdout = String::from_utf8_lossy(&out_buf.lock().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err_buf.lock().unwrap()).into_owned();
    let report = format!(
        "command: {cmdline}\nelapsed: {elapsed:.2?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}--- end ---"
    );

    if timed_out {
        panic!("interop script timed out after {TIMEOUT:?} and was killed\n{report}");
    }
    let status = status.unwrap();
    assert!(
        status.success(),
        "interop script failed: {status}\n{report}"
    );
    assert!(
        stdout.contains("interop ok"),
        "interop script exited 0 without `interop ok`\n{report}"
    );
    eprintln!("{}", stdout.trim_end());
    interop::ran("interop_forward::python_sdk_client_through_forward_to_server_everything");
}
