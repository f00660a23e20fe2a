//! The byte layer under both parsers: [`Guard`] turns the caller's reader
//! (plain, gzip or zstd) into a stream of decompressed, BOM-stripped bytes,
//! and stops it with a [`Fatal`] error as soon as the input turns hostile:
//! a decompression bomb (too many bytes, too high a ratio, or a zstd frame
//! asking for a window over [`ZSTD_MAX_WINDOW_LOG`]), a corrupt or truncated
//! stream, or (for JSON Lines) a line longer than `max_line_bytes`.
//!
//! Bounding the line length here is what keeps memory flat for JSON Lines:
//! `read_until` would otherwise buffer an arbitrarily long line. The CSV
//! parser bounds its records itself (it tracks quoting anyway).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::bufread::MultiGzDecoder;

use crate::report::ErrorKind;
use crate::{Compression, Limits};

/// Expanded bytes allowed before the compression-ratio check starts.
pub const RATIO_GRACE_BYTES: u64 = 10 * 1024 * 1024;

/// Largest zstd window accepted, as a power of two: 2^23 = 8 MiB, what
/// `zstd` levels 1 to 19 use at most. Frames made with `--long` or
/// `--ultra` ask for more and are refused as a decompression bomb, since the
/// decoder would have to hold the whole window in memory.
pub const ZSTD_MAX_WINDOW_LOG: u32 = 23;

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
    // Shared with the guard; atomic only so that a guard can be sent to another thread.
    consumed: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: Read> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        self.consumed.fetch_add(amt as u64, Ordering::Relaxed);
    }
}

enum Source<R> {
    Plain(Tagged<R>),
    Gzip(Box<MultiGzDecoder<Counting<R>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, Counting<R>>>),
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
            Source::Zstd(d) => d.read(buf),
            Source::Empty => Ok(0),
            Source::Failed(e) => Err(e.take().unwrap_or_else(|| io::Error::other("read error"))),
        }
    }
}

/// What the guard needs to know about the syntax to find record ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// Records end at `\n` (JSON Lines): the guard bounds their length.
    Lines,
    /// The parser bounds its records itself (CSV).
    Raw,
}

/// See the module docs.
pub(crate) struct Guard<R> {
    src: Source<R>,
    compression: Compression,
    compressed: Option<Arc<AtomicU64>>,
    max_line: usize,
    max_expanded: u64,
    max_ratio: u64,
    bytes: u64,
    bom_checked: bool,
    pending: [u8; 3],
    pending_len: usize,
    pending_pos: usize,
    syntax: Syntax,
    /// Current line (1-based), where the current one began, and its length so far.
    line: u64,
    record_line: u64,
    record_len: usize,
    failed: Option<Fatal>,
}

impl<R: Read> Guard<R> {
    pub(crate) fn new(input: R, compression: Compression, syntax: Syntax, limits: &Limits) -> Self {
        let (src, compressed) = match compression {
            Compression::None => (Source::Plain(Tagged(input)), None),
            Compression::Gzip | Compression::Zstd => {
                let consumed = Arc::new(AtomicU64::new(0));
                let mut counting = Counting {
                    inner: BufReader::with_capacity(COMPRESSED_BUFFER, Tagged(input)),
                    consumed: consumed.clone(),
                };
                let src = match counting.fill_buf() {
                    Ok([]) => Source::Empty,
                    Ok(_) if compression == Compression::Gzip => {
                        Source::Gzip(Box::new(MultiGzDecoder::new(counting)))
                    }
                    Ok(_) => match zstd::stream::read::Decoder::with_buffer(counting) {
                        Ok(mut d) => match d.window_log_max(ZSTD_MAX_WINDOW_LOG) {
                            Ok(()) => Source::Zstd(Box::new(d)),
                            Err(e) => Source::Failed(Some(e)),
                        },
                        Err(e) => Source::Failed(Some(e)),
                    },
                    Err(e) => Source::Failed(Some(e)),
                };
                (src, Some(consumed))
            }
        };
        Guard {
            src,
            compression,
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
            line: 1,
            record_line: 1,
            record_len: 0,
            failed: None,
        }
    }

    /// Bytes read after decompression (a stripped BOM included).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
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
                let fatal = match (Fatal::of(&e), self.compression) {
                    (Some(f), _) => f.clone(),
                    (None, Compression::Gzip) => Fatal::new(
                        ErrorKind::CorruptCompression,
                        format!("corrupt gzip stream: {e}"),
                    ),
                    (None, Compression::Zstd) if e.to_string().contains("too much memory") => {
                        Fatal::new(
                            ErrorKind::DecompressionBomb,
                            format!(
                                "decompression bomb: a zstd frame needs a window over {} MiB \
                                 ({e}; made with --long or --ultra?)",
                                (1u64 << ZSTD_MAX_WINDOW_LOG) >> 20
                            ),
                        )
                    }
                    (None, Compression::Zstd) => Fatal::new(
                        ErrorKind::CorruptCompression,
                        format!("corrupt zstd stream: {e}"),
                    ),
                    (None, Compression::None) => {
                        Fatal::new(ErrorKind::Io, format!("read error: {e}"))
                    }
                };
                return Err(self.fail(fatal));
            }
        };
        self.bytes += n as u64;
        if let Some(compressed) = &self.compressed {
            let compressed = compressed.load(Ordering::Relaxed).max(1);
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

    /// Track lines through `chunk`; fail on an over-long one.
    fn scan(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.syntax == Syntax::Raw {
            return Ok(());
        }
        let max = self.max_line;
        let mut rest = chunk;
        let mut too_long = false;
        while !rest.is_empty() {
            if self.record_len == 0 {
                self.record_line = self.line;
            }
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    if self.record_len + i > max {
                        too_long = true;
                        break;
                    }
                    self.record_len = 0;
                    self.line += 1;
                    rest = &rest[i + 1..];
                }
                None => {
                    self.record_len += rest.len();
                    too_long = self.record_len > max;
                    break;
                }
            }
        }
        if too_long {
            let msg = format!("line {} is longer than {max} bytes", self.record_line);
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
        self.scan(&buf[..n])?;
        Ok(n)
    }
}

/// The guard for readers other than [`crate::validate`] (the built-in transform, the local
/// crawler): `input` decompressed and BOM-stripped under the same bounds, so whatever reads an
/// object stops a decompression bomb as the validator does. An error's message says why
/// (`decompression bomb: ...`, `corrupt gzip stream: ...`, `line N is longer than ...`).
pub struct Decoded<R>(Guard<R>);

impl<R: Read> Decoded<R> {
    /// For CSV, whose parser bounds its own records.
    pub fn new(input: R, compression: Compression, limits: &Limits) -> Self {
        Decoded(Guard::new(input, compression, Syntax::Raw, limits))
    }

    /// For JSON Lines: a line longer than [`Limits::max_line_bytes`] is an error too.
    pub fn lines(input: R, compression: Compression, limits: &Limits) -> Self {
        Decoded(Guard::new(input, compression, Syntax::Lines, limits))
    }
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
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

    #[test]
    fn strips_bom_only_at_start() {
        let (out, f) = read_all(
            b"\xEF\xBB\xBFa,b\n\xEF\xBB\xBF",
            Syntax::Raw,
            &Limits::default(),
        );
        assert_eq!(f, None);
        assert_eq!(out, b"a,b\n\xEF\xBB\xBF");
        let (out, _) = read_all(b"\xEF\xBB", Syntax::Raw, &Limits::default());
        assert_eq!(out, b"\xEF\xBB");
    }

    #[test]
    fn line_length_is_bounded() {
        let limits = Limits {
            max_line_bytes: 10,
            ..Limits::default()
        };
        let (_, f) = read_all(b"0123456789\n0123456789\n", Syntax::Lines, &limits);
        assert_eq!(f, None);
        let (_, f) = read_all(b"ok\n0123456789012", Syntax::Lines, &limits);
        assert_eq!(f.unwrap().message, "line 2 is longer than 10 bytes");
        let (_, f) = read_all(b"ok\n01234567890\n", Syntax::Lines, &limits);
        assert_eq!(f.unwrap().kind, ErrorKind::LineTooLong);
        let (_, f) = read_all(b"0123456789012\n", Syntax::Raw, &limits);
        assert_eq!(f, None, "raw bytes are bounded by the parser");
    }
}
