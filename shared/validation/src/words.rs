//! [`Words`]: a small set of strings (`missingValues`, a string field's
//! `enum`, a boolean field's true and false values) that a cell is looked up
//! in, for every cell of a column. Most lookups end on the cell's length (a
//! bitmask of the lengths present); a word of up to 7 bytes is one `u64`
//! compare, with no call to `memcmp`.

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Words {
    /// The words of up to 7 bytes, each as its [`key`], in an open
    /// addressing table (linear probing, at most half full; 0 is a free
    /// slot, and no key is 0).
    table: Vec<u64>,
    /// The table index of a key: its product with `mul`, top bits.
    mul: u64,
    shift: u32,
    /// The longer words.
    long: Vec<Box<[u8]>>,
    /// Bit `n` set when some word is `n` bytes long (bit 63: 63 or more).
    lengths: u64,
}

/// A word of at most 7 bytes as one `u64`: its bytes little-endian in the
/// low 56 bits (zero-padded), its length and a marker bit in the top 8, so
/// two words have the same key exactly when they are equal, and no key is 0.
#[inline(always)]
fn key(b: &[u8]) -> u64 {
    debug_assert!(b.len() <= 7);
    load_le(b) | (b.len() as u64 | 0x80) << 56
}

impl Words {
    pub(crate) fn new<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> Self {
        let mut set = Words::default();
        let mut keys = Vec::new();
        for w in words {
            let b = w.as_ref().as_bytes();
            set.lengths |= 1 << b.len().min(63);
            if b.len() <= 7 {
                keys.push(key(b));
            } else {
                set.long.push(b.into());
            }
        }
        keys.sort_unstable();
        keys.dedup();
        let slots = (keys.len() * 2).next_power_of_two().max(8);
        set.shift = 64 - slots.trailing_zeros();
        // The multiplier that leaves the fewest keys away from their slot
        // (most small sets get none): a few fixed odd constants.
        let mut best = None;
        for mul in [
            0x9E37_79B9_7F4A_7C15u64,
            0xD6E8_FEB8_6659_FD93,
            0xA076_1D64_78BD_642F,
            0xE703_7ED1_A0B4_28DB,
            0x8EBC_6AF0_9C88_C6E3,
            0x5899_65CC_7537_4CC3,
        ] {
            let table = Self::fill(&keys, slots, mul, set.shift);
            let displaced = keys
                .iter()
                .filter(|&&k| table[(k.wrapping_mul(mul) >> set.shift) as usize] != k)
                .count();
            if best.as_ref().is_none_or(|(d, _, _)| displaced < *d) {
                best = Some((displaced, mul, table));
            }
        }
        if let Some((_, mul, table)) = best {
            set.mul = mul;
            set.table = table;
        }
        set
    }

    fn fill(keys: &[u64], slots: usize, mul: u64, shift: u32) -> Vec<u64> {
        let mut table = vec![0u64; slots];
        for &k in keys {
            let mut i = (k.wrapping_mul(mul) >> shift) as usize;
            while table[i] != 0 {
                i = (i + 1) & (slots - 1);
            }
            table[i] = k;
        }
        table
    }

    #[inline(always)]
    pub(crate) fn contains(&self, b: &[u8]) -> bool {
        if self.lengths >> b.len().min(63) & 1 == 0 {
            return false;
        }
        if b.len() > 7 {
            return self.long.iter().any(|w| **w == *b);
        }
        let k = key(b);
        let mask = self.table.len().wrapping_sub(1);
        let mut i = (k.wrapping_mul(self.mul) >> self.shift) as usize;
        loop {
            match self.table.get(i) {
                Some(&t) if t == k => return true,
                Some(&0) | None => return false,
                Some(_) => i = (i + 1) & mask,
            }
        }
    }
}

/// The bytes of `b` (at most 8) as a little-endian `u64`, zero-padded: two
/// overlapping loads instead of a byte loop.
#[inline(always)]
pub(crate) fn load_le(b: &[u8]) -> u64 {
    let n = b.len();
    debug_assert!(n <= 8);
    let read = |at: usize, k: usize| {
        let mut w = [0u8; 8];
        w[..k].copy_from_slice(&b[at..at + k]);
        u64::from_le_bytes(w)
    };
    match n {
        0 => 0,
        1 => u64::from(b[0]),
        2..=3 => read(0, 2) | read(n - 2, 2) << (8 * (n - 2)),
        4..=7 => read(0, 4) | read(n - 4, 4) << (8 * (n - 4)),
        _ => read(0, 8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exactly_its_words() {
        let words = [
            "",
            "a",
            "NA",
            "n/a",
            "null",
            "false",
            "abcdefgh",
            "abcdefghi",
            "é",
        ];
        let set = Words::new(words);
        for w in words {
            assert!(set.contains(w.as_bytes()), "{w:?}");
        }
        let others = [
            "b",
            "N",
            "NA ",
            "\0",
            "a\0",
            "NB",
            "nul",
            "nulll",
            "abcdefgx",
            "abcdefghj",
            "e",
            "\0\0",
            "ab",
        ];
        for w in others {
            assert!(!set.contains(w.as_bytes()), "{w:?}");
        }
        // Every prefix of every length against a set holding one length each.
        let long = "0123456789abcdefghij";
        let set = Words::new((0..=long.len()).map(|n| &long[..n]));
        for n in 0..=long.len() {
            assert!(set.contains(&long.as_bytes()[..n]));
            let mut other = long.as_bytes()[..n].to_vec();
            if let Some(last) = other.last_mut() {
                *last = b'!';
                assert!(!set.contains(&other), "{other:?}");
            }
        }
        assert!(!Words::new(Vec::<String>::new()).contains(b""));
        assert!(!Words::default().contains(b""));
        // Enough words of one length that some must probe past their slot.
        let many: Vec<String> = (0..300).map(|i| format!("w{i:03}")).collect();
        let set = Words::new(&many);
        for i in 0..1000 {
            assert_eq!(set.contains(format!("w{i:03}").as_bytes()), i < 300, "{i}");
        }
    }
}
