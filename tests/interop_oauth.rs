//! Interop (issue 14): the official Python MCP SDK 2.x client-side OAuth
//! provider (`OAuthClientProvider`) against `reverse --oauth-issuer` in
//! front of the echo server, with the test authorization server of
//! `tests/common/authz.rs` (registration, /authorize with PKCE, /token). The
//! SDK starts from the relay's 401 alone: metadata discovery, registration,
//! authorization, token, then tools/list and tools/call
//! (`tests/interop/reverse_oauth.py`).
//!
//! Needs a Python with `mcp>=2,<3`: `INTEROP_PYTHON2`, else the provisioned
//! `target/test-deps/venv2`; without it the test fails, saying what to
//! install.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::authz::AuthServer;
use common::interop;
use common::relay::Relay;
use common::{SHORT, free_port};

const SCRIPT: &str = "tests/interop/reverse_oauth.py";
const TIMEOUT: Duration = Duration::from_secs(60);
const SCOPE: &str = "mcp:tools";

/// The relay, its audience being the URL the client uses.
fn relay_for(auth: &AuthServer) -> (Relay, String) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let relay = Relay::reverse("echo")
        .port(port)
        .args([
            "--oauth-issuer",
            &auth.issuer(),
            "--oauth-audience",
            &url,
            "--oauth-scope",
            SCOPE,
            "--log-level",
            "info",
        ])
        .echo_server(&[])
        .admin()
        .start();
    relay.wait_stderr("verification keys loaded", SHORT);
    (relay, url)
}

fn run(python: &Path, url: &str) -> (bool, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(python);
    cmd.arg(root.join(SCRIPT)).arg(url).current_dir(root);
    interop::run_script(cmd, "python SDK 2.x OAuth client", TIMEOUT)
}

#[test]
fn python_sdk_2_oauth_client_authorizes_itself_from_the_401() {
    let python = match interop::python2("anyio, httpx2, mcp.client.auth, mcp.client.client") {
        Ok(p) => p,
        Err(e) => interop::missing("interop_oauth", &e),
    };
    let auth = AuthServer::new();
    auth.set(|s| s.grantable = vec![SCOPE.into(), "mcp".into()]);
    let (relay, url) = relay_for(&auth);
    let (ok, stdout, report) = run(&python, &url);
    assert!(ok, "{report}\nrelay:\n{}", relay.stderr_dump());
    eprintln!("{stdout}");
    // What the SDK did at the authorization server: one registration, one
    // authorization, one code exchange; the relay accepted its token.
    let c = auth.counts();
    assert_eq!(c.registrations, 1, "{c:?}");
    assert_eq!(c.authorizations, 1, "{c:?}");
    assert_eq!(c.code_exchanges, 1, "{c:?}");
    let issued = auth.issued();
    assert!(
        issued
            .iter()
            .any(|t| t.resource.as_deref() == Some(url.as_str())),
        "a token for the relay's audience: {issued:?}"
    );
    let m = relay.metrics_text();
    assert!(
        !m.contains("mcp_relay_oauth_requests_total{decision=\"accepted\"} 0\n"),
        "{m}"
    );
    interop::ran("interop_oauth::python_sdk_2_oauth_client");
}
