//! Server-Sent Events (`proto::sse`): the decoder the relay runs on an HTTP
//! upstream's event streams, and its own writer.
//!
//! The input's first byte picks a mode:
//! - even: the rest is a raw event stream, decoded whole and in
//!   pseudo-random reads with a small or large `max_event`. Checks: no
//!   panic; the same events, last event ID, retry and failure either way;
//!   no event's data over `max_event`; no CR in data, no CR/LF/NUL in ids;
//!   a failed decoder stays failed. Data is bytes as sent, so a read
//!   boundary inside a character that is not UTF-8 changes nothing.
//! - odd: the rest drives `arbitrary` to build events, comments and retry
//!   fields, written with `write_event` / `write_comment` / `write_retry`
//!   and decoded in pseudo-random reads: every event comes back (line
//!   breaks in data normalised to LF, the characters the writer drops gone).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use fuzz_util::{Rng, splits};
use libfuzzer_sys::fuzz_target;
use mcp_relay::proto::sse::{
    SseDecoder, SseError, SseEvent, write_comment, write_event, write_retry,
};

#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<SseEvent>,
    last_id: Option<String>,
    retry: Option<u64>,
    error: Option<SseError>,
}

fn decode(pieces: &[&[u8]], max_event: usize) -> Outcome {
    let mut d = SseDecoder::new(max_event);
    let mut events = Vec::new();
    let mut error = None;
    for piece in pieces {
        let before = events.len();
        if let Err(e) = d.feed(piece, &mut events) {
            let _ = e.to_string();
            assert_eq!(
                d.feed(b"data: x\n\n", &mut events),
                Err(e),
                "must stay failed"
            );
            error = Some(e);
            break;
        }
        for ev in &events[before..] {
            assert!(ev.data.len() <= max_event, "event data over max_event");
            assert!(!ev.data.contains(&b'\r'), "CR in data");
            assert!(!ev.event.is_empty());
            if let Some(id) = &ev.id {
                assert!(!id.contains(['\r', '\n', '\0']), "bad id {id:?}");
            }
        }
    }
    Outcome {
        events,
        last_id: d.last_event_id().map(str::to_owned),
        retry: d.retry(),
        error,
    }
}

fn raw(stream: &[u8], rng: &mut Rng) {
    let max_event = rng.pick(&[8, 100, 64 * 1024]);
    let whole = decode(&[stream], max_event);
    let pieces = splits(stream, rng);
    let cut = decode(&pieces, max_event);
    assert_eq!(whole.error, cut.error, "failure depends on read sizes");
    if whole.error.is_none() {
        assert_eq!(whole, cut, "events depend on read sizes");
    } else {
        // Events before the failure come out either way (a read may end
        // before the offending line and so deliver fewer).
        let n = cut.events.len().min(whole.events.len());
        assert_eq!(whole.events[..n], cut.events[..n]);
    }
}

#[derive(Arbitrary, Debug)]
enum Item {
    Event {
        id: Option<String>,
        event: Option<String>,
        data: String,
    },
    Comment(String),
    Retry(u64),
}

fn round_trip(rest: &[u8], rng: &mut Rng) {
    let Ok(items) = Vec::<Item>::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let mut last_id = None;
    let mut retry = None;
    for item in &items {
        match item {
            Item::Event { id, event, data } => {
                write_event(&mut wire, id.as_deref(), event.as_deref(), data.as_bytes());
                let id = id.as_ref().map(|s| s.replace(['\r', '\n', '\0'], ""));
                if let Some(id) = &id {
                    last_id = Some(id.clone()).filter(|s| !s.is_empty());
                }
                let event = event
                    .as_ref()
                    .map(|s| s.replace(['\r', '\n'], ""))
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "message".to_owned());
                expected.push(SseEvent {
                    id,
                    event,
                    data: data.replace("\r\n", "\n").replace('\r', "\n").into_bytes(),
                    retry: None,
                });
            }
            Item::Comment(text) => write_comment(&mut wire, text),
            Item::Retry(ms) => {
                write_retry(&mut wire, *ms);
                retry = Some(*ms);
            }
        }
    }
    let pieces = splits(&wire, rng);
    let got = decode(&pieces, 1 << 20);
    assert_eq!(got.error, None);
    assert_eq!(got.events, expected, "written events did not decode back");
    assert_eq!(got.last_id, last_id);
    assert_eq!(got.retry, retry);
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
