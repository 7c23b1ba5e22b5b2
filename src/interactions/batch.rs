//! batch: `POST [base]` with a Bundle of type `batch`. Each entry runs on its own, in its own
//! database transaction, and fails on its own (its response carries the OperationOutcome).

use axum::http::{Method, StatusCode};
use base64::Engine;
use serde_json::{Map, Value, json};

use super::{
    Conditions, Ctx, FhirRequest, FhirResponse, Target, execute_read, execute_write, is_read,
};
use std::sync::Arc;

use crate::access::Access;
use crate::error::{FhirError, FhirResult};
use crate::fhir::{bundle, ids, parse};
use crate::store::Store;

/// Run a batch Bundle.
pub fn batch(
    ctx: &Ctx,
    store: &dyn Store,
    bundle_value: &Value,
    prefer: &Conditions,
    access: &Arc<Access>,
) -> FhirResult<FhirResponse> {
    let entries = bundle_value
        .get("entry")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut responses = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let outcome =
            parse_entry(ctx, index, entry, prefer, access).and_then(|req| run_one(ctx, store, req));
        responses.push(match outcome {
            Ok(response) => response_entry(ctx, &response)?,
            Err(e) => failed_entry(&e),
        });
    }
    Ok(FhirResponse::json(bundle::bundle(
        "batch-response",
        None,
        vec![],
        responses,
    )))
}

fn run_one(ctx: &Ctx, store: &dyn Store, req: FhirRequest) -> FhirResult<FhirResponse> {
    if is_read(&req) {
        let mut reader = store.reader()?;
        return execute_read(ctx, reader.as_mut(), &req);
    }
    let mut tx = store.begin()?;
    let response = execute_write(ctx, tx.as_mut(), req)?;
    tx.commit()?;
    Ok(response)
}

/// Turn one Bundle entry into a request (its `request`, and its `resource` as the body).
pub fn parse_entry(
    ctx: &Ctx,
    index: usize,
    entry: &Value,
    prefer: &Conditions,
    access: &Arc<Access>,
) -> FhirResult<FhirRequest> {
    let at = |field: &str| format!("Bundle.entry[{index}].request.{field}");
    let request = entry.get("request").ok_or_else(|| {
        FhirError::bad_value(
            "required",
            format!("entry {index} has no request"),
            format!("Bundle.entry[{index}].request"),
        )
    })?;
    let method_text = request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let method = match method_text {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        other => {
            return Err(FhirError::bad_value(
                "value",
                format!("entry {index}: unsupported method `{other}`"),
                at("method"),
            ));
        }
    };
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let relative = url
        .strip_prefix(&format!("{}/", ctx.base_url))
        .unwrap_or(url);
    let relative = relative.strip_prefix('/').unwrap_or(relative);
    let (path, query) = relative.split_once('?').unwrap_or((relative, ""));
    let target = Target::parse(path).map_err(|e| match e {
        FhirError::NotFound(m) => {
            FhirError::bad_value("value", format!("entry {index}: {m}"), at("url"))
        }
        other => other,
    })?;
    let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let conditions = Conditions {
        if_match: match request.get("ifMatch").and_then(Value::as_str) {
            Some(tag) => Some(ids::parse_etag(tag).ok_or_else(|| {
                FhirError::bad_value(
                    "value",
                    format!("entry {index}: bad ifMatch `{tag}`"),
                    at("ifMatch"),
                )
            })?),
            None => None,
        },
        if_none_exist: request
            .get("ifNoneExist")
            .and_then(Value::as_str)
            .map(str::to_string),
        if_none_match: request
            .get("ifNoneMatch")
            .and_then(Value::as_str)
            .map(str::to_string),
        prefer_return: prefer.prefer_return,
        strict: prefer.strict,
    };
    let body = match method {
        Method::POST | Method::PUT if !matches!(target, Target::TypeSearch(_)) => {
            let resource = entry.get("resource").cloned().ok_or_else(|| {
                FhirError::bad_value(
                    "required",
                    format!("entry {index}: {method_text} needs a resource"),
                    format!("Bundle.entry[{index}].resource"),
                )
            })?;
            parse::check_resource_value(&resource).map_err(|e| in_entry(index, e))?;
            Some(resource)
        }
        Method::PATCH => Some(patch_document(index, entry)?),
        _ => None,
    };
    Ok(FhirRequest {
        method,
        target,
        query,
        conditions,
        body,
        access: access.clone(),
    })
}

/// Locate a resource's problems inside the Bundle.
fn in_entry(index: usize, error: FhirError) -> FhirError {
    let prefix = format!("Bundle.entry[{index}].resource");
    let relocate = |e: String| match e.split_once('.') {
        Some((_, rest)) => format!("{prefix}.{rest}"),
        None => prefix.clone(),
    };
    match error {
        FhirError::Invalid(issues) => FhirError::Invalid(
            issues
                .into_iter()
                .map(|mut i| {
                    i.expression = i.expression.map(relocate);
                    i.diagnostics = format!("entry {index}: {}", i.diagnostics);
                    i
                })
                .collect(),
        ),
        FhirError::BadRequest {
            code,
            message,
            expression,
        } => FhirError::BadRequest {
            code,
            message: format!("entry {index}: {message}"),
            expression: expression.into_iter().map(relocate).collect(),
        },
        other => other,
    }
}

/// A PATCH entry carries its JSON Patch as a Binary resource (R4 http.html#patch).
fn patch_document(index: usize, entry: &Value) -> FhirResult<Value> {
    let resource = entry.get("resource").ok_or_else(|| {
        FhirError::bad_request(format!("entry {index}: PATCH needs a Binary resource"))
    })?;
    if resource.get("resourceType").and_then(Value::as_str) != Some("Binary") {
        return Err(FhirError::bad_request(format!(
            "entry {index}: PATCH entries carry the JSON Patch in a Binary resource"
        )));
    }
    let data = resource
        .get("data")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| {
            FhirError::bad_request(format!("entry {index}: Binary.data is not base64: {e}"))
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| FhirError::bad_request(format!("entry {index}: the patch is not JSON: {e}")))
}

fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

/// The response entry for a successful interaction.
pub fn response_entry(ctx: &Ctx, response: &FhirResponse) -> FhirResult<Value> {
    let mut resp = Map::new();
    resp.insert("status".into(), json!(status_line(response.status)));
    if let Some(location) = &response.location
        && matches!(response.status, StatusCode::CREATED | StatusCode::OK)
    {
        resp.insert(
            "location".into(),
            json!(format!("{}/{location}", ctx.base_url)),
        );
    }
    if let Some((version, at)) = response.version {
        resp.insert("etag".into(), json!(ids::etag(version)));
        resp.insert("lastModified".into(), json!(ids::format_instant(at)));
    }
    let mut entry = Map::new();
    if let Some(body) = &response.body {
        let value = body.to_value()?;
        if value.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome") {
            resp.insert("outcome".into(), value);
        } else {
            if let (Some(t), Some(id)) = (
                value.get("resourceType").and_then(Value::as_str),
                value.get("id").and_then(Value::as_str),
            ) {
                entry.insert(
                    "fullUrl".into(),
                    json!(bundle::full_url(&ctx.base_url, t, id)),
                );
            }
            entry.insert("resource".into(), value);
        }
    }
    entry.insert("response".into(), Value::Object(resp));
    Ok(Value::Object(entry))
}

/// The response entry for a failed interaction.
pub fn failed_entry(error: &FhirError) -> Value {
    if let FhirError::Internal(cause) = error {
        tracing::error!(%cause, "batch entry failed");
    }
    json!({ "response": { "status": status_line(error.status()), "outcome": error.outcome() } })
}
