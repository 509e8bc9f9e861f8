//! `forward --url --oauth` (issue 14): the relay as the OAuth client of its
//! upstream, against the test authorization server of
//! `tests/common/authz.rs` and a fake MCP upstream (below) that demands the
//! server's tokens. The browser is `examples/oauth_browser.rs`, which
//! follows the authorization redirect to the relay's loopback callback
//! the way a person who approves at once would. Real relay binary, real
//! sockets on 127.0.0.1, every wait bounded.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use common::authz::{AuthServer, form_decode};
use common::fake::{After, Conn, Fake, Req, handler, reply_to};
use common::relay::Relay;
use common::{SHORT, call, echo_text, error_kind, initialize};

/// The MCP upstream: its resource metadata names the test authorization
/// server; a POST needs a token that server issued for this resource (and,
/// for `tools/call`, the scope in `call_scope`).
struct Upstream {
    fake: Fake,
    st: Arc<UpState>,
}

struct UpState {
    auth: Arc<AuthServer>,
    url: Mutex<String>,
    /// Tokens issued before this index (of `auth.issued()`) are refused.
    cutoff: AtomicUsize,
    /// Every token is refused.
    reject_all: AtomicBool,
    /// `tools/call` needs this scope (403 insufficient_scope otherwise).
    call_scope: Mutex<Option<String>>,
    /// Whether the 401 names the metadata in `WWW-Authenticate`.
    hint: AtomicBool,
    /// Whether the metadata is served on the well-known URL (else 404:
    /// only the 401's `resource_metadata` names it).
    well_known: AtomicBool,
    /// A `ping` without a token is answered 400 (as a server wanting a
    /// session first would) instead of 401.
    open_ping: AtomicBool,
    denied: AtomicUsize,
    /// GET /mcp opens an SSE stream (held this long, then ended) instead
    /// of 405.
    get_hold_ms: AtomicUsize,
    /// GET streams opened (200).
    gets_ok: AtomicUsize,
}

impl Upstream {
    fn start(auth: &Arc<AuthServer>) -> Upstream {
        let st = Arc::new(UpState {
            auth: auth.clone(),
            url: Mutex::new(String::new()),
            cutoff: AtomicUsize::new(0),
            reject_all: AtomicBool::new(false),
            call_scope: Mutex::new(None),
            hint: AtomicBool::new(true),
            well_known: AtomicBool::new(true),
            open_ping: AtomicBool::new(false),
            denied: AtomicUsize::new(0),
            get_hold_ms: AtomicUsize::new(0),
            gets_ok: AtomicUsize::new(0),
        });
        let s = st.clone();
        let fake = Fake::start(handler(move |req, conn| s.serve(req, conn)));
        *st.url.lock().unwrap() = fake.url();
        Upstream { fake, st }
    }

    fn url(&self) -> String {
        self.fake.url()
    }

    /// Tokens issued so far stop working here.
    fn refuse_tokens_so_far(&self) {
        self.st
            .cutoff
            .store(self.st.auth.issued().len(), Ordering::SeqCst);
    }

    /// Authorization headers received, in order (None: no header).
    fn bearers(&self) -> Vec<Option<String>> {
        self.fake
            .seen()
            .iter()
            .filter(|r| r.method == "POST")
            .map(|r| r.header("authorization").map(str::to_owned))
            .collect()
    }
}

impl UpState {
    fn serve(&self, req: &Req, conn: &mut Conn) -> After {
        let url = self.url.lock().unwrap().clone();
        let port = url
            .trim_start_matches("http://127.0.0.1:")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        let prm_url = format!("http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp");
        let where_told = if self.well_known.load(Ordering::SeqCst) {
            "/.well-known/oauth-protected-resource/mcp"
        } else {
            "/named-in-the-401/oauth-protected-resource/mcp"
        };
        let prm_url = if self.well_known.load(Ordering::SeqCst) {
            prm_url
        } else {
            format!("http://127.0.0.1:{port}{where_told}")
        };
        if req.method == "POST"
            && req.header("authorization").is_none()
            && req.rpc().as_deref() == Some("ping")
            && self.open_ping.load(Ordering::SeqCst)
        {
            return conn.respond(400, &[], b"no session");
        }
        match (req.method.as_str(), req.target.as_str()) {
            ("GET", t) if t == where_told => {
                return conn.json(
                    &[],
                    &json!({"resource": url, "authorization_servers": [self.auth.issuer()],
                            "scopes_supported": ["mcp"]}),
                );
            }
            ("POST", "/mcp") => {}
            ("GET", "/mcp") if self.get_hold_ms.load(Ordering::SeqCst) > 0 => {}
            ("DELETE", _) => return conn.respond(200, &[], b""),
            ("GET", t) if t.starts_with("/.well-known/") => return conn.respond(404, &[], b""),
            _ => return conn.respond(405, &[], b""),
        }
        let token = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        let index = self.auth.issued().iter().position(|t| t.token == token);
        let verdict = match (self.auth.check(token, &url), index) {
            (Ok(scope), Some(i))
                if i >= self.cutoff.load(Ordering::SeqCst)
                    && !self.reject_all.load(Ordering::SeqCst) =>
            {
                Ok(scope)
            }
            (Ok(_), _) => Err("refused"),
            (Err(e), _) => Err(e),
        };
        let challenge = if self.hint.load(Ordering::SeqCst) {
            format!("Bearer resource_metadata=\"{prm_url}\"")
        } else {
            "Bearer".to_string()
        };
        let scope = match verdict {
            Ok(s) => s,
            Err(why) => {
                self.denied.fetch_add(1, Ordering::SeqCst);
                let h =
                    format!("{challenge}, error=\"invalid_token\", error_description=\"{why}\"");
                return conn.respond(401, &[("www-authenticate", &h)], b"");
            }
        };
        if req.method == "GET" {
            self.gets_ok.fetch_add(1, Ordering::SeqCst);
            let hold = Duration::from_millis(self.get_hold_ms.load(Ordering::SeqCst) as u64);
            if conn.sse_start() && conn.wait(hold) {
                conn.sse_end();
            }
            return After::Close;
        }
        let msg = req.json();
        if msg["method"] == "tools/call"
            && let Some(need) = self.call_scope.lock().unwrap().clone()
            && !scope.split(' ').any(|s| s == need)
        {
            let h = format!("{challenge}, error=\"insufficient_scope\", scope=\"mcp {need}\"");
            return conn.respond(403, &[("www-authenticate", &h)], b"");
        }
        match reply_to(&msg) {
            Some(r) if msg["method"] == "initialize" => conn.json(&[("mcp-session-id", "s1")], &r),
            Some(r) => conn.json(&[], &r),
            None => conn.accepted(),
        }
    }
}

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join("examples").join(name);
    if !path.is_file() {
        let st = std::process::Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .status()
            .expect("cargo build --example");
        assert!(st.success());
    }
    path
}

/// A store directory and a browser log of this test's own.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "mcp-relay-oauth-{test}-{}-{}",
            std::process::id(),
            common::authz::unix_now()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    fn store(&self) -> String {
        self.dir.join("store").to_string_lossy().into_owned()
    }

    fn browser_log(&self) -> PathBuf {
        self.dir.join("browser.log")
    }

    fn browser(&self) -> String {
        format!(
            "{} --log {}",
            example("oauth_browser").display(),
            self.browser_log().display()
        )
    }

    fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, content).unwrap();
        p.to_string_lossy().into_owned()
    }

    fn store_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.store())
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn relay(up: &Upstream, s: &Scratch, extra: &[&str]) -> Relay {
    Relay::forward()
        .args([
            "--url",
            &up.url(),
            "--oauth",
            "--oauth-browser",
            &s.browser(),
            "--oauth-store",
            &s.store(),
            "--log-level",
            "debug",
        ])
        .args(extra)
        .start()
}

fn setup(test: &str) -> (Arc<AuthServer>, Upstream, Scratch) {
    let auth = Arc::new(AuthServer::new());
    let up = Upstream::start(&auth);
    (auth, up, Scratch::new(test))
}

/// initialize; the reply (result or error).
fn init(r: &mut Relay) -> Value {
    r.send(&initialize(json!("init")));
    r.expect_response(&json!("init"), Duration::from_secs(10))
}

fn init_ok(r: &mut Relay) {
    let reply = init(r);
    assert!(
        reply["result"]["serverInfo"].is_object(),
        "initialize: {reply}\n{}",
        r.stderr_dump()
    );
}

fn call_reply(r: &mut Relay, id: i64, text: &str) -> Value {
    r.send(&call(json!(id), text));
    r.expect_response(&json!(id), Duration::from_secs(10))
}

fn echo(r: &mut Relay, id: i64, text: &str) {
    let reply = call_reply(r, id, text);
    assert_eq!(
        echo_text(&reply),
        Some(text),
        "{reply}\n{}",
        r.stderr_dump()
    );
}

fn redirect_port(q: &std::collections::HashMap<String, String>) -> u16 {
    q["redirect_uri"]
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn first_authorization_end_to_end() {
    let (auth, up, s) = setup("first");
    let mut r = relay(&up, &s, &[]);
    init_ok(&mut r);
    echo(&mut r, 1, "hello");
    let c = auth.counts();
    assert_eq!(
        (c.registrations, c.authorizations, c.code_exchanges),
        (1, 1, 1)
    );
    let a = &auth.authorize_log()[0];
    assert_eq!(a["code_challenge_method"], "S256");
    assert_eq!(a["resource"], up.url());
    assert_eq!(a["scope"], "mcp");
    let t = &auth.token_log()[0];
    assert_eq!(t["grant_type"], "authorization_code");
    assert_eq!(t["resource"], up.url());
    // The relay printed the URL for headless use, and ran the browser.
    let err = r.stderr_text();
    assert!(err.contains("open this URL in a browser"), "{err}");
    let logged = std::fs::read_to_string(s.browser_log()).unwrap();
    assert!(logged.starts_with(&format!("{}/authorize?", auth.issuer())));
    // Exactly one 401, then every request carried the token.
    let bearers = up.bearers();
    assert_eq!(bearers[0], None);
    let token = &auth.issued()[0].token;
    assert!(
        bearers[1..]
            .iter()
            .all(|b| b.as_deref() == Some(&format!("Bearer {token}")))
    );
    // Tokens never in the log.
    assert!(!err.contains(token.as_str()), "access token logged");
    // One store file, 0600 in a 0700 directory, with the expiry.
    let files = s.store_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dmode = std::fs::metadata(s.store()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dmode, 0o700);
    let rec: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert!(rec["expires_at"].as_u64().unwrap() > common::authz::unix_now() + 3000);
    assert_eq!(rec["issuer"], auth.issuer());
    drop(r);
    // A second run uses the stored token: no new authorization.
    let mut r = relay(&up, &s, &[]);
    init_ok(&mut r);
    echo(&mut r, 2, "again");
    assert_eq!(auth.authorizations(), 1);
    assert_eq!(auth.token_requests(), 1);
}

#[test]
fn revoked_refresh_token_leads_to_exactly_one_new_authorization() {
    let (auth, up, s) = setup("revoked");
    let mut r = relay(&up, &s, &[]);
    init_ok(&mut r);
    up.refuse_tokens_so_far();
    auth.revoke_refresh_tokens();
    echo(&mut r, 1, "after revocation");
    let c = auth.counts();
    assert_eq!(c.authorizations, 2, "{c:?}");
    assert_eq!(c.refresh_failures, 1, "{c:?}");
    assert_eq!(c.registrations, 1, "the registration is reused");
}

#[test]
fn a_token_refused_right_after_authorization_is_an_error_not_a_loop() {
    let (auth, up, s) = setup("loop");
    let mut r = relay(&up, &s, &[]);
    init_ok(&mut r);
    up.st.reject_all.store(true, Ordering::SeqCst);
    let reply = call_reply(&mut r, 1, "x");
    assert_eq!(error_kind(&reply), Some("unauthorized"), "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("just issued"),
        "{reply}"
    );
    // 401 → refresh → 401 → one authorization → 401 → error.
    let c = auth.counts();
    assert_eq!((c.refreshes, c.authorizations), (1, 2), "{c:?}");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(auth.authorizations(), 2, "no further authorization");
}

#[test]
fn an_expired_access_token_is_refreshed_before_use() {
    let (auth, up, s) = setup("expired");
    auth.set(|s| s.expires_in = 2);
    let mut r = relay(&up, &s, &[]);
    init_ok(&mut r);
    thread::sleep(Duration::from_millis(2200));
    let denied = up.st.denied.load(Ordering::SeqCst);
    echo(&mut r, 1, "fresh");
    let c = auth.counts();
    assert_eq!((c.authorizations, c.refreshes), (1, 1), "{c:?}");
    assert_eq!(
        up.st.denied.load(Ordering::SeqCst),
        denied,
        "refreshed before sending, not after a 401"
    );
    assert_eq!(auth.token_log()[1]["grant_type"], "refresh_token");
    assert_eq!(auth.token_log()[1]["resource"], up.url());
}

#[test]
fn an_expired_token_on_the_get_stream_reconnect_is_refreshed() {
    let (auth, up, s) = setup("get");
    auth.set(|s| s.expires_in = 2);
    up.st.get_hold_ms.store(2500, Ordering::SeqCst);
    let mut r = relay(&up, &s, &[]);
    init_ok(&mut r);
    r.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    // The stream ends after 2.5 s, when the token has expired: the
    // reconnect's 401 must lead to a refresh and a stream again, not to
    // "no GET stream" for good.
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while up.st.gets_ok.load(Ordering::SeqCst) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no second GET stream (refreshes {}):\n{}",
            auth.refreshes(),
            r.stderr_dump()
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(auth.refreshes(), 1);
    assert_eq!(auth.authorizations(), 1);
}

#[test]
fn two_relays_refreshing_at_once_make_one_refresh_request() {
    let (auth, up, s) = setup("two");
    auth.set(|s| s.expires_in = 2);
    {
        let mut r = relay(&up, &s, &[]);
        init_ok(&mut r);
    }
    thread::sleep(Duration::from_millis(2200));
    auth.set(|s| s.token_delay = Duration::from_millis(1000));
    let mut a = relay(&up, &s, &[]);
    let mut b = relay(&up, &s, &[]);
    // Both hold the expired token before either asks for anything.
    a.wait_stderr("using the stored authorization", SHORT);
    b.wait_stderr("using the stored authorization", SHORT);
    a.send(&initialize(json!("init")));
    b.send(&initialize(json!("init")));
    for r in [&mut a, &mut b] {
        let reply = r.expect_response(&json!("init"), Duration::from_secs(10));
        assert!(reply["result"].is_object(), "{reply}\n{}", r.stderr_dump());
    }
    let c = auth.counts();
    assert_eq!(
        (c.refreshes, c.refresh_failures, c.authorizations),
        (1, 0, 1),
        "{c:?}"
    );
    let both = format!("{}\n{}", a.stderr_text(), b.stderr_text());
    assert!(both.contains("another relay refreshed the token"), "{both}");
}

#[test]
fn the_callback_port_is_the_same_across_runs() {
    let (auth, up, s) = setup("port");
    {
        let mut r = relay(&up, &s, &[]);
        init_ok(&mut r);
    }
    // The next run must authorize again (tokens refused, refresh revoked).
    up.refuse_tokens_so_far();
    auth.revoke_refresh_tokens();
    {
        let mut r = relay(&up, &s, &[]);
        init_ok(&mut r);
    }
    let log = auth.authorize_log();
    assert_eq!(log.len(), 2);
    assert_eq!(redirect_port(&log[0]), redirect_port(&log[1]));
    assert_eq!(log[0]["redirect_uri"], log[1]["redirect_uri"]);
    // A fresh store derives the same port from (issuer, resource).
    let s2 = Scratch::new("port2");
    up.refuse_tokens_so_far();
    let mut r = relay(&up, &s2, &[]);
    init_ok(&mut r);
    assert_eq!(
        redirect_port(&auth.authorize_log()[2]),
        redirect_port(&log[0])
    );
}

#[test]
fn the_callback_port_moves_on_when_taken_and_is_remembered() {
    let (auth, up, s) = setup("taken");
    // Find the derived port with a first run, then hold it.
    {
        let mut r = relay(&up, &s, &[]);
        init_ok(&mut r);
    }
    let first = redirect_port(&auth.authorize_log()[0]);
    let _ = std::fs::remove_dir_all(s.store());
    let squatter = std::net::TcpListener::bind(("127.0.0.1", first)).expect("hold the port");
    {
        let mut r = relay(&up, &s, &[]);
        init_ok(&mut r);
    }
    let second = redirect_port(&auth.authorize_log()[1]);
    assert_ne!(second, first);
    drop(squatter);
    // Remembered: the next authorization uses the port of the store.
    up.refuse_tokens_so_far();
    auth.revoke_refresh_tokens();
    let mut r = relay(&up, &s, &[]);
    init_ok(&mut r);
    assert_eq!(redirect_port(&auth.authorize_log()[2]), second);
}

#[test]
fn without_dynamic_registration_a_preregistered_client_works() {
    let (auth, up, s) = setup("nodcr");
    auth.set(|s| s.registration = false);
    let mut r = relay(&up, &s, &[]);
    let reply = init(&mut r);
    assert_eq!(error_kind(&reply), Some("unauthorized"), "{reply}");
    let msg = reply["error"]["message"].as_str().unwrap();
    assert!(msg.contains("--oauth-client-id"), "{msg}");
    assert_eq!(auth.authorizations(), 0);
    drop(r);
    auth.register_client("pre", Some("s3cret"), &["http://127.0.0.1/callback"]);
    let secret = s.file("secret", "s3cret\n");
    let mut r = relay(
        &up,
        &s,
        &[
            "--oauth-client-id",
            "pre",
            "--oauth-client-secret-file",
            &secret,
        ],
    );
    init_ok(&mut r);
    echo(&mut r, 1, "pre-registered");
    let c = auth.counts();
    assert_eq!((c.registrations, c.authorizations), (0, 1), "{c:?}");
    assert_eq!(auth.authorize_log()[0]["client_id"], "pre");
    assert!(!r.stderr_text().contains("s3cret"), "secret logged");
}

#[test]
fn a_client_metadata_document_is_used_where_supported() {
    let (auth, up, s) = setup("cimd");
    auth.set(|s| {
        s.registration = false;
        s.cimd = true;
        s.cimd_allow_http_loopback = true;
    });
    let doc_url = Arc::new(Mutex::new(String::new()));
    let d = doc_url.clone();
    let doc = Fake::start(handler(move |_req, conn| {
        let id = d.lock().unwrap().clone();
        conn.json(
            &[("connection", "close")],
            &json!({"client_id": id, "client_name": "mcp-relay test",
                    "redirect_uris": ["http://127.0.0.1/callback"],
                    "token_endpoint_auth_method": "none"}),
        )
    }));
    let url = format!("http://127.0.0.1:{}/client.json", doc.port());
    *doc_url.lock().unwrap() = url.clone();
    let mut r = relay(&up, &s, &["--oauth-client-metadata-url", &url]);
    init_ok(&mut r);
    let c = auth.counts();
    assert_eq!(
        (c.cimd_fetches, c.registrations, c.authorizations),
        (1, 0, 1),
        "{c:?}"
    );
    assert_eq!(auth.authorize_log()[0]["client_id"], url);
}

#[test]
fn an_issuer_mismatch_is_refused() {
    let (auth, up, s) = setup("issuer");
    auth.claim_issuer("http://impostor.test");
    let mut r = relay(&up, &s, &[]);
    let reply = init(&mut r);
    assert_eq!(error_kind(&reply), Some("unauthorized"), "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("impostor"),
        "{reply}"
    );
    let c = auth.counts();
    assert_eq!(
        (c.registrations, c.authorizations, c.token_requests),
        (0, 0, 0)
    );
}

#[test]
fn a_server_without_pkce_s256_is_refused() {
    let (auth, up, s) = setup("pkce");
    auth.set(|s| s.s256 = false);
    let mut r = relay(&up, &s, &[]);
    let reply = init(&mut r);
    assert_eq!(error_kind(&reply), Some("unauthorized"), "{reply}");
    assert!(
        reply["error"]["message"].as_str().unwrap().contains("S256"),
        "{reply}"
    );
    let c = auth.counts();
    assert_eq!((c.registrations, c.authorizations), (0, 0));
    assert!(!s.browser_log().exists(), "no browser for a refused server");
}

#[test]
fn insufficient_scope_steps_up_once() {
    let (auth, up, s) = setup("scope");
    *up.st.call_scope.lock().unwrap() = Some("admin".into());
    let mut r = relay(&up, &s, &[]);
    init_ok(&mut r);
    echo(&mut r, 1, "needs admin");
    let log = auth.authorize_log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1]["scope"], "mcp admin");
    // The server keeps asking: an error, not a second step-up.
    auth.set(|s| s.grantable = vec!["mcp".into(), "admin".into()]);
    *up.st.call_scope.lock().unwrap() = Some("root".into());
    let reply = call_reply(&mut r, 2, "needs root");
    assert_eq!(error_kind(&reply), Some("unauthorized"), "{reply}");
}

#[test]
fn a_token_is_not_sent_to_another_resource() {
    let (auth, up, s) = setup("audience");
    let mut r = relay(&up, &s, &[]);
    init_ok(&mut r);
    drop(r);
    let token = auth.issued()[0].token.clone();
    // Another upstream, same authorization server, same store.
    let other = Upstream::start(&auth);
    let mut r = relay(&other, &s, &[]);
    init_ok(&mut r);
    let b = other.bearers();
    assert_eq!(b[0], None, "the first request carried a token: {b:?}");
    assert!(
        b.iter()
            .all(|h| !h.as_deref().unwrap_or("").contains(&token))
    );
    // The second resource got a token of its own.
    assert_eq!(
        auth.issued()[1].resource.as_deref(),
        Some(other.url().as_str())
    );
    // The authorization server never received an access token.
    for req in auth.fake.seen() {
        let all = format!("{:?} {}", req.headers, String::from_utf8_lossy(&req.body));
        for t in auth.issued() {
            assert!(
                !all.contains(&t.token),
                "access token sent to the AS: {}",
                req.target
            );
        }
    }
    assert_eq!(s.store_files().len(), 2, "one file per (issuer, resource)");
}

#[test]
fn client_credentials_for_machines() {
    let (auth, up, s) = setup("m2m");
    auth.register_client("m2m", Some("m2m-secret"), &[]);
    let secret = s.file("secret", "m2m-secret");
    let mut r = relay(
        &up,
        &s,
        &[
            "--oauth-grant",
            "client_credentials",
            "--oauth-client-id",
            "m2m",
            "--oauth-client-secret-file",
            &secret,
        ],
    );
    init_ok(&mut r);
    echo(&mut r, 1, "machine");
    let c = auth.counts();
    assert_eq!((c.client_credentials, c.authorizations), (1, 0), "{c:?}");
    assert!(!s.browser_log().exists());
}

#[test]
fn requests_arriving_during_the_authorization_wait_and_are_all_answered() {
    let (_auth, up, s) = setup("queue");
    up.st.hint.store(false, Ordering::SeqCst);
    let mut r = relay(&up, &s, &[]);
    r.send(&initialize(json!("init")));
    r.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    for i in 0..20 {
        r.send(&call(json!(i), &format!("t{i}")));
    }
    let reply = r.expect_response(&json!("init"), Duration::from_secs(10));
    assert!(reply["result"].is_object(), "{reply}");
    // Answers come in any order (the calls go out on several connections).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let reply = r.expect_msg(SHORT, "a tools/call answer");
        let i = reply["id"].as_i64().expect("an id");
        assert_eq!(echo_text(&reply), Some(format!("t{i}").as_str()), "{reply}");
        assert!(seen.insert(i), "{i} answered twice");
    }
    assert_eq!(seen.len(), 20);
    // One 401 for the first request; the rest waited for the token.
    assert_eq!(up.st.denied.load(Ordering::SeqCst), 1);
}

#[test]
fn the_test_authorization_server_works_on_its_own() {
    let auth = AuthServer::new();
    let loc = common::loopback::get_location(&format!(
        "{}/authorize?response_type=code&client_id=nobody",
        auth.issuer()
    ));
    assert!(loc.is_err(), "an unknown client gets no redirect");
    let q = form_decode("a=b%20c&d");
    assert_eq!(q["a"], "b c");
}

/// Runs `mcp-relay ARGS` to completion (10 s at most): (status, stdout,
/// stderr).
fn run_relay(args: &[&str]) -> (i32, String, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-relay"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mcp-relay");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mcp-relay {args:?} still running after 10 s");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), out, err)
}

#[test]
fn auth_login_status_and_logout() {
    let (auth, up, s) = setup("cmds");
    let url = up.url();
    let store = s.store();
    let browser = s.browser();
    let (code, out, err) = run_relay(&[
        "auth",
        "login",
        &url,
        "--oauth-browser",
        &browser,
        "--oauth-store",
        &store,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "login wrote to stdout: {out}");
    assert!(err.contains("logged in to"), "{err}");
    assert_eq!(auth.authorizations(), 1);
    assert_eq!(s.store_files().len(), 1);
    // A relay then starts authorized (the one 401 was login's probe).
    {
        let denied = up.st.denied.load(Ordering::SeqCst);
        let mut r = relay(&up, &s, &[]);
        init_ok(&mut r);
        assert_eq!(up.st.denied.load(Ordering::SeqCst), denied);
    }
    let (code, out, err) = run_relay(&["auth", "status", &url, "--oauth-store", &store]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("issuer:    {}", auth.issuer())),
        "{out}"
    );
    assert!(out.contains(&format!("resource:  {url}")), "{out}");
    assert!(out.contains("scopes:    mcp"), "{out}");
    assert!(out.contains("expires:"), "{out}");
    for t in auth.issued() {
        assert!(
            !out.contains(&t.token) && !err.contains(&t.token),
            "token printed"
        );
    }
    let (code, _, err) = run_relay(&["auth", "logout", &url, "--oauth-store", &store]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        auth.counts().revocations,
        2,
        "refresh and access token revoked"
    );
    assert!(auth.issued()[0].revoked);
    assert!(s.store_files().is_empty());
    let (code, _, err) = run_relay(&["auth", "status", &url, "--oauth-store", &store]);
    assert_eq!(code, 1);
    assert!(err.contains("no stored authorization"), "{err}");
}

/// `auth login URL` and the POSTs the upstream saw: the first is login's
/// probe, a `ping` without a token; a relay started afterwards is
/// authorized from the store.
fn login_via(up: &Upstream, auth: &AuthServer, s: &Scratch) -> String {
    let url = up.url();
    let (store, browser) = (s.store(), s.browser());
    let (code, out, err) = run_relay(&[
        "auth",
        "login",
        &url,
        "--oauth-browser",
        &browser,
        "--oauth-store",
        &store,
        "--log-level",
        "debug",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "login wrote to stdout: {out}");
    assert!(err.contains("logged in to"), "{err}");
    assert_eq!(auth.authorizations(), 1, "{err}");
    assert_eq!(s.store_files().len(), 1, "{err}");
    let posts: Vec<Req> = up
        .fake
        .seen()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "one probe: {posts:?}");
    let p = &posts[0];
    assert_eq!(p.rpc().as_deref(), Some("ping"), "{p:?}");
    assert!(p.json()["id"].is_string() || p.json()["id"].is_number());
    assert_eq!(p.header("authorization"), None, "a probe never has a token");
    assert_eq!(p.header("content-type"), Some("application/json"));
    assert_eq!(
        p.header("accept"),
        Some("application/json, text/event-stream")
    );
    assert!(p.header("mcp-protocol-version").is_some(), "{p:?}");
    let denied = up.st.denied.load(Ordering::SeqCst);
    let mut r = relay(up, s, &[]);
    init_ok(&mut r);
    echo(&mut r, 1, "after login");
    assert_eq!(up.st.denied.load(Ordering::SeqCst), denied);
    err
}

#[test]
fn auth_login_finds_metadata_named_only_in_the_401() {
    let (auth, up, s) = setup("login-hint-only");
    up.st.well_known.store(false, Ordering::SeqCst);
    let err = login_via(&up, &auth, &s);
    let gets: Vec<String> = up
        .fake
        .seen()
        .into_iter()
        .filter(|r| r.method == "GET" && r.target != "/mcp")
        .map(|r| r.target)
        .collect();
    assert_eq!(
        gets,
        ["/named-in-the-401/oauth-protected-resource/mcp"],
        "the challenge's URL, and no well-known guess: {err}"
    );
}

#[test]
fn auth_login_without_a_usable_challenge_uses_the_well_known_urls() {
    // A 401 whose challenge names no metadata.
    let (auth, up, s) = setup("login-no-hint");
    up.st.hint.store(false, Ordering::SeqCst);
    login_via(&up, &auth, &s);
    // A probe answered 400 (the server wants a session before a ping).
    let (auth, up, s) = setup("login-open-ping");
    up.st.open_ping.store(true, Ordering::SeqCst);
    login_via(&up, &auth, &s);
    assert_eq!(up.st.denied.load(Ordering::SeqCst), 0);
    // Nothing listening: a clear failure naming the URL.
    let s = Scratch::new("login-refused");
    let url = format!("http://127.0.0.1:{}/mcp", common::free_port());
    let store = s.store();
    let (code, _, err) = run_relay(&["auth", "login", &url, "--oauth-store", &store]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("login to") && err.contains("failed"), "{err}");
    assert!(err.contains(&url), "{err}");
    assert!(s.store_files().is_empty());
}

/// Interop: the Python SDK 2.x server-side bearer auth (`AuthSettings` and a
/// `TokenVerifier` checking the test authorization server's JWTs against
/// its JWKS) as the upstream of `forward --url --oauth`.
#[test]
fn interop_python_sdk2_bearer_auth_upstream() {
    use common::interop;
    use std::process::{Command, Stdio};
    let python = interop::python2("mcp.server.mcpserver, mcp.server.auth.settings, jwt")
        .unwrap_or_else(|e| interop::missing("forward_oauth interop", &e));
    let auth = AuthServer::new();
    let port = common::free_port();
    let mut cmd = Command::new(python);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/oauth_bearer_server.py"))
        .arg(port.to_string())
        .arg(auth.issuer())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().expect("spawn the 2.x server");
    let (out, t1) = interop::drain(child.stdout.take().expect("stdout"));
    let (err, t2) = interop::drain(child.stderr.take().expect("stderr"));
    struct Kill(std::process::Child, Vec<thread::JoinHandle<()>>);
    impl Drop for Kill {
        fn drop(&mut self) {
            interop::kill_tree(&mut self.0);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            for t in self.1.drain(..) {
                interop::join_bounded(t, deadline);
            }
        }
    }
    let mut server = Kill(child, vec![t1, t2]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !interop::accepts(port) {
        if std::time::Instant::now() > deadline || server.0.try_wait().ok().flatten().is_some() {
            panic!(
                "the 2.x server did not listen on {port}:\n{}",
                interop::snapshot(&err)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    let s = Scratch::new("interop");
    let url = format!("http://127.0.0.1:{port}/mcp");
    let mut r = Relay::forward()
        .args([
            "--url",
            &url,
            "--oauth",
            "--oauth-browser",
            &s.browser(),
            "--oauth-store",
            &s.store(),
            "--log-level",
            "debug",
        ])
        .start();
    let reply = init(&mut r);
    let trace = interop::snapshot(&out);
    assert!(
        reply["result"]["serverInfo"].is_object(),
        "{reply}\n{}\n--- server ---\n{trace}\n{}",
        r.stderr_dump(),
        interop::snapshot(&err)
    );
    r.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    r.send(&call(json!(1), "through the SDK's bearer auth"));
    let reply = r.expect_response(&json!(1), Duration::from_secs(10));
    assert_eq!(
        reply
            .pointer("/result/content/0/text")
            .and_then(Value::as_str),
        Some("through the SDK's bearer auth"),
        "{reply}"
    );
    let trace = interop::snapshot(&out);
    // The SDK's 401 came first, then the token was accepted.
    assert!(trace.contains("auth=no -> 401"), "{trace}");
    assert!(trace.contains("POST /mcp auth=yes -> 200"), "{trace}");
    assert!(!trace.contains("token refused"), "{trace}");
    let c = auth.counts();
    assert_eq!(
        (c.registrations, c.authorizations, c.code_exchanges),
        (1, 1, 1),
        "{c:?}"
    );
    // The SDK published its resource metadata; the relay asked for its scope.
    assert_eq!(auth.authorize_log()[0]["resource"], url);
    assert_eq!(auth.authorize_log()[0]["scope"], "mcp");
    // `auth login` against the same server: its token-less probe meets the
    // SDK's 401, and the login goes through.
    let refused = trace.matches("auth=no -> 401").count();
    let s2 = Scratch::new("interop-login");
    let (store, browser) = (s2.store(), s2.browser());
    let (code, _, login_err) = run_relay(&[
        "auth",
        "login",
        &url,
        "--oauth-browser",
        &browser,
        "--oauth-store",
        &store,
    ]);
    let trace = interop::snapshot(&out);
    assert_eq!(code, 0, "{login_err}\n--- server ---\n{trace}");
    assert_eq!(s2.store_files().len(), 1);
    assert_eq!(auth.counts().authorizations, 2);
    assert_eq!(
        trace.matches("auth=no -> 401").count(),
        refused + 1,
        "{trace}"
    );
    drop(r);
    drop(server);
    interop::ran("forward_oauth_python_sdk2_bearer");
}
