//! The shared pool's side of the era bridge (see the parent module).

use super::*;

impl Reverse {
    /// Shared pool, a 2026-07-28 request's session `skey` (just created,
    /// `New`): bound to the process a lease would be granted at once,
    /// without queueing it (`Pool::pin`), and sent as read (`parsed`, no
    /// copy of its bytes). False: no process can be pinned now (none
    /// ready, a new one would be spawned for it, waiters queued, a pool
    /// deadline due, or not a shared pool): the caller leases.
    pub(in crate::front::reverse) fn pin_stateless(
        &mut self,
        skey: SKey,
        id: &Id,
        reply_to: ReplyTo,
        parsed: session::ReadMsg,
    ) -> bool {
        let u = up_of(skey);
        let Some(s) = self.sessions.get(&skey) else {
            return false;
        };
        if !matches!(s.binding, Binding::New) {
            return false;
        }
        let Some(id_in_pool) = self.ups[u].pin(self.now) else {
            return false;
        };
        let conn = PKey {
            up: u,
            id: id_in_pool,
        };
        if let Some(s) = self.sessions.get_mut(&skey) {
            s.last_active = self.now;
            s.set_binding(Binding::Bound(conn));
        }
        self.bind_stateless(
            skey,
            conn,
            std::borrow::Cow::Borrowed(parsed.bytes),
            id.clone(),
            reply_to,
            Some(parsed),
        );
        true
    }

    /// Shared pool, the hot path of a 2026-07-28 request (`env` is `line`
    /// read once, the request tracked): to a modern process it goes as it
    /// is; to a handshake-era one, a request the bridge forwards goes with
    /// its envelope stripped in the same splice as the mux's id rewrite
    /// (`Mux::up_parsed_edited`), so it is neither read nor copied again
    /// (`meta`: its `params._meta`, if the front looked it up already).
    /// False: not taken (another method, or a message the fast strip cannot
    /// tell about): `shared_bridge` takes it the full way.
    pub(super) fn stateless_exchange(
        &mut self,
        skey: SKey,
        conn: PKey,
        line: &[u8],
        env: &Envelope,
        meta: Option<Option<&crate::mcp::shared::MetaScan>>,
        id: &Id,
    ) -> bool {
        match self.shared_era(conn) {
            Some(SharedEra::Modern) => {
                self.send_up(skey, line, env, Some(id));
                true
            }
            Some(SharedEra::Handshake) => {
                let forward = env
                    .method()
                    .is_some_and(|m| stamp::toward_handshake(&m) == TowardHandshake::Forward);
                if !forward {
                    return false;
                }
                let Some(edit) = stamp::strip_edit_with(env.params, meta) else {
                    return false;
                };
                // What the envelope declared is read only if the call
                // needs it (a server request, a log message).
                let method = env.method().unwrap_or_default();
                let b = match &edit {
                    stamp::StripEdit::Keep => {
                        rounds::Bridging::new(rounds::Inputs::default(), None, &method)
                    }
                    stamp::StripEdit::Replace(meta, _) => rounds::Bridging::unread(meta, &method),
                };
                self.set_era(skey, SessionEra::Bridged(b));
                self.ups[conn.up].era.bridged += 1;
                match &edit {
                    stamp::StripEdit::Keep => {
                        self.send_up(skey, line, env, Some(id));
                    }
                    stamp::StripEdit::Replace(meta, new) => {
                        self.send_up_edited(
                            skey,
                            line,
                            env,
                            Some(id),
                            true,
                            Some((meta, new.as_bytes())),
                        );
                    }
                }
                true
            }
            Some(SharedEra::Probing) | None => false,
        }
    }

    /// Shared pool: a modern request passes to a modern process as it is;
    /// to one the relay initialized (handshake era) it is answered or
    /// bridged.
    pub(super) fn shared_bridge(&mut self, skey: SKey, conn: PKey, held: Held) {
        let era = self.shared_era(conn).unwrap_or(SharedEra::Handshake);
        if era == SharedEra::Modern {
            if let Ok(Message::Single(env)) = jsonrpc::peek(&held.line) {
                self.send_up(skey, &held.line, &env, Some(&held.id));
            }
            return;
        }
        // The cached `InitializeResult` is cloned only for what reads it.
        let init = match stamp::toward_handshake(&held.method) {
            TowardHandshake::AnswerDiscover | TowardHandshake::Listen => {
                match self.procs.get(&conn).map(|p| &p.kind) {
                    Some(ProcKind::Shared { init, .. }) => init.clone(),
                    _ => None,
                }
            }
            _ => None,
        };
        self.bridge(skey, held, init.as_ref());
    }

    pub(super) fn shared_era(&self, conn: PKey) -> Option<SharedEra> {
        match self.procs.get(&conn).map(|p| &p.kind) {
            Some(ProcKind::Shared { era, .. }) => Some(*era),
            _ => None,
        }
    }

    /// The one place a shared process's era changes (checked).
    pub(super) fn set_shared_era(&mut self, conn: PKey, to: SharedEra) {
        if let Some(ProcKind::Shared { era, .. }) = self.procs.get_mut(&conn).map(|p| &mut p.kind) {
            if era.can_become(to) {
                *era = to;
            } else {
                debug_assert!(false, "shared era {era:?} → {to:?}");
                crate::log_error!(
                    "process {conn}: illegal era transition {era:?} → {to:?} refused"
                );
            }
        }
    }

    /// A shared process was spawned: the relay initializes it, or probes it
    /// first (`--upstream-protocol auto` with no verdict yet, or `modern`:
    /// the discover result is what handshake-era clients' `initialize` is
    /// answered from).
    pub(in crate::front::reverse) fn shared_start(&mut self, conn: PKey) {
        let u = conn.up;
        self.tick_verdict(u);
        match self.ups[u].verdict.want(self.now) {
            Want::Speak(Era::Handshake) => self.shared_initialize(conn),
            Want::Speak(Era::Modern) | Want::Probe | Want::Wait => {
                self.set_shared_era(conn, SharedEra::Probing);
                self.send_probe(conn);
            }
            Want::Refuse => {
                crate::log_error!(
                    "[{}] the server speaks no protocol revision the relay does; initializing \
                     process {conn} anyway",
                    self.ups[u].cfg.name
                );
                self.shared_initialize(conn);
            }
        }
    }

    /// The relay's own `initialize` to a shared process (handshake era). It
    /// declares elicitation and sampling: the relay can carry those to the
    /// one client whose call is in flight (a 2026-07-28 client that
    /// declared them gets an input round, `rounds.rs`; anyone else's is
    /// refused by the relay or by the client). Not roots: servers ask for
    /// roots right after `initialized`, outside any call, when no client
    /// can be asked.
    pub(super) fn shared_initialize(&mut self, conn: PKey) {
        let empty = || serde_json::Value::Object(serde_json::Map::new());
        let init = crate::proto::object::object([
            ("jsonrpc", serde_json::Value::from("2.0")),
            ("id", serde_json::Value::from(RELAY_INIT_ID)),
            ("method", serde_json::Value::from("initialize")),
            (
                "params",
                crate::proto::object::object([
                    ("protocolVersion", serde_json::Value::from(RELAY_PROTOCOL)),
                    (
                        "capabilities",
                        crate::proto::object::object([
                            ("elicitation", empty()),
                            ("sampling", empty()),
                        ]),
                    ),
                    (
                        "clientInfo",
                        crate::proto::object::object([
                            ("name", serde_json::Value::from("mcp-relay")),
                            (
                                "version",
                                serde_json::Value::from(env!("CARGO_PKG_VERSION")),
                            ),
                        ]),
                    ),
                ]),
            ),
        ]);
        let bytes = serde_json::to_vec(&init).unwrap_or_default();
        self.write_proc(conn, &bytes);
    }

    /// A line from a shared process the relay has not finished starting:
    /// the answer to its `initialize` or to its probe; anything else is
    /// dropped (no session is on it yet).
    pub(in crate::front::reverse) fn shared_start_line(&mut self, conn: PKey, line: &[u8]) {
        let id = match jsonrpc::peek(line) {
            Ok(Message::Single(env)) if env.kind() == Kind::Response => env.id(),
            _ => return,
        };
        if id == Some(Id::Str(RELAY_INIT_ID.into())) {
            self.on_shared_init(conn, line);
        } else if id == Some(Id::Str(PROBE_ID.into()))
            && self.shared_era(conn) == Some(SharedEra::Probing)
        {
            self.on_shared_probe(conn, line);
        }
    }

    pub(super) fn on_shared_probe(&mut self, conn: PKey, line: &[u8]) {
        let u = conn.up;
        let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
        let outcome = convert::read_discover(v.get("result"), v.get("error"));
        self.settle_verdict(u, &outcome);
        let knob_modern = self.ups[u].verdict.knob() == crate::mcp::era::UpstreamProtocol::Modern;
        let name = self.ups[u].cfg.name.clone();
        let init = match &outcome {
            DiscoverOutcome::Modern { result, .. } => {
                convert::initialize_from_discover(result, None, &name)
            }
            _ if knob_modern => {
                crate::log_warn!(
                    "[{name}] process {conn} did not answer server/discover as a modern server; \
                     --upstream-protocol modern: it is driven in the modern era anyway"
                );
                None
            }
            _ => {
                self.set_shared_era(conn, SharedEra::Handshake);
                self.shared_initialize(conn);
                return;
            }
        };
        let init = init.unwrap_or_else(|| {
            json!({"protocolVersion": crate::mcp::era::LATEST_HANDSHAKE, "capabilities": {},
                   "serverInfo": {"name": name, "version": "unknown"}})
        });
        self.set_shared_era(conn, SharedEra::Modern);
        if let Some(p) = self.procs.get_mut(&conn)
            && let ProcKind::Shared { init: cached, .. } = &mut p.kind
        {
            *cached = Some(init);
            p.life.initialized();
        }
        let actions = self.ups[u].pool(|p| p.on_ready(conn.id, self.now));
        self.apply(u, actions);
    }

    /// A handshake-era session was answered `initialize` on shared process
    /// `conn` (`line`: its request): on a modern process its later requests
    /// are stamped with what it said.
    pub(in crate::front::reverse) fn era_session_bound(
        &mut self,
        skey: SKey,
        conn: PKey,
        line: &[u8],
    ) {
        if self.shared_era(conn) != Some(SharedEra::Modern) {
            return;
        }
        let params = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("params").cloned())
            .unwrap_or_default();
        if let Some(s) = self.sessions.get_mut(&skey) {
            s.stamp = Some(stamp::StampContext::from_initialize(&params));
        }
    }

    /// A handshake-era session's message toward a modern shared process
    /// (`era_session_bound`): requests gain the envelope; what the modern
    /// era does not have is answered by the relay. `Pass` for any other
    /// session (nothing looked at).
    pub(in crate::front::reverse) fn era_outgoing(
        &mut self,
        skey: SKey,
        line: &[u8],
        env: &Envelope,
        request: Option<&Id>,
    ) -> Outgoing {
        if env.kind() == Kind::Response
            && self.sessions.get(&skey).is_some_and(|s| s.stamp.is_some())
            && self.stamped_input_response(skey, env, line)
        {
            // The client's answer to the relay's own request.
            return Outgoing::Done;
        }
        let Some(ctx) = self.sessions.get(&skey).and_then(|s| s.stamp.as_ref()) else {
            return Outgoing::Pass;
        };
        if env.kind() == Kind::Notification && env.method_is("notifications/initialized") {
            // The modern era has no handshake to finish.
            return Outgoing::Done;
        }
        let (Kind::Request, Some(id)) = (env.kind(), request) else {
            // Notifications (cancellations, `initialized`, which the mux
            // swallows) and responses pass as they are.
            return Outgoing::Pass;
        };
        let method = env.method().map(|m| m.into_owned()).unwrap_or_default();
        match stamp::toward_modern(&method) {
            stamp::TowardModern::Forward | stamp::TowardModern::AnswerInitialize => {
                match stamp::stamp_modern(line, ctx) {
                    Ok((bytes, _headers)) => {
                        self.stamped_input_sent(skey, id, &method, &bytes);
                        Outgoing::Send(bytes)
                    }
                    Err(e) => {
                        self.fail_request(
                            skey,
                            id,
                            RelayError::InvalidRequest,
                            &format!("The request cannot be carried to the server: {e:?}"),
                            json!({}),
                        );
                        Outgoing::Done
                    }
                }
            }
            stamp::TowardModern::Drop | stamp::TowardModern::AnswerEmpty => {
                self.answer_result(skey, id, &json!({}));
                Outgoing::Done
            }
            stamp::TowardModern::SetLevel => {
                let params: Option<serde_json::Value> =
                    env.params.and_then(|p| serde_json::from_str(p.get()).ok());
                if let Some(ctx) = self.sessions.get_mut(&skey).and_then(|s| s.stamp.as_mut()) {
                    ctx.set_level(params.as_ref());
                }
                self.answer_result(skey, id, &json!({}));
                Outgoing::Done
            }
            how @ (stamp::TowardModern::Subscribe | stamp::TowardModern::Unsubscribe) => {
                // Folded into a listen of the session (`stamped_subs.rs`).
                let params: Option<serde_json::Value> =
                    env.params.and_then(|p| serde_json::from_str(p.get()).ok());
                let subscribe = how == stamp::TowardModern::Subscribe;
                self.stamped_subscription(skey, id, subscribe, params.as_ref());
                Outgoing::Done
            }
        }
    }
}
