//! `pattern` constraints: the anchored [`Regex`], plus a fast matcher for
//! the simple patterns most schemas use (`[A-Z]{3}-[0-9]{4}`, `\d{5}`,
//! `[a-z]+@[a-z]+\.com`): a sequence of ASCII character sets, each repeated
//! between a minimum and a maximum number of times. A set that repeats a
//! variable number of times must share no character with any set after it;
//! then matching each one greedily is exact, so the matcher needs no
//! backtracking. It answers only for ASCII text (or a match); anything else,
//! and every pattern outside that subset, goes to the regex.

use regex::Regex;

use crate::cell::Text;

/// A set of ASCII bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Set([u64; 2]);

impl Set {
    fn add(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn add_range(&mut self, lo: u8, hi: u8) {
        for b in lo..=hi {
            self.add(b);
        }
    }

    #[inline(always)]
    fn has(&self, b: u8) -> bool {
        b < 128 && self.0[usize::from(b >> 6)] >> (b & 63) & 1 != 0
    }

    fn union(self, o: Set) -> Set {
        Set([self.0[0] | o.0[0], self.0[1] | o.0[1]])
    }

    fn meets(self, o: Set) -> bool {
        self.0[0] & o.0[0] != 0 || self.0[1] & o.0[1] != 0
    }

    /// The ASCII bytes not in the set.
    fn complement(self) -> Set {
        Set([!self.0[0], !self.0[1]])
    }

    fn of(f: impl Fn(u8) -> bool) -> Set {
        let mut s = Set::default();
        (0..128u8).filter(|&b| f(b)).for_each(|b| s.add(b));
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Atom {
    set: Set,
    min: u32,
    max: u32,
}

/// A pattern in the simple subset (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Simple(Vec<Atom>);

/// A simple pattern whose every atom repeats a fixed number of times (so
/// every match has the same length, at most [`Fixed::MAX`]): for each
/// position, the bytes allowed there, as a 256-bit set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fixed(Vec<[u64; 4]>);

impl Fixed {
    const MAX: usize = 64;

    fn of(simple: &Simple) -> Option<Fixed> {
        let mut at = Vec::new();
        for a in &simple.0 {
            if a.min != a.max || at.len() + a.min as usize > Fixed::MAX {
                return None;
            }
            let bits = [a.set.0[0], a.set.0[1], 0, 0];
            at.extend(std::iter::repeat_n(bits, a.min as usize));
        }
        Some(Fixed(at))
    }

    /// Whether `b` matches: its length, then one lookup per byte.
    #[inline]
    fn matches(&self, b: &[u8]) -> bool {
        b.len() == self.0.len()
            && b.iter()
                .zip(&self.0)
                .all(|(&c, set)| set[usize::from(c >> 6)] >> (c & 63) & 1 != 0)
    }
}

/// The set an escape `\c` stands for (inside or outside a class).
fn escape_set(c: u8) -> Option<Set> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    // Rust's \s, on ASCII: \t \n \v \f \r and space.
    let space = |b: u8| matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ');
    Some(match c {
        b'd' => Set::of(|b| b.is_ascii_digit()),
        b'D' => Set::of(|b| b.is_ascii_digit()).complement(),
        b'w' => Set::of(word),
        b'W' => Set::of(word).complement(),
        b's' => Set::of(space),
        b'S' => Set::of(space).complement(),
        b't' => Set::of(|b| b == b'\t'),
        b'n' => Set::of(|b| b == b'\n'),
        // An escaped punctuation character is itself.
        c if c.is_ascii_punctuation() => Set::of(|b| b == c),
        _ => return None,
    })
}

/// Parse `[...]` starting after the `[`; returns the set and the bytes used.
fn class(p: &[u8]) -> Option<(Set, usize)> {
    let mut i = 0;
    let negated = p.first() == Some(&b'^');
    if negated {
        i += 1;
    }
    let mut set = Set::default();
    let mut first = true;
    loop {
        let c = *p.get(i)?;
        match c {
            b']' if !first => break,
            // Nested classes and class set operations (`&&`, `--`, `~~`).
            b'[' => return None,
            b'&' | b'~' if p.get(i + 1) == Some(&c) => return None,
            b'-' if p.get(i + 1) == Some(&b'-') => return None,
            b'\\' => {
                let e = *p.get(i + 1)?;
                set = set.union(escape_set(e)?);
                i += 2;
            }
            c if c.is_ascii() => {
                if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&h| h != b']') {
                    let hi = p[i + 2];
                    if !hi.is_ascii() || hi == b'\\' || hi == b'[' || hi < c {
                        return None;
                    }
                    set.add_range(c, hi);
                    i += 3;
                } else {
                    set.add(c);
                    i += 1;
                }
            }
            _ => return None,
        }
        first = false;
    }
    Some((if negated { set.complement() } else { set }, i + 1))
}

/// A repetition `{n}`, `{n,}` or `{n,m}` starting after the `{`.
fn braces(p: &[u8]) -> Option<(u32, u32, usize)> {
    let end = p.iter().position(|&b| b == b'}')?;
    let inner = std::str::from_utf8(&p[..end]).ok()?;
    let num = |s: &str| -> Option<u32> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (min, max) = match inner.split_once(',') {
        None => {
            let n = num(inner)?;
            (n, n)
        }
        Some((lo, "")) => (num(lo)?, u32::MAX),
        Some((lo, hi)) => (num(lo)?, num(hi)?),
    };
    (min <= max).then_some((min, max, end + 1))
}

impl Simple {
    fn parse(pattern: &str) -> Option<Simple> {
        let mut p = pattern.as_bytes();
        if let [b'^', rest @ ..] = p {
            p = rest;
        }
        if let [rest @ .., b'$'] = p
            && !rest.ends_with(b"\\")
        {
            p = rest;
        }
        let mut atoms: Vec<Atom> = Vec::new();
        let mut i = 0;
        while i < p.len() {
            let (set, used) = match p[i] {
                b'\\' => (escape_set(*p.get(i + 1)?)?, 2),
                b'[' => {
                    let (set, used) = class(&p[i + 1..])?;
                    (set, used + 1)
                }
                b'.' => (Set::of(|b| b != b'\n'), 1),
                b'(' | b')' | b'|' | b'^' | b'$' | b'?' | b'*' | b'+' | b'{' | b'}' | b']' => {
                    return None;
                }
                c if c.is_ascii() => (Set::of(|b| b == c), 1),
                _ => return None,
            };
            i += used;
            let (min, max, used) = match p.get(i) {
                Some(b'?') => (0, 1, 1),
                Some(b'*') => (0, u32::MAX, 1),
                Some(b'+') => (1, u32::MAX, 1),
                Some(b'{') => braces(&p[i + 1..]).map(|(lo, hi, n)| (lo, hi, n + 1))?,
                _ => (1, 1, 0),
            };
            i += used;
            // Lazy or possessive quantifiers, or a quantifier quantified.
            if used > 0 && matches!(p.get(i), Some(b'?' | b'+' | b'*' | b'{')) {
                return None;
            }
            atoms.push(Atom { set, min, max });
        }
        // Greedy is exact if no variable repetition can take a character
        // that what may follow it (the next atoms, up to the first required
        // one) would need.
        for (i, a) in atoms.iter().enumerate().filter(|(_, a)| a.min != a.max) {
            let mut follow = Set::default();
            for b in &atoms[i + 1..] {
                follow = follow.union(b.set);
                if b.min > 0 {
                    break;
                }
            }
            if a.set.meets(follow) {
                return None;
            }
        }
        Some(Simple(atoms))
    }

    /// Whether `b` matches, greedily.
    #[inline]
    fn matches(&self, b: &[u8]) -> bool {
        let mut i = 0;
        for a in &self.0 {
            if a.min == a.max {
                // A fixed count: exactly the next `min` bytes.
                let Some(run) = b.get(i..i + a.min as usize) else {
                    return false;
                };
                if !run.iter().all(|&c| a.set.has(c)) {
                    return false;
                }
                i += run.len();
                continue;
            }
            let mut n = 0;
            while n < a.max && i < b.len() && a.set.has(b[i]) {
                i += 1;
                n += 1;
            }
            if n < a.min {
                return false;
            }
        }
        i == b.len()
    }
}

/// A compiled `pattern` constraint: the whole cell must match.
#[derive(Debug)]
pub(crate) struct Pattern {
    regex: Regex,
    simple: Option<Simple>,
    /// The simple pattern when it has a fixed length.
    fixed: Option<Fixed>,
}

impl Pattern {
    /// Compile `pattern` (anchored at both ends).
    pub(crate) fn new(pattern: &str) -> Result<Pattern, regex::Error> {
        Regex::new(pattern)?; // alone first, so `a)|(b` cannot escape the anchoring group
        let simple = Simple::parse(pattern);
        Ok(Pattern {
            regex: Regex::new(&format!(r"\A(?:{pattern})\z"))?,
            fixed: simple.as_ref().and_then(Fixed::of),
            simple,
        })
    }

    /// [`Pattern::is_match`] for a CSV cell, from its bytes where it can.
    #[inline]
    pub(crate) fn is_match_text(&self, t: Text<'_>) -> bool {
        if let Some(fixed) = &self.fixed {
            // A match is ASCII; a miss is final only for ASCII text.
            return fixed.matches(t.bytes())
                || (!t.bytes().is_ascii() && self.regex.is_match(t.str()));
        }
        match &self.simple {
            Some(simple) if simple.matches(t.bytes()) => true,
            Some(_) if t.bytes().is_ascii() => false,
            _ => self.regex.is_match(t.str()),
        }
    }

    #[inline]
    pub(crate) fn is_match(&self, s: &str) -> bool {
        match &self.simple {
            // A match consumed only ASCII; a miss is final only for ASCII text.
            Some(simple) if simple.matches(s.as_bytes()) => true,
            Some(_) if s.is_ascii() => false,
            _ => self.regex.is_match(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_is_recognised() {
        for p in [
            "[A-Z]{3}-[0-9]{4}",
            r"\d{5}",
            r"^[a-z]+@[a-z]+\.com$",
            "a?b*c+",
            r"[^,]*,\d",
            "[]x]",
            "[a-]x",
            r"\w{2,}\s?",
            "",
        ] {
            assert!(Simple::parse(p).is_some(), "{p}");
        }
        for p in [
            "a|b",
            "(ab)+",
            "a*a",
            "[a-z]+[a-z]",
            "a*b?a",
            "a+?",
            "[[:alpha:]]",
            "[a-z&&[^x]]",
            r"\p{L}",
            "x{3,2}",
            "é",
            r"\bword",
        ] {
            assert!(Simple::parse(p).is_none(), "{p}");
        }
    }

    #[test]
    fn agrees_with_the_regex() {
        let patterns = [
            "[A-Z]{3}-[0-9]{4}",
            r"\d{5}",
            r"[a-z]+@[a-z]+\.com",
            "a?b*c+",
            r"[^,]*,\d",
            r"\w{2,4}\s?",
            "[]x]y",
            "[a-]x",
            "x{0}y{1,}",
            ".b",
            r"\D\W\S",
            "^ab$",
            r"a\$",
            "a*b?c",
            "[a-c]+x?[d-f]",
        ];
        let alphabet = [
            "", "a", "b", "c", "x", "y", "-", "]", ",", " ", "\n", "A", "Z", "5", "_", "é", "$",
            ".", "com", "@",
        ];
        let mut seed: u32 = 99;
        let mut next = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (seed >> 16) as usize
        };
        for p in patterns {
            let pat = Pattern::new(p).unwrap();
            assert!(pat.simple.is_some(), "{p} should be simple");
            let fixed = [
                "[A-Z]{3}-[0-9]{4}",
                r"\d{5}",
                r"\D\W\S",
                "^ab$",
                r"a\$",
                ".b",
                "[]x]y",
                "[a-]x",
            ];
            assert_eq!(pat.fixed.is_some(), fixed.contains(&p), "{p}");
            let mut cases: Vec<String> = vec![
                "ABC-1234".into(),
                "12345".into(),
                "abc@xy.com".into(),
                "ab".into(),
                "bbc".into(),
            ];
            for _ in 0..3000 {
                let len = next() % 8;
                cases.push(
                    (0..len)
                        .map(|_| alphabet[next() % alphabet.len()])
                        .collect(),
                );
            }
            for s in &cases {
                let want = pat.regex.is_match(s);
                assert_eq!(pat.is_match(s), want, "{p} on {s:?}");
                assert_eq!(pat.is_match_text(Text(s)), want, "{p} on {s:?}");
            }
        }
    }
}
