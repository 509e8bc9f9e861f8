//! How one log line looks: `text` (`[LEVEL] message`) or `json` (one object
//! per line: `ts`, `level`, `target`, `message`). The message is escaped and
//! cut here (`escape::clean`), whatever call site produced it, so no control
//! character from a peer reaches stderr in either format.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use super::escape;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    /// `--log-format` from a parsed command line (text if absent).
    pub fn from_matches(m: &getopts::Matches) -> Result<Format, String> {
        match m.opt_str("log-format") {
            None => Ok(Format::Text),
            Some(f) => {
                Format::parse(&f).ok_or(format!("--log-format {f:?}: expected text or json"))
            }
        }
    }
}

/// `--log-level` and `--log-format`, the same in both modes.
pub fn cli_options(o: &mut getopts::Options) {
    o.optopt(
        "",
        "log-level",
        "error, warn, info, debug, trace (default info; RUST_LOG also works)",
        "LEVEL",
    );
    o.optopt(
        "",
        "log-format",
        "text (default) or json: one JSON object per line",
        "FORMAT",
    );
}

/// Cap of one logged message, after escaping, in bytes.
pub const MAX_MESSAGE: usize = 4096;

/// Writes one line for `record` in `format`.
pub fn write(out: &mut impl Write, format: Format, record: &log::Record<'_>) -> io::Result<()> {
    let text;
    let msg = match record.args().as_str() {
        Some(s) => s,
        None => {
            text = record.args().to_string();
            &text
        }
    };
    let msg = escape::clean(msg, MAX_MESSAGE);
    match format {
        Format::Text => writeln!(out, "[{:<5}] {}", record.level(), msg),
        Format::Json => {
            let line = serde_json::json!({
                "ts": rfc3339_millis(SystemTime::now()),
                "level": record.level().as_str(),
                "target": escape::clean(record.target(), 256),
                "message": msg,
            });
            writeln!(out, "{line}")
        }
    }
}

/// `2026-12-06T14:24:51.123Z` (UTC).
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line(format: Format, msg: &str) -> String {
        let mut out = Vec::new();
        write(
            &mut out,
            format,
            &log::Record::builder()
                .args(format_args!("{msg}"))
                .level(log::Level::Warn)
                .target("mcp_relay::t")
                .build(),
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_lines_are_escaped() {
        assert_eq!(
            line(Format::Text, "a\x1b[2J\r\nb\0"),
            "[WARN ] a\\x1b[2J\\x0d\\x0ab\\x00\n"
        );
    }

    #[test]
    fn json_lines_parse_and_keep_the_escaped_text() {
        let l = line(Format::Json, "peer said \"hi\"\x1b\n");
        assert_eq!(l.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "mcp_relay::t");
        assert_eq!(v["message"], "peer said \"hi\"\\x1b\\x0a");
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_567_091_123);
        assert_eq!(rfc3339_millis(t), "2026-12-06T14:24:51.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }
}
