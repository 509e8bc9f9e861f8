//! `subscriptions/listen` on a bridged link (`forward -- CMD`, a 2026-07-28
//! client, a handshake-era server), over the table in `era/listen.rs`.
//!
//! An open listen is not a request in flight for the front (no response
//! timeout applies: it is answered when it ends), so opening one hands its id
//! back in `Consumed::done`. The relay's own `resources/subscribe` and
//! `unsubscribe` requests carry ids the front never tracks; their answers are
//! dropped here. The client ends a listen with `notifications/cancelled`
//! naming it; a restart of the server ends every listen gracefully (the
//! client listens again on the new one).

use serde_json::Value;

use super::{Consumed, FromClient, Link};
use crate::mcp::era::listen::Listeners;
use crate::proto::jsonrpc::{self, Id};

impl Link {
    /// A notification from the server. `Some`: a listen event, delivered to
    /// the listens that asked for it (none: dropped, a modern client gets
    /// no notification it did not ask for). `None`: pass it on.
    pub fn on_server_notification(
        &mut self,
        method: &str,
        params: Option<&str>,
    ) -> Option<Consumed> {
        let listens = self.listens.as_ref()?;
        if !crate::mcp::era::listen::is_listen_event(method) {
            return None;
        }
        let params: Option<Value> = params.and_then(|p| serde_json::from_str(p).ok());
        let notify = listens
            .on_server_notification(method, params.as_ref())
            .into_iter()
            .map(|(_, _, line)| line)
            .collect();
        Some(Consumed {
            notify,
            ..Consumed::default()
        })
    }

    /// Ends every open listen (the server is being replaced): their closing
    /// results, for the client.
    pub fn end_listens(&mut self) -> Vec<Vec<u8>> {
        match self.listens.as_mut() {
            Some(l) => l.end_all().into_iter().map(|(_, _, line)| line).collect(),
            None => Vec::new(),
        }
    }

    /// Listens open now.
    pub fn listening(&self) -> usize {
        self.listens.as_ref().map_or(0, Listeners::len)
    }

    pub(super) fn listen_open(&mut self, id: &Id, params: Option<&str>) -> FromClient {
        let Some(listens) = self.listens.as_mut() else {
            return FromClient::Refuse(jsonrpc::error_response(
                Some(id),
                -32603,
                "subscriptions/listen: the server is not initialized",
                Value::Null,
            ));
        };
        let params: Option<Value> = params.and_then(|p| serde_json::from_str(p).ok());
        match listens.open(&(), id, params.as_ref()) {
            Ok(opened) => FromClient::Bridge(Consumed {
                to_server: opened.to_server,
                notify: vec![opened.ack],
                done: vec![id.clone()],
                ..Consumed::default()
            }),
            Err(refused) => FromClient::Refuse(jsonrpc::error_response(
                Some(id),
                super::super::INVALID_PARAMS,
                refused.message(),
                Value::Null,
            )),
        }
    }

    /// The client cancelled `listen`: `Some` with the relay's unsubscribes
    /// when it was an open listen.
    pub(super) fn listen_cancelled(&mut self, listen: &Id) -> Option<Consumed> {
        let listens = self.listens.as_mut()?;
        let before = listens.len();
        let to_server = listens.close(&(), listen);
        if listens.len() == before {
            return None;
        }
        Some(Consumed {
            to_server,
            ..Consumed::default()
        })
    }

    /// Whether a response answers one of the relay's own subscribe requests.
    pub(super) fn is_own_listen_reply(&self, id: &Id) -> bool {
        self.listens.is_some() && Listeners::<()>::is_own(id)
    }
}
