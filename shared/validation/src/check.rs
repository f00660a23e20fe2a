//! The schema compiled for checking rows: one [`FieldCheck`] per field
//! (caster, parsed bounds and enum, anchored regex) and the row-level state
//! for `unique` and `primaryKey`. Both parsers hand each row to
//! [`Checker::check_row`] as a function from field index to [`Cell`].
//!
//! Uniqueness is tracked as a `HashSet<u64>` of 64-bit SipHash values of the
//! cast values (cast, so `01` and `1` collide in an integer field): 8 bytes
//! of payload per distinct value per unique field or primary key, plus the
//! hash table's overhead (a control byte and up to 2x slack while growing).
//! The total count across all sets is capped at `Limits::max_unique_tracked`
//! (default 4,000,000 ≈ 32 MB of hashes); past it the sets are dropped,
//! uniqueness is no longer checked, and the report says so in `notes`.
//! With 64-bit hashes a false duplicate is possible but unlikely (about
//! 1 in 2 million at 4 million values).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

use regex::Regex;

use crate::jsonl::JsonCell;
use crate::report::{Collector, ErrorKind, clip, clip_cow};
use crate::schema::{FieldType, SchemaError, TableSchema};
use crate::types::{Caster, Value};

/// A hasher for keys that already are hashes.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type HashSet64 = HashSet<u64, BuildHasherDefault<IdHasher>>;

/// One cell as a parser sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell<'a> {
    /// The column is absent from the file (already reported once): skip.
    Skip,
    /// No value: a JSON key that is absent or null.
    Missing,
    /// CSV text (missing if it is one of `missingValues`).
    Text(&'a str),
    /// A JSON value.
    Json(&'a JsonCell<'a>),
}

impl<'a> Cell<'a> {
    fn raw(&self) -> Cow<'a, str> {
        match *self {
            Cell::Text(s) => Cow::Borrowed(s),
            Cell::Json(j) => j.text(),
            Cell::Skip | Cell::Missing => Cow::Borrowed(""),
        }
    }
}

/// One field, compiled.
#[derive(Debug)]
pub(crate) struct FieldCheck {
    pub(crate) name: String,
    caster: Caster,
    format: Option<String>,
    required: bool,
    unique: bool,
    min: Option<(Value<'static>, String)>,
    max: Option<(Value<'static>, String)>,
    min_len: Option<usize>,
    max_len: Option<usize>,
    pattern: Option<(Regex, String)>,
    enum_values: Option<(Vec<Value<'static>>, String)>,
}

impl FieldCheck {
    pub(crate) fn field_type(&self) -> FieldType {
        self.caster.ty
    }

    pub(crate) fn cast<'a>(&self, s: &'a str) -> Option<Value<'a>> {
        self.caster.cast_str(s)
    }
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Checker {
    pub(crate) fields: Vec<FieldCheck>,
    by_name: HashMap<String, usize>,
    missing: Vec<String>,
    unique: Vec<Option<HashSet64>>,
    /// Key field indexes, in key order, and the set of key hashes.
    pk: Option<(Vec<usize>, HashSet64)>,
    /// For each field, its position in the primary key.
    pk_pos: Vec<Option<usize>>,
    pk_parts: Vec<u64>,
    tracked: usize,
    max_tracked: usize,
    tracking: bool,
}

fn hash_value(v: &Value<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash_into(&mut h);
    h.finish()
}

fn supports(ty: FieldType, constraint: &str) -> bool {
    use FieldType::*;
    match constraint {
        "minimum" | "maximum" => matches!(ty, Integer | Number | Date | Datetime | Time | Year),
        "minLength" | "maxLength" | "pattern" => ty == String,
        _ => true,
    }
}

impl Checker {
    /// Compile `schema`; this is also how a schema is checked.
    pub(crate) fn new(schema: &TableSchema, max_tracked: usize) -> Result<Checker, SchemaError> {
        if schema.fields.is_empty() {
            return Err(SchemaError::NoFields);
        }
        let mut by_name = HashMap::new();
        let mut fields = Vec::with_capacity(schema.fields.len());
        for (i, field) in schema.fields.iter().enumerate() {
            if by_name.insert(field.name.clone(), i).is_some() {
                return Err(SchemaError::DuplicateField(field.name.clone()));
            }
            let caster = Caster::new(field)?;
            let c = &field.constraints;
            let ty = field.field_type;
            let bad = |constraint: &'static str, message: String| SchemaError::BadConstraint {
                field: field.name.clone(),
                constraint,
                message,
            };
            let given = [
                ("minimum", c.minimum.is_some()),
                ("maximum", c.maximum.is_some()),
                ("minLength", c.min_length.is_some()),
                ("maxLength", c.max_length.is_some()),
                ("pattern", c.pattern.is_some()),
            ];
            for (name, present) in given {
                if present && !supports(ty, name) {
                    return Err(bad(
                        name,
                        format!("is not supported for type {}", ty.as_str()),
                    ));
                }
            }
            let bound = |name: &'static str, v: &Option<serde_json::Value>| {
                v.as_ref()
                    .map(|v| {
                        caster
                            .cast_constraint(v)
                            .map(|cast| (cast, v.to_string()))
                            .ok_or_else(|| bad(name, format!("{v} is not a valid {}", ty.as_str())))
                    })
                    .transpose()
            };
            let min = bound("minimum", &c.minimum)?;
            let max = bound("maximum", &c.maximum)?;
            let pattern = match &c.pattern {
                None => None,
                Some(p) => {
                    let compile = |src: &str| {
                        Regex::new(src).map_err(|e| SchemaError::BadPattern {
                            field: field.name.clone(),
                            pattern: p.clone(),
                            message: e.to_string(),
                        })
                    };
                    compile(p)?; // alone first, so `a)|(b` cannot escape the anchoring group
                    Some((compile(&format!(r"\A(?:{p})\z"))?, p.clone()))
                }
            };
            let enum_values = match &c.r#enum {
                None => None,
                Some(list) => {
                    let mut values = Vec::with_capacity(list.len());
                    for v in list {
                        values.push(caster.cast_constraint(v).ok_or_else(|| {
                            bad("enum", format!("value {v} is not a valid {}", ty.as_str()))
                        })?);
                    }
                    let mut shown = serde_json::to_string(list).unwrap_or_default();
                    if shown.len() > 200 {
                        let cut = (0..=200)
                            .rev()
                            .find(|&i| shown.is_char_boundary(i))
                            .unwrap_or(0);
                        shown.truncate(cut);
                        shown.push_str("...");
                    }
                    Some((values, shown))
                }
            };
            fields.push(FieldCheck {
                name: field.name.clone(),
                caster,
                format: field.format.clone().filter(|f| f != "default"),
                required: c.required,
                unique: c.unique,
                min,
                max,
                min_len: c.min_length,
                max_len: c.max_length,
                pattern,
                enum_values,
            });
        }
        let mut pk_pos = vec![None; fields.len()];
        let pk = match &schema.primary_key {
            None => None,
            Some(key) => {
                let names = key.names();
                if names.is_empty() {
                    return Err(SchemaError::EmptyKey);
                }
                let mut idx = Vec::with_capacity(names.len());
                for (pos, name) in names.iter().enumerate() {
                    let &i = by_name
                        .get(*name)
                        .ok_or_else(|| SchemaError::UnknownKeyField((*name).to_owned()))?;
                    fields[i].required = true;
                    pk_pos[i] = Some(pos);
                    idx.push(i);
                }
                Some((idx, HashSet64::default()))
            }
        };
        let unique = fields
            .iter()
            .map(|f| f.unique.then(HashSet64::default))
            .collect();
        let pk_len = pk.as_ref().map_or(0, |(idx, _)| idx.len());
        Ok(Checker {
            fields,
            by_name,
            missing: schema.missing_values.clone(),
            unique,
            pk,
            pk_pos,
            pk_parts: vec![0; pk_len],
            tracked: 0,
            max_tracked,
            tracking: true,
        })
    }

    /// The index of the field named `name`.
    pub(crate) fn field_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Whether `s` is one of the schema's `missingValues`.
    pub(crate) fn is_missing(&self, s: &str) -> bool {
        self.missing.iter().any(|m| m == s)
    }

    /// Record one hash in a uniqueness set; false if it was already there.
    /// Stops all uniqueness tracking once the budget is spent.
    fn track(&mut self, set: Option<usize>, h: u64, row: u64, out: &mut Collector) -> bool {
        if self.tracked >= self.max_tracked {
            self.tracking = false;
            for s in self.unique.iter_mut().flatten() {
                *s = HashSet64::default();
            }
            if let Some((_, s)) = &mut self.pk {
                *s = HashSet64::default();
            }
            out.note(format!(
                "uniqueness (unique and primaryKey) not checked from row {row} on: \
                 more than {} distinct values to track",
                self.max_tracked
            ));
            return true;
        }
        let s = match set {
            Some(fi) => self.unique[fi].as_mut(),
            None => self.pk.as_mut().map(|(_, s)| s),
        };
        match s {
            Some(s) => {
                let new = s.insert(h);
                if new {
                    self.tracked += 1;
                }
                new
            }
            None => true,
        }
    }

    /// Check one data row (1-based `row`); `cell(i)` gives field `i`'s cell.
    pub(crate) fn check_row<'c>(
        &mut self,
        row: u64,
        cell: impl Fn(usize) -> Cell<'c>,
        out: &mut Collector,
    ) {
        let mut pk_ok = self.pk.is_some();
        for fi in 0..self.fields.len() {
            let c = cell(fi);
            let f = &self.fields[fi];
            let missing = match c {
                Cell::Skip => {
                    pk_ok = false;
                    continue;
                }
                Cell::Missing | Cell::Json(JsonCell::Null) => true,
                Cell::Text(s) => self.is_missing(s),
                Cell::Json(JsonCell::Str(s)) => self.is_missing(s),
                Cell::Json(_) => false,
            };
            if missing {
                if f.required {
                    out.push(ErrorKind::Required, Some(row), Some(&f.name), None, || {
                        format!("field {:?} is required but row {row} has no value", f.name)
                    });
                }
                pk_ok &= self.pk_pos[fi].is_none();
                continue;
            }
            let value = match c {
                Cell::Text(s) => f.caster.cast_str(s),
                Cell::Json(j) => f.caster.cast_json(j),
                Cell::Skip | Cell::Missing => None,
            };
            let Some(value) = value else {
                let raw = clip_cow(c.raw());
                out.push(
                    ErrorKind::TypeError,
                    Some(row),
                    Some(&f.name),
                    Some(&raw),
                    || {
                        let format = match &f.format {
                            Some(fmt) => format!(" (format {fmt:?})"),
                            None => String::new(),
                        };
                        format!(
                            "value {raw:?} in field {:?} is not a valid {}{format}",
                            f.name,
                            f.caster.ty.as_str()
                        )
                    },
                );
                pk_ok &= self.pk_pos[fi].is_none();
                continue;
            };
            Self::check_constraints(f, &value, c, row, out);
            if self.tracking && (f.unique || self.pk_pos[fi].is_some()) {
                let h = hash_value(&value);
                if let Some(pos) = self.pk_pos[fi] {
                    self.pk_parts[pos] = h;
                }
                if f.unique && !self.track(Some(fi), h, row, out) {
                    let f = &self.fields[fi];
                    let raw = clip_cow(c.raw());
                    out.push(ErrorKind::Unique, Some(row), Some(&f.name), Some(&raw), || {
                        format!(
                            "value {raw:?} in field {:?} is not unique: it repeats an earlier row",
                            f.name
                        )
                    });
                }
            }
        }
        if pk_ok && self.tracking {
            let mut h = DefaultHasher::new();
            self.pk_parts.hash(&mut h);
            if !self.track(None, h.finish(), row, out) {
                let Some((idx, _)) = &self.pk else { return };
                let names: Vec<&str> = idx.iter().map(|&i| self.fields[i].name.as_str()).collect();
                let values: Vec<String> = idx
                    .iter()
                    .map(|&i| format!("{:?}", cell(i).raw()))
                    .collect();
                let shown = values.join(", ");
                out.push(
                    ErrorKind::PrimaryKey,
                    Some(row),
                    Some(&names.join(",")),
                    Some(&shown),
                    || {
                        format!(
                            "primary key ({}) = ({shown}) repeats an earlier row",
                            names.join(", ")
                        )
                    },
                );
            }
        }
    }

    fn check_constraints(
        f: &FieldCheck,
        value: &Value<'_>,
        c: Cell<'_>,
        row: u64,
        out: &mut Collector,
    ) {
        let name = Some(f.name.as_str());
        if let Some((min, shown)) = &f.min
            && value.compare(min) == Some(std::cmp::Ordering::Less)
        {
            let raw = clip_cow(c.raw());
            out.push(ErrorKind::Minimum, Some(row), name, Some(&raw), || {
                format!(
                    "value {raw:?} in field {:?} is below the minimum {shown}",
                    f.name
                )
            });
        }
        if let Some((max, shown)) = &f.max
            && value.compare(max) == Some(std::cmp::Ordering::Greater)
        {
            let raw = clip_cow(c.raw());
            out.push(ErrorKind::Maximum, Some(row), name, Some(&raw), || {
                format!(
                    "value {raw:?} in field {:?} is above the maximum {shown}",
                    f.name
                )
            });
        }
        let Value::Str(full) = value else {
            return Self::check_enum(f, value, c, row, out);
        };
        if f.min_len.is_some() || f.max_len.is_some() {
            let len = full.chars().count();
            if let Some(min) = f.min_len
                && len < min
            {
                out.push(ErrorKind::MinLength, Some(row), name, Some(full), || {
 let text = clip(full);
                    format!(
                        "value {text:?} in field {:?} has {len} characters, fewer than minLength {min}",
                        f.name
                    )
                });
            }
            if let Some(max) = f.max_len
                && len > max
            {
                out.push(ErrorKind::MaxLength, Some(row), name, Some(full), || {
 let text = clip(full);
                    format!(
                        "value {text:?} in field {:?} has {len} characters, more than maxLength {max}",
                        f.name
                    )
                });
            }
        }
        if let Some((re, shown)) = &f.pattern
            && !re.is_match(full)
        {
            out.push(ErrorKind::Pattern, Some(row), name, Some(full), || {
                let text = clip(full);
                format!(
                    "value {text:?} in field {:?} does not match pattern {shown}",
                    f.name
                )
            });
        }
        Self::check_enum(f, value, c, row, out);
    }

    fn check_enum(f: &FieldCheck, value: &Value<'_>, c: Cell<'_>, row: u64, out: &mut Collector) {
        if let Some((values, shown)) = &f.enum_values
            && !values.iter().any(|v| v.same(value))
        {
            let raw = clip_cow(c.raw());
            out.push(
                ErrorKind::Enum,
                Some(row),
                Some(&f.name),
                Some(&raw),
                || format!("value {raw:?} in field {:?} is not one of {shown}", f.name),
            );
        }
    }
}
