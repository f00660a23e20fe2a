//! Which object keys the pipeline takes: one predicate, [`check`], for every place that decides.
//!
//! `choreo put` asks it before uploading anything, the ingestor before registering a notified key,
//! and the local backend before a key becomes a path under a bucket's directory (so its listings
//! never offer a key its reads would refuse). A key the pipeline would skip or refuse is therefore
//! refused up front with the reason, never registered and then left stranded.

/// Why a key is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("the key is empty")]
    Empty,
    #[error("the key is longer than {MAX_KEY_BYTES} bytes (S3's limit)")]
    TooLong,
    #[error("the key starts with '/'")]
    Absolute,
    #[error("the key has an empty segment ('//' or a trailing '/')")]
    EmptySegment,
    #[error("the key has a '.' or '..' segment")]
    DotSegment,
    #[error(
        "a name in the key starts with '.': hidden names are other programs' temporary files \
         (write to .name, then rename it in)"
    )]
    Hidden,
    #[error("the key contains a backslash")]
    Backslash,
    #[error("the key contains a control character")]
    ControlCharacter,
}

/// S3's limit on a key's length, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// Takes a key the pipeline can register, read, copy and delete on both backends: a relative,
/// `/`-separated path of visible names — no empty, `.` or `..` segment, no name starting with `.`
/// (another program's file in the making), no backslash (a path separator to some readers, Spark's
/// and Windows' among them) and no control character (newlines and escapes in logs, terminals and
/// reports).
pub fn check(key: &str) -> Result<(), KeyRefusal> {
    if key.is_empty() {
        return Err(KeyRefusal::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyRefusal::TooLong);
    }
    if key.starts_with('/') {
        return Err(KeyRefusal::Absolute);
    }
    if key.chars().any(char::is_control) {
        return Err(KeyRefusal::ControlCharacter);
    }
    if key.contains('\\') {
        return Err(KeyRefusal::Backslash);
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err(KeyRefusal::EmptySegment),
            "." | ".." => return Err(KeyRefusal::DotSegment),
            s if s.starts_with('.') => return Err(KeyRefusal::Hidden),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_relative_paths_are_taken() {
        for key in [
            "daily/2026-11-20.csv",
            "a b/ü.csv",
            "daily/x=1&y+z.csv",
            "daily/region=eu/day=2026-11-26/a.csv",
            "file.",
            "daily/a..b.csv",
            "daily/עברית.csv",
        ] {
            assert_eq!(check(key), Ok(()), "{key:?}");
        }
        assert_eq!(check(&"k".repeat(MAX_KEY_BYTES)), Ok(()));
    }

    #[test]
    fn every_refusal_has_its_reason() {
        use KeyRefusal::*;
        let cases = [
            ("", Empty),
            ("/etc/passwd", Absolute),
            ("a//b", EmptySegment),
            ("daily/", EmptySegment),
            ("./a", DotSegment),
            ("a/../../x", DotSegment),
            ("daily/.hidden.csv", Hidden),
            (".tmp/a.csv", Hidden),
            ("daily/.partial/a.csv", Hidden),
            ("daily\\a.csv", Backslash),
            ("..\\..\\x", Backslash),
            ("daily/a\nb.csv", ControlCharacter),
            ("daily/\u{1b}[31mred.csv", ControlCharacter),
            ("daily/nul\0.csv", ControlCharacter),
            ("daily/c1\u{85}.csv", ControlCharacter),
            ("daily/del\u{7f}.csv", ControlCharacter),
        ];
        for (key, why) in cases {
            assert_eq!(check(key), Err(why), "{key:?}");
        }
        assert_eq!(check(&"k".repeat(MAX_KEY_BYTES + 1)), Err(TooLong));
        assert!(Hidden.to_string().contains("rename"));
    }
}
