//! Issue 11, class 11 (log floods and log injection) and `--log-format json`
//! (issue 15): every log source is rate-limited with a "suppressed N"
//! summary, and text a child or a client controls never reaches the relay's
//! stderr raw (no control character, no invalid UTF-8).
//!
//! Each flood test measures the relay's log over a window while the flood
//! runs, asserts a bound on lines and bytes per second, the summary line, no
//! raw control byte, a bounded RSS (`rss_kib`, figures printed), and that
//! the relay keeps answering a fresh request (forward) or session (reverse)
//! within 1 second during the attack.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::hostile::{Attack, Hostile};
use common::http::{Http, IO, VERSION, post_on};
use common::relay::Relay;
use common::{call, echo_text, initialize, rss_kib};

/// The relay's log may grow by at most this much per second under a flood.
const MAX_LOG_BYTES_PER_SEC: usize = 256 * 1024;
const MAX_LOG_LINES_PER_SEC: usize = 1200;
/// How long the log is measured once the flood is under way.
const WINDOW: Duration = Duration::from_secs(3);
/// RSS bound of the relay under a log flood (it keeps nothing).
const MAX_RSS_KIB: u64 = 64 * 1024;

/// A character that must never reach the relay's log as is. U+FFFD shows
/// that invalid UTF-8 was replaced instead of escaped.
fn raw_control(c: char) -> bool {
    (c.is_control() && c != '\t') || c == '\u{fffd}' || c == '\u{202e}'
}

/// (lines, bytes) the relay logged between `from` and `to`.
fn logged(relay: &Relay, from: Instant, to: Instant) -> (usize, usize) {
    relay
        .stderr_lines()
        .iter()
        .filter(|(at, _)| *at >= from && *at < to)
        .fold((0, 0), |(n, b), (_, l)| (n + 1, b + l.len() + 1))
}

/// Every line free of raw control characters; returns the first offender.
/// `sse`: U+FFFD is allowed (an SSE stream is decoded as the SSE spec says,
/// invalid UTF-8 replaced, before the relay sees the event).
fn first_raw_line(relay: &Relay, sse: bool) -> Option<String> {
    relay.stderr_lines().into_iter().map(|(_, l)| l).find(|l| {
        l.chars()
            .any(|c| raw_control(c) && !(sse && c == '\u{fffd}'))
    })
}

fn check_rate(what: &str, lines: usize, bytes: usize, secs: f64) {
    let (lps, bps) = (lines as f64 / secs, bytes as f64 / secs);
    eprintln!(
        "{what}: {lines} log lines, {bytes} bytes in {secs:.1} s ({lps:.0} lines/s, {bps:.0} B/s)"
    );
    assert!(
        lps <= MAX_LOG_LINES_PER_SEC as f64 && bps <= MAX_LOG_BYTES_PER_SEC as f64,
        "{what}: the log grows by {lps:.0} lines/s, {bps:.0} B/s (bounds {MAX_LOG_LINES_PER_SEC} lines/s, {MAX_LOG_BYTES_PER_SEC} B/s)"
    );
}

fn check_rss(what: &str, pid: i32) {
    let (rss, peak) = rss_kib(pid as u32).expect("relay's /proc status");
    eprintln!("{what}: relay RSS {rss} KiB, peak {peak} KiB (bound {MAX_RSS_KIB} KiB)");
    assert!(peak <= MAX_RSS_KIB, "{what}: relay peak RSS {peak} KiB");
}

/// A child that floods stdout (not JSON-RPC) and stderr with ESC, CR, NUL,
/// DEL, C1 and invalid UTF-8: before the fix one WARN per stdout line with
/// the bytes quoted raw (the log grew by megabytes per second) and every
/// stderr line logged with its ESC and NUL bytes.
#[test]
fn class11_child_log_flood_is_limited_and_escaped() {
    let _flood = common::one_flood_at_a_time();
    let mut relay = Relay::start(&[], &["--log-injection"]);
    relay.handshake();
    let t0 = Instant::now();
    let mut id = 100;
    // Let the flood get going, then measure while requests keep coming.
    let mut worst = Duration::ZERO;
    while t0.elapsed() < Duration::from_secs(1) + WINDOW {
        id += 1;
        let asked = Instant::now();
        relay.send(&call(json!(id), "still here"));
        let reply = relay.expect_response(&json!(id), Duration::from_secs(1));
        worst = worst.max(asked.elapsed());
        assert_eq!(echo_text(&reply), Some("still here"), "{reply}");
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("slowest answer during the flood: {worst:?}");
    let from = t0 + Duration::from_secs(1);
    let (lines, bytes) = logged(&relay, from, from + WINDOW);
    check_rss("child log flood", relay.pid);
    check_rate("child log flood", lines, bytes, WINDOW.as_secs_f64());
    let text = relay.stderr_text();
    assert!(
        text.contains("similar lines suppressed") && text.contains("stderr lines suppressed"),
        "no summary line for the suppressed stdout/stderr lines\n{}",
        relay.stderr_dump()
    );
    assert!(
        text.contains("\\x1b[31mRED") && text.contains("\\xff\\xfe"),
        "the child's text is not shown escaped\n{}",
        relay.stderr_dump()
    );
    if let Some(l) = first_raw_line(&relay, false) {
        panic!("raw control bytes in the relay's log: {l:?}");
    }
}

/// An HTTP upstream whose GET stream floods events that are not JSON-RPC,
/// with control bytes and invalid UTF-8 (`forward --url`): before the fix
/// one WARN per event, quoting it raw.
#[test]
fn class11_upstream_get_stream_log_flood_is_limited_and_escaped() {
    let _flood = common::one_flood_at_a_time();
    let up = Hostile::start(Attack::LogInjection);
    let mut relay = Relay::forward().args(["--url", &up.url()]).start();
    relay.handshake();
    let t0 = Instant::now();
    let mut id = 100;
    let mut worst = Duration::ZERO;
    while t0.elapsed() < Duration::from_secs(1) + WINDOW {
        id += 1;
        let asked = Instant::now();
        relay.send(&call(json!(id), "still here"));
        let reply = relay.expect_response(&json!(id), Duration::from_secs(1));
        worst = worst.max(asked.elapsed());
        assert_eq!(echo_text(&reply), Some("still here"), "{reply}");
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("slowest answer during the flood: {worst:?}");
    let from = t0 + Duration::from_secs(1);
    let (lines, bytes) = logged(&relay, from, from + WINDOW);
    check_rss("GET stream log flood", relay.pid);
    check_rate("GET stream log flood", lines, bytes, WINDOW.as_secs_f64());
    let text = relay.stderr_text();
    assert!(
        text.contains("similar lines suppressed"),
        "no summary line\n{}",
        relay.stderr_dump()
    );
    assert!(
        text.contains("\\x1b[31mRED\\x1b[2J\\x00nul\\x7f\\u{9b}c1"),
        "the upstream's text is not shown escaped\n{}",
        relay.stderr_dump()
    );
    if let Some(l) = first_raw_line(&relay, true) {
        panic!("raw control bytes in the relay's log: {l:?}");
    }
}

/// Clients flooding malformed requests (with ESC and NUL in them), each
/// logged at debug: before the fix one line per request, without limit.
#[test]
fn class11_client_bad_request_flood_is_limited() {
    let _flood = common::one_flood_at_a_time();
    let relay = Relay::reverse("echo")
        .args(["--log-level", "debug"])
        .echo_server(&[])
        .start();
    let port = relay.port;
    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..3u64)
        .map(|n| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let bad: &[&[u8]] = &[
                    b"GE\x1b[2JT /mcp HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /mcp\x00\r HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"POST /mcp HTTP/1.1\r\nHost: x\r\nMcp-Session-Id: \x1b[31m\xff\r\n\r\n",
                ];
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut http) = Http::try_connect(port) else {
                        continue;
                    };
                    let _ = http.write(bad[((sent + n) % 3) as usize]);
                    let _ = http.closed_by_peer(Instant::now() + Duration::from_secs(1));
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let t0 = Instant::now();
    let mut worst = Duration::ZERO;
    let mut id = 0;
    while t0.elapsed() < Duration::from_secs(1) + WINDOW {
        id += 1;
        let asked = Instant::now();
        let mut http = Http::connect(port);
        let resp = post_on(
            &mut http,
            None,
            &initialize(json!(id)),
            &[],
            Duration::from_secs(1),
        )
        .unwrap_or_else(|e| panic!("fresh session not answered within 1 s ({e:?})"));
        worst = worst.max(asked.elapsed());
        assert_eq!(resp.status(), 200, "fresh initialize: {resp:?}");
        if let Some(sid) = resp.header("mcp-session-id").map(str::to_owned) {
            let _ = http.try_request(
                "DELETE",
                "/mcp",
                &[("Mcp-Session-Id", &sid), ("MCP-Protocol-Version", VERSION)],
                b"",
                IO,
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = floods.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!("{sent} bad requests sent; slowest fresh session: {worst:?}");
    let from = t0 + Duration::from_secs(1);
    let (lines, bytes) = logged(&relay, from, from + WINDOW);
    check_rss("bad request flood", relay.pid);
    check_rate("bad request flood", lines, bytes, WINDOW.as_secs_f64());
    assert!(
        sent as f64 / (WINDOW.as_secs_f64() + 1.0) > 2.0 * lines as f64 / WINDOW.as_secs_f64(),
        "the flood was too slow to show anything ({sent} requests)"
    );
    assert!(
        relay.stderr_text().contains("similar lines suppressed"),
        "no summary line\n{}",
        relay.stderr_dump()
    );
    if let Some(l) = first_raw_line(&relay, false) {
        panic!("raw control bytes in the relay's log: {l:?}");
    }
}

fn check_json_lines(relay: &Relay) -> Vec<Value> {
    let lines = relay.stderr_lines();
    assert!(!lines.is_empty(), "nothing logged");
    lines
        .iter()
        .map(|(_, l)| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l:?}"));
            for field in ["ts", "level", "target", "message"] {
                assert!(v[field].is_string(), "log line without {field}: {l}");
            }
            v
        })
        .collect()
}

/// `--log-format json`: every stderr line is one JSON object, peer text
/// included (escaped), in forward mode.
#[test]
fn log_format_json_forward() {
    let mut relay = Relay::start(&["--log-format", "json"], &["--log-injection"]);
    relay.handshake();
    relay.send(&call(json!(7), "json"));
    relay.expect_response(&json!(7), IO);
    thread::sleep(Duration::from_millis(1500));
    relay.close_stdin();
    relay.wait_exit(Duration::from_secs(10));
    let lines = check_json_lines(&relay);
    assert!(
        lines.iter().any(|v| v["message"]
            .as_str()
            .is_some_and(|m| m.contains("started pid "))),
        "no `started pid` line"
    );
    assert!(
        lines.iter().any(|v| v["message"]
            .as_str()
            .is_some_and(|m| m.contains("\\x1b[31mRED"))),
        "the child's text is not in the JSON log, escaped"
    );
    assert!(
        lines.iter().any(|v| v["target"] == "mcp_relay::stderr"),
        "no stderr line"
    );
}

/// `--log-format json` in reverse mode; a bad value is refused.
#[test]
fn log_format_json_reverse() {
    let relay = Relay::reverse("echo")
        .args(["--log-level", "debug", "--log-format", "json"])
        .echo_server(&[])
        .start();
    let mut http = Http::connect(relay.port);
    let resp = post_on(&mut http, None, &initialize(json!(1)), &[], IO).expect("initialize");
    assert_eq!(resp.status(), 200);
    let mut bad = Http::connect(relay.port);
    let _ = bad.write(b"GE\x1bT / HTTP/1.1\r\n\r\n");
    let _ = bad.closed_by_peer(Instant::now() + IO);
    relay.stop(Duration::from_secs(10));
    let lines = check_json_lines(&relay);
    assert!(lines.iter().any(|v| v["level"] == "DEBUG"));
    assert!(lines.iter().any(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("listening on"))
    }));

    let out = std::process::Command::new(common::RELAY)
        .args(["forward", "--log-format", "yaml", "--", "true"])
        .output()
        .expect("run the relay");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-format"));
}
