//! `reverse --oauth-introspection-url` (issue 14): opaque access tokens
//! checked with the authorization server's RFC 7662 introspection endpoint
//! (`tests/common/authz.rs`, `Introspection`). Real relay binary, real
//! sockets on 127.0.0.1, every wait bounded.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::authz::{AuthServer, Introspection, TestKey, b64_std, claims, form_fields};
use common::http::{Http, IO, Response, post_on};
use common::relay::Relay;
use common::{SHORT, TempFile, call, echo_text, initialize};

const AUD: &str = "https://relay.test/mcp";
const SCOPE: &str = "mcp:tools";
const CLIENT: &str = "relay-client";
const SECRET: &str = "s3cret:with/odd chars";

struct Setup {
    auth: AuthServer,
    intro: Introspection,
    relay: Relay,
    _secret: TempFile,
}

fn start(test: &str, extra: &[&str]) -> Setup {
    let k = TestKey::rsa("k1", 1);
    let auth = AuthServer::start(&[&k]);
    let intro = Introspection::start(CLIENT, SECRET);
    let secret = TempFile::new(test, "secret");
    std::fs::write(&secret.0, format!("{SECRET}\n")).expect("write secret");
    let relay = Relay::reverse("echo")
        .args([
            "--oauth-issuer",
            &auth.issuer(),
            "--oauth-audience",
            AUD,
            "--oauth-scope",
            SCOPE,
            "--oauth-introspection-url",
            &intro.url(),
            "--oauth-introspection-client-id",
            CLIENT,
            "--oauth-introspection-secret-file",
            secret.path_str(),
            "--log-level",
            "debug",
        ])
        .args(extra)
        .echo_server(&[])
        .admin()
        .start();
    relay.wait_stderr("verification keys loaded", SHORT);
    Setup {
        auth,
        intro,
        relay,
        _secret: secret,
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn init(port: u16, token: &str) -> Response {
    let mut h = Http::connect(port);
    post_on(
        &mut h,
        None,
        &initialize(json!(0)),
        &[("Authorization", &bearer(token))],
        IO,
    )
    .expect("initialize: no response")
}

fn call_on(port: u16, sid: &str, token: &str, text: &str) -> Response {
    let mut h = Http::connect(port);
    post_on(
        &mut h,
        Some(sid),
        &call(json!(1), text),
        &[("Authorization", &bearer(token))],
        IO,
    )
    .expect("tools/call: no response")
}

fn session_of(r: &Response) -> String {
    assert_eq!(r.status(), 200, "initialize: {r:?}");
    r.header("mcp-session-id").expect("session id").to_string()
}

fn challenge(r: &Response) -> String {
    r.header("www-authenticate")
        .unwrap_or_else(|| panic!("no WWW-Authenticate: {r:?}"))
        .to_string()
}

#[test]
fn an_active_opaque_token_is_served_and_its_introspection_cached() {
    let s = start("intro-active", &[]);
    let port = s.relay.port;
    let iss = s.auth.issuer();
    let alice = "opaque-alice-0001";
    s.intro.grant(alice, claims(&iss, AUD, "alice", SCOPE));
    let sid = session_of(&init(port, alice));
    for i in 0..5 {
        let r = call_on(port, &sid, alice, &format!("hello {i}"));
        assert_eq!(r.status(), 200, "{r:?}");
        assert_eq!(echo_text(&r.rpc()), Some(format!("hello {i}").as_str()));
    }
    assert_eq!(
        s.intro.calls(Some(alice)),
        1,
        "six requests, one introspection"
    );

    // The request the relay sent: its client credentials, the token, a hint.
    let seen = s.intro.fake.seen();
    let req = seen
        .iter()
        .find(|r| r.target == "/introspect")
        .expect("seen");
    assert_eq!(
        req.header("authorization"),
        Some(
            format!(
                "Basic {}",
                b64_std(b"relay-client:s3cret%3Awith%2Fodd%20chars")
            )
            .as_str()
        ),
        "client_secret_basic with form-encoded id and secret"
    );
    assert!(
        req.header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")),
        "{req:?}"
    );
    let fields = form_fields(&req.body);
    assert!(
        fields.contains(&("token".into(), alice.into())),
        "{fields:?}"
    );
    assert!(
        fields.contains(&("token_type_hint".into(), "access_token".into())),
        "{fields:?}"
    );

    // Bob's active token does not open Alice's session.
    let bob = "opaque-bob-0001";
    s.intro.grant(bob, claims(&iss, AUD, "bob", SCOPE));
    let r = call_on(port, &sid, bob, "hijack");
    assert_eq!(r.status(), 404, "{r:?}");

    // A JWT is still checked locally: no introspection for it.
    let k = TestKey::rsa("k1", 1);
    let jwt = k.sign(&claims(&iss, AUD, "alice", SCOPE));
    let r = call_on(port, &sid, &jwt, "jwt");
    assert_eq!(echo_text(&r.rpc()), Some("jwt"), "{r:?}");
    assert_eq!(s.intro.calls(None), 2, "alice's and bob's, not the JWT");

    let m = s.relay.metrics_text();
    assert!(
        m.contains("mcp_relay_oauth_introspections_total{outcome=\"active\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("mcp_relay_oauth_introspection_cache_entries 2"),
        "{m}"
    );
    // The token itself is never logged.
    let log = s.relay.stderr_text();
    assert!(!log.contains(alice) && !log.contains(bob), "{log}");
}

#[test]
fn inactive_other_audience_and_missing_scope_are_refused() {
    let s = start("intro-refused", &[]);
    let port = s.relay.port;
    let iss = s.auth.issuer();
    let r = init(port, "never-issued");
    assert_eq!(r.status(), 401, "{r:?}");
    assert!(
        challenge(&r).contains("error=\"invalid_token\""),
        "{}",
        challenge(&r)
    );

    s.intro.grant(
        "other-aud",
        claims(&iss, "https://other.test/mcp", "carol", SCOPE),
    );
    let r = init(port, "other-aud");
    assert_eq!(r.status(), 401, "{r:?}");
    assert!(
        challenge(&r).contains("token not for this resource"),
        "{}",
        challenge(&r)
    );

    s.intro.grant(
        "other-iss",
        claims("http://127.0.0.1:1", AUD, "carol", SCOPE),
    );
    assert_eq!(init(port, "other-iss").status(), 401);

    let mut expired = claims(&iss, AUD, "carol", SCOPE);
    expired["exp"] = json!(common::authz::unix_now() - 600);
    s.intro.grant("expired", expired);
    assert_eq!(init(port, "expired").status(), 401);

    s.intro
        .grant("few-scopes", claims(&iss, AUD, "carol", "mcp:other"));
    let r = init(port, "few-scopes");
    assert_eq!(r.status(), 403, "{r:?}");
    assert!(
        challenge(&r).contains("error=\"insufficient_scope\""),
        "{}",
        challenge(&r)
    );

    // A revoked token: inactive once its cached answer is gone; here it
    // was never cached (asked for the first time after the revocation).
    s.intro.grant("revoked", claims(&iss, AUD, "dave", SCOPE));
    s.intro.revoke("revoked");
    assert_eq!(init(port, "revoked").status(), 401);

    // Refusals are cached as well: asking again costs no introspection.
    let before = s.intro.calls(None);
    assert_eq!(init(port, "never-issued").status(), 401);
    assert_eq!(s.intro.calls(None), before);
    let m = s.relay.metrics_text();
    assert!(
        m.contains("mcp_relay_oauth_introspections_total{outcome=\"inactive\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("mcp_relay_oauth_rejected_total{reason=\"inactive\"} 3"),
        "{m}"
    );
}

#[test]
fn endpoint_down_is_503_with_retry_after_then_recovers() {
    let s = start("intro-down", &[]);
    let port = s.relay.port;
    let iss = s.auth.issuer();
    s.intro
        .grant("erin-token", claims(&iss, AUD, "erin", SCOPE));
    s.intro.set_down(true);
    let r = init(port, "erin-token");
    assert_eq!(r.status(), 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    s.relay
        .wait_stderr("introspection failed", Duration::from_secs(2));
    s.intro.set_down(false);
    // Served again within a few retries, as a client honouring Retry-After.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = init(port, "erin-token");
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 503, "{r:?}");
        assert!(Instant::now() < deadline, "not served again: {r:?}");
        thread::sleep(Duration::from_millis(200));
    }
    let m = s.relay.metrics_text();
    assert!(
        m.contains("mcp_relay_oauth_introspections_total{outcome=\"error\"} 1"),
        "{m}"
    );
}

#[test]
fn wrong_client_credentials_are_503_not_401() {
    let s = start("intro-badclient", &[]);
    // The endpoint refuses the relay itself (a wrong secret): the client's
    // token is not at fault, so it is not told it is invalid.
    let wrong = TempFile::new("intro-badclient", "wrong");
    std::fs::write(&wrong.0, "not-the-secret").expect("write");
    let relay = Relay::reverse("echo")
        .args([
            "--oauth-issuer",
            &s.auth.issuer(),
            "--oauth-audience",
            AUD,
            "--oauth-introspection-url",
            &s.intro.url(),
            "--oauth-introspection-client-id",
            CLIENT,
            "--oauth-introspection-secret-file",
            wrong.path_str(),
        ])
        .echo_server(&[])
        .start();
    relay.wait_stderr("verification keys loaded", SHORT);
    let r = init(relay.port, "whatever-token");
    assert_eq!(r.status(), 503, "{r:?}");
    relay.wait_stderr("status 401", Duration::from_secs(2));
}

#[test]
fn concurrent_requests_with_one_unknown_token_share_one_introspection() {
    let s = start("intro-concurrent", &[]);
    let port = s.relay.port;
    let iss = s.auth.issuer();
    s.intro
        .grant("frank-token", claims(&iss, AUD, "frank", SCOPE));
    s.intro.set_delay(Duration::from_millis(400));
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let b = barrier.clone();
            thread::spawn(move || {
                b.wait();
                init(port, "frank-token").status()
            })
        })
        .collect();
    let statuses: Vec<u16> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    assert_eq!(statuses, vec![200; n]);
    assert_eq!(s.intro.calls(Some("frank-token")), 1);
    let m = s.relay.metrics_text();
    assert!(m.contains("mcp_relay_oauth_introspection_held 0"), "{m}");
}

#[test]
fn a_pipelined_request_behind_a_held_one_is_answered_in_order() {
    let s = start("intro-pipelined", &[]);
    let port = s.relay.port;
    let iss = s.auth.issuer();
    s.intro
        .grant("gina-token", claims(&iss, AUD, "gina", SCOPE));
    s.intro.set_delay(Duration::from_millis(200));
    let body = initialize(json!(0)).to_string();
    let one = format!(
        "POST /mcp HTTP/1.1\r\nhost: x\r\nauthorization: Bearer gina-token\r\n\
         content-type: application/json\r\naccept: application/json, text/event-stream\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut h = Http::connect(port);
    h.write(format!("{one}{one}").as_bytes()).expect("write");
    let deadline = Instant::now() + IO;
    for _ in 0..2 {
        let head = h.read_head(deadline).expect("a response");
        assert_eq!(head.status, 200, "{head:?}");
        let len: usize = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        let body = h.take_n(len, deadline).expect("body");
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert!(v["result"]["protocolVersion"].is_string(), "{v}");
    }
    assert_eq!(s.intro.calls(None), 1);
}

#[test]
fn without_a_jwks_every_token_is_introspected() {
    // An issuer whose metadata names no jwks_uri: JWT-shaped tokens too go
    // to the introspection endpoint.
    let meta = common::fake::Fake::start(common::fake::handler(|req, conn| {
        if req.target == "/.well-known/oauth-authorization-server" {
            let port = conn_port(req);
            conn.json(&[], &json!({"issuer": format!("http://127.0.0.1:{port}")}))
        } else {
            conn.respond(404, &[], b"")
        }
    }));
    let issuer = format!("http://127.0.0.1:{}", meta.port());
    let intro = Introspection::start(CLIENT, SECRET);
    let secret = TempFile::new("intro-nojwks", "secret");
    std::fs::write(&secret.0, SECRET).expect("write secret");
    let relay = Relay::reverse("echo")
        .args([
            "--oauth-issuer",
            &issuer,
            "--oauth-audience",
            AUD,
            "--oauth-introspection-url",
            &intro.url(),
            "--oauth-introspection-client-id",
            CLIENT,
            "--oauth-introspection-secret-file",
            secret.path_str(),
            "--log-level",
            "info",
        ])
        .echo_server(&[])
        .start();
    relay.wait_stderr("every token is introspected", SHORT);
    let k = TestKey::ec("k1", 1);
    let jwt = k.sign(&claims(&issuer, AUD, "hana", ""));
    intro.grant(&jwt, claims(&issuer, AUD, "hana", ""));
    assert_eq!(init(relay.port, &jwt).status(), 200);
    assert_eq!(intro.calls(Some(&jwt)), 1);
}

/// The port a request was sent to, from its Host header.
fn conn_port(req: &common::fake::Req) -> u16 {
    req.header("host")
        .and_then(|h| h.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Sends `req` (an initialize or a call) with `token` on a thread; its
/// status and body.
fn post_in_background(
    port: u16,
    sid: Option<String>,
    token: &str,
    msg: Value,
) -> thread::JoinHandle<Option<(u16, String)>> {
    let auth = bearer(token);
    thread::spawn(move || {
        let mut h = Http::connect(port);
        post_on(
            &mut h,
            sid.as_deref(),
            &msg,
            &[("Authorization", &auth)],
            IO,
        )
        .ok()
        .map(|r| (r.status(), r.text()))
    })
}

#[test]
fn a_request_held_at_shutdown_is_served_within_the_grace_or_answered_503() {
    // Grace long enough: the held call counts as in flight, so the relay
    // waits for its introspection and serves it before exiting.
    let s = start("intro-shutdown", &["--shutdown-grace", "5s"]);
    let port = s.relay.port;
    let iss = s.auth.issuer();
    s.intro.grant("ivy-1", claims(&iss, AUD, "ivy", SCOPE));
    s.intro.grant("ivy-2", claims(&iss, AUD, "ivy", SCOPE));
    let sid = session_of(&init(port, "ivy-1"));
    s.intro.set_delay(Duration::from_millis(800));
    let t = post_in_background(port, Some(sid), "ivy-2", call(json!(5), "late"));
    s.intro
        .fake
        .wait_for("the held call's introspection", SHORT, |r| r.len() >= 2);
    s.relay.signal(libc::SIGTERM);
    let (status, body) = t.join().expect("thread").expect("an answer");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("late"), "{body}");
    assert!(s.relay.wait_exit(SHORT).success());

    // Grace shorter than the introspection: answered 503 at the final
    // phase, not dropped with its connection.
    let s = start("intro-shutdown2", &["--shutdown-grace", "300ms"]);
    let port = s.relay.port;
    s.intro
        .grant("jo-1", claims(&s.auth.issuer(), AUD, "jo", SCOPE));
    s.intro.set_delay(Duration::from_secs(4));
    let t = post_in_background(port, None, "jo-1", initialize(json!(0)));
    s.intro
        .fake
        .wait_for("the held initialize's introspection", SHORT, |r| {
            !r.is_empty()
        });
    let signalled = Instant::now();
    s.relay.signal(libc::SIGTERM);
    let (status, body) = t.join().expect("thread").expect("an answer");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "shutting down\n");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "{:?}",
        signalled.elapsed()
    );
    assert!(s.relay.wait_exit(SHORT).success());
}
