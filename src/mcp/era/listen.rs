//! `subscriptions/listen` in front of a handshake-era server.
//!
//! A modern client opens a long-lived `subscriptions/listen` request naming
//! what it wants: `toolsListChanged`, `promptsListChanged`,
//! `resourcesListChanged`, `resourceSubscriptions: [uri, …]`. A handshake-era
//! server sends list-changed notifications unasked (when its capabilities say
//! `listChanged`) and `notifications/resources/updated` for the URIs it was
//! sent `resources/subscribe` for. The table:
//!
//! - on `open`: acknowledges the listen with the subset the server can honor
//!   (`notifications/subscriptions/acknowledged`, first on the stream), and
//!   subscribes the server to each URI no other listener holds;
//! - on a server notification: fans it out to the listeners that asked for
//!   it, each copy carrying its listen's id in
//!   `_meta["io.modelcontextprotocol/subscriptionId"]`;
//! - on `close` (the client cancelled or closed the stream) and `drop_owner`
//!   (its session ended): unsubscribes the URIs no listener holds any more.
//!
//! URIs are reference-counted across listeners (shared mode: many sessions,
//! one server). Bounded by [`Limits`]; a listen past a bound is refused.
//! `LegacySubscriptions` is the other direction: a handshake-era client's
//! `resources/subscribe` calls folded into the filter of the relay's one
//! listen toward a modern server.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};

use super::META_SUBSCRIPTION_ID;
use crate::proto::jsonrpc::Id;

/// The server notifications that belong to listens in the modern era
/// (each mode delivers them on its listens only).
pub fn is_listen_event(method: &str) -> bool {
    matches!(
        method,
        "notifications/tools/list_changed"
            | "notifications/prompts/list_changed"
            | "notifications/resources/list_changed"
            | "notifications/resources/updated"
    )
}

/// Prefix of the ids of the relay's own `resources/subscribe` and
/// `unsubscribe` requests (their answers are the relay's, never a client's).
pub const OWN_ID_PREFIX: &str = "mcp-relay-sub-";

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Listens open at once.
    pub max_listeners: usize,
    /// URIs in one listen's `resourceSubscriptions`.
    pub max_uris_per_listener: usize,
    /// Distinct URIs subscribed at the server.
    pub max_uris: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_listeners: 1024,
            max_uris_per_listener: 256,
            max_uris: 4096,
        }
    }
}

/// What a listen asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub tools: bool,
    pub prompts: bool,
    pub resources: bool,
    pub uris: BTreeSet<String>,
}

impl Filter {
    /// From a `subscriptions/listen` request's params.
    pub fn from_params(params: Option<&Value>) -> Option<Filter> {
        let n = params?.get("notifications")?.as_object()?;
        let flag = |k: &str| n.get(k).and_then(Value::as_bool).unwrap_or(false);
        let uris = match n.get("resourceSubscriptions") {
            None | Some(Value::Null) => BTreeSet::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|u| u.as_str().map(str::to_string))
                .collect::<Option<_>>()?,
            Some(_) => return None,
        };
        Some(Filter {
            tools: flag("toolsListChanged"),
            prompts: flag("promptsListChanged"),
            resources: flag("resourcesListChanged"),
            uris,
        })
    }

    pub fn to_value(&self) -> Value {
        let mut o = serde_json::Map::new();
        for (k, on) in [
            ("toolsListChanged", self.tools),
            ("promptsListChanged", self.prompts),
            ("resourcesListChanged", self.resources),
        ] {
            if on {
                o.insert(k.into(), Value::Bool(true));
            }
        }
        if !self.uris.is_empty() {
            o.insert("resourceSubscriptions".into(), json!(self.uris));
        }
        Value::Object(o)
    }
}

/// What the server can send, from its `InitializeResult` capabilities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCaps {
    pub tools: bool,
    pub prompts: bool,
    pub resources: bool,
    pub subscribe: bool,
}

impl ServerCaps {
    pub fn from_capabilities(caps: &Value) -> ServerCaps {
        let f = |a: &str, b: &str| {
            caps.get(a)
                .and_then(|c| c.get(b))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        ServerCaps {
            tools: f("tools", "listChanged"),
            prompts: f("prompts", "listChanged"),
            resources: f("resources", "listChanged"),
            subscribe: f("resources", "subscribe"),
        }
    }
}

/// Why a listen was refused (answered -32602 with this message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    BadFilter,
    Duplicate,
    TooManyListeners,
    TooManyUris,
}

impl Refused {
    pub fn message(self) -> &'static str {
        match self {
            Refused::BadFilter => {
                "subscriptions/listen: params.notifications is not a valid filter"
            }
            Refused::Duplicate => "subscriptions/listen: a listen with this id is already open",
            Refused::TooManyListeners => {
                "subscriptions/listen: too many listens open on this upstream"
            }
            Refused::TooManyUris => "subscriptions/listen: too many resource subscriptions",
        }
    }
}

/// An accepted listen: the acknowledgement for the client, then the
/// relay's own requests for the server.
#[derive(Debug, PartialEq)]
pub struct Opened {
    pub ack: Vec<u8>,
    pub to_server: Vec<Vec<u8>>,
}

pub struct Listeners<K> {
    open: Vec<(K, Id, Filter)>,
    core: Core,
}

/// What does not depend on who owns a listen: the server's capabilities,
/// the limits and the URIs subscribed at the server. Kept apart so that its
/// code is compiled once, not once per owner type.
struct Core {
    caps: ServerCaps,
    limits: Limits,
    refs: HashMap<String, usize>,
    next_id: u64,
}

impl<K: PartialEq + Clone> Listeners<K> {
    pub fn new(caps: ServerCaps, limits: Limits) -> Listeners<K> {
        Listeners {
            open: Vec::new(),
            core: Core {
                caps,
                limits,
                refs: HashMap::new(),
                next_id: 0,
            },
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// URIs subscribed at the server.
    pub fn subscribed(&self) -> usize {
        self.core.refs.len()
    }

    pub fn open(
        &mut self,
        owner: &K,
        listen: &Id,
        params: Option<&Value>,
    ) -> Result<Opened, Refused> {
        let asked = Filter::from_params(params).ok_or(Refused::BadFilter)?;
        if self.open.iter().any(|(o, i, _)| o == owner && i == listen) {
            return Err(Refused::Duplicate);
        }
        let (opened, honored) = self.core.admit(asked, listen, self.open.len())?;
        self.open.push((owner.clone(), listen.clone(), honored));
        Ok(opened)
    }

    /// The listen ended (cancelled, its stream closed). The relay's
    /// `resources/unsubscribe` requests for the server.
    pub fn close(&mut self, owner: &K, listen: &Id) -> Vec<Vec<u8>> {
        let Some(i) = self
            .open
            .iter()
            .position(|(o, l, _)| o == owner && l == listen)
        else {
            return Vec::new();
        };
        let (_, _, f) = self.open.swap_remove(i);
        self.core.release(&f)
    }

    /// Every listen of `owner` ended (its session did).
    pub fn drop_owner(&mut self, owner: &K) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(i) = self.open.iter().position(|(o, _, _)| o == owner) {
            let (_, _, f) = self.open.swap_remove(i);
            out.extend(self.core.release(&f));
        }
        out
    }

    /// The server is gone: every listen ends gracefully (its result is an
    /// empty complete result), nothing is left subscribed.
    pub fn end_all(&mut self) -> Vec<(K, Id, Vec<u8>)> {
        self.core.refs.clear();
        self.open
            .drain(..)
            .map(|(o, l, _)| {
                let line = json!({"jsonrpc": "2.0", "id": id_value(&l), "result": {"resultType": "complete", "_meta": {}}});
                (o, l, line.to_string().into_bytes())
            })
            .collect()
    }

    /// A notification from the server: one stamped copy per listen that
    /// asked for it. Empty when nobody did (or it is not a listen event).
    pub fn on_server_notification(
        &self,
        method: &str,
        params: Option<&Value>,
    ) -> Vec<(K, Id, Vec<u8>)> {
        let uri = params.and_then(|p| p.get("uri")).and_then(Value::as_str);
        let wants = |f: &Filter| match method {
            "notifications/tools/list_changed" => f.tools,
            "notifications/prompts/list_changed" => f.prompts,
            "notifications/resources/list_changed" => f.resources,
            "notifications/resources/updated" => uri.is_some_and(|u| f.uris.contains(u)),
            _ => false,
        };
        self.open
            .iter()
            .filter(|(_, _, f)| wants(f))
            .map(|(o, l, _)| {
                (
                    o.clone(),
                    l.clone(),
                    stamped_notification(method, params, l),
                )
            })
            .collect()
    }

    /// Whether a response answers one of the relay's own requests (it is
    /// dropped, never delivered).
    pub fn is_own(id: &Id) -> bool {
        matches!(id, Id::Str(s) if s.starts_with(OWN_ID_PREFIX))
    }
}

impl Core {
    /// A listen's filter admitted, or refused: what the server can honor,
    /// the ack for the client and the server's new subscriptions.
    fn admit(
        &mut self,
        asked: Filter,
        listen: &Id,
        open: usize,
    ) -> Result<(Opened, Filter), Refused> {
        if open >= self.limits.max_listeners {
            return Err(Refused::TooManyListeners);
        }
        // What the server can honor.
        let honored = Filter {
            tools: asked.tools && self.caps.tools,
            prompts: asked.prompts && self.caps.prompts,
            resources: asked.resources && self.caps.resources,
            uris: if self.caps.subscribe {
                asked.uris
            } else {
                BTreeSet::new()
            },
        };
        let new_uris = honored
            .uris
            .iter()
            .filter(|u| !self.refs.contains_key(*u))
            .count();
        if honored.uris.len() > self.limits.max_uris_per_listener
            || self.refs.len() + new_uris > self.limits.max_uris
        {
            return Err(Refused::TooManyUris);
        }
        let mut to_server = Vec::new();
        for u in &honored.uris {
            let n = self.refs.entry(u.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                to_server.push(self.own_request("resources/subscribe", u));
            }
        }
        let ack = crate::proto::object::object([
            ("jsonrpc", Value::from("2.0")),
            (
                "method",
                Value::from("notifications/subscriptions/acknowledged"),
            ),
            (
                "params",
                crate::proto::object::object([
                    ("notifications", honored.to_value()),
                    (
                        "_meta",
                        crate::proto::object::object([(META_SUBSCRIPTION_ID, id_value(listen))]),
                    ),
                ]),
            ),
        ]);
        Ok((
            Opened {
                ack: ack.to_string().into_bytes(),
                to_server,
            },
            honored,
        ))
    }

    fn release(&mut self, f: &Filter) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for u in &f.uris {
            if let Some(n) = self.refs.get_mut(u) {
                *n -= 1;
                if *n == 0 {
                    self.refs.remove(u);
                    out.push(self.own_request("resources/unsubscribe", u));
                }
            }
        }
        out
    }

    fn own_request(&mut self, method: &str, uri: &str) -> Vec<u8> {
        self.next_id += 1;
        let id = format!("{OWN_ID_PREFIX}{}", self.next_id);
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"uri": uri}})
            .to_string()
            .into_bytes()
    }
}

/// A handshake-era client's subscriptions toward a modern server: the
/// relay keeps one listen whose filter is their union, re-opened when it
/// changes. List-changed notifications are always asked for (a
/// handshake-era server sends them unasked, so its clients expect them).
#[derive(Debug, Clone, Default)]
pub struct LegacySubscriptions {
    uris: BTreeSet<String>,
}

impl LegacySubscriptions {
    /// `resources/subscribe`: true when the filter changed. `Err` past
    /// `max` URIs (answered -32602, nothing changes).
    pub fn subscribe(&mut self, uri: &str, max: usize) -> Result<bool, Refused> {
        if self.uris.contains(uri) {
            return Ok(false);
        }
        if self.uris.len() >= max {
            return Err(Refused::TooManyUris);
        }
        Ok(self.uris.insert(uri.to_string()))
    }

    /// `resources/unsubscribe`: true when the filter changed.
    pub fn unsubscribe(&mut self, uri: &str) -> bool {
        self.uris.remove(uri)
    }

    /// No URI subscribed.
    pub fn is_empty(&self) -> bool {
        self.uris.is_empty()
    }

    /// The `notifications` member of the relay's listen request.
    pub fn filter(&self) -> Value {
        Filter {
            tools: true,
            prompts: true,
            resources: true,
            uris: self.uris.clone(),
        }
        .to_value()
    }
}

/// One listen's copy of a server notification: its params with the listen's
/// id in `_meta`. Not generic over the listeners' owner type, so one copy
/// serves both fronts.
fn stamped_notification(method: &str, params: Option<&Value>, listen: &Id) -> Vec<u8> {
    let mut p = params
        .filter(|p| p.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(obj) = p.as_object_mut() {
        let meta = obj.entry("_meta").or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        if let Some(m) = meta.as_object_mut() {
            m.insert(META_SUBSCRIPTION_ID.into(), id_value(listen));
        }
    }
    let line = json!({"jsonrpc": "2.0", "method": method, "params": p});
    line.to_string().into_bytes()
}

fn id_value(id: &Id) -> Value {
    serde_json::from_str(&id.to_json()).unwrap_or(Value::Null)
}

#[cfg(test)]
#[path = "listen_tests.rs"]
mod tests;
