//! patch: `PATCH [type]/[id]` (or conditional `PATCH [type]?criteria`) with a JSON Patch
//! document (RFC 6902, `application/json-patch+json`).

use axum::http::StatusCode;
use serde_json::Value;

use super::{Ctx, FhirRequest, FhirResponse, Target, check_if_match, write_version};
use crate::error::{FhirError, FhirResult};
use crate::fhir::parse;
use crate::store::{StoreTx, WriteMethod};

/// Apply a JSON Patch to the current version and store the result as a new version.
pub fn patch(ctx: &Ctx, tx: &mut dyn StoreTx, req: FhirRequest) -> FhirResult<FhirResponse> {
    let (rtype, id) = match &req.target {
        Target::Instance(t, id) => (t.clone(), id.clone()),
        Target::Type(t) => {
            let (total, matches) = super::find_matches(ctx, &req.access, tx, t, &req.query)?;
            match total {
                0 => {
                    return Err(FhirError::NotFound(
                        "no resource matches the patch criteria".into(),
                    ));
                }
                1 => (t.clone(), matches[0].id.clone()),
                n => {
                    return Err(FhirError::PreconditionFailed(format!(
                        "the patch criteria match {n} resources"
                    )));
                }
            }
        }
        _ => {
            return Err(FhirError::bad_request(
                "patch needs an instance URL or search criteria",
            ));
        }
    };
    let document = req
        .body
        .as_ref()
        .ok_or_else(|| FhirError::bad_request("patch needs a JSON Patch body"))?;
    let operations: json_patch::Patch = serde_json::from_value(document.clone()).map_err(|e| {
        FhirError::bad_value(
            "structure",
            format!("not a JSON Patch document: {e}"),
            "$this",
        )
    })?;
    let Ok(Some(current)) = super::current_for_write(ctx, &req.access, tx, &rtype, &id)? else {
        return Err(FhirError::NotFound(format!("{rtype}/{id} is not known")));
    };
    let Some(text) = current.body.as_deref() else {
        return Err(FhirError::Gone(format!("{rtype}/{id} was deleted")));
    };
    check_if_match(&req.conditions, Some(&current))?;
    let mut resource: Value = serde_json::from_str(text).map_err(FhirError::internal)?;
    json_patch::patch(&mut resource, &operations)
        .map_err(|e| FhirError::Unprocessable(format!("the patch cannot be applied: {e}")))?;
    if parse::resource_type(&resource) != rtype
        || resource.get("id").and_then(Value::as_str) != Some(id.as_str())
    {
        return Err(FhirError::Unprocessable(
            "a patch may not change the resource type or id".into(),
        ));
    }
    parse::check_resource_value(&resource).map_err(|e| match e {
        FhirError::Invalid(issues) => FhirError::Unprocessable(format!(
            "the patched resource is not valid: {}",
            issues
                .iter()
                .map(|i| i.diagnostics.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        )),
        FhirError::BadRequest { message, .. } => {
            FhirError::Unprocessable(format!("the patched resource is not valid: {message}"))
        }
        other => other,
    })?;
    let v = write_version(
        ctx,
        &req.access,
        tx,
        &rtype,
        &id,
        Some(&current),
        WriteMethod::Update,
        resource,
    )?;
    Ok(FhirResponse::version(StatusCode::OK, &v)
        .with_preference(req.conditions.prefer_return, "patched"))
}
