//! The batch's rules, compiled once from its Table Schema: the checks (the validator's own casts and
//! constraints, [`Casts`]), the masked fields, and the primary key; and the two things they do to a
//! value besides checking it: [`mask`] a personal one, and encode a key's part so that keys compare
//! as the values they cast to.

use arrow_schema::DataType;
use choreo_validation::{Cast, Casts, FieldType, TableSchema};
use sha2::{Digest, Sha256};

/// The column naming each row's file.
pub(crate) const FILE_ID: &str = "_file_id";

/// Lowercase hex SHA-256 of the salt followed by the value (what the Glue script's
/// `sha2(concat(salt, value), 256)` gives).
pub fn mask(salt: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(value.as_bytes());
    hex::encode(h.finalize())
}

/// The batch's rules, compiled once: the checks, the masked fields and the key.
pub(crate) struct Rules {
    pub(crate) casts: Casts,
    /// The schema's fields' names, in order: the output's columns (before [`FILE_ID`]).
    pub(crate) names: Vec<String>,
    /// Per field: masked (personal data).
    pub(crate) masked: Vec<bool>,
    /// The primary key's field indexes; empty when the schema has none.
    pub(crate) key: Vec<usize>,
    pub(crate) salt: String,
}

impl Rules {
    pub(crate) fn new(
        schema: &TableSchema,
        personal: &[String],
        salt: &str,
    ) -> Result<Rules, String> {
        let casts = Casts::new(schema).map_err(|e| format!("bad Table Schema: {e}"))?;
        let names: Vec<String> = schema.fields.iter().map(|f| f.name.clone()).collect();
        if names.iter().any(|n| n == FILE_ID) {
            return Err(format!(
                "the schema has a field {FILE_ID:?}, the column the transform adds"
            ));
        }
        let mut masked = vec![false; names.len()];
        for p in personal {
            let i = casts
                .index(p)
                .ok_or_else(|| format!("personal_data names {p:?}, which is not a field"))?;
            masked[i] = true;
        }
        if masked.contains(&true) && salt.is_empty() {
            return Err("personal_data needs transform.mask_salt".into());
        }
        let key = match &schema.primary_key {
            None => Vec::new(),
            Some(k) => k
                .names()
                .iter()
                .map(|n| casts.index(n).ok_or_else(|| format!("no key field {n:?}")))
                .collect::<Result<_, _>>()?,
        };
        Ok(Rules {
            casts,
            names,
            masked,
            key,
            salt: salt.to_string(),
        })
    }

    /// The Arrow type of field `i`: masked values are text whatever their type.
    pub(crate) fn arrow_type(&self, i: usize) -> DataType {
        if self.masked[i] {
            return DataType::Utf8;
        }
        match self.casts.field_type(i) {
            FieldType::Integer => DataType::Int64,
            FieldType::Number => DataType::Float64,
            FieldType::Boolean => DataType::Boolean,
            _ => DataType::Utf8,
        }
    }
}

/// Appends one part of a primary key, as cast (so that `01` and `1` in an integer field are one
/// key), to `out`: a tag byte, then the value; text is length-prefixed, so no two keys encode alike.
pub(crate) fn encode_key_part(out: &mut Vec<u8>, value: &Cast<'_>) {
    match value {
        Cast::Null => out.push(0),
        Cast::Int(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Cast::Num(v) => {
            out.push(2);
            let bits = if *v == 0.0 { 0 } else { v.to_bits() }; // -0 is 0
            out.extend_from_slice(&bits.to_le_bytes());
        }
        Cast::Bool(v) => out.extend_from_slice(&[3, *v as u8]),
        Cast::Text(t) => {
            out.push(4);
            out.extend_from_slice(&(t.len() as u64).to_le_bytes());
            out.extend_from_slice(t.as_bytes());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use choreo_validation::SchemaCheck;

    /// The schema of most tests: five fields of five types, `id` the primary key.
    pub(crate) fn schema() -> TableSchema {
        TableSchema::from_json(
            r#"{"fields":[
                {"name":"id","type":"integer"},
                {"name":"email","type":"string","constraints":{"required":true}},
                {"name":"amount","type":"number","constraints":{"minimum":0}},
                {"name":"vip","type":"boolean"},
                {"name":"day","type":"date"}
              ],
              "missingValues":["","NA"],
              "primaryKey":"id"}"#,
        )
        .unwrap()
    }

    #[test]
    fn batches_refuse_what_they_cannot_do() {
        let err = |personal: &[&str], salt: &str| {
            let p: Vec<String> = personal.iter().map(|s| s.to_string()).collect();
            Rules::new(&schema(), &p, salt).err().unwrap()
        };
        assert!(err(&["phone"], "s").contains("phone"));
        assert!(err(&["email"], "").contains("mask_salt"));
        let s = TableSchema::from_json(r#"{"fields":[{"name":"_file_id"}]}"#).unwrap();
        assert!(Rules::new(&s, &[], "").is_err());
    }
}
