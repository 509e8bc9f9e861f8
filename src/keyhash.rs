//! A fast hash for map keys the relay assigns itself: session keys
//! (`SKey`), process keys (`PKey`), the shared mux's upstream ids and
//! session keys. They are counters, so no peer chooses them, and a keyed
//! hash buys nothing there; std's SipHash-1-3 cost about 150 instructions
//! a lookup, and a 2026-07-28 request in shared mode makes some twenty of
//! them (issue 13, docs/benchmarks.md).
//!
//! Keys a peer chooses (request ids, progress tokens, `Mcp-Session-Id`
//! strings, resource URIs) stay in std's `HashMap` with its randomly keyed
//! SipHash: with a fixed hash like this one, a client could pick many keys
//! that land in one bucket and make every lookup walk all of them (hash
//! flooding). [`KeyMap`] is only for keys the relay makes.
//!
//! The mixing step is the multiply-rotate hash rustc uses for its own
//! integer-keyed tables: one multiply by an odd constant per word, so the
//! low bits of sequential keys stay distinct (the table's bucket index)
//! and the high bits are mixed (its per-slot tag).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::ops::{Deref, DerefMut};

/// A `HashMap` for relay-assigned keys (see the module doc).
pub type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// A [`KeyMap`] looked up from many places: its `get` and `get_mut` are one
/// out-of-line function per map type instead of the table's probe inlined
/// at every call site (about 170 bytes each; a call costs a few
/// instructions). The few lookups on a per-request path use
/// [`get_inline`](Self::get_inline) and
/// [`get_mut_inline`](Self::get_mut_inline). Everything else is the map's
/// own (`Deref`).
#[derive(Debug)]
pub struct OutlineKeyMap<K, V>(KeyMap<K, V>);

impl<K, V> Default for OutlineKeyMap<K, V> {
    fn default() -> Self {
        OutlineKeyMap(KeyMap::default())
    }
}

impl<K: Hash + Eq, V> OutlineKeyMap<K, V> {
    #[inline(never)]
    pub fn get(&self, k: &K) -> Option<&V> {
        self.0.get(k)
    }

    #[inline(never)]
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.0.get_mut(k)
    }

    /// `get`, inlined at the call site (per-request paths).
    #[inline]
    pub fn get_inline(&self, k: &K) -> Option<&V> {
        self.0.get(k)
    }

    /// `get_mut`, inlined at the call site (per-request paths).
    #[inline]
    pub fn get_mut_inline(&mut self, k: &K) -> Option<&mut V> {
        self.0.get_mut(k)
    }
}

impl<K, V> Deref for OutlineKeyMap<K, V> {
    type Target = KeyMap<K, V>;
    fn deref(&self) -> &KeyMap<K, V> {
        &self.0
    }
}

impl<K, V> DerefMut for OutlineKeyMap<K, V> {
    fn deref_mut(&mut self) -> &mut KeyMap<K, V> {
        &mut self.0
    }
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// The hasher of [`KeyMap`].
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl KeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn write_i64(&mut self, n: i64) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash>(t: &T) -> u64 {
        BuildHasherDefault::<KeyHasher>::default().hash_one(t)
    }

    #[test]
    fn sequential_keys_spread_over_buckets_and_tags() {
        // Session keys: the upstream in the top 16 bits, a counter below.
        let keys: Vec<u64> = (0..4096u64).map(|n| (3u64 << 48) | n).collect();
        let hashes: std::collections::HashSet<u64> = keys.iter().map(hash).collect();
        assert_eq!(hashes.len(), keys.len());
        // The low 12 bits (a 4096-bucket table's index) are all distinct.
        let low: std::collections::HashSet<u64> = keys.iter().map(|k| hash(k) & 0xfff).collect();
        assert_eq!(low.len(), keys.len());
        // The top 7 bits (the table's tag) take many values.
        let top: std::collections::HashSet<u64> = keys.iter().map(|k| hash(k) >> 57).collect();
        assert!(top.len() > 100, "{}", top.len());
        // Bytes and mixed fields hash too (a PKey is two words).
        assert_ne!(hash(&(0usize, 1u64)), hash(&(1usize, 0u64)));
        assert_ne!(hash(&"abc"), hash(&"abd"));
    }

    #[test]
    fn a_key_map_is_a_map() {
        let mut m: KeyMap<u64, u64> = KeyMap::default();
        for n in 0..10_000u64 {
            m.insert(n << 3, n);
        }
        assert_eq!(m.len(), 10_000);
        assert!((0..10_000u64).all(|n| m.get(&(n << 3)) == Some(&n)));
        assert_eq!(m.get(&1), None);
    }
}
