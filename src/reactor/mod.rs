//! The event loop's building blocks: generation-checked tokens, the timer
//! wheel and the signal self-pipe. Modes own one `mio::Poll` and use these.

pub mod signals;
pub mod timer;
pub mod token;
pub mod turn;

use mio::Token;
use slab::Slab;

pub use timer::{TimerId, TimerWheel};
pub use token::{RESOLVER_TOKEN, SIGNAL_TOKEN, Source};

const _: () = assert!(usize::BITS == 64, "token encoding needs a 64-bit usize");

/// A slab whose tokens carry a generation (see [`token`] for the layout), so
/// an event or timer aimed at a slot that was freed and reused is recognised
/// as stale.
pub struct Registry<T> {
    slab: Slab<(u32, T)>,
    next_gen: u32,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            slab: Slab::new(),
            next_gen: 1,
        }
    }
}

impl<T> Registry<T> {
    pub fn insert(&mut self, value: T) -> Token {
        let generation = self.next_gen;
        // Generations wrap within their bits; 0 is skipped so a zeroed token
        // never names a live slot.
        self.next_gen = ((self.next_gen + 1) & token::GEN_MASK).max(1);
        let key = self.slab.insert((generation, value));
        assert!(key < u32::MAX as usize, "registry full");
        token::endpoint(key, generation)
    }

    pub fn get(&self, token: Token) -> Option<&T> {
        let (key, generation) = token::endpoint_parts(token)?;
        match self.slab.get(key) {
            Some((g, v)) if *g == generation => Some(v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let (key, generation) = token::endpoint_parts(token)?;
        match self.slab.get_mut(key) {
            Some((g, v)) if *g == generation => Some(v),
            _ => None,
        }
    }

    pub fn remove(&mut self, token: Token) -> Option<T> {
        self.get(token)?;
        let (key, _) = token::endpoint_parts(token)?;
        Some(self.slab.remove(key).1)
    }

    /// Every live token (for rare whole-registry walks such as shutdown).
    pub fn tokens(&self) -> impl Iterator<Item = Token> + '_ {
        self.slab
            .iter()
            .map(|(key, (generation, _))| token::endpoint(key, *generation))
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_tokens_are_rejected_after_reuse() {
        let mut r = Registry::default();
        let a = r.insert("a");
        assert_eq!(r.get(a), Some(&"a"));
        assert_eq!(r.remove(a), Some("a"));
        let b = r.insert("b");
        // Same slab slot, new generation.
        assert_eq!(a.0 & 0xffff_ffff, b.0 & 0xffff_ffff);
        assert_ne!(a, b);
        assert_eq!(r.get(a), None);
        assert_eq!(r.remove(a), None);
        assert_eq!(r.get(b), Some(&"b"));
        assert_ne!(b, SIGNAL_TOKEN);
    }

    /// Generations used to occupy the token's top 32 bits, so from 2^31 on
    /// a registry token had the HTTP engine's marker bit set and its events
    /// were offered to the engine and lost. Walk the generation counter
    /// across that point and across its own wrap: every token stays an
    /// endpoint, is found, and never decodes as another source.
    #[test]
    fn generations_past_the_old_overlap_stay_endpoints() {
        let mut r = Registry::default();
        let mut seen_wrap = false;
        for start in [(1u32 << 31) - 3, token::GEN_MASK - 3] {
            // Jump the counter (test-only), as ~2^31 slot reuses would.
            r.next_gen = start & token::GEN_MASK;
            for _ in 0..8 {
                let before = r.next_gen;
                let t = r.insert(before);
                match token::source(t) {
                    Source::Endpoint { generation, .. } => assert_eq!(generation, before),
                    other => panic!("token {t:?} decoded as {other:?}"),
                }
                assert_ne!(t, SIGNAL_TOKEN);
                assert_ne!(t, RESOLVER_TOKEN);
                assert_eq!(r.get(t), Some(&before));
                assert_eq!(r.remove(t), Some(before));
                assert_eq!(r.get(t), None, "stale after removal");
                assert_ne!(r.next_gen, 0, "generation 0 is never handed out");
                seen_wrap |= r.next_gen < before;
            }
        }
        assert!(seen_wrap, "the walk crossed the generation wrap");
    }

    #[test]
    fn other_sources_never_name_an_entry() {
        let mut r = Registry::default();
        let t = r.insert(());
        let token::Source::Endpoint { slot, .. } = token::source(t) else {
            panic!("not an endpoint");
        };
        for foreign in [
            SIGNAL_TOKEN,
            RESOLVER_TOKEN,
            token::http(0, slot as u64),
            Token(slot),
        ] {
            assert_eq!(r.get(foreign), None, "{foreign:?}");
        }
    }
}
