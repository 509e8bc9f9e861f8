//! Upstream URLs: `http://host[:port]/path` and `https://…`. Only what the
//! relay needs: scheme, host, port, the request target, and the `Host`
//! header value that matches the upstream (Python SDK servers reject a
//! mismatched `Host` on loopback with 421).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, at least "/".
    pub target: String,
    /// Value for the `Host` header: host, plus the port when it is not the
    /// scheme's default, IPv6 literals bracketed.
    pub host_header: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "{s:?}: only http:// and https:// URLs are supported"
            ));
        };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(format!(
                "{s:?}: credentials in URLs are not supported; use --header"
            ));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6
                .find(']')
                .ok_or_else(|| format!("{s:?}: unclosed IPv6 literal"))?;
            let host = &v6[..end];
            let port = match &v6[end + 1..] {
                "" => default_port,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| format!("{s:?}: bad port"))?,
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| format!("{s:?}: bad port {p:?}"))?,
                ),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        let shown = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let host_header = if port == default_port {
            shown
        } else {
            format!("{shown}:{port}")
        };
        Ok(Url {
            tls,
            host,
            port,
            target,
            host_header,
        })
    }

    /// Resolves a path the server gave (the legacy `endpoint` event) against
    /// this URL: absolute URLs on the same origin, or absolute paths.
    pub fn join(&self, reference: &str) -> Result<String, String> {
        if reference.starts_with("http://") || reference.starts_with("https://") {
            let other = Url::parse(reference)?;
            if other.host != self.host || other.port != self.port || other.tls != self.tls {
                return Err(format!("endpoint {reference:?} is on another origin"));
            }
            return Ok(other.target);
        }
        if reference.starts_with('/') {
            return Ok(reference.to_string());
        }
        // Relative to the directory of the current target.
        let base = self.target.split('?').next().unwrap_or("/");
        let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
        Ok(format!("{dir}{reference}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_parts_and_the_host_header() {
        let u = Url::parse("http://127.0.0.1:3001/mcp").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.target.as_str()),
            (false, "127.0.0.1", 3001, "/mcp")
        );
        assert_eq!(u.host_header, "127.0.0.1:3001");
        let u = Url::parse("https://example.com").unwrap();
        assert_eq!(
            (u.port, u.target.as_str(), u.host_header.as_str()),
            (443, "/", "example.com")
        );
        let u = Url::parse("http://[::1]:8080/x?y=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.target.as_str(), u.host_header.as_str()),
            ("::1", "/x?y=1", "[::1]:8080")
        );
        let u = Url::parse("http://h?q").unwrap();
        assert_eq!(u.target, "/?q");
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://:80/").is_err());
        assert!(Url::parse("http://h:x/").is_err());
        assert!(Url::parse("http://u:p@h/").is_err());
    }

    #[test]
    fn joins_legacy_endpoints() {
        let u = Url::parse("http://127.0.0.1:9/sse").unwrap();
        assert_eq!(
            u.join("/messages/?session_id=a").unwrap(),
            "/messages/?session_id=a"
        );
        assert_eq!(
            u.join("messages?session_id=a").unwrap(),
            "/messages?session_id=a"
        );
        assert_eq!(u.join("http://127.0.0.1:9/m?s=1").unwrap(), "/m?s=1");
        assert!(u.join("http://evil.example/m").is_err());
    }
}
