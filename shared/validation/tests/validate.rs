//! End-to-end tests of `validate` on small inputs made in the test.

use choreo_validation::SchemaCheck;
use std::io::{self, Read, Write};

use choreo_validation::{
    Compression, CsvDialect, ErrorKind, Format, Limits, Report, TableSchema, validate,
};
use flate2::write::GzEncoder;

fn schema(json: &str) -> TableSchema {
    TableSchema::from_json(json).expect("test schema")
}

fn csv_with(data: &[u8], schema: &TableSchema, dialect: CsvDialect, limits: &Limits) -> Report {
    // Every CSV test runs both ways: one thread, and the two-thread pipeline.
    let run = |threads| {
        let limits = Limits { threads, ..*limits };
        validate(
            data,
            &Format::Csv(dialect),
            Compression::None,
            schema,
            &limits,
        )
    };
    let one = run(1);
    assert_eq!(one, run(2), "one thread and two threads disagree");
    one
}

fn csv(data: &str, schema: &TableSchema) -> Report {
    csv_with(
        data.as_bytes(),
        schema,
        CsvDialect::default(),
        &Limits::default(),
    )
}

fn jsonl(data: &str, schema: &TableSchema) -> Report {
    validate(
        data.as_bytes(),
        &Format::JsonLines,
        Compression::None,
        schema,
        &Limits::default(),
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The error kinds reported, in order, with their rows.
fn kinds(r: &Report) -> Vec<(ErrorKind, Option<u64>)> {
    r.errors.iter().map(|e| (e.kind, e.row)).collect()
}

fn assert_valid(r: &Report) {
    assert!(r.valid, "expected valid, got {r:#?}");
    assert!(r.errors.is_empty() && r.fatal.is_none() && r.error_counts.is_empty());
}

fn assert_fatal(r: &Report, kind: ErrorKind, contains: &str) {
    assert!(!r.valid);
    let fatal = r
        .fatal
        .as_deref()
        .unwrap_or_else(|| panic!("no fatal in {r:#?}"));
    assert!(
        fatal.contains(contains),
        "fatal {fatal:?} lacks {contains:?}"
    );
    assert_eq!(r.count(kind), 1, "{r:#?}");
}

fn people() -> TableSchema {
    schema(
        r#"{"fields":[
            {"name":"id","type":"integer"},
            {"name":"name","type":"string"},
            {"name":"born","type":"date"}
        ]}"#,
    )
}

// ---------------------------------------------------------------- structure

#[test]
fn valid_csv() {
    let data = "id,name,born\n1,Ada,1815-12-10\n2,\"Grace, H\",1906-12-09\n";
    let r = csv(data, &people());
    assert_valid(&r);
    assert_eq!(r.rows, 2);
    assert_eq!(r.bytes, data.len() as u64);
    assert_eq!(r.summary(), "valid: 2 rows");
}

#[test]
fn quoted_newlines_and_crlf_are_fine() {
    let r = csv(
        "id,name,born\r\n1,\"Ada\r\nLovelace\",1815-12-10\r\n",
        &people(),
    );
    assert_valid(&r);
    assert_eq!(r.rows, 1);
}

#[test]
fn reordered_columns() {
    let r = csv("born,id,name\n1815-12-10,1,Ada\n", &people());
    assert_valid(&r);
    let r = csv("born,id,name\n1,1815-12-10,Ada\n", &people());
    assert_eq!(
        kinds(&r),
        vec![
            (ErrorKind::TypeError, Some(1)),
            (ErrorKind::TypeError, Some(1))
        ]
    );
}

#[test]
fn missing_column() {
    let r = csv("id,name\n1,Ada\n", &people());
    assert!(!r.valid);
    assert_eq!(kinds(&r), vec![(ErrorKind::MissingColumn, None)]);
    assert_eq!(r.errors[0].field.as_deref(), Some("born"));
    assert_eq!(
        r.summary(),
        "invalid: missing_column: field \"born\" is missing from the header"
    );
}

#[test]
fn extra_column() {
    let r = csv("id,name,born,shoe\n1,Ada,1815-12-10,7\n", &people());
    assert_eq!(kinds(&r), vec![(ErrorKind::ExtraColumn, None)]);
    assert_eq!(r.errors[0].field.as_deref(), Some("shoe"));
    assert_eq!(r.rows, 1);
}

#[test]
fn duplicate_column() {
    let r = csv("id,name,born,id\n1,Ada,1815-12-10,x\n", &people());
    assert_eq!(kinds(&r), vec![(ErrorKind::DuplicateColumn, None)]);
    assert_eq!(r.errors[0].field.as_deref(), Some("id"));
}

#[test]
fn missing_header() {
    let r = csv("1,Ada,1815-12-10\n2,Bob,1900-01-01\n", &people());
    assert_eq!(kinds(&r), vec![(ErrorKind::MissingHeader, None)]);
    assert!(r.errors[0].message.starts_with("header is missing"));
    assert_eq!(r.rows, 2, "the first row is validated as data");
    // A header of unknown words is not mistaken for data.
    let r = csv("a,b,c\n1,Ada,1815-12-10\n", &people());
    assert_eq!(r.count(ErrorKind::MissingHeader), 0);
    assert_eq!(r.count(ErrorKind::MissingColumn), 3);
    assert_eq!(r.count(ErrorKind::ExtraColumn), 3);
}

#[test]
fn ragged_row() {
    let s =
        schema(r#"{"fields":[{"name":"a"},{"name":"b"},{"name":"c"},{"name":"d"},{"name":"e"}]}"#);
    let r = csv(
        "a,b,c,d,e\n1,2,3,4,5\n1,2,3,4,5\n1,2,3,4,5\n1,2,3\n1,2,3,4,5,6\n",
        &s,
    );
    assert_eq!(
        kinds(&r),
        vec![
            (ErrorKind::RaggedRow, Some(4)),
            (ErrorKind::RaggedRow, Some(5))
        ]
    );
    assert_eq!(r.errors[0].message, "row 4 has 3 cells, header has 5");
    assert_eq!(
        r.summary(),
        "invalid: ragged_row: row 4 has 3 cells, header has 5 (and 1 more error)"
    );
    assert_eq!(r.rows, 5);
}

#[test]
fn blank_row() {
    let r = csv(
        "id,name,born\n1,Ada,1815-12-10\n,,\n2,Bob,1900-01-01\n",
        &people(),
    );
    assert_eq!(kinds(&r), vec![(ErrorKind::BlankRow, Some(2))]);
    assert_eq!(r.rows, 3);
    // Empty lines are blank rows too (the csv crate would skip them silently),
    // but newlines inside quotes and the final newline are not.
    let r = csv(
        "id,name,born\n1,\"A\n\nda\",1815-12-10\n\n2,Bob,1900-01-01\n\n\n",
        &people(),
    );
    assert_eq!(
        kinds(&r),
        vec![
            (ErrorKind::BlankRow, Some(2)),
            (ErrorKind::BlankRow, Some(4)),
            (ErrorKind::BlankRow, Some(5))
        ]
    );
    assert_eq!(r.rows, 5);
    let many = format!("id,name,born\n{}1,Ada,1815-12-10\n", "\n".repeat(50));
    let r = csv(&many, &people());
    assert_eq!(r.count(ErrorKind::BlankRow), 50);
    assert_eq!(r.errors.len(), 20);
    assert_eq!(r.rows, 51);
}

#[test]
fn no_header_maps_by_position() {
    let d = CsvDialect {
        header: false,
        ..CsvDialect::default()
    };
    let r = csv_with(
        b"1,Ada,1815-12-10\nx,Bob,1900-01-01\n",
        &people(),
        d,
        &Limits::default(),
    );
    assert_eq!(kinds(&r), vec![(ErrorKind::TypeError, Some(2))]);
    assert_eq!(r.rows, 2);
    let r = csv_with(b"1,Ada\n", &people(), d, &Limits::default());
    assert_eq!(r.errors[0].message, "row 1 has 2 cells, schema has 3");
}

#[test]
fn other_dialects() {
    let d = CsvDialect {
        delimiter: b';',
        quote: b'\'',
        header: true,
    };
    let r = csv_with(
        b"id;name;born\n1;'A;da';1815-12-10\n",
        &people(),
        d,
        &Limits::default(),
    );
    assert_valid(&r);
    let d = CsvDialect {
        delimiter: b'\t',
        ..CsvDialect::default()
    };
    let r = csv_with(
        b"id\tname\tborn\n1\tAda\t1815-12-10\n",
        &people(),
        d,
        &Limits::default(),
    );
    assert_valid(&r);
}

#[test]
fn unusable_dialects_are_refused() {
    for (delimiter, quote) in [(b'"', b'"'), (b'\n', b'"'), (b',', b'\r'), (0xA7, b'"')] {
        let d = CsvDialect {
            delimiter,
            quote,
            header: true,
        };
        let r = csv_with(b"id,name,born\n", &people(), d, &Limits::default());
        assert_fatal(&r, ErrorKind::InvalidDialect, "invalid CSV dialect");
    }
}

#[test]
fn header_only_is_valid_with_zero_rows() {
    let r = csv("id,name,born\n", &people());
    assert_valid(&r);
    assert_eq!(r.rows, 0);
    assert_eq!(r.summary(), "valid: 0 rows");
    let r = csv("id,name,born", &people());
    assert_valid(&r);
}

#[test]
fn bom_is_stripped() {
    let r = csv("\u{feff}id,name,born\n1,Ada,1815-12-10\n", &people());
    assert_valid(&r);
    assert_eq!(r.bytes, 3 + 13 + 17);
    let d = CsvDialect {
        header: false,
        ..CsvDialect::default()
    };
    let r = csv_with(
        "\u{feff}1,Ada,1815-12-10\n".as_bytes(),
        &people(),
        d,
        &Limits::default(),
    );
    assert_valid(&r);
    let r = jsonl("\u{feff}{\"id\":1}\n", &people());
    assert_valid(&r);
}

#[test]
fn errors_are_all_counted_but_only_the_first_kept() {
    let mut data = String::from("id,name,born\n");
    for i in 0..100 {
        data.push_str(&format!("x{i},n,1815-12-10\n"));
    }
    let r = csv(&data, &people());
    assert_eq!(r.count(ErrorKind::TypeError), 100);
    assert_eq!(r.errors.len(), 20);
    assert_eq!(r.errors[19].row, Some(20));
    assert_eq!(r.rows, 100);
    assert!(
        r.summary().ends_with("(and 99 more errors)"),
        "{}",
        r.summary()
    );
}

#[test]
fn long_values_are_clipped_in_errors() {
    let big = "x".repeat(500_000);
    let r = csv(
        &format!("id,name,born,{big}\n{big},Ada,1815-12-10,1\n"),
        &people(),
    );
    assert_eq!(
        kinds(&r),
        vec![
            (ErrorKind::ExtraColumn, None),
            (ErrorKind::TypeError, Some(1))
        ]
    );
    let (extra, bad) = (&r.errors[0], &r.errors[1]);
    assert_eq!(extra.field.as_ref().unwrap().len(), 100);
    assert_eq!(bad.value.as_ref().unwrap().len(), 100);
    for e in &r.errors {
        assert!(e.message.len() < 400, "{}", e.message.len());
    }
}

// ---------------------------------------------------------------- types

/// Checks a one-field schema of `ty`/`format` accepts `good` and rejects `bad` (TypeError).
fn check_type(ty: &str, format: Option<&str>, good: &[&str], bad: &[&str]) {
    let format = format.map_or(String::new(), |f| format!(r#","format":"{f}""#));
    let s = schema(&format!(
        r#"{{"fields":[{{"name":"v","type":"{ty}"{format}}}],"missingValues":[]}}"#
    ));
    for g in good {
        let r = csv(&format!("v\n\"{g}\"\n"), &s);
        assert!(r.valid, "{ty}{format} should accept {g:?}: {r:#?}");
    }
    for b in bad {
        let r = csv(&format!("v\n\"{b}\"\n"), &s);
        assert_eq!(
            kinds(&r),
            vec![(ErrorKind::TypeError, Some(1))],
            "{ty} {b:?}"
        );
        assert_eq!(r.errors[0].field.as_deref(), Some("v"));
        assert_eq!(r.errors[0].value.as_deref(), Some(*b));
    }
}

#[test]
fn type_integer() {
    check_type(
        "integer",
        None,
        &["0", "-5", "+5", "0012"],
        &["1.5", "1e3", "", "one", " 1"],
    );
}

#[test]
fn type_number() {
    check_type(
        "number",
        None,
        &["1", "-1.25", "1e-3", "NaN", "INF", "-INF"],
        &["1,5", "x", "1e", ""],
    );
}

#[test]
fn type_boolean() {
    check_type(
        "boolean",
        None,
        &["true", "True", "TRUE", "1", "false", "False", "FALSE", "0"],
        &["yes", "T", ""],
    );
    let s = schema(
        r#"{"fields":[{"name":"v","type":"boolean","trueValues":["y"],"falseValues":["n"]}]}"#,
    );
    assert_valid(&csv("v\ny\nn\n", &s));
    assert_eq!(csv("v\ntrue\n", &s).count(ErrorKind::TypeError), 1);
}

#[test]
fn type_date() {
    check_type(
        "date",
        None,
        &["2024-02-29"],
        &["2023-02-29", "2024/02/01", "01/02/2024", ""],
    );
    check_type("date", Some("%d/%m/%Y"), &["29/02/2024"], &["2024-02-29"]);
    check_type(
        "date",
        Some("any"),
        &["2024-02-29", "29 Feb 2024"],
        &["someday"],
    );
}

#[test]
fn type_datetime() {
    check_type(
        "datetime",
        None,
        &[
            "2024-01-02T03:04:05Z",
            "2024-01-02T03:04:05.250+01:00",
            "2024-01-02T03:04:05",
        ],
        &["2024-01-02", "2024-01-02T03:04", "2024-01-02 03:04:05Z"],
    );
    check_type(
        "datetime",
        Some("%Y%m%d %H%M"),
        &["20240102 0304"],
        &["2024-01-02T03:04:05Z"],
    );
    check_type("datetime", Some("any"), &["2024-01-02 03:04:05"], &["nope"]);
}

#[test]
fn type_time() {
    check_type(
        "time",
        None,
        &["00:00:00", "23:59:59.999"],
        &["24:00:00", "1:00:00", "10:00"],
    );
    check_type("time", Some("%H:%M"), &["10:00"], &["10:00:00"]);
}

#[test]
fn type_year() {
    check_type("year", None, &["2024", "1066"], &["24", "12345", "MMXX"]);
}

#[test]
fn type_string_formats() {
    check_type("string", None, &["anything", ""], &[]);
    check_type(
        "string",
        Some("email"),
        &["ada@example.org"],
        &["ada", "ada@", "a da@x.org"],
    );
    check_type(
        "string",
        Some("uri"),
        &["https://example.org/a?b=c"],
        &["example.org", "http://a b"],
    );
    check_type(
        "string",
        Some("uuid"),
        &["0b5f2b6e-3c1a-4f7e-9d9a-1d2e3f4a5b6c"],
        &["0b5f2b6e-3c1a-4f7e-9d9a", "not-a-uuid"],
    );
    check_type("any", None, &["1", "x", ""], &[]);
}

// ---------------------------------------------------------------- constraints

fn one(field: &str) -> TableSchema {
    schema(&format!(r#"{{"fields":[{field}]}}"#))
}

fn rows_of(values: &[&str]) -> String {
    let mut s = String::from("v\n");
    for v in values {
        s.push_str(v);
        s.push('\n');
    }
    s
}

#[test]
fn constraint_required() {
    let s = one(r#"{"name":"v","constraints":{"required":true}}"#);
    let r = csv(&rows_of(&["a", "", "b"]), &s);
    // A row of one empty cell is blank: use two columns to see `required`.
    assert_eq!(kinds(&r), vec![(ErrorKind::BlankRow, Some(2))]);
    let s = schema(r#"{"fields":[{"name":"v","constraints":{"required":true}},{"name":"w"}]}"#);
    let r = csv("v,w\na,1\n,2\n", &s);
    assert_eq!(kinds(&r), vec![(ErrorKind::Required, Some(2))]);
    assert_eq!(r.errors[0].field.as_deref(), Some("v"));
}

#[test]
fn constraint_unique() {
    let s = one(r#"{"name":"v","type":"integer","constraints":{"unique":true}}"#);
    let r = csv(&rows_of(&["1", "2", "01", "3", "2"]), &s);
    assert_eq!(
        kinds(&r),
        vec![(ErrorKind::Unique, Some(3)), (ErrorKind::Unique, Some(5))]
    );
    assert_eq!(r.errors[0].value.as_deref(), Some("01"));
}

#[test]
fn constraint_minimum_maximum() {
    let s = one(r#"{"name":"v","type":"integer","constraints":{"minimum":10,"maximum":20}}"#);
    let r = csv(&rows_of(&["10", "9", "20", "21"]), &s);
    assert_eq!(
        kinds(&r),
        vec![(ErrorKind::Minimum, Some(2)), (ErrorKind::Maximum, Some(4))]
    );
    let s = one(r#"{"name":"v","type":"number","constraints":{"minimum":0.5}}"#);
    assert_eq!(
        kinds(&csv(&rows_of(&["0.5", "0.4"]), &s)),
        vec![(ErrorKind::Minimum, Some(2))]
    );
    let s = one(
        r#"{"name":"v","type":"date","constraints":{"minimum":"2024-01-01","maximum":"2024-12-31"}}"#,
    );
    let r = csv(&rows_of(&["2024-06-01", "2023-12-31", "2025-01-01"]), &s);
    assert_eq!(
        kinds(&r),
        vec![(ErrorKind::Minimum, Some(2)), (ErrorKind::Maximum, Some(3))]
    );
    let s =
        one(r#"{"name":"v","type":"datetime","constraints":{"maximum":"2024-01-01T00:00:00Z"}}"#);
    let r = csv(
        &rows_of(&["2024-01-01T00:30:00+01:00", "2024-01-01T00:30:00Z"]),
        &s,
    );
    assert_eq!(kinds(&r), vec![(ErrorKind::Maximum, Some(2))]);
    let s = one(r#"{"name":"v","type":"year","constraints":{"minimum":2000}}"#);
    assert_eq!(
        kinds(&csv(&rows_of(&["2000", "1999"]), &s)),
        vec![(ErrorKind::Minimum, Some(2))]
    );
    let s = one(r#"{"name":"v","type":"time","constraints":{"maximum":"12:00:00"}}"#);
    assert_eq!(
        kinds(&csv(&rows_of(&["11:59:59", "12:00:01"]), &s)),
        vec![(ErrorKind::Maximum, Some(2))]
    );
}

#[test]
fn constraint_lengths() {
    let s = one(r#"{"name":"v","constraints":{"minLength":2,"maxLength":3}}"#);
    let r = csv(&rows_of(&["ab", "a", "abc", "abcd", "ééé"]), &s);
    assert_eq!(
        kinds(&r),
        vec![
            (ErrorKind::MinLength, Some(2)),
            (ErrorKind::MaxLength, Some(4))
        ]
    );
}

#[test]
fn constraint_pattern_is_anchored() {
    let s = one(r#"{"name":"v","constraints":{"pattern":"[A-Z]{3}"}}"#);
    let r = csv(&rows_of(&["ABC", "ABCD", "xABC", "AB"]), &s);
    assert_eq!(
        kinds(&r),
        vec![
            (ErrorKind::Pattern, Some(2)),
            (ErrorKind::Pattern, Some(3)),
            (ErrorKind::Pattern, Some(4))
        ]
    );
    let s = one(r#"{"name":"v","constraints":{"pattern":"a|b"}}"#);
    assert_eq!(
        kinds(&csv(&rows_of(&["a", "ab"]), &s)),
        vec![(ErrorKind::Pattern, Some(2))]
    );
}

#[test]
fn constraint_enum_compares_cast_values() {
    let s = one(r#"{"name":"v","type":"integer","constraints":{"enum":[1,2,"3"]}}"#);
    let r = csv(&rows_of(&["1", "02", "3", "4"]), &s);
    assert_eq!(kinds(&r), vec![(ErrorKind::Enum, Some(4))]);
    let s = one(r#"{"name":"v","constraints":{"enum":["red","green"]}}"#);
    assert_eq!(
        kinds(&csv(&rows_of(&["red", "blue"]), &s)),
        vec![(ErrorKind::Enum, Some(2))]
    );
}

#[test]
fn missing_values_skip_checks_but_fail_required() {
    let s = schema(
        r#"{"fields":[
            {"name":"a","type":"integer","constraints":{"minimum":5}},
            {"name":"b","type":"integer","constraints":{"required":true}}
          ],
          "missingValues":["","NA","-"]}"#,
    );
    let r = csv("a,b\nNA,1\n-,NA\n7,-\n", &s);
    assert_eq!(
        kinds(&r),
        vec![
            (ErrorKind::BlankRow, Some(2)),
            (ErrorKind::Required, Some(3))
        ]
    );
    // "NA" is not missing by default.
    let s = one(r#"{"name":"v","type":"integer"}"#);
    assert_eq!(
        kinds(&csv(&rows_of(&["NA"]), &s)),
        vec![(ErrorKind::TypeError, Some(1))]
    );
}

#[test]
fn primary_key_duplicates() {
    let s = schema(
        r#"{"fields":[{"name":"id","type":"integer"},{"name":"year","type":"year"},{"name":"x"}],
            "primaryKey":["id","year"]}"#,
    );
    let r = csv(
        "id,year,x\n1,2020,a\n1,2021,b\n2,2020,c\n01,2021,d\n,2020,e\n",
        &s,
    );
    assert_eq!(
        kinds(&r),
        vec![
            (ErrorKind::PrimaryKey, Some(4)),
            (ErrorKind::Required, Some(5))
        ]
    );
    assert_eq!(r.errors[0].field.as_deref(), Some("id,year"));
    assert!(
        r.errors[0].message.contains("(id, year)"),
        "{}",
        r.errors[0].message
    );
    let s = schema(r#"{"fields":[{"name":"id"},{"name":"x"}],"primaryKey":"id"}"#);
    let r = csv("id,x\na,1\nb,2\na,3\n", &s);
    assert_eq!(kinds(&r), vec![(ErrorKind::PrimaryKey, Some(3))]);
}

#[test]
fn unique_tracking_is_bounded() {
    // A string column: an integer one rising in steps would be tracked as a
    // run, without using the budget (see `sequential_integers_cost_nothing`).
    let s = one(r#"{"name":"v","type":"string","constraints":{"unique":true}}"#);
    let limits = Limits {
        max_unique_tracked: 3,
        ..Limits::default()
    };
    let data = rows_of(&["1", "2", "1", "3", "4", "5", "1"]);
    let r = csv_with(data.as_bytes(), &s, CsvDialect::default(), &limits);
    assert_eq!(
        kinds(&r),
        vec![(ErrorKind::Unique, Some(3))],
        "row 7 is past the budget"
    );
    assert_eq!(r.notes.len(), 1);
    assert!(
        r.notes[0].contains("not checked from row 5"),
        "{:?}",
        r.notes
    );
}

#[test]
fn sequential_integers_cost_nothing() {
    let s = schema(
        r#"{"fields":[{"name":"id","type":"integer","constraints":{"unique":true}},{"name":"x"}],
            "primaryKey":"id"}"#,
    );
    let limits = Limits {
        max_unique_tracked: 3,
        ..Limits::default()
    };
    // 10, 20, ..., 1000 is a run: no budget used, every repeat still found.
    let mut data = String::from("id,x\n");
    for i in 1..=100 {
        data.push_str(&format!("{},a\n", i * 10));
    }
    data.push_str("500,b\n505,c\n507,d\n505,e\n0990,f\n");
    let r = csv_with(data.as_bytes(), &s, CsvDialect::default(), &limits);
    assert_eq!(
        kinds(&r),
        vec![
            (ErrorKind::Unique, Some(101)),
            (ErrorKind::PrimaryKey, Some(101)),
            (ErrorKind::Unique, Some(104)),
            (ErrorKind::PrimaryKey, Some(104)),
            (ErrorKind::Unique, Some(105)),
            (ErrorKind::PrimaryKey, Some(105)),
        ]
    );
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    // A value off the run that the run reaches later is still a repeat.
    let s = one(r#"{"name":"v","type":"integer","constraints":{"unique":true}}"#);
    let r = csv(&rows_of(&["1", "2", "5", "3", "4", "5", "6"]), &s);
    assert_eq!(kinds(&r), vec![(ErrorKind::Unique, Some(6))]);
}

// ---------------------------------------------------------------- JSON Lines

#[test]
fn jsonl_valid() {
    let r = jsonl(
        "{\"id\":1,\"name\":\"Ada\",\"born\":\"1815-12-10\"}\n\n{\"born\":\"1906-12-09\",\"id\":\"2\",\"name\":\"Gr\\u0061ce\"}\r\n{\"id\":3,\"name\":null}",
        &people(),
    );
    assert_valid(&r);
    assert_eq!(r.rows, 3);
}

#[test]
fn jsonl_bad_line() {
    let r = jsonl("{\"id\":1}\n{\"id\":2,\n{\"id\":3}\n", &people());
    assert_eq!(kinds(&r), vec![(ErrorKind::BadJson, Some(2))]);
    assert!(r.errors[0].message.starts_with("line 2 is not valid JSON"));
    assert_eq!(r.rows, 3);
    let r = jsonl("{\"id\":1} {\"id\":2}\n", &people());
    assert_eq!(kinds(&r), vec![(ErrorKind::BadJson, Some(1))]);
}

#[test]
fn jsonl_not_an_object() {
    let r = jsonl("{\"id\":1}\n[1,2]\n\"x\"\n42\n", &people());
    assert_eq!(
        kinds(&r),
        vec![
            (ErrorKind::NotAnObject, Some(2)),
            (ErrorKind::NotAnObject, Some(3)),
            (ErrorKind::NotAnObject, Some(4))
        ]
    );
    assert_eq!(r.errors[0].message, "line 2 is an array, not a JSON object");
}

#[test]
fn jsonl_types_and_extra_keys() {
    let s = schema(
        r#"{"fields":[
            {"name":"n","type":"integer","constraints":{"required":true}},
            {"name":"f","type":"number"},
            {"name":"b","type":"boolean"},
            {"name":"s","type":"string"},
            {"name":"a","type":"any"}
        ]}"#,
    );
    let r = jsonl(
        concat!(
            "{\"n\":1,\"f\":1.5,\"b\":true,\"s\":\"x\",\"a\":[1]}\n",
            "{\"n\":\"2\",\"f\":\"2e3\",\"b\":\"false\",\"s\":\"y\",\"a\":{\"k\":1},\"zz\":1}\n",
            "{\"n\":3.0,\"f\":3,\"zz\":2,\"yy\":3}\n",
            "{\"n\":1.5,\"f\":\"x\",\"b\":1,\"s\":5}\n",
            "{\"f\":1}\n",
            "{\"n\":null,\"f\":1}\n",
        ),
        &s,
    );
    assert_eq!(
        kinds(&r),
        vec![
            (ErrorKind::ExtraColumn, Some(2)),
            (ErrorKind::ExtraColumn, Some(3)),
            (ErrorKind::TypeError, Some(4)),
            (ErrorKind::TypeError, Some(4)),
            (ErrorKind::TypeError, Some(4)),
            (ErrorKind::TypeError, Some(4)),
            (ErrorKind::Required, Some(5)),
            (ErrorKind::Required, Some(6)),
        ]
    );
    assert_eq!(r.errors[0].field.as_deref(), Some("zz"));
    assert_eq!(r.errors[1].field.as_deref(), Some("yy"));
    assert_eq!(r.errors[2].value.as_deref(), Some("1.5"));
}

#[test]
fn jsonl_blank_object_and_empty() {
    let r = jsonl("{\"id\":1}\n{}\n", &people());
    assert_eq!(kinds(&r), vec![(ErrorKind::BlankRow, Some(2))]);
    let r = jsonl("\n\n  \n", &people());
    assert_fatal(&r, ErrorKind::EmptyFile, "empty file");
}

// ---------------------------------------------------------------- gzip

#[test]
fn gzip_valid() {
    let data = gzip(b"id,name,born\n1,Ada,1815-12-10\n");
    let r = validate(
        &data[..],
        &Format::Csv(CsvDialect::default()),
        Compression::Gzip,
        &people(),
        &Limits::default(),
    );
    assert_valid(&r);
    assert_eq!(r.bytes, 30);
    // Multi-member gzip (concatenated files) reads as one.
    let mut two = gzip(b"{\"id\":1}\n");
    two.extend(gzip(b"{\"id\":2}\n"));
    let r = validate(
        &two[..],
        &Format::JsonLines,
        Compression::Gzip,
        &people(),
        &Limits::default(),
    );
    assert_valid(&r);
    assert_eq!(r.rows, 2);
}

#[test]
fn gzip_truncated() {
    let mut data = String::from("id,name,born\n");
    for i in 0..2000 {
        data.push_str(&format!("{i},name{i},2000-01-01\n"));
    }
    let gz = gzip(data.as_bytes());
    for cut in [gz.len() - 4, gz.len() / 2, 15] {
        let r = validate(
            &gz[..cut],
            &Format::Csv(CsvDialect::default()),
            Compression::Gzip,
            &people(),
            &Limits::default(),
        );
        assert_fatal(&r, ErrorKind::CorruptCompression, "corrupt gzip stream");
    }
    let r = validate(
        &b"id,name\n1,2\n"[..],
        &Format::Csv(CsvDialect::default()),
        Compression::Gzip,
        &people(),
        &Limits::default(),
    );
    assert_fatal(&r, ErrorKind::CorruptCompression, "corrupt gzip stream");
}

/// Yields a gzip stream of `header` then `total` bytes of `fill`, compressing
/// as it goes: memory stays at one small chunk, however big `total` is.
struct GzipBomb {
    encoder: GzEncoder<Vec<u8>>,
    chunk: Vec<u8>,
    left: u64,
    out: Vec<u8>,
    pos: usize,
    done: bool,
}

impl GzipBomb {
    fn new(header: &[u8], fill: u8, total: u64) -> Self {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(header).unwrap();
        GzipBomb {
            encoder,
            chunk: vec![fill; 64 * 1024],
            left: total,
            out: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for GzipBomb {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            if self.done {
                return Ok(0);
            }
            if self.left == 0 {
                let fresh = GzEncoder::new(Vec::new(), flate2::Compression::none());
                self.out = std::mem::replace(&mut self.encoder, fresh).finish()?;
                self.done = true;
            } else {
                let n = self.left.min(self.chunk.len() as u64) as usize;
                self.encoder.write_all(&self.chunk[..n])?;
                self.left -= n as u64;
                self.out = std::mem::take(self.encoder.get_mut());
            }
            self.pos = 0;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn gzip_bomb_is_stopped_by_ratio() {
    // 200 MB of zeros deflate about 1030:1. The line limit is raised so
    // that the ratio check (from 10 MiB expanded on) is what stops it.
    let bomb = GzipBomb::new(b"id,name,born\n", 0, 200_000_000);
    let limits = Limits {
        max_line_bytes: 64 * 1024 * 1024,
        ..Limits::default()
    };
    let format = Format::Csv(CsvDialect::default());
    let r = validate(bomb, &format, Compression::Gzip, &people(), &limits);
    assert_fatal(&r, ErrorKind::DecompressionBomb, "decompression bomb");
    assert!(r.fatal.as_deref().unwrap().contains("ratio over 1000:1"));
    assert!(
        r.bytes < 12 * 1024 * 1024,
        "stopped early, at {} bytes",
        r.bytes
    );
    // With default limits the same bomb is refused even sooner, as one overlong line.
    let bomb = GzipBomb::new(b"id,name,born\n", 0, 200_000_000);
    let r = validate(
        bomb,
        &format,
        Compression::Gzip,
        &people(),
        &Limits::default(),
    );
    assert_fatal(
        &r,
        ErrorKind::LineTooLong,
        "line 2 is longer than 1048576 bytes",
    );
}

#[test]
fn gzip_bomb_is_stopped_by_size() {
    let bomb = GzipBomb::new(b"{\"id\":1}\n", b'\n', 3_000_000);
    let limits = Limits {
        max_expanded_bytes: 1_000_000,
        ..Limits::default()
    };
    let r = validate(
        bomb,
        &Format::JsonLines,
        Compression::Gzip,
        &people(),
        &limits,
    );
    assert_fatal(&r, ErrorKind::DecompressionBomb, "more than 1000000 bytes");
    assert_eq!(r.rows, 1);
}

// ---------------------------------------------------------------- zstd

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

fn zstd_csv(data: &[u8]) -> Report {
    validate(
        data,
        &Format::Csv(CsvDialect::default()),
        Compression::Zstd,
        &people(),
        &Limits::default(),
    )
}

#[test]
fn zstd_valid() {
    let r = zstd_csv(&zstd(b"id,name,born\n1,Ada,1815-12-10\n"));
    assert_valid(&r);
    assert_eq!(r.bytes, 30);
    // Multi-frame (concatenated) streams read as one.
    let mut two = zstd(b"{\"id\":1}\n");
    two.extend(zstd(b"{\"id\":2}\n"));
    let r = validate(
        &two[..],
        &Format::JsonLines,
        Compression::Zstd,
        &people(),
        &Limits::default(),
    );
    assert_valid(&r);
    assert_eq!(r.rows, 2);
    // Errors inside are reported as for plain input.
    let r = zstd_csv(&zstd(b"id,name,born\nx,Ada,1815-12-10\n"));
    assert_eq!(kinds(&r), vec![(ErrorKind::TypeError, Some(1))]);
}

#[test]
fn zstd_truncated_or_corrupt() {
    let mut data = String::from("id,name,born\n");
    for i in 0..5000 {
        data.push_str(&format!("{i},name{i},2000-01-01\n"));
    }
    let z = zstd(data.as_bytes());
    for cut in [z.len() - 1, z.len() / 2, 6] {
        let r = zstd_csv(&z[..cut]);
        assert_fatal(&r, ErrorKind::CorruptCompression, "corrupt zstd stream");
    }
    let mut flipped = z.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    let r = zstd_csv(&flipped);
    assert!(!r.valid, "{r:#?}");
    assert_fatal(&r, ErrorKind::CorruptCompression, "corrupt zstd stream");
    // Not zstd at all (here: gzip), and plain text.
    let r = zstd_csv(&gzip(data.as_bytes()));
    assert_fatal(&r, ErrorKind::CorruptCompression, "corrupt zstd stream");
    let r = zstd_csv(b"id,name,born\n1,Ada,1815-12-10\n");
    assert_fatal(&r, ErrorKind::CorruptCompression, "corrupt zstd stream");
    // Empty input, and an empty frame.
    let r = zstd_csv(b"");
    assert_fatal(&r, ErrorKind::EmptyFile, "empty file");
    let r = zstd_csv(&zstd(b""));
    assert_fatal(&r, ErrorKind::EmptyFile, "empty file");
}

/// A zstd stream of `header` then `total` bytes of `fill`, compressed as it
/// is read: memory stays at one small chunk, however big `total` is.
struct ZstdBomb {
    encoder: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    chunk: Vec<u8>,
    left: u64,
    out: Vec<u8>,
    pos: usize,
}

impl ZstdBomb {
    fn new(header: &[u8], fill: u8, total: u64, window_log: u32) -> Self {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
        encoder.window_log(window_log).unwrap();
        encoder.write_all(header).unwrap();
        ZstdBomb {
            encoder: Some(encoder),
            chunk: vec![fill; 64 * 1024],
            left: total,
            out: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ZstdBomb {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            let Some(encoder) = self.encoder.as_mut() else {
                return Ok(0);
            };
            if self.left == 0 {
                self.out = self.encoder.take().unwrap().finish()?;
            } else {
                let n = self.left.min(self.chunk.len() as u64) as usize;
                encoder.write_all(&self.chunk[..n])?;
                encoder.flush()?;
                self.left -= n as u64;
                self.out = std::mem::take(encoder.get_mut());
            }
            self.pos = 0;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn zstd_bombs_are_stopped() {
    let format = Format::Csv(CsvDialect::default());
    // By ratio: 200 MB of newlines (blank rows) expand far over 1000:1.
    let bomb = ZstdBomb::new(b"id,name,born\n", b'\n', 200_000_000, 20);
    let r = validate(
        bomb,
        &format,
        Compression::Zstd,
        &people(),
        &Limits::default(),
    );
    assert_fatal(&r, ErrorKind::DecompressionBomb, "ratio over 1000:1");
    assert!(
        r.bytes < 12 * 1024 * 1024,
        "stopped early, at {} bytes",
        r.bytes
    );
    // By size.
    let bomb = ZstdBomb::new(b"{\"id\":1}\n", b'\n', 3_000_000, 20);
    let limits = Limits {
        max_expanded_bytes: 1_000_000,
        ..Limits::default()
    };
    let r = validate(
        bomb,
        &Format::JsonLines,
        Compression::Zstd,
        &people(),
        &limits,
    );
    assert_fatal(&r, ErrorKind::DecompressionBomb, "more than 1000000 bytes");
    // By window: a frame that would make the decoder hold 128 MiB.
    let bomb = ZstdBomb::new(b"id,name,born\n", b'x', 1_000_000, 27);
    let r = validate(
        bomb,
        &format,
        Compression::Zstd,
        &people(),
        &Limits::default(),
    );
    assert_fatal(&r, ErrorKind::DecompressionBomb, "window over 8 MiB");
    // The largest window accepted is fine.
    let bomb = ZstdBomb::new(b"id,name,born\n", b'\n', 1_000_000, 23);
    let r = validate(
        bomb,
        &format,
        Compression::Zstd,
        &people(),
        &Limits::default(),
    );
    assert_eq!(r.fatal, None);
    assert_eq!(r.count(ErrorKind::BlankRow), 1_000_000);
}

#[test]
fn zstd_reader_failure_is_an_io_fatal() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    let r = validate(
        Broken,
        &Format::Csv(CsvDialect::default()),
        Compression::Zstd,
        &people(),
        &Limits::default(),
    );
    assert_fatal(&r, ErrorKind::Io, "disk on fire");
    // And midway through the stream.
    let z = zstd(&b"id,name,born\n1,Ada,1815-12-10\n".repeat(10_000));
    let failing = (&z[..z.len() / 2]).chain(Broken);
    let r = validate(
        failing,
        &Format::Csv(CsvDialect::default()),
        Compression::Zstd,
        &people(),
        &Limits::default(),
    );
    assert_fatal(&r, ErrorKind::Io, "disk on fire");
}

// ---------------------------------------------------------------- hostile input

#[test]
fn invalid_utf8() {
    let r = csv_with(
        b"id,name,born\n1,Ada,1815-12-10\n2,B\xffb,1900-01-01\n",
        &people(),
        CsvDialect::default(),
        &Limits::default(),
    );
    assert_fatal(&r, ErrorKind::InvalidUtf8, "invalid UTF-8 at line 3");
    assert_eq!(r.rows, 2);
    let r = csv_with(
        b"id,n\xc3me\n",
        &people(),
        CsvDialect::default(),
        &Limits::default(),
    );
    assert_fatal(&r, ErrorKind::InvalidUtf8, "line 1");
    let r = validate(
        &b"{\"id\":1}\n{\"name\":\"\xe9\"}\n"[..],
        &Format::JsonLines,
        Compression::None,
        &people(),
        &Limits::default(),
    );
    assert_fatal(&r, ErrorKind::InvalidUtf8, "invalid UTF-8 at line 2");
}

#[test]
fn unterminated_quote() {
    let r = csv(
        "id,name,born\n1,Ada,1815-12-10\n2,\"Bob,1900-01-01\n3,Cy,1900-01-01\n",
        &people(),
    );
    assert_fatal(&r, ErrorKind::UnterminatedQuote, "unterminated quote");
    assert!(
        r.fatal.as_deref().unwrap().contains("line 3"),
        "{:?}",
        r.fatal
    );
    assert_eq!(r.rows, 1);
}

#[test]
fn overlong_line() {
    let limits = Limits {
        max_line_bytes: 100,
        ..Limits::default()
    };
    let mut data = b"id,name,born\n1,Ada,1815-12-10\n2,".to_vec();
    data.extend(std::iter::repeat_n(b'x', 200));
    data.extend(b",1900-01-01\n");
    let r = csv_with(&data, &people(), CsvDialect::default(), &limits);
    assert_fatal(
        &r,
        ErrorKind::LineTooLong,
        "line 3 is longer than 100 bytes",
    );
    // A default-limit overlong field is refused without being buffered whole.
    let endless = io::repeat(b'x').take(50 * 1024 * 1024);
    let r = validate(
        endless,
        &Format::Csv(CsvDialect::default()),
        Compression::None,
        &people(),
        &Limits::default(),
    );
    assert_fatal(
        &r,
        ErrorKind::LineTooLong,
        "line 1 is longer than 1048576 bytes",
    );
    assert!(r.bytes < 2 * 1024 * 1024);
    let r = validate(
        io::repeat(b' ').take(5_000_000),
        &Format::JsonLines,
        Compression::None,
        &people(),
        &Limits::default(),
    );
    assert_fatal(
        &r,
        ErrorKind::LineTooLong,
        "line 1 is longer than 1048576 bytes",
    );
}

#[test]
fn zero_bytes() {
    let r = csv("", &people());
    assert_fatal(&r, ErrorKind::EmptyFile, "empty file");
    assert_eq!(r.summary(), "invalid: empty file");
    let r = jsonl("", &people());
    assert_fatal(&r, ErrorKind::EmptyFile, "empty file");
    let r = validate(
        &b""[..],
        &Format::Csv(CsvDialect::default()),
        Compression::Gzip,
        &people(),
        &Limits::default(),
    );
    assert_fatal(&r, ErrorKind::EmptyFile, "empty file");
    let gz = gzip(b"");
    let r = validate(
        &gz[..],
        &Format::JsonLines,
        Compression::Gzip,
        &people(),
        &Limits::default(),
    );
    assert_fatal(&r, ErrorKind::EmptyFile, "empty file");
    let r = csv("\n\n", &people());
    assert_fatal(&r, ErrorKind::EmptyFile, "no header row");
}

#[test]
fn binary_garbage_is_never_valid() {
    // A deterministic pseudo-random byte soup, plain and as "gzip".
    let mut x: u32 = 12345;
    let garbage: Vec<u8> = (0..100_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    for format in [Format::Csv(CsvDialect::default()), Format::JsonLines] {
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let r = validate(
                &garbage[..],
                &format,
                compression,
                &people(),
                &Limits::default(),
            );
            assert!(
                !r.valid && r.fatal.is_some(),
                "{format:?} {compression:?}: {r:#?}"
            );
        }
    }
    // A PNG signature.
    let r = csv_with(
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
        &people(),
        CsvDialect::default(),
        &Limits::default(),
    );
    assert_fatal(&r, ErrorKind::InvalidUtf8, "line 1");
}

#[test]
fn failing_reader_is_an_io_fatal() {
    struct Broken(usize);
    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = self.0.min(buf.len());
            buf[..n].fill(b'\n');
            self.0 -= n;
            Ok(n)
        }
    }
    let r = validate(
        Broken(10),
        &Format::Csv(CsvDialect::default()),
        Compression::None,
        &people(),
        &Limits::default(),
    );
    assert_fatal(&r, ErrorKind::Io, "disk on fire");
    let r = validate(
        Broken(0),
        &Format::JsonLines,
        Compression::Gzip,
        &people(),
        &Limits::default(),
    );
    assert_fatal(&r, ErrorKind::Io, "disk on fire");
}

// ---------------------------------------------------------------- API

#[test]
fn invalid_schema_given_in_code_is_fatal() {
    let mut s = people();
    s.fields[1].constraints.pattern = Some("(".into());
    assert!(s.check().is_err());
    let r = csv("id,name,born\n", &s);
    assert_fatal(&r, ErrorKind::InvalidSchema, "not a valid regex");
}

#[test]
fn report_round_trips_through_json() {
    let r = csv("id,name,born\nx,Ada,1815-12-10\n", &people());
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"type_error\""), "{json}");
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    let f: Format = serde_json::from_str(r#"{"Csv":{"delimiter":59}}"#).unwrap();
    assert_eq!(
        f,
        Format::Csv(CsvDialect {
            delimiter: b';',
            ..CsvDialect::default()
        })
    );
    let c: Compression = serde_json::from_str("\"gzip\"").unwrap();
    assert_eq!(c, Compression::Gzip);
    let c: Compression = serde_json::from_str("\"zstd\"").unwrap();
    assert_eq!(c, Compression::Zstd);
}
