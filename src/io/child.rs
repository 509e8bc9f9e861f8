//! Child processes speaking MCP over stdio.
//!
//! Spawned from argv (never a shell) in a process group of their own, with all
//! three pipes non-blocking. Closing follows the MCP stdio rules: close stdin,
//! wait the kill grace, SIGTERM the group, wait again, SIGKILL the group. When
//! each step is due is decided by `upstream::lifecycle` and timed by the
//! owner; this type only performs each step and reaps with `try_wait`, never
//! blocking.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};

use super::fd::Fd;
use super::orphans;

/// Pids of the servers spawned and not yet reaped, so that reaping the
/// processes the relay adopted (`orphans`) never takes a server's status.
static KNOWN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn known() -> std::sync::MutexGuard<'static, Vec<u32>> {
    KNOWN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `pid` is a server spawned by this relay and not yet reaped.
pub fn is_known(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(|p| known().contains(&p))
}

fn forget(pid: u32) {
    known().retain(|&p| p != pid);
}

/// How to start a server: its argv (never run through a shell) and the
/// environment variables set for it on top of the relay's own (a config
/// file's `env`). Reads as its argv; `Debug` shows only the argv, since
/// environment values are often secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ServerCommand {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl From<Vec<String>> for ServerCommand {
    fn from(argv: Vec<String>) -> ServerCommand {
        ServerCommand {
            argv,
            env: Vec::new(),
        }
    }
}

impl std::ops::Deref for ServerCommand {
    type Target = Vec<String>;
    fn deref(&self) -> &Vec<String> {
        &self.argv
    }
}

impl std::fmt::Debug for ServerCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.argv.fmt(f)
    }
}

pub struct ChildProcess {
    child: Child,
    pub pid: u32,
    pub stdin: Option<Fd>,
    pub stdout: Option<Fd>,
    pub stderr: Option<Fd>,
    status: Option<ExitStatus>,
}

impl ChildProcess {
    pub fn spawn(command: &ServerCommand) -> io::Result<ChildProcess> {
        let (prog, args) = command
            .argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // If the relay dies without cleaning up (SIGKILL, abort), the kernel
        // kills the child at once: SIGKILL, since a server that ignores
        // SIGTERM would otherwise outlive the relay, and nobody is left to
        // escalate (see "Process containment" in docs/architecture.md). A
        // relay that died between fork and prctl is caught by the ppid check.
        // SAFETY: getpid has no preconditions.
        let relay = unsafe { libc::getpid() };
        // SAFETY: prctl and getppid are async-signal-safe; this runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != relay {
                    return Err(io::Error::other("the relay exited during spawn"));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pid = child.id();
        known().push(pid);
        let stdin = child.stdin.take().map(|p| Fd::from_owned(OwnedFd::from(p)));
        let stdout = child
            .stdout
            .take()
            .map(|p| Fd::from_owned(OwnedFd::from(p)));
        let stderr = child
            .stderr
            .take()
            .map(|p| Fd::from_owned(OwnedFd::from(p)));
        let mut proc = ChildProcess {
            child,
            pid,
            stdin: None,
            stdout: None,
            stderr: None,
            status: None,
        };
        match (stdin, stdout, stderr) {
            (Some(Ok(i)), Some(Ok(o)), Some(Ok(e))) => {
                proc.stdin = Some(i);
                proc.stdout = Some(o);
                proc.stderr = Some(e);
                Ok(proc)
            }
            _ => {
                // Could not set up the pipes: do not leave the process behind.
                proc.signal_group(libc::SIGKILL);
                let _ = proc.child.wait();
                proc.status = proc.child.try_wait().ok().flatten();
                forget(pid);
                Err(io::Error::other("could not set up the child's pipes"))
            }
        }
    }

    /// The exit status once reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Reaps the child if it has exited. Never blocks.
    pub fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.status = Some(status);
                    forget(self.pid);
                    // The leader is gone; anything left in its group (helpers
                    // it forked) would be orphaned, so it goes too, and so
                    // does what it handed over to the relay by leaving the
                    // group (`orphans`).
                    self.signal_group(libc::SIGKILL);
                    orphans::server_reaped();
                }
                Ok(None) => {}
                Err(e) => crate::log_warn!("try_wait on pid {} failed: {e}", self.pid),
            }
        }
        self.status
    }

    /// SIGTERM to the group.
    pub fn terminate(&self) {
        self.signal_group(libc::SIGTERM);
    }

    /// SIGKILL to the group.
    pub fn kill(&self) {
        self.signal_group(libc::SIGKILL);
    }

    fn signal_group(&self, sig: libc::c_int) {
        // The group id is the leader's pid (process_group(0)). While the
        // leader is unreaped its pid cannot be reused; after reaping, Linux
        // does not hand out a pid still in use as a group id, so this never
        // hits a stranger. ESRCH just means the group is already gone.
        // SAFETY: kill(2) with a negative pid signals a process group.
        unsafe { libc::kill(-(self.pid as libc::pid_t), sig) };
    }
}

/// A short human description of an exit status: "exit code 3", "signal 9".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown exit".to_string(),
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Last line of defence: an owner that drops a live child must not
        // leak it. Kill the group and reap without blocking the loop for long.
        if self.status.is_none() {
            self.signal_group(libc::SIGKILL);
            let _ = self.child.wait();
            forget(self.pid);
            orphans::server_reaped();
        }
    }
}
