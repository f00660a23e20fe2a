//! [`Words`]: a small set of strings (`missingValues`, a string field's
//! `enum`, a boolean field's true and false values) that a cell is looked up
//! in, for every cell of a column. Most lookups end on the cell's length (a
//! bitmask of the lengths present); a word of up to 7 bytes is one `u64`
//! compare, with no call to `memcmp`.

use crate::types::load_le;

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Words {
    /// The words of up to 7 bytes, each as its [`key`].
    short: Vec<u64>,
    /// The longer words.
    long: Vec<Box<[u8]>>,
    /// Bit `n` set when some word is `n` bytes long (bit 63: 63 or more).
    lengths: u64,
}

/// A word of at most 7 bytes as one `u64`: its bytes little-endian in the
/// low 56 bits (zero-padded), its length in the top 8, so two words have
/// the same key exactly when they are equal.
#[inline(always)]
fn key(b: &[u8]) -> u64 {
    debug_assert!(b.len() <= 7);
    load_le(b) | (b.len() as u64) << 56
}

impl Words {
    pub(crate) fn new<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> Self {
        let mut set = Words::default();
        for w in words {
            let b = w.as_ref().as_bytes();
            set.lengths |= 1 << b.len().min(63);
            if b.len() <= 7 {
                set.short.push(key(b));
            } else {
                set.long.push(b.into());
            }
        }
        set
    }

    #[inline(always)]
    pub(crate) fn contains(&self, b: &[u8]) -> bool {
        if self.lengths >> b.len().min(63) & 1 == 0 {
            return false;
        }
        if b.len() <= 7 {
            let k = key(b);
            self.short.iter().fold(false, |found, &w| found | (w == k))
        } else {
            self.long.iter().any(|w| **w == *b)
        }
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
    }
}
