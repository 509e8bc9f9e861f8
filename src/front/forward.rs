//! `mcp-relay forward -- COMMAND`: the relay's stdin/stdout on one side, a
//! child MCP server on the other.
//!
//! State lives in one struct driven by one loop: events and timers come in,
//! every transition is a method here. The pieces:
//!
//! - client side: `reader` frames stdin, `out` queues what goes to stdout;
//! - `current`: the live upstream (child process and its pipes), if any;
//! - `retired`: upstreams on their way out, kept until reaped;
//! - `pending`: client requests awaiting a reply, each with its timeout
//!   (the session core's `Inflight` table, shared with `reverse`);
//! - `held`: client messages waiting for a restarted upstream.
//!
//! Upstream life is an `upstream::lifecycle::Lifecycle` per upstream, with
//! `DownPolicy::OnStatus`: spawned → (replaying the cached `initialize` after
//! a restart) → ready → closing (stdin closed, then kill grace → SIGTERM →
//! kill grace → SIGKILL) and/or lost (stdout EOF, or exit) → down → reaped.
//! Its decisions come back as actions that `run_upstream` carries out. A lost
//! upstream leaves `current` for `retired`; it is down once reaped or a grace
//! after it was lost, and then its in-flight requests are failed and the relay
//! either restarts it (`--restart`) or exits. A closing upstream that still
//! has its stdout keeps answering.

mod http;

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
use crate::policy::backoff::{Backoff, Rng};
use crate::proto::errors::RelayError;
use crate::proto::framing::{Frame, LineReader, Oversize, ReadResult};
use crate::proto::jsonrpc::{self, Envelope, Id, Kind, Message};
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
}

#[derive(Debug)]
enum TimerKind {
    Response(Id),
    Grace(u64),
    Respawn,
    FinalFlush,
    /// `--url`: the GET stream's reconnect delay is over.
    Reconnect,
}

/// A request in flight; its route is the upstream it was written to
/// (`None` while held for a restarting upstream).
type Pending = inflight::Request<Option<u64>>;

struct Upstream {
    seq: u64,
    io: StdioConn,
    /// Where the process is in its life, with the replayed `initialize` it
    /// awaits, if any.
    life: Lifecycle,
    /// The timer armed for `life`'s grace deadline.
    grace: Option<TimerId>,
}

struct Held {
    line: Vec<u8>,
    request: Option<Id>,
}

struct Forward {
    cfg: ForwardConfig,
    poll: Poll,
    timers: TimerWheel<TimerKind>,
    endpoints: Registry<Endpoint>,
    signals: Signals,
    now: Instant,
    wall: SystemTime,

    client_in: Fd,
    client_out: Fd,
    stdin_flags: (libc::c_int, libc::c_int),
    reader: LineReader,
    out: OutBuf,
    client_readable: bool,
    /// The kernel reported a hang-up: read to EOF, never stop at a short read.
    client_hup: bool,
    client_writable: bool,
    client_eof: bool,
    client_out_broken: bool,

    current: Option<Upstream>,
    retired: Vec<Upstream>,
    next_seq: u64,
    pending: Inflight<Option<u64>>,
    cached_initialize: Option<Vec<u8>>,
    cached_initialized: Option<Vec<u8>>,
    held: VecDeque<Held>,
    held_bytes: usize,
    backoff: Backoff,
    respawn: Option<TimerId>,

    closing: bool,
    forced: bool,
    final_flush: Option<TimerId>,
    exit_code: Option<i32>,
    /// A source still had data when its read budget ran out.
    more: bool,
    recorder: Option<Recorder>,
    /// `--url`: the HTTP upstream (the stdio fields above stay unused).
    http: Option<Box<http::HttpUpstream>>,
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
        Ok(Forward {
            reader: LineReader::new(cfg.max_message_size),
            cfg,
            poll,
            timers: TimerWheel::new(now),
            endpoints,
            signals,
            now,
            wall: SystemTime::now(),
            client_readable: true,
            client_hup: false,
            client_writable: true,
            client_in,
            client_out,
            stdin_flags,
            out: OutBuf::new(HIGH_WATER),
            client_eof: false,
            client_out_broken: false,
            current: None,
            retired: Vec::new(),
            next_seq: 1,
            pending: Inflight::default(),
            cached_initialize: None,
            cached_initialized: None,
            held: VecDeque::new(),
            held_bytes: 0,
            backoff,
            respawn: None,
            closing: false,
            forced: false,
            final_flush: None,
            exit_code: None,
            more: false,
            recorder,
            http: None,
        })
    }

    fn restore_stdio(&self) {
        // O_NONBLOCK lives on the shared open file: put it back for whoever
        // shares our stdin/stdout (a terminal, a shell).
        // SAFETY: fcntl on the standard fds with their original flags.
        unsafe {
            libc::fcntl(0, libc::F_SETFL, self.stdin_flags.0);
            libc::fcntl(1, libc::F_SETFL, self.stdin_flags.1);
        }
    }

    fn run_loop(&mut self) -> io::Result<i32> {
        if let Some(opts) = self.cfg.http.clone() {
            match http::HttpUpstream::new(&opts, &self.cfg, &self.poll) {
                Ok(h) => self.http = Some(Box::new(h)),
                Err(e) => {
                    log::error!("--url {}: {e}", opts.url);
                    return Ok(1);
                }
            }
        } else if let Err(e) = self.spawn_upstream() {
            log::error!("cannot start {:?}: {e}", self.cfg.command);
            return Ok(1);
        }
        turn::run(self, 256)
    }

    // ---- events -------------------------------------------------------

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
                self.client_readable |= readable;
                self.client_hup |= hup;
            }
            Endpoint::ClientOut => self.client_writable |= writable,
            Endpoint::Child(seq, pipe) => {
                if let Some(u) = self.upstream_mut(seq) {
                    u.io.on_event(pipe, readable, writable, hup);
                }
            }
        }
    }

    fn handle_signal(&mut self, sig: libc::c_int) {
        match sig {
            libc::SIGCHLD => self.reap_children(),
            libc::SIGTERM | libc::SIGINT => {
                if self.closing {
                    log::warn!("second signal: killing the server now");
                    self.force_close();
                } else {
                    log::info!("signal {sig}: closing the server and exiting");
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
                self.respawn = None;
                if self.closing {
                    return;
                }
                if let Err(e) = self.spawn_upstream() {
                    log::error!("respawning {:?} failed: {e}", self.cfg.command);
                    self.schedule_respawn();
                }
            }
            TimerKind::FinalFlush => {
                if self.http.as_deref().is_some_and(|h| !h.settled()) {
                    log::warn!("the upstream did not answer DELETE in time");
                    self.http_abandon();
                    return;
                }
                log::warn!("stdout not drained in time; exiting with output unsent");
                self.final_flush = None;
                self.client_out_broken = true;
            }
            TimerKind::Reconnect => self.on_reconnect_timer(),
        }
    }

    // ---- the pump: move bytes while there is readiness and room -------

    fn pump(&mut self) {
        self.read_client();
        if let Some(seq) = self.current.as_ref().map(|u| u.seq) {
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
        if self.client_readable && !self.client_paused() {
            self.more = true;
        }
        if let Some(u) = &self.current
            && u.io.out_readable
            && !u.io.out_eof
            && !self.out.is_full()
        {
            self.more = true;
        }
    }

    fn client_paused(&self) -> bool {
        if self.closing || self.client_eof {
            return true;
        }
        if let Some(h) = self.http.as_deref() {
            return h.in_flight() >= MAX_HTTP_IN_FLIGHT;
        }
        match &self.current {
            Some(u) if u.life.awaiting_init().is_none() => u.io.to_child.is_full(),
            _ => self.held_bytes >= HELD_MAX_BYTES,
        }
    }

    fn read_client(&mut self) {
        let mut taken = 0;
        while self.client_readable || !self.client_in.pollable {
            if self.client_paused() {
                return;
            }
            if taken >= READ_BUDGET {
                self.more = true;
                return;
            }
            match self.reader.read_from(&mut self.client_in.file) {
                Ok(ReadResult::Data { n, drained }) => {
                    taken += n;
                    if drained && !self.client_hup {
                        self.client_readable = false;
                    }
                    // The reader is moved out while its frames are handled, so
                    // lines are borrowed, not copied.
                    let mut reader = std::mem::replace(&mut self.reader, LineReader::new(0));
                    while let Some(frame) = reader.next_frame() {
                        match frame {
                            Frame::Line(line) => self.on_client_line(line),
                            Frame::Oversize(o) => self.on_client_oversize(o),
                        }
                    }
                    self.reader = reader;
                }
                Ok(ReadResult::WouldBlock) => self.client_readable = false,
                Ok(ReadResult::Eof) => {
                    if self.reader.has_partial() {
                        log::warn!("client closed stdin in the middle of a message; dropped it");
                    }
                    log::info!("client closed stdin");
                    self.client_eof = true;
                    self.begin_close();
                    return;
                }
                Err(e) => {
                    log::warn!("reading stdin failed: {e}");
                    self.client_eof = true;
                    self.begin_close();
                    return;
                }
            }
        }
    }

    fn read_upstream(&mut self, seq: u64, ignore_budget: bool) {
        let mut taken = 0;
        loop {
            let client_full = self.out.is_full() && !self.client_out_broken;
            let Some(u) = self.upstream_mut(seq) else {
                return;
            };
            if !u.io.out_readable || u.io.out_eof {
                return;
            }
            if !ignore_budget && (client_full || taken >= READ_BUDGET) {
                self.more |= !client_full;
                return;
            }
            match u.io.read_stdout() {
                StdoutRead::Data(n) => {
                    taken += n;
                    // The reader is moved out while its frames are handled, so
                    // lines are borrowed, not copied.
                    let mut reader = std::mem::replace(&mut u.io.from_child, LineReader::new(0));
                    while let Some(f) = reader.next_frame() {
                        match f {
                            Frame::Line(line) => self.on_server_line(seq, line),
                            Frame::Oversize(o) => self.on_server_oversize(o),
                        }
                    }
                    if let Some(u) = self.upstream_mut(seq) {
                        u.io.from_child = reader;
                    }
                }
                StdoutRead::Idle => return,
                StdoutRead::Eof => {
                    log::info!("[{}] server closed its stdout", self.cfg.name);
                    self.upstream_lost(seq);
                    return;
                }
            }
        }
    }

    fn drain_stderr_all(&mut self) {
        let reg = self.poll.registry();
        for u in self.current.iter_mut().chain(self.retired.iter_mut()) {
            let (more, closed) = u.io.drain_stderr(reg, self.now);
            self.more |= more;
            if let Some(t) = closed {
                self.endpoints.remove(t);
            }
        }
    }

    fn flush_upstreams(&mut self) {
        let mut broken = Vec::new();
        let mut close_now = Vec::new();
        for u in self.current.iter_mut().chain(self.retired.iter_mut()) {
            if let Err(e) = u.io.flush_stdin() {
                log::warn!(
                    "[{}] writing to the server's stdin failed: {e}",
                    self.cfg.name
                );
                broken.push(u.seq);
            }
            if u.life.is_draining() && u.io.to_child.is_empty() {
                close_now.push(u.seq);
            }
        }
        for seq in broken.into_iter().chain(close_now) {
            self.close_stdin(seq);
        }
    }

    fn flush_client(&mut self) {
        if self.client_out_broken {
            self.out.clear();
            return;
        }
        let can_write = self.client_writable || !self.client_out.pollable;
        if self.out.is_empty() || !can_write {
            return;
        }
        match self.out.flush_to(&mut self.client_out.file) {
            Ok(true) => {
                // Room again: upstream reads paused on a full queue resume.
                if self.current.as_ref().is_some_and(|u| u.io.out_readable) {
                    self.more = true;
                }
            }
            Ok(false) => self.client_writable = false,
            Err(e) => {
                log::warn!("writing to stdout failed: {e}; the client is gone");
                self.client_out_broken = true;
                self.out.clear();
                self.begin_close();
            }
        }
    }

    // ---- client → server ------------------------------------------------

    fn on_client_line(&mut self, line: &[u8]) {
        let msg = match jsonrpc::peek(line) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("client sent invalid JSON: {e}");
                self.reply_error(
                    None,
                    RelayError::ParseError,
                    &format!("Parse error: {e}"),
                    json!({}),
                );
                return;
            }
        };
        match msg {
            Message::Single(env) => match env.kind() {
                Kind::Request => {
                    let Some(id) = env.id() else { return };
                    if self.pending.contains(&id) {
                        self.reply_error(
                            Some(&id),
                            RelayError::DuplicateId,
                            "A request with this id is already in flight",
                            json!({}),
                        );
                        return;
                    }
                    let initialize = env.method_is("initialize");
                    if initialize {
                        self.cached_initialize = Some(line.to_vec());
                    }
                    self.track(id.clone(), &env, initialize);
                    self.send_to_server(line, Some(id));
                }
                Kind::Notification => {
                    if env.method_is("notifications/initialized") {
                        self.cached_initialized = Some(line.to_vec());
                    } else if env.method_is("notifications/cancelled")
                        && let Some(id) = env.param_id("requestId")
                    {
                        // MCP: the cancelled request gets no reply; a late one
                        // from the server is dropped.
                        self.untrack(&id);
                    }
                    self.send_to_server(line, None);
                }
                Kind::Response => self.send_to_server(line, None),
                Kind::Invalid => {
                    let id = env.id();
                    self.reply_error(
                        id.as_ref(),
                        RelayError::InvalidRequest,
                        "Invalid Request: not a JSON-RPC request, notification or response",
                        json!({}),
                    );
                }
            },
            Message::Batch(items) => {
                // 2025-03-26 batches: track each request, forward the line whole.
                let mut first_request = None;
                for raw in items {
                    if let Some(env) = jsonrpc::peek_raw(raw)
                        && env.kind() == Kind::Request
                        && let Some(id) = env.id()
                        && !self.pending.contains(&id)
                    {
                        self.track(id.clone(), &env, false);
                        first_request.get_or_insert(id);
                    }
                }
                self.send_to_server(line, first_request);
            }
        }
    }

    fn on_client_oversize(&mut self, o: Oversize) {
        let id = jsonrpc::recover_id(&o.head, &o.tail);
        // A request names a method; a response has a result or an error. The
        // members may sit anywhere, so look at both ends of the line.
        let has = |key: &[u8]| {
            memchr::memmem::find(&o.head, key).is_some()
                || memchr::memmem::find(&o.tail, key).is_some()
        };
        let is_request = has(b"\"method\"") || !(has(b"\"result\"") || has(b"\"error\""));
        log::warn!(
            "client message of {} bytes exceeds --max-message-size {}; dropped (id {})",
            o.len,
            self.cfg.max_message_size,
            id.as_ref().map_or("unknown".to_string(), Id::to_json)
        );
        if let Some(id) = id.filter(|_| is_request)
            && !self.pending.contains(&id)
        {
            self.reply_error(
                Some(&id),
                RelayError::MessageTooLarge,
                "Request exceeds the relay's maximum message size",
                json!({"size": o.len, "limit": self.cfg.max_message_size}),
            );
        }
    }

    fn track(&mut self, id: Id, env: &Envelope, initialize: bool) {
        // The caller answered a duplicate id already.
        let deadline = self.deadlines().next(self.now, self.now);
        let timer = deadline.map(|d| self.timers.insert(d, TimerKind::Response(id.clone())));
        match self
            .pending
            .begin(id, self.now, env.progress_token(), initialize, None)
        {
            Ok(p) => p.timer = timer,
            Err(_) => {
                if let Some(t) = timer {
                    self.timers.cancel(t);
                }
            }
        }
    }

    fn deadlines(&self) -> Deadlines {
        Deadlines {
            response_timeout: self.cfg.response_timeout,
            max_request_time: self.cfg.max_request_time,
        }
    }

    /// Takes a request out (its one answer is now the caller's to send)
    /// and stops its timer.
    fn untrack(&mut self, id: &Id) -> Option<Pending> {
        let p = self.pending.finish(id)?;
        if let Some(t) = p.timer {
            self.timers.cancel(t);
        }
        Some(p)
    }

    fn send_to_server(&mut self, line: &[u8], request: Option<Id>) {
        self.record(Direction::ClientToServer, line);
        if self.http.is_some() {
            self.http_send(line, request);
            return;
        }
        let ready = match &self.current {
            Some(u) => u.life.awaiting_init().is_none() && u.io.proc.stdin.is_some(),
            None => false,
        };
        if ready {
            self.write_upstream(line, request.as_ref());
        } else if self.cfg.restart && !self.closing {
            // A lost server is always followed by a respawn in restart mode,
            // even before it is reaped: hold the message for the new one.
            self.held_bytes += line.len();
            self.held.push_back(Held {
                line: line.to_vec(),
                request,
            });
        } else if let Some(id) = request {
            self.fail_request(
                &id,
                RelayError::UpstreamClosed,
                "The server is not running",
                json!({}),
            );
        }
    }

    fn write_upstream(&mut self, line: &[u8], request: Option<&Id>) {
        let Some(u) = self.current.as_mut() else {
            return;
        };
        u.io.to_child.push_line(line);
        let seq = u.seq;
        if let Some(p) = request.and_then(|id| self.pending.get_mut(id)) {
            p.route = Some(seq);
        }
    }

    // ---- server → client ------------------------------------------------

    fn on_server_line(&mut self, seq: u64, line: &[u8]) {
        let msg = match jsonrpc::peek(line) {
            Ok(m) => m,
            Err(_) => {
                let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                log::warn!(
                    "[{}] non-JSON line on stdout dropped: {shown}",
                    self.cfg.name
                );
                return;
            }
        };
        match msg {
            Message::Single(env) => match env.kind() {
                Kind::Response => {
                    let Some(id) = env.id() else { return };
                    if self
                        .upstream_mut(seq)
                        .is_some_and(|u| u.life.awaiting_init() == Some(&id))
                    {
                        self.replay_done(seq, env.is_response && !line_has_error(line));
                        return;
                    }
                    if self.untrack(&id).is_some() {
                        self.send_to_client(Direction::ServerToClient, line);
                    } else {
                        log::debug!(
                            "[{}] reply to {id} dropped: no such request in flight",
                            self.cfg.name
                        );
                    }
                }
                Kind::Notification => {
                    if env.method_is("notifications/progress")
                        && let Some(tok) = env.param_id("progressToken")
                    {
                        self.on_progress(&tok);
                    }
                    self.send_to_client(Direction::ServerToClient, line);
                }
                Kind::Request => self.send_to_client(Direction::ServerToClient, line),
                Kind::Invalid => {
                    log::warn!("[{}] message that is not JSON-RPC dropped", self.cfg.name);
                }
            },
            Message::Batch(items) => {
                let mut keep: Vec<&str> = Vec::with_capacity(items.len());
                for raw in &items {
                    let late = match jsonrpc::peek_raw(raw) {
                        Some(env) if env.kind() == Kind::Response => match env.id() {
                            Some(id) => self.untrack(&id).is_none(),
                            None => true,
                        },
                        _ => false,
                    };
                    if !late {
                        keep.push(raw.get());
                    }
                }
                if keep.len() == items.len() {
                    self.send_to_client(Direction::ServerToClient, line);
                } else if !keep.is_empty() {
                    let rebuilt = format!("[{}]", keep.join(","));
                    self.send_to_client(Direction::ServerToClient, rebuilt.as_bytes());
                }
            }
        }
    }

    fn on_server_oversize(&mut self, o: Oversize) {
        let id = jsonrpc::recover_id(&o.head, &o.tail);
        log::warn!(
            "[{}] server message of {} bytes exceeds --max-message-size {}; dropped",
            self.cfg.name,
            o.len,
            self.cfg.max_message_size
        );
        if let Some(id) = id
            && self.pending.contains(&id)
        {
            self.fail_request(
                &id,
                RelayError::MessageTooLarge,
                "The server's reply exceeds the relay's maximum message size",
                json!({"size": o.len, "limit": self.cfg.max_message_size}),
            );
        }
    }

    fn on_progress(&mut self, token: &Id) {
        let limits = self.deadlines();
        let Some((id, p)) = self.pending.by_progress(token) else {
            return;
        };
        let id = id.clone();
        let Some(deadline) = limits.next(p.started, self.now) else {
            return;
        };
        let old = p.timer;
        if let Some(t) = old {
            self.timers.cancel(t);
        }
        let t = self
            .timers
            .insert(deadline, TimerKind::Response(id.clone()));
        if let Some(p) = self.pending.get_mut(&id) {
            p.timer = Some(t);
        }
    }

    fn send_to_client(&mut self, dir: Direction, line: &[u8]) {
        self.record(dir, line);
        if !self.client_out_broken {
            self.out.push_line(line);
        }
    }

    fn reply_error(
        &mut self,
        id: Option<&Id>,
        err: RelayError,
        message: &str,
        mut data: serde_json::Value,
    ) {
        if let Some(obj) = data.as_object_mut() {
            obj.insert("kind".into(), err.kind().into());
            obj.insert("upstream".into(), self.cfg.name.clone().into());
        }
        let msg = jsonrpc::error_response(id, err.code(), message, data);
        self.send_to_client(Direction::RelayToClient, &msg);
    }

    /// Answers a tracked request with a relay error and forgets it.
    fn fail_request(&mut self, id: &Id, err: RelayError, message: &str, data: serde_json::Value) {
        if self.untrack(id).is_some() {
            self.reply_error(Some(id), err, message, data);
        }
    }

    fn response_timeout(&mut self, id: Id) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        p.timer = None;
        let elapsed = self.now.duration_since(p.started);
        let (initialize, sent_to) = (p.initialize, p.route);
        log::warn!(
            "[{}] request {id} timed out after {elapsed:?}",
            self.cfg.name
        );
        self.fail_request(
            &id,
            RelayError::ResponseTimeout,
            &format!("No reply from the server within {elapsed:?}"),
            json!({
                "elapsed_ms": elapsed.as_millis() as u64,
                "response_timeout_ms": self.cfg.response_timeout.as_millis() as u64,
                "max_request_time_ms": self.cfg.max_request_time.as_millis() as u64,
            }),
        );
        // MCP: `initialize` must not be cancelled. Anything else is, so the
        // server can stop working on it; its late reply is dropped.
        if self.http.is_some() {
            self.http_cancel(&id, initialize);
            return;
        }
        if !initialize
            && let Some(u) = self.current.as_mut()
            && Some(u.seq) == sent_to
            && u.io.proc.stdin.is_some()
        {
            let msg = jsonrpc::cancelled(&id, "mcp-relay: response timeout");
            u.io.to_child.push_line(&msg);
            self.record(Direction::RelayToServer, &msg);
        }
    }

    fn record(&mut self, dir: Direction, line: &[u8]) {
        if let Some(r) = self.recorder.as_mut() {
            r.record(self.wall, dir, line);
        }
    }

    // ---- upstream life ----------------------------------------------------

    fn upstream_mut(&mut self, seq: u64) -> Option<&mut Upstream> {
        find(&mut self.current, &mut self.retired, seq)
    }

    fn spawn_upstream(&mut self) -> io::Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut io = StdioConn::spawn(
            &self.cfg.command,
            &self.cfg.name,
            self.cfg.max_message_size,
            self.now,
        )?;
        log::info!("[{}] started pid {}", self.cfg.name, io.pid());
        let endpoints = &mut self.endpoints;
        io.register(self.poll.registry(), |pipe| {
            endpoints.insert(Endpoint::Child(seq, pipe))
        })?;
        let mut replay = None;
        if let Some(init) = &self.cached_initialize {
            // A restart: the server must be initialized again before it sees
            // the client's traffic. The client never learns of it.
            let id = Id::Str(format!("{REPLAY_ID_PREFIX}{seq}").into());
            match with_id(init, &id) {
                Some(msg) => {
                    io.to_child.push_line(&msg);
                    self.record(Direction::RelayToServer, &msg);
                    replay = Some(id);
                }
                None => log::warn!("cached initialize could not be replayed"),
            }
        }
        let replaying = replay.is_some();
        let cfg = lifecycle::Config {
            grace: self.cfg.kill_grace,
            down: DownPolicy::OnStatus,
        };
        self.current = Some(Upstream {
            seq,
            io,
            life: Lifecycle::spawned(cfg, replay),
            grace: None,
        });
        if !replaying {
            self.flush_held();
        }
        Ok(())
    }

    fn replay_done(&mut self, seq: u64, ok: bool) {
        if ok {
            log::info!("[{}] restarted server initialized", self.cfg.name);
        } else {
            log::warn!(
                "[{}] restarted server rejected the replayed initialize",
                self.cfg.name
            );
        }
        let initialized = self.cached_initialized.clone();
        if let Some(u) = self.upstream_mut(seq) {
            u.life.initialized();
            if let Some(n) = &initialized {
                u.io.to_child.push_line(n);
            }
        }
        if let Some(n) = initialized {
            self.record(Direction::RelayToServer, &n);
        }
        self.flush_held();
    }

    fn flush_held(&mut self) {
        while let Some(h) = self.held.pop_front() {
            self.held_bytes -= h.line.len();
            // A request that timed out while held is not sent at all.
            if let Some(id) = &h.request
                && !self.pending.contains(id)
            {
                continue;
            }
            self.write_upstream(&h.line, h.request.as_ref());
        }
    }

    /// The upstream's stdout ended: it is out of service at once and is
    /// closed and reaped in the background.
    fn upstream_lost(&mut self, seq: u64) {
        self.retire(seq);
        let Some(u) = find(&mut self.current, &mut self.retired, seq) else {
            return;
        };
        let actions = u.life.on_lost(self.now);
        self.run_upstream(seq, actions);
        let reaped = self.upstream_mut(seq).and_then(|u| u.io.proc.try_reap());
        if let Some(status) = reaped {
            self.upstream_exited(seq, status);
        }
    }

    /// Fails the upstream's in-flight requests and decides what comes next.
    fn upstream_down(&mut self, seq: u64, status: Option<ExitStatus>) {
        let Some(u) = find(&mut self.current, &mut self.retired, seq) else {
            return;
        };
        let uptime = self.now.duration_since(u.io.started);
        let what = status.map_or_else(|| "stdout closed".to_string(), describe);
        let ids: Vec<Id> = self
            .pending
            .iter()
            .filter(|(_, p)| p.route == Some(seq))
            .map(|(id, _)| id.clone())
            .collect();
        if !self.closing {
            log::warn!(
                "[{}] server went away ({what}); {} request(s) in flight failed",
                self.cfg.name,
                ids.len()
            );
        }
        for id in ids {
            self.fail_request(
                &id,
                RelayError::UpstreamClosed,
                &format!("The server closed the connection ({what})"),
                json!({"status": what, "exit_code": status.and_then(|s| s.code())}),
            );
        }
        if self.closing {
            return;
        }
        if self.cfg.restart {
            if uptime >= STABLE_UPTIME {
                self.backoff.reset();
            }
            self.schedule_respawn();
        } else {
            self.exit_code = Some(exit_code_for(status));
            self.begin_close();
        }
    }

    fn schedule_respawn(&mut self) {
        let delay = self.backoff.next_delay();
        log::info!(
            "[{}] restarting in {delay:?} (attempt {})",
            self.cfg.name,
            self.backoff.attempt()
        );
        self.respawn = Some(self.timers.insert(self.now + delay, TimerKind::Respawn));
    }

    fn close_stdin(&mut self, seq: u64) {
        let Some(u) = find(&mut self.current, &mut self.retired, seq) else {
            return;
        };
        // A draining upstream stays one the relay asked to close.
        let actions = u.life.close(self.now, Cause::Fault);
        self.run_upstream(seq, actions);
    }

    fn grace_expired(&mut self, seq: u64) {
        let Some(u) = find(&mut self.current, &mut self.retired, seq) else {
            return;
        };
        u.grace = None;
        if let Some(status) = u.io.proc.try_reap() {
            self.upstream_exited(seq, status);
            return;
        }
        let actions = u.life.on_grace_expired(self.now);
        self.run_upstream(seq, actions);
    }

    fn reap_children(&mut self) {
        let seqs: Vec<u64> = self
            .current
            .iter()
            .chain(self.retired.iter())
            .map(|u| u.seq)
            .collect();
        for seq in seqs {
            let Some(u) = find(&mut self.current, &mut self.retired, seq) else {
                continue;
            };
            if u.io.proc.status().is_some() {
                continue;
            }
            let Some(status) = u.io.proc.try_reap() else {
                continue;
            };
            log::info!(
                "[{}] pid {} exited ({})",
                self.cfg.name,
                u.io.proc.pid,
                describe(status)
            );
            // Whatever it wrote before exiting is still in the pipe: relay it.
            u.io.mark_exited();
            self.read_upstream(seq, true);
            self.upstream_exited(seq, status);
        }
    }

    /// Drops a reaped, retired upstream: its pipes are deregistered and closed.
    fn release_upstream(&mut self, seq: u64) {
        let Some(pos) = self.retired.iter().position(|u| u.seq == seq) else {
            return;
        };
        let mut u = self.retired.swap_remove(pos);
        if let Some(t) = u.grace.take() {
            self.timers.cancel(t);
        }
        for t in u.io.release(self.poll.registry(), self.now) {
            self.endpoints.remove(t);
        }
    }

    /// The upstream was reaped: out of service, down (if it was not yet) and
    /// released.
    fn upstream_exited(&mut self, seq: u64, status: ExitStatus) {
        self.retire(seq);
        let Some(u) = find(&mut self.current, &mut self.retired, seq) else {
            return;
        };
        let actions = u.life.on_exit(status);
        self.run_upstream(seq, actions);
    }

    /// SIGKILL to every upstream now.
    fn kill_upstreams(&mut self) {
        let seqs: Vec<u64> = self
            .current
            .iter()
            .chain(&self.retired)
            .map(|u| u.seq)
            .collect();
        for seq in seqs {
            if let Some(u) = find(&mut self.current, &mut self.retired, seq) {
                let actions = u.life.kill_now(self.now);
                self.run_upstream(seq, actions);
            }
        }
    }

    /// Moves the upstream out of `current`: it gets no more traffic.
    fn retire(&mut self, seq: u64) {
        if self.current.as_ref().is_some_and(|u| u.seq == seq)
            && let Some(u) = self.current.take()
        {
            self.retired.push(u);
        }
    }

    /// Carries out what the upstream's lifecycle decided, in order.
    fn run_upstream(&mut self, seq: u64, actions: Vec<lifecycle::Action>) {
        let grace = self.cfg.kill_grace;
        for action in actions {
            let Some(u) = find(&mut self.current, &mut self.retired, seq) else {
                return;
            };
            match action {
                lifecycle::Action::CloseStdin => {
                    if let Some(t) = u.io.close_stdin(self.poll.registry()) {
                        self.endpoints.remove(t);
                    }
                }
                lifecycle::Action::ArmGrace(at) => {
                    // One grace timer per upstream: a second one would make the
                    // next escalation step (SIGTERM → SIGKILL) follow with no
                    // grace at all.
                    if let Some(t) = u.grace.take() {
                        self.timers.cancel(t);
                    }
                    u.grace = Some(self.timers.insert(at, TimerKind::Grace(seq)));
                }
                lifecycle::Action::Term => {
                    log::info!(
                        "[{}] still running {grace:?} after stdin closed; SIGTERM",
                        self.cfg.name
                    );
                    u.io.proc.terminate();
                }
                lifecycle::Action::Kill { after_term } => {
                    if after_term {
                        log::warn!("[{}] ignored SIGTERM; SIGKILL", self.cfg.name);
                    }
                    u.io.proc.kill();
                }
                lifecycle::Action::Down { status, .. } => self.upstream_down(seq, status),
                lifecycle::Action::Release => self.release_upstream(seq),
            }
        }
    }

    // ---- shutdown -----------------------------------------------------------

    fn begin_close(&mut self) {
        if self.closing {
            return;
        }
        self.closing = true;
        if let Some(t) = self.respawn.take() {
            self.timers.cancel(t);
        }
        self.http_close();
        // Held messages will never reach a server.
        while let Some(h) = self.held.pop_front() {
            if let Some(id) = h.request {
                self.fail_request(
                    &id,
                    RelayError::UpstreamClosed,
                    "The relay is shutting down",
                    json!({}),
                );
            }
        }
        self.held_bytes = 0;
        if let Some(u) = self.current.as_mut() {
            // Let the server read what the client sent before stdin closes.
            let (seq, actions) = (u.seq, u.life.drain(self.now));
            self.run_upstream(seq, actions);
        }
    }

    fn force_close(&mut self) {
        self.forced = true;
        self.begin_close();
        self.kill_upstreams();
        self.client_out_broken = true;
    }

    /// The exit status once nothing is left to do.
    fn finished(&mut self) -> Option<i32> {
        if !self.closing || !self.retired.is_empty() {
            return None;
        }
        if self.http.as_deref().is_some_and(|h| !h.settled()) {
            // The DELETE ending the upstream session is still on its way.
            return None;
        }
        if self.current.is_some() {
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
        if !self.out.is_empty() && !self.client_out_broken {
            if self.final_flush.is_none() {
                self.final_flush = Some(
                    self.timers
                        .insert(self.now + self.cfg.kill_grace, TimerKind::FinalFlush),
                );
            }
            self.flush_client();
            if !self.out.is_empty() && !self.client_out_broken {
                return None;
            }
        }
        if let Some(r) = self.recorder.as_mut() {
            r.flush();
        }
        let _ = self.client_out.file.flush();
        Some(self.exit_code.unwrap_or(0))
    }
}

/// The upstream numbered `seq`, live or retired. A free function so callers
/// can borrow other fields of `Forward` alongside it.
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
        self.http.as_deref().and_then(|h| h.next_deadline())
    }

    fn on_signal(&mut self, sig: libc::c_int) {
        self.handle_signal(sig);
    }

    fn on_event(&mut self, token: Token, r: Readiness) {
        self.handle_event(token, r.readable, r.writable, r.hup);
    }

    fn on_timer(&mut self, t: TimerKind) {
        self.handle_timer(t);
    }

    fn after_timers(&mut self) {
        self.http_poll();
    }
}

fn find<'a>(
    current: &'a mut Option<Upstream>,
    retired: &'a mut [Upstream],
    seq: u64,
) -> Option<&'a mut Upstream> {
    match current {
        Some(u) if u.seq == seq => Some(u),
        _ => retired.iter_mut().find(|u| u.seq == seq),
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
