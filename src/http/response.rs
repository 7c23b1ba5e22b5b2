//! FHIR JSON responses with ETag, Last-Modified and Location.

use axum::body::Body as HttpBody;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use crate::fhir::ids;
use crate::interactions::{Body, FhirResponse};

/// The media type of every FHIR response.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// A JSON value as an `application/fhir+json` response.
pub fn fhir_json(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(HttpBody::from(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

/// Stored JSON text handed to the HTTP body without a copy.
struct SharedText(std::sync::Arc<str>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Render an interaction's outcome.
pub fn to_http(base_url: &str, r: FhirResponse) -> Response {
    let body = match r.body {
        // The stored text is shared, not copied, into the response.
        Some(Body::Stored(text)) => HttpBody::from(bytes::Bytes::from_owner(SharedText(text))),
        Some(Body::Json(v)) => HttpBody::from(serde_json::to_vec(&v).unwrap_or_default()),
        None => HttpBody::empty(),
    };
    let has_body = !matches!(r.status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let mut response = Response::new(body);
    *response.status_mut() = r.status;
    let headers = response.headers_mut();
    if has_body {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    }
    if let Some((version, at)) = r.version {
        if let Ok(v) = HeaderValue::from_str(&ids::etag(version)) {
            headers.insert(header::ETAG, v);
        }
        if let Ok(v) = HeaderValue::from_str(&ids::http_date(at)) {
            headers.insert(header::LAST_MODIFIED, v);
        }
    }
    if let Some(location) = r.location
        && let Ok(v) = HeaderValue::from_str(&format!("{base_url}/{location}"))
    {
        headers.insert(header::LOCATION, v);
        if r.status == StatusCode::CREATED
            && let Ok(v) = HeaderValue::from_str(&format!("{base_url}/{location}"))
        {
            headers.insert(header::CONTENT_LOCATION, v);
        }
    }
    response
}
