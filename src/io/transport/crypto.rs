//! The cryptography every TLS connection of the relay uses, client and
//! listener alike: ring, with the AES-GCM cipher suites of TLS 1.3 and
//! TLS 1.2 and without ChaCha20-Poly1305.
//!
//! Why not ring's default provider: it also links ChaCha20-Poly1305, about
//! 60 KB of assembly (SSE4.1 and AVX2 variants of the sealing and opening
//! code) in a binary with a 2.8 MB budget. Nothing is lost in reach:
//! TLS 1.3 makes `TLS_AES_128_GCM_SHA256` mandatory for every client and
//! server, and every TLS 1.2 server that rustls can talk to at all offers
//! an ECDHE AES-GCM suite (rustls has no CBC suites). What is lost is
//! speed on CPUs without AES instructions, where ChaCha20 is the faster
//! cipher; the relay carries JSON-RPC messages, whose volume makes that
//! immaterial. The key exchange groups (X25519, P-256, P-384), the
//! signature algorithms accepted in certificates and the key types
//! accepted for `--tls-key` are ring's defaults, unchanged.
//!
//! A provider assembled from its parts, rather than ring's default one
//! with its suite list replaced: the default list is a static that names
//! every suite, and taking it at all keeps the ChaCha20 code in the binary.

use std::sync::Arc;

use rustls::SignatureScheme as Scheme;
use rustls::crypto::ring::cipher_suite::{
    TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384,
};
use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
use rustls::crypto::{
    CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::SigningKey;
use webpki::ring as alg;

/// The relay's provider (see the module text for what it leaves out).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        // Preference order as ring's default: TLS 1.3 first, then
        // ECDSA before RSA, 256-bit before 128-bit within each.
        cipher_suites: vec![
            TLS13_AES_256_GCM_SHA384,
            TLS13_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![X25519, SECP256R1, SECP384R1],
        signature_verification_algorithms: SIGNATURES,
        secure_random: &Ring,
        key_provider: &Ring,
    })
}

/// Randomness and private keys from ring, as ring's default provider has
/// them.
#[derive(Debug)]
struct Ring;

impl SecureRandom for Ring {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| GetRandomFailed)
    }
}

impl KeyProvider for Ring {
    fn load_private_key(
        &self,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        rustls::crypto::ring::sign::any_supported_type(&key)
    }
}

/// The signature algorithms ring's default provider accepts in
/// certificates and handshakes, with the same scheme mapping (for
/// TLS 1.2 an ECDSA scheme does not fix the curve, so each names both).
static SIGNATURES: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        alg::ECDSA_P256_SHA256,
        alg::ECDSA_P256_SHA384,
        alg::ECDSA_P384_SHA256,
        alg::ECDSA_P384_SHA384,
        alg::ED25519,
        alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        alg::RSA_PKCS1_2048_8192_SHA256,
        alg::RSA_PKCS1_2048_8192_SHA384,
        alg::RSA_PKCS1_2048_8192_SHA512,
        alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
        alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
        alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    ],
    mapping: &[
        (
            Scheme::ECDSA_NISTP384_SHA384,
            &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
        ),
        (
            Scheme::ECDSA_NISTP256_SHA256,
            &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
        ),
        (Scheme::ED25519, &[alg::ED25519]),
        (
            Scheme::RSA_PSS_SHA512,
            &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
        ),
        (
            Scheme::RSA_PSS_SHA384,
            &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
        ),
        (
            Scheme::RSA_PSS_SHA256,
            &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
        ),
        (Scheme::RSA_PKCS1_SHA512, &[alg::RSA_PKCS1_2048_8192_SHA512]),
        (Scheme::RSA_PKCS1_SHA384, &[alg::RSA_PKCS1_2048_8192_SHA384]),
        (Scheme::RSA_PKCS1_SHA256, &[alg::RSA_PKCS1_2048_8192_SHA256]),
    ],
};

#[cfg(test)]
mod tests {
    //! In-memory handshakes between the relay's configurations and peers
    //! built on ring's full default provider, restricted to one suite or
    //! one protocol version: what the relay can still reach, and what it
    //! now refuses.

    use super::*;
    use crate::io::transport::{TlsFiles, server_config, tls_config};
    use rustls::crypto::ring::cipher_suite::{
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS13_CHACHA20_POLY1305_SHA256,
    };
    use rustls::pki_types::ServerName;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{
        ClientConfig, ClientConnection, ServerConfig, ServerConnection, SupportedCipherSuite,
        SupportedProtocolVersion,
    };
    use std::path::{Path, PathBuf};

    fn data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/tls")
            .join(name)
    }

    /// ring's default provider with only `suites`.
    fn ring_with(suites: &[SupportedCipherSuite]) -> Arc<CryptoProvider> {
        let mut p = rustls::crypto::ring::default_provider();
        p.cipher_suites = suites.to_vec();
        Arc::new(p)
    }

    fn peer_server(
        suites: &[SupportedCipherSuite],
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ServerConfig> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(data("server.pem"))
            .expect("server.pem")
            .collect::<Result<_, _>>()
            .expect("server.pem parses");
        let key = PrivateKeyDer::from_pem_file(data("server.key")).expect("server.key");
        Arc::new(
            ServerConfig::builder_with_provider(ring_with(suites))
                .with_protocol_versions(versions)
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server cert"),
        )
    }

    fn peer_client(
        suites: &[SupportedCipherSuite],
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(data("ca.pem")).expect("ca.pem") {
            roots.add(c.expect("ca parses")).expect("ca added");
        }
        Arc::new(
            ClientConfig::builder_with_provider(ring_with(suites))
                .with_protocol_versions(versions)
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// Runs a handshake in memory (bounded: a handshake is a few flights);
    /// the suite agreed on, or the first error either side raised.
    fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
    ) -> Result<SupportedCipherSuite, rustls::Error> {
        let name = ServerName::try_from("localhost").expect("name");
        let mut c = ClientConnection::new(client, name)?;
        let mut s = ServerConnection::new(server)?;
        for _ in 0..16 {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).expect("to memory");
            }
            let mut rd = &wire[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).expect("from memory");
                s.process_new_packets()?;
            }
            let mut wire = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut wire).expect("to memory");
            }
            let mut rd = &wire[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).expect("from memory");
                c.process_new_packets()?;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(c.negotiated_cipher_suite().expect("agreed"));
            }
        }
        panic!("handshake did not finish in 16 rounds");
    }

    fn relay_client() -> Arc<ClientConfig> {
        tls_config(Some(&data("ca.pem"))).expect("client config")
    }

    fn relay_server() -> Arc<ServerConfig> {
        server_config(&TlsFiles {
            cert: data("server.pem"),
            key: data("server.key"),
        })
        .expect("server config")
    }

    const V13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
    const V12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];

    #[test]
    fn the_relay_reaches_servers_of_either_version_with_either_aes_suite() {
        for suite in [TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384] {
            let got = handshake(relay_client(), peer_server(&[suite], V13)).expect("TLS 1.3");
            assert_eq!(got.suite(), suite.suite());
        }
        for suite in [
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ] {
            let got = handshake(relay_client(), peer_server(&[suite], V12)).expect("TLS 1.2");
            assert_eq!(got.suite(), suite.suite());
        }
    }

    #[test]
    fn the_listener_serves_clients_of_either_version() {
        let got = handshake(
            peer_client(&[TLS13_AES_128_GCM_SHA256], V13),
            relay_server(),
        )
        .expect("TLS 1.3");
        assert_eq!(got.suite(), TLS13_AES_128_GCM_SHA256.suite());
        let got = handshake(
            peer_client(&[TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384], V12),
            relay_server(),
        )
        .expect("TLS 1.2");
        assert_eq!(got.suite(), TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384.suite());
    }

    #[test]
    fn chacha20_only_peers_are_refused_on_both_sides() {
        // The server side finds no suite in common, whichever end the
        // relay is.
        let no_common =
            rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoCipherSuitesInCommon);
        let e = handshake(
            relay_client(),
            peer_server(&[TLS13_CHACHA20_POLY1305_SHA256], V13),
        )
        .expect_err("no common suite");
        assert_eq!(e, no_common);
        let e = handshake(
            peer_client(&[TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256], V12),
            relay_server(),
        )
        .expect_err("no common suite");
        assert_eq!(e, no_common);
    }

    #[test]
    fn the_provider_prefers_the_same_suites_as_rings_default() {
        // Both sides offer everything: the suite chosen is ring's first
        // choice, so the relay negotiates what it negotiated before.
        let all = rustls::crypto::ring::DEFAULT_CIPHER_SUITES;
        let both = &[&rustls::version::TLS13, &rustls::version::TLS12][..];
        let got = handshake(relay_client(), peer_server(all, both)).expect("handshake");
        let before = handshake(peer_client(all, both), peer_server(all, both)).expect("default");
        assert_eq!(got.suite(), before.suite());
    }
}
