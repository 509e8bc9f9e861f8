//! Harness pieces shared by the interop tests (`interop_*.rs`), which run the
//! relay between real MCP SDK clients and servers, and by every test that
//! needs a peer (HAProxy, the Prometheus parser): provisioning those peers
//! under `target/test-deps/` (`.ci/install-deps.sh`, run once per test binary,
//! cached and locked), finding Python, draining child pipes, bounded waits,
//! and killing a child's whole process tree.
//!
//! A test never passes without running: a peer that cannot be provisioned
//! fails it with a message saying what to install, whatever `CI` says.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The peers the tests run against, provisioned under `target/test-deps/`.
#[derive(Debug)]
pub struct Deps {
    pub dir: PathBuf,
    /// The virtualenv's interpreter (MCP SDK, FastMCP, prometheus_client).
    pub python: PathBuf,
    /// The second virtualenv's interpreter (MCP SDK 2.x).
    pub python2: PathBuf,
    pub node: PathBuf,
    /// `node_modules` of the npm prefix (server-everything, the TS SDK).
    pub node_modules: PathBuf,
    pub haproxy: PathBuf,
}

/// How long provisioning may take (a fresh machine downloads ~100 MB).
const PROVISION_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// `target/test-deps`, beside the build directory of the binary under test.
fn deps_dir() -> PathBuf {
    let relay = Path::new(super::RELAY);
    relay
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("test-deps")
}

/// The provisioned peers: runs `.ci/install-deps.sh` the first time it is
/// called in this process (a no-op once everything is in place), and panics
/// with the script's message (what to install) if it fails.
pub fn deps() -> &'static Deps {
    static DEPS: OnceLock<Result<Deps, String>> = OnceLock::new();
    match DEPS.get_or_init(provision) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    }
}

fn provision() -> Result<Deps, String> {
    let dir = deps_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/install-deps.sh");
    let log_path = dir.with_extension("log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("create {}: {e}", log_path.display()))?;
    let mut child = Command::new("bash")
        .arg(&script)
        .env("MCP_RELAY_TEST_DEPS", &dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot run `bash {}`: {e}", script.display()))?;
    let status = match wait_bounded(&mut child, PROVISION_TIMEOUT)? {
        Some(s) => s,
        None => {
            kill_tree(&mut child);
            return Err(format!(
                "provisioning test dependencies ({}) took over {PROVISION_TIMEOUT:?}",
                script.display()
            ));
        }
    };
    let out = std::fs::read_to_string(&log_path).unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "the tests' peers could not be provisioned ({status}); \
             `bash .ci/install-deps.sh` says:\n{out}"
        ));
    }
    let node = find_in_path("node").ok_or_else(|| {
        format!("`node` not on PATH after provisioning: install Node.js 20+\n{out}")
    })?;
    let deps = Deps {
        python: dir.join("venv/bin/python"),
        python2: dir.join("venv2/bin/python"),
        node,
        node_modules: dir.join("node/node_modules"),
        haproxy: dir.join("bin/haproxy"),
        dir,
    };
    for p in [&deps.python, &deps.python2, &deps.haproxy] {
        if !p.exists() {
            return Err(format!(
                "{} missing after provisioning:\n{out}",
                p.display()
            ));
        }
    }
    Ok(deps)
}

/// Records that interop test `name` really ran (`.ci/run` counts these).
pub fn ran(name: &str) {
    let dir = deps().dir.join("ran");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(name), b"");
    eprintln!("INTEROP RAN {name}");
}

/// A prerequisite missing even after provisioning: the test fails, saying
/// what is missing and how to provision it. Never a pass.
pub fn missing(test: &str, what: &str) -> ! {
    panic!(
        "{test}: {what}; `bash .ci/install-deps.sh` provisions the test peers under \
         target/test-deps (it needs python3 with venv, Node.js 20+ with npm, and \
         haproxy or apt-get)"
    );
}

/// The first `name` on `PATH` that is a file.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The Python interpreter the interop scripts run under: the provisioned
/// virtualenv's.
pub fn python() -> String {
    deps().python.to_string_lossy().into_owned()
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

/// Runs an interop script (`cmd`, stdio piped) to its end within `timeout`,
/// in its own process group (killed with its tree on timeout; always
/// reaped), its output drained. Returns (ok, stdout, report): ok when it
/// exited 0 and printed `interop ok`; `what` heads the report.
pub fn run_script(mut cmd: Command, what: &str, timeout: Duration) -> (bool, String, String) {
    cmd.env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let started = Instant::now();
    // Every path below reaps the child: try_wait in the loop, or kill_tree
    // (which waits) on timeout.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.spawn().expect("spawn the interop script");
    let (out_buf, out_thread) = drain(child.stdout.take().expect("stdout"));
    let (err_buf, err_thread) = drain(child.stderr.take().expect("stderr"));
    let mut status = None;
    while started.elapsed() < timeout {
        match child.try_wait() {
            Ok(Some(s)) => {
                status = Some(s);
                break;
            }
            Ok(None) => thread::sleep(Duration::from_millis(25)),
            Err(_) => break,
        }
    }
    if status.is_none() {
        kill_tree(&mut child);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    join_bounded(out_thread, deadline);
    join_bounded(err_thread, deadline);
    let stdout = snapshot(&out_buf);
    let stderr = snapshot(&err_buf);
    let report = format!(
        "{what}, elapsed {:.2?}, status {status:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}--- end ---",
        started.elapsed()
    );
    let ok = status.is_some_and(|s| s.success()) && stdout.contains("interop ok");
    (ok, stdout, report)
}

/// The Python with the MCP SDK 2.x (`INTEROP_PYTHON2`, else the provisioned
/// `venv2`), checked to import `modules`; or why there is none.
pub fn python2(modules: &str) -> Result<std::path::PathBuf, String> {
    let py = match std::env::var_os("INTEROP_PYTHON2") {
        Some(p) => std::path::PathBuf::from(p),
        None => deps().python2.clone(),
    };
    if !py.is_file() {
        return Err(format!(
            "no Python with the MCP SDK 2.x at {} (set INTEROP_PYTHON2)",
            py.display()
        ));
    }
    python_imports(&py.to_string_lossy(), modules)?;
    Ok(py)
}

/// An MCP server over HTTP on a free port of 127.0.0.1 (a peer of the
/// interop tests), its output drained; killed with its children on drop.
pub struct HttpPeer {
    child: Child,
    pub port: u16,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl HttpPeer {
    /// Runs `program args… PORT` (`env` added) and waits, at most 30 s,
    /// until it accepts connections on PORT; panics with its stderr if not.
    pub fn start(program: &Path, args: &[&str], env: &[(&str, &str)]) -> HttpPeer {
        let port = super::free_port();
        let mut cmd = Command::new(program);
        cmd.args(args)
            .arg(port.to_string())
            .envs(env.iter().copied())
            .env("PYTHONUNBUFFERED", "1")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        // Reaped by kill_tree, here on failure or in Drop.
        #[allow(clippy::zombie_processes)]
        let mut child = cmd.spawn().expect("spawn the HTTP peer");
        let (out, t1) = drain(child.stdout.take().expect("stdout"));
        let (err, t2) = drain(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !accepts(port) {
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                let e = snapshot(&err);
                kill_tree(&mut child);
                panic!(
                    "{} {args:?} did not listen on {port}:\n{e}",
                    program.display()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        HttpPeer {
            child,
            port,
            out,
            err,
            threads: vec![t1, t2],
        }
    }

    /// `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// What it printed on stdout so far (the interop servers trace each
    /// request there).
    pub fn trace(&self) -> String {
        snapshot(&self.out)
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        snapshot(&self.err)
    }
}

impl Drop for HttpPeer {
    fn drop(&mut self) {
        kill_tree(&mut self.child);
        let deadline = Instant::now() + Duration::from_secs(5);
        for t in self.threads.drain(..) {
            join_bounded(t, deadline);
        }
    }
}
