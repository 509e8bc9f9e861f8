//! A non-blocking client connection to an upstream: plain TCP, or TLS over TCP
//! with rustls driven sans-I/O (`read_tls` / `process_new_packets` /
//! `write_tls`), all on the loop thread.
//!
//! Lifecycle, one phase at a time:
//!
//! ```text
//! connect() ──► Connecting ──first readiness, take_error()/peer_addr()──► Handshaking (TLS)
//!                                                                    └──► Established (plain)
//! Handshaking ──rustls done──► Established
//! ```
//!
//! Any `Err` from a method is final: the owner drops the transport (which
//! closes the socket). The owner passes readiness in, `on_ready` says what
//! changed, and the owner reads while `Ready::readable` (and again later by
//! itself when a read stopped at `max`: the loop caps what it reads from one
//! source per turn, for fairness, and no new edge will come for bytes already
//! waiting).
//!
//! Buffering (memory is bounded by the caller):
//! - Outgoing plaintext is queued in an `OutBuf` until the socket takes it.
//!   Its size is whatever the caller handed to `write` and is not yet on the
//!   wire (`pending_out`); the caller's protocol owns that bound (it only
//!   writes the request it has).
//! - With TLS, plaintext is handed to rustls at most `FEED_CHUNK` bytes at a
//!   time and only once rustls's previous records are all on the wire, so
//!   rustls holds at most one chunk of records (plus handshake messages and
//!   alerts) beyond the queue.
//! - Incoming data: rustls buffers at most what one `read_tls` brings in
//!   (its deframer limit, about one TLS record) plus the plaintext of it; `read`
//!   drains rustls's plaintext before pulling more ciphertext, so rustls's own
//!   received-plaintext limit is never reached.
//!
//! This file holds the phases, the plain TCP paths and the output queue that
//! both kinds share; `tls` holds what only TLS needs: the client
//! configuration ([`tls_config`]), the handshake, reading records, and
//! handing plaintext to rustls. The unit tests here cover both kinds.
//! `server` is the other side: accepted client connections of the reverse
//! listener, plain or TLS ([`ServerStream`]), and the listener's
//! certificate, reloadable ([`ListenerTls`]).

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::buf::OutBuf;

mod crypto;
mod server;
mod tls;

pub use server::{ListenerTls, ServerStream, TlsFiles, server_config};
pub use tls::tls_config;
use tls::{Feed, flush_tls};

/// Bytes asked of the socket (or of rustls) per read syscall.
const READ_CHUNK: usize = 16 * 1024;
/// Plaintext handed to rustls at once: one maximum-size TLS record.
const FEED_CHUNK: usize = 16 * 1024;

#[derive(Debug)]
pub enum TransportError {
    /// The TCP connect failed: refused, unreachable, reset before it completed.
    ConnectFailed(io::Error),
    /// The TLS handshake failed, or the peer broke the TLS protocol later.
    /// The message is rustls's reason, e.g. "invalid peer certificate:
    /// UnknownIssuer".
    Tls(String),
    /// The connection failed after connect: reset, broken pipe, ...
    Io(io::Error),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            TransportError::Tls(why) => write!(f, "TLS: {why}"),
            TransportError::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// What `on_ready` changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// The TCP connect (and the TLS handshake, if any) completed in this call.
    pub established_now: bool,
    /// Plaintext may be available: call `read` (until it returns less than
    /// `max`, or again on a later turn if it stopped at `max`).
    pub readable: bool,
    /// The peer has closed its side (seen as EOF by an earlier `read` or by
    /// the handshake); nothing more will arrive.
    pub closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Non-blocking connect in flight; decided on the first readiness event.
    Connecting,
    /// TCP up, rustls handshake in progress.
    Handshaking,
    /// Plaintext flows.
    Established,
}

pub struct Transport {
    stream: TcpStream,
    tls: Option<ClientConnection>,
    phase: Phase,
    /// Plaintext the caller wrote and nobody has taken yet (the socket for
    /// plain TCP, rustls for TLS).
    out: OutBuf,
    /// TLS only: plaintext handed to rustls whose records are not all on the
    /// wire yet; zero whenever rustls has nothing left to write.
    in_flight: usize,
    /// TLS only: `in_flight` was already counted in `sent`.
    in_flight_counted: bool,
    /// Plaintext bytes handed to the kernel (see `bytes_sent`).
    sent: u64,
    /// EOF seen from the peer (TCP FIN, or TLS close_notify / unclean EOF).
    eof: bool,
    /// `shutdown` was called: no more writes.
    shut: bool,
}

impl Transport {
    /// Starts a non-blocking connect with TCP_NODELAY; TLS if `tls` is Some
    /// (the server name is used for SNI and for certificate verification).
    /// Register the transport next; the outcome comes with the first
    /// readiness event.
    pub fn connect(
        addr: SocketAddr,
        tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    ) -> Result<Transport, TransportError> {
        // The TLS session first: a bad server name fails without a socket.
        let tls = match tls {
            Some((config, name)) => Some(
                ClientConnection::new(config, name)
                    .map_err(|e| TransportError::Tls(e.to_string()))?,
            ),
            None => None,
        };
        let stream = TcpStream::connect(addr).map_err(TransportError::ConnectFailed)?;
        // Requests are written whole; Nagle would only delay their tails.
        stream
            .set_nodelay(true)
            .map_err(TransportError::ConnectFailed)?;
        Ok(Transport {
            stream,
            tls,
            phase: Phase::Connecting,
            out: OutBuf::new(usize::MAX),
            in_flight: 0,
            in_flight_counted: false,
            sent: 0,
            eof: false,
            shut: false,
        })
    }

    /// Registers for READABLE | WRITABLE (mio is edge-triggered).
    pub fn register(&mut self, reg: &Registry, token: Token) -> io::Result<()> {
        reg.register(
            &mut self.stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    pub fn deregister(&mut self, reg: &Registry) {
        let _ = reg.deregister(&mut self.stream);
    }

    /// Drives connect, handshake and queued output after a readiness event.
    /// Pass `readable = event.is_readable() || event.is_read_closed() ||
    /// event.is_error()` and the same for writable: HUP and ERR are hints,
    /// the syscalls tell the truth.
    pub fn on_ready(&mut self, readable: bool, writable: bool) -> Result<Ready, TransportError> {
        let mut ready = Ready::default();
        if self.phase == Phase::Connecting {
            if !self.connect_done()? {
                return Ok(ready);
            }
            self.phase = if self.tls.is_some() {
                Phase::Handshaking
            } else {
                Phase::Established
            };
            ready.established_now = self.phase == Phase::Established;
        }
        if self.phase == Phase::Handshaking {
            if !self.handshake()? {
                return Ok(ready);
            }
            self.phase = Phase::Established;
            ready.established_now = true;
        }
        if ready.established_now {
            // The edge that finished the connect or handshake may also have
            // brought data, and it will not come again: tell the owner to
            // read now. Output queued while connecting goes out now too.
            ready.readable = true;
            self.flush()?;
        } else {
            if writable {
                self.flush()?;
            }
            ready.readable = readable;
        }
        ready.closed = self.eof;
        Ok(ready)
    }

    /// TCP connected and, with TLS, the handshake complete.
    pub fn is_established(&self) -> bool {
        self.phase == Phase::Established
    }

    /// Appends available plaintext to `out`, reading until the socket would
    /// block, the peer closed, or `max` bytes were appended (fairness; call
    /// again later, the edge for the rest has passed). Returns the bytes
    /// appended and whether the peer has closed. A TLS close without
    /// close_notify is reported as a close like any other; whether a
    /// response was cut short is the caller's protocol's call.
    /// Before the connection is established this returns `(0, false)`.
    pub fn read(&mut self, out: &mut Vec<u8>, max: usize) -> Result<(usize, bool), TransportError> {
        if self.eof {
            return Ok((0, true));
        }
        if self.phase != Phase::Established {
            return Ok((0, false));
        }
        if self.tls.is_some() {
            self.read_tls(out, max)
        } else {
            self.read_plain(out, max)
        }
    }

    /// Queues plaintext and writes as much as the socket takes now; the rest
    /// goes out on later writable events. Before the connection is
    /// established everything is queued.
    pub fn write(&mut self, data: &[u8]) -> Result<(), TransportError> {
        if self.shut {
            return Err(TransportError::Io(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        self.out.push_raw(data);
        if self.phase == Phase::Established {
            self.flush()?;
        }
        Ok(())
    }

    /// Plaintext bytes written by the caller and not yet (entirely) handed to
    /// the kernel. Zero means everything is on the wire.
    pub fn pending_out(&self) -> usize {
        self.out.len() + self.in_flight
    }

    /// Plaintext bytes handed to the kernel, counted conservatively: with TLS
    /// a chunk counts as soon as any byte of its records was written, and
    /// handshake bytes never count. Zero means no byte of any request can
    /// have reached the upstream, so a request may be retried elsewhere.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// Best effort, never blocks: writes what the socket takes now of the
    /// queue, then close_notify (TLS), then FIN. Output the socket does not
    /// take at once is dropped. Reading stays possible (half-close).
    pub fn shutdown(&mut self) {
        if self.shut {
            return;
        }
        self.shut = true;
        if self.phase == Phase::Established {
            let _ = self.flush();
            self.out.clear();
            if let Some(conn) = self.tls.as_mut() {
                conn.send_close_notify();
                let _ = flush_tls(conn, &mut self.stream);
            }
            let _ = self.stream.shutdown(Shutdown::Write);
        } else {
            self.out.clear();
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }

    /// mio's recipe for a non-blocking connect: an error from `take_error`
    /// means it failed; `peer_addr` succeeding means it is done; NotConnected
    /// (or EINPROGRESS) means the event was spurious and we wait for another.
    fn connect_done(&mut self) -> Result<bool, TransportError> {
        match self.stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return Err(TransportError::ConnectFailed(e)),
        }
        match self.stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e)
                if e.kind() == io::ErrorKind::NotConnected
                    || e.raw_os_error() == Some(libc::EINPROGRESS) =>
            {
                Ok(false)
            }
            Err(e) => Err(TransportError::ConnectFailed(e)),
        }
    }

    /// Writes queued output until the socket would block or the queue is
    /// empty. Only called once established.
    fn flush(&mut self) -> Result<(), TransportError> {
        let Some(conn) = self.tls.as_mut() else {
            let before = self.out.len();
            let done = self.out.flush_to(&mut self.stream);
            self.sent += (before - self.out.len()) as u64;
            return done.map(drop).map_err(TransportError::Io);
        };
        loop {
            let (drained, wrote) = flush_tls(conn, &mut self.stream).map_err(TransportError::Io)?;
            // Feeding waits until earlier records are all out, so any record
            // written while a chunk is in flight carries (part of) that chunk.
            if wrote && self.in_flight > 0 && !self.in_flight_counted {
                self.sent += self.in_flight as u64;
                self.in_flight_counted = true;
            }
            if !drained {
                return Ok(());
            }
            self.in_flight = 0;
            if self.out.is_empty() {
                return Ok(());
            }
            let before = self.out.len();
            let mut feed = Feed {
                conn,
                room: FEED_CHUNK,
            };
            self.out.flush_to(&mut feed).map_err(TransportError::Io)?;
            self.in_flight = before - self.out.len();
            self.in_flight_counted = false;
            if self.in_flight == 0 {
                // rustls took nothing (cannot happen once its buffer is
                // empty); stop rather than spin.
                return Ok(());
            }
        }
    }

    fn read_plain(
        &mut self,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(usize, bool), TransportError> {
        use std::os::fd::AsRawFd;
        let fd = self.stream.as_raw_fd();
        let mut total = 0;
        while total < max {
            let want = READ_CHUNK.min(max - total);
            out.reserve(want);
            // Read straight into the vector's spare capacity: no zero-fill
            // per read (that memset was most of the relay's CPU when many
            // idle streams wake up at once).
            let spare = out.spare_capacity_mut();
            // SAFETY: recv writes at most `want` bytes into memory the vector
            // owns (reserved above); only the bytes it reports are exposed.
            let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), want, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(TransportError::Io(e)),
                }
            }
            if n == 0 {
                self.eof = true;
                return Ok((total, true));
            }
            // SAFETY: recv initialised the first `n` bytes of the spare room.
            unsafe { out.set_len(out.len() + n as usize) };
            total += n as usize;
        }
        Ok((total, false))
    }
}

#[cfg(test)]
mod tests {
    //! Real sockets on 127.0.0.1; servers are blocking std code on threads.
    //! Certificates: tests/data/tls (README there says how they were made).

    use super::*;
    use mio::{Events, Poll};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ServerConfig, ServerConnection, StreamOwned};
    use std::io::{Read, Write};
    use std::net::{IpAddr, Ipv4Addr, TcpListener};
    use std::path::{Path, PathBuf};
    use std::thread::{self, JoinHandle};
    use std::time::{Duration, Instant};

    const TOKEN: Token = Token(1);
    const MAX: usize = 16 * 1024;

    fn data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/tls")
            .join(name)
    }

    fn localhost() -> ServerName<'static> {
        ServerName::try_from("localhost").expect("valid name")
    }

    fn trusting_test_ca() -> Arc<ClientConfig> {
        tls_config(Some(&data("ca.pem"))).expect("test CA loads")
    }

    /// A client transport on its own Poll, collecting everything it reads.
    struct Client {
        poll: Poll,
        events: Events,
        t: Transport,
        got: Vec<u8>,
        established_events: usize,
    }

    impl Client {
        fn connect(
            addr: SocketAddr,
            tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
        ) -> Result<Client, TransportError> {
            let poll = Poll::new().expect("poll");
            let mut t = Transport::connect(addr, tls)?;
            t.register(poll.registry(), TOKEN).expect("register");
            Ok(Client {
                poll,
                events: Events::with_capacity(16),
                t,
                got: Vec::new(),
                established_events: 0,
            })
        }

        /// Runs the loop until `done` holds, the peer closes (`Ok(true)`),
        /// or the transport fails. Panics after 10 s.
        fn run(&mut self, done: impl Fn(&Client) -> bool) -> Result<bool, TransportError> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if done(self) {
                    return Ok(false);
                }
                let left = deadline
                    .checked_duration_since(Instant::now())
                    .expect("test loop timed out");
                self.poll
                    .poll(&mut self.events, Some(left.min(Duration::from_millis(100))))
                    .expect("poll");
                for ev in self.events.iter() {
                    assert_eq!(ev.token(), TOKEN);
                    let r = self.t.on_ready(
                        ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                        ev.is_writable() || ev.is_write_closed() || ev.is_error(),
                    )?;
                    if r.established_now {
                        assert!(self.t.is_established());
                        self.established_events += 1;
                    }
                    if r.readable {
                        // Stopping at MAX means more may wait: read again.
                        loop {
                            let (n, eof) = self.t.read(&mut self.got, MAX)?;
                            assert!(n <= MAX);
                            if eof {
                                return Ok(true);
                            }
                            if n < MAX {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    fn closed_port() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    type Served = JoinHandle<io::Result<()>>;

    /// A plain TCP server for one connection.
    fn plain_server(
        serve: impl FnOnce(std::net::TcpStream) -> io::Result<()> + Send + 'static,
    ) -> (SocketAddr, Served) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let h = thread::spawn(move || {
            let (s, _) = l.accept()?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.set_write_timeout(Some(Duration::from_secs(10)))?;
            serve(s)
        });
        (addr, h)
    }

    type TlsStream = StreamOwned<ServerConnection, std::net::TcpStream>;

    /// A rustls server with the test certificate for one connection; `serve`
    /// runs once the handshake is done.
    fn tls_server(
        serve: impl FnOnce(&mut TlsStream) -> io::Result<()> + Send + 'static,
    ) -> (SocketAddr, Served) {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(data("server.pem"))
            .expect("server.pem")
            .collect::<Result<_, _>>()
            .expect("server.pem parses");
        let key = PrivateKeyDer::from_pem_file(data("server.key")).expect("server.key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server cert");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        plain_server(move |sock| {
            let conn = ServerConnection::new(config).map_err(io::Error::other)?;
            let mut s = StreamOwned::new(conn, sock);
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock)?;
            }
            serve(&mut s)
        })
    }

    /// Echoes until the client closes, then closes cleanly.
    fn echo<S: Read + Write>(s: &mut S) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => s.write_all(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn expect_tls_error(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> String {
        let mut c = Client::connect(addr, Some((config, name))).expect("connect starts");
        match c.run(|c| c.t.is_established()) {
            Err(TransportError::Tls(why)) => why,
            other => panic!("expected a TLS error, got {other:?}"),
        }
    }

    #[test]
    fn connecting_to_a_closed_port_is_connect_failed() {
        let addr = closed_port();
        let err = match Client::connect(addr, None) {
            Err(e) => e,
            Ok(mut c) => c.run(|_| false).expect_err("nobody listens"),
        };
        match err {
            TransportError::ConnectFailed(e) => {
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}")
            }
            other => panic!("expected ConnectFailed, got {other:?}"),
        }
    }

    #[test]
    fn plain_echo_round_trip_queues_until_connected() {
        let (addr, server) = plain_server(|mut s| echo(&mut s));
        let mut c = Client::connect(addr, None).expect("connect");
        // Large enough to fill the socket buffers both ways.
        let msg = pattern(4 * 1024 * 1024);
        c.t.write(&msg).expect("queued");
        assert_eq!((c.t.pending_out(), c.t.bytes_sent()), (msg.len(), 0));
        assert!(!c.t.is_established());
        let want = msg.len();
        assert!(!c.run(|c| c.got.len() >= want).expect("echo"));
        assert_eq!(c.got, msg);
        assert_eq!(c.established_events, 1);
        assert_eq!((c.t.pending_out(), c.t.bytes_sent()), (0, want as u64));
        // Our FIN ends the echo; the server's close is our EOF.
        c.t.shutdown();
        assert!(c.run(|_| false).expect("clean close"));
        server.join().expect("server thread").expect("server ok");
        assert_eq!(c.t.read(&mut c.got, MAX).expect("after eof"), (0, true));
    }

    #[test]
    fn plain_peer_close_is_eof_after_the_data() {
        let (addr, server) = plain_server(|mut s| s.write_all(b"bye"));
        let mut c = Client::connect(addr, None).expect("connect");
        assert!(c.run(|_| false).expect("eof"));
        assert_eq!(c.got, b"bye");
        server.join().expect("server thread").expect("server ok");
    }

    #[test]
    fn tls_echo_round_trip_with_the_test_ca() {
        let (addr, server) = tls_server(|s| {
            echo(s)?;
            s.conn.send_close_notify();
            s.flush()
        });
        let mut c =
            Client::connect(addr, Some((trusting_test_ca(), localhost()))).expect("connect");
        let msg = pattern(1024 * 1024 + 17);
        c.t.write(&msg).expect("queued");
        assert_eq!(c.t.bytes_sent(), 0);
        let want = msg.len();
        assert!(!c.run(|c| c.got.len() >= want).expect("echo"));
        assert_eq!(c.got, msg);
        assert_eq!(c.established_events, 1);
        assert_eq!((c.t.pending_out(), c.t.bytes_sent()), (0, want as u64));
        // close_notify + FIN from us; close_notify back is a clean EOF.
        c.t.shutdown();
        assert!(c.run(|_| false).expect("clean close"));
        server.join().expect("server thread").expect("server ok");
        assert!(matches!(c.t.write(b"x"), Err(TransportError::Io(_))));
    }

    #[test]
    fn tls_accepts_an_ip_address_server_name() {
        let (addr, server) = tls_server(|s| {
            s.write_all(b"hi")?;
            s.conn.send_close_notify();
            s.flush()
        });
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let mut c = Client::connect(addr, Some((trusting_test_ca(), name))).expect("connect");
        assert!(c.run(|_| false).expect("clean close"));
        assert_eq!(c.got, b"hi");
        server.join().expect("server thread").expect("server ok");
    }

    #[test]
    fn tls_peer_close_is_eof_with_or_without_close_notify() {
        let (addr, clean) = tls_server(|s| {
            s.write_all(b"clean")?;
            s.conn.send_close_notify();
            s.flush()
        });
        let mut c =
            Client::connect(addr, Some((trusting_test_ca(), localhost()))).expect("connect");
        assert!(c.run(|_| false).expect("eof"));
        assert_eq!(c.got, b"clean");
        clean.join().expect("server thread").expect("server ok");

        // Dropping the stream closes TCP without close_notify.
        let (addr, unclean) = tls_server(|s| s.write_all(b"cut").and_then(|()| s.flush()));
        let mut c =
            Client::connect(addr, Some((trusting_test_ca(), localhost()))).expect("connect");
        assert!(c.run(|_| false).expect("eof"));
        assert_eq!(c.got, b"cut");
        unclean.join().expect("server thread").expect("server ok");
    }

    #[test]
    fn tls_fails_on_the_certificate_with_webpki_roots_only() {
        let (addr, _server) = tls_server(echo);
        let config = tls_config(None).expect("webpki roots");
        let why = expect_tls_error(addr, config, localhost());
        assert!(
            why.contains("certificate") && why.contains("UnknownIssuer"),
            "{why}"
        );
    }

    #[test]
    fn tls_fails_on_the_certificate_with_the_wrong_ca() {
        let (addr, _server) = tls_server(echo);
        let config = tls_config(Some(&data("wrong-ca.pem"))).expect("wrong CA loads");
        let why = expect_tls_error(addr, config, localhost());
        assert!(
            why.contains("certificate") && why.contains("UnknownIssuer"),
            "{why}"
        );
    }

    #[test]
    fn tls_fails_when_the_certificate_does_not_name_the_server() {
        let (addr, _server) = tls_server(echo);
        let name = ServerName::try_from("wrong.example").expect("valid name");
        let why = expect_tls_error(addr, trusting_test_ca(), name);
        assert!(
            why.contains("certificate") && why.contains("not valid for name"),
            "{why}"
        );
    }

    #[test]
    fn tls_config_names_the_file_and_the_reason() {
        let missing = data("missing.pem");
        let err = tls_config(Some(&missing)).expect_err("missing file");
        assert!(
            err.contains("missing.pem") && err.contains("cannot read"),
            "{err}"
        );

        // A key but no certificate.
        let err = tls_config(Some(&data("server.key"))).expect_err("no certs");
        assert!(
            err.contains("server.key") && err.contains("no certificates"),
            "{err}"
        );

        let bad = std::env::temp_dir().join(format!("mcp-relay-bad-{}.pem", std::process::id()));
        std::fs::write(&bad, "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n")
            .expect("temp file");
        let err = tls_config(Some(&bad)).expect_err("bad PEM");
        let _ = std::fs::remove_file(&bad);
        assert!(
            err.contains("bad PEM") && err.contains(&bad.display().to_string()),
            "{err}"
        );
    }
}
