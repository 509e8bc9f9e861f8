//! Reading one response: its head, then its body as it arrives, handed on
//! as whole JSON bodies or one SSE event at a time, and its end, which frees
//! the connection for the next exchange or closes it.

use std::time::Instant;

use mio::Registry;

use crate::proto::http1::{BodyKind, BodyProgress};
use crate::proto::sse::SseDecoder;

use super::conn::ConnState;
use super::{Event, ExId, Failure, HttpClient};

impl HttpClient {
    /// Consumes what the parser has: the head, then body bytes as they come.
    pub(super) fn process(&mut self, conn: u64, reg: &Registry, now: Instant) {
        let max = self.cfg.max_message_size;
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let ConnState::Busy(ex) = c.state else {
                if c.parser.buffered() > 0 {
                    // Bytes nobody asked for: the connection is unusable.
                    self.close_conn(conn, reg);
                }
                return;
            };
            let Some(e) = self.exchanges.get_mut(&ex) else {
                return;
            };
            if !e.head_seen {
                match c.parser.next_head() {
                    Ok(Some((resp, kind))) => {
                        e.head_seen = true;
                        e.success = (200..300).contains(&resp.status);
                        let sse = resp.header("content-type").is_some_and(|ct| {
                            ct.trim_start()
                                .to_ascii_lowercase()
                                .starts_with("text/event-stream")
                        });
                        if sse {
                            e.sse = Some(SseDecoder::new(max));
                        }
                        c.body_kind = Some(kind);
                        if !resp.keep_alive {
                            c.body_kind = Some(BodyKind::UntilClose);
                        }
                        self.events.push(Event::Head {
                            ex,
                            status: resp.status,
                            headers: resp.headers,
                            sse,
                        });
                        continue;
                    }
                    Ok(None) => return,
                    Err(err) => {
                        self.conn_failed(
                            conn,
                            Failure::Closed(format!("bad response: {}", err.reason())),
                            reg,
                            now,
                        );
                        return;
                    }
                }
            }
            let mut chunk = Vec::new();
            let progress = match c.parser.next_body(&mut chunk) {
                Ok(p) => p,
                Err(err) => {
                    self.conn_failed(
                        conn,
                        Failure::Closed(format!("bad response body: {}", err.reason())),
                        reg,
                        now,
                    );
                    return;
                }
            };
            if !chunk.is_empty() {
                self.body_bytes(ex, &chunk);
            }
            match progress {
                BodyProgress::Done => {
                    self.finish(conn, ex, reg, now);
                    continue;
                }
                BodyProgress::Partial => return,
            }
        }
    }

    fn body_bytes(&mut self, ex: ExId, chunk: &[u8]) {
        let max = self.cfg.max_message_size;
        let Some(e) = self.exchanges.get_mut(&ex) else {
            return;
        };
        if !e.success && !self.error_bodies {
            // An error status's body (often a JSON-RPC error with id null) is
            // not a reply: the owner acts on the status.
            return;
        }
        match &mut e.sse {
            Some(dec) => {
                let mut evs = Vec::new();
                if let Err(err) = dec.feed(chunk, &mut evs) {
                    crate::log_warn!("upstream SSE stream: {err}; event dropped");
                    e.sse = Some(SseDecoder::new(max));
                }
                for ev in evs {
                    if ev.event != "message" && ev.event != "endpoint" && !ev.data.is_empty() {
                        continue;
                    }
                    let data = if ev.event == "endpoint" {
                        // Legacy HTTP+SSE: mark the endpoint event for the owner.
                        let mut d = b"endpoint:".to_vec();
                        d.extend_from_slice(&ev.data);
                        d
                    } else {
                        if std::str::from_utf8(&ev.data).is_err() {
                            // Handed over as sent: the owner's check drops
                            // it and answers a request it names.
                            self.counts.invalid_utf8 += 1;
                        }
                        ev.data
                    };
                    self.events.push(Event::Message {
                        ex,
                        data,
                        id: ev.id,
                        retry: ev.retry,
                    });
                }
            }
            None => {
                if e.json.len() + chunk.len() > max {
                    e.oversize = true;
                    e.json.clear();
                } else if !e.oversize {
                    e.json.extend_from_slice(chunk);
                }
            }
        }
    }

    pub(super) fn finish(&mut self, conn: u64, ex: ExId, reg: &Registry, now: Instant) {
        let Some(mut e) = self.exchanges.remove(&ex) else {
            return;
        };
        if e.oversize {
            crate::log_warn!("upstream response over --max-message-size dropped");
        } else if e.sse.is_none() && !e.json.is_empty() {
            if std::str::from_utf8(&e.json).is_err() {
                self.counts.invalid_utf8 += 1;
            }
            self.events.push(Event::Message {
                ex,
                data: std::mem::take(&mut e.json),
                id: None,
                retry: None,
            });
        }
        self.events.push(Event::Done { ex });
        let reuse = self.conns.get(&conn).is_some_and(|c| {
            !c.for_stream
                && !matches!(c.body_kind, Some(BodyKind::UntilClose))
                && c.parser.buffered() == 0
        });
        if reuse {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.state = ConnState::Idle { since: now };
            }
        } else {
            self.close_conn(conn, reg);
        }
    }
}
