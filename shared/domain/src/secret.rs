//! Configuration values that must never be shown: the API token, the mask salt, an SMTP URL with
//! its password.
//!
//! [`Secret`] keeps its text in a [`secrecy::SecretString`] (wiped from memory when dropped) and
//! adds what a configuration field needs: it reads from the configuration like a string, compares
//! equal by value, and dereferences to `&str` so the code that uses it (a hash, a bearer check, an
//! SMTP transport) reads naturally. What it never does is show itself: `Debug` prints
//! `<redacted>`, there is no `Display` (so `%secret` in a log line does not compile), and
//! serializing a non-empty secret is an error rather than a copy of it in some file or log.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string from the configuration. See the module's header for what it hides and how.
#[derive(Clone, Default)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(SecretString::from(text.into()))
    }

    /// The text itself: for the one place that needs it, never for a log line.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        self.expose()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Whether it is set is useful and safe to show; what it is, never.
        f.write_str(if self.expose().is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.expose() == other.expose()
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Secret {
        Secret::new(text)
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Secret {
        Secret::new(text)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        SecretString::deserialize(d).map(Secret)
    }
}

impl Serialize for Secret {
    /// An empty secret serializes as `""` (the configuration's defaults are handed to the loader
    /// serialized); a set one is refused, so that no configuration written out or logged whole
    /// carries it, and no copy silently carries a placeholder instead.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.expose().is_empty() {
            s.serialize_str("")
        } else {
            Err(serde::ser::Error::custom("a secret is never serialized"))
        }
    }
}

/// `url` with the password of its user info, if any, replaced by `***`: what logs and errors show
/// of an `smtp://user:password@host:port` URL.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    // The last `@` ends the user info: a password may itself hold `@`.
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let user = match authority[..at].split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => authority[..at].to_string(),
    };
    format!(
        "{}{user}@{}{}",
        &url[..scheme_end],
        &authority[at + 1..],
        &url[authority_end..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_text() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(<redacted>)");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(&*s, "hunter2");
    }

    #[test]
    fn reads_as_a_string_and_is_never_written() {
        #[derive(Deserialize, Serialize)]
        struct C {
            token: Secret,
        }
        let c: C = serde_json::from_str(r#"{"token": "hunter2"}"#).unwrap();
        assert_eq!(c.token, Secret::new("hunter2"));
        let err = serde_json::to_string(&c).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let empty = C {
            token: Secret::default(),
        };
        assert_eq!(serde_json::to_string(&empty).unwrap(), r#"{"token":""}"#);
    }

    #[test]
    fn urls_lose_their_password_only() {
        for (url, shown) in [
            (
                "smtp://alerts:hunter2@mail.example.com:587",
                "smtp://alerts:***@mail.example.com:587",
            ),
            ("smtps://u:p@ss@host/x?y#z", "smtps://u:***@host/x?y#z"),
            ("smtp://user@host:25", "smtp://user@host:25"),
            ("smtp://localhost:25", "smtp://localhost:25"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
