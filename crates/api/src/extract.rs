//! Extractors whose rejections are [`ApiError`]s, so malformed input always gets the
//! same JSON error shape.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `axum::Json` with JSON errors, and a bound on how many values a body may hold: parsed,
/// each value takes tens of bytes, so a body of tiny values (`[0,0,0,…]`) would cost
/// many times its size in memory before any field could be checked.
pub struct ApiJson<T>(pub T);

/// Most JSON values (numbers, strings, arrays, objects…) in one request body: a bulk
/// creation of 1,000 tasks with ordinary payloads holds far fewer.
pub const MAX_JSON_VALUES: usize = 200_000;

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "expected a request body with Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(JsonRejection::from)?;
        if json_values_exceed(&bytes, MAX_JSON_VALUES) {
            return Err(ApiError::PayloadTooLarge(format!(
                "request body holds more than {MAX_JSON_VALUES} JSON values"
            )));
        }
        // Every body this API takes is an object; serde would also fill a struct from an
        // array of its fields in order.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b == b'[') {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            // JSON does not tell 3 from 3.0, and JSON Schema's `integer` takes both; serde
            // does not. Only a body that failed as sent pays for a second look.
            Err(JsonRejection::JsonDataError(e)) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|mut v| integral_floats_as_integers(&mut v).then_some(v))
                .and_then(|v| serde_json::from_value(v).ok())
                .map(ApiJson)
                .ok_or_else(|| JsonRejection::JsonDataError(e).into()),
            Err(rejection) => Err(rejection.into()),
        }
    }
}

/// Rewrites every number with no fractional part written as a float (`3.0`, `1e3`) as an
/// integer, in place; whether there was any.
pub fn integral_floats_as_integers(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            let integer = if f.fract() != 0.0 || !f.is_finite() {
                None
            } else if f >= 0.0 && f < u64::MAX as f64 {
                Some(Value::from(f as u64))
            } else if f < 0.0 && f >= i64::MIN as f64 {
                Some(Value::from(f as i64))
            } else {
                None
            };
            integer.map(|i| *value = i).is_some()
        }
        Value::Array(items) => items.iter_mut().fold(false, |any, v| integral_floats_as_integers(v) | any),
        Value::Object(fields) => fields.values_mut().fold(false, |any, v| integral_floats_as_integers(v) | any),
        _ => false,
    }
}

/// `application/json`, or any `application/…+json`, as axum's `Json` accepts.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let mime = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Whether `body` holds more than `max` JSON values, counted without parsing: every value
/// but the first follows a `,`, `[` or `:` outside strings (an overestimate for empty
/// arrays, which is harmless).
fn json_values_exceed(body: &[u8], max: usize) -> bool {
    let (mut values, mut in_string, mut escaped) = (1usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b',' | b'[' | b':' => {
                    values += 1;
                    if values > max {
                        return true;
                    }
                }
                _ => {}
            }
        }
    }
    false
}

/// `axum::extract::Query` with JSON errors.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// A positive integer id from the path (`/tasks/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await?;
        match raw.parse::<i64>() {
            Ok(id) if id > 0 => Ok(Id(id)),
            _ => Err(ApiError::bad_request(
                "invalid_id",
                format!("{raw:?} is not a valid id (ids are positive integers)"),
            )),
        }
    }
}

/// What the query-string property tests share: a query string through [`ApiQuery`] as
/// a request would bring it, and a refusal as the client would read it.
#[cfg(test)]
pub(crate) mod query_tests {
    use axum::extract::FromRequestParts;
    use axum::http::{Request, StatusCode, Uri};
    use axum::response::IntoResponse;
    use serde::de::DeserializeOwned;

    use super::ApiQuery;
    use crate::error::{ApiError, ApiResult};

    /// Characters a client may put in a query string as they are, `%` and the separators
    /// included, so malformed escapes and empty or repeated pairs come up too.
    pub const RAW_QUERY: &str = "[A-Za-z0-9._~!$&'()*+,;=:@/?%-]{0,120}";

    /// Every byte but the unreserved ones as `%XX`: any text, NUL and non-ASCII included,
    /// as one query value.
    pub fn percent_encoded(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    /// `key=value` pairs, each part percent-encoded, joined with `&`.
    pub fn query_string(pairs: &[(String, String)]) -> String {
        pairs
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encoded(k), percent_encoded(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The query string through the extractor; `None` when it is not a valid URI, which
    /// never reaches a handler.
    pub fn extract<T: DeserializeOwned>(query: &str) -> Option<ApiResult<T>> {
        let uri = Uri::try_from(format!("/tasks?{query}")).ok()?;
        let (mut parts, ()) = Request::builder().uri(uri).body(()).ok()?.into_parts();
        Some(futures::executor::block_on(ApiQuery::<T>::from_request_parts(&mut parts, &())).map(|ApiQuery(v)| v))
    }

    /// The status, `error.code` and `error.message` a client receives.
    pub type Refusal = (StatusCode, String, String);

    /// The refusal a client receives for `error`.
    pub fn refusal(error: ApiError) -> Refusal {
        let response = error.into_response();
        let status = response.status();
        let body = futures::executor::block_on(axum::body::to_bytes(response.into_body(), 1 << 20)).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["success"], false);
        let text = |field: &str| body["error"][field].as_str().unwrap_or_default().to_owned();
        (status, text("code"), text("message"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_counted_outside_strings_only() {
        assert!(!json_values_exceed(br#"{"a": [1, 2, 3]}"#, 5));
        assert!(json_values_exceed(br#"{"a": [1, 2, 3, 4]}"#, 5));
        assert!(!json_values_exceed(br#"{"a": "[,,,:,,,]", "b": "\",,,,,"}"#, 4));
        let tiny = format!("[{}0]", "0,".repeat(MAX_JSON_VALUES));
        assert!(json_values_exceed(tiny.as_bytes(), MAX_JSON_VALUES));
    }

    proptest::proptest! {
        /// The count never undercounts: an array of n numbers holds n + 1 values.
        #[test]
        fn the_value_count_never_undercounts(n in 1usize..2000, spaces in " {0,3}") {
            let body = format!("[{}]", vec!["1"; n].join(&format!(",{spaces}")));
            proptest::prop_assert!(json_values_exceed(body.as_bytes(), n));
            proptest::prop_assert!(!json_values_exceed(body.as_bytes(), n + 1));
        }

        #[test]
        fn any_bytes_are_counted_without_a_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = json_values_exceed(&body, 10);
        }
    }
}
