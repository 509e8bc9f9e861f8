//! Tests of a bridged link's input bridge and listens.

use super::*;

/// A link bridged by the relay's own initialize.
fn bridged(t0: Instant) -> Link {
    let mut l = Link::new(UpstreamProtocol::Legacy, PROBE_TIMEOUT, t0);
    send(&mut l, &req(0, "server/discover", ""), t0);
    let id = init_id(&l);
    l.on_server_response(&Id::Str(id.clone().into()), &init_ok(&id), t0)
        .unwrap();
    l
}

fn elicit(l: &mut Link, sid: &str, t0: Instant) -> Option<Consumed> {
    let p = json!({"message": "who?", "requestedSchema": {"type": "object", "properties": {}}});
    l.on_server_request(
        Id::Str(sid.into()),
        "elicitation/create",
        Some(&p),
        t0,
        || "state-1".into(),
    )
}

#[test]
fn a_server_request_becomes_an_input_required_round_and_the_result_reaches_the_retry() {
    let t0 = Instant::now();
    let mut l = bridged(t0);
    let call = req(7, "tools/call", r#""name":"ask","arguments":{},"#);
    assert!(matches!(send(&mut l, &call, t0), FromClient::Send(_)));
    let c = elicit(&mut l, "s1", t0).unwrap();
    assert!(c.to_server.is_empty());
    let (leg, line) = &c.to_client[0];
    assert_eq!(*leg, Id::Num(7));
    let m = v(line);
    assert_eq!(m["result"]["resultType"], "input_required");
    assert_eq!(
        m["result"]["inputRequests"]["r1"]["method"],
        "elicitation/create"
    );
    // The front stops tracking 7 (answered); the call goes on at the server.
    l.forget(&Id::Num(7));
    // A second request of the same call waits for the retry.
    let c = elicit(&mut l, "s2", t0).unwrap();
    assert_eq!(c, Consumed::default());
    let retry = req(
        8,
        "tools/call",
        r#""name":"ask","arguments":{},"requestState":"state-1","inputResponses":{"r1":{"action":"accept","content":{"n":"x"}}},"#,
    );
    let FromClient::Bridge(c) = send(&mut l, &retry, t0) else {
        panic!("retry not taken")
    };
    let r = v(&c.to_server[0]);
    assert_eq!(
        (r["id"].clone(), r["result"]["action"].clone()),
        (json!("s1"), json!("accept"))
    );
    // The queued request goes out at once on the retry's leg.
    assert_eq!(c.to_client[0].0, Id::Num(8));
    assert!(
        v(&c.to_client[0].1)["result"]["inputRequests"]
            .get("r2")
            .is_some()
    );
    l.forget(&Id::Num(8));
    let retry = req(
        9,
        "tools/call",
        r#""requestState":"state-1","inputResponses":{"r2":{"action":"decline"}},"#,
    );
    let FromClient::Bridge(c) = send(&mut l, &retry, t0) else {
        panic!()
    };
    assert_eq!(v(&c.to_server[0])["id"], "s2");
    assert!(c.to_client.is_empty(), "leg 9 waits for the result");
    // The call's result, under the call's id, goes to leg 9, complete.
    let done = br#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"x"}]}}"#;
    let c = l.on_server_response(&Id::Num(7), done, t0).unwrap();
    let m = v(&c.to_client[0].1);
    assert_eq!(
        (m["id"].clone(), m["result"]["resultType"].clone()),
        (json!(9), json!("complete"))
    );
    assert!(
        l.calls.is_empty() && l.kept.is_empty(),
        "nothing left behind"
    );
}

#[test]
fn server_requests_without_a_call_or_not_for_input_are_not_carried() {
    let t0 = Instant::now();
    let mut l = bridged(t0);
    let c = elicit(&mut l, "s1", t0).unwrap();
    let e = v(&c.to_server[0]);
    assert_eq!(
        (e["id"].clone(), e["error"]["code"].clone()),
        (json!("s1"), json!(-32603))
    );
    assert!(
        l.on_server_request(Id::Num(1), "ping", None, t0, || "x".into())
            .is_none()
    );
    // Not bridged: the front passes server requests on.
    let mut pass = Link::new(UpstreamProtocol::Modern, PROBE_TIMEOUT, t0);
    send(&mut pass, &req(0, "tools/call", ""), t0);
    assert!(elicit(&mut pass, "s1", t0).is_none());
    // A listing is no carrier.
    send(&mut l, &req(3, "tools/list", ""), t0);
    assert!(!elicit(&mut l, "s2", t0).unwrap().to_server.is_empty());
}

#[test]
fn a_cancelled_or_timed_out_leg_cancels_the_call_at_the_server() {
    let t0 = Instant::now();
    let mut l = bridged(t0);
    send(&mut l, &req(7, "tools/call", r#""name":"ask","#), t0);
    elicit(&mut l, "s1", t0).unwrap();
    l.forget(&Id::Num(7));
    let retry = req(
        8,
        "tools/call",
        r#""requestState":"state-1","inputResponses":{"r1":{}},"#,
    );
    send(&mut l, &retry, t0);
    let cancel = Msg {
        line: br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":8}}"#
            .to_vec(),
        method: Some("notifications/cancelled".into()),
        params: Some(r#"{"requestId":8}"#.into()),
        id: None,
    };
    let FromClient::Bridge(c) = send(&mut l, &cancel, t0) else {
        panic!()
    };
    let m = v(c.to_server.last().unwrap());
    assert_eq!(
        (m["method"].clone(), m["params"]["requestId"].clone()),
        (json!("notifications/cancelled"), json!(7))
    );
    assert!(l.calls.is_empty());
    // A timed-out leg (the front's response timer) does the same.
    send(&mut l, &req(10, "tools/call", r#""name":"ask","#), t0);
    elicit(&mut l, "s3", t0).unwrap();
    l.forget(&Id::Num(10));
    send(
        &mut l,
        &req(
            11,
            "tools/call",
            r#""requestState":"state-1","inputResponses":{"r1":{}},"#,
        ),
        t0,
    );
    let c = l.on_leg_gone(&Id::Num(11)).unwrap();
    assert_eq!(v(c.to_server.last().unwrap())["params"]["requestId"], 10);
    assert!(l.on_leg_gone(&Id::Num(11)).is_none());
    // A cancellation of anything else passes.
    assert!(matches!(send(&mut l, &cancel, t0), FromClient::Send(_)));
}

#[test]
fn an_unknown_request_state_is_refused_and_an_unanswered_round_expires() {
    let t0 = Instant::now();
    let mut l = bridged(t0);
    let FromClient::Refuse(e) = send(
        &mut l,
        &req(4, "tools/call", r#""requestState":"forged","#),
        t0,
    ) else {
        panic!()
    };
    assert_eq!(v(&e)["error"]["code"], -32602);
    send(&mut l, &req(7, "tools/call", r#""name":"ask","#), t0);
    elicit(&mut l, "s1", t0).unwrap();
    l.forget(&Id::Num(7));
    let at = l.input_deadline().unwrap();
    assert_eq!(
        l.on_input_tick(at - Duration::from_millis(1)),
        Consumed::default()
    );
    let c = l.on_input_tick(at);
    assert_eq!(v(&c.to_server[0])["id"], "s1");
    assert_eq!(v(&c.to_server[1])["method"], "notifications/cancelled");
    assert_eq!(l.input_stats().expired, 1);
    assert!(l.calls.is_empty() && l.kept.is_empty());
}

#[test]
fn listens_are_acknowledged_mapped_onto_subscribe_and_fed_the_servers_notifications() {
    let t0 = Instant::now();
    let mut l = Link::new(UpstreamProtocol::Legacy, PROBE_TIMEOUT, t0);
    send(&mut l, &req(0, "server/discover", ""), t0);
    let id = init_id(&l);
    let init = json!({"jsonrpc": "2.0", "id": id, "result": {
        "protocolVersion": "2025-11-25",
        "capabilities": {"tools": {"listChanged": true}, "resources": {"subscribe": true}},
        "serverInfo": {"name": "s", "version": "1"},
    }});
    l.on_server_response(&Id::Str(id.clone().into()), init.to_string().as_bytes(), t0)
        .unwrap();
    let listen = Msg {
        id: Some(Id::Str("listen-1".into())),
        ..req(
            0,
            "subscriptions/listen",
            r#""notifications":{"toolsListChanged":true,"resourceSubscriptions":["file:///a"]},"#,
        )
    };
    let FromClient::Bridge(c) = send(&mut l, &listen, t0) else {
        panic!("listen not taken")
    };
    assert_eq!(
        c.done,
        vec![Id::Str("listen-1".into())],
        "no response timeout on an open listen"
    );
    let ack = v(&c.notify[0]);
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "listen-1"
    );
    let sub = v(&c.to_server[0]);
    assert_eq!(sub["method"], "resources/subscribe");
    assert_eq!(l.listening(), 1);
    // The server's answer to the relay's subscribe is the relay's.
    let own = Id::from_value(&sub["id"]);
    let reply = format!(r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#, sub["id"]);
    assert_eq!(
        l.on_server_response(&own, reply.as_bytes(), t0),
        Some(Consumed::default())
    );
    // Events go to the listen, stamped; unasked kinds are dropped; others pass.
    let c = l
        .on_server_notification(
            "notifications/resources/updated",
            Some(r#"{"uri":"file:///a"}"#),
        )
        .unwrap();
    assert_eq!(
        v(&c.notify[0])["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "listen-1"
    );
    let c = l
        .on_server_notification("notifications/prompts/list_changed", None)
        .unwrap();
    assert!(c.notify.is_empty());
    assert!(
        l.on_server_notification("notifications/progress", Some("{}"))
            .is_none()
    );
    // The client ends it: the relay unsubscribes; the server never hears of the listen.
    let cancel = Msg {
        line: br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"listen-1"}}"#.to_vec(),
        method: Some("notifications/cancelled".into()),
        params: Some(r#"{"requestId":"listen-1"}"#.into()),
        id: None,
    };
    let FromClient::Bridge(c) = send(&mut l, &cancel, t0) else {
        panic!()
    };
    assert_eq!(v(&c.to_server[0])["method"], "resources/unsubscribe");
    assert_eq!(l.listening(), 0);
    // A listen still open when the server is replaced ends gracefully.
    send(&mut l, &listen, t0);
    let ends = l.end_listens();
    assert_eq!(v(&ends[0])["id"], "listen-1");
    assert_eq!(v(&ends[0])["result"]["resultType"], "complete");
    // A malformed filter is refused.
    let bad = req(5, "subscriptions/listen", r#""notifications":3,"#);
    let FromClient::Refuse(e) = send(&mut l, &bad, t0) else {
        panic!()
    };
    assert_eq!(v(&e)["error"]["code"], -32602);
    // Not bridged: notifications are not the link's.
    let mut pass = Link::new(UpstreamProtocol::Modern, PROBE_TIMEOUT, t0);
    assert!(
        pass.on_server_notification("notifications/tools/list_changed", None)
            .is_none()
    );
}
