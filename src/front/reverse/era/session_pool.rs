//! The session pool's side of the era bridge (see the parent module).

use super::*;

impl Reverse {
    /// Session pool: the relay initializes the session's process on behalf
    /// of the modern client, with its envelope's info and capabilities.
    pub(super) fn relay_initialize(&mut self, skey: SKey, conn: PKey, held: Held) {
        let envelope: Option<ModernEnvelope> =
            stamp::strip_modern(&held.line).ok().and_then(|(_, e)| e);
        let caps = envelope
            .as_ref()
            .map_or_else(|| json!({}), |e| e.capabilities.clone());
        let info = envelope.as_ref().and_then(|e| e.client_info.clone());
        let init = convert::initialize_request(RELAY_INIT_ID, info.as_ref(), &caps);
        self.ups[conn.up].era.initialized += 1;
        self.write_proc(conn, &init);
        self.set_era(skey, SessionEra::Initializing(held));
    }

    /// Session pool: a line from the process of a session the relay is
    /// probing or initializing. True when it was the relay's answer (taken
    /// here); anything else goes the usual way.
    pub(in crate::front::reverse) fn era_line(
        &mut self,
        skey: SKey,
        conn: PKey,
        line: &[u8],
    ) -> bool {
        let want = match self.sessions.get(&skey).map(|s| &s.era) {
            Some(SessionEra::Probing(_)) => Id::Str(PROBE_ID.into()),
            Some(SessionEra::Initializing(_)) => Id::Str(RELAY_INIT_ID.into()),
            Some(SessionEra::Handshaking(h)) => h.id.clone(),
            _ => return false,
        };
        let ours = matches!(jsonrpc::peek(line), Ok(Message::Single(env))
            if env.kind() == Kind::Response && env.id().as_ref() == Some(&want));
        if !ours {
            return false;
        }
        let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
        match self.sessions.get(&skey).map(|s| &s.era) {
            Some(SessionEra::Probing(_)) => self.on_probe_answer(skey, conn, &v),
            Some(SessionEra::Initializing(_)) => self.on_init_answer(skey, conn, &v),
            _ => return self.on_handshake_answer(skey, conn, &v),
        }
        true
    }

    pub(super) fn on_probe_answer(&mut self, skey: SKey, conn: PKey, v: &serde_json::Value) {
        let u = conn.up;
        let outcome = convert::read_discover(v.get("result"), v.get("error"));
        self.settle_verdict(u, &outcome);
        let handshake = matches!(self.sessions.get(&skey).map(|s| &s.era),
            Some(SessionEra::Probing(h)) if h.method == "initialize");
        if handshake {
            // A handshake-era client's `initialize` (`stamped.rs`).
            let Some(SessionEra::Probing(held)) = self.set_era(skey, SessionEra::Plain) else {
                return;
            };
            self.on_handshake_probe(skey, conn, held, outcome);
            return;
        }
        match outcome {
            DiscoverOutcome::Modern { .. } => {
                let Some(SessionEra::Probing(held)) = self.set_era(skey, SessionEra::Plain) else {
                    return;
                };
                if let Ok(Message::Single(env)) = jsonrpc::peek(&held.line) {
                    self.send_up(skey, &held.line, &env, Some(&held.id));
                }
            }
            DiscoverOutcome::Legacy => {
                let Some(SessionEra::Probing(held)) = self.set_era(skey, SessionEra::Plain) else {
                    return;
                };
                self.relay_initialize(skey, conn, held);
            }
            DiscoverOutcome::Incompatible { supported } => {
                let Some(SessionEra::Probing(held)) = self.set_era(skey, SessionEra::Plain) else {
                    return;
                };
                self.answer_unsupported(skey, &held.id, supported);
            }
        }
    }

    pub(super) fn on_init_answer(&mut self, skey: SKey, conn: PKey, v: &serde_json::Value) {
        let u = conn.up;
        let Some(SessionEra::Initializing(held)) = self.set_era(skey, SessionEra::Plain) else {
            return;
        };
        let Some(result) = v.get("result").filter(|r| r.is_object()) else {
            crate::log_warn!(
                "[{}] process {conn} refused the relay's initialize for a modern client: {}",
                self.ups[u].cfg.name,
                v.get("error").cloned().unwrap_or_default()
            );
            let error = v.get("error").cloned().unwrap_or_else(|| {
                crate::proto::object::object([
                    ("code", serde_json::Value::from(-32603)),
                    ("message", serde_json::Value::from("initialize failed")),
                ])
            });
            let b = jsonrpc::error_response(
                Some(&held.id),
                error.get("code").and_then(|c| c.as_i64()).unwrap_or(-32603),
                error
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("initialize failed"),
                error.get("data").cloned().unwrap_or_else(|| json!({})),
            );
            self.answer_bytes(skey, &held.id, b);
            return;
        };
        // A discover is answered from the result and the process, leased for
        // it alone, is done: only a request that goes on is announced.
        if stamp::toward_handshake(&held.method) != TowardHandshake::AnswerDiscover {
            self.write_proc(
                conn,
                br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            );
        }
        self.bridge(skey, held, Some(result));
    }

    /// The session's process went away: a probe out on it settles nothing.
    pub(in crate::front::reverse) fn era_proc_down(&mut self, skey: SKey) {
        if matches!(
            self.sessions.get(&skey).map(|s| &s.era),
            Some(SessionEra::Probing(_))
        ) {
            let _ = self.ups[up_of(skey)].verdict.on_transport_error();
        }
    }
}
