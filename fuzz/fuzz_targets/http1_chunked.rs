//! The chunked transfer coding (the parsers' shared `ChunkDecoder`, reached
//! through both parsers since it is private to `proto::http1`).
//!
//! The input's first byte picks a mode:
//! - even: the rest is a raw chunked body, put behind a fixed request head
//!   and a fixed response head. Both parsers must agree on the decoded bytes
//!   and on success, whether it is fed whole or in pseudo-random reads, and
//!   the request side must never exceed `max_body`.
//! - odd: the rest is cut into pieces that are written with the relay's own
//!   `write_chunked_head` / `write_chunk` / `write_last_chunk` and read back
//!   with `ResponseParser` in pseudo-random reads: the pieces must come back
//!   exactly, as one complete response.
#![no_main]

use fuzz_util::{Rng, splits};
use libfuzzer_sys::fuzz_target;
use mcp_relay::proto::http1::{
    BodyKind, BodyProgress, Event, Limits, RequestParser, ResponseParser, write_chunk,
    write_chunked_head, write_last_chunk,
};

const REQUEST_HEAD: &[u8] = b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

/// Decoded body if the request completed, `Err` if refused, `Ok(None)` if
/// it needs more bytes.
fn via_request(body_pieces: &[&[u8]], limits: Limits) -> Result<Option<Vec<u8>>, ()> {
    let mut p = RequestParser::new(limits);
    p.feed(REQUEST_HEAD);
    let mut done = None;
    for piece in body_pieces {
        p.feed(piece);
        loop {
            match p.next_event() {
                Ok(Some(Event::Request(r))) => {
                    assert!(r.body.len() <= limits.max_body);
                    if done.is_none() {
                        done = Some(r.body);
                    }
                }
                Ok(Some(Event::ContinueExpected)) => {}
                Ok(None) => break,
                Err(_) => return if done.is_some() { Ok(done) } else { Err(()) },
            }
        }
    }
    Ok(done)
}

fn via_response(body_pieces: &[&[u8]], limits: Limits) -> Result<Option<Vec<u8>>, ()> {
    let mut p = ResponseParser::new(limits);
    p.feed(RESPONSE_HEAD);
    match p.next_head() {
        Ok(Some((_, BodyKind::Chunked))) => {}
        other => panic!("fixed head not parsed: {other:?}"),
    }
    let mut body = Vec::new();
    for piece in body_pieces {
        p.feed(piece);
        match p.next_body(&mut body) {
            Ok(BodyProgress::Done) => return Ok(Some(body)),
            Ok(BodyProgress::Partial) => {}
            Err(_) => return Err(()),
        }
        assert!(p.buffered() <= limits.max_header.max(4096));
    }
    Ok(None)
}

fn raw(body: &[u8], rng: &mut Rng) {
    let limits = Limits {
        max_header: rng.pick(&[100, 16 * 1024]),
        max_body: 4 * 1024 * 1024,
    };
    let pieces = splits(body, rng);
    let req_whole = via_request(&[body], limits);
    let req_cut = via_request(&pieces, limits);
    let resp_whole = via_response(&[body], limits);
    let resp_cut = via_response(&pieces, limits);
    assert_eq!(req_whole, req_cut, "request side depends on read sizes");
    assert_eq!(resp_whole, resp_cut, "response side depends on read sizes");
    // The request side bounds the body (max_body), the response side does
    // not; otherwise they decode alike.
    match (&req_whole, &resp_whole) {
        (Err(()), Ok(None)) => {} // a chunk size over max_body, still arriving
        (Err(()), Ok(Some(b))) => assert!(b.len() > limits.max_body, "request side refused"),
        _ => assert_eq!(
            req_whole, resp_whole,
            "request and response decoders disagree"
        ),
    }
    // A small max_body refuses exactly the bodies that decode larger.
    let tight = Limits {
        max_body: rng.below(64),
        ..limits
    };
    match (via_request(&[body], tight), &req_whole) {
        (Ok(Some(b)), Ok(Some(full))) => assert_eq!(&b, full),
        (Ok(Some(b)), other) => panic!("tight limit accepted {b:?}, generous gave {other:?}"),
        (Err(()), Ok(Some(full))) => {
            assert!(
                full.len() > tight.max_body,
                "refused a body within max_body"
            )
        }
        _ => {}
    }
}

fn round_trip(data: &[u8], rng: &mut Rng) {
    let mut wire = Vec::new();
    write_chunked_head(
        &mut wire,
        200,
        &[("content-type", "text/event-stream")],
        true,
    );
    let pieces = splits(data, rng);
    for piece in &pieces {
        write_chunk(&mut wire, piece);
    }
    write_last_chunk(&mut wire);
    let mut p = ResponseParser::new(Limits::default());
    let mut body = Vec::new();
    let mut head = None;
    let mut done = false;
    for read in splits(&wire, rng) {
        p.feed(read);
        if head.is_none() {
            head = p.next_head().expect("own head");
        }
        if head.is_some() && p.next_body(&mut body).expect("own chunks") == BodyProgress::Done {
            done = true;
        }
    }
    let (resp, kind) = head.expect("own head never parsed");
    assert_eq!((resp.status, kind), (200, BodyKind::Chunked));
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    assert!(done, "own last chunk not seen");
    assert_eq!(body, data, "chunks did not round-trip");
    assert_eq!(p.buffered(), 0);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut rng = Rng::from_data(data);
    if mode % 2 == 0 {
        raw(rest, &mut rng);
    } else {
        round_trip(rest, &mut rng);
    }
});
