//! `reverse --tls-cert FILE --tls-key FILE` (issue 14): HTTPS on the client
//! listener. The admin listener (`--admin`) stays plain HTTP.

use std::path::PathBuf;

use getopts::Options;

use crate::io::transport::TlsFiles;

pub(super) fn add_tls_options(o: &mut Options) {
    o.optopt(
        "",
        "tls-cert",
        "serve HTTPS: PEM certificate chain, leaf first (reloaded on SIGHUP)",
        "FILE",
    );
    o.optopt(
        "",
        "tls-key",
        "the PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1)",
        "FILE",
    );
}

/// Both flags or neither.
pub(super) fn tls_files(m: &getopts::Matches) -> Result<Option<TlsFiles>, String> {
    pair(
        m.opt_str("tls-cert").map(PathBuf::from),
        m.opt_str("tls-key").map(PathBuf::from),
        "--tls-cert",
        "--tls-key",
    )
}

/// Both or neither of a certificate and its key; the error names the one
/// missing by the names given (flags or config keys).
pub fn pair(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    cert_name: &str,
    key_name: &str,
) -> Result<Option<TlsFiles>, String> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(format!("{cert_name} needs {key_name}")),
        (None, Some(_)) => Err(format!("{key_name} needs {cert_name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Command, ReverseConfig, parse};
    use crate::config::parse as parse_config;
    use std::path::Path;

    fn base() -> ReverseConfig {
        let args: Vec<String> = ["reverse", "--config", "x.json"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        match parse(&args).expect("cli").command {
            Command::Reverse(c) => *c,
            _ => panic!("not reverse"),
        }
    }

    #[test]
    fn the_flags_go_together() {
        let args = |extra: &[&str]| -> Vec<String> {
            ["reverse"]
                .iter()
                .chain(extra)
                .chain(["--", "srv"].iter())
                .map(|s| s.to_string())
                .collect()
        };
        let Command::Reverse(c) = parse(&args(&["--tls-cert", "c", "--tls-key", "k"]))
            .expect("ok")
            .command
        else {
            panic!("not reverse")
        };
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: "c".into(),
                key: "k".into()
            })
        );
        let err = parse(&args(&["--tls-key", "k"])).expect_err("no cert");
        assert_eq!(err, "--tls-key needs --tls-cert");
    }

    #[test]
    fn a_certificate_needs_its_key_and_the_other_way_round() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(pair(None, None, "a", "b"), Ok(None));
        assert_eq!(
            pair(p("c"), p("k"), "a", "b"),
            Ok(Some(TlsFiles {
                cert: "c".into(),
                key: "k".into()
            }))
        );
        assert_eq!(
            pair(p("c"), None, "--tls-cert", "--tls-key"),
            Err("--tls-cert needs --tls-key".into())
        );
        assert_eq!(
            pair(None, p("k"), "tls_cert", "tls_key"),
            Err("tls_key needs tls_cert".into())
        );
    }

    #[test]
    fn tls_cert_and_key_are_a_pair_relative_to_the_file() {
        let ups = r#""upstreams": {"a": {"command": ["s"]}}"#;
        let r = parse_config(
            &format!(r#"{{"tls_cert": "c.pem", "tls_key": "/k.pem", {ups}}}"#),
            &base(),
            Some(Path::new("/etc/relay")),
        )
        .unwrap();
        let tls = r.global.tls.expect("tls");
        assert_eq!(tls.cert, Path::new("/etc/relay/c.pem"));
        assert_eq!(tls.key, Path::new("/k.pem"));
        let err = parse_config(&format!(r#"{{"tls_cert": "c.pem", {ups}}}"#), &base(), None)
            .expect_err("no key");
        assert_eq!(err, "tls_cert needs tls_key");
        let err = parse_config(&format!(r#"{{"tls_key": 1, {ups}}}"#), &base(), None)
            .expect_err("not a path");
        assert_eq!(err, "tls_key: expected a file path");
        let err = parse_config(
            r#"{"upstreams": {"a": {"command": ["s"], "tls_cert": "c"}}}"#,
            &base(),
            None,
        )
        .expect_err("not per upstream");
        assert!(err.contains("tls_cert"), "{err}");
    }
}
