//! A stand-in for the browser of `forward --url --oauth` in tests: run as
//! `oauth_browser [--log FILE] [--no-follow] URL`, it appends URL to FILE,
//! then does what a person who approves at once would: GET the
//! authorization URL, take the redirect's `Location`, GET that (the relay's
//! loopback callback). Plain HTTP on 127.0.0.1 only; every read bounded (5 s).
//! Exit status 0 when the callback answered 200, 1 otherwise.

use std::io::Write;

#[path = "../tests/common/loopback.rs"]
mod loopback;

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
    let result = loopback::get_location(url).and_then(|location| loopback::get_raw(&location));
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
