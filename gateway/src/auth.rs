//! Optional API keys: `Authorization: Bearer KEY`, compared in constant
//! time and never logged.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::error::{ApiError, Flavor};
use crate::state::AppState;

/// Rejects a request without a valid key with 401, when keys are set.
pub async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let keys = &state.config.api_keys;
    if keys.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    if presented.is_some_and(|presented| is_known_key(keys, presented)) {
        return next.run(request).await;
    }
    let path = request.uri().path();
    tracing::debug!(
        path,
        has_header = presented.is_some(),
        "rejected request without a valid API key"
    );
    ApiError::Unauthorized.into_response_for(Flavor::from_path(path))
}

/// Compares `presented` with every key, without stopping at a match, so
/// the time taken does not tell which key or how many bytes matched. Only
/// a length difference ends one comparison early, in `subtle`.
fn is_known_key(keys: &[String], presented: &str) -> bool {
    let mut found = subtle::Choice::from(0);
    for key in keys {
        found |= key.as_bytes().ct_eq(presented.as_bytes());
    }
    found.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_match_exactly() {
        let keys = vec!["alpha".to_string(), "beta".to_string()];
        assert!(is_known_key(&keys, "beta"));
        assert!(!is_known_key(&keys, "bet"));
        assert!(!is_known_key(&keys, "gamma"));
        assert!(!is_known_key(&keys, ""));
    }
}
