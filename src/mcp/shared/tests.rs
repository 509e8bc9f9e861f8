//! Unit tests of the [`Mux`]: what each kind of message becomes on the way
//! up and on the way down, and that nothing is left behind.

use super::*;
use serde_json::Value;

mod guards;
mod subs;

fn sent(up: Up) -> String {
    match up {
        Up::Send(b) => String::from_utf8(b).expect("utf-8"),
        other => panic!("expected Send, got {other:?}"),
    }
}

fn one(mut downs: Vec<Down>) -> Down {
    assert_eq!(downs.len(), 1, "{downs:?}");
    downs.remove(0)
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("utf-8")
}

/// Upstream id the mux gave the request in `sent`.
fn upstream_id(sent: &str) -> i64 {
    json(sent.as_bytes())["id"]
        .as_i64()
        .expect("numeric upstream id")
}

fn assert_empty(m: &Mux) {
    assert_eq!(m.in_flight(), 0);
    assert!(m.pending.is_empty());
    assert!(m.sessions.is_empty());
    assert!(m.listens.is_empty());
    assert!(m.server_requests.is_empty());
}

#[test]
fn rewrites_only_the_id_bytes() {
    let mut m = Mux::new();
    let line = br#"{"jsonrpc":"2.0", "method":"tools/call","id" : "abc","params":{"name":"x","arguments":{"id":9}}}"#;
    let up = sent(m.up(1, line));
    assert_eq!(
        up,
        r#"{"jsonrpc":"2.0", "method":"tools/call","id" : 1,"params":{"name":"x","arguments":{"id":9}}}"#
    );
    let d = one(m.down(br#"{"result":{"content":[]},"jsonrpc":"2.0","id":1}"#));
    assert_eq!(
        d,
        Down::Reply {
            session: 1,
            id: Id::Str("abc".into()),
            msg: br#"{"result":{"content":[]},"jsonrpc":"2.0","id":"abc"}"#.to_vec(),
            modern: false,
        }
    );
    assert_empty(&m);
}

#[test]
fn string_numeric_and_float_ids_come_back_exactly() {
    let mut m = Mux::new();
    for (s, id) in [(1, r#""abc""#), (2, "7"), (3, "1.5"), (4, r#""a\u0062""#)] {
        let line = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
        let up = sent(m.up(s, line.as_bytes()));
        let n = upstream_id(&up);
        let reply = format!(r#"{{"jsonrpc":"2.0","id":{n},"result":{{}}}}"#);
        match one(m.down(reply.as_bytes())) {
            Down::Reply { session, msg, .. } => {
                assert_eq!(session, s);
                assert_eq!(
                    text(&msg),
                    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#)
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_empty(&m);
}

#[test]
fn two_sessions_with_the_same_id_get_their_own_replies() {
    let mut m = Mux::new();
    let a = upstream_id(&sent(
        m.up(10, br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
    ));
    let b = upstream_id(&sent(
        m.up(20, br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
    ));
    assert_ne!(a, b);
    assert_eq!(m.in_flight(), 2);
    assert_eq!(m.in_flight_for(10), 1);
    // Replies in the opposite order.
    let rb =
        one(m.down(format!(r#"{{"jsonrpc":"2.0","id":{b},"result":{{"who":"b"}}}}"#).as_bytes()));
    let ra =
        one(m.down(format!(r#"{{"jsonrpc":"2.0","id":{a},"result":{{"who":"a"}}}}"#).as_bytes()));
    assert_eq!(
        rb,
        Down::Reply {
            session: 20,
            id: Id::Num(1),
            msg: br#"{"jsonrpc":"2.0","id":1,"result":{"who":"b"}}"#.to_vec(),
            modern: false,
        }
    );
    assert_eq!(
        ra,
        Down::Reply {
            session: 10,
            id: Id::Num(1),
            msg: br#"{"jsonrpc":"2.0","id":1,"result":{"who":"a"}}"#.to_vec(),
            modern: false,
        }
    );
    assert_empty(&m);
}

#[test]
fn duplicate_id_in_flight_is_rejected() {
    let mut m = Mux::new();
    sent(m.up(1, br#"{"jsonrpc":"2.0","id":"x","method":"a"}"#));
    let Up::Reject(err) = m.up(1, br#"{"jsonrpc":"2.0","id":"x","method":"b"}"#) else {
        panic!("expected Reject");
    };
    let v = json(&err);
    assert_eq!(v["id"], "x");
    assert_eq!(v["error"]["code"], -32600);
    assert_eq!(v["error"]["data"]["kind"], "duplicate_id");
    assert_eq!(m.in_flight(), 1);
    // Once answered the id is free again.
    m.down(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
    sent(m.up(1, br#"{"jsonrpc":"2.0","id":"x","method":"b"}"#));
}

#[test]
fn progress_tokens_of_two_sessions_route_by_token() {
    let mut m = Mux::new();
    let req = br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"_meta":{"progressToken":"t"},"name":"slow"}}"#;
    let a = sent(m.up(1, req));
    let b = sent(m.up(2, req));
    let (na, nb) = (upstream_id(&a), upstream_id(&b));
    assert_eq!(
        a,
        format!(
            r#"{{"jsonrpc":"2.0","id":{na},"method":"tools/call","params":{{"_meta":{{"progressToken":{na}}},"name":"slow"}}}}"#
        )
    );
    assert_eq!(json(b.as_bytes())["params"]["_meta"]["progressToken"], nb);
    for (n, session) in [(nb, 2), (na, 1)] {
        let p = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{n},"progress":1,"total":2}}}}"#
        );
        assert_eq!(
            one(m.down(p.as_bytes())),
            Down::ToSession {
                session,
                msg: br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1,"total":2}}"#.to_vec(),
            }
        );
    }
    // Unknown token, or a token after the reply: dropped.
    let stray = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":999,"progress":1}}"#;
    assert_eq!(one(m.down(stray)), Down::Drop);
    m.down(format!(r#"{{"jsonrpc":"2.0","id":{na},"result":{{}}}}"#).as_bytes());
    let late = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{na},"progress":2}}}}"#
    );
    assert_eq!(one(m.down(late.as_bytes())), Down::Drop);
}

#[test]
fn progress_token_with_an_escaped_name_is_rewritten_too() {
    let mut m = Mux::new();
    let up = sent(m.up(
        1,
        br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"progress\u0054oken":5}}}"#,
    ));
    assert_eq!(
        up,
        r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"progress\u0054oken":1}}}"#
    );
}

#[test]
fn progress_for_a_request_without_a_token_is_dropped() {
    let mut m = Mux::new();
    let n = upstream_id(&sent(
        m.up(1, br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{}}"#),
    ));
    let p = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{n},"progress":1}}}}"#
    );
    assert_eq!(one(m.down(p.as_bytes())), Down::Drop);
}

#[test]
fn client_cancel_is_rewritten_and_the_late_reply_dropped() {
    let mut m = Mux::new();
    sent(m.up(1, br#"{"jsonrpc":"2.0","id":"r","method":"x"}"#));
    let n = upstream_id(&sent(
        m.up(2, br#"{"jsonrpc":"2.0","id":"r","method":"x"}"#),
    ));
    let cancel = br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"r","reason":"user"}}"#;
    assert_eq!(
        sent(m.up(2, cancel)),
        format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{n},"reason":"user"}}}}"#
        )
    );
    assert_eq!(m.in_flight_for(2), 0);
    assert_eq!(m.in_flight_for(1), 1);
    let late = format!(r#"{{"jsonrpc":"2.0","id":{n},"result":{{}}}}"#);
    assert_eq!(one(m.down(late.as_bytes())), Down::Drop);
    // Cancelling again, or something never sent: nothing goes upstream,
    // and it is counted.
    assert_eq!(m.up(2, cancel), Up::Dropped(Dropped::CancelNotInFlight));
}

#[test]
fn initialize_passes_through_but_cannot_be_cancelled_or_expired() {
    let mut m = Mux::new();
    let n = upstream_id(&sent(m.up(
        1,
        br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#,
    )));
    let cancel =
        br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":0}}"#;
    assert_eq!(m.up(1, cancel), Up::Drop);
    assert_eq!(m.in_flight(), 1);
    assert_eq!(m.expire(1, &Id::Num(0)), None);
    assert_empty(&m);
    let late = format!(r#"{{"jsonrpc":"2.0","id":{n},"result":{{}}}}"#);
    assert_eq!(one(m.down(late.as_bytes())), Down::Drop);
}

#[test]
fn expire_cancels_upstream_and_drops_the_late_reply() {
    let mut m = Mux::new();
    let n = upstream_id(&sent(
        m.up(3, br#"{"jsonrpc":"2.0","id":"slow","method":"tools/call"}"#),
    ));
    let c = m.expire(3, &Id::Str("slow".into())).expect("cancellation");
    let v = json(&c);
    assert_eq!(v["method"], "notifications/cancelled");
    assert_eq!(v["params"]["requestId"], n);
    assert_eq!(m.expire(3, &Id::Str("slow".into())), None);
    let late = format!(r#"{{"jsonrpc":"2.0","id":{n},"result":{{}}}}"#);
    assert_eq!(one(m.down(late.as_bytes())), Down::Drop);
    assert_empty(&m);
}

#[test]
fn initialized_is_swallowed_and_other_notifications_pass() {
    let mut m = Mux::new();
    assert_eq!(
        m.up(
            1,
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
        ),
        Up::Drop
    );
    let roots = br#"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#;
    assert_eq!(m.up(1, roots), Up::Send(roots.to_vec()));
    let progress = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"srv-1","progress":1}}"#;
    assert_eq!(m.up(1, progress), Up::Send(progress.to_vec()));
}

#[test]
fn server_request_goes_to_the_one_busy_session_and_its_answer_back() {
    let mut m = Mux::new();
    sent(m.up(7, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
    let sampling =
        br#"{"jsonrpc":"2.0","id":"srv-1","method":"sampling/createMessage","params":{}}"#;
    assert_eq!(
        one(m.down(sampling)),
        Down::ToSession {
            session: 7,
            msg: sampling.to_vec()
        }
    );
    let answer = br#"{"jsonrpc":"2.0","id":"srv-1","result":{"role":"assistant"}}"#;
    // Another session cannot answer it.
    assert_eq!(m.up(8, answer), Up::Drop);
    assert_eq!(m.up(7, answer), Up::Send(answer.to_vec()));
    // Answered once only.
    assert_eq!(m.up(7, answer), Up::Drop);
    assert_eq!(m.server_requests_in_flight(), 0);
}

#[test]
fn server_request_with_no_or_several_busy_sessions_gets_an_error() {
    let mut m = Mux::new();
    let roots = br#"{"jsonrpc":"2.0","id":4,"method":"roots/list"}"#;
    let check = |d: Down, sessions: u64| {
        let Down::ToUpstream { msg } = d else {
            panic!("{d:?}")
        };
        let v = json(&msg);
        assert_eq!(v["id"], 4);
        assert_eq!(v["error"]["code"], UNROUTABLE_CODE);
        assert_eq!(v["error"]["data"]["kind"], UNROUTABLE_KIND);
        assert_eq!(v["error"]["data"]["sessions"], sessions);
    };
    check(one(m.down(roots)), 0);
    sent(m.up(1, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
    sent(m.up(2, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
    check(one(m.down(roots)), 2);
    assert_eq!(m.server_requests_in_flight(), 0);
}

#[test]
fn server_ping_is_answered_by_the_relay() {
    let mut m = Mux::new();
    sent(m.up(1, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
    assert_eq!(
        one(m.down(br#"{"jsonrpc":"2.0","id":"p1","method":"ping"}"#)),
        Down::ToUpstream {
            msg: br#"{"jsonrpc":"2.0","id":"p1","result":{}}"#.to_vec(),
        }
    );
    assert_eq!(m.server_requests_in_flight(), 0);
}

#[test]
fn list_changed_is_broadcast_and_logging_follows_the_only_busy_session() {
    let mut m = Mux::new();
    for line in [
        &br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#[..],
        br#"{"jsonrpc":"2.0","method":"notifications/resources/list_changed"}"#,
    ] {
        assert_eq!(one(m.down(line)), Down::Broadcast { msg: line.to_vec() });
    }
    // Nobody in flight: a log belongs to no one, and goes to no one.
    let log = br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hi"}}"#;
    assert_eq!(one(m.down(log)), Down::Dropped(Dropped::Unattributed));
    sent(m.up(4, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
    assert_eq!(
        one(m.down(log)),
        Down::ToSession {
            session: 4,
            msg: log.to_vec()
        }
    );
    // Two sessions in flight: it could be either's (issue 11, class 9).
    sent(m.up(5, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
    assert_eq!(one(m.down(log)), Down::Dropped(Dropped::Unattributed));
}

#[test]
fn server_cancel_of_its_request_goes_to_that_session() {
    let mut m = Mux::new();
    sent(m.up(9, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
    m.down(br#"{"jsonrpc":"2.0","id":30,"method":"elicitation/create","params":{}}"#);
    let cancel =
        br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":30}}"#;
    assert_eq!(
        one(m.down(cancel)),
        Down::ToSession {
            session: 9,
            msg: cancel.to_vec()
        }
    );
    assert_eq!(m.server_requests_in_flight(), 0);
    assert_eq!(one(m.down(cancel)), Down::Drop);
}

#[test]
fn end_session_cancels_its_requests_and_answers_its_server_requests() {
    let mut m = Mux::new();
    let a = upstream_id(&sent(
        m.up(1, br#"{"jsonrpc":"2.0","id":"a","method":"x"}"#),
    ));
    let b = upstream_id(&sent(
        m.up(1, br#"{"jsonrpc":"2.0","id":"b","method":"x"}"#),
    ));
    m.down(br#"{"jsonrpc":"2.0","id":"s","method":"sampling/createMessage"}"#);
    let other = upstream_id(&sent(
        m.up(2, br#"{"jsonrpc":"2.0","id":"a","method":"x"}"#),
    ));
    let out = m.end_session(1);
    assert_eq!(out.len(), 3);
    assert_eq!(json(&out[0])["params"]["requestId"], a);
    assert_eq!(json(&out[1])["params"]["requestId"], b);
    assert_eq!(json(&out[0])["method"], "notifications/cancelled");
    let err = json(&out[2]);
    assert_eq!(err["id"], "s");
    assert_eq!(err["error"]["code"], SESSION_ENDED_CODE);
    assert_eq!(err["error"]["data"]["kind"], SESSION_ENDED_KIND);
    assert_eq!(m.in_flight_for(1), 0);
    assert_eq!(m.in_flight(), 1);
    assert_eq!(m.end_session(1), Vec::<Vec<u8>>::new());
    // The other session is untouched; session 1's late reply is dropped.
    assert_eq!(
        one(m.down(format!(r#"{{"id":{a},"result":{{}}}}"#).as_bytes())),
        Down::Drop
    );
    assert!(matches!(
        one(m.down(format!(r#"{{"id":{other},"result":{{}}}}"#).as_bytes())),
        Down::Reply { session: 2, .. }
    ));
    assert_empty(&m);
}

#[test]
fn fail_all_returns_every_request_and_forgets_them() {
    let mut m = Mux::new();
    sent(m.up(1, br#"{"jsonrpc":"2.0","id":"a","method":"x"}"#));
    sent(m.up(2, br#"{"jsonrpc":"2.0","id":3,"method":"x"}"#));
    m.down(br#"{"jsonrpc":"2.0","id":"s","method":"roots/list"}"#);
    sent(m.up(1, br#"{"jsonrpc":"2.0","id":0,"method":"initialize"}"#));
    assert_eq!(
        m.fail_all(),
        vec![(1, Id::Str("a".into())), (2, Id::Num(3)), (1, Id::Num(0))]
    );
    assert_empty(&m);
    assert_eq!(one(m.down(br#"{"id":1,"result":{}}"#)), Down::Drop);
}

#[test]
fn batch_of_responses_yields_one_down_each() {
    let mut m = Mux::new();
    let a = upstream_id(&sent(
        m.up(1, br#"{"jsonrpc":"2.0","id":"x","method":"m"}"#),
    ));
    let b = upstream_id(&sent(
        m.up(2, br#"{"jsonrpc":"2.0","id":1.5,"method":"m"}"#),
    ));
    let batch = format!(
        r#"[ {{"jsonrpc":"2.0","id":{b},"result":{{"n":2}}}}, {{"jsonrpc":"2.0","id":{a},"error":{{"code":-1,"message":"no"}}}}, {{"id":12345,"result":{{}}}}, 17 ]"#
    );
    assert_eq!(
        m.down(batch.as_bytes()),
        vec![
            Down::Reply {
                session: 2,
                id: Id::Other("1.5e0".into()),
                msg: br#"{"jsonrpc":"2.0","id":1.5,"result":{"n":2}}"#.to_vec(),
                modern: false,
            },
            Down::Reply {
                session: 1,
                id: Id::Str("x".into()),
                msg: br#"{"jsonrpc":"2.0","id":"x","error":{"code":-1,"message":"no"}}"#.to_vec(),
                modern: false,
            },
            Down::Drop,
            Down::Dropped(Dropped::BatchInvalidItem),
        ]
    );
    assert_empty(&m);
}

#[test]
fn nested_and_empty_batches_go_nowhere_and_answer_the_requests_inside() {
    let mut m = Mux::new();
    let n = upstream_id(&sent(
        m.up(3, br#"{"jsonrpc":"2.0","id":"q","method":"m"}"#),
    ));
    assert_eq!(m.down(b"[]"), vec![Down::Dropped(Dropped::BatchEmpty)]);
    let nested = format!(r#"[[{{"jsonrpc":"2.0","id":{n},"result":{{"secret":1}}}}]]"#);
    let downs = m.down(nested.as_bytes());
    assert_eq!(downs.len(), 2, "{downs:?}");
    let Down::Reply {
        session, id, msg, ..
    } = &downs[0]
    else {
        panic!("{downs:?}")
    };
    assert_eq!((*session, id), (3, &Id::Str("q".into())));
    let v = json(msg);
    assert_eq!(v["id"], "q");
    assert_eq!(v["error"]["data"]["kind"], "invalid_reply");
    assert!(!text(msg).contains("secret"));
    assert_eq!(downs[1], Down::Dropped(Dropped::BatchNested));
    assert_empty(&m);
}

#[test]
fn numeric_ids_the_server_respells_still_find_their_request() {
    let mut m = Mux::new();
    let n = upstream_id(&sent(
        m.up(1, br#"{"jsonrpc":"2.0","id":1e0,"method":"m"}"#),
    ));
    let reply = format!(r#"{{"jsonrpc":"2.0","id":{n}.0,"result":{{}}}}"#);
    assert_eq!(
        one(m.down(reply.as_bytes())),
        Down::Reply {
            session: 1,
            id: Id::Num(1),
            msg: br#"{"jsonrpc":"2.0","id":1e0,"result":{}}"#.to_vec(),
            modern: false,
        }
    );
    assert_empty(&m);
}

#[test]
fn malformed_input_is_rejected_or_dropped() {
    let mut m = Mux::new();
    let Up::Reject(e) = m.up(1, b"{not json") else {
        panic!()
    };
    assert_eq!(json(&e)["error"]["code"], -32700);
    let Up::Reject(e) = m.up(1, br#"[{"jsonrpc":"2.0","id":1,"method":"m"}]"#) else {
        panic!()
    };
    assert_eq!(json(&e)["error"]["data"]["kind"], "invalid_request");
    let Up::Reject(e) = m.up(1, br#"{"id":2}"#) else {
        panic!()
    };
    assert_eq!(json(&e)["id"], 2);
    assert_eq!(m.down(b"garbage"), vec![Down::Drop]);
    assert_eq!(m.down(br#"{"id":"1","result":{}}"#), vec![Down::Drop]);
    assert_eq!(
        m.down(br#"{"id":null,"error":{"code":-32700,"message":"x"}}"#),
        vec![Down::Drop]
    );
    assert_empty(&m);
}

#[test]
fn mixed_workload_leaves_no_state_behind() {
    let mut m = Mux::new();
    for round in 0..50i64 {
        for s in 0..4u64 {
            let line = format!(
                r#"{{"jsonrpc":"2.0","id":{round},"method":"tools/call","params":{{"_meta":{{"progressToken":"p{round}"}}}}}}"#
            );
            sent(m.up(s, line.as_bytes()));
        }
        // Session 0 cancels, 1 times out, 2 gets its reply, 3 leaves.
        let cancel = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{round}}}}}"#
        );
        sent(m.up(0, cancel.as_bytes()));
        assert!(m.expire(1, &Id::Num(round)).is_some());
        let n = *m.sessions[&2].get(&Id::Num(round)).unwrap();
        assert!(matches!(
            one(m.down(format!(r#"{{"id":{n},"result":{{}}}}"#).as_bytes())),
            Down::Reply { session: 2, .. }
        ));
        m.down(br#"{"jsonrpc":"2.0","id":"q","method":"sampling/createMessage"}"#);
        assert_eq!(m.end_session(3).len(), 2);
        assert_empty(&m);
    }
    sent(m.up(5, br#"{"jsonrpc":"2.0","id":1,"method":"x"}"#));
    m.fail_all();
    assert_empty(&m);
}

#[test]
fn a_request_shaped_cancel_is_invalid_and_names_nothing_upstream() {
    let mut m = Mux::new();
    let n = upstream_id(&sent(
        m.up(1, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#),
    ));
    // Session 2 names session 1's upstream id in a request-shaped cancel.
    let shaped = format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"notifications/cancelled","params":{{"requestId":{n}}}}}"#
    );
    let Up::Reject(e) = m.up(2, shaped.as_bytes()) else {
        panic!("a request-shaped cancel must be rejected")
    };
    assert_eq!(json(&e)["error"]["code"], -32600);
    assert_eq!(json(&e)["id"], 7);
    // And as a notification, it is not session 2's to cancel.
    let note = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{n}}}}}"#
    );
    assert_eq!(
        m.up(2, note.as_bytes()),
        Up::Dropped(Dropped::CancelNotInFlight)
    );
    assert_eq!(m.in_flight_for(1), 1);
}

/// The era bridge's stripped `_meta` is spliced with the id in one pass;
/// a progress token inside what is edited is still rewritten and routed
/// (the edit is made first, the message read again), and both requests are
/// answered to their own session under their own id (issue 13).
#[test]
fn an_edited_request_gets_its_id_and_its_edit_in_one_splice() {
    let mut m = Mux::new();
    let line = br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let Ok(Message::Single(env)) = jsonrpc::peek(line) else {
        panic!("one message")
    };
    let meta = env
        .params
        .and_then(|p| member(p, "_meta"))
        .expect("_meta")
        .get();
    let up = sent(m.up_parsed_edited(7, line, &env, (meta, b"{}")));
    let n = upstream_id(&up);
    assert_eq!(
        up,
        format!(
            r#"{{"jsonrpc":"2.0","id":{n},"method":"tools/call","params":{{"name":"x","_meta":{{}}}}}}"#
        )
    );
    // With a progress token in `_meta`: kept by the edit, then rewritten.
    let line = br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"_meta":{"progressToken":"t","io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let Ok(Message::Single(env)) = jsonrpc::peek(line) else {
        panic!("one message")
    };
    let meta = env
        .params
        .and_then(|p| member(p, "_meta"))
        .expect("_meta")
        .get();
    let up = sent(m.up_parsed_edited(8, line, &env, (meta, br#"{"progressToken":"t"}"#)));
    let k = upstream_id(&up);
    assert_ne!(n, k);
    assert_eq!(
        json(up.as_bytes())["params"]["_meta"],
        serde_json::json!({"progressToken": k})
    );
    for (upstream, session) in [(k, 8), (n, 7)] {
        let reply = format!(r#"{{"jsonrpc":"2.0","id":{upstream},"result":{{}}}}"#);
        assert_eq!(
            one(m.down(reply.as_bytes())),
            Down::Reply {
                session,
                id: Id::Str("a".into()),
                msg: br#"{"jsonrpc":"2.0","id":"a","result":{}}"#.to_vec(),
                modern: false,
            }
        );
    }
    // An edit that is not borrowed from the message: refused, nothing kept.
    let elsewhere = serde_json::from_str::<&serde_json::value::RawValue>("{}")
        .expect("json")
        .get();
    let line = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{}}"#;
    let Ok(Message::Single(env)) = jsonrpc::peek(line) else {
        panic!("one message")
    };
    assert!(matches!(
        m.up_parsed_edited(9, line, &env, (elsewhere, b"{}")),
        Up::Reject(_)
    ));
    assert_empty(&m);
}

/// A request the era bridge forwards (`up_bridged`) has its reply's result
/// made modern in the splice that restores the client's id, so the line is
/// read once on its way back; what the fast splice cannot tell (escapes, a
/// result that names the members already) and errors come back as the
/// server wrote them, unmarked, for the front's full path; other sessions'
/// replies are untouched (issue 13).
#[test]
fn a_bridged_reply_is_made_modern_in_the_id_splice() {
    let mut m = Mux::new();
    let bridged = |m: &mut Mux, session: SessionKey, line: &[u8], strip: bool| {
        let Ok(Message::Single(env)) = jsonrpc::peek(line) else {
            panic!("one message")
        };
        let meta = env.params.and_then(|p| member(p, "_meta")).map(|m| m.get());
        let up = match (strip, meta) {
            (true, Some(meta)) => m.up_bridged(session, line, &env, Some((meta, b"{}"))),
            _ => m.up_bridged(session, line, &env, None),
        };
        upstream_id(&sent(up))
    };
    let a = bridged(
        &mut m,
        1,
        br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        true,
    );
    let b = bridged(
        &mut m,
        2,
        br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}"#,
        false,
    );
    let c = bridged(
        &mut m,
        3,
        br#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{}}"#,
        false,
    );
    let d = bridged(
        &mut m,
        4,
        br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{}}"#,
        false,
    );
    let f = bridged(
        &mut m,
        6,
        br#"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{}}"#,
        false,
    );
    let plain = sent(m.up(
        5,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
    ));
    let e = upstream_id(&plain);

    let reply = format!(r#"{{"jsonrpc":"2.0","id":{a},"result":{{"content":[]}}}}"#);
    assert_eq!(
        one(m.down(reply.as_bytes())),
        Down::Reply {
            session: 1,
            id: Id::Str("a".into()),
            msg: br#"{"jsonrpc":"2.0","id":"a","result":{"resultType":"complete","ttlMs":0,"cacheScope":"private","content":[]}}"#.to_vec(),
            modern: true,
        }
    );
    let reply = format!(r#"{{"jsonrpc":"2.0","result":{{}},"id":{b}}}"#);
    assert_eq!(
        one(m.down(reply.as_bytes())),
        Down::Reply {
            session: 2,
            id: Id::Num(7),
            msg: br#"{"jsonrpc":"2.0","result":{"resultType":"complete","ttlMs":0,"cacheScope":"private"},"id":7}"#.to_vec(),
            modern: true,
        }
    );
    // An escape in a value: `peek`'s scan vouched for the member names,
    // so it is made modern in the splice too.
    let reply = format!(r#"{{"jsonrpc":"2.0","id":{c},"result":{{"t":"\u0041"}}}}"#);
    assert_eq!(
        one(m.down(reply.as_bytes())),
        Down::Reply {
            session: 3,
            id: Id::Num(8),
            msg: br#"{"jsonrpc":"2.0","id":8,"result":{"resultType":"complete","ttlMs":0,"cacheScope":"private","t":"\u0041"}}"#.to_vec(),
            modern: true,
        }
    );
    // An escaped member name: left to the front's full path.
    let reply = format!(r#"{{"jsonrpc":"2.0","id":{f},"result":{{"t\u0041":1}}}}"#);
    let Down::Reply { msg, modern, .. } = one(m.down(reply.as_bytes())) else {
        panic!("a reply")
    };
    assert!(!modern);
    assert_eq!(
        text(&msg),
        r#"{"jsonrpc":"2.0","id":10,"result":{"t\u0041":1}}"#
    );
    // An error: nothing to make modern here.
    let reply = format!(r#"{{"jsonrpc":"2.0","id":{d},"error":{{"code":1,"message":"m"}}}}"#);
    let Down::Reply { msg, modern, .. } = one(m.down(reply.as_bytes())) else {
        panic!("a reply")
    };
    assert!(!modern);
    assert_eq!(
        text(&msg),
        r#"{"jsonrpc":"2.0","id":9,"error":{"code":1,"message":"m"}}"#
    );
    // Not bridged: as the server wrote it.
    let reply = format!(r#"{{"jsonrpc":"2.0","id":{e},"result":{{}}}}"#);
    assert_eq!(
        one(m.down(reply.as_bytes())),
        Down::Reply {
            session: 5,
            id: Id::Num(1),
            msg: br#"{"jsonrpc":"2.0","id":1,"result":{}}"#.to_vec(),
            modern: false,
        }
    );
    assert_empty(&m);
}

/// Issue 13: a listen's notifications carry no URI a session subscribed
/// through the mux, only the listen's id at the server in `_meta`: they go
/// to the session whose listen that is, with its own id back, and to no
/// other (before: dropped as unattributed, or broadcast for list-changed).
#[test]
fn listen_notifications_go_to_the_listening_session_with_its_id() {
    let mut m = Mux::new();
    let listen = br#"{"jsonrpc":"2.0","id":"mcp-relay-listen-1","method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["file:///a"]}}}"#;
    let n = upstream_id(&sent(m.up(7, listen)));
    // Another session busy too: no "sole session" to fall back on.
    sent(m.up(8, br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#));
    for method in [
        "notifications/resources/updated",
        "notifications/tools/list_changed",
    ] {
        let note = format!(
            r#"{{"jsonrpc":"2.0","method":"{method}","params":{{"uri":"file:///a","_meta":{{"io.modelcontextprotocol/subscriptionId":{n}}}}}}}"#
        );
        let Down::ToSession { session, msg } = one(m.down(note.as_bytes())) else {
            panic!("{method}: not to the listening session")
        };
        assert_eq!(session, 7);
        assert_eq!(
            json(&msg)["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
            "mcp-relay-listen-1"
        );
    }
    // A mark naming no listen in flight: routed as before.
    let stray = br#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///a","_meta":{"io.modelcontextprotocol/subscriptionId":999}}}"#;
    assert_eq!(one(m.down(stray)), Down::Dropped(Dropped::Unattributed));
}
