//! The server side: an accepted client connection, plain TCP or TLS
//! (rustls `ServerConnection`, driven sans-I/O on the loop thread), seen by
//! the reverse front as one byte stream (`Read` / `Write` / a mio `Source`).
//! And the listener's certificate, loaded at startup and again on SIGHUP.
//!
//! Lifecycle of a TLS connection:
//!
//! ```text
//! accept ──► Handshaking ──rustls done──► Established ──close_notify/EOF──► (EOF)
//!                 └──── bad record, wrong protocol (plain HTTP) ──► error: closed
//! ```
//!
//! The handshake is driven by reads and writes of the stream itself:
//! `read` returns `WouldBlock` until plaintext arrives, `write` queues
//! nothing during the handshake (`WouldBlock`, the caller keeps its bytes).
//!
//! Semantics the front relies on, as for a plain socket:
//! - `read` returns fewer bytes than asked only when the socket said
//!   `WouldBlock` (or at EOF): readiness is edge-triggered, a short read
//!   must mean "drained".
//! - `write` takes bytes only while rustls's records are all on the wire,
//!   at most [`FEED_CHUNK`] at a time; so rustls holds at most one record
//!   of output beyond the caller's own (capped) queue. `pending_tls` says
//!   whether records are still waiting for the socket (the caller flushes
//!   on its writable event and closes only when none are left).
//! - Incoming: rustls holds at most one `read_tls` worth of ciphertext plus
//!   its plaintext; `read` drains plaintext before pulling more, so
//!   rustls's own received-plaintext limit is never reached.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use super::FEED_CHUNK;

/// `--tls-cert` / `--tls-key`: where the listener's certificate chain and
/// private key are read from (at startup and on every SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads a PEM certificate chain (leaf first) and its PEM private key
/// (PKCS#8, PKCS#1 or SEC1) and builds the server configuration: the
/// relay's provider (`crypto`: ring, AES-GCM suites),
/// safe default versions (TLS 1.2 and 1.3), no client certificates, ALPN
/// `http/1.1`. Every error names the file and the reason; a key that does
/// not match the certificate is refused here, not at the first handshake.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("TLS key {}: {}", files.key.display(), pem_error(e)))?;
    let mut config = ServerConfig::builder_with_provider(super::crypto::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "TLS certificate {} with key {}: {e}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("TLS certificate {shown}: {}", pem_error(e)))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS certificate {shown}: {}", pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!("TLS certificate {shown}: no certificates found"));
    }
    Ok(certs)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => format!("cannot read: {e}"),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of that kind found".into(),
        other => format!("bad PEM: {other:?}"),
    }
}

/// The listener's TLS state: the files and the configuration new
/// handshakes use. A reload replaces the configuration only if the new
/// files load; connections already accepted keep the configuration (and
/// session keys) they started with.
pub struct ListenerTls {
    files: TlsFiles,
    current: Arc<ServerConfig>,
}

impl ListenerTls {
    pub fn load(files: TlsFiles) -> Result<ListenerTls, String> {
        let current = server_config(&files)?;
        Ok(ListenerTls { files, current })
    }

    /// Reads the files again; on error the current configuration stays.
    pub fn reload(&mut self) -> Result<(), String> {
        self.current = server_config(&self.files)?;
        Ok(())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// A server-side TLS session for a connection accepted now.
    pub fn accept(&self) -> Result<ServerConnection, String> {
        ServerConnection::new(self.current.clone()).map_err(|e| e.to_string())
    }
}

/// An accepted client connection: plain, or TLS over it.
pub struct ServerStream {
    stream: TcpStream,
    tls: Option<Box<ServerConnection>>,
    /// TLS: the socket reported EOF (later reads report it again).
    eof: bool,
}

impl ServerStream {
    pub fn new(stream: TcpStream, tls: Option<ServerConnection>) -> ServerStream {
        ServerStream {
            stream,
            tls: tls.map(Box::new),
            eof: false,
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// TLS and the handshake is not complete yet.
    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|c| c.is_handshaking())
    }

    /// TLS records (handshake, data, alerts) still waiting for the socket.
    pub fn pending_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(|c| c.wants_write())
    }

    /// Writes pending TLS records until none are left (`Ok(true)`) or the
    /// socket would block (`Ok(false)`). Plain: always `Ok(true)`.
    pub fn flush_tls(&mut self) -> io::Result<bool> {
        let Some(conn) = self.tls.as_mut() else {
            return Ok(true);
        };
        while conn.wants_write() {
            match conn.write_tls(&mut self.stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// TLS: queues close_notify and writes what the socket takes now.
    pub fn close_notify(&mut self) {
        if let Some(conn) = self.tls.as_mut()
            && !conn.is_handshaking()
        {
            conn.send_close_notify();
            let _ = self.flush_tls();
        }
    }

    fn read_tls(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let Some(conn) = self.tls.as_mut() else {
                return Ok(total);
            };
            // Plaintext rustls already holds comes first.
            while total < buf.len() {
                match conn.reader().read(&mut buf[total..]) {
                    // close_notify received and everything read.
                    Ok(0) => return Ok(total),
                    Ok(n) => total += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // EOF without close_notify: an EOF like any other.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(total),
                    Err(e) => return Err(e),
                }
            }
            if total == buf.len() {
                return Ok(total);
            }
            if self.eof {
                return Ok(total);
            }
            match conn.read_tls(&mut self.stream) {
                Ok(0) => {
                    self.eof = true;
                    // rustls now knows: the next reader() read says how.
                    if let Err(e) = conn.process_new_packets() {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    if total > 0 {
                        return Ok(total);
                    }
                    if conn.is_handshaking() {
                        return Ok(0);
                    }
                }
                Ok(_) => {
                    let processed = conn.process_new_packets();
                    // Handshake messages, alerts and key updates of our own.
                    let flushed = self.flush_tls();
                    if let Err(e) = processed {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    flushed?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return if total > 0 { Ok(total) } else { Err(e) };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Hands plaintext to rustls one chunk at a time, each only once the
    /// records of the one before are all on the wire; returns what rustls
    /// took. Short (or `WouldBlock`) only when the socket would block, as a
    /// socket's own write: `OutBuf::flush_to` reads a short write as "full".
    fn write_tls(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut total = 0;
        loop {
            if !self.flush_tls()? || total == buf.len() {
                break;
            }
            let Some(conn) = self.tls.as_mut() else {
                break;
            };
            if conn.is_handshaking() {
                // Nothing is written before the handshake is done (the
                // front answers only requests it read): kept queued.
                break;
            }
            let end = buf.len().min(total + FEED_CHUNK);
            let n = conn.writer().write(&buf[total..end])?;
            if n == 0 {
                // rustls's buffer limit: the same as a full socket.
                break;
            }
            total += n;
        }
        if total == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(total)
    }
}

impl Read for ServerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tls.is_some() {
            self.read_tls(buf)
        } else {
            self.stream.read(buf)
        }
    }
}

impl Write for ServerStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.tls.is_some() {
            self.write_tls(buf)
        } else {
            self.stream.write(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for ServerStream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.stream.register(r, t, i)
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.stream.reregister(r, t, i)
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.stream.deregister(r)
    }
}

#[cfg(test)]
mod tests {
    //! Certificates: tests/data/tls (README there says how they were made).
    //! Handshakes, reloads and timeouts over real sockets are in
    //! tests/tls_listener.rs.

    use super::*;

    fn data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/tls")
            .join(name)
    }

    fn files(cert: &str, key: &str) -> TlsFiles {
        TlsFiles {
            cert: data(cert),
            key: data(key),
        }
    }

    #[test]
    fn loads_the_test_certificate_with_alpn_http11() {
        let config = server_config(&files("server.pem", "server.key")).expect("loads");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn errors_name_the_file_and_the_reason() {
        let err = server_config(&files("missing.pem", "server.key")).expect_err("missing");
        assert!(
            err.contains("missing.pem") && err.contains("cannot read"),
            "{err}"
        );
        // A key where the certificate should be: no certificate in it.
        let err = server_config(&files("server.key", "server.key")).expect_err("no cert");
        assert!(
            err.contains("server.key") && err.contains("no certificates"),
            "{err}"
        );
        // A certificate where the key should be: no key in it.
        let err = server_config(&files("server.pem", "ca.pem")).expect_err("no key");
        assert!(err.contains("TLS key") && err.contains("ca.pem"), "{err}");
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused_at_load() {
        // The CA's certificate with the server's key.
        let err = server_config(&files("ca.pem", "server.key")).expect_err("mismatch");
        assert!(
            err.contains("ca.pem") && err.contains("server.key"),
            "{err}"
        );
    }

    #[test]
    fn a_failed_reload_keeps_the_current_configuration() {
        let dir = std::env::temp_dir().join(format!("mcp-relay-srvtls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::copy(data("server.pem"), &cert).expect("copy");
        std::fs::copy(data("server.key"), &key).expect("copy");
        let mut tls = ListenerTls::load(TlsFiles {
            cert: cert.clone(),
            key,
        })
        .expect("loads");
        let before = tls.current.clone();
        std::fs::write(&cert, "garbage").expect("write");
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.current), "kept the old one");
        std::fs::copy(data("server.pem"), &cert).expect("copy");
        tls.reload().expect("reloads");
        assert!(!Arc::ptr_eq(&before, &tls.current), "a new one");
        assert!(tls.accept().is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
