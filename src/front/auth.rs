//! `mcp-relay auth status|logout URL` (issue 14): the stored authorization
//! of an upstream, shown or removed. Not the relay loop: a short command
//! that may block (a revocation request, 10 s at most).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::auth::client::form_encode;
use crate::auth::client::store::{Record, Store};
use crate::cli::{AuthAction, AuthCommand};
use crate::upstream::url::Url;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the command; the process exit status.
pub fn run(cmd: &AuthCommand) -> i32 {
    let Some(dir) = cmd.store_dir.clone().or_else(Store::default_dir) else {
        eprintln!("mcp-relay: no HOME or XDG_CONFIG_HOME: give --oauth-store DIR");
        return 2;
    };
    let store = Store::new(dir);
    let Some(rec) = store.find(&cmd.url) else {
        eprintln!(
            "mcp-relay: no stored authorization for {} in {}",
            cmd.url,
            store.dir().display()
        );
        return 1;
    };
    match cmd.action {
        AuthAction::Status => {
            print!("{}", status(&rec, &store));
            0
        }
        AuthAction::Logout => logout(&rec, &store, cmd),
    }
}

/// What `auth status` prints: never a token.
pub fn status(rec: &Record, store: &Store) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = format!(
        "url:       {}\nresource:  {}\nissuer:    {}\n",
        rec.url, rec.resource, rec.meta.issuer
    );
    match &rec.tokens {
        Some(t) => {
            out.push_str(&format!("scopes:    {}\n", t.scope));
            let exp = match t.expires_at {
                Some(e) if e > now => format!("{e} (in {}s)", e - now),
                Some(e) => format!("{e} (expired {}s ago)", now - e),
                None => "none given".into(),
            };
            out.push_str(&format!("expires:   {exp}\n"));
            out.push_str(&format!(
                "refresh:   {}\n",
                if t.refresh.is_some() { "yes" } else { "no" }
            ));
        }
        None => out.push_str("tokens:    none\n"),
    }
    if let Some(c) = &rec.reg {
        out.push_str(&format!("client:    {} ({:?})\n", c.id, c.kind));
    }
    if let Some(p) = rec.port {
        out.push_str(&format!("callback:  127.0.0.1:{p}\n"));
    }
    out.push_str(&format!(
        "file:      {}\n",
        store.path(&rec.meta.issuer, &rec.resource).display()
    ));
    out
}

fn logout(rec: &Record, store: &Store, cmd: &AuthCommand) -> i32 {
    let mut code = 0;
    if let (Some(endpoint), Some(t)) = (&rec.meta.revocation_endpoint, &rec.tokens) {
        let client = rec.reg.as_ref();
        // The refresh token first (RFC 7009 §2.1: revoking it may revoke the
        // access tokens with it), then the access token.
        let tokens = t
            .refresh
            .iter()
            .map(|r| (r.as_str(), "refresh_token"))
            .chain(std::iter::once((t.access.as_str(), "access_token")));
        for (token, hint) in tokens {
            let mut form = vec![("token", token), ("token_type_hint", hint)];
            if let Some(c) = client {
                form.push(("client_id", c.id.as_str()));
                if let Some(s) = &c.secret {
                    form.push(("client_secret", s.as_str()));
                }
            }
            match post_form(endpoint, &form_encode(&form), cmd) {
                Ok(200) => {}
                Ok(s) => {
                    eprintln!("mcp-relay: revoking the {hint} at {endpoint}: HTTP {s}");
                    code = 1;
                }
                Err(e) => {
                    eprintln!("mcp-relay: revoking the {hint} at {endpoint}: {e}");
                    code = 1;
                }
            }
        }
    }
    match store.remove(&rec.meta.issuer, &rec.resource) {
        Ok(()) => {
            eprintln!(
                "mcp-relay: logged out of {} ({})",
                rec.resource, rec.meta.issuer
            );
            code
        }
        Err(e) => {
            eprintln!("mcp-relay: removing the stored tokens: {e}");
            1
        }
    }
}

/// One blocking form POST (HTTP or HTTPS); the status.
fn post_form(url: &str, body: &str, cmd: &AuthCommand) -> Result<u16, String> {
    let u = Url::parse(url)?;
    let tcp = TcpStream::connect((u.host.as_str(), u.port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(IO_TIMEOUT)).ok();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).ok();
    let req = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-www-form-urlencoded\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        u.target,
        u.host_header,
        body.len()
    );
    let mut resp = Vec::new();
    if u.tls {
        let cfg = crate::io::transport::tls_config(cmd.ca_file.as_deref())?;
        let name =
            rustls::pki_types::ServerName::try_from(u.host.clone()).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let _ = s.take(64 << 10).read_to_end(&mut resp);
    } else {
        let mut s = tcp;
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let _ = s.take(64 << 10).read_to_end(&mut resp);
    }
    let text = String::from_utf8_lossy(&resp);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "no HTTP response".into())
}
