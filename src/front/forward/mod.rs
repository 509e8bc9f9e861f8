//! `mcp-relay forward`: the relay's stdin/stdout on one side, a child MCP
//! server (`-- COMMAND`) or an HTTP upstream (`--url`) on the other.
//!
//! One `Forward` value, driven by the loop turn in `reactor::turn`, owns:
//!
//! - `host`: our stdin and stdout (`host.reader` frames stdin, `host.out`
//!   queues what goes to stdout);
//! - `pending`: the host's requests awaiting a reply, each with its timeout
//!   (the session core's `Inflight` table, shared with `reverse`);
//! - `server`: what the relay forwards to, `Server::Stdio(Children)` (the
//!   live child process, those on their way out until reaped, and messages
//!   held for a restart) or `Server::Http` (`--url`).
//!
//! A child's life is an `upstream::lifecycle::Lifecycle` with
//! `DownPolicy::OnStatus`: spawned → (replaying the cached `initialize` after
//! a restart) → ready → closing (stdin closed, then kill grace → SIGTERM →
//! kill grace → SIGKILL) and/or lost (stdout EOF, or exit) → down → reaped.
//! Its decisions come back as actions that `child::run_upstream` carries out.
//! Once down, its in-flight requests are failed and the relay either restarts
//! it (`--restart`) or exits.
//!
//! Files: `mod.rs` (types, start-up, dispatch, closing), `host.rs` (stdin,
//! stdout, requests in flight), `child.rs` (the child process), `http/`
//! (`--url`, with `http/legacy.rs` for legacy HTTP+SSE).
//!
//! A request's path (stdio): `host::read_client` → `host::on_client_line` →
//! `host::track` + `host::send_to_server` → `child::write_upstream` → the
//! child's stdin … its stdout → `child::read_upstream` →
//! `child::on_server_line` → `host::untrack` + `host::send_to_client`.

mod child;
mod host;
mod http;
mod tools;

use child::*;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::process::ExitStatus;
use std::time::{Duration, Instant, SystemTime};

use mio::{Interest, Poll, Token};
use serde_json::json;

use crate::cli::ForwardConfig;
use crate::io::buf::OutBuf;
use crate::io::child::describe;
use crate::io::fd::{Fd, set_nonblocking};
use crate::io::ratelog::RateLog;
use crate::mcp::era::link::{Consumed, FromClient, Link};
use crate::mcp::era::verdict::PROBE_TIMEOUT;
use crate::policy::backoff::{Backoff, Rng};
use crate::proto::errors::RelayError;
use crate::proto::framing::{Frame, LineReader, Oversize, ReadResult};
use crate::proto::jsonrpc::{self, BatchItem, Dropped, Envelope, Id, Kind, Message};
use crate::reactor::signals::Signals;
use crate::reactor::turn::{self, Readiness};
use crate::reactor::{self, Registry, SIGNAL_TOKEN, Source, TimerId, TimerWheel};
use crate::record::{Direction, Recorder};
use crate::session::inflight::{self, Deadlines, Inflight};
use crate::upstream::lifecycle::{self, Cause, DownPolicy, Lifecycle};
use crate::upstream::stdio::{Pipe, StdioConn, StdoutRead};

/// Output queues pause their producer above this many bytes.
const HIGH_WATER: usize = 1 << 20;

/// Bytes read from one source per loop turn, so neither side starves the other.
const READ_BUDGET: usize = 1 << 20;

/// Client bytes held while the upstream restarts; above it stdin is not read.
const HELD_MAX_BYTES: usize = 4 << 20;

/// An upstream that stayed up this long resets the restart backoff.
const STABLE_UPTIME: Duration = Duration::from_secs(10);

/// Id of the `initialize` the relay replays to a restarted server.
const REPLAY_ID_PREFIX: &str = "mcp-relay-replay-";

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    ClientIn,
    ClientOut,
    /// A pipe of the upstream numbered `seq`.
    Child(u64, Pipe),
    /// `--oauth`: the loopback callback listener, and its connections.
    OAuthListener,
    OAuthConn(u64),
}

#[derive(Debug)]
enum TimerKind {
    Response(Id),
    Grace(u64),
    Respawn,
    FinalFlush,
    /// `--url`: the GET stream's reconnect delay is over.
    Reconnect,
    /// `--url`: client messages waited `GET_HOLD` for the GET stream.
    GetHold,
    /// `--url`: the backoff before initializing a new upstream session is
    /// over.
    Reinit,
    /// Stdio: the `server/discover` probe's time is up (docs/eras.md).
    EraProbe,
    /// Stdio, bridged: a client did not retry a call that needs its input.
    EraInput,
    /// `--url`: the grace for requests in flight at stdin's EOF is over.
    HttpDrain,
}

/// A request in flight; its route is the upstream it was written to
/// (`None` while held for a restarting upstream).
type Pending = inflight::Request<Option<u64>>;

/// The host's side: the relay's own stdin and stdout.
struct Host {
    input: Fd,
    output: Fd,
    /// The stdio file flags found at start, restored at exit.
    saved_flags: (libc::c_int, libc::c_int),
    reader: LineReader,
    out: OutBuf,
    readable: bool,
    /// The kernel reported a hang-up: read to EOF, never stop at a short read.
    hup: bool,
    writable: bool,
    eof: bool,
    /// Stdout failed: nothing more is written.
    out_broken: bool,
}

struct Forward {
    cfg: ForwardConfig,
    poll: Poll,
    timers: TimerWheel<TimerKind>,
    endpoints: Registry<Endpoint>,
    signals: Signals,
    now: Instant,
    wall: SystemTime,

    /// Our stdin and stdout: the host's side.
    host: Host,

    /// The child processes, or the HTTP upstream.
    server: Server,
    pending: Inflight<Option<u64>>,
    cached_initialize: Option<Vec<u8>>,
    cached_initialized: Option<Vec<u8>>,
    /// Stdio: the client's era and the server's, and the bridge between a
    /// modern client and a handshake-era server (`mcp::era::link`).
    era: Link,
    era_timer: Option<TimerId>,
    era_input_timer: Option<(TimerId, Instant)>,

    closing: bool,
    final_flush: Option<TimerId>,
    exit_code: Option<i32>,
    /// A source still had data when its read budget ran out.
    more: bool,
    recorder: Option<Recorder>,
    /// Budget of the debug lines about messages dropped (`child::dropped`).
    drop_log: RateLog,
    /// Calls the tool filter denied (`tools.rs`).
    tool_log: tools::ToolLog,
}

/// Client requests the HTTP upstream may hold at once (queued or in flight);
/// above it stdin is not read.
const MAX_HTTP_IN_FLIGHT: usize = 4096;

/// Runs forward mode to completion and returns the process exit status.
pub fn run(cfg: ForwardConfig) -> io::Result<i32> {
    let mut fwd = Forward::new(cfg)?;
    let code = fwd.run_loop();
    fwd.restore_stdio();
    code
}

impl Forward {
    fn new(cfg: ForwardConfig) -> io::Result<Forward> {
        let poll = Poll::new()?;
        // Orphans of the servers come back to the relay (`io::orphans`).
        crate::io::orphans::become_subreaper();
        let signals =
            Signals::install(&[libc::SIGINT, libc::SIGTERM, libc::SIGCHLD, libc::SIGHUP])?;
        signals.register(poll.registry(), SIGNAL_TOKEN)?;
        let stdin_flags = (set_nonblocking(0, true)?, set_nonblocking(1, true)?);
        let mut endpoints = Registry::default();
        let mut client_in = Fd::dup_std(0)?;
        let mut client_out = Fd::dup_std(1)?;
        let tok = endpoints.insert(Endpoint::ClientIn);
        client_in.register(poll.registry(), tok, Interest::READABLE)?;
        let tok = endpoints.insert(Endpoint::ClientOut);
        client_out.register(poll.registry(), tok, Interest::WRITABLE)?;
        let recorder = match &cfg.record {
            Some(path) => Some(Recorder::open(path).map_err(|e| {
                io::Error::new(e.kind(), format!("--record {}: {e}", path.display()))
            })?),
            None => None,
        };
        let now = Instant::now();
        let backoff = Backoff::new(cfg.restart_base, cfg.restart_max_delay, Rng::from_os());
        let era = Link::new(cfg.upstream_protocol, PROBE_TIMEOUT, now);
        Ok(Forward {
            host: Host {
                input: client_in,
                output: client_out,
                saved_flags: stdin_flags,
                reader: LineReader::new(cfg.max_message_size),
                out: OutBuf::new(HIGH_WATER),
                readable: true,
                hup: false,
                writable: true,
                eof: false,
                out_broken: false,
            },
            cfg,
            poll,
            timers: TimerWheel::new(now),
            endpoints,
            signals,
            now,
            wall: SystemTime::now(),
            // Replaced by the HTTP upstream before the loop starts with --url.
            server: Server::Stdio(Box::new(Children::new(backoff))),
            pending: Inflight::default(),
            cached_initialize: None,
            cached_initialized: None,
            era,
            era_timer: None,
            era_input_timer: None,
            closing: false,
            final_flush: None,
            exit_code: None,
            more: false,
            drop_log: RateLog::per_second(),
            recorder,
            tool_log: tools::ToolLog::default(),
        })
    }

    fn restore_stdio(&self) {
        // O_NONBLOCK lives on the shared open file: put it back for whoever
        // shares our stdin/stdout (a terminal, a shell).
        // SAFETY: fcntl on the standard fds with their original flags.
        unsafe {
            libc::fcntl(0, libc::F_SETFL, self.host.saved_flags.0);
            libc::fcntl(1, libc::F_SETFL, self.host.saved_flags.1);
        }
    }

    fn run_loop(&mut self) -> io::Result<i32> {
        if let Some(opts) = self.cfg.http.clone() {
            match http::HttpUpstream::new(&opts, &self.cfg, &self.poll) {
                Ok(h) => self.server = Server::Http(Box::new(h)),
                Err(e) => {
                    crate::log_error!("--url {}: {e}", opts.url);
                    return Ok(1);
                }
            }
            if self.cfg.login {
                self.oauth_login();
            }
        } else if let Err(e) = self.spawn_upstream() {
            crate::log_error!("cannot start {:?}: {e}", self.cfg.command);
            return Ok(1);
        }
        let code = turn::run(self, 256)?;
        crate::io::orphans::kill_all();
        Ok(code)
    }

    fn handle_event(&mut self, token: Token, readable: bool, writable: bool, hup: bool) {
        match reactor::token::source(token) {
            Source::Resolver => {
                self.http_event(None, readable, writable);
                return;
            }
            // Forward has one HTTP engine, tag 0.
            Source::Http { tag: 0, conn } => {
                self.http_event(Some(conn), readable, writable);
                return;
            }
            // And `--oauth`'s, for the authorization server.
            Source::Http { tag: 1, conn } => {
                self.oauth_engine_event(conn, readable, writable);
                return;
            }
            // The loop hands signals over itself.
            Source::Http { .. } | Source::Signal | Source::Unknown => return,
            Source::Endpoint { .. } => {}
        }
        // Stale tokens (an upstream that was replaced) are ignored.
        let Some(&ep) = self.endpoints.get(token) else {
            return;
        };
        match ep {
            Endpoint::ClientIn => {
                self.host.readable |= readable;
                self.host.hup |= hup;
            }
            Endpoint::ClientOut => self.host.writable |= writable,
            Endpoint::Child(seq, pipe) => {
                if let Some(u) = self.upstream_mut(seq) {
                    u.io.on_event(pipe, readable, writable, hup);
                }
            }
            Endpoint::OAuthListener => self.oauth_accept(),
            Endpoint::OAuthConn(n) => self.oauth_conn_read(n),
        }
    }

    fn handle_signal(&mut self, sig: libc::c_int) {
        match sig {
            libc::SIGCHLD => {
                self.reap_children();
                self.oauth_reap();
                // What the servers' exits handed over to the relay.
                crate::io::orphans::sweep();
            }
            libc::SIGTERM | libc::SIGINT => {
                if self.closing {
                    crate::log_warn!("second signal: killing the server now");
                    self.force_close();
                } else {
                    crate::log_info!("signal {sig}: closing the server and exiting");
                    self.begin_close();
                }
            }
            libc::SIGHUP => {
                if let Some(r) = self.recorder.as_mut() {
                    r.reopen();
                }
            }
            _ => {}
        }
    }

    fn handle_timer(&mut self, t: TimerKind) {
        match t {
            TimerKind::Response(id) => self.response_timeout(id),
            TimerKind::Grace(seq) => self.grace_expired(seq),
            TimerKind::Respawn => {
                if let Some(kids) = self.server.children_mut() {
                    kids.respawn = None;
                }
                if self.closing {
                    return;
                }
                if let Err(e) = self.spawn_upstream() {
                    crate::log_error!("respawning {:?} failed: {e}", self.cfg.command);
                    self.schedule_respawn();
                }
            }
            TimerKind::HttpDrain => self.http_drained(true),
            TimerKind::FinalFlush => {
                if self.server.http().is_some_and(|h| !h.settled()) {
                    crate::log_warn!("the upstream did not answer DELETE in time");
                    self.http_abandon();
                    return;
                }
                crate::log_warn!("stdout not drained in time; exiting with output unsent");
                self.final_flush = None;
                self.host.out_broken = true;
            }
            TimerKind::Reconnect => self.on_reconnect_timer(),
            TimerKind::GetHold => self.on_get_hold_timer(),
            TimerKind::Reinit => self.on_reinit_timer(),
            TimerKind::EraProbe => {
                self.era_timer = None;
                if let Some(c) = self.era.on_tick(self.now) {
                    crate::log_warn!(
                        "[{}] no answer to server/discover within {PROBE_TIMEOUT:?}: \
                         treating the server as handshake-era and initializing it",
                        self.cfg.name
                    );
                    self.era_apply(c);
                }
            }
            TimerKind::EraInput => {
                self.era_input_timer = None;
                let c = self.era.on_input_tick(self.now);
                if !c.to_server.is_empty() {
                    crate::log_warn!(
                        "[{}] the client did not answer the server's request in time; \
                         the call was cancelled ({} so far)",
                        self.cfg.name,
                        self.era.input_stats().expired
                    );
                }
                self.era_apply(c);
            }
        }
    }

    fn pump(&mut self) {
        self.read_client();
        if let Some(seq) = self.server.current().map(|u| u.seq) {
            self.read_upstream(seq, false);
        }
        self.drain_stderr_all();
        self.flush_upstreams();
        self.flush_client();
        if let Some(r) = self.recorder.as_mut() {
            r.flush();
        }
        // Edge-triggered readiness is not re-announced: a reader that paused
        // for room and now has it must be resumed without waiting for an event.
        if self.host.readable && !self.client_paused() {
            self.more = true;
        }
        if let Some(u) = self.server.current()
            && u.io.out_readable
            && !u.io.out_eof
            && !self.host.out.is_full()
        {
            self.more = true;
        }
        // The same for an HTTP upstream's connections (read budget, pause).
        self.http_backpressure();
        if self.http_has_backlog() {
            self.more = true;
        }
    }

    fn begin_close(&mut self) {
        if self.closing {
            return;
        }
        self.closing = true;
        let held = match self.server.children_mut() {
            Some(kids) => {
                if let Some(t) = kids.respawn.take() {
                    self.timers.cancel(t);
                }
                kids.held_bytes = 0;
                std::mem::take(&mut kids.held)
            }
            None => VecDeque::new(),
        };
        self.http_close();
        // Held messages will never reach a server.
        for h in held {
            if let Some(id) = h.request {
                self.fail_request(
                    &id,
                    RelayError::UpstreamClosed,
                    "The relay is shutting down",
                    json!({}),
                );
            }
        }
        if let Some(u) = self.server.current_mut() {
            // Let the server read what the client sent before stdin closes.
            let (seq, actions) = (u.seq, u.life.drain(self.now));
            self.run_upstream(seq, actions);
        }
    }

    fn force_close(&mut self) {
        self.begin_close();
        self.kill_upstreams();
        self.host.out_broken = true;
    }

    /// The exit status once nothing is left to do.
    fn finished(&mut self) -> Option<i32> {
        if !self.closing
            || self
                .server
                .children()
                .is_some_and(|k| !k.retired.is_empty())
        {
            return None;
        }
        if self.server.http().is_some_and(|h| h.draining()) && self.pending.is_empty() {
            // Every request in flight at stdin's EOF has its answer.
            self.http_drained(false);
        }
        if self.server.http().is_some_and(|h| !h.settled()) {
            // Answers still awaited after stdin's EOF, or the DELETE ending
            // the upstream session is still on its way.
            return None;
        }
        if self.server.current().is_some() {
            // The server is still running: it exits on stdin EOF (or is
            // escalated by its grace timer) and is then retired and reaped.
            return None;
        }
        // Requests the server never answered still get their one answer.
        let ids: Vec<Id> = self.pending.iter().map(|(id, _)| id.clone()).collect();
        for id in ids {
            self.fail_request(
                &id,
                RelayError::UpstreamClosed,
                "The server closed before replying",
                json!({}),
            );
        }
        if !self.host.out.is_empty() && !self.host.out_broken {
            if self.final_flush.is_none() {
                self.final_flush = Some(
                    self.timers
                        .insert(self.now + self.cfg.kill_grace, TimerKind::FinalFlush),
                );
            }
            self.flush_client();
            if !self.host.out.is_empty() && !self.host.out_broken {
                return None;
            }
        }
        if let Some(r) = self.recorder.as_mut() {
            r.flush();
        }
        let _ = self.host.output.file.flush();
        Some(self.exit_code.unwrap_or(0))
    }
}

/// The forward mode's side of the one loop turn (`reactor::turn`).
impl turn::Driver for Forward {
    type Timer = TimerKind;

    fn poll_mut(&mut self) -> &mut Poll {
        &mut self.poll
    }

    fn signals_mut(&mut self) -> &mut Signals {
        &mut self.signals
    }

    fn timers_mut(&mut self) -> &mut TimerWheel<TimerKind> {
        &mut self.timers
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.wall = SystemTime::now();
        self.more = false;
    }

    fn end_of_turn(&mut self) -> Option<i32> {
        self.pump();
        self.finished()
    }

    fn has_more(&self) -> bool {
        self.more
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.server.http().and_then(|h| h.next_deadline())
    }

    fn on_signal(&mut self, sig: libc::c_int) {
        self.handle_signal(sig);
    }

    fn on_event(&mut self, token: Token, r: Readiness) {
        self.handle_event(token, r.readable, r.writable, r.hup);
    }

    /// HTTP connections whose read budget ran out (or whose pause ended)
    /// are read before the timers, like a readiness event.
    fn after_events(&mut self) {
        self.http_backlog();
    }

    fn on_timer(&mut self, t: TimerKind) {
        self.handle_timer(t);
    }

    fn after_timers(&mut self) {
        self.http_poll();
    }
}

fn line_has_error(line: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .is_some_and(|v| v.get("error").is_some())
}

/// The cached `initialize` with its id replaced.
fn with_id(line: &[u8], id: &Id) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let obj = v.as_object_mut()?;
    obj.insert("id".into(), serde_json::from_str(&id.to_json()).ok()?);
    serde_json::to_vec(&v).ok()
}

/// Mirrors the server's status: its exit code, 128 + signal if it was killed,
/// and 1 when it exited 0 (an unexpected exit is still a failure).
fn exit_code_for(status: Option<ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(0), _) => 1,
            (Some(c), _) => c,
            (None, Some(sig)) => 128 + sig,
            _ => 1,
        },
        None => 1,
    }
}
