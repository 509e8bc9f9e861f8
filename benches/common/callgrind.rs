//! Instructions a request costs the relay in each protocol era through
//! `reverse --pool shared` (issue 13), counted by callgrind: the suite runs
//! `benches/callgrind_eras.py` and reads the figures it prints last. Unlike
//! the suite's CPU figures these do not move with the machine's load: the
//! same binary gives the same counts to a few tenths of a percent.
//!
//! Needs `valgrind` (with `callgrind_control`) and `python3`. Without them
//! the suite says the figures were not measured; nothing stands in for them.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt as _;

use serde_json::Value;

/// One pairing's figures, each the mean of the script's two passes.
#[derive(Clone, Copy, Debug)]
pub struct EraInstructions {
    /// A handshake-era request in a long-lived session (Ir a request).
    pub legacy: f64,
    /// The same request carrying the 2026-07-28 request's `_meta`.
    pub sized: f64,
    /// A 2026-07-28 request (no session).
    pub modern: f64,
    /// A call made in its own handshake-era session: initialize,
    /// initialized, the call and DELETE (Ir a call).
    pub session: f64,
}

impl EraInstructions {
    /// A 2026-07-28 request over a handshake-era one.
    pub fn ratio(&self) -> f64 {
        self.modern / self.legacy
    }

    /// A 2026-07-28 request over a handshake-era one of the same length.
    pub fn ratio_same_length(&self) -> f64 {
        self.modern / self.sized
    }

    /// Calls a handshake-era session must make for its own cost
    /// (initialize, initialized, DELETE), spread over them, to match what a
    /// 2026-07-28 request costs more; `None` when it costs no more at all.
    pub fn break_even_calls(&self) -> Option<f64> {
        let extra = self.modern - self.legacy;
        (extra > 0.0).then(|| (self.session - self.legacy) / extra)
    }
}

/// Why the figures are missing: the tools are not there, or the run failed.
pub fn tools_missing() -> Option<String> {
    let runs = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !runs("valgrind", "--version") {
        return Some("valgrind not found".into());
    }
    if !runs("python3", "--version") {
        return Some("python3 not found".into());
    }
    None
}

/// Runs the script for one pairing (`modern_server`: each era end to end
/// instead of bridged), `n` requests a window, within `limit` (then its
/// whole process group is killed).
pub fn era_instructions(
    relay: &Path,
    echo: &Path,
    modern_server: bool,
    n: usize,
    limit: Duration,
) -> Result<EraInstructions, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = manifest.join("benches/callgrind_eras.py");
    let dir = std::env::temp_dir().join(format!(
        "mcp-relay-callgrind-{}-{}",
        std::process::id(),
        if modern_server { "e2e" } else { "bridged" }
    ));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = run_script(&script, &dir, relay, echo, modern_server, n, limit);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn run_script(
    script: &Path,
    dir: &Path,
    relay: &Path,
    echo: &Path,
    modern_server: bool,
    n: usize,
    limit: Duration,
) -> Result<EraInstructions, String> {
    let out_path = dir.join("stdout");
    let err_path = dir.join("stderr");
    let file = |p: &Path| fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut cmd = Command::new("python3");
    cmd.arg(script);
    if modern_server {
        cmd.arg("--modern-server");
    }
    cmd.arg(relay)
        .arg(echo)
        .arg(n.to_string())
        .env("CALLGRIND_OUT", dir)
        .stdin(Stdio::null())
        .stdout(file(&out_path)?)
        .stderr(file(&err_path)?)
        // Its own group: a timeout takes the relays under valgrind and
        // their servers with the script.
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("python3: {e}"))?;
    let deadline = Instant::now() + limit;
    let kill_all = |child: &mut std::process::Child| {
        // SAFETY: kill(2) on the process group we just created.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                kill_all(&mut child);
                return Err(format!("no result within {} s", limit.as_secs()));
            }
            Err(e) => {
                kill_all(&mut child);
                return Err(format!("waiting for the script: {e}"));
            }
        }
    };
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let result = stdout.lines().rev().find_map(|l| l.strip_prefix("RESULT "));
    let Some(json) = result.filter(|_| status.success()) else {
        let stderr = fs::read_to_string(&err_path).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(format!(
            "the script ended ({status}) without a result: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    };
    parse(json)
}

/// The script's `RESULT` object: each window's Ir a request (a call for
/// `session`), the first and second passes averaged.
pub fn parse(json: &str) -> Result<EraInstructions, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("RESULT: {e}"))?;
    let get = |k: &str| {
        v.get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("RESULT has no figure {k:?}"))
    };
    let both = |a: &str, b: &str| Ok::<f64, String>((get(a)? + get(b)?) / 2.0);
    let e = EraInstructions {
        legacy: both("legacy", "legacy2")?,
        sized: both("sized", "sized2")?,
        modern: both("modern", "modern2")?,
        session: get("session")?,
    };
    if [e.legacy, e.sized, e.modern, e.session]
        .iter()
        .all(|x| x.is_finite() && *x > 0.0)
    {
        Ok(e)
    } else {
        Err(format!("RESULT holds a figure that is not a count: {json}"))
    }
}
