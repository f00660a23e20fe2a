//! The Frictionless Table Schema as data: [`TableSchema`], [`Field`], [`FieldType`],
//! [`Constraints`], [`PrimaryKey`], and [`SchemaError`] for a schema that cannot be used; and how a
//! dataset's files are written: [`Format`], [`CsvDialect`], [`Compression`].
//!
//! Data only, so that the crates describing datasets (the domain's configuration, catalogue and
//! manifests) need no validation engine. Checking that a schema is usable (regexes compile, field
//! names are distinct, constraints suit the field's type and cast in it) compiles it, which is the
//! engine's work: `choreo_validation::SchemaCheck`.

use serde::{Deserialize, Serialize};

/// A Frictionless Table Schema (<https://specs.frictionlessdata.io/table-schema/>).
/// Unknown properties (title, description, foreignKeys, ...) are ignored.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TableSchema {
    pub fields: Vec<Field>,
    /// Cell texts that mean "no value". Default `[""]`.
    #[serde(default = "default_missing")]
    pub missing_values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<PrimaryKey>,
}

fn default_missing() -> Vec<String> {
    vec![String::new()]
}

/// One column of the table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Field {
    pub name: String,
    #[serde(rename = "type", default)]
    pub field_type: FieldType,
    /// Type-specific: `default`, `any`, a strftime pattern for dates and times
    /// (a legacy `fmt:` prefix is accepted), `email`/`uri`/`uuid`/`binary` for strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default)]
    pub constraints: Constraints,
    /// Boolean texts meaning true. Default `["true", "True", "TRUE", "1"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub true_values: Option<Vec<String>>,
    /// Boolean texts meaning false. Default `["false", "False", "FALSE", "0"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_values: Option<Vec<String>>,
}

impl Field {
    /// A field of `field_type` with no format and no constraints.
    pub fn new(name: impl Into<String>, field_type: FieldType) -> Self {
        Field {
            name: name.into(),
            field_type,
            format: None,
            constraints: Constraints::default(),
            true_values: None,
            false_values: None,
        }
    }
}

/// The supported field types. An unknown type is a deserialization error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
    Date,
    Datetime,
    Time,
    Year,
    Any,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::Datetime => "datetime",
            FieldType::Time => "time",
            FieldType::Year => "year",
            FieldType::Any => "any",
        }
    }
}

/// Field constraints. `minimum`/`maximum`/`enum` values are JSON numbers or
/// strings that cast in the field's type (e.g. `"2024-01-01"` for a date).
/// JSON numbers are read as 64-bit integers or floats, so an integer bound
/// beyond 64 bits is exact only as a string (`"minimum": "-9223372036854775809"`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Constraints {
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub unique: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// A regex the whole cell must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(rename = "enum", default, skip_serializing_if = "Option::is_none")]
    pub r#enum: Option<Vec<serde_json::Value>>,
}

/// `primaryKey`: one field name or several.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum PrimaryKey {
    One(String),
    Many(Vec<String>),
}

impl PrimaryKey {
    /// The key's field names, in order.
    pub fn names(&self) -> Vec<&str> {
        match self {
            PrimaryKey::One(n) => vec![n.as_str()],
            PrimaryKey::Many(ns) => ns.iter().map(String::as_str).collect(),
        }
    }
}

/// Why a schema cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema is not valid JSON for a Table Schema: {0}")]
    Json(#[from] serde_json::Error),
    #[error("schema has no fields")]
    NoFields,
    #[error("schema has two fields named {0:?}")]
    DuplicateField(String),
    #[error("field {field:?}: pattern {pattern:?} is not a valid regex: {message}")]
    BadPattern {
        field: String,
        pattern: String,
        message: String,
    },
    #[error("field {field:?}: format {format:?} is not supported for type {field_type}")]
    BadFormat {
        field: String,
        format: String,
        field_type: &'static str,
    },
    #[error("field {field:?}: constraint {constraint} {message}")]
    BadConstraint {
        field: String,
        constraint: &'static str,
        message: String,
    },
    #[error("primaryKey names {0:?}, which is not a field")]
    UnknownKeyField(String),
    #[error("primaryKey is empty")]
    EmptyKey,
}

impl TableSchema {
    /// Parse a schema from JSON text, unchecked: `choreo_validation::SchemaCheck::from_json` also
    /// checks that it is usable.
    pub fn parse(s: &str) -> Result<Self, SchemaError> {
        Ok(serde_json::from_str(s)?)
    }

    /// The field named `name`, if any.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// How the object's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    /// Zstandard (multi-frame; the validator bounds its window: `ZSTD_MAX_WINDOW_LOG`).
    Zstd,
}

impl Compression {
    /// The compression a key's suffix names (`.gz`, `.zst`, in any case); none otherwise. The one
    /// rule for a dataset whose compression is `auto` and for `choreo validate`.
    pub fn from_key(key: &str) -> Compression {
        let ends_with = |suffix: &str| {
            key.len() >= suffix.len()
                && key.as_bytes()[key.len() - suffix.len()..]
                    .eq_ignore_ascii_case(suffix.as_bytes())
        };
        if ends_with(".gz") {
            Compression::Gzip
        } else if ends_with(".zst") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The object's format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    Csv(CsvDialect),
    JsonLines,
}

/// CSV dialect. Quotes are RFC 4180 style (doubled to escape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CsvDialect {
    pub delimiter: u8,
    pub quote: u8,
    /// Whether the first row names the columns.
    pub header: bool,
}

impl Default for CsvDialect {
    fn default() -> Self {
        CsvDialect {
            delimiter: b',',
            quote: b'"',
            header: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_suffix_names_its_compression_in_any_case() {
        assert_eq!(Compression::from_key("d/a.csv.gz"), Compression::Gzip);
        assert_eq!(Compression::from_key("d/A.CSV.GZ"), Compression::Gzip);
        assert_eq!(Compression::from_key("d/a.jsonl.zst"), Compression::Zstd);
        assert_eq!(Compression::from_key("d/a.csv"), Compression::None);
        assert_eq!(Compression::from_key("gz"), Compression::None);
        assert_eq!(Compression::from_key("d/a.gzip"), Compression::None);
    }
}
