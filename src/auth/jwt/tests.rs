//! Tokens minted with the test keys under tests/data/oauth and checked
//! against every rule of `Policy::check`.

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

use super::*;
use crate::auth::jwk::{Material, parse_key};

const RSA1: &[u8] = include_bytes!("../../../tests/data/oauth/rsa1.pk8");
const RSA2: &[u8] = include_bytes!("../../../tests/data/oauth/rsa2.pk8");
const EC1: &[u8] = include_bytes!("../../../tests/data/oauth/ec1.pk8");

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://as.example";
const AUD: &str = "https://relay.example/mcp";

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

fn rsa(der: &[u8]) -> Signer {
    Signer::Rsa(RsaKeyPair::from_pkcs8(der).unwrap())
}

fn ec(der: &[u8]) -> Signer {
    let rng = SystemRandom::new();
    Signer::Ec(
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng).unwrap(),
    )
}

impl Signer {
    fn jwk(&self, kid: &str) -> Key {
        let v = match self {
            Signer::Rsa(k) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({"kty": "RSA", "kid": kid, "n": b64::encode(&c.n), "e": b64::encode(&c.e)})
            }
            Signer::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": kid,
                       "x": b64::encode(&p[1..33]), "y": b64::encode(&p[33..65])})
            }
        };
        parse_key(&v).unwrap()
    }

    fn alg(&self) -> &'static str {
        match self {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
        }
    }

    fn mint(&self, header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            b64::encode(header.to_string().as_bytes()),
            b64::encode(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match self {
            Signer::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                sig
            }
            Signer::Ec(k) => k.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
        };
        format!("{input}.{}", b64::encode(&sig))
    }

    fn token(&self, kid: &str, claims: Value) -> String {
        self.mint(
            json!({"alg": self.alg(), "kid": kid, "typ": "at+jwt"}),
            claims,
        )
    }
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": NOW + 300, "nbf": NOW - 10,
           "iat": NOW - 10, "scope": "mcp:read mcp:write"})
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn policy(scopes: &[&str]) -> Policy {
    Policy {
        issuer: ISS.into(),
        audience: AUD.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        skew: 60,
    }
}

fn decide(p: &Policy, key: &Key, token: &str, now: u64) -> Decision {
    match parse(token) {
        Ok(t) => p.check(&t, key, now),
        Err(r) => Decision::Invalid(r),
    }
}

#[test]
fn valid_rs256_and_es256_tokens_pass_with_subject_and_scopes() {
    for s in [rsa(RSA1), ec(EC1)] {
        let key = s.jwk("k1");
        let t = s.token("k1", claims());
        let d = decide(&policy(&["mcp:read"]), &key, &t, NOW);
        assert_eq!(
            d,
            Decision::Valid {
                subject: "alice".into(),
                scopes: vec!["mcp:read".into(), "mcp:write".into()]
            }
        );
        let parsed = parse(&t).unwrap();
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
    }
}

#[test]
fn the_signature_binds_key_and_content() {
    let s = rsa(RSA1);
    let other = rsa(RSA2).jwk("k1");
    let t = s.token("k1", claims());
    let p = policy(&[]);
    assert_eq!(
        decide(&p, &other, &t, NOW),
        Decision::Invalid(Reason::BadSignature)
    );
    // Payload swapped after signing.
    let parts: Vec<&str> = t.split('.').collect();
    let forged = with(claims(), "sub", json!("mallory"));
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64::encode(forged.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(
        decide(&p, &s.jwk("k1"), &tampered, NOW),
        Decision::Invalid(Reason::BadSignature)
    );
    // An ES256 header over an RSA key: refused whatever the signature.
    let e = ec(EC1);
    let t = e.token("k1", claims());
    assert_eq!(
        decide(&p, &s.jwk("k1"), &t, NOW),
        Decision::Invalid(Reason::UnsupportedAlg)
    );
}

#[test]
fn issuer_audience_and_subject_are_checked() {
    let s = ec(EC1);
    let key = s.jwk("k");
    let p = policy(&[]);
    let d = |c: Value| decide(&p, &key, &s.token("k", c), NOW);
    assert_eq!(
        d(with(claims(), "iss", json!("https://evil.example"))),
        Decision::Invalid(Reason::WrongIssuer)
    );
    assert_eq!(
        d(with(claims(), "aud", json!("https://other.example/mcp"))),
        Decision::Invalid(Reason::WrongAudience)
    );
    assert_eq!(
        d(with(claims(), "aud", json!(["x", AUD]))),
        Decision::Valid {
            subject: "alice".into(),
            scopes: vec!["mcp:read".into(), "mcp:write".into()]
        }
    );
    assert_eq!(
        d(with(claims(), "aud", json!(["x", "y"]))),
        Decision::Invalid(Reason::WrongAudience)
    );
    assert_eq!(
        d(with(claims(), "aud", json!(7))),
        Decision::Invalid(Reason::WrongAudience)
    );
    assert_eq!(
        d(with(claims(), "sub", json!(""))),
        Decision::Invalid(Reason::NoSubject)
    );
    assert_eq!(
        d(with(claims(), "sub", json!(3))),
        Decision::Invalid(Reason::NoSubject)
    );
}

#[test]
fn exp_and_nbf_with_the_skew() {
    let s = ec(EC1);
    let key = s.jwk("k");
    let p = policy(&[]);
    let at = |c: Value, now: u64| decide(&p, &key, &s.token("k", c), now);
    let exp = with(claims(), "exp", json!(NOW));
    assert!(
        matches!(at(exp.clone(), NOW + 59), Decision::Valid { .. }),
        "within skew"
    );
    assert_eq!(
        at(exp.clone(), NOW + 60),
        Decision::Invalid(Reason::Expired)
    );
    let nbf = with(claims(), "nbf", json!(NOW + 100));
    assert_eq!(at(nbf.clone(), NOW), Decision::Invalid(Reason::NotYetValid));
    assert!(
        matches!(at(nbf, NOW + 40), Decision::Valid { .. }),
        "within skew"
    );
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(at(no_exp, NOW), Decision::Invalid(Reason::Malformed));
    assert_eq!(
        at(with(claims(), "exp", json!("soon")), NOW),
        Decision::Invalid(Reason::Malformed)
    );
}

#[test]
fn scopes_from_scope_or_scp() {
    let s = rsa(RSA1);
    let key = s.jwk("k");
    let d = |p: &Policy, c: Value| decide(p, &key, &s.token("k", c), NOW);
    let need = policy(&["mcp:read", "mcp:admin"]);
    assert_eq!(d(&need, claims()), Decision::InsufficientScope);
    assert!(matches!(
        d(&need, with(claims(), "scope", json!("mcp:admin  mcp:read"))),
        Decision::Valid { .. }
    ));
    let mut scp = claims();
    scp.as_object_mut().unwrap().remove("scope");
    scp["scp"] = json!(["mcp:read", "mcp:admin"]);
    assert!(matches!(d(&need, scp), Decision::Valid { .. }));
    let mut none = claims();
    none.as_object_mut().unwrap().remove("scope");
    assert_eq!(
        d(&policy(&["mcp:read"]), none.clone()),
        Decision::InsufficientScope
    );
    assert!(matches!(d(&policy(&[]), none), Decision::Valid { .. }));
}

#[test]
fn malformed_tokens_are_refused_without_panicking() {
    let s = ec(EC1);
    let key = s.jwk("k");
    let p = policy(&[]);
    let good = s.token("k", claims());
    let enc = |v: &str| b64::encode(v.as_bytes());
    let cases: Vec<(String, Reason)> = vec![
        (String::new(), Reason::Malformed),
        ("a.b".into(), Reason::Malformed),
        ("a.b.c.d".into(), Reason::Malformed),
        (format!("{good}."), Reason::Malformed),
        ("!!.!!.!!".into(), Reason::Malformed),
        (
            format!("{}.{}.", enc("{\"alg\":\"none\"}"), enc("{}")),
            Reason::UnsupportedAlg,
        ),
        (
            format!("{}.{}.AA", enc("{\"alg\":\"HS256\"}"), enc("{}")),
            Reason::UnsupportedAlg,
        ),
        (
            format!(
                "{}.{}.AA",
                enc("{\"alg\":\"ES256\",\"crit\":[\"x\"]}"),
                enc("{}")
            ),
            Reason::UnsupportedAlg,
        ),
        (format!("{}.{}.AA", enc("[]"), enc("{}")), Reason::Malformed),
        (
            format!("{}.{}.AA", enc("{\"alg\":\"ES256\",\"kid\":1}"), enc("{}")),
            Reason::Malformed,
        ),
        (
            format!("{}.{}.AA", enc("{\"alg\":\"ES256\"}"), enc("[1]")),
            Reason::Malformed,
        ),
        ("x".repeat(MAX_TOKEN + 1), Reason::TooLong),
    ];
    for (t, want) in cases {
        assert_eq!(
            decide(&p, &key, &t, NOW),
            Decision::Invalid(want),
            "{t:.60}"
        );
    }
    // A valid header with a garbage signature length.
    let parts: Vec<&str> = good.split('.').collect();
    let short = format!("{}.{}.{}", parts[0], parts[1], enc("short"));
    assert_eq!(
        decide(&p, &key, &short, NOW),
        Decision::Invalid(Reason::BadSignature)
    );
    assert!(matches!(key.material, Material::P256 { .. }));
}
