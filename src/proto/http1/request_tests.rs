//! The request parser's tests.

use super::*;
use crate::proto::http1::testing::{drain, error_of, one_request, parser, small};
use crate::proto::http1::write_continue;

fn with_header(name: &str, value: &str) -> Request {
    one_request(format!("GET / HTTP/1.1\r\nHost: x\r\n{name}: {value}\r\n\r\n").as_bytes())
}

/// The names the relay asks for are indexed when the head is parsed: a
/// lookup compares only the field lines that carry that name, wherever
/// they are among many others, in any case, and keeps every value in
/// order.
#[test]
fn known_header_lookups_compare_only_their_own_lines() {
    use crate::proto::http1::testing::COMPARED;
    let mut head = String::from("POST /mcp HTTP/1.1\r\nHost: x\r\n");
    for i in 0..40 {
        head.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    head.push_str("Accept: application/json\r\nMCP-Name: echo\r\n");
    for i in 40..50 {
        head.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    head.push_str("accept: text/event-stream\r\nContent-Length: 0\r\n\r\n");
    let r = one_request(head.as_bytes());
    COMPARED.with(|c| c.set(0));
    assert_eq!(r.header("mcp-name"), Some("echo"));
    assert_eq!(r.header("mcp-session-id"), None);
    assert!(r.accepts("application/json") && r.accepts("text/event-stream"));
    assert_eq!(
        r.header_all("accept").collect::<Vec<_>>(),
        ["application/json", "text/event-stream"]
    );
    let compared = COMPARED.with(|c| c.get());
    // mcp-name (1), mcp-session-id (0), the two accept lines and the 11
    // between them (13 each, three times).
    assert!(compared <= 1 + 3 * 13, "{compared} names compared");
    // Spelled with capitals, the name is still found, by a scan.
    assert_eq!(r.header("MCP-Name"), Some("echo"));
    // A name the relay does not index is still found by a scan.
    assert_eq!(r.header("x-filler-45"), Some("45"));
}

#[test]
fn a_simple_request_parses_with_lowercased_names_and_trimmed_values() {
    let r = one_request(b"POST /mcp?x=1 HTTP/1.1\r\nHost: relay\r\nContent-Type:  application/json \r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/mcp?x=1");
    assert_eq!(r.minor_version, 1);
    assert_eq!(
        r.headers().collect::<Vec<_>>(),
        [
            ("host", "relay"),
            ("content-type", "application/json"),
            ("content-length", "2")
        ]
    );
    assert_eq!(r.header("CONTENT-TYPE"), Some("application/json"));
    assert_eq!(r.body, b"{}");
    assert!(r.keep_alive);
}

#[test]
fn pipelined_requests_come_out_in_order_one_per_call() {
    let mut p = parser();
    p.feed(b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\n\r\nGET /d");
    let targets: Vec<String> = drain(&mut p)
        .into_iter()
        .map(|ev| match ev {
            Ok(Event::Request(r)) => {
                format!("{} {}", r.target, String::from_utf8_lossy(&r.body))
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(targets, ["/a ", "/b abc", "/c "]);
    assert!(p.mid_request());
    assert_eq!(p.buffered(), 6);
    p.feed(b" HTTP/1.1\r\n\r\n");
    assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if r.target == "/d"));
    assert!(!p.mid_request());
}

#[test]
fn a_head_split_at_every_byte_boundary_parses_the_same() {
    let raw = b"POST /mcp HTTP/1.1\r\nHost: h\r\nAccept: application/json\r\nContent-Length: 5\r\n\r\nhello";
    let whole = one_request(raw);
    for cut in 0..raw.len() {
        let mut p = parser();
        p.feed(&raw[..cut]);
        assert_eq!(p.next_event(), Ok(None), "cut at {cut}");
        p.feed(&raw[cut..]);
        assert_eq!(
            p.next_event(),
            Ok(Some(Event::Request(whole.clone()))),
            "cut at {cut}"
        );
    }
}

#[test]
fn empty_lines_before_the_request_line_are_skipped() {
    // RFC 9112 §2.2.
    let r = one_request(b"\r\n\n\r\nGET /x HTTP/1.1\r\n\r\n");
    assert_eq!(r.target, "/x");
    // Even when they trickle in, and a lone CR waits for its LF.
    let mut p = parser();
    for b in b"\r\n\r\nGET /y HTTP/1.1\r\n\r\n" {
        assert_eq!(p.next_event(), Ok(None));
        p.feed(&[*b]);
    }
    assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if r.target == "/y"));
}

#[test]
fn an_oversized_head_is_431_before_its_blank_line_arrives() {
    let mut p = small(100, 1000);
    p.feed(b"GET / HTTP/1.1\r\n");
    p.feed(format!("X-Big: {}\r\n", "a".repeat(70)).as_bytes());
    assert_eq!(p.next_event(), Ok(None));
    p.feed(b"X-More: 1\r\n");
    assert_eq!(p.next_event(), Err(Error::HeaderTooLarge));
    assert_eq!(Error::HeaderTooLarge.status(), 431);
    // Poisoned: the same error again, and later bytes are dropped.
    p.feed(b"\r\n");
    assert_eq!(p.buffered(), 0);
    assert_eq!(p.next_event(), Err(Error::HeaderTooLarge));
}

#[test]
fn a_complete_head_over_the_limit_is_431_too() {
    let mut p = small(30, 1000);
    p.feed(b"GET / HTTP/1.1\r\nX-A: 0123456789\r\n\r\n");
    assert_eq!(p.next_event(), Err(Error::HeaderTooLarge));
}

#[test]
fn more_than_64_header_fields_is_431() {
    let mut raw = String::from("GET / HTTP/1.1\r\n");
    for i in 0..65 {
        raw.push_str(&format!("X-{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    assert_eq!(error_of(raw.as_bytes()), Error::HeaderTooLarge);
}

#[test]
fn content_length_over_the_limit_is_413_without_waiting_for_the_body() {
    let mut p = small(1000, 10);
    p.feed(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n");
    assert_eq!(p.next_event(), Err(Error::BodyTooLarge));
    assert_eq!(Error::BodyTooLarge.status(), 413);
    // At the limit is fine.
    let mut p = small(1000, 10);
    p.feed(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789");
    assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if r.body == b"0123456789"));
    // A number too big for u64 is just too large.
    let e = error_of(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n");
    assert_eq!(e, Error::BodyTooLarge);
}

#[test]
fn content_length_must_be_one_number() {
    // RFC 9110 §8.6: identical repeats are that value.
    let r = one_request(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc");
    assert_eq!(r.body, b"abc");
    for bad in [
        "3\r\nContent-Length: 4",
        "3, 4",
        "abc",
        "-1",
        "+3",
        "0x3",
        "",
        "3,",
    ] {
        let raw = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\nabc");
        assert!(
            matches!(error_of(raw.as_bytes()), Error::BadRequest(_)),
            "{bad:?}"
        );
    }
}

#[test]
fn a_body_arrives_across_feeds_and_leaves_the_buffer_as_it_comes() {
    let mut p = parser();
    p.feed(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234");
    assert_eq!(p.next_event(), Ok(None));
    assert!(p.headers_done() && p.mid_request());
    assert_eq!(p.buffered(), 0);
    p.feed(b"56789");
    assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if r.body == b"0123456789"));
    assert!(!p.headers_done());
}

#[test]
fn a_request_without_length_or_chunking_has_an_empty_body() {
    let mut p = parser();
    p.feed(b"POST / HTTP/1.1\r\n\r\nGET");
    assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if r.body.is_empty()));
    assert_eq!(p.buffered(), 3);
}

#[test]
fn transfer_encoding_rules() {
    let te = |v: &str, extra: &str| {
        error_of(format!("POST / HTTP/1.1\r\nTransfer-Encoding: {v}\r\n{extra}\r\n").as_bytes())
    };
    // RFC 9112 §6.1: both framings at once is how requests are smuggled.
    assert!(matches!(
        te("chunked", "Content-Length: 5\r\n"),
        Error::BadRequest(_)
    ));
    assert_eq!(te("gzip", "").status(), 501);
    assert_eq!(te("gzip, chunked", "").status(), 501);
    assert_eq!(te("chunked, chunked", "").status(), 400);
    assert_eq!(te("", "").status(), 400);
    let e = error_of(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(e.status(), 400);
    // Case and a list split over field lines are fine.
    let r = one_request(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: \r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
    );
    assert!(r.body.is_empty());
}

#[test]
fn expect_100_continue_is_announced_before_the_body_is_read() {
    let mut p = parser();
    p.feed(b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n");
    assert_eq!(p.next_event(), Ok(Some(Event::ContinueExpected)));
    assert_eq!(p.next_event(), Ok(None));
    p.feed(b"ab");
    assert_eq!(p.next_event(), Ok(None));
    p.feed(b"cd");
    assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if r.body == b"abcd"));

    let mut out = Vec::new();
    write_continue(&mut out);
    assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
}

#[test]
fn expect_100_continue_is_not_announced_when_there_is_nothing_to_wait_for() {
    let events = |raw: &[u8]| {
        let mut p = parser();
        p.feed(raw);
        drain(&mut p)
            .into_iter()
            .map(|e| matches!(e, Ok(Event::ContinueExpected)))
            .collect::<Vec<_>>()
    };
    // Body already here.
    assert_eq!(
        events(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"),
        [false]
    );
    // No body.
    assert_eq!(
        events(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n"),
        [false]
    );
    assert_eq!(
        events(b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"),
        [false]
    );
    // RFC 9110 §10.1.1: an HTTP/1.0 client's expectation is ignored.
    assert_eq!(
        events(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"),
        Vec::<bool>::new()
    );
    // Chunked, not yet complete: announced.
    assert_eq!(
        events(
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi"
        ),
        [true]
    );
}

#[test]
fn keep_alive_follows_the_version_and_connection_options() {
    let ka = |version: &str, conn: Option<&str>| {
        let conn = conn
            .map(|c| format!("Connection: {c}\r\n"))
            .unwrap_or_default();
        one_request(format!("GET / HTTP/1.{version}\r\n{conn}\r\n").as_bytes()).keep_alive
    };
    assert!(ka("1", None));
    assert!(!ka("1", Some("close")));
    assert!(!ka("1", Some("Upgrade, Close")));
    assert!(!ka("0", None));
    assert!(ka("0", Some("Keep-Alive")));
    assert!(!ka("0", Some("keep-alive, close")));
}

#[test]
fn after_a_closing_request_later_bytes_are_ignored() {
    // RFC 9112 §9.6: no further requests after `close`.
    let mut p = parser();
    p.feed(b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if !r.keep_alive));
    assert_eq!(p.next_event(), Ok(None));
    p.feed(b"GET /c HTTP/1.1\r\n\r\n");
    assert_eq!(p.next_event(), Ok(None));
    assert_eq!(p.buffered(), 0);
    assert!(!p.mid_request());
}

#[test]
fn a_malformed_request_line_is_400_as_soon_as_it_ends() {
    for line in [
        "GET /\r\n",
        "GET  / HTTP/1.1\r\n",
        "GET / HTTP/1.1 x\r\n",
        "\x16\x03\x01 TLS\r\n",
        "GET / FTP/1.0\r\n",
    ] {
        let mut p = parser();
        p.feed(line.as_bytes());
        assert!(
            matches!(p.next_event(), Err(Error::BadRequest(_))),
            "{line:?}"
        );
    }
    assert!(matches!(
        error_of(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"),
        Error::BadRequest(_)
    ));
    assert!(matches!(
        error_of(b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n"),
        Error::BadRequest(_)
    ));
}

#[test]
fn other_http_versions_and_the_http2_preface_are_505() {
    for line in [
        "GET / HTTP/1.2\r\n",
        "GET / HTTP/2\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET / HTTP/0.9\r\n",
    ] {
        let mut p = parser();
        p.feed(line.as_bytes());
        assert_eq!(p.next_event(), Err(Error::VersionNotSupported), "{line:?}");
    }
    assert_eq!(Error::VersionNotSupported.status(), 505);
}

#[test]
fn a_non_utf8_header_value_is_400() {
    let e = error_of(b"GET / HTTP/1.1\r\nX-Name: caf\xe9\r\n\r\n");
    assert_eq!(e, Error::BadRequest("header value is not UTF-8"));
}

#[test]
fn two_host_headers_are_400() {
    assert_eq!(
        error_of(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").status(),
        400
    );
}

#[test]
fn headers_are_found_case_insensitively_first_or_all() {
    let r = one_request(b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nX-B: 3\r\n\r\n");
    assert_eq!(r.header("x-A"), Some("1"));
    assert_eq!(r.header_all("X-A").collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(r.header("x-c"), None);
}

#[test]
fn accept_lists_are_matched_by_media_range() {
    let both = with_header("Accept", "application/json, text/event-stream");
    assert!(both.accepts("application/json"));
    assert!(both.accepts("text/event-stream"));
    assert!(!both.accepts("text/html"));

    let any = with_header("Accept", "*/*");
    assert!(any.accepts("text/event-stream"));

    let text = with_header("Accept", "TEXT/*;q=0.5 , Application/JSON;charset=utf-8");
    assert!(text.accepts("text/event-stream"));
    assert!(text.accepts("application/json"));
    assert!(!text.accepts("image/png"));

    // The most specific range decides, and q=0 refuses.
    let refuse = with_header("Accept", "*/*, text/event-stream; q=0.000");
    assert!(!refuse.accepts("text/event-stream"));
    assert!(refuse.accepts("application/json"));

    // Several Accept lines form one list; no Accept lists nothing.
    let split = one_request(
        b"GET / HTTP/1.1\r\nAccept: application/json\r\nAccept: text/event-stream\r\n\r\n",
    );
    assert!(split.accepts("text/event-stream"));
    assert!(!one_request(b"GET / HTTP/1.1\r\n\r\n").accepts("application/json"));

    // Asked together (one read of the header), each type is answered as
    // asked alone.
    let media = ["application/json", "text/event-stream", "text/html", "bad"];
    for r in [&both, &any, &text, &refuse, &split] {
        for a in media {
            for b in media {
                assert_eq!(
                    r.accepts_all([a, b]),
                    r.accepts(a) && r.accepts(b),
                    "{a} {b}"
                );
            }
        }
        assert!(r.accepts_all([]));
    }
}

/// A client's usual Accept (no parameter, no wildcard) is answered by the
/// bytewise reading, anything else by the full one; on any Accept lines the
/// two answer alike.
#[test]
fn the_plain_accept_reading_agrees_with_the_full_one() {
    let wants = |a: &'static str, b: &'static str| {
        [a, b].map(|m| m.split_once('/').map(|(t, s)| (ows(t), ows(s))))
    };
    let usual = with_header("Accept", "application/json, text/event-stream");
    let pair = ["application/json", "text/event-stream"];
    assert_eq!(usual.accepts_plain(&pair), Some(true));
    assert_eq!(usual.accepts_plain(&["text/html"]), None);
    assert_eq!(with_header("Accept", "text/*").accepts_plain(&pair), None);
    assert_eq!(with_header("Accept", "a/b;q=1").accepts_plain(&pair), None);
    assert_eq!(with_header("Accept", "bad").accepts_plain(&["bad"]), None);

    let tokens = [
        "application",
        "APPLICATION",
        "json",
        "Json",
        "text",
        "event-stream",
        "html",
        "*",
        "/",
        "/",
        ",",
        ",",
        ";",
        " ",
        "\t",
        "q=0",
        "q=0.0",
        "q=1",
        "q",
        "=",
        "0",
        "a",
        "application/json",
        "text/event-stream",
        "text/html",
        ", ",
        ", ",
        ",",
    ];
    let media = [
        ("application/json", "text/event-stream"),
        ("text/event-stream", "text/event-stream"),
        ("text/html", "application/json"),
        ("bad", "application/json"),
        (" text / html ", "*/*"),
        ("/", "a/"),
        ("json", "application/json"),
        ("application/json", "application/json"),
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let (mut plain, mut full) = (0, 0);
    for _ in 0..20_000 {
        // Token soup, or a list of media types as clients write them.
        let lists = [
            "application/json",
            "text/event-stream",
            "text/html",
            "Application/JSON",
            " ",
            "\t",
        ];
        let mut value = || {
            if next(2) == 0 {
                (0..next(12))
                    .map(|_| tokens[next(tokens.len())])
                    .collect::<String>()
            } else {
                (0..next(4))
                    .map(|_| lists[next(lists.len())])
                    .collect::<Vec<_>>()
                    .join(if next(2) == 0 { ", " } else { "," })
            }
        };
        let (first, second) = (value(), value());
        let head = if next(3) == 0 {
            format!("GET / HTTP/1.1\r\nAccept: {first}\r\nAccept: {second}\r\n\r\n")
        } else {
            format!("GET / HTTP/1.1\r\nAccept: {first}{second}\r\n\r\n")
        };
        let mut p = parser();
        p.feed(head.as_bytes());
        let Ok(Some(Event::Request(r))) = p.next_event() else {
            continue;
        };
        for (a, b) in media {
            let w = wants(a, b);
            let answer = r.accepts_ranges(&w);
            match r.accepts_plain(&[a, b]) {
                Some(fast) => {
                    plain += 1;
                    assert_eq!(fast, answer, "{head:?} {a} {b}");
                }
                None => full += 1,
            }
            assert_eq!(r.accepts_all([a, b]), answer, "{head:?} {a} {b}");
        }
    }
    // Both readings were really compared, many times.
    assert!(plain > 2_000 && full > 10_000, "plain {plain}, full {full}");
}

#[test]
fn query_parameters_are_percent_decoded() {
    let r =
        one_request(b"GET /messages?x=1&session_id=abc%20d&plus=a+b&bad=%zz&flag HTTP/1.1\r\n\r\n");
    assert_eq!(r.path(), "/messages");
    assert_eq!(r.query_param("session_id").as_deref(), Some("abc d"));
    assert_eq!(r.query_param("plus").as_deref(), Some("a b"));
    assert_eq!(r.query_param("bad").as_deref(), Some("%zz"));
    assert_eq!(r.query_param("flag").as_deref(), Some(""));
    assert_eq!(r.query_param("missing"), None);
    let enc = one_request(b"GET /?session%5Fid=%E2%9C%93 HTTP/1.1\r\n\r\n");
    assert_eq!(enc.query_param("session_id").as_deref(), Some("\u{2713}"));
}

#[test]
fn path_strips_the_query_and_an_absolute_form_authority() {
    assert_eq!(one_request(b"GET /mcp HTTP/1.1\r\n\r\n").path(), "/mcp");
    assert_eq!(
        one_request(b"GET http://relay:8080/mcp?a=b HTTP/1.1\r\n\r\n").path(),
        "/mcp"
    );
    assert_eq!(
        one_request(b"GET HTTP://relay HTTP/1.1\r\n\r\n").path(),
        "/"
    );
    assert_eq!(one_request(b"OPTIONS * HTTP/1.1\r\n\r\n").path(), "*");
}

#[test]
fn a_slowloris_that_never_ends_its_head_costs_linear_work() {
    let mut p = parser();
    let mut fed = 0;
    p.feed(b"GET / HTTP/1.1\r\n");
    let verdict = loop {
        // Short lines, so line feeds keep the scanner busy.
        let b = if fed % 20 == 19 { b'\n' } else { b'a' };
        p.feed(&[b]);
        fed += 1;
        match p.next_event() {
            Ok(None) => continue,
            other => break other,
        }
    };
    assert_eq!(verdict, Err(Error::HeaderTooLarge));
    assert_eq!(fed, 16 * 1024 - 16 + 1);
    // Each byte scanned about once, plus httparse over the request line.
    assert!(p.work <= 2 * 16 * 1024, "work {}", p.work);
}

#[test]
fn a_slowloris_request_under_the_limits_parses_with_linear_work() {
    let mut raw = String::from("GET / HTTP/1.1\r\n");
    for i in 0..60 {
        raw.push_str(&format!("X-Pad-{i}: {}\r\n", "a".repeat(200)));
    }
    raw.push_str("\r\n");
    assert!(raw.len() < 16 * 1024);
    let mut p = parser();
    for b in raw.as_bytes() {
        assert_eq!(p.next_event(), Ok(None));
        p.feed(&[*b]);
    }
    assert!(matches!(p.next_event(), Ok(Some(Event::Request(r))) if r.headers().len() == 60));
    assert!(
        p.work <= 4 * raw.len(),
        "work {} for {} bytes",
        p.work,
        raw.len()
    );
}

#[test]
fn the_buffer_stays_within_head_limit_plus_one_read() {
    let mut p = small(1024, 4096);
    let read = [b'a'; 700];
    p.feed(b"GET / HTTP/1.1\r\nX: ");
    for _ in 0..10 {
        p.feed(&read);
        assert!(p.buffered() <= 1024 + read.len());
        if p.next_event().is_err() {
            break;
        }
    }
    assert_eq!(p.next_event(), Err(Error::HeaderTooLarge));
    assert_eq!(p.buffered(), 0);
}

/// Optional whitespace is SP and HTAB only, at either end; what is between
/// (and any other blank, e.g. a no-break space) stays.
#[test]
fn ows_trims_only_spaces_and_tabs_at_the_ends() {
    use crate::proto::http1::ows;
    assert_eq!(ows("  a b\t "), "a b");
    assert_eq!(ows(" \t "), "");
    assert_eq!(ows(""), "");
    assert_eq!(ows("\u{e9} "), "\u{e9}");
    assert_eq!(ows("\u{a0}x\u{a0}"), "\u{a0}x\u{a0}");
    assert_eq!(ows("\r\nx"), "\r\nx");
}
