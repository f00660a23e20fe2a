//! The bearer token the API requires.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The configured token; none means nobody is let in.
#[derive(Clone)]
pub struct Token(Option<Arc<[u8]>>);

impl Token {
    pub fn new(token: Option<&str>) -> Token {
        // An empty token would admit `Authorization: Bearer ` : treat it as none.
        Token(token.filter(|t| !t.is_empty()).map(|t| t.as_bytes().into()))
    }

    /// Whether `headers` carry `Authorization: Bearer <the token>`. The comparison takes the same
    /// time wherever the first wrong byte is, so timing does not reveal a prefix.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.0 else {
            return false;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|given| bool::from(given.ct_eq(expected)))
    }
}

/// Middleware: passes the request on if it carries the token, else answers 401 with no body.
pub async fn require_bearer(State(token): State<Token>, request: Request, next: Next) -> Response {
    if token.admits(request.headers()) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let t = Token::new(Some("s3cret"));
        assert!(t.admits(&with("Bearer s3cret")));
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            assert!(!t.admits(&with(wrong)), "{wrong}");
        }
        assert!(!t.admits(&HeaderMap::new()));
    }

    #[test]
    fn no_token_or_an_empty_one_admits_nobody() {
        assert!(!Token::new(None).admits(&with("Bearer ")));
        assert!(!Token::new(Some("")).admits(&with("Bearer ")));
    }
}
