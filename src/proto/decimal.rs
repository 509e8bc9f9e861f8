//! Unsigned integers written in decimal on the stack: the ids the relay
//! writes on every request (the shared pool's upstream ids, a 2026-07-28
//! request's session name) without the formatting machinery or an
//! allocation (issue 13's profiles).

/// `n` in decimal, held inline.
pub struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    pub fn new(mut n: u64) -> Decimal {
        // u64::MAX has 20 digits.
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal { digits, start }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.digits.get(self.start..).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        // ASCII digits only.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::Decimal;

    #[test]
    fn decimals_are_written_as_format_writes_them() {
        for n in [
            0,
            7,
            10,
            99,
            100,
            12_345,
            (1u64 << 48) - 1,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let d = Decimal::new(n);
            assert_eq!(d.as_str(), n.to_string());
            assert_eq!(d.as_bytes(), n.to_string().as_bytes());
        }
    }
}
