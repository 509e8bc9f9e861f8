//! Legacy HTTP+SSE (2024-11-05) for `forward --url`: used once the
//! Streamable HTTP endpoint refuses `initialize`. One GET stream carries every
//! reply and first names the endpoint for POSTs, sent one at a time.

use super::*;

/// A client message waiting to go out; `Some(id)` when it expects a reply.
pub(super) type Queued = (Vec<u8>, Option<Id>);

/// Legacy HTTP+SSE, once `initialize` was refused by the Streamable HTTP
/// endpoint: one long GET stream carries every reply and first names the
/// endpoint where messages are POSTed, one at a time so the server sees
/// them in the client's order.
#[derive(Debug)]
pub(super) enum Legacy {
    /// The stream is opening; messages wait for its `endpoint` event.
    AwaitingEndpoint { waiting: VecDeque<Queued> },
    /// Messages go to `endpoint`; `posting`: one is on its way.
    Ready {
        endpoint: String,
        waiting: VecDeque<Queued>,
        posting: bool,
    },
    /// The stream failed: the relay is closing; nothing more goes out.
    Failed,
}

impl Forward {
    /// Legacy HTTP+SSE: POSTs the next waiting message once the endpoint is
    /// known and the previous POST was accepted.
    pub(super) fn pump_legacy(&mut self) {
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.server.http_mut() else {
            return;
        };
        let headers = h.headers(false);
        let Some(Legacy::Ready {
            endpoint,
            waiting,
            posting: posting @ false,
        }) = &mut h.legacy
        else {
            return;
        };
        let Some((line, request)) = waiting.pop_front() else {
            return;
        };
        *posting = true;
        let req = Request::post(endpoint.clone(), headers, line);
        let ex = h.client.submit(req, reg, now);
        if let Some(id) = &request {
            h.by_request.insert(id.clone(), ex);
        }
        h.carries.insert(ex, Carry::LegacyPost { request });
    }

    /// Legacy HTTP+SSE: the POST on its way was answered (or failed).
    pub(super) fn legacy_posted(&mut self) {
        if let Some(Some(Legacy::Ready { posting, .. })) = self.http().map(|h| &mut h.legacy) {
            *posting = false;
        }
        self.pump_legacy();
    }

    pub(super) fn start_legacy(&mut self, ex: Option<ExId>, request: Option<Id>) {
        let now = self.now;
        if let Some(ex) = ex {
            self.forget(ex);
        }
        let init = self.cached_initialize.clone();
        let reg = self.poll.registry();
        let Some(h) = self.server.http_mut() else {
            return;
        };
        let mut waiting = VecDeque::new();
        if let (Some(line), Some(id)) = (init, request) {
            waiting.push_back((line, Some(id)));
        }
        // What waited behind the failed initialize follows it, in order.
        if !h.phase.is_ready() {
            waiting.extend(h.set_phase(Phase::Ready));
        }
        h.legacy = Some(Legacy::AwaitingEndpoint { waiting });
        let req = Request::stream(
            h.url.target.clone(),
            vec![("accept".into(), "text/event-stream".into())],
        );
        let ex = h.client.submit(req, reg, now);
        h.carries.insert(ex, Carry::LegacyStream);
    }

    pub(super) fn legacy_failed(&mut self, why: &str) {
        crate::log_error!("[{}] legacy HTTP+SSE session failed: {why}", self.cfg.name);
        let ids: Vec<Id> = self.pending.iter().map(|(id, _)| id.clone()).collect();
        for id in ids {
            self.http_fail(
                &id,
                RelayError::UpstreamClosed,
                &format!("The upstream SSE stream failed: {why}"),
                json!({}),
            );
        }
        if let Some(h) = self.http() {
            let waiting = match h.legacy.replace(Legacy::Failed) {
                Some(Legacy::AwaitingEndpoint { waiting } | Legacy::Ready { waiting, .. }) => {
                    waiting
                }
                _ => VecDeque::new(),
            };
            for (_, request) in waiting {
                if let Some(id) = request {
                    self.fail_request(
                        &id,
                        RelayError::UpstreamClosed,
                        "The upstream SSE stream failed",
                        json!({}),
                    );
                }
            }
        }
        // The relay has no session left to serve: it exits like a stdio
        // upstream that died.
        self.exit_code = Some(1);
        self.begin_close();
    }
}
