use super::*;

fn v(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

fn call_line(id: i64) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "ask", "arguments": {},
                      "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}})
    .to_string()
    .into_bytes()
}

fn input_required(id: i64, requests: Value, state: Option<&str>) -> Vec<u8> {
    let mut result = json!({"resultType": "input_required", "inputRequests": requests});
    if let Some(s) = state {
        result["requestState"] = json!(s);
    }
    json!({"jsonrpc": "2.0", "id": id, "result": result})
        .to_string()
        .into_bytes()
}

fn elicit(msg: &str) -> Value {
    json!({"method": "elicitation/create",
           "params": {"message": msg, "requestedSchema": {"type": "object"}}})
}

fn with_elicitation() -> StamperInput {
    let mut s = StamperInput::new(Limits::default());
    s.declare(&json!({"elicitation": {}}));
    s
}

fn answer(req: &[u8], result: Value) -> (Id, Vec<u8>) {
    let id = Id::Str(v(req)["id"].as_str().unwrap().into());
    let line = json!({"jsonrpc": "2.0", "id": v(req)["id"], "result": result})
        .to_string()
        .into_bytes();
    (id, line)
}

#[test]
fn an_input_required_result_becomes_requests_and_the_answers_a_retry() {
    let now = Instant::now();
    let mut s = with_elicitation();
    let id = Id::Num(7);
    s.sent(&id, "tools/call", &call_line(7));
    let out = s
        .on_result(
            &id,
            &input_required(
                7,
                json!({"a": elicit("name?"), "b": elicit("age?")}),
                Some("S1"),
            ),
            now,
        )
        .expect("taken");
    assert_eq!(out.retry, None);
    assert_eq!(out.answer, None);
    assert_eq!(out.to_client.len(), 2);
    let first = v(&out.to_client[0]);
    assert_eq!(first["method"], "elicitation/create");
    assert!(StamperInput::is_ask(&Id::Str(
        first["id"].as_str().unwrap().into()
    )));
    // The two answers, in any order; the retry comes with the last.
    let (a1, l1) = answer(
        &out.to_client[1],
        json!({"action": "accept", "content": {"n": 2}}),
    );
    assert_eq!(s.on_response(&a1, &l1), Some(Out::default()));
    let (a0, l0) = answer(&out.to_client[0], json!({"action": "decline"}));
    let out = s.on_response(&a0, &l0).expect("ours");
    let (rid, retry) = out.retry.expect("retried");
    assert_eq!(rid, id);
    let retry = v(&retry);
    assert_eq!(retry["id"], 7);
    assert_eq!(retry["method"], "tools/call");
    assert_eq!(retry["params"]["name"], "ask");
    assert_eq!(retry["params"]["requestState"], "S1");
    assert_eq!(
        retry["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
    // Keyed by the server's keys, not the relay's request ids.
    let first_key = if first["params"]["message"] == "name?" {
        "a"
    } else {
        "b"
    };
    assert_eq!(
        retry["params"]["inputResponses"][first_key],
        json!({"action": "decline"})
    );
    assert_eq!(s.stats.rounds, 1);
    // The final result passes, and the call is forgotten.
    let fin = br#"{"jsonrpc":"2.0","id":7,"result":{"content":[],"resultType":"complete"}}"#;
    assert_eq!(s.on_result(&id, fin, now), None);
    assert_eq!(s.asking(), 0);
    assert_eq!(s.on_response(&a0, &l0), None, "not ours any more");
}

#[test]
fn an_undeclared_capability_answers_the_call_with_an_error() {
    let now = Instant::now();
    let mut s = StamperInput::new(Limits::default());
    s.declare(&json!({"sampling": {}}));
    let id = Id::Num(1);
    s.sent(&id, "tools/call", &call_line(1));
    let out = s
        .on_result(
            &id,
            &input_required(1, json!({"a": elicit("x")}), None),
            now,
        )
        .unwrap();
    assert!(out.to_client.is_empty());
    let (aid, a) = out.answer.unwrap();
    assert_eq!(aid, id);
    assert_eq!(
        v(&a)["error"]["code"],
        super::super::MISSING_CLIENT_CAPABILITY
    );
    assert_eq!(s.stats.refused, 1);
}

#[test]
fn a_round_not_answered_in_time_expires_on_the_clock() {
    let t0 = Instant::now();
    let mut s = with_elicitation();
    let id = Id::Str("c".into());
    s.sent(&id, "prompts/get", &call_line(1));
    s.on_result(&id, &input_required(1, json!({"a": elicit("x")}), None), t0)
        .unwrap();
    assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(60)));
    assert!(s.expire(t0 + Duration::from_secs(59)).is_empty());
    let outs = s.expire(t0 + Duration::from_secs(60));
    assert_eq!(outs.len(), 1);
    let (aid, a) = outs[0].answer.clone().unwrap();
    assert_eq!(aid, id);
    assert_eq!(v(&a)["error"]["code"], -32603);
    assert_eq!(outs[0].to_client.len(), 1, "the open request cancelled");
    assert_eq!(
        v(&outs[0].to_client[0])["method"],
        "notifications/cancelled"
    );
    assert_eq!(s.stats.expired, 1);
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn the_clients_error_fails_the_call_and_a_cancel_forgets_it() {
    let now = Instant::now();
    let mut s = with_elicitation();
    let id = Id::Num(3);
    s.sent(&id, "tools/call", &call_line(3));
    let out = s
        .on_result(
            &id,
            &input_required(3, json!({"a": elicit("x"), "b": elicit("y")}), None),
            now,
        )
        .unwrap();
    let ask: Id = Id::Str(v(&out.to_client[0])["id"].as_str().unwrap().into());
    let err = json!({"jsonrpc": "2.0", "id": v(&out.to_client[0])["id"],
                     "error": {"code": -1, "message": "no user"}})
    .to_string();
    let out2 = s.on_response(&ask, err.as_bytes()).unwrap();
    let (_, a) = out2.answer.unwrap();
    assert!(
        v(&a)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no user")
    );
    assert_eq!(out2.to_client.len(), 1, "the other request cancelled");
    // Cancel: the open requests are cancelled at the client.
    let id2 = Id::Num(4);
    s.sent(&id2, "tools/call", &call_line(4));
    s.on_result(
        &id2,
        &input_required(4, json!({"a": elicit("x")}), None),
        now,
    )
    .unwrap();
    assert_eq!(s.cancel(&id2).len(), 1);
    assert_eq!(s.asking(), 0);
}

#[test]
fn rounds_and_inputs_are_bounded() {
    let now = Instant::now();
    let mut s = StamperInput::new(Limits {
        max_calls: 1,
        max_inputs: 2,
        max_rounds: 2,
        timeout: Duration::from_secs(1),
    });
    s.declare(&json!({"elicitation": {}}));
    let id = Id::Num(1);
    s.sent(&id, "tools/call", &call_line(1));
    // Calls that never came back (a relay timeout answered them) do not
    // hold the cap: the next call takes the place of one not asking.
    s.sent(&Id::Num(2), "tools/call", &call_line(2));
    assert!(
        s.on_result(
            &Id::Num(2),
            &input_required(2, json!({"a": elicit("x")}), None),
            now
        )
        .unwrap()
        .answer
        .is_none(),
        "call 2 was remembered"
    );
    // Now call 2 waits for the client: call 1 is not remembered past
    // max_calls, and its input_required is refused.
    s.sent(&id, "tools/call", &call_line(1));
    let out = s
        .on_result(
            &id,
            &input_required(1, json!({"a": elicit("x")}), None),
            now,
        )
        .unwrap();
    assert!(out.answer.is_some());
    s.cancel(&Id::Num(2));
    // Too many inputs at once.
    s.sent(&id, "tools/call", &call_line(1));
    let three = json!({"a": elicit("x"), "b": elicit("y"), "c": elicit("z")});
    assert!(
        s.on_result(&id, &input_required(1, three, None), now)
            .unwrap()
            .answer
            .is_some()
    );
    // Rounds: two carried, the third refused.
    s.sent(&id, "tools/call", &call_line(1));
    for round in 0..2 {
        let out = s
            .on_result(&id, &input_required(1, json!({}), Some("s")), now)
            .unwrap();
        assert!(
            out.retry.is_some(),
            "round {round}: nothing to ask, retried at once"
        );
    }
    let out = s
        .on_result(&id, &input_required(1, json!({}), Some("s")), now)
        .unwrap();
    assert!(out.answer.is_some());
    // Not a carrying method: never remembered.
    s.sent(&Id::Num(9), "tools/list", b"{}");
    assert!(
        s.on_result(
            &Id::Num(9),
            &input_required(9, json!({"a": elicit("x")}), None),
            now
        )
        .unwrap()
        .answer
        .is_some()
    );
}
