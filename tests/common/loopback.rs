//! A blocking HTTP GET to `http://127.0.0.1:PORT/…`, every read bounded
//! (5 s): what a browser does with an authorization URL. Shared by the test
//! authorization server (`authz::follow`) and the browser stand-in
//! `examples/oauth_browser.rs` (which includes this file by path).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The `Location` of the 302 that `url` answers with.
pub fn get_location(url: &str) -> Result<String, String> {
    let (status, head) = get_raw(url)?;
    if status != 302 {
        return Err(format!("{url}: status {status}"));
    }
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_owned())
        })
        .ok_or_else(|| "302 without Location".into())
}

/// GET an `http://127.0.0.1:PORT/...` URL: (status, head).
pub fn get_raw(url: &str) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://127.0.0.1:")
        .ok_or_else(|| format!("not a loopback URL: {url}"))?;
    let (port, path) = rest.split_once('/').unwrap_or((rest, ""));
    let port: u16 = port.parse().map_err(|_| format!("bad port in {url}"))?;
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("{url}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let head =
        format!("GET /{path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{url}: no status in {text:?}"))?;
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
    Ok((status, head))
}
