//! JSON objects built out of line.
//!
//! `serde_json::json!` expands every member into a key allocation, a map
//! insert and a `to_value(..).unwrap()` at the call site. The relay builds
//! small objects (error `data`, its own messages) in many places that are
//! not on a per-request path; [`object`] builds them in one function per
//! member count, the call site only converting its values (`Value::from`).

use serde_json::{Map, Value};

/// `{"k1": v1, "k2": v2, …}`, members inserted in order (a repeated key
/// keeps the last value, as with `json!`).
#[inline(never)]
pub fn object<const N: usize>(members: [(&str, Value); N]) -> Value {
    let mut m = Map::new();
    for (k, v) in members {
        m.insert(k.to_owned(), v);
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_what_json_builds() {
        assert_eq!(
            object([("status", Value::from(404u16))]),
            json!({"status": 404})
        );
        assert_eq!(
            object([
                ("status", Value::from("exited")),
                ("exit_code", Value::from(None::<i32>)),
            ]),
            json!({"status": "exited", "exit_code": null})
        );
        assert_eq!(
            object([("a", Value::from(1)), ("a", Value::from(2))]),
            json!({"a": 1, "a": 2})
        );
        assert_eq!(object([]), json!({}));
    }
}
