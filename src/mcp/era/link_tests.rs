//! Fake-clock tests of the one-client, one-server era link.

use super::*;
use crate::mcp::era::verdict::PROBE_TIMEOUT;
use serde_json::json;

fn env() -> String {
    r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}},"io.modelcontextprotocol/clientInfo":{"name":"py2","version":"2.3"}}"#.into()
}

struct Msg {
    line: Vec<u8>,
    method: Option<String>,
    params: Option<String>,
    id: Option<Id>,
}

fn req(id: i64, method: &str, extra: &str) -> Msg {
    let params = format!("{{{extra}{}}}", env());
    Msg {
        line: format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
            .into_bytes(),
        method: Some(method.into()),
        params: Some(params),
        id: Some(Id::Num(id)),
    }
}

fn plain(id: i64, method: &str, params: &str) -> Msg {
    Msg {
        line: format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
            .into_bytes(),
        method: Some(method.into()),
        params: Some(params.into()),
        id: Some(Id::Num(id)),
    }
}

fn send(l: &mut Link, m: &Msg, now: Instant) -> FromClient {
    l.on_client(
        &m.line,
        m.method.as_deref(),
        m.params.as_deref(),
        m.id.as_ref(),
        now,
    )
}

fn v(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

fn init_ok(id: &str) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "result": {
        "protocolVersion": "2025-11-25",
        "capabilities": {"tools": {"listChanged": true}},
        "serverInfo": {"name": "echo-server", "version": "0.1.0"},
    }})
    .to_string()
    .into_bytes()
}

fn not_found(id: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}})
        .to_string()
        .into_bytes()
}

/// Drives the link through the relay's initialize; returns its id.
fn init_id(l: &Link) -> String {
    match l.state() {
        LinkState::Initializing {
            init: Id::Str(s), ..
        } => s.to_string(),
        s => panic!("not initializing: {s:?}"),
    }
}

#[test]
fn a_handshake_client_passes_untouched() {
    let t0 = Instant::now();
    let mut l = Link::new(UpstreamProtocol::Auto, PROBE_TIMEOUT, t0);
    let init = plain(
        0,
        "initialize",
        r#"{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}"#,
    );
    assert_eq!(send(&mut l, &init, t0), FromClient::Send(init.line.clone()));
    assert!(l.passes());
    let later = req(1, "tools/list", "");
    assert_eq!(
        send(&mut l, &later, t0),
        FromClient::Send(later.line.clone())
    );
    assert_eq!(l.on_server_response(&Id::Num(0), b"{}", t0), None);
}

#[test]
fn a_modern_client_in_front_of_a_handshake_server_is_bridged() {
    let t0 = Instant::now();
    let mut l = Link::new(UpstreamProtocol::Auto, PROBE_TIMEOUT, t0);
    let disc = req(0, "server/discover", "");
    // The client's discover is the probe.
    assert_eq!(send(&mut l, &disc, t0), FromClient::Send(disc.line.clone()));
    let list = req(1, "tools/list", "");
    assert_eq!(send(&mut l, &list, t0), FromClient::Held);
    // The server does not know discover: the relay initializes it.
    let c = l
        .on_server_response(&Id::Num(0), &not_found(json!(0)), t0)
        .unwrap();
    assert!(c.to_client.is_empty() && c.released.is_empty());
    let init = v(&c.to_server[0]);
    assert_eq!(init["method"], "initialize");
    assert_eq!(init["params"]["clientInfo"]["name"], "py2");
    assert_eq!(init["params"]["capabilities"], json!({"elicitation": {}}));
    let id = init_id(&l);
    let c = l
        .on_server_response(&Id::Str(id.clone().into()), &init_ok(&id), t0)
        .unwrap();
    assert_eq!(v(&c.to_server[0])["method"], "notifications/initialized");
    let (to, line) = &c.to_client[0];
    assert_eq!(*to, Id::Num(0));
    let d = v(line);
    assert_eq!(d["id"], 0);
    assert_eq!(d["result"]["supportedVersions"], json!(["2026-07-28"]));
    assert_eq!(
        d["result"]["capabilities"]["tools"],
        json!({"listChanged": true})
    );
    assert_eq!(c.released, vec![list.line.clone()]);
    assert!(matches!(l.state(), LinkState::Bridged { .. }));
    assert_eq!(l.verdict().era(), Some(Era::Handshake));
    // Released and later requests lose the envelope.
    let FromClient::Send(out) = send(&mut l, &list, t0) else {
        panic!()
    };
    assert_eq!(
        v(&out),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
    );
    let done = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#;
    assert_eq!(
        v(&l.on_server_result(done).unwrap())["result"]["resultType"],
        "complete"
    );
    let call = req(
        2,
        "tools/call",
        r#""name":"echo","arguments":{"text":"hi"},"#,
    );
    let FromClient::Send(out) = send(&mut l, &call, t0) else {
        panic!()
    };
    assert!(v(&out)["params"].get("_meta").is_none());
    assert_eq!(v(&out)["params"]["arguments"]["text"], "hi");
}

#[test]
fn a_bridged_link_answers_discover_and_a_late_initialize_itself() {
    let t0 = Instant::now();
    let mut l = Link::new(UpstreamProtocol::Legacy, PROBE_TIMEOUT, t0);
    let disc = req(0, "server/discover", "");
    let FromClient::SendOwn(own) = send(&mut l, &disc, t0) else {
        panic!()
    };
    assert_eq!(v(&own)["method"], "initialize", "legacy: no probe");
    let id = init_id(&l);
    let c = l
        .on_server_response(&Id::Str(id.clone().into()), &init_ok(&id), t0)
        .unwrap();
    assert_eq!(c.to_client[0].0, Id::Num(0));
    assert!(c.released.is_empty(), "the discover is answered, not held");
    // A later discover is answered by the relay.
    let FromClient::Answer(a) = send(&mut l, &disc, t0) else {
        panic!()
    };
    assert_eq!(
        v(&a)["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "echo-server"
    );
    let late = plain(5, "initialize", r#"{"protocolVersion":"2025-03-26"}"#);
    let FromClient::Answer(a) = send(&mut l, &late, t0) else {
        panic!()
    };
    assert_eq!(
        (
            v(&a)["id"].clone(),
            v(&a)["result"]["protocolVersion"].clone()
        ),
        (json!(5), json!("2025-03-26"))
    );
    let n = Msg {
        line: br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec(),
        method: Some("notifications/initialized".into()),
        params: None,
        id: None,
    };
    assert_eq!(send(&mut l, &n, t0), FromClient::Drop);
    let FromClient::Bridge(c) = send(
        &mut l,
        &req(6, "subscriptions/listen", r#""notifications":{},"#),
        t0,
    ) else {
        panic!()
    };
    assert_eq!(v(&c.notify[0])["params"]["notifications"], json!({}));
    let bad = plain(7, "tools/call", r#"{"_meta":[1]}"#);
    let FromClient::Refuse(e) = send(&mut l, &bad, t0) else {
        panic!()
    };
    assert_eq!(v(&e)["error"]["code"], -32602);
    let resp = Msg {
        line: br#"{"jsonrpc":"2.0","id":9,"result":{}}"#.to_vec(),
        method: None,
        params: None,
        id: None,
    };
    assert_eq!(send(&mut l, &resp, t0), FromClient::Send(resp.line.clone()));
}

#[test]
fn a_modern_server_answers_the_probe_and_everything_passes() {
    let t0 = Instant::now();
    let mut l = Link::new(UpstreamProtocol::Auto, PROBE_TIMEOUT, t0);
    let disc = req(0, "server/discover", "");
    send(&mut l, &disc, t0);
    let list = req(1, "tools/list", "");
    assert_eq!(send(&mut l, &list, t0), FromClient::Held);
    let ok = json!({"jsonrpc": "2.0", "id": 0, "result": {"supportedVersions": ["2026-07-28"], "capabilities": {}}});
    let ok = ok.to_string().into_bytes();
    let c = l.on_server_response(&Id::Num(0), &ok, t0).unwrap();
    assert_eq!(c.to_client, vec![(Id::Num(0), ok)]);
    assert_eq!(c.released, vec![list.line.clone()]);
    assert!(c.to_server.is_empty());
    assert!(l.passes());
    assert_eq!(send(&mut l, &list, t0), FromClient::Send(list.line.clone()));
    assert_eq!(
        l.on_server_result(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
        None,
        "a modern server's results pass"
    );
}

#[test]
fn a_client_starting_without_discover_gets_the_relays_own_probe() {
    let t0 = Instant::now();
    let mut l = Link::new(UpstreamProtocol::Auto, PROBE_TIMEOUT, t0);
    let list = req(3, "tools/list", "");
    let FromClient::SendOwn(probe) = send(&mut l, &list, t0) else {
        panic!()
    };
    let p = v(&probe);
    assert_eq!(p["method"], "server/discover");
    let c = l
        .on_server_response(&Id::from_value(&p["id"]), &not_found(p["id"].clone()), t0)
        .unwrap();
    assert!(c.to_client.is_empty());
    let id = init_id(&l);
    let c = l
        .on_server_response(&Id::Str(id.clone().into()), &init_ok(&id), t0)
        .unwrap();
    assert!(c.to_client.is_empty(), "the client sent no discover");
    assert_eq!(c.released, vec![list.line]);
}

#[test]
fn a_probe_that_gets_no_answer_settles_legacy_on_the_fake_clock() {
    let t0 = Instant::now();
    let mut l = Link::new(UpstreamProtocol::Auto, Duration::from_secs(2), t0);
    send(&mut l, &req(0, "server/discover", ""), t0);
    assert_eq!(l.deadline(), Some(t0 + Duration::from_secs(2)));
    assert_eq!(l.on_tick(t0 + Duration::from_millis(1999)), None);
    let c = l.on_tick(t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(v(&c.to_server[0])["method"], "initialize");
    assert_eq!(l.deadline(), None);
    // The probe's late answer is dropped, not delivered.
    let late = l
        .on_server_response(&Id::Num(0), &not_found(json!(0)), t0)
        .unwrap();
    assert_eq!(late, Consumed::default());
    let id = init_id(&l);
    let c = l
        .on_server_response(&Id::Str(id.clone().into()), &init_ok(&id), t0)
        .unwrap();
    assert_eq!(
        c.to_client[0].0,
        Id::Num(0),
        "the client's discover is answered by the relay"
    );
}

#[test]
fn the_hold_is_capped() {
    let t0 = Instant::now();
    let mut l = Link::new(UpstreamProtocol::Auto, PROBE_TIMEOUT, t0);
    send(&mut l, &req(0, "server/discover", ""), t0);
    for i in 1..=HOLD_CAP as i64 {
        assert_eq!(
            send(&mut l, &req(i, "tools/list", ""), t0),
            FromClient::Held
        );
    }
    let FromClient::Refuse(e) = send(&mut l, &req(999, "tools/list", ""), t0) else {
        panic!()
    };
    let e = v(&e);
    assert_eq!(
        (e["id"].clone(), e["error"]["code"].clone()),
        (json!(999), json!(-32008))
    );
    let n = Msg {
        line: br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#
            .to_vec(),
        method: Some("notifications/cancelled".into()),
        params: Some(r#"{"requestId":1}"#.into()),
        id: None,
    };
    assert_eq!(send(&mut l, &n, t0), FromClient::Drop);
    assert_eq!(l.refused, 2);
}

#[test]
fn a_refused_initialize_passes_the_servers_words_to_the_client() {
    let t0 = Instant::now();
    let mut l = Link::new(UpstreamProtocol::Legacy, PROBE_TIMEOUT, t0);
    send(&mut l, &req(0, "server/discover", ""), t0);
    let id = init_id(&l);
    let err =
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32022, "message": "modern only"}});
    let c = l
        .on_server_response(&Id::Str(id.clone().into()), err.to_string().as_bytes(), t0)
        .unwrap();
    let e = v(&c.to_client[0].1);
    assert_eq!(
        (e["id"].clone(), e["error"]["code"].clone()),
        (json!(0), json!(-32022))
    );
    assert!(l.passes());
}

#[test]
fn fixed_modern_and_bad_envelopes_pass_through() {
    let t0 = Instant::now();
    let mut l = Link::new(UpstreamProtocol::Modern, PROBE_TIMEOUT, t0);
    let disc = req(0, "server/discover", "");
    assert_eq!(send(&mut l, &disc, t0), FromClient::Send(disc.line.clone()));
    assert!(l.passes());
    let mut l = Link::new(UpstreamProtocol::Auto, PROBE_TIMEOUT, t0);
    let bad = plain(
        0,
        "tools/list",
        r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01","io.modelcontextprotocol/clientCapabilities":{}}}"#,
    );
    let FromClient::Refuse(e) = send(&mut l, &bad, t0) else {
        panic!()
    };
    assert_eq!(v(&e)["error"]["data"]["supported"], json!(["2026-07-28"]));
    // A notification before any request passes and decides nothing.
    let mut l = Link::new(UpstreamProtocol::Auto, PROBE_TIMEOUT, t0);
    let n = Msg {
        line: b"{}".to_vec(),
        method: Some("notifications/x".into()),
        params: None,
        id: None,
    };
    assert_eq!(send(&mut l, &n, t0), FromClient::Send(b"{}".to_vec()));
    assert_eq!(*l.state(), LinkState::Fresh);
}

#[test]
fn a_restarted_server_is_initialized_again_by_a_bridging_link() {
    let t0 = Instant::now();
    let mut l = Link::new(UpstreamProtocol::Legacy, PROBE_TIMEOUT, t0);
    assert_eq!(l.on_restart(), None, "fresh: nothing to replay");
    send(&mut l, &req(0, "server/discover", ""), t0);
    let id = init_id(&l);
    l.on_server_response(&Id::Str(id.clone().into()), &init_ok(&id), t0)
        .unwrap();
    let (rid, line) = l.on_restart().unwrap();
    assert_ne!(rid, Id::Str(id.into()));
    assert_eq!(v(&line)["method"], "initialize");
    let Id::Str(r) = &rid else { panic!() };
    let c = l.on_server_response(&rid, &init_ok(r), t0).unwrap();
    assert!(c.to_client.is_empty());
    assert!(matches!(l.state(), LinkState::Bridged { .. }));
    // A restart while probing initializes the new server.
    let mut l = Link::new(UpstreamProtocol::Auto, PROBE_TIMEOUT, t0);
    send(&mut l, &req(0, "server/discover", ""), t0);
    assert!(l.on_restart().is_some());
    assert!(matches!(
        l.state(),
        LinkState::Initializing { discover: None, .. }
    ));
}

#[path = "link_bridge_tests.rs"]
mod bridge;

/// A bridged link, the server initialized by the relay.
fn bridged(t0: Instant) -> Link {
    let mut l = Link::new(UpstreamProtocol::Legacy, PROBE_TIMEOUT, t0);
    let disc = req(0, "server/discover", "");
    send(&mut l, &disc, t0);
    let id = init_id(&l);
    l.on_server_response(&Id::Str(id.clone().into()), &init_ok(&id), t0)
        .unwrap();
    assert!(l.bridging());
    l
}

#[test]
fn log_messages_follow_the_opt_in_of_the_requests_in_flight() {
    let t0 = Instant::now();
    let mut l = bridged(t0);
    let info = Some(r#"{"level":"info","data":"x"}"#);
    let error = Some(r#"{"level":"error","data":"x"}"#);
    // Nothing in flight: a modern server sends no log outside a request.
    assert!(!l.deliver_log(info));
    let quiet = req(1, "tools/call", r#""name":"echo","#);
    send(&mut l, &quiet, t0);
    assert!(!l.deliver_log(info) && !l.deliver_log(error));
    // The level rides in the envelope's own `_meta`.
    let params = format!(
        r#"{{"name":"echo",{}}}"#,
        env().replace(
            r#""_meta":{"#,
            r#""_meta":{"io.modelcontextprotocol/logLevel":"warning","#
        )
    );
    let warn = Msg {
        line: format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{params}}}"#)
            .into_bytes(),
        method: Some("tools/call".into()),
        params: Some(params),
        id: Some(Id::Num(2)),
    };
    send(&mut l, &warn, t0);
    // One of the two asked for warning and above.
    assert!(!l.deliver_log(info));
    assert!(l.deliver_log(error));
    assert!(!l.deliver_log(Some(r#"{"level":"loud"}"#)));
    assert!(!l.deliver_log(None));
    // Answered: its opt-in goes with it.
    l.forget(&Id::Num(2));
    assert!(!l.deliver_log(error));
    l.forget(&Id::Num(1));
    assert!(l.logs.is_empty());
}

#[test]
fn a_link_that_does_not_bridge_passes_every_log() {
    let t0 = Instant::now();
    let mut l = Link::new(UpstreamProtocol::Auto, PROBE_TIMEOUT, t0);
    send(&mut l, &plain(1, "initialize", "{}"), t0);
    assert!(l.passes());
    assert!(l.deliver_log(Some(r#"{"level":"debug"}"#)));
}
