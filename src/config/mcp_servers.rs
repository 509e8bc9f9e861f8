//! The `mcpServers` object MCP hosts (Claude Desktop, Cursor, VS Code, …)
//! keep their servers in, read as it is:
//!
//! ```json
//! { "mcpServers": {
//!     "files":  { "command": "npx", "args": ["-y", "@scope/server"], "env": {"K": "v"} },
//!     "remote": { "type": "http", "url": "https://mcp.example.com/mcp",
//!                 "headers": {"Authorization": "Bearer …"} } } }
//! ```
//!
//! Each entry becomes an upstream served on `/mcp/NAME`, exactly as if it
//! had been written in `upstreams` (`command` + `args` become the argv);
//! the relay's own upstream keys may sit beside the host's ones.

use serde_json::{Map, Value};

/// Keys of a host's server entry that `upstreams` entries do not have.
pub const HOST_KEYS: &[&str] = &["args", "type", "disabled"];

/// One `mcpServers` entry rewritten as an `upstreams` entry, or `None` when
/// the host marks it `"disabled": true`. `at` is `mcpServers.NAME`.
pub fn as_upstream(v: &Value, at: &str) -> Result<Option<Map<String, Value>>, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{at}: must be an object"))?;
    match obj.get("disabled") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => return Ok(None),
        Some(_) => return Err(format!("{at}.disabled: expected true or false")),
    }
    let is_command = obj.contains_key("command");
    if let Some(t) = obj.get("type") {
        let t = t
            .as_str()
            .ok_or_else(|| format!("{at}.type: expected a string"))?;
        match (t, is_command) {
            ("stdio", true) | ("http" | "streamable-http" | "streamableHttp", false) => {}
            ("sse", _) => {
                return Err(format!(
                    "{at}.type: \"sse\" (legacy HTTP+SSE) servers are reached with \
                     `mcp-relay forward --url`; reverse serves stdio and Streamable HTTP servers"
                ));
            }
            ("stdio", false) => return Err(format!("{at}.type: \"stdio\" needs a command")),
            ("http" | "streamable-http" | "streamableHttp", true) => {
                return Err(format!("{at}.type: {t:?} needs a url, not a command"));
            }
            _ => {
                return Err(format!(
                    "{at}.type: expected stdio, http or streamable-http, got {t:?}"
                ));
            }
        }
    }
    let mut out = Map::new();
    for (key, value) in obj {
        match key.as_str() {
            "type" | "disabled" | "args" => {}
            "command" => {
                let program = value.as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
                    format!(
                        "{at}.command: must be a string (the program; its arguments go in args)"
                    )
                })?;
                let mut argv = vec![Value::String(program.to_owned())];
                if let Some(args) = obj.get("args") {
                    let args = args
                        .as_array()
                        .ok_or_else(|| format!("{at}.args: must be an array of strings"))?;
                    for a in args {
                        if !a.is_string() {
                            return Err(format!("{at}.args: must be an array of strings"));
                        }
                        argv.push(a.clone());
                    }
                }
                out.insert("command".into(), Value::Array(argv));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if obj.contains_key("args") && !is_command {
        return Err(format!("{at}.args: only applies to a command server"));
    }
    Ok(Some(out))
}
