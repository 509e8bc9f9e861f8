//! `application/x-www-form-urlencoded` (RFC 6749 forms and query strings)
//! and the `client_secret_basic` credentials built from it: shared by the
//! OAuth client (`client/`) and introspection (`introspect.rs`).

/// One value, form-encoded: unreserved bytes as they are, every other byte
/// `%XX`.
pub fn value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    pct_encode(s, &mut out);
    out
}

/// `Authorization` value of `client_secret_basic` (RFC 6749 §2.3.1: id
/// and secret form-encoded, then standard base64).
pub fn basic_credentials(client_id: &str, secret: &str) -> String {
    let pair = format!("{}:{}", value(client_id), value(secret));
    format!("Basic {}", super::b64::encode_std(pair.as_bytes()))
}

/// `application/x-www-form-urlencoded` of `pairs` (also a query string).
pub fn encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        pct_encode(k, &mut out);
        out.push('=');
        pct_encode(v, &mut out);
    }
    out
}

fn pct_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// Decodes a query string or form body into pairs; `None` for invalid
/// percent escapes or UTF-8.
pub fn decode(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((pct_decode(k)?, pct_decode(v)?));
    }
    Some(out)
}

fn pct_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}
