//! One token space for every event source the loop polls.
//!
//! A `mio::Token` is a `usize`; its top four bits name the kind of source,
//! and the rest is laid out by that kind:
//!
//! ```text
//!  63..60  59 ........................ 32  31 ......................... 0
//!  kind=1  generation (28 bits, never 0)   registry slot                  endpoint
//!  kind=2  engine tag (bits 59..40)  ·  connection number (bits 39..0)     HTTP connection
//!  kind=3  0                                                               signal self-pipe
//!  kind=4  0                                                               resolver waker
//! ```
//!
//! Decoding is total: every token belongs to exactly one kind, so a
//! registry token can never be taken for an HTTP connection or a signal,
//! whatever its generation. Kind 0 and kinds above 4 are never produced; an
//! event carrying one is dropped as stale.

use mio::Token;

const KIND_SHIFT: u32 = 60;
const KIND_ENDPOINT: usize = 1;
const KIND_HTTP: usize = 2;
const KIND_SIGNAL: usize = 3;
const KIND_RESOLVER: usize = 4;

/// Bits of a registry generation.
pub const GEN_BITS: u32 = 28;
pub const GEN_MASK: u32 = (1 << GEN_BITS) - 1;
const SLOT_MASK: usize = 0xffff_ffff;

/// Bits of an HTTP engine's tag and of its connection numbers.
pub const HTTP_TAG_BITS: u32 = 20;
const HTTP_CONN_BITS: u32 = 40;
const HTTP_CONN_MASK: usize = (1 << HTTP_CONN_BITS) - 1;

/// The signal self-pipe.
pub const SIGNAL_TOKEN: Token = Token(KIND_SIGNAL << KIND_SHIFT);
/// The DNS resolver's waker.
pub const RESOLVER_TOKEN: Token = Token(KIND_RESOLVER << KIND_SHIFT);

/// Which source an event's token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A registry entry (listener, client connection, child pipe, stdio).
    Endpoint {
        slot: usize,
        generation: u32,
    },
    /// A connection of the HTTP engine tagged `tag`.
    Http {
        tag: usize,
        conn: u64,
    },
    Signal,
    Resolver,
    /// Not a token this process hands out.
    Unknown,
}

pub fn source(token: Token) -> Source {
    let t = token.0;
    if let Some((slot, generation)) = endpoint_parts(token) {
        return Source::Endpoint { slot, generation };
    }
    match t >> KIND_SHIFT {
        KIND_HTTP => Source::Http {
            tag: (t >> HTTP_CONN_BITS) & ((1 << HTTP_TAG_BITS) - 1),
            conn: (t & HTTP_CONN_MASK) as u64,
        },
        KIND_SIGNAL if t == SIGNAL_TOKEN.0 => Source::Signal,
        KIND_RESOLVER if t == RESOLVER_TOKEN.0 => Source::Resolver,
        _ => Source::Unknown,
    }
}

/// The slot and generation of a registry entry's token; `None` for any
/// other kind. Inlined: the registry looks a token up some twenty times a
/// request.
#[inline]
pub fn endpoint_parts(token: Token) -> Option<(usize, u32)> {
    let t = token.0;
    (t >> KIND_SHIFT == KIND_ENDPOINT).then_some((t & SLOT_MASK, ((t >> 32) as u32) & GEN_MASK))
}

/// A registry entry's token. `generation` must fit in [`GEN_BITS`] and
/// `slot` in 32 bits.
pub fn endpoint(slot: usize, generation: u32) -> Token {
    debug_assert!(generation <= GEN_MASK && slot <= SLOT_MASK);
    Token(
        (KIND_ENDPOINT << KIND_SHIFT)
            | (((generation & GEN_MASK) as usize) << 32)
            | (slot & SLOT_MASK),
    )
}

/// An HTTP connection's token. Connection numbers wrap at 2^40, far beyond
/// how many can be open at once.
pub fn http(tag: usize, conn: u64) -> Token {
    debug_assert!(tag < 1 << HTTP_TAG_BITS);
    Token(
        (KIND_HTTP << KIND_SHIFT)
            | ((tag & ((1 << HTTP_TAG_BITS) - 1)) << HTTP_CONN_BITS)
            | (conn as usize & HTTP_CONN_MASK),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        assert_eq!(source(SIGNAL_TOKEN), Source::Signal);
        assert_eq!(source(RESOLVER_TOKEN), Source::Resolver);
        assert_eq!(
            source(endpoint(7, GEN_MASK)),
            Source::Endpoint {
                slot: 7,
                generation: GEN_MASK
            }
        );
        let max_tag = (1 << HTTP_TAG_BITS) - 1;
        assert_eq!(
            source(http(max_tag, (1 << 40) - 1)),
            Source::Http {
                tag: max_tag,
                conn: (1 << 40) - 1
            }
        );
        assert_eq!(source(http(3, 1 << 40)), Source::Http { tag: 3, conn: 0 });
    }

    #[test]
    fn foreign_tokens_are_unknown() {
        for t in [
            0,
            1,
            usize::MAX,
            usize::MAX - 1,
            SIGNAL_TOKEN.0 | 1,
            RESOLVER_TOKEN.0 | 5,
            5 << KIND_SHIFT,
            15 << KIND_SHIFT,
        ] {
            assert_eq!(source(Token(t)), Source::Unknown, "{t:#x}");
        }
    }
}
