//! Issue 11, class 13, process containment: no process a server started
//! outlives the relay, whether it left the server's process group
//! (`setsid()`), or the relay was killed with SIGKILL while its server
//! ignores SIGTERM.
//!
//! Every check reads /proc with a bounded wait.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use common::http::{Http, IO, VERSION, post_on};
use common::relay::Relay;
use common::{Proc, initialize};

/// How long a process may take to disappear once it should.
const GONE_WITHIN: Duration = Duration::from_secs(3);

/// Waits (bounded) until `p` is gone (or a zombie of a parent that will
/// reap it: a zombie runs nothing); panics with `what` otherwise.
fn wait_gone(p: &Proc, what: &str) {
    let deadline = Instant::now() + GONE_WITHIN;
    loop {
        match p.state() {
            None | Some('Z') | Some('X') => return,
            Some(state) if Instant::now() > deadline => {
                p.kill_if_alive();
                panic!(
                    "{what} (pid {}) still running ({state}) {GONE_WITHIN:?} later",
                    p.pid
                )
            }
            Some(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The pid the echo server's `--setsid-grandchild` logged, via the relay.
fn grandchild(relay: &Relay) -> Proc {
    let at = relay.wait_stderr("grandchild pid ", Duration::from_secs(5));
    let _ = at;
    let text = relay.stderr_text();
    let rest = &text[text.find("grandchild pid ").expect("logged") + "grandchild pid ".len()..];
    let pid: i32 = rest
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a pid");
    let p = Proc::new(pid);
    assert!(
        matches!(p.state(), Some(s) if s != 'Z'),
        "grandchild {pid} not running"
    );
    p
}

/// A server's grandchild that called setsid() left the server's process
/// group: before the fix it survived the relay's shutdown (forward).
#[test]
fn class13_setsid_grandchild_dies_with_forward_relay() {
    let mut relay = Relay::start(&[], &["--setsid-grandchild"]);
    relay.handshake();
    let g = grandchild(&relay);
    let server = relay.server(0);
    relay.close_stdin();
    let status = relay.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}");
    wait_gone(&server, "the server");
    wait_gone(&g, "the setsid grandchild, after the forward relay exited");
    // Reaping what the relay adopted never took the server's own status.
    let log = relay.stderr_text();
    assert!(
        log.contains(&format!("pid {} exited (exit code 0)", server.pid))
            && !log.contains("try_wait"),
        "the server's exit status was not collected by its owner\n{}",
        relay.stderr_dump()
    );
}

/// Same in reverse mode, on SIGTERM of the relay.
#[test]
fn class13_setsid_grandchild_dies_with_reverse_relay() {
    let relay = Relay::reverse("echo")
        .echo_server(&["--setsid-grandchild"])
        .start();
    let mut http = Http::connect(relay.port);
    let resp = post_on(&mut http, None, &initialize(json!(1)), &[], IO).expect("initialize");
    assert_eq!(resp.status(), 200);
    let g = grandchild(&relay);
    relay.signal(libc::SIGTERM);
    relay.wait_exit(Duration::from_secs(15));
    wait_gone(&g, "the setsid grandchild, after the reverse relay exited");
}

/// While the relay keeps running: when a session's server exits, what it
/// handed over by leaving its group goes too (and is reaped: no zombie).
#[test]
fn class13_setsid_grandchild_dies_with_its_server() {
    let relay = Relay::reverse("echo")
        .echo_server(&["--setsid-grandchild"])
        .start();
    let mut http = Http::connect(relay.port);
    let resp = post_on(&mut http, None, &initialize(json!(1)), &[], IO).expect("initialize");
    assert_eq!(resp.status(), 200);
    let sid = resp
        .header("mcp-session-id")
        .expect("session id")
        .to_owned();
    let g = grandchild(&relay);
    let server = relay.server(0);
    let resp = http.request(
        "DELETE",
        "/mcp",
        &[("Mcp-Session-Id", &sid), ("MCP-Protocol-Version", VERSION)],
        b"",
    );
    assert!(resp.status() < 300, "DELETE: {resp:?}");
    wait_gone(&server, "the server of the deleted session");
    // Gone for good: not even a zombie of the relay.
    let deadline = Instant::now() + GONE_WITHIN;
    while g.state().is_some() {
        assert!(
            Instant::now() < deadline,
            "setsid grandchild {} still there ({:?}) after its server exited\n{}",
            g.pid,
            g.state(),
            relay.stderr_dump()
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert!(relay.try_status().is_none(), "the relay keeps running");
    let m = relay.metrics_text();
    assert!(
        m.contains("mcp_relay_orphans_killed_total 1"),
        "orphan kill not counted:\n{m}"
    );
}

/// SIGKILL of the relay while its server ignores SIGTERM and stdin EOF:
/// before the fix (PDEATHSIG = SIGTERM) the server survived.
#[test]
fn class13_server_ignoring_sigterm_dies_with_sigkilled_relay() {
    let mut relay = Relay::start(&[], &["--ignore-sigterm", "--ignore-stdin-eof"]);
    relay.handshake();
    let server = relay.server(0);
    relay.signal(libc::SIGKILL);
    relay.wait_exit(Duration::from_secs(5));
    wait_gone(
        &server,
        "the server ignoring SIGTERM, after SIGKILL of the forward relay",
    );
}

/// The same in reverse mode, with several servers.
#[test]
fn class13_servers_ignoring_sigterm_die_with_sigkilled_reverse_relay() {
    let relay = Relay::reverse("echo")
        .echo_server(&["--ignore-sigterm", "--ignore-stdin-eof"])
        .start();
    for id in 0..3 {
        let mut http = Http::connect(relay.port);
        let resp = post_on(&mut http, None, &initialize(json!(id)), &[], IO).expect("initialize");
        assert_eq!(resp.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while relay.servers().len() < 3 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let servers = relay.servers();
    assert_eq!(servers.len(), 3, "three servers");
    relay.signal(libc::SIGKILL);
    relay.wait_exit(Duration::from_secs(5));
    for (p, _) in &servers {
        wait_gone(
            p,
            "a server ignoring SIGTERM, after SIGKILL of the reverse relay",
        );
    }
}
