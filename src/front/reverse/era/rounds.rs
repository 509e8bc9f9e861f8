//! A handshake-era server's requests to a 2026-07-28 client (elicitation,
//! sampling, roots) in `reverse -- CMD`, both pools, carried as
//! `InputRequiredResult` rounds by the sans-I/O bridge `mcp::era::input`
//! (the one `forward` uses).
//!
//! A modern request is a stateless session of its own: its one call is the
//! only one a server request can belong to. The session pool's process
//! serves that session alone; in the shared pool the mux gives a server
//! request to the one session with requests in flight on the process (else
//! it answers the server with an error itself), and this module takes it
//! only when that session is a bridged modern one whose client declared the
//! capability the method needs (`Inputs`); otherwise the relay answers the
//! server with an error and counts it (`unattributable`): it never goes to
//! another session.
//!
//! When the server asks, the call's current leg is answered
//! `input_required` and the session stays open (the call is still in
//! flight at the server) until the call is done or given up. The client's
//! retry is a new POST with no session: its `requestState`, a token the
//! relay minted (`mcp-relay.<session>.<random>`), names the session, and it
//! becomes that session's next leg (never sent to the process). Its
//! `inputResponses` answer the server's requests, as the session's own
//! replies (through the mux in the shared pool). A `requestState` the relay
//! did not mint passes to the server as it is (a modern server's own).
//!
//! Bounds: `input::Limits` per session (one call; 16 requests waiting in
//! it, 32 rounds, 60 s for the retry: then the call is cancelled at the
//! server), and at most [`MAX_WAITING_PER_PROCESS`] calls waiting for a
//! retry per process (past it the server's request is refused).

use super::*;
use crate::mcp::era::input::{self, Asked, Out, Retried};
use crate::mcp::era::loglevel;
use crate::reactor::timer::TimerId;

/// Calls of one process that may wait for their client's retry at once; a
/// server request that would make one more is answered with an error.
pub(in crate::front::reverse) const MAX_WAITING_PER_PROCESS: usize = 64;

/// Prefix of the `requestState` tokens the relay mints.
const TOKEN_PREFIX: &str = "mcp-relay.";

/// Finds [`TOKEN_PREFIX`] in a request's `params`: built once (a searcher
/// made per call cost some 800 instructions of every modern `tools/call`).
static FIND_TOKEN_PREFIX: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(TOKEN_PREFIX));

/// The input requests a modern client declared it can run, from its
/// envelope's `clientCapabilities`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(in crate::front::reverse) struct Inputs(u8);

impl Inputs {
    const ELICITATION: u8 = 1;
    const SAMPLING: u8 = 2;
    const ROOTS: u8 = 4;

    /// From a `clientCapabilities` value.
    pub(in crate::front::reverse) fn from_capabilities(caps: &serde_json::Value) -> Inputs {
        let mut bits = 0;
        for (key, bit) in [
            ("elicitation", Self::ELICITATION),
            ("sampling", Self::SAMPLING),
            ("roots", Self::ROOTS),
        ] {
            if caps.get(key).is_some_and(|v| !v.is_null()) {
                bits |= bit;
            }
        }
        Inputs(bits)
    }

    /// From a `clientCapabilities` text (nothing parsed but its members'
    /// extents: the hot path of the shared pool). Scanned by the relay
    /// (the text was validated where the request was read), parsed when a
    /// name has escapes; either way a member that is `null` declares
    /// nothing and the last of duplicates counts.
    fn from_raw(caps: &str) -> Inputs {
        const NAMES: [&str; 3] = ["elicitation", "sampling", "roots"];
        let scanned = crate::mcp::shared::object_members(caps).map(|members| {
            let mut found = [None; 3];
            for (name, value) in members {
                if let Some(i) = NAMES.iter().position(|n| *n == name) {
                    found[i] = Some(value);
                }
            }
            found
        });
        let found = match scanned {
            Some(found) => found,
            None => match crate::mcp::shared::members(caps, NAMES) {
                Some(found) => found.map(|v| v.map(serde_json::value::RawValue::get)),
                None => return Inputs::default(),
            },
        };
        let mut bits = 0;
        for (v, bit) in found
            .iter()
            .zip([Self::ELICITATION, Self::SAMPLING, Self::ROOTS])
        {
            if v.is_some_and(|v| v != "null") {
                bits |= bit;
            }
        }
        Inputs(bits)
    }

    fn allows(self, method: &str) -> bool {
        let bit = match method {
            "elicitation/create" => Self::ELICITATION,
            "sampling/createMessage" => Self::SAMPLING,
            "roots/list" => Self::ROOTS,
            _ => return false,
        };
        self.0 & bit != 0
    }
}

/// What a modern request's `params._meta` text declares: the input
/// requests its client can run and the log level it opted in to, in one
/// read of `_meta` (the hot path of the shared pool).
pub(in crate::front::reverse) fn read_meta(meta: &str) -> (Inputs, Option<loglevel::Level>) {
    let Some([caps, level]) = crate::mcp::shared::members(
        meta,
        [
            "io.modelcontextprotocol/clientCapabilities",
            loglevel::META_LOG_LEVEL,
        ],
    ) else {
        return (Inputs::default(), None);
    };
    (
        caps.map(|c| Inputs::from_raw(c.get())).unwrap_or_default(),
        level.and_then(loglevel::parse_raw),
    )
}

/// What a whole modern request (the full path) declared in its envelope:
/// the input requests it can run and the log level it opted in to.
pub(in crate::front::reverse) fn read_envelope(line: &[u8]) -> (Inputs, Option<loglevel::Level>) {
    let v = serde_json::from_slice::<serde_json::Value>(line).ok();
    let meta = v.as_ref().and_then(|v| v.pointer("/params/_meta"));
    let inputs = meta
        .and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities"))
        .map(Inputs::from_capabilities)
        .unwrap_or_default();
    (inputs, loglevel::opted_in_value(meta))
}

/// What a bridged stateless session knows of its call, and its input
/// rounds once the server asked something (`SessionEra::Bridged`).
#[derive(Debug, Default)]
pub(in crate::front::reverse) struct Bridging {
    /// What its request's envelope declared.
    declared: Declared,
    /// Its request may be answered `input_required` (`tools/call`,
    /// `prompts/get`, `resources/read`).
    carries: bool,
    rounds: Option<Box<Rounds>>,
}

pub(in crate::front::reverse) struct Rounds {
    /// The call's id (the session's, as the client wrote it first).
    call: Id,
    bridge: input::Bridge<()>,
    /// Fires at the bridge's next deadline (the client's retry is late).
    timer: Option<TimerId>,
}

impl std::fmt::Debug for Rounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rounds")
            .field("call", &self.call)
            .field("entries", &self.bridge.len())
            .finish()
    }
}

/// What a modern request's envelope declared: the input requests its
/// client can run and the log level it opted in to. Read when first asked
/// for (a server request or a log message during the call; most calls have
/// neither), so until then `_meta`'s text is kept as the client sent it
/// (a copy of part of a request body, so bounded by the body's cap, and
/// freed with the session). One move: `Unread ──first asked──▶ Read`.
#[derive(Debug)]
pub(in crate::front::reverse) enum Declared {
    /// `params._meta` as sent, not read yet.
    Unread(Box<str>),
    Read {
        inputs: Inputs,
        /// The log level its request opted in to (`mcp::era::loglevel`).
        log: Option<loglevel::Level>,
    },
}

impl Default for Declared {
    fn default() -> Self {
        Declared::Read {
            inputs: Inputs::default(),
            log: None,
        }
    }
}

impl Declared {
    /// What was declared, read now if it was not yet (text that is not
    /// JSON declares nothing).
    pub(in crate::front::reverse) fn get(&mut self) -> (Inputs, Option<loglevel::Level>) {
        if let Declared::Unread(text) = self {
            // A copy of `_meta` as validated with its request; text that
            // is not an object has no members and declares nothing.
            let (inputs, log) = read_meta(text);
            *self = Declared::Read { inputs, log };
        }
        match self {
            Declared::Read { inputs, log } => (*inputs, *log),
            Declared::Unread(_) => (Inputs::default(), None),
        }
    }
}

impl Bridging {
    pub(in crate::front::reverse) fn new(
        inputs: Inputs,
        log: Option<loglevel::Level>,
        method: &str,
    ) -> Bridging {
        Bridging {
            declared: Declared::Read { inputs, log },
            carries: input::carries_input(method),
            rounds: None,
        }
    }

    /// A bridged request whose `params._meta` is `meta` (its text kept,
    /// read when needed: `Declared`).
    pub(in crate::front::reverse) fn unread(meta: &str, method: &str) -> Bridging {
        Bridging {
            declared: Declared::Unread(meta.into()),
            carries: input::carries_input(method),
            rounds: None,
        }
    }

    pub(in crate::front::reverse) fn log(&mut self) -> Option<loglevel::Level> {
        self.declared.get().1
    }

    /// No input round was ever opened: ending the session has nothing to
    /// give up at the server (`era_session_ending` would do nothing).
    pub(in crate::front::reverse) fn quiet(&self) -> bool {
        self.rounds.is_none()
    }

    /// A call of this session is waiting for input (the session must stay).
    pub(in crate::front::reverse) fn waiting(&self) -> bool {
        self.rounds.as_ref().is_some_and(|r| !r.bridge.is_empty())
    }
}

/// The session `skey` named by a `requestState` the relay minted; `None`
/// for any other value (a modern server's own state).
fn token_session(state: &str) -> Option<Option<SKey>> {
    let rest = state.strip_prefix(TOKEN_PREFIX)?;
    let hex = rest.split('.').next().unwrap_or_default();
    Some(SKey::from_str_radix(hex, 16).ok())
}

impl Reverse {
    fn bridging_mut(&mut self, skey: SKey) -> Option<&mut Bridging> {
        match &mut self.sessions.get_mut(&skey)?.era {
            SessionEra::Bridged(b) => Some(b),
            _ => None,
        }
    }

    /// Whether a stateless session must stay open for its client's retry.
    pub(in crate::front::reverse) fn era_waiting_input(&self, skey: SKey) -> bool {
        matches!(self.sessions.get_inline(&skey).map(|s| &s.era), Some(SessionEra::Bridged(b)) if b.waiting())
    }

    /// A server request for a 2026-07-28 listen (the relay's subscribe for
    /// it in flight): no call of it can carry the request as an input
    /// round, and its client cannot answer one on the listen's stream. The
    /// server is answered with an error at once (counted as
    /// `unattributable`), as for any request no call can carry; a `ping`
    /// with `{}`.
    fn era_refuse_on_listen(&mut self, skey: SKey, line: &[u8]) -> bool {
        let Ok(Message::Single(env)) = jsonrpc::peek(line) else {
            return false;
        };
        let (Kind::Request, Some(sid)) = (env.kind(), env.id()) else {
            return false;
        };
        // MCP: ping must be answered promptly; the relay is alive.
        let b = if env.method_is("ping") {
            // The id as the server wrote it.
            let spelled = env
                .id
                .map_or_else(|| sid.to_json(), |r| r.get().to_string());
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{spelled},\"result\":{{}}}}").into_bytes()
        } else {
            self.ups[up_of(skey)].era.input_unattributable += 1;
            jsonrpc::error_response(
                Some(&sid),
                -32603,
                "a 2026-07-28 listen cannot carry a server request",
                serde_json::Value::Null,
            )
        };
        self.era_to_server(skey, &b);
        true
    }

    /// A request from the server for session `skey` (its own process's in
    /// the session pool, the mux's pick in the shared one). True when taken
    /// here: carried to the client as an input round, or answered with an
    /// error by the relay. False: not a bridged modern session's, or not an
    /// input request; it goes the usual way.
    pub(in crate::front::reverse) fn era_server_request(
        &mut self,
        skey: SKey,
        line: &[u8],
    ) -> bool {
        if matches!(
            self.sessions.get(&skey).map(|s| &s.era),
            Some(SessionEra::Listening(_))
        ) {
            return self.era_refuse_on_listen(skey, line);
        }
        let Some(b) = self.bridging_mut(skey) else {
            return false;
        };
        let Ok(Message::Single(env)) = jsonrpc::peek(line) else {
            return false;
        };
        let (Kind::Request, Some(sid), Some(method)) = (env.kind(), env.id(), env.method()) else {
            return false;
        };
        if !input::is_input_method(&method) {
            return false;
        }
        let (inputs, carries, call) = (
            b.declared.get().0,
            b.carries,
            b.rounds.as_ref().map(|r| r.call.clone()),
        );
        let u = up_of(skey);
        // Its call: the one the rounds are about, else the session's one
        // request, if it is still waiting and may carry input.
        let call = call.or_else(|| {
            let s = self.sessions.get(&skey)?;
            (carries && s.inflight.len() == 1)
                .then(|| s.inflight.iter().next().map(|(id, _)| id.clone()))
                .flatten()
        });
        let waiting_here = self.waiting_on_process(skey);
        let refusal = match &call {
            None => Some("no call of the 2026-07-28 client can carry this request"),
            Some(_) if !inputs.allows(&method) => {
                Some("the 2026-07-28 client did not declare the capability this request needs")
            }
            Some(_) if waiting_here >= MAX_WAITING_PER_PROCESS => {
                Some("too many calls of this process wait for client input")
            }
            Some(_) => None,
        };
        let token = match (refusal, crate::mcp::session::new_session_id()) {
            (Some(_), _) => None,
            (None, Ok(random)) => Some(format!("{TOKEN_PREFIX}{skey:x}.{random}")),
            (None, Err(e)) => {
                crate::log_warn!("random request state unavailable ({e})");
                None
            }
        };
        let (Some(call), Some(token)) = (call, token) else {
            self.ups[u].era.input_unattributable += 1;
            if let Some(n) = self.drop_log.check(self.now) {
                crate::log_warn!(
                    "[{}] server request {method} refused: {}{}",
                    self.ups[u].cfg.name,
                    refusal.unwrap_or("no random request state"),
                    if n > 0 {
                        format!(" ({n} similar lines suppressed)")
                    } else {
                        String::new()
                    }
                );
            }
            let why = refusal.unwrap_or("the relay cannot make a request state");
            let b = jsonrpc::error_response(Some(&sid), -32603, why, serde_json::Value::Null);
            self.era_to_server(skey, &b);
            return true;
        };
        let params: Option<serde_json::Value> =
            env.params.and_then(|p| serde_json::from_str(p.get()).ok());
        let now = self.now;
        let Some(b) = self.bridging_mut(skey) else {
            return false;
        };
        let r = b.rounds.get_or_insert_with(|| {
            Box::new(Rounds {
                call: call.clone(),
                bridge: input::Bridge::new(input::Limits::default()),
                timer: None,
            })
        });
        let asked = r.bridge.on_server_request(
            &(),
            &call,
            &call,
            sid,
            &method,
            params.as_ref(),
            now,
            || token,
        );
        match asked {
            Asked::Carried(out) | Asked::Refused(out) => self.era_apply(skey, out),
            Asked::NotInput => return false,
        }
        true
    }

    /// Calls waiting for input on the process of session `skey`.
    fn waiting_on_process(&self, skey: SKey) -> usize {
        let Some(conn) = self.sessions.get(&skey).and_then(|s| s.binding.conn()) else {
            return 0;
        };
        match self.procs.get(&conn).map(|p| &p.kind) {
            Some(ProcKind::Shared { sessions, .. }) => sessions
                .iter()
                .filter(|k| self.era_waiting_input(**k))
                .count(),
            _ => usize::from(self.era_waiting_input(skey)),
        }
    }

    /// The server answered request `id` of session `skey`: true when it was
    /// a call the rounds hold (its result went to the open leg, or waits
    /// for the retry).
    pub(in crate::front::reverse) fn era_call_result(
        &mut self,
        skey: SKey,
        id: &Id,
        msg: &[u8],
    ) -> bool {
        if self.era_listen_reply(skey, id) {
            return true;
        }
        let Some(r) = self.bridging_mut(skey).and_then(|b| b.rounds.as_mut()) else {
            return false;
        };
        match r.bridge.on_server_response(id, msg) {
            Some(out) => {
                self.era_apply(skey, out);
                true
            }
            None => false,
        }
    }

    /// Leg `id` of session `skey` went away (its response timeout): the
    /// call is given up at the server.
    pub(in crate::front::reverse) fn era_leg_gone(&mut self, skey: SKey, id: &Id) {
        let Some(r) = self.bridging_mut(skey).and_then(|b| b.rounds.as_mut()) else {
            return;
        };
        let out = r.bridge.on_client_gone(&(), id);
        self.era_apply(skey, out);
    }

    /// Session `skey` is ending: its calls waiting for input are given up
    /// (their server requests answered with errors, the calls cancelled).
    pub(in crate::front::reverse) fn era_session_ending(&mut self, skey: SKey) {
        self.era_listen_ending(skey);
        let Some(mut r) = self.bridging_mut(skey).and_then(|b| b.rounds.take()) else {
            return;
        };
        if let Some(t) = r.timer.take() {
            self.timers.cancel(t);
        }
        let out = r.bridge.drop_owner(&());
        self.count_input(skey, r.bridge.stats);
        for line in out.to_server {
            self.era_to_server(skey, &line);
        }
    }

    /// The rounds' timer: a client that did not retry in time.
    pub(in crate::front::reverse) fn era_input_tick(&mut self, skey: SKey) {
        let now = self.now;
        let Some(r) = self.bridging_mut(skey).and_then(|b| b.rounds.as_mut()) else {
            return;
        };
        r.timer = None;
        let out = r.bridge.on_tick(now);
        self.era_apply(skey, out);
    }

    /// A POST whose `requestState` the relay minted: the retry of a call
    /// waiting for input, answered on that call's session, and only for
    /// the caller that made the call (`token`: its bearer credential's
    /// subject, as `find_session` checks for a handshake-era session; a
    /// state shown by anyone else is unknown to them). False: not such a
    /// retry (it goes on as any stateless request).
    #[allow(clippy::too_many_arguments)]
    pub(in crate::front::reverse) fn era_retry(
        &mut self,
        tok: Token,
        u: usize,
        token: Option<usize>,
        id: &Id,
        env: &Envelope,
        fields: Option<&ParamFields>,
        ka: bool,
    ) -> bool {
        let Some(p) = env.params else { return false };
        if !env.method().is_some_and(|m| input::carries_input(&m)) {
            return false;
        }
        let named = match fields.map(|f| f.request_state) {
            // The front's scan found it (or found none): a value written
            // without escapes names a relay token only as it stands.
            Some(Some(raw)) if !raw.contains('\\') => serde_json::from_str::<&str>(raw)
                .ok()
                .and_then(token_session),
            Some(None) => None,
            _ => {
                if FIND_TOKEN_PREFIX.find(p.get().as_bytes()).is_none() {
                    return false;
                }
                let Ok(params) = serde_json::from_str::<serde_json::Value>(p.get()) else {
                    return false;
                };
                params
                    .get("requestState")
                    .and_then(|s| s.as_str())
                    .and_then(token_session)
            }
        };
        let Some(named) = named else {
            return false;
        };
        // A retry the relay takes (rare): its answers are read whole.
        let Ok(params) = serde_json::from_str::<serde_json::Value>(p.get()) else {
            return false;
        };
        let skey = named.filter(|k| {
            up_of(*k) == u
                && self.sessions.get(k).is_some_and(|s| s.token == token)
                && self.era_waiting_input(*k)
        });
        let tracked = skey.filter(|k| self.track(*k, id.clone(), env, ReplyTo::Client(tok)));
        let Some(skey) = tracked else {
            let b = jsonrpc::error_response(
                Some(id),
                crate::mcp::era::INVALID_PARAMS,
                "unknown or expired requestState",
                serde_json::Value::Null,
            );
            self.respond_json(tok, 200, &b, ka, None);
            return true;
        };
        if let Some(c) = self.client(tok) {
            c.set_state(ClientState::Waiting(Exchange::single(
                skey,
                id.clone(),
                ka,
                None,
            )));
        }
        let now = self.now;
        let Some(r) = self.bridging_mut(skey).and_then(|b| b.rounds.as_mut()) else {
            return true;
        };
        match r.bridge.on_client_retry(&(), id, &params, now) {
            Retried::Carried(out) => self.era_apply(skey, out),
            Retried::Unknown => {
                let b = jsonrpc::error_response(
                    Some(id),
                    crate::mcp::era::INVALID_PARAMS,
                    "unknown or expired requestState",
                    serde_json::Value::Null,
                );
                self.answer_bytes(skey, id, b);
            }
        }
        true
    }

    /// Carries out what the bridge decided: lines to the server as the
    /// session's own, answers to the session's legs; then the timer, and
    /// the session's end when nothing is left of it.
    fn era_apply(&mut self, skey: SKey, out: Out) {
        for line in &out.to_server {
            self.era_to_server(skey, line);
        }
        for (leg, line) in out.to_client {
            self.answer_bytes(skey, &leg, line);
        }
        let now = self.now;
        let Some(r) = self.bridging_mut(skey).and_then(|b| b.rounds.as_mut()) else {
            return;
        };
        let old = r.timer.take();
        let next = r.bridge.next_deadline();
        let stats = std::mem::take(&mut r.bridge.stats);
        if let Some(t) = old {
            self.timers.cancel(t);
        }
        self.count_input(skey, stats);
        if let Some(at) = next {
            let t = self.timers.insert(at.max(now), TimerKind::EraInput(skey));
            if let Some(r) = self.bridging_mut(skey).and_then(|b| b.rounds.as_mut()) {
                r.timer = Some(t);
            }
        }
        let done = self
            .sessions
            .get(&skey)
            .is_some_and(|s| s.stateless && s.inflight.is_empty());
        if done && !self.era_waiting_input(skey) {
            self.work.to_end.push(skey);
        }
    }

    fn count_input(&mut self, skey: SKey, stats: input::Stats) {
        let c = &mut self.ups[up_of(skey)].era;
        c.input_rounds += stats.rounds;
        c.input_refused += stats.refused;
        c.input_expired += stats.expired;
        c.input_abandoned += stats.abandoned;
    }

    /// A line to the session's process as if its client sent it (the mux
    /// maps ids in the shared pool).
    /// Written at once: the session may end this turn, and its process
    /// with it (session pool).
    pub(super) fn era_to_server(&mut self, skey: SKey, line: &[u8]) {
        if let Ok(Message::Single(env)) = jsonrpc::peek(line) {
            self.send_up(skey, line, &env, None);
        }
        if let Some(conn) = self.sessions.get(&skey).and_then(|s| s.binding.conn()) {
            self.proc_flush(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_read_from_the_capabilities_a_client_declared() {
        let i =
            Inputs::from_capabilities(&json!({"elicitation": {}, "roots": {"listChanged": true}}));
        assert!(i.allows("elicitation/create"));
        assert!(i.allows("roots/list"));
        assert!(!i.allows("sampling/createMessage"));
        assert!(!i.allows("tools/call"));
        let meta: Box<serde_json::value::RawValue> = serde_json::value::RawValue::from_string(
            r#"{"io.modelcontextprotocol/clientCapabilities":{"sampling":{}},"x":1}"#.into(),
        )
        .unwrap();
        let (i, log) = read_meta(meta.get());
        assert!(i.allows("sampling/createMessage"));
        assert!(!i.allows("elicitation/create"));
        assert_eq!(log, None);
        let none: Box<serde_json::value::RawValue> = serde_json::value::RawValue::from_string(
            r#"{"progressToken":1,"io.modelcontextprotocol/logLevel":"alert"}"#.into(),
        )
        .unwrap();
        assert_eq!(
            read_meta(none.get()),
            (Inputs::default(), Some(loglevel::Level::Alert))
        );
        let nulls: Box<serde_json::value::RawValue> = serde_json::value::RawValue::from_string(
            r#"{"io.modelcontextprotocol/clientCapabilities":{"roots":null,"elicitation":{}}}"#
                .into(),
        )
        .unwrap();
        let (i, _) = read_meta(nulls.get());
        assert!(i.allows("elicitation/create"));
        assert!(!i.allows("roots/list"));
        let line = br#"{"params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{"elicitation":null},"io.modelcontextprotocol/logLevel":"notice"}}}"#;
        assert_eq!(
            read_envelope(line),
            (Inputs::default(), Some(loglevel::Level::Notice))
        );
    }

    /// The front's scan of `_meta` and the parser read the same envelope.
    #[test]
    fn declared_capabilities_and_level_read_from_meta_text() {
        let caps = "io.modelcontextprotocol/clientCapabilities";
        let level = loglevel::META_LOG_LEVEL;
        let cases = [
            format!(r#"{{"{caps}":{{"sampling":{{}}}},"x":1}}"#),
            format!(r#"{{"{caps}":{{"roots":null,"elicitation":{{}}}},"{level}":"alert"}}"#),
            // The last of duplicates counts, at both levels.
            format!(r#"{{"{caps}":{{"roots":{{}}}},"{caps}":{{"sampling":{{}}}}}}"#),
            format!(
                r#"{{"{caps}":{{"roots":{{}},"roots":null}},"{level}":"x","{level}":"debug"}}"#
            ),
            // Escaped names inside the capabilities: parsed.
            format!(r#"{{"{caps}":{{"r\u006fots":{{}}}}}}"#),
            // Values of other types, whitespace.
            format!(r#"{{ "{caps}" : [ ] , "{level}" : 7 }}"#),
            format!(
                r#"{{"{caps}":{{ "elicitation" : {{ "form" : {{}} }} }},"{level}":"de\u0062ug"}}"#
            ),
            r#"{}"#.to_string(),
        ];
        for text in &cases {
            // Kept unread and read when asked: the same as a read at once.
            let mut d = Declared::Unread(text.as_str().into());
            assert_eq!(d.get(), read_meta(text), "{text}");
        }
        let (i, _) = read_meta(&cases[4]);
        assert!(i.allows("roots/list"));
        let (i, l) = read_meta(&cases[3]);
        assert!(!i.allows("roots/list"));
        assert_eq!(l, Some(loglevel::Level::Debug));
    }

    #[test]
    fn what_an_envelope_declared_is_read_once_when_first_asked() {
        let text = r#"{"io.modelcontextprotocol/clientCapabilities":{"elicitation":{}},"io.modelcontextprotocol/logLevel":"notice","progressToken":3}"#;
        let want = (
            Inputs::from_capabilities(&json!({"elicitation": {}})),
            Some(loglevel::Level::Notice),
        );
        let mut d = Declared::Unread(text.into());
        assert_eq!(d.get(), want);
        assert!(matches!(d, Declared::Read { .. }), "{d:?}");
        assert_eq!(d.get(), want);
        // Text that is not JSON declares nothing (it cannot happen: the
        // text was part of a validated request).
        let mut bad = Declared::Unread("{not json".into());
        assert_eq!(bad.get(), (Inputs::default(), None));
        assert!(matches!(bad, Declared::Read { .. }), "{bad:?}");
        // A bridged call read later knows what one read at once knows.
        let mut later = Bridging::unread(text, "tools/call");
        let mut now = Bridging::new(want.0, want.1, "tools/call");
        assert_eq!(later.log(), now.log());
        assert_eq!(later.declared.get(), now.declared.get());
        assert!(later.carries && now.carries);
        assert!(!Bridging::unread(text, "tools/list").carries);
    }

    #[test]
    fn only_tokens_the_relay_minted_name_a_session() {
        assert_eq!(token_session("opaque-from-a-server"), None);
        assert_eq!(token_session("mcp-relay.1f.abcd"), Some(Some(0x1f)));
        assert_eq!(token_session("mcp-relay.zz.abcd"), Some(None));
        assert_eq!(token_session("mcp-relay."), Some(None));
    }
}
