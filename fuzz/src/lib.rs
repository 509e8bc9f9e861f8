//! Helpers shared by the fuzz targets: a deterministic PRNG seeded from the
//! input itself, so a target can cut its input into "reads" of varied sizes
//! and pick limits while the corpus files stay plain protocol bytes (a real
//! HTTP request, an SSE stream, ...), and a crash reproduces from the file.

/// splitmix64, seeded with FNV-1a of the input.
pub struct Rng(u64);

impl Rng {
    pub fn from_data(data: &[u8]) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Rng(h)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

/// Cuts `data` into consecutive pieces, as a socket's reads might deliver
/// it: many of one byte, many small, some large, and now and then an empty
/// read. The pieces concatenate back to `data`.
pub fn splits<'a>(data: &'a [u8], rng: &mut Rng) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let max = match rng.below(8) {
            0 => 0,
            1 | 2 => 1,
            3 | 4 => 8,
            5 | 6 => 64,
            _ => rest.len(),
        };
        let n = if max == 0 {
            0
        } else {
            1 + rng.below(max.min(rest.len()))
        };
        let (piece, tail) = rest.split_at(n);
        out.push(piece);
        rest = tail;
    }
    out
}

/// Whether findings already reported, and not yet fixed in the relay, should
/// fail the run. The targets tolerate each such finding narrowly (see
/// docs/fuzzing.md, "Known findings"), so that `.ci/fuzz.sh` keeps looking
/// for new ones; `FUZZ_STRICT=1` turns the tolerance off, to check a fix.
pub fn strict() -> bool {
    use std::sync::OnceLock;
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("FUZZ_STRICT").is_some_and(|v| v != "0"))
}
