//! [`VecMap`]: a map kept as a list, for tables that hold a few dozen
//! entries at most (callback connections, key and metadata fetches,
//! introspections in flight).
//!
//! Each distinct `HashMap` type costs about 2 KB of code (its table growth
//! and probing are instantiated per key and value type); a list costs a
//! few hundred bytes. Lookups scan, which below a hundred entries is as fast
//! as hashing. Order is not kept stable across removals (a removal swaps in
//! the last entry), as with a `HashMap`.

/// A small map as a list of pairs; see the module docs for when to use it.
#[derive(Debug, Clone)]
pub struct VecMap<K, V> {
    items: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap { items: Vec::new() }
    }
}

impl<K: PartialEq, V> VecMap<K, V> {
    pub fn new() -> Self {
        VecMap::default()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn position(&self, key: &K) -> Option<usize> {
        self.items.iter().position(|(k, _)| k == key)
    }

    /// Sets `key` to `value`; the value it had, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.position(&key) {
            Some(i) => Some(std::mem::replace(&mut self.items[i].1, value)),
            None => {
                self.items.push((key, value));
                None
            }
        }
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.position(key).is_some()
    }

    /// The value of `key`, inserted as `V::default()` if it had none.
    pub fn get_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        let i = match self.position(&key) {
            Some(i) => i,
            None => {
                self.items.push((key, V::default()));
                self.items.len() - 1
            }
        };
        &mut self.items[i].1
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.position(key).map(|i| &self.items[i].1)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.position(key).map(|i| &mut self.items[i].1)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.position(key).map(|i| self.items.swap_remove(i).1)
    }

    /// Keeps the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.items.retain_mut(|(k, v)| keep(k, v));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.items.iter().map(|(k, v)| (k, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.items.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::VecMap;
    use std::collections::HashMap;

    /// The same operations on a `VecMap` and a `HashMap` leave the same
    /// contents and return the same values.
    #[test]
    fn a_vecmap_behaves_as_a_hashmap() {
        let mut ours: VecMap<u64, String> = VecMap::new();
        let mut std: HashMap<u64, String> = HashMap::new();
        // A fixed pseudo-random sequence of operations over a few keys.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..2000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 13;
            match x % 5 {
                0 | 1 => {
                    let v = format!("v{step}");
                    assert_eq!(ours.insert(key, v.clone()), std.insert(key, v));
                }
                2 => assert_eq!(ours.remove(&key), std.remove(&key)),
                3 => {
                    if let (Some(a), Some(b)) = (ours.get_mut(&key), std.get_mut(&key)) {
                        a.push('!');
                        b.push('!');
                    }
                    ours.get_or_default(key + 100).push('+');
                    std.entry(key + 100).or_default().push('+');
                }
                _ => {
                    ours.retain(|k, _| k % 7 != step % 7);
                    std.retain(|k, _| k % 7 != step % 7);
                }
            }
            assert_eq!(ours.len(), std.len());
            assert_eq!(ours.get(&key), std.get(&key));
            assert_eq!(ours.contains_key(&key), std.contains_key(&key));
            for (k, v) in ours.iter() {
                assert_eq!(std.get(k), Some(v));
            }
            assert_eq!(ours.values().count(), std.len());
        }
        assert_eq!(ours.is_empty(), std.is_empty());
    }
}
