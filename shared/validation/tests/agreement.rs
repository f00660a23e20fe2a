//! Agreement with Frictionless: a corpus of small files (valid and invalid:
//! every type's bad values, every constraint violated, missing / extra /
//! reordered / duplicate columns, blank and ragged rows, missingValues,
//! primary keys, header-only, BOM, CRLF, quoting, gzip, hostile input, JSON
//! Lines) is written with its schemas to a temp dir, validated by
//! `choreo_validation::validate` and by the `frictionless validate` command
//! (`frictionless validate --json --encoding utf-8 --schema S FILE`, from
//! the workspace's `.venv`; all the command lines run in one Python process
//! through the command's own entry point, and two of them also as the
//! command alone, which must say the same), and the two verdicts must be the
//! same for every file. Where both report errors, the kinds must correspond as [`KINDS`]
//! maps them, both ways (only Choreo's way when it stopped at a fatal
//! problem: it reads no further, Frictionless does).
//!
//! `--encoding utf-8` is passed because Choreo reads UTF-8 only; left to
//! guess, Frictionless decodes invalid UTF-8 as some other charset.
//!
//! Files on which the verdicts legitimately differ are listed in the corpus
//! with the reason ([`Case::differs`]); the test checks that they still
//! differ as recorded, so the list cannot go stale.
//!
//! Frictionless is required: without it the test fails (`scripts/test`
//! installs it into `.venv`).

use choreo_validation::SchemaCheck;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use choreo_validation::{Compression, CsvDialect, Format, Limits, Report, TableSchema, validate};

/// Each Frictionless error type and the Choreo error kinds that mean the same.
const KINDS: &[(&str, &[&str])] = &[
    ("type-error", &["type_error"]),
    (
        "constraint-error",
        &[
            "required",
            "minimum",
            "maximum",
            "min_length",
            "max_length",
            "pattern",
            "enum",
        ],
    ),
    ("unique-error", &["unique"]),
    // Choreo reports a missing key cell as `required` (key fields are required).
    ("primary-key", &["primary_key", "required"]),
    ("blank-row", &["blank_row"]),
    // Python's csv reads an unterminated quote to the end: one short row.
    ("missing-cell", &["ragged_row", "unterminated_quote"]),
    ("extra-cell", &["ragged_row"]),
    ("missing-label", &["missing_column"]),
    ("extra-label", &["extra_column", "duplicate_column"]),
    ("duplicate-label", &["duplicate_column"]),
    // A data row read as the header: its "labels" are all wrong.
    ("incorrect-label", &["missing_header"]),
    ("encoding-error", &["invalid_utf8"]),
    ("source-error", &["empty_file", "bad_json", "not_an_object"]),
    ("compression-error", &["corrupt_compression"]),
];

/// The schema most cases use: every type, every constraint.
const TYPES: &str = r#"{"fields":[
    {"name":"id","type":"integer","constraints":{"required":true,"unique":true,"minimum":1}},
    {"name":"name","type":"string","constraints":{"minLength":2,"maxLength":10,"pattern":"[A-Za-z ]+"}},
    {"name":"score","type":"number","constraints":{"minimum":0,"maximum":100}},
    {"name":"active","type":"boolean"},
    {"name":"born","type":"date","constraints":{"minimum":"1900-01-01"}},
    {"name":"seen","type":"datetime"},
    {"name":"at","type":"time"},
    {"name":"year","type":"year","constraints":{"maximum":2030}},
    {"name":"color","type":"string","constraints":{"enum":["red","green","blue"]}}
]}"#;

const HEADER: &str = "id,name,score,active,born,seen,at,year,color";
const ROW1: [&str; 9] = [
    "1",
    "Ada",
    "99.5",
    "true",
    "1915-12-10",
    "2024-01-02T03:04:05Z",
    "12:30:00",
    "2024",
    "red",
];
const ROW2: [&str; 9] = [
    "2",
    "Grace",
    "100",
    "false",
    "1906-12-09",
    "2024-01-02T03:04:05",
    "00:00:00",
    "1999",
    "green",
];

/// A small valid table: header and three rows.
fn table() -> Vec<Vec<String>> {
    let row3 = [
        "3",
        "Alan",
        "0",
        "1",
        "1912-06-23",
        "2024-02-29T23:59:59.5+02:00",
        "23:59:59",
        "1954",
        "blue",
    ];
    [ROW1.as_slice(), ROW2.as_slice(), row3.as_slice()]
        .iter()
        .map(|r| r.iter().map(|c| (*c).to_owned()).collect())
        .collect()
}

fn render(header: &str, rows: &[Vec<String>]) -> Vec<u8> {
    let mut out = format!("{header}\n");
    for r in rows {
        out.push_str(&r.join(","));
        out.push('\n');
    }
    out.into_bytes()
}

/// The valid table with one cell (row 2, column `col`) replaced.
fn with_cell(col: &str, value: &str) -> Vec<u8> {
    let i = HEADER.split(',').position(|h| h == col).expect("a column");
    let mut rows = table();
    rows[1][i] = value.to_owned();
    render(HEADER, &rows)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

struct Case {
    name: String,
    /// File extension: `csv`, `csv.gz` or `jsonl`.
    ext: &'static str,
    data: Vec<u8>,
    schema: String,
    /// Choreo's dialect, and the same told to Frictionless (`--dialect`).
    dialect: Option<(CsvDialect, &'static str)>,
    /// Why the verdicts differ on this file, if they legitimately do (and
    /// which side finds it valid: `true` when Choreo does).
    differs: Option<(bool, &'static str)>,
}

fn case(name: &str, data: Vec<u8>) -> Case {
    Case {
        name: name.to_owned(),
        ext: "csv",
        data,
        schema: TYPES.to_owned(),
        dialect: None,
        differs: None,
    }
}

impl Case {
    fn schema(mut self, schema: &str) -> Self {
        self.schema = schema.to_owned();
        self
    }
    fn ext(mut self, ext: &'static str) -> Self {
        self.ext = ext;
        self
    }
    fn differs(mut self, choreo_valid: bool, why: &'static str) -> Self {
        self.differs = Some((choreo_valid, why));
        self
    }
}

fn corpus() -> Vec<Case> {
    let valid = render(HEADER, &table());
    let mut c = vec![case("valid", valid.clone())];

    // Each type's bad values.
    for (name, col, value) in [
        ("type_integer_text", "id", "abc"),
        ("type_integer_decimal", "id", "2.5"),
        ("type_number", "score", "1,5"),
        ("type_boolean", "active", "yes"),
        ("type_date_no_such_day", "born", "1923-02-29"),
        ("type_datetime", "seen", "2024-01-02T25:00:00Z"),
        ("type_time", "at", "25:00:00"),
        ("type_year", "year", "24"),
    ] {
        c.push(case(name, with_cell(col, value)));
    }
    // Each constraint violated.
    for (name, col, value) in [
        ("required", "id", ""),
        ("unique_cast", "id", "01"),
        ("minimum_number", "score", "-0.5"),
        ("maximum_number", "score", "100.01"),
        ("minimum_date", "born", "1899-12-31"),
        ("maximum_year", "year", "2031"),
        ("min_length", "name", "A"),
        ("max_length", "name", "Grace Brewster"),
        ("pattern", "name", "R2D2"),
        ("enum", "color", "purple"),
    ] {
        c.push(case(name, with_cell(col, value)));
    }

    // Formats, custom values, casting before comparing.
    let one = |field: &str| format!(r#"{{"fields":[{field}]}}"#);
    let boolean =
        one(r#"{"name":"v","type":"boolean","trueValues":["y","Y"],"falseValues":["n"]}"#);
    c.push(case("boolean_custom", b"v\ny\nn\nY\n".to_vec()).schema(&boolean));
    c.push(case("boolean_custom_default_refused", b"v\ny\ntrue\n".to_vec()).schema(&boolean));
    let dmy = one(
        r#"{"name":"v","type":"date","format":"%d/%m/%Y","constraints":{"maximum":"31/12/2024"}}"#,
    );
    c.push(case("date_format", b"v\n31/12/2024\n01/02/1999\n".to_vec()).schema(&dmy));
    c.push(case("date_format_iso_refused", b"v\n2024-12-31\n".to_vec()).schema(&dmy));
    c.push(case("date_format_maximum", b"v\n01/01/2025\n".to_vec()).schema(&dmy));
    c.push(
        case(
            "numbers",
            b"v\n1e3\n-2.5E-3\n.5\n5.\n+7\nNaN\nINF\n12345678901234567890.5\n".to_vec(),
        )
        .schema(&one(r#"{"name":"v","type":"number"}"#)),
    );
    c.push(
        case(
            "big_integer",
            b"v\n123456789012345678901234567890\n-9223372036854775809\n".to_vec(),
        )
        .schema(&one(
            r#"{"name":"v","type":"integer","constraints":{"minimum":"-9223372036854775809"}}"#,
        )),
    );
    c.push(
        case("enum_cast_integer", b"v\n1\n02\n3\n".to_vec()).schema(&one(
            r#"{"name":"v","type":"integer","constraints":{"enum":[1,2,"3"]}}"#,
        )),
    );
    let chars = one(r#"{"name":"v","constraints":{"minLength":2,"maxLength":5}}"#);
    c.push(case("length_in_characters", "v\nééééé\nçà\n".as_bytes().to_vec()).schema(&chars));
    c.push(
        case(
            "length_in_characters_over",
            "v\néééééé\n".as_bytes().to_vec(),
        )
        .schema(&chars),
    );
    c.push(
        case("time_fraction", b"v\n12:30:00.250\n23:59:59\n".to_vec()).schema(&one(
            r#"{"name":"v","type":"time","constraints":{"minimum":"08:00:00"}}"#,
        )),
    );
    c.push(
        case(
            "datetime_offsets_bounds",
            b"v\n2024-01-02T03:04:05+02:00\n2024-01-01T23:00:00-01:00\n".to_vec(),
        )
        .schema(&one(
            r#"{"name":"v","type":"datetime","constraints":{"minimum":"2024-01-01T00:00:00Z"}}"#,
        )),
    );
    c.push(
        case(
            "datetime_offset_below_minimum",
            b"v\n2024-01-01T00:30:00+01:00\n".to_vec(),
        )
        .schema(&one(
            r#"{"name":"v","type":"datetime","constraints":{"minimum":"2024-01-01T00:00:00Z"}}"#,
        )),
    );

    // missingValues.
    let na = r#"{"fields":[
        {"name":"a","type":"integer","constraints":{"minimum":5}},
        {"name":"b","type":"integer","constraints":{"required":true}}],
        "missingValues":["","NA","-"]}"#;
    c.push(case("missing_values", b"a,b\nNA,1\n-,2\n7,3\n".to_vec()).schema(na));
    c.push(case("missing_values_required", b"a,b\n6,1\n7,NA\n".to_vec()).schema(na));

    // Primary keys.
    let pk = r#"{"fields":[{"name":"id","type":"integer"},{"name":"year","type":"year"},{"name":"x"}],
        "primaryKey":["id","year"]}"#;
    c.push(
        case(
            "primary_key_ok",
            b"id,year,x\n1,2020,a\n1,2021,b\n2,2020,c\n".to_vec(),
        )
        .schema(pk),
    );
    c.push(
        case(
            "primary_key_repeat",
            b"id,year,x\n1,2020,a\n1,2021,b\n01,2021,d\n".to_vec(),
        )
        .schema(pk),
    );
    c.push(
        case("primary_key_missing", b"id,x\n1,a\n,b\n".to_vec()).schema(
            r#"{"fields":[{"name":"id","type":"integer"},{"name":"x"}],"primaryKey":"id"}"#,
        ),
    );
    c.push(
        case(
            "primary_key_part_missing",
            b"id,year,x\n1,2020,a\n,2021,b\n".to_vec(),
        )
        .schema(pk)
        .differs(
            false,
            "a composite key with one part missing: Frictionless only objects when every \
                 key cell is missing; Choreo treats every key field as required (Table Schema: \
                 primary key fields are implicitly required)",
        ),
    );
    c.push(
        case("nan_unique", b"v\nNaN\nNaN\n1.5\n".to_vec())
            .schema(r#"{"fields":[{"name":"v","type":"number","constraints":{"unique":true}}]}"#),
    );

    // Columns.
    let header = HEADER.replace(",color", "");
    let rows: Vec<Vec<String>> = table()
        .into_iter()
        .map(|mut r| {
            r.pop();
            r
        })
        .collect();
    c.push(case("missing_column", render(&header, &rows)));
    let rows: Vec<Vec<String>> = table()
        .into_iter()
        .map(|mut r| {
            r.push("x".into());
            r
        })
        .collect();
    c.push(case(
        "extra_column",
        render(&format!("{HEADER},shoe"), &rows),
    ));
    c.push(case(
        "duplicate_column",
        render(&format!("{HEADER},id"), &rows),
    ));
    let reordered = b"born,id,name\n1915-12-10,1,Ada\n1906-12-09,2,Grace\n".to_vec();
    let three = |matching: &str| {
        format!(
            r#"{{"fields":[{{"name":"id","type":"integer"}},{{"name":"name"}},{{"name":"born","type":"date"}}]{matching}}}"#
        )
    };
    c.push(
        case("reordered_columns", reordered.clone()).schema(&three(r#","fieldsMatch":"equal""#)),
    );
    c.push(
        case(
            "reordered_columns_type_error",
            b"born,id,name\n1,1915-12-10,Ada\n".to_vec(),
        )
        .schema(&three(r#","fieldsMatch":"equal""#)),
    );
    c.push(
        case("reordered_columns_positional", reordered)
            .schema(&three(""))
            .differs(
                true,
                "Frictionless compares the header with the schema by position unless the schema \
                 says \"fieldsMatch\": \"equal\" (see reordered_columns); Choreo always maps \
                 columns by name, so reordered columns are valid",
            ),
    );
    let mut missing_header = valid.clone();
    missing_header.drain(..HEADER.len() + 1);
    c.push(case("missing_header", missing_header));

    // Rows.
    let mut blank = table();
    blank.insert(1, vec![String::new(); 9]);
    c.push(case("blank_row", render(HEADER, &blank)));
    // An empty line after the first row.
    let mut empty_line = valid.clone();
    let after_row1 = HEADER.len() + 1 + ROW1.join(",").len() + 1;
    empty_line.insert(after_row1, b'\n');
    c.push(case("empty_line", empty_line));
    let mut short = table();
    short[1].truncate(5);
    c.push(case("ragged_short", render(HEADER, &short)));
    let mut long = table();
    long[1].push("extra".into());
    c.push(case("ragged_long", render(HEADER, &long)));

    // Encoding, line ends, quoting, compression.
    c.push(case("header_only", format!("{HEADER}\n").into_bytes()));
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(&valid);
    c.push(case("bom", bom));
    c.push(case(
        "crlf",
        String::from_utf8(valid.clone())
            .unwrap()
            .replace('\n', "\r\n")
            .into_bytes(),
    ));
    c.push(
        case(
            "quoted",
            b"id,text\n1,\"a, b\"\n2,\"line\nbreak\"\n3,\"say \"\"hi\"\"\"\n4,\xc3\xa9t\xc3\xa9\n".to_vec(),
        )
        .schema(r#"{"fields":[{"name":"id","type":"integer"},{"name":"text","constraints":{"maxLength":10}}]}"#),
    );
    let semicolon = String::from_utf8(valid.clone()).unwrap().replace(',', ";");
    c.push(Case {
        dialect: Some((
            CsvDialect {
                delimiter: b';',
                ..CsvDialect::default()
            },
            r#"{"delimiter":";"}"#,
        )),
        ..case("semicolon", semicolon.into_bytes())
    });
    c.push(case("gzip", gzip(&valid)).ext("csv.gz"));
    c.push(case("gzip_type_error", gzip(&with_cell("id", "x"))).ext("csv.gz"));

    // Hostile input.
    c.push(case("empty_file", Vec::new()));
    let mut unterminated = valid.clone();
    unterminated.extend(b"4,\"Open,1,true,1950-01-01,2024-01-02T03:04:05Z,12:00:00,2000,red\n");
    c.push(case("unterminated_quote", unterminated));
    c.push(case("invalid_utf8", with_cell("name", "Gr\u{FFFD}ce")).with_invalid_utf8());

    // Lexical leniency of Python's parsers.
    c.push(case("integer_padded", with_cell("id", " 2")).differs(
        false,
        "Python's int() accepts surrounding spaces; Choreo follows the Table Schema \
         lexical form (optional sign, then digits)",
    ));
    c.push(
        case("datetime_space", with_cell("seen", "2024-01-02 03:04:05")).differs(
            false,
            "Python's datetime.fromisoformat accepts a space for the T; the Table Schema \
         default datetime format is YYYY-MM-DDThh:mm:ss",
        ),
    );

    // JSON Lines.
    let jl = r#"{"fields":[{"name":"n","type":"integer","constraints":{"required":true}},{"name":"s"}]}"#;
    let jsonl =
        |name: &str, data: &str| case(name, data.as_bytes().to_vec()).schema(jl).ext("jsonl");
    c.push(jsonl(
        "jsonl_valid",
        "{\"n\":1,\"s\":\"a\"}\n{\"n\":\"2\"}\n{\"s\":\"c\",\"n\":3}\n",
    ));
    c.push(jsonl(
        "jsonl_type_error",
        "{\"n\":1,\"s\":\"a\"}\n{\"n\":\"x\",\"s\":\"b\"}\n",
    ));
    c.push(jsonl(
        "jsonl_required",
        "{\"n\":1,\"s\":\"a\"}\n{\"n\":null,\"s\":\"b\"}\n",
    ));
    c.push(jsonl(
        "jsonl_bad_line",
        "{\"n\":1,\"s\":\"a\"}\n{\"n\":2,\n{\"n\":3}\n",
    ));
    c.push(jsonl(
        "jsonl_extra_key",
        "{\"n\":1,\"s\":\"a\",\"zz\":1}\n{\"n\":2,\"s\":\"b\"}\n",
    ));
    c.push(
        jsonl(
            "jsonl_extra_key_later",
            "{\"n\":1,\"s\":\"a\"}\n{\"n\":2,\"s\":\"b\",\"zz\":1}\n",
        )
        .differs(
            false,
            "Frictionless takes the labels from the first object's keys and ignores keys that \
         first appear later; Choreo reports any key the schema lacks, wherever it appears",
        ),
    );
    c.push(
        jsonl(
            "jsonl_blank_line",
            "{\"n\":1,\"s\":\"a\"}\n\n{\"n\":2,\"s\":\"b\"}\n",
        )
        .differs(
            true,
            "Frictionless fails on an empty line (not JSON); Choreo skips whitespace-only lines",
        ),
    );
    c
}

impl Case {
    /// Replace the U+FFFD in the data with a lone 0xFF byte.
    fn with_invalid_utf8(mut self) -> Self {
        let text = String::from_utf8(self.data).unwrap();
        let mut bytes = Vec::new();
        for part in text.split('\u{FFFD}').enumerate() {
            if part.0 > 0 {
                bytes.push(0xFF);
            }
            bytes.extend(part.1.as_bytes());
        }
        self.data = bytes;
        self
    }

    fn file(&self) -> String {
        format!("{}.{}", self.name, self.ext)
    }

    fn choreo(&self) -> Report {
        let schema = TableSchema::from_json(&self.schema).expect("corpus schema");
        let (format, compression) = match self.ext {
            "jsonl" => (Format::JsonLines, Compression::None),
            "csv.gz" => (Format::Csv(CsvDialect::default()), Compression::Gzip),
            _ => (
                Format::Csv(self.dialect.map_or(CsvDialect::default(), |d| d.0)),
                Compression::None,
            ),
        };
        validate(
            &self.data[..],
            &format,
            compression,
            &schema,
            &Limits::default(),
        )
    }

    /// The `frictionless` command line for this case.
    fn frictionless_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["validate", "--json", "--encoding", "utf-8", "--schema"]
            .map(String::from)
            .into();
        args.push(format!("{}.schema.json", self.name));
        if let Some((_, dialect)) = self.dialect {
            args.extend(["--dialect".to_owned(), dialect.to_owned()]);
        }
        args.push(self.file());
        args
    }
}

/// Runs `frictionless` command lines one after the other in one Python
/// process, through the entry point the `frictionless` script itself calls
/// (`frictionless.__main__.console`), so that Python and Frictionless start
/// once rather than once per file (about a second each). Reads a JSON list of
/// argument lists on stdin; prints one JSON line per run with its output.
const DRIVER: &str = r#"
import contextlib, io, json, sys, warnings
warnings.simplefilter("ignore")
from frictionless.__main__ import console
for args in json.load(sys.stdin):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            console(args, standalone_mode=False)
        except SystemExit:
            pass
    print(json.dumps(out.getvalue()), flush=True)
"#;

/// Frictionless's verdict and error types, from its `--json` report.
fn frictionless_outcome(stdout: &str, name: &str) -> (bool, BTreeSet<String>) {
    let report: serde_json::Value = serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("{name}: frictionless printed no JSON report ({e}): {stdout}"));
    let mut types = BTreeSet::new();
    let errors = report["errors"].as_array().into_iter().flatten();
    let task_errors = report["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["errors"].as_array().into_iter().flatten());
    for e in errors.chain(task_errors) {
        types.insert(e["type"].as_str().unwrap_or("?").to_owned());
    }
    (report["valid"].as_bool().expect("a verdict"), types)
}

/// The `frictionless` command and the Python that runs it, from the
/// workspace's `.venv`; fails the test if they are not there.
fn frictionless() -> (PathBuf, PathBuf) {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin");
    let (bin, python) = (venv.join("frictionless"), venv.join("python"));
    let works = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "frictionless is not installed (looked for {}): scripts/test installs it into the \
         workspace's .venv (by hand: .venv/bin/pip install 'frictionless[json]')",
        bin.display()
    );
    (bin, python)
}

/// Run every case's command line (see [`DRIVER`]); their outputs, in order.
fn run_all(python: &Path, dir: &Path, cases: &[Case]) -> Vec<String> {
    let jobs: Vec<Vec<String>> = cases.iter().map(Case::frictionless_args).collect();
    let mut child = Command::new(python)
        .current_dir(dir)
        .args(["-c", DRIVER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(serde_json::to_string(&jobs).unwrap().as_bytes())
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().expect("frictionless runs");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<String>(l).ok())
        .collect();
    assert_eq!(
        lines.len(),
        cases.len(),
        "frictionless ran {} of {} files; stderr: {}",
        lines.len(),
        cases.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

#[test]
fn verdicts_agree_with_frictionless() {
    let (bin, python) = frictionless();
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = corpus();
    for c in &cases {
        std::fs::write(dir.path().join(c.file()), &c.data).unwrap();
        std::fs::write(
            dir.path().join(format!("{}.schema.json", c.name)),
            &c.schema,
        )
        .unwrap();
    }
    let outputs = run_all(&python, dir.path(), &cases);
    let theirs: Vec<(bool, BTreeSet<String>)> = cases
        .iter()
        .zip(&outputs)
        .map(|(c, out)| frictionless_outcome(out, &c.name))
        .collect();
    // The same as the `frictionless` command run on its own, for two files.
    for name in ["valid", "invalid_utf8"] {
        let (i, c) = cases
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
            .unwrap();
        let alone = Command::new(&bin)
            .current_dir(dir.path())
            .args(c.frictionless_args())
            .output()
            .expect("run frictionless");
        let alone = frictionless_outcome(&String::from_utf8_lossy(&alone.stdout), name);
        assert_eq!(alone, theirs[i], "{name}: the command alone says otherwise");
    }

    let mut failures = Vec::new();
    let (mut agree, mut differ) = (0, 0);
    println!(
        "{:<32} {:<8} {:<8} choreo kinds / frictionless types",
        "file", "choreo", "frictionless"
    );
    for (c, (their_valid, their_types)) in cases.iter().zip(theirs) {
        let ours = c.choreo();
        let our_kinds: BTreeSet<String> = ours.error_counts.keys().cloned().collect();
        let verdict = |v: bool| if v { "valid" } else { "INVALID" };
        println!(
            "{:<32} {:<8} {:<8} {:?} / {:?}",
            c.file(),
            verdict(ours.valid),
            verdict(their_valid),
            our_kinds,
            their_types
        );
        if let Some((choreo_valid, why)) = c.differs {
            differ += 1;
            if ours.valid != choreo_valid || their_valid == choreo_valid {
                failures.push(format!(
                    "{}: listed as a known difference (Choreo {}, Frictionless {}) but now \
                     Choreo says {} and Frictionless {}: update the corpus ({why})",
                    c.file(),
                    verdict(choreo_valid),
                    verdict(!choreo_valid),
                    verdict(ours.valid),
                    verdict(their_valid)
                ));
            }
            continue;
        }
        if ours.valid != their_valid {
            failures.push(format!(
                "{}: Choreo says {} ({}), Frictionless {} ({their_types:?})",
                c.file(),
                verdict(ours.valid),
                ours.summary(),
                verdict(their_valid)
            ));
            continue;
        }
        agree += 1;
        // Both invalid: every kind on one side has a counterpart on the other.
        // After a fatal problem Choreo stops reading, so what Frictionless
        // finds in the rest (e.g. the row an unterminated quote swallowed)
        // has no counterpart; only Choreo's side is checked then.
        let their_side = if ours.fatal.is_some() {
            BTreeSet::new()
        } else {
            their_types.clone()
        };
        for t in &their_side {
            let mapped = KINDS
                .iter()
                .find(|(f, _)| f == t)
                .map_or(&[][..], |(_, k)| *k);
            if !mapped.iter().any(|k| our_kinds.contains(*k)) {
                failures.push(format!(
                    "{}: Frictionless reports {t}, Choreo none of {mapped:?} (it reports {our_kinds:?})",
                    c.file()
                ));
            }
        }
        for k in &our_kinds {
            let counterparts: Vec<&str> = KINDS
                .iter()
                .filter(|(_, ks)| ks.contains(&k.as_str()))
                .map(|(f, _)| *f)
                .collect();
            if !counterparts.iter().any(|f| their_types.contains(*f)) {
                failures.push(format!(
                    "{}: Choreo reports {k}, Frictionless none of {counterparts:?} (it reports {their_types:?})",
                    c.file()
                ));
            }
        }
    }
    println!(
        "{} files: {agree} agree, {differ} known differences (listed in the corpus with reasons)",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "disagreements:\n{}",
        failures.join("\n")
    );
}
