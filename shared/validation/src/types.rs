//! Cell casting: turning a cell's text (or a JSON value) into a typed
//! [`Value`] according to a field's type and format, plus the comparisons and
//! hashing that constraints and uniqueness need. Default formats are parsed by
//! hand (strict and fast); `any` and strftime patterns go through chrono.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};

use crate::jsonl::JsonCell;
use crate::schema::{Field, FieldType, SchemaError};

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
    pub(crate) fn same(&self, other: &Value<'_>) -> bool {
        match (self, other) {
            (Value::Num(a), Value::Num(b)) if a.is_nan() && b.is_nan() => true,
            _ => self.compare(other) == Some(Ordering::Equal),
        }
    }

    /// Feed a canonical form to `h`, consistent with [`Value::same`] within one type.
    pub(crate) fn hash_into<H: Hasher>(&self, h: &mut H) {
        match self {
            Value::Str(s) => {
                0u8.hash(h);
                s.as_ref().hash(h);
            }
            Value::Int(v) => {
                1u8.hash(h);
                v.hash(h);
            }
            Value::Num(v) => {
                2u8.hash(h);
                let bits = if v.is_nan() {
                    f64::NAN.to_bits()
                } else if *v == 0.0 {
                    0.0f64.to_bits()
                } else {
                    v.to_bits()
                };
                bits.hash(h);
            }
            Value::Bool(v) => {
                3u8.hash(h);
                v.hash(h);
            }
            Value::Date(v) => {
                4u8.hash(h);
                v.hash(h);
            }
            Value::DateTime(v) => {
                5u8.hash(h);
                v.hash(h);
            }
            Value::Time(v) => {
                6u8.hash(h);
                v.hash(h);
            }
            Value::Year(v) => {
                7u8.hash(h);
                v.hash(h);
            }
        }
    }
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
        Ok(Caster {
            ty,
            fmt,
            true_values: list(&field.true_values, &TRUE_VALUES),
            false_values: list(&field.false_values, &FALSE_VALUES),
        })
    }

    /// Cast a (non-missing) cell's text; `None` if it is not a value of the type.
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

/// `n` ASCII digits at the start of `b` as a number.
fn digits(b: &[u8], n: usize) -> Option<u32> {
    if b.len() < n {
        return None;
    }
    b[..n].iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// `YYYY-MM-DD`.
fn parse_iso_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 {
        return None;
    }
    date_prefix(b)
}

fn date_prefix(b: &[u8]) -> Option<NaiveDate> {
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = digits(b, 4)?;
    let m = digits(&b[5..], 2)?;
    let d = digits(&b[8..], 2)?;
    NaiveDate::from_ymd_opt(y as i32, m, d)
}

/// `hh:mm:ss` with optional `.fraction`; returns the time and the bytes used.
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
    // A leap second (ss = 60) is represented by chrono as 59 s + 1e9 ns.
    let t = if s == 60 {
        NaiveTime::from_hms_nano_opt(h, m, 59, 1_000_000_000 + nanos)
    } else {
        NaiveTime::from_hms_nano_opt(h, m, s, nanos)
    }?;
    Some((t, used))
}

/// `hh:mm:ss[.fff]`.
fn parse_iso_time(s: &str) -> Option<NaiveTime> {
    match time_prefix(s.as_bytes())? {
        (t, used) if used == s.len() => Some(t),
        _ => None,
    }
}

/// `YYYY-MM-DDThh:mm:ss[.fff][Z|±hh:mm|±hhmm]`; with an offset, normalized to UTC.
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

/// Optional sign, then ASCII digits only.
fn parse_integer(s: &str) -> Option<Value<'static>> {
    let b = s.as_bytes();
    let body = match b.first()? {
        b'+' | b'-' => &b[1..],
        _ => b,
    };
    if body.is_empty() || !body.iter().all(u8::is_ascii_digit) {
        return None;
    }
    match s.parse::<i128>() {
        Ok(v) => Some(Value::Int(v)),
        // Beyond i128: still an integer; compare it approximately.
        Err(_) => s.parse::<f64>().ok().map(Value::Num),
    }
}

/// Decimal with optional exponent, or NaN / INF / Infinity (any case, signed).
fn parse_number(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let body = match b.first()? {
        b'+' | b'-' => &b[1..],
        _ => b,
    };
    if body.eq_ignore_ascii_case(b"nan") {
        return Some(f64::NAN);
    }
    if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
        return Some(if b[0] == b'-' {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    let mut i = 0;
    let int_digits = body.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if body.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = body[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits + frac_digits == 0 {
        return None;
    }
    if matches!(body.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(body.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_digits = body[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp_digits == 0 {
            return None;
        }
        i += exp_digits;
    }
    if i != body.len() {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Exactly four ASCII digits.
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
        }
        for b in bad {
            assert!(
                c.cast_str(b).is_none(),
                "{ty:?}/{format:?} should reject {b:?}"
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
            &["1.0", "1e3", " 1", "1 ", "abc", "-", "", "1_000", "0x10"],
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
            &["", "e5", "1e", "1.2.3", "abc", "1,5", " 1", "--1", "."],
        );
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
            ],
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
    fn time() {
        ok(
            FieldType::Time,
            None,
            &["00:00:00", "23:59:59", "12:30:00.5"],
            &["24:00:00", "12:30", "12:30:00Z", "noon"],
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
        use std::hash::DefaultHasher;
        let i = caster(FieldType::Integer, None);
        let (a, b) = (i.cast_str("01").unwrap(), i.cast_str("1").unwrap());
        assert!(a.same(&b));
        let h = |v: &Value| {
            let mut h = DefaultHasher::new();
            v.hash_into(&mut h);
            h.finish()
        };
        assert_eq!(h(&a), h(&b));
        assert_eq!(h(&Value::Num(0.0)), h(&Value::Num(-0.0)));
        assert_eq!(
            Value::Int(2).compare(&Value::Num(1.5)),
            Some(Ordering::Greater)
        );
        assert_eq!(Value::Int(2).compare(&Value::Bool(true)), None);
    }
}
