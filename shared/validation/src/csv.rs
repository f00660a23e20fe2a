//! CSV: an RFC 4180 parser of our own, built for throughput and for hostile
//! input. Input is read into one buffer (256 KiB, growing only for a record
//! longer than that, up to `max_line_bytes`), UTF-8-checked once per fill,
//! and split into records and fields from a bitmap of the four bytes that
//! matter (delimiter, quote, CR, LF), built for the whole fill in one SIMD
//! pass (AVX2 where the CPU has it, else SSE2, else eight bytes at a time in
//! a `u64`); only those positions are visited. Cells are borrowed `&str` slices of the
//! buffer; only a quoted field with doubled quotes (or text after its closing
//! quote) is copied, once, into a scratch string. Quoting follows `csv_core`
//! and Python's `csv` (a quote opens a quoted field only at the field's
//! start, `""` inside one is a quote), records end at LF, CRLF or CR, and an
//! empty line is a blank row, as Frictionless reports it.
//!
//! The header (or JSON keys) map to schema fields by name (or cells to
//! fields by position when there is no header); structural problems
//! (missing/extra/duplicate columns, ragged and blank rows) are reported and
//! each row is handed to the [`Checker`]. Records go on in groups of
//! [`GROUP`], each screened a column at a time first ([`Checker::screen`]),
//! then checked row by row for what screening left. A record longer than
//! `max_line_bytes`, invalid UTF-8 and EOF inside a quoted field end the run
//! with a [`Fatal`] reason naming the line.

use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use crate::CsvDialect;
use crate::cell::{Cell, Text};
use crate::check::Checker;
use crate::reader::{Fatal, Guard};
use crate::report::{Collector, ErrorKind, clip};
use crate::schema::FieldType;

/// Bytes read per buffer fill.
const CHUNK: usize = 256 * 1024;

/// Batches (one buffer fill each) waiting between the two threads.
const QUEUED_BATCHES: usize = 4;

/// How columns map to fields.
struct Layout {
    /// For each schema field, its column (None: absent from the file).
    field_col: Vec<Option<usize>>,
    /// The expected number of cells per row, and what set it.
    width: usize,
    width_from: &'static str,
    /// Field `i` is column `i`, for every column: a row of `width` cells
    /// needs no mapping.
    in_order: bool,
}

impl Layout {
    fn new(field_col: Vec<Option<usize>>, width: usize, width_from: &'static str) -> Self {
        let in_order =
            field_col.len() == width && field_col.iter().enumerate().all(|(i, c)| *c == Some(i));
        Layout {
            field_col,
            width,
            width_from,
            in_order,
        }
    }
}

/// The bytes that end or quote a field.
#[derive(Debug, Clone, Copy)]
struct Needles {
    delimiter: u8,
    quote: u8,
}

/// Bit `i` set for each byte `b[i]` that is a delimiter, quote, CR or LF.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn block_mask(b: &[u8; 64], n: Needles) -> u64 {
    // SAFETY: SSE2 is enabled for this build (the cfg above; it is part of
    // the x86_64 baseline), which is all these intrinsics require.
    unsafe { block_mask_sse2(b, n) }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
#[inline]
fn block_mask_sse2(b: &[u8; 64], n: Needles) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let d = _mm_set1_epi8(n.delimiter as i8);
    let q = _mm_set1_epi8(n.quote as i8);
    let lf = _mm_set1_epi8(b'\n' as i8);
    let cr = _mm_set1_epi8(b'\r' as i8);
    let mut mask = 0u64;
    for (k, lane) in b.chunks_exact(16).enumerate() {
        // SAFETY: `lane` is 16 readable bytes; `loadu` needs no alignment.
        let v = unsafe { _mm_loadu_si128(lane.as_ptr().cast::<__m128i>()) };
        let hit = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, d), _mm_cmpeq_epi8(v, q)),
            _mm_or_si128(_mm_cmpeq_epi8(v, lf), _mm_cmpeq_epi8(v, cr)),
        );
        mask |= u64::from(_mm_movemask_epi8(hit) as u16) << (16 * k);
    }
    mask
}

/// [`block_mask`] with AVX2: 32 bytes per compare.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn block_mask_avx2(b: &[u8; 64], n: Needles) -> u64 {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8,
    };
    let d = _mm256_set1_epi8(n.delimiter as i8);
    let q = _mm256_set1_epi8(n.quote as i8);
    let lf = _mm256_set1_epi8(b'\n' as i8);
    let cr = _mm256_set1_epi8(b'\r' as i8);
    let mut mask = 0u64;
    for (k, lane) in b.chunks_exact(32).enumerate() {
        // SAFETY: `lane` is 32 readable bytes; `loadu` needs no alignment.
        let v = unsafe { _mm256_loadu_si256(lane.as_ptr().cast::<__m256i>()) };
        let hit = _mm256_or_si256(
            _mm256_or_si256(_mm256_cmpeq_epi8(v, d), _mm256_cmpeq_epi8(v, q)),
            _mm256_or_si256(_mm256_cmpeq_epi8(v, lf), _mm256_cmpeq_epi8(v, cr)),
        );
        mask |= u64::from(_mm256_movemask_epi8(hit) as u32) << (32 * k);
    }
    mask
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn block_mask(b: &[u8; 64], n: Needles) -> u64 {
    block_mask_swar(b, n)
}

/// Bit `i` set for each byte `b[i]` that is a delimiter, quote, CR or LF
/// (portable: eight bytes at a time in a `u64`).
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
#[inline(always)]
fn block_mask_swar(b: &[u8; 64], n: Needles) -> u64 {
    const LO7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    const ONES: u64 = 0x0101_0101_0101_0101;
    // High bit of each byte of `w` that equals the byte splatted in `s`.
    let eq = |w: u64, s: u64| {
        let x = w ^ s;
        !(((x & LO7) + LO7) | x) & !LO7
    };
    let splats = [n.delimiter, n.quote, b'\n', b'\r'].map(|c| ONES * u64::from(c));
    let mut mask = 0u64;
    for (k, word) in b.chunks_exact(8).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let w = u64::from_le_bytes(w);
        let hits = splats.iter().fold(0, |acc, &s| acc | eq(w, s));
        // Gather the eight high bits into one byte.
        let bits = ((hits >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56;
        mask |= bits << (8 * k);
    }
    mask
}

/// Push the mask of each 64-byte block of `b` onto `out`, the last block
/// padded with a byte that is never structural (the needles are ASCII).
#[inline(always)]
fn push_masks(b: &[u8], n: Needles, out: &mut Vec<u64>, mask: impl Fn(&[u8; 64], Needles) -> u64) {
    let (blocks, rest) = b.as_chunks::<64>();
    out.extend(blocks.iter().map(|block| mask(block, n)));
    if !rest.is_empty() {
        let mut pad = [0x80u8; 64];
        pad[..rest.len()].copy_from_slice(rest);
        out.push(mask(&pad, n));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn push_masks_avx2(b: &[u8], n: Needles, out: &mut Vec<u64>) {
    push_masks(b, n, out, |block, n| block_mask_avx2(block, n));
}

/// The structural bitmap of `b`: bit `i % 64` of `out[i / 64]` is set when
/// `b[i]` is a delimiter, quote, CR or LF. One pass over the buffer, with
/// AVX2 where the CPU has it (checked at run time), else SSE2 (the x86_64
/// baseline) or eight bytes at a time in a `u64`.
fn structural_masks(b: &[u8], n: Needles, out: &mut Vec<u64>) {
    out.clear();
    out.reserve(b.len().div_ceil(64));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected.
        unsafe { push_masks_avx2(b, n, out) };
        return;
    }
    push_masks(b, n, out, block_mask);
}

/// The positions of structural bytes, in order, from the bitmap of
/// [`structural_masks`].
struct Scan<'a> {
    masks: &'a [u64],
    /// The block `mask` belongs to.
    block: usize,
    /// Its structural bytes not yet visited.
    mask: u64,
}

impl<'a> Scan<'a> {
    fn new(masks: &'a [u64]) -> Self {
        Scan {
            masks,
            block: 0,
            mask: masks.first().copied().unwrap_or(0),
        }
    }

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.block += 1;
            self.mask = *self.masks.get(self.block)?;
        }
        let i = self.block * 64 + self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(i)
    }
}

/// Where a cell's text is: `start..end` of the input, or (with the top bit
/// of `start` set) of the scratch string. Offsets fit: the buffer is kept
/// under 2 GiB.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

const SCRATCH: u32 = 1 << 31;

/// Largest record the buffer makes room for (so that offsets fit a `Span`).
const MAX_RECORD: usize = (1 << 31) - 2 * CHUNK;

impl Span {
    #[inline(always)]
    fn text(start: usize, end: usize) -> Self {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
}

/// The text of span `s`, of `text` or of `scratch`.
#[inline(always)]
fn span_text<'a>(text: &'a str, scratch: &'a str, s: Span) -> Text<'a> {
    let (src, start) = if s.start & SCRATCH == 0 {
        (text, s.start as usize)
    } else {
        (scratch, (s.start & !SCRATCH) as usize)
    };
    let end = s.end as usize;
    let Some(bytes) = src.as_bytes().get(start..end) else {
        return Text("");
    };
    debug_assert!(src.is_char_boundary(start) && src.is_char_boundary(end));
    // SAFETY: `bytes` is `src[start..end]` (just checked), and both are
    // character boundaries by construction: a span of `text` starts and
    // ends next to an ASCII byte the scanner found (a delimiter, quote, CR
    // or LF, which UTF-8 never uses inside a multi-byte character) or at
    // the region's start or end, and a span of `scratch` starts and ends at
    // its length between two `push_str`s. (Checking the boundaries again
    // here costs 3% of a validation.)
    Text(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// The text of span `s` if it is a slice of `text` (not of the scratch
/// string, whose spans have a start past any text: see [`SCRATCH`]).
#[inline(always)]
fn plain_text(text: &str, s: Span) -> Option<Text<'_>> {
    let bytes = text.as_bytes().get(s.start as usize..s.end as usize)?;
    // SAFETY: as in `span_text`: `bytes` is `text[start..end]`, and both
    // ends are character boundaries by construction.
    Some(Text(unsafe { std::str::from_utf8_unchecked(bytes) }))
}

/// Records handed on at a time: enough to make screening them a column at
/// a time worth it (see [`Checker::screen`]), few enough that their cells
/// stay in the L1 cache meanwhile.
const GROUP: usize = 128;

/// A record (its first span and span count) or, `None`, an empty line.
type Entry = Option<(u32, u32)>;

/// Records and empty lines, in order, as the parser hands them on.
struct Group<'a> {
    text: &'a str,
    scratch: &'a str,
    spans: &'a [Span],
    entries: &'a [Entry],
}

impl<'a> Group<'a> {
    fn record(&self, (first, n): (u32, u32)) -> Record<'a> {
        let (first, n) = (first as usize, n as usize);
        Record {
            text: self.text,
            scratch: self.scratch,
            spans: self.spans.get(first..first + n).unwrap_or_default(),
        }
    }

    #[cfg(test)]
    fn events(&self) -> impl Iterator<Item = Event<'a>> + '_ {
        self.entries.iter().map(|e| match *e {
            None => Event::EmptyLine,
            Some(entry) => Event::Record(self.record(entry)),
        })
    }
}

/// One parsed record: its cells.
struct Record<'a> {
    text: &'a str,
    scratch: &'a str,
    spans: &'a [Span],
}

impl<'a> Record<'a> {
    fn len(&self) -> usize {
        self.spans.len()
    }

    #[inline(always)]
    fn text(&self, i: usize) -> Text<'a> {
        span_text(self.text, self.scratch, self.spans[i])
    }

    fn cell(&self, i: usize) -> &'a str {
        self.text(i).str()
    }
}

/// A group's entry, for the tests.
#[cfg(test)]
enum Event<'a> {
    Record(Record<'a>),
    /// A line with nothing on it (not the LF of a CRLF).
    EmptyLine,
}

/// Parser state carried from one buffer fill to the next.
struct Position {
    /// The line (1-based) the next record starts on.
    line: u64,
    /// The last record ended with CR: an LF right after it is part of that end.
    skip_lf: bool,
}

/// Append quoted field `field` (starting with the quote) to `out`, unescaped:
/// `""` inside the quotes is one quote; text after the closing quote is kept
/// as it is, as `csv_core` and Python's `csv` do.
fn unescape(field: &str, quote: u8, out: &mut String) {
    let b = field.as_bytes();
    let mut seg = 1;
    let mut i = 1;
    while i < b.len() {
        if b[i] == quote {
            out.push_str(&field[seg..i]);
            if b.get(i + 1) == Some(&quote) {
                out.push(char::from(quote));
                i += 2;
                seg = i;
                continue;
            }
            seg = i + 1;
            break;
        }
        i += 1;
    }
    out.push_str(field.get(seg..).unwrap_or_default());
}

fn too_long(line: u64, max: usize) -> Fatal {
    Fatal::new(
        ErrorKind::LineTooLong,
        format!("line {line} is longer than {max} bytes"),
    )
}

/// Buffers reused from one buffer fill to the next.
#[derive(Default)]
struct Work {
    /// The fill's structural bitmap (see [`structural_masks`]).
    masks: Vec<u64>,
    /// The group of records being parsed: their cells and the unescaped
    /// text of their quoted cells that had to be copied.
    spans: Vec<Span>,
    scratch: String,
    entries: Vec<Entry>,
}

/// Hand the group of records in `spans`, `scratch` and `entries` (of
/// `text`) to `on`, and start a new one.
fn flush(
    text: &str,
    spans: &mut Vec<Span>,
    scratch: &mut String,
    entries: &mut Vec<Entry>,
    on: &mut impl FnMut(&Group<'_>) -> Result<(), Fatal>,
) -> Result<(), Fatal> {
    if entries.is_empty() {
        return Ok(());
    }
    let result = on(&Group {
        text,
        scratch,
        spans,
        entries,
    });
    spans.clear();
    scratch.clear();
    entries.clear();
    result
}

/// Parse the complete records of `text`, handing them to `on` in groups of
/// [`GROUP`]. Returns where the first incomplete record starts (all of
/// `text` if none), and the line its quoted field opened on if it ends
/// inside one. The records before a problem are handed on before it is
/// returned.
#[inline(never)]
fn parse_region(
    text: &str,
    needles: Needles,
    max_line: usize,
    pos: &mut Position,
    work: &mut Work,
    on: &mut impl FnMut(&Group<'_>) -> Result<(), Fatal>,
) -> Result<(usize, Option<u64>), Fatal> {
    let b = text.as_bytes();
    let (d, q) = (needles.delimiter, needles.quote);
    let Work {
        masks,
        spans,
        scratch,
        entries,
    } = work;
    structural_masks(b, needles, masks);
    let mut scan = Scan::new(masks);
    let mut start = 0;
    let (mut line, mut skip_lf) = (pos.line, pos.skip_lf);
    // The spans and scratch text of the records parsed so far.
    let mut kept = (0, 0);
    let result = 'parse: loop {
        // Newlines so far in this record, and the state of its current field.
        let mut newlines = 0u64;
        let mut field = start;
        let mut quoted = false;
        let mut in_quotes = false;
        let mut closed_at = usize::MAX;
        let mut plain = true;
        let mut quote_line = 0;
        loop {
            let Some(i) = scan.next() else {
                break 'parse Ok((start, in_quotes.then_some(quote_line)));
            };
            let c = b[i];
            if c == d && !quoted {
                // The common case: the end of an unquoted field.
                spans.push(Span::text(field, i));
                field = i + 1;
                continue;
            }
            if in_quotes {
                if c == q {
                    in_quotes = false;
                    closed_at = i;
                } else if c == b'\n' {
                    newlines += 1;
                }
                continue;
            }
            if c == q {
                if i == field {
                    in_quotes = true;
                    quoted = true;
                    quote_line = line + newlines;
                } else if quoted {
                    // Right after the closing quote: a doubled quote, back
                    // inside; later: a literal quote.
                    in_quotes = i == closed_at + 1;
                    plain = false;
                }
                // Otherwise a literal quote inside an unquoted field.
                continue;
            }
            if c != d && i == start {
                // An empty line, or the LF of a CRLF.
                if c == b'\n' {
                    line += 1;
                }
                if !(skip_lf && c == b'\n') {
                    entries.push(None);
                }
                skip_lf = c == b'\r';
                start = i + 1;
                break;
            }
            // The field ends at i.
            if !quoted {
                spans.push(Span::text(field, i));
            } else if plain && closed_at + 1 == i {
                spans.push(Span::text(field + 1, closed_at));
            } else {
                let from = scratch.len();
                unescape(&text[field..i], q, scratch);
                spans.push(Span {
                    start: from as u32 | SCRATCH,
                    end: scratch.len() as u32,
                });
            }
            if c == d {
                field = i + 1;
                quoted = false;
                plain = true;
                closed_at = usize::MAX;
                continue;
            }
            // The record ends at i.
            if i - start > max_line {
                break 'parse Err(too_long(line, max_line));
            }
            entries.push(Some((kept.0 as u32, (spans.len() - kept.0) as u32)));
            kept = (spans.len(), scratch.len());
            line += newlines + u64::from(c == b'\n');
            skip_lf = c == b'\r';
            start = i + 1;
            break;
        }
        if entries.len() >= GROUP {
            if let Err(fatal) = flush(text, spans, scratch, entries, on) {
                break 'parse Err(fatal);
            }
            kept = (0, 0);
        }
    };
    (pos.line, pos.skip_lf) = (line, skip_lf);
    // The records before the end (or the problem) still go on.
    spans.truncate(kept.0);
    scratch.truncate(kept.1);
    flush(text, spans, scratch, entries, on)?;
    result
}

/// Where parsed records go.
trait Handler {
    /// The next records and empty lines, in order.
    fn group(&mut self, group: &Group<'_>) -> Result<(), Fatal>;

    /// Every record in `buf[..done]` has been handed to [`Handler::group`]
    /// (and `buf[..done]` is UTF-8). Leave `buf[done..len]`, the start of the
    /// next record, at the start of `buf`, which may be a new buffer.
    fn consumed(&mut self, buf: &mut Vec<u8>, done: usize, len: usize) {
        buf.copy_within(done..len, 0);
    }
}

/// Records handed straight to a function, in this thread.
struct Direct<F>(F);

impl<F: FnMut(&Group<'_>) -> Result<(), Fatal>> Handler for Direct<F> {
    fn group(&mut self, group: &Group<'_>) -> Result<(), Fatal> {
        (self.0)(group)
    }
}

/// Read all of `input`, parsing it into records handed to `to`. Stops at
/// the first fatal problem (from the input, the parse, or `to`).
fn parse<R: Read>(
    input: &mut Guard<R>,
    needles: Needles,
    max_line: usize,
    to: &mut impl Handler,
) -> Result<(), Fatal> {
    let mut buf = vec![0u8; CHUNK];
    let max_line = max_line.min(MAX_RECORD);
    let max_buf = max_line + CHUNK + 1;
    let mut len = 0;
    let mut eof = false;
    let mut pos = Position {
        line: 1,
        skip_lf: false,
    };
    let mut work = Work::default();
    loop {
        while !eof && len < buf.len() {
            match input.read(&mut buf[len..]) {
                Ok(0) => eof = true,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    to.consumed(&mut buf, 0, 0);
                    return Err(Fatal::of(&e)
                        .cloned()
                        .unwrap_or_else(|| Fatal::new(ErrorKind::Io, format!("read error: {e}"))));
                }
            }
        }
        // At EOF a last record without a line end gets one.
        let mut end = len;
        if eof && len > 0 && !matches!(buf[len - 1], b'\n' | b'\r') {
            if buf.len() == len {
                buf.push(0);
            }
            buf[len] = b'\n';
            end = len + 1;
        }
        let (text, bad_utf8) = match std::str::from_utf8(&buf[..end]) {
            Ok(text) => (text, None),
            Err(e) => {
                let valid = e.valid_up_to();
                let bad = (e.error_len().is_some() || eof).then_some(valid);
                (std::str::from_utf8(&buf[..valid]).unwrap_or_default(), bad)
            }
        };
        let valid = text.len();
        let parsed = parse_region(text, needles, max_line, &mut pos, &mut work, &mut |group| {
            to.group(group)
        });
        let (done, open_quote) = match parsed {
            Ok(parsed) => parsed,
            Err(fatal) => {
                to.consumed(&mut buf, valid, valid);
                return Err(fatal);
            }
        };
        let fatal = if let Some(at) = bad_utf8 {
            let line = pos.line + memchr::memchr_iter(b'\n', &buf[done..at]).count() as u64;
            Some(Fatal::new(
                ErrorKind::InvalidUtf8,
                format!("invalid UTF-8 at line {line}"),
            ))
        } else if eof && done < end {
            let line = open_quote.unwrap_or(pos.line);
            Some(Fatal::new(
                ErrorKind::UnterminatedQuote,
                format!("unterminated quote: the quoted field opened on line {line} never closes"),
            ))
        } else if len.saturating_sub(done) > max_line {
            Some(too_long(pos.line, max_line))
        } else {
            None
        };
        // (At EOF `done` may include the line end added above.)
        to.consumed(&mut buf, done, len.max(done));
        if let Some(fatal) = fatal {
            return Err(fatal);
        }
        if eof {
            return Ok(());
        }
        len -= done;
        if len == buf.len() {
            let grown = (buf.len() * 2).min(max_buf).max(len + 1);
            buf.resize(grown, 0);
        }
    }
}

/// What the reading thread sends the checking one.
enum Msg {
    Batch(Batch),
    /// The end of the input, or why reading stopped.
    End(Result<(), Fatal>),
}

/// One buffer's records: `buf[..text_len]` is UTF-8, and `events` point
/// into it (and into `scratch`) through `spans`.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    text_len: usize,
    spans: Vec<Span>,
    scratch: String,
    /// Its records and empty lines, in order.
    entries: Vec<Entry>,
}

/// The reading side of the two-thread pipeline: collects each buffer's
/// records into a [`Batch`] and sends it on, with the buffer itself; the
/// checking side sends buffers back for reuse.
struct Shipper {
    batch: Batch,
    to: SyncSender<Msg>,
    spare: Receiver<Vec<u8>>,
    /// The checking thread is gone (it panicked): stop.
    closed: bool,
}

impl Handler for Shipper {
    fn group(&mut self, group: &Group<'_>) -> Result<(), Fatal> {
        let b = &mut self.batch;
        let first = b.spans.len() as u32;
        let base = b.scratch.len() as u32;
        b.spans.extend(group.spans.iter().map(|s| {
            if s.start & SCRATCH == 0 {
                *s
            } else {
                Span {
                    start: (s.start + base) | SCRATCH,
                    end: s.end + base,
                }
            }
        }));
        b.scratch.push_str(group.scratch);
        b.entries.extend(
            group
                .entries
                .iter()
                .map(|e| e.map(|(at, n)| (at + first, n))),
        );
        if self.closed {
            return Err(Fatal::new(ErrorKind::Io, "the checking thread stopped"));
        }
        Ok(())
    }

    fn consumed(&mut self, buf: &mut Vec<u8>, done: usize, len: usize) {
        if self.batch.entries.is_empty() {
            buf.copy_within(done..len, 0);
            return;
        }
        let mut next = self.spare.try_recv().unwrap_or_default();
        if next.len() < buf.len() {
            next.resize(buf.len(), 0);
        }
        next[..len - done].copy_from_slice(&buf[done..len]);
        self.batch.buf = std::mem::replace(buf, next);
        self.batch.text_len = done;
        let batch = std::mem::take(&mut self.batch);
        self.closed |= self.to.send(Msg::Batch(batch)).is_err();
    }
}

/// Parse on this thread and hand the records to `on` on another, through
/// a bounded queue of [`Batch`]es (memory stays at a few buffers).
fn parse_in_two_threads<R: Read>(
    input: &mut Guard<R>,
    needles: Needles,
    max_line: usize,
    on: impl FnMut(&Group<'_>) -> Result<(), Fatal> + Send,
) -> Result<(), Fatal> {
    let (to, batches) = sync_channel::<Msg>(QUEUED_BATCHES);
    let (give_back, spare) = channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let checker = scope.spawn(move || check_batches(batches, give_back, on));
        let mut shipper = Shipper {
            batch: Batch::default(),
            to,
            spare,
            closed: false,
        };
        let read = parse(input, needles, max_line, &mut shipper);
        let _ = shipper.to.send(Msg::End(read));
        drop(shipper);
        match checker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The checking side: hand every batch's records to `on`, in order, in
/// groups of [`GROUP`].
fn check_batches(
    batches: Receiver<Msg>,
    give_back: Sender<Vec<u8>>,
    mut on: impl FnMut(&Group<'_>) -> Result<(), Fatal>,
) -> Result<(), Fatal> {
    for msg in batches {
        let batch = match msg {
            Msg::Batch(batch) => batch,
            Msg::End(result) => return result,
        };
        let text = std::str::from_utf8(&batch.buf[..batch.text_len]).unwrap_or_default();
        for entries in batch.entries.chunks(GROUP) {
            on(&Group {
                text,
                scratch: &batch.scratch,
                spans: &batch.spans,
                entries,
            })?;
        }
        let _ = give_back.send(batch.buf);
    }
    Err(Fatal::new(ErrorKind::Io, "the reading thread stopped"))
}

/// Whether a header row that names no field looks like a data row instead.
fn looks_like_data(checker: &Checker, names: &[&str]) -> bool {
    names.iter().enumerate().any(|(i, name)| {
        name.is_empty()
            || name.trim().parse::<f64>().is_ok()
            || checker.fields.get(i).is_some_and(|f| {
                !matches!(f.field_type(), FieldType::String | FieldType::Any)
                    && f.cast(name).is_some()
            })
    })
}

/// Map header names to fields, reporting header problems. `Some(layout)`,
/// plus whether the header row is really data (a missing header).
fn map_header(checker: &Checker, names: &[&str], out: &mut Collector) -> (Layout, bool) {
    let n = checker.fields.len();
    let matched = names.iter().any(|name| checker.field_index(name).is_some());
    if !matched && looks_like_data(checker, names) {
        let preview: String = names.join(",").chars().take(60).collect();
        out.push(ErrorKind::MissingHeader, None, None, Some(&preview), || {
            format!(
                "header is missing: the first row ({preview:?}) names no schema field and looks like data"
            )
        });
        let layout = Layout::new((0..n).map(Some).collect(), n, "schema has");
        return (layout, true);
    }
    let mut field_col = vec![None; n];
    let mut seen = HashSet::with_capacity(names.len());
    for (col, &name) in names.iter().enumerate() {
        let shown = clip(name);
        if !seen.insert(name) {
            out.push(ErrorKind::DuplicateColumn, None, Some(name), None, || {
                format!(
                    "column {shown:?} appears more than once in the header (again as column {})",
                    col + 1
                )
            });
            continue;
        }
        match checker.field_index(name) {
            Some(fi) => field_col[fi] = Some(col),
            None => out.push(ErrorKind::ExtraColumn, None, Some(name), None, || {
                format!("column {shown:?} (column {}) is not in the schema", col + 1)
            }),
        }
    }
    for (f, col) in checker.fields.iter().zip(&field_col) {
        if col.is_none() {
            out.push(ErrorKind::MissingColumn, None, Some(&f.name), None, || {
                format!("field {:?} is missing from the header", f.name)
            });
        }
    }
    let layout = Layout::new(field_col, names.len(), "header has");
    (layout, false)
}

/// Check one data row. `screened`: [`Checker::screen`] passed it (the
/// layout is in order and the row has every cell).
#[inline]
fn check_record(
    rec: &Record<'_>,
    row: u64,
    layout: &Layout,
    screened: bool,
    checker: &mut Checker,
    out: &mut Collector,
) {
    let len = rec.len();
    if len != layout.width {
        out.push(ErrorKind::RaggedRow, Some(row), None, None, || {
            format!(
                "row {row} has {len} cells, {} {}",
                layout.width_from, layout.width
            )
        });
    }
    if (0..len).all(|i| checker.is_missing(rec.text(i).bytes())) {
        out.push(ErrorKind::BlankRow, Some(row), None, None, || {
            format!("row {row} is blank")
        });
        return;
    }
    if screened {
        checker.check_screened(row, |fi| Cell::Text(rec.text(fi)), out);
        return;
    }
    if layout.in_order && len == layout.width {
        // No mapping, and every field has its cell.
        checker.check_row(row, |fi| Cell::Text(rec.text(fi)), out);
        return;
    }
    checker.check_row(
        row,
        |fi| match layout.field_col[fi] {
            Some(col) if col < len => Cell::Text(rec.text(col)),
            _ => Cell::Skip,
        },
        out,
    );
}

/// Count `n` empty lines as blank rows (in bulk past the detailed ones).
fn blank_lines(n: u64, rows: &mut u64, out: &mut Collector) {
    let detailed = n.min(out.room() as u64);
    for _ in 0..detailed {
        *rows += 1;
        let row = *rows;
        out.push(ErrorKind::BlankRow, Some(row), None, None, || {
            format!("row {row} is blank (an empty line)")
        });
    }
    out.count_only(ErrorKind::BlankRow, n - detailed);
    *rows += n - detailed;
}

/// Why `dialect` cannot be parsed, if it cannot.
fn dialect_problem(dialect: &CsvDialect) -> Option<String> {
    let usable = |b: u8| b.is_ascii() && b != b'\n' && b != b'\r';
    (!usable(dialect.delimiter) || !usable(dialect.quote) || dialect.delimiter == dialect.quote)
        .then(|| {
            format!(
                "invalid CSV dialect: delimiter {:?} and quote {:?} must be two different \
                 ASCII characters other than CR and LF",
                char::from(dialect.delimiter),
                char::from(dialect.quote)
            )
        })
}

/// The rows side of a run: the header, then each group of records
/// screened (see [`Checker::screen`]) and checked in order.
struct Rows<'a> {
    /// Screen groups of rows (always, but in tests that compare).
    screening: bool,
    dialect: &'a CsvDialect,
    checker: &'a mut Checker,
    out: &'a mut Collector,
    /// Set by the header (or the first row without one).
    layout: Option<Layout>,
    /// Data rows so far.
    rows: u64,
    any_record: bool,
    /// Empty lines not yet counted: they are rows only once a record
    /// follows (or the file ends after one), and never before the header.
    empty_lines: u64,
    /// Whether each record of the current group passed screening.
    clean: Vec<bool>,
}

impl Rows<'_> {
    fn group(&mut self, g: &Group<'_>) {
        let screened = self.screen(g);
        // Screening left nothing to check in a clean row.
        let whole = screened && self.checker.screens_whole_rows();
        for (k, entry) in g.entries.iter().enumerate() {
            let Some(entry) = *entry else {
                if self.layout.is_some() || !self.dialect.header {
                    self.empty_lines += 1;
                }
                continue;
            };
            let clean = screened && self.clean[k];
            let rec = g.record(entry);
            // A clean row is blank only if its first cell is missing too.
            if clean
                && whole
                && self.empty_lines == 0
                && !self.checker.is_missing(rec.text(0).bytes())
            {
                self.rows += 1;
                continue;
            }
            self.record(&rec, clean);
        }
    }

    /// Screen the records of `g` (see [`Checker::screen`]) when the layout
    /// is known and in order and `g` holds only records that have every
    /// cell, one after the other: its spans are then a matrix, a row per
    /// record and a column per field. Whether it did (else no record of
    /// `g` is screened).
    fn screen(&mut self, g: &Group<'_>) -> bool {
        let Some(width) = self
            .layout
            .as_ref()
            .filter(|l| l.in_order && self.screening)
            .map(|l| l.width)
        else {
            return false;
        };
        let Some(Some((base, _))) = g.entries.first() else {
            return false;
        };
        let base = *base as usize;
        let regular = g.entries.iter().enumerate().all(|(k, e)| {
            e.is_some_and(|(first, n)| first as usize == base + k * width && n as usize == width)
        });
        let Some(matrix) = g.spans.get(base..base + g.entries.len() * width) else {
            return false;
        };
        if !regular {
            return false;
        }
        self.clean.clear();
        self.clean.resize(g.entries.len(), true);
        let text = g.text;
        let column = |fi: usize| {
            matrix
                .chunks_exact(width)
                .map(move |row| row.get(fi).and_then(|&s| plain_text(text, s)))
        };
        // The rows the group's records will be (empty lines before them
        // are counted first).
        let first_row = self.rows + self.empty_lines + 1;
        self.checker
            .screen(&mut self.clean, column, first_row, self.out);
        true
    }

    fn record(&mut self, rec: &Record<'_>, screened: bool) {
        self.any_record = true;
        if let Some(layout) = &self.layout {
            if self.empty_lines > 0 {
                blank_lines(
                    std::mem::take(&mut self.empty_lines),
                    &mut self.rows,
                    self.out,
                );
            }
            self.rows += 1;
            check_record(rec, self.rows, layout, screened, self.checker, self.out);
            return;
        }
        let new = if self.dialect.header {
            let names: Vec<&str> = (0..rec.len()).map(|i| rec.cell(i)).collect();
            let (new, header_is_data) = map_header(self.checker, &names, self.out);
            if header_is_data {
                self.rows += 1;
                check_record(rec, self.rows, &new, false, self.checker, self.out);
            }
            new
        } else {
            let n = self.checker.fields.len();
            let new = Layout::new((0..n).map(Some).collect(), n, "schema has");
            blank_lines(
                std::mem::take(&mut self.empty_lines),
                &mut self.rows,
                self.out,
            );
            self.rows += 1;
            check_record(rec, self.rows, &new, false, self.checker, self.out);
            new
        };
        self.layout = Some(new);
    }
}

/// Validate CSV from `guard`; returns (data rows, bytes).
pub(crate) fn run<R: Read>(
    guard: Guard<R>,
    dialect: &CsvDialect,
    max_line: usize,
    threads: usize,
    checker: &mut Checker,
    out: &mut Collector,
) -> (u64, u64) {
    run_screening(guard, dialect, max_line, threads, true, checker, out)
}

/// [`run`], screening groups of rows or not (the tests compare the two).
fn run_screening<R: Read>(
    mut guard: Guard<R>,
    dialect: &CsvDialect,
    max_line: usize,
    threads: usize,
    screening: bool,
    checker: &mut Checker,
    out: &mut Collector,
) -> (u64, u64) {
    if let Some(problem) = dialect_problem(dialect) {
        out.fatal(ErrorKind::InvalidDialect, None, problem);
        return (0, 0);
    }
    let needles = Needles {
        delimiter: dialect.delimiter,
        quote: dialect.quote,
    };
    let mut rows = Rows {
        screening,
        dialect,
        checker,
        out,
        layout: None,
        rows: 0,
        any_record: false,
        empty_lines: 0,
        clean: Vec::with_capacity(GROUP),
    };
    let on = |g: &Group<'_>| {
        rows.group(g);
        Ok(())
    };
    let result = if threads > 1 {
        parse_in_two_threads(&mut guard, needles, max_line, on)
    } else {
        parse(&mut guard, needles, max_line, &mut Direct(on))
    };
    let Rows {
        out,
        layout,
        mut rows,
        any_record,
        empty_lines,
        ..
    } = rows;
    match result {
        // Empty lines at the end (the final newline does not make one).
        Ok(()) if any_record => blank_lines(empty_lines, &mut rows, out),
        Ok(()) => {}
        Err(f) => {
            // A data record that is not UTF-8 was still read as a row.
            if f.kind == ErrorKind::InvalidUtf8 && (layout.is_some() || !dialect.header) {
                rows += 1;
            }
            out.fatal(f.kind, None, f.message);
        }
    }
    let bytes = Guard::bytes(&guard);
    if bytes == 0 {
        out.fatal(ErrorKind::EmptyFile, None, "empty file".into());
    } else if !any_record && !out.has_fatal() {
        let what = if dialect.header {
            "no header row"
        } else {
            "no rows"
        };
        out.fatal(ErrorKind::EmptyFile, None, format!("empty file: {what}"));
    }
    (rows, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SchemaCheck;
    use crate::reader::Syntax;
    use crate::{Compression, Limits};

    fn cells(e: Event<'_>) -> Vec<String> {
        match e {
            Event::EmptyLine => vec!["E".to_owned()],
            Event::Record(r) => (0..r.len()).map(|i| r.cell(i).to_owned()).collect(),
        }
    }

    /// Records of `data` (read 7 bytes at a time), as cells, with `E` for an empty line.
    fn records(data: &[u8], max_line: usize) -> (Vec<Vec<String>>, Option<Fatal>) {
        struct Slow<'a>(&'a [u8]);
        impl Read for Slow<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(7);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut guard = Guard::new(
            Slow(data),
            Compression::None,
            Syntax::Raw,
            &Limits::default(),
        );
        let needles = Needles {
            delimiter: b',',
            quote: b'"',
        };
        let mut single = Vec::new();
        let r = parse(
            &mut guard,
            needles,
            max_line,
            &mut Direct(|g: &Group<'_>| {
                single.extend(g.events().map(cells));
                Ok(())
            }),
        );
        // The two-thread pipeline hands on the same records and the same end.
        let mut guard = Guard::new(
            Slow(data),
            Compression::None,
            Syntax::Raw,
            &Limits::default(),
        );
        let mut got: Vec<Vec<String>> = Vec::new();
        let r2 = parse_in_two_threads(&mut guard, needles, max_line, |g: &Group<'_>| {
            got.extend(g.events().map(cells));
            Ok(())
        });
        assert_eq!(got, single);
        assert_eq!(r, r2);
        (got, r.err())
    }

    fn rows(data: &str) -> Vec<Vec<String>> {
        let (got, fatal) = records(data.as_bytes(), 1 << 20);
        assert_eq!(fatal, None, "{data:?}");
        got
    }

    fn v(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn fields_quotes_and_line_ends() {
        assert_eq!(rows("a,b\n1,2"), vec![v(&["a", "b"]), v(&["1", "2"])]);
        assert_eq!(
            rows("a,\"x\ny\"\"z\"\r\nb,\"\"\n,\n"),
            vec![v(&["a", "x\ny\"z"]), v(&["b", ""]), v(&["", ""])]
        );
        // A quote inside an unquoted field is literal; text after a closing quote is kept.
        assert_eq!(rows("a\"b,\"c\"d\"e\n"), vec![v(&["a\"b", "cd\"e"])]);
        assert_eq!(rows("\"a\"\"\"\n"), vec![v(&["a\""])]);
        assert_eq!(rows("x\ry\r\nz"), vec![v(&["x"]), v(&["y"]), v(&["z"])]);
        assert_eq!(rows("é,ü\n"), vec![v(&["é", "ü"])]);
    }

    #[test]
    fn empty_lines_are_reported_but_not_crlf_halves() {
        assert_eq!(
            rows("h\r\n\r\n1\n\n\n\"a\n\nb\"\n2\n\n"),
            vec![
                v(&["h"]),
                v(&["E"]),
                v(&["1"]),
                v(&["E"]),
                v(&["E"]),
                v(&["a\n\nb"]),
                v(&["2"]),
                v(&["E"])
            ]
        );
    }

    #[test]
    fn long_records_cross_buffer_fills() {
        let long = "x".repeat(CHUNK * 3 + 17);
        let data = format!("a,{long}\n\"{long}\",b\n");
        assert_eq!(rows(&data), vec![v(&["a", &long]), v(&[&long, "b"])]);
        let many: String = (0..100_000).map(|i| format!("{i},\"q{i}\"\r\n")).collect();
        let got = rows(&many);
        assert_eq!(got.len(), 100_000);
        assert_eq!(got[99_999], v(&["99999", "q99999"]));
    }

    #[test]
    fn hostile_records() {
        let (_, f) = records(b"a\n\"open\n\nmore", 1 << 20);
        let f = f.unwrap();
        assert_eq!(f.kind, ErrorKind::UnterminatedQuote);
        assert!(f.message.contains("line 2"), "{}", f.message);
        let (got, f) = records(b"0123456789\n01234567890\n", 10);
        assert_eq!(got.len(), 1);
        assert_eq!(f.unwrap().message, "line 2 is longer than 10 bytes");
        let (_, f) = records(b"\"01234\n56789\"\n", 10);
        assert_eq!(f.unwrap().kind, ErrorKind::LineTooLong);
        let (got, f) = records(b"a\n\"b\nc\xff\"\n", 100);
        assert_eq!(got.len(), 1);
        assert_eq!(f.unwrap().message, "invalid UTF-8 at line 3");
        // A character cut by a buffer fill is not an error; one cut by EOF is.
        let (_, f) = records("é".repeat(CHUNK).as_bytes(), 4 * CHUNK);
        assert_eq!(f, None);
        let (_, f) = records(b"ok\n\xc3", 100);
        assert_eq!(f.unwrap().kind, ErrorKind::InvalidUtf8);
    }

    /// Random documents of multi-byte characters, quotes and line ends parse
    /// as the `csv` crate parses them (empty lines aside, which it skips), and
    /// every cell is sliced at character boundaries (`Record::text` asserts
    /// it in debug builds).
    #[test]
    fn random_documents_parse_as_the_csv_crate_does() {
        let pieces = [
            "a", "é", "€x", ",", "\"", "\"\"", "\n", "\r\n", "\r", "😀", "b,c",
        ];
        let mut x: u32 = 99;
        let mut compared = 0;
        for _ in 0..2000 {
            let mut doc = String::new();
            for _ in 0..(x >> 20) % 40 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                doc.push_str(pieces[(x >> 16) as usize % pieces.len()]);
            }
            let (ours, fatal) = records(doc.as_bytes(), 1 << 20);
            if fatal.is_some() {
                // An unterminated quote: `csv` reads it to the end instead.
                continue;
            }
            let ours: Vec<Vec<String>> = ours.into_iter().filter(|r| r != &["E"]).collect();
            let theirs: Vec<Vec<String>> = ::csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(doc.as_bytes())
                .records()
                .map(|r| r.unwrap().iter().map(str::to_owned).collect())
                .collect();
            assert_eq!(ours, theirs, "{doc:?}");
            compared += 1;
        }
        assert!(compared > 500, "{compared}");
    }

    /// A file of a few thousand rows (many groups) with every kind of
    /// problem here and there: screened or not, on one thread or two, the
    /// report is the same, every error in detail and in order. Under
    /// several uniqueness set-ups: two `unique` fields and a two-field key
    /// (no screened key), one `unique` field alone, with a primary key on
    /// it, a one-field primary key alone, and a budget that runs out.
    #[test]
    fn screening_changes_no_report() {
        let fields = |id: &str, code: &str| {
            format!(
                r#"[
                {{"name": "id", "type": "integer", "constraints": {{{id}}}}},
                {{"name": "name", "type": "string", "constraints": {{"required": true, "maxLength": 6, "pattern": "[a-z]+"}}}},
                {{"name": "kind", "type": "string", "constraints": {{"enum": ["a", "bb", "ccc"]}}}},
                {{"name": "n", "type": "number", "constraints": {{"minimum": 0, "maximum": 100}}}},
                {{"name": "k", "type": "integer", "constraints": {{"minimum": -5}}}},
                {{"name": "d", "type": "date", "constraints": {{"maximum": "2030-01-01"}}}},
                {{"name": "t", "type": "datetime"}},
                {{"name": "b", "type": "boolean"}},
                {{"name": "y", "type": "year", "constraints": {{"minimum": 1900}}}},
                {{"name": "h", "type": "time"}},
                {{"name": "e", "type": "string", "format": "email"}},
                {{"name": "code", "type": "string", "constraints": {{{code}}}}}
              ]"#
            )
        };
        let unique = r#""unique": true"#;
        let setups = [
            (
                fields(unique, unique),
                r#""primaryKey": ["k", "y"],"#,
                1_000_000,
            ),
            (fields(unique, ""), "", 1_000_000),
            (fields(unique, ""), r#""primaryKey": "id","#, 1_000_000),
            (fields("", ""), r#""primaryKey": "id","#, 1_000_000),
            (fields("", unique), "", 1_000_000),
            (fields(unique, ""), r#""primaryKey": "id","#, 1000),
        ];
        let good = [
            "7",
            "abc",
            "bb",
            "12.5",
            "3",
            "2020-02-29",
            "2020-01-01T10:00:00Z",
            "true",
            "1999",
            "10:11:12",
            "a@b.co",
            "x",
        ];
        let bad = [
            "7x",
            "ABC",
            "dd",
            "101",
            "-6",
            "2031-01-01",
            "2020-01-01 10:00",
            "yes",
            "1800",
            "25:00:00",
            "nobody",
            "",
        ];
        let mut x: u32 = 5;
        let mut next = |n: u32| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) % n
        };
        let mut doc = String::from("id,name,kind,n,k,d,t,b,y,h,e,code\n");
        for row in 0..3000 {
            match next(400) {
                0 => doc.push('\n'),
                1 => doc.push_str("1,2\n"),
                2 => doc.push_str(",,,,,,,,,,,\n"),
                _ => {}
            }
            // Mostly clean stretches, some rows with a problem.
            let odds = if (row / 300) % 2 == 0 { 60 } else { 3000 };
            let cells: Vec<String> = (0..12)
                .map(|i| match (i, next(odds)) {
                    (0, 0) => "5".to_owned(),
                    (0, 1) => "NA".to_owned(),
                    (0, 2) => "x".to_owned(),
                    (0, 3) => (row - 1).to_string(),
                    (0, _) => row.to_string(),
                    (4 | 8, 0) => bad[i].to_owned(),
                    (4, v) => (v % 60).to_string(),
                    (8, v) => (1990 + v % 60).to_string(),
                    (11, 0) => "dup".to_owned(),
                    (11, _) => format!("c{row}"),
                    (_, 0) => bad[i].to_owned(),
                    (_, 1) => "NA".to_owned(),
                    (_, 2) => format!("\"{}\"", good[i]),
                    (1, 3) => "\"a\"\"b\"".to_owned(),
                    (1, 4) => "abcdefgh".to_owned(),
                    _ => good[i].to_owned(),
                })
                .collect();
            doc.push_str(&cells.join(","));
            doc.push_str(if row % 7 == 0 { "\r\n" } else { "\n" });
        }
        for (fields, key, max_unique) in setups {
            let schema = crate::TableSchema::from_json(&format!(
                r#"{{"fields": {fields}, {key} "missingValues": ["", "NA", "n/a"]}}"#
            ))
            .unwrap();
            let limits = Limits {
                max_errors_kept: 1_000_000,
                max_unique_tracked: max_unique,
                ..Limits::default()
            };
            let report = |threads: usize, screening: bool| {
                let mut checker = Checker::new(&schema, limits.max_unique_tracked).unwrap();
                let mut out = Collector::new(limits.max_errors_kept);
                let guard = Guard::new(doc.as_bytes(), Compression::None, Syntax::Raw, &limits);
                let dialect = CsvDialect::default();
                let (rows, bytes) = run_screening(
                    guard,
                    &dialect,
                    limits.max_line_bytes,
                    threads,
                    screening,
                    &mut checker,
                    &mut out,
                );
                out.finish(rows, bytes)
            };
            let plain = report(1, false);
            assert!(plain.errors.len() > 300, "{}", plain.summary());
            let mut kinds = vec![
                ErrorKind::TypeError,
                ErrorKind::Required,
                ErrorKind::Enum,
                ErrorKind::Pattern,
                ErrorKind::Minimum,
                ErrorKind::Maximum,
                ErrorKind::MaxLength,
                ErrorKind::RaggedRow,
                ErrorKind::BlankRow,
            ];
            kinds.push(if key.is_empty() {
                ErrorKind::Unique
            } else {
                ErrorKind::PrimaryKey
            });
            for kind in kinds {
                assert!(plain.count(kind) > 0, "{kind:?}: {}", plain.summary());
            }
            assert_eq!(plain.notes.is_empty(), max_unique > 100_000);
            for threads in [1, 2] {
                let got = report(threads, true);
                if got != plain {
                    let at = got
                        .errors
                        .iter()
                        .zip(&plain.errors)
                        .position(|(a, b)| a != b);
                    panic!(
                        "{fields} {key} {max_unique}, {threads} thread(s): {} instead of {}; \
                         first different error: {:?} instead of {:?}; notes {:?} instead of {:?}",
                        got.summary(),
                        plain.summary(),
                        at.map(|i| &got.errors[i]),
                        at.map(|i| &plain.errors[i]),
                        got.notes,
                        plain.notes,
                    );
                }
            }
        }
    }

    #[test]
    fn masks_match_a_byte_loop() {
        let mut x: u32 = 7;
        let hay: Vec<u8> = (0..4096)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                b"abc,;\"'\n\r\x80\xff\0"[(x >> 16) as usize % 12]
            })
            .collect();
        for n in [
            Needles {
                delimiter: b',',
                quote: b'"',
            },
            Needles {
                delimiter: b';',
                quote: b'\'',
            },
        ] {
            for start in 0..hay.len() - 64 {
                let block: &[u8; 64] = hay[start..start + 64].try_into().unwrap();
                let want = block.iter().enumerate().fold(0u64, |m, (i, &b)| {
                    let hit = b == n.delimiter || b == n.quote || b == b'\n' || b == b'\r';
                    m | u64::from(hit) << i
                });
                assert_eq!(block_mask(block, n), want);
                assert_eq!(block_mask_swar(block, n), want);
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 was just detected.
                    assert_eq!(unsafe { block_mask_avx2(block, n) }, want);
                }
            }
            // The whole-buffer bitmap, whatever the length of its last block.
            for len in [0, 1, 63, 64, 65, 127, 128, 1000, hay.len()] {
                let mut masks = Vec::new();
                structural_masks(&hay[..len], n, &mut masks);
                assert_eq!(masks.len(), len.div_ceil(64));
                let mut scan = Scan::new(&masks);
                let got: Vec<usize> = std::iter::from_fn(|| scan.next()).collect();
                let want: Vec<usize> = (0..len)
                    .filter(|&i| {
                        let b = hay[i];
                        b == n.delimiter || b == n.quote || b == b'\n' || b == b'\r'
                    })
                    .collect();
                assert_eq!(got, want, "length {len}");
            }
        }
    }
}
