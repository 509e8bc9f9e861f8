//! One client, one stdio server (`forward -- CMD`): the era of each side and
//! the bridge between a modern client and a handshake-era server.
//!
//! The client's first request decides its era, as a server serving both eras
//! decides: `initialize` or a request without the envelope opens a handshake
//! link, which passes through untouched. A modern request (`server/discover`
//! or any request with the envelope) needs the server's era:
//!
//! ```text
//!  Fresh ── handshake client, or --upstream-protocol modern ───────────▶ Pass
//!    │ modern client, auto: the client's discover goes to the server as the
//!    │ probe (or the relay's own, if the client starts with another request)
//!    ├─────────────────────────────▶ Probing ── modern result ─────────▶ Pass
//!    │                                 │ any other answer, or the probe's time up
//!    │ modern client, legacy            ▼
//!    └─────────────────────────────▶ Initializing ── its answer ──▶ Bridged
//!                                       ▲   (failed: the error goes      │
//!                                       │    to the client; Pass)        │
//!                                       └──── the server restarted ──────┘
//! ```
//!
//! While probing or initializing, the client's messages are held (at most
//! [`HOLD_CAP`] messages and [`HOLD_BYTES`] bytes; past that a request is
//! refused with `upstream_busy`, a notification dropped). `Bridged`: the
//! relay initialized the server with the client's envelope; it answers
//! `server/discover` (and a late `initialize`) from the `InitializeResult`,
//! strips the envelope off every request, and drops the client's
//! `notifications/initialized` (it sent its own).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::classify::{ClientRequest, Envelope, classify};
use super::convert::{self, DiscoverOutcome};
use super::input::{self, Bridge};
use super::listen::{Limits as ListenLimits, Listeners, ServerCaps};
use super::loglevel::Level;
use super::stamp::strip_modern;
use super::verdict::{Settled, Verdict, Want};
use super::{Era, UpstreamProtocol};
use crate::proto::jsonrpc::{self, Id};

/// Client messages held while the server's era is found out.
pub const HOLD_CAP: usize = 64;
/// Bytes of held client messages.
pub const HOLD_BYTES: usize = 4 << 20;

/// Ids of the relay's own requests on the link.
const PROBE_ID: &str = "mcp-relay-era-probe";
const INIT_ID_PREFIX: &str = "mcp-relay-era-init-";

#[derive(Debug, Clone, PartialEq)]
pub enum LinkState {
    Fresh,
    Pass,
    /// `probe` is the id the server answers (the client's discover's, or the
    /// relay's own); `discover` the client's discover awaiting an answer.
    Probing {
        probe: Id,
        discover: Option<Id>,
        envelope: Envelope,
    },
    Initializing {
        init: Id,
        discover: Option<Id>,
        envelope: Envelope,
    },
    Bridged {
        init: Value,
        envelope: Envelope,
    },
}

/// What the front does with a client message.
#[derive(Debug, PartialEq)]
pub enum FromClient {
    /// Send these bytes to the server (a request keeps its id).
    Send(Vec<u8>),
    /// Held: nothing to do now (it comes back in `Released`).
    Held,
    /// The relay's own request goes to the server; the message is held (or,
    /// a `server/discover`, answered by the link once it can).
    SendOwn(Vec<u8>),
    /// Answer the client with this line; nothing goes to the server.
    Answer(Vec<u8>),
    /// Refused (hold full, bad envelope): answer with this error line.
    Refuse(Vec<u8>),
    /// Nothing to send, nothing to answer.
    Drop,
    /// Taken by the input bridge (a retry carrying input responses, or the
    /// cancellation of a leg): carry this out.
    Bridge(Consumed),
}

/// What the front does with a server response the link consumed.
#[derive(Debug, Default, PartialEq)]
pub struct Consumed {
    /// The relay's own messages to the server, in order.
    pub to_server: Vec<Vec<u8>>,
    /// Answers to the client (each for a request the front tracks): (id, line).
    pub to_client: Vec<(Id, Vec<u8>)>,
    /// Held client messages, in order, to route again (`on_client`).
    pub released: Vec<Vec<u8>>,
    /// Lines for the client as they are (listen acknowledgements and
    /// events, the end of a listen).
    pub notify: Vec<Vec<u8>>,
    /// Client requests the front stops tracking without an answer now (an
    /// open `subscriptions/listen`: no response timeout applies to it).
    pub done: Vec<Id>,
}

pub struct Link {
    state: LinkState,
    verdict: Verdict,
    held: VecDeque<Vec<u8>>,
    held_bytes: usize,
    /// The probe's id once given up on (its late answer is dropped).
    late: Option<Id>,
    inits: u64,
    /// Held messages refused since the last log line.
    pub refused: u64,
    /// Bridged: the server's requests carried to the client as
    /// `InputRequiredResult` rounds (`link_input.rs`).
    pub(super) input: Bridge<()>,
    /// Bridged: the client's calls in flight that may carry input, by id:
    /// (method, order started). At most [`MAX_CALLS`].
    pub(super) calls: HashMap<Id, u64>,
    pub(super) call_seq: u64,
    /// Calls the front no longer tracks whose first leg was answered
    /// `input_required`: kept as carriers while the bridge holds them.
    pub(super) kept: HashSet<Id>,
    /// Bridged: the client's open `subscriptions/listen` requests
    /// (`link_listen.rs`), made from the server's capabilities.
    pub(super) listens: Option<Listeners<()>>,
    /// Bridged: the log opt-in of each client request in flight
    /// (`link_log.rs`), at most [`MAX_CALLS`].
    pub(super) logs: HashMap<Id, Option<Level>>,
}

/// Calls remembered as carriers of the server's requests; past it a call
/// is not remembered, and a server request it would carry gets an error.
pub const MAX_CALLS: usize = 4096;

impl Link {
    pub fn new(knob: UpstreamProtocol, probe_timeout: Duration, now: Instant) -> Link {
        Link {
            state: LinkState::Fresh,
            verdict: Verdict::new(knob, probe_timeout, now),
            held: VecDeque::new(),
            held_bytes: 0,
            late: None,
            inits: 0,
            refused: 0,
            input: Bridge::new(input::Limits::default()),
            calls: HashMap::new(),
            call_seq: 0,
            kept: HashSet::new(),
            listens: None,
            logs: HashMap::new(),
        }
    }

    pub fn state(&self) -> &LinkState {
        &self.state
    }

    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// When the probe gives up (for the front's timer).
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            LinkState::Probing { .. } => self.verdict.deadline(),
            _ => None,
        }
    }

    /// Whether the link bridges (rewrites both ways).
    pub fn bridging(&self) -> bool {
        matches!(self.state, LinkState::Bridged { .. })
    }

    /// Whether the link rewrites anything (else the front's fast path runs).
    pub fn passes(&self) -> bool {
        self.state == LinkState::Pass
    }

    /// A client message: `method` and `params` (raw) for a request or a
    /// notification (`None` for a response), `id` for a request.
    pub fn on_client(
        &mut self,
        line: &[u8],
        method: Option<&str>,
        params: Option<&str>,
        id: Option<&Id>,
        now: Instant,
    ) -> FromClient {
        match &self.state {
            LinkState::Pass => FromClient::Send(line.to_vec()),
            LinkState::Probing { .. } | LinkState::Initializing { .. } => self.hold(line, id),
            LinkState::Bridged { .. } => self.bridged(line, method, params, id, now),
            LinkState::Fresh => {
                let (Some(method), Some(id)) = (method, id) else {
                    // Notifications and responses before any request pass.
                    return FromClient::Send(line.to_vec());
                };
                let envelope = match classify(method, params, None) {
                    ClientRequest::Modern(e) => e,
                    ClientRequest::Refused(r) => {
                        self.set(LinkState::Pass);
                        return FromClient::Refuse(jsonrpc::error_response(
                            Some(id),
                            r.code,
                            r.message,
                            r.data,
                        ));
                    }
                    ClientRequest::Initialize { .. } | ClientRequest::Handshake => {
                        self.set(LinkState::Pass);
                        return FromClient::Send(line.to_vec());
                    }
                };
                let discover = (method == "server/discover").then(|| id.clone());
                match self.verdict.want(now) {
                    Want::Speak(Era::Modern) | Want::Refuse => {
                        self.set(LinkState::Pass);
                        FromClient::Send(line.to_vec())
                    }
                    Want::Speak(Era::Handshake) => {
                        let answered_later = discover.is_some();
                        let own = self.begin_init(discover, envelope);
                        if answered_later {
                            return FromClient::SendOwn(own);
                        }
                        self.hold_after(line, own)
                    }
                    Want::Probe | Want::Wait => match discover {
                        Some(d) => {
                            // The client's own discover is the probe.
                            self.set(LinkState::Probing {
                                probe: d,
                                discover: None,
                                envelope,
                            });
                            FromClient::Send(line.to_vec())
                        }
                        None => {
                            let probe = Id::Str(PROBE_ID.into());
                            self.set(LinkState::Probing {
                                probe,
                                discover: None,
                                envelope,
                            });
                            self.hold_after(line, convert::discover_request(PROBE_ID))
                        }
                    },
                }
            }
        }
    }

    /// A response from the server: `Some` when it answers the relay's own
    /// request (or the probe), which the front then does not deliver.
    pub fn on_server_response(&mut self, id: &Id, line: &[u8], now: Instant) -> Option<Consumed> {
        if self.late.as_ref() == Some(id) {
            self.late = None;
            return Some(Consumed::default());
        }
        // Cheap checks first: most responses are the client's, on a link
        // that passes or bridges.
        match &self.state {
            LinkState::Fresh | LinkState::Pass => return None,
            LinkState::Bridged { .. } => return self.bridge_response(id, line),
            LinkState::Probing { probe, .. } if probe != id => return None,
            LinkState::Initializing { init, .. } if init != id => return None,
            _ => {}
        }
        match self.state.clone() {
            LinkState::Probing {
                probe,
                discover,
                envelope,
            } if probe == *id => {
                let v: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
                let outcome = convert::read_discover(v.get("result"), v.get("error"));
                let settled = self.verdict.on_answer(&outcome, now);
                let modern = matches!(outcome, DiscoverOutcome::Modern { .. })
                    || matches!(settled, Settled::Era(Era::Modern));
                let is_client_probe = probe != Id::Str(PROBE_ID.into());
                if modern || matches!(outcome, DiscoverOutcome::Incompatible { .. }) {
                    // A modern server (or one the client must hear refuse):
                    // its answer goes to the client's discover, if that was
                    // the probe, and everything passes from now on.
                    self.set(LinkState::Pass);
                    let mut c = Consumed {
                        released: self.release(),
                        ..Consumed::default()
                    };
                    if is_client_probe {
                        c.to_client.push((probe, line.to_vec()));
                    }
                    return Some(c);
                }
                let discover = if is_client_probe {
                    Some(probe)
                } else {
                    discover
                };
                let own = self.begin_init(discover, envelope);
                Some(Consumed {
                    to_server: vec![own],
                    ..Consumed::default()
                })
            }
            LinkState::Initializing {
                init,
                discover,
                envelope,
            } if init == *id => {
                let v: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
                let mut c = Consumed::default();
                match v
                    .get("result")
                    .filter(|r| r.get("capabilities").is_some_and(Value::is_object))
                {
                    Some(result) => {
                        c.to_server.push(
                            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec(),
                        );
                        if let Some(d) = discover {
                            let line = answer(&d, convert::discover_from_initialize(result));
                            c.to_client.push((d, line));
                        }
                        // Listens made before a restart ended with the old
                        // server; the table starts empty on the new one.
                        let caps = ServerCaps::from_capabilities(&result["capabilities"]);
                        self.listens = Some(Listeners::new(caps, ListenLimits::default()));
                        self.set(LinkState::Bridged {
                            init: result.clone(),
                            envelope,
                        });
                    }
                    None => {
                        // The server refused the relay's initialize: the client
                        // hears the server's own words, nothing is rewritten.
                        if let Some(d) = discover {
                            let err = v.get("error").cloned().unwrap_or(Value::Null);
                            let code = err.get("code").and_then(Value::as_i64).unwrap_or(-32603);
                            let msg = err
                                .get("message")
                                .and_then(Value::as_str)
                                .unwrap_or("initialize failed");
                            c.to_client.push((
                                d.clone(),
                                jsonrpc::error_response(Some(&d), code, msg, Value::Null),
                            ));
                        }
                        self.set(LinkState::Pass);
                    }
                }
                c.released = self.release();
                Some(c)
            }
            _ => None,
        }
    }

    /// The timer: a probe past its time settles on the handshake era (the
    /// relay initializes the server; the probe's late answer is dropped).
    pub fn on_tick(&mut self, now: Instant) -> Option<Consumed> {
        let LinkState::Probing {
            probe,
            discover,
            envelope,
        } = self.state.clone()
        else {
            return None;
        };
        if self.verdict.on_tick(now) == Settled::Ignored {
            return None;
        }
        let is_client_probe = probe != Id::Str(PROBE_ID.into());
        let discover = if is_client_probe {
            Some(probe.clone())
        } else {
            discover
        };
        self.late = Some(probe);
        let own = self.begin_init(discover, envelope);
        Some(Consumed {
            to_server: vec![own],
            ..Consumed::default()
        })
    }

    /// The server was restarted: a link that bridges (or was about to)
    /// initializes the new one with the returned line, whose answer the
    /// front awaits before anything else goes out. A probe that died with the
    /// server is no verdict; the new server is initialized (a server serving
    /// both eras accepts it, a modern-only one refuses it and the link
    /// passes). `None`: the front replays the client's own `initialize`, if
    /// any, as before.
    pub fn on_restart(&mut self) -> Option<(Id, Vec<u8>)> {
        let envelope = match &self.state {
            LinkState::Bridged { envelope, .. }
            | LinkState::Initializing { envelope, .. }
            | LinkState::Probing { envelope, .. } => envelope.clone(),
            LinkState::Fresh | LinkState::Pass => return None,
        };
        if matches!(self.state, LinkState::Probing { .. }) {
            self.verdict.on_transport_error();
        }
        // The client's discover, if it was out, failed with the old server.
        let line = self.begin_init(None, envelope);
        match &self.state {
            LinkState::Initializing { init, .. } => Some((init.clone(), line)),
            _ => None,
        }
    }

    /// A server response to one of the client's requests: on a bridged link
    /// made a modern one (`stamp::modern_response`); `None` to send it as it
    /// is.
    pub fn on_server_result(&self, line: &[u8]) -> Option<Vec<u8>> {
        match self.state {
            LinkState::Bridged { .. } => super::stamp::modern_response(line),
            _ => None,
        }
    }

    fn bridged(
        &mut self,
        line: &[u8],
        method: Option<&str>,
        params: Option<&str>,
        id: Option<&Id>,
        now: Instant,
    ) -> FromClient {
        if let Some(taken) = self.bridge_client(method, params, id, now) {
            return taken;
        }
        let LinkState::Bridged { init, .. } = &self.state else {
            return FromClient::Send(line.to_vec());
        };
        match (method, id) {
            (Some("server/discover"), Some(id)) => {
                FromClient::Answer(answer(id, convert::discover_from_initialize(init)))
            }
            (Some("initialize"), Some(id)) => {
                // A client that gave up on discover and fell back: it gets
                // the server's answer to the relay's initialize.
                let requested = params
                    .and_then(|p| serde_json::from_str::<Value>(p).ok())
                    .and_then(|p| p.get("protocolVersion")?.as_str().map(str::to_string));
                let mut r = init.clone();
                if let Some(o) = r.as_object_mut() {
                    let v = requested
                        .filter(|v| super::is_handshake(v))
                        .unwrap_or_else(|| super::LATEST_HANDSHAKE.into());
                    o.insert("protocolVersion".into(), Value::String(v));
                }
                FromClient::Answer(answer(id, Some(r)))
            }
            (Some("notifications/initialized"), None) => FromClient::Drop,
            (Some("subscriptions/listen"), Some(id)) => self.listen_open(id, params),
            (Some(_), _) => match strip_modern(line) {
                Ok((out, envelope)) => {
                    if let Some(id) = id {
                        self.remember_log(id, envelope.as_ref());
                    }
                    FromClient::Send(out)
                }
                Err(_) => match id {
                    Some(id) => FromClient::Refuse(jsonrpc::error_response(
                        Some(id),
                        super::INVALID_PARAMS,
                        "params and params._meta must be objects",
                        Value::Null,
                    )),
                    None => FromClient::Drop,
                },
            },
            (None, _) => FromClient::Send(line.to_vec()),
        }
    }

    fn begin_init(&mut self, discover: Option<Id>, envelope: Envelope) -> Vec<u8> {
        self.inits += 1;
        let id = format!("{INIT_ID_PREFIX}{}", self.inits);
        let line =
            convert::initialize_request(&id, envelope.client_info.as_ref(), &envelope.capabilities);
        self.set(LinkState::Initializing {
            init: Id::Str(id.into()),
            discover,
            envelope,
        });
        line
    }

    fn hold(&mut self, line: &[u8], id: Option<&Id>) -> FromClient {
        if self.held.len() >= HOLD_CAP || self.held_bytes + line.len() > HOLD_BYTES {
            self.refused += 1;
            return match id {
                Some(id) => FromClient::Refuse(jsonrpc::error_response(
                    Some(id),
                    crate::proto::errors::RelayError::UpstreamBusy.code(),
                    "The relay is finding out the server's protocol era; too many messages wait",
                    crate::proto::object::object([(
                        "kind",
                        serde_json::Value::from("upstream_busy"),
                    )]),
                )),
                None => FromClient::Drop,
            };
        }
        self.held_bytes += line.len();
        self.held.push_back(line.to_vec());
        FromClient::Held
    }

    fn hold_after(&mut self, line: &[u8], own: Vec<u8>) -> FromClient {
        self.held_bytes += line.len();
        self.held.push_back(line.to_vec());
        FromClient::SendOwn(own)
    }

    fn release(&mut self) -> Vec<Vec<u8>> {
        self.held_bytes = 0;
        self.held.drain(..).collect()
    }

    /// The one place the state changes.
    fn set(&mut self, to: LinkState) {
        use LinkState::*;
        let ok = matches!(
            (&self.state, &to),
            (Fresh, Pass | Probing { .. } | Initializing { .. })
                | (Probing { .. }, Pass | Initializing { .. })
                | (
                    Initializing { .. },
                    Bridged { .. } | Pass | Initializing { .. }
                )
                | (Bridged { .. }, Initializing { .. })
        );
        debug_assert!(ok, "era link: illegal move {:?} → {:?}", self.state, to);
        if !ok {
            crate::log_error!("era link: illegal move refused");
            return;
        }
        self.state = to;
    }
}

/// A result line for `id` (an internal error when there is no result).
fn answer(id: &Id, result: Option<Value>) -> Vec<u8> {
    match result {
        Some(r) => format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{r}}}",
            id.to_json()
        )
        .into_bytes(),
        None => jsonrpc::error_response(
            Some(id),
            -32603,
            "the server's initialize result has no capabilities",
            Value::Null,
        ),
    }
}

#[path = "link_input.rs"]
mod link_input;
#[path = "link_listen.rs"]
mod link_listen;
#[path = "link_log.rs"]
mod link_log;

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
