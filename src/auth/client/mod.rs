//! `forward --url` as an OAuth 2.1 client (issue 14): the pieces that
//! decide, without I/O. `flow.rs` is the authorization lifecycle (a state
//! machine taking responses and `now`, returning the next request or
//! decision), `store.rs` the token file per (issuer, resource) and its lock,
//! `wire.rs` the documents and forms exchanged, this file the small
//! helpers they share: `WWW-Authenticate` parsing, form
//! encoding, PKCE, the callback port, the browser command line.
//!
//! The forward front carries the decisions out
//! (`front/forward/http/oauth.rs`): fetches on an HTTP engine of its own,
//! the loopback callback listener in the loop's token space, the browser.

pub mod flow;
pub mod store;
pub mod wire;

pub use crate::auth::form::{decode as form_decode, encode as form_encode};
use std::path::PathBuf;

use ring::rand::{SecureRandom, SystemRandom};

use super::b64;

/// Which grant gets the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// A person approves in a browser (PKCE S256).
    AuthorizationCode,
    /// Machine to machine, with a pre-registered confidential client.
    ClientCredentials,
}

/// `forward --oauth` and its flags.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// `--oauth-browser`: the command, split like a shell word list; the
    /// URL is appended as its last argument.
    pub browser: Vec<String>,
    /// `--oauth-store`: where token files live.
    pub store_dir: Option<PathBuf>,
    /// `--oauth-client-id` (with `--oauth-client-secret-file`'s content).
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// `--oauth-client-metadata-url`: a Client ID Metadata Document.
    pub client_metadata_url: Option<String>,
    pub grant: Grant,
    /// `--oauth-scope`: asked for when the server's challenge names none.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for ClientOptions {
    // Never prints the client secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("browser", &self.browser)
            .field("store_dir", &self.store_dir)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("client_metadata_url", &self.client_metadata_url)
            .field("grant", &self.grant)
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            browser: vec!["xdg-open".into()],
            store_dir: None,
            client_id: None,
            client_secret: None,
            client_metadata_url: None,
            grant: Grant::AuthorizationCode,
            scopes: Vec::new(),
        }
    }
}

/// First port of the callback range; a server's port is derived into
/// `CALLBACK_BASE .. CALLBACK_BASE + CALLBACK_SPAN`.
pub const CALLBACK_BASE: u16 = 38_000;
pub const CALLBACK_SPAN: u16 = 2_000;

/// FNV-1a, 64 bits: stable across builds and versions (file names, ports).
pub fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The callback port derived from (issuer, resource), and the `n`th one
/// after it (wrapping in the range) when that one is taken.
pub fn callback_port(issuer: &str, resource: &str, n: u16) -> u16 {
    let first = (fnv64(&[issuer, resource]) % u64::from(CALLBACK_SPAN)) as u16;
    CALLBACK_BASE + (first + n) % CALLBACK_SPAN
}

/// The redirect URI of a callback port.
pub fn redirect_uri(port: u16) -> String {
    format!("http://127.0.0.1:{port}/callback")
}

/// What a 401 or 403 challenge says (RFC 6750 §3, RFC 9728 §5.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    pub resource_metadata: Option<String>,
    pub scope: Option<String>,
    pub error: Option<String>,
}

/// Parses the `Bearer` challenge of a `WWW-Authenticate` value; other
/// schemes' parameters are skipped. Never fails: what is unreadable is
/// left out.
pub fn parse_challenge(value: &str) -> Challenge {
    let mut out = Challenge::default();
    let mut rest = value.trim();
    let mut in_bearer = false;
    while !rest.is_empty() {
        // A scheme name, or a name=value parameter.
        let name_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        rest = rest[name_end..].trim_start();
        if let Some(r) = rest.strip_prefix('=') {
            let r = r.trim_start();
            let (val, after) = if let Some(q) = r.strip_prefix('"') {
                let mut v = String::new();
                let mut chars = q.char_indices();
                let mut end = q.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                v.push(n);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => v.push(c),
                    }
                }
                (v, &q[end.min(q.len())..])
            } else {
                let e = r.find(',').unwrap_or(r.len());
                (r[..e].trim().to_string(), &r[e..])
            };
            if in_bearer {
                match name.to_ascii_lowercase().as_str() {
                    "resource_metadata" => out.resource_metadata = Some(val),
                    "scope" => out.scope = Some(val),
                    "error" => out.error = Some(val),
                    _ => {}
                }
            }
            rest = after.trim_start().trim_start_matches(',').trim_start();
        } else {
            if !name.is_empty() {
                in_bearer = name.eq_ignore_ascii_case("bearer");
            }
            rest = rest.trim_start_matches(',').trim_start();
            if name.is_empty() && !rest.is_empty() {
                // Stray punctuation: skip one character.
                let mut cs = rest.chars();
                cs.next();
                rest = cs.as_str();
            }
        }
    }
    out
}

/// `n` random bytes as base64url (PKCE verifiers, `state`); `None` when
/// the system random number generator fails (a guessable verifier or
/// `state` would defeat their purpose: the flow fails instead).
pub fn random_b64(n: usize) -> Option<String> {
    let mut buf = vec![0u8; n];
    SystemRandom::new().fill(&mut buf).ok()?;
    Some(b64::encode(&buf))
}

/// The S256 challenge of a PKCE verifier (RFC 7636 §4.2).
pub fn s256(verifier: &str) -> String {
    b64::encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref())
}

/// Splits a command line like a shell word list: whitespace separates,
/// single quotes keep everything, double quotes keep all but `\"` and `\\`,
/// a backslash outside quotes escapes the next character.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    if words.is_empty() {
        return Err("empty command".into());
    }
    Ok(words)
}

/// A token for log lines: never the token itself.
pub fn redacted(token: &str) -> String {
    format!("[token: {} bytes]", token.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed() {
        let c = parse_challenge(
            r#"Bearer resource_metadata="https://r.example/.well-known/oauth-protected-resource/mcp", error="insufficient_scope", scope="a b""#,
        );
        assert_eq!(
            c.resource_metadata.as_deref(),
            Some("https://r.example/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(c.error.as_deref(), Some("insufficient_scope"));
        assert_eq!(c.scope.as_deref(), Some("a b"));
        let c = parse_challenge(r#"Basic realm="x", Bearer error=invalid_token, scope="q\"x""#);
        assert_eq!(c.error.as_deref(), Some("invalid_token"));
        assert_eq!(c.scope.as_deref(), Some("q\"x"));
        assert_eq!(c.resource_metadata, None);
        // Basic's parameters are not Bearer's.
        let c = parse_challenge(r#"Basic scope="no""#);
        assert_eq!(c.scope, None);
        for junk in [
            "",
            "Bearer",
            "Bearer =",
            "=\"",
            "Bearer a=\"unterminated",
            ",,,",
            "Bearer ,= ,",
        ] {
            let _ = parse_challenge(junk);
        }
    }

    #[test]
    fn forms_round_trip() {
        let s = form_encode(&[("a b", "c&d=e"), ("x", "http://h/p?q=1")]);
        assert_eq!(s, "a%20b=c%26d%3De&x=http%3A%2F%2Fh%2Fp%3Fq%3D1");
        let d = form_decode(&s).unwrap();
        assert_eq!(d[0], ("a b".into(), "c&d=e".into()));
        assert_eq!(d[1].1, "http://h/p?q=1");
        assert_eq!(form_decode("a=%zz"), None);
        assert_eq!(form_decode("a=%4"), None);
        assert_eq!(form_decode("a=%C3"), None);
        assert_eq!(form_decode("a+b=1").unwrap()[0].0, "a b");
    }

    #[test]
    fn callback_ports_are_stable_and_in_range() {
        let p = callback_port("https://as.example", "https://r.example/mcp", 0);
        assert_eq!(
            p,
            callback_port("https://as.example", "https://r.example/mcp", 0)
        );
        assert!((CALLBACK_BASE..CALLBACK_BASE + CALLBACK_SPAN).contains(&p));
        assert_ne!(
            p,
            callback_port("https://as.example", "https://other.example/mcp", 0)
        );
        let last = callback_port("i", "r", CALLBACK_SPAN - 1);
        assert!((CALLBACK_BASE..CALLBACK_BASE + CALLBACK_SPAN).contains(&last));
        assert_eq!(
            callback_port("i", "r", CALLBACK_SPAN),
            callback_port("i", "r", 0)
        );
    }

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(random_b64(32).map(|s| s.len()), Some(43));
    }

    #[test]
    fn browser_commands_split_like_a_shell() {
        assert_eq!(split_words("xdg-open").unwrap(), ["xdg-open"]);
        assert_eq!(
            split_words(r#"  firefox --new-window 'a b' "c \"d\"" e\ f "#).unwrap(),
            ["firefox", "--new-window", "a b", "c \"d\"", "e f"]
        );
        assert_eq!(split_words("''").unwrap(), [""]);
        assert!(split_words("").is_err());
        assert!(split_words("'open").is_err());
        assert!(split_words("\"open").is_err());
        assert!(split_words("open\\").is_err());
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let reg = wire::Registration {
            id: "client-1".into(),
            secret: Some("s3cret-reg".into()),
            kind: wire::ClientKind::Dynamic,
            redirect_uri: None,
        };
        let fetch = wire::Fetch {
            url: "https://as.example/token".into(),
            method: "POST",
            headers: vec![("authorization".into(), "Basic czNjcmV0LWhkcg==".into())],
            body: b"grant_type=refresh_token&refresh_token=s3cret-rt".to_vec(),
        };
        let opts = ClientOptions {
            client_secret: Some("s3cret-opt".into()),
            ..ClientOptions::default()
        };
        let text = format!("{reg:?} {fetch:?} {opts:?}");
        for secret in ["s3cret", "czNjcmV0"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(
            text.contains("client-1") && text.contains("as.example"),
            "{text}"
        );
    }
}
