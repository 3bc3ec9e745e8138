//! Reading a request body as JSON: content type, size limit and parsing,
//! each failure with its own error.

use axum::body::Body;
use axum::http::{header, HeaderMap};
use futures::StreamExt;
use serde_json::Value;

use crate::error::ApiError;

/// Reads `body` as one JSON value of at most `limit` bytes.
///
/// A missing `Content-Type` is accepted as JSON, because `curl -d` users
/// often omit it. Any type other than `application/json` or a `+json` type
/// is rejected.
///
/// # Errors
/// [`ApiError::UnsupportedMediaType`] for a non-JSON content type,
/// [`ApiError::PayloadTooLarge`] past `limit`, and
/// [`ApiError::InvalidRequest`] for an empty, unreadable or malformed body.
pub async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, ApiError> {
    check_content_type(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }

    let mut bytes = Vec::new();
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| ApiError::InvalidRequest {
            message: format!("failed to read the request body: {error}"),
            param: None,
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        bytes.extend_from_slice(&chunk);
    }

    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidRequest {
            message: "the request body is empty: send a JSON object".to_string(),
            param: None,
        });
    }
    serde_json::from_slice(&bytes).map_err(|error| ApiError::InvalidRequest {
        message: format!("malformed JSON body: {error}"),
        param: None,
    })
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value.as_bytes()).to_string();
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType { content_type: text })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        headers
    }

    #[test]
    fn json_content_types_pass() {
        assert!(check_content_type(&HeaderMap::new()).is_ok());
        assert!(check_content_type(&headers("application/json; charset=utf-8")).is_ok());
        assert!(check_content_type(&headers("Application/JSON")).is_ok());
        assert!(check_content_type(&headers("application/vnd.api+json")).is_ok());
    }

    #[test]
    fn other_content_types_fail() {
        for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
            let error = check_content_type(&headers(content_type)).unwrap_err();
            assert!(
                matches!(error, ApiError::UnsupportedMediaType { .. }),
                "{content_type}"
            );
        }
    }

    #[tokio::test]
    async fn non_finite_number_is_malformed() {
        let body = Body::from(r#"{"prompt":"hi","temperature":1e400}"#);
        let error = read_json(&HeaderMap::new(), body, 1000).await.unwrap_err();
        assert!(error.to_string().contains("number out of range"), "{error}");
    }

    #[tokio::test]
    async fn oversized_body_is_rejected() {
        let body = Body::from(vec![b' '; 2000]);
        let error = read_json(&HeaderMap::new(), body, 1000).await.unwrap_err();
        assert!(matches!(error, ApiError::PayloadTooLarge { limit: 1000 }));
    }
}
