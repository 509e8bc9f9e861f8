//! The event loop's building blocks: generation-checked tokens, the timer
//! wheel and the signal self-pipe. Modes own one `mio::Poll` and use these.

pub mod signals;
pub mod timer;

use mio::Token;
use slab::Slab;

pub use timer::{TimerId, TimerWheel};

const _: () = assert!(usize::BITS == 64, "token encoding needs a 64-bit usize");

/// Reserved token for the signal self-pipe; never produced by a `Registry`.
pub const SIGNAL_TOKEN: Token = Token(usize::MAX);

/// A slab whose tokens carry a generation in their high 32 bits, so an event
/// or timer aimed at a slot that was freed and reused is recognised as stale.
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

fn split(token: Token) -> (usize, u32) {
    (token.0 & 0xffff_ffff, (token.0 >> 32) as u32)
}

impl<T> Registry<T> {
    pub fn insert(&mut self, value: T) -> Token {
        let generation = self.next_gen;
        // Generation 0 is skipped so `Token(usize::MAX)`-style sentinels and
        // fresh tokens never collide with a live slot by accident.
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let key = self.slab.insert((generation, value));
        assert!(key < u32::MAX as usize, "registry full");
        Token(((generation as usize) << 32) | key)
    }

    pub fn get(&self, token: Token) -> Option<&T> {
        let (key, generation) = split(token);
        match self.slab.get(key) {
            Some((g, v)) if *g == generation => Some(v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let (key, generation) = split(token);
        match self.slab.get_mut(key) {
            Some((g, v)) if *g == generation => Some(v),
            _ => None,
        }
    }

    pub fn remove(&mut self, token: Token) -> Option<T> {
        self.get(token)?;
        Some(self.slab.remove(split(token).0).1)
    }

    /// Every live token (for rare whole-registry walks such as shutdown).
    pub fn tokens(&self) -> impl Iterator<Item = Token> + '_ {
        self.slab
            .iter()
            .map(|(key, (generation, _))| Token(((*generation as usize) << 32) | key))
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
}
