//! `reverse --oauth-issuer` (issue 14): the relay as an OAuth protected
//! resource, against the test authorization server of
//! `tests/common/authz.rs` (metadata + a JWKS with rotation; tokens minted
//! here with the test keys). Real relay binary, real sockets on 127.0.0.1,
//! every wait bounded.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::authz::{AuthServer, TestKey, claims, unix_now};
use common::fake::{Fake, handler, reply_to};
use common::http::{Http, IO, Response, post_on};
use common::relay::Relay;
use common::{SHORT, call, echo_text, initialize, rss_kib};

/// The relay's public URL as tokens name it (it need not be where the test
/// reaches it: a relay behind a proxy is known by its public URL).
const AUD: &str = "https://relay.test/mcp";
const PRM_URL: &str = "https://relay.test/.well-known/oauth-protected-resource/mcp";
const SCOPE: &str = "mcp:tools";

fn start(auth: &AuthServer, extra: &[&str]) -> Relay {
    let relay = Relay::reverse("echo")
        .args([
            "--oauth-issuer",
            &auth.issuer(),
            "--oauth-audience",
            AUD,
            "--oauth-scope",
            SCOPE,
            "--log-level",
            "info",
        ])
        .args(extra)
        .echo_server(&[])
        .admin()
        .start();
    relay.wait_stderr("verification keys loaded", SHORT);
    relay
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// POST initialize with `auth` as the Authorization header (None: none).
fn init(port: u16, auth: Option<&str>) -> Response {
    let mut h = Http::connect(port);
    let extra: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    post_on(&mut h, None, &initialize(json!(0)), &extra, IO).expect("initialize: no response")
}

fn session_of(r: &Response) -> String {
    assert_eq!(r.status(), 200, "initialize: {r:?}");
    r.header("mcp-session-id").expect("session id").to_string()
}

/// tools/call "text" on session `sid` with `auth`.
fn call_on(port: u16, sid: &str, auth: &str, text: &str) -> Response {
    let mut h = Http::connect(port);
    post_on(
        &mut h,
        Some(sid),
        &call(json!(1), text),
        &[("Authorization", auth)],
        IO,
    )
    .expect("tools/call: no response")
}

fn challenge(r: &Response) -> String {
    r.header("www-authenticate")
        .unwrap_or_else(|| panic!("no WWW-Authenticate: {r:?}"))
        .to_string()
}

#[test]
fn metadata_is_served_on_both_well_known_paths() {
    let k = TestKey::rsa("k1", 1);
    let auth = AuthServer::start(&[&k]);
    let relay = start(&auth, &[]);
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let r = Http::connect(relay.port).get(path);
        assert_eq!(r.status(), 200, "{path}: {r:?}");
        let doc: Value = r.json();
        assert_eq!(doc["resource"], AUD, "{doc}");
        assert_eq!(
            doc["authorization_servers"],
            json!([auth.issuer()]),
            "{doc}"
        );
        assert_eq!(doc["scopes_supported"], json!([SCOPE]), "{doc}");
    }
    // Public even with an Origin the relay does not allow.
    let r = Http::connect(relay.port).request(
        "GET",
        "/.well-known/oauth-protected-resource",
        &[("Origin", "https://elsewhere.example")],
        b"",
    );
    assert_eq!(r.status(), 200, "{r:?}");
    // Any other path is the relay's, behind the token check.
    let r = Http::connect(relay.port).get("/.well-known/oauth-protected-resource/other");
    assert_eq!(r.status(), 401, "{r:?}");
}

#[test]
fn no_token_gets_401_with_the_metadata_url() {
    let k = TestKey::rsa("k1", 1);
    let auth = AuthServer::start(&[&k]);
    let relay = start(&auth, &[]);
    let r = init(relay.port, None);
    assert_eq!(r.status(), 401, "{r:?}");
    assert_eq!(
        challenge(&r),
        format!("Bearer resource_metadata=\"{PRM_URL}\", scope=\"{SCOPE}\"")
    );
    let r = init(relay.port, Some("Basic dXNlcjpwYXNz"));
    assert_eq!(r.status(), 401, "{r:?}");
}

#[test]
fn valid_rs256_and_es256_tokens_are_served_and_sessions_stay_with_their_subject() {
    let rsa = TestKey::rsa("r1", 1);
    let ec = TestKey::ec("e1", 1);
    let auth = AuthServer::start(&[&rsa, &ec]);
    let relay = start(&auth, &[]);
    let iss = auth.issuer();
    let alice = bearer(&rsa.sign(&claims(&iss, AUD, "alice", SCOPE)));
    let bob = bearer(&ec.sign(&claims(&iss, AUD, "bob", &format!("other {SCOPE}"))));

    let sa = session_of(&init(relay.port, Some(&alice)));
    let r = call_on(relay.port, &sa, &alice, "hello alice");
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(echo_text(&r.rpc()), Some("hello alice"));
    let sb = session_of(&init(relay.port, Some(&bob)));
    let r = call_on(relay.port, &sb, &bob, "hello bob");
    assert_eq!(echo_text(&r.rpc()), Some("hello bob"));

    // Alice's session with Bob's valid token: as if it did not exist.
    let r = call_on(relay.port, &sa, &bob, "hijack");
    assert_eq!(r.status(), 404, "{r:?}");
    // Another token of Alice's (a refreshed one, other key): her session.
    let alice2 = bearer(&ec.sign(&claims(&iss, AUD, "alice", SCOPE)));
    let r = call_on(relay.port, &sa, &alice2, "alice again");
    assert_eq!(echo_text(&r.rpc()), Some("alice again"), "{r:?}");
    let m = relay.metrics_text();
    assert!(
        m.contains("mcp_relay_oauth_requests_total{decision=\"accepted\"} 6"),
        "{m}"
    );
}

#[test]
fn each_bad_token_gets_401_invalid_token_and_a_missing_scope_403() {
    let k = TestKey::ec("k1", 1);
    let wrong_key = TestKey::ec("k1", 2);
    let auth = AuthServer::start(&[&k]);
    let relay = start(&auth, &[]);
    let iss = auth.issuer();
    let now = unix_now();
    let good = claims(&iss, AUD, "carol", SCOPE);
    let with = |key: &str, v: Value| {
        let mut c = good.clone();
        c[key] = v;
        c
    };
    let cases: Vec<(&str, String)> = vec![
        ("expired", k.sign(&with("exp", json!(now - 120)))),
        ("not yet valid", k.sign(&with("nbf", json!(now + 600)))),
        (
            "other audience",
            k.sign(&with("aud", json!("https://other.test/mcp"))),
        ),
        (
            "other issuer",
            k.sign(&with("iss", json!("http://127.0.0.1:1"))),
        ),
        ("bad signature", wrong_key.sign(&good)),
        ("not a JWT", "opaque-token".to_string()),
    ];
    for (what, token) in &cases {
        let r = init(relay.port, Some(&bearer(token)));
        assert_eq!(r.status(), 401, "{what}: {r:?}");
        let c = challenge(&r);
        assert!(
            c.starts_with(&format!(
                "Bearer resource_metadata=\"{PRM_URL}\", error=\"invalid_token\""
            )),
            "{what}: {c}"
        );
    }
    // Within the default 60 s skew: accepted.
    let r = init(
        relay.port,
        Some(&bearer(&k.sign(&with("exp", json!(now - 20))))),
    );
    assert_eq!(r.status(), 200, "expired 20 s ago, within the skew: {r:?}");

    let r = init(
        relay.port,
        Some(&bearer(&k.sign(&with("scope", json!("mcp:other"))))),
    );
    assert_eq!(r.status(), 403, "{r:?}");
    assert_eq!(
        challenge(&r),
        format!(
            "Bearer resource_metadata=\"{PRM_URL}\", error=\"insufficient_scope\", scope=\"{SCOPE}\""
        )
    );
    let m = relay.metrics_text();
    for reason in [
        "expired",
        "not_yet_valid",
        "wrong_audience",
        "wrong_issuer",
        "bad_signature",
        "malformed",
    ] {
        assert!(
            m.contains(&format!(
                "mcp_relay_oauth_rejected_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason}: {m}"
        );
    }
    assert!(
        m.contains("mcp_relay_oauth_requests_total{decision=\"insufficient_scope\"} 1"),
        "{m}"
    );
}

/// Retries `init` while the relay answers 503 (keys being fetched), up to
/// `within`.
fn init_until_decided(port: u16, auth: &str, within: Duration) -> (Response, u32) {
    let deadline = Instant::now() + within;
    let mut unavailable = 0;
    loop {
        let r = init(port, Some(auth));
        if r.status() != 503 || Instant::now() >= deadline {
            return (r, unavailable);
        }
        assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
        unavailable += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_rotated_key_is_fetched_once_and_unknown_kids_are_rate_limited() {
    let old = TestKey::rsa("old", 1);
    let new = TestKey::ec("new", 2);
    let auth = AuthServer::start(&[&old]);
    let relay = start(&auth, &["--oauth-jwks-min-refetch", "1s"]);
    let iss = auth.issuer();
    assert_eq!(auth.jwks_fetches(), 1);

    // The server rotates; a token under the new kid makes the relay refetch.
    auth.publish(&[&old, &new]);
    std::thread::sleep(Duration::from_millis(1100));
    let token = bearer(&new.sign(&claims(&iss, AUD, "dave", SCOPE)));
    let (r, waited) = init_until_decided(relay.port, &token, SHORT);
    assert_eq!(r.status(), 200, "after rotation: {r:?}");
    eprintln!("rotation: {waited} answer(s) 503 before the new key was loaded");
    assert_eq!(auth.jwks_fetches(), 2);

    // A burst of made-up kids right after: no fetch (the last was < 1 s
    // ago), each refused 401.
    for i in 0..50 {
        let t = bearer(&new.sign_as(&format!("bogus-{i}"), &claims(&iss, AUD, "eve", SCOPE)));
        let r = init(relay.port, Some(&t));
        assert_eq!(r.status(), 401, "bogus kid {i}: {r:?}");
    }
    assert_eq!(
        auth.jwks_fetches(),
        2,
        "unknown kids within the interval fetch nothing"
    );
    // A key dropped from the set stops working once the set is refetched.
    auth.publish(&[&new]);
    std::thread::sleep(Duration::from_millis(1100));
    let t = bearer(&new.sign_as("bogus-late", &claims(&iss, AUD, "eve", SCOPE)));
    let (r, _) = init_until_decided(relay.port, &t, SHORT);
    assert_eq!(r.status(), 401, "{r:?}");
    assert_eq!(auth.jwks_fetches(), 3);
    let r = init(
        relay.port,
        Some(&bearer(&old.sign(&claims(&iss, AUD, "dave", SCOPE)))),
    );
    assert_eq!(r.status(), 401, "the dropped key: {r:?}");
    assert!(
        relay
            .metrics_text()
            .contains("mcp_relay_oauth_jwks_refetches_total 2")
    );
}

#[test]
fn an_issuer_mismatch_in_the_metadata_loads_no_keys() {
    let k = TestKey::rsa("k1", 1);
    let auth = AuthServer::start(&[&k]);
    auth.claim_issuer("https://impostor.test");
    let relay = Relay::reverse("echo")
        .args(["--oauth-issuer", &auth.issuer(), "--oauth-audience", AUD])
        .echo_server(&[])
        .start();
    relay.wait_stderr("does not match", SHORT);
    let token = bearer(&k.sign(&claims(&auth.issuer(), AUD, "x", "")));
    let r = init(relay.port, Some(&token));
    assert_eq!(r.status(), 503, "{r:?}");
    assert_eq!(auth.jwks_fetches(), 0);
}

#[test]
fn the_inbound_token_is_never_passed_to_a_url_upstream() {
    let k = TestKey::ec("k1", 1);
    let auth = AuthServer::start(&[&k]);
    let up = Fake::start(handler(|req, conn| {
        if req.method != "POST" {
            return conn.respond(405, &[], b"");
        }
        match reply_to(&req.json()) {
            Some(reply) if req.is_post_of("initialize") => {
                conn.json(&[("mcp-session-id", "up-1")], &reply)
            }
            Some(reply) => conn.json(&[], &reply),
            None => conn.accepted(),
        }
    }));
    let relay = Relay::reverse("echo")
        .args([
            "--url",
            &up.url(),
            "--oauth-issuer",
            &auth.issuer(),
            "--oauth-audience",
            AUD,
            "--log-level",
            "info",
        ])
        .start();
    relay.wait_stderr("verification keys loaded", SHORT);
    let token = bearer(&k.sign(&claims(&auth.issuer(), AUD, "frank", "")));
    let sid = session_of(&init(relay.port, Some(&token)));
    let r = call_on(relay.port, &sid, &token, "through");
    assert_eq!(echo_text(&r.rpc()), Some("through"), "{r:?}");
    let seen = up.seen();
    assert!(seen.iter().any(|r| r.is_post_of("tools/call")), "{seen:?}");
    for req in &seen {
        assert_eq!(req.header("authorization"), None, "forwarded: {req:?}");
    }
}

#[test]
fn a_flood_of_forged_tokens_keeps_memory_bounded_and_sessions_served() {
    let k = TestKey::ec("k1", 1);
    let forger = TestKey::ec("k1", 2);
    let auth = AuthServer::start(&[&k]);
    let relay = start(&auth, &[]);
    let iss = auth.issuer();
    let pid = relay.pid as u32;
    let (before, _) = rss_kib(pid).expect("rss");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut floods = Vec::new();
    for t in 0..2 {
        let (stop, port) = (stop.clone(), relay.port);
        let tokens: Vec<String> = (0..20)
            .map(|i| {
                let mut c = claims(&iss, AUD, "mallory", SCOPE);
                c["pad"] = json!("x".repeat(6000));
                let t = match i % 3 {
                    0 => forger.sign(&c),
                    1 => forger.sign_as(&format!("unknown-{t}-{i}"), &c),
                    _ => "x".repeat(9000),
                };
                bearer(&t)
            })
            .collect();
        floods.push(std::thread::spawn(move || {
            let mut n = 0u64;
            let deadline = Instant::now() + Duration::from_secs(3);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                let mut h = Http::connect(port);
                for tok in &tokens {
                    let _ = post_on(
                        &mut h,
                        None,
                        &initialize(json!(0)),
                        &[("Authorization", tok)],
                        IO,
                    );
                    n += 1;
                }
            }
            n
        }));
    }
    let good = bearer(&k.sign(&claims(&iss, AUD, "grace", SCOPE)));
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(150));
        let t0 = Instant::now();
        let r = init(relay.port, Some(&good));
        worst = worst.max(t0.elapsed());
        assert_eq!(r.status(), 200, "a fresh session during the flood: {r:?}");
    }
    let (during, peak) = rss_kib(pid).expect("rss");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent: u64 = floods.into_iter().map(|f| f.join().expect("flood")).sum();
    eprintln!(
        "forged-token flood: {sent} requests; RSS {before} KiB before, {during} KiB during, peak {peak} KiB; slowest fresh session {worst:?}"
    );
    assert!(
        worst < Duration::from_secs(1),
        "fresh session took {worst:?}"
    );
    assert!(
        during < before + 16 * 1024,
        "RSS grew from {before} to {during} KiB"
    );
    assert!(
        auth.jwks_fetches() <= 2,
        "unknown kids refetched {} times",
        auth.jwks_fetches()
    );
}

#[test]
fn a_name_that_does_not_resolve_is_resolved_again_on_each_retry() {
    let relay = Relay::reverse("echo")
        .args([
            "--oauth-issuer",
            "http://127.0.0.1:1",
            "--oauth-audience",
            AUD,
            "--oauth-jwks-uri",
            "http://no-such-host.invalid/jwks",
        ])
        .echo_server(&[])
        .admin()
        .start();
    // Backoff 0.5 s, 1 s, 2 s: a third failed fetch within 5 s, each one a
    // fresh lookup (not a fetch queued forever on an engine with no address).
    let deadline = Instant::now() + SHORT;
    let errors = |m: &str| {
        m.lines()
            .find(|l| {
                l.starts_with("mcp_relay_oauth_fetches_total{document=\"jwks\",outcome=\"error\"}")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    loop {
        let m = relay.metrics_text();
        if errors(&m) >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 3 failed fetches in 5 s:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = init(relay.port, Some("Bearer a.b.c"));
    assert_eq!(r.status(), 401, "not a JWT needs no key: {r:?}");
}

/// A JWKS key rotation while clients keep calling: clients on the old key
/// are served throughout without a single non-200; clients that switch to
/// tokens signed with the new key see at most a few `503 Retry-After: 1`
/// (while the one refetch runs) and every one of their requests is then
/// served on retry. No request is lost, none refused with 401, and the
/// whole rotation costs one JWKS fetch.
#[test]
fn a_key_rotation_under_load_loses_no_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let old = Arc::new(TestKey::ec("old", 1));
    let new = Arc::new(TestKey::rsa("new", 1));
    let auth = AuthServer::start(&[&old]);
    let relay = start(&auth, &["--oauth-jwks-min-refetch", "1s"]);
    let port = relay.port;
    let iss = auth.issuer();
    // Past the refetch interval counted from the startup fetch.
    std::thread::sleep(Duration::from_millis(1100));

    let rotated = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for n in 0..6 {
        let (old, new, iss) = (old.clone(), new.clone(), iss.clone());
        let (rotated, stop, served, retried) = (
            rotated.clone(),
            stop.clone(),
            served.clone(),
            retried.clone(),
        );
        // Threads 0..3 switch to the new key once it is published; 3..6
        // stay on the old one.
        let switches = n < 3;
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            let sub = format!("user-{n}");
            let first = bearer(&old.sign(&claims(&iss, AUD, &sub, SCOPE)));
            let r = init(port, Some(&first));
            if r.status() != 200 {
                return Err(format!("{sub}: initialize {r:?}"));
            }
            let sid = r.header("mcp-session-id").unwrap_or_default().to_string();
            let mut token = first.clone();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                if switches && token == first && rotated.load(Ordering::SeqCst) {
                    token = bearer(&new.sign(&claims(&iss, AUD, &sub, SCOPE)));
                }
                let text = format!("{sub} {i}");
                let deadline = Instant::now() + SHORT;
                loop {
                    let r = call_on(port, &sid, &token, &text);
                    match r.status() {
                        200 if echo_text(&r.rpc()) == Some(text.as_str()) => break,
                        503 if switches && r.header("retry-after") == Some("1") => {
                            retried.fetch_add(1, Ordering::SeqCst);
                            if Instant::now() > deadline {
                                return Err(format!("{sub}: still 503 after {SHORT:?}"));
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        _ => return Err(format!("{sub} call {i}: {r:?}")),
                    }
                }
                served.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            Ok(())
        }));
    }
    std::thread::sleep(Duration::from_millis(400));
    let before = served.load(Ordering::SeqCst);
    auth.publish(&[&old, &new]);
    rotated.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join()
            .expect("client thread")
            .expect("every request served");
    }
    let total = served.load(Ordering::SeqCst);
    eprintln!(
        "rotation under load: {total} calls served ({before} before the rotation), \
         {} answered 503 and retried",
        retried.load(Ordering::SeqCst)
    );
    assert!(total > before + 6, "load went on after the rotation");
    assert_eq!(auth.jwks_fetches(), 2, "one refetch for the rotation");
    let m = relay.metrics_text();
    assert!(m.contains("mcp_relay_oauth_jwks_refetches_total 1"), "{m}");
    assert!(
        !m.contains("mcp_relay_oauth_rejected_total{reason="),
        "no 401: {m}"
    );
}
