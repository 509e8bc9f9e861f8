//! The tool filter (`mcp::tools_filter`): globs, the verdict on a client
//! message and the rewrite of a `tools/list` reply.
//!
//! Input: a first line of globs separated by spaces (`!GLOB` goes to the
//! deny list, anything else to the allow list; bad globs are dropped, as
//! the relay would refuse them at start), then the message, used both as a
//! client message and as a `tools/list` reply.
//!
//! Checks: no panic on any bytes. `inspect`: a `tools/call` whose one
//! `params.name` (read as serde_json reads it) is not allowed is never
//! `Pass`; a `Pass` on a `tools/call` means its name was read and is
//! allowed. `filter_list_reply`: a rewrite is valid JSON; every tool left
//! has an allowed string name; the tools left are the input's, in order;
//! exactly `hidden` were removed; everything outside `result.tools` is
//! unchanged; filtering the rewrite again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_relay::mcp::tools_filter::{Glob, ListReply, ToolFilter, Verdict};
use serde::de::IgnoredAny;
use serde_json::Value;

fn without_tools(mut v: Value) -> Value {
    if let Some(r) = v.get_mut("result").and_then(Value::as_object_mut) {
        r.remove("tools");
    }
    v
}

fuzz_target!(|data: &[u8]| {
    let (spec, msg) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let spec = String::from_utf8_lossy(spec);
    let (mut allow, mut deny) = (Vec::new(), Vec::new());
    for g in spec.split(' ').filter(|g| !g.is_empty()) {
        let (list, g) = match g.strip_prefix('!') {
            Some(d) => (&mut deny, d),
            None => (&mut allow, g),
        };
        if let Ok(glob) = Glob::new(g) {
            // A glob always matches the text it is made of when it has no
            // special characters.
            if !g.contains(['*', '?', '[', '\\']) {
                assert!(glob.matches(g), "{g:?} does not match itself");
            }
            let _ = glob.matches(&String::from_utf8_lossy(msg));
            list.push(g.to_owned());
        }
    }
    let Ok(f) = ToolFilter::new(&allow, &deny) else {
        return;
    };

    let verdict = f.inspect(msg);
    let value: Option<Value> = serde_json::from_slice(msg).ok();
    if f.is_active()
        && let Some(v) = &value
        && v.get("method").and_then(Value::as_str) == Some("tools/call")
    {
        let name = v.pointer("/params/name").and_then(Value::as_str);
        match (&verdict, name) {
            (Verdict::Pass, Some(n)) => assert!(f.allows(n), "{n:?} passed"),
            (Verdict::Pass, None) => panic!("a tools/call without a name passed"),
            _ => {}
        }
        if let Some(n) = name
            && !f.allows(n)
        {
            assert!(matches!(verdict, Verdict::Deny(_)), "{n:?}: {verdict:?}");
        }
    }

    match f.filter_list_reply(msg) {
        ListReply::Unchanged | ListReply::Unreadable => {}
        ListReply::Rewritten { bytes, hidden } => {
            serde_json::from_slice::<IgnoredAny>(&bytes).expect("a rewrite is JSON");
            assert_eq!(f.filter_list_reply(&bytes), ListReply::Unchanged);
            // A `Value` refuses numbers beyond f64 (1e400), which the
            // filter passes as they are: compare trees only when both parse.
            let (Some(input), Ok(out)) = (value, serde_json::from_slice::<Value>(&bytes)) else {
                return;
            };
            let tools_in = input["result"]["tools"].as_array().expect("tools in");
            let tools_out = out["result"]["tools"].as_array().expect("tools out");
            assert_eq!(tools_in.len() - tools_out.len(), hidden);
            let mut rest = tools_in.iter();
            for t in tools_out {
                let name = t["name"].as_str().expect("a kept tool has a name");
                assert!(f.allows(name), "{name:?} kept");
                assert!(rest.any(|x| x == t), "{t} is not one of the input's, in order");
            }
            assert_eq!(without_tools(out), without_tools(input));
        }
    }
});
