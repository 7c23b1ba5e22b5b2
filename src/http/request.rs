//! Reading FHIR requests: headers, content types and bodies, with every rejection an
//! OperationOutcome.

use axum::body::Body as HttpBody;
use axum::http::{HeaderMap, Method, header};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::error::{FhirError, FhirResult};
use crate::fhir::{ids, parse};
use crate::interactions::{Conditions, PreferReturn, Target};

/// Read conditional headers and `Prefer`.
pub fn conditions(headers: &HeaderMap) -> FhirResult<Conditions> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let mut c = Conditions::default();
    if let Some(tag) = text("if-match") {
        c.if_match = Some(ids::parse_etag(tag).ok_or_else(|| {
            FhirError::bad_value(
                "value",
                format!("If-Match `{tag}` is not a version ETag such as W/\"1\""),
                "If-Match",
            )
        })?);
    }
    c.if_none_exist = text("if-none-exist").map(str::to_string);
    c.if_none_match = text("if-none-match").map(str::to_string);
    for pref in headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for part in pref.split([',', ';']).map(str::trim) {
            match part {
                "return=minimal" => c.prefer_return = PreferReturn::Minimal,
                "return=representation" => c.prefer_return = PreferReturn::Representation,
                "return=OperationOutcome" => c.prefer_return = PreferReturn::OperationOutcome,
                "handling=strict" => c.strict = true,
                "handling=lenient" => c.strict = false,
                _ => {}
            }
        }
    }
    Ok(c)
}

/// Refuse `Accept`/`_format` values that ask for something other than JSON.
pub fn check_accept(headers: &HeaderMap, query: &[(String, String)]) -> FhirResult<()> {
    if let Some((_, format)) = query.iter().find(|(n, _)| n == "_format") {
        let f = format.as_str();
        if !matches!(
            f,
            "json" | "application/json" | "application/fhir+json" | "application/json+fhir"
        ) {
            return Err(FhirError::NotAcceptable(format!(
                "_format `{f}` is not supported; this server speaks JSON"
            )));
        }
        return Ok(());
    }
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let acceptable = accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        media.is_empty() || media == "*/*" || media == "application/*" || media.contains("json")
    });
    if acceptable {
        Ok(())
    } else {
        Err(FhirError::NotAcceptable(format!(
            "Accept `{accept}` is not supported; this server speaks application/fhir+json"
        )))
    }
}

/// What the body is expected to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body is read.
    None,
    /// One FHIR resource.
    Resource,
    /// A JSON Patch document.
    JsonPatch,
    /// A form (`POST _search`).
    Form,
    /// A batch or transaction Bundle (`POST [base]`).
    Bundle,
    /// A JSON object judged by the handler itself (`$validate` reports base-spec problems
    /// as its answer rather than refusing the request).
    Json,
}

/// Which body a method on a target takes.
pub fn body_kind(method: &Method, target: &Target) -> BodyKind {
    match (method, target) {
        (&Method::POST, Target::TypeSearch(_)) => BodyKind::Form,
        (&Method::POST, Target::System) => BodyKind::Bundle,
        (&Method::POST, Target::TypeOperation(_, op) | Target::InstanceOperation(_, _, op))
            if op == "validate" =>
        {
            BodyKind::Json
        }
        (&Method::POST | &Method::PUT, _) => BodyKind::Resource,
        (&Method::PATCH, _) => BodyKind::JsonPatch,
        _ => BodyKind::None,
    }
}

/// Read the whole body, refusing more than `limit` bytes with 413.
pub async fn read_body(
    headers: &HeaderMap,
    body: HttpBody,
    limit: usize,
) -> FhirResult<bytes::Bytes> {
    let too_large =
        || FhirError::PayloadTooLarge(format!("the request body is larger than {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut body = body;
    if declared.is_some_and(|len| len > limit) {
        drain(&mut body, limit).await;
        return Err(too_large());
    }
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| FhirError::bad_request(format!("cannot read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                drain(&mut body, limit).await;
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Reads and discards what is left of a body that is too large, so the client, still
/// writing, sees our 413 rather than a broken pipe (a "lingering close"). Bounded in bytes
/// and time: a client sending far more than the limit gets its connection closed instead.
async fn drain(body: &mut HttpBody, limit: usize) {
    let cap = limit.saturating_mul(4).max(1024 * 1024);
    let mut seen = 0usize;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen > cap {
                    break;
                }
            }
        }
    })
    .await;
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// A parsed body: a JSON value, or form fields (`POST _search`).
pub type ParsedBody = (Option<Value>, Vec<(String, String)>);

/// Parse a body of the expected kind, checking its Content-Type (415 when wrong).
pub fn parse_body(kind: BodyKind, headers: &HeaderMap, bytes: &[u8]) -> FhirResult<ParsedBody> {
    let media = media_type(headers);
    let unsupported = |expected: &str| {
        FhirError::UnsupportedMediaType(format!(
            "Content-Type `{}` is not accepted here; send {expected}",
            media.clone().unwrap_or_else(|| "(none)".into())
        ))
    };
    match kind {
        BodyKind::None => Ok((None, vec![])),
        BodyKind::Resource | BodyKind::Bundle | BodyKind::Json => {
            if !matches!(
                media.as_deref(),
                Some("application/fhir+json" | "application/json" | "application/json+fhir")
            ) {
                return Err(unsupported("application/fhir+json"));
            }
            if bytes.is_empty() {
                return Err(FhirError::bad_value(
                    "required",
                    "the request has no body",
                    "$this",
                ));
            }
            let value = match kind {
                BodyKind::Bundle => parse::parse_bundle(bytes)?,
                BodyKind::Json => parse::parse_object(bytes)?,
                _ => parse::parse_resource(bytes)?,
            };
            Ok((Some(value), vec![]))
        }
        BodyKind::JsonPatch => {
            if media.as_deref() != Some("application/json-patch+json") {
                return Err(unsupported("application/json-patch+json"));
            }
            let value = serde_json::from_slice(bytes).map_err(|e| {
                FhirError::bad_value("structure", format!("malformed JSON Patch: {e}"), "$this")
            })?;
            Ok((Some(value), vec![]))
        }
        BodyKind::Form => {
            if bytes.is_empty() {
                return Ok((None, vec![]));
            }
            if media.as_deref() != Some("application/x-www-form-urlencoded") {
                return Err(unsupported("application/x-www-form-urlencoded"));
            }
            Ok((None, form_urlencoded::parse(bytes).into_owned().collect()))
        }
    }
}
