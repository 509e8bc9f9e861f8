//! What the mux bounds or refuses: server requests awaiting answers, a
//! client's message with a member it reads written twice, and which
//! session counts as the busy one (a listen does not).

use super::*;

/// A client that never answers the server's requests cannot make the mux
/// remember them without bound: past the cap the server is answered with
/// an error at once (counted), and an answer makes room again.
#[test]
fn server_requests_awaiting_answers_are_capped() {
    let mut m = Mux::new();
    sent(m.up(7, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
    let roots = |i: usize| format!(r#"{{"jsonrpc":"2.0","id":"s{i}","method":"roots/list"}}"#);
    for i in 0..MAX_SERVER_REQUESTS {
        assert!(matches!(
            one(m.down(roots(i).as_bytes())),
            Down::ToSession { session: 7, .. }
        ));
    }
    let Down::Refused { msg, why } = one(m.down(roots(MAX_SERVER_REQUESTS).as_bytes())) else {
        panic!("the request over the cap was not refused");
    };
    assert_eq!(why, Dropped::ServerRequestsFull);
    let v = json(&msg);
    assert_eq!(v["id"], format!("s{MAX_SERVER_REQUESTS}"));
    assert_eq!(v["error"]["data"]["kind"], "queue_full");
    assert_eq!(m.server_requests_in_flight(), MAX_SERVER_REQUESTS);
    // One answered: room for one more.
    let answer = br#"{"jsonrpc":"2.0","id":"s0","result":{"roots":[]}}"#;
    assert_eq!(m.up(7, answer), Up::Send(answer.to_vec()));
    assert!(matches!(
        one(m.down(roots(MAX_SERVER_REQUESTS).as_bytes())),
        Down::ToSession { .. }
    ));
    assert_eq!(m.server_requests_in_flight(), MAX_SERVER_REQUESTS);
}

/// A member written twice is refused from a client (which of the two a
/// server reads is its parser's choice, and the mux rewrote the last) and
/// read as before from the server (the last wins: the relay routes it).
#[test]
fn duplicated_members_are_refused_up_and_read_down() {
    let mut m = Mux::new();
    let up = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":7,"progressToken":8}}}"#;
    let Up::Reject(e) = m.up(1, up) else {
        panic!("an ambiguous request was not refused")
    };
    assert_eq!(json(&e)["id"], 1);
    assert_eq!(json(&e)["error"]["data"]["kind"], "invalid_request");
    let Up::Reject(e) = m.up(
        1,
        br#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call"}"#,
    ) else {
        panic!("an id written twice was not refused")
    };
    assert!(json(&e)["id"].is_null(), "{}", text(&e));
    assert_empty(&m);
    // The server's request with a repeated member goes its way, and the
    // client's call in flight is untouched.
    let n = upstream_id(&sent(
        m.up(7, br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#),
    ));
    let roots = format!(
        r#"{{"jsonrpc":"2.0","id":{n},"method":"roots/list","params":{{"_meta":{{}},"_meta":{{}}}}}}"#
    );
    assert!(matches!(
        one(m.down(roots.as_bytes())),
        Down::ToSession { session: 7, .. }
    ));
    assert_eq!(m.in_flight(), 1);
}

/// A listen stays in flight while its session is idle: it does not make
/// that session the busy one, so a log or a server request sent between
/// other sessions' requests (a late log of another's call) does not go to
/// it. Before, a stamped session's listen made it the one to get them.
#[test]
fn a_listen_does_not_make_its_session_the_busy_one() {
    let mut m = Mux::new();
    let listen = br#"{"jsonrpc":"2.0","id":"mcp-relay-listen-1","method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["file:///a"]}}}"#;
    let l = upstream_id(&sent(m.up(1, listen)));
    let log = br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"late"}}"#;
    let roots = br#"{"jsonrpc":"2.0","id":"r1","method":"roots/list"}"#;
    // Session 2's call answered: only the listen is in flight.
    let c = upstream_id(&sent(
        m.up(2, br#"{"jsonrpc":"2.0","id":5,"method":"tools/call"}"#),
    ));
    m.down(format!(r#"{{"jsonrpc":"2.0","id":{c},"result":{{}}}}"#).as_bytes());
    assert_eq!(one(m.down(log)), Down::Dropped(Dropped::Unattributed));
    let Down::ToUpstream { msg } = one(m.down(roots)) else {
        panic!("a server request with only a listen in flight")
    };
    assert_eq!(json(&msg)["error"]["data"]["sessions"], 0);
    // Session 1 with a call beside its listen is the busy one, and so is 2
    // alone with one while 1 only listens.
    let c1 = upstream_id(&sent(
        m.up(1, br#"{"jsonrpc":"2.0","id":6,"method":"tools/call"}"#),
    ));
    assert!(matches!(
        one(m.down(log)),
        Down::ToSession { session: 1, .. }
    ));
    m.down(format!(r#"{{"jsonrpc":"2.0","id":{c1},"result":{{}}}}"#).as_bytes());
    sent(m.up(2, br#"{"jsonrpc":"2.0","id":7,"method":"tools/call"}"#));
    assert!(matches!(
        one(m.down(log)),
        Down::ToSession { session: 2, .. }
    ));
    // The listen cancelled by its session: nothing of it is left.
    let cancel = br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"mcp-relay-listen-1"}}"#;
    assert!(sent(m.up(1, cancel)).contains(&l.to_string()));
    m.end_session(2);
    assert_empty(&m);
}
