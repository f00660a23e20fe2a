//! Cell casting: turning a cell's text (or a JSON value) into a typed
//! [`Value`] according to a field's type and format, plus the comparisons and
//! hashing that constraints and uniqueness need. Default formats are parsed by
//! hand (strict and fast); `any` and strftime patterns go through chrono.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use std::borrow::Cow;
use std::cmp::Ordering;

use crate::cell::{JsonCell, Text};
use crate::schema::{Field, FieldType, SchemaError};
use crate::unique::KeyHasher;
use crate::words::Words;

/// A cast cell. Strings borrow from the row when they can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Str(Cow<'a, str>),
    Int(i128),
    Num(f64),
    Bool(bool),
    Date(NaiveDate),
    /// Datetimes with an offset are normalized to UTC; naive ones are kept as given.
    DateTime(NaiveDateTime),
    Time(NaiveTime),
    Year(i32),
}

impl Value<'_> {
    pub(crate) fn into_owned(self) -> Value<'static> {
        match self {
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
            Value::Int(v) => Value::Int(v),
            Value::Num(v) => Value::Num(v),
            Value::Bool(v) => Value::Bool(v),
            Value::Date(v) => Value::Date(v),
            Value::DateTime(v) => Value::DateTime(v),
            Value::Time(v) => Value::Time(v),
            Value::Year(v) => Value::Year(v),
        }
    }

    /// Order two values of the same type (integers and numbers compare across).
    #[inline]
    pub(crate) fn compare(&self, other: &Value<'_>) -> Option<Ordering> {
        use Value::*;
        match (self, other) {
            (Str(a), Str(b)) => Some(a.as_ref().cmp(b.as_ref())),
            (Int(a), Int(b)) => Some(a.cmp(b)),
            (Num(a), Num(b)) => a.partial_cmp(b),
            (Int(a), Num(b)) => (*a as f64).partial_cmp(b),
            (Num(a), Int(b)) => a.partial_cmp(&(*b as f64)),
            (Bool(a), Bool(b)) => Some(a.cmp(b)),
            (Date(a), Date(b)) => Some(a.cmp(b)),
            (DateTime(a), DateTime(b)) => Some(a.cmp(b)),
            (Time(a), Time(b)) => Some(a.cmp(b)),
            (Year(a), Year(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// Equality as `enum` and uniqueness see it (cast values, so `01` == `1`).
    #[inline]
    pub(crate) fn same(&self, other: &Value<'_>) -> bool {
        match (self, other) {
            (Value::Str(a), Value::Str(b)) => {
                // Most pairs differ in length or first byte: no full comparison.
                let (a, b) = (a.as_bytes(), b.as_bytes());
                same_bytes(a, b)
            }
            (Value::Num(a), Value::Num(b)) if a.is_nan() && b.is_nan() => true,
            _ => self.compare(other) == Some(Ordering::Equal),
        }
    }

    /// The value's 64-bit key for uniqueness, consistent with [`Value::same`]
    /// within one type; `None` for NaN, which repeats nothing.
    #[inline]
    pub(crate) fn key(&self, h: &KeyHasher) -> Option<u64> {
        Some(match self {
            Value::Str(s) => h.bytes(0, s.as_bytes()),
            Value::Int(v) => int_key(h, *v),
            Value::Num(v) if v.is_nan() => return None,
            Value::Num(v) => num_key(h, *v),
            Value::Bool(v) => h.words(3, u64::from(*v), 0),
            Value::Date(d) => h.words(4, date_key(d), 0),
            Value::DateTime(dt) => {
                let utc = dt.and_utc();
                h.words(
                    5,
                    utc.timestamp() as u64,
                    u64::from(utc.timestamp_subsec_nanos()),
                )
            }
            Value::Time(t) => h.words(
                6,
                u64::from(t.num_seconds_from_midnight()),
                u64::from(t.nanosecond()),
            ),
            Value::Year(y) => h.words(7, *y as u64, 0),
        })
    }
}

/// Byte equality that rules most pairs out on length and first byte
/// before comparing the rest.
#[inline(always)]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.first() == b.first() && a == b
}

/// Uniqueness key of an integer.
#[inline(always)]
pub(crate) fn int_key(h: &KeyHasher, v: i128) -> u64 {
    h.words(1, v as u64, (v >> 64) as u64)
}

/// Uniqueness key of a (non-NaN) number; 0 and -0 are one.
#[inline(always)]
pub(crate) fn num_key(h: &KeyHasher, v: f64) -> u64 {
    h.words(2, if v == 0.0 { 0 } else { v.to_bits() }, 0)
}

/// A date as `year << 9 | month << 5 | day`, which orders like the date
/// (years from 0 on; chrono's negative years would order wrongly but only
/// ever reach here through uniqueness, where order does not matter).
#[inline(always)]
pub(crate) fn pack_ymd(y: u32, m: u32, d: u32) -> u32 {
    y << 9 | m << 5 | d
}

/// [`pack_ymd`] of a date, as the uniqueness hash input.
pub(crate) fn date_key(d: &NaiveDate) -> u64 {
    u64::from(pack_ymd(d.year() as u32, d.month(), d.day()))
}

/// A field's format, resolved once.
#[derive(Debug, Clone)]
enum Fmt {
    Default,
    Any,
    /// A strftime pattern (`fmt:` prefix removed); the flag says it parses an offset.
    Pattern(String, bool),
    Email,
    Uri,
    Uuid,
    Binary,
}

/// Casts cells for one field.
#[derive(Debug, Clone)]
pub(crate) struct Caster {
    pub(crate) ty: FieldType,
    fmt: Fmt,
    true_values: Vec<String>,
    false_values: Vec<String>,
    /// The true and false values together, for the quick check.
    booleans: Words,
}

const TRUE_VALUES: [&str; 4] = ["true", "True", "TRUE", "1"];
const FALSE_VALUES: [&str; 4] = ["false", "False", "FALSE", "0"];

impl Caster {
    pub(crate) fn new(field: &Field) -> Result<Caster, SchemaError> {
        let ty = field.field_type;
        let raw = field.format.as_deref().unwrap_or("default");
        let bad = || SchemaError::BadFormat {
            field: field.name.clone(),
            format: raw.to_owned(),
            field_type: ty.as_str(),
        };
        let fmt = match ty {
            FieldType::String => match raw {
                "default" => Fmt::Default,
                "email" => Fmt::Email,
                "uri" => Fmt::Uri,
                "uuid" => Fmt::Uuid,
                "binary" => Fmt::Binary,
                _ => return Err(bad()),
            },
            FieldType::Date | FieldType::Datetime | FieldType::Time => match raw {
                "default" => Fmt::Default,
                "any" => Fmt::Any,
                p => {
                    let p = p.strip_prefix("fmt:").unwrap_or(p);
                    let items = StrftimeItems::new(p).parse().map_err(|_| bad())?;
                    if !items
                        .iter()
                        .any(|i| !matches!(i, Item::Literal(_) | Item::Space(_)))
                    {
                        return Err(bad());
                    }
                    let offset = p.contains("%z")
                        || p.contains("%:z")
                        || p.contains("%::z")
                        || p.contains("%#z");
                    Fmt::Pattern(p.to_owned(), offset)
                }
            },
            // Frictionless defines no formats for the other types; ignore any given.
            _ => Fmt::Default,
        };
        let list = |given: &Option<Vec<String>>, default: &[&str]| match given {
            Some(v) => v.clone(),
            None => default.iter().map(|s| (*s).to_owned()).collect(),
        };
        let true_values = list(&field.true_values, &TRUE_VALUES);
        let false_values = list(&field.false_values, &FALSE_VALUES);
        Ok(Caster {
            ty,
            fmt,
            booleans: Words::new(true_values.iter().chain(&false_values)),
            true_values,
            false_values,
        })
    }

    /// Whether the field uses its type's default format.
    pub(crate) fn is_default_format(&self) -> bool {
        matches!(self.fmt, Fmt::Default)
    }

    /// [`Caster::is_valid_text`] of a whole string.
    #[cfg(test)]
    pub(crate) fn is_valid_str(&self, s: &str) -> bool {
        self.is_valid_text(Text(s))
    }

    /// Whether `b` is one of the boolean field's true or false values.
    #[inline(always)]
    pub(crate) fn is_boolean(&self, b: &[u8]) -> bool {
        self.booleans.contains(b)
    }

    /// Whether a (non-missing) CSV cell is a value of the type: the same
    /// verdict as [`Caster::cast_str`], from its bytes and without building
    /// the value where that costs more than checking the syntax.
    #[inline(always)]
    pub(crate) fn is_valid_text(&self, t: Text<'_>) -> bool {
        let b = t.bytes();
        match (self.ty, &self.fmt) {
            (FieldType::Integer, _) => is_integer(b),
            (FieldType::Number, _) => is_number(b),
            (FieldType::Date, Fmt::Default) => iso_date_key(b).is_some(),
            (FieldType::Datetime, Fmt::Default) => is_iso_datetime(b),
            (FieldType::Time, Fmt::Default) => is_iso_time(b),
            (FieldType::Year, _) => year_bytes(b).is_some(),
            (FieldType::Boolean, _) => self.is_boolean(b),
            (FieldType::String | FieldType::Any, Fmt::Default) => true,
            _ => self.cast_str(t.str()).is_some(),
        }
    }

    /// Cast a (non-missing) cell's text; `None` if it is not a value of the type.
    #[inline]
    pub(crate) fn cast_str<'a>(&self, s: &'a str) -> Option<Value<'a>> {
        match self.ty {
            FieldType::String => {
                let ok = match self.fmt {
                    Fmt::Email => is_email(s),
                    Fmt::Uri => is_uri(s),
                    Fmt::Uuid => is_uuid(s),
                    Fmt::Binary => is_base64(s),
                    _ => true,
                };
                ok.then_some(Value::Str(Cow::Borrowed(s)))
            }
            FieldType::Any => Some(Value::Str(Cow::Borrowed(s))),
            FieldType::Integer => parse_integer(s),
            FieldType::Number => parse_number(s).map(Value::Num),
            FieldType::Boolean => {
                if self.true_values.iter().any(|t| t == s) {
                    Some(Value::Bool(true))
                } else if self.false_values.iter().any(|f| f == s) {
                    Some(Value::Bool(false))
                } else {
                    None
                }
            }
            FieldType::Year => parse_year(s).map(Value::Year),
            FieldType::Date => self.cast_date(s).map(Value::Date),
            FieldType::Datetime => self.cast_datetime(s).map(Value::DateTime),
            FieldType::Time => self.cast_time(s).map(Value::Time),
        }
    }

    /// Cast a (non-null) JSON value: native JSON types where they fit, and
    /// strings that parse in the type (e.g. `"42"` for an integer).
    pub(crate) fn cast_json<'a>(&self, c: &'a JsonCell<'a>) -> Option<Value<'a>> {
        match (self.ty, c) {
            (_, JsonCell::Str(s)) => self.cast_str(s),
            (FieldType::Any, other) => Some(Value::Str(other.text())),
            (FieldType::Integer, JsonCell::I64(v)) => Some(Value::Int(*v as i128)),
            (FieldType::Integer, JsonCell::U64(v)) => Some(Value::Int(*v as i128)),
            (FieldType::Integer, JsonCell::F64(v)) if v.is_finite() && v.fract() == 0.0 => {
                Some(if v.abs() < 1e38 {
                    Value::Int(*v as i128)
                } else {
                    Value::Num(*v)
                })
            }
            (FieldType::Number, JsonCell::I64(v)) => Some(Value::Num(*v as f64)),
            (FieldType::Number, JsonCell::U64(v)) => Some(Value::Num(*v as f64)),
            (FieldType::Number, JsonCell::F64(v)) => Some(Value::Num(*v)),
            (FieldType::Year, JsonCell::I64(v)) if (0..=9999).contains(v) => {
                Some(Value::Year(*v as i32))
            }
            (FieldType::Year, JsonCell::U64(v)) if *v <= 9999 => Some(Value::Year(*v as i32)),
            (FieldType::Boolean, JsonCell::Bool(b)) => Some(Value::Bool(*b)),
            _ => None,
        }
    }

    /// Cast a constraint value from the schema (a JSON number or string).
    pub(crate) fn cast_constraint(&self, v: &serde_json::Value) -> Option<Value<'static>> {
        let cell = match v {
            serde_json::Value::String(s) => {
                // Bounds for dates may be written in the field's format or in ISO form.
                return self
                    .cast_str(s)
                    .or_else(|| {
                        let iso = Caster {
                            fmt: Fmt::Default,
                            ..self.clone()
                        };
                        iso.cast_str(s).map(Value::into_owned)
                    })
                    .map(Value::into_owned);
            }
            serde_json::Value::Bool(b) => JsonCell::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    JsonCell::I64(i)
                } else if let Some(u) = n.as_u64() {
                    JsonCell::U64(u)
                } else {
                    JsonCell::F64(n.as_f64()?)
                }
            }
            serde_json::Value::Null => return None,
            other => JsonCell::Complex(other.clone()),
        };
        self.cast_json(&cell).map(Value::into_owned)
    }

    #[inline]
    fn cast_date(&self, s: &str) -> Option<NaiveDate> {
        match &self.fmt {
            Fmt::Pattern(p, _) => NaiveDate::parse_from_str(s, p).ok(),
            Fmt::Any => parse_iso_date(s)
                .or_else(|| {
                    DATE_PATTERNS
                        .iter()
                        .find_map(|p| NaiveDate::parse_from_str(s, p).ok())
                })
                .or_else(|| any_datetime(s).map(|dt| dt.date())),
            _ => parse_iso_date(s),
        }
    }

    #[inline]
    fn cast_datetime(&self, s: &str) -> Option<NaiveDateTime> {
        match &self.fmt {
            Fmt::Pattern(p, true) => DateTime::parse_from_str(s, p).ok().map(|d| d.naive_utc()),
            Fmt::Pattern(p, false) => NaiveDateTime::parse_from_str(s, p).ok().or_else(|| {
                NaiveDate::parse_from_str(s, p)
                    .ok()
                    .map(|d| d.and_time(NaiveTime::MIN))
            }),
            Fmt::Any => any_datetime(s),
            _ => parse_iso_datetime(s),
        }
    }

    #[inline]
    fn cast_time(&self, s: &str) -> Option<NaiveTime> {
        match &self.fmt {
            Fmt::Pattern(p, _) => NaiveTime::parse_from_str(s, p).ok(),
            Fmt::Any => parse_iso_time(s).or_else(|| {
                TIME_PATTERNS
                    .iter()
                    .find_map(|p| NaiveTime::parse_from_str(s, p).ok())
            }),
            _ => parse_iso_time(s),
        }
    }
}

const DATE_PATTERNS: [&str; 10] = [
    "%Y/%m/%d",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d.%m.%Y",
    "%Y%m%d",
    "%d %b %Y",
    "%d %B %Y",
    "%b %d %Y",
    "%B %d, %Y",
    "%b %d, %Y",
];

const DATETIME_PATTERNS: [&str; 8] = [
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%d/%m/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%Y%m%dT%H%M%S",
];

const TIME_PATTERNS: [&str; 4] = ["%H:%M", "%I:%M %p", "%I:%M:%S %p", "%H%M%S"];

fn any_datetime(s: &str) -> Option<NaiveDateTime> {
    if let Some(dt) = parse_iso_datetime(s) {
        return Some(dt);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.naive_utc());
    }
    if let Ok(dt) = DateTime::parse_from_rfc2822(s) {
        return Some(dt.naive_utc());
    }
    if let Ok(dt) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(dt.naive_utc());
    }
    DATETIME_PATTERNS
        .iter()
        .find_map(|p| NaiveDateTime::parse_from_str(s, p).ok())
        .or_else(|| {
            parse_iso_date(s)
                .or_else(|| {
                    DATE_PATTERNS
                        .iter()
                        .find_map(|p| NaiveDate::parse_from_str(s, p).ok())
                })
                .map(|d| d.and_time(NaiveTime::MIN))
        })
}

/// Whether the eight bytes of `b` are ASCII digits in the lanes of
/// `digits` (0xFF bytes) and exactly `others` elsewhere.
#[inline(always)]
fn swar_shape(b: &[u8], digits: u64, others: u64) -> bool {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    let Some(&w) = b.first_chunk::<8>() else {
        return false;
    };
    let w = u64::from_le_bytes(w);
    // Digit lanes are 0x30..=0x3F, and below 0x3A (adding 6 carries out of
    // no lane once the first test holds); the rest are exactly `others`.
    w & !digits == others
        && w & digits & HIGH == ZEROS & digits
        && w.wrapping_add(0x0606_0606_0606_0606) & digits & HIGH == ZEROS & digits
}

/// Two ASCII digits as a number.
#[inline(always)]
fn d2(a: u8, b: u8) -> Option<u32> {
    let (a, b) = (a.wrapping_sub(b'0'), b.wrapping_sub(b'0'));
    (a <= 9 && b <= 9).then(|| u32::from(a) * 10 + u32::from(b))
}

/// `n` ASCII digits at the start of `b` as a number.
#[inline]
fn digits(b: &[u8], n: usize) -> Option<u32> {
    if b.len() < n {
        return None;
    }
    let mut acc = 0u32;
    for &c in &b[..n] {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        acc = acc * 10 + u32::from(d);
    }
    Some(acc)
}

/// `YYYY-MM-DD`.
#[inline]
fn parse_iso_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 {
        return None;
    }
    date_prefix(b)
}

#[inline]
fn date_prefix(b: &[u8]) -> Option<NaiveDate> {
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = digits(b, 4)?;
    let m = digits(&b[5..], 2)?;
    let d = digits(&b[8..], 2)?;
    if y == 0 {
        return None;
    }
    NaiveDate::from_ymd_opt(y as i32, m, d)
}

/// `hh:mm:ss` with optional `.fraction`; returns the time and the bytes used.
#[inline]
fn time_prefix(b: &[u8]) -> Option<(NaiveTime, usize)> {
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let h = digits(b, 2)?;
    let m = digits(&b[3..], 2)?;
    let s = digits(&b[6..], 2)?;
    let mut used = 8;
    let mut nanos = 0u32;
    if b.get(8) == Some(&b'.') {
        let frac = &b[9..];
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        for (i, c) in frac[..n].iter().take(9).enumerate() {
            nanos += u32::from(c - b'0') * 10u32.pow(8 - i as u32);
        }
        used = 9 + n;
    }
    // No leap seconds (ss = 60): Python's datetime, and so Frictionless, has none.
    let t = NaiveTime::from_hms_nano_opt(h, m, s, nanos)?;
    Some((t, used))
}

/// `hh:mm:ss[.fff]`.
#[inline]
fn parse_iso_time(s: &str) -> Option<NaiveTime> {
    match time_prefix(s.as_bytes())? {
        (t, used) if used == s.len() => Some(t),
        _ => None,
    }
}

/// `YYYY-MM-DDThh:mm:ss[.fff][Z|±hh:mm|±hhmm]`; with an offset, normalized to UTC.
#[inline]
fn parse_iso_datetime(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() < 19 || b[10] != b'T' {
        return None;
    }
    let date = date_prefix(b)?;
    let (time, used) = time_prefix(&b[11..])?;
    let dt = date.and_time(time);
    let rest = &b[11 + used..];
    let offset_secs: i64 = match rest {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let (h, m) = match tail {
                [_, _, b':', _, _] => (digits(tail, 2)?, digits(&tail[3..], 2)?),
                [_, _, _, _] => (digits(tail, 2)?, digits(&tail[2..], 2)?),
                [_, _] => (digits(tail, 2)?, 0),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let secs = i64::from(h * 3600 + m * 60);
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    dt.checked_sub_signed(chrono::TimeDelta::seconds(offset_secs))
}

/// Split an optional leading sign: (negative, the rest).
#[inline]
fn split_sign(b: &[u8]) -> (bool, &[u8]) {
    match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    }
}

/// Optional sign, then one or more ASCII digits.
#[inline]
fn is_integer(b: &[u8]) -> bool {
    let (_, body) = split_sign(b);
    !body.is_empty() && body.iter().all(u8::is_ascii_digit)
}

/// An integer of at most 18 digits (so it fits an i64 unchecked), optionally signed.
#[inline(always)]
pub(crate) fn small_integer(b: &[u8]) -> Option<i64> {
    let (neg, body) = split_sign(b);
    if body.is_empty() || body.len() > 18 {
        return None;
    }
    let mut v = 0i64;
    for &c in body {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + i64::from(d);
    }
    Some(if neg { -v } else { v })
}

/// Optional sign, then ASCII digits only.
#[inline]
fn parse_integer(s: &str) -> Option<Value<'static>> {
    let (neg, body) = split_sign(s.as_bytes());
    if body.is_empty() {
        return None;
    }
    if body.len() <= 18 {
        // Fits in a u64 whatever the digits: no overflow check needed.
        let mut v = 0u64;
        for &c in body {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            v = v * 10 + u64::from(d);
        }
        let v = i128::from(v);
        return Some(Value::Int(if neg { -v } else { v }));
    }
    if !body.iter().all(u8::is_ascii_digit) {
        return None;
    }
    match s.parse::<i128>() {
        Ok(v) => Some(Value::Int(v)),
        // Beyond i128: still an integer; compare it approximately.
        Err(_) => s.parse::<f64>().ok().map(Value::Num),
    }
}

/// Exact powers of ten for the fast decimal path.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The special numbers, unsigned: NaN / INF / Infinity (any case).
#[inline]
fn special_number(body: &[u8]) -> Option<f64> {
    if body.len() < 3 || body[0].is_ascii_digit() || body[0] == b'.' {
        return None;
    }
    if body.eq_ignore_ascii_case(b"nan") {
        Some(f64::NAN)
    } else if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
        Some(f64::INFINITY)
    } else {
        None
    }
}

/// Length of the decimal (digits, `.`, digits, optional exponent) at the start of
/// `body`, and the value of its first digits when it is short enough for the
/// exact fast path: (mantissa, fraction digits, digit count, has exponent).
#[inline]
fn scan_decimal(body: &[u8]) -> Option<(u64, usize, usize, bool)> {
    let mut m = 0u64;
    let mut i = 0;
    while i < body.len() && body[i].is_ascii_digit() {
        m = m.wrapping_mul(10).wrapping_add(u64::from(body[i] - b'0'));
        i += 1;
    }
    let int_digits = i;
    let mut frac_digits = 0;
    if i < body.len() && body[i] == b'.' {
        i += 1;
        while i < body.len() && body[i].is_ascii_digit() {
            m = m.wrapping_mul(10).wrapping_add(u64::from(body[i] - b'0'));
            i += 1;
            frac_digits += 1;
        }
    }
    if int_digits + frac_digits == 0 {
        return None;
    }
    let mut exponent = false;
    if i < body.len() && (body[i] == b'e' || body[i] == b'E') {
        i += 1;
        if i < body.len() && (body[i] == b'+' || body[i] == b'-') {
            i += 1;
        }
        let digits = body[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        i += digits;
        exponent = true;
    }
    (i == body.len()).then_some((m, frac_digits, int_digits + frac_digits, exponent))
}

/// Decimal with optional exponent, or NaN / INF / Infinity (any case, signed).
#[inline]
fn is_number(b: &[u8]) -> bool {
    let (_, body) = split_sign(b);
    scan_decimal(body).is_some() || special_number(body).is_some()
}

/// Decimal with optional exponent, or NaN / INF / Infinity (any case, signed).
#[inline]
fn parse_number(s: &str) -> Option<f64> {
    parse_number_bytes(s.as_bytes())
}

/// `digits[.digits]` with at most 15 digits in all, as the nearest f64
/// (exact: the digits make an integer under 2^53 and one division by an
/// exact power of ten rounds once).
#[inline(always)]
fn short_decimal(body: &[u8]) -> Option<f64> {
    let n = body.len();
    if n > 16 {
        return None;
    }
    let mut m = 0u64;
    let mut i = 0;
    while i < n {
        let d = body[i].wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        m = m * 10 + u64::from(d);
        i += 1;
    }
    let int_len = i;
    if i < n {
        if body[i] != b'.' {
            return None;
        }
        i += 1;
        while i < n {
            let d = body[i].wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            m = m * 10 + u64::from(d);
            i += 1;
        }
    }
    // Digits after the point (if any: `n - int_len` counts it).
    let frac = (n - int_len).saturating_sub(1);
    let digits = int_len + frac;
    if digits == 0 || digits > 15 {
        return None;
    }
    Some(m as f64 / POW10[frac])
}

/// [`parse_number`] of the bytes of a `str`.
#[inline(always)]
pub(crate) fn parse_number_bytes(b: &[u8]) -> Option<f64> {
    let (neg, body) = split_sign(b);
    match short_decimal(body) {
        Some(v) => Some(if neg { -v } else { v }),
        None => long_number(b),
    }
}

/// [`parse_number_bytes`] past the short decimals: long ones, exponents,
/// and NaN / INF / Infinity.
#[inline(never)]
fn long_number(b: &[u8]) -> Option<f64> {
    let (neg, body) = split_sign(b);
    let Some((m, frac, digits, exponent)) = scan_decimal(body) else {
        let v = special_number(body)?;
        return Some(if neg && !v.is_nan() { -v } else { v });
    };
    if digits <= 15 && !exponent {
        // Exact: m < 2^53 and 10^frac is exact, so one division rounds correctly.
        let v = m as f64 / POW10[frac];
        return Some(if neg { -v } else { v });
    }
    std::str::from_utf8(b).ok()?.parse::<f64>().ok()
}

/// Length of a valid `hh:mm:ss[.fff]` at the start of `b`, without building a time.
#[inline(always)]
fn iso_time_len(b: &[u8]) -> Option<usize> {
    let &[h0, h1, _, m0, m1, _, s0, s1, ref rest @ ..] = b else {
        return None;
    };
    if !swar_shape(b, 0xFFFF_00FF_FF00_FFFF, 0x0000_3A00_003A_0000) {
        return None;
    }
    let two = |a: u8, b: u8| u32::from(a - b'0') * 10 + u32::from(b - b'0');
    if two(h0, h1) > 23 || two(m0, m1) > 59 || two(s0, s1) > 59 {
        return None;
    }
    let [b'.', frac @ ..] = rest else {
        return Some(8);
    };
    let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
    (n > 0).then_some(9 + n)
}

/// `hh:mm:ss[.fff]`, without building a time.
#[inline(always)]
pub(crate) fn is_iso_time(b: &[u8]) -> bool {
    iso_time_len(b) == Some(b.len())
}

/// `YYYY-MM-DDThh:mm:ss[.fff][Z|±hh:mm|±hhmm|±hh]`, as [`parse_iso_datetime`]
/// accepts it, without building a datetime.
#[inline(always)]
pub(crate) fn is_iso_datetime(b: &[u8]) -> bool {
    if b.len() < 19 || b[10] != b'T' || !is_iso_date(&b[..10]) {
        return false;
    }
    let Some(used) = iso_time_len(&b[11..]) else {
        return false;
    };
    let rest = &b[11 + used..];
    let (h, m) = match rest {
        [] | [b'Z'] => return true,
        [b'+' | b'-', tail @ ..] => match tail {
            [_, _, b':', _, _] => (digits(tail, 2), digits(&tail[3..], 2)),
            [_, _, _, _] => (digits(tail, 2), digits(&tail[2..], 2)),
            [_, _] => (digits(tail, 2), Some(0)),
            _ => return false,
        },
        _ => return false,
    };
    // Offsets move the instant by a day at most: never out of chrono's range here.
    matches!((h, m), (Some(h), Some(m)) if h <= 23 && m <= 59)
}

/// `YYYY-MM-DD` with a real day of the month (year 0001 on), without building a date.
#[inline]
fn is_iso_date(b: &[u8]) -> bool {
    iso_date_key(b).is_some()
}

/// [`pack_ymd`] of a valid `YYYY-MM-DD` date (year 0001 on).
#[inline(always)]
pub(crate) fn iso_date_key(b: &[u8]) -> Option<u32> {
    let &[y0, y1, y2, y3, _, m0, m1, _, d0, d1] = b else {
        return None;
    };
    // "YYYY-MM-" checked eight bytes at a time: digits where digits go.
    if !swar_shape(&b[..8], 0x00FF_FF00_FFFF_FFFF, 0x2D00_002D_0000_0000) {
        return None;
    }
    let digit = |c: u8| u32::from(c - b'0');
    let y = digit(y0) * 1000 + digit(y1) * 100 + digit(y2) * 10 + digit(y3);
    let (m, d) = (digit(m0) * 10 + digit(m1), d2(d0, d1)?);
    let ok = y >= 1 && (1..=12).contains(&m) && d >= 1 && (d <= 28 || d <= days_in_month(y, m));
    ok.then(|| pack_ymd(y, m, d))
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Exactly four ASCII digits.
#[inline(always)]
pub(crate) fn year_bytes(b: &[u8]) -> Option<i32> {
    let &[a, b, c, d] = b else { return None };
    Some((d2(a, b)? * 100 + d2(c, d)?) as i32)
}

/// Exactly four ASCII digits.
#[inline]
fn parse_year(s: &str) -> Option<i32> {
    (s.len() == 4)
        .then(|| digits(s.as_bytes(), 4))
        .flatten()
        .map(|y| y as i32)
}

/// A cheap shape check: `local@domain.tld`, no spaces, one `@`.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

/// `scheme:rest` per RFC 3986's scheme syntax, no spaces.
fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `8-4-4-4-12` hex digits (or 32 hex digits without hyphens).
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    match b.len() {
        36 => b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        }),
        32 => b.iter().all(u8::is_ascii_hexdigit),
        _ => false,
    }
}

/// Standard base64 with padding.
fn is_base64(s: &str) -> bool {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return false;
    }
    let body = b
        .strip_suffix(b"==")
        .or_else(|| b.strip_suffix(b"="))
        .unwrap_or(b);
    body.iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caster(ty: FieldType, format: Option<&str>) -> Caster {
        let mut f = Field::new("f", ty);
        f.format = format.map(str::to_owned);
        Caster::new(&f).unwrap()
    }

    fn ok(ty: FieldType, format: Option<&str>, good: &[&str], bad: &[&str]) {
        let c = caster(ty, format);
        for g in good {
            assert!(
                c.cast_str(g).is_some(),
                "{ty:?}/{format:?} should accept {g:?}"
            );
            assert!(
                c.is_valid_str(g),
                "{ty:?}/{format:?} fast path rejects {g:?}"
            );
        }
        for b in bad {
            assert!(
                c.cast_str(b).is_none(),
                "{ty:?}/{format:?} should reject {b:?}"
            );
            assert!(
                !c.is_valid_str(b),
                "{ty:?}/{format:?} fast path accepts {b:?}"
            );
        }
    }

    #[test]
    fn integer() {
        ok(
            FieldType::Integer,
            None,
            &[
                "0",
                "-12",
                "+7",
                "007",
                "123456789012345678901234567890123456789012",
            ],
            &[
                "1.0", "1e3", " 1", "1 ", "abc", "-", "", "1_000", "0x10", "+-1",
            ],
        );
        let c = caster(FieldType::Integer, None);
        assert_eq!(
            c.cast_str("999999999999999999"),
            Some(Value::Int(999_999_999_999_999_999))
        );
        assert_eq!(
            c.cast_str("-9999999999999999999"),
            Some(Value::Int(-9_999_999_999_999_999_999))
        );
        assert_eq!(
            caster(FieldType::Integer, None).cast_str("-12"),
            Some(Value::Int(-12))
        );
    }

    #[test]
    fn number() {
        ok(
            FieldType::Number,
            None,
            &[
                "1",
                "-1.5",
                ".5",
                "5.",
                "1e10",
                "2.5E-3",
                "NaN",
                "INF",
                "-INF",
                "inf",
                "+Infinity",
            ],
            &[
                "", "e5", "1e", "1.2.3", "abc", "1,5", " 1", "--1", ".", "+", "nanx", "in",
            ],
        );
        // The fast path and the standard parser agree.
        let c = caster(FieldType::Number, None);
        for s in [
            "0.1",
            "123.456",
            "-0.000001",
            "999999999999999",
            "0.30000000000000004",
            "1234567890.12345",
            "5.",
            ".5",
            "-0",
            "1e3",
            "12345678901234567890.5",
            "2.5E-3",
        ] {
            let want: f64 = s.parse().unwrap();
            match c.cast_str(s) {
                Some(Value::Num(v)) => assert!(
                    v == want && v.is_sign_negative() == want.is_sign_negative(),
                    "{s}: {v} != {want}"
                ),
                other => panic!("{s}: {other:?}"),
            }
        }
    }

    #[test]
    fn boolean() {
        ok(
            FieldType::Boolean,
            None,
            &["true", "True", "TRUE", "1", "false", "False", "FALSE", "0"],
            &["yes", "t", "tRUE", "2", ""],
        );
        let mut f = Field::new("b", FieldType::Boolean);
        f.true_values = Some(vec!["Y".into()]);
        f.false_values = Some(vec!["N".into()]);
        let c = Caster::new(&f).unwrap();
        assert_eq!(c.cast_str("Y"), Some(Value::Bool(true)));
        assert_eq!(c.cast_str("N"), Some(Value::Bool(false)));
        assert_eq!(c.cast_str("true"), None);
    }

    #[test]
    fn date() {
        ok(
            FieldType::Date,
            None,
            &["2024-02-29", "1999-12-31"],
            &[
                "2023-02-29",
                "2024-13-01",
                "2024-1-01",
                "24-01-01",
                "2024/01/01",
                "2024-01-01T00:00:00",
                "0000-01-01",
                "2023-04-31",
                "2100-02-29",
                "2024-00-10",
                "2024-01-00",
            ],
        );
        ok(
            FieldType::Date,
            None,
            &["2000-02-29", "0001-01-01", "2023-12-31"],
            &[],
        );
        ok(
            FieldType::Date,
            Some("%d/%m/%Y"),
            &["31/12/2024"],
            &["2024-12-31", "32/12/2024"],
        );
        ok(
            FieldType::Date,
            Some("fmt:%d/%m/%Y"),
            &["31/12/2024"],
            &["2024-12-31"],
        );
        ok(
            FieldType::Date,
            Some("any"),
            &[
                "2024-12-31",
                "31/12/2024",
                "2024/12/31",
                "31 Dec 2024",
                "2024-12-31T10:00:00Z",
            ],
            &["not a date", "2024-13-45"],
        );
    }

    #[test]
    fn datetime() {
        ok(
            FieldType::Datetime,
            None,
            &[
                "2024-01-02T03:04:05Z",
                "2024-01-02T03:04:05",
                "2024-01-02T03:04:05.123456Z",
                "2024-01-02T03:04:05+02:00",
                "2024-01-02T03:04:05-0530",
            ],
            &[
                "2024-01-02 03:04:05",
                "2024-01-02",
                "2024-01-02T25:00:00Z",
                "2024-01-02T03:04:05X",
                "2024-01-02T03:04:05+2",
                "2024-01-02T03:04:60Z",
                "2024-02-30T03:04:05Z",
                "2024-01-02T03:04:05+24:00",
                "2024-01-02T03:04:05.Z",
                "2024-01-02T03:04:05Zx",
            ],
        );
        let c = caster(FieldType::Datetime, None);
        assert_eq!(
            c.cast_str("2024-01-02T03:04:05+02:00"),
            c.cast_str("2024-01-02T01:04:05Z"),
            "offsets normalize to UTC"
        );
        ok(
            FieldType::Datetime,
            Some("%d/%m/%Y %H:%M"),
            &["02/01/2024 03:04"],
            &["2024-01-02T03:04:05Z"],
        );
        ok(
            FieldType::Datetime,
            Some("any"),
            &[
                "2024-01-02 03:04:05",
                "Tue, 2 Jan 2024 03:04:05 +0000",
                "2024-01-02",
            ],
            &["soon"],
        );
    }

    #[test]
    fn swar_dates_and_times_match_a_byte_by_byte_check() {
        fn date(b: &[u8]) -> Option<u32> {
            let &[y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = b else {
                return None;
            };
            let (y, m, d) = (d2(y0, y1)? * 100 + d2(y2, y3)?, d2(m0, m1)?, d2(d0, d1)?);
            let ok = y >= 1 && (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m);
            ok.then(|| pack_ymd(y, m, d))
        }
        fn time(b: &[u8]) -> Option<usize> {
            let &[h0, h1, b':', m0, m1, b':', s0, s1, ref rest @ ..] = b else {
                return None;
            };
            if d2(h0, h1)? > 23 || d2(m0, m1)? > 59 || d2(s0, s1)? > 59 {
                return None;
            }
            let [b'.', frac @ ..] = rest else {
                return Some(8);
            };
            let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            (n > 0).then_some(9 + n)
        }
        let alphabet = b"0123456789-:/;.\xff\xfa\x2f\x3a\x30\x39 ";
        let mut x: u32 = 1;
        let mut next = || {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as usize
        };
        let mut valid = (0, 0);
        for _ in 0..300_000 {
            // Mostly well-formed, with one or two bytes changed.
            let mut d = *b"2024-02-29";
            let mut t = *b"23:59:59.5";
            for _ in 0..next() % 3 {
                d[next() % 10] = alphabet[next() % alphabet.len()];
                t[next() % 10] = alphabet[next() % alphabet.len()];
            }
            assert_eq!(
                iso_date_key(&d),
                date(&d),
                "{:?}",
                String::from_utf8_lossy(&d)
            );
            let n = 8 + next() % 3;
            assert_eq!(
                iso_time_len(&t[..n]),
                time(&t[..n]),
                "{:?}",
                String::from_utf8_lossy(&t)
            );
            valid.0 += usize::from(date(&d).is_some());
            valid.1 += usize::from(time(&t[..n]).is_some());
        }
        assert!(valid.0 > 1000 && valid.1 > 1000, "{valid:?}");
    }

    #[test]
    fn time() {
        ok(
            FieldType::Time,
            None,
            &["00:00:00", "23:59:59", "12:30:00.5"],
            &[
                "24:00:00",
                "12:30",
                "12:30:00Z",
                "noon",
                "12:60:00",
                "12:30:60",
                "12:30:00.",
            ],
        );
        ok(FieldType::Time, Some("%H%M"), &["1230"], &["12:30:00"]);
        ok(
            FieldType::Time,
            Some("any"),
            &["12:30", "12:30:00", "1:30 PM"],
            &["later"],
        );
    }

    #[test]
    fn year() {
        ok(
            FieldType::Year,
            None,
            &["2024", "0999"],
            &["24", "20245", "-2024", "year", ""],
        );
    }

    #[test]
    fn string_formats() {
        ok(FieldType::String, None, &["", "anything at all"], &[]);
        ok(
            FieldType::String,
            Some("email"),
            &["a@b.co", "first.last+tag@sub.example.org"],
            &["a@b", "@b.co", "a b@c.de", "a@@b.co", "a@b..co", "plain"],
        );
        ok(
            FieldType::String,
            Some("uri"),
            &["https://example.com/x?y=1", "mailto:a@b.co", "urn:isbn:123"],
            &["example.com", "://x", "http ://x", "1http://x", "http:"],
        );
        ok(
            FieldType::String,
            Some("uuid"),
            &[
                "123e4567-e89b-12d3-a456-426614174000",
                "123E4567E89B12D3A456426614174000",
            ],
            &[
                "123e4567-e89b-12d3-a456-42661417400",
                "g23e4567-e89b-12d3-a456-426614174000",
                "123e4567e89b-12d3-a456-426614174000-",
            ],
        );
        ok(
            FieldType::String,
            Some("binary"),
            &["aGVsbG8=", "aGk="],
            &["aGVsbG8", "a*b="],
        );
        ok(FieldType::Any, None, &["", "x", "1"], &[]);
    }

    #[test]
    fn json_cells() {
        let i = caster(FieldType::Integer, None);
        assert_eq!(i.cast_json(&JsonCell::I64(42)), Some(Value::Int(42)));
        assert_eq!(i.cast_json(&JsonCell::F64(42.0)), Some(Value::Int(42)));
        assert_eq!(i.cast_json(&JsonCell::F64(42.5)), None);
        assert_eq!(
            i.cast_json(&JsonCell::Str("42".into())),
            Some(Value::Int(42))
        );
        assert_eq!(i.cast_json(&JsonCell::Bool(true)), None);
        let s = caster(FieldType::String, None);
        assert_eq!(s.cast_json(&JsonCell::I64(1)), None);
        let b = caster(FieldType::Boolean, None);
        assert_eq!(
            b.cast_json(&JsonCell::Bool(false)),
            Some(Value::Bool(false))
        );
        let a = caster(FieldType::Any, None);
        assert_eq!(a.cast_json(&JsonCell::I64(7)), Some(Value::Str("7".into())));
    }

    #[test]
    fn comparisons_and_hashing() {
        let i = caster(FieldType::Integer, None);
        let (a, b) = (i.cast_str("01").unwrap(), i.cast_str("1").unwrap());
        assert!(a.same(&b));
        let k = KeyHasher::random();
        let h = |v: &Value| v.key(&k);
        assert_eq!(h(&a), h(&b));
        assert_ne!(h(&a), h(&Value::Int(-1)));
        assert_ne!(h(&a), h(&Value::Str("1".into())));
        assert_eq!(h(&Value::Num(0.0)), h(&Value::Num(-0.0)));
        assert_eq!(h(&Value::Num(f64::NAN)), None);
        let dt = caster(FieldType::Datetime, None);
        assert_eq!(
            h(&dt.cast_str("2024-01-02T03:04:05+02:00").unwrap()),
            h(&dt.cast_str("2024-01-02T01:04:05Z").unwrap())
        );
        assert_eq!(
            Value::Int(2).compare(&Value::Num(1.5)),
            Some(Ordering::Greater)
        );
        assert_eq!(Value::Int(2).compare(&Value::Bool(true)), None);
    }
}
