//! Where a request's well-known header fields are: the names the relay asks
//! for on every request (framing, Origin, Accept, MCP's own headers) are
//! located once, when the head is parsed, so that each later lookup of one
//! of them reads only its own field lines instead of comparing every name.

/// A header name the relay looks up on requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Host,
    Expect,
    Accept,
    Origin,
    Connection,
    McpName,
    McpMethod,
    ContentType,
    Authorization,
    LastEventId,
    ContentLength,
    McpSessionId,
    TransferEncoding,
    McpProtocolVersion,
}

const COUNT: usize = Known::McpProtocolVersion as usize + 1;

impl Known {
    /// The name, lower-case.
    pub fn name(self) -> &'static str {
        match self {
            Known::Host => "host",
            Known::Expect => "expect",
            Known::Accept => "accept",
            Known::Origin => "origin",
            Known::Connection => "connection",
            Known::McpName => "mcp-name",
            Known::McpMethod => "mcp-method",
            Known::ContentType => "content-type",
            Known::Authorization => "authorization",
            Known::LastEventId => "last-event-id",
            Known::ContentLength => "content-length",
            Known::McpSessionId => "mcp-session-id",
            Known::TransferEncoding => "transfer-encoding",
            Known::McpProtocolVersion => "mcp-protocol-version",
        }
    }

    /// The known name `name` spells exactly (lower-case); `None` for any
    /// other name, including a known one spelled with capitals.
    pub fn of(name: &str) -> Option<Known> {
        Some(match name {
            "host" => Known::Host,
            "expect" => Known::Expect,
            "accept" => Known::Accept,
            "origin" => Known::Origin,
            "connection" => Known::Connection,
            "mcp-name" => Known::McpName,
            "mcp-method" => Known::McpMethod,
            "content-type" => Known::ContentType,
            "authorization" => Known::Authorization,
            "last-event-id" => Known::LastEventId,
            "content-length" => Known::ContentLength,
            "mcp-session-id" => Known::McpSessionId,
            "transfer-encoding" => Known::TransferEncoding,
            "mcp-protocol-version" => Known::McpProtocolVersion,
            _ => return None,
        })
    }
}

/// Nothing recorded for a name.
const NONE: u8 = u8::MAX;

/// For each known name, the positions of its first and last field line in
/// the request's header list ([`NONE`] when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HeaderIndex {
    first: [u8; COUNT],
    last: [u8; COUNT],
    /// The list was too long to index: every lookup reads all of it.
    overlong: bool,
}

/// What the index says about a name.
pub(super) enum Lookup {
    /// Every field line carrying it lies in this range of the header list
    /// (an empty range when there is none).
    Within(std::ops::Range<usize>),
    /// The list was not indexed: all of it must be read.
    Unindexed,
}

impl HeaderIndex {
    /// Indexes a header list by its `names`, which are lower-case. The list is at most
    /// `MAX_HEADERS` (64) long, so positions fit a byte; for a longer one
    /// (never produced by the parser) every lookup answers `Unindexed`.
    pub(super) fn new<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> HeaderIndex {
        let mut index = HeaderIndex {
            first: [NONE; COUNT],
            last: [NONE; COUNT],
            overlong: names.len() >= usize::from(NONE),
        };
        if index.overlong {
            return index;
        }
        for (at, name) in names.enumerate() {
            if let Some(k) = Known::of(name) {
                let i = k as usize;
                // Fits: shorter than NONE, checked above.
                let at = at as u8;
                if index.first[i] == NONE {
                    index.first[i] = at;
                }
                index.last[i] = at;
            }
        }
        index
    }

    /// Where the field lines named `k` are.
    pub(super) fn lookup(&self, k: Known) -> Lookup {
        if self.overlong {
            return Lookup::Unindexed;
        }
        let i = k as usize;
        match (self.first[i], self.last[i]) {
            (NONE, _) => Lookup::Within(0..0),
            (first, last) => Lookup::Within(usize::from(first)..usize::from(last) + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_name_round_trips_and_nothing_else_is_known() {
        let all = [
            Known::Host,
            Known::Expect,
            Known::Accept,
            Known::Origin,
            Known::Connection,
            Known::McpName,
            Known::McpMethod,
            Known::ContentType,
            Known::Authorization,
            Known::LastEventId,
            Known::ContentLength,
            Known::McpSessionId,
            Known::TransferEncoding,
            Known::McpProtocolVersion,
        ];
        assert_eq!(all.len(), COUNT);
        for k in all {
            assert_eq!(Known::of(k.name()), Some(k), "{k:?}");
        }
        for other in [
            "",
            "hosts",
            "Host",
            "x-custom",
            "mcp-param-a",
            "accept-encoding",
        ] {
            assert_eq!(Known::of(other), None, "{other}");
        }
    }

    #[test]
    fn an_overlong_list_is_read_whole() {
        let index = HeaderIndex::new(["host"; 300].into_iter());
        assert!(matches!(index.lookup(Known::Host), Lookup::Unindexed));
        assert!(matches!(index.lookup(Known::Accept), Lookup::Unindexed));
    }
}
