//! `forward -- CMD` between a 2026-07-28 client and a handshake-era stdio
//! server (the echo server), byte by byte (issue 13, docs/eras.md): the relay
//! initializes the server itself, answers `server/discover`, strips the
//! envelope, marks results complete, and bounds what it holds meanwhile.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::relay::Relay;

const T: Duration = Duration::from_secs(10);

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "modern-test", "version": "9"},
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    })
}

fn discover(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "server/discover", "params": {"_meta": meta()}})
}

fn call(id: i64, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "echo", "arguments": {"text": text}, "_meta": meta()}})
}

#[test]
fn a_modern_client_is_answered_discover_from_the_relays_own_initialize() {
    let log = std::env::temp_dir().join(format!("forward-eras-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let log_s = log.to_string_lossy().into_owned();
    let mut relay = Relay::start(&[], &["--log", &log_s]);
    relay.send(&discover(0));
    let d = relay.expect_response(&json!(0), T);
    assert_eq!(
        d["result"]["supportedVersions"],
        json!(["2026-07-28"]),
        "{d}"
    );
    assert_eq!(
        d["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "echo-server"
    );
    assert_eq!(d["result"]["resultType"], "complete");
    relay.send(&call(1, "modern"));
    let r = relay.expect_response(&json!(1), T);
    assert_eq!(r["result"]["content"][0]["text"], "modern", "{r}");
    assert_eq!(r["result"]["resultType"], "complete");
    assert_eq!(r["result"]["cacheScope"], "private");
    // A second discover is the relay's too: the server saw exactly one.
    relay.send(&discover(2));
    relay.expect_response(&json!(2), T);
    relay.close_stdin();
    relay.drain_to_eof(T);
    let seen: Vec<Value> = std::fs::read_to_string(&log)
        .expect("server log")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let _ = std::fs::remove_file(&log);
    let methods: Vec<&str> = seen.iter().filter_map(|m| m["method"].as_str()).collect();
    assert_eq!(
        methods,
        [
            "server/discover",
            "initialize",
            "notifications/initialized",
            "tools/call"
        ],
        "{seen:?}"
    );
    let init = &seen[1];
    assert_eq!(init["params"]["clientInfo"]["name"], "modern-test");
    assert_eq!(init["params"]["capabilities"], json!({"elicitation": {}}));
    assert!(
        seen[3]["params"].get("_meta").is_none(),
        "the envelope reached the server: {}",
        seen[3]
    );
}

#[test]
fn a_handshake_client_still_passes_untouched() {
    let mut relay = Relay::start(&[], &[]);
    let init = relay.handshake();
    assert!(init["result"].get("resultType").is_none(), "{init}");
    relay.echo_ok(json!(5), "old");
}

#[test]
fn messages_held_while_the_era_is_found_out_are_capped_and_the_rest_refused() {
    // The server answers everything 100 ms late: the probe is still out
    // while the client's burst arrives.
    let mut relay = Relay::start(&[], &["--delay-ms", "100"]);
    let mut burst = Vec::new();
    for id in 0..100 {
        let msg = if id == 0 { discover(0) } else { call(id, "x") };
        burst.extend_from_slice(msg.to_string().as_bytes());
        burst.push(b'\n');
    }
    relay.send_bytes(burst);
    let (mut answered, mut busy) = (0, 0);
    for _ in 0..100 {
        let m = relay.expect_msg(Duration::from_secs(60), "an answer to the burst");
        match m["error"]["code"].as_i64() {
            Some(-32008) => busy += 1,
            None => answered += 1,
            Some(other) => panic!("unexpected error {other}: {m}"),
        }
    }
    eprintln!("burst of 100: {answered} answered, {busy} refused upstream_busy");
    // The discover and the 64 held calls are answered; the rest refused.
    assert_eq!((answered, busy), (65, 35));
    assert!(
        relay
            .stderr_text()
            .contains("refused while finding out the server's protocol era")
    );
    // And the relay goes on serving.
    relay.send(&call(500, "after"));
    let r = relay.expect_response(&json!(500), Duration::from_secs(5));
    assert_eq!(r["result"]["content"][0]["text"], "after");
}

#[test]
fn upstream_protocol_modern_never_bridges() {
    let mut relay = Relay::start(&["--upstream-protocol", "modern"], &[]);
    relay.send(&discover(0));
    let d = relay.expect_response(&json!(0), T);
    assert_eq!(d["error"]["code"], -32601, "the server's own answer: {d}");
}

/// The messages up to and including the response to `id`.
fn until_response(relay: &mut Relay, id: i64) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let m = relay.expect_msg(T, &format!("the response to {id}"));
        let done = m.get("id") == Some(&json!(id)) && m.get("method").is_none();
        seen.push(m);
        if done {
            return seen;
        }
    }
}

/// A 2026-07-28 client bridged to a handshake-era server that logs (level
/// `info`) during every call: a call hears the log only when it carried
/// `io.modelcontextprotocol/logLevel` at `info` or below; other calls, and a
/// level that names nothing, hear none.
#[test]
fn bridged_logs_reach_only_calls_that_opted_in_at_their_level() {
    let mut relay = Relay::start(&[], &["--log-during-call"]);
    relay.send(&discover(0));
    relay.expect_response(&json!(0), T);
    let cases: [(i64, Option<&str>, bool); 5] = [
        (1, None, false),
        (2, Some("info"), true),
        (3, Some("warning"), false),
        (4, Some("debug"), true),
        (5, Some("chatty"), false),
    ];
    for (id, level, hears) in cases {
        let mut c = call(id, &format!("secret-{id}"));
        if let Some(l) = level {
            c["params"]["_meta"]["io.modelcontextprotocol/logLevel"] = json!(l);
        }
        relay.send(&c);
        let seen = until_response(&mut relay, id);
        let logs: Vec<&Value> = seen
            .iter()
            .filter(|m| m["method"] == "notifications/message")
            .collect();
        assert_eq!(
            logs.len(),
            usize::from(hears),
            "opt-in {level:?}: {seen:?}\n{}",
            relay.stderr_dump()
        );
        let r = seen.last().expect("the response");
        assert_eq!(r["result"]["content"][0]["text"], format!("secret-{id}"));
    }
    relay.close_stdin();
    relay.drain_to_eof(T);
}
