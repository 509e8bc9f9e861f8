//! A tiny MCP server over stdio, used as the upstream child by mcp-relay's
//! tests and benchmarks.
//!
//! It speaks newline-delimited JSON-RPC 2.0 on stdin/stdout (one message per
//! line, batches as JSON arrays) and implements `initialize`, `ping`,
//! `tools/list` and `tools/call` for a single tool, `echo`, which returns its
//! `text` argument. `echo` optionally sends `progress` progress notifications
//! (`interval_ms` apart) when the request carries `_meta.progressToken`, and
//! never answers when `hang` is true; `repeat` echoes the text that many
//! times. Invalid JSON is logged to stderr and
//! ignored; unknown methods get error -32601.
//!
//! Switches, used to simulate misbehaving servers:
//!
//! - `--single-shot`: exit 0 right after answering the first request.
//! - `--crash-after N`: answer N requests, then print `crashing` to stderr and
//!   exit 3 on receiving the next one.
//! - `--delay-ms N`: sleep N ms before answering each request but `initialize`.
//! - `--never-answer`: answer only `initialize` and `ping`.
//! - `--stderr-flood`: a thread writes ~200-byte lines to stderr forever
//!   (blocking once nobody drains the pipe).
//! - `--log FILE`: append every raw line received on stdin to FILE.
//! - `--banner`: first print a non-JSON banner line on stdout.
//! - `--ignore-stdin-eof`: on stdin EOF sleep forever instead of exiting.
//! - `--ignore-sigterm`: ignore SIGTERM.
//! - `--exit-code N`: exit status on stdin EOF (default 0).
//! - `--invalid-utf8`: every `tools/call` reply carries a byte that is not
//!   UTF-8 (0xFF) in its text.
//! - `--pretty` (issue 11, classes 1 and 12): every `tools/call` reply is
//!   written pretty-printed over several lines (raw LF): on a line-framed
//!   stdio transport that is several lines, none of them a message.
//! - `--no-read`: answer `initialize`, then never read stdin again and answer
//!   nothing: a child whose stdin pipe fills up (issue 11, class 4).
//! - `--log-injection` (issue 11, class 11): two threads write, as fast as
//!   the pipes take them, lines that are not JSON-RPC to stdout and lines to
//!   stderr, both full of ESC sequences, CR, NUL, DEL, a C1 control and
//!   invalid UTF-8. Requests are still answered.
//! - `--setsid-grandchild` (issue 11, class 13): at start, fork a grandchild
//!   that calls `setsid()` (leaving the server's process group and session),
//!   points its stdio at /dev/null and sleeps forever; its pid is printed to
//!   stderr as `echo-server: grandchild pid N`.
//! - `--log-during-call`: before answering a `tools/call`, send a
//!   `notifications/message` (level `info`) whose data carries the call's
//!   `text` (a secret of the session that made the call; issue 11, class 9).
//! - `--respell-ids`: write every numeric reply id as the f64 it parses to
//!   (`1e0` → `1.0`, `-0` → `-0.0`, 2^64 → `1.8446744073709552e19`), as a
//!   server that re-serialises ids would (issue 11, class 13).
//! - `--nested-batch`: send an empty batch `[]`, then every `tools/call`
//!   reply wrapped in a nested batch `[[reply]]` (issue 11, class 13).
//! - `--tools NAME,NAME,...` (issue 15, tool filtering): list these tools
//!   (instead of `echo` alone) in `tools/list`; each behaves as `echo`, so a
//!   test can tell which tools a client sees and which calls reach the
//!   server (with `--log`).
//! - `--modern` (issue 13): a dual-era server, as the 2.x SDKs' servers are on
//!   stdio. It answers `server/discover` (2026-07-28), and the first request
//!   decides the connection's era once: one carrying the modern envelope
//!   (`params._meta["io.modelcontextprotocol/protocolVersion"]`), other than
//!   `initialize`, makes it modern (then `initialize` gets -32022, a request
//!   without the envelope -32602, and every result says `resultType:
//!   "complete"`); anything else makes it handshake-era (then an enveloped
//!   request gets -32600).
//! - `--modern-only` (issue 13): `--modern`, but every connection is
//!   modern from the start: `initialize` always gets -32022, as from a
//!   server that speaks 2026-07-28 alone.
//! - `--elicit` (issue 13): a `tools/call` whose arguments carry `"ask": true`
//!   is not answered at once: the server first sends the client an
//!   `elicitation/create` request (id `"elicit-N"`), and answers the call
//!   once the client replied to it, with the text `TEXT / ACTION CONTENT`
//!   (the elicitation's `action` and `content` as JSON), or with error
//!   -32603 carrying the client's error message. On a modern connection
//!   (`--modern`) the call is answered with an `InputRequiredResult`
//!   instead (`inputRequests.q`: the same `elicitation/create`,
//!   `requestState` `"ask-state"`), and its retry carrying
//!   `inputResponses.q` and that state gets the same text.
//! - `--resources` (issue 13): declares `resources` with `subscribe` and
//!   `listChanged`; answers `resources/subscribe` and `unsubscribe` with
//!   `{}`, and right after answering a subscribe sends
//!   `notifications/resources/updated` for its URI, then
//!   `notifications/resources/list_changed`. On a modern connection
//!   (`--modern`) it declares the same in `server/discover` and answers
//!   `subscriptions/listen` instead: an acknowledgement, one
//!   `notifications/resources/updated` per URI it names, then
//!   `notifications/resources/list_changed` if asked for, each stamped with
//!   the listen's id; the listen itself is never answered.
//! - `--roots-on-subscribe`: with `--resources`, a `resources/subscribe`
//!   first sends the client a `roots/list` request (ids `roots-N`), then
//!   is answered as above (the client's answer is only logged).
//!
//! Run with `cargo run --example echo_server -- [switches]`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, StdoutLock, Write};
use std::os::fd::AsFd;
use std::process::exit;
use std::str::FromStr;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

const USAGE: &str = "usage: echo_server [--single-shot] [--crash-after N] [--delay-ms N] \
[--never-answer] [--stderr-flood] [--log FILE] [--banner] [--ignore-stdin-eof] \
[--ignore-sigterm] [--exit-code N] [--invalid-utf8] [--pretty] [--no-read] [--log-injection] \
[--setsid-grandchild] [--log-during-call] [--respell-ids] [--nested-batch] [--tools NAME,NAME,...] \
[--modern] [--modern-only] [--elicit] [--resources] [--roots-on-subscribe]";

#[derive(Default)]
struct Opts {
    single_shot: bool,
    crash_after: Option<u64>,
    delay_ms: u64,
    never_answer: bool,
    stderr_flood: bool,
    log: Option<String>,
    banner: bool,
    ignore_stdin_eof: bool,
    ignore_sigterm: bool,
    exit_code: i32,
    invalid_utf8: bool,
    pretty: bool,
    no_read: bool,
    log_injection: bool,
    setsid_grandchild: bool,
    log_during_call: bool,
    respell_ids: bool,
    nested_batch: bool,
    /// `--tools`: the tools listed and callable (default: `echo`).
    tools: Vec<String>,
    modern: bool,
    modern_only: bool,
    elicit: bool,
    resources: bool,
    roots_on_subscribe: bool,
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    exit(2)
}

fn value<T: FromStr>(arg: Option<String>) -> T {
    arg.and_then(|s| s.parse().ok()).unwrap_or_else(|| usage())
}

fn parse_args() -> Opts {
    let mut opts = Opts::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--single-shot" => opts.single_shot = true,
            "--crash-after" => opts.crash_after = Some(value(args.next())),
            "--delay-ms" => opts.delay_ms = value(args.next()),
            "--never-answer" => opts.never_answer = true,
            "--stderr-flood" => opts.stderr_flood = true,
            "--log" => opts.log = Some(value(args.next())),
            "--banner" => opts.banner = true,
            "--ignore-stdin-eof" => opts.ignore_stdin_eof = true,
            "--ignore-sigterm" => opts.ignore_sigterm = true,
            "--exit-code" => opts.exit_code = value(args.next()),
            "--invalid-utf8" => opts.invalid_utf8 = true,
            "--pretty" => opts.pretty = true,
            "--no-read" => opts.no_read = true,
            "--log-injection" => opts.log_injection = true,
            "--setsid-grandchild" => opts.setsid_grandchild = true,
            "--log-during-call" => opts.log_during_call = true,
            "--respell-ids" => opts.respell_ids = true,
            "--nested-batch" => opts.nested_batch = true,
            "--tools" => {
                let list: String = value(args.next());
                opts.tools = list.split(',').map(str::to_owned).collect();
            }
            "--modern" => opts.modern = true,
            "--modern-only" => {
                opts.modern = true;
                opts.modern_only = true;
            }
            "--elicit" => opts.elicit = true,
            "--resources" => opts.resources = true,
            "--roots-on-subscribe" => opts.roots_on_subscribe = true,
            _ => usage(),
        }
    }
    if opts.tools.is_empty() {
        opts.tools.push("echo".to_owned());
    }
    opts
}

/// Writes `flood line <n> xxx...` lines to stderr forever. Uses a duplicate of
/// fd 2 rather than `io::stderr()` so that, when the pipe is full and this
/// thread blocks, it does not hold the std stderr lock other threads need.
fn flood_stderr() {
    let Ok(fd) = io::stderr().as_fd().try_clone_to_owned() else {
        return;
    };
    let mut err = File::from(fd);
    let pad = "x".repeat(180);
    let mut line = Vec::new();
    for n in 0u64.. {
        line.clear();
        // One write per line, so lines are never split or interleaved.
        let _ = writeln!(line, "flood line {n} {pad}");
        if err.write_all(&line).is_err() {
            return;
        }
    }
}

/// Writes `line` plus a newline to stdout and flushes; exits if stdout is gone.
/// A line of hostile text for `--log-injection`: ESC sequences (colour,
/// clear screen, cursor up), CR to overwrite the line, NUL, DEL, a C1 CSI
/// (U+009B), invalid UTF-8, and a fake log line after a LF-less CR.
fn injection_line(n: u64) -> Vec<u8> {
    let mut line = Vec::new();
    let _ = write!(
        line,
        "inject {n} \x1b[31mRED\x1b[0m\x1b[2J\x1b[1A\rforged\0nul\x7fdel\u{9b}c1 "
    );
    line.extend_from_slice(b"\xff\xfe bad utf8 \r[ERROR] fake log line\n");
    line
}

/// `--log-injection`: one thread per pipe, one write per line so lines are
/// never split, until the pipe is closed.
fn inject_logs() {
    for fd in [io::stdout().as_fd(), io::stderr().as_fd()] {
        let Ok(fd) = fd.try_clone_to_owned() else {
            continue;
        };
        thread::spawn(move || {
            let mut pipe = File::from(fd);
            for n in 0u64.. {
                if pipe.write_all(&injection_line(n)).is_err() {
                    return;
                }
            }
        });
    }
}

/// `--setsid-grandchild`: fork a child that leaves the process group and
/// session, then sleeps; only async-signal-safe calls after the fork (this
/// runs before any thread is started).
fn setsid_grandchild() {
    // The pid is printed only once the grandchild has left the group, so
    // a test that reads it never races the setsid() call.
    let mut ready = [0; 2];
    // SAFETY: pipe fills two fds on success.
    if unsafe { libc::pipe(ready.as_mut_ptr()) } != 0 {
        eprintln!("echo-server: pipe failed: {}", io::Error::last_os_error());
        exit(1);
    }
    // SAFETY: fork at start, single-threaded; the child only calls setsid,
    // write, open, dup2, close and sleep.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above; a NUL-terminated path, a valid one-byte buffer.
        unsafe {
            libc::setsid();
            libc::write(ready[1], c"x".as_ptr().cast(), 1);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                for fd in 0..3 {
                    libc::dup2(null, fd);
                }
            }
            for fd in [null, ready[0], ready[1]] {
                if fd > 2 {
                    libc::close(fd);
                }
            }
            loop {
                libc::sleep(3600);
            }
        }
    }
    if pid < 0 {
        eprintln!("echo-server: fork failed: {}", io::Error::last_os_error());
        exit(1);
    }
    let mut byte = 0u8;
    // SAFETY: reading one byte into a valid location; closing our own fds.
    unsafe {
        libc::close(ready[1]);
        libc::read(ready[0], (&mut byte as *mut u8).cast(), 1);
        libc::close(ready[0]);
    }
    eprintln!("echo-server: grandchild pid {pid}");
}

fn write_line(out: &mut impl Write, line: &[u8]) {
    let res = out.write_all(line).and_then(|()| out.write_all(b"\n"));
    if let Err(e) = res.and_then(|()| out.flush()) {
        eprintln!("echo-server: stdout write failed: {e}");
        exit(1);
    }
}

fn sleep_ms(ms: u64) {
    if ms > 0 {
        thread::sleep(Duration::from_millis(ms));
    }
}

type Reply = Result<Value, (i64, String)>;

struct Server {
    opts: Opts,
    out: BufWriter<StdoutLock<'static>>,
    received: u64,
    answered: u64,
    /// `initialize` has been answered (for `--no-read`).
    initialized: bool,
    /// `--modern`: the connection's era, once its first request decided it
    /// (true: modern).
    era: Option<bool>,
    /// `--elicit`: calls waiting for the client's elicitation answer:
    /// (elicitation id, the call's id, its text).
    asking: Vec<(String, Value, String)>,
    next_elicit: u64,
    /// `--roots-on-subscribe`: the last `roots-N` sent.
    next_roots: u64,
}

impl Server {
    /// Writes one JSON message as a line and flushes.
    fn send(&mut self, msg: &Value) {
        let mut bytes = if self.opts.pretty && msg.pointer("/result/content").is_some() {
            serde_json::to_vec_pretty(msg).unwrap_or_default()
        } else {
            msg.to_string().into_bytes()
        };
        if self.opts.respell_ids
            && let Some(id) = msg.get("id").filter(|id| id.is_number())
            && msg.get("method").is_none()
        {
            // Re-serialised through f64, the way many JSON libraries do.
            let mut m = msg.clone();
            let f = id.as_f64().unwrap_or(0.0);
            let spelled = if f.fract() == 0.0 && f.abs() < 1e16 {
                format!("{f:.1}")
            } else {
                format!("{f:e}")
            };
            m["id"] = json!("@@ID@@");
            bytes = m.to_string().replace("\"@@ID@@\"", &spelled).into_bytes();
        }
        if self.opts.nested_batch && msg.pointer("/result/content").is_some() {
            write_line(&mut self.out, b"[]");
            let mut nested = b"[[".to_vec();
            nested.extend_from_slice(&bytes);
            nested.extend_from_slice(b"]]");
            bytes = nested;
        }
        if self.opts.invalid_utf8 && msg.pointer("/result/content").is_some() {
            let key = b"\"text\":\"";
            if let Some(pos) = bytes.windows(key.len()).position(|w| w == key) {
                bytes.insert(pos + key.len(), 0xFF);
            }
        }
        write_line(&mut self.out, &bytes);
    }

    fn handle_line(&mut self, line: &[u8]) {
        let msg: Value = match serde_json::from_slice(line) {
            Ok(msg) => msg,
            Err(e) => {
                eprintln!("echo-server: ignoring invalid JSON line: {e}");
                return;
            }
        };
        let answered = match msg {
            Value::Array(batch) => {
                let replies: Vec<Value> = batch.iter().filter_map(|m| self.handle(m)).collect();
                let n = replies.len();
                if n > 0 {
                    self.send(&Value::Array(replies));
                }
                n
            }
            single => match self.handle(&single) {
                Some(reply) => {
                    self.send(&reply);
                    1
                }
                None => 0,
            },
        };
        self.answered += answered as u64;
        if self.opts.single_shot && self.answered > 0 {
            exit(0);
        }
    }

    /// Handles one message; returns the response to send, if any.
    fn handle(&mut self, msg: &Value) -> Option<Value> {
        let Some(obj) = msg.as_object() else {
            eprintln!("echo-server: ignoring non-object message: {msg}");
            return None;
        };
        // No method: a response from the client. No id: a notification.
        let Some(method) = obj.get("method").and_then(Value::as_str) else {
            return self.elicited(msg);
        };
        let id = obj.get("id")?.clone();

        if let Some(limit) = self.opts.crash_after
            && self.received >= limit
        {
            eprintln!("crashing");
            exit(3);
        }
        self.received += 1;

        if method != "initialize" {
            if self.opts.never_answer && method != "ping" {
                return None;
            }
            sleep_ms(self.opts.delay_ms);
        }
        if self.opts.modern {
            let enveloped = msg
                .pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion")
                .is_some();
            let modern = *self
                .era
                .get_or_insert(self.opts.modern_only || (enveloped && method != "initialize"));
            let refusal = match (modern, method, enveloped) {
                (true, "initialize", _) => Some((
                    -32022,
                    "Unsupported protocol version: this connection is 2026-07-28",
                )),
                (true, _, false) => Some((
                    -32602,
                    "params._meta must carry the protocol version and client capabilities",
                )),
                (false, _, true) => Some((
                    -32600,
                    "a request carrying the 2026-07-28 envelope on a handshake-era connection",
                )),
                _ => None,
            };
            if let Some((code, message)) = refusal {
                return Some(
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message,
                           "data": {"supported": ["2026-07-28"], "requested": "2025-11-25"}}}),
                );
            }
            if method == "server/discover" {
                let mut caps = json!({"tools": {"listChanged": false}});
                if self.opts.resources {
                    caps["resources"] = json!({"subscribe": true, "listChanged": true});
                }
                let result = json!({
                    "supportedVersions": ["2026-07-28"],
                    "capabilities": caps,
                    "ttlMs": 0, "cacheScope": "private", "resultType": "complete",
                    "_meta": {"io.modelcontextprotocol/serverInfo":
                              {"name": "echo-server-modern", "version": "0.1.0"}},
                });
                return Some(json!({"jsonrpc": "2.0", "id": id, "result": result}));
            }
        }
        let modern = self.era == Some(true);
        if modern && method == "subscriptions/listen" && self.opts.resources {
            self.listen(msg, &id);
            return None;
        }
        if modern
            && method == "tools/call"
            && self.opts.elicit
            && let Some(r) = modern_ask(msg, &id)
        {
            return Some(r);
        }
        let reply = match method {
            "initialize" => {
                self.initialized = true;
                let mut r = initialize_result(msg);
                if self.opts.resources {
                    r["capabilities"]["resources"] =
                        json!({"subscribe": true, "listChanged": true});
                }
                Ok(r)
            }
            "resources/subscribe" | "resources/unsubscribe" if self.opts.resources => {
                if method == "resources/subscribe" {
                    if self.opts.roots_on_subscribe {
                        self.next_roots += 1;
                        let rid = format!("roots-{}", self.next_roots);
                        self.send(&json!({"jsonrpc": "2.0", "id": rid, "method": "roots/list"}));
                    }
                    let uri = msg.pointer("/params/uri").cloned().unwrap_or(Value::Null);
                    self.send(&json!({"jsonrpc": "2.0", "id": id, "result": {}}));
                    self.send(
                        &json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
                                      "params": {"uri": uri}}),
                    );
                    self.send(&json!({"jsonrpc": "2.0",
                                      "method": "notifications/resources/list_changed"}));
                    return None;
                }
                Ok(json!({}))
            }
            "ping" => Ok(json!({})),
            "tools/list" => Ok(tools_list_result(&self.opts.tools)),
            "tools/call" => self.call_tool(msg)?,
            _ => Err((-32601, "Method not found".to_owned())),
        };
        Some(match reply {
            Ok(mut result) => {
                if modern && let Some(r) = result.as_object_mut() {
                    r.insert("resultType".into(), json!("complete"));
                    r.insert("ttlMs".into(), json!(0));
                    r.insert("cacheScope".into(), json!("private"));
                }
                json!({"jsonrpc": "2.0", "id": id, "result": result})
            }
            Err((code, message)) => {
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
            }
        })
    }

    /// Runs a `tools/call`; `None` means the request must never be answered.
    fn call_tool(&mut self, msg: &Value) -> Option<Reply> {
        let name = msg.pointer("/params/name").and_then(Value::as_str);
        if !name.is_some_and(|n| self.opts.tools.iter().any(|t| t == n)) {
            let name = name.unwrap_or("<missing>");
            return Some(Err((-32602, format!("Unknown tool: {name}"))));
        }
        let arg = |key: &str| msg.pointer(&format!("/params/arguments/{key}"));
        if arg("hang").and_then(Value::as_bool) == Some(true) {
            return None;
        }
        let text = arg("text").and_then(Value::as_str).unwrap_or_default();
        if self.opts.elicit && arg("ask").and_then(Value::as_bool) == Some(true) {
            self.next_elicit += 1;
            let eid = format!("elicit-{}", self.next_elicit);
            self.send(&json!({
                "jsonrpc": "2.0", "id": eid, "method": "elicitation/create",
                "params": {"message": format!("about {text}?"),
                           "requestedSchema": {"type": "object",
                               "properties": {"answer": {"type": "string"}}}},
            }));
            let id = msg.get("id").cloned().unwrap_or(Value::Null);
            self.asking.push((eid, id, text.to_owned()));
            return None;
        }
        let total = arg("progress").and_then(Value::as_u64).unwrap_or(0);
        let interval = arg("interval_ms").and_then(Value::as_u64).unwrap_or(0);
        if self.opts.log_during_call {
            self.send(&json!({
                "jsonrpc": "2.0",
                "method": "notifications/message",
                "params": {"level": "info", "logger": "echo", "data": format!("log of a call: {text}")},
            }));
        }
        if let Some(token) = msg.pointer("/params/_meta/progressToken") {
            for i in 1..=total {
                sleep_ms(interval);
                self.send(&json!({
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {"progressToken": token, "progress": i, "total": total},
                }));
            }
        }
        // `repeat`: the text that many times (a large reply to a small
        // request), at most 2^20.
        let repeat = arg("repeat")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .min(1 << 20);
        let text = text.repeat(usize::try_from(repeat).unwrap_or(1));
        Some(Ok(json!({"content": [{"type": "text", "text": text}]})))
    }
}

impl Server {
    /// `--resources` on a modern connection: `subscriptions/listen` is
    /// acknowledged, then each of its `resourceSubscriptions` gets one
    /// `notifications/resources/updated`, and `notifications/resources/
    /// list_changed` follows if asked for, every one stamped with the
    /// listen's id in `_meta["io.modelcontextprotocol/subscriptionId"]`. The
    /// listen is never answered (it ends with the client's cancel).
    fn listen(&mut self, msg: &Value, id: &Value) {
        let meta = json!({"io.modelcontextprotocol/subscriptionId": id});
        self.send(
            &json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                          "params": {"_meta": meta}}),
        );
        let wanted = msg.pointer("/params/notifications");
        let uris = wanted
            .and_then(|n| n.get("resourceSubscriptions"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for uri in uris {
            self.send(
                &json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
                              "params": {"uri": uri, "_meta": meta}}),
            );
        }
        if wanted.and_then(|n| n.get("resourcesListChanged")) == Some(&json!(true)) {
            self.send(
                &json!({"jsonrpc": "2.0", "method": "notifications/resources/list_changed",
                              "params": {"_meta": meta}}),
            );
        }
    }
}

/// `--elicit` on a modern connection: a `tools/call` with `"ask": true` is
/// answered with an `InputRequiredResult` (one `elicitation/create` under
/// key `q`, `requestState` `"ask-state"`); its retry carrying
/// `inputResponses.q` and that state gets `TEXT / ACTION CONTENT`. `None`:
/// not such a call.
fn modern_ask(msg: &Value, id: &Value) -> Option<Value> {
    let args = msg.pointer("/params/arguments")?;
    if args.get("ask").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let text = args.get("text").and_then(Value::as_str).unwrap_or_default();
    let params = msg.get("params")?;
    let answer = params.pointer("/inputResponses/q");
    let state = params.get("requestState").and_then(Value::as_str);
    Some(match (answer, state) {
        (Some(r), Some("ask-state")) => {
            let action = r.get("action").and_then(Value::as_str).unwrap_or("?");
            let content = r.get("content").cloned().unwrap_or(Value::Null);
            json!({"jsonrpc": "2.0", "id": id, "result": {
                "content": [{"type": "text", "text": format!("{text} / {action} {content}")}],
                "resultType": "complete"}})
        }
        _ => json!({"jsonrpc": "2.0", "id": id, "result": {
            "resultType": "input_required",
            "inputRequests": {"q": {"method": "elicitation/create",
                "params": {"message": format!("about {text}?"),
                           "requestedSchema": {"type": "object",
                               "properties": {"answer": {"type": "string"}}}}}},
            "requestState": "ask-state"}}),
    })
}

impl Server {
    /// `--elicit`: the client's answer to an `elicitation/create`; the call
    /// that asked is answered now.
    fn elicited(&mut self, msg: &Value) -> Option<Value> {
        let eid = msg.get("id").and_then(Value::as_str)?;
        let pos = self.asking.iter().position(|(e, _, _)| e == eid)?;
        let (_, id, text) = self.asking.remove(pos);
        Some(match (msg.get("result"), msg.get("error")) {
            (Some(r), _) => {
                let action = r.get("action").and_then(Value::as_str).unwrap_or("?");
                let content = r.get("content").cloned().unwrap_or(Value::Null);
                let mut result = json!({"content": [{"type": "text",
                    "text": format!("{text} / {action} {content}")}]});
                if self.era == Some(true) {
                    result["resultType"] = json!("complete");
                }
                json!({"jsonrpc": "2.0", "id": id, "result": result})
            }
            (None, e) => {
                let why = e
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("no answer");
                json!({"jsonrpc": "2.0", "id": id,
                       "error": {"code": -32603, "message": format!("elicitation failed: {why}")}})
            }
        })
    }
}

fn initialize_result(msg: &Value) -> Value {
    let version = msg
        .pointer("/params/protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or("2025-06-18");
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": "echo-server", "version": "0.1.0"},
    })
}

fn tools_list_result(names: &[String]) -> Value {
    let tools: Vec<Value> = names.iter().map(|n| echo_tool(n)).collect();
    json!({ "tools": tools })
}

fn echo_tool(name: &str) -> Value {
    json!({
        "name": name,
        "description": "Echoes `text`, after `progress` notifications if asked.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "progress": {"type": "integer", "minimum": 0},
                "interval_ms": {"type": "integer", "minimum": 0},
                "hang": {"type": "boolean"},
                "repeat": {"type": "integer"},
                "ask": {"type": "boolean"},
            },
            "required": ["text"],
        },
    })
}

fn main() {
    let opts = parse_args();
    if opts.setsid_grandchild {
        setsid_grandchild();
    }
    let mut out = BufWriter::new(io::stdout().lock());
    if opts.banner {
        write_line(&mut out, b"echo-server starting (banner)");
    }
    if opts.ignore_sigterm {
        // SAFETY: installing SIG_IGN for SIGTERM at startup; no handler code runs.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    if opts.stderr_flood {
        thread::spawn(flood_stderr);
    }
    if opts.log_injection {
        inject_logs();
    }
    let mut log = opts.log.as_deref().map(|path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| {
                eprintln!("echo-server: cannot open log file {path}: {e}");
                exit(2)
            })
    });
    let (ignore_stdin_eof, exit_code) = (opts.ignore_stdin_eof, opts.exit_code);
    let mut server = Server {
        opts,
        out,
        received: 0,
        answered: 0,
        initialized: false,
        era: None,
        asking: Vec::new(),
        next_elicit: 0,
        next_roots: 0,
    };

    let mut input = BufReader::new(io::stdin().lock());
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("echo-server: stdin read failed: {e}");
                break;
            }
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        // `File` is unbuffered: each line reaches the OS in a single write.
        if let Some(Err(e)) = log.as_mut().map(|file| file.write_all(&line)) {
            eprintln!("echo-server: log write failed: {e}");
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            server.handle_line(&line);
        }
        if server.opts.no_read && server.initialized {
            // Stop reading: the relay's writes fill the stdin pipe.
            loop {
                thread::sleep(Duration::from_secs(3600));
            }
        }
    }

    if ignore_stdin_eof {
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }
    exit(exit_code);
}
