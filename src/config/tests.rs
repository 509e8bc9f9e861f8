use super::*;
use crate::cli::{self, Command};

fn base() -> ReverseConfig {
    let args: Vec<String> = ["reverse", "--config", "x.json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    match cli::parse(&args).expect("cli").command {
        Command::Reverse(c) => *c,
        _ => panic!("not reverse"),
    }
}

#[test]
fn mcp_servers_entries_become_upstreams() {
    let r = parse(
        r#"{"response_timeout": "60s",
            "mcpServers": {
              "files": {"command": "npx", "args": ["-y", "srv"], "env": {"K": "v", "L": ""},
                        "pool": "shared"},
              "remote": {"type": "http", "url": "http://127.0.0.1:3001/mcp",
                         "headers": {"Authorization": "Bearer t"}},
              "off": {"command": "x", "disabled": true}}}"#,
        &base(),
        None,
    )
    .unwrap();
    assert_eq!(r.upstreams.len(), 2, "the disabled one is skipped");
    let f = &r.upstreams[0];
    assert_eq!((f.name.as_str(), f.path.as_str()), ("files", "/mcp/files"));
    assert_eq!(f.command.argv, vec!["npx", "-y", "srv"]);
    assert_eq!(
        f.command.env,
        vec![("K".into(), "v".into()), ("L".into(), String::new())]
    );
    assert_eq!(f.pool, PoolMode::Shared);
    assert_eq!(f.response_timeout, Duration::from_secs(60));
    assert_eq!(
        format!("{:?}", f.command),
        r#"["npx", "-y", "srv"]"#,
        "no env in logs"
    );
    let u = &r.upstreams[1];
    assert!(u.command.is_empty());
    let h = u.http.as_ref().unwrap();
    assert_eq!(h.headers, vec![("authorization".into(), "Bearer t".into())]);
}

#[test]
fn mcp_servers_errors_name_the_key() {
    let e = |doc: &str| parse(doc, &base(), None).unwrap_err();
    assert_eq!(
        e(r#"{"mcpServers": {"a": {"command": "s", "argz": []}}}"#),
        "mcpServers.a.argz: unknown key (did you mean args?)"
    );
    assert_eq!(
        e(r#"{"mcpServers": {"a": {"url": "http://h/", "type": "sse"}}}"#)
            .split(':')
            .next(),
        Some("mcpServers.a.type")
    );
    assert_eq!(
        e(r#"{"mcpServers": {"a": {"url": "http://h/", "args": ["x"]}}}"#),
        "mcpServers.a.args: only applies to a command server"
    );
    assert_eq!(
        e(r#"{"mcpServers": {"a": {"command": "s", "type": "http"}}}"#),
        "mcpServers.a.type: \"http\" needs a url, not a command"
    );
    assert_eq!(
        e(r#"{"mcpServers": {"a": {"command": "s", "env": {"A=B": "x"}}}}"#),
        "mcpServers.a.env.A=B: not a valid variable name"
    );
    assert_eq!(
        e(r#"{"mcpServers": {"a": {"command": "s", "disabled": true}}}"#),
        "upstreams: at least one upstream is needed"
    );
    assert_eq!(
        e(r#"{"upstreams": {"a": {"command": ["s"], "args": ["x"]}}}"#),
        "upstreams.a.args: unknown key (a key of mcpServers entries; \
         in upstreams, command is the whole argv array)"
    );
    assert_eq!(
        e(r#"{"upstreams": {"a": {"command": ["s"], "env": {"K": 3}}}}"#),
        "upstreams.a.env.K: expected a string"
    );
}

#[test]
fn upstreams_get_routes_and_overrides() {
    let r = parse(
        r#"{"response_timeout": "60s", "listen": "127.0.0.1:9000",
            "upstreams": {
              "a": {"command": ["srv", "--x"], "pool": "shared", "min_idle": 1},
              "b": {"url": "http://127.0.0.1:3001/mcp", "connect_timeout": "2s",
                    "headers": {"X-Key": "k"}, "response_timeout": "5s"}}}"#,
        &base(),
        None,
    )
    .unwrap();
    assert_eq!(r.global.listen.to_string(), "127.0.0.1:9000");
    let a = &r.upstreams[0];
    assert_eq!((a.name.as_str(), a.path.as_str()), ("a", "/mcp/a"));
    assert_eq!(a.command.argv, vec!["srv", "--x"]);
    assert_eq!(
        (a.pool, a.max_connections, a.max_waiting, a.min_idle),
        (PoolMode::Shared, 2, 8, 1)
    );
    assert_eq!(a.response_timeout, Duration::from_secs(60));
    assert_eq!(
        a.session_reclaim_age,
        Some(Duration::from_secs(2)),
        "the flag's default"
    );
    let b = &r.upstreams[1];
    assert_eq!(b.response_timeout, Duration::from_secs(5));
    let h = b.http.as_ref().unwrap();
    assert_eq!(h.connect_timeout, Duration::from_secs(2));
    assert_eq!(h.headers, vec![("x-key".to_string(), "k".to_string())]);
}

#[test]
fn tools_default_from_the_top_and_are_replaced_per_upstream() {
    let r = parse(
        r#"{"tools": {"deny": ["secret_*"]},
            "upstreams": {"a": {"command": ["s"]},
                          "b": {"url": "http://127.0.0.1:1/mcp", "tools": {"deny": ["other"]}}},
            "mcpServers": {"c": {"command": "s", "tools": {"allow": ["x*"], "deny": ["xy"]}}}}"#,
        &base(),
        None,
    )
    .unwrap();
    let [a, b, c] = [&r.upstreams[0], &r.upstreams[1], &r.upstreams[2]];
    assert!(a.tools.allows("echo") && !a.tools.allows("secret_rm"));
    assert!(b.tools.allows("echo") && !b.tools.allows("other"));
    assert!(
        b.tools.allows("secret_rm"),
        "the upstream's key replaces the default"
    );
    assert!(c.tools.allows("xa") && !c.tools.allows("xy") && !c.tools.allows("echo"));
    let e = |doc: &str| parse(doc, &base(), None).unwrap_err();
    assert_eq!(
        e(r#"{"upstreams": {"a": {"command": ["s"], "tools": {"alow": ["x"]}}}}"#),
        "upstreams.a.tools.alow: unknown key (did you mean allow?)"
    );
    assert_eq!(
        e(r#"{"upstreams": {"a": {"command": ["s"], "tools": {"deny": "x"}}}}"#),
        "upstreams.a.tools.deny: expected an array of tool name globs"
    );
    assert_eq!(
        e(r#"{"upstreams": {"a": {"command": ["s"], "tools": ["x"]}}}"#),
        "upstreams.a.tools: expected an object with allow and/or deny"
    );
    assert!(
        e(r#"{"mcpServers": {"a": {"command": "s", "tools": {"deny": ["[x"]}}}}"#)
            .starts_with("mcpServers.a.tools: tool glob \"[x\"")
    );
    assert_eq!(
        e(r#"{"upstreams": {"a": {"command": ["s"], "tols": {}}}}"#),
        "upstreams.a.tols: unknown key (did you mean tools?)"
    );
}

/// Fuzzing finding F3: the default queue length (4 × max_connections)
/// overflowed for a huge max_connections.
#[test]
fn a_huge_max_connections_does_not_overflow_the_default_queue() {
    let r = parse(
        r#"{"upstreams":{"a":{"command":["x"],"max_connections":18446744073709551615}}}"#,
        &base(),
        None,
    );
    if let Ok(r) = r {
        assert_eq!(r.upstreams[0].max_waiting, usize::MAX);
    }
}

#[test]
fn session_reclaim_age_defaults_from_the_top_and_overrides_per_upstream() {
    let r = parse(
        r#"{"session_reclaim_age": "never",
            "upstreams": {"a": {"command": ["s"]},
                          "b": {"command": ["s"], "session_reclaim_age": "0"},
                          "c": {"command": ["s"], "session_reclaim_age": "90s"}}}"#,
        &base(),
        None,
    )
    .unwrap();
    let ages: Vec<_> = r.upstreams.iter().map(|u| u.session_reclaim_age).collect();
    assert_eq!(
        ages,
        [None, Some(Duration::ZERO), Some(Duration::from_secs(90))]
    );
}

#[test]
fn errors_name_the_key_and_the_reason() {
    let e = |doc: &str| parse(doc, &base(), None).unwrap_err();
    assert_eq!(
        e(r#"{"upstreams": {"a": {"command": ["s"], "conect_timeout": "1s"}}}"#),
        "upstreams.a.conect_timeout: unknown key (did you mean connect_timeout?)"
    );
    assert!(
        e(r#"{"upstreams": {"a": {"command": ["s"], "response_timeout": "5 sec"}}}"#)
            .starts_with("upstreams.a.response_timeout: ")
    );
    assert_eq!(
        e(r#"{"upstreams": {"a": {"command": ["s"], "url": "http://x/"}}}"#),
        "upstreams.a: give either command or url, not both"
    );
    assert_eq!(
        e(r#"{"upstreams": {"a": {"command": ["s"], "min_idle": 5, "max_connections": 2}}}"#),
        "upstreams.a.min_idle: 5 is more than max_connections 2"
    );
    assert_eq!(
        e(r#"{"upstreams": {"a": {"command": ["s"], "connect_timeout": "1s"}}}"#),
        "upstreams.a.connect_timeout: only applies to a url upstream"
    );
    assert_eq!(
        e(r#"{"upstreams": {"a": {"command": ["s"], "listen": "127.0.0.1:1"}}}"#),
        "upstreams.a.listen: applies to the whole relay; set it at the top level"
    );
    assert_eq!(
        e(r#"{"upstreams": {"a b": {"command": ["s"]}}}"#)
            .split(':')
            .next(),
        Some("upstreams.a b")
    );
    assert_eq!(
        e(r#"{"upstreams": {}}"#),
        "upstreams: at least one upstream is needed"
    );
    assert!(e(r#"{"upstreams": {"a": {"url": "ftp://x"}}}"#).starts_with("upstreams.a.url: "));
    assert!(
        e(r#"{"upstreams": {"a": {"url": "http://x/", "reconnect_base": "1s"}}}"#)
            .starts_with("upstreams.a.reconnect_base: must be between")
    );
    assert!(e("[1]").contains("must be a JSON object"));
    assert_eq!(
        e(r#"{"upstreams": {"a": {"command": ["s"], "session_reclaim_age": 2}}}"#),
        "upstreams.a.session_reclaim_age: expected a duration string like \"2s\", or \"never\""
    );
    assert!(
        e(r#"{"session_reclaim_age": "later", "upstreams": {"a": {"command": ["s"]}}}"#)
            .starts_with("session_reclaim_age: ")
    );
    assert_eq!(
        e(r#"{"upstreams": {"a": {"url": "http://x/", "session_reclaim_age": "1s"}}}"#),
        "upstreams.a.session_reclaim_age: only applies to a command upstream"
    );
    assert_eq!(
        e(r#"{"lisen": "x", "upstreams": {}}"#),
        "lisen: unknown key (did you mean listen?)"
    );
}

#[test]
fn upstream_protocol_defaults_from_the_top_and_overrides_per_upstream() {
    use crate::mcp::era::UpstreamProtocol;
    let r = parse(
        r#"{"upstream_protocol": "legacy", "upstreams": {
            "a": {"command": ["x"]},
            "b": {"url": "http://127.0.0.1:9/mcp", "upstream_protocol": "modern"}}}"#,
        &base(),
        None,
    )
    .expect("parses");
    let by = |n: &str| {
        r.upstreams
            .iter()
            .find(|u| u.name == n)
            .expect(n)
            .upstream_protocol
    };
    assert_eq!(by("a"), UpstreamProtocol::Legacy);
    assert_eq!(by("b"), UpstreamProtocol::Modern);
    let r = parse(r#"{"upstreams": {"a": {"command": ["x"]}}}"#, &base(), None).expect("parses");
    assert_eq!(r.upstreams[0].upstream_protocol, UpstreamProtocol::Auto);
    for bad in [r#""newest""#, "3"] {
        let doc = format!(
            r#"{{"upstreams": {{"a": {{"command": ["x"], "upstream_protocol": {bad}}}}}}}"#
        );
        let e = parse(&doc, &base(), None).unwrap_err();
        assert!(e.starts_with("upstreams.a.upstream_protocol:"), "{e}");
    }
}
