//! JSON Web Keys (RFC 7517) as the relay uses them: signature keys of an
//! authorization server, RSA (`n`, `e`) for RS256 and EC P-256 (`x`, `y`)
//! for ES256, turned into what ring verifies with.

use serde_json::Value;

use super::b64;

/// Keys kept from one JWKS document; the rest are skipped (and counted).
pub const MAX_KEYS: usize = 64;

/// A signature algorithm the relay verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    pub fn from_name(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }
}

/// Public key material, ready for ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    /// Big-endian modulus and exponent, without leading zero bytes.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed SEC1 point: 0x04 ‖ x ‖ y.
    P256 { point: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub kid: Option<String>,
    pub material: Material,
}

impl Key {
    /// The algorithm this key verifies: fixed by its type (an RSA key is
    /// never used for ES256 and the reverse, whatever a token's header says).
    pub fn alg(&self) -> Alg {
        match self.material {
            Material::Rsa { .. } => Alg::Rs256,
            Material::P256 { .. } => Alg::Es256,
        }
    }

    /// Checks `sig` over `msg` with this key.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        use ring::signature;
        match &self.material {
            Material::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                .is_ok(),
            Material::P256 { point } => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(msg, sig)
                    .is_ok()
            }
        }
    }
}

/// The keys of a JWKS document, and how many entries were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    pub keys: Vec<Key>,
    pub skipped: usize,
}

impl KeySet {
    /// The key a token names. A token without `kid` matches only when the
    /// set has exactly one key of its algorithm (RFC 7515 leaves the choice
    /// to the verifier; guessing among several would invite confusion).
    pub fn find(&self, kid: Option<&str>, alg: Alg) -> Option<&Key> {
        match kid {
            Some(k) => self
                .keys
                .iter()
                .find(|key| key.kid.as_deref() == Some(k) && key.alg() == alg),
            None => {
                let mut of_alg = self.keys.iter().filter(|key| key.alg() == alg);
                let first = of_alg.next()?;
                of_alg.next().is_none().then_some(first)
            }
        }
    }
}

fn b64_field(obj: &serde_json::Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let s = obj
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no {name:?}"))?;
    b64::decode(s.as_bytes()).ok_or_else(|| format!("{name:?} is not base64url"))
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let lead = v.iter().take_while(|b| **b == 0).count();
    v.drain(..lead);
    v
}

/// One JWK, or why it is not usable for verifying RS256/ES256.
pub fn parse_key(v: &Value) -> Result<Key, String> {
    let obj = v.as_object().ok_or("not an object")?;
    if let Some(u) = obj.get("use")
        && u.as_str() != Some("sig")
    {
        return Err("not a signature key (use)".into());
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Err("not a verification key (key_ops)".into());
        }
    }
    let kid = match obj.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("kid is not a string".into()),
    };
    let declared = match obj.get("alg") {
        None => None,
        Some(a) => Some(
            a.as_str()
                .and_then(Alg::from_name)
                .ok_or("unsupported alg")?,
        ),
    };
    let material = match obj.get("kty").and_then(Value::as_str) {
        Some("RSA") => {
            let n = strip_zeros(b64_field(obj, "n")?);
            let e = strip_zeros(b64_field(obj, "e")?);
            // ring refuses under 2048 bits and over 8192 at verification;
            // refuse here too so a useless key is reported once, at load.
            if n.len() < 256 || n.len() > 1024 || e.is_empty() || e.len() > 8 {
                return Err("RSA key size out of range".into());
            }
            Material::Rsa { n, e }
        }
        Some("EC") => {
            if obj.get("crv").and_then(Value::as_str) != Some("P-256") {
                return Err("unsupported curve".into());
            }
            let x = b64_field(obj, "x")?;
            let y = b64_field(obj, "y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes".into());
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Material::P256 { point }
        }
        _ => return Err("unsupported kty".into()),
    };
    let key = Key { kid, material };
    if declared.is_some_and(|a| a != key.alg()) {
        return Err("alg does not match the key type".into());
    }
    Ok(key)
}

/// A JWKS document (`{"keys": [...]}`): the usable keys, at most
/// [`MAX_KEYS`]. An error only when the document itself is unusable.
pub fn parse_set(body: &[u8]) -> Result<KeySet, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    let mut set = KeySet::default();
    for k in keys {
        match parse_key(k) {
            Ok(key) if set.keys.len() < MAX_KEYS => set.keys.push(key),
            Ok(_) => set.skipped += 1,
            Err(why) => {
                set.skipped += 1;
                crate::log_debug!("JWKS: key skipped: {why}");
            }
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ec_jwk(kid: &str) -> Value {
        json!({"kty": "EC", "crv": "P-256", "kid": kid,
               "x": b64::encode(&[1; 32]), "y": b64::encode(&[2; 32])})
    }

    #[test]
    fn rsa_and_ec_keys_parse_and_junk_is_skipped() {
        let n = {
            let mut n = vec![0u8];
            n.extend(std::iter::repeat_n(0xc5, 256));
            n
        };
        let doc = json!({"keys": [
            {"kty": "RSA", "kid": "r1", "n": b64::encode(&n), "e": "AQAB", "alg": "RS256", "use": "sig"},
            ec_jwk("e1"),
            {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "oct", "k": "AA"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": b64::encode(&n), "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "kid": "mismatch", "alg": "RS256",
             "x": b64::encode(&[1; 32]), "y": b64::encode(&[2; 32])},
            {"kty": "EC", "crv": "P-256", "kid": "short", "x": "AAAA", "y": "AAAA"},
            {"kty": "EC", "crv": "P-256", "kid": 7, "x": b64::encode(&[1; 32]), "y": b64::encode(&[2; 32])},
            "not an object"
        ]});
        let set = parse_set(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 2);
        assert_eq!(set.skipped, 8);
        let Material::Rsa { n: kn, e } = &set.keys[0].material else {
            panic!("not RSA");
        };
        assert_eq!(kn.len(), 256, "leading zero stripped");
        assert_eq!(e, &[1, 0, 1]);
        let Material::P256 { point } = &set.keys[1].material else {
            panic!("not EC");
        };
        assert_eq!(point.len(), 65);
        assert_eq!(point[0], 4);
        assert!(set.find(Some("r1"), Alg::Rs256).is_some());
        assert!(
            set.find(Some("r1"), Alg::Es256).is_none(),
            "alg bound to key type"
        );
        assert!(set.find(Some("nope"), Alg::Rs256).is_none());
        assert!(set.find(None, Alg::Es256).is_some(), "the only EC key");
    }

    #[test]
    fn no_kid_is_ambiguous_with_two_keys_of_the_alg() {
        let doc = json!({"keys": [ec_jwk("a"), ec_jwk("b")]});
        let set = parse_set(doc.to_string().as_bytes()).unwrap();
        assert!(set.find(None, Alg::Es256).is_none());
        assert!(set.find(Some("b"), Alg::Es256).is_some());
    }

    #[test]
    fn documents_without_keys_are_errors_and_the_count_is_capped() {
        assert!(parse_set(b"{}").is_err());
        assert!(parse_set(b"[").is_err());
        assert!(parse_set(b"{\"keys\": {}}").is_err());
        let many: Vec<Value> = (0..MAX_KEYS + 5).map(|i| ec_jwk(&i.to_string())).collect();
        let set = parse_set(json!({ "keys": many }).to_string().as_bytes()).unwrap();
        assert_eq!(set.keys.len(), MAX_KEYS);
        assert_eq!(set.skipped, 5);
    }
}
