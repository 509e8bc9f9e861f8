//! Processes that escaped their server's process group.
//!
//! Servers run in a process group of their own, and the close sequence
//! signals that group. A process that leaves it (`setsid()`, a daemon's
//! double fork) would survive the relay. So the relay is a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`, set once at start by [`become_subreaper`]):
//! when such a process loses its parent, the kernel hands it to the relay
//! instead of init. The relay then:
//!
//! - reaps it when it exits ([`sweep`], on every SIGCHLD, after the owner
//!   reaped its own children): `waitid(WNOWAIT)` names the exited child, and
//!   only a pid the relay did not spawn (`child::is_known`) is reaped here,
//!   so the owner's `try_wait` never loses a status;
//! - kills it (SIGKILL) when a server of the relay has just been reaped
//!   (the moment escapees are handed over): every adopted process whose
//!   process group is not a live server's group is an escapee. This takes a
//!   scan of /proc for the relay's children, done only at those moments;
//! - kills and reaps every adopted process when the relay exits
//!   ([`kill_all`]), in both modes.
//!
//! Counted in `mcp_relay_orphans_killed_total`; each kill logs a WARN line
//! (rate-limited by the logger).

use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::child;

static KILLED: AtomicU64 = AtomicU64::new(0);
/// A server was reaped since the last sweep: look for escapees.
static SERVER_REAPED: AtomicBool = AtomicBool::new(false);

/// Most children one sweep reaps; the next SIGCHLD takes the rest.
const REAP_BUDGET: usize = 1024;
/// How long [`kill_all`] waits for the killed processes to be reaped.
const EXIT_REAP_WAIT: Duration = Duration::from_millis(500);

/// Makes the relay the reaper of its descendants' orphans.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        crate::log_warn!(
            "cannot become a child subreaper ({}); processes that leave their server's \
             process group may outlive the relay",
            std::io::Error::last_os_error()
        );
    }
}

/// Called by `child` when a server's exit status was collected.
pub(super) fn server_reaped() {
    SERVER_REAPED.store(true, Ordering::Relaxed);
}

/// Reaps adopted processes that exited, and kills escapees if a server was
/// reaped since the last call. Call after each SIGCHLD, once the owner has
/// reaped its own children.
pub fn sweep() {
    reap_exited();
    if SERVER_REAPED.swap(false, Ordering::Relaxed) {
        for (pid, pgid, state) in own_children() {
            if child::is_known(pid) || state == 'Z' || child::is_known(pgid) {
                continue;
            }
            kill(
                pid,
                "its server is gone and it left the server's process group",
            );
        }
        reap_exited();
    }
}

/// At exit: kills every adopted process and reaps them (bounded wait).
pub fn kill_all() {
    let mut left = 0;
    for (pid, _, state) in own_children() {
        if child::is_known(pid) {
            continue;
        }
        if state != 'Z' {
            kill(pid, "the relay is exiting");
        }
        left += 1;
    }
    let deadline = Instant::now() + EXIT_REAP_WAIT;
    while left > 0 && Instant::now() < deadline {
        left = own_children()
            .into_iter()
            .filter(|&(pid, _, _)| !child::is_known(pid))
            .count();
        reap_exited();
        if left > 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The `mcp_relay_orphans_killed_total` sample, appended to `/metrics`.
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "# HELP mcp_relay_orphans_killed_total Processes that escaped their server's \
         process group, killed by the relay.\n\
         # TYPE mcp_relay_orphans_killed_total counter\n\
         mcp_relay_orphans_killed_total {}\n",
        KILLED.load(Ordering::Relaxed)
    );
}

fn kill(pid: i32, why: &str) {
    // SAFETY: kill(2) on a child of ours: it cannot have been reaped (and its
    // pid reused) since it is only reaped here, later.
    if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
        KILLED.fetch_add(1, Ordering::Relaxed);
        crate::log_warn!("killed pid {pid}: {why}");
    }
}

/// Reaps exited children the relay did not spawn; stops at the first exited
/// child that is a server (its owner reaps it).
fn reap_exited() {
    for _ in 0..REAP_BUDGET {
        // SAFETY: a zeroed siginfo_t is valid; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: waitid with a valid siginfo pointer.
        if unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) } != 0 {
            return; // ECHILD: no children at all.
        }
        // SAFETY: filled by waitid (0 with WNOHANG when nothing exited).
        let pid = unsafe { info.si_pid() };
        if pid == 0 || child::is_known(pid) {
            return;
        }
        let mut status = 0;
        // SAFETY: reaps exactly this pid, which is not one of the servers.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
}

/// (pid, process group, state) of each child of the relay, from /proc.
fn own_children() -> Vec<(i32, i32, char)> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some((state, ppid, pgid)) = stat(pid)
            && ppid == me
        {
            out.push((pid, pgid, state));
        }
    }
    out
}

/// (state, ppid, pgid) from /proc/PID/stat.
fn stat(pid: i32) -> Option<(char, i32, i32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let mut fields = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some((state, ppid, pgid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_reads_our_own_entry() {
        // SAFETY: no preconditions.
        let (me, parent, group) = unsafe { (libc::getpid(), libc::getppid(), libc::getpgrp()) };
        let (state, ppid, pgid) = stat(me).expect("/proc/self/stat");
        assert!(state == 'R' || state == 'S');
        assert_eq!((ppid, pgid), (parent, group));
    }
}
