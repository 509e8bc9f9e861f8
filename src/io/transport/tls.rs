//! TLS over the transport's TCP stream: the client configuration, the
//! handshake, reading records, and the pieces the output queue uses to hand
//! plaintext to rustls and its records to the socket (`flush`, shared with
//! plain TCP, stays with the transport).

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::{READ_CHUNK, Transport, TransportError};

/// Builds the client TLS configuration shared by every upstream connection:
/// the webpki (Mozilla) roots plus every certificate in `ca_file`, ALPN
/// "http/1.1", the relay's provider (`crypto`: ring, AES-GCM suites) and
/// the safe default protocol versions (TLS 1.2 and 1.3).
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let shown = path.display();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("CA file {shown}: cannot read: {e}"))?;
        let mut added = 0usize;
        for (i, cert) in certs.enumerate() {
            let cert = cert.map_err(|e| format!("CA file {shown}: bad PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("CA file {shown}: certificate #{}: {e}", i + 1))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("CA file {shown}: no certificates found"));
        }
    }
    let mut config = ClientConfig::builder_with_provider(super::crypto::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Transport {
    /// Moves the handshake as far as the socket allows. `Ok(true)` once it is
    /// complete; `Ok(false)` when waiting for the socket.
    pub(super) fn handshake(&mut self) -> Result<bool, TransportError> {
        let Some(conn) = self.tls.as_mut() else {
            return Ok(true);
        };
        loop {
            if !flush_tls(conn, &mut self.stream)
                .map_err(TransportError::Io)?
                .0
            {
                return Ok(false);
            }
            if !conn.is_handshaking() {
                return Ok(true);
            }
            match conn.read_tls(&mut self.stream) {
                Ok(0) => {
                    self.eof = true;
                    return Err(TransportError::Tls(
                        "peer closed the connection during the handshake".into(),
                    ));
                }
                Ok(_) => {
                    if let Err(e) = conn.process_new_packets() {
                        // rustls queued an alert telling the peer why; try to
                        // send it, the error is what matters.
                        let _ = flush_tls(conn, &mut self.stream);
                        return Err(TransportError::Tls(e.to_string()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TransportError::Io(e)),
            }
        }
    }

    pub(super) fn read_tls(
        &mut self,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(usize, bool), TransportError> {
        let mut total = 0;
        let mut socket_eof = false;
        loop {
            let Some(conn) = self.tls.as_mut() else {
                return Ok((total, false));
            };
            // Plaintext rustls already holds comes first.
            while total < max {
                let start = out.len();
                out.resize(start + READ_CHUNK.min(max - total), 0);
                let res = conn.reader().read(&mut out[start..]);
                out.truncate(start + *res.as_ref().unwrap_or(&0));
                match res {
                    // Ok(0): close_notify received and all plaintext read.
                    Ok(0) => {
                        self.eof = true;
                        return Ok((total, true));
                    }
                    Ok(n) => total += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        crate::log_debug!("upstream closed TLS without close_notify");
                        self.eof = true;
                        return Ok((total, true));
                    }
                    Err(e) => return Err(TransportError::Io(e)),
                }
            }
            if total >= max {
                return Ok((total, false));
            }
            if socket_eof {
                // rustls saw the EOF yet reports neither close; do not spin.
                self.eof = true;
                return Ok((total, true));
            }
            match conn.read_tls(&mut self.stream) {
                Ok(n) => {
                    socket_eof = n == 0;
                    let processed = conn.process_new_packets();
                    // Processing may queue records of our own (an alert, a
                    // key update); send them while we are here.
                    let wants_write = conn.wants_write();
                    if let Err(e) = processed {
                        let _ = flush_tls(conn, &mut self.stream);
                        return Err(TransportError::Tls(e.to_string()));
                    }
                    if wants_write {
                        self.flush()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((total, false)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TransportError::Io(e)),
            }
        }
    }
}

/// Writes rustls's pending records until it has none or the socket would
/// block. Returns (all written, wrote anything).
pub(super) fn flush_tls(
    conn: &mut ClientConnection,
    stream: &mut TcpStream,
) -> io::Result<(bool, bool)> {
    let mut wrote = false;
    while conn.wants_write() {
        match conn.write_tls(stream) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => wrote = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((false, wrote)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((true, wrote))
}

/// Hands plaintext from the queue to rustls, at most `room` bytes, so
/// `OutBuf::flush_to` can feed rustls like any other sink.
pub(super) struct Feed<'a> {
    pub(super) conn: &'a mut ClientConnection,
    pub(super) room: usize,
}

impl Write for Feed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.room);
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.conn.writer().write(&buf[..n])?;
        if n == 0 {
            // rustls's buffer limit: the same as a full socket.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
