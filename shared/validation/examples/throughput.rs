//! Throughput sanity check (not a test): validates synthetic CSV and JSON
//! Lines generated on the fly and prints MB/s. Run it optimized:
//! `cargo run --release -p choreo-validation --example throughput [MB]`.

use choreo_validation::SchemaCheck;
use std::io::{self, Read};
use std::time::Instant;

use choreo_validation::{Compression, CsvDialect, Format, Limits, TableSchema, validate};

/// Endless rows from `make_row`, up to `total` bytes, made as they are read.
struct Synthetic<F> {
    make_row: F,
    total: usize,
    produced: usize,
    row: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl<F: FnMut(u64, &mut Vec<u8>)> Read for Synthetic<F> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.produced >= self.total {
                return Ok(0);
            }
            self.buf.clear();
            self.pos = 0;
            while self.buf.len() < 64 * 1024 {
                self.row += 1;
                (self.make_row)(self.row, &mut self.buf);
            }
            self.produced += self.buf.len();
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn synthetic<F: FnMut(u64, &mut Vec<u8>)>(header: &str, total: usize, make_row: F) -> Synthetic<F> {
    Synthetic {
        make_row,
        total,
        produced: header.len(),
        row: 0,
        buf: header.as_bytes().to_vec(),
        pos: 0,
    }
}

fn run(label: &str, input: impl Read, format: &Format, schema: &TableSchema) {
    let start = Instant::now();
    let report = validate(input, format, Compression::None, schema, &Limits::default());
    let secs = start.elapsed().as_secs_f64();
    let mb = report.bytes as f64 / 1e6;
    println!(
        "{label:<28} {mb:8.1} MB {:>10} rows {secs:6.2} s {:8.1} MB/s  {}",
        report.rows,
        mb / secs,
        report.summary()
    );
}

fn main() {
    let mb: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let total = mb * 1_000_000;
    let schema = TableSchema::from_json(
        r#"{"fields":[
            {"name":"id","type":"integer","constraints":{"required":true}},
            {"name":"name","type":"string","constraints":{"maxLength":40}},
            {"name":"score","type":"number","constraints":{"minimum":0}},
            {"name":"day","type":"date"},
            {"name":"at","type":"datetime"},
            {"name":"ok","type":"boolean"}
        ]}"#,
    )
    .unwrap();
    let csv_row = |i: u64, buf: &mut Vec<u8>| {
        use std::io::Write;
        writeln!(
            buf,
            "{i},\"customer number {i}\",{}.{:02},2024-{:02}-{:02},2024-01-02T03:04:{:02}Z,{}",
            i % 1000,
            i % 100,
            i % 12 + 1,
            i % 28 + 1,
            i % 60,
            i.is_multiple_of(2)
        )
        .unwrap();
    };
    let header = "id,name,score,day,at,ok\n";
    let start = Instant::now();
    let n = io::copy(&mut synthetic(header, total, csv_row), &mut io::sink()).unwrap();
    println!(
        "{:<28} {:8.1} MB {:6.2} s (generating the input alone)",
        "baseline",
        n as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let mut rdr = ::csv::ReaderBuilder::new().from_reader(synthetic(header, total, csv_row));
    let mut rec = ::csv::ByteRecord::new();
    while rdr.read_byte_record(&mut rec).unwrap() {}
    println!(
        "{:<28} {:6.2} s (generating + csv crate parsing)",
        "csv crate",
        start.elapsed().as_secs_f64()
    );
    let csv = Format::Csv(CsvDialect::default());
    run("csv", synthetic(header, total, csv_row), &csv, &schema);

    let mut keyed = schema.clone();
    keyed.primary_key = Some(choreo_validation::PrimaryKey::One("id".into()));
    run(
        "csv + primaryKey",
        synthetic(header, total, csv_row),
        &csv,
        &keyed,
    );

    let json_row = |i: u64, buf: &mut Vec<u8>| {
        use std::io::Write;
        writeln!(
            buf,
            r#"{{"id":{i},"name":"customer number {i}","score":{}.5,"day":"2024-01-{:02}","at":"2024-01-02T03:04:05Z","ok":true}}"#,
            i % 1000,
            i % 28 + 1
        )
        .unwrap();
    };
    run(
        "jsonl",
        synthetic("", total, json_row),
        &Format::JsonLines,
        &schema,
    );
}
