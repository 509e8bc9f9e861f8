//! HTTP/1.1 request parser (`proto::http1::RequestParser`), fed the input in
//! pseudo-random reads (and, for small inputs, one byte at a time), draining
//! events after each read.
//!
//! Checks: no panic, no endless event loop; after each drain the parser
//! holds at most `max(max_header, 4096)` unconsumed bytes (the head limit, or
//! the chunk-size-line limit mid body) and no body passes `max_body`; an
//! error repeats (the parser stays poisoned); and however the bytes are cut,
//! the same requests come out and the stream fails or not alike; Accept is
//! answered alike by its bytewise common case and its full reading.
#![no_main]

use fuzz_util::{Rng, splits};
use libfuzzer_sys::fuzz_target;
use mcp_relay::proto::http1::{Error, Event, Limits, Request, RequestParser};

/// The chunked decoder's longest chunk-size line.
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, PartialEq)]
struct Outcome {
    requests: Vec<Request>,
    error: Option<Error>,
}

fn run(pieces: &[&[u8]], limits: Limits) -> Outcome {
    let mut p = RequestParser::new(limits);
    let mut out = Outcome {
        requests: Vec::new(),
        error: None,
    };
    let mut fed = 0usize;
    let mut events = 0usize;
    for piece in pieces {
        p.feed(piece);
        fed += piece.len();
        loop {
            match p.next_event() {
                Ok(Some(Event::Request(r))) => {
                    assert!(r.body.len() <= limits.max_body, "body over max_body");
                    assert!(r.minor_version <= 1);
                    touch(&r);
                    out.requests.push(r);
                }
                Ok(Some(Event::ContinueExpected)) => {}
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(p.next_event(), Err(e), "an error must repeat");
                    let _ = (e.status(), e.reason(), e.to_string());
                    assert_eq!(p.buffered(), 0);
                    assert!(!p.mid_request());
                    out.error = Some(e);
                    return out;
                }
            }
            // Each request consumes at least one byte and announces at most
            // one 100-continue: anything more is a loop.
            events += 1;
            assert!(events <= 2 * fed + 2, "events without input");
        }
        let _ = (p.mid_request(), p.headers_done());
        let bound = limits.max_header.max(MAX_CHUNK_LINE);
        assert!(
            p.buffered() <= bound,
            "{} bytes buffered after draining, limit {bound}",
            p.buffered()
        );
    }
    out
}

/// Exercises the accessors the relay calls on every request.
fn touch(r: &Request) {
    let _ = r.path();
    let _ = r.query_param("session_id");
    let _ = r.query_param(&r.method);
    let sse = r.accepts("text/event-stream");
    let json = r.accepts("application/json");
    // Asked together (the header read once), as asked one by one.
    assert_eq!(r.accepts_all(["application/json", "text/event-stream"]), json && sse);
    // The bytewise common case answers as the full reading does.
    let pair = [Some(("application", "json")), Some(("text", "event-stream"))];
    assert_eq!(r.accepts_ranges(&pair), json && sse);
    let _ = r.accepts(&r.method);
    let _ = r.header("mcp-session-id");
    let _ = r.header_all("host").count();
    assert!(r.path().len() <= r.target.len().max(1));
}

fuzz_target!(|data: &[u8]| {
    let mut rng = Rng::from_data(data);
    let limits = Limits {
        max_header: rng.pick(&[16, 200, 16 * 1024]),
        max_body: rng.pick(&[0, 10, 1000, 4 * 1024 * 1024]),
    };
    let whole = run(&[data], limits);
    let pieces = splits(data, &mut rng);
    let cut = run(&pieces, limits);
    assert_eq!(
        whole.requests, cut.requests,
        "requests depend on read sizes"
    );
    assert_eq!(
        whole.error.is_some(),
        cut.error.is_some(),
        "failure depends on read sizes: {:?} vs {:?}",
        whole.error,
        cut.error
    );
    if data.len() <= 4096 {
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        let bytewise = run(&bytes, limits);
        assert_eq!(whole.requests, bytewise.requests, "byte-at-a-time differs");
        assert_eq!(whole.error.is_some(), bytewise.error.is_some());
    }
});
