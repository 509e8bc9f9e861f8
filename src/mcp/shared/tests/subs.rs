//! The mux's resource subscriptions (`subs.rs`): who gets an update, the
//! per-process cap, and what an ended session unsubscribes.

use super::*;

#[test]
fn resource_updates_go_to_their_subscribers_only() {
    let mut m = Mux::new();
    let sub = |id: u32, uri: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"resources/subscribe","params":{{"uri":"{uri}"}}}}"#
        )
    };
    let unsub = |id: u32, uri: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"resources/unsubscribe","params":{{"uri":"{uri}"}}}}"#
        )
    };
    let updated = br#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///a"}}"#;
    // Nobody subscribed: nobody gets it.
    assert_eq!(one(m.down(updated)), Down::Dropped(Dropped::Unattributed));
    let a = upstream_id(&sent(m.up(1, sub(1, "file:///a").as_bytes())));
    let b = upstream_id(&sent(m.up(2, sub(1, "file:///a").as_bytes())));
    sent(m.up(3, sub(1, "file:///other").as_bytes()));
    for n in [a, b] {
        m.down(format!(r#"{{"jsonrpc":"2.0","id":{n},"result":{{}}}}"#).as_bytes());
    }
    assert_eq!(
        one(m.down(updated)),
        Down::ToSessions {
            sessions: vec![1, 2],
            msg: updated.to_vec()
        }
    );
    // Session 1 unsubscribes while 2 keeps the URI: answered here, not sent
    // (it would end 2's subscription at the server).
    let Up::Answer(ok) = m.up(1, unsub(2, "file:///a").as_bytes()) else {
        panic!("the unsubscribe should be answered by the relay")
    };
    assert_eq!(json(&ok)["id"], 2);
    assert!(json(&ok)["result"].is_object());
    assert_eq!(
        one(m.down(updated)),
        Down::ToSessions {
            sessions: vec![2],
            msg: updated.to_vec()
        }
    );
    // The last subscriber's session ends: the relay unsubscribes for it.
    let out = m.end_session(2);
    assert_eq!(out.len(), 1, "{out:?}");
    let v = json(&out[0]);
    assert_eq!(v["method"], "resources/unsubscribe");
    assert_eq!(v["params"]["uri"], "file:///a");
    assert!(v["id"].is_string(), "outside the upstream id space: {v}");
    assert_eq!(one(m.down(updated)), Down::Dropped(Dropped::Unattributed));
    // The last subscriber's own unsubscribe goes to the server.
    sent(m.up(3, unsub(2, "file:///other").as_bytes()));
}

#[test]
fn subscriptions_are_capped_per_process() {
    let mut m = Mux::new();
    for i in 0..MAX_SUBSCRIPTIONS {
        let s = format!(
            r#"{{"jsonrpc":"2.0","id":{i},"method":"resources/subscribe","params":{{"uri":"u{i}"}}}}"#
        );
        let n = upstream_id(&sent(m.up(1, s.as_bytes())));
        m.down(format!(r#"{{"jsonrpc":"2.0","id":{n},"result":{{}}}}"#).as_bytes());
    }
    let over = br#"{"jsonrpc":"2.0","id":"over","method":"resources/subscribe","params":{"uri":"one-more"}}"#;
    let Up::Reject(e) = m.up(2, over) else {
        panic!("over the cap")
    };
    assert_eq!(json(&e)["error"]["data"]["kind"], "queue_full");
    // Ending the session frees them all.
    assert_eq!(m.end_session(1).len(), MAX_SUBSCRIPTIONS);
    sent(m.up(2, over));
}
