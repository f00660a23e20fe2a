//! The byte layer under both parsers: [`Guard`] turns the caller's reader
//! (plain or gzip) into a stream of decompressed, BOM-stripped bytes, and
//! stops it with a [`Fatal`] error as soon as the input turns hostile:
//! a decompression bomb, a corrupt gzip stream, a line (CSV record) longer
//! than `max_line_bytes`, or (for CSV) EOF inside a quoted field.
//!
//! Bounding the record length here is what keeps memory flat: the `csv`
//! crate (and `read_until` for JSON Lines) would otherwise buffer an
//! arbitrarily long record. For CSV the guard tracks quoting with the same
//! state machine as `csv_core` (RFC 4180, doubled quotes, a quote only opens
//! a field at its start), so a "line" is a whole record, newlines inside
//! quotes included, and an unterminated quote is seen at EOF.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use flate2::bufread::MultiGzDecoder;

use crate::report::ErrorKind;
use crate::{Compression, Limits};

/// Expanded bytes allowed before the compression-ratio check starts.
pub const RATIO_GRACE_BYTES: u64 = 10 * 1024 * 1024;

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];
const COMPRESSED_BUFFER: usize = 64 * 1024;

/// A reason to stop reading, carried inside an `io::Error` through the parsers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fatal {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fatal {}

impl Fatal {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Fatal {
            kind,
            message: message.into(),
        }
    }

    fn to_io(&self) -> io::Error {
        io::Error::other(self.clone())
    }

    /// The `Fatal` inside `e`, if `e` carries one.
    pub(crate) fn of(e: &io::Error) -> Option<&Fatal> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<Fatal>())
    }
}

/// The caller's reader, with its own failures tagged as [`ErrorKind::Io`]
/// (so they are not mistaken for gzip corruption).
struct Tagged<R>(R);

impl<R: Read> Read for Tagged<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::Interrupted || Fatal::of(&e).is_some() {
                e
            } else {
                Fatal::new(ErrorKind::Io, format!("read error: {e}")).to_io()
            }
        })
    }
}

/// Buffers the compressed input and counts the bytes the decoder consumed.
struct Counting<R> {
    inner: BufReader<Tagged<R>>,
    consumed: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed.set(self.consumed.get() + n as u64);
        Ok(n)
    }
}

impl<R: Read> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        self.consumed.set(self.consumed.get() + amt as u64);
    }
}

enum Source<R> {
    Plain(Tagged<R>),
    Gzip(Box<MultiGzDecoder<Counting<R>>>),
    /// Compressed input with no bytes at all: read as an empty file.
    Empty,
    /// The compressed input failed before decoding began.
    Failed(Option<io::Error>),
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Plain(r) => r.read(buf),
            Source::Gzip(d) => d.read(buf),
            Source::Empty => Ok(0),
            Source::Failed(e) => Err(e.take().unwrap_or_else(|| io::Error::other("read error"))),
        }
    }
}

/// What the guard needs to know about the syntax to find record ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Syntax {
    /// Records end at `\n` (JSON Lines).
    Lines,
    /// RFC 4180 records, as `csv_core` reads them with this quote and delimiter.
    Csv { quote: u8, delimiter: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// Outside quotes (at a field's start or inside an unquoted field).
    Unquoted,
    InQuoted,
    /// Just after a quote inside a quoted field: a closing or doubled quote.
    QuoteInQuoted,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `v` that is zero (exact for the lowest one).
#[inline(always)]
fn zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(LO) & !v & HI
}

/// The first index in `hay` whose byte is one of `needles`, eight bytes at a time.
#[inline(always)]
fn find_any<const N: usize>(hay: &[u8], needles: [u8; N]) -> Option<usize> {
    let splat = needles.map(|b| LO * u64::from(b));
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        let hits = splat.iter().fold(0, |acc, s| acc | zero_bytes(w ^ s));
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|b| needles.contains(b))
        .map(|p| at + p)
}

fn find1(hay: &[u8], a: u8) -> Option<usize> {
    find_any(hay, [a])
}

fn find2(hay: &[u8], a: u8, b: u8) -> Option<usize> {
    find_any(hay, [a, b])
}

fn find3(hay: &[u8], a: u8, b: u8, c: u8) -> Option<usize> {
    find_any(hay, [a, b, c])
}

/// See the module docs.
pub(crate) struct Guard<R> {
    src: Source<R>,
    gzip: bool,
    compressed: Option<Rc<Cell<u64>>>,
    max_line: usize,
    max_expanded: u64,
    max_ratio: u64,
    bytes: u64,
    bom_checked: bool,
    pending: [u8; 3],
    pending_len: usize,
    pending_pos: usize,
    syntax: Syntax,
    state: Quoting,
    /// Current physical line (1-based) and where the current record began.
    line: u64,
    record_line: u64,
    record_len: usize,
    quote_line: u64,
    /// CSV records completed so far, and runs of empty lines as
    /// (records completed before them, how many). Bounded: the guard is never
    /// more than one read buffer ahead of the parser.
    records: u64,
    empty_lines: VecDeque<(u64, u64)>,
    /// The last byte scanned (CSV), to tell where a field starts.
    prev_byte: Option<u8>,
    failed: Option<Fatal>,
}

impl<R: Read> Guard<R> {
    pub(crate) fn new(input: R, compression: Compression, syntax: Syntax, limits: &Limits) -> Self {
        let (src, compressed) = match compression {
            Compression::None => (Source::Plain(Tagged(input)), None),
            Compression::Gzip => {
                let consumed = Rc::new(Cell::new(0));
                let mut counting = Counting {
                    inner: BufReader::with_capacity(COMPRESSED_BUFFER, Tagged(input)),
                    consumed: consumed.clone(),
                };
                let src = match counting.fill_buf() {
                    Ok([]) => Source::Empty,
                    Ok(_) => Source::Gzip(Box::new(MultiGzDecoder::new(counting))),
                    Err(e) => Source::Failed(Some(e)),
                };
                (src, Some(consumed))
            }
        };
        Guard {
            src,
            gzip: compression == Compression::Gzip,
            compressed,
            max_line: limits.max_line_bytes,
            max_expanded: limits.max_expanded_bytes,
            max_ratio: limits.max_ratio,
            bytes: 0,
            bom_checked: false,
            pending: [0; 3],
            pending_len: 0,
            pending_pos: 0,
            syntax,
            state: Quoting::Unquoted,
            line: 1,
            record_line: 1,
            record_len: 0,
            quote_line: 1,
            records: 0,
            empty_lines: VecDeque::new(),
            prev_byte: None,
            failed: None,
        }
    }

    /// Bytes read after decompression (a stripped BOM included).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Take the number of empty lines seen before CSV record `k` (0-based,
    /// the header included). The `csv` crate skips empty lines silently;
    /// Frictionless reports each as a blank row, so the guard counts them.
    pub(crate) fn take_empty_lines_before(&mut self, k: u64) -> u64 {
        let mut n = 0;
        while let Some(&(before, count)) = self.empty_lines.front() {
            if before > k {
                break;
            }
            n += count;
            self.empty_lines.pop_front();
        }
        n
    }

    fn fail(&mut self, fatal: Fatal) -> io::Error {
        let e = fatal.to_io();
        self.failed = Some(fatal);
        e
    }

    /// Read decompressed bytes, enforcing the bomb limits.
    fn read_raw(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.src.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let fatal = match Fatal::of(&e) {
                    Some(f) => f.clone(),
                    None if self.gzip => Fatal::new(
                        ErrorKind::CorruptCompression,
                        format!("corrupt gzip stream: {e}"),
                    ),
                    None => Fatal::new(ErrorKind::Io, format!("read error: {e}")),
                };
                return Err(self.fail(fatal));
            }
        };
        self.bytes += n as u64;
        if let Some(compressed) = &self.compressed {
            let compressed = compressed.get().max(1);
            if self.bytes > self.max_expanded {
                let msg = format!(
                    "decompression bomb: more than {} bytes after decompression",
                    self.max_expanded
                );
                return Err(self.fail(Fatal::new(ErrorKind::DecompressionBomb, msg)));
            }
            if self.bytes > RATIO_GRACE_BYTES && self.bytes / compressed > self.max_ratio {
                let msg = format!(
                    "decompression bomb: {} bytes expanded from {} compressed bytes (ratio over {}:1)",
                    self.bytes, compressed, self.max_ratio
                );
                return Err(self.fail(Fatal::new(ErrorKind::DecompressionBomb, msg)));
            }
        }
        Ok(n)
    }

    /// Read with a leading UTF-8 BOM removed.
    fn read_unbom(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.bom_checked {
            let mut head = [0u8; 3];
            let mut len = 0;
            while len < 3 {
                let n = self.read_raw(&mut head[len..])?;
                if n == 0 {
                    break;
                }
                len += n;
            }
            self.bom_checked = true;
            self.pending = head;
            self.pending_len = if head[..len] == BOM { 0 } else { len };
        }
        if self.pending_pos < self.pending_len {
            let n = (self.pending_len - self.pending_pos).min(buf.len());
            buf[..n].copy_from_slice(&self.pending[self.pending_pos..self.pending_pos + n]);
            self.pending_pos += n;
            return Ok(n);
        }
        self.read_raw(buf)
    }

    /// Track records through `chunk`; fail on an over-long one.
    fn scan(&mut self, chunk: &[u8]) -> io::Result<()> {
        let max = self.max_line;
        let mut line = self.line;
        let mut record_line = self.record_line;
        let mut len = self.record_len;
        let mut too_long = false;
        match self.syntax {
            Syntax::Lines => {
                let mut rest = chunk;
                while !rest.is_empty() {
                    if len == 0 {
                        record_line = line;
                    }
                    match find1(rest, b'\n') {
                        Some(i) => {
                            if len + i > max {
                                too_long = true;
                                break;
                            }
                            len = 0;
                            line += 1;
                            rest = &rest[i + 1..];
                        }
                        None => {
                            len += rest.len();
                            if len > max {
                                too_long = true;
                            }
                            break;
                        }
                    }
                }
            }
            Syntax::Csv { quote, delimiter } => {
                let mut state = self.state;
                let mut quote_line = self.quote_line;
                let mut prev = self.prev_byte;
                let mut i = 0;
                while i < chunk.len() {
                    if len == 0 {
                        record_line = line;
                    }
                    // Skip to the next byte that can change the state.
                    let rest = &chunk[i..];
                    let skip = match state {
                        Quoting::Unquoted => find3(rest, quote, b'\n', b'\r'),
                        Quoting::InQuoted => find2(rest, quote, b'\n'),
                        Quoting::QuoteInQuoted => Some(0),
                    };
                    let skip = skip.unwrap_or(rest.len());
                    if skip > 0 {
                        len += skip;
                        i += skip;
                        prev = Some(chunk[i - 1]);
                        if len > max {
                            too_long = true;
                            break;
                        }
                        if i == chunk.len() {
                            break;
                        }
                    }
                    let b = chunk[i];
                    let len_before = len;
                    len += 1;
                    i += 1;
                    let newline = b == b'\n';
                    if newline {
                        line += 1;
                    }
                    state = match state {
                        Quoting::InQuoted if b == quote => Quoting::QuoteInQuoted,
                        Quoting::InQuoted => Quoting::InQuoted,
                        Quoting::QuoteInQuoted if b == quote => Quoting::InQuoted,
                        _ if newline || b == b'\r' => {
                            if len_before > 0 {
                                self.records += 1;
                            } else if !(newline && prev == Some(b'\r')) {
                                match self.empty_lines.back_mut() {
                                    Some((before, n)) if *before == self.records => *n += 1,
                                    _ => self.empty_lines.push_back((self.records, 1)),
                                }
                            }
                            len = 0;
                            Quoting::Unquoted
                        }
                        // A quote opens a quoted field only at the field's start.
                        Quoting::Unquoted
                            if b == quote && (len_before == 0 || prev == Some(delimiter)) =>
                        {
                            quote_line = line;
                            Quoting::InQuoted
                        }
                        // A literal quote inside an unquoted field, or text after a closing quote.
                        _ => Quoting::Unquoted,
                    };
                    prev = Some(b);
                    if len > max {
                        too_long = true;
                        break;
                    }
                }
                self.state = state;
                self.quote_line = quote_line;
                self.prev_byte = prev;
            }
        }
        self.line = line;
        self.record_line = record_line;
        self.record_len = len;
        if too_long {
            let msg = format!("line {record_line} is longer than {max} bytes");
            return Err(self.fail(Fatal::new(ErrorKind::LineTooLong, msg)));
        }
        Ok(())
    }
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &self.failed {
            return Err(f.to_io());
        }
        let n = self.read_unbom(buf)?;
        if n == 0 {
            if self.state == Quoting::InQuoted {
                let msg = format!(
                    "unterminated quote: the quoted field opened on line {} never closes",
                    self.quote_line
                );
                return Err(self.fail(Fatal::new(ErrorKind::UnterminatedQuote, msg)));
            }
            return Ok(0);
        }
        self.scan(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(data: &[u8], syntax: Syntax, limits: &Limits) -> (Vec<u8>, Option<Fatal>) {
        let mut g = Guard::new(data, Compression::None, syntax, limits);
        let mut out = Vec::new();
        let mut buf = [0u8; 7]; // small, to cross chunk boundaries
        loop {
            match g.read(&mut buf) {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (out, Fatal::of(&e).cloned()),
            }
        }
    }

    const CSV: Syntax = Syntax::Csv {
        quote: b'"',
        delimiter: b',',
    };

    #[test]
    fn strips_bom_only_at_start() {
        let (out, f) = read_all(b"\xEF\xBB\xBFa,b\n\xEF\xBB\xBF", CSV, &Limits::default());
        assert_eq!(f, None);
        assert_eq!(out, b"a,b\n\xEF\xBB\xBF");
        let (out, _) = read_all(b"\xEF\xBB", CSV, &Limits::default());
        assert_eq!(out, b"\xEF\xBB");
    }

    #[test]
    fn quoted_newlines_and_doubled_quotes_are_one_record() {
        let (_, f) = read_all(b"a,\"x\ny\"\"z\"\nb,c\n", CSV, &Limits::default());
        assert_eq!(f, None);
        // A quote in the middle of an unquoted field is literal, as in csv_core.
        let (_, f) = read_all(b"a,b\"c\n", CSV, &Limits::default());
        assert_eq!(f, None);
    }

    #[test]
    fn unterminated_quote_at_eof() {
        let (_, f) = read_all(b"a,b\n1,\"open\n2,3\n", CSV, &Limits::default());
        let f = f.expect("fatal");
        assert_eq!(f.kind, ErrorKind::UnterminatedQuote);
        assert!(f.message.contains("line 2"), "{}", f.message);
    }

    #[test]
    fn record_length_is_bounded() {
        let limits = Limits {
            max_line_bytes: 10,
            ..Limits::default()
        };
        let (_, f) = read_all(b"0123456789\n01234567890\n", CSV, &limits);
        let f = f.expect("fatal");
        assert_eq!(f.kind, ErrorKind::LineTooLong);
        assert_eq!(f.message, "line 2 is longer than 10 bytes");
        let (_, f) = read_all(b"0123456789\n0123456789\n", Syntax::Lines, &limits);
        assert_eq!(f, None);
        let (_, f) = read_all(b"ok\n0123456789012", Syntax::Lines, &limits);
        assert_eq!(f.unwrap().message, "line 2 is longer than 10 bytes");
        // A quoted field's newlines do not end the record.
        let (_, f) = read_all(b"\"01234\n56789\"\n", CSV, &limits);
        assert_eq!(f.unwrap().kind, ErrorKind::LineTooLong);
    }

    #[test]
    fn finds_bytes_like_position() {
        let mut x: u32 = 7;
        let hay: Vec<u8> = (0..2000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                b"abc,\"\n\r\x80\xff"[(x >> 16) as usize % 9]
            })
            .collect();
        for start in 0..hay.len() {
            let h = &hay[start..];
            let want = h
                .iter()
                .position(|&b| b == b'"' || b == b'\n' || b == b'\r');
            assert_eq!(find3(h, b'"', b'\n', b'\r'), want);
            assert_eq!(find1(h, b'\xff'), h.iter().position(|&b| b == 0xff));
        }
        assert_eq!(find2(b"", b'a', b'b'), None);
    }

    #[test]
    fn counts_empty_lines_between_records() {
        let data = b"h\r\n\r\n1\n\n\n\"a\n\nb\"\n2\n\n";
        let mut g = Guard::new(&data[..], Compression::None, CSV, &Limits::default());
        std::io::copy(&mut g, &mut std::io::sink()).unwrap();
        // Records: h (0), 1 (1), "a..b" (2), 2 (3).
        assert_eq!(g.take_empty_lines_before(0), 0);
        assert_eq!(g.take_empty_lines_before(1), 1);
        assert_eq!(g.take_empty_lines_before(2), 2);
        assert_eq!(g.take_empty_lines_before(3), 0);
        assert_eq!(g.take_empty_lines_before(u64::MAX), 1);
    }
}
