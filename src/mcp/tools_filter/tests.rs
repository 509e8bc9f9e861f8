use super::*;

fn filter(allow: &[&str], deny: &[&str]) -> ToolFilter {
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    ToolFilter::new(&v(allow), &v(deny)).expect("valid globs")
}

fn g(p: &str) -> Glob {
    Glob::new(p).expect("valid glob")
}

#[test]
fn globs_match_whole_names() {
    assert!(g("echo").matches("echo"));
    assert!(!g("echo").matches("echo2"));
    assert!(!g("echo").matches("Echo"), "case-sensitive");
    assert!(g("*").matches(""));
    assert!(g("*").matches("anything"));
    assert!(g("secret_*").matches("secret_"));
    assert!(g("secret_*").matches("secret_delete"));
    assert!(!g("secret_*").matches("a_secret_delete"));
    assert!(g("*_delete").matches("secret_delete"));
    assert!(g("*e*e*").matches("secret_delete"));
    assert!(!g("*x*").matches("secret_delete"));
    assert!(g("a*b*c").matches("aXbYbZc"));
    assert!(!g("a*b*c").matches("aXbYbZ"));
    assert!(g("fs.?ead").matches("fs.read"));
    assert!(!g("fs.?ead").matches("fs.ead"));
    assert!(g("??").matches("é✓"), "? is one character, not one byte");
    assert!(g("get_[a-c]").matches("get_b"));
    assert!(!g("get_[a-c]").matches("get_d"));
    assert!(g("get_[!a-c]").matches("get_d"));
    assert!(g("get_[^a-c]").matches("get_d"));
    assert!(!g("get_[^a-c]").matches("get_a"));
    assert!(g("[]]").matches("]"), "] first in a class is a member");
    assert!(g("[a-]").matches("-"), "- last in a class is a member");
    assert!(g(r"lit\*").matches("lit*"));
    assert!(!g(r"lit\*").matches("litX"));
    assert!(g(r"[\]]x").matches("]x"));
    assert!(g("**a").matches("a"), "stars collapse");
}

#[test]
fn bad_globs_are_refused_with_a_reason() {
    for bad in ["", "[abc", "a\\", "[z-a]", "[\\"] {
        assert!(Glob::new(bad).is_err(), "{bad:?} must be refused");
    }
    assert!(Glob::new(&"a".repeat(MAX_GLOB + 1)).is_err());
    assert!(Glob::new(&"a".repeat(MAX_GLOB)).is_ok());
    let many: Vec<String> = (0..=MAX_GLOBS).map(|i| format!("t{i}")).collect();
    assert!(ToolFilter::new(&many, &[]).is_err());
    assert!(ToolFilter::new(&[], &many).is_err());
    let e = ToolFilter::new(&["ok".into()], &["[x".into()]).unwrap_err();
    assert!(e.contains("[x"), "{e}");
}

#[test]
fn allow_then_deny_and_deny_wins() {
    let none = ToolFilter::default();
    assert!(!none.is_active());
    assert!(none.allows("anything"));
    let deny_only = filter(&[], &["secret_*"]);
    assert!(deny_only.is_active());
    assert!(deny_only.allows("echo"));
    assert!(!deny_only.allows("secret_delete"));
    let allow_only = filter(&["echo", "fs_*"], &[]);
    assert!(allow_only.allows("echo"));
    assert!(allow_only.allows("fs_read"));
    assert!(!allow_only.allows("secret_delete"));
    let both = filter(&["*"], &["fs_write"]);
    assert!(both.allows("fs_read"));
    assert!(!both.allows("fs_write"), "deny wins over allow");
    assert!(
        !both.allows(&"x".repeat(MAX_TOOL_NAME + 1)),
        "overlong names fail closed"
    );
    assert!(both.allows(&"x".repeat(MAX_TOOL_NAME)));
}

fn call(name_json: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":{name_json},"arguments":{{}}}}}}"#)
        .into_bytes()
}

#[test]
fn calls_are_decided_by_name() {
    let f = filter(&[], &["secret_*"]);
    assert_eq!(f.inspect(&call(r#""echo""#)), Verdict::Pass);
    match f.inspect(&call(r#""secret_delete""#)) {
        Verdict::Deny(d) => {
            assert_eq!(d.tool.as_deref(), Some("secret_delete"));
            assert_eq!(
                d.message(),
                "Tool \"secret_delete\" is not allowed by the relay's tool filter"
            );
        }
        v => panic!("expected a denial, got {v:?}"),
    }
    // Escapes are read as the server reads them.
    assert!(matches!(
        f.inspect(&call(r#""secret\u005fdelete""#)),
        Verdict::Deny(_)
    ));
    // The method itself may be escaped.
    let escaped =
        br#"{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"secret_x"}}"#;
    assert!(matches!(f.inspect(escaped), Verdict::Deny(_)));
    // Other methods pass; tools/list is marked for its reply.
    assert_eq!(
        f.inspect(br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#),
        Verdict::List
    );
    assert_eq!(
        f.inspect(br#"{"jsonrpc":"2.0","id":2,"method":"ping","params":{"name":"secret_x"}}"#),
        Verdict::Pass
    );
    // A notification naming a denied tool is denied too (it is dropped).
    assert!(matches!(
        f.inspect(br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"secret_x"}}"#),
        Verdict::Deny(_)
    ));
    // Without a filter nothing is even parsed.
    assert_eq!(
        ToolFilter::default().inspect(&call(r#""secret_delete""#)),
        Verdict::Pass
    );
    assert_eq!(ToolFilter::default().inspect(b"\xff"), Verdict::Pass);
}

#[test]
fn calls_that_cannot_be_read_without_doubt_are_denied() {
    let f = filter(&["echo"], &[]);
    let denied = |msg: &[u8]| matches!(f.inspect(msg), Verdict::Deny(_));
    // Duplicate members: parsers disagree on which one wins.
    assert!(denied(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"secret"}}"#
    ));
    assert!(denied(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"secret"},"params":{"name":"echo"}}"#
    ));
    assert!(denied(
        br#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"secret"}}"#
    ));
    // The same member twice, once escaped.
    assert!(denied(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","n\u0061me":"secret"}}"#
    ));
    // No name, a name that is not a string, params that are not an object.
    assert!(denied(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
    assert!(denied(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#
    ));
    assert!(denied(&call("7")));
    assert!(denied(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["secret"]}"#
    ));
    assert!(denied(b"\xff\xfe"));
    assert!(!denied(&call(r#""echo""#)));
}

#[test]
fn list_replies_lose_hidden_tools_and_keep_every_other_byte() {
    let f = filter(&[], &["secret_*"]);
    let reply = br#"{"jsonrpc":"2.0", "id":3,"result":{ "tools" : [ {"name":"echo","inputSchema":{"type":"object"}} , {"description":"x","name":"secret_delete"},{"name":"other", "title":"O"} ], "nextCursor":"c2"} ,"z":1}"#;
    match f.filter_list_reply(reply) {
        ListReply::Rewritten { bytes, hidden } => {
            assert_eq!(hidden, 1);
            assert_eq!(
                std::str::from_utf8(&bytes).unwrap(),
                r#"{"jsonrpc":"2.0", "id":3,"result":{ "tools" : [{"name":"echo","inputSchema":{"type":"object"}},{"name":"other", "title":"O"}], "nextCursor":"c2"} ,"z":1}"#
            );
        }
        other => panic!("expected a rewrite, got {other:?}"),
    }
    // Nothing hidden: the reply passes as it is.
    let clean = br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo"}]}}"#;
    assert_eq!(f.filter_list_reply(clean), ListReply::Unchanged);
    // Every tool hidden: an empty list.
    let all =
        br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"secret_a"},{"name":"secret_b"}]}}"#;
    assert_eq!(
        f.filter_list_reply(all),
        ListReply::Rewritten {
            bytes: br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}"#.to_vec(),
            hidden: 2
        }
    );
    // Errors and results without a tools array have nothing to hide.
    for unchanged in [
        &br#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"no"}}"#[..],
        br#"{"jsonrpc":"2.0","id":3,"result":{}}"#,
        br#"{"jsonrpc":"2.0","id":3,"result":5}"#,
        br#"{"jsonrpc":"2.0","id":3,"result":{"tools":{"secret_a":{}}}}"#,
    ] {
        assert_eq!(f.filter_list_reply(unchanged), ListReply::Unchanged);
    }
    // The default filter never looks.
    assert_eq!(
        ToolFilter::default().filter_list_reply(all),
        ListReply::Unchanged
    );
}

#[test]
fn list_entries_without_one_readable_name_are_hidden() {
    let f = filter(&[], &["secret_*"]);
    let reply = br#"{"id":1,"result":{"tools":[{"name":"echo"},{"name":"echo","name":"secret_x"},{"title":"no name"},{"name":3},"str",{"name":"ok"}]}}"#;
    match f.filter_list_reply(reply) {
        ListReply::Rewritten { bytes, hidden } => {
            assert_eq!(hidden, 4);
            assert_eq!(
                bytes,
                br#"{"id":1,"result":{"tools":[{"name":"echo"},{"name":"ok"}]}}"#
            );
        }
        other => panic!("expected a rewrite, got {other:?}"),
    }
}

#[test]
fn ambiguous_list_replies_are_unreadable() {
    let f = filter(&["echo"], &[]);
    for bad in [
        &br#"{"id":1,"result":{"tools":[]},"result":{"tools":[{"name":"secret"}]}}"#[..],
        br#"{"id":1,"result":{"tools":[],"tools":[{"name":"secret"}]}}"#,
        br#"{"id":1,"result":{"tools":[{"name":"secret"}]},"error":{"code":1,"message":"x"}}"#,
        b"\xff",
        b"[1]",
    ] {
        assert_eq!(
            f.filter_list_reply(bad),
            ListReply::Unreadable,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// Randomized check of the matcher against a plain recursive one.
#[test]
fn matcher_agrees_with_a_reference() {
    fn reference(p: &[Tok], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((Tok::Star, rest)) => (0..=n.len()).any(|i| reference(rest, &n[i..])),
            Some((t, rest)) => match n.split_first() {
                None => false,
                Some((c, nrest)) => {
                    let ok = match t {
                        Tok::Lit(l) => l == c,
                        Tok::One => true,
                        Tok::Class { neg, ranges } => {
                            ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(c)) != *neg
                        }
                        Tok::Star => unreachable!(),
                    };
                    ok && reference(rest, nrest)
                }
            },
        }
    }
    let mut rng = crate::policy::backoff::Rng::seeded(7);
    let pat_chars = ['a', 'b', '*', '?', '[', ']', '!', '-'];
    let name_chars = ['a', 'b', 'c', '-', ']'];
    let mut checked = 0;
    for _ in 0..20_000 {
        let plen = (rng.next_u64() % 7) as usize;
        let pat: String = (0..plen)
            .map(|_| pat_chars[(rng.next_u64() % pat_chars.len() as u64) as usize])
            .collect();
        let Ok(glob) = Glob::new(&pat) else { continue };
        let nlen = (rng.next_u64() % 7) as usize;
        let name: Vec<char> = (0..nlen)
            .map(|_| name_chars[(rng.next_u64() % name_chars.len() as u64) as usize])
            .collect();
        assert_eq!(
            glob.matches_chars(&name),
            reference(&glob.toks, &name),
            "glob {pat:?} on {:?}",
            name.iter().collect::<String>()
        );
        checked += 1;
    }
    assert!(checked > 5_000, "only {checked} valid globs");
}
