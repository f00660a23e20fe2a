//! The demo: a configuration with two datasets like the first seed's — a daily dataset of small CSV
//! files and a monthly dataset of larger gzipped JSON Lines files — and sample files, valid and invalid
//! in several ways. Everything is generated deterministically, so every run of the demo is the same,
//! except the dashboard's API token and the mask salt: fresh random ones per configuration written.

use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::Path;

pub const CONFIG_FILE: &str = "choreo.toml";

const CONFIG: &str = r#"# Choreo demo configuration, written by `choreo up --demo`. Edit freely: it is read on every start.
# Relative paths are relative to this file.
backend = "local"
data_dir = "."

[runtime]
poll_interval_secs = 1     # seconds between two polls of a running crawl or job

[operations]
listen = "127.0.0.1:8080"  # the auditor's API and dashboard; `choreo up` prints the link
api_token = "{API_TOKEN}"  # every API call needs it as a bearer token; random, written once

[transform]
mask_salt = "{MASK_SALT}"  # hashed with personal_data values (SHA-256); random, written once

[[datasets]]
name = "sales_daily"                 # daily files of orders, 1 per day
match = { prefix = "daily/" }
format = "csv"
schema = "schemas/sales_daily.json"
personal_data = ["email"]            # written to the curated bucket as a salted hash
batch_window_secs = 2                # files are cut into batches 2 s after the first is valid...
batch_max_files = 50                 # ...at most 50 files (one job run) a batch

[[datasets]]
name = "inventory_monthly"           # monthly warehouse snapshots, larger, gzipped JSON Lines
match = { prefix = "monthly/", pattern = "monthly/*.jsonl*" }
format = "jsonl"
schema = "schemas/inventory_monthly.json"
batch_window_secs = 2
batch_max_files = 10
"#;

const SALES_SCHEMA: &str = r#"{
  "fields": [
    {"name": "order_id", "type": "integer", "constraints": {"required": true, "unique": true}},
    {"name": "order_date", "type": "date", "constraints": {"required": true}},
    {"name": "customer", "type": "string", "constraints": {"required": true, "maxLength": 80}},
    {"name": "email", "type": "string", "format": "email"},
    {"name": "amount", "type": "number", "constraints": {"required": true, "minimum": 0}},
    {"name": "currency", "type": "string", "constraints": {"required": true, "enum": ["EUR", "USD", "GBP"]}},
    {"name": "quantity", "type": "integer", "constraints": {"minimum": 1}}
  ],
  "primaryKey": "order_id",
  "missingValues": [""]
}
"#;

const INVENTORY_SCHEMA: &str = r#"{
  "fields": [
    {"name": "sku", "type": "string", "constraints": {"required": true, "pattern": "SKU-[0-9]{6}"}},
    {"name": "snapshot_date", "type": "date", "constraints": {"required": true}},
    {"name": "warehouse", "type": "string", "constraints": {"required": true, "enum": ["MXP", "FRA", "DUB"]}},
    {"name": "on_hand", "type": "integer", "constraints": {"required": true, "minimum": 0}},
    {"name": "unit_cost", "type": "number"},
    {"name": "discontinued", "type": "boolean"}
  ]
}
"#;

/// Writes the demo schemas into `dir` and the demo configuration as `dir/file_name`. Returns the
/// configuration file's path.
pub fn write_config(dir: &Path, file_name: &str) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir.join("schemas"))?;
    std::fs::write(dir.join("schemas/sales_daily.json"), SALES_SCHEMA)?;
    std::fs::write(dir.join("schemas/inventory_monthly.json"), INVENTORY_SCHEMA)?;
    let path = dir.join(file_name);
    let config = CONFIG
        .replace("{API_TOKEN}", &api_token())
        .replace("{MASK_SALT}", &api_token());
    write_private(&path, config.as_bytes())?;
    Ok(path)
}

/// Writes a file only its owner can read or write (0600 on Unix): for files that hold secrets, such
/// as a configuration with the API token and the mask salt. A file already there is truncated and
/// its mode tightened before anything is written into it.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // `mode` applies to a file created now; one that existed keeps its own until told.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()
}

/// 192 random bits, hex-encoded: what the demo's dashboard asks for, and its mask salt.
fn api_token() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

/// What a sample file is, and what the pipeline should make of it.
pub struct Sample {
    pub key: String,
    pub body: Vec<u8>,
    /// `None` for a valid file; else what makes it invalid.
    pub defect: Option<&'static str>,
}

/// A small deterministic generator (a linear congruential one): the demo needs variety, not entropy.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NAMES: [&str; 8] = [
    "Ada Rossi",
    "Bruno Keller",
    "Chiara Neri",
    "Dmitri Orlov",
    "Elena Marin",
    "Farid Haddad",
    "Greta Lind",
    "Hugo Blanc",
];
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
const WAREHOUSES: [&str; 3] = ["MXP", "FRA", "DUB"];

fn sales_csv(day: u32, rows: u64, seed: u64) -> String {
    let mut r = Lcg(seed);
    let mut out = String::from("order_id,order_date,customer,email,amount,currency,quantity\n");
    for i in 0..rows {
        let name = NAMES[r.below(NAMES.len() as u64) as usize];
        let email = name.to_lowercase().replace(' ', ".") + "@example.com";
        out.push_str(&format!(
            "{},2026-11-{:02},\"{}\",{},{}.{:02},{},{}\n",
            u64::from(day) * 1_000_000 + i,
            day,
            name,
            email,
            r.below(5000),
            r.below(100),
            CURRENCIES[r.below(3) as usize],
            1 + r.below(9)
        ));
    }
    out
}

fn inventory_jsonl(month: u32, rows: u64, seed: u64) -> String {
    let mut r = Lcg(seed);
    let mut out = String::new();
    for i in 0..rows {
        out.push_str(&format!(
            "{{\"sku\":\"SKU-{:06}\",\"snapshot_date\":\"2026-{:02}-28\",\"warehouse\":\"{}\",\"on_hand\":{},\"unit_cost\":{}.{:02},\"discontinued\":{}}}\n",
            i,
            month,
            WAREHOUSES[r.below(3) as usize],
            r.below(10_000),
            r.below(500),
            r.below(100),
            r.below(20) == 0
        ));
    }
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

/// The sample files: valid daily and monthly files, and invalid ones of several kinds.
pub fn samples() -> Vec<Sample> {
    let valid = |key: String, body: Vec<u8>| Sample {
        key,
        body,
        defect: None,
    };
    let invalid = |key: &str, body: Vec<u8>, defect| Sample {
        key: key.to_string(),
        body,
        defect: Some(defect),
    };
    let mut out = Vec::new();
    for day in 1..=5 {
        out.push(valid(
            format!("daily/2026-11-{day:02}.csv"),
            sales_csv(day, 500 + 300 * u64::from(day), u64::from(day)).into_bytes(),
        ));
    }
    out.push(valid(
        "daily/2026-11-06.csv.gz".into(),
        gzip(sales_csv(6, 2000, 6).as_bytes()),
    ));
    for month in [9, 10] {
        out.push(valid(
            format!("monthly/2026-{month:02}.jsonl.gz"),
            gzip(inventory_jsonl(month, 40_000, u64::from(month)).as_bytes()),
        ));
    }

    let mut bad_types = sales_csv(7, 50, 7);
    bad_types.push_str("7000050,2026-13-45,\"Ada Rossi\",ada@example.com,twelve,EUR,1\n");
    out.push(invalid(
        "daily/2026-11-07.csv",
        bad_types.into_bytes(),
        "bad types",
    ));

    let missing_column: String = sales_csv(8, 50, 8)
        .lines()
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            format!("{},{}\n", cells[..5].join(","), cells[6])
        })
        .collect();
    out.push(invalid(
        "daily/2026-11-08.csv",
        missing_column.into_bytes(),
        "missing column",
    ));

    let mut ragged = sales_csv(9, 30, 9);
    ragged.push_str("9000030,2026-11-09,\"Hugo Blanc\"\n");
    out.push(invalid(
        "daily/2026-11-09.csv",
        ragged.into_bytes(),
        "ragged rows",
    ));

    out.push(invalid("daily/2026-11-10.csv", Vec::new(), "empty file"));

    let mut r = Lcg(11);
    let garbage: Vec<u8> = (0..4096).map(|_| r.below(256) as u8).collect();
    out.push(invalid("daily/2026-11-11.csv", garbage, "binary garbage"));

    let mut latin1 = sales_csv(12, 20, 12).into_bytes();
    latin1.extend_from_slice(
        b"12000020,2026-11-12,\"Jos\xe9 Pe\xf1a\",jose@example.com,10.00,EUR,1\n",
    );
    out.push(invalid("daily/2026-11-12.csv", latin1, "invalid UTF-8"));

    let mut truncated = gzip(sales_csv(13, 400, 13).as_bytes());
    truncated.truncate(truncated.len() / 2);
    out.push(invalid(
        "daily/2026-11-13.csv.gz",
        truncated,
        "truncated gzip",
    ));

    let mut bad_line = inventory_jsonl(11, 200, 11);
    bad_line.push_str("{\"sku\": \"SKU-000200\", \"snapshot_date\": \n");
    out.push(invalid(
        "monthly/2026-11.jsonl",
        bad_line.into_bytes(),
        "a bad JSON line",
    ));

    out.push(invalid(
        "misc/notes.txt",
        b"these notes belong to no dataset\n".to_vec(),
        "a key that matches no dataset",
    ));
    out
}
