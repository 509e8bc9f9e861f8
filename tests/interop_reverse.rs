//! Interop: the official MCP SDK clients (Python and TypeScript) talk
//! Streamable HTTP to `mcp-relay reverse`, which serves the reference
//! `@modelcontextprotocol/server-everything` server (stdio mode) from its
//! pool, in both pool modes:
//!
//! ```text
//! mcp-relay reverse --listen 127.0.0.1:PORT --pool session|shared \
//!     -- node .../server-everything/dist/index.js stdio
//! ```
//!
//! One test per (client, pool mode). Each starts its own relay on a free
//! port, waits for `/healthz`, runs the client script with a hard timeout and
//! checks its verdict (`interop ok` and exit 0), then stops the relay (SIGTERM,
//! SIGKILL of it and its servers if it lingers) and reaps it. The client side
//! lives in `tests/interop/reverse_python.py` and `tests/interop/reverse_ts.mjs`
//! (both run the same steps: initialize, logging, tools, resources, prompts,
//! progress, DELETE and the pool's reaction to it; see their headers).
//!
//! Shared mode runs with `--max-connections 1`, so the Python script's second
//! ("observer") session really shares the process with the first and the log
//! routing it reports is about sessions on one process.
//!
//! The test provisions its peers itself (`.ci/install-deps.sh`, into
//! target/test-deps/, once per test binary); if that fails, the test fails
//! with a message saying what to install. It never passes without running.
//!
//! Debugging: `cargo test --test interop_reverse -- --nocapture` prints each
//! script's summary; a failure prints the relay's debug log and the script's
//! output. Or start a relay by hand and run a script against it:
//! `target/test-deps/venv/bin/python tests/interop/reverse_python.py http://127.0.0.1:8080 session`.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::interop::{
    self, drain, join_bounded, kill_tree, python, python_imports, snapshot, wait_bounded,
};
use common::relay::Relay;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const SERVER_JS: &str = "@modelcontextprotocol/server-everything/dist/index.js";
const TS_SDK_CLIENT: &str = "@modelcontextprotocol/sdk/dist/esm/client/streamableHttp.js";
const PY_SCRIPT: &str = "tests/interop/reverse_python.py";
const TS_SCRIPT: &str = "tests/interop/reverse_ts.mjs";
/// The scripts stop themselves after 60 s; this is the harness's backstop.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(75);
/// Time for the relay to exit after SIGTERM before the tree is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug)]
enum Sdk {
    Python,
    TypeScript,
}

#[derive(Clone, Copy, Debug)]
enum Pool {
    Session,
    Shared,
}

impl Pool {
    fn name(self) -> &'static str {
        match self {
            Pool::Session => "session",
            Pool::Shared => "shared",
        }
    }

    fn relay_args(self) -> &'static [&'static str] {
        match self {
            Pool::Session => &["--pool", "session"],
            Pool::Shared => &["--pool", "shared", "--max-connections", "1"],
        }
    }
}

/// A prerequisite missing after provisioning: the test fails, never passes.
fn missing(what: &str) -> ! {
    interop::missing("interop_reverse", what);
}

fn python_has_mcp(python: &str) -> Result<(), String> {
    python_imports(
        python,
        "anyio, httpx, mcp.client.session, mcp.client.streamable_http",
    )
}

/// `mcp-relay reverse --name everything POOL_ARGS -- node SERVER_JS stdio`
/// on a free port, once `/healthz` answers.
fn start_relay(node: &Path, server_js: &Path, pool: Pool) -> Relay {
    Relay::reverse("everything")
        .args(pool.relay_args())
        .command([node.as_os_str(), server_js.as_os_str(), OsStr::new("stdio")])
        .start()
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

fn interop(sdk: Sdk, pool: Pool) {
    let root = Path::new(MANIFEST_DIR);
    let server_js = interop::deps().node_modules.join(SERVER_JS);
    let script = root.join(match sdk {
        Sdk::Python => PY_SCRIPT,
        Sdk::TypeScript => TS_SCRIPT,
    });
    assert!(script.is_file(), "missing {}", script.display());

    let node = interop::deps().node.clone();
    if !server_js.is_file() {
        missing(&format!(
            "npm package not installed: {} not found",
            server_js.display()
        ));
    }
    let interpreter = match sdk {
        Sdk::Python => {
            let python = python();
            if let Err(e) = python_has_mcp(&python) {
                missing(&e);
            }
            PathBuf::from(python)
        }
        Sdk::TypeScript => {
            let client = interop::deps().node_modules.join(TS_SDK_CLIENT);
            if !client.is_file() {
                missing(&format!(
                    "npm package not installed: {} not found",
                    client.display()
                ));
            }
            node.clone()
        }
    };

    let relay = start_relay(&node, &server_js, pool);
    let base = relay.base_url();
    let mut cmd = Command::new(&interpreter);
    cmd.arg(&script)
        .arg(&base)
        .arg(pool.name())
        .env("PYTHONUNBUFFERED", "1")
        .env("INTEROP_NODE_MODULES", &interop::deps().node_modules);
    let cmdline = format!(
        "{} {} {base} {}",
        interpreter.display(),
        script.display(),
        pool.name()
    );
    let run = run_script(cmd, cmdline);
    let relay_ended = relay.stop(STOP_TIMEOUT);

    let report = format!(
        "relay: {}\nrelay {}\nscript: {}\nelapsed: {:.2?}\n--- script stdout ---\n{}\n--- script stderr ---\n{}\n--- relay stderr ---\n{}--- end ---",
        relay.cmdline,
        relay_ended,
        run.cmdline,
        run.elapsed,
        run.stdout,
        run.stderr,
        relay.stderr_text(),
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
    eprintln!("{}", run.stdout.trim_end());
    eprintln!("{}", run.stderr.trim_end());
    eprintln!("relay {relay_ended}");
}

#[test]
fn python_sdk_reverse_session_pool() {
    interop(Sdk::Python, Pool::Session);
    interop::ran("interop_reverse::python_sdk_reverse_session_pool");
}

#[test]
fn python_sdk_reverse_shared_pool() {
    interop(Sdk::Python, Pool::Shared);
    interop::ran("interop_reverse::python_sdk_reverse_shared_pool");
}

#[test]
fn typescript_sdk_reverse_session_pool() {
    interop(Sdk::TypeScript, Pool::Session);
    interop::ran("interop_reverse::typescript_sdk_reverse_session_pool");
}

#[test]
fn typescript_sdk_reverse_shared_pool() {
    interop(Sdk::TypeScript, Pool::Shared);
    interop::ran("interop_reverse::typescript_sdk_reverse_shared_pool");
}
