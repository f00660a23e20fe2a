//! Flat memory: validating a large stream must not grow the process's
//! resident memory by more than 32 MB, whatever its size.
//!
//! The input is generated row by row as it is read (nothing is written to
//! disk or held): 1 GB in an optimized build (`cargo test --release`), 200 MB
//! in a debug build so that it stays well under a minute. Its schema has a
//! unique string column whose values are all distinct and a composite
//! primary key, so uniqueness tracking fills its table to the default bound
//! (`Limits::max_unique_tracked`, 16 MiB of slots) and then stops, which is
//! the most memory validation can use.
//!
//! The peak is measured from `/proc/self/status`: `VmRSS` before, `VmHWM`
//! (the high-water mark, reset first through `/proc/self/clear_refs`) after.
//! This is the only test in this binary, so no other test allocates meanwhile.

use choreo_validation::SchemaCheck;
use std::io::{self, Read, Write};

use choreo_validation::{Compression, CsvDialect, Format, Limits, TableSchema, validate};

const LIMIT_MB: u64 = 32;

const SCHEMA: &str = r#"{"fields":[
    {"name":"id","type":"integer","constraints":{"required":true,"unique":true}},
    {"name":"key","type":"string","constraints":{"unique":true,"pattern":"[0-9a-f]{16}"}},
    {"name":"amount","type":"number","constraints":{"minimum":0}},
    {"name":"day","type":"date"},
    {"name":"at","type":"datetime"},
    {"name":"ok","type":"boolean"},
    {"name":"country","constraints":{"enum":["US","GB","DE","FR"]}},
    {"name":"note","constraints":{"maxLength":40}}
  ],
  "primaryKey":["id","key"]}"#;

/// Rows made as they are read, `total` bytes in all.
struct Rows {
    total: u64,
    produced: u64,
    row: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Rows {
    fn new(total: u64) -> Self {
        let header = b"id,key,amount,day,at,ok,country,note\n".to_vec();
        Rows {
            total,
            produced: header.len() as u64,
            row: 0,
            buf: header,
            pos: 0,
        }
    }

    fn refill(&mut self) {
        self.buf.clear();
        self.pos = 0;
        while self.buf.len() < 64 * 1024 && self.produced < self.total {
            self.row += 1;
            let i = self.row;
            // A bijection of i: distinct keys, in no order.
            let key = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
            let start = self.buf.len();
            let _ = writeln!(
                self.buf,
                "{i},{key:016x},{}.{:02},2024-{:02}-{:02},2024-01-02T03:04:{:02}Z,{},{},\"row {i}, quoted\"",
                i % 10_000,
                i % 100,
                i % 12 + 1,
                i % 28 + 1,
                i % 60,
                i.is_multiple_of(2),
                ["US", "GB", "DE", "FR"][(i % 4) as usize],
            );
            self.produced += (self.buf.len() - start) as u64;
        }
    }
}

impl Read for Rows {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.refill();
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

#[test]
fn a_large_stream_validates_in_flat_memory() {
    let total: u64 = if cfg!(debug_assertions) {
        200_000_000
    } else {
        1_000_000_000
    };
    let schema = TableSchema::from_json(SCHEMA).unwrap();
    // Two threads: the most buffers in flight (one thread holds fewer).
    let limits = Limits {
        threads: 2,
        ..Limits::default()
    };
    let format = Format::Csv(CsvDialect::default());
    // Warm up (first-use allocations of the allocator, regex, etc.).
    let warm = validate(
        Rows::new(100_000),
        &format,
        Compression::None,
        &schema,
        &limits,
    );
    assert!(warm.valid, "{}", warm.summary());

    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status_kb("VmRSS:");
    let peak_before = status_kb("VmHWM:");
    let start = std::time::Instant::now();
    let report = validate(
        Rows::new(total),
        &format,
        Compression::None,
        &schema,
        &limits,
    );
    let secs = start.elapsed().as_secs_f64();
    let peak = status_kb("VmHWM:");
    // Without the reset the high-water mark may predate this run: then only
    // growth beyond it is seen, which still bounds what this run added.
    let base = if reset {
        before
    } else {
        before.max(peak_before)
    };
    let growth_mb = peak.saturating_sub(base) as f64 / 1024.0;
    println!(
        "{:.0} MB, {} rows in {secs:.1} s ({:.0} MB/s): RSS {:.1} MB before, peak {:.1} MB, \
         growth {growth_mb:.1} MB (limit {LIMIT_MB} MB; peak reset: {reset}); {}; notes: {:?}",
        report.bytes as f64 / 1e6,
        report.rows,
        report.bytes as f64 / 1e6 / secs,
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        report.summary(),
        report.notes
    );
    assert!(report.valid, "{}", report.summary());
    assert!(report.bytes >= total, "read it all: {}", report.bytes);
    assert_eq!(report.notes.len(), 1, "uniqueness tracking hit its bound");
    assert!(
        growth_mb < LIMIT_MB as f64,
        "resident memory grew by {growth_mb:.1} MB validating {total} bytes"
    );
}
