//! The loopback callback of `forward --url --oauth` (`oauth.rs`): the
//! listener on 127.0.0.1 and its connections, endpoints of the loop's
//! registry; each connection sends one request (the authorization
//! server's redirect), gets one answer and is closed.

use std::io::{Read, Write};

use mio::Interest;

use super::super::super::{Endpoint, Forward};
use super::{CALLBACK_IO, CALLBACK_MAX, CallbackConn, MAX_CALLBACK_CONNS};
use crate::auth::client::flow::{CallbackError, Step};

impl Forward {
    /// The callback listener is readable: accept what waits.
    pub(in crate::front::forward) fn oauth_accept(&mut self) {
        let now = self.now;
        loop {
            let Some(o) = self.oauth() else { return };
            let Some((l, _)) = o.listener.as_ref() else {
                return;
            };
            let (mut stream, _) = match l.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    crate::log_debug!("oauth: callback accept: {e}");
                    return;
                }
            };
            if o.conns.len() >= MAX_CALLBACK_CONNS {
                if let Some(n) = o.log.check(now) {
                    crate::log_warn!(
                        "oauth: {MAX_CALLBACK_CONNS} callback connections open: closing a new \
                         one ({n} similar not logged)"
                    );
                }
                continue;
            }
            let n = o.next_conn;
            o.next_conn += 1;
            let tok = self.endpoints.insert(Endpoint::OAuthConn(n));
            if self
                .poll
                .registry()
                .register(&mut stream, tok, Interest::READABLE)
                .is_err()
            {
                self.endpoints.remove(tok);
                continue;
            }
            let Some(o) = self.oauth() else { return };
            o.conns.insert(
                n,
                CallbackConn {
                    stream,
                    token: tok,
                    buf: Vec::new(),
                    deadline: now + CALLBACK_IO,
                },
            );
            // Bytes may already be there: read without waiting for an event.
            self.oauth_conn_read(n);
        }
    }

    /// A callback connection is readable: read its request, answer, close.
    pub(in crate::front::forward) fn oauth_conn_read(&mut self, n: u64) {
        let now = self.now;
        let Some(o) = self.oauth() else { return };
        let Some(c) = o.conns.get_mut(&n) else { return };
        let mut tmp = [0u8; 2048];
        let done = loop {
            match c.stream.read(&mut tmp) {
                Ok(0) => break true,
                Ok(k) => {
                    c.buf.extend_from_slice(&tmp[..k]);
                    if c.buf.len() > CALLBACK_MAX || c.buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        if !done {
            return;
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let target = match req.parse(&c.buf) {
            Ok(httparse::Status::Complete(_)) if req.method == Some("GET") => {
                req.path.map(str::to_owned)
            }
            _ => None,
        };
        let (status, body, step) = match target
            .as_deref()
            .map(|t| t.split_once('?').unwrap_or((t, "")))
        {
            Some(("/callback", query)) => match o.flow.on_callback(query, now) {
                Ok(Step::Failed(why)) => (
                    400,
                    format!("Authorization failed: {why}"),
                    Some(Step::Failed(why)),
                ),
                Ok(step) => (
                    200,
                    "Authorization received. You may close this window.".to_string(),
                    Some(step),
                ),
                Err(CallbackError::NotWaiting) => {
                    (409, "No authorization is waiting.".into(), None)
                }
                Err(CallbackError::Rejected(why)) => (400, format!("Refused: {why}."), None),
            },
            Some(_) => (404, "Not found.".into(), None),
            None => (400, "Bad request.".into(), None),
        };
        let page = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>mcp-relay</title></head>\
             <body><p>{}</p></body></html>\n",
            body.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        );
        let resp = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: text/html; charset=utf-8\r\n\
             cache-control: no-store\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{page}",
            if status == 200 { "OK" } else { "Error" },
            page.len()
        );
        // Small enough for an empty socket buffer; what does not fit is lost
        // (the flow goes on either way).
        let _ = c.stream.write(resp.as_bytes());
        self.oauth_close_conn(n);
        if let Some(s) = step {
            self.oauth_step(s);
        }
    }

    pub(super) fn oauth_close_conn(&mut self, n: u64) {
        let Some(o) = self.oauth() else { return };
        let Some(mut c) = o.conns.remove(&n) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.endpoints.remove(c.token);
    }

    /// The authorization is over: the port is free again.
    pub(super) fn oauth_close_listener(&mut self) {
        let Some(o) = self.oauth() else { return };
        let Some((mut l, tok)) = o.listener.take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut l);
        self.endpoints.remove(tok);
    }
}
