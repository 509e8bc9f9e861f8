//! `reverse --tls-cert FILE --tls-key FILE` (issue 14): the client listener
//! speaks HTTPS; SIGHUP reloads the certificate without dropping
//! connections.
//!
//! Certificates are made at test time with the `openssl` command into a
//! temp directory: a test CA and server certificates for `localhost` /
//! `127.0.0.1` with distinct serials and subjects. The client is rustls
//! (ring) trusting only that CA. `/healthz` (readiness) is on the plain
//! `--admin` listener, which stays plain HTTP.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{Value, json};

use common::relay::{Launch, Relay};
use common::{SHORT, call, echo_text, initialize, initialized, rss_kib};

const NAME: &str = "echo";
const IO: Duration = Duration::from_secs(5);

// ---- certificates -----------------------------------------------------------

/// A temp directory with a test CA; removed on drop.
struct Pki {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    fn new(test: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("mcp-relay-tls-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3650",
                "-subj",
                "/CN=mcp-relay listener test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        std::fs::write(
            dir.join("server.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("ext file");
        Pki { dir }
    }

    /// A server certificate `NAME.pem` / `NAME.key` with this serial and CN.
    fn server(&self, name: &str, serial: u32, cn: &str) -> (PathBuf, PathBuf) {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial.to_string(),
                "-days",
                "3650",
                "-extfile",
                "server.ext",
                "-out",
                &pem,
            ],
        );
        (self.dir.join(pem), self.dir.join(key))
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn der(pem: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(pem)
        .expect("read cert")
        .next()
        .expect("one cert")
        .expect("parses")
        .as_ref()
        .to_vec()
}

/// Replaces `to` with `from` atomically (rename), as deploy tools do.
fn install(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}

// ---- an HTTPS client -------------------------------------------------------

fn client_config(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("ca pem")).expect("add ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

struct Https {
    s: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// The JSON-RPC message of a JSON or single-event SSE body.
    fn rpc(&self) -> Value {
        let text = String::from_utf8_lossy(&self.body);
        if let Ok(v) = serde_json::from_str(&text) {
            return v;
        }
        let data = text
            .lines()
            .find_map(|l| l.strip_prefix("data:"))
            .unwrap_or_else(|| panic!("no JSON in {text:?}"));
        serde_json::from_str(data.trim()).expect("SSE data is JSON")
    }
}

impl Https {
    fn connect(port: u16, cfg: &Arc<ClientConfig>) -> io::Result<Https> {
        let sock = TcpStream::connect(("127.0.0.1", port))?;
        sock.set_read_timeout(Some(IO))?;
        sock.set_write_timeout(Some(IO))?;
        let name = ServerName::try_from("localhost").expect("name");
        let conn = ClientConnection::new(cfg.clone(), name).map_err(io::Error::other)?;
        let mut s = StreamOwned::new(conn, sock);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(Https { s, buf: Vec::new() })
    }

    /// The DER of the certificate the server presented.
    fn peer_cert(&self) -> Vec<u8> {
        self.s.conn.peer_certificates().expect("peer certs")[0]
            .as_ref()
            .to_vec()
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut tmp = [0u8; 16 * 1024];
        let n = self.s.read(&mut tmp)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    fn take_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            self.fill()?;
        }
    }

    fn take_n(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill()?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Resp> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.s.write_all(&bytes)?;
        self.s.flush()?;
        let status_line = self.take_line()?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut head = String::new();
        loop {
            let l = self.take_line()?;
            if l.is_empty() {
                break;
            }
            head.push_str(&l);
            head.push('\n');
        }
        let mut r = Resp {
            status,
            head,
            body: Vec::new(),
        };
        if r.header("transfer-encoding").is_some() {
            loop {
                let size = usize::from_str_radix(self.take_line()?.trim(), 16)
                    .map_err(|_| io::Error::other("bad chunk size"))?;
                if size == 0 {
                    self.take_line()?;
                    break;
                }
                let chunk = self.take_n(size)?;
                r.body.extend_from_slice(&chunk);
                self.take_line()?;
                // One reply per POST here: stop at the first complete event.
                if r.body.windows(2).any(|w| w == b"\n\n")
                    && String::from_utf8_lossy(&r.body)
                        .lines()
                        .any(|l| l.starts_with("data:"))
                {
                    break;
                }
            }
        } else {
            let n: usize = r
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            r.body = self.take_n(n)?;
        }
        Ok(r)
    }

    fn post(&mut self, sid: Option<&str>, msg: &Value) -> io::Result<Resp> {
        let mut h = vec![
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
        ];
        if let Some(s) = sid {
            h.push(("Mcp-Session-Id", s));
            h.push(("MCP-Protocol-Version", "2025-06-18"));
        }
        let body = serde_json::to_vec(msg).expect("json");
        self.request("POST", "/mcp", &h, &body)
    }
}

/// An MCP session over one keep-alive HTTPS connection.
struct Session {
    h: Https,
    sid: String,
    next: u64,
}

impl Session {
    fn open(port: u16, cfg: &Arc<ClientConfig>) -> io::Result<Session> {
        let mut h = Https::connect(port, cfg)?;
        let r = h.post(None, &initialize(json!(0)))?;
        assert_eq!(r.status, 200, "initialize: {}", r.head);
        let sid = r.header("mcp-session-id").expect("session id");
        assert_eq!(r.rpc()["id"], 0);
        let ack = h.post(Some(&sid), &initialized())?;
        assert_eq!(ack.status, 202, "initialized: {}", ack.head);
        Ok(Session { h, sid, next: 1 })
    }

    /// One echo call; its reply must carry its own text.
    fn echo(&mut self, text: &str) -> io::Result<()> {
        let id = self.next;
        self.next += 1;
        let r = self.h.post(Some(&self.sid), &call(json!(id), text))?;
        assert_eq!(r.status, 200, "tools/call: {}", r.head);
        let v = r.rpc();
        assert_eq!(v["id"], id, "reply to its own request: {v}");
        assert_eq!(echo_text(&v), Some(text), "{v}");
        Ok(())
    }
}

fn relay(cert: &Path, key: &Path, extra: &[&str]) -> Relay {
    launch(cert, key).args(extra).start()
}

fn launch(cert: &Path, key: &Path) -> Launch {
    Relay::reverse(NAME)
        .admin()
        .args([
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ])
        .echo_server(&[])
}

/// A metric's value on the admin listener's /metrics (0 when absent).
fn metric(r: &Relay, line_prefix: &str) -> f64 {
    r.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

// ---- tests ------------------------------------------------------------------

/// A session over HTTPS: handshake with the test CA, ALPN http/1.1, the
/// certificate given, initialize + a call on one keep-alive connection. A
/// client that trusts another CA fails its handshake.
#[test]
fn https_session_with_the_test_ca() {
    let pki = Pki::new("session");
    let (cert, key) = pki.server("a", 1001, "relay-a");
    let r = relay(&cert, &key, &[]);
    let cfg = client_config(&pki.ca());
    let mut s = Session::open(r.port, &cfg).expect("session over https");
    assert_eq!(s.h.s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(s.h.peer_cert(), der(&cert));
    for i in 0..3 {
        s.echo(&format!("hello {i}")).expect("echo over https");
    }
    // Larger than the socket buffers and many TLS records, both ways:
    // the write path waits for the socket with records pending.
    let big: String = (0..(1 << 20))
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    s.echo(&big).expect("a 1 MiB echo over https");
    s.echo("after the big one").expect("echo");
    // Another CA: the handshake fails on the client's side.
    let other = Pki::new("session-other");
    let err = Https::connect(r.port, &client_config(&other.ca()))
        .err()
        .expect("untrusted certificate");
    assert!(err.to_string().contains("certificate"), "{err}");
    // And the relay keeps serving.
    Session::open(r.port, &cfg)
        .expect("session after a failed handshake")
        .echo("after")
        .expect("echo");
    let m = r.metrics_text();
    assert!(
        m.lines()
            .any(|l| l.starts_with("mcp_relay_tls_handshake_failures_total") && !l.ends_with(" 0")),
        "{m}"
    );
}

/// Plain HTTP to the TLS port: no HTTP answer (it is not TLS), the
/// connection is closed at once (an alert at most), and the relay serves on.
#[test]
fn plain_http_to_the_tls_port_is_refused() {
    let pki = Pki::new("plain");
    let (cert, key) = pki.server("a", 2001, "relay-a");
    let r = relay(&cert, &key, &[]);
    let mut s = TcpStream::connect(("127.0.0.1", r.port)).expect("connect");
    s.set_read_timeout(Some(IO)).expect("timeout");
    let began = Instant::now();
    s.write_all(b"GET /mcp HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("not closed within {IO:?}: {e} (got {got:?})"),
        }
    }
    let took = began.elapsed();
    eprintln!(
        "plain HTTP to TLS port: closed after {took:?}, {} bytes back",
        got.len()
    );
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    assert!(
        !got.starts_with(b"HTTP/"),
        "an HTTP answer on a TLS port: {got:?}"
    );
    // A TLS alert record (content type 21) or nothing.
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
    let cfg = client_config(&pki.ca());
    Session::open(r.port, &cfg)
        .expect("https still works")
        .echo("ok")
        .expect("echo");
}

/// A client that stalls its handshake (a partial ClientHello, or nothing at
/// all) is closed within --client-header-timeout, like a slowloris, even
/// though the idle timeout is much longer; the relay answers a fresh
/// session meanwhile within 1 s.
#[test]
fn stalled_handshake_is_closed_within_the_header_timeout() {
    let pki = Pki::new("stall");
    let (cert, key) = pki.server("a", 3001, "relay-a");
    let r = relay(
        &cert,
        &key,
        &[
            "--client-header-timeout",
            "1s",
            "--client-idle-timeout",
            "60s",
        ],
    );
    let partial = TcpStream::connect(("127.0.0.1", r.port)).expect("connect");
    let silent = TcpStream::connect(("127.0.0.1", r.port)).expect("connect");
    let began = Instant::now();
    // The first bytes of a TLS record header of a ClientHello, then nothing.
    (&partial)
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("write");
    // Meanwhile a fresh session is answered within 1 s.
    let cfg = client_config(&pki.ca());
    let t = Instant::now();
    Session::open(r.port, &cfg)
        .expect("fresh session")
        .echo("fresh")
        .expect("echo");
    let fresh = t.elapsed();
    eprintln!("fresh session during stalled handshakes: {fresh:?}");
    assert!(fresh < Duration::from_secs(1), "{fresh:?}");
    for (what, s) in [("partial hello", &partial), ("silent", &silent)] {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 1024];
        let res = (&*s).read(&mut buf);
        let took = began.elapsed();
        eprintln!("stalled handshake ({what}): closed after {took:?} ({res:?})");
        assert!(
            matches!(res, Ok(0))
                || matches!(&res, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "{what}: not closed: {res:?}"
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "{what}: closed after {took:?}, header timeout 1s"
        );
    }
    assert!(metric(&r, "mcp_relay_timeouts_total{kind=\"tls_handshake\"}") >= 2.0);
}

/// SIGHUP with a new certificate: new connections get it, a keep-alive
/// connection opened before keeps working (its session keys are its own).
/// Then a reload that cannot parse keeps the current certificate and logs
/// an error.
#[test]
fn sighup_reloads_the_certificate_and_keeps_connections() {
    let pki = Pki::new("reload");
    let (a_cert, a_key) = pki.server("a", 4001, "relay-a");
    let (b_cert, b_key) = pki.server("b", 4002, "relay-b");
    let (cert, key) = (pki.path("live.pem"), pki.path("live.key"));
    install(&a_cert, &cert);
    install(&a_key, &key);
    let r = relay(&cert, &key, &[]);
    let cfg = client_config(&pki.ca());
    let mut old = Session::open(r.port, &cfg).expect("session");
    assert_eq!(old.h.peer_cert(), der(&a_cert));

    install(&b_cert, &cert);
    install(&b_key, &key);
    r.signal(libc::SIGHUP);
    r.wait_stderr("TLS certificate reloaded", SHORT);
    let fresh = Https::connect(r.port, &cfg).expect("new handshake");
    assert_eq!(
        fresh.peer_cert(),
        der(&b_cert),
        "new connections see the new certificate"
    );
    old.echo("still here")
        .expect("the old connection keeps working");
    assert_eq!(old.h.peer_cert(), der(&a_cert));

    // A broken certificate file: the reload fails, B stays.
    std::fs::write(
        pki.path("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n",
    )
    .expect("write");
    install(&pki.path("broken.pem"), &cert);
    r.signal(libc::SIGHUP);
    r.wait_stderr("TLS reload failed", SHORT);
    let fresh = Https::connect(r.port, &cfg).expect("handshake after a failed reload");
    assert_eq!(
        fresh.peer_cert(),
        der(&b_cert),
        "the failed reload kept the old one"
    );
    // A key that does not match the certificate: refused too.
    install(&a_cert, &cert);
    r.signal(libc::SIGHUP);
    let deadline = Instant::now() + SHORT;
    while r.stderr_text().matches("TLS reload failed").count() < 2 {
        assert!(Instant::now() < deadline, "{}", r.stderr_dump());
        thread::sleep(Duration::from_millis(10));
    }
    let fresh = Https::connect(r.port, &cfg).expect("handshake after a mismatched reload");
    assert_eq!(fresh.peer_cert(), der(&b_cert));
    old.echo("and still").expect("old connection");
    assert_eq!(
        metric(&r, "mcp_relay_tls_reloads_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        metric(&r, "mcp_relay_tls_reloads_total{result=\"error\"}"),
        2.0
    );
}

/// A reload under load loses no request: clients loop requests (on
/// keep-alive connections and on fresh ones) during several reloads; every
/// request is answered with its own reply.
#[test]
fn a_reload_under_load_loses_no_request() {
    let pki = Pki::new("load");
    let (a_cert, a_key) = pki.server("a", 5001, "relay-a");
    let (b_cert, b_key) = pki.server("b", 5002, "relay-b");
    let (cert, key) = (pki.path("live.pem"), pki.path("live.key"));
    install(&a_cert, &cert);
    install(&a_key, &key);
    let r = relay(&cert, &key, &["--max-connections", "16"]);
    let port = r.port;
    let cfg = client_config(&pki.ca());
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let rss_before = rss_kib(r.pid as u32).expect("rss");
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (cfg, stop, answered) = (cfg.clone(), stop.clone(), answered.clone());
            thread::spawn(move || {
                let mut n = 0u64;
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    // Odd workers reconnect (a new handshake) every few calls.
                    let mut s = Session::open(port, &cfg).expect("session under reloads");
                    let calls = if w % 2 == 1 { 3 } else { 1000 };
                    for _ in 0..calls {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        s.echo(&format!("w{w} n{n}"))
                            .expect("a request lost under reload");
                        n += 1;
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n
            })
        })
        .collect();
    for i in 0..6 {
        thread::sleep(Duration::from_millis(300));
        let (c, k) = if i % 2 == 0 {
            (&b_cert, &b_key)
        } else {
            (&a_cert, &a_key)
        };
        install(c, &cert);
        install(k, &key);
        r.signal(libc::SIGHUP);
    }
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let per: Vec<u64> = workers
        .into_iter()
        .map(|h| h.join().expect("worker"))
        .collect();
    let total: u64 = per.iter().sum();
    let (rss, peak) = rss_kib(r.pid as u32).expect("rss");
    eprintln!(
        "reload under load: {total} requests answered {per:?}; RSS {}→{rss} KiB, peak {peak} KiB",
        rss_before.0
    );
    assert_eq!(total, answered.load(Ordering::Relaxed));
    assert!(per.iter().all(|&n| n > 0), "{per:?}");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    let deadline = Instant::now() + SHORT;
    while metric(&r, "mcp_relay_tls_reloads_total{result=\"ok\"}") < 6.0 {
        assert!(Instant::now() < deadline, "{}", r.stderr_dump());
        thread::sleep(Duration::from_millis(20));
    }
}

/// Config file: top-level `tls_cert` / `tls_key` turn TLS on too.
#[test]
fn tls_from_the_config_file() {
    let pki = Pki::new("config");
    let (cert, key) = pki.server("a", 6001, "relay-a");
    let conf = pki.path("relay.json");
    std::fs::write(
        &conf,
        json!({
            "tls_cert": cert.to_str(),
            "tls_key": key.to_str(),
            "upstreams": {"echo": {"command": [common::echo_server().to_str()]}},
        })
        .to_string(),
    )
    .expect("write config");
    let r = Relay::reverse(NAME)
        .admin()
        .args(["--config", conf.to_str().expect("utf-8")])
        .start();
    let cfg = client_config(&pki.ca());
    let mut h = Https::connect(r.port, &cfg).expect("https");
    assert_eq!(h.peer_cert(), der(&cert));
    let resp = h
        .post(None, &initialize(json!(0)))
        .expect("initialize on /mcp");
    // /mcp is not a route with --config (each upstream is /mcp/NAME).
    assert_eq!(resp.status, 404, "{}", resp.head);
}

/// Interop: the official Python MCP SDK 1.x client (httpx) over HTTPS,
/// trusting the test CA through `SSL_CERT_FILE`, against `reverse
/// --tls-cert` in front of `echo_server` (tests/interop/reverse_tls.py).
#[test]
fn interop_python_sdk_over_https() {
    use common::interop::{self, drain, join_bounded, kill_tree, python, python_imports, snapshot};
    let py = python();
    if let Err(e) = python_imports(
        &py,
        "anyio, httpx, mcp.client.session, mcp.client.streamable_http",
    ) {
        interop::missing("tls_listener", &e);
    }
    let pki = Pki::new("interop");
    let (cert, key) = pki.server("a", 7001, "relay-a");
    let r = relay(&cert, &key, &[]);
    let url = format!("https://localhost:{}/mcp", r.port);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/reverse_tls.py");
    let mut cmd = Command::new(&py);
    cmd.arg(&script)
        .arg(&url)
        .env("SSL_CERT_FILE", pki.ca())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    #[allow(clippy::zombie_processes)] // reaped by wait_bounded or kill_tree
    let mut child = cmd.spawn().expect("spawn python");
    let (out, out_t) = drain(child.stdout.take().expect("stdout"));
    let (err, err_t) = drain(child.stderr.take().expect("stderr"));
    let status = match interop::wait_bounded(&mut child, Duration::from_secs(60)) {
        Ok(s) => s,
        Err(e) => {
            kill_tree(&mut child);
            panic!("{e}");
        }
    };
    if status.is_none() {
        kill_tree(&mut child);
    }
    let deadline = Instant::now() + SHORT;
    join_bounded(out_t, deadline);
    join_bounded(err_t, deadline);
    let (out, err) = (snapshot(&out), snapshot(&err));
    eprintln!("{out}");
    assert!(
        status.is_some_and(|s| s.success()) && out.contains("interop ok"),
        "python SDK over https: {status:?}\nstdout:\n{out}\nstderr:\n{err}\nrelay:\n{}",
        r.stderr_dump()
    );
    interop::ran("tls_listener_python");
}

/// Interop: the official Python MCP SDK 2.x client (httpx2, `mode="auto"`)
/// over HTTPS, trusting the test CA through `SSL_CERT_FILE`, against
/// `reverse --tls-cert` in front of `echo_server`: it negotiates 2026-07-28
/// through the relay's bridge, lists tools and calls `echo` with progress
/// (tests/interop/reverse_modern.py, the script the plain-HTTP interop
/// test runs). A run trusting another CA must fail its handshake.
#[test]
fn interop_python_sdk_2_over_https() {
    use common::interop;
    let py = match interop::python2("anyio, httpx2, mcp.client.client") {
        Ok(p) => p,
        Err(e) => interop::missing("tls_listener", &e),
    };
    let pki = Pki::new("interop2");
    let (cert, key) = pki.server("a", 7002, "relay-a");
    let r = relay(&cert, &key, &[]);
    let url = format!("https://localhost:{}/mcp", r.port);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/reverse_modern.py");
    let run = |ca: &Path| {
        let mut cmd = Command::new(&py);
        cmd.arg(&script).arg(&url).env("SSL_CERT_FILE", ca);
        interop::run_script(cmd, "python SDK 2.x over https", Duration::from_secs(60))
    };
    let (ok, stdout, report) = run(&pki.ca());
    assert!(
        ok,
        "{report}
relay:
{}",
        r.stderr_dump()
    );
    eprintln!("{stdout}");
    assert!(stdout.contains("version 2026-07-28"), "{stdout}");

    // The same client trusting another CA: the handshake fails, nothing is
    // served.
    let other = Pki::new("interop2-other");
    let (ok, _, report) = run(&other.ca());
    assert!(!ok, "a client trusting another CA got through: {report}");
    assert!(
        report.contains("CERTIFICATE_VERIFY_FAILED")
            || report.contains("certificate verify failed"),
        "{report}"
    );
    interop::ran("tls_listener_python2");
}

/// A flood of stalled handshakes (300 connections, each a partial
/// ClientHello): RSS stays bounded, a fresh session is answered within 1 s
/// during the flood, and every stalled connection is closed at the header
/// timeout.
#[test]
fn a_flood_of_stalled_handshakes_is_bounded() {
    let pki = Pki::new("flood");
    let (cert, key) = pki.server("a", 8001, "relay-a");
    let r = relay(
        &cert,
        &key,
        &[
            "--client-header-timeout",
            "2s",
            "--client-idle-timeout",
            "60s",
        ],
    );
    let cfg = client_config(&pki.ca());
    Session::open(r.port, &cfg)
        .expect("warm-up")
        .echo("warm")
        .expect("echo");
    let (rss0, _) = rss_kib(r.pid as u32).expect("rss");
    let began = Instant::now();
    let flood: Vec<TcpStream> = (0..300)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", r.port)).expect("connect");
            (&s).write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
                .expect("partial hello");
            s
        })
        .collect();
    let t = Instant::now();
    Session::open(r.port, &cfg)
        .expect("fresh session during the flood")
        .echo("fresh")
        .expect("echo");
    let fresh = t.elapsed();
    let (rss, peak) = rss_kib(r.pid as u32).expect("rss");
    eprintln!(
        "stalled-handshake flood: 300 connections; RSS {rss0} → {rss} KiB (peak {peak} KiB); \
         fresh session in {fresh:?}"
    );
    assert!(fresh < Duration::from_secs(1), "{fresh:?}");
    assert!(rss < rss0 + 16 * 1024, "RSS {rss0} → {rss} KiB");
    for s in &flood {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let res = (&*s).read(&mut buf);
        assert!(
            matches!(res, Ok(0))
                || matches!(&res, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "not closed: {res:?}"
        );
    }
    let took = began.elapsed();
    assert!(took < Duration::from_secs(4), "all closed after {took:?}");
    assert!(
        metric(
            &r,
            "mcp_relay_tls_handshake_failures_total{reason=\"timeout\"}"
        ) >= 300.0
    );
}

/// A browser page served from the relay's own `https://` address is
/// same-origin on a TLS listener; the `http://` spelling of that address is
/// another origin there.
#[test]
fn the_https_origin_of_a_tls_listener_is_same_origin() {
    let pki = Pki::new("origin");
    let (cert, key) = pki.server("a", 1001, "relay-a");
    let r = relay(&cert, &key, &[]);
    let cfg = client_config(&pki.ca());
    let body = serde_json::to_vec(&initialize(json!(0))).expect("json");
    let post = |origin: &str| {
        let headers = [
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
            ("Origin", origin),
        ];
        Https::connect(r.port, &cfg)
            .expect("connect")
            .request("POST", "/mcp", &headers, &body)
            .expect("POST")
    };
    let resp = post(&format!("https://127.0.0.1:{}", r.port));
    assert_eq!(resp.status, 200, "own https origin: {}", resp.head);
    let resp = post(&format!("http://127.0.0.1:{}", r.port));
    assert_eq!(
        resp.status, 403,
        "http origin on a TLS listener: {}",
        resp.head
    );
}
