//! JWT access tokens (RFC 7519, JWS compact form, RFC 9068 profile):
//! parsing, signature verification with a key the caller found, and the
//! claims checks of a protected resource. Sans-I/O: the time is given.

use serde_json::Value;

use super::b64;
use super::jwk::{Alg, Key, KeySet};

/// Longest token accepted, in bytes; longer is `Invalid(TooLong)`.
pub const MAX_TOKEN: usize = 8 << 10;

/// Why a token is refused with 401 `invalid_token`. Also the `reason`
/// label of `mcp_relay_oauth_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Missing,
    TooLong,
    Malformed,
    UnsupportedAlg,
    UnknownKey,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    Expired,
    NotYetValid,
    NoSubject,
    /// Introspection (RFC 7662) answered `active: false`.
    Inactive,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::TooLong => "too_long",
            Reason::Malformed => "malformed",
            Reason::UnsupportedAlg => "unsupported_alg",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::WrongAudience => "wrong_audience",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::NoSubject => "no_subject",
            Reason::Inactive => "inactive",
        }
    }

    /// The `error_description` sent with 401 (no token content in it).
    pub fn description(self) -> &'static str {
        match self {
            Reason::Missing => "no bearer token",
            Reason::TooLong => "token too long",
            Reason::Malformed => "not a JWT",
            Reason::UnsupportedAlg => "unsupported signature algorithm",
            Reason::UnknownKey => "unknown signing key",
            Reason::BadSignature => "bad signature",
            Reason::WrongIssuer => "wrong issuer",
            Reason::WrongAudience => "token not for this resource",
            Reason::Expired => "token expired",
            Reason::NotYetValid => "token not yet valid",
            Reason::NoSubject => "token has no subject",
            Reason::Inactive => "token not active",
        }
    }
}

/// A token split and decoded, not yet verified.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub alg: Alg,
    pub kid: Option<String>,
    /// `header.payload`, the bytes the signature covers.
    signing_input: &'a [u8],
    signature: Vec<u8>,
    claims: serde_json::Map<String, Value>,
}

/// Splits and decodes a compact JWS. Only RS256 and ES256 are accepted;
/// `none`, HMAC and the rest are `UnsupportedAlg`.
pub fn parse(token: &str) -> Result<Parsed<'_>, Reason> {
    if token.len() > MAX_TOKEN {
        return Err(Reason::TooLong);
    }
    let bytes = token.as_bytes();
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::Malformed);
    };
    let header: Value = b64::decode(h.as_bytes())
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or(Reason::Malformed)?;
    let header = header.as_object().ok_or(Reason::Malformed)?;
    // A critical extension the relay does not know must be refused (RFC 7515 §4.1.11).
    if header.contains_key("crit") {
        return Err(Reason::UnsupportedAlg);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::from_name)
        .ok_or(Reason::UnsupportedAlg)?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(Reason::Malformed),
    };
    let claims: Value = b64::decode(p.as_bytes())
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or(Reason::Malformed)?;
    let Value::Object(claims) = claims else {
        return Err(Reason::Malformed);
    };
    let signature = b64::decode(s.as_bytes()).ok_or(Reason::Malformed)?;
    Ok(Parsed {
        alg,
        kid,
        signing_input: &bytes[..h.len() + 1 + p.len()],
        signature,
        claims,
    })
}

/// What a protected resource requires of a token.
#[derive(Debug, Clone)]
pub struct Policy {
    pub issuer: String,
    pub audience: String,
    /// Every one must be granted.
    pub scopes: Vec<String>,
    /// Tolerance on `exp` and `nbf`, in seconds.
    pub skew: u64,
}

/// Whose claims are checked: a signed JWT's (RFC 9068: `iss` and `exp`
/// required) or an introspection answer's (RFC 7662: both optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Jwt,
    Introspection,
}

/// The verdict on a request's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Valid {
        subject: String,
        scopes: Vec<String>,
    },
    /// 401 `invalid_token`.
    Invalid(Reason),
    /// 403 `insufficient_scope`.
    InsufficientScope,
}

fn number(claims: &serde_json::Map<String, Value>, name: &str) -> Result<Option<f64>, Reason> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or(Reason::Malformed),
    }
}

/// `scope` (space-separated string, RFC 9068/8693) or `scp` (array of
/// strings, as some servers send).
fn granted(claims: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(s) = claims.get("scope").and_then(Value::as_str) {
        out.extend(s.split(' ').filter(|s| !s.is_empty()).map(str::to_string));
    }
    match claims.get("scp") {
        Some(Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str).map(str::to_string)),
        Some(Value::String(s)) => {
            out.extend(s.split(' ').filter(|s| !s.is_empty()).map(str::to_string))
        }
        _ => {}
    }
    out
}

impl Policy {
    /// Verifies `token`'s signature with `key` and checks its claims at
    /// `now` (seconds since the Unix epoch).
    pub fn check(&self, token: &Parsed<'_>, key: &Key, now: u64) -> Decision {
        if key.alg() != token.alg {
            return Decision::Invalid(Reason::UnsupportedAlg);
        }
        if !key.verify(token.signing_input, &token.signature) {
            return Decision::Invalid(Reason::BadSignature);
        }
        match self.claims(&token.claims, now, Profile::Jwt) {
            Ok(d) => d,
            Err(r) => Decision::Invalid(r),
        }
    }

    /// The claims rules of `profile` on `c` at `now` (Unix seconds).
    pub fn claims(
        &self,
        c: &serde_json::Map<String, Value>,
        now: u64,
        profile: Profile,
    ) -> Result<Decision, Reason> {
        let jwt = profile == Profile::Jwt;
        match c.get("iss") {
            // An introspection answer comes from the issuer's own endpoint,
            // which the relay authenticated to: `iss` may be left out.
            None if !jwt => {}
            Some(Value::String(i)) if *i == self.issuer => {}
            _ => return Err(Reason::WrongIssuer),
        }
        let for_us = match c.get("aud") {
            Some(Value::String(a)) => *a == self.audience,
            Some(Value::Array(list)) => list
                .iter()
                .any(|a| a.as_str() == Some(self.audience.as_str())),
            _ => false,
        };
        if !for_us {
            return Err(Reason::WrongAudience);
        }
        let now = now as f64;
        let skew = self.skew as f64;
        // RFC 9068 §2.2: exp is required of a JWT access token; RFC 7662
        // makes it optional in an introspection answer.
        match number(c, "exp")? {
            Some(exp) if now >= exp + skew => return Err(Reason::Expired),
            Some(_) => {}
            None if jwt => return Err(Reason::Malformed),
            None => {}
        }
        if let Some(nbf) = number(c, "nbf")?
            && now + skew < nbf
        {
            return Err(Reason::NotYetValid);
        }
        let subject = match c.get("sub").and_then(Value::as_str) {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => return Err(Reason::NoSubject),
        };
        let scopes = granted(c);
        if !self.scopes.iter().all(|need| scopes.contains(need)) {
            return Ok(Decision::InsufficientScope);
        }
        Ok(Decision::Valid { subject, scopes })
    }
}

/// Where a token's key stands in a key set.
pub fn key_for<'k>(keys: &'k KeySet, token: &Parsed<'_>) -> Option<&'k Key> {
    keys.find(token.kid.as_deref(), token.alg)
}

#[cfg(test)]
mod tests;
