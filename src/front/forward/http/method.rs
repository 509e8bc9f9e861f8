//! Which method a client line names, without parsing most lines.

use crate::proto::jsonrpc::{self, Kind, Message};

/// Whether a client line is a request or notification for `method`. A line
/// is parsed only if it could name the method: it contains the name as is,
/// or a JSON escape that could spell it (`\u`, or `\/` for a `/`). The
/// common message (a call whose text does not name it) is parsed once, by
/// the front.
pub(super) fn is_method(line: &[u8], method: &str) -> bool {
    let may_name = memchr::memmem::find(line, method.as_bytes()).is_some()
        || memchr::memmem::find(line, b"\\u").is_some()
        || (method.contains('/') && memchr::memmem::find(line, b"\\/").is_some());
    may_name
        && matches!(jsonrpc::peek(line), Ok(Message::Single(env)) if env.method_is(method) && env.kind() != Kind::Response)
}

#[cfg(test)]
mod tests {
    use super::is_method;

    #[test]
    fn method_check_sees_plain_and_escaped_names_only() {
        let plain = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
        let escaped = br#"{"jsonrpc":"2.0","id":1,"method":"initiali\u007ae","params":{}}"#;
        let slash = br#"{"jsonrpc":"2.0","method":"notifications\/initialized"}"#;
        let call =
            br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"initialize"}}"#;
        let reply = br#"{"jsonrpc":"2.0","id":3,"result":{"method":"initialize"}}"#;
        assert!(is_method(plain, "initialize"));
        assert!(is_method(escaped, "initialize"));
        assert!(is_method(slash, "notifications/initialized"));
        assert!(
            !is_method(call, "initialize"),
            "a name in the text is not the method"
        );
        assert!(!is_method(reply, "initialize"), "responses have no method");
        assert!(!is_method(plain, "notifications/initialized"));
    }
}
