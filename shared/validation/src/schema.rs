//! The Frictionless Table Schema as data: [`TableSchema`], [`Field`],
//! [`FieldType`], [`Constraints`], [`PrimaryKey`], and [`SchemaError`] for a
//! schema that cannot be used. Loading a schema also checks it (regexes
//! compile, field names are distinct, constraints suit the field's type and
//! cast in it) by compiling it once, the same way [`crate::validate`] does.

use std::io::Read;

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
    /// Parse and check a schema from JSON text.
    pub fn from_json(s: &str) -> Result<Self, SchemaError> {
        let schema: TableSchema = serde_json::from_str(s)?;
        schema.check()?;
        Ok(schema)
    }

    /// Parse and check a schema from a reader of JSON text.
    pub fn from_json_reader<R: Read>(r: R) -> Result<Self, SchemaError> {
        let schema: TableSchema = serde_json::from_reader(r)?;
        schema.check()?;
        Ok(schema)
    }

    /// The field named `name`, if any.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_schema() {
        let s = TableSchema::from_json(
            r#"{"fields":[
                {"name":"id","type":"integer","constraints":{"required":true,"unique":true,"minimum":1}},
                {"name":"when","type":"date","format":"%d/%m/%Y","constraints":{"maximum":"31/12/2030"}},
                {"name":"code","constraints":{"pattern":"[A-Z]{3}","enum":["ABC","XYZ"],"minLength":3}}
              ],
              "missingValues":["","NA"],
              "primaryKey":"id"}"#,
        )
        .unwrap();
        assert_eq!(s.fields.len(), 3);
        assert_eq!(s.fields[2].field_type, FieldType::String);
        assert_eq!(s.missing_values, vec!["", "NA"]);
        assert_eq!(s.primary_key.as_ref().unwrap().names(), vec!["id"]);
        assert_eq!(s.fields[2].constraints.r#enum.as_ref().unwrap().len(), 2);
        assert_eq!(s.fields[2].constraints.min_length, Some(3));
    }

    #[test]
    fn defaults_and_composite_key() {
        let s = TableSchema::from_json(
            r#"{"fields":[{"name":"a"},{"name":"b","type":"year"}],"primaryKey":["a","b"]}"#,
        )
        .unwrap();
        assert_eq!(s.missing_values, vec![""]);
        assert_eq!(s.primary_key.unwrap().names(), vec!["a", "b"]);
    }

    #[test]
    fn rejects_unknown_type() {
        let e = TableSchema::from_json(r#"{"fields":[{"name":"a","type":"geopoint"}]}"#);
        assert!(matches!(e, Err(SchemaError::Json(_))), "{e:?}");
    }

    #[test]
    fn rejects_bad_pattern() {
        let e = TableSchema::from_json(
            r#"{"fields":[{"name":"a","constraints":{"pattern":"([a-z"}}]}"#,
        )
        .unwrap_err();
        assert!(
            matches!(e, SchemaError::BadPattern { ref field, .. } if field == "a"),
            "{e}"
        );
        assert!(e.to_string().contains("not a valid regex"));
    }

    #[test]
    fn rejects_duplicate_fields() {
        let e = TableSchema::from_json(r#"{"fields":[{"name":"a"},{"name":"a"}]}"#).unwrap_err();
        assert!(
            matches!(e, SchemaError::DuplicateField(ref n) if n == "a"),
            "{e}"
        );
    }

    #[test]
    fn rejects_unknown_key_field_and_bad_constraints() {
        let e =
            TableSchema::from_json(r#"{"fields":[{"name":"a"}],"primaryKey":"b"}"#).unwrap_err();
        assert!(
            matches!(e, SchemaError::UnknownKeyField(ref n) if n == "b"),
            "{e}"
        );
        let e = TableSchema::from_json(
            r#"{"fields":[{"name":"a","type":"integer","constraints":{"minimum":"x"}}]}"#,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                SchemaError::BadConstraint {
                    constraint: "minimum",
                    ..
                }
            ),
            "{e}"
        );
        let e = TableSchema::from_json(
            r#"{"fields":[{"name":"a","type":"integer","constraints":{"maxLength":3}}]}"#,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                SchemaError::BadConstraint {
                    constraint: "maxLength",
                    ..
                }
            ),
            "{e}"
        );
        let e = TableSchema::from_json(r#"{"fields":[{"name":"a","type":"date","format":"%Q"}]}"#)
            .unwrap_err();
        assert!(matches!(e, SchemaError::BadFormat { .. }), "{e}");
        let e =
            TableSchema::from_json(r#"{"fields":[{"name":"a","format":"phone"}]}"#).unwrap_err();
        assert!(matches!(e, SchemaError::BadFormat { .. }), "{e}");
        assert!(matches!(
            TableSchema::from_json(r#"{"fields":[]}"#),
            Err(SchemaError::NoFields)
        ));
    }
}
