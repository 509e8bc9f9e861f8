//! HTTP/1.1 response parser (`proto::http1::ResponseParser`), the upstream
//! side: heads and streamed bodies from the input fed in pseudo-random
//! reads, then EOF.
//!
//! Checks: no panic, no endless loop (every turn of the drain loop consumes
//! input); after each drain at most `max(max_header, 4096)`
//! bytes stay buffered (bodies stream out, whatever their length); errors
//! repeat; and the heads, body bytes and outcome do not depend on how the
//! bytes were cut.
#![no_main]

use fuzz_util::{Rng, splits};
use libfuzzer_sys::fuzz_target;
use mcp_relay::proto::http1::{BodyKind, BodyProgress, Error, Limits, Response, ResponseParser};

const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, PartialEq)]
struct Message {
    head: Response,
    kind: BodyKind,
    body: Vec<u8>,
    complete: bool,
}

#[derive(Debug, PartialEq)]
struct Outcome {
    messages: Vec<Message>,
    error: Option<Error>,
    eof: Option<Result<BodyProgress, Error>>,
}

fn run(pieces: &[&[u8]], limits: Limits, no_body: bool) -> Outcome {
    let mut p = ResponseParser::new(limits);
    p.begin_response(no_body);
    let mut out = Outcome {
        messages: Vec::new(),
        error: None,
        eof: None,
    };
    let mut scratch = Vec::new();
    for piece in pieces {
        p.feed(piece);
        // Each turn but the last consumes a byte (a head consumes its own).
        let budget = p.buffered() + 1;
        let mut turns = 0usize;
        loop {
            turns += 1;
            assert!(turns <= budget, "drain loop makes no progress");
            let before = p.buffered();
            let head = match p.next_head() {
                Ok(h) => h,
                Err(e) => return failed(p, out, e),
            };
            let got_head = head.is_some();
            if let Some((head, kind)) = head {
                assert!(
                    !(100..200).contains(&head.status),
                    "interim {} returned",
                    head.status
                );
                assert!(head.minor_version <= 1);
                let _ = (
                    head.header("content-type"),
                    head.header_all("set-cookie").count(),
                );
                let complete = matches!(kind, BodyKind::None | BodyKind::Length(0));
                out.messages.push(Message {
                    head,
                    kind,
                    body: Vec::new(),
                    complete,
                });
            }
            let open = out.messages.last_mut().filter(|m| !m.complete);
            let sink = match open {
                Some(m) => &mut m.body,
                None => {
                    scratch.clear();
                    &mut scratch
                }
            };
            match p.next_body(sink) {
                Ok(BodyProgress::Done) => {
                    if let Some(m) = out.messages.last_mut() {
                        m.complete = true;
                    }
                }
                Ok(BodyProgress::Partial) => {}
                Err(e) => return failed(p, out, e),
            }
            assert!(
                scratch.is_empty(),
                "body bytes with no response in progress"
            );
            if let Some(m) = out.messages.last() {
                if let BodyKind::Length(n) = m.kind {
                    assert!(m.body.len() as u64 <= n, "body longer than Content-Length");
                }
            }
            if !got_head && p.buffered() == before {
                break;
            }
        }
        let bound = limits.max_header.max(MAX_CHUNK_LINE);
        assert!(
            p.buffered() <= bound,
            "{} bytes buffered after draining, limit {bound}",
            p.buffered()
        );
    }
    let eof = p.on_eof();
    if eof == Ok(BodyProgress::Done) {
        if let Some(m) = out.messages.last_mut() {
            m.complete = true;
        }
    }
    out.eof = Some(eof);
    out
}

fn failed(mut p: ResponseParser, mut out: Outcome, e: Error) -> Outcome {
    assert_eq!(p.next_head(), Err(e), "an error must repeat");
    assert_eq!(p.next_body(&mut Vec::new()), Err(e), "an error must repeat");
    assert_eq!(p.on_eof(), Err(e));
    assert_eq!(p.buffered(), 0);
    let _ = e.to_string();
    out.error = Some(e);
    out
}

fuzz_target!(|data: &[u8]| {
    let mut rng = Rng::from_data(data);
    let limits = Limits {
        max_header: rng.pick(&[16, 200, 16 * 1024]),
        // Ignored by the response side (bodies stream out).
        max_body: rng.pick(&[0, 4 * 1024 * 1024]),
    };
    let no_body = rng.below(4) == 0;
    let whole = run(&[data], limits, no_body);
    let pieces = splits(data, &mut rng);
    let cut = run(&pieces, limits, no_body);
    assert_eq!(
        whole.messages, cut.messages,
        "responses depend on read sizes"
    );
    assert_eq!(
        whole.error.is_some(),
        cut.error.is_some(),
        "failure depends on read sizes: {:?} vs {:?}",
        whole.error,
        cut.error
    );
    if whole.error.is_none() {
        assert_eq!(whole.eof, cut.eof);
    }
});
