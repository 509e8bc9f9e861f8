//! Fake-clock tests of the `InputRequiredResult` bridge.

use super::*;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn bridge() -> Bridge<u32> {
    Bridge::new(Limits {
        max_entries: 2,
        max_inputs: 2,
        max_rounds: 3,
        timeout: T,
    })
}

fn v(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

fn id(n: i64) -> Id {
    Id::Num(n)
}

fn tok(n: &str) -> impl FnOnce() -> String + '_ {
    move || n.to_string()
}

fn ask(b: &mut Bridge<u32>, owner: u32, up: i64, leg: i64, sid: i64, now: Instant) -> Asked {
    let params = json!({"message": "name?", "requestedSchema": {"type": "object"}});
    b.on_server_request(
        &owner,
        &id(up),
        &id(leg),
        id(sid),
        "elicitation/create",
        Some(&params),
        now,
        tok("tok-a"),
    )
}

#[test]
fn a_server_request_answers_the_open_leg_with_input_required() {
    let t0 = Instant::now();
    let mut b = bridge();
    let Asked::Carried(out) = ask(&mut b, 1, 100, 7, 900, t0) else {
        panic!()
    };
    assert!(out.to_server.is_empty());
    assert_eq!(out.to_client.len(), 1);
    let (leg, line) = &out.to_client[0];
    assert_eq!(*leg, id(7));
    let m = v(line);
    assert_eq!(m["id"], 7);
    assert_eq!(m["result"]["resultType"], "input_required");
    assert_eq!(m["result"]["requestState"], "tok-a");
    assert_eq!(
        m["result"]["inputRequests"]["r1"]["method"],
        "elicitation/create"
    );
    assert_eq!(
        m["result"]["inputRequests"]["r1"]["params"]["message"],
        "name?"
    );
    assert_eq!(b.next_deadline(), Some(t0 + T));
}

#[test]
fn the_retry_answers_the_server_and_becomes_the_leg_the_result_goes_to() {
    let t0 = Instant::now();
    let mut b = bridge();
    ask(&mut b, 1, 100, 7, 900, t0);
    let retry = json!({"name": "t", "requestState": "tok-a", "inputResponses": {"r1": {"action": "accept", "content": {"n": "x"}}}});
    let Retried::Carried(out) = b.on_client_retry(&1, &id(8), &retry, t0) else {
        panic!()
    };
    assert!(out.to_client.is_empty());
    assert_eq!(out.to_server.len(), 1);
    let r = v(&out.to_server[0]);
    assert_eq!(r["id"], 900);
    assert_eq!(r["result"]["action"], "accept");
    assert_eq!(
        b.next_deadline(),
        None,
        "a leg is open: the request timeout applies"
    );
    // The call's result goes to the retry's id, marked complete.
    let done = br#"{"jsonrpc":"2.0","id":100,"result":{"content":[]}}"#;
    let out = b.on_server_response(&id(100), done).unwrap();
    assert_eq!(out.to_client.len(), 1);
    let m = v(&out.to_client[0].1);
    assert_eq!(
        (m["id"].clone(), m["result"]["resultType"].clone()),
        (json!(8), json!("complete"))
    );
    assert!(b.is_empty());
    // Not a bridged call any more: the caller delivers it.
    assert_eq!(b.on_server_response(&id(100), done), None);
}

#[test]
fn requests_asked_while_no_leg_is_open_wait_for_the_retry() {
    let t0 = Instant::now();
    let mut b = bridge();
    ask(&mut b, 1, 100, 7, 900, t0);
    let Asked::Carried(out) = ask(&mut b, 1, 100, 7, 901, t0) else {
        panic!()
    };
    assert_eq!(out, Out::default(), "queued, not sent");
    let retry = json!({"requestState": "tok-a", "inputResponses": {"r1": {"roots": []}}});
    let Retried::Carried(out) = b.on_client_retry(&1, &id(8), &retry, t0) else {
        panic!()
    };
    assert_eq!(out.to_server.len(), 1);
    assert_eq!(out.to_client.len(), 1, "the next round goes out at once");
    let m = v(&out.to_client[0].1);
    assert_eq!(m["id"], 8);
    assert!(m["result"]["inputRequests"].get("r2").is_some());
    assert!(m["result"]["inputRequests"].get("r1").is_none());
}

#[test]
fn a_result_arriving_between_legs_waits_for_the_retry() {
    let t0 = Instant::now();
    let mut b = bridge();
    ask(&mut b, 1, 100, 7, 900, t0);
    let out = b
        .on_server_response(&id(100), br#"{"jsonrpc":"2.0","id":100,"result":{"x":1}}"#)
        .unwrap();
    assert!(out.to_client.is_empty());
    // Its unanswered request is answered with an error: the call is over.
    assert_eq!(v(&out.to_server[0])["error"]["code"], -32603);
    let retry = json!({"requestState": "tok-a", "inputResponses": {}});
    let Retried::Carried(out) = b.on_client_retry(&1, &id(9), &retry, t0) else {
        panic!()
    };
    assert_eq!(v(&out.to_client[0].1)["result"]["x"], 1);
    assert!(b.is_empty());
}

#[test]
fn a_token_is_unknown_to_another_owner_and_after_use() {
    let t0 = Instant::now();
    let mut b = bridge();
    ask(&mut b, 1, 100, 7, 900, t0);
    let retry = json!({"requestState": "tok-a", "inputResponses": {"r1": {}}});
    assert_eq!(b.on_client_retry(&2, &id(8), &retry, t0), Retried::Unknown);
    assert_eq!(
        b.on_client_retry(&1, &id(8), &json!({"requestState": "nope"}), t0),
        Retried::Unknown
    );
    assert_eq!(
        b.on_client_retry(&1, &id(8), &json!({}), t0),
        Retried::Unknown
    );
    assert!(matches!(
        b.on_client_retry(&1, &id(8), &retry, t0),
        Retried::Carried(_)
    ));
    // A second retry while the leg is open is refused.
    assert_eq!(b.on_client_retry(&1, &id(9), &retry, t0), Retried::Unknown);
}

#[test]
fn limits_refuse_with_an_error_to_the_server() {
    let t0 = Instant::now();
    let mut b = bridge();
    ask(&mut b, 1, 100, 7, 900, t0);
    ask(&mut b, 1, 100, 7, 901, t0);
    let Asked::Refused(out) = ask(&mut b, 1, 100, 7, 902, t0) else {
        panic!("max_inputs")
    };
    assert_eq!(v(&out.to_server[0])["id"], 902);
    b.on_server_request(
        &1,
        &id(101),
        &id(8),
        id(903),
        "roots/list",
        None,
        t0,
        tok("tok-b"),
    );
    let r = b.on_server_request(
        &1,
        &id(102),
        &id(9),
        id(904),
        "roots/list",
        None,
        t0,
        tok("tok-c"),
    );
    assert!(matches!(r, Asked::Refused(_)), "max_entries");
    assert_eq!(b.stats.refused, 2);
    let r = b.on_server_request(
        &1,
        &id(102),
        &id(9),
        id(905),
        "ping",
        None,
        t0,
        tok("tok-c"),
    );
    assert_eq!(r, Asked::NotInput);
}

#[test]
fn a_client_that_never_retries_is_given_up_on_the_fake_clock() {
    let t0 = Instant::now();
    let mut b = bridge();
    ask(&mut b, 1, 100, 7, 900, t0);
    assert_eq!(b.on_tick(t0 + T - Duration::from_millis(1)), Out::default());
    let out = b.on_tick(t0 + T);
    assert!(out.to_client.is_empty(), "no leg is open");
    assert_eq!(out.to_server.len(), 2);
    assert_eq!(v(&out.to_server[0])["id"], 900);
    let c = v(&out.to_server[1]);
    assert_eq!(
        (c["method"].clone(), c["params"]["requestId"].clone()),
        (json!("notifications/cancelled"), json!(100))
    );
    assert!(b.is_empty());
    assert_eq!(b.stats.expired, 1);
}

#[test]
fn a_leg_that_goes_away_cancels_the_call_and_so_does_the_session_ending() {
    let t0 = Instant::now();
    let mut b = bridge();
    ask(&mut b, 1, 100, 7, 900, t0);
    let retry = json!({"requestState": "tok-a", "inputResponses": {"r1": {}}});
    b.on_client_retry(&1, &id(8), &retry, t0);
    assert_eq!(b.on_client_gone(&2, &id(8)), Out::default(), "not its leg");
    let out = b.on_client_gone(&1, &id(8));
    assert!(out.to_client.is_empty());
    assert_eq!(
        v(out.to_server.last().unwrap())["method"],
        "notifications/cancelled"
    );
    assert!(b.is_empty());
    ask(&mut b, 1, 100, 7, 900, t0);
    // A colliding token never overwrites another call's entry.
    assert!(matches!(ask(&mut b, 3, 200, 7, 901, t0), Asked::Refused(_)));
    let r = b.on_server_request(
        &3,
        &id(200),
        &id(7),
        id(901),
        "roots/list",
        None,
        t0,
        tok("tok-b"),
    );
    assert!(matches!(r, Asked::Carried(_)));
    let out = b.drop_owner(&1);
    assert_eq!(out.to_server.len(), 2);
    assert_eq!(b.len(), 1, "the other session's call stays");
}

#[test]
fn rounds_are_capped() {
    let t0 = Instant::now();
    let mut b = bridge();
    let mut leg = 7;
    ask(&mut b, 1, 100, leg, 900, t0);
    for round in 1..=4 {
        leg += 1;
        let retry = json!({"requestState": "tok-a", "inputResponses": {format!("r{round}"): {}}});
        let Retried::Carried(out) = b.on_client_retry(&1, &id(leg), &retry, t0) else {
            panic!()
        };
        if round == 4 {
            let m = v(&out.to_client[0].1);
            assert_eq!(m["id"], leg);
            assert_eq!(m["error"]["code"], -32603);
            assert!(b.is_empty());
            return;
        }
        ask(&mut b, 1, 100, leg, 900 + round, t0);
    }
    panic!("never capped");
}

#[test]
fn a_garbled_result_becomes_an_error_for_the_leg() {
    assert_eq!(v(&splice_result(&id(3), b"[1]"))["error"]["code"], -32603);
    assert_eq!(v(&splice_result(&id(3), b"{"))["id"], 3);
    let e = v(&splice_result(
        &Id::Str("s".into()),
        br#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"m"}}"#,
    ));
    assert_eq!(
        (e["id"].clone(), e["error"]["code"].clone()),
        (json!("s"), json!(-1))
    );
    assert!(carries_input("tools/call") && !carries_input("tools/list"));
}

#[test]
fn the_carrier_is_the_latest_call_that_may_carry_input() {
    let (a, b, c) = (id(1), id(2), id(3));
    let inflight = vec![
        (&a, "tools/call", 10),
        (&b, "prompts/get", 30),
        (&c, "tools/list", 40),
    ];
    assert_eq!(carrier(inflight), Some(&b));
    assert_eq!(carrier(vec![(&c, "tools/list", 1)]), None);
    assert_eq!(carrier(Vec::<(&Id, &str, u32)>::new()), None);
}
