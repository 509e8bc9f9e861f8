//! `--record FILE`: every message, one JSON line each, with a wall-clock
//! timestamp and its direction. For debugging traffic; it is not a log.
//!
//! The file is opened in append mode and written through a buffer that the
//! loop flushes once per turn. SIGHUP reopens it, for log rotation. A write
//! error disables recording (with one warning) rather than stopping the relay.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
    /// Produced by the relay itself (errors, replayed initialize, cancellations).
    RelayToClient,
    RelayToServer,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToServer => "client_to_server",
            Direction::ServerToClient => "server_to_client",
            Direction::RelayToClient => "relay_to_client",
            Direction::RelayToServer => "relay_to_server",
        }
    }
}

pub struct Recorder {
    path: PathBuf,
    out: Option<BufWriter<File>>,
}

fn open(path: &Path) -> std::io::Result<BufWriter<File>> {
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(BufWriter::with_capacity(64 * 1024, f))
}

impl Recorder {
    pub fn open(path: &Path) -> std::io::Result<Recorder> {
        Ok(Recorder {
            path: path.to_path_buf(),
            out: Some(open(path)?),
        })
    }

    /// Records one message. `msg` must be valid JSON (it is embedded as is).
    pub fn record(&mut self, wall: SystemTime, dir: Direction, msg: &[u8]) {
        let Some(out) = self.out.as_mut() else { return };
        let ts = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let res = write!(
            out,
            "{{\"ts\":{}.{:06},\"dir\":\"{}\",\"msg\":",
            ts.as_secs(),
            ts.subsec_micros(),
            dir.as_str()
        )
        .and_then(|_| out.write_all(msg))
        .and_then(|_| out.write_all(b"}\n"));
        if let Err(e) = res {
            self.fail(e);
        }
    }

    pub fn flush(&mut self) {
        if let Some(out) = self.out.as_mut()
            && let Err(e) = out.flush()
        {
            self.fail(e);
        }
    }

    /// Reopens the file (after rotation).
    pub fn reopen(&mut self) {
        self.flush();
        match open(&self.path) {
            Ok(f) => {
                self.out = Some(f);
                crate::log_info!("record file {} reopened", self.path.display());
            }
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        crate::log_warn!("recording to {} stopped: {e}", self.path.display());
        self.out = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_json_line_per_message() {
        let dir = std::env::temp_dir().join(format!("mcp-relay-rec-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let mut r = Recorder::open(&dir).unwrap();
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
        r.record(t, Direction::ClientToServer, br#"{"id":1,"method":"ping"}"#);
        r.record(t, Direction::RelayToClient, br#"{"id":1,"result":{}}"#);
        r.flush();
        let text = std::fs::read_to_string(&dir).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["dir"], "client_to_server");
        assert_eq!(lines[0]["msg"]["method"], "ping");
        assert_eq!(lines[1]["dir"], "relay_to_client");
        assert!(text.starts_with("{\"ts\":1700000000.123456,"));
        let _ = std::fs::remove_file(&dir);
    }
}
