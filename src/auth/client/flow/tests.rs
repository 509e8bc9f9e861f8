//! The authorization lifecycle on a fake clock: every step fed by hand.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::auth::client::wire::read_tokens;
use crate::auth::client::{Challenge, ClientOptions, Grant, form_decode, parse_challenge, s256};

const URL: &str = "https://mcp.example/mcp";
const ISS: &str = "https://as.example";
const NOW_UNIX: u64 = 1_800_000_000;

fn meta_doc(extra: serde_json::Value) -> Vec<u8> {
    let mut m = json!({
        "issuer": ISS,
        "authorization_endpoint": "https://as.example/authorize",
        "token_endpoint": "https://as.example/token",
        "registration_endpoint": "https://as.example/register",
        "revocation_endpoint": "https://as.example/revoke",
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            m.as_object_mut().unwrap().remove(k);
        } else {
            m[k] = v.clone();
        }
    }
    m.to_string().into_bytes()
}

fn prm() -> Vec<u8> {
    json!({"resource": URL, "authorization_servers": [ISS], "scopes_supported": ["mcp"]})
        .to_string()
        .into_bytes()
}

fn fetch(s: Step) -> Fetch {
    match s {
        Step::Fetch(f) => f,
        other => panic!("expected a fetch, got {other:?}"),
    }
}

fn form(f: &Fetch) -> Vec<(String, String)> {
    form_decode(std::str::from_utf8(&f.body).unwrap()).unwrap()
}

fn get<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn tokens(access: &str, refresh: Option<&str>, expires_in: u64) -> Vec<u8> {
    let mut t = json!({"access_token": access, "token_type": "Bearer",
                       "expires_in": expires_in, "scope": "mcp"});
    if let Some(r) = refresh {
        t["refresh_token"] = json!(r);
    }
    t.to_string().into_bytes()
}

/// Drives a flow from a 401 to the browser: returns the authorize URL's
/// query.
fn to_browser(f: &mut Flow, t0: Instant, challenge: &Challenge) -> Vec<(String, String)> {
    let first = fetch(f.on_denied(401, challenge, None, t0));
    assert_eq!(f.stage_name(), "resource-metadata");
    assert!(first.url.ends_with("/oauth-protected-resource/mcp"));
    let s = f.on_response(200, None, &prm(), t0, NOW_UNIX);
    let m = fetch(s);
    assert_eq!(
        m.url,
        "https://as.example/.well-known/oauth-authorization-server"
    );
    let s = f.on_response(200, None, &meta_doc(json!({})), t0, NOW_UNIX);
    let Step::Listen { preferred } = s else {
        panic!("{s:?}")
    };
    assert_eq!(preferred, crate::auth::client::callback_port(ISS, URL, 0));
    let reg = fetch(f.listening(preferred, t0));
    assert_eq!(reg.url, "https://as.example/register");
    let body: serde_json::Value = serde_json::from_slice(&reg.body).unwrap();
    assert_eq!(
        body["redirect_uris"][0],
        format!("http://127.0.0.1:{preferred}/callback")
    );
    let s = f.on_response(201, None, br#"{"client_id":"c1"}"#, t0, NOW_UNIX);
    let Step::Browse { url } = s else {
        panic!("{s:?}")
    };
    let (base, q) = url.split_once('?').unwrap();
    assert_eq!(base, "https://as.example/authorize");
    form_decode(q).unwrap()
}

fn callback(q: &[(String, String)], code: &str) -> String {
    crate::auth::client::form_encode(&[
        ("code", code),
        ("state", get(q, "state").unwrap()),
        ("iss", ISS),
    ])
}

#[test]
fn first_authorization_end_to_end() {
    let t0 = Instant::now();
    let mut f = Flow::new(URL, &ClientOptions::default());
    assert!(f.bearer().is_none());
    let q = to_browser(&mut f, t0, &Challenge::default());
    assert!(f.busy());
    assert_eq!(get(&q, "code_challenge_method"), Some("S256"));
    assert_eq!(get(&q, "resource"), Some(URL));
    assert_eq!(get(&q, "client_id"), Some("c1"));
    assert_eq!(get(&q, "scope"), Some("mcp"), "scopes_supported of the PRM");
    // A callback with the wrong state is refused and changes nothing.
    assert_eq!(
        f.on_callback("code=x&state=forged", t0),
        Err(CallbackError::Rejected("state does not match"))
    );
    let tok = fetch(f.on_callback(&callback(&q, "k1"), t0).unwrap());
    assert_eq!(tok.url, "https://as.example/token");
    let fm = form(&tok);
    assert_eq!(get(&fm, "grant_type"), Some("authorization_code"));
    assert_eq!(get(&fm, "resource"), Some(URL));
    assert_eq!(get(&fm, "client_id"), Some("c1"));
    assert_eq!(
        s256(get(&fm, "code_verifier").unwrap()),
        get(&q, "code_challenge").unwrap()
    );
    let s = f.on_response(200, None, &tokens("at1", Some("rt1"), 3600), t0, NOW_UNIX);
    assert_eq!(s, Step::Authorized);
    assert_eq!(f.bearer(), Some("at1"));
    assert_eq!(f.attempt(), Attempt::Authorized);
    // Right after a fresh authorization, a 401 is an error, not a loop.
    let s = f.on_denied(401, &Challenge::default(), Some("at1"), t0);
    assert!(
        matches!(s, Step::Failed(ref w) if w.contains("just issued")),
        "{s:?}"
    );
    // And for FAIL_HOLD, further 401s get the same answer at once.
    assert!(matches!(
        f.on_denied(
            401,
            &Challenge::default(),
            Some("at1"),
            t0 + Duration::from_secs(1)
        ),
        Step::Failed(_)
    ));
}

#[test]
fn resource_metadata_comes_from_the_challenge_then_well_known_path_first() {
    let t0 = Instant::now();
    let mut f = Flow::new(URL, &ClientOptions::default());
    let c = parse_challenge(r#"Bearer resource_metadata="https://mcp.example/prm""#);
    assert_eq!(
        fetch(f.on_denied(401, &c, None, t0)).url,
        "https://mcp.example/prm"
    );
    let mut f = Flow::new(URL, &ClientOptions::default());
    let first = fetch(f.on_denied(401, &Challenge::default(), None, t0));
    assert_eq!(
        first.url,
        "https://mcp.example/.well-known/oauth-protected-resource/mcp"
    );
    let second = fetch(f.on_response(404, None, b"", t0, NOW_UNIX));
    assert_eq!(
        second.url,
        "https://mcp.example/.well-known/oauth-protected-resource"
    );
    let s = f.on_response(404, None, b"", t0, NOW_UNIX);
    assert!(matches!(s, Step::Failed(ref w) if w.contains("no protected resource metadata")));
}

#[test]
fn metadata_for_another_resource_is_refused() {
    let t0 = Instant::now();
    let mut f = Flow::new(URL, &ClientOptions::default());
    fetch(f.on_denied(401, &Challenge::default(), None, t0));
    let doc = json!({"resource": "https://evil.example/mcp", "authorization_servers": [ISS]});
    let s = f.on_response(200, None, doc.to_string().as_bytes(), t0, NOW_UNIX);
    assert!(
        matches!(s, Step::Failed(ref w) if w.contains("not")),
        "{s:?}"
    );
}

fn to_server_metadata(f: &mut Flow, t0: Instant) {
    fetch(f.on_denied(401, &Challenge::default(), None, t0));
    fetch(f.on_response(200, None, &prm(), t0, NOW_UNIX));
}

#[test]
fn an_issuer_mismatch_is_refused() {
    let t0 = Instant::now();
    let mut f = Flow::new(URL, &ClientOptions::default());
    to_server_metadata(&mut f, t0);
    let s = f.on_response(
        200,
        None,
        &meta_doc(json!({"issuer": "https://impostor.example"})),
        t0,
        NOW_UNIX,
    );
    assert!(
        matches!(s, Step::Failed(ref w) if w.contains("impostor")),
        "{s:?}"
    );
    assert!(f.meta.is_none());
}

#[test]
fn a_server_without_s256_is_refused_before_any_registration() {
    let t0 = Instant::now();
    let mut f = Flow::new(URL, &ClientOptions::default());
    to_server_metadata(&mut f, t0);
    let s = f.on_response(
        200,
        None,
        &meta_doc(json!({"code_challenge_methods_supported": ["plain"]})),
        t0,
        NOW_UNIX,
    );
    assert!(
        matches!(s, Step::Failed(ref w) if w.contains("S256")),
        "{s:?}"
    );
    let mut f = Flow::new(URL, &ClientOptions::default());
    to_server_metadata(&mut f, t0);
    let s = f.on_response(
        200,
        None,
        &meta_doc(json!({"code_challenge_methods_supported": null})),
        t0,
        NOW_UNIX,
    );
    assert!(
        matches!(s, Step::Failed(ref w) if w.contains("S256")),
        "{s:?}"
    );
}

#[test]
fn metadata_discovery_falls_through_to_openid() {
    let t0 = Instant::now();
    let mut f = Flow::new(URL, &ClientOptions::default());
    to_server_metadata(&mut f, t0);
    let next = fetch(f.on_response(404, None, b"", t0, NOW_UNIX));
    assert_eq!(
        next.url,
        "https://as.example/.well-known/openid-configuration"
    );
    assert!(matches!(
        f.on_response(200, None, &meta_doc(json!({})), t0, NOW_UNIX),
        Step::Listen { .. }
    ));
}

#[test]
fn without_registration_a_preregistered_client_or_a_clear_error() {
    let t0 = Instant::now();
    let no_dcr = meta_doc(json!({"registration_endpoint": null}));
    let mut f = Flow::new(URL, &ClientOptions::default());
    to_server_metadata(&mut f, t0);
    let Step::Listen { preferred } = f.on_response(200, None, &no_dcr, t0, NOW_UNIX) else {
        panic!()
    };
    let s = f.listening(preferred, t0);
    assert!(
        matches!(s, Step::Failed(ref w) if w.contains("--oauth-client-id")),
        "{s:?}"
    );

    let opts = ClientOptions {
        client_id: Some("pre".into()),
        client_secret: Some("sec ret".into()),
        ..ClientOptions::default()
    };
    let mut f = Flow::new(URL, &opts);
    to_server_metadata(&mut f, t0);
    let Step::Listen { preferred } = f.on_response(200, None, &no_dcr, t0, NOW_UNIX) else {
        panic!()
    };
    let Step::Browse { url } = f.listening(preferred, t0) else {
        panic!()
    };
    let q = form_decode(url.split_once('?').unwrap().1).unwrap();
    assert_eq!(get(&q, "client_id"), Some("pre"));
    let tok = fetch(f.on_callback(&callback(&q, "k"), t0).unwrap());
    // A confidential client authenticates with Basic (form-encoded parts).
    let basic = tok
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(
        basic,
        format!("Basic {}", crate::auth::b64::encode_std(b"pre:sec%20ret"))
    );
    assert_eq!(get(&form(&tok), "client_id"), None);
}

#[test]
fn a_client_metadata_document_comes_before_registration_when_supported() {
    let t0 = Instant::now();
    let opts = ClientOptions {
        client_metadata_url: Some("https://relay.example/client.json".into()),
        ..ClientOptions::default()
    };
    let mut f = Flow::new(URL, &opts);
    to_server_metadata(&mut f, t0);
    let doc = meta_doc(json!({"client_id_metadata_document_supported": true}));
    let Step::Listen { preferred } = f.on_response(200, None, &doc, t0, NOW_UNIX) else {
        panic!()
    };
    let Step::Browse { url } = f.listening(preferred, t0) else {
        panic!()
    };
    assert!(url.contains("client_id=https%3A%2F%2Frelay.example%2Fclient.json"));
    // Not supported: dynamic registration.
    let mut f = Flow::new(URL, &opts);
    to_server_metadata(&mut f, t0);
    let Step::Listen { preferred } = f.on_response(200, None, &meta_doc(json!({})), t0, NOW_UNIX)
    else {
        panic!()
    };
    assert_eq!(
        fetch(f.listening(preferred, t0)).url,
        "https://as.example/register"
    );
}

fn ready(f: &mut Flow, t0: Instant, expires_in: u64) -> Vec<(String, String)> {
    let q = to_browser(f, t0, &Challenge::default());
    fetch(f.on_callback(&callback(&q, "k"), t0).unwrap());
    assert_eq!(
        f.on_response(
            200,
            None,
            &tokens("at1", Some("rt1"), expires_in),
            t0,
            NOW_UNIX
        ),
        Step::Authorized
    );
    f.on_success();
    q
}

#[test]
fn refresh_before_expiry_and_rotation() {
    let t0 = Instant::now();
    let mut f = Flow::new(URL, &ClientOptions::default());
    ready(&mut f, t0, 3600);
    assert!(!f.refresh_due(NOW_UNIX));
    assert!(!f.refresh_due(NOW_UNIX + 3600 - 61));
    assert!(f.refresh_due(NOW_UNIX + 3600 - 60));
    let r = fetch(f.start_refresh(t0));
    let fm = form(&r);
    assert_eq!(get(&fm, "grant_type"), Some("refresh_token"));
    assert_eq!(get(&fm, "refresh_token"), Some("rt1"));
    assert_eq!(get(&fm, "resource"), Some(URL));
    assert!(f.busy());
    assert_eq!(
        f.on_response(200, None, &tokens("at2", Some("rt2"), 3600), t0, NOW_UNIX),
        Step::Authorized
    );
    assert_eq!(f.tokens.as_ref().unwrap().refresh.as_deref(), Some("rt2"));
    // A short-lived token refreshes at 10% of its life left.
    let mut f = Flow::new(URL, &ClientOptions::default());
    ready(&mut f, t0, 100);
    assert!(!f.refresh_due(NOW_UNIX + 89));
    assert!(f.refresh_due(NOW_UNIX + 90));
}

#[test]
fn a_401_refreshes_once_and_an_invalid_grant_authorizes_exactly_once() {
    let t0 = Instant::now();
    let mut f = Flow::new(URL, &ClientOptions::default());
    ready(&mut f, t0, 3600);
    assert_eq!(
        f.on_denied(401, &Challenge::default(), Some("at1"), t0),
        Step::Refresh
    );
    fetch(f.start_refresh(t0));
    // The refresh token was revoked: one authorization, straight to the
    // browser (metadata, client and port are known).
    let s = f.on_response(400, None, br#"{"error":"invalid_grant"}"#, t0, NOW_UNIX);
    let Step::Listen { preferred } = s else {
        panic!("{s:?}")
    };
    let Step::Browse { url } = f.listening(preferred, t0) else {
        panic!()
    };
    let q = form_decode(url.split_once('?').unwrap().1).unwrap();
    fetch(f.on_callback(&callback(&q, "k2"), t0).unwrap());
    assert_eq!(
        f.on_response(200, None, &tokens("at3", Some("rt3"), 3600), t0, NOW_UNIX),
        Step::Authorized
    );
    // Still refused: an error, no further authorization.
    let s = f.on_denied(401, &Challenge::default(), Some("at3"), t0);
    assert!(matches!(s, Step::Failed(_)), "{s:?}");
}

#[test]
fn a_request_sent_with_a_replaced_token_is_simply_retried() {
    let t0 = Instant::now();
    let mut f = Flow::new(URL, &ClientOptions::default());
    ready(&mut f, t0, 3600);
    assert_eq!(
        f.on_denied(401, &Challenge::default(), Some("older"), t0),
        Step::Authorized
    );
}

#[test]
fn insufficient_scope_steps_up_once_with_the_union() {
    let t0 = Instant::now();
    let mut f = Flow::new(URL, &ClientOptions::default());
    ready(&mut f, t0, 3600);
    let c = parse_challenge(r#"Bearer error="insufficient_scope", scope="mcp admin""#);
    let Step::Listen { preferred } = f.on_denied(403, &c, Some("at1"), t0) else {
        panic!()
    };
    let Step::Browse { url } = f.listening(preferred, t0) else {
        panic!()
    };
    let q = form_decode(url.split_once('?').unwrap().1).unwrap();
    assert_eq!(get(&q, "scope"), Some("mcp admin"));
    fetch(f.on_callback(&callback(&q, "k"), t0).unwrap());
    f.on_response(200, None, &tokens("at2", Some("rt2"), 3600), t0, NOW_UNIX);
    let s = f.on_denied(403, &c, Some("at2"), t0);
    assert!(
        matches!(s, Step::Failed(ref w) if w.contains("step-up")),
        "{s:?}"
    );
}

#[test]
fn the_redirect_must_name_the_issuer() {
    let t0 = Instant::now();
    let mut f = Flow::new(URL, &ClientOptions::default());
    let q = to_browser(&mut f, t0, &Challenge::default());
    let cb = crate::auth::client::form_encode(&[
        ("code", "k"),
        ("state", get(&q, "state").unwrap()),
        ("iss", "https://impostor.example"),
    ]);
    let s = f.on_callback(&cb, t0).unwrap();
    assert!(
        matches!(s, Step::Failed(ref w) if w.contains("impostor")),
        "{s:?}"
    );
    // Promised but missing.
    let mut f = Flow::new(URL, &ClientOptions::default());
    let q = to_browser(&mut f, t0, &Challenge::default());
    let cb =
        crate::auth::client::form_encode(&[("code", "k"), ("state", get(&q, "state").unwrap())]);
    assert!(matches!(f.on_callback(&cb, t0).unwrap(), Step::Failed(_)));
}

#[test]
fn a_denied_or_abandoned_authorization_fails_and_is_held() {
    let t0 = Instant::now();
    let mut f = Flow::new(URL, &ClientOptions::default());
    let q = to_browser(&mut f, t0, &Challenge::default());
    let cb = crate::auth::client::form_encode(&[
        ("error", "access_denied"),
        ("state", get(&q, "state").unwrap()),
        ("iss", ISS),
    ]);
    assert!(
        matches!(f.on_callback(&cb, t0).unwrap(), Step::Failed(ref w) if w.contains("access_denied"))
    );
    let mut f = Flow::new(URL, &ClientOptions::default());
    to_browser(&mut f, t0, &Challenge::default());
    assert_eq!(f.deadline(), Some(t0 + AUTHORIZE_TIMEOUT));
    assert!(
        f.on_tick(t0 + AUTHORIZE_TIMEOUT - Duration::from_millis(1))
            .is_none()
    );
    assert!(matches!(
        f.on_tick(t0 + AUTHORIZE_TIMEOUT),
        Some(Step::Failed(_))
    ));
    // Held FAIL_HOLD, then a new attempt may start.
    let later = t0 + AUTHORIZE_TIMEOUT;
    assert!(matches!(
        f.on_denied(401, &Challenge::default(), None, later),
        Step::Failed(_)
    ));
    assert!(matches!(
        f.on_denied(401, &Challenge::default(), None, later + FAIL_HOLD),
        Step::Listen { .. }
    ));
}

#[test]
fn client_credentials_go_straight_to_the_token_endpoint() {
    let t0 = Instant::now();
    let opts = ClientOptions {
        grant: Grant::ClientCredentials,
        client_id: Some("m2m".into()),
        client_secret: Some("s".into()),
        scopes: vec!["mcp".into()],
        ..ClientOptions::default()
    };
    let mut f = Flow::new(URL, &opts);
    to_server_metadata(&mut f, t0);
    let doc = meta_doc(json!({"code_challenge_methods_supported": null,
                              "token_endpoint_auth_methods_supported": ["client_secret_post"]}));
    let tok = fetch(f.on_response(200, None, &doc, t0, NOW_UNIX));
    let fm = form(&tok);
    assert_eq!(get(&fm, "grant_type"), Some("client_credentials"));
    assert_eq!(get(&fm, "client_secret"), Some("s"));
    assert_eq!(get(&fm, "scope"), Some("mcp"));
    assert_eq!(get(&fm, "resource"), Some(URL));
    assert_eq!(
        f.on_response(200, None, &tokens("m", None, 60), t0, NOW_UNIX),
        Step::Authorized
    );
}

#[test]
fn every_legal_move_and_some_illegal_ones() {
    for (a, b) in [
        ("idle", "resource-metadata"),
        ("ready", "refreshing"),
        ("refreshing", "listening"),
        ("browsing", "exchanging"),
        ("exchanging", "ready"),
        ("listening", "failed"),
        ("idle", "probing"),
        ("ready", "probing"),
        ("probing", "resource-metadata"),
        ("probing", "listening"),
        ("probing", "failed"),
    ] {
        assert!(allowed(a, b), "{a} → {b}");
    }
    for (a, b) in [
        ("idle", "browsing"),
        ("idle", "refreshing"),
        ("browsing", "ready"),
        ("registering", "exchanging"),
        ("refreshing", "browsing"),
        ("probing", "ready"),
        ("probing", "browsing"),
        ("browsing", "probing"),
        ("refreshing", "probing"),
    ] {
        assert!(!allowed(a, b), "{a} → {b}");
    }
}

#[test]
fn token_responses_are_checked_and_never_printed() {
    assert!(
        read_tokens(
            200,
            br#"{"access_token":"a","token_type":"mac"}"#,
            "",
            None,
            0
        )
        .is_err()
    );
    assert!(
        read_tokens(
            200,
            br#"{"access_token":"a b","token_type":"bearer"}"#,
            "",
            None,
            0
        )
        .is_err()
    );
    assert!(read_tokens(200, b"[", "", None, 0).is_err());
    let t = read_tokens(
        200,
        br#"{"access_token":"secret","token_type":"bearer"}"#,
        "s",
        Some("old".into()),
        5,
    )
    .unwrap();
    assert_eq!(t.refresh.as_deref(), Some("old"));
    assert_eq!(t.expires_at, None);
    assert!(!format!("{t:?}").contains("secret"));
}

/// `auth login`: the probe it starts with (a token-less `ping` to the MCP
/// endpoint), checked; the flow is left in `probing`.
fn probe(f: &mut Flow) {
    let p = fetch(f.login());
    assert_eq!(f.stage_name(), "probing");
    assert!(f.busy());
    assert_eq!((p.method, p.url.as_str()), ("POST", URL));
    let h = |k: &str| {
        p.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(h("content-type"), Some("application/json"));
    assert_eq!(h("accept"), Some("application/json, text/event-stream"));
    assert!(h("mcp-protocol-version").is_some());
    assert_eq!(h("authorization"), None, "a probe never carries a token");
    let body: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["method"], "ping", "never initialize");
    assert!(body["id"].is_string());
}

#[test]
fn login_probe_401_with_a_challenge_takes_its_metadata_url_and_scope() {
    let t0 = Instant::now();
    let mut f = Flow::new(URL, &ClientOptions::default());
    probe(&mut f);
    let named = "https://mcp.example/elsewhere/prm";
    let challenge = format!(
        r#"Basic realm="x", Bearer resource_metadata="{named}", scope="mcp extra", error="invalid_token""#
    );
    let m = fetch(f.on_response(401, Some(&challenge), b"", t0, NOW_UNIX));
    assert_eq!(f.stage_name(), "resource-metadata");
    assert_eq!(m.url, named, "the challenge's URL, not a well-known guess");
    let s = f.on_response(200, None, &prm(), t0, NOW_UNIX);
    assert_eq!(
        fetch(s).url,
        "https://as.example/.well-known/oauth-authorization-server"
    );
    let Step::Listen { preferred } = f.on_response(200, None, &meta_doc(json!({})), t0, NOW_UNIX)
    else {
        panic!()
    };
    fetch(f.listening(preferred, t0));
    let Step::Browse { url } = f.on_response(201, None, br#"{"client_id":"c1"}"#, t0, NOW_UNIX)
    else {
        panic!()
    };
    let q = form_decode(url.split_once('?').unwrap().1).unwrap();
    assert_eq!(get(&q, "scope"), Some("mcp extra"), "the challenge's scope");
}

#[test]
fn login_probe_without_a_usable_challenge_uses_the_well_known_urls() {
    let t0 = Instant::now();
    for (status, header) in [
        (200, None),
        (400, None),
        (405, Some("Bearer")),
        (401, None),
        (401, Some(r#"Basic realm="mcp""#)),
        (401, Some(r#"Bearer error="invalid_token""#)),
        (401, Some("")),
    ] {
        let mut f = Flow::new(URL, &ClientOptions::default());
        probe(&mut f);
        let m = fetch(f.on_response(status, header, b"{}", t0, NOW_UNIX));
        assert_eq!(f.stage_name(), "resource-metadata", "{status} {header:?}");
        assert_eq!(
            m.url, "https://mcp.example/.well-known/oauth-protected-resource/mcp",
            "{status} {header:?}"
        );
        // And on to the root one, as without a probe.
        let m = fetch(f.on_response(404, None, b"", t0, NOW_UNIX));
        assert_eq!(
            m.url,
            "https://mcp.example/.well-known/oauth-protected-resource"
        );
    }
    // A 200's resource_metadata-looking header is not a challenge.
    let mut f = Flow::new(URL, &ClientOptions::default());
    probe(&mut f);
    let m = fetch(f.on_response(
        200,
        Some(r#"Bearer resource_metadata="https://evil.example/prm""#),
        b"",
        t0,
        NOW_UNIX,
    ));
    assert!(
        m.url.starts_with("https://mcp.example/.well-known/"),
        "{m:?}"
    );
}

#[test]
fn login_probe_failure_fails_the_login_naming_the_url() {
    let t0 = Instant::now();
    let mut f = Flow::new(URL, &ClientOptions::default());
    probe(&mut f);
    let s = f.on_fetch_failed("connect failed: Connection refused", t0, NOW_UNIX);
    let Step::Failed(why) = s else {
        panic!("{s:?}")
    };
    assert!(why.contains(URL), "{why}");
    assert!(why.contains("Connection refused"), "{why}");
    assert_eq!(f.stage_name(), "failed");
    assert!(!f.busy());
    // A login is an explicit command: it probes again at once, hold or not.
    probe(&mut f);
}

#[test]
fn login_probes_even_with_a_stored_token_and_never_sends_it() {
    let t0 = Instant::now();
    let mut f = Flow::new(URL, &ClientOptions::default());
    ready(&mut f, t0, 3600);
    assert_eq!(f.bearer(), Some("at1"));
    probe(&mut f);
    // A flow under way: a second login waits.
    assert_eq!(f.login(), Step::Wait);
    // Metadata already known: the challenge's scope, then straight to the
    // callback listener.
    let s = f.on_response(401, Some(r#"Bearer scope="mcp more""#), b"", t0, NOW_UNIX);
    assert!(matches!(s, Step::Listen { .. }), "{s:?}");
    assert_eq!(f.stage_name(), "listening");
}
