//! One cell at a time: [`Casts`], a schema compiled to check and type single values, for callers
//! that keep rows rather than report on a whole file (the built-in transform). The casts and
//! constraints are [`crate::validate`]'s own, so a row kept here is one the validator accepts;
//! uniqueness is left out, because what a repeat means is the caller's to decide.

use std::borrow::Cow;

use crate::cell::{Cell, JsonCell, Text};
use crate::check::Checker;
use crate::report::RowError;
use crate::schema::{FieldType, SchemaError, TableSchema};
use crate::types::Value;

/// A value that passed its field's checks, in the type it is stored as.
#[derive(Debug, Clone, PartialEq)]
pub enum Cast<'a> {
    /// No value (one of `missingValues`, a JSON null or an absent key) in a field that allows it.
    Null,
    Int(i64),
    Num(f64),
    Bool(bool),
    /// Strings, and every type without a column type of its own here (dates, times, years, `any`),
    /// as the text given.
    Text(Cow<'a, str>),
}

/// See the module docs.
#[derive(Debug)]
pub struct Casts {
    checker: Checker,
}

impl Casts {
    /// Compiles `schema` (which [`TableSchema::from_json`] has already checked).
    pub fn new(schema: &TableSchema) -> Result<Casts, SchemaError> {
        Ok(Casts {
            checker: Checker::new(schema, 0)?,
        })
    }

    /// The index of the field named `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.checker.field_index(name)
    }

    /// The type of field `field` (an index in schema order).
    pub fn field_type(&self, field: usize) -> FieldType {
        self.checker.fields[field].field_type()
    }

    /// Checks a CSV cell's text for field `field`.
    pub fn text<'a>(&self, field: usize, text: &'a str) -> Result<Cast<'a>, RowError> {
        let value = self.checker.check_value(field, Cell::Text(Text(text)))?;
        Self::typed(self.field_type(field), value, Cow::Borrowed(text))
    }

    /// Checks a JSON value for field `field`; `None` is an absent key.
    pub fn json<'a>(
        &self,
        field: usize,
        value: Option<&'a serde_json::Value>,
    ) -> Result<Cast<'a>, RowError> {
        use serde_json::Value as J;
        let cell = match value {
            None | Some(J::Null) => JsonCell::Null,
            Some(J::Bool(b)) => JsonCell::Bool(*b),
            Some(J::Number(n)) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => JsonCell::I64(i),
                (None, Some(u), _) => JsonCell::U64(u),
                (None, None, Some(f)) => JsonCell::F64(f),
                // An arbitrary-precision number serde_json cannot hold: as text.
                _ => JsonCell::Str(Cow::Owned(n.to_string())),
            },
            Some(J::String(s)) => JsonCell::Str(Cow::Borrowed(s)),
            Some(complex) => JsonCell::Complex(complex.clone()),
        };
        let checked = self.checker.check_value(field, Cell::Json(&cell))?;
        let raw = match value {
            Some(J::String(s)) => Cow::Borrowed(s.as_str()),
            _ => Cow::Owned(cell.text().into_owned()),
        };
        Self::typed(self.field_type(field), checked.map(Value::into_owned), raw)
    }

    fn typed<'a>(
        ty: FieldType,
        value: Option<Value<'_>>,
        raw: Cow<'a, str>,
    ) -> Result<Cast<'a>, RowError> {
        Ok(match value {
            None => Cast::Null,
            Some(Value::Int(v)) => Cast::Int(i64::try_from(v).map_err(|_| too_big(&raw))?),
            // A JSON float with an integral value beyond i128, in an integer field.
            Some(Value::Num(_)) if ty == FieldType::Integer => return Err(too_big(&raw)),
            Some(Value::Num(v)) => Cast::Num(v),
            Some(Value::Bool(v)) => Cast::Bool(v),
            Some(_) => Cast::Text(raw),
        })
    }
}

fn too_big(raw: &str) -> RowError {
    RowError {
        row: None,
        field: None,
        kind: crate::ErrorKind::TypeError,
        message: format!("integer {raw} does not fit in 64 bits"),
        value: Some(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::SchemaCheck;

    fn casts() -> Casts {
        let schema = TableSchema::from_json(
            r#"{"fields":[
                {"name":"id","type":"integer","constraints":{"minimum":1}},
                {"name":"price","type":"number"},
                {"name":"ok","type":"boolean"},
                {"name":"day","type":"date"},
                {"name":"code","constraints":{"pattern":"[A-Z]{2}"}},
                {"name":"note","constraints":{"required":true}}
              ],
              "missingValues":["","NA"],
              "primaryKey":"id"}"#,
        )
        .unwrap();
        Casts::new(&schema).unwrap()
    }

    #[test]
    fn text_cells_cast_in_their_type() {
        let c = casts();
        assert_eq!(c.text(0, "42").unwrap(), Cast::Int(42));
        assert_eq!(c.text(1, "1.5").unwrap(), Cast::Num(1.5));
        assert_eq!(c.text(2, "TRUE").unwrap(), Cast::Bool(true));
        assert_eq!(
            c.text(3, "2026-01-02").unwrap(),
            Cast::Text("2026-01-02".into())
        );
        assert_eq!(c.text(4, "AB").unwrap(), Cast::Text("AB".into()));
        assert_eq!(c.text(1, "NA").unwrap(), Cast::Null);
        assert_eq!(c.field_type(3), FieldType::Date);
        assert_eq!(c.index("code"), Some(4));
    }

    #[test]
    fn bad_cells_say_why() {
        let c = casts();
        assert_eq!(c.text(0, "x").unwrap_err().kind, ErrorKind::TypeError);
        assert_eq!(c.text(0, "0").unwrap_err().kind, ErrorKind::Minimum);
        // The primary key is required.
        assert_eq!(c.text(0, "").unwrap_err().kind, ErrorKind::Required);
        assert_eq!(c.text(4, "abc").unwrap_err().kind, ErrorKind::Pattern);
        assert_eq!(c.text(5, "NA").unwrap_err().kind, ErrorKind::Required);
        assert_eq!(
            c.text(3, "2026-13-01").unwrap_err().kind,
            ErrorKind::TypeError
        );
        assert_eq!(
            c.text(0, "99999999999999999999").unwrap_err().kind,
            ErrorKind::TypeError
        );
    }

    #[test]
    fn json_values_cast_in_their_type() {
        let c = casts();
        let v: serde_json::Value =
            serde_json::json!({"id": 7, "price": 2, "ok": false, "code": "XY", "s": "3"});
        assert_eq!(c.json(0, v.get("id")).unwrap(), Cast::Int(7));
        assert_eq!(c.json(0, v.get("s")).unwrap(), Cast::Int(3));
        assert_eq!(c.json(1, v.get("price")).unwrap(), Cast::Num(2.0));
        assert_eq!(c.json(2, v.get("ok")).unwrap(), Cast::Bool(false));
        assert_eq!(c.json(4, v.get("code")).unwrap(), Cast::Text("XY".into()));
        assert_eq!(c.json(1, None).unwrap(), Cast::Null);
        assert_eq!(c.json(5, None).unwrap_err().kind, ErrorKind::Required);
        assert_eq!(
            c.json(0, v.get("ok")).unwrap_err().kind,
            ErrorKind::TypeError
        );
    }
}
