//! 2026-07-28 (modern) clients in front of stdio processes, both pool
//! modes (issue 13, docs/eras.md "Per mode").
//!
//! A modern request has no session: it is leased a process on its own
//! (`routes::stateless_post`). What the process speaks decides what the
//! relay does with it:
//!
//! - **Shared pool, a process the relay initialized** (handshake era):
//!   `server/discover` is answered from the cached `InitializeResult`
//!   (`convert::discover_from_initialize`); other requests lose the
//!   reserved `_meta` keys (`stamp::strip_modern`) and go through the mux;
//!   results gain `resultType` and the cache hints (`stamp::modernize`).
//!   The process keeps the capabilities the relay declared at its
//!   initialize (none): a server that honours them sends no elicitation,
//!   sampling or roots request.
//! - **Session pool**: the process is fresh. The upstream's era verdict
//!   (`--upstream-protocol`, `era::verdict`) says how to reach it: modern,
//!   the request goes as it is; handshake, the relay initializes the
//!   process with the client's info and capabilities from the envelope,
//!   then bridges as above; unknown (`auto`, first time), the relay probes
//!   the process with `server/discover` and remembers the answer for the
//!   upstream. The client's request is tracked (its response timer runs)
//!   from the moment it is granted the process, so the probe and the
//!   initialize count against `--response-timeout`.
//!
//! A session's era state moves only along (a held request leaves its state
//! by going back to `Plain`, whence it is sent or held again):
//!
//! ```text
//! Plain ──probe sent──▶ Probing ──answered──▶ Plain ──handshake──▶ Initializing
//!   ▲                                                                  │
//!   └──────────────────────── initialized ◀────────────────────────────┘
//! Plain ──request sent stripped (handshake-era process)──▶ Bridged
//! ```

use super::*;
use crate::mcp::era::classify::Envelope as ModernEnvelope;
use crate::mcp::era::convert::{self, DiscoverOutcome};
use crate::mcp::era::stamp::{self, TowardHandshake};
use crate::mcp::era::verdict::{Settled, Want};
use crate::mcp::era::{Era, MODERN_VERSION, UNSUPPORTED_PROTOCOL_VERSION};

mod listening;
pub(super) use stamped_input::StampedInput;
pub(super) use stamped_subs::StampedSubs;
mod rounds;
mod session_pool;
mod shared_pool;
mod stamped;
mod stamped_input;
mod stamped_subs;

/// Id of the relay's `server/discover` probe to a session-mode process
/// (outside any client's: the client's request is not sent before it is
/// answered).
const PROBE_ID: &str = "mcp-relay-probe";

/// A modern request waiting for its process to be probed or initialized.
#[derive(Debug)]
pub(super) struct Held {
    line: Vec<u8>,
    id: Id,
    method: String,
}

/// Where a session stands with the era of its upstream (see the module doc).
#[derive(Debug, Default)]
pub(super) enum SessionEra {
    /// Messages pass as they are (a handshake-era session, or a modern
    /// request to a modern server).
    #[default]
    Plain,
    /// The relay's probe is out on the session's process.
    Probing(Held),
    /// The relay's `initialize` is out on the session's process.
    Initializing(Held),
    /// A modern client's request to a handshake-era server: sent without
    /// the envelope; its result is made modern. The server's requests to
    /// the client become input rounds of its call (`rounds.rs`).
    Bridged(rounds::Bridging),
    /// A modern client's `subscriptions/listen` on a handshake-era process:
    /// held open by the relay, its URIs subscribed (`listening.rs`).
    Listening(Box<listening::Listening>),
    /// A handshake-era session's `initialize` sent to a process whose era
    /// is not known yet, kept until answered: a -32022 refusal makes the
    /// relay answer it from `server/discover` (`stamped.rs`).
    Handshaking(Held),
}

impl SessionEra {
    pub(super) fn name(&self) -> &'static str {
        match self {
            SessionEra::Plain => "plain",
            SessionEra::Probing(_) => "probing",
            SessionEra::Initializing(_) => "initializing",
            SessionEra::Bridged(_) => "bridged",
            SessionEra::Listening(_) => "listening",
            SessionEra::Handshaking(_) => "handshaking",
        }
    }

    /// Ending a session in this state has nothing to undo at the server:
    /// no listen, no input round, nothing held (`end_answered`).
    pub(super) fn quiet(&self) -> bool {
        match self {
            SessionEra::Plain => true,
            SessionEra::Bridged(b) => b.quiet(),
            _ => false,
        }
    }

    fn can_become(&self, to: &SessionEra) -> bool {
        use SessionEra::*;
        matches!(
            (self, to),
            (
                Plain,
                Probing(_) | Initializing(_) | Bridged(_) | Listening(_) | Handshaking(_)
            ) | (Probing(_) | Initializing(_) | Handshaking(_), Plain)
        )
    }
}

/// The era the relay speaks to a shared process:
///
/// ```text
/// Handshake (spawned) ──probe sent──▶ Probing ──modern answer──▶ Modern
///     ▲                                  │
///     └──── any other answer: initialize ┘
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SharedEra {
    /// The relay's `initialize` is out or answered: every session's traffic
    /// is handshake-era toward it (modern requests are bridged).
    Handshake,
    /// The relay's `server/discover` is out; its answer decides.
    Probing,
    /// It answered discover with 2026-07-28: never initialized; modern
    /// requests pass with their own envelope, and a handshake-era session's
    /// requests are stamped with the envelope of its `initialize`.
    Modern,
}

impl SharedEra {
    fn can_become(self, to: SharedEra) -> bool {
        use SharedEra::*;
        matches!(
            (self, to),
            (Handshake, Probing) | (Probing, Handshake | Modern)
        )
    }
}

/// What `era_outgoing` made of a client message toward a shared process.
pub(super) enum Outgoing {
    /// Nothing to change.
    Pass,
    /// Send these bytes instead (stamped with the session's envelope).
    Send(Vec<u8>),
    /// Answered or dropped by the relay: nothing goes to the process.
    Done,
}

/// Counters of the bridge, per upstream (rendered with the verdict's).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct EraCounters {
    /// `server/discover` answered by the relay from an `InitializeResult`.
    pub(super) discover_answered: u64,
    /// Modern requests forwarded, stripped, to a handshake-era process.
    pub(super) bridged: u64,
    /// `initialize` sent by the relay on behalf of a modern client
    /// (session pool).
    pub(super) initialized: u64,
    /// Input rounds of server → client requests (`rounds.rs`): retries
    /// carried, server requests refused over a limit, calls given up for
    /// a late retry or a client gone, and server requests no modern call
    /// could take (no carrier, capability not declared, process cap).
    pub(super) input_rounds: u64,
    pub(super) input_refused: u64,
    pub(super) input_expired: u64,
    pub(super) input_abandoned: u64,
    pub(super) input_unattributable: u64,
    /// `subscriptions/listen` opened, refused (over a limit, bad filter),
    /// and list-changed or updated notifications no listen asked for
    /// (dropped; `listening.rs`).
    pub(super) listens: u64,
    pub(super) listens_refused: u64,
    pub(super) listen_dropped: u64,
    /// A handshake-era client's `initialize` answered from a modern-only
    /// process's `server/discover` (session pool, `stamped.rs`).
    pub(super) initialize_answered: u64,
    /// `notifications/message` for a modern request on a handshake-era
    /// process: delivered (it opted in at that level or below) or dropped.
    pub(super) logs_delivered: u64,
    pub(super) logs_dropped: u64,
}

impl Reverse {
    /// The one place a session's era state changes; an illegal move is
    /// refused and logged (the state stays).
    pub(super) fn set_era(&mut self, skey: SKey, to: SessionEra) -> Option<SessionEra> {
        let s = self.sessions.get_mut(&skey)?;
        if !s.era.can_become(&to) {
            debug_assert!(false, "era {} → {}", s.era.name(), to.name());
            crate::log_error!(
                "session {}: illegal era transition {} → {} refused",
                s.id,
                s.era.name(),
                to.name()
            );
            return None;
        }
        Some(std::mem::replace(&mut s.era, to))
    }

    /// A stateless (modern) session was granted process `conn`: its one
    /// request is tracked, then sent as the process's era requires.
    pub(super) fn bind_stateless(
        &mut self,
        skey: SKey,
        conn: PKey,
        line: std::borrow::Cow<'_, [u8]>,
        id: Id,
        reply_to: ReplyTo,
        parsed: Option<session::ReadMsg>,
    ) {
        let shared = match self.procs.get_mut(&conn).map(|p| &mut p.kind) {
            Some(ProcKind::Session { session }) => {
                *session = Some(skey);
                false
            }
            Some(ProcKind::Shared { sessions, .. }) => {
                sessions.push(skey);
                true
            }
            None => false,
        };
        // The request as the front read it, or read again from the copy
        // held while it waited (`parsed` is that copy's original).
        let read;
        let (bytes, env, meta) = match parsed {
            // The same bytes (pinned: borrowed, nothing to compare), or an
            // equal copy (held while it waited).
            Some(r) if std::ptr::eq(r.bytes, &*line) || r.bytes == &*line => {
                (r.bytes, r.env, r.meta)
            }
            _ => match jsonrpc::peek(&line) {
                Ok(Message::Single(env)) => {
                    read = env;
                    (&*line, &read, None)
                }
                _ => return,
            },
        };
        if !self.track(skey, id.clone(), env, reply_to) {
            return;
        }
        if shared && self.stateless_exchange(skey, conn, bytes, env, meta, &id) {
            return;
        }
        let method = env.method().map(|m| m.into_owned()).unwrap_or_default();
        let held = Held {
            line: line.into_owned(),
            id,
            method,
        };
        if shared {
            self.shared_bridge(skey, conn, held);
            return;
        }
        let u = conn.up;
        self.tick_verdict(u);
        match self.ups[u].verdict.want(self.now) {
            Want::Speak(Era::Modern) => {
                if let Ok(Message::Single(env)) = jsonrpc::peek(&held.line) {
                    self.send_up(skey, &held.line, &env, Some(&held.id));
                }
            }
            Want::Speak(Era::Handshake) => self.relay_initialize(skey, conn, held),
            // Another process's probe may be out: this one is probed too
            // (its answer decides for this process; the first settles the
            // upstream).
            Want::Probe | Want::Wait => {
                self.send_probe(conn);
                self.set_era(skey, SessionEra::Probing(held));
            }
            Want::Refuse => self.answer_unsupported(skey, &held.id, Vec::new()),
        }
    }

    /// The relay's `server/discover` to process `conn`, with its timer.
    pub(super) fn send_probe(&mut self, conn: PKey) {
        self.write_proc(conn, &convert::discover_request(PROBE_ID));
        self.timers.insert(
            self.now + crate::mcp::era::verdict::PROBE_TIMEOUT,
            TimerKind::EraProbe(conn),
        );
    }

    /// The probe to process `conn` went unanswered for
    /// `verdict::PROBE_TIMEOUT`: the upstream is taken for a handshake-era
    /// one and the process is initialized (a dual-era server that took the
    /// late probe refuses that initialize: a shared process is then closed
    /// and replaced, a session's request gets the server's refusal). Nothing
    /// to do if the probe was answered or the process is gone.
    pub(super) fn era_probe_expired(&mut self, conn: PKey) {
        let u = conn.up;
        let session = match self.procs.get(&conn).map(|p| &p.kind) {
            Some(ProcKind::Shared { era, .. }) => {
                if *era != SharedEra::Probing {
                    return;
                }
                None
            }
            Some(ProcKind::Session { session: Some(s) }) => Some(*s),
            _ => return,
        };
        match session {
            None => {
                self.tick_verdict(u);
                self.set_shared_era(conn, SharedEra::Handshake);
                self.shared_initialize(conn);
            }
            Some(skey) => {
                let probing = matches!(
                    self.sessions.get(&skey).map(|s| &s.era),
                    Some(SessionEra::Probing(_))
                );
                if !probing {
                    return;
                }
                self.tick_verdict(u);
                let Some(SessionEra::Probing(held)) = self.set_era(skey, SessionEra::Plain) else {
                    return;
                };
                if held.method == "initialize" {
                    // A handshake-era client's own: it goes to the server.
                    self.write_proc(conn, &held.line);
                    return;
                }
                self.relay_initialize(skey, conn, held);
            }
        }
    }

    /// A probe past its deadline settles on the handshake era now (the
    /// probe's own timer does it too).
    pub(super) fn tick_verdict(&mut self, u: usize) {
        if self.ups[u].verdict.on_tick(self.now) == Settled::LegacyRetireProbed {
            crate::log_warn!(
                "[{}] no answer to the server/discover probe within {:?}: the server is taken \
                 for a handshake-era one and initialized",
                self.ups[u].cfg.name,
                crate::mcp::era::verdict::PROBE_TIMEOUT
            );
        }
    }

    /// A probe's answer, for the upstream's verdict (logged when it settles).
    pub(super) fn settle_verdict(&mut self, u: usize, outcome: &DiscoverOutcome) {
        if self.ups[u].verdict.on_answer(outcome, self.now) != Settled::Ignored {
            crate::log_info!(
                "[{}] the server speaks {} (server/discover probe)",
                self.ups[u].cfg.name,
                match outcome {
                    DiscoverOutcome::Modern { .. } => "the modern era",
                    DiscoverOutcome::Legacy => "the handshake era",
                    DiscoverOutcome::Incompatible { .. } => "no revision the relay speaks",
                }
            );
        }
    }

    /// The modern request `held` of session `skey`, whose process is a
    /// handshake-era one initialized by the relay (`init`: its result).
    pub(super) fn bridge(&mut self, skey: SKey, held: Held, init: Option<&serde_json::Value>) {
        let u = up_of(skey);
        match stamp::toward_handshake(&held.method) {
            TowardHandshake::AnswerDiscover => {
                match init.and_then(convert::discover_from_initialize) {
                    Some(result) => {
                        self.ups[u].era.discover_answered += 1;
                        self.answer_result(skey, &held.id, &result);
                    }
                    None => self.fail_request(
                        skey,
                        &held.id,
                        RelayError::InvalidReply,
                        "The server's initialize result has no capabilities to describe it with",
                        json!({}),
                    ),
                }
            }
            TowardHandshake::Listen => self.open_listen(skey, held, init),
            TowardHandshake::Forward => {
                // The fast path splices `_meta` alone; the full parse is
                // for what it cannot tell.
                let stripped = match stamp::strip_fast(&held.line)
                    .ok_or(())
                    .or_else(|()| stamp::strip_modern(&held.line).map(|(b, _)| b))
                {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        self.fail_request(
                            skey,
                            &held.id,
                            RelayError::InvalidRequest,
                            &format!("The request cannot be carried to the server: {e:?}"),
                            json!({}),
                        );
                        return;
                    }
                };
                let (inputs, log) = rounds::read_envelope(&held.line);
                let b = rounds::Bridging::new(inputs, log, &held.method);
                self.set_era(skey, SessionEra::Bridged(b));
                self.ups[u].era.bridged += 1;
                if let Ok(Message::Single(env)) = jsonrpc::peek(&stripped) {
                    self.send_up(skey, &stripped, &env, Some(&held.id));
                }
            }
        }
    }

    /// A reply on its way to the client: a bridged session's result is made
    /// modern (`resultType`, cache hints).
    pub(super) fn era_reply(&self, skey: SKey, msg: Vec<u8>) -> Vec<u8> {
        match self.sessions.get_inline(&skey).map(|s| &s.era) {
            Some(SessionEra::Bridged(_)) => stamp::modern_response(&msg).unwrap_or(msg),
            _ => msg,
        }
    }

    /// -32022: the server speaks no revision the relay does.
    pub(super) fn answer_unsupported(&mut self, skey: SKey, id: &Id, supported: Vec<String>) {
        let b = jsonrpc::error_response(
            Some(id),
            UNSUPPORTED_PROTOCOL_VERSION,
            "The server supports no protocol revision the relay speaks",
            crate::proto::object::object([
                ("supported", serde_json::Value::from(supported)),
                ("requested", serde_json::Value::from(MODERN_VERSION)),
            ]),
        );
        self.answer_bytes(skey, id, b);
    }

    /// Answers tracked request `id` with `result`, in the client's spelling.
    pub(super) fn answer_result(&mut self, skey: SKey, id: &Id, result: &serde_json::Value) {
        let text = self
            .sessions
            .get(&skey)
            .and_then(|s| s.inflight.get(id))
            .and_then(|r| r.id_text.clone())
            .map_or_else(|| id.to_json(), String::from);
        let b = format!("{{\"jsonrpc\":\"2.0\",\"id\":{text},\"result\":{result}}}");
        self.answer_bytes(skey, id, b.into_bytes());
    }

    /// Answers tracked request `id` with the message `b` (the relay's own).
    pub(super) fn answer_bytes(&mut self, skey: SKey, id: &Id, b: Vec<u8>) {
        if let Some(req) = self.untrack(skey, id) {
            self.metrics
                .request_done("ok", self.now.duration_since(req.started).as_secs_f64());
            self.deliver(skey, req.route, id, b);
        }
    }
}

/// What a modern request names in its `Mcp-Name` header: `params.name`,
/// else `params.uri` (read without parsing the rest of the params).
pub(super) fn named(fields: &Option<ParamFields>) -> Option<String> {
    let f = fields.as_ref()?;
    serde_json::from_str(f.name.or(f.uri)?).ok()
}

/// The members of a request's `params` the front reads in one go: `name`
/// and `uri` (what `Mcp-Name` must match, `named`) and `_meta` with its
/// members (what the bridge strips and reads, `stateless_exchange`).
pub(super) type ParamFields<'a> = crate::mcp::shared::ParamScan<'a>;

/// [`ParamFields`] of `env`: as `peek`'s scan recorded them, else scanned
/// from the text it validated; `None` without `params` or when it is not
/// an object.
pub(super) fn param_fields<'a>(env: &Envelope<'a>) -> Option<ParamFields<'a>> {
    crate::mcp::shared::param_scan(env)
}

/// `mcp_relay_era_*` for every stdio upstream: the verdict's probes and
/// the bridge's counters.
pub(super) fn render_metrics(out: &mut String, ups: &[Upstream]) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP mcp_relay_era_probes_total server/discover probes of an upstream's era, by outcome."
    );
    let _ = writeln!(out, "# TYPE mcp_relay_era_probes_total counter");
    for up in ups.iter().filter(|u| !u.is_http()) {
        let st = up.verdict.stats;
        for (outcome, n) in [
            ("sent", st.probes),
            ("modern", st.modern),
            ("legacy", st.legacy),
            ("timeout", st.timeouts),
            ("error", st.errors),
            ("reopened", st.reopened),
        ] {
            let _ = writeln!(
                out,
                "mcp_relay_era_probes_total{{upstream=\"{}\",outcome=\"{outcome}\"}} {n}",
                label(&up.cfg.name)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP mcp_relay_era_bridged_total Modern requests carried to a handshake-era process, by what the relay did."
    );
    let _ = writeln!(out, "# TYPE mcp_relay_era_bridged_total counter");
    for up in ups.iter().filter(|u| !u.is_http()) {
        for (what, n) in [
            ("discover_answered", up.era.discover_answered),
            ("forwarded", up.era.bridged),
            ("initialized", up.era.initialized),
            ("initialize_answered", up.era.initialize_answered),
        ] {
            let _ = writeln!(
                out,
                "mcp_relay_era_bridged_total{{upstream=\"{}\",what=\"{what}\"}} {n}",
                label(&up.cfg.name)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP mcp_relay_era_input_total Server requests to 2026-07-28 clients carried as input rounds, by outcome."
    );
    let _ = writeln!(out, "# TYPE mcp_relay_era_input_total counter");
    for up in ups.iter().filter(|u| !u.is_http()) {
        for (what, n) in [
            ("rounds", up.era.input_rounds),
            ("refused", up.era.input_refused),
            ("expired", up.era.input_expired),
            ("abandoned", up.era.input_abandoned),
            ("unattributable", up.era.input_unattributable),
        ] {
            let _ = writeln!(
                out,
                "mcp_relay_era_input_total{{upstream=\"{}\",what=\"{what}\"}} {n}",
                label(&up.cfg.name)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP mcp_relay_era_logs_total Server log messages for 2026-07-28 requests on a handshake-era process, by whether the request opted in."
    );
    let _ = writeln!(out, "# TYPE mcp_relay_era_logs_total counter");
    for up in ups.iter().filter(|u| !u.is_http()) {
        for (what, n) in [
            ("delivered", up.era.logs_delivered),
            ("dropped", up.era.logs_dropped),
        ] {
            let _ = writeln!(
                out,
                "mcp_relay_era_logs_total{{upstream=\"{}\",what=\"{what}\"}} {n}",
                label(&up.cfg.name)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP mcp_relay_era_listens_total subscriptions/listen of 2026-07-28 clients carried to a handshake-era process, by outcome."
    );
    let _ = writeln!(out, "# TYPE mcp_relay_era_listens_total counter");
    for up in ups.iter().filter(|u| !u.is_http()) {
        for (what, n) in [
            ("opened", up.era.listens),
            ("refused", up.era.listens_refused),
            ("notification_dropped", up.era.listen_dropped),
        ] {
            let _ = writeln!(
                out,
                "mcp_relay_era_listens_total{{upstream=\"{}\",what=\"{what}\"}} {n}",
                label(&up.cfg.name)
            );
        }
    }
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> Held {
        Held {
            line: b"{}".to_vec(),
            id: Id::Num(1),
            method: String::new(),
        }
    }

    #[test]
    fn a_session_era_moves_only_along_its_lifecycle() {
        let all = || {
            vec![
                SessionEra::Plain,
                SessionEra::Probing(held()),
                SessionEra::Initializing(held()),
                SessionEra::Bridged(rounds::Bridging::default()),
                SessionEra::Handshaking(held()),
                SessionEra::Listening(Box::new(listening::Listening::empty(Id::Num(2)))),
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
                "plain → probing",
                "plain → initializing",
                "plain → bridged",
                "plain → handshaking",
                "plain → listening",
                "probing → plain",
                "initializing → plain",
                "handshaking → plain",
            ]
        );
    }
}
