//! The OAuth client's authorization lifecycle (`auth::client::flow`) fed
//! by a hostile resource and authorization server.
//!
//! Input: records separated by `\n--\n`. The first is the upstream's
//! `WWW-Authenticate` value (to `parse_challenge`, then `on_denied` with
//! 401); when it starts with `login:`, the flow starts as `auth login`
//! does instead (the probe), and the rest is the `WWW-Authenticate` of
//! every response. Each next record answers whatever the flow asked for: a
//! fetch gets status `200 + first byte % 4 * 100` (200/300/400/500, so
//! documents, redirects and errors; a first byte of `!` makes it 401, so
//! the probe's challenge is read) and the rest as its body; a listen gets
//! a port; a browse gets the rest as the callback's query string. Also the
//! form codec and the browser command splitter on the first record.
//!
//! Checks: no panic on any bytes; a fetch URL the front would accept has a
//! host; the probe is a `ping` POST to the MCP URL with no `Authorization`;
//! a bearer token the flow holds never appears in any later fetch (tokens
//! go only to the resource, which the flow never fetches); a flow asked
//! for at most 64 steps per input (it never loops on its own: each step
//! waits for an answer).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mcp_relay::auth::client::flow::{Flow, Step};
use mcp_relay::auth::client::{ClientOptions, form_decode, form_encode, parse_challenge, split_words};
use mcp_relay::upstream::url::Url;

const URL: &str = "https://mcp.example/mcp";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut records = text.split("\n--\n");
    let first = records.next().unwrap_or("");

    // The codecs on their own: decoding what was encoded gives it back.
    if let Some(pairs) = form_decode(first) {
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(form_decode(&form_encode(&refs)), Some(pairs.clone()));
    }
    let _ = split_words(first);

    let challenge = parse_challenge(first);
    let opts = ClientOptions::default();
    let mut flow = Flow::new(URL, &opts);
    let t0 = Instant::now();
    let mut now = t0;
    let now_unix = 1_800_000_000;
    let login = first.strip_prefix("login:");
    let mut step = match login {
        Some(_) => {
            let s = flow.login();
            if let Step::Fetch(f) = &s {
                assert_eq!((f.method, f.url.as_str()), ("POST", URL));
                assert!(!f.headers.iter().any(|(k, _)| k == "authorization"));
                assert!(f.body.windows(6).any(|w| w == b"\"ping\""));
            }
            s
        }
        None => flow.on_denied(401, &challenge, None, now),
    };
    let mut tokens_seen: Vec<String> = Vec::new();
    for (n, record) in records.enumerate() {
        assert!(n < 64, "more steps than records allow");
        now += Duration::from_millis(10);
        if let Some(b) = flow.bearer()
            && !b.is_empty()
            && !tokens_seen.iter().any(|t| t == b)
        {
            tokens_seen.push(b.to_string());
        }
        step = match step {
            Step::Fetch(f) => {
                // What the servers named is fetched as they named it; the
                // front parses it first and fails the fetch if it cannot
                // (so a URL it accepts is http or https, and has a host).
                if let Ok(u) = Url::parse(&f.url) {
                    assert!(!u.host.is_empty(), "a fetch to {:?} without a host", f.url);
                }
                for t in &tokens_seen {
                    // A refresh may name the refresh token, never the access token.
                    assert!(!f.url.contains(t.as_str()), "the access token in a URL");
                    assert!(
                        !f.headers.iter().any(|(_, v)| v.contains(t.as_str())),
                        "the access token in a header of a fetch"
                    );
                }
                let bytes = record.as_bytes();
                let status = match bytes.first().copied().unwrap_or(0) {
                    b'!' => 401,
                    b => 200 + u16::from(b % 4) * 100,
                };
                let body = bytes.get(1..).unwrap_or(&[]);
                flow.on_response(status, login, body, now, now_unix)
            }
            Step::Listen { preferred } => {
                let port = preferred.wrapping_add(record.len() as u16 % 3);
                flow.listening(port, now)
            }
            Step::Browse { .. } => match flow.on_callback(record, now) {
                Ok(s) => s,
                Err(_) => break,
            },
            Step::Refresh => flow.start_refresh(now),
            Step::Authorized | Step::Failed(_) | Step::Wait => break,
        };
    }
    // The clock moving on never panics either.
    let _ = flow.on_tick(now + Duration::from_secs(3600));
});
