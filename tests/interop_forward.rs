//! Interop: the official Python MCP SDK client talks to the reference
//! `@modelcontextprotocol/server-everything` server (stdio mode) through
//! `mcp-relay forward -- node .../server-everything/dist/index.js stdio`.
//!
//! The client side lives in `tests/interop/forward_everything.py`; this test
//! only locates the pieces, runs the script with a hard timeout and checks
//! its verdict. Dependencies are installed by `.ci/install-deps.sh` (called by
//! `.ci/run`). Without them the test is skipped locally and fails under CI.
//!
//! Debugging: `RUST_LOG=... cargo test --test interop_forward -- --nocapture`
//! (the script passes the environment through to the relay), or run the
//! script by hand, with `INTEROP_DIRECT=1` to bypass the relay.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const RELAY: &str = env!("CARGO_BIN_EXE_mcp-relay");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const SERVER_JS: &str =
    ".ci/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js";
const SCRIPT: &str = "tests/interop/forward_everything.py";
const TIMEOUT: Duration = Duration::from_secs(90);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A missing prerequisite: fatal under CI, a skip notice otherwise (the
/// caller then returns, passing).
fn missing(what: &str) {
    let msg = format!(
        "interop_forward: {what}; run `.ci/run` (or `.ci/install-deps.sh`) to install test dependencies"
    );
    if in_ci() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED {msg}");
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn python() -> String {
    std::env::var("INTEROP_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn python_has_mcp(python: &str) -> Result<(), String> {
    let out = Command::new(python)
        .args(["-c", "import anyio, mcp.client.stdio, mcp.client.session"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{python}`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{python}` cannot import the `mcp` package: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Drains a child pipe on a thread into a shared buffer, so a chatty child
/// can't block on a full pipe and a snapshot is available even if some
/// grandchild keeps the pipe open.
fn drain(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, thread::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buf);
    let handle = thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    (buf, handle)
}

fn join_bounded(handle: thread::JoinHandle<()>, deadline: Instant) {
    while !handle.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    if handle.is_finished() {
        let _ = handle.join();
    }
}

/// Parent pid of every process visible in /proc.
fn parent_pids() -> Vec<(i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ...": comm may contain spaces and parens.
        let ppid = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some((pid, ppid))
    })
    .collect()
}

/// Kills the script and everything under it. The Python SDK starts the relay
/// in a new session, so killing the script's process group is not enough:
/// walk the process tree via /proc as well.
fn kill_tree(child: &mut Child) {
    let root = child.id() as i32;
    let procs = parent_pids();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            procs
                .iter()
                .filter(|&&(_, pp)| pp == parent)
                .map(|&(p, _)| p),
        );
        i += 1;
    }
    // The child was spawned with process_group(0), so its pid is its pgid.
    unsafe {
        libc::kill(-root, libc::SIGKILL);
        for &pid in &tree {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn python_sdk_client_through_forward_to_server_everything() {
    let root = Path::new(MANIFEST_DIR);
    let server_js = root.join(SERVER_JS);
    let script = root.join(SCRIPT);
    assert!(script.is_file(), "missing {}", script.display());

    let python = python();
    if let Err(e) = python_has_mcp(&python) {
        return missing(&e);
    }
    if !server_js.is_file() {
        return missing(&format!(
            "npm package not installed: {} not found",
            server_js.display()
        ));
    }
    let Some(node) = find_in_path("node") else {
        return missing("`node` not found on PATH");
    };

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
}
