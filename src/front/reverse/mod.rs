//! `mcp-relay reverse`: a Streamable HTTP endpoint (and the legacy HTTP+SSE
//! one) in front of pools of stdio server processes or HTTP upstreams.
//!
//! One `Reverse` value, driven by the loop turn in `reactor::turn`, owns:
//!
//! - `endpoints`: listeners, client connections and process pipes, by token
//!   (one token space: `reactor::token`);
//! - `sessions`: client sessions by key (a key carries its upstream's index)
//!   and by `Mcp-Session-Id`, each with its requests in flight (the session
//!   core's `Inflight`), its SSE stream and its replay buffer;
//! - `procs`: server processes, each with its `upstream::lifecycle::Lifecycle`
//!   (`DownPolicy::OnLoss`);
//! - `ups`: the upstreams, each an `enum Backend { Stdio(pool), Http(engine) }`;
//! - `shutdown`: the relay's own lifecycle (`session::shutdown`).
//!
//! Handlers record what happened and return; the end of the turn (`settle`)
//! drives queued clients, ends answered stateless sessions, reclaims idle
//! sessions for sessions waiting on a full pool (`ending::reclaim_sessions`),
//! writes output and moves the shutdown on.
//!
//! Files, by job:
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the types, start-up, event/signal/timer dispatch, shutdown, metrics |
//! | `client.rs` | client connections: accept, read, parse, respond, their lifecycle |
//! | `routes.rs` | HTTP routing and the MCP endpoints (POST, GET, DELETE, stateless, legacy) |
//! | `session.rs` | sessions: create, lease, bind, requests in flight, timeouts |
//! | `ending.rs` | how sessions end: idle, client gone, reclaim, `end_session` |
//! | `deliver.rs` | upstream messages to clients: replies, progress, streams |
//! | `proc.rs` | server processes: pool actions, pipes, lifecycle, reaping |
//! | `era/` | 2026-07-28 clients and the era of each process: probe, bridge, stamp (issue 13); `session_pool.rs`, `shared_pool.rs` per pool mode |
//! | `http/` | HTTP upstreams (`--url`): upstream sessions (`phase.rs`: their lifecycle), GET streams, DELETE |
//!
//! A request's path (stdio, session mode): `client::client_read` →
//! `client::drive_client` → `routes::handle_request` → `routes::post_mcp` →
//! `routes::forward_single` → `session::track` + `session::send_up` → the
//! process's stdin … its stdout → `proc::proc_read` → `proc::on_proc_line` →
//! `deliver::on_session_line` → `deliver::complete` → `deliver::deliver` →
//! `client::respond_json`. docs/architecture.md follows it in every mode.

mod cancel;
mod client;
mod deliver;
mod ending;
mod era;
mod http;
mod oauth;
mod oauth_held;
mod proc;
mod routes;
mod session;
mod session_new;
mod stop;
mod tools;

use client::*;
use oauth::Authn;
use proc::*;
use session::*;

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
use crate::io::ratelog::{RateLog, suppressed_note};
use crate::keyhash::{KeyMap, OutlineKeyMap};
use crate::mcp::session::{ReplayBuffer, Tokens, new_session_id};
use crate::mcp::shared::{Down, Mux, Up};
use crate::metrics::{Metrics, UpstreamGauges, UpstreamId, exit_reason};
use crate::policy::backoff::Rng;
use crate::proto::errors::RelayError;
use crate::proto::framing::{Frame, LineReader};
use crate::proto::http1::{self, Event, Limits, Request, RequestParser};
use crate::proto::jsonrpc::{self, Dropped, Envelope, Id, Kind, Message};
use crate::proto::sse;
use crate::reactor::signals::Signals;
use crate::reactor::turn::{self, Readiness};
use crate::reactor::{self, RESOLVER_TOKEN, Registry, SIGNAL_TOKEN, Source, TimerId, TimerWheel};
use crate::session::inflight::{self, Deadlines, Inflight};
use crate::session::shutdown::{Shutdown, ShutdownConfig, Verdict as ShutdownVerdict};
use crate::upstream::lifecycle::{self, Cause, DownPolicy, Lifecycle};
use crate::upstream::pool::reclaim::{self, Candidate, Choice};
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

/// Bytes read from one process or one client connection per turn
/// (fairness: what is left is read on the next turn).
const READ_BUDGET: usize = 1 << 20;

/// Request bytes buffered on one client connection (at least
/// `--max-header-size` + 64 KiB): at this many it is not read until it takes
/// its requests (backpressure; `client::client_read`).
const CLIENT_IN_MAX: usize = 1 << 20;

/// Bytes queued toward one process's stdin: a client message that would go
/// past it is refused (503, or `upstream_busy` for a request), unless the
/// queue is empty (`proc::proc_queue_room`).
const PROC_QUEUE_MAX: usize = 4 << 20;

/// A client that lets this much output pile up is too slow and is dropped.
const CLIENT_OUT_MAX: usize = 8 << 20;

/// Accepting pauses this long after EMFILE/ENFILE (HAProxy uses 100 ms).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Messages kept for a session that has no stream to receive them.
const UNDELIVERED_MAX: usize = 256;

/// One upstream: its route and knobs, and a pool of processes or an HTTP
/// engine.
struct Upstream {
    cfg: ReverseConfig,
    backend: Backend,
    metric: UpstreamId,
    /// Why the last spawn failed, until a spawn succeeds: while it is set and
    /// no process is alive, the upstream is failing (`/healthz` 503) and
    /// waiting sessions are told why at once.
    spawn_error: Option<String>,
    /// When a starved waiter's reclaim is next looked at, if a session will
    /// be idle long enough then (`ending::reclaim_sessions`).
    reclaim_timer: Option<(Instant, TimerId)>,
    /// Which era its processes speak (`--upstream-protocol`; `auto`: found
    /// out once by a probe, `era/`).
    verdict: crate::mcp::era::verdict::Verdict,
    /// What the modern-client bridge did for it (`era/`).
    era: era::EraCounters,
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

    /// `Pool::pin`: a shared process for a 2026-07-28 request, if a lease
    /// would be granted one at once.
    fn pin(&mut self, now: Instant) -> Option<pool::ConnId> {
        match &mut self.backend {
            Backend::Stdio(p) => p.pin(now),
            Backend::Http(_) => None,
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

    /// Why this upstream cannot serve anyone now: its spawns fail and no
    /// process of it is alive.
    fn failing(&self) -> Option<&str> {
        let Backend::Stdio(pool) = &self.backend else {
            return None;
        };
        // No spawn error (the usual case, checked on every lease): the
        // pool's counts need not be read.
        let error = self.spawn_error.as_deref()?;
        let st = pool.stats();
        let alive = st.starting + st.idle + st.leased;
        (alive == 0).then_some(error)
    }

    /// Session mode: waiters no process can come for (`Pool::starved`).
    fn starved(&self) -> usize {
        match &self.backend {
            Backend::Stdio(p) => p.starved(),
            Backend::Http(_) => 0,
        }
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
    /// An upstream's starved waiter may have an idle session old enough to
    /// reclaim now (the end of the turn looks).
    Reclaim(usize),
    /// `--url`: a session's POSTs waited `GET_HOLD` for its GET stream.
    GetHold(SKey),
    /// The relay's `server/discover` probe to this process is
    /// `era::verdict::PROBE_TIMEOUT` old (`era/`).
    EraProbe(PKey),
    /// A 2026-07-28 client's retry of a call waiting for input is late.
    EraInput(SKey),
    /// A handshake-era session's round of a modern server's input
    /// requests is late (`era/stamped_input.rs`).
    StampedInput(SKey),
}

/// The listening sockets and the connections they accepted.
struct Listening {
    listeners: Vec<(Token, TcpListener, ListenerKind)>,
    /// Client connections open (`--max-clients`).
    clients: usize,
    /// Accepting is paused after EMFILE/ENFILE, until a timer.
    paused: bool,
}

/// Rate limits of the log lines a flood could repeat (one per interval,
/// with a count of the suppressed ones).
#[derive(Default)]
struct LogLimits {
    /// A client connection reached its input cap.
    client_input: RateLog,
    /// A client message refused: a process's stdin queue is full.
    queue_full: RateLog,
    /// A `tools/call` refused by an upstream's tool filter.
    tool_denied: RateLog,
    /// A TLS handshake on the listener failed or timed out.
    tls_handshake: RateLog,
}

/// Work handlers queue for the loop's end of turn (`settle`), which empties
/// every queue (a token queued twice is handled once more, harmlessly).
#[derive(Default)]
struct Work {
    /// Clients whose buffered requests may be handled now.
    to_drive: Vec<Token>,
    /// Clients with output to write.
    dirty: Vec<Token>,
    /// Stateless sessions whose one request was answered, ended by the loop
    /// at the end of the turn.
    to_end: Vec<SKey>,
    /// Processes whose read budget ran out with data left.
    more_procs: Vec<PKey>,
    /// Processes given input this turn: flushed at its end. Only these
    /// (a stdin that could not take everything is flushed again by its
    /// writable event), so a turn's work does not grow with the pool.
    dirty_procs: Vec<PKey>,
}

struct Reverse {
    cfg: ReverseConfig,
    poll: Poll,
    timers: TimerWheel<TimerKind>,
    endpoints: Registry<Endpoint>,
    signals: Signals,
    now: Instant,
    listen: Listening,
    tokens: Option<Tokens>,
    /// `--oauth-issuer`: bearer JWTs checked against the issuer's keys.
    oauth: Option<Box<oauth::OAuth>>,
    /// Keyed by the relay's own counters: the fast `KeyMap` (`keyhash`).
    sessions: OutlineKeyMap<SKey, Session>,
    /// Looked up with the client's `Mcp-Session-Id`: std's keyed hash.
    by_id: HashMap<String, SKey>,
    /// What the last ended 2026-07-28 one-request session leaves for the
    /// next one (`session::Spare`): one slot, not a pool.
    spare_stateless: Option<session_new::Spare>,
    next_key: SKey,
    procs: KeyMap<PKey, Proc>,
    /// The upstreams: one, or one per `--config` entry (route /mcp/NAME).
    ups: Vec<Upstream>,
    /// Resolves URL upstreams' host names off the loop (one waker per Poll).
    resolver: Option<Resolver>,
    metrics: Metrics,
    /// What handlers left for the end of the turn.
    work: Work,
    /// Scratch for socket reads (`client::client_read`), kept so a read
    /// does not zero 16 KiB on the stack each time.
    read_buf: Box<[u8]>,
    logs: LogLimits,
    /// The relay's own lifecycle: serving → draining → grace → final → exit.
    shutdown: Shutdown,
    /// Budget of the debug lines about dropped messages and departed
    /// clients (`deliver::dropped`, `session::client_gone`).
    drop_log: RateLog,
    /// `--tls-cert`: the listener's certificate (reloaded on SIGHUP).
    tls: Option<crate::io::transport::ListenerTls>,
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
        // Orphans of the servers come back to the relay (`io::orphans`).
        crate::io::orphans::become_subreaper();
        let signals =
            Signals::install(&[libc::SIGINT, libc::SIGTERM, libc::SIGCHLD, libc::SIGHUP])?;
        signals.register(poll.registry(), SIGNAL_TOKEN)?;
        let tls = client::listener_tls(&cfg)?;
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
                    let scheme = if tls.is_some() { "https" } else { "http" };
                    crate::log_info!("listening on {scheme}://{local}{} ({})", u.path, u.name);
                }
            } else {
                crate::log_info!("listening on http://{local} (admin)");
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
        let oauth = match &cfg.oauth {
            Some(o) => {
                Some(Box::new(oauth::OAuth::new(o, now).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidInput, e)
                })?))
            }
            None => None,
        };
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
                        // Shared cold start: sessions waiting for the first
                        // process each hold a client connection, so
                        // --max-clients bounds that queue.
                        max_waiting_starting: cfg.max_clients,
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
            let verdict = crate::mcp::era::verdict::Verdict::new(
                ucfg.upstream_protocol,
                crate::mcp::era::verdict::PROBE_TIMEOUT,
                now,
            );
            ups.push(Upstream {
                cfg: ucfg,
                backend,
                metric,
                spawn_error: None,
                reclaim_timer: None,
                verdict,
                era: era::EraCounters::default(),
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
            listen: Listening {
                listeners,
                clients: 0,
                paused: false,
            },
            tokens,
            oauth,
            sessions: OutlineKeyMap::default(),
            by_id: HashMap::new(),
            spare_stateless: None,
            next_key: 1,
            procs: KeyMap::default(),
            ups,
            resolver,
            metrics,
            work: Work::default(),
            read_buf: vec![0; 16 * 1024].into_boxed_slice(),
            logs: LogLimits::default(),
            drop_log: RateLog::per_second(),
            shutdown,
            tls,
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
        let code = turn::run(self, 1024)?;
        crate::io::orphans::kill_all();
        Ok(code)
    }

    /// The end of a turn: handles pipelined requests freed up this turn,
    /// ends the stateless sessions answered this turn (including any answered
    /// while driving), writes everything that was queued, and lets the
    /// shutdown move on.
    fn settle(&mut self) {
        // One pass: a client that still has data after its read budget is
        // queued again and served next turn (with a zero poll timeout), so a
        // fast sender cannot monopolise the loop.
        for tok in std::mem::take(&mut self.work.to_drive) {
            self.drive_client(tok);
        }
        // Ending a session answers nothing new (its requests are gone), so
        // this queue is empty afterwards; its buffer is kept for the next
        // turn (one entry a 2026-07-28 request).
        let mut ending = std::mem::take(&mut self.work.to_end);
        for skey in ending.drain(..) {
            self.end_answered(skey);
        }
        if self.work.to_end.is_empty() {
            self.work.to_end = ending;
        }
        // After this turn's requests made their sessions busy and answered
        // stateless sessions gave their processes back: a session waiting
        // for a full pool may take an idle one's process. (A stateless
        // request granted a process here and failing at once is queued to
        // end next turn: `has_more`.)
        self.reclaim_sessions();
        let mut dirty = std::mem::take(&mut self.work.dirty_procs);
        for conn in dirty.drain(..) {
            self.proc_flush(conn);
        }
        if self.work.dirty_procs.is_empty() {
            self.work.dirty_procs = dirty;
        }
        #[cfg(debug_assertions)]
        for (conn, p) in self.procs.iter() {
            debug_assert!(
                !p.io.flush_pending(),
                "process {conn} was given input that no one marked for flushing"
            );
        }
        for tok in std::mem::take(&mut self.work.dirty) {
            self.client_flush(tok);
        }
        self.shutdown_tick();
    }

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
                } else if oauth::is_oauth_tag(tag) {
                    self.oauth_event(tag, conn, readable, writable);
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
            libc::SIGCHLD => {
                self.reap();
                // What the servers' exits handed over to the relay.
                crate::io::orphans::sweep();
            }
            libc::SIGTERM | libc::SIGINT => {
                if self.shutdown.is_stopping() {
                    crate::log_warn!("second signal: killing every server now");
                } else {
                    crate::log_info!(
                        "signal {sig}: shutting down (grace {:?})",
                        self.cfg.shutdown_grace
                    );
                }
                for v in self.shutdown.on_signal(self.now) {
                    self.apply_shutdown(v);
                }
            }
            libc::SIGHUP => self.reload_tls(),
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
                self.listen.paused = false;
                let toks: Vec<Token> = self.listen.listeners.iter().map(|l| l.0).collect();
                for tok in toks {
                    self.accept(tok);
                }
            }
            TimerKind::Shutdown => self.shutdown_tick(),
            TimerKind::Reconnect(skey) => self.http_reconnect_timer(skey),
            TimerKind::Reclaim(u) => {
                if let Some(up) = self.ups.get_mut(u) {
                    up.reclaim_timer = None;
                }
            }
            TimerKind::GetHold(skey) => self.http_hold_timer(skey),
            TimerKind::EraProbe(conn) => self.era_probe_expired(conn),
            TimerKind::EraInput(skey) => self.era_input_tick(skey),
            TimerKind::StampedInput(skey) => self.stamped_input_tick(skey),
            TimerKind::Heartbeat => self.heartbeat(),
            TimerKind::HardStop => {
                if let Some(v) = self.shutdown.on_hard_stop() {
                    crate::log_warn!("processes still not reaped; killing them");
                    self.apply_shutdown(v);
                }
            }
        }
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
        self.metrics
            .render(&mut out, &gauges, self.listen.clients as u64);
        era::render_metrics(&mut out, &self.ups);
        crate::logging::render_metrics(&mut out);
        crate::io::orphans::render_metrics(&mut out);
        if let Some(o) = &self.oauth {
            o.render(&mut out);
        }
        out
    }
}

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
            crate::log_info!("all processes reaped; exiting");
            return Some(0);
        }
        None
    }

    fn has_more(&self) -> bool {
        !self.work.more_procs.is_empty()
            || !self.work.to_drive.is_empty()
            || !self.work.to_end.is_empty()
            || self.http_has_backlog()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.ups
            .iter()
            .filter_map(Upstream::next_deadline)
            .chain(self.oauth_deadline())
            .min()
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
        for conn in std::mem::take(&mut self.work.more_procs) {
            self.proc_read(conn, false);
            self.proc_stderr(conn);
        }
        // HTTP connections whose read budget ran out, or whose client
        // caught up after a pause.
        for u in 0..self.ups.len() {
            if self.ups[u].is_http() {
                self.http_backlog(u);
            }
        }
    }

    fn on_timer(&mut self, t: TimerKind) {
        self.handle_timer(t);
    }

    fn after_timers(&mut self) {
        self.oauth_poll();
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

/// A relay error as a JSON-RPC response body.
fn error_body(id: Option<&Id>, err: RelayError, message: &str, upstream: &str) -> Vec<u8> {
    jsonrpc::error_response(
        id,
        err.code(),
        message,
        crate::proto::object::object([
            ("kind", serde_json::Value::from(err.kind())),
            ("upstream", serde_json::Value::from(upstream)),
        ]),
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
