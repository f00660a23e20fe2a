//! Memory-bounded state for `unique` and `primaryKey`.
//!
//! Every tracked value is reduced to a 64-bit key (a fast keyed hash of the
//! cast value, salted per constraint), and all constraints share one
//! open-addressing table of keys, [`Seen`]: 8 bytes per slot, a power-of-two
//! number of slots sized for `Limits::max_unique_tracked` values at no more
//! than 80% load. The default of 1,500,000 values is 2^21 slots = 16 MiB,
//! allocated zeroed (the kernel commits a page only when it is first
//! touched), so small files pay only for the pages they use and the table
//! never grows past that size. Bounds over 2^22 slots start small and double
//! instead (needing 1.5x the final size while they rehash).
//!
//! An integer column whose values rise in a constant step (1, 2, 3, ... or
//! 10, 20, 30, ...), the usual surrogate key, is tracked as an arithmetic
//! [`Run`] instead: three numbers, whatever its length. Values that leave the
//! run go to the table as usual (and the run is still consulted for them).
//!
//! Keys are 64-bit, so two different values may collide and be reported as
//! a duplicate: with n values tracked the chance is about n^2 / 2^65 (1 in
//! 16 million at the default bound). The hash is seeded per validation run,
//! so such a collision cannot be planted in a file.

use std::hash::{BuildHasher, RandomState};

const K1: u64 = 0x9E37_79B9_7F4A_7C15;
const K2: u64 = 0xD6E8_FEB8_6659_FD93;
const K3: u64 = 0xA076_1D64_78BD_642F;

/// The 128-bit product of `a` and `b`, folded to 64 bits: a strong, cheap mixer.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline(always)]
fn read8(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn read4(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u64::from(u32::from_le_bytes(w))
}

/// A keyed 64-bit hash for tracked values (in the style of foldhash).
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyHasher {
    seed: u64,
}

impl KeyHasher {
    /// A hasher with a seed fresh for this process and run.
    pub(crate) fn random() -> Self {
        let seed = RandomState::new().hash_one(0x5EED_u64);
        KeyHasher { seed: seed | 1 }
    }

    /// Hash of a tagged pair of words (the canonical form of a non-string value).
    #[inline]
    pub(crate) fn words(&self, tag: u64, a: u64, b: u64) -> u64 {
        fold(
            fold(a ^ self.seed ^ tag.wrapping_mul(K3), b ^ K1),
            K2 ^ self.seed,
        )
    }

    /// Hash of a byte string.
    #[inline]
    pub(crate) fn bytes(&self, tag: u64, b: &[u8]) -> u64 {
        let len = b.len();
        let mut h = self.seed ^ (len as u64).wrapping_mul(K1) ^ tag.wrapping_mul(K3);
        let (lo, hi) = if len <= 16 {
            if len >= 8 {
                (read8(b, 0), read8(b, len - 8))
            } else if len >= 4 {
                (read4(b, 0), read4(b, len - 4))
            } else if len > 0 {
                let w = u64::from(b[0]) | u64::from(b[len / 2]) << 8 | u64::from(b[len - 1]) << 16;
                (w, 0)
            } else {
                (0, 0)
            }
        } else {
            let mut rest = b;
            while rest.len() > 16 {
                h = fold(read8(rest, 0) ^ K1, read8(rest, 8) ^ h);
                rest = &rest[16..];
            }
            (read8(b, len - 16), read8(b, len - 8))
        };
        fold(fold(lo ^ K1, hi ^ h), K2 ^ self.seed)
    }

    /// The key of value hash `h` in set `set`: distinct sets never share keys.
    #[inline]
    pub(crate) fn salted(&self, h: u64, set: usize) -> u64 {
        let k = fold(h ^ (set as u64 + 1).wrapping_mul(K3), K1 ^ self.seed);
        if k == 0 { 1 } else { k }
    }
}

/// Slots allocated whole up front (zeroed, so lazily committed) up to this many.
const UPFRONT_SLOTS: usize = 1 << 22;
const INITIAL_SLOTS: usize = 1 << 16;

/// An open-addressing set of non-zero 64-bit keys (0 marks an empty slot),
/// linear probing from the key's high bits. See the module docs.
#[derive(Debug)]
pub(crate) struct Seen {
    slots: Vec<u64>,
    shift: u32,
    len: usize,
    grow_at: usize,
    max_slots: usize,
}

impl Seen {
    /// A set that will hold up to `max_len` keys (allocated on first insert).
    pub(crate) fn new(max_len: usize) -> Self {
        let want = max_len.saturating_add(max_len / 4).saturating_add(1);
        let max_slots = want
            .checked_next_power_of_two()
            .unwrap_or(1 << (usize::BITS - 1))
            .max(16);
        Seen {
            slots: Vec::new(),
            shift: 64,
            len: 0,
            grow_at: 0,
            max_slots,
        }
    }

    /// Keys stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes allocated for slots.
    #[cfg(test)]
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.slots.len() * 8
    }

    /// Drop every key and the table's memory.
    pub(crate) fn clear(&mut self) {
        *self = Seen::new(0);
    }

    fn alloc(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![0u64; slots]);
        self.shift = 64 - slots.trailing_zeros();
        self.grow_at = if slots >= self.max_slots {
            usize::MAX
        } else {
            slots / 5 * 4
        };
        self.len = 0;
        for k in old.into_iter().filter(|&k| k != 0) {
            self.insert(k);
        }
    }

    #[inline]
    pub(crate) fn contains(&self, key: u64) -> bool {
        if self.len == 0 {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut i = (key >> self.shift) as usize;
        loop {
            match self.slots[i] {
                0 => return false,
                k if k == key => return true,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Insert `key` (non-zero); false if it was already there.
    #[inline]
    pub(crate) fn insert(&mut self, key: u64) -> bool {
        if self.len >= self.grow_at {
            let slots = if self.slots.is_empty() && self.max_slots <= UPFRONT_SLOTS {
                self.max_slots
            } else {
                (self.slots.len() * 2).clamp(INITIAL_SLOTS.min(self.max_slots), self.max_slots)
            };
            self.alloc(slots);
        }
        let mask = self.slots.len() - 1;
        let mut i = (key >> self.shift) as usize;
        loop {
            match self.slots[i] {
                0 => {
                    self.slots[i] = key;
                    self.len += 1;
                    return true;
                }
                k if k == key => return false,
                _ => i = (i + 1) & mask,
            }
        }
    }
}

/// Integers seen so far that form one rising arithmetic progression
/// `start, start + step, ..., last`: membership without storage.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Run {
    start: i128,
    step: i128,
    last: i128,
    n: u64,
}

impl Run {
    #[inline]
    pub(crate) fn contains(&self, v: i128) -> bool {
        match self.n {
            0 => false,
            1 => v == self.start,
            _ => v >= self.start && v <= self.last && (v - self.start) % self.step == 0,
        }
    }

    /// Whether `v` is the run's next member (the second one may set the step).
    #[inline]
    pub(crate) fn extends(&self, v: i128) -> bool {
        match self.n {
            0 => true,
            1 => v > self.last,
            _ => self.last.checked_add(self.step) == Some(v),
        }
    }

    /// Append `v`, which [`Run::extends`] accepted.
    #[inline]
    pub(crate) fn push(&mut self, v: i128) {
        match self.n {
            0 => self.start = v,
            1 => self.step = v - self.last,
            _ => {}
        }
        self.last = v;
        self.n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_finds_what_it_holds() {
        let h = KeyHasher::random();
        let mut s = Seen::new(10_000);
        for i in 0..10_000u64 {
            assert!(s.insert(h.salted(h.words(1, i, 0), 0)));
        }
        for i in 0..10_000u64 {
            assert!(!s.insert(h.salted(h.words(1, i, 0), 0)));
            assert!(s.contains(h.salted(h.words(1, i, 0), 0)));
            assert!(
                !s.contains(h.salted(h.words(1, i, 0), 1)),
                "sets are disjoint"
            );
        }
        assert_eq!(s.len(), 10_000);
        // 10,000 values at most 80% load: 2^14 slots.
        assert_eq!(s.allocated_bytes(), (1 << 14) * 8);
    }

    #[test]
    fn large_bounds_grow_by_doubling() {
        let mut s = Seen::new(100_000_000);
        assert!(s.insert(7));
        assert_eq!(s.allocated_bytes(), INITIAL_SLOTS * 8);
        for k in 1..200_000u64 {
            s.insert(k.wrapping_mul(K1) | 1);
        }
        assert!(s.contains(7));
        assert!(s.allocated_bytes() <= 1 << 22);
    }

    #[test]
    fn default_bound_is_16_mib() {
        let mut s = Seen::new(1_500_000);
        s.insert(1);
        assert_eq!(s.allocated_bytes(), 16 << 20);
    }

    #[test]
    fn string_hashes_differ() {
        let h = KeyHasher::random();
        let mut seen = std::collections::HashSet::new();
        for len in 0..40 {
            for b in 0..=255u8 {
                let mut v = vec![b'a'; len];
                if len > 0 {
                    v[len / 3] = b;
                }
                seen.insert((v.clone(), h.bytes(0, &v)));
            }
        }
        let hashes: std::collections::HashSet<u64> = seen.iter().map(|(_, h)| *h).collect();
        assert_eq!(hashes.len(), seen.len());
        assert_ne!(h.bytes(0, b"1"), h.bytes(1, b"1"), "tags separate types");
    }

    #[test]
    fn runs() {
        let mut r = Run::default();
        for v in [10, 20, 30, 40] {
            assert!(!r.contains(v));
            assert!(r.extends(v));
            r.push(v);
        }
        assert!(r.contains(30) && !r.contains(35) && !r.contains(50) && !r.contains(0));
        assert!(!r.extends(45) && r.extends(50));
    }
}
