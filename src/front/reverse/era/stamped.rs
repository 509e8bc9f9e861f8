//! Session pool: a handshake-era client in front of a modern-only server.
//!
//! The session's `initialize` cannot reach a 2026-07-28-only process: the
//! relay answers it from the process's `server/discover`
//! (`convert::initialize_from_discover`, the client's requested revision
//! when the relay knows it) and the session's requests are stamped with the
//! envelope of that `initialize` (`stamp::stamp_modern`, through
//! `era_outgoing`, as on a modern shared process): `ping` and
//! `logging/setLevel` are answered by the relay, `notifications/initialized`
//! is dropped, `resources/subscribe` is refused (-32601).
//!
//! Which processes: with the upstream's verdict modern (`--upstream-protocol
//! modern`, or a probe answered 2026-07-28) the fresh process is asked
//! `server/discover` at once. With no verdict yet (`auto`) the `initialize`
//! goes to the process as always, a copy kept (`SessionEra::Handshaking`):
//! if the process refuses it with -32022 (what a modern-only server
//! answers), the relay asks it `server/discover`, which also settles the
//! verdict, and answers from that. A handshake-era upstream never sees a
//! probe it did not see before.

use super::*;

impl Reverse {
    /// Session pool: a handshake-era session's `initialize` (`line`, id
    /// `id`, tracked already) to its fresh process `conn`.
    pub(in crate::front::reverse) fn era_handshake_bind(
        &mut self,
        skey: SKey,
        conn: PKey,
        line: Vec<u8>,
        id: Id,
    ) {
        let u = conn.up;
        self.tick_verdict(u);
        let held = Held {
            line,
            id,
            method: "initialize".into(),
        };
        match self.ups[u].verdict.era() {
            Some(Era::Handshake) => self.write_proc(conn, &held.line),
            Some(Era::Modern) => {
                self.send_probe(conn);
                self.set_era(skey, SessionEra::Probing(held));
            }
            None => {
                self.write_proc(conn, &held.line);
                self.set_era(skey, SessionEra::Handshaking(held));
            }
        }
    }

    /// The process answered the `initialize` of a `Handshaking` session
    /// (`v`): a -32022 refusal is taken here (true), the relay asks
    /// `server/discover`; any other answer goes to the client (false).
    pub(super) fn on_handshake_answer(
        &mut self,
        skey: SKey,
        conn: PKey,
        v: &serde_json::Value,
    ) -> bool {
        let Some(SessionEra::Handshaking(held)) = self.set_era(skey, SessionEra::Plain) else {
            return false;
        };
        let refused =
            v.pointer("/error/code").and_then(|c| c.as_i64()) == Some(UNSUPPORTED_PROTOCOL_VERSION);
        if !refused {
            return false;
        }
        let u = conn.up;
        crate::log_info!(
            "[{}] process {conn} refused a handshake-era initialize (-32022); answering it from \
             server/discover",
            self.ups[u].cfg.name
        );
        // This probe settles the upstream's verdict when none is out.
        let _ = self.ups[u].verdict.want(self.now);
        self.send_probe(conn);
        self.set_era(skey, SessionEra::Probing(held));
        true
    }

    /// The probe answered for a handshake-era session's held `initialize`.
    pub(super) fn on_handshake_probe(
        &mut self,
        skey: SKey,
        conn: PKey,
        held: Held,
        outcome: DiscoverOutcome,
    ) {
        let u = conn.up;
        match outcome {
            DiscoverOutcome::Modern { result, .. } => {
                let params = serde_json::from_slice::<serde_json::Value>(&held.line)
                    .ok()
                    .and_then(|v| v.get("params").cloned())
                    .unwrap_or_default();
                let requested = params.get("protocolVersion").and_then(|v| v.as_str());
                let name = self.ups[u].cfg.name.clone();
                let Some(init) = convert::initialize_from_discover(&result, requested, &name)
                else {
                    self.fail_request(
                        skey,
                        &held.id,
                        RelayError::InvalidReply,
                        "The server's server/discover result has no capabilities to describe it \
                         with",
                        json!({}),
                    );
                    return;
                };
                let version = init
                    .get("protocolVersion")
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                if let Some(s) = self.sessions.get_mut(&skey) {
                    s.stamp = Some(stamp::StampContext::from_initialize(&params));
                    if let Some(v) = version {
                        s.version = v;
                    }
                }
                self.ups[u].era.initialize_answered += 1;
                self.answer_result(skey, &held.id, &init);
            }
            // Not a modern server after all: the `initialize` goes to it.
            DiscoverOutcome::Legacy => self.write_proc(conn, &held.line),
            DiscoverOutcome::Incompatible { supported } => {
                self.answer_unsupported(skey, &held.id, supported)
            }
        }
    }
}
