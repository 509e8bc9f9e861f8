//! A test OAuth 2.1 authorization server (issue 14), on the [`Fake`] HTTP
//! server: RFC 8414 metadata (and the same document at the OpenID
//! discovery URL), a JWKS whose keys a test can rotate, RFC 7591 dynamic
//! registration, Client ID Metadata Documents (fetched from the client_id
//! URL), `/authorize` that approves at once (PKCE S256, registered
//! redirect URI, `resource`, `state`; redirects with `code`, `state`,
//! `iss`), `/token` (authorization_code, refresh_token with rotation,
//! client_credentials), `/revoke`, and counters a test reads. Access tokens
//! are JWTs minted with the test keys under tests/data/oauth (ring: RS256
//! with an `RsaKeyPair`, ES256 with an `EcdsaKeyPair`).
//!
//! Switches ([`Switches`], set with [`AuthServer::set`]) take out parts of
//! the server: no `registration_endpoint`, no S256, a wrong metadata
//! `issuer`, CIMD support, refresh tokens refused, token lifetime, the
//! scope granted. Everything binds 127.0.0.1 only.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

use super::fake::{After, Conn, Fake, Req, handler};

const RSA1: &[u8] = include_bytes!("../data/oauth/rsa1.pk8");
const RSA2: &[u8] = include_bytes!("../data/oauth/rsa2.pk8");
const EC1: &[u8] = include_bytes!("../data/oauth/ec1.pk8");
const EC2: &[u8] = include_bytes!("../data/oauth/ec2.pk8");

/// base64url without padding.
pub fn b64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in input.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..=c.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A signing key with its `kid`.
pub struct TestKey {
    pub kid: String,
    signer: Signer,
}

impl TestKey {
    /// RS256 with test key `n` (1 or 2).
    pub fn rsa(kid: &str, n: u8) -> TestKey {
        let der = if n == 1 { RSA1 } else { RSA2 };
        TestKey {
            kid: kid.into(),
            signer: Signer::Rsa(RsaKeyPair::from_pkcs8(der).expect("test RSA key")),
        }
    }

    /// ES256 with test key `n` (1 or 2).
    pub fn ec(kid: &str, n: u8) -> TestKey {
        let der = if n == 1 { EC1 } else { EC2 };
        let k = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &SystemRandom::new(),
        )
        .expect("test EC key");
        TestKey {
            kid: kid.into(),
            signer: Signer::Ec(k),
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        match &self.signer {
            Signer::Rsa(k) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                       "n": b64(&c.n), "e": b64(&c.e)})
            }
            Signer::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig",
                       "x": b64(&p[1..33]), "y": b64(&p[33..65])})
            }
        }
    }

    fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
        }
    }

    /// A compact JWS over `claims`, headed with this key's alg and `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// Signed with this key but naming `kid` (a forged or unknown key id).
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "typ": "at+jwt", "kid": kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match &self.signer {
            Signer::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .expect("sign");
                sig
            }
            Signer::Ec(k) => k
                .sign(&rng, input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    }
}

/// What parts of the server are on; [`AuthServer::set`] changes them.
#[derive(Debug, Clone)]
pub struct Switches {
    /// Advertise and serve `/register` (RFC 7591).
    pub registration: bool,
    /// Advertise `S256` in `code_challenge_methods_supported` (else only
    /// `plain`; `/authorize` still demands S256).
    pub s256: bool,
    /// Advertise `client_id_metadata_document_supported` and accept an
    /// `https://` client_id, fetching its metadata document.
    pub cimd: bool,
    /// Test only: accept an `http://127.0.0.1:PORT/...` client_id URL too.
    pub cimd_allow_http_loopback: bool,
    /// Accept refresh tokens (false: every refresh gets `invalid_grant`).
    pub refresh: bool,
    /// Lifetime of access tokens, seconds (`expires_in`).
    pub expires_in: u64,
    /// Scope granted when a request names none.
    pub default_scope: String,
    /// Scopes this server will grant; a request for others gets
    /// `invalid_scope`. Empty: any.
    pub grantable: Vec<String>,
    /// `/token` waits this long before answering (races).
    pub token_delay: Duration,
    /// `/authorize` answers `error=access_denied`.
    pub deny: bool,
    /// The `iss` put on the redirect (None: the real issuer).
    pub redirect_iss: Option<String>,
    /// Serve the metadata at the RFC 8414 URL (false: OpenID URL only).
    pub rfc8414: bool,
}

impl Default for Switches {
    fn default() -> Switches {
        Switches {
            registration: true,
            s256: true,
            cimd: false,
            cimd_allow_http_loopback: false,
            refresh: true,
            expires_in: 3600,
            default_scope: "mcp".into(),
            grantable: Vec::new(),
            token_delay: Duration::ZERO,
            deny: false,
            redirect_iss: None,
            rfc8414: true,
        }
    }
}

/// A registered client.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub secret: Option<String>,
    pub redirect_uris: Vec<String>,
    /// How it came: "pre", "dcr" or "cimd".
    pub how: &'static str,
}

struct Code {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    resource: Option<String>,
    scope: String,
}

struct Refresh {
    client_id: String,
    resource: Option<String>,
    scope: String,
}

/// An access token this server issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub client_id: String,
    pub resource: Option<String>,
    pub scope: String,
    pub exp: u64,
    pub revoked: bool,
}

/// How many of each thing happened.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// `/authorize` requests answered with a code.
    pub authorizations: usize,
    /// `/token` requests, whatever the grant and outcome.
    pub token_requests: usize,
    /// `/token` refresh_token grants that issued tokens.
    pub refreshes: usize,
    /// `/token` refresh_token grants refused.
    pub refresh_failures: usize,
    /// `/token` authorization_code grants that issued tokens.
    pub code_exchanges: usize,
    /// `/token` client_credentials grants that issued tokens.
    pub client_credentials: usize,
    pub registrations: usize,
    pub cimd_fetches: usize,
    pub revocations: usize,
    pub metadata_fetches: usize,
}

struct State {
    issuer: String,
    /// What the metadata says its issuer is (a mismatch test sets another).
    metadata_issuer: Option<String>,
    jwks: Vec<Value>,
    sw: Switches,
    signer: TestKey,
    clients: HashMap<String, Client>,
    codes: HashMap<String, Code>,
    refresh: HashMap<String, Refresh>,
    issued: Vec<Issued>,
    counts: Counts,
    /// Every `/authorize` query, decoded.
    authorize_log: Vec<HashMap<String, String>>,
    /// Every `/token` form, decoded.
    token_log: Vec<HashMap<String, String>>,
    next: u64,
}

impl State {
    fn fresh(&mut self, what: &str) -> String {
        self.next += 1;
        format!("{what}-{}-{:x}", self.next, rand_suffix())
    }
}

/// The test authorization server.
pub struct AuthServer {
    pub fake: Fake,
    state: Arc<Mutex<State>>,
}

impl AuthServer {
    /// Every endpoint, with `keys` published in the JWKS (tokens it mints
    /// itself are signed with an ES256 key `as-1` that is published only by
    /// [`AuthServer::new`]).
    pub fn start(keys: &[&TestKey]) -> AuthServer {
        AuthServer::launch(keys.iter().map(|k| k.jwk()).collect())
    }

    /// Every endpoint, the JWKS publishing the key the server signs its
    /// access tokens with.
    pub fn new() -> AuthServer {
        AuthServer::launch(vec![signer().jwk()])
    }

    fn launch(jwks: Vec<Value>) -> AuthServer {
        let state = Arc::new(Mutex::new(State {
            issuer: String::new(),
            metadata_issuer: None,
            jwks,
            sw: Switches::default(),
            signer: signer(),
            clients: HashMap::new(),
            codes: HashMap::new(),
            refresh: HashMap::new(),
            issued: Vec::new(),
            counts: Counts::default(),
            authorize_log: Vec::new(),
            token_log: Vec::new(),
            next: 0,
        }));
        let st = state.clone();
        let fake = Fake::start(handler(move |req, conn| serve(&st, req, conn)));
        state.lock().unwrap().issuer = format!("http://127.0.0.1:{}", fake.port());
        AuthServer { fake, state }
    }

    pub fn issuer(&self) -> String {
        self.state.lock().unwrap().issuer.clone()
    }

    /// Publishes exactly `keys` from now on (rotation).
    pub fn publish(&self, keys: &[&TestKey]) {
        self.state.lock().unwrap().jwks = keys.iter().map(|k| k.jwk()).collect();
    }

    /// Makes the metadata name another issuer.
    pub fn claim_issuer(&self, issuer: &str) {
        self.state.lock().unwrap().metadata_issuer = Some(issuer.into());
    }

    /// Changes switches: `auth.set(|s| s.registration = false)`.
    pub fn set(&self, f: impl FnOnce(&mut Switches)) {
        f(&mut self.state.lock().unwrap().sw);
    }

    /// Pre-registers a client. A redirect URI `http://127.0.0.1/PATH`
    /// (no port) matches that path on any loopback port (RFC 8252 §7.3).
    pub fn register_client(&self, id: &str, secret: Option<&str>, redirect_uris: &[&str]) {
        self.state.lock().unwrap().clients.insert(
            id.into(),
            Client {
                id: id.into(),
                secret: secret.map(str::to_owned),
                redirect_uris: redirect_uris.iter().map(|s| s.to_string()).collect(),
                how: "pre",
            },
        );
    }

    /// Clients known, any way they came.
    pub fn clients(&self) -> Vec<Client> {
        self.state
            .lock()
            .unwrap()
            .clients
            .values()
            .cloned()
            .collect()
    }

    /// Makes every refresh token issued so far invalid (`invalid_grant`).
    pub fn revoke_refresh_tokens(&self) {
        self.state.lock().unwrap().refresh.clear();
    }

    pub fn counts(&self) -> Counts {
        self.state.lock().unwrap().counts.clone()
    }

    pub fn authorizations(&self) -> usize {
        self.counts().authorizations
    }

    pub fn token_requests(&self) -> usize {
        self.counts().token_requests
    }

    pub fn refreshes(&self) -> usize {
        self.counts().refreshes
    }

    /// Decoded query of every `/authorize` request.
    pub fn authorize_log(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().unwrap().authorize_log.clone()
    }

    /// Decoded form of every `/token` request.
    pub fn token_log(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().unwrap().token_log.clone()
    }

    /// Access tokens issued so far.
    pub fn issued(&self) -> Vec<Issued> {
        self.state.lock().unwrap().issued.clone()
    }

    /// What a resource server asks: is `token` one this server issued, not
    /// expired or revoked, for `resource`? The granted scope if so.
    pub fn check(&self, token: &str, resource: &str) -> Result<String, &'static str> {
        let s = self.state.lock().unwrap();
        let Some(t) = s.issued.iter().find(|t| t.token == token) else {
            return Err("unknown token");
        };
        if t.revoked {
            return Err("revoked");
        }
        if t.exp <= unix_now() {
            return Err("expired");
        }
        if t.resource.as_deref() != Some(resource) {
            return Err("another audience");
        }
        Ok(t.scope.clone())
    }

    /// JWKS requests received so far.
    pub fn jwks_fetches(&self) -> usize {
        self.fake
            .seen()
            .iter()
            .filter(|r| r.target == "/jwks")
            .count()
    }
}

fn signer() -> TestKey {
    TestKey::ec("as-1", 1)
}

/// Every answer closes its connection: each exchange is one request (a
/// client that reads to the end, like the helpers below, never waits).
const CLOSE: (&str, &str) = ("connection", "close");

fn serve(st: &Mutex<State>, req: &Req, conn: &mut Conn) -> After {
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (req.target.as_str(), ""),
    };
    match (req.method.as_str(), path) {
        ("GET", "/.well-known/oauth-authorization-server")
        | ("GET", "/.well-known/openid-configuration") => {
            let mut s = st.lock().unwrap();
            if path.ends_with("oauth-authorization-server") && !s.sw.rfc8414 {
                drop(s);
                return conn.respond(404, &[CLOSE], b"not found\n");
            }
            s.counts.metadata_fetches += 1;
            let m = metadata(&s);
            drop(s);
            conn.json(&[CLOSE], &m)
        }
        ("GET", "/jwks") => {
            let jwks = st.lock().unwrap().jwks.clone();
            conn.json(&[CLOSE], &json!({ "keys": jwks }))
        }
        ("POST", "/register") => register(st, req, conn),
        ("GET", "/authorize") => authorize(st, query, conn),
        ("POST", "/token") => token(st, req, conn),
        ("POST", "/revoke") => {
            let form = form_decode(&String::from_utf8_lossy(&req.body));
            let mut s = st.lock().unwrap();
            s.counts.revocations += 1;
            if let Some(t) = form.get("token") {
                s.refresh.remove(t);
                for i in s.issued.iter_mut().filter(|i| &i.token == t) {
                    i.revoked = true;
                }
            }
            drop(s);
            conn.respond(200, &[CLOSE], b"")
        }
        _ => conn.respond(404, &[CLOSE], b"not found\n"),
    }
}

fn metadata(s: &State) -> Value {
    let issuer = &s.issuer;
    let mut m = json!({
        "issuer": s.metadata_issuer.clone().unwrap_or_else(|| issuer.clone()),
        "jwks_uri": format!("{issuer}/jwks"),
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "code_challenge_methods_supported": if s.sw.s256 { json!(["S256"]) } else { json!(["plain"]) },
        "authorization_response_iss_parameter_supported": true,
    });
    if s.sw.registration {
        m["registration_endpoint"] = json!(format!("{issuer}/register"));
    }
    if s.sw.cimd {
        m["client_id_metadata_document_supported"] = json!(true);
    }
    if !s.sw.grantable.is_empty() {
        m["scopes_supported"] = json!(s.sw.grantable);
    }
    m
}

fn oauth_error(conn: &mut Conn, status: u16, error: &str, desc: &str) -> After {
    let body = json!({"error": error, "error_description": desc});
    conn.respond(
        status,
        &[
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
            CLOSE,
        ],
        body.to_string().as_bytes(),
    )
}

fn register(st: &Mutex<State>, req: &Req, conn: &mut Conn) -> After {
    let mut s = st.lock().unwrap();
    if !s.sw.registration {
        drop(s);
        return conn.respond(404, &[CLOSE], b"not found\n");
    }
    let body = req.json();
    let uris: Vec<String> = body["redirect_uris"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if uris.is_empty() {
        drop(s);
        return oauth_error(conn, 400, "invalid_redirect_uri", "redirect_uris required");
    }
    let method = body["token_endpoint_auth_method"]
        .as_str()
        .unwrap_or("client_secret_basic")
        .to_owned();
    let id = s.fresh("client");
    let secret = (method != "none").then(|| s.fresh("secret"));
    s.counts.registrations += 1;
    s.clients.insert(
        id.clone(),
        Client {
            id: id.clone(),
            secret: secret.clone(),
            redirect_uris: uris.clone(),
            how: "dcr",
        },
    );
    drop(s);
    let mut out = body.clone();
    out["client_id"] = json!(id);
    out["client_id_issued_at"] = json!(unix_now());
    out["token_endpoint_auth_method"] = json!(method);
    if let Some(sec) = secret {
        out["client_secret"] = json!(sec);
        out["client_secret_expires_at"] = json!(0);
    }
    conn.respond(
        201,
        &[("content-type", "application/json"), CLOSE],
        out.to_string().as_bytes(),
    )
}

/// Is `uri` one of `registered`? Exact, or a port-less loopback URI that
/// matches on any port.
fn redirect_ok(registered: &[String], uri: &str) -> bool {
    registered.iter().any(|r| {
        if r == uri {
            return true;
        }
        let Some(path) = r.strip_prefix("http://127.0.0.1/") else {
            return false;
        };
        let Some(rest) = uri.strip_prefix("http://127.0.0.1:") else {
            return false;
        };
        match rest.split_once('/') {
            Some((port, p)) => port.parse::<u16>().is_ok() && p == path,
            None => false,
        }
    })
}

/// The client `id` names: known, or (CIMD on) fetched from its URL.
fn client_for(st: &Mutex<State>, id: &str) -> Option<Client> {
    let (cimd, allow_http) = {
        let s = st.lock().unwrap();
        if let Some(c) = s.clients.get(id) {
            return Some(c.clone());
        }
        (s.sw.cimd, s.sw.cimd_allow_http_loopback)
    };
    if !cimd {
        return None;
    }
    let rest = id
        .strip_prefix("http://127.0.0.1:")
        .filter(|_| allow_http)?;
    let (port, path) = rest.split_once('/')?;
    let port: u16 = port.parse().ok()?;
    st.lock().unwrap().counts.cimd_fetches += 1;
    let doc = http_get(port, &format!("/{path}"))?;
    if doc["client_id"].as_str() != Some(id) {
        return None;
    }
    let uris = doc["redirect_uris"]
        .as_array()?
        .iter()
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect();
    let c = Client {
        id: id.into(),
        secret: None,
        redirect_uris: uris,
        how: "cimd",
    };
    st.lock().unwrap().clients.insert(id.into(), c.clone());
    Some(c)
}

/// A blocking GET of a JSON document on 127.0.0.1 (2 s at most).
fn http_get(port: u16, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    let head =
        format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut buf);
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    if !buf.starts_with(b"HTTP/1.1 200") && !buf.starts_with(b"HTTP/1.0 200") {
        return None;
    }
    serde_json::from_slice(&buf[end + 4..]).ok()
}

fn authorize(st: &Mutex<State>, query: &str, conn: &mut Conn) -> After {
    let q = form_decode(query);
    st.lock().unwrap().authorize_log.push(q.clone());
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let Some(client) = client_for(st, get("client_id")) else {
        return conn.respond(400, &[CLOSE], b"unknown client_id\n");
    };
    let redirect_uri = get("redirect_uri");
    if !redirect_ok(&client.redirect_uris, redirect_uri) {
        return conn.respond(400, &[CLOSE], b"redirect_uri not registered\n");
    }
    let mut s = st.lock().unwrap();
    let iss =
        s.sw.redirect_iss
            .clone()
            .unwrap_or_else(|| s.issuer.clone());
    let mut params = vec![("state", get("state").to_owned()), ("iss", iss)];
    let scope = if get("scope").is_empty() {
        s.sw.default_scope.clone()
    } else {
        get("scope").to_owned()
    };
    let error = if get("response_type") != "code" {
        Some("unsupported_response_type")
    } else if get("code_challenge_method") != "S256" || get("code_challenge").len() != 43 {
        Some("invalid_request")
    } else if s.sw.deny {
        Some("access_denied")
    } else if !grantable(&s.sw, &scope) {
        Some("invalid_scope")
    } else {
        None
    };
    match error {
        Some(e) => params.push(("error", e.to_owned())),
        None => {
            let code = s.fresh("code");
            s.codes.insert(
                code.clone(),
                Code {
                    client_id: client.id.clone(),
                    redirect_uri: redirect_uri.to_owned(),
                    challenge: get("code_challenge").to_owned(),
                    resource: q.get("resource").cloned(),
                    scope,
                },
            );
            s.counts.authorizations += 1;
            params.push(("code", code));
        }
    }
    drop(s);
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!("{redirect_uri}{sep}{}", form_encode(&params));
    conn.respond(302, &[("location", &location), CLOSE], b"")
}

fn grantable(sw: &Switches, scope: &str) -> bool {
    sw.grantable.is_empty()
        || scope
            .split(' ')
            .all(|x| sw.grantable.iter().any(|g| g == x))
}

fn token(st: &Mutex<State>, req: &Req, conn: &mut Conn) -> After {
    let mut form = form_decode(&String::from_utf8_lossy(&req.body));
    let delay = {
        let mut s = st.lock().unwrap();
        s.counts.token_requests += 1;
        s.token_log.push(form.clone());
        s.sw.token_delay
    };
    if !delay.is_zero() {
        thread::sleep(delay);
    }
    // client_secret_basic (ids and secrets here are URL-safe: no decoding).
    if let Some(basic) = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Basic "))
        && let Some(pair) = b64_decode_std(basic)
        && let Some((id, secret)) = pair.split_once(':')
    {
        form.insert("client_id".into(), id.into());
        form.insert("client_secret".into(), secret.into());
    }
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let client = st.lock().unwrap().clients.get(&get("client_id")).cloned();
    let Some(client) = client else {
        return oauth_error(conn, 401, "invalid_client", "unknown client");
    };
    if client.secret.is_some() && client.secret != form.get("client_secret").cloned() {
        return oauth_error(conn, 401, "invalid_client", "bad client secret");
    }
    let mut s = st.lock().unwrap();
    let (resource, scope) = match get("grant_type").as_str() {
        "authorization_code" => {
            let Some(code) = s.codes.remove(&get("code")) else {
                drop(s);
                return oauth_error(conn, 400, "invalid_grant", "unknown or used code");
            };
            let verifier = get("code_verifier");
            let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
            let problem = if code.client_id != client.id {
                Some("code issued to another client")
            } else if code.redirect_uri != get("redirect_uri") {
                Some("redirect_uri differs")
            } else if b64(digest.as_ref()) != code.challenge {
                Some("code_verifier does not match")
            } else if form.get("resource") != code.resource.as_ref() {
                Some("resource differs from the authorization request")
            } else {
                None
            };
            if let Some(p) = problem {
                drop(s);
                return oauth_error(conn, 400, "invalid_grant", p);
            }
            s.counts.code_exchanges += 1;
            (code.resource, code.scope)
        }
        "refresh_token" => {
            let rt = get("refresh_token");
            let ok = s.sw.refresh
                && s.refresh.get(&rt).is_some_and(|r| r.client_id == client.id)
                && form.get("resource").is_none_or(|r| {
                    s.refresh.get(&rt).and_then(|x| x.resource.as_ref()) == Some(r)
                });
            if !ok {
                s.counts.refresh_failures += 1;
                drop(s);
                return oauth_error(conn, 400, "invalid_grant", "refresh token invalid");
            }
            let Some(old) = s.refresh.remove(&rt) else {
                drop(s);
                return oauth_error(conn, 400, "invalid_grant", "refresh token invalid");
            };
            s.counts.refreshes += 1;
            (old.resource, old.scope)
        }
        "client_credentials" => {
            if client.secret.is_none() {
                drop(s);
                return oauth_error(conn, 401, "invalid_client", "a confidential client only");
            }
            let scope = form
                .get("scope")
                .cloned()
                .unwrap_or_else(|| s.sw.default_scope.clone());
            if !grantable(&s.sw, &scope) {
                drop(s);
                return oauth_error(conn, 400, "invalid_scope", "scope not grantable");
            }
            s.counts.client_credentials += 1;
            (form.get("resource").cloned(), scope)
        }
        _ => {
            drop(s);
            return oauth_error(conn, 400, "unsupported_grant_type", "unknown grant_type");
        }
    };
    let now = unix_now();
    let exp = now + s.sw.expires_in;
    let sub = format!("user-of-{}", client.id);
    let claims = json!({"iss": s.issuer, "aud": resource, "sub": sub, "scope": scope,
                        "client_id": client.id, "iat": now, "nbf": now - 5, "exp": exp,
                        "jti": s.fresh("jti")});
    let access = s.signer.sign(&claims);
    s.issued.push(Issued {
        token: access.clone(),
        client_id: client.id.clone(),
        resource: resource.clone(),
        scope: scope.clone(),
        exp,
        revoked: false,
    });
    let mut out = json!({"access_token": access, "token_type": "Bearer",
                         "expires_in": s.sw.expires_in, "scope": scope});
    if get("grant_type") != "client_credentials" {
        let rt = s.fresh("refresh");
        s.refresh.insert(
            rt.clone(),
            Refresh {
                client_id: client.id.clone(),
                resource,
                scope,
            },
        );
        out["refresh_token"] = json!(rt);
    }
    drop(s);
    conn.respond(
        200,
        &[
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
            CLOSE,
        ],
        out.to_string().as_bytes(),
    )
}

/// Standard base64 (padding optional) to a string.
fn b64_decode_std(s: &str) -> Option<String> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut bits, mut n, mut out) = (0u32, 0, Vec::new());
    for c in s.trim().bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | A.iter().position(|&b| b == c)? as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8(out).ok()
}

/// `application/x-www-form-urlencoded` (also a query string) to a map.
pub fn form_decode(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Form-encodes `pairs`.
pub fn form_encode(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", pct_encode(k), pct_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn pct_encode(s: &str) -> String {
    let mut out = String::new();
    for c in s.bytes() {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Follows an `/authorize` URL the way a browser whose user approves at
/// once would: GET it, take the 302 `Location`, GET that (the client's
/// callback). The callback's status, or an error.
pub fn follow(authorize_url: &str) -> Result<u16, String> {
    use super::loopback::{get_location, get_raw};
    let location = get_location(authorize_url)?;
    let (status, _) = get_raw(&location)?;
    Ok(status)
}

/// Claims of a valid access token for `sub` at `aud` from `iss`, valid for
/// five minutes, granting `scope`.
pub fn claims(iss: &str, aud: &str, sub: &str, scope: &str) -> Value {
    let now = unix_now();
    json!({"iss": iss, "aud": aud, "sub": sub, "scope": scope,
           "iat": now, "nbf": now - 5, "exp": now + 300,
           "jti": format!("{sub}-{now}-{}", rand_suffix())})
}

fn rand_suffix() -> u64 {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut b).expect("rng");
    u64::from_le_bytes(b)
}

// ---------------------------------------------------------------------------
// RFC 7662 token introspection (the protected resource's side of issue 14):
// an endpoint of its own, on a separate fake server, which the relay reaches
// with `--oauth-introspection-url`. Opaque tokens are registered by tests.
// ---------------------------------------------------------------------------

/// What the introspection endpoint knows and how it behaves.
struct IntroState {
    /// The relay's client credentials (HTTP Basic, RFC 6749 §2.3.1).
    client_id: String,
    secret: String,
    /// Opaque token → the claims answered with `active: true`.
    tokens: std::collections::HashMap<String, Value>,
    /// Answer 503 to everything (the endpoint is down).
    down: bool,
    /// Wait this long before answering.
    delay: std::time::Duration,
}

/// A test introspection endpoint: `POST /introspect`.
pub struct Introspection {
    pub fake: Fake,
    state: Arc<Mutex<IntroState>>,
}

/// Standard base64 with padding (HTTP Basic).
pub fn b64_std(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The fields of a form body.
pub fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

impl Introspection {
    /// Serves `POST /introspect` to a client authenticating as
    /// `client_id`/`secret`; every token is inactive until [`grant`]ed.
    pub fn start(client_id: &str, secret: &str) -> Introspection {
        let state = Arc::new(Mutex::new(IntroState {
            client_id: client_id.into(),
            secret: secret.into(),
            tokens: std::collections::HashMap::new(),
            down: false,
            delay: std::time::Duration::ZERO,
        }));
        let st = state.clone();
        let fake = Fake::start(handler(move |req, conn| {
            if (req.method.as_str(), req.target.as_str()) != ("POST", "/introspect") {
                return conn.respond(404, &[], b"not found\n");
            }
            let (expected, down, delay, tokens) = {
                let s = st.lock().unwrap();
                (
                    format!(
                        "Basic {}",
                        // RFC 6749 §2.3.1: each form-encoded, then base64.
                        b64_std(
                            format!("{}:{}", pct_encode(&s.client_id), pct_encode(&s.secret))
                                .as_bytes()
                        )
                    ),
                    s.down,
                    s.delay,
                    s.tokens.clone(),
                )
            };
            if !delay.is_zero() && !conn.wait(delay) {
                return super::fake::After::Close;
            }
            if down {
                return conn.respond(503, &[], b"down\n");
            }
            if req.header("authorization") != Some(expected.as_str()) {
                return conn.respond(
                    401,
                    &[("content-type", "application/json")],
                    br#"{"error":"invalid_client"}"#,
                );
            }
            let fields = form_fields(&req.body);
            let token = fields
                .iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.clone());
            let answer = match token.and_then(|t| tokens.get(&t).cloned()) {
                Some(Value::Object(mut claims)) => {
                    claims.insert("active".into(), Value::Bool(true));
                    Value::Object(claims)
                }
                _ => json!({"active": false}),
            };
            conn.json(&[], &answer)
        }));
        Introspection { fake, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/introspect", self.fake.port())
    }

    /// `token` is active with these claims (`iss`, `aud`, `sub`, …).
    pub fn grant(&self, token: &str, claims: Value) {
        self.state
            .lock()
            .unwrap()
            .tokens
            .insert(token.into(), claims);
    }

    /// `token` is inactive from now on.
    pub fn revoke(&self, token: &str) {
        self.state.lock().unwrap().tokens.remove(token);
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    pub fn set_delay(&self, d: std::time::Duration) {
        self.state.lock().unwrap().delay = d;
    }

    /// Introspection requests received, for `token` (None: any).
    pub fn calls(&self, token: Option<&str>) -> usize {
        self.fake
            .seen()
            .iter()
            .filter(|r| r.target == "/introspect")
            .filter(|r| {
                token.is_none_or(|t| {
                    form_fields(&r.body)
                        .iter()
                        .any(|(k, v)| k == "token" && v == t)
                })
            })
            .count()
    }
}
