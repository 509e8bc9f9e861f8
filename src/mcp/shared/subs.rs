//! The shared mux's record of resource subscriptions: the process holds
//! one subscription per URI for every session on it, so the mux keeps who
//! asked (at most [`MAX_SUBSCRIPTIONS`] pairs a process), answers an
//! unsubscribe while other sessions keep the URI, and unsubscribes at the
//! server what an ended session alone kept.

use std::collections::HashMap;

use super::{MAX_SUBSCRIPTIONS, Mux, RelayError, SessionKey, Up, relay_error};
use crate::proto::jsonrpc::{Envelope, Id};

/// Resource subscriptions of the sessions on one process.
#[derive(Default)]
pub(super) struct Subscriptions {
    /// Resource URI → the sessions subscribed to it (the server holds one
    /// subscription per URI for all of them).
    pub(super) by_uri: HashMap<Box<str>, Vec<SessionKey>>,
    /// (URI, session) pairs in `by_uri`, capped at [`MAX_SUBSCRIPTIONS`].
    pub(super) count: usize,
    /// Numbers the relay's own `resources/unsubscribe` ids.
    next_unsub: u64,
}

impl Subscriptions {
    /// Session `session` ended: its subscriptions are forgotten, and a
    /// `resources/unsubscribe` for each URI nobody else keeps is added to
    /// `out`, in URI order.
    pub(super) fn end_session(&mut self, session: SessionKey, out: &mut Vec<Vec<u8>>) {
        let mut unsubscribe: Vec<Box<str>> = Vec::new();
        let count = &mut self.count;
        self.by_uri.retain(|uri, list| {
            let before = list.len();
            list.retain(|s| *s != session);
            *count -= before - list.len();
            if list.is_empty() && before > 0 {
                unsubscribe.push(uri.clone());
            }
            !list.is_empty()
        });
        unsubscribe.sort();
        for uri in unsubscribe {
            self.next_unsub += 1;
            let n = self.next_unsub;
            // A string id, outside the upstream id space: its reply is
            // dropped by `down` as one to no request.
            out.push(
                crate::proto::object::object([
                    ("jsonrpc", serde_json::Value::from("2.0")),
                    (
                        "id",
                        serde_json::Value::from(format!("mcp-relay-unsubscribe-{n}")),
                    ),
                    ("method", serde_json::Value::from("resources/unsubscribe")),
                    (
                        "params",
                        crate::proto::object::object([("uri", serde_json::Value::from(&*uri))]),
                    ),
                ])
                .to_string()
                .into_bytes(),
            );
        }
    }
}

impl Mux {
    /// `resources/subscribe` and `resources/unsubscribe` (`method`, the
    /// request's): the process holds
    /// one subscription per URI for every session, so the mux keeps who
    /// asked. `Some` answers the request here: a subscribe over
    /// [`MAX_SUBSCRIPTIONS`], or an unsubscribe while other sessions keep
    /// the URI (sending it would end theirs). `None`: send it on.
    pub(super) fn subscription(
        &mut self,
        session: SessionKey,
        env: &Envelope,
        method: &str,
        id: &Id,
        id_text: &str,
    ) -> Option<Up> {
        let subscribe = match method {
            "resources/subscribe" => true,
            "resources/unsubscribe" => false,
            _ => return None,
        };
        let uri: Box<str> = env.param_str("uri")?.into();
        let list = self.subs.by_uri.entry(uri.clone()).or_default();
        let has = list.contains(&session);
        if subscribe {
            if !has {
                if self.subs.count >= MAX_SUBSCRIPTIONS {
                    if list.is_empty() {
                        self.subs.by_uri.remove(&uri);
                    }
                    return Some(Up::Reject(relay_error(
                        Some(id),
                        RelayError::QueueFull,
                        "mcp-relay: too many resource subscriptions on this server process",
                    )));
                }
                list.push(session);
                self.subs.count += 1;
            }
            return None;
        }
        if has {
            list.retain(|s| *s != session);
            self.subs.count -= 1;
        }
        if list.is_empty() {
            self.subs.by_uri.remove(&uri);
            return None;
        }
        Some(Up::Answer(
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{id_text},\"result\":{{}}}}").into_bytes(),
        ))
    }
}
