//! `reverse --url`: 2026-07-28 clients in front of a handshake-era
//! upstream (docs/eras.md).
//!
//! A 2026-07-28 request has no session; a handshake-era server wants one.
//! The relay keeps its own upstream sessions, one per client identity (the
//! envelope's `clientInfo` and `clientCapabilities`, what the server would
//! have been told by `initialize`), at most [`MAX_BRIDGES`] per upstream:
//!
//! ```text
//!  (none) ── a request of a new identity ──▶ Initializing { held } ── the relay's initialize answered ──▶ Ready
//!                                               │ refused or failed: held requests fail, the bridge goes
//!  Ready ── 404 on a POST or the GET, or a GET stream that cannot be restored ──▶ (none):
//!          the next request initializes again
//!  Ready ── evicted (past MAX_BRIDGES) or the relay exits ──▶ DELETE ──▶ (none)
//! ```
//!
//! Which era the upstream speaks is the upstream's [`Verdict`]
//! (`--upstream-protocol`; `auto` probes once with the relay's own
//! `server/discover`, a 4xx answer or an error naming no modern revision
//! meaning handshake era). While the probe is out, 2026-07-28 requests wait
//! (at most [`MAX_WAITING`]; past it a request is answered `upstream_busy`).
//! On a Ready bridge, `server/discover` is answered from the
//! `InitializeResult`, other requests lose the reserved `_meta` keys and go
//! with the bridge's session id, and their results gain `resultType` and the
//! cache hints, under an id of the relay's own (`bridge_calls.rs`, which
//! also carries the server's requests as `InputRequiredResult` rounds, its
//! deferred replies and its notifications). A ready bridge holds its
//! session's GET stream (`bridge_get.rs`) and its identity's listens
//! (`bridge_listen.rs`). A client closing its request's stream becomes
//! `notifications/cancelled` on the bridge session. At exit every ready
//! bridge is ended with DELETE, the exit waiting at most
//! [`EXIT_DELETE_WAIT`] for the answers.

use std::collections::VecDeque;
use std::time::Instant;

use serde_json::Value;

use super::bridge_calls::BridgedCall;
use super::*;
use crate::mcp::era::listen::{Limits as ListenLimits, Listeners, ServerCaps};
use crate::mcp::era::loglevel::{self, Level};
use crate::mcp::era::stamp::strip_modern;
use crate::mcp::era::verdict::{PROBE_TIMEOUT, Settled, Verdict, Want};
use crate::mcp::era::{Era, convert};
use crate::proto::jsonrpc::{Kind, Message};

/// Relay-owned upstream sessions per upstream (one per client identity);
/// past it the least recently used is ended (DELETE) to make room.
pub(super) const MAX_BRIDGES: usize = 64;
/// 2026-07-28 requests waiting for the probe, or for one bridge's
/// `initialize`; past it a request is answered `upstream_busy`.
pub(super) const MAX_WAITING: usize = 64;

/// How long the relay's exit waits for the DELETEs ending its relay-owned
/// sessions; past it they are abandoned (the server's idle timeout ends
/// those sessions).
pub(super) const EXIT_DELETE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

const PROBE_ID: &str = "mcp-relay-era-probe";

type Waiting = VecDeque<(SKey, Vec<u8>, Option<Id>)>;

enum BridgeState {
    Initializing {
        held: Waiting,
    },
    Ready {
        session_id: Option<String>,
        version: String,
        init: Value,
        /// The session's GET stream (`bridge_get.rs`), boxed: the state is
        /// kept small while initializing.
        get: Box<BridgeGet>,
        /// The identity's open `subscriptions/listen` requests, by their
        /// stateless session (`bridge_listen.rs`).
        listens: Box<Listeners<SKey>>,
    },
}

/// A ready bridge's GET stream: the server's messages outside a call's
/// response (its requests, deferred replies, notifications).
pub(super) struct BridgeGet {
    pub(super) stream: SseStream,
    /// The GET exchange, while one is out.
    pub(super) ex: Option<ExId>,
    /// Reconnect no sooner than this (the stream's backoff).
    pub(super) wait: Option<Instant>,
}

struct Bridge {
    state: BridgeState,
    /// The `Mcp-Session-Id` of the `initialize` answer's head.
    session_head: Option<String>,
    last_used: Instant,
}

/// One upstream's era verdict and relay-owned sessions.
pub(super) struct Bridges {
    pub(super) verdict: Verdict,
    waiting: Waiting,
    sessions: HashMap<String, Bridge>,
    seq: u64,
    /// Bridged requests out, by their id at the server (`bridge_calls.rs`).
    pub(super) calls: HashMap<Id, Call>,
    /// The stateless session of each open leg → its call's id at the server.
    pub(super) by_skey: HashMap<SKey, Id>,
    pub(super) call_seq: u64,
    /// The server's requests carried to the clients as input rounds, per
    /// bridge key (a `requestState` is known only to its own identity).
    pub(super) inputs: HashMap<String, crate::mcp::era::input::Bridge<()>>,
    /// Stateless sessions holding an open listen: (bridge key, listen id).
    pub(super) listening: HashMap<SKey, (String, Id)>,
    log: RateLog,
    pub(super) input_log: RateLog,
    /// The relay is exiting: until when it waits for the DELETEs of its
    /// relay-owned sessions, and those exchanges.
    exit: Option<(Instant, Vec<ExId>)>,
}

/// A bridged request out on bridge `key`, under the relay's own id.
pub(super) struct Call {
    pub(super) key: String,
    /// The client leg answers go to: its stateless session and its id
    /// (None between input rounds, until the client's retry).
    pub(super) leg: Option<(SKey, Id)>,
    /// Its `io.modelcontextprotocol/logLevel` (None: it asked for no logs).
    pub(super) log: Option<Level>,
    /// A `tools/call`, `prompts/get` or `resources/read` (may be answered
    /// with an input round).
    pub(super) carries_input: bool,
    /// Its POST exchange, while it is out.
    pub(super) ex: Option<ExId>,
}

impl Bridges {
    pub(super) fn new(knob: crate::mcp::era::UpstreamProtocol) -> Bridges {
        Bridges {
            verdict: Verdict::new(knob, PROBE_TIMEOUT, Instant::now()),
            waiting: VecDeque::new(),
            sessions: HashMap::new(),
            seq: 0,
            calls: HashMap::new(),
            by_skey: HashMap::new(),
            call_seq: 0,
            inputs: HashMap::new(),
            listening: HashMap::new(),
            log: RateLog::default(),
            input_log: RateLog::default(),
            exit: None,
        }
    }

    /// Until when the exit waits for the DELETEs of relay-owned sessions.
    pub(super) fn exit_deadline(&self) -> Option<Instant> {
        self.exit.as_ref().map(|(at, _)| *at)
    }

    /// The nearest instant the bridges need a poll: the exit's wait, a GET
    /// stream's reconnection, the input bridge's wait for a retry.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let gets = self.sessions.values().filter_map(|b| match &b.state {
            BridgeState::Ready { get, .. } => get.wait,
            BridgeState::Initializing { .. } => None,
        });
        let inputs = self.inputs.values().filter_map(|i| i.next_deadline());
        gets.chain(self.exit_deadline()).chain(inputs).min()
    }

    /// The session id and version of ready bridge `key`.
    pub(super) fn session_of(&self, key: &str) -> Option<(Option<String>, String)> {
        match &self.sessions.get(key)?.state {
            BridgeState::Ready {
                session_id,
                version,
                ..
            } => Some((session_id.clone(), version.clone())),
            BridgeState::Initializing { .. } => None,
        }
    }

    /// The keys of every bridge.
    pub(super) fn keys(&self) -> Vec<String> {
        self.sessions.keys().cloned().collect()
    }

    /// The listen table of ready bridge `key`.
    pub(super) fn listens_mut(&mut self, key: &str) -> Option<&mut Listeners<SKey>> {
        match &mut self.sessions.get_mut(key)?.state {
            BridgeState::Ready { listens, .. } => Some(listens),
            BridgeState::Initializing { .. } => None,
        }
    }

    /// The GET stream of ready bridge `key`.
    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut BridgeGet> {
        match &mut self.sessions.get_mut(key)?.state {
            BridgeState::Ready { get, .. } => Some(get),
            BridgeState::Initializing { .. } => None,
        }
    }

    /// Keys of the ready bridges whose GET stream waits to reconnect by `now`.
    pub(super) fn gets_due(&self, now: Instant) -> Vec<String> {
        self.sessions
            .iter()
            .filter(|(_, b)| {
                matches!(&b.state, BridgeState::Ready { get, .. } if get.wait.is_some_and(|w| w <= now))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Bridge `key` is gone: its GET exchange, if any, to cancel.
    pub(super) fn remove(&mut self, key: &str) -> Option<ExId> {
        self.inputs.remove(key);
        match self.sessions.remove(key)?.state {
            BridgeState::Ready { get, .. } => get.ex,
            BridgeState::Initializing { .. } => None,
        }
    }
}

/// The identity a bridge is kept for: what `initialize` would have said.
fn identity(env: &crate::mcp::era::classify::Envelope) -> String {
    format!(
        "{}|{}",
        env.client_info
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default(),
        env.capabilities
    )
}

fn base_headers() -> Vec<(String, String)> {
    vec![
        (
            "accept".to_string(),
            "application/json, text/event-stream".to_string(),
        ),
        ("content-type".into(), "application/json".into()),
    ]
}

impl Reverse {
    /// A 2026-07-28 (stateless) request: true when the bridge took it (the
    /// upstream is, or may be, handshake-era); false: it passes as it is.
    pub(super) fn http_bridge_send(
        &mut self,
        skey: SKey,
        line: &[u8],
        env: &Envelope,
        request: Option<&Id>,
    ) -> bool {
        let u = up_of(skey);
        let now = self.now;
        let Some(id) = request else {
            return false;
        };
        let Some(h) = self.ups[u].http_mut() else {
            return false;
        };
        let b = &mut h.bridges;
        if b.verdict.on_tick(now) != Settled::Ignored {
            crate::log_warn!(
                "[{}] no answer to server/discover within {PROBE_TIMEOUT:?}: treating the \
                 upstream as handshake-era",
                self.ups[u].cfg.name
            );
            self.http_bridge_release(u);
        }
        let Some(h) = self.ups[u].http_mut() else {
            return false;
        };
        match h.bridges.verdict.want(now) {
            Want::Speak(Era::Modern) => false,
            Want::Speak(Era::Handshake) => {
                self.http_bridge_route(skey, line, env, id);
                true
            }
            Want::Refuse => {
                self.fail_request(
                    skey,
                    id,
                    RelayError::UpstreamStatus,
                    "The upstream speaks no protocol revision the relay does",
                    json!({}),
                );
                true
            }
            Want::Probe => {
                h.bridges
                    .waiting
                    .push_back((skey, line.to_vec(), Some(id.clone())));
                let probe = convert::discover_request(PROBE_ID);
                let mut headers = base_headers();
                headers
                    .extend(crate::mcp::era::stamper::modern_headers(&probe).unwrap_or_default());
                self.http_bridge_submit(u, skey, probe, headers, Carry::Probe);
                crate::log_info!(
                    "[{}] a 2026-07-28 client: asking the upstream server/discover once to \
                     learn its era",
                    self.ups[u].cfg.name
                );
                true
            }
            Want::Wait => {
                if h.bridges.waiting.len() >= MAX_WAITING {
                    self.http_bridge_busy(u, skey, id);
                } else {
                    h.bridges
                        .waiting
                        .push_back((skey, line.to_vec(), Some(id.clone())));
                }
                true
            }
        }
    }

    fn http_bridge_busy(&mut self, u: usize, skey: SKey, id: &Id) {
        let now = self.now;
        let metric = self.ups[u].metric;
        self.metrics.http_limit(metric, "era_bridge_waiting", 1);
        if let Some(more) = self.ups[u]
            .http_mut()
            .and_then(|h| h.bridges.log.hit(now, 1))
        {
            crate::log_warn!(
                "[{}] {MAX_WAITING} 2026-07-28 requests already wait for the upstream's era or \
                 session; answering upstream_busy ({more} more since the last line)",
                self.ups[u].cfg.name
            );
        }
        self.fail_request(
            skey,
            id,
            RelayError::UpstreamBusy,
            "Too many requests wait for the upstream's protocol era",
            json!({}),
        );
    }

    fn http_bridge_submit(
        &mut self,
        u: usize,
        skey: SKey,
        line: Vec<u8>,
        headers: Vec<(String, String)>,
        carry: Carry,
    ) -> Option<ExId> {
        let now = self.now;
        let reg = self.poll.registry();
        let h = self.ups[u].http_mut()?;
        let req = Request::post(h.url.target.clone(), headers, line);
        let ex = h.client.submit(req, reg, now);
        h.carries.insert(ex, (skey, carry));
        Some(ex)
    }

    /// What waited for the verdict goes again, in order.
    fn http_bridge_release(&mut self, u: usize) {
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let waiting = std::mem::take(&mut h.bridges.waiting);
        self.http_bridge_resend(waiting);
    }

    fn http_bridge_resend(&mut self, waiting: Waiting) {
        for (skey, line, id) in waiting {
            let Some(id) = id else { continue };
            if !self
                .sessions
                .get(&skey)
                .is_some_and(|s| s.inflight.contains(&id))
            {
                continue;
            }
            if let Ok(Message::Single(env)) = jsonrpc::peek(&line)
                && env.kind() == Kind::Request
            {
                self.http_send(skey, &line, &env, Some(&id));
            }
        }
    }

    /// The probe's answer (`data`), or its refusal (`status`).
    pub(super) fn http_probe_answered(&mut self, u: usize, data: Option<&[u8]>) {
        let now = self.now;
        let outcome = match data {
            Some(d) => {
                let v: Value = serde_json::from_slice(d).unwrap_or(Value::Null);
                convert::read_discover(v.get("result"), v.get("error"))
            }
            None => convert::DiscoverOutcome::Legacy,
        };
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let settled = h.bridges.verdict.on_answer(&outcome, now);
        if settled == Settled::Ignored {
            return;
        }
        crate::log_info!(
            "[{}] the upstream is {}",
            self.ups[u].cfg.name,
            match settled {
                Settled::Era(Era::Modern) => "a 2026-07-28 server: modern requests pass",
                Settled::Refuse => "a server of no revision the relay speaks",
                _ => "handshake-era: 2026-07-28 clients are bridged through relay-owned sessions",
            }
        );
        self.http_bridge_release(u);
    }

    /// The probe failed below MCP: no verdict; what waited asks again.
    pub(super) fn http_probe_failed(&mut self, u: usize) {
        if let Some(h) = self.ups[u].http_mut() {
            h.bridges.verdict.on_transport_error();
        }
        self.http_bridge_release(u);
    }

    /// A 2026-07-28 request toward a handshake-era upstream.
    fn http_bridge_route(&mut self, skey: SKey, line: &[u8], env: &Envelope, id: &Id) {
        let u = up_of(skey);
        let now = self.now;
        let (stripped, envelope) = match strip_modern(line) {
            Ok((s, Some(e))) => (s, e),
            _ => {
                self.fail_request(
                    skey,
                    id,
                    RelayError::InvalidRequest,
                    "a 2026-07-28 request needs params._meta with its version and capabilities",
                    json!({}),
                );
                return;
            }
        };
        let key = identity(&envelope);
        let method = env.method().unwrap_or_default().into_owned();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let b = &mut h.bridges;
        match b.sessions.get_mut(&key) {
            None => {
                if b.sessions.len() >= MAX_BRIDGES {
                    self.http_bridge_evict(u, skey);
                }
                let Some(h) = self.ups[u].http_mut() else {
                    return;
                };
                let b = &mut h.bridges;
                b.seq += 1;
                let init_id = format!("mcp-relay-bridge-{}", b.seq);
                let mut held = VecDeque::new();
                held.push_back((skey, line.to_vec(), Some(id.clone())));
                b.sessions.insert(
                    key.clone(),
                    Bridge {
                        state: BridgeState::Initializing { held },
                        session_head: None,
                        last_used: now,
                    },
                );
                let init = convert::initialize_request(
                    &init_id,
                    envelope.client_info.as_ref(),
                    &envelope.capabilities,
                );
                self.http_bridge_submit(u, skey, init, base_headers(), Carry::BridgeInit { key });
            }
            Some(Bridge {
                state: BridgeState::Initializing { held },
                ..
            }) => {
                if held.len() >= MAX_WAITING {
                    self.http_bridge_busy(u, skey, id);
                } else {
                    held.push_back((skey, line.to_vec(), Some(id.clone())));
                }
            }
            Some(Bridge {
                state: BridgeState::Ready { init, .. },
                last_used,
                ..
            }) => {
                *last_used = now;
                if method == "server/discover" {
                    let answer = convert::discover_from_initialize(init).map(|r| {
                        format!(
                            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{r}}}",
                            id.to_json()
                        )
                    });
                    match answer {
                        Some(a) => self.on_session_line(skey, a.as_bytes()),
                        None => self.fail_request(
                            skey,
                            id,
                            RelayError::InvalidReply,
                            "the upstream's initialize result has no capabilities",
                            json!({}),
                        ),
                    }
                    return;
                }
                if method == "subscriptions/listen" {
                    self.http_bridge_listen(skey, &key, id, env.params.map(|p| p.get()));
                    return;
                }
                let call = BridgedCall {
                    key,
                    method,
                    log: loglevel::opt_in(envelope.log_level.as_deref()),
                    params: env.params.map(|p| p.get()),
                };
                self.http_bridge_call(skey, id, &stripped, call);
            }
        }
    }

    /// Ends the least recently used ready bridge (DELETE) to make room.
    fn http_bridge_evict(&mut self, u: usize, skey: SKey) {
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let oldest = h
            .bridges
            .sessions
            .iter()
            .filter(|(_, b)| matches!(b.state, BridgeState::Ready { .. }))
            .min_by_key(|(_, b)| b.last_used)
            .map(|(k, _)| k.clone());
        let Some(key) = oldest else { return };
        self.http_bridge_end_listens(u, &key);
        let reg = self.poll.registry();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let Some(b) = h.bridges.sessions.remove(&key) else {
            return;
        };
        h.bridges.inputs.remove(&key);
        if let BridgeState::Ready { get, .. } = &b.state
            && let Some(ex) = get.ex
        {
            h.client.cancel(ex, reg);
            h.carries.remove(&ex);
        }
        let metric = self.ups[u].metric;
        self.metrics.http_limit(metric, "era_bridge_evicted", 1);
        if let BridgeState::Ready {
            session_id: Some(sid),
            version,
            ..
        } = b.state
        {
            let now = self.now;
            let reg = self.poll.registry();
            if let Some(h) = self.ups[u].http_mut() {
                let headers = vec![
                    ("mcp-session-id".to_string(), sid),
                    ("mcp-protocol-version".to_string(), version),
                ];
                let req = Request::delete(h.url.target.clone(), headers);
                let ex = h.client.submit(req, reg, now);
                h.carries.insert(ex, (skey, Carry::Delete));
            }
        }
        let now = self.now;
        if let Some(more) = self.ups[u]
            .http_mut()
            .and_then(|h| h.bridges.log.hit(now, 1))
        {
            crate::log_info!(
                "[{}] {MAX_BRIDGES} relay-owned sessions for 2026-07-28 clients; ended the least \
                 recently used ({more} more since the last line)",
                self.ups[u].cfg.name
            );
        }
    }

    /// The relay is exiting: every relay-owned session of upstream `u` that
    /// the server named is ended with DELETE, and the exit waits for those
    /// at most [`EXIT_DELETE_WAIT`] (`http_bridge_exit_poll`). The relay's
    /// own requests still out (a probe, an `initialize`) are abandoned.
    pub(in crate::front::reverse) fn http_bridge_exit(&mut self, u: usize) {
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let own: Vec<ExId> = h
            .carries
            .iter()
            .filter(|(_, (_, c))| matches!(c, Carry::Probe | Carry::BridgeInit { .. }))
            .map(|(ex, _)| *ex)
            .collect();
        for ex in own {
            h.client.cancel(ex, reg);
            h.carries.remove(&ex);
        }
        let skey = crate::front::reverse::session::skey_new(u, 0);
        let mut deletes = Vec::new();
        h.bridges.inputs.clear();
        for (_, b) in h.bridges.sessions.drain() {
            if let BridgeState::Ready { get, .. } = &b.state
                && let Some(ex) = get.ex
            {
                h.client.cancel(ex, reg);
                h.carries.remove(&ex);
            }
            if let BridgeState::Ready {
                session_id: Some(sid),
                version,
                ..
            } = b.state
            {
                let headers = vec![
                    ("mcp-session-id".to_string(), sid),
                    ("mcp-protocol-version".to_string(), version),
                ];
                let req = Request::delete(h.url.target.clone(), headers);
                let ex = h.client.submit(req, reg, now);
                h.carries.insert(ex, (skey, Carry::Delete));
                deletes.push(ex);
            }
        }
        if !deletes.is_empty() {
            crate::log_info!(
                "[{}] ending {} relay-owned upstream session(s) (DELETE, waiting at most \
                 {EXIT_DELETE_WAIT:?})",
                self.ups[u].cfg.name,
                deletes.len()
            );
            if let Some(h) = self.ups[u].http_mut() {
                h.bridges.exit = Some((now + EXIT_DELETE_WAIT, deletes));
            }
        }
    }

    /// Past [`EXIT_DELETE_WAIT`], the exit's DELETEs still out are
    /// abandoned, so an upstream that never answers does not hold the exit.
    pub(super) fn http_bridge_exit_poll(&mut self, u: usize) {
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        if h.bridges.exit_deadline().is_none_or(|at| at > now) {
            return;
        }
        let Some((_, deletes)) = h.bridges.exit.take() else {
            return;
        };
        let mut left: u64 = 0;
        for ex in deletes {
            if h.carries.remove(&ex).is_some() {
                h.client.cancel(ex, reg);
                left += 1;
            }
        }
        if left > 0 {
            let metric = self.ups[u].metric;
            self.metrics
                .http_limit(metric, "era_bridge_exit_unconfirmed", left);
            crate::log_warn!(
                "[{}] {left} DELETE(s) of relay-owned sessions unanswered within \
                 {EXIT_DELETE_WAIT:?}; exiting without them",
                self.ups[u].cfg.name
            );
        }
    }

    /// The head of a bridge's `initialize`.
    pub(super) fn http_bridge_init_head(
        &mut self,
        u: usize,
        key: &str,
        status: u16,
        sid: Option<String>,
    ) {
        if (200..300).contains(&status) {
            if let Some(b) = self.ups[u]
                .http_mut()
                .and_then(|h| h.bridges.sessions.get_mut(key))
            {
                b.session_head = sid;
            }
            return;
        }
        self.http_bridge_init_failed(u, key, &format!("HTTP {status}"));
    }

    /// The answer to a bridge's `initialize`.
    pub(super) fn http_bridge_init_answer(&mut self, u: usize, skey: SKey, key: &str, data: &[u8]) {
        let v: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
        let Some(result) = v
            .get("result")
            .filter(|r| r.get("capabilities").is_some_and(Value::is_object))
        else {
            let why = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no InitializeResult")
                .to_string();
            self.http_bridge_init_failed(u, key, &why);
            return;
        };
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(crate::mcp::era::LATEST_HANDSHAKE)
            .to_string();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let Some(b) = h.bridges.sessions.get_mut(key) else {
            return;
        };
        let session_id = b.session_head.take();
        let rng = crate::policy::backoff::Rng::from_os();
        let get = Box::new(BridgeGet {
            stream: SseStream::new(h.reconnect.clone(), rng),
            ex: None,
            wait: None,
        });
        let caps = ServerCaps::from_capabilities(&result["capabilities"]);
        let listens = Box::new(Listeners::new(caps, ListenLimits::default()));
        let held = match std::mem::replace(
            &mut b.state,
            BridgeState::Ready {
                session_id: session_id.clone(),
                version: version.clone(),
                init: result.clone(),
                get,
                listens,
            },
        ) {
            BridgeState::Initializing { held } => held,
            BridgeState::Ready { .. } => VecDeque::new(),
        };
        let mut headers = base_headers();
        if let Some(s) = session_id {
            headers.push(("mcp-session-id".into(), s));
        }
        headers.push(("mcp-protocol-version".into(), version));
        let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec();
        let carry = Carry::BridgePost {
            request: None,
            key: key.to_string(),
        };
        self.http_bridge_submit(u, skey, note, headers, carry);
        crate::log_debug!(
            "[{}] relay-owned session for a 2026-07-28 client identity is ready",
            self.ups[u].cfg.name
        );
        self.http_bridge_want_get(u, key);
        self.http_bridge_resend(held);
    }

    /// A bridge's `initialize` was refused or failed: its held requests fail.
    pub(super) fn http_bridge_init_failed(&mut self, u: usize, key: &str, why: &str) {
        let Some(b) = self.ups[u]
            .http_mut()
            .and_then(|h| h.bridges.sessions.remove(key))
        else {
            return;
        };
        crate::log_warn!(
            "[{}] the relay's initialize for a 2026-07-28 client failed: {why}",
            self.ups[u].cfg.name
        );
        if let BridgeState::Initializing { held } = b.state {
            for (skey, _, id) in held {
                if let Some(id) = id {
                    self.fail_request(
                        skey,
                        &id,
                        RelayError::UpstreamStatus,
                        &format!("The upstream refused the relay's initialize: {why}"),
                        json!({}),
                    );
                }
            }
        }
    }

    /// A bridged POST was refused: 404 means the bridge's session is gone.
    pub(super) fn http_bridge_post_refused(&mut self, u: usize, key: &str, status: u16) {
        if status == 404 {
            self.http_bridge_gone(u, key);
        }
    }

    /// Bridge `key`'s session is gone (404): it is forgotten with its GET
    /// stream; the next request of its identity initializes a new one.
    pub(super) fn http_bridge_gone(&mut self, u: usize, key: &str) {
        self.http_bridge_end_listens(u, key);
        let reg = self.poll.registry();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        if let Some(ex) = h.bridges.remove(key) {
            h.client.cancel(ex, reg);
            h.carries.remove(&ex);
        }
    }
}
