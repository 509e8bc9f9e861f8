//! Escaping of text the relay does not control (a child's stderr and stdout,
//! a client's headers and bodies, an upstream's replies) before it reaches
//! the log: no control character, no invalid UTF-8 and no line longer than a
//! cap ever reaches stderr, so a peer can neither forge log lines (CR, LF),
//! drive the operator's terminal (ESC), hide text (bidi overrides, NUL) nor
//! flood the log with one line.
//!
//! - C0 controls, DEL: `\xNN`; C1 controls, bidi controls and the Unicode
//!   line/paragraph separators: `\u{NNNN}`;
//! - invalid UTF-8 (in [`Escaped`] bytes): each bad byte as `\xNN`;
//! - a text longer than its cap is cut at a character boundary and ends with
//!   `…[cut, N bytes]`, N being the length before escaping.

use std::borrow::Cow;
use std::fmt::{self, Write};

/// Whether `c` must not reach the log as is.
pub fn needs_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_char(out: &mut impl Write, c: char) -> fmt::Result {
    if (c as u32) < 0x80 {
        write!(out, "\\x{:02x}", c as u32)
    } else {
        write!(out, "\\u{{{:x}}}", c as u32)
    }
}

/// Writes `s` escaped, at most about `cap` bytes of it; true if it was cut.
fn write_escaped(
    out: &mut impl Write,
    s: &str,
    cap: usize,
    used: &mut usize,
) -> Result<bool, fmt::Error> {
    for c in s.chars() {
        let width = if needs_escape(c) {
            if (c as u32) < 0x80 { 4 } else { 8 }
        } else {
            c.len_utf8()
        };
        if *used + width > cap {
            return Ok(true);
        }
        *used += width;
        if needs_escape(c) {
            escape_char(out, c)?;
        } else {
            out.write_char(c)?;
        }
    }
    Ok(false)
}

/// `s` with every control character escaped, cut at `cap` bytes.
/// Borrowed when there is nothing to change (the common case).
pub fn clean(s: &str, cap: usize) -> Cow<'_, str> {
    if s.len() <= cap && !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(cap) + 32);
    let mut used = 0;
    // Writing to a String cannot fail.
    if let Ok(true) = write_escaped(&mut out, s, cap, &mut used) {
        let _ = write!(out, "…[cut, {} bytes]", s.len());
    }
    Cow::Owned(out)
}

/// Peer bytes shown in a log line: `format!("{}", Escaped::new(bytes))`.
/// Valid UTF-8 is shown as text (control characters escaped), each invalid
/// byte as `\xNN`; at most `cap` bytes of output (default 200).
pub struct Escaped<'a> {
    bytes: &'a [u8],
    cap: usize,
}

/// The default cap of [`Escaped`]: enough to recognise a message.
pub const SHOWN: usize = 200;

impl<'a> Escaped<'a> {
    pub fn new(bytes: &'a [u8]) -> Escaped<'a> {
        Escaped { bytes, cap: SHOWN }
    }

    pub fn cut(bytes: &'a [u8], cap: usize) -> Escaped<'a> {
        Escaped { bytes, cap }
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut used = 0;
        for chunk in self.bytes.utf8_chunks() {
            if write_escaped(f, chunk.valid(), self.cap, &mut used)? {
                return write!(f, "…[cut, {} bytes]", self.bytes.len());
            }
            for b in chunk.invalid() {
                if used + 4 > self.cap {
                    return write!(f, "…[cut, {} bytes]", self.bytes.len());
                }
                used += 4;
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            clean("a\x1b[31mb\r\nc\0", 100),
            "a\\x1b[31mb\\x0d\\x0ac\\x00"
        );
        assert_eq!(clean("tab\there\x7f", 100), "tab\\x09here\\x7f");
        assert_eq!(
            clean("\u{85}\u{202e}evil\u{2028}", 100),
            "\\u{85}\\u{202e}evil\\u{2028}"
        );
        assert!(matches!(clean("plain ünïcode", 100), Cow::Borrowed(_)));
    }

    #[test]
    fn long_text_is_cut_at_a_char_boundary() {
        let s = "é".repeat(100);
        let c = clean(&s, 11);
        assert_eq!(c, "ééééé…[cut, 200 bytes]");
        let c = clean("\x1b\x1b\x1b", 9);
        assert_eq!(c, "\\x1b\\x1b…[cut, 3 bytes]");
    }

    #[test]
    fn escaped_bytes_show_invalid_utf8_as_hex() {
        let s = Escaped::new(b"ok\xff\xfe\x1b[2J\r").to_string();
        assert_eq!(s, "ok\\xff\\xfe\\x1b[2J\\x0d");
        let s = Escaped::cut(&[b'a'; 50], 10).to_string();
        assert_eq!(s, "aaaaaaaaaa…[cut, 50 bytes]");
        let s = Escaped::cut(&[0xff; 50], 10).to_string();
        assert_eq!(s, "\\xff\\xff…[cut, 50 bytes]");
        assert!(
            !Escaped::new(&[0u8, 7, 8, 0x9b])
                .to_string()
                .chars()
                .any(needs_escape)
        );
    }
}
