//! The token store of `forward --url` (issue 14): one file per
//! (issuer, resource) under `$XDG_CONFIG_HOME/mcp-relay/oauth/` (else
//! `~/.config/mcp-relay/oauth/`, or `--oauth-store DIR`). The name is a
//! hash of the pair only (never of the relay's version, so an upgrade keeps
//! the login). Files are 0600 in a 0700 directory, written whole to a
//! temporary file and renamed over the old one, so a reader sees the old
//! record or the new one, never half of one.
//!
//! Refreshes are serialized across relays by `flock` on a sibling lock
//! file, taken without blocking (the loop retries on a timer): whoever gets
//! it re-reads the record first, since another relay may have refreshed
//! while it waited.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::flow::{AsMeta, ClientKind, Registration, Tokens};
use super::fnv64;

/// Files looked at when finding a record by upstream URL.
pub const MAX_FILES: usize = 256;
/// Largest record read.
const MAX_RECORD: u64 = 64 << 10;

/// What one file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The upstream URL the record was made for (to find it at start-up).
    pub url: String,
    pub resource: String,
    pub meta: AsMeta,
    pub reg: Option<Registration>,
    pub tokens: Option<Tokens>,
    pub port: Option<u16>,
    /// Unix seconds of the write.
    pub saved_at: u64,
}

pub struct Store {
    dir: PathBuf,
}

/// The held lock; dropping it releases it (closing the file does).
pub struct Lock {
    _file: File,
}

impl Store {
    /// The default directory: `$XDG_CONFIG_HOME/mcp-relay/oauth`, else
    /// `$HOME/.config/mcp-relay/oauth`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x),
            None => {
                PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config")
            }
        };
        Some(base.join("mcp-relay").join("oauth"))
    }

    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn stem(issuer: &str, resource: &str) -> String {
        format!("{:016x}", fnv64(&[issuer, resource]))
    }

    pub fn path(&self, issuer: &str, resource: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", Store::stem(issuer, resource)))
    }

    fn ensure_dir(&self) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        // An existing directory may be wider: narrow it.
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
    }

    pub fn load(&self, issuer: &str, resource: &str) -> Option<Record> {
        read_record(&self.path(issuer, resource))
    }

    /// The newest record made for upstream `url`, if any (at most
    /// [`MAX_FILES`] files are read).
    pub fn find(&self, url: &str) -> Option<Record> {
        let entries = fs::read_dir(&self.dir).ok()?;
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .take(MAX_FILES)
            .filter_map(|e| read_record(&e.path()))
            .filter(|r| r.url == url)
            .max_by_key(|r| r.saved_at)
    }

    /// Writes `rec` atomically (temporary file, fsync, rename), mode 0600.
    pub fn save(&self, rec: &Record) -> io::Result<PathBuf> {
        self.ensure_dir()?;
        let path = self.path(&rec.meta.issuer, &rec.resource);
        let tmp = self.dir.join(format!(
            ".{}.{}.tmp",
            Store::stem(&rec.meta.issuer, &rec.resource),
            std::process::id()
        ));
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // `{:#}` writes what `to_vec_pretty` would (two-space indents) with
        // the pretty printer `Value`'s `Display` already carries.
        let body = format!("{:#}", to_json(rec));
        let done = f.write_all(body.as_bytes()).and_then(|()| f.sync_all());
        if let Err(e) = done.and_then(|()| fs::rename(&tmp, &path)) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(path)
    }

    pub fn remove(&self, issuer: &str, resource: &str) -> io::Result<()> {
        fs::remove_file(self.path(issuer, resource))
    }

    /// `flock(LOCK_EX | LOCK_NB)` on the record's lock file: `None` while
    /// another relay holds it.
    pub fn try_lock(&self, issuer: &str, resource: &str) -> io::Result<Option<Lock>> {
        self.ensure_dir()?;
        let path = self
            .dir
            .join(format!("{}.lock", Store::stem(issuer, resource)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        // SAFETY: flock on a descriptor this function owns.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(Some(Lock { _file: file }));
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(e)
        }
    }
}

fn kind_name(k: ClientKind) -> &'static str {
    match k {
        ClientKind::Preregistered => "preregistered",
        ClientKind::MetadataDocument => "metadata-document",
        ClientKind::Dynamic => "dynamic",
    }
}

fn to_json(r: &Record) -> Value {
    let m = &r.meta;
    json!({
        "version": 1,
        "url": r.url,
        "resource": r.resource,
        "issuer": m.issuer,
        "authorization_endpoint": m.authorization_endpoint,
        "token_endpoint": m.token_endpoint,
        "registration_endpoint": m.registration_endpoint,
        "revocation_endpoint": m.revocation_endpoint,
        "client_id_metadata_document_supported": m.cimd,
        "iss_on_redirect": m.iss_on_redirect,
        "secret_in_form": m.secret_in_form,
        "client": r.reg.as_ref().map(|c| json!({
            "client_id": c.id,
            "client_secret": c.secret,
            "kind": kind_name(c.kind),
            "redirect_uri": c.redirect_uri,
        })),
        "access_token": r.tokens.as_ref().map(|t| &t.access),
        "refresh_token": r.tokens.as_ref().and_then(|t| t.refresh.as_ref()),
        "expires_at": r.tokens.as_ref().and_then(|t| t.expires_at),
        "issued_at": r.tokens.as_ref().map(|t| t.issued_at),
        "scope": r.tokens.as_ref().map(|t| &t.scope),
        "callback_port": r.port,
        "saved_at": r.saved_at,
    })
}

fn read_record(path: &Path) -> Option<Record> {
    let f = File::open(path).ok()?;
    if f.metadata().ok()?.len() > MAX_RECORD {
        return None;
    }
    // Read whole and parsed from the bytes: the relay's other documents are
    // parsed from bytes too, so this adds no second JSON reader to the binary.
    let mut body = Vec::new();
    f.take(MAX_RECORD + 1).read_to_end(&mut body).ok()?;
    if body.len() as u64 > MAX_RECORD {
        return None;
    }
    let v: Value = serde_json::from_slice(&body).ok()?;
    from_json(&v)
}

fn from_json(v: &Value) -> Option<Record> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    let meta = AsMeta {
        issuer: s("issuer")?,
        authorization_endpoint: s("authorization_endpoint").unwrap_or_default(),
        token_endpoint: s("token_endpoint")?,
        registration_endpoint: s("registration_endpoint"),
        revocation_endpoint: s("revocation_endpoint"),
        cimd: b("client_id_metadata_document_supported"),
        iss_on_redirect: b("iss_on_redirect"),
        secret_in_form: b("secret_in_form"),
    };
    let reg = v.get("client").filter(|c| c.is_object()).and_then(|c| {
        let cs = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Registration {
            id: cs("client_id")?,
            secret: cs("client_secret"),
            kind: match c.get("kind").and_then(Value::as_str)? {
                "preregistered" => ClientKind::Preregistered,
                "metadata-document" => ClientKind::MetadataDocument,
                _ => ClientKind::Dynamic,
            },
            redirect_uri: cs("redirect_uri"),
        })
    });
    let tokens = s("access_token").map(|access| Tokens {
        access,
        refresh: s("refresh_token"),
        expires_at: v.get("expires_at").and_then(Value::as_u64),
        issued_at: v.get("issued_at").and_then(Value::as_u64).unwrap_or(0),
        scope: s("scope").unwrap_or_default(),
    });
    Some(Record {
        url: s("url")?,
        resource: s("resource")?,
        meta,
        reg,
        tokens,
        port: v
            .get("callback_port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok()),
        saved_at: v.get("saved_at").and_then(Value::as_u64).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcp-relay-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn record(access: &str, saved_at: u64) -> Record {
        Record {
            url: "https://r.example/mcp".into(),
            resource: "https://r.example/mcp".into(),
            meta: AsMeta {
                issuer: "https://as.example".into(),
                authorization_endpoint: "https://as.example/a".into(),
                token_endpoint: "https://as.example/t".into(),
                registration_endpoint: None,
                revocation_endpoint: Some("https://as.example/r".into()),
                cimd: false,
                iss_on_redirect: true,
                secret_in_form: false,
            },
            reg: Some(Registration {
                id: "c".into(),
                secret: None,
                kind: ClientKind::Dynamic,
                redirect_uri: Some("http://127.0.0.1:38001/callback".into()),
            }),
            tokens: Some(Tokens {
                access: access.into(),
                refresh: Some("r".into()),
                expires_at: Some(100),
                issued_at: 40,
                scope: "mcp".into(),
            }),
            port: Some(38001),
            saved_at,
        }
    }

    #[test]
    fn records_round_trip_with_private_modes() {
        let d = tmpdir("rt");
        let st = Store::new(d.join("oauth"));
        let path = st.save(&record("a1", 1)).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(st.dir()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            st.load("https://as.example", "https://r.example/mcp"),
            Some(record("a1", 1))
        );
        assert_eq!(st.find("https://r.example/mcp"), Some(record("a1", 1)));
        assert_eq!(st.find("https://other.example/mcp"), None);
        // Rewritten whole; no temporary file left behind.
        st.save(&record("a2", 2)).unwrap();
        assert_eq!(
            st.find("https://r.example/mcp")
                .unwrap()
                .tokens
                .unwrap()
                .access,
            "a2"
        );
        let names: Vec<_> = fs::read_dir(st.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // The file name depends on (issuer, resource) only.
        assert_eq!(path, st.path("https://as.example", "https://r.example/mcp"));
        st.remove("https://as.example", "https://r.example/mcp")
            .unwrap();
        assert_eq!(st.find("https://r.example/mcp"), None);
        // Garbage is not a record.
        fs::write(st.dir().join("x.json"), b"{not json").unwrap();
        assert_eq!(st.find("https://r.example/mcp"), None);
        let _ = fs::remove_dir_all(&d);
    }

    /// The file holds the pretty JSON `to_vec_pretty` writes (two-space
    /// indents), byte for byte; an oversized file is not read.
    #[test]
    fn the_file_is_pretty_json_and_an_oversized_one_is_ignored() {
        let d = tmpdir("pretty");
        let st = Store::new(d.join("oauth"));
        let path = st.save(&record("a1", 1)).unwrap();
        let want = serde_json::to_vec_pretty(&to_json(&record("a1", 1))).unwrap();
        assert_eq!(fs::read(&path).unwrap(), want);
        let mut big = want.clone();
        big.resize(MAX_RECORD as usize + 1, b' ');
        fs::write(&path, &big).unwrap();
        assert_eq!(st.find("https://r.example/mcp"), None);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn the_lock_excludes_a_second_holder_until_dropped() {
        let d = tmpdir("lock");
        let st = Store::new(d.clone());
        let a = st.try_lock("i", "r").unwrap();
        assert!(a.is_some());
        // flock locks belong to the open file: a second open is refused.
        assert!(st.try_lock("i", "r").unwrap().is_none());
        assert!(st.try_lock("i", "other").unwrap().is_some());
        drop(a);
        assert!(st.try_lock("i", "r").unwrap().is_some());
        let _ = fs::remove_dir_all(&d);
    }
}
