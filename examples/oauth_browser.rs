//! A stand-in for the browser of `forward --url --oauth` in tests: run as
//! `oauth_browser [--log FILE] [--no-follow] URL`, it appends URL to FILE,
//! then does what a person who approves at once would: GET the
//! authorization URL, take the redirect's `Location`, GET that (the relay's
//! loopback callback). Plain HTTP on 127.0.0.1 only; every read bounded (5 s).
//! Exit status 0 when the callback answered 200, 1 otherwise.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn get(url: &str) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://127.0.0.1:")
        .ok_or_else(|| format!("not a loopback http URL: {url}"))?;
    let (port, path) = rest.split_once('/').unwrap_or((rest, ""));
    let port: u16 = port.parse().map_err(|_| format!("bad port in {url}"))?;
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("{url}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let req =
        format!("GET /{path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{url}: no HTTP status"))?;
    Ok((status, text))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut log = None;
    let mut follow = true;
    let mut i = 0;
    while i + 1 < args.len() {
        match args[i].as_str() {
            "--log" => {
                log = args.get(i + 1).cloned();
                i += 2;
            }
            "--no-follow" => {
                follow = false;
                i += 1;
            }
            _ => break,
        }
    }
    let Some(url) = args.last() else {
        eprintln!("oauth_browser: no URL");
        std::process::exit(2);
    };
    if let Some(f) = log
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
    {
        let _ = writeln!(f, "{url}");
    }
    if !follow {
        return;
    }
    let result = get(url).and_then(|(status, head)| {
        if status != 302 {
            return Err(format!("authorize answered {status}"));
        }
        let location = head
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("location")
                    .then(|| v.trim().to_string())
            })
            .ok_or("no Location")?;
        get(&location)
    });
    match result {
        Ok((200, _)) => {}
        Ok((s, text)) => {
            eprintln!("oauth_browser: callback answered {s}: {text}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("oauth_browser: {e}");
            std::process::exit(1);
        }
    }
}
