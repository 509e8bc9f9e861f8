//! JSON-RPC classification (`proto::jsonrpc`): `peek`, `peek_raw`, the
//! `Envelope` accessors, `Id` and `recover_id`, on one message line.
//!
//! Checks: no panic on any bytes; an `Id` survives `to_json` and back (and
//! `Display` is `to_json`); `from_raw` and `from_value` agree on string and
//! integer ids (cancellations match `params.requestId` against ids read
//! the other way); `error_response` and `cancelled` are valid JSON carrying
//! the same id; and `recover_id`, which the relay uses to answer a message
//! too large to parse from its first 4096 and last 512 bytes, never returns
//! an id other than the message's own, whatever the cuts (and finds it in
//! the whole message when nothing in it is escaped).
#![no_main]

use std::fmt;

use fuzz_util::Rng;
use libfuzzer_sys::fuzz_target;
use mcp_relay::proto::framing::{KEEP_HEAD, KEEP_TAIL};
use mcp_relay::proto::jsonrpc::{self, Envelope, Id, Kind, Message};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// How many top-level members are named `id` (escapes resolved).
struct IdKeys(usize);

impl<'de> Deserialize<'de> for IdKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdKeys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IdKeys, A::Error> {
                let mut n = 0;
                while let Some(k) = map.next_key::<String>()? {
                    n += usize::from(k == "id");
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(IdKeys(n))
            }
        }
        d.deserialize_map(V)
    }
}

fn check_id(id: &Id) {
    let text = id.to_json();
    assert_eq!(id.to_string(), text);
    let raw = RawValue::from_string(text.clone())
        .unwrap_or_else(|e| panic!("to_json gave invalid JSON {text:?}: {e}"));
    assert_eq!(&Id::from_raw(&*raw), id, "id changed through {text}");

    let err = jsonrpc::error_response(Some(id), -32600, "m\"\n", serde_json::json!({"k": 1}));
    match jsonrpc::peek(&err) {
        Ok(Message::Single(env)) => {
            // A response's id must be a string, a number or null (JSON-RPC):
            // with an object, array or boolean id it is no response.
            // An `Other` id may still be a string: one whose escapes do not
            // decode (a lone surrogate, `"\ud88b"`) is kept as its text.
            let json_rpc_id = match id {
                Id::Other(t) => matches!(t.as_bytes().first(), Some(b'-' | b'0'..=b'9' | b'"'))
                    || t.as_ref() == "null",
                _ => true,
            };
            let want = if json_rpc_id { Kind::Response } else { Kind::Invalid };
            assert_eq!(env.kind(), want, "error_response with id {text}");
            assert_eq!(env.id().as_ref(), Some(id), "error_response id");
        }
        _ => panic!(
            "error_response is not one JSON object: {:?}",
            String::from_utf8_lossy(&err)
        ),
    }
    // The relay cancels only ids it accepted as MCP ids: strings and
    // integers (`Other` ids come back from `param_id` re-serialised).
    if matches!(id, Id::Other(_)) {
        return;
    }
    let cancel = jsonrpc::cancelled(id, "r\u{0}\"");
    match jsonrpc::peek(&cancel) {
        Ok(Message::Single(env)) => {
            assert!(env.method_is("notifications/cancelled"));
            assert_eq!(
                env.param_id("requestId").as_ref(),
                Some(id),
                "cancelled requestId"
            );
        }
        _ => panic!("cancelled is not one JSON object"),
    }
}

fn check_envelope(env: &Envelope, text: &[u8], rng: &mut Rng) {
    let kind = env.kind();
    let _ = (env.method(), env.method_is("initialize"), env.is_response);
    let _ = (env.param_id("requestId"), env.param_id("progressToken"));
    let _ = (env.param_str("protocolVersion"), env.progress_token());
    // A request: a string method, a string or number id, no result/error.
    let method_is_string = env.method.is_some_and(|m| m.get().starts_with('"'));
    let id_is_mcp = env.id.is_some_and(|i| {
        matches!(i.get().as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9'))
    });
    // (And not a `notifications/` method: those are never requests.)
    let notification = env.method().is_some_and(|m| m.starts_with("notifications/"));
    assert_eq!(
        kind == Kind::Request,
        method_is_string && id_is_mcp && !env.is_response && !notification
    );
    let Some(raw) = env.id else {
        return;
    };
    let id = Id::from_raw(raw);
    assert_eq!(env.id().as_ref(), Some(&id));
    check_id(&id);

    // from_value agrees with from_raw on the id types MCP allows.
    // (A Value refuses numbers beyond f64, such as 1e400.)
    let value: Option<serde_json::Value> = serde_json::from_str(raw.get()).ok();
    if let Some(value) = value.filter(|v| v.is_string() || v.is_i64()) {
        assert_eq!(
            Id::from_value(&value),
            id,
            "from_value vs from_raw on {}",
            raw.get()
        );
    }

    // recover_id, on messages with exactly one top-level id.
    let Ok(IdKeys(1)) = serde_json::from_slice::<IdKeys>(text) else {
        return;
    };
    let whole = jsonrpc::recover_id(text, &[]);
    assert!(
        whole.is_none() || whole.as_ref() == Some(&id),
        "head scan: {whole:?}, id {id}"
    );
    let scalar = !raw.get().starts_with(['{', '[']);
    if scalar && !text.contains(&b'\\') {
        assert_eq!(whole.as_ref(), Some(&id), "head scan missed the id");
    }
    let tail = jsonrpc::recover_id(&[], text);
    assert!(
        tail.is_none() || tail.as_ref() == Some(&id),
        "tail scan: {tail:?}, id {id}"
    );
    // As the framing cuts an oversized line: a head and a tail of it.
    for _ in 0..4 {
        let h = rng.below(text.len() + 1).min(KEEP_HEAD);
        let t = rng.below(text.len() + 1).min(KEEP_TAIL);
        let got = jsonrpc::recover_id(&text[..h], &text[text.len() - t..]);
        assert!(
            got.is_none() || got.as_ref() == Some(&id),
            "recover_id(head {h}, tail {t}) gave {got:?}, the message's id is {id}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rng = Rng::from_data(data);
    match jsonrpc::peek(data) {
        Ok(Message::Single(env)) => check_envelope(&env, data, &mut rng),
        Ok(Message::Batch(items)) => {
            for raw in items {
                if let Some(env) = jsonrpc::peek_raw(raw) {
                    check_envelope(&env, raw.get().as_bytes(), &mut rng);
                }
            }
        }
        Err(_) => {}
    }
    // Arbitrary bytes as the head and tail of an oversized line.
    let cut = rng.below(data.len() + 1);
    let _ = jsonrpc::recover_id(&data[..cut], &data[cut..]);
});
