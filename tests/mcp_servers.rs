//! `reverse --config FILE` with the `mcpServers` object MCP hosts keep their
//! servers in (issue 15): a command server (`command`, `args`, `env`) and a
//! URL server (`url`, `headers`) from one unchanged host config, each served
//! on `/mcp/NAME`; `env` reaches the child, `headers` reach the URL upstream;
//! unknown keys are reported by name.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::fake::{Fake, handler, reply_to};
use common::http::{Http, mcp_headers};
use common::relay::Relay;
use common::{RELAY, SHORT, echo_server, initialize, initialized};

/// A scratch directory for one test, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(test: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("mcp-relay-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        Dir(d)
    }

    fn write(&self, name: &str, doc: &Value) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, serde_json::to_vec_pretty(doc).expect("json")).expect("write");
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// initialize + initialized on `/mcp/NAME`, then one `tools/call` of echo:
/// returns the echoed text.
fn echo_through(port: u16, name: &str, text: &str) -> String {
    let path = format!("/mcp/{name}");
    let mut h = Http::connect(port);
    let body = serde_json::to_vec(&initialize(json!(0))).expect("json");
    let r = h.request("POST", &path, &mcp_headers(None), &body);
    assert_eq!(r.status(), 200, "initialize on {path}: {r:?}");
    let sid = r.header("mcp-session-id").expect("session id").to_string();
    let body = serde_json::to_vec(&initialized()).expect("json");
    let r = h.request("POST", &path, &mcp_headers(Some(&sid)), &body);
    assert_eq!(r.status(), 202, "initialized on {path}: {r:?}");
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"text": text}}});
    let body = serde_json::to_vec(&call).expect("json");
    let r = h.request("POST", &path, &mcp_headers(Some(&sid)), &body);
    assert_eq!(r.status(), 200, "tools/call on {path}: {r:?}");
    let reply = r.rpc();
    reply["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no echo text in {reply}"))
        .to_owned()
}

#[test]
fn an_mcp_servers_config_serves_each_server_on_its_route() {
    let dir = Dir::new("mcp-servers");
    // The URL server: answers every POST, has no GET stream.
    let fake = Fake::start(handler(|req, conn| match req.method.as_str() {
        "POST" => {
            let msg = req.json();
            match reply_to(&msg) {
                Some(reply) if msg["method"] == "initialize" => {
                    conn.json(&[("mcp-session-id", "up-1")], &reply)
                }
                Some(reply) => conn.json(&[], &reply),
                None => conn.accepted(),
            }
        }
        "DELETE" => conn.respond(200, &[], b""),
        _ => conn.respond(405, &[("Allow", "POST, DELETE")], b""),
    }));
    // The command server: a shell that writes the variable it was given to a
    // file, then becomes the echo server.
    let env_file = dir.0.join("env-seen");
    let script = format!(
        "printf '%s' \"$RELAY_TEST_SECRET\" > '{}'; exec '{}'",
        env_file.display(),
        echo_server().display()
    );
    // As a host keeps it: `type` and all.
    let cfg = dir.write(
        "claude_desktop_config.json",
        &json!({
            "mcpServers": {
                "local": {
                    "command": "/bin/sh",
                    "args": ["-c", script],
                    "env": {"RELAY_TEST_SECRET": "s3cret value ✓"}
                },
                "remote": {
                    "type": "http",
                    "url": fake.url(),
                    "headers": {"Authorization": "Bearer tok-123", "X-Team": "blue"}
                }
            }
        }),
    );
    let relay = Relay::reverse("unused")
        .args([std::ffi::OsStr::new("--config"), cfg.as_os_str()])
        .start();

    assert_eq!(echo_through(relay.port, "local", "to local"), "to local");
    let seen = std::fs::read_to_string(&env_file).expect("the child wrote its env");
    assert_eq!(seen, "s3cret value ✓", "env reached the child");

    assert_eq!(echo_through(relay.port, "remote", "to remote"), "to remote");
    // initialize, notifications/initialized, tools/call: the relay may send
    // `initialized` after the call's answer reached the client, so the
    // fake's log is read until it holds all three (bounded: SHORT).
    let deadline = Instant::now() + SHORT;
    let posts = loop {
        let posts: Vec<_> = fake
            .seen()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect();
        if posts.len() >= 3 || Instant::now() >= deadline {
            break posts;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(posts.len() >= 3, "{posts:?}");
    for r in &posts {
        assert_eq!(
            r.header("authorization"),
            Some("Bearer tok-123"),
            "{}",
            r.summary()
        );
        assert_eq!(r.header("x-team"), Some("blue"), "{}", r.summary());
    }
    // Each name is its own route; the bare path is not one.
    let mut h = Http::connect(relay.port);
    let body = serde_json::to_vec(&initialize(json!(0))).expect("json");
    assert_eq!(
        h.request("POST", "/mcp/nope", &mcp_headers(None), &body)
            .status(),
        404
    );
}

/// `mcp-relay reverse --config FILE`: exit status and stderr, bounded.
fn refused(cfg: &std::path::Path) -> (Option<i32>, String) {
    let mut child = Command::new(RELAY)
        .args(["reverse", "--listen", "127.0.0.1:0", "--config"])
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + SHORT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("relay started with a bad config");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_mcp_servers_config_reports_unknown_and_bad_keys_by_name() {
    let dir = Dir::new("mcp-servers-bad");
    let cases = [
        (
            json!({"mcpServers": {"a": {"command": "srv", "argz": ["x"]}}}),
            "mcpServers.a.argz: unknown key (did you mean args?)",
        ),
        (
            json!({"mcpServers": {"a": {"command": ["srv", "x"]}}}),
            "mcpServers.a.command: must be a string (the program; its arguments go in args)",
        ),
        (
            json!({"mcpServers": {"a": {"command": "srv", "env": {"K": 1}}}}),
            "mcpServers.a.env.K: expected a string",
        ),
        (
            json!({"mcpServers": {"a": {"url": "http://127.0.0.1:9/mcp", "env": {"K": "v"}}}}),
            "mcpServers.a.env: only applies to a command server",
        ),
        (
            json!({"mcpServers": {"a": {"command": "srv"}}, "upstreams": {"a": {"command": ["s"]}}}),
            "mcpServers.a: the name is also in upstreams",
        ),
    ];
    for (doc, expected) in cases {
        let cfg = dir.write("bad.json", &doc);
        let (code, stderr) = refused(&cfg);
        assert_ne!(code, Some(0), "{doc}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{doc}: expected {expected:?} in:\n{stderr}"
        );
    }
}
