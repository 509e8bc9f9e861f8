//! Tests of the `subscriptions/listen` table.

use super::*;

fn v(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

fn caps() -> ServerCaps {
    ServerCaps::from_capabilities(&json!({
        "tools": {"listChanged": true},
        "resources": {"subscribe": true, "listChanged": true},
    }))
}

fn listen(uris: &[&str]) -> Value {
    json!({"notifications": {"toolsListChanged": true, "promptsListChanged": true, "resourceSubscriptions": uris}})
}

fn limits() -> Limits {
    Limits {
        max_listeners: 3,
        max_uris_per_listener: 2,
        max_uris: 3,
    }
}

#[test]
fn a_listen_is_acknowledged_with_what_the_server_can_honor_and_subscribes_once() {
    let mut t: Listeners<u32> = Listeners::new(caps(), limits());
    let o = t
        .open(&1, &Id::Num(5), Some(&listen(&["file:///a"])))
        .unwrap();
    let ack = v(&o.ack);
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(ack["params"]["_meta"][META_SUBSCRIPTION_ID], 5);
    // No prompts capability: promptsListChanged is not acknowledged.
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true, "resourceSubscriptions": ["file:///a"]})
    );
    assert_eq!(o.to_server.len(), 1);
    let s = v(&o.to_server[0]);
    assert_eq!(
        (s["method"].clone(), s["params"]["uri"].clone()),
        (json!("resources/subscribe"), json!("file:///a"))
    );
    assert!(Listeners::<u32>::is_own(&Id::from_value(&s["id"])));
    assert!(!Listeners::<u32>::is_own(&Id::Num(1)));
    // A second listener on the same URI: no second subscribe.
    let o = t
        .open(&2, &Id::Str("L".into()), Some(&listen(&["file:///a"])))
        .unwrap();
    assert!(o.to_server.is_empty());
    assert_eq!(t.subscribed(), 1);
    // The last one to leave unsubscribes.
    assert!(t.close(&1, &Id::Num(5)).is_empty());
    let un = t.close(&2, &Id::Str("L".into()));
    assert_eq!(v(&un[0])["method"], "resources/unsubscribe");
    assert_eq!(t.subscribed(), 0);
    assert!(
        t.close(&2, &Id::Str("L".into())).is_empty(),
        "closing twice is harmless"
    );
}

#[test]
fn notifications_fan_out_only_to_listens_that_asked_each_stamped_with_its_id() {
    let mut t: Listeners<u32> = Listeners::new(caps(), limits());
    t.open(&1, &Id::Num(5), Some(&listen(&["file:///a"])))
        .unwrap();
    t.open(
        &2,
        &Id::Num(5),
        Some(&json!({"notifications": {"resourceSubscriptions": ["file:///b"]}})),
    )
    .unwrap();
    let out = t.on_server_notification("notifications/tools/list_changed", None);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 1);
    assert_eq!(v(&out[0].2)["params"]["_meta"][META_SUBSCRIPTION_ID], 5);
    let up = json!({"uri": "file:///b", "_meta": {"k": 1}});
    let out = t.on_server_notification("notifications/resources/updated", Some(&up));
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].0, 2,
        "session 1 did not subscribe to b: nothing crosses"
    );
    let m = v(&out[0].2);
    assert_eq!(
        (
            m["params"]["uri"].clone(),
            m["params"]["_meta"]["k"].clone()
        ),
        (json!("file:///b"), json!(1))
    );
    assert!(
        t.on_server_notification("notifications/message", Some(&json!({})))
            .is_empty()
    );
    assert!(
        t.on_server_notification("notifications/resources/updated", None)
            .is_empty()
    );
    let odd = json!({"uri": "file:///b", "_meta": 3});
    let out = t.on_server_notification("notifications/resources/updated", Some(&odd));
    assert_eq!(v(&out[0].2)["params"]["_meta"][META_SUBSCRIPTION_ID], 5);
}

#[test]
fn listens_past_a_limit_or_malformed_are_refused_and_change_nothing() {
    let mut t: Listeners<u32> = Listeners::new(caps(), limits());
    assert_eq!(t.open(&1, &Id::Num(1), None), Err(Refused::BadFilter));
    assert_eq!(
        t.open(
            &1,
            &Id::Num(1),
            Some(&json!({"notifications": {"resourceSubscriptions": [1]}}))
        ),
        Err(Refused::BadFilter)
    );
    assert_eq!(
        t.open(&1, &Id::Num(1), Some(&listen(&["a", "b", "c"]))),
        Err(Refused::TooManyUris)
    );
    t.open(&1, &Id::Num(1), Some(&listen(&["a", "b"]))).unwrap();
    assert_eq!(
        t.open(&1, &Id::Num(1), Some(&listen(&[]))),
        Err(Refused::Duplicate)
    );
    assert_eq!(
        t.open(&2, &Id::Num(1), Some(&listen(&["c", "d"]))),
        Err(Refused::TooManyUris)
    );
    assert_eq!(t.subscribed(), 2);
    t.open(&2, &Id::Num(1), Some(&listen(&["c"]))).unwrap();
    t.open(&3, &Id::Num(1), Some(&listen(&[]))).unwrap();
    assert_eq!(
        t.open(&4, &Id::Num(1), Some(&listen(&[]))),
        Err(Refused::TooManyListeners)
    );
    assert!(!Refused::TooManyListeners.message().is_empty());
}

#[test]
fn a_server_without_subscribe_gets_no_subscribe_requests() {
    let mut t: Listeners<u32> = Listeners::new(ServerCaps::default(), Limits::default());
    let o = t.open(&1, &Id::Num(1), Some(&listen(&["a"]))).unwrap();
    assert!(o.to_server.is_empty());
    assert_eq!(v(&o.ack)["params"]["notifications"], json!({}));
}

#[test]
fn a_session_ending_releases_its_listens_and_the_server_ending_closes_all() {
    let mut t: Listeners<u32> = Listeners::new(caps(), Limits::default());
    t.open(&1, &Id::Num(1), Some(&listen(&["a"]))).unwrap();
    t.open(&1, &Id::Num(2), Some(&listen(&["b"]))).unwrap();
    t.open(&2, &Id::Num(1), Some(&listen(&["b"]))).unwrap();
    let un = t.drop_owner(&1);
    assert_eq!(un.len(), 1, "b is still held by session 2");
    assert_eq!(v(&un[0])["params"]["uri"], "a");
    assert_eq!(t.len(), 1);
    let ends = t.end_all();
    assert_eq!(ends.len(), 1);
    let m = v(&ends[0].2);
    assert_eq!(
        (m["id"].clone(), m["result"]["resultType"].clone()),
        (json!(1), json!("complete"))
    );
    assert!(t.is_empty() && t.subscribed() == 0);
}

#[test]
fn legacy_subscriptions_fold_into_one_filter() {
    let mut s = LegacySubscriptions::default();
    assert_eq!(s.subscribe("a", 2), Ok(true));
    assert_eq!(s.subscribe("a", 2), Ok(false));
    assert_eq!(s.subscribe("b", 2), Ok(true));
    assert_eq!(s.subscribe("c", 2), Err(Refused::TooManyUris));
    let f = Filter::from_params(Some(&json!({"notifications": s.filter()}))).unwrap();
    assert!(f.tools && f.prompts && f.resources);
    assert_eq!(f.uris.into_iter().collect::<Vec<_>>(), vec!["a", "b"]);
    assert!(s.unsubscribe("a") && !s.unsubscribe("a"));
}
