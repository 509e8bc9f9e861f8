//! A test OAuth authorization server (issue 14), on the [`Fake`] HTTP
//! server: RFC 8414 metadata and a JWKS whose keys a test can rotate, and
//! access tokens minted here with the test keys under tests/data/oauth
//! (signed with ring: RS256 with an `RsaKeyPair`, ES256 with an
//! `EcdsaKeyPair`).

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

use super::fake::{Fake, handler};

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

struct State {
    issuer: String,
    /// What the metadata says its issuer is (a mismatch test sets another).
    metadata_issuer: Option<String>,
    jwks: Vec<Value>,
}

/// The test authorization server.
pub struct AuthServer {
    pub fake: Fake,
    state: Arc<Mutex<State>>,
}

impl AuthServer {
    /// Serves `/.well-known/oauth-authorization-server` and `/jwks` with
    /// `keys` published.
    pub fn start(keys: &[&TestKey]) -> AuthServer {
        let state = Arc::new(Mutex::new(State {
            issuer: String::new(),
            metadata_issuer: None,
            jwks: keys.iter().map(|k| k.jwk()).collect(),
        }));
        let st = state.clone();
        let fake = Fake::start(handler(move |req, conn| {
            let (issuer, meta_issuer, jwks) = {
                let s = st.lock().unwrap();
                (
                    s.issuer.clone(),
                    s.metadata_issuer
                        .clone()
                        .unwrap_or_else(|| s.issuer.clone()),
                    s.jwks.clone(),
                )
            };
            match (req.method.as_str(), req.target.as_str()) {
                ("GET", "/.well-known/oauth-authorization-server") => conn.json(
                    &[],
                    &json!({
                        "issuer": meta_issuer,
                        "jwks_uri": format!("{issuer}/jwks"),
                        "authorization_endpoint": format!("{issuer}/authorize"),
                        "token_endpoint": format!("{issuer}/token"),
                        "response_types_supported": ["code"],
                        "code_challenge_methods_supported": ["S256"],
                    }),
                ),
                ("GET", "/jwks") => conn.json(&[], &json!({ "keys": jwks })),
                _ => conn.respond(404, &[], b"not found\n"),
            }
        }));
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

    /// JWKS requests received so far.
    pub fn jwks_fetches(&self) -> usize {
        self.fake
            .seen()
            .iter()
            .filter(|r| r.target == "/jwks")
            .count()
    }
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
