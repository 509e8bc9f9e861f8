use super::*;

#[test]
fn histogram_buckets_are_inclusive_and_cumulative() {
    static B: &[f64] = &[0.1, 1.0];
    let mut h = Histogram::new(B);
    for v in [0.05, 0.1, 0.5, 1.0, 7.0, f64::NAN] {
        h.observe(v);
    }
    assert_eq!(
        h.cumulative().collect::<Vec<_>>(),
        vec![(0.1, 2), (1.0, 4), (f64::INFINITY, 5)]
    );
    assert_eq!(h.count(), 5);
    assert!((h.sum() - 8.65).abs() < 1e-9);
}

#[test]
fn renders_the_exact_text() {
    static B: &[f64] = &[0.005, 0.5, 2.5];
    let mut m = Metrics::with_duration_bounds(B);
    let ev = m.upstream("everything");
    m.upstream("we\"ird\\name\nx");
    assert_eq!(m.upstream("everything"), ev);
    m.upstream_spawned(ev);
    m.upstream_spawned(ev);
    m.upstream_exited(ev, exit_reason(Some(0), None));
    m.upstream_exited(ev, "spawn_failed");
    m.upstream_exited(ev, exit_reason(None, Some(9)));
    m.session_reclaimed(ev);
    m.request_done("ok", 0.001);
    m.request_done("ok", 0.5);
    m.request_done("timeout", 120.0);
    m.request("queue_full");
    m.timeout("response_timeout");
    m.http_response(404);
    m.http_response(200);
    m.http_response(200);
    m.upstream_queue_full(ev);
    m.client_input_paused();
    m.client_input_paused();
    m.http_limit(ev, "read_paused", 3);
    m.tls_handshake_failed("timeout");
    m.tls_handshake_failed("error");
    m.tls_handshake_failed("timeout");
    m.tls_reload("error");
    m.http_limit(ev, "read_budget", 1);
    m.http_limit(ev, "get_refused", 0);
    m.message_dropped("batch_nested");
    let gauges = [
        UpstreamGauges {
            upstream: "everything",
            starting: 1,
            idle: 2,
            leased: 3,
            closing: 0,
            waiting: 4,
            sessions: 5,
        },
        UpstreamGauges {
            upstream: "we\"ird\\name\nx",
            ..Default::default()
        },
    ];
    let mut out = String::new();
    m.render(&mut out, &gauges, 7);
    let expected = r#"# HELP mcp_relay_upstream_connections Upstream server processes by state.
# TYPE mcp_relay_upstream_connections gauge
mcp_relay_upstream_connections{upstream="everything",state="starting"} 1
mcp_relay_upstream_connections{upstream="everything",state="idle"} 2
mcp_relay_upstream_connections{upstream="everything",state="leased"} 3
mcp_relay_upstream_connections{upstream="everything",state="closing"} 0
mcp_relay_upstream_connections{upstream="we\"ird\\name\nx",state="starting"} 0
mcp_relay_upstream_connections{upstream="we\"ird\\name\nx",state="idle"} 0
mcp_relay_upstream_connections{upstream="we\"ird\\name\nx",state="leased"} 0
mcp_relay_upstream_connections{upstream="we\"ird\\name\nx",state="closing"} 0
# HELP mcp_relay_upstream_spawned_total Upstream server processes spawned.
# TYPE mcp_relay_upstream_spawned_total counter
mcp_relay_upstream_spawned_total{upstream="everything"} 2
mcp_relay_upstream_spawned_total{upstream="we\"ird\\name\nx"} 0
# HELP mcp_relay_upstream_exited_total Upstream server processes gone, by reason.
# TYPE mcp_relay_upstream_exited_total counter
mcp_relay_upstream_exited_total{upstream="everything",reason="exit_0"} 1
mcp_relay_upstream_exited_total{upstream="everything",reason="signal"} 1
mcp_relay_upstream_exited_total{upstream="everything",reason="spawn_failed"} 1
# HELP mcp_relay_pool_waiting Sessions waiting for an upstream process.
# TYPE mcp_relay_pool_waiting gauge
mcp_relay_pool_waiting{upstream="everything"} 4
mcp_relay_pool_waiting{upstream="we\"ird\\name\nx"} 0
# HELP mcp_relay_sessions Client sessions per upstream.
# TYPE mcp_relay_sessions gauge
mcp_relay_sessions{upstream="everything"} 5
mcp_relay_sessions{upstream="we\"ird\\name\nx"} 0
# HELP mcp_relay_sessions_reclaimed_total Idle sessions ended to give their process to a waiting session.
# TYPE mcp_relay_sessions_reclaimed_total counter
mcp_relay_sessions_reclaimed_total{upstream="everything"} 1
mcp_relay_sessions_reclaimed_total{upstream="we\"ird\\name\nx"} 0
# HELP mcp_relay_upstream_queue_full_total Client messages refused because the stdin queue of their process was full.
# TYPE mcp_relay_upstream_queue_full_total counter
mcp_relay_upstream_queue_full_total{upstream="everything"} 1
mcp_relay_upstream_queue_full_total{upstream="we\"ird\\name\nx"} 0
# HELP mcp_relay_requests_total Client requests finished, by outcome.
# TYPE mcp_relay_requests_total counter
mcp_relay_requests_total{outcome="ok"} 2
mcp_relay_requests_total{outcome="queue_full"} 1
mcp_relay_requests_total{outcome="timeout"} 1
# HELP mcp_relay_request_duration_seconds Time from a client request's arrival to its answer.
# TYPE mcp_relay_request_duration_seconds histogram
mcp_relay_request_duration_seconds_bucket{le="0.005"} 1
mcp_relay_request_duration_seconds_bucket{le="0.5"} 2
mcp_relay_request_duration_seconds_bucket{le="2.5"} 2
mcp_relay_request_duration_seconds_bucket{le="+Inf"} 3
mcp_relay_request_duration_seconds_sum 120.501
mcp_relay_request_duration_seconds_count 3
# HELP mcp_relay_timeouts_total Timeouts fired, by kind.
# TYPE mcp_relay_timeouts_total counter
mcp_relay_timeouts_total{kind="response_timeout"} 1
# HELP mcp_relay_messages_dropped_total Messages dropped instead of passed on, by reason.
# TYPE mcp_relay_messages_dropped_total counter
mcp_relay_messages_dropped_total{reason="batch_nested"} 1
# HELP mcp_relay_http_responses_total HTTP responses sent, by status code.
# TYPE mcp_relay_http_responses_total counter
mcp_relay_http_responses_total{code="200"} 2
mcp_relay_http_responses_total{code="404"} 1
# HELP mcp_relay_client_connections Open client connections.
# TYPE mcp_relay_client_connections gauge
mcp_relay_client_connections 7
# HELP mcp_relay_client_input_paused_total Times a client connection reached its input cap and was not read until its requests were taken.
# TYPE mcp_relay_client_input_paused_total counter
mcp_relay_client_input_paused_total 2
# HELP mcp_relay_http_upstream_limits_total Limits of an HTTP upstream hit (read budget, read paused for a slow client, GET hold cap, GET refused, message not UTF-8).
# TYPE mcp_relay_http_upstream_limits_total counter
mcp_relay_http_upstream_limits_total{upstream="everything",limit="read_budget"} 1
mcp_relay_http_upstream_limits_total{upstream="everything",limit="read_paused"} 3
# HELP mcp_relay_tls_handshake_failures_total TLS handshakes on the client listener that failed, by reason (error, eof, timeout).
# TYPE mcp_relay_tls_handshake_failures_total counter
mcp_relay_tls_handshake_failures_total{reason="error"} 1
mcp_relay_tls_handshake_failures_total{reason="timeout"} 2
# HELP mcp_relay_tls_reloads_total Reloads of the listener's TLS certificate (SIGHUP), by result (ok, error).
# TYPE mcp_relay_tls_reloads_total counter
mcp_relay_tls_reloads_total{result="error"} 1
# HELP mcp_relay_tool_calls_denied_total tools/call requests refused by the upstream's tool filter (never sent to it).
# TYPE mcp_relay_tool_calls_denied_total counter
mcp_relay_tool_calls_denied_total{upstream="everything"} 0
mcp_relay_tool_calls_denied_total{upstream="we\"ird\\name\nx"} 0
"#;
    assert_eq!(out, expected);
}

#[test]
fn label_values_beyond_the_cap_count_as_other() {
    let mut m = Metrics::new();
    for i in 0..MAX_LABEL_VALUES + 10 {
        m.timeout(&format!("k{i}"));
    }
    m.timeout("k0");
    assert_eq!(m.timeouts("k0"), 2);
    assert_eq!(m.timeouts(OVERFLOW_LABEL), 10);
    assert_eq!(m.timeouts.entries.len(), MAX_LABEL_VALUES + 1);
    // A stale id from elsewhere is ignored, not a panic.
    m.upstream_spawned(UpstreamId(99));
    assert_eq!(m.spawned(UpstreamId(99)), 0);
}

/// A line parser for the text format: comments, or
/// `name{label="value",…} value` with the escapes the format allows.
fn parse_line(line: &str) -> Result<(), String> {
    if let Some(rest) = line.strip_prefix("# ") {
        let mut parts = rest.splitn(3, ' ');
        let (kw, name) = (parts.next(), parts.next());
        return match (kw, name, parts.next()) {
            (Some("HELP"), Some(n), Some(_)) if valid_name(n) => Ok(()),
            (Some("TYPE"), Some(n), Some("counter" | "gauge" | "histogram")) if valid_name(n) => {
                Ok(())
            }
            _ => Err(format!("bad comment: {line}")),
        };
    }
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    if !valid_name(&line[..name_end]) {
        return Err(format!("bad name: {line}"));
    }
    let mut rest = &line[name_end..];
    if let Some(labels) = rest.strip_prefix('{') {
        let mut s = labels;
        loop {
            let eq = s.find("=\"").ok_or("no =\"")?;
            if !valid_name(&s[..eq]) {
                return Err(format!("bad label name: {line}"));
            }
            s = &s[eq + 2..];
            let mut chars = s.char_indices();
            let end = loop {
                match chars.next().ok_or("unterminated value")? {
                    (_, '\\') => match chars.next().ok_or("dangling escape")? {
                        (_, '\\' | '"' | 'n') => {}
                        _ => return Err(format!("bad escape: {line}")),
                    },
                    (i, '"') => break i,
                    (_, '\n') => return Err("raw newline".into()),
                    _ => {}
                }
            };
            s = &s[end + 1..];
            if let Some(more) = s.strip_prefix(',') {
                s = more;
            } else if let Some(after) = s.strip_prefix('}') {
                rest = after;
                break;
            } else {
                return Err(format!("bad label list: {line}"));
            }
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before value")?;
    match value {
        "+Inf" | "-Inf" | "NaN" => Ok(()),
        v => v
            .parse::<f64>()
            .map(|_| ())
            .map_err(|e| format!("bad value {v}: {e}")),
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[test]
fn every_rendered_line_parses() {
    let mut m = Metrics::new();
    let u = m.upstream("a \"b\" \\ c\nd");
    m.upstream_spawned(u);
    m.upstream_exited(u, "exit_nonzero");
    for v in [0.0, 0.0004, 0.003, 1.0, 29.9, 1e9, f64::INFINITY] {
        m.request_done("ok", v);
    }
    m.request("weird \"outcome\"");
    m.timeout("client_idle");
    m.http_response(503);
    let mut out = String::new();
    m.render(
        &mut out,
        &[UpstreamGauges {
            upstream: "a \"b\" \\ c\nd",
            ..Default::default()
        }],
        0,
    );
    assert!(out.ends_with('\n'));
    for line in out.lines() {
        parse_line(line).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(out.contains("mcp_relay_request_duration_seconds_bucket{le=\"120\"} 5\n"));
    assert!(out.contains("mcp_relay_request_duration_seconds_bucket{le=\"+Inf\"} 7\n"));
    assert!(out.contains("mcp_relay_request_duration_seconds_sum +Inf\n"));
    // 17 bounds plus +Inf.
    assert_eq!(out.matches("_bucket{").count(), DURATION_BOUNDS.len() + 1);
}
