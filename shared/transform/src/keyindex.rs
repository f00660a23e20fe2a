//! The built-in transform's deduplication index, in bounded memory: which rows a later row with the
//! same primary key replaces.
//!
//! Rows that pass the checks are numbered (their *ordinal*) in the order they arrive: files in
//! manifest order, rows in file order. A first pass over the batch [`KeyIndex::push`]es each row's
//! key; [`KeyIndex::finish`] answers which ordinals are [`Replaced`] — every row but the last of its
//! key — and the second pass writes the others, in arrival order.
//!
//! Keys are gathered in memory up to a byte bound, then sorted (stably, so one key's rows stay in
//! arrival order), reduced to the last row of each key, and written as a sorted run to an anonymous
//! temporary file (it has no name, so it is gone when closed, or when the process dies). At the end
//! the runs are merged (k-way, on a binary heap): of one key's rows in several runs, the highest
//! ordinal wins. A batch whose keys fit under the bound never touches the disk. What memory holds
//! besides the bound: one bit per row for [`Replaced`], and a read buffer per run. Keys are compared
//! whole, as bytes: no hash, so no false duplicate.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Bytes of primary keys (and their bookkeeping) the key index holds before it spills a sorted run
/// to the scratch directory (the local backend's: the data directory's `tmp/`).
pub const KEY_INDEX_BYTES: usize = 32 << 20;

/// A run file's read and write buffer.
const RUN_BUFFER: usize = 64 * 1024;

/// A buffered key: where it is in the arena, and its row.
#[derive(Clone, Copy)]
struct Entry {
    start: usize,
    len: usize,
    ordinal: u64,
}

impl Entry {
    fn range(&self) -> Range<usize> {
        self.start..self.start + self.len
    }
}

/// Memory an entry costs besides its key's bytes.
const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

/// The ordinals of rows that a later row with the same key replaces: one bit per row.
#[derive(Debug, Default)]
pub(crate) struct Replaced {
    bits: Vec<u64>,
    /// How many rows are replaced.
    pub(crate) count: u64,
}

impl Replaced {
    fn insert(&mut self, ordinal: u64) {
        let (word, bit) = ((ordinal / 64) as usize, ordinal % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & (1 << bit) == 0 {
            self.bits[word] |= 1 << bit;
            self.count += 1;
        }
    }

    pub(crate) fn contains(&self, ordinal: u64) -> bool {
        let (word, bit) = ((ordinal / 64) as usize, ordinal % 64);
        self.bits.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }
}

/// See the module docs.
pub(crate) struct KeyIndex {
    /// Where run files are made.
    dir: PathBuf,
    /// Bytes of keys and entries held before a spill.
    bound: usize,
    arena: Vec<u8>,
    entries: Vec<Entry>,
    runs: Vec<File>,
    replaced: Replaced,
}

impl KeyIndex {
    /// An empty index spilling to `dir` past `bound` bytes.
    pub(crate) fn new(dir: &Path, bound: usize) -> Self {
        KeyIndex {
            dir: dir.to_path_buf(),
            bound,
            arena: Vec::new(),
            entries: Vec::new(),
            runs: Vec::new(),
            replaced: Replaced::default(),
        }
    }

    /// Records that row `ordinal` has `key`. Ordinals must rise from one call to the next.
    pub(crate) fn push(&mut self, key: &[u8], ordinal: u64) -> io::Result<()> {
        self.entries.push(Entry {
            start: self.arena.len(),
            len: key.len(),
            ordinal,
        });
        self.arena.extend_from_slice(key);
        if self.arena.len() + self.entries.len() * ENTRY_BYTES >= self.bound {
            self.spill()?;
        }
        Ok(())
    }

    /// How many sorted runs went to disk so far.
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Writes the buffered keys, reduced to the last row of each, as a sorted run.
    fn spill(&mut self) -> io::Result<()> {
        let mut out = BufWriter::with_capacity(RUN_BUFFER, tempfile::tempfile_in(&self.dir)?);
        reduce(
            &mut self.entries,
            &self.arena,
            &mut self.replaced,
            |key, ordinal| {
                out.write_all(&(key.len() as u64).to_le_bytes())?;
                out.write_all(key)?;
                out.write_all(&ordinal.to_le_bytes())
            },
        )?;
        let mut file = out.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        self.runs.push(file);
        // The buffers keep their capacity for the next run: that is the bound.
        self.arena.clear();
        self.entries.clear();
        Ok(())
    }

    /// Every row that is not the last of its key.
    pub(crate) fn finish(mut self) -> io::Result<Replaced> {
        if self.runs.is_empty() {
            reduce(
                &mut self.entries,
                &self.arena,
                &mut self.replaced,
                |_, _| Ok(()),
            )?;
            return Ok(self.replaced);
        }
        if !self.entries.is_empty() {
            self.spill()?;
        }
        // The buffers' memory goes back before the merge.
        self.arena = Vec::new();
        self.entries = Vec::new();
        let mut runs: Vec<Run> = self.runs.drain(..).map(Run::new).collect();
        let mut heads = BinaryHeap::new();
        for (n, run) in runs.iter_mut().enumerate() {
            if let Some((key, ordinal)) = run.next()? {
                heads.push(Reverse((key, ordinal, n)));
            }
        }
        while let Some(Reverse((key, ordinal, n))) = heads.pop() {
            let mut last = ordinal;
            let mut drained = vec![n];
            while let Some(Reverse((k, _, _))) = heads.peek()
                && *k == key
            {
                let Reverse((_, o, m)) = heads.pop().expect("peeked");
                // Runs hold distinct keys: each run here has one row of the key.
                self.replaced.insert(o.min(last));
                last = last.max(o);
                drained.push(m);
            }
            for m in drained {
                if let Some((k, o)) = runs[m].next()? {
                    heads.push(Reverse((k, o, m)));
                }
            }
        }
        Ok(self.replaced)
    }
}

/// Sorts `entries` by key (stably: a key's rows stay in arrival order), marks every row but the
/// last of each key as replaced, and hands `last` each key with its last row, in key order.
fn reduce(
    entries: &mut [Entry],
    arena: &[u8],
    replaced: &mut Replaced,
    mut last: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<()> {
    entries.sort_by(|a, b| arena[a.range()].cmp(&arena[b.range()]));
    let mut i = 0;
    while i < entries.len() {
        let key = &arena[entries[i].range()];
        let mut j = i + 1;
        while j < entries.len() && arena[entries[j].range()] == *key {
            j += 1;
        }
        for e in &entries[i..j - 1] {
            replaced.insert(e.ordinal);
        }
        last(key, entries[j - 1].ordinal)?;
        i = j;
    }
    Ok(())
}

/// A sorted run being read back: (key length u64, key, ordinal u64), little-endian.
struct Run(BufReader<File>);

impl Run {
    fn new(file: File) -> Self {
        Run(BufReader::with_capacity(RUN_BUFFER, file))
    }

    fn next(&mut self) -> io::Result<Option<(Vec<u8>, u64)>> {
        let mut word = [0u8; 8];
        match self.0.read_exact(&mut word) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut key = vec![0; u64::from_le_bytes(word) as usize];
        self.0.read_exact(&mut key)?;
        self.0.read_exact(&mut word)?;
        Ok(Some((key, u64::from_le_bytes(word))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The replaced ordinals of `keys` (row n has key `keys[n]`) with a bound of `bound` bytes.
    fn replaced(keys: &[&str], bound: usize) -> (Vec<u64>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let mut index = KeyIndex::new(dir.path(), bound);
        for (n, k) in keys.iter().enumerate() {
            index.push(k.as_bytes(), n as u64).unwrap();
        }
        let runs = index.runs();
        let r = index.finish().unwrap();
        let out: Vec<u64> = (0..keys.len() as u64).filter(|&n| r.contains(n)).collect();
        assert_eq!(r.count, out.len() as u64);
        // Run files have no name: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        (out, runs)
    }

    #[test]
    fn the_last_row_of_a_key_wins_in_memory_and_spilled() {
        let keys = ["a", "b", "a", "c", "b", "a", "d", "ab", "c"];
        let (in_memory, runs) = replaced(&keys, 1 << 20);
        assert_eq!(runs, 0);
        assert_eq!(in_memory, [0, 1, 2, 3]);
        // A bound of one entry spills every key to a run of its own; two entries, runs of two.
        for bound in [1, 2 * ENTRY_BYTES + 2] {
            let (spilled, runs) = replaced(&keys, bound);
            assert!(runs > 1, "{bound}: {runs}");
            assert_eq!(spilled, in_memory, "bound {bound}");
        }
    }

    #[test]
    fn many_keys_spilled_agree_with_a_hash_map() {
        // 20,000 rows over 3,000 keys of varied lengths, in a scrambled order.
        let keys: Vec<String> = (0..20_000u64)
            .map(|n| {
                let k = (n * 7919) % 3_000;
                "k".repeat((k % 5) as usize) + &k.to_string()
            })
            .collect();
        let mut last = std::collections::HashMap::new();
        for (n, k) in keys.iter().enumerate() {
            last.insert(k.clone(), n as u64);
        }
        let expected: Vec<u64> = (0..keys.len() as u64)
            .filter(|&n| last[&keys[n as usize]] != n)
            .collect();
        let refs: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        let (spilled, runs) = replaced(&refs, 16 * 1024);
        assert!(runs >= 10, "{runs}");
        assert_eq!(spilled, expected);
    }
}
