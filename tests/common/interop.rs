//! Harness pieces shared by the interop tests (`interop_*.rs`), which run the
//! relay between real MCP SDK clients and servers: prerequisite checks (skip
//! locally, fail under CI), finding Python, draining child pipes, bounded
//! waits, and killing a child's whole process tree.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Whether this is a CI run (`CI` set, and not to "0" or "false").
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A missing prerequisite: fatal under CI, a skip notice otherwise (the
/// caller then returns, passing).
pub fn missing(test: &str, what: &str) {
    let msg = format!(
        "{test}: {what}; run `.ci/run` (or `.ci/install-deps.sh`) to install test dependencies"
    );
    if in_ci() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED {msg}");
}

/// The first `name` on `PATH` that is a file.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The Python interpreter the interop scripts run under (`INTEROP_PYTHON`,
/// default `python3`).
pub fn python() -> String {
    std::env::var("INTEROP_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Whether `python` can `import {modules}` (the reason when not).
pub fn python_imports(python: &str, modules: &str) -> Result<(), String> {
    let out = Command::new(python)
        .args(["-c", &format!("import {modules}")])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{python}`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{python}` cannot import what the test needs ({modules}): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Drains a child pipe on a thread into a shared buffer, so a chatty child
/// can't block on a full pipe and a snapshot is available even if some
/// grandchild keeps the pipe open.
pub fn drain(
    mut pipe: impl Read + Send + 'static,
) -> (Arc<Mutex<Vec<u8>>>, thread::JoinHandle<()>) {
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

/// Joins `handle` if it finishes before `deadline` (a grandchild may keep a
/// drained pipe open: the thread is then left behind).
pub fn join_bounded(handle: thread::JoinHandle<()>, deadline: Instant) {
    while !handle.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    if handle.is_finished() {
        let _ = handle.join();
    }
}

/// What a [`drain`] buffer holds so far, as text.
pub fn snapshot(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

/// Parent pid of every process visible in /proc.
pub fn parent_pids() -> Vec<(i32, i32)> {
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

/// Kills a child and everything under it, then reaps the child. Walks the
/// process tree via /proc (before anything dies and is reparented) as well
/// as killing the child's process group.
pub fn kill_tree(child: &mut Child) {
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
    // Children are spawned with process_group(0): their pid is their pgid.
    // SAFETY: kill(2) on our own child's group and its descendants.
    unsafe {
        libc::kill(-root, libc::SIGKILL);
        for &pid in &tree {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for `child` to exit, at most `timeout`.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Ok(Some(s)),
            Ok(None) if Instant::now() >= deadline => return Ok(None),
            Ok(None) => thread::sleep(Duration::from_millis(25)),
            Err(e) => return Err(format!("try_wait: {e}")),
        }
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

/// One `GET /healthz`: true on `200` with body `ok`.
pub fn healthy(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp);
    resp.starts_with("HTTP/1.1 200") && resp.split("\r\n\r\n").nth(1).map(str::trim) == Some("ok")
}
