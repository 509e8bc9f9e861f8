//! A request's header fields in two allocations: every lower-cased name and
//! trimmed value back to back in one string, and where each field is in it.
//! A list of `(String, String)` pairs cost two allocations a field and two
//! frees when the request was dropped, on every request (issue 13's
//! profiles: about 1,800 instructions of a ~35,000-instruction request).

use std::fmt;
use std::ops::Range;

/// Where one field is in [`Fields`]' text: its name from `name` to
/// `value`, its value from `value` to `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    name: usize,
    value: usize,
    end: usize,
}

#[derive(Clone, Default, PartialEq, Eq)]
pub(super) struct Fields {
    text: String,
    spans: Vec<Span>,
}

impl Fields {
    /// Room for `fields` fields of `bytes` bytes of names and values.
    pub(super) fn with_capacity(fields: usize, bytes: usize) -> Fields {
        Fields {
            text: String::with_capacity(bytes),
            spans: Vec::with_capacity(fields),
        }
    }

    /// Appends a field; its name is lower-cased here.
    pub(super) fn push(&mut self, name: &str, value: &str) {
        let at = self.text.len();
        self.text.push_str(name);
        if let Some(pushed) = self.text.get_mut(at..) {
            pushed.make_ascii_lowercase();
        }
        let value_at = self.text.len();
        self.text.push_str(value);
        self.spans.push(Span {
            name: at,
            value: value_at,
            end: self.text.len(),
        });
    }

    pub(super) fn len(&self) -> usize {
        self.spans.len()
    }

    /// The fields at positions `range` (clamped to the list), in order.
    pub(super) fn range(&self, range: Range<usize>) -> impl Iterator<Item = (&str, &str)> + Clone {
        let end = range.end.min(self.spans.len());
        let start = range.start.min(end);
        self.pairs(self.spans.get(start..end).unwrap_or_default())
    }

    /// Every field, in order.
    pub(super) fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone {
        self.pairs(&self.spans)
    }

    fn pairs<'a>(
        &'a self,
        spans: &'a [Span],
    ) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + Clone {
        // Every span was cut at the lengths of the strings pushed, so every
        // range is in the text and on char boundaries.
        spans.iter().map(|s| {
            (
                self.text.get(s.name..s.value).unwrap_or_default(),
                self.text.get(s.value..s.end).unwrap_or_default(),
            )
        })
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_back_as_pushed_names_lower_cased() {
        let mut f = Fields::with_capacity(1, 4);
        f.push("Host", "x");
        f.push("X-É", "");
        f.push("", "v, w");
        f.push("ACCEPT", "Text/HTML");
        assert_eq!(f.len(), 4);
        let all: Vec<_> = f.iter().collect();
        assert_eq!(
            all,
            [
                ("host", "x"),
                ("x-É", ""),
                ("", "v, w"),
                ("accept", "Text/HTML")
            ]
        );
        assert_eq!(f.range(1..3).collect::<Vec<_>>(), all[1..3]);
        assert_eq!(f.range(3..9).collect::<Vec<_>>(), all[3..]);
        assert_eq!(f.range(7..9).count(), 0);
        assert_eq!(format!("{f:?}"), format!("{all:?}"));
    }
}
