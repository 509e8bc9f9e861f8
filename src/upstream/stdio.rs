//! One stdio MCP server process and everything attached to it: the child,
//! its three pipes and their readiness, the framing of its stdout, the queue
//! to its stdin and the logger of its stderr.
//!
//! The owner registers the pipes under tokens of its own, forwards readiness
//! here, and drives the close sequence (decided by `upstream::lifecycle`) from
//! its timers; this type performs each step and never blocks.

use std::io;
use std::time::Instant;

use mio::{Interest, Registry, Token};

use crate::io::buf::OutBuf;
use crate::io::child::{ChildProcess, ServerCommand};
use crate::io::stderr::{Drain, StderrLog};
use crate::proto::framing::{LineReader, ReadResult};
use crate::proto::split::SplitTracker;

/// Output to the server pauses its producer above this many bytes.
pub const STDIN_HIGH_WATER: usize = 1 << 20;

/// Which pipe an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    Stdin,
    Stdout,
    Stderr,
}

pub struct StdioConn {
    pub proc: ChildProcess,
    pub started: Instant,
    /// Tokens the owner registered the pipes under (stdin, stdout, stderr).
    tokens: [Option<Token>; 3],
    pub to_child: OutBuf,
    pub from_child: LineReader,
    /// Follows a value the server wrote over several lines (each dropped),
    /// to answer the request it was the reply to.
    pub split: SplitTracker,
    stderr_log: StderrLog,
    in_writable: bool,
    pub out_readable: bool,
    /// A hang-up was reported on stdout: read to EOF, never stop at a short read.
    out_hup: bool,
    err_readable: bool,
    pub out_eof: bool,
}

/// What a read from the server's stdout produced.
pub enum StdoutRead {
    /// Bytes arrived; take frames from `from_child`.
    Data(usize),
    /// Nothing more until the next readable event.
    Idle,
    /// End of file (or a read error): the server closed its stdout.
    Eof,
}

impl StdioConn {
    pub fn spawn(
        command: &ServerCommand,
        name: &str,
        max_message: usize,
        now: Instant,
    ) -> io::Result<StdioConn> {
        Ok(StdioConn {
            proc: ChildProcess::spawn(command)?,
            started: now,
            tokens: [None; 3],
            to_child: OutBuf::new(STDIN_HIGH_WATER),
            from_child: LineReader::new(max_message),
            split: SplitTracker::new(max_message),
            stderr_log: StderrLog::new(name),
            in_writable: true,
            out_readable: true,
            out_hup: false,
            err_readable: true,
            out_eof: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    /// Registers the pipes; `make` returns a fresh owner token per pipe.
    pub fn register(
        &mut self,
        reg: &Registry,
        mut make: impl FnMut(Pipe) -> Token,
    ) -> io::Result<()> {
        let pipes = [
            (self.proc.stdin.as_mut(), Pipe::Stdin, Interest::WRITABLE),
            (self.proc.stdout.as_mut(), Pipe::Stdout, Interest::READABLE),
            (self.proc.stderr.as_mut(), Pipe::Stderr, Interest::READABLE),
        ];
        for (i, (fd, pipe, interest)) in pipes.into_iter().enumerate() {
            if let Some(fd) = fd {
                let tok = make(pipe);
                self.tokens[i] = Some(tok);
                fd.register(reg, tok, interest)?;
            }
        }
        Ok(())
    }

    /// Records readiness from an event on one of the pipes.
    pub fn on_event(&mut self, pipe: Pipe, readable: bool, writable: bool, hup: bool) {
        match pipe {
            Pipe::Stdin => self.in_writable |= writable,
            Pipe::Stdout => {
                self.out_readable |= readable;
                self.out_hup |= hup;
            }
            Pipe::Stderr => self.err_readable |= readable,
        }
    }

    /// Can take client traffic: stdin open (it closes when the process is
    /// asked to close).
    pub fn accepts_input(&self) -> bool {
        self.proc.stdin.is_some()
    }

    /// One read from stdout into `from_child`.
    pub fn read_stdout(&mut self) -> StdoutRead {
        if !self.out_readable || self.out_eof {
            return StdoutRead::Idle;
        }
        let Some(fd) = self.proc.stdout.as_mut() else {
            return StdoutRead::Idle;
        };
        match self.from_child.read_from(&mut fd.file) {
            Ok(ReadResult::Data { n, drained }) => {
                if drained && !self.out_hup {
                    self.out_readable = false;
                }
                StdoutRead::Data(n)
            }
            Ok(ReadResult::WouldBlock) => {
                self.out_readable = false;
                StdoutRead::Idle
            }
            Ok(ReadResult::Eof) | Err(_) => {
                self.out_eof = true;
                self.out_readable = false;
                StdoutRead::Eof
            }
        }
    }

    /// Stdout may still hold data after the process exited: read it all.
    pub fn mark_exited(&mut self) {
        self.out_readable = true;
        self.out_hup = true;
        self.err_readable = true;
    }

    /// Whether `flush_stdin` would write now: input is queued and stdin can
    /// take it. An owner that flushes only the processes it gave input
    /// checks with this that it missed none (debug builds).
    pub fn flush_pending(&self) -> bool {
        let Some(fd) = self.proc.stdin.as_ref() else {
            return false;
        };
        !self.to_child.is_empty() && (self.in_writable || !fd.pollable)
    }

    /// Writes queued bytes to stdin. `Err` means the pipe is broken (the
    /// queue is dropped); the owner should treat the server as closing.
    pub fn flush_stdin(&mut self) -> io::Result<()> {
        let Some(fd) = self.proc.stdin.as_mut() else {
            self.to_child.clear();
            return Ok(());
        };
        let can_write = self.in_writable || !fd.pollable;
        if self.to_child.is_empty() || !can_write {
            return Ok(());
        }
        match self.to_child.flush_to(&mut fd.file) {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.in_writable = false;
                Ok(())
            }
            Err(e) => {
                self.to_child.clear();
                Err(e)
            }
        }
    }

    /// Logs what the server wrote to stderr. Returns whether more is waiting
    /// (read budget spent) and, once stderr has closed, its token for the
    /// owner to forget.
    pub fn drain_stderr(&mut self, reg: &Registry, now: Instant) -> (bool, Option<Token>) {
        if !self.err_readable {
            return (false, None);
        }
        let Some(fd) = self.proc.stderr.as_mut() else {
            return (false, None);
        };
        match self.stderr_log.drain(fd, now) {
            Drain::Idle => {
                self.err_readable = false;
                (false, None)
            }
            Drain::More => (true, None),
            Drain::Closed => {
                self.err_readable = false;
                if let Some(fd) = self.proc.stderr.take() {
                    fd.deregister(reg);
                }
                (false, self.tokens[2].take())
            }
        }
    }

    /// First closing step: close stdin (MCP stdio shutdown). Returns the
    /// stdin token for the owner to forget, if it was open.
    pub fn close_stdin(&mut self, reg: &Registry) -> Option<Token> {
        let fd = self.proc.stdin.take()?;
        fd.deregister(reg);
        self.to_child.clear();
        self.tokens[0].take()
    }

    /// Deregisters every pipe and closes them, returning the tokens the owner
    /// must forget. Call once the process is reaped.
    pub fn release(&mut self, reg: &Registry, now: Instant) -> Vec<Token> {
        if let Some(fd) = self.proc.stderr.as_mut() {
            self.stderr_log.drain(fd, now);
        }
        for fd in [
            self.proc.stdin.take(),
            self.proc.stdout.take(),
            self.proc.stderr.take(),
        ]
        .into_iter()
        .flatten()
        {
            fd.deregister(reg);
        }
        self.tokens.iter_mut().filter_map(Option::take).collect()
    }
}
