//! The schema compiled for checking rows: one [`FieldCheck`] per field
//! (caster, parsed bounds and enum, anchored regex) and the row-level state
//! for `unique` and `primaryKey`. Both parsers hand each row to
//! [`Checker::check_row`] as a function from field index to [`Cell`].
//!
//! Uniqueness is tracked as 64-bit keys of the cast values (cast, so `01`
//! and `1` collide in an integer field) in one table shared by every
//! `unique` field and the primary key, bounded by `Limits::max_unique_tracked`
//! values (8 bytes each; see [`crate::unique`] for the table, its sizing and
//! the arithmetic runs that make sequential integer keys free). Past the
//! bound the table is dropped, uniqueness is no longer checked, and the
//! report says so in `notes`.
//!
//! Rows are checked with as little work per cell as the field allows. Each
//! field is compiled to a [`Fast`] plan for CSV text: the type's syntax only,
//! or typed bounds (i64, f64, packed dates, years), or string lengths,
//! pattern and enum, all on the cell's bytes without allocating. The plan
//! only ever accepts; a cell it cannot accept (and every JSON value) goes
//! through the general path, which casts to a [`Value`], checks everything
//! and reports, so both paths always agree. Missing values are recognised by
//! length before any comparison.
//!
//! CSV rows come in groups, and a group is first screened a column at a
//! time ([`Checker::screen`]): for each field that is neither tracked nor
//! without a plan, one tight loop runs its plan down the column. A row whose
//! screened cells all pass then needs only its row-wise fields (tracked or
//! general) checked ([`Checker::check_screened`]); any other row gets the
//! whole [`Checker::check_row`]. When one field alone is tracked (the usual
//! id column), screening tracks it too, down the column in row order, up to
//! the first row that is not clean. Screening only ever accepts, so the
//! report is the same, in the same order, as checking every row whole.

use std::collections::HashMap;

use crate::cell::{Cell, JsonCell, Text};
use crate::pattern::Pattern;
use crate::report::{Collector, ErrorKind, RowError, clip, clip_cow};
use crate::schema::{Field, FieldType, SchemaError, TableSchema};
use crate::types::{self, Caster, Value};
use crate::unique::{KeyHasher, Run, Seen};
use crate::words::Words;

/// Loading a Table Schema checks it: it is usable when the checker compiles it (regexes compile,
/// field names are distinct, constraints suit the field's type and cast in it), the same way
/// [`crate::validate`] does. `use choreo_validation::SchemaCheck` to load schemas this way.
pub trait SchemaCheck: Sized {
    /// Parse and check a schema from JSON text.
    fn from_json(s: &str) -> Result<Self, SchemaError>;
    /// Parse and check a schema from a reader of JSON text.
    fn from_json_reader<R: std::io::Read>(r: R) -> Result<Self, SchemaError>;
    /// Check a schema built or changed in code (loading already does this).
    fn check(&self) -> Result<(), SchemaError>;
}

impl SchemaCheck for TableSchema {
    fn from_json(s: &str) -> Result<Self, SchemaError> {
        let schema = TableSchema::parse(s)?;
        schema.check()?;
        Ok(schema)
    }

    fn from_json_reader<R: std::io::Read>(r: R) -> Result<Self, SchemaError> {
        let schema: TableSchema = serde_json::from_reader(r)?;
        schema.check()?;
        Ok(schema)
    }

    fn check(&self) -> Result<(), SchemaError> {
        Checker::new(self, usize::MAX).map(|_| ())
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
    pattern: Option<(Pattern, String)>,
    enum_values: Option<(Vec<Value<'static>>, String)>,
    /// For a string field, the enum's values as text.
    enum_texts: Option<Words>,
    /// The quick check for a text cell, compiled from the above.
    fast: Fast,
    /// `unique`, or part of the primary key: its values are tracked.
    tracked: bool,
}

/// How a field's text cells are checked on the quick path. It only ever
/// accepts: a cell it cannot accept goes through the general path (cast to a
/// [`Value`], every check, and the error messages), so both always agree.
#[derive(Debug, Clone, Copy)]
enum Fast {
    /// No constraint needs the value: only the type's syntax.
    Syntax,
    /// An integer of up to 18 digits within bounds (i64 here).
    Int {
        min: i64,
        max: i64,
    },
    /// A number within bounds.
    Num {
        min: f64,
        max: f64,
    },
    /// A `YYYY-MM-DD` date within bounds (packed, see [`types::pack_ymd`]).
    Date {
        min: u32,
        max: u32,
    },
    /// A year within bounds.
    Year {
        min: i32,
        max: i32,
    },
    /// A string of the default format, checked for its lengths (in chars),
    /// pattern and enum.
    Text {
        min_len: usize,
        max_len: usize,
    },
    /// A default-format datetime, time; a boolean; anything (`any`).
    Datetime,
    Time,
    Boolean,
    Always,
    /// Cast and check everything.
    General,
}

impl Fast {
    fn compile(f: &FieldCheck) -> Fast {
        if f.caster.ty == FieldType::String && f.caster.is_default_format() {
            return Fast::Text {
                min_len: f.min_len.unwrap_or(0),
                max_len: f.max_len.unwrap_or(usize::MAX),
            };
        }
        let general = f.min_len.is_some()
            || f.max_len.is_some()
            || f.pattern.is_some()
            || f.enum_values.is_some();
        if general {
            return Fast::General;
        }
        let plain = !f.tracked && f.min.is_none() && f.max.is_none();
        let default = f.caster.is_default_format();
        match f.caster.ty {
            FieldType::Datetime if plain && default => return Fast::Datetime,
            FieldType::Time if plain && default => return Fast::Time,
            FieldType::Boolean if plain => return Fast::Boolean,
            FieldType::Any if plain => return Fast::Always,
            FieldType::Integer | FieldType::Number | FieldType::Year => {}
            FieldType::Date if default => {}
            _ if plain => return Fast::Syntax,
            _ => {}
        }
        let (lo, hi) = (f.min.as_ref().map(|b| &b.0), f.max.as_ref().map(|b| &b.0));
        match (f.caster.ty, lo, hi) {
            (FieldType::Integer, lo, hi) => {
                // Bounds beyond i64 clamp: a cell the clamped bound refuses
                // takes the general path, which compares exactly.
                let int = |b: Option<&Value<'_>>, default: i64| match b {
                    None => Some(default),
                    Some(Value::Int(v)) => {
                        Some((*v).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
                    }
                    Some(_) => None,
                };
                match (int(lo, i64::MIN), int(hi, i64::MAX)) {
                    (Some(min), Some(max)) => Fast::Int { min, max },
                    _ => Fast::General,
                }
            }
            (FieldType::Number, lo, hi) => {
                let num = |b: Option<&Value<'_>>, default: f64| match b {
                    None => Some(default),
                    Some(Value::Num(v)) if !v.is_nan() => Some(*v),
                    Some(_) => None,
                };
                match (num(lo, f64::NEG_INFINITY), num(hi, f64::INFINITY)) {
                    (Some(min), Some(max)) => Fast::Num { min, max },
                    _ => Fast::General,
                }
            }
            (FieldType::Date, lo, hi) if f.caster.is_default_format() => {
                let date = |b: Option<&Value<'_>>, default: u32| match b {
                    None => Some(default),
                    Some(Value::Date(d)) => u32::try_from(types::date_key(d)).ok(),
                    Some(_) => None,
                };
                match (date(lo, 0), date(hi, u32::MAX)) {
                    (Some(min), Some(max)) => Fast::Date { min, max },
                    _ => Fast::General,
                }
            }
            (FieldType::Year, lo, hi) => {
                let year = |b: Option<&Value<'_>>, default: i32| match b {
                    None => Some(default),
                    Some(Value::Year(y)) => Some(*y),
                    Some(_) => None,
                };
                match (year(lo, i32::MIN), year(hi, i32::MAX)) {
                    (Some(min), Some(max)) => Fast::Year { min, max },
                    _ => Fast::General,
                }
            }
            _ => Fast::General,
        }
    }
}

/// A value to track for uniqueness: an integer (which a [`Run`] may cover
/// without hashing it) or the hash of any other value.
#[derive(Debug, Clone, Copy)]
enum Tracked {
    Int(i128),
    Hash(u64),
}

impl Tracked {
    #[inline]
    fn hash(self, hasher: &KeyHasher) -> u64 {
        match self {
            Tracked::Int(v) => types::int_key(hasher, v),
            Tracked::Hash(h) => h,
        }
    }
}

/// What [`Checker::parse_quick`] read from a cell it accepts: enough to
/// track the value, if its field is tracked.
#[derive(Debug, Clone, Copy)]
enum Parsed {
    /// Syntax only (the field is not tracked: see [`Fast::compile`]).
    Plain,
    Int(i64),
    Num(f64),
    /// Packed, see [`types::pack_ymd`].
    Date(u32),
    Year(i32),
    /// A string: its bytes are the value.
    Text,
}

impl Parsed {
    /// The value to track, for cell bytes `b`.
    #[inline(always)]
    fn tracked(self, hasher: &KeyHasher, b: &[u8]) -> Option<Tracked> {
        Some(match self {
            Parsed::Plain => return None,
            Parsed::Int(v) => Tracked::Int(i128::from(v)),
            Parsed::Num(v) => Tracked::Hash(types::num_key(hasher, v)),
            Parsed::Date(k) => Tracked::Hash(hasher.words(4, u64::from(k), 0)),
            Parsed::Year(y) => Tracked::Hash(hasher.words(7, y as u64, 0)),
            Parsed::Text => Tracked::Hash(hasher.bytes(0, b)),
        })
    }
}

/// [`Fast::Int`]'s check.
#[inline(always)]
fn int_within(b: &[u8], min: i64, max: i64) -> Option<Parsed> {
    types::small_integer(b)
        .filter(|v| (min..=max).contains(v))
        .map(Parsed::Int)
}

/// [`Fast::Num`]'s check.
#[inline(always)]
fn num_within(b: &[u8], min: f64, max: f64) -> Option<Parsed> {
    types::parse_number_bytes(b)
        .filter(|v| *v >= min && *v <= max)
        .map(Parsed::Num)
}

/// [`Fast::Date`]'s check.
#[inline(always)]
fn date_within(b: &[u8], min: u32, max: u32) -> Option<Parsed> {
    types::iso_date_key(b)
        .filter(|k| (min..=max).contains(k))
        .map(Parsed::Date)
}

/// [`Fast::Year`]'s check.
#[inline(always)]
fn year_within(b: &[u8], min: i32, max: i32) -> Option<Parsed> {
    types::year_bytes(b)
        .filter(|y| (min..=max).contains(y))
        .map(Parsed::Year)
}

/// [`Fast::Text`]'s check: lengths in characters, pattern and enum.
#[inline(always)]
fn text_within(f: &FieldCheck, t: Text<'_>, min_len: usize, max_len: usize) -> Option<Parsed> {
    let b = t.bytes();
    let n = b.len();
    // Characters are between a quarter of the bytes and all of them: count
    // them only when that range straddles a bound.
    let len_ok = (n <= max_len && n >= min_len.saturating_mul(4)) || {
        let chars = t.str().chars().count();
        chars >= min_len && chars <= max_len
    };
    let ok = len_ok
        && f.pattern.as_ref().is_none_or(|(re, _)| re.is_match_text(t))
        && f.enum_texts.as_ref().is_none_or(|e| e.contains(b));
    ok.then_some(Parsed::Text)
}

/// What the quick path made of a text cell.
enum Quick {
    /// Valid, and nothing to track.
    Done,
    /// Valid: track this value.
    Track(Tracked),
    /// Needs the general path.
    Slow,
}

/// What the general path made of a cell.
enum General {
    /// Not a value of the type (reported).
    Invalid,
    /// A value, not tracked (or NaN, which repeats nothing).
    Untracked,
    Track(Tracked),
}

impl FieldCheck {
    /// One field of the schema compiled: its cast, and its constraints checked against its type
    /// and cast into it.
    fn compile(field: &Field) -> Result<FieldCheck, SchemaError> {
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
                let compiled = Pattern::new(p).map_err(|e| SchemaError::BadPattern {
                    field: field.name.clone(),
                    pattern: p.clone(),
                    message: e.to_string(),
                })?;
                Some((compiled, p.clone()))
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
        Ok(FieldCheck {
            name: field.name.clone(),
            caster,
            format: field.format.clone().filter(|f| f != "default"),
            required: c.required,
            unique: c.unique,
            min,
            max,
            min_len: c.min_length,
            max_len: c.max_length,
            enum_texts: enum_values.as_ref().map(|(values, _)| {
                Words::new(values.iter().filter_map(|v| match v {
                    Value::Str(s) => Some(s.as_ref()),
                    _ => None,
                }))
            }),
            pattern,
            enum_values,
            fast: Fast::General,
            tracked: c.unique,
        })
    }
}

impl FieldCheck {
    pub(crate) fn field_type(&self) -> FieldType {
        self.caster.ty
    }

    pub(crate) fn cast<'a>(&self, s: &'a str) -> Option<Value<'a>> {
        self.caster.cast_str(s)
    }
}

/// One uniqueness constraint's state beyond the shared table.
#[derive(Debug, Clone, Copy)]
struct Tracker {
    /// Which set of the shared table (distinct per constraint).
    set: usize,
    /// For an integer column: the rising run seen so far.
    run: Option<Run>,
}

/// The primary key.
#[derive(Debug)]
struct Key {
    /// Key field indexes, in key order.
    fields: Vec<usize>,
    tracker: Tracker,
    /// A one-field key on a `unique` field repeats exactly when the field does.
    via_unique: bool,
}

/// The table shared by every uniqueness constraint, and its budget.
#[derive(Debug)]
struct Uniqueness {
    hasher: KeyHasher,
    seen: Seen,
    max: usize,
    on: bool,
}

impl Uniqueness {
    /// Whether `value` is new to `t`; records it. Past the budget, stops all
    /// tracking and says so. An integer that extends its column's run costs
    /// no hashing while the table is empty.
    #[inline(always)]
    fn is_new(&mut self, t: &mut Tracker, value: Tracked, row: u64, out: &mut Collector) -> bool {
        if !self.on {
            return true;
        }
        if let (Some(run), Tracked::Int(v)) = (t.run.as_mut(), value) {
            if run.contains(v) {
                return false;
            }
            if run.extends(v) {
                if self.seen.len() > 0
                    && self
                        .seen
                        .contains(self.hasher.salted(value.hash(&self.hasher), t.set))
                {
                    return false;
                }
                run.push(v);
                return true;
            }
        }
        let key = self.hasher.salted(value.hash(&self.hasher), t.set);
        if self.seen.len() >= self.max {
            self.stop(row, out);
            return true;
        }
        self.seen.insert(key)
    }

    /// Past the budget at `row`: stop all tracking, and say so.
    #[cold]
    fn stop(&mut self, row: u64, out: &mut Collector) {
        self.on = false;
        self.seen.clear();
        out.note(format!(
            "uniqueness (unique and primaryKey) not checked from row {row} on: \
             more than {} distinct values to track",
            self.max
        ));
    }
}

/// What one row's cells tell about its primary key.
struct RowState {
    /// Every key field has a valid value (so far): the key is checked.
    pk_ok: bool,
    /// Some `unique` field repeated (a one-field key on it then repeats too).
    unique_repeat: bool,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Checker {
    pub(crate) fields: Vec<FieldCheck>,
    by_name: HashMap<String, usize>,
    /// `missingValues`.
    missing: Words,
    unique: Vec<Option<Tracker>>,
    pk: Option<Key>,
    /// For each field, its position in the primary key.
    pk_pos: Vec<Option<usize>>,
    /// The current row's key parts.
    pk_parts: Vec<Tracked>,
    /// The fields checked row by row even in a screened row: the tracked
    /// ones and those with no quick path (see [`Checker::screen`]), but
    /// the [`Checker::screened_key`].
    row_wise: Vec<usize>,
    /// The field screening tracks too: set when exactly one field is
    /// tracked, for one constraint (its `unique`, and a primary key of that
    /// field alone, which then repeats when it does; or a one-field primary
    /// key), and it has a quick path.
    screened_key: Option<usize>,
    uniq: Uniqueness,
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
            fields.push(FieldCheck::compile(field)?);
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
                    fields[i].tracked = true;
                    pk_pos[i] = Some(pos);
                    idx.push(i);
                }
                Some(idx)
            }
        };
        for f in &mut fields {
            f.fast = Fast::compile(f);
        }
        let n = fields.len();
        let integer_run =
            |i: usize| (fields[i].field_type() == FieldType::Integer).then(Run::default);
        let unique: Vec<Option<Tracker>> = (0..n)
            .map(|i| {
                fields[i].unique.then(|| Tracker {
                    set: i,
                    run: integer_run(i),
                })
            })
            .collect();
        let pk = pk.map(|idx| {
            let single = (idx.len() == 1).then(|| idx[0]);
            Key {
                tracker: Tracker {
                    set: n,
                    run: single.and_then(integer_run),
                },
                via_unique: single.is_some_and(|i| fields[i].unique),
                fields: idx,
            }
        });
        let pk_len = pk.as_ref().map_or(0, |k| k.fields.len());
        let tracked: Vec<usize> = (0..n).filter(|&i| fields[i].tracked).collect();
        let screened_key = match (tracked.as_slice(), &pk) {
            (&[fi], None) => Some(fi),
            (&[fi], Some(key))
                if key.fields == [fi] && (key.via_unique || unique[fi].is_none()) =>
            {
                Some(fi)
            }
            _ => None,
        }
        .filter(|&fi| !matches!(fields[fi].fast, Fast::General));
        let row_wise = (0..n)
            .filter(|&i| {
                (fields[i].tracked && screened_key != Some(i))
                    || matches!(fields[i].fast, Fast::General)
            })
            .collect();
        Ok(Checker {
            fields,
            by_name,
            missing: Words::new(&schema.missing_values),
            unique,
            pk,
            pk_pos,
            pk_parts: vec![Tracked::Hash(0); pk_len],
            row_wise,
            screened_key,
            uniq: Uniqueness {
                hasher: KeyHasher::random(),
                seen: Seen::new(max_tracked),
                max: max_tracked,
                on: true,
            },
        })
    }

    /// The index of the field named `name`.
    pub(crate) fn field_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Whether `s` is one of the schema's `missingValues`.
    #[inline(always)]
    pub(crate) fn is_missing(&self, s: &[u8]) -> bool {
        self.missing.contains(s)
    }

    /// Check one data row (1-based `row`); `cell(i)` gives field `i`'s cell.
    #[inline]
    pub(crate) fn check_row<'c>(
        &mut self,
        row: u64,
        cell: impl Fn(usize) -> Cell<'c>,
        out: &mut Collector,
    ) {
        self.check_fields(row, 0..self.fields.len(), true, cell, out);
    }

    /// [`Checker::check_row`] for a row that [`Checker::screen`] passed:
    /// only its row-wise fields (and its primary key) are left to check.
    #[inline]
    pub(crate) fn check_screened<'c>(
        &mut self,
        row: u64,
        cell: impl Fn(usize) -> Cell<'c>,
        out: &mut Collector,
    ) {
        let row_wise = std::mem::take(&mut self.row_wise);
        let key = self.screened_key.is_none();
        self.check_fields(row, row_wise.iter().copied(), key, cell, out);
        self.row_wise = row_wise;
    }

    /// Whether a row that [`Checker::screen`] passed has nothing left to
    /// check: no row-wise field, and no primary key but a screened one.
    pub(crate) fn screens_whole_rows(&self) -> bool {
        self.row_wise.is_empty() && (self.pk.is_none() || self.screened_key.is_some())
    }

    /// Screen a group of rows a column at a time, for every field that is
    /// not row-wise: `clean[r]` stays set only if each such cell of row `r`
    /// is a missing value its field allows (not `required`) or a cell the
    /// quick path accepts. Either way checking that cell in the row would
    /// report nothing and change nothing, so [`Checker::check_screened`]
    /// then gives the row the same verdict as [`Checker::check_row`]. One
    /// field's type check over many rows is a tight loop of its own.
    /// `column(i)` gives field `i`'s cells, a row at a time (`None`: a cell
    /// that cannot be screened); the first row is row `first_row`.
    ///
    /// With a [`Checker::screened_key`], its column is screened last, and
    /// its values tracked: from the first row on, as long as the rows are
    /// clean and their values new (a value is tracked exactly when checking
    /// its row whole would have tracked it, and in the same order); the
    /// first row that is not, and every row after it, is left unclean.
    pub(crate) fn screen<'c, I>(
        &mut self,
        clean: &mut [bool],
        column: impl Fn(usize) -> I,
        first_row: u64,
        out: &mut Collector,
    ) where
        I: Iterator<Item = Option<Text<'c>>>,
    {
        self.screen_untracked(clean, &column);
        if let Some(fi) = self.screened_key {
            self.screen_key(fi, clean, column(fi), first_row, out);
        }
    }

    /// The column of the [`Checker::screened_key`] field `fi`, after the
    /// others (see [`Checker::screen`]).
    #[inline(never)]
    fn screen_key<'c>(
        &mut self,
        fi: usize,
        clean: &mut [bool],
        cells: impl Iterator<Item = Option<Text<'c>>>,
        first_row: u64,
        out: &mut Collector,
    ) {
        let Checker {
            fields,
            missing,
            unique,
            pk,
            uniq,
            ..
        } = self;
        let f = &fields[fi];
        let Some(tracker) = unique[fi].as_mut().or(pk.as_mut().map(|k| &mut k.tracker)) else {
            return;
        };
        let mut stop = clean.len();
        let rows = (first_row..).zip(clean.iter_mut().zip(cells));
        for (r, (row, (c, t))) in rows.enumerate() {
            let ok = *c
                && t.is_some_and(|t| {
                    if missing.contains(t.bytes()) {
                        return !f.required;
                    }
                    let value =
                        Self::parse_quick(f, t).and_then(|p| p.tracked(&uniq.hasher, t.bytes()));
                    value.is_some_and(|v| !uniq.on || uniq.is_new(tracker, v, row, out))
                });
            if !ok {
                stop = r;
                break;
            }
        }
        clean[stop..].fill(false);
    }

    /// [`Checker::screen`] for the fields that are not tracked.
    fn screen_untracked<'c, I>(&self, clean: &mut [bool], column: &impl Fn(usize) -> I)
    where
        I: Iterator<Item = Option<Text<'c>>>,
    {
        for (fi, f) in self.fields.iter().enumerate() {
            if f.tracked {
                continue;
            }
            // The arms of `parse_quick`, each in a closure (and so a loop)
            // of its own.
            macro_rules! screen {
                ($accepts:expr) => {
                    self.screen_column(clean, f, column(fi), $accepts)
                };
            }
            match f.fast {
                Fast::General => {}
                // Anything is accepted, and a missing value too.
                Fast::Always if !f.required => {}
                Fast::Always => screen!(|_| true),
                Fast::Syntax => screen!(|t| f.caster.is_valid_text(t)),
                Fast::Datetime => screen!(|t| types::is_iso_datetime(t.bytes())),
                Fast::Time => screen!(|t| types::is_iso_time(t.bytes())),
                Fast::Boolean => screen!(|t| f.caster.is_boolean(t.bytes())),
                Fast::Int { min, max } => screen!(|t| int_within(t.bytes(), min, max).is_some()),
                Fast::Num { min, max } => screen!(|t| num_within(t.bytes(), min, max).is_some()),
                Fast::Date { min, max } => {
                    screen!(|t| date_within(t.bytes(), min, max).is_some())
                }
                Fast::Year { min, max } => {
                    screen!(|t| year_within(t.bytes(), min, max).is_some())
                }
                Fast::Text { min_len, max_len } => {
                    screen!(|t| text_within(f, t, min_len, max_len).is_some())
                }
            }
        }
    }

    /// One column of [`Checker::screen`]: a function of its own for each
    /// plan, so that its loop has the registers to itself.
    #[inline(never)]
    fn screen_column<'c>(
        &self,
        clean: &mut [bool],
        f: &FieldCheck,
        cells: impl Iterator<Item = Option<Text<'c>>>,
        accepts: impl Fn(Text<'c>) -> bool,
    ) {
        for (c, t) in clean.iter_mut().zip(cells) {
            let ok = t.is_some_and(|t| {
                if self.missing.contains(t.bytes()) {
                    !f.required
                } else {
                    accepts(t)
                }
            });
            *c &= ok;
        }
    }

    /// Check fields `fields` of a row, then (if `key`) its primary key. The
    /// loop is kept small: a text cell the quick path accepts costs a
    /// missing-value lookup and its type's check; anything else (missing
    /// values, tracked values, the general path) is handled out of line.
    #[inline(always)]
    fn check_fields<'c>(
        &mut self,
        row: u64,
        fields: impl Iterator<Item = usize>,
        key: bool,
        cell: impl Fn(usize) -> Cell<'c>,
        out: &mut Collector,
    ) {
        let mut state = RowState {
            pk_ok: self.pk.is_some(),
            unique_repeat: false,
        };
        for fi in fields {
            let c = cell(fi);
            if let Cell::Text(t) = c
                && !self.missing.contains(t.bytes())
            {
                match Self::quick(&self.fields[fi], t, &self.uniq.hasher) {
                    Quick::Done => continue,
                    Quick::Track(value) => {
                        self.track(fi, value, c, row, out, &mut state);
                        continue;
                    }
                    Quick::Slow => {}
                }
            }
            self.check_cell(fi, c, row, out, &mut state);
        }
        if key && state.pk_ok && self.uniq.on {
            self.check_key(row, &cell, state.unique_repeat, out);
        }
    }

    /// Check field `fi`'s cell `c` on the general path: missing values,
    /// casting, every constraint, tracking.
    #[inline(never)]
    fn check_cell(
        &mut self,
        fi: usize,
        c: Cell<'_>,
        row: u64,
        out: &mut Collector,
        state: &mut RowState,
    ) {
        let f = &self.fields[fi];
        let missing = match c {
            Cell::Skip => {
                state.pk_ok = false;
                return;
            }
            Cell::Missing | Cell::Json(JsonCell::Null) => true,
            Cell::Text(t) => self.missing.contains(t.bytes()),
            Cell::Json(JsonCell::Str(s)) => self.missing.contains(s.as_bytes()),
            Cell::Json(_) => false,
        };
        if missing {
            if f.required {
                out.push(ErrorKind::Required, Some(row), Some(&f.name), None, || {
                    format!("field {:?} is required but row {row} has no value", f.name)
                });
            }
            state.pk_ok &= self.pk_pos[fi].is_none();
            return;
        }
        match Self::general(f, &self.uniq, c, row, out) {
            General::Track(value) => self.track(fi, value, c, row, out, state),
            General::Invalid | General::Untracked => state.pk_ok &= self.pk_pos[fi].is_none(),
        }
    }

    /// Track field `fi`'s `value`: note it as part of the primary key, and
    /// report it if its field is `unique` and has had it.
    #[inline(never)]
    fn track(
        &mut self,
        fi: usize,
        value: Tracked,
        c: Cell<'_>,
        row: u64,
        out: &mut Collector,
        state: &mut RowState,
    ) {
        if !self.uniq.on {
            return;
        }
        if let Some(pos) = self.pk_pos[fi] {
            self.pk_parts[pos] = value;
        }
        if let Some(t) = &mut self.unique[fi]
            && !self.uniq.is_new(t, value, row, out)
        {
            state.unique_repeat = true;
            let f = &self.fields[fi];
            let raw = clip_cow(c.raw());
            out.push(
                ErrorKind::Unique,
                Some(row),
                Some(&f.name),
                Some(&raw),
                || {
                    format!(
                        "value {raw:?} in field {:?} is not unique: it repeats an earlier row",
                        f.name
                    )
                },
            );
        }
    }

    /// The primary key of a row whose key fields all had a value: report it
    /// if an earlier row had it.
    #[inline(never)]
    fn check_key<'c>(
        &mut self,
        row: u64,
        cell: &impl Fn(usize) -> Cell<'c>,
        unique_repeat: bool,
        out: &mut Collector,
    ) {
        let Some(key) = &mut self.pk else { return };
        let repeat = if key.via_unique {
            unique_repeat
        } else {
            let hasher = &self.uniq.hasher;
            let value = match self.pk_parts.as_slice() {
                [one] => *one,
                parts => Tracked::Hash(
                    parts
                        .iter()
                        .fold(0, |acc, p| hasher.words(8, acc, p.hash(hasher))),
                ),
            };
            !self.uniq.is_new(&mut key.tracker, value, row, out)
        };
        if repeat {
            let names: Vec<&str> = key
                .fields
                .iter()
                .map(|&i| self.fields[i].name.as_str())
                .collect();
            let values: Vec<String> = key
                .fields
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

    /// One cell on its own, for callers that keep rows rather than report
    /// on them ([`crate::cast`]): `Ok(None)` for a missing value its field
    /// allows, `Ok(Some(value))` for a value that casts and meets every
    /// constraint, else the first problem. Uniqueness is not checked.
    pub(crate) fn check_value<'c>(
        &self,
        fi: usize,
        c: Cell<'c>,
    ) -> Result<Option<Value<'c>>, RowError> {
        let f = &self.fields[fi];
        let missing = match c {
            Cell::Skip | Cell::Missing | Cell::Json(JsonCell::Null) => true,
            Cell::Text(t) => self.missing.contains(t.bytes()),
            Cell::Json(JsonCell::Str(s)) => self.missing.contains(s.as_bytes()),
            Cell::Json(_) => false,
        };
        let mut out = Collector::new(1);
        let value = if missing {
            if f.required {
                out.push(ErrorKind::Required, None, Some(&f.name), None, || {
                    format!("field {:?} is required but has no value", f.name)
                });
            }
            None
        } else {
            let value = match c {
                Cell::Text(t) => f.caster.cast_str(t.str()),
                Cell::Json(j) => f.caster.cast_json(j),
                Cell::Skip | Cell::Missing => None,
            };
            match &value {
                Some(v) => Self::check_constraints(f, v, c, 0, &mut out),
                None => Self::type_error(f, c, 0, &mut out),
            }
            value
        };
        match out.finish(0, 0).errors.pop() {
            Some(mut e) => {
                e.row = None;
                Err(e)
            }
            None => Ok(value),
        }
    }

    /// The quick path for a text cell: see [`Fast`].
    #[inline(always)]
    fn quick(f: &FieldCheck, t: Text<'_>, hasher: &KeyHasher) -> Quick {
        match Self::parse_quick(f, t) {
            None => Quick::Slow,
            Some(_) if !f.tracked => Quick::Done,
            Some(parsed) => parsed
                .tracked(hasher, t.bytes())
                .map_or(Quick::Slow, Quick::Track),
        }
    }

    /// What the quick path makes of `t` for field `f`: `None` when it
    /// cannot accept it.
    #[inline(always)]
    fn parse_quick(f: &FieldCheck, t: Text<'_>) -> Option<Parsed> {
        let b = t.bytes();
        let plain = |ok: bool| ok.then_some(Parsed::Plain);
        match f.fast {
            Fast::Syntax => plain(f.caster.is_valid_text(t)),
            Fast::Datetime => plain(types::is_iso_datetime(b)),
            Fast::Time => plain(types::is_iso_time(b)),
            Fast::Boolean => plain(f.caster.is_boolean(b)),
            Fast::Always => plain(true),
            Fast::General => None,
            Fast::Int { min, max } => int_within(b, min, max),
            Fast::Num { min, max } => num_within(b, min, max),
            Fast::Date { min, max } => date_within(b, min, max),
            Fast::Year { min, max } => year_within(b, min, max),
            Fast::Text { min_len, max_len } => text_within(f, t, min_len, max_len),
        }
    }

    /// The general path: cast, check every constraint, report.
    #[inline(never)]
    fn general(
        f: &FieldCheck,
        uniq: &Uniqueness,
        c: Cell<'_>,
        row: u64,
        out: &mut Collector,
    ) -> General {
        let value = match c {
            Cell::Text(t) => f.caster.cast_str(t.str()),
            Cell::Json(j) => f.caster.cast_json(j),
            Cell::Skip | Cell::Missing => None,
        };
        let Some(value) = value else {
            Self::type_error(f, c, row, out);
            return General::Invalid;
        };
        Self::check_constraints(f, &value, c, row, out);
        if !f.tracked || !uniq.on {
            return General::Untracked;
        }
        match value {
            Value::Int(v) => General::Track(Tracked::Int(v)),
            // NaN equals nothing, itself included: never a repeat.
            _ => value
                .key(&uniq.hasher)
                .map_or(General::Untracked, |h| General::Track(Tracked::Hash(h))),
        }
    }

    #[cold]
    fn type_error(f: &FieldCheck, c: Cell<'_>, row: u64, out: &mut Collector) {
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
    }

    #[inline]
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
        // Characters are between a quarter of the bytes and all of them:
        // count them only when that range straddles a bound.
        let bytes = full.len();
        if f.max_len.is_some_and(|m| bytes > m) || f.min_len.is_some_and(|m| bytes < m * 4) {
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

    #[inline]
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

#[cfg(test)]
mod schema_tests {
    use crate::SchemaCheck;
    use crate::schema::*;

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
