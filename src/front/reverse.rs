//! `mcp-relay reverse -- COMMAND`: a Streamable HTTP endpoint (and the legacy
//! HTTP+SSE one) in front of a pool of stdio server processes.
//!
//! Owners, all in the one `Reverse` struct driven by one loop:
//!
//! - `endpoints`: listeners, client connections and process pipes, by token;
//! - `sessions`: client sessions by key (and by `Mcp-Session-Id`), each with
//!   its requests in flight, its SSE stream and its replay buffer;
//! - `procs`: server processes by pool connection id, each with its
//!   `upstream::lifecycle::Lifecycle` (`DownPolicy::OnLoss`), whose actions
//!   `run_proc` carries out: the close sequence, and `proc_down` when the
//!   process stops serving;
//! - `pool`: the sans-I/O pool that decides which process serves whom, when
//!   to spawn and when to close. Its actions are carried out by `apply`.
//!
//! A request's path: a client connection parses an HTTP request → the session
//! is found (or created by `initialize`, which leases a process) → the message
//! is written to the session's process (through the shared-mode `Mux` when
//! processes are shared) → the reply line from the process is matched to the
//! session's pending request → the waiting connection gets it as JSON, or as
//! the last event of an SSE stream when the server sent progress or other
//! messages first.

mod http;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Token};
use serde_json::json;

use crate::cli::{PoolMode, ReverseConfig};
use crate::io::buf::OutBuf;
use crate::io::child::describe;
use crate::io::dns::Resolver;
use crate::mcp::session::{ReplayBuffer, Tokens, new_session_id};
use crate::mcp::shared::{Down, Mux, Up};
use crate::metrics::{Metrics, UpstreamGauges, UpstreamId, exit_reason};
use crate::policy::backoff::Rng;
use crate::proto::errors::RelayError;
use crate::proto::framing::{Frame, LineReader};
use crate::proto::http1::{self, Event, Limits, Request, RequestParser};
use crate::proto::jsonrpc::{self, Envelope, Id, Kind, Message};
use crate::proto::sse;
use crate::reactor::signals::Signals;
use crate::reactor::turn::{self, Readiness};
use crate::reactor::{self, RESOLVER_TOKEN, Registry, SIGNAL_TOKEN, Source, TimerId, TimerWheel};
use crate::session::inflight::{self, Deadlines, Inflight};
use crate::session::shutdown::{Shutdown, ShutdownConfig, Verdict as ShutdownVerdict};
use crate::upstream::lifecycle::{self, Cause, DownPolicy, Lifecycle};
use crate::upstream::pool::{self, Action, ConnId, Pool, PoolConfig, RejectReason};
use crate::upstream::stdio::{Pipe, StdioConn, StdoutRead};

/// Protocol revisions the relay knows. MCP 2025-06-18 §Transports: an
/// unsupported `MCP-Protocol-Version` gets 400.
const VERSIONS: &[&str] = &[
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];
/// The stateless revision: no initialize, no sessions, no GET stream.
const STATELESS_VERSION: &str = "2026-07-28";
/// What the relay asks for when it initializes a shared process itself.
const RELAY_PROTOCOL: &str = "2025-11-25";
/// Id of the relay's own `initialize` to a shared process (outside the mux's
/// integer id space).
const RELAY_INIT_ID: &str = "mcp-relay-init";
/// Bytes read from one process per turn.
const READ_BUDGET: usize = 1 << 20;
/// A client that lets this much output pile up is too slow and is dropped.
const CLIENT_OUT_MAX: usize = 8 << 20;
/// Accepting pauses this long after EMFILE/ENFILE (HAProxy uses 100 ms).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Messages kept for a session that has no stream to receive them.
const UNDELIVERED_MAX: usize = 256;

/// A session's key: its upstream's index in the high 16 bits, a number
/// unique in this relay below. The upstream is part of the key, so it is
/// known for as long as the key exists, even after the session is gone.
type SKey = u64;
const SKEY_UP_SHIFT: u32 = 48;

fn skey_new(up: usize, seq: u64) -> SKey {
    debug_assert!(up < 1 << (64 - SKEY_UP_SHIFT) && seq < 1 << SKEY_UP_SHIFT);
    ((up as u64) << SKEY_UP_SHIFT) | (seq & ((1 << SKEY_UP_SHIFT) - 1))
}

/// The upstream a session key belongs to.
fn up_of(skey: SKey) -> usize {
    (skey >> SKEY_UP_SHIFT) as usize
}

/// A process: its upstream's index and the id its pool gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PKey {
    up: usize,
    id: ConnId,
}

impl std::fmt::Display for PKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.id)
    }
}

/// One upstream: its route and knobs, and a pool of processes or an HTTP
/// engine.
struct Upstream {
    cfg: ReverseConfig,
    backend: Backend,
    metric: UpstreamId,
}

/// What serves an upstream's sessions.
enum Backend {
    /// Server processes on stdio, spawned and leased by a pool.
    Stdio(Box<Pool>),
    /// An MCP server over HTTP(S): one upstream session per client session.
    Http(Box<http::UpHttp>),
}

impl Upstream {
    /// The pool's decisions, for a stdio upstream; an HTTP upstream has no
    /// processes, so its answer is always "nothing to do".
    fn pool(&mut self, f: impl FnOnce(&mut Pool) -> Vec<Action>) -> Vec<Action> {
        match &mut self.backend {
            Backend::Stdio(p) => f(p),
            Backend::Http(_) => Vec::new(),
        }
    }

    fn http(&self) -> Option<&http::UpHttp> {
        match &self.backend {
            Backend::Http(h) => Some(h),
            Backend::Stdio(_) => None,
        }
    }

    fn http_mut(&mut self) -> Option<&mut http::UpHttp> {
        match &mut self.backend {
            Backend::Http(h) => Some(h),
            Backend::Stdio(_) => None,
        }
    }

    fn is_http(&self) -> bool {
        matches!(self.backend, Backend::Http(_))
    }

    /// When the pool next needs a poll (stdio) or the engine does (HTTP).
    fn next_deadline(&self) -> Option<Instant> {
        match &self.backend {
            Backend::Stdio(p) => p.next_deadline(),
            Backend::Http(h) => h.next_deadline(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListenerKind {
    Main,
    Admin,
}

enum Endpoint {
    Listener,
    Client(Box<Client>),
    Pipe(PKey, Pipe),
}

struct Client {
    stream: TcpStream,
    admin: bool,
    parser: RequestParser,
    out: OutBuf,
    readable: bool,
    writable: bool,
    state: ClientState,
    timer: Option<TimerId>,
    /// When the first byte of the request being received arrived.
    began: Option<Instant>,
    last_active: Instant,
    peer_closed: bool,
    /// The kernel reported a hang-up: read to EOF, never stop at a short read.
    hup: bool,
}

/// A client connection's life:
///
/// ```text
///        ┌──────── answered ─────────┐
///        ▼                           │
///  ──▶ Idle ──POST──▶ Waiting ───────┤──(Connection: close, peer gone,
///        │                           │    shutdown)──▶ Closing ──▶ closed
///        └──GET───▶ Streaming ──end──┘
/// ```
///
/// The connection itself is closed only by `close_client`: at once on a
/// reset or a dropped stream, or once a `Closing` connection's output is
/// written.
enum ClientState {
    /// Reading the next request.
    Idle,
    /// A POST waiting for replies from the session's process.
    Waiting(Exchange),
    /// The GET stream of a session, or a legacy HTTP+SSE stream.
    Streaming { session: SKey },
    /// No more requests: the connection closes once its output is written.
    Closing,
}

impl ClientState {
    /// The legal moves of a connection's life (see the diagram above).
    fn can_become(&self, to: &ClientState) -> bool {
        use ClientState::*;
        matches!(
            (self, to),
            (Idle, _)
                | (Waiting(_), Idle | Closing)
                | (Streaming { .. }, Idle | Closing)
                | (Closing, Closing)
        )
    }

    fn name(&self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Waiting(_) => "waiting",
            ClientState::Streaming { .. } => "streaming",
            ClientState::Closing => "closing",
        }
    }
}

impl Client {
    /// The one place a connection's state changes.
    fn set_state(&mut self, to: ClientState) {
        let legal = self.state.can_become(&to);
        debug_assert!(
            legal,
            "client: illegal transition {} → {}",
            self.state.name(),
            to.name()
        );
        if legal {
            self.state = to;
        } else {
            log::error!(
                "client: illegal transition {} → {} refused",
                self.state.name(),
                to.name()
            );
        }
    }
}

struct Exchange {
    session: SKey,
    /// Request ids whose replies this response still needs.
    expect: Vec<Id>,
    /// Replies gathered for a batch.
    replies: Vec<Vec<u8>>,
    batch: bool,
    keep_alive: bool,
    /// The response turned into an SSE stream.
    sse: bool,
    /// `Mcp-Session-Id` to send (on the reply to `initialize`).
    session_header: Option<String>,
}

/// The endpoints of one upstream's route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Streamable HTTP: POST, GET, DELETE.
    Mcp,
    /// Legacy HTTP+SSE: the stream.
    Sse,
    /// Legacy HTTP+SSE: the POST endpoint.
    Messages,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyTo {
    /// The connection that POSTed the request.
    Client(Token),
    /// The session's SSE stream (legacy HTTP+SSE).
    Stream,
}

/// A request in flight; its route is where the answer goes.
type Req = inflight::Request<ReplyTo>;

struct Session {
    id: String,
    token: Option<usize>,
    version: String,
    conn: Option<PKey>,
    /// The client's `initialize`, held while the session waits for a process.
    waiting_init: Option<(Vec<u8>, Id, ReplyTo)>,
    inflight: Inflight<ReplyTo>,
    stream: Option<Token>,
    legacy: bool,
    replay: ReplayBuffer,
    next_event: u64,
    undelivered: VecDeque<Vec<u8>>,
    last_active: Instant,
    idle_timer: Option<TimerId>,
    /// MCP 2026-07-28: one request, no initialize, ended once answered.
    stateless: bool,
}

enum ProcKind {
    Session {
        session: Option<SKey>,
    },
    Shared {
        mux: Mux,
        init: Option<serde_json::Value>,
        sessions: Vec<SKey>,
    },
}

struct Proc {
    io: StdioConn,
    kind: ProcKind,
    /// Where the process is in its life; a pool `Close` is `Cause::Asked`.
    life: Lifecycle,
    /// The timer armed for `life`'s grace deadline.
    grace: Option<TimerId>,
}

#[derive(Debug)]
enum TimerKind {
    Client(Token),
    Response(SKey, Id),
    SessionIdle(SKey),
    Grace(PKey),
    AcceptResume,
    /// The drain time or the shutdown grace is over.
    Shutdown,
    /// `--sse-keepalive`: a comment on every open stream.
    Heartbeat,
    HardStop,
    /// `--url`: a session's upstream GET stream may reconnect.
    Reconnect(SKey),
}

struct Reverse {
    cfg: ReverseConfig,
    poll: Poll,
    timers: TimerWheel<TimerKind>,
    endpoints: Registry<Endpoint>,
    signals: Signals,
    now: Instant,
    listeners: Vec<(Token, TcpListener, ListenerKind)>,
    clients: usize,
    accept_paused: bool,
    tokens: Option<Tokens>,
    sessions: HashMap<SKey, Session>,
    by_id: HashMap<String, SKey>,
    next_key: SKey,
    procs: HashMap<PKey, Proc>,
    /// The upstreams: one, or one per `--config` entry (route /mcp/NAME).
    ups: Vec<Upstream>,
    /// Resolves URL upstreams' host names off the loop (one waker per Poll).
    resolver: Option<Resolver>,
    metrics: Metrics,
    /// Clients whose buffered requests may be handled now.
    to_drive: Vec<Token>,
    /// Clients with output to write.
    dirty: Vec<Token>,
    /// Stateless sessions whose one request was answered, ended by the loop
    /// at the end of the turn.
    to_end: Vec<SKey>,
    /// Processes whose read budget ran out with data left.
    more_procs: Vec<PKey>,
    /// The relay's own lifecycle: serving → draining → grace → final → exit.
    shutdown: Shutdown,
}

/// Binds the listeners and serves until shutdown; returns the exit status.
pub fn run(cfg: ReverseConfig) -> io::Result<i32> {
    let mut r = Reverse::new(cfg)?;
    r.run_loop()
}

impl Reverse {
    fn new(cfg: ReverseConfig) -> io::Result<Reverse> {
        // With --config, the file names the upstreams and may change
        // listener-wide settings; otherwise the command line is the one
        // upstream, on --path.
        let (cfg, up_cfgs) = match &cfg.config {
            Some(path) => {
                let relay = crate::config::load(path, &cfg).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("--config {e}"))
                })?;
                (relay.global, relay.upstreams)
            }
            None => (cfg.clone(), vec![cfg]),
        };
        let poll = Poll::new()?;
        let signals =
            Signals::install(&[libc::SIGINT, libc::SIGTERM, libc::SIGCHLD, libc::SIGHUP])?;
        signals.register(poll.registry(), SIGNAL_TOKEN)?;
        let mut endpoints = Registry::default();
        let mut listeners = Vec::new();
        let mut addrs = vec![(cfg.listen, ListenerKind::Main)];
        if let Some(a) = cfg.admin {
            addrs.push((a, ListenerKind::Admin));
        }
        for (addr, kind) in addrs {
            let mut l = TcpListener::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            let tok = endpoints.insert(Endpoint::Listener);
            poll.registry().register(&mut l, tok, Interest::READABLE)?;
            let local = l.local_addr()?;
            if kind == ListenerKind::Main {
                for u in &up_cfgs {
                    log::info!("listening on http://{local}{} ({})", u.path, u.name);
                }
            } else {
                log::info!("listening on http://{local} (admin)");
            }
            listeners.push((tok, l, kind));
        }
        let tokens = match &cfg.auth_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("--auth-token-file {}: {e}", path.display()),
                    )
                })?;
                Some(Tokens::parse(&text).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("--auth-token-file {}: {e}", path.display()),
                    )
                })?)
            }
            None => None,
        };
        let now = Instant::now();
        let mut metrics = Metrics::new();
        let mut ups = Vec::new();
        let mut resolver = None;
        for (tag, ucfg) in up_cfgs.into_iter().enumerate() {
            let backend = match &ucfg.http {
                Some(opts) => {
                    let h = http::UpHttp::new(opts, &ucfg, tag).map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("{} {}: {e}", ucfg.name, opts.url),
                        )
                    })?;
                    if resolver.is_none() {
                        resolver = Some(Resolver::new(poll.registry(), RESOLVER_TOKEN)?);
                    }
                    if let Some(r) = resolver.as_mut() {
                        r.resolve(tag as u64, h.host().to_string(), h.port());
                    }
                    Backend::Http(Box::new(h))
                }
                None => Backend::Stdio(Box::new(Pool::new(
                    PoolConfig {
                        mode: match ucfg.pool {
                            PoolMode::Session => pool::Mode::Session,
                            PoolMode::Shared => pool::Mode::Shared,
                        },
                        max_connections: ucfg.max_connections,
                        min_idle: ucfg.min_idle,
                        max_waiting: ucfg.max_waiting,
                        queue_timeout: ucfg.queue_timeout,
                        idle_timeout: ucfg.idle_timeout,
                        max_lifetime: ucfg.max_lifetime,
                        spawn_backoff_base: ucfg.restart_base,
                        spawn_backoff_cap: ucfg.restart_max_delay,
                    },
                    Rng::from_os(),
                    now,
                ))),
            };
            let metric = metrics.upstream(&ucfg.name);
            ups.push(Upstream {
                cfg: ucfg,
                backend,
                metric,
            });
        }
        let shutdown = Shutdown::new(ShutdownConfig {
            drain_time: cfg.drain_time,
            grace: cfg.shutdown_grace,
            // Three kill graces (stdin, SIGTERM, SIGKILL) and a second.
            hard_stop: ups
                .iter()
                .map(|u| u.cfg.kill_grace)
                .max()
                .unwrap_or_default()
                * 3
                + Duration::from_secs(1),
        });
        Ok(Reverse {
            cfg,
            poll,
            timers: TimerWheel::new(now),
            endpoints,
            signals,
            now,
            listeners,
            clients: 0,
            accept_paused: false,
            tokens,
            sessions: HashMap::new(),
            by_id: HashMap::new(),
            next_key: 1,
            procs: HashMap::new(),
            ups,
            resolver,
            metrics,
            to_drive: Vec::new(),
            dirty: Vec::new(),
            to_end: Vec::new(),
            more_procs: Vec::new(),
            shutdown,
        })
    }

    fn run_loop(&mut self) -> io::Result<i32> {
        for u in 0..self.ups.len() {
            let actions = self.ups[u].pool(|p| p.start(self.now));
            self.apply(u, actions);
        }
        if !self.cfg.sse_keepalive.is_zero() {
            self.timers
                .insert(self.now + self.cfg.sse_keepalive, TimerKind::Heartbeat);
        }
        turn::run(self, 1024)
    }

    /// Handles pipelined requests freed up this turn, then writes everything
    /// that was queued.
    fn settle(&mut self) {
        for skey in std::mem::take(&mut self.to_end) {
            self.end_session(skey, "stateless request answered");
        }
        // One pass: a client that still has data after its read budget is
        // queued again and served next turn (with a zero poll timeout), so a
        // fast sender cannot monopolise the loop.
        for tok in std::mem::take(&mut self.to_drive) {
            self.drive_client(tok);
        }
        let conns: Vec<PKey> = self.procs.keys().copied().collect();
        for conn in conns {
            self.proc_flush(conn);
        }
        for tok in std::mem::take(&mut self.dirty) {
            self.client_flush(tok);
        }
        self.shutdown_tick();
    }

    // ---- events -----------------------------------------------------------

    fn handle_event(&mut self, token: Token, readable: bool, writable: bool, hup: bool) {
        match reactor::token::source(token) {
            Source::Resolver => {
                self.http_resolved();
                return;
            }
            Source::Http { tag, conn } => {
                // The tag is the upstream's index.
                if self.ups.get(tag).is_some_and(Upstream::is_http) {
                    self.http_event(tag, conn, readable, writable);
                }
                return;
            }
            // The loop hands signals over itself.
            Source::Signal | Source::Unknown => return,
            Source::Endpoint { .. } => {}
        }
        let (pipe, is_client) = match self.endpoints.get_mut(token) {
            None => return,
            Some(Endpoint::Listener) => {
                self.accept(token);
                return;
            }
            Some(Endpoint::Client(c)) => {
                c.readable |= readable;
                c.writable |= writable;
                c.hup |= hup;
                (None, true)
            }
            Some(Endpoint::Pipe(conn, pipe)) => (Some((*conn, *pipe)), false),
        };
        if is_client {
            if writable {
                self.client_flush(token);
            }
            if readable {
                self.client_read(token);
            }
            return;
        }
        if let Some((conn, pipe)) = pipe {
            let Some(p) = self.procs.get_mut(&conn) else {
                return;
            };
            p.io.on_event(pipe, readable, writable, hup);
            match pipe {
                Pipe::Stdout => self.proc_read(conn, false),
                Pipe::Stderr => self.proc_stderr(conn),
                Pipe::Stdin => self.proc_flush(conn),
            }
        }
    }

    fn handle_signal(&mut self, sig: libc::c_int) {
        match sig {
            libc::SIGCHLD => self.reap(),
            libc::SIGTERM | libc::SIGINT => {
                if self.shutdown.is_stopping() {
                    log::warn!("second signal: killing every server now");
                } else {
                    log::info!(
                        "signal {sig}: shutting down (grace {:?})",
                        self.cfg.shutdown_grace
                    );
                }
                for v in self.shutdown.on_signal(self.now) {
                    self.apply_shutdown(v);
                }
            }
            _ => {}
        }
    }

    fn handle_timer(&mut self, t: TimerKind) {
        match t {
            TimerKind::Client(tok) => self.client_deadline(tok),
            TimerKind::Response(skey, id) => self.response_timeout(skey, id),
            TimerKind::SessionIdle(skey) => self.session_idle(skey),
            TimerKind::Grace(conn) => self.grace_expired(conn),
            TimerKind::AcceptResume => {
                self.accept_paused = false;
                let toks: Vec<Token> = self.listeners.iter().map(|l| l.0).collect();
                for tok in toks {
                    self.accept(tok);
                }
            }
            TimerKind::Shutdown => self.shutdown_tick(),
            TimerKind::Reconnect(skey) => self.http_reconnect_timer(skey),
            TimerKind::Heartbeat => self.heartbeat(),
            TimerKind::HardStop => {
                if let Some(v) = self.shutdown.on_hard_stop() {
                    log::warn!("processes still not reaped; killing them");
                    self.apply_shutdown(v);
                }
            }
        }
    }

    // ---- accepting ----------------------------------------------------------

    fn accept(&mut self, ltok: Token) {
        if self.accept_paused || self.shutdown.is_final() {
            return;
        }
        loop {
            let Some((_, listener, kind)) = self.listeners.iter().find(|l| l.0 == ltok) else {
                return;
            };
            let kind = *kind;
            match listener.accept() {
                Ok((stream, _peer)) => self.add_client(stream, kind),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    // Out of descriptors: pause instead of spinning on a
                    // listener that stays readable, and retry on a timer.
                    log::warn!("accept failed ({e}); pausing for {ACCEPT_PAUSE:?}");
                    self.accept_paused = true;
                    self.timers
                        .insert(self.now + ACCEPT_PAUSE, TimerKind::AcceptResume);
                    return;
                }
                Err(e) => {
                    log::debug!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn add_client(&mut self, mut stream: TcpStream, kind: ListenerKind) {
        let _ = stream.set_nodelay(true);
        if self.clients >= self.cfg.max_clients {
            // Over --max-clients: a best-effort 503 on the fresh socket, then close.
            let mut out = Vec::new();
            http1::write_response(
                &mut out,
                503,
                &[("retry-after", "1")],
                b"too many connections\n",
                false,
            );
            let _ = stream.write(&out);
            self.metrics.http_response(503);
            return;
        }
        let client = Client {
            stream,
            admin: kind == ListenerKind::Admin,
            parser: RequestParser::new(Limits {
                max_header: self.cfg.max_header_size,
                max_body: self.cfg.max_body,
            }),
            out: OutBuf::new(CLIENT_OUT_MAX),
            readable: true,
            writable: true,
            state: ClientState::Idle,
            timer: None,
            began: None,
            last_active: self.now,
            peer_closed: false,
            hup: false,
        };
        let tok = self.endpoints.insert(Endpoint::Client(Box::new(client)));
        let Some(Endpoint::Client(c)) = self.endpoints.get_mut(tok) else {
            return;
        };
        if let Err(e) = self.poll.registry().register(
            &mut c.stream,
            tok,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("registering a client failed: {e}");
            self.endpoints.remove(tok);
            return;
        }
        self.clients += 1;
        self.client_rearm(tok);
    }

    /// Writes an SSE comment on every open GET or legacy stream, so proxies
    /// and load balancers with idle timeouts do not cut quiet streams, and
    /// re-arms itself.
    fn heartbeat(&mut self) {
        let mut chunk = Vec::new();
        let mut comment = Vec::new();
        sse::write_comment(&mut comment, "keep-alive");
        http1::write_chunk(&mut chunk, &comment);
        let streams: Vec<Token> = self.sessions.values().filter_map(|s| s.stream).collect();
        for tok in streams {
            if let Some(c) = self.client(tok)
                && matches!(c.state, ClientState::Streaming { .. })
            {
                c.out.push_raw(&chunk);
                self.dirty.push(tok);
            }
        }
        if !self.shutdown.is_final() {
            self.timers
                .insert(self.now + self.cfg.sse_keepalive, TimerKind::Heartbeat);
        }
    }

    /// Whether the request a connection is waiting on asked for keep-alive
    /// (`Connection: close` must be honoured on early answers too).
    fn waiting_keep_alive(&mut self, tok: Token) -> bool {
        match self.client(tok).map(|c| &c.state) {
            Some(ClientState::Waiting(ex)) => ex.keep_alive,
            _ => true,
        }
    }

    fn client(&mut self, tok: Token) -> Option<&mut Client> {
        client_in(&mut self.endpoints, tok)
    }

    // ---- client I/O -----------------------------------------------------------

    fn client_read(&mut self, tok: Token) {
        let now = self.now;
        let Some(c) = client_in(&mut self.endpoints, tok) else {
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        let mut eof = false;
        let mut reset = false;
        let mut taken = 0;
        while c.readable && taken < READ_BUDGET {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    c.readable = false;
                }
                Ok(n) => {
                    taken += n;
                    if c.began.is_none() && c.parser.buffered() == 0 {
                        c.began = Some(now);
                    }
                    c.parser.feed(&buf[..n]);
                    c.last_active = now;
                    if n < buf.len() && !c.hup {
                        // Short read on a socket: its buffer is empty (epoll(7)).
                        // Not after a hang-up: the EOF must still be read.
                        c.readable = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // A reset, not a half-close: nothing can be written back.
                    reset = true;
                    c.readable = false;
                }
            }
        }
        if reset {
            self.close_client(tok);
            return;
        }
        if c.readable {
            // Budget spent: finish on a later turn (fairness).
            self.to_drive.push(tok);
        }
        if eof {
            c.peer_closed = true;
            // A half-closed client may still want the answers to what it
            // sent (drive_client closes it once they are written); a
            // streaming one is simply gone.
            if matches!(c.state, ClientState::Streaming { .. }) {
                self.close_client(tok);
                return;
            }
        }
        self.drive_client(tok);
    }

    /// Handles complete requests buffered on a connection, one at a time:
    /// HTTP/1.1 answers in order, so the next is parsed only once the current
    /// one is answered.
    fn drive_client(&mut self, tok: Token) {
        let now = self.now;
        loop {
            let Some(c) = self.client(tok) else { return };
            if c.readable {
                // A fairness-deferred read: continue it first.
                self.client_read(tok);
                return;
            }
            if !matches!(c.state, ClientState::Idle) {
                break;
            }
            match c.parser.next_event() {
                Ok(Some(Event::ContinueExpected)) => {
                    let mut out = Vec::new();
                    http1::write_continue(&mut out);
                    c.out.push_raw(&out);
                    self.dirty.push(tok);
                }
                Ok(Some(Event::Request(req))) => {
                    c.began = if c.parser.buffered() > 0 {
                        Some(now)
                    } else {
                        None
                    };
                    self.handle_request(tok, req);
                }
                Ok(None) => {
                    if c.peer_closed {
                        // Nothing more will come: close once answers are out.
                        c.set_state(ClientState::Closing);
                        self.dirty.push(tok);
                    }
                    break;
                }
                Err(e) => {
                    log::debug!("bad request: {}", e.reason());
                    let status = e.status();
                    self.respond(
                        tok,
                        status,
                        &[],
                        format!("{}\n", e.reason()).as_bytes(),
                        false,
                    );
                    break;
                }
            }
        }
        self.client_rearm(tok);
    }

    fn client_flush(&mut self, tok: Token) {
        let Some(c) = self.client(tok) else { return };
        if !c.out.is_empty() && c.writable {
            match c.out.flush_to(&mut c.stream) {
                Ok(true) => {}
                Ok(false) => c.writable = false,
                Err(_) => {
                    self.close_client(tok);
                    return;
                }
            }
        }
        if c.out.is_empty() && matches!(c.state, ClientState::Closing) {
            self.close_client(tok);
        } else if c.out.len() > CLIENT_OUT_MAX {
            log::warn!(
                "client not reading its stream ({} bytes queued); disconnecting it",
                c.out.len()
            );
            self.close_client(tok);
        }
    }

    fn close_client(&mut self, tok: Token) {
        let Some(Endpoint::Client(mut c)) = self.endpoints.remove(tok) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.clients -= 1;
        if let Some(t) = c.timer.take() {
            self.timers.cancel(t);
        }
        match c.state {
            ClientState::Streaming { session } => {
                let legacy = match self.sessions.get_mut(&session) {
                    Some(s) if s.stream == Some(tok) => {
                        s.stream = None;
                        s.last_active = self.now;
                        s.legacy
                    }
                    _ => false,
                };
                // Legacy HTTP+SSE: the stream is the session.
                if legacy {
                    self.end_session(session, "the client closed its SSE stream");
                }
            }
            ClientState::Waiting(ex) => {
                // MCP: a dropped connection is not a cancellation. The
                // replies it was waiting for go to the session's GET stream
                // instead (or wait for the next one), where a client resuming
                // with Last-Event-ID finds them.
                if let Some(s) = self.sessions.get_mut(&ex.session) {
                    s.last_active = self.now;
                    for id in &ex.expect {
                        if let Some(req) = s.inflight.get_mut(id)
                            && req.route == ReplyTo::Client(tok)
                        {
                            req.route = ReplyTo::Stream;
                        }
                    }
                }
                let stateless = self.sessions.get(&ex.session).is_some_and(|s| s.stateless);
                if stateless {
                    // 2026-07-28: closing the response stream cancels the request.
                    self.end_session(ex.session, "the client closed a stateless request");
                } else if ex.session_header.is_some() {
                    // The client left before its initialize was answered: it
                    // can never use this session.
                    self.end_session(ex.session, "the client left during initialize");
                }
            }
            ClientState::Idle | ClientState::Closing => {}
        }
    }

    /// One timer per connection: the header-read deadline while a request is
    /// arriving, the keep-alive idle deadline between requests, none while a
    /// response is in progress.
    fn client_rearm(&mut self, tok: Token) {
        let (header, idle) = (self.cfg.client_header_timeout, self.cfg.client_idle_timeout);
        let Some(c) = self.client(tok) else { return };
        let deadline = match (&c.state, c.began) {
            (ClientState::Idle, Some(b)) if c.parser.mid_request() => Some(b + header),
            // A closing client that never reads its last answer is dropped
            // after the idle timeout too.
            (ClientState::Idle | ClientState::Closing, _) if !idle.is_zero() => {
                Some(c.last_active + idle)
            }
            _ => None,
        };
        let old = c.timer.take();
        if let Some(t) = old {
            self.timers.cancel(t);
        }
        if let Some(d) = deadline {
            let t = self.timers.insert(d, TimerKind::Client(tok));
            if let Some(c) = self.client(tok) {
                c.timer = Some(t);
            }
        }
    }

    fn client_deadline(&mut self, tok: Token) {
        let now = self.now;
        let (header, idle) = (self.cfg.client_header_timeout, self.cfg.client_idle_timeout);
        let Some(c) = self.client(tok) else { return };
        c.timer = None;
        let closing = match c.state {
            ClientState::Idle => false,
            ClientState::Closing => true,
            _ => return,
        };
        if !closing && c.parser.mid_request() && c.began.is_some_and(|b| now >= b + header) {
            // Slow or stalled request head (slow-loris): 408, then close.
            self.metrics.timeout("client_header");
            self.respond(tok, 408, &[], b"request not received in time\n", false);
            return;
        }
        if (closing || !c.parser.mid_request()) && !idle.is_zero() && now >= c.last_active + idle {
            self.metrics.timeout("client_idle");
            self.close_client(tok);
            return;
        }
        self.client_rearm(tok);
    }

    /// Writes a complete response and returns the connection to reading.
    fn respond(
        &mut self,
        tok: Token,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        keep_alive: bool,
    ) {
        let shutting_down = self.shutdown.is_stopping();
        let now = self.now;
        let Some(c) = self.client(tok) else { return };
        let keep_alive = keep_alive && !shutting_down;
        let mut out = Vec::with_capacity(body.len() + 128);
        http1::write_response(&mut out, status, headers, body, keep_alive);
        c.out.push_raw(&out);
        c.set_state(if keep_alive {
            ClientState::Idle
        } else {
            ClientState::Closing
        });
        c.last_active = now;
        self.metrics.http_response(status);
        self.dirty.push(tok);
        self.to_drive.push(tok);
    }

    fn respond_json(
        &mut self,
        tok: Token,
        status: u16,
        body: &[u8],
        keep_alive: bool,
        session: Option<&str>,
    ) {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(s) = session {
            headers.push(("mcp-session-id", s));
        }
        self.respond(tok, status, &headers, body, keep_alive);
    }

    /// A JSON-RPC error carried in an HTTP error status (400, 404, …).
    fn respond_rpc_error(
        &mut self,
        tok: Token,
        status: u16,
        code: i64,
        message: &str,
        keep_alive: bool,
    ) {
        let body = jsonrpc::error_response(None, code, message, json!({}));
        self.respond_json(tok, status, &body, keep_alive, None);
    }

    // ---- HTTP routing -------------------------------------------------------

    fn handle_request(&mut self, tok: Token, req: Request) {
        let admin = self.client(tok).is_some_and(|c| c.admin);
        let ka = req.keep_alive;
        let path = req.path().to_string();
        let ops_here = admin || self.cfg.admin.is_none();
        if ops_here && path == "/healthz" && req.method == "GET" {
            if self.shutdown.is_stopping() {
                self.respond(
                    tok,
                    503,
                    &[("content-type", "text/plain")],
                    b"shutting down\n",
                    ka,
                );
            } else {
                self.respond(tok, 200, &[("content-type", "text/plain")], b"ok\n", ka);
            }
            return;
        }
        if admin && path != "/metrics" {
            self.respond(tok, 404, &[], b"not found\n", ka);
            return;
        }
        // MCP 2025-06-18 §Security: validate Origin on every request.
        if let Some(origin) = req.header("origin")
            && !self.cfg.allow_origins.iter().any(|o| o == origin)
        {
            self.respond(
                tok,
                403,
                &[("content-type", "text/plain")],
                b"origin not allowed\n",
                ka,
            );
            return;
        }
        let token = match &self.tokens {
            Some(tokens) if !admin => match tokens.check(req.header("authorization")) {
                Some(i) => Some(i),
                None => {
                    self.respond(
                        tok,
                        401,
                        &[("www-authenticate", "Bearer realm=\"mcp-relay\"")],
                        b"missing or invalid bearer token\n",
                        ka,
                    );
                    return;
                }
            },
            _ => None,
        };
        if ops_here && path == "/metrics" && req.method == "GET" {
            let body = self.render_metrics();
            self.respond(
                tok,
                200,
                &[("content-type", "text/plain; version=0.0.4")],
                body.as_bytes(),
                ka,
            );
            return;
        }
        match self.route(&path) {
            Some((u, Route::Mcp)) => match req.method.as_str() {
                "POST" => self.post_mcp(tok, req, token, u),
                "GET" => self.get_mcp(tok, req, token, u),
                "DELETE" => self.delete_mcp(tok, req, token, u),
                _ => self.respond(
                    tok,
                    405,
                    &[("allow", "GET, POST, DELETE")],
                    b"method not allowed\n",
                    ka,
                ),
            },
            Some((u, Route::Sse)) if req.method == "GET" => self.legacy_open(tok, req, token, u),
            Some((u, Route::Messages)) if req.method == "POST" => {
                self.legacy_post(tok, req, token, u)
            }
            Some(_) => self.respond(tok, 405, &[], b"method not allowed\n", ka),
            None => self.respond(tok, 404, &[], b"not found\n", ka),
        }
    }

    /// Which upstream and endpoint a path names. One upstream: `--path`,
    /// `/sse`, `/messages`. With `--config`: `/mcp/NAME`, `/sse/NAME`,
    /// `/messages/NAME`.
    fn route(&self, path: &str) -> Option<(usize, Route)> {
        if self.cfg.config.is_none() {
            return match path {
                p if p == self.cfg.path => Some((0, Route::Mcp)),
                "/sse" => Some((0, Route::Sse)),
                "/messages" | "/messages/" => Some((0, Route::Messages)),
                _ => None,
            };
        }
        let (kind, name) = if let Some(n) = path.strip_prefix("/mcp/") {
            (Route::Mcp, n)
        } else if let Some(n) = path.strip_prefix("/sse/") {
            (Route::Sse, n)
        } else if let Some(n) = path.strip_prefix("/messages/") {
            (Route::Messages, n)
        } else {
            return None;
        };
        let name = name.trim_end_matches('/');
        self.ups
            .iter()
            .position(|u| u.cfg.name == name)
            .map(|u| (u, kind))
    }

    /// The session a request names, with the checks MCP prescribes: missing
    /// header → 400, unknown or ended → 404 (the client must re-initialize),
    /// a different bearer token than the one that created it → 404 as well,
    /// so a session id is useless to anyone else.
    fn find_session(
        &mut self,
        tok: Token,
        req: &Request,
        token: Option<usize>,
        u: usize,
    ) -> Option<SKey> {
        let ka = req.keep_alive;
        let Some(sid) = req.header("mcp-session-id") else {
            self.respond_rpc_error(
                tok,
                400,
                -32600,
                "Bad Request: Mcp-Session-Id header is required",
                ka,
            );
            return None;
        };
        match self.by_id.get(sid).copied() {
            Some(k)
                if self
                    .sessions
                    .get(&k)
                    .is_some_and(|s| s.token == token && !s.legacy && up_of(k) == u) =>
            {
                Some(k)
            }
            _ => {
                self.respond_rpc_error(tok, 404, -32001, "Session not found", ka);
                None
            }
        }
    }

    fn post_mcp(&mut self, tok: Token, req: Request, token: Option<usize>, u: usize) {
        let ka = req.keep_alive;
        let json_body = req.header("content-type").is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if !json_body {
            self.respond(
                tok,
                415,
                &[],
                b"Content-Type must be application/json\n",
                ka,
            );
            return;
        }
        if !(req.accepts("application/json") && req.accepts("text/event-stream")) {
            self.respond(
                tok,
                406,
                &[],
                b"Accept must list application/json and text/event-stream\n",
                ka,
            );
            return;
        }
        if let Some(v) = req.header("mcp-protocol-version")
            && !VERSIONS.contains(&v)
        {
            self.respond_rpc_error(
                tok,
                400,
                -32600,
                &format!("Bad Request: unsupported MCP-Protocol-Version {v}"),
                ka,
            );
            return;
        }
        let body = req.body.as_slice();
        let msg = match jsonrpc::peek(body) {
            Ok(m) => m,
            Err(e) => {
                let b =
                    jsonrpc::error_response(None, -32700, &format!("Parse error: {e}"), json!({}));
                self.respond_json(tok, 400, &b, ka, None);
                return;
            }
        };
        if req.header("mcp-protocol-version") == Some(STATELESS_VERSION) {
            match msg {
                Message::Single(env) => self.stateless_post(tok, &req, body, &env, token, u),
                Message::Batch(_) => self.respond_rpc_error(
                    tok,
                    400,
                    -32600,
                    "Bad Request: batches are not allowed",
                    ka,
                ),
            }
            return;
        }
        match msg {
            Message::Single(env) => {
                if env.kind() == Kind::Request && env.method_is("initialize") {
                    self.start_session(tok, token, body, &env, ReplyTo::Client(tok), ka, u);
                    return;
                }
                let Some(skey) = self.find_session(tok, &req, token, u) else {
                    return;
                };
                self.forward_single(tok, skey, body, &env, ka);
            }
            Message::Batch(items) => {
                let Some(skey) = self.find_session(tok, &req, token, u) else {
                    return;
                };
                // Batches exist only in 2025-03-26; later revisions forbid them.
                let version = self
                    .sessions
                    .get(&skey)
                    .map(|s| s.version.clone())
                    .unwrap_or_default();
                if version != "2025-03-26" {
                    self.respond_rpc_error(
                        tok,
                        400,
                        -32600,
                        &format!("Bad Request: JSON-RPC batches are not allowed in protocol version {version}"),
                        ka,
                    );
                    return;
                }
                // Each request is tracked; one that cannot be (its id is
                // already in flight) is answered with duplicate_id in the
                // batch reply and not forwarded.
                let mut expect = Vec::new();
                let mut rejected = Vec::new();
                let mut send: Vec<(&[u8], Envelope, Option<Id>)> = Vec::new();
                for raw in &items {
                    let Some(env) = jsonrpc::peek_raw(raw) else {
                        continue;
                    };
                    let request = match (env.kind(), env.id()) {
                        (Kind::Request, Some(id)) => Some(id),
                        _ => None,
                    };
                    match request {
                        Some(id) if env.method_is("initialize") => rejected.push(error_body(
                            Some(&id),
                            RelayError::InvalidRequest,
                            "initialize cannot be part of a batch",
                            &self.ups[up_of(skey)].cfg.name,
                        )),
                        Some(id) if self.track(skey, id.clone(), &env, ReplyTo::Client(tok)) => {
                            expect.push(id.clone());
                            send.push((raw.get().as_bytes(), env, Some(id)));
                        }
                        Some(id) => rejected.push(error_body(
                            Some(&id),
                            RelayError::DuplicateId,
                            "A request with this id is already in flight",
                            &self.ups[up_of(skey)].cfg.name,
                        )),
                        None => send.push((raw.get().as_bytes(), env, None)),
                    }
                }
                if !expect.is_empty()
                    && let Some(c) = self.client(tok)
                {
                    c.set_state(ClientState::Waiting(Exchange {
                        session: skey,
                        expect: expect.clone(),
                        replies: rejected.clone(),
                        batch: true,
                        keep_alive: ka,
                        sse: false,
                        session_header: None,
                    }));
                }
                for (line, env, id) in send {
                    self.send_up(skey, line, &env, id.as_ref());
                }
                if expect.is_empty() {
                    if rejected.is_empty() {
                        self.respond(tok, 202, &[], b"", ka);
                    } else {
                        let body = format!(
                            "[{}]",
                            rejected
                                .iter()
                                .map(|r| String::from_utf8_lossy(r))
                                .collect::<Vec<_>>()
                                .join(",")
                        );
                        self.respond_json(tok, 200, body.as_bytes(), ka, None);
                    }
                }
            }
        }
    }

    /// MCP 2026-07-28: no initialize and no session; each POST stands alone
    /// and names its method in headers that must match the body.
    fn stateless_post(
        &mut self,
        tok: Token,
        req: &Request,
        body: &[u8],
        env: &Envelope,
        token: Option<usize>,
        u: usize,
    ) {
        let ka = req.keep_alive;
        let method = env.method();
        let header_ok = match (req.header("mcp-method"), method.as_deref()) {
            (Some(h), Some(m)) => h == m,
            (None, None) => env.kind() == Kind::Response,
            _ => false,
        };
        let name_ok = match req.header("mcp-name") {
            None => true,
            Some(name) => {
                let expected = env.param_str("name").or_else(|| env.param_str("uri"));
                expected.as_deref() == Some(name)
            }
        };
        if !header_ok || !name_ok {
            self.respond_rpc_error(
                tok,
                400,
                -32020,
                "Bad Request: Mcp-Method / Mcp-Name headers do not match the body",
                ka,
            );
            return;
        }
        let (Kind::Request, Some(id)) = (env.kind(), env.id()) else {
            // A notification or response has no session to go to.
            self.respond(tok, 202, &[], b"", ka);
            return;
        };
        if self.shutdown.is_stopping() {
            self.respond(tok, 503, &[("retry-after", "1")], b"shutting down\n", false);
            return;
        }
        let skey = self.new_stateless_session(u, token);
        if let Some(c) = self.client(tok) {
            c.set_state(ClientState::Waiting(Exchange {
                session: skey,
                expect: vec![id.clone()],
                replies: Vec::new(),
                batch: false,
                keep_alive: ka,
                sse: false,
                session_header: None,
            }));
        }
        self.lease_for(skey, body.to_vec(), id, ReplyTo::Client(tok));
    }

    fn forward_single(&mut self, tok: Token, skey: SKey, line: &[u8], env: &Envelope, ka: bool) {
        if let Some(s) = self.sessions.get_mut(&skey) {
            s.last_active = self.now;
        }
        match env.kind() {
            Kind::Request => {
                let Some(id) = env.id() else { return };
                if !self.track(skey, id.clone(), env, ReplyTo::Client(tok)) {
                    let b = error_body(
                        Some(&id),
                        RelayError::DuplicateId,
                        "A request with this id is already in flight",
                        &self.ups[up_of(skey)].cfg.name,
                    );
                    self.respond_json(tok, 200, &b, ka, None);
                    return;
                }
                if let Some(c) = self.client(tok) {
                    c.set_state(ClientState::Waiting(Exchange {
                        session: skey,
                        expect: vec![id.clone()],
                        replies: Vec::new(),
                        batch: false,
                        keep_alive: ka,
                        sse: false,
                        session_header: None,
                    }));
                }
                self.send_up(skey, line, env, Some(&id));
            }
            Kind::Notification | Kind::Response => {
                self.send_up(skey, line, env, None);
                // MCP: notifications and responses are acknowledged with 202.
                self.respond(tok, 202, &[], b"", ka);
            }
            Kind::Invalid => {
                self.respond_rpc_error(tok, 400, -32600, "Invalid Request", ka);
            }
        }
    }

    fn get_mcp(&mut self, tok: Token, req: Request, token: Option<usize>, u: usize) {
        let ka = req.keep_alive;
        if req.header("mcp-protocol-version") == Some(STATELESS_VERSION) {
            // 2026-07-28 has no GET stream.
            self.respond(tok, 405, &[("allow", "POST")], b"method not allowed\n", ka);
            return;
        }
        if !req.accepts("text/event-stream") {
            self.respond(tok, 406, &[], b"Accept must list text/event-stream\n", ka);
            return;
        }
        let Some(skey) = self.find_session(tok, &req, token, u) else {
            return;
        };
        let last: Option<u64> = req
            .header("last-event-id")
            .and_then(|v| v.trim().parse().ok());
        // At most one GET stream per session: a new one replaces the old, so
        // re-subscribing after a network blip is idempotent.
        let old = self.sessions.get_mut(&skey).and_then(|s| s.stream.take());
        if let Some(old) = old {
            self.end_stream(old);
        }
        let mut out = Vec::new();
        http1::write_chunked_head(
            &mut out,
            200,
            &[
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
                ("x-accel-buffering", "no"),
            ],
            ka,
        );
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        s.stream = Some(tok);
        s.last_active = self.now;
        if let Some(last) = last {
            let (events, complete) = s.replay.since(last);
            if !complete {
                log::info!(
                    "session {}: Last-Event-ID {last} is older than the replay buffer; some events are lost",
                    s.id
                );
            }
            for (id, data) in events {
                chunk_event(&mut out, Some(*id), None, data);
            }
        }
        let pending: Vec<Vec<u8>> = s.undelivered.drain(..).collect();
        for data in pending {
            let id = s.next_event;
            s.next_event += 1;
            chunk_event(&mut out, Some(id), None, &data);
            s.replay.push(id, data);
        }
        self.metrics.http_response(200);
        if let Some(c) = self.client(tok) {
            c.out.push_raw(&out);
            c.set_state(ClientState::Streaming { session: skey });
        }
        self.dirty.push(tok);
    }

    fn delete_mcp(&mut self, tok: Token, req: Request, token: Option<usize>, u: usize) {
        let ka = req.keep_alive;
        if req.header("mcp-protocol-version") == Some(STATELESS_VERSION) {
            self.respond(tok, 405, &[("allow", "POST")], b"method not allowed\n", ka);
            return;
        }
        let Some(skey) = self.find_session(tok, &req, token, u) else {
            return;
        };
        self.end_session(skey, "the client ended the session");
        self.respond(tok, 200, &[], b"", ka);
    }

    // ---- legacy HTTP+SSE (2024-11-05) ----------------------------------------

    fn legacy_open(&mut self, tok: Token, req: Request, token: Option<usize>, u: usize) {
        let ka = req.keep_alive;
        if self.shutdown.is_stopping() {
            self.respond(tok, 503, &[("retry-after", "1")], b"shutting down\n", false);
            return;
        }
        let Some(skey) = self.new_session(u, token, "2024-11-05", true) else {
            self.respond(tok, 500, &[], b"no session id\n", false);
            return;
        };
        let sid = self
            .sessions
            .get(&skey)
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        // The session id also goes in a header (legacy clients ignore it) so
        // a load balancer can stick the session's POSTs to this relay.
        http1::write_chunked_head(
            &mut out,
            200,
            &[
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
                ("x-accel-buffering", "no"),
                ("mcp-session-id", sid.as_str()),
            ],
            ka,
        );
        let endpoint = if self.cfg.config.is_some() {
            format!("/messages/{}?session_id={sid}", self.ups[u].cfg.name)
        } else {
            format!("/messages?session_id={sid}")
        };
        let mut ev = Vec::new();
        sse::write_event(&mut ev, None, Some("endpoint"), endpoint.as_bytes());
        http1::write_chunk(&mut out, &ev);
        self.metrics.http_response(200);
        if let Some(s) = self.sessions.get_mut(&skey) {
            s.stream = Some(tok);
        }
        if let Some(c) = self.client(tok) {
            c.out.push_raw(&out);
            c.set_state(ClientState::Streaming { session: skey });
        }
        self.dirty.push(tok);
    }

    fn legacy_post(&mut self, tok: Token, req: Request, token: Option<usize>, u: usize) {
        let ka = req.keep_alive;
        let skey = req
            .query_param("session_id")
            .and_then(|sid| self.by_id.get(&sid).copied())
            .filter(|k| {
                up_of(*k) == u
                    && self
                        .sessions
                        .get(k)
                        .is_some_and(|s| s.legacy && s.token == token)
            });
        let Some(skey) = skey else {
            self.respond(tok, 404, &[], b"unknown session\n", ka);
            return;
        };
        let body = req.body.as_slice();
        let env = match jsonrpc::peek(body) {
            Ok(Message::Single(env)) => env,
            Ok(Message::Batch(_)) | Err(_) => {
                self.respond(tok, 400, &[], b"expected one JSON-RPC message\n", ka);
                return;
            }
        };
        // Legacy transport: every POST is accepted with 202; answers travel
        // on the session's SSE stream.
        self.respond(tok, 202, &[], b"", ka);
        if let Some(s) = self.sessions.get_mut(&skey) {
            s.last_active = self.now;
        }
        if env.kind() == Kind::Request && env.method_is("initialize") {
            if let Some(v) = env.param_str("protocolVersion")
                && let Some(s) = self.sessions.get_mut(&skey)
            {
                s.version = v;
            }
            let Some(id) = env.id() else { return };
            self.lease_for(skey, body.to_vec(), id, ReplyTo::Stream);
            return;
        }
        if let (Kind::Request, Some(id)) = (env.kind(), env.id()) {
            if !self.track(skey, id.clone(), &env, ReplyTo::Stream) {
                let b = error_body(
                    Some(&id),
                    RelayError::DuplicateId,
                    "A request with this id is already in flight",
                    &self.ups[up_of(skey)].cfg.name,
                );
                self.push_to_stream(skey, b);
                return;
            }
            self.send_up(skey, body, &env, Some(&id));
        } else {
            self.send_up(skey, body, &env, None);
        }
    }

    // ---- sessions -------------------------------------------------------------

    fn new_session(
        &mut self,
        u: usize,
        token: Option<usize>,
        version: &str,
        legacy: bool,
    ) -> Option<SKey> {
        let id = match new_session_id() {
            Ok(id) => id,
            Err(e) => {
                log::error!("no randomness for a session id: {e}");
                return None;
            }
        };
        Some(self.insert_session(u, id, token, version, legacy, false))
    }

    /// A 2026-07-28 request's one-shot session: never named to the client,
    /// so it needs no random id and no idle timer.
    fn new_stateless_session(&mut self, u: usize, token: Option<usize>) -> SKey {
        let id = format!("stateless-{}", self.next_key);
        self.insert_session(u, id, token, STATELESS_VERSION, false, true)
    }

    fn insert_session(
        &mut self,
        u: usize,
        id: String,
        token: Option<usize>,
        version: &str,
        legacy: bool,
        stateless: bool,
    ) -> SKey {
        let skey = skey_new(u, self.next_key);
        self.next_key += 1;
        let idle = self.ups[u].cfg.session_idle_timeout;
        let idle_timer = (!stateless && !idle.is_zero()).then(|| {
            self.timers
                .insert(self.now + idle, TimerKind::SessionIdle(skey))
        });
        if !stateless {
            self.by_id.insert(id.clone(), skey);
        }
        let replay = if stateless {
            0
        } else {
            self.ups[u].cfg.replay_buffer
        };
        self.sessions.insert(
            skey,
            Session {
                id,
                token,
                version: version.to_string(),
                conn: None,
                waiting_init: None,
                inflight: Inflight::default(),
                stream: None,
                legacy,
                replay: ReplayBuffer::new(replay),
                next_event: 1,
                undelivered: VecDeque::new(),
                last_active: self.now,
                idle_timer,
                stateless,
            },
        );
        skey
    }

    #[allow(clippy::too_many_arguments)]
    fn start_session(
        &mut self,
        tok: Token,
        token: Option<usize>,
        line: &[u8],
        env: &Envelope,
        reply_to: ReplyTo,
        ka: bool,
        u: usize,
    ) {
        if self.shutdown.is_stopping() {
            self.respond(tok, 503, &[("retry-after", "1")], b"shutting down\n", false);
            return;
        }
        let Some(id) = env.id() else { return };
        let version = env
            .param_str("protocolVersion")
            .unwrap_or_else(|| "2025-03-26".into());
        let Some(skey) = self.new_session(u, token, &version, false) else {
            self.respond(tok, 500, &[], b"no session id\n", false);
            return;
        };
        let sid = self.sessions.get(&skey).map(|s| s.id.clone());
        if let Some(c) = self.client(tok) {
            c.set_state(ClientState::Waiting(Exchange {
                session: skey,
                expect: vec![id.clone()],
                replies: Vec::new(),
                batch: false,
                keep_alive: ka,
                sse: false,
                session_header: sid,
            }));
        }
        self.lease_for(skey, line.to_vec(), id, reply_to);
    }

    /// Queues the session for a process; its `initialize` goes out on Grant.
    fn lease_for(&mut self, skey: SKey, line: Vec<u8>, id: Id, reply_to: ReplyTo) {
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        let u = up_of(skey);
        if s.conn.is_some() || s.waiting_init.is_some() {
            let b = error_body(
                Some(&id),
                RelayError::InvalidRequest,
                "The session is already initialized",
                &self.ups[u].cfg.name,
            );
            self.deliver(skey, reply_to, &id, b);
            return;
        }
        if self.ups[u].is_http() {
            // An HTTP upstream needs no process: the session starts now.
            if s.stateless {
                if let Ok(Message::Single(env)) = jsonrpc::peek(&line)
                    && self.track(skey, id.clone(), &env, reply_to)
                {
                    self.http_send(skey, &line, &env, Some(&id));
                }
            } else {
                self.http_start(skey, line, id, reply_to);
            }
            return;
        }
        s.waiting_init = Some((line, id, reply_to));
        let actions = self.ups[u].pool(|p| p.lease(skey, self.now));
        self.apply(u, actions);
    }

    fn bind_session(&mut self, skey: SKey, conn: PKey) {
        let Some(s) = self.sessions.get_mut(&skey) else {
            // The session ended while it waited: give the process back.
            let actions = self.ups[conn.up].pool(|p| p.release(conn.id, self.now));
            self.apply(conn.up, actions);
            return;
        };
        s.conn = Some(conn);
        s.last_active = self.now;
        let Some((line, id, reply_to)) = s.waiting_init.take() else {
            return;
        };
        let client_version = s.version.clone();
        if s.stateless {
            // 2026-07-28: no initialize; the held message is the request.
            if let Some(p) = self.procs.get_mut(&conn) {
                match &mut p.kind {
                    ProcKind::Session { session } => *session = Some(skey),
                    ProcKind::Shared { sessions, .. } => sessions.push(skey),
                }
            }
            if let Ok(Message::Single(env)) = jsonrpc::peek(&line)
                && self.track(skey, id.clone(), &env, reply_to)
            {
                self.send_up(skey, &line, &env, Some(&id));
            }
            return;
        }
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        match &mut p.kind {
            ProcKind::Session { session } => {
                *session = Some(skey);
                if let Some(s) = self.sessions.get_mut(&skey)
                    && s.inflight
                        .begin(id.clone(), self.now, None, true, reply_to)
                        .is_err()
                {
                    log::debug!("initialize {id} is already in flight");
                }
                self.arm_response_timer(skey, &id);
                self.write_proc(conn, &line);
            }
            ProcKind::Shared { init, sessions, .. } => {
                sessions.push(skey);
                // The relay initialized this process itself; the client gets
                // the cached result with the version it asked for, if known.
                let mut result = init.clone().unwrap_or_else(|| json!({}));
                let version = if VERSIONS.contains(&client_version.as_str())
                    && client_version != "2026-07-28"
                {
                    client_version
                } else {
                    result
                        .get("protocolVersion")
                        .and_then(|v| v.as_str())
                        .unwrap_or(RELAY_PROTOCOL)
                        .to_string()
                };
                if let Some(obj) = result.as_object_mut() {
                    obj.insert("protocolVersion".into(), version.clone().into());
                }
                if let Some(s) = self.sessions.get_mut(&skey) {
                    s.version = version;
                }
                let reply = json!({"jsonrpc": "2.0", "id": serde_json::from_str::<serde_json::Value>(&id.to_json()).unwrap_or(serde_json::Value::Null), "result": result});
                let bytes = serde_json::to_vec(&reply).unwrap_or_default();
                self.metrics.request_done("ok", 0.0);
                self.deliver(skey, reply_to, &id, bytes);
            }
        }
    }

    fn reject_session(&mut self, skey: SKey, reason: RejectReason) {
        let (kind, text) = match reason {
            RejectReason::QueueFull => {
                ("queue_full", "every process is busy and the queue is full")
            }
            RejectReason::QueueTimeout => (
                "queue_timeout",
                "no process became free within --queue-timeout",
            ),
            RejectReason::ShuttingDown => ("shutting_down", "the relay is shutting down"),
        };
        self.metrics.request(kind);
        if reason == RejectReason::QueueTimeout {
            self.metrics.timeout("queue_timeout");
        }
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        let waiting = s.waiting_init.take();
        let legacy = s.legacy;
        if let Some((_, id, reply_to)) = waiting {
            match reply_to {
                ReplyTo::Client(tok) => {
                    // A new session that cannot get a process: HTTP 503 with
                    // Retry-After, so the client backs off and tries again.
                    let body = format!("{text}\n");
                    let ka = self.waiting_keep_alive(tok);
                    self.respond(tok, 503, &[("retry-after", "1")], body.as_bytes(), ka);
                }
                ReplyTo::Stream => {
                    let b = error_body(
                        Some(&id),
                        RelayError::QueueFull,
                        text,
                        &self.ups[up_of(skey)].cfg.name,
                    );
                    self.push_to_stream(skey, b);
                }
            }
        }
        if !legacy {
            self.end_session(skey, text);
        }
    }

    /// Registers a request in flight. False if its id is already in flight.
    fn track(&mut self, skey: SKey, id: Id, env: &Envelope, reply_to: ReplyTo) -> bool {
        let Some(s) = self.sessions.get_mut(&skey) else {
            return false;
        };
        let progress = env.progress_token();
        if s.inflight
            .begin(id.clone(), self.now, progress, false, reply_to)
            .is_err()
        {
            return false;
        }
        s.last_active = self.now;
        self.arm_response_timer(skey, &id);
        true
    }

    /// (Re)arms a request's response timer: silence since now, capped by
    /// the total time since it started.
    fn arm_response_timer(&mut self, skey: SKey, id: &Id) {
        let cfg = &self.ups[up_of(skey)].cfg;
        let limits = Deadlines {
            response_timeout: cfg.response_timeout,
            max_request_time: cfg.max_request_time,
        };
        let now = self.now;
        let Some(req) = self
            .sessions
            .get_mut(&skey)
            .and_then(|s| s.inflight.get_mut(id))
        else {
            return;
        };
        let deadline = limits.next(req.started, now);
        let old = req.timer.take();
        if let Some(t) = old {
            self.timers.cancel(t);
        }
        if let Some(d) = deadline {
            let t = self.timers.insert(d, TimerKind::Response(skey, id.clone()));
            if let Some(req) = self
                .sessions
                .get_mut(&skey)
                .and_then(|s| s.inflight.get_mut(id))
            {
                req.timer = Some(t);
            }
        }
    }

    /// Takes a request out of its session's table (its one answer is now
    /// the caller's to send) and stops its timer.
    fn untrack(&mut self, skey: SKey, id: &Id) -> Option<Req> {
        let req = self.sessions.get_mut(&skey)?.inflight.finish(id)?;
        if let Some(t) = req.timer {
            self.timers.cancel(t);
        }
        Some(req)
    }

    /// Writes a client message to the session's upstream. `env` is the
    /// message as the front parsed it: nothing on the way parses it again.
    fn send_up(&mut self, skey: SKey, line: &[u8], env: &Envelope, request: Option<&Id>) {
        if self.ups[up_of(skey)].is_http() {
            self.http_send(skey, line, env, request);
            return;
        }
        let conn = self.sessions.get(&skey).and_then(|s| s.conn);
        let alive = conn
            .and_then(|c| self.procs.get(&c))
            .is_some_and(|p| p.life.in_service() && p.io.accepts_input());
        let Some(conn) = conn.filter(|_| alive) else {
            if let Some(id) = request {
                self.fail_request(
                    skey,
                    id,
                    RelayError::UpstreamClosed,
                    "The session has no running server",
                    json!({}),
                );
            }
            return;
        };
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        match &mut p.kind {
            ProcKind::Session { .. } => p.io.to_child.push_line(line),
            ProcKind::Shared { mux, .. } => match mux.up_parsed(skey, line, env) {
                Up::Send(bytes) => p.io.to_child.push_line(&bytes),
                Up::Drop => {}
                Up::Reject(err) => {
                    if let Some(id) = request
                        && let Some(req) = self.untrack(skey, id)
                    {
                        self.deliver(skey, req.route, id, err);
                    }
                }
            },
        }
    }

    fn write_proc(&mut self, conn: PKey, line: &[u8]) {
        if let Some(p) = self.procs.get_mut(&conn)
            && p.io.accepts_input()
        {
            p.io.to_child.push_line(line);
        }
    }

    /// Answers a request in flight with a relay error.
    fn fail_request(
        &mut self,
        skey: SKey,
        id: &Id,
        err: RelayError,
        message: &str,
        data: serde_json::Value,
    ) {
        if let Some(req) = self.untrack(skey, id) {
            self.answer_failed(skey, id, req, err, message, data);
        }
    }

    /// Answers a request already taken out of its table with a relay error.
    fn answer_failed(
        &mut self,
        skey: SKey,
        id: &Id,
        req: Req,
        err: RelayError,
        message: &str,
        mut data: serde_json::Value,
    ) {
        self.metrics.request_done(
            err.kind(),
            self.now.duration_since(req.started).as_secs_f64(),
        );
        if let Some(obj) = data.as_object_mut() {
            obj.insert("kind".into(), err.kind().into());
            obj.insert(
                "upstream".into(),
                self.ups[up_of(skey)].cfg.name.clone().into(),
            );
        }
        let b = jsonrpc::error_response(Some(id), err.code(), message, data);
        self.deliver(skey, req.route, id, b);
    }

    fn response_timeout(&mut self, skey: SKey, id: Id) {
        let Some(req) = self
            .sessions
            .get_mut(&skey)
            .and_then(|s| s.inflight.get_mut(&id))
        else {
            return;
        };
        req.timer = None;
        let elapsed = self.now.duration_since(req.started);
        let initialize = req.initialize;
        self.metrics.timeout("response_timeout");
        log::warn!("request {id} timed out after {elapsed:?}");
        self.fail_request(
            skey,
            &id,
            RelayError::ResponseTimeout,
            &format!("No reply from the server within {elapsed:?}"),
            json!({
                "elapsed_ms": elapsed.as_millis() as u64,
                "response_timeout_ms": self.ups[up_of(skey)].cfg.response_timeout.as_millis() as u64,
                "max_request_time_ms": self.ups[up_of(skey)].cfg.max_request_time.as_millis() as u64,
            }),
        );
        if self.ups[up_of(skey)].is_http() {
            self.http_cancel(skey, &id, initialize);
            return;
        }
        if initialize {
            // MCP: initialize is never cancelled.
            return;
        }
        let Some(conn) = self.sessions.get(&skey).and_then(|s| s.conn) else {
            return;
        };
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        let cancel = match &mut p.kind {
            ProcKind::Session { .. } => {
                Some(jsonrpc::cancelled(&id, "mcp-relay: response timeout"))
            }
            ProcKind::Shared { mux, .. } => mux.expire(skey, &id),
        };
        if let Some(c) = cancel
            && p.io.accepts_input()
        {
            p.io.to_child.push_line(&c);
        }
    }

    fn session_idle(&mut self, skey: SKey) {
        let timeout = self.ups[up_of(skey)].cfg.session_idle_timeout;
        let now = self.now;
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        s.idle_timer = None;
        let busy = !s.inflight.is_empty() || s.stream.is_some() || s.waiting_init.is_some();
        let due = s.last_active + timeout;
        if !busy && now >= due {
            log::info!("session {} idle for {timeout:?}; ending it", s.id);
            self.end_session(skey, "session idle timeout");
            return;
        }
        let next = if busy { now + timeout } else { due };
        let t = self.timers.insert(next, TimerKind::SessionIdle(skey));
        if let Some(s) = self.sessions.get_mut(&skey) {
            s.idle_timer = Some(t);
        }
    }

    /// Ends a session: its requests in flight get `upstream_closed`, its
    /// stream ends, and its process is released (closed in session mode).
    fn end_session(&mut self, skey: SKey, why: &str) {
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        log::debug!("ending session {}: {why}", s.id);
        // Every request in flight leaves the table first, then gets its one
        // answer; answering never ends a session (see `deliver`), so this
        // does not re-enter.
        for (id, req) in s.inflight.drain() {
            if let Some(t) = req.timer {
                self.timers.cancel(t);
            }
            self.answer_failed(
                skey,
                &id,
                req,
                RelayError::UpstreamClosed,
                &format!("The session ended: {why}"),
                json!({}),
            );
        }
        let Some(mut s) = self.sessions.remove(&skey) else {
            return;
        };
        self.by_id.remove(&s.id);
        if let Some(t) = s.idle_timer.take() {
            self.timers.cancel(t);
        }
        if let Some((_, _, ReplyTo::Client(tok))) = s.waiting_init.take() {
            {
                let ka = self.waiting_keep_alive(tok);
                self.respond(
                    tok,
                    503,
                    &[("retry-after", "1")],
                    format!("{why}\n").as_bytes(),
                    ka,
                );
            }
        }
        if let Some(stream) = s.stream.take() {
            self.end_stream(stream);
        }
        let u = up_of(skey);
        if self.ups[u].is_http() {
            self.http_end(skey);
            return;
        }
        match s.conn {
            Some(conn) => {
                if let Some(p) = self.procs.get_mut(&conn) {
                    match &mut p.kind {
                        ProcKind::Session { session } => *session = None,
                        ProcKind::Shared { mux, sessions, .. } => {
                            sessions.retain(|k| *k != skey);
                            for msg in mux.end_session(skey) {
                                if p.io.accepts_input() {
                                    p.io.to_child.push_line(&msg);
                                }
                            }
                        }
                    }
                }
                let actions = self.ups[u].pool(|p| p.release(conn.id, self.now));
                self.apply(u, actions);
            }
            None => {
                let actions = self.ups[u].pool(|p| p.cancel_wait(skey));
                self.apply(u, actions);
            }
        }
    }

    /// Ends an SSE response cleanly (last chunk); the connection goes back to
    /// reading requests, or closes if it was not keep-alive.
    fn end_stream(&mut self, tok: Token) {
        let now = self.now;
        let Some(c) = self.client(tok) else { return };
        let mut out = Vec::new();
        http1::write_last_chunk(&mut out);
        c.out.push_raw(&out);
        c.set_state(ClientState::Idle);
        c.last_active = now;
        self.dirty.push(tok);
        self.to_drive.push(tok);
    }

    // ---- delivering to clients ------------------------------------------------

    /// A reply (or relay error) for request `id` of session `skey`. A
    /// stateless (2026-07-28) session ends with its one answer: it is
    /// queued for the end of the turn, where the loop ends it.
    fn deliver(&mut self, skey: SKey, reply_to: ReplyTo, id: &Id, msg: Vec<u8>) {
        // An answer is activity: the session's idle clock starts over.
        if let Some(s) = self.sessions.get_mut(&skey) {
            s.last_active = self.now;
        }
        self.deliver_to(skey, reply_to, id, msg);
        if self
            .sessions
            .get(&skey)
            .is_some_and(|s| s.stateless && s.inflight.is_empty())
        {
            self.to_end.push(skey);
        }
    }

    fn deliver_to(&mut self, skey: SKey, reply_to: ReplyTo, id: &Id, msg: Vec<u8>) {
        let tok = match reply_to {
            ReplyTo::Stream => {
                self.push_to_stream(skey, msg);
                return;
            }
            ReplyTo::Client(tok) => tok,
        };
        let Some(c) = client_in(&mut self.endpoints, tok) else {
            log::debug!("reply to {id} dropped: its connection is gone");
            return;
        };
        let ClientState::Waiting(ex) = &mut c.state else {
            return;
        };
        if ex.session != skey {
            return;
        }
        let Some(pos) = ex.expect.iter().position(|x| x == id) else {
            return;
        };
        ex.expect.swap_remove(pos);
        let done = ex.expect.is_empty();
        let ka = ex.keep_alive;
        if ex.sse {
            let ev_id = self.sessions.get_mut(&skey).map(|s| {
                s.next_event += 1;
                s.next_event - 1
            });
            chunk_event_into(&mut c.out, ev_id, &msg);
            if done {
                let mut out = Vec::new();
                http1::write_last_chunk(&mut out);
                c.out.push_raw(&out);
                c.set_state(if ka {
                    ClientState::Idle
                } else {
                    ClientState::Closing
                });
                c.last_active = self.now;
                self.to_drive.push(tok);
            }
            self.dirty.push(tok);
            return;
        }
        if ex.batch {
            ex.replies.push(msg);
            if done {
                let replies = std::mem::take(&mut ex.replies);
                let mut body = b"[".to_vec();
                for (i, r) in replies.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(r);
                }
                body.push(b']');
                self.respond_json(tok, 200, &body, ka, None);
            }
            return;
        }
        let header = ex.session_header.take();
        self.respond_json(tok, 200, &msg, ka, header.as_deref());
    }

    /// Turns a waiting POST into an SSE stream (MCP: the server may send
    /// related messages before the reply).
    fn upgrade_to_sse(&mut self, tok: Token) -> bool {
        let Some(c) = self.client(tok) else {
            return false;
        };
        let ClientState::Waiting(ex) = &mut c.state else {
            return false;
        };
        if !ex.sse {
            ex.sse = true;
            let mut headers = vec![
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
                ("x-accel-buffering", "no"),
            ];
            let sid = ex.session_header.take();
            if let Some(s) = &sid {
                headers.push(("mcp-session-id", s.as_str()));
            }
            let mut out = Vec::new();
            http1::write_chunked_head(&mut out, 200, &headers, ex.keep_alive);
            c.out.push_raw(&out);
            self.metrics.http_response(200);
        }
        true
    }

    /// A server-initiated message for a session: its stream if open, else an
    /// open POST of the session (upgraded to SSE), else kept for its next GET.
    fn push_to_stream(&mut self, skey: SKey, msg: Vec<u8>) {
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        if let Some(tok) = s.stream {
            let legacy = s.legacy;
            let ev_id = s.next_event;
            s.next_event += 1;
            if !legacy {
                s.replay.push(ev_id, msg.clone());
            }
            if let Some(c) = self.client(tok) {
                let mut ev = Vec::new();
                if legacy {
                    sse::write_event(&mut ev, None, Some("message"), &msg);
                } else {
                    sse::write_event(&mut ev, Some(&ev_id.to_string()), None, &msg);
                }
                let mut out = Vec::new();
                http1::write_chunk(&mut out, &ev);
                c.out.push_raw(&out);
                self.dirty.push(tok);
                return;
            }
        }
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        let post = s
            .inflight
            .iter()
            .filter_map(|(_, r)| match r.route {
                ReplyTo::Client(t) => Some((r.started, t)),
                ReplyTo::Stream => None,
            })
            .max_by_key(|(started, _)| *started)
            .map(|(_, t)| t);
        if let Some(tok) = post
            && self.upgrade_to_sse(tok)
        {
            let ev_id = self.sessions.get_mut(&skey).map(|s| {
                s.next_event += 1;
                s.next_event - 1
            });
            if let Some(c) = self.client(tok) {
                chunk_event_into(&mut c.out, ev_id, &msg);
                self.dirty.push(tok);
            }
            return;
        }
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        if s.undelivered.len() >= UNDELIVERED_MAX {
            s.undelivered.pop_front();
            log::warn!(
                "session {}: no stream to deliver to; oldest kept message dropped",
                s.id
            );
        }
        s.undelivered.push_back(msg);
    }

    /// Progress for one of a session's requests: to the request's own stream,
    /// restarting its response timeout (MCP: progress shows it is alive).
    fn on_progress(&mut self, skey: SKey, token: Option<Id>, msg: Vec<u8>) {
        let target = token.and_then(|t| {
            let s = self.sessions.get(&skey)?;
            let (id, r) = s.inflight.by_progress(&t)?;
            Some((id.clone(), r.route))
        });
        let Some((id, reply_to)) = target else {
            self.push_to_stream(skey, msg);
            return;
        };
        self.arm_response_timer(skey, &id);
        match reply_to {
            ReplyTo::Client(tok) if self.upgrade_to_sse(tok) => {
                let ev_id = self.sessions.get_mut(&skey).map(|s| {
                    s.next_event += 1;
                    s.next_event - 1
                });
                if let Some(c) = self.client(tok) {
                    chunk_event_into(&mut c.out, ev_id, &msg);
                    self.dirty.push(tok);
                }
            }
            _ => self.push_to_stream(skey, msg),
        }
    }

    // ---- processes ------------------------------------------------------------

    fn apply(&mut self, u: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Spawn(id) => self.spawn_proc(PKey { up: u, id }),
                Action::Close(id, reason) => {
                    let conn = PKey { up: u, id };
                    log::debug!("closing process {conn}: {reason:?}");
                    self.close_proc(conn, Cause::Asked);
                }
                Action::Grant { waiter, conn } => {
                    self.bind_session(waiter, PKey { up: u, id: conn })
                }
                Action::Reject { waiter, reason } => self.reject_session(waiter, reason),
            }
        }
    }

    fn spawn_proc(&mut self, conn: PKey) {
        let io = StdioConn::spawn(
            &self.ups[conn.up].cfg.command,
            &self.ups[conn.up].cfg.name,
            self.ups[conn.up].cfg.max_message_size,
            self.now,
        );
        let mut io = match io {
            Ok(io) => io,
            Err(e) => {
                log::error!("cannot start {:?}: {e}", self.ups[conn.up].cfg.command);
                self.metrics
                    .upstream_exited(self.ups[conn.up].metric, "spawn_failed");
                let actions = self.ups[conn.up].pool(|p| p.on_spawn_failed(conn.id, self.now));
                self.apply(conn.up, actions);
                return;
            }
        };
        let endpoints = &mut self.endpoints;
        if let Err(e) = io.register(self.poll.registry(), |pipe| {
            endpoints.insert(Endpoint::Pipe(conn, pipe))
        }) {
            log::error!("cannot register a server's pipes: {e}");
        }
        log::info!(
            "[{}] started pid {} (process {conn})",
            self.ups[conn.up].cfg.name,
            io.pid()
        );
        self.metrics.upstream_spawned(self.ups[conn.up].metric);
        let kind = match self.ups[conn.up].cfg.pool {
            PoolMode::Session => ProcKind::Session { session: None },
            PoolMode::Shared => ProcKind::Shared {
                mux: Mux::new(),
                init: None,
                sessions: Vec::new(),
            },
        };
        let shared = matches!(kind, ProcKind::Shared { .. });
        let cfg = lifecycle::Config {
            grace: self.ups[conn.up].cfg.kill_grace,
            down: DownPolicy::OnLoss,
        };
        let init = shared.then(|| Id::Str(RELAY_INIT_ID.into()));
        self.procs.insert(
            conn,
            Proc {
                io,
                kind,
                life: Lifecycle::spawned(cfg, init),
                grace: None,
            },
        );
        if shared {
            // Shared processes are initialized once, by the relay.
            let init = json!({
                "jsonrpc": "2.0",
                "id": RELAY_INIT_ID,
                "method": "initialize",
                "params": {
                    "protocolVersion": RELAY_PROTOCOL,
                    "capabilities": {},
                    "clientInfo": {"name": "mcp-relay", "version": env!("CARGO_PKG_VERSION")},
                },
            });
            let bytes = serde_json::to_vec(&init).unwrap_or_default();
            self.write_proc(conn, &bytes);
        } else {
            // A fresh process is a ready spare; its session initializes it.
            let actions = self.ups[conn.up].pool(|p| p.on_ready(conn.id, self.now));
            self.apply(conn.up, actions);
        }
    }

    fn on_shared_init(&mut self, conn: PKey, line: &[u8]) {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
        let Some(result) = v.get("result").cloned() else {
            log::error!(
                "[{}] process {conn} rejected the relay's initialize: {}",
                self.ups[conn.up].cfg.name,
                String::from_utf8_lossy(line)
            );
            self.close_proc(conn, Cause::Fault);
            return;
        };
        if let Some(p) = self.procs.get_mut(&conn)
            && let ProcKind::Shared { init, .. } = &mut p.kind
        {
            *init = Some(result);
            p.life.initialized();
        }
        self.write_proc(
            conn,
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        );
        let actions = self.ups[conn.up].pool(|p| p.on_ready(conn.id, self.now));
        self.apply(conn.up, actions);
    }

    fn proc_stderr(&mut self, conn: PKey) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        let (more, closed) = p.io.drain_stderr(self.poll.registry(), self.now);
        if more {
            // More stderr than one turn's budget: keep draining next turn.
            self.more_procs.push(conn);
        }
        if let Some(t) = closed {
            self.endpoints.remove(t);
        }
    }

    fn proc_flush(&mut self, conn: PKey) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        if let Err(e) = p.io.flush_stdin() {
            log::warn!(
                "[{}] writing to process {conn} failed: {e}",
                self.ups[conn.up].cfg.name
            );
            self.proc_lost(conn);
        }
    }

    fn proc_read(&mut self, conn: PKey, drain_all: bool) {
        let mut taken = 0;
        loop {
            let Some(p) = self.procs.get_mut(&conn) else {
                return;
            };
            if !drain_all && taken >= READ_BUDGET {
                if p.io.out_readable {
                    self.more_procs.push(conn);
                }
                return;
            }
            match p.io.read_stdout() {
                StdoutRead::Data(n) => {
                    taken += n;
                    let mut reader = std::mem::replace(&mut p.io.from_child, LineReader::new(0));
                    while let Some(frame) = reader.next_frame() {
                        match frame {
                            Frame::Line(line) => self.on_proc_line(conn, line),
                            Frame::Oversize(o) => {
                                log::warn!(
                                    "[{}] message of {} bytes from process {conn} dropped (over --max-message-size)",
                                    self.ups[conn.up].cfg.name,
                                    o.len
                                );
                                if let Some(id) = jsonrpc::recover_id(&o.head, &o.tail) {
                                    self.proc_oversize_reply(conn, id, o.len);
                                }
                            }
                        }
                    }
                    if let Some(p) = self.procs.get_mut(&conn) {
                        p.io.from_child = reader;
                    }
                }
                StdoutRead::Idle => return,
                StdoutRead::Eof => {
                    self.proc_lost(conn);
                    return;
                }
            }
        }
    }

    fn proc_oversize_reply(&mut self, conn: PKey, id: Id, size: usize) {
        let Some(p) = self.procs.get(&conn) else {
            return;
        };
        // Session mode only: shared-mode ids are the mux's and the reply is
        // lost with the bytes; that request then times out.
        if let ProcKind::Session {
            session: Some(skey),
        } = p.kind
        {
            self.fail_request(
                skey,
                &id,
                RelayError::MessageTooLarge,
                "The server's reply exceeds the relay's maximum message size",
                json!({"size": size, "limit": self.ups[conn.up].cfg.max_message_size}),
            );
        }
    }

    fn on_proc_line(&mut self, conn: PKey, line: &[u8]) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        match &mut p.kind {
            ProcKind::Session { session } => {
                let Some(skey) = *session else {
                    log::debug!(
                        "[{}] message from a process with no session dropped",
                        self.ups[conn.up].cfg.name
                    );
                    return;
                };
                self.on_session_line(skey, line);
            }
            ProcKind::Shared {
                mux,
                init,
                sessions,
            } => {
                if init.is_none() {
                    if let Ok(Message::Single(env)) = jsonrpc::peek(line)
                        && env.kind() == Kind::Response
                        && env.id() == Some(Id::Str(RELAY_INIT_ID.into()))
                    {
                        self.on_shared_init(conn, line);
                    }
                    return;
                }
                let downs = mux.down(line);
                let sessions = sessions.clone();
                for d in downs {
                    match d {
                        Down::Reply { session, id, msg } => self.complete(session, &id, msg),
                        Down::ToSession { session, msg } => {
                            let progress = match jsonrpc::peek(&msg) {
                                Ok(Message::Single(env))
                                    if env.method_is("notifications/progress") =>
                                {
                                    Some(env.param_id("progressToken"))
                                }
                                _ => None,
                            };
                            match progress {
                                Some(token) => self.on_progress(session, token, msg),
                                None => self.push_to_stream(session, msg),
                            }
                        }
                        Down::Broadcast { msg } => {
                            for s in &sessions {
                                self.push_to_stream(*s, msg.clone());
                            }
                        }
                        Down::ToUpstream { msg } => self.write_proc(conn, &msg),
                        Down::Drop => {}
                    }
                }
            }
        }
    }

    /// A message from the upstream of one session (its own process, or its
    /// HTTP upstream session): replies complete requests, progress goes to
    /// the request's stream, anything else to the session's stream.
    fn on_session_line(&mut self, skey: SKey, line: &[u8]) {
        let u = up_of(skey);
        match jsonrpc::peek(line) {
            Ok(Message::Single(env)) => match env.kind() {
                Kind::Response => {
                    if let Some(id) = env.id() {
                        self.complete(skey, &id, line.to_vec());
                    }
                }
                Kind::Notification if env.method_is("notifications/progress") => {
                    let token = env.param_id("progressToken");
                    self.on_progress(skey, token, line.to_vec());
                }
                Kind::Notification | Kind::Request => self.push_to_stream(skey, line.to_vec()),
                Kind::Invalid => log::warn!(
                    "[{}] upstream message that is not JSON-RPC dropped",
                    self.ups[u].cfg.name
                ),
            },
            Ok(Message::Batch(_)) => self.on_batch_down(skey, line),
            Err(_) => {
                let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                log::warn!(
                    "[{}] upstream line that is not JSON dropped: {shown}",
                    self.ups[u].cfg.name
                );
            }
        }
    }

    fn on_batch_down(&mut self, skey: SKey, line: &[u8]) {
        let Ok(Message::Batch(items)) = jsonrpc::peek(line) else {
            return;
        };
        for raw in items {
            let bytes = raw.get().as_bytes().to_vec();
            match jsonrpc::peek_raw(raw) {
                Some(env) if env.kind() == Kind::Response => {
                    if let Some(id) = env.id() {
                        self.complete(skey, &id, bytes);
                    }
                }
                Some(_) => self.push_to_stream(skey, bytes),
                None => {}
            }
        }
    }

    /// The process replied to request `id` of session `skey`.
    fn complete(&mut self, skey: SKey, id: &Id, msg: Vec<u8>) {
        let Some(req) = self.untrack(skey, id) else {
            log::debug!("late reply to {id} dropped");
            return;
        };
        self.metrics
            .request_done("ok", self.now.duration_since(req.started).as_secs_f64());
        self.deliver(skey, req.route, id, msg);
    }

    fn close_proc(&mut self, conn: PKey, cause: Cause) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        let actions = p.life.close(self.now, cause);
        if actions.is_empty() {
            // Already closing, or past it.
            return;
        }
        self.run_proc(conn, actions);
        self.try_reap(conn);
    }

    /// Stdout EOF or a broken stdin: the process serves no one from now.
    fn proc_lost(&mut self, conn: PKey) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        if !p.life.in_service() {
            return;
        }
        // Closed first, so that one found already exited goes down with its
        // exit status.
        self.close_proc(conn, Cause::Fault);
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        let actions = p.life.on_lost(self.now);
        self.run_proc(conn, actions);
    }

    /// Fails what was in flight on the process, ends its sessions (their
    /// clients get 404 and re-initialize) and tells the pool.
    fn proc_down(&mut self, conn: PKey, status: Option<ExitStatus>, asked: bool) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        let what = status.map_or_else(|| "stdout closed".to_string(), describe);
        // Every request in flight on the process belongs to one of its
        // sessions, so failing each session's pending requests covers them
        // all; the mux only has to forget its rewriting state.
        let sessions = match &mut p.kind {
            ProcKind::Session { session } => session.take().into_iter().collect::<Vec<_>>(),
            ProcKind::Shared { mux, sessions, .. } => {
                mux.fail_all();
                std::mem::take(sessions)
            }
        };
        if self.shutdown.is_stopping() || asked {
            log::debug!(
                "[{}] process {conn} closed ({what})",
                self.ups[conn.up].cfg.name
            );
        } else {
            log::warn!(
                "[{}] process {conn} went away ({what})",
                self.ups[conn.up].cfg.name
            );
        }
        for skey in sessions {
            let ids: Vec<Id> = self
                .sessions
                .get(&skey)
                .map(|s| s.inflight.iter().map(|(id, _)| id.clone()).collect())
                .unwrap_or_default();
            for id in ids {
                self.fail_request(
                    skey,
                    &id,
                    RelayError::UpstreamClosed,
                    &format!("The server closed the connection ({what})"),
                    json!({"status": what, "exit_code": status.and_then(|s| s.code())}),
                );
            }
            // The session's state died with the process: its next request
            // gets 404 and the client starts a new session.
            if let Some(s) = self.sessions.get_mut(&skey) {
                s.conn = None;
            }
            self.end_session_without_release(skey);
        }
        let actions = self.ups[conn.up].pool(|p| p.on_exit(conn.id, self.now));
        self.apply(conn.up, actions);
    }

    fn end_session_without_release(&mut self, skey: SKey) {
        // `conn` was cleared, so end_session only cancels a queue wait, which
        // a bound session does not have: the pool hears about the process
        // through on_exit instead.
        let Some(s) = self.sessions.get(&skey) else {
            return;
        };
        if s.conn.is_none() && s.waiting_init.is_none() {
            let Some(mut s) = self.sessions.remove(&skey) else {
                return;
            };
            self.by_id.remove(&s.id);
            if let Some(t) = s.idle_timer.take() {
                self.timers.cancel(t);
            }
            if let Some(stream) = s.stream.take() {
                self.end_stream(stream);
            }
        } else {
            self.end_session(skey, "its server went away");
        }
    }

    fn grace_expired(&mut self, conn: PKey) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        p.grace = None;
        if p.io.proc.try_reap().is_some() {
            self.proc_reaped(conn);
            return;
        }
        let actions = p.life.on_grace_expired(self.now);
        self.run_proc(conn, actions);
    }

    fn reap(&mut self) {
        let conns: Vec<PKey> = self.procs.keys().copied().collect();
        for conn in conns {
            self.try_reap(conn);
        }
    }

    fn try_reap(&mut self, conn: PKey) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        if p.io.proc.status().is_some() || p.io.proc.try_reap().is_none() {
            return;
        }
        self.proc_reaped(conn);
    }

    fn proc_reaped(&mut self, conn: PKey) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        let Some(status) = p.io.proc.status() else {
            return;
        };
        log::debug!(
            "[{}] process {conn} (pid {}) reaped: {}",
            self.ups[conn.up].cfg.name,
            p.io.pid(),
            describe(status)
        );
        // What it wrote before exiting is still in the pipe. It goes down
        // (if it was not yet) after that, with its exit status.
        p.io.mark_exited();
        let actions = p.life.on_exit(status);
        self.proc_read(conn, true);
        self.run_proc(conn, actions);
    }

    /// Carries out what a process's lifecycle decided, in order.
    fn run_proc(&mut self, conn: PKey, actions: Vec<lifecycle::Action>) {
        let grace = self.ups[conn.up].cfg.kill_grace;
        for action in actions {
            let Some(p) = self.procs.get_mut(&conn) else {
                return;
            };
            match action {
                lifecycle::Action::CloseStdin => {
                    if let Some(t) = p.io.close_stdin(self.poll.registry()) {
                        self.endpoints.remove(t);
                    }
                }
                lifecycle::Action::ArmGrace(at) => {
                    if let Some(t) = p.grace.take() {
                        self.timers.cancel(t);
                    }
                    p.grace = Some(self.timers.insert(at, TimerKind::Grace(conn)));
                }
                lifecycle::Action::Term => {
                    log::info!(
                        "[{}] process {conn} still running {grace:?} after stdin closed; SIGTERM",
                        self.ups[conn.up].cfg.name
                    );
                    p.io.proc.terminate();
                }
                lifecycle::Action::Kill { after_term } => {
                    if after_term {
                        log::warn!(
                            "[{}] process {conn} ignored SIGTERM; SIGKILL",
                            self.ups[conn.up].cfg.name
                        );
                    }
                    p.io.proc.kill();
                }
                lifecycle::Action::Down { status, asked } => self.proc_down(conn, status, asked),
                lifecycle::Action::Release => self.release_proc(conn),
            }
        }
    }

    /// SIGKILL to every process now.
    fn kill_procs(&mut self) {
        let conns: Vec<PKey> = self.procs.keys().copied().collect();
        for conn in conns {
            if let Some(p) = self.procs.get_mut(&conn) {
                let actions = p.life.kill_now(self.now);
                self.run_proc(conn, actions);
            }
        }
    }

    /// Forgets a reaped process: its pipes are deregistered and closed.
    fn release_proc(&mut self, conn: PKey) {
        let Some(mut p) = self.procs.remove(&conn) else {
            return;
        };
        let reason = match p.io.proc.status() {
            Some(s) => {
                use std::os::unix::process::ExitStatusExt;
                exit_reason(s.code(), s.signal())
            }
            None => "closed",
        };
        self.metrics
            .upstream_exited(self.ups[conn.up].metric, reason);
        if let Some(t) = p.grace.take() {
            self.timers.cancel(t);
        }
        for t in p.io.release(self.poll.registry(), self.now) {
            self.endpoints.remove(t);
        }
    }

    // ---- shutdown ---------------------------------------------------------------

    /// Lets the shutdown machine move on (it does nothing while serving).
    fn shutdown_tick(&mut self) {
        if !self.shutdown.is_stopping() || self.shutdown.is_final() {
            return;
        }
        let drained = self.drained();
        if let Some(v) = self.shutdown.tick(self.now, drained) {
            self.apply_shutdown(v);
        }
    }

    /// Carries out what the shutdown machine decided.
    fn apply_shutdown(&mut self, v: ShutdownVerdict) {
        match v {
            // The listeners stay open through the drain and the grace so that
            // a load balancer's health check gets `/healthz` 503 (and sends
            // no new session here) and requests of existing sessions are
            // still served; new sessions get 503.
            ShutdownVerdict::BeginDrain { wake } => {
                for u in 0..self.ups.len() {
                    let actions = self.ups[u].pool(|p| p.shutdown(self.now));
                    self.apply(u, actions);
                }
                for at in wake {
                    self.timers.insert(at, TimerKind::Shutdown);
                }
            }
            ShutdownVerdict::EnterFinal { hard_stop } => {
                self.enter_final_phase();
                self.timers.insert(hard_stop, TimerKind::HardStop);
            }
            ShutdownVerdict::KillAll => self.kill_procs(),
        }
    }

    /// No request is in flight anywhere.
    fn drained(&self) -> bool {
        self.sessions
            .values()
            .all(|s| s.inflight.is_empty() && s.waiting_init.is_none())
    }

    /// Closes the listeners, ends every session and closes every process.
    fn enter_final_phase(&mut self) {
        for (_, l, _) in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listeners.clear();
        let keys: Vec<SKey> = self.sessions.keys().copied().collect();
        for k in keys {
            self.end_session(k, "the relay is shutting down");
        }
        let conns: Vec<PKey> = self.procs.keys().copied().collect();
        for conn in conns {
            self.close_proc(conn, Cause::Asked);
        }
        // Idle keep-alive connections close now; the rest after their output.
        let toks: Vec<Token> = self.client_tokens();
        for tok in toks {
            if let Some(c) = self.client(tok) {
                c.set_state(ClientState::Closing);
                self.dirty.push(tok);
            }
        }
    }

    fn client_tokens(&self) -> Vec<Token> {
        // Tokens are not enumerable from the registry by design; walking the
        // sessions and streams is not enough for idle connections, so the
        // registry offers its live tokens for this rare, shutdown-only walk.
        self.endpoints
            .tokens()
            .filter(|t| matches!(self.endpoints.get(*t), Some(Endpoint::Client(_))))
            .collect()
    }

    fn finished(&mut self) -> bool {
        // The DELETEs ending upstream sessions go out before the exit.
        let http_idle = self
            .ups
            .iter()
            .all(|u| u.http().is_none_or(|h| h.in_flight() == 0));
        let clients_left = self.clients > 0 || !http_idle;
        self.shutdown.try_exit(!self.procs.is_empty(), clients_left)
    }

    fn render_metrics(&self) -> String {
        let gauges: Vec<UpstreamGauges> = self
            .ups
            .iter()
            .enumerate()
            .map(|(u, up)| {
                let st = match &up.backend {
                    Backend::Stdio(p) => p.stats(),
                    Backend::Http(_) => Default::default(),
                };
                let mut g = UpstreamGauges {
                    upstream: &up.cfg.name,
                    starting: st.starting as u64,
                    idle: st.idle as u64,
                    leased: st.leased as u64,
                    closing: st.closing as u64,
                    waiting: st.waiting as u64,
                    sessions: self.sessions.keys().filter(|k| up_of(**k) == u).count() as u64,
                };
                if let Some(h) = up.http() {
                    // An HTTP upstream's "connections" are its keep-alive sockets.
                    let (total, idle) = h.connection_counts();
                    g.idle = idle as u64;
                    g.leased = (total - idle) as u64;
                }
                g
            })
            .collect();
        let mut out = String::with_capacity(4096);
        self.metrics.render(&mut out, &gauges, self.clients as u64);
        out
    }
}

/// The client connection behind a token; a free function so callers can
/// borrow other fields alongside it.
/// The reverse mode's side of the one loop turn (`reactor::turn`).
impl turn::Driver for Reverse {
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
    }

    fn end_of_turn(&mut self) -> Option<i32> {
        self.settle();
        if self.finished() {
            log::info!("all processes reaped; exiting");
            return Some(0);
        }
        None
    }

    fn has_more(&self) -> bool {
        !self.more_procs.is_empty() || !self.to_drive.is_empty()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.ups.iter().filter_map(Upstream::next_deadline).min()
    }

    fn on_signal(&mut self, sig: libc::c_int) {
        self.handle_signal(sig);
    }

    fn on_event(&mut self, token: Token, r: Readiness) {
        self.handle_event(token, r.readable, r.writable, r.hup);
    }

    /// Processes whose read budget ran out last turn are read before the
    /// timers, so a reply already in a pipe beats its response timeout.
    fn after_events(&mut self) {
        for conn in std::mem::take(&mut self.more_procs) {
            self.proc_read(conn, false);
            self.proc_stderr(conn);
        }
    }

    fn on_timer(&mut self, t: TimerKind) {
        self.handle_timer(t);
    }

    fn after_timers(&mut self) {
        for u in 0..self.ups.len() {
            self.http_poll(u);
            if !self.ups[u].is_http() && self.ups[u].next_deadline().is_some_and(|d| d <= self.now)
            {
                let actions = self.ups[u].pool(|p| p.poll(self.now));
                self.apply(u, actions);
            }
        }
    }
}

fn client_in(endpoints: &mut Registry<Endpoint>, tok: Token) -> Option<&mut Client> {
    match endpoints.get_mut(tok) {
        Some(Endpoint::Client(c)) => Some(c),
        _ => None,
    }
}

/// A relay error as a JSON-RPC response body.
fn error_body(id: Option<&Id>, err: RelayError, message: &str, upstream: &str) -> Vec<u8> {
    jsonrpc::error_response(
        id,
        err.code(),
        message,
        json!({"kind": err.kind(), "upstream": upstream}),
    )
}

/// Appends one SSE event, framed as an HTTP chunk.
fn chunk_event(out: &mut Vec<u8>, id: Option<u64>, event: Option<&str>, data: &[u8]) {
    let mut ev = Vec::with_capacity(data.len() + 32);
    let id = id.map(|i| i.to_string());
    sse::write_event(&mut ev, id.as_deref(), event, data);
    http1::write_chunk(out, &ev);
}

/// An event on a POST response stream. Its id is marked `p…` so that a
/// client resuming with it is not replayed the GET stream's events (MCP: a
/// resumed stream gets only what that stream missed).
fn chunk_event_into(out: &mut OutBuf, id: Option<u64>, data: &[u8]) {
    let mut ev = Vec::with_capacity(data.len() + 32);
    let id = id.map(|i| format!("p{i}"));
    sse::write_event(&mut ev, id.as_deref(), None, data);
    let mut bytes = Vec::new();
    http1::write_chunk(&mut bytes, &ev);
    out.push_raw(&bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting() -> ClientState {
        ClientState::Waiting(Exchange {
            session: skey_new(0, 1),
            expect: Vec::new(),
            replies: Vec::new(),
            batch: false,
            keep_alive: true,
            sse: false,
            session_header: None,
        })
    }

    #[test]
    fn client_connection_moves_only_along_its_lifecycle() {
        use ClientState::*;
        let all = || {
            vec![
                Idle,
                waiting(),
                Streaming {
                    session: skey_new(0, 1),
                },
                Closing,
            ]
        };
        let mut legal = Vec::new();
        for from in all() {
            for to in all() {
                if from.can_become(&to) {
                    legal.push(format!("{} → {}", from.name(), to.name()));
                }
            }
        }
        assert_eq!(
            legal,
            [
                "idle → idle",
                "idle → waiting",
                "idle → streaming",
                "idle → closing",
                "waiting → idle",
                "waiting → closing",
                "streaming → idle",
                "streaming → closing",
                "closing → closing",
            ]
        );
    }

    #[test]
    fn a_session_key_names_its_upstream_for_its_whole_life() {
        for (up, seq) in [(0, 1), (1, 2), (7, (1 << SKEY_UP_SHIFT) - 1), (65_535, 42)] {
            let k = skey_new(up, seq);
            assert_eq!(up_of(k), up, "{k:#x}");
        }
        assert_ne!(skey_new(0, 5), skey_new(1, 5));
    }
}
