//! create: `POST [type]`, with conditional create (`If-None-Exist`).

use axum::http::StatusCode;

use super::{Ctx, FhirRequest, FhirResponse, Target, check_body, write_version};
use crate::error::{FhirError, FhirResult};
use crate::fhir::ids;
use crate::store::{StoreTx, WriteMethod};

/// Create a resource with a server-assigned id (any id in the body is ignored, as the spec says).
pub fn create(ctx: &Ctx, tx: &mut dyn StoreTx, req: FhirRequest) -> FhirResult<FhirResponse> {
    create_with_id(ctx, tx, req, None)
}

/// Create with a pre-assigned id (transactions assign ids to `urn:uuid` entries up front).
pub fn create_with_id(
    ctx: &Ctx,
    tx: &mut dyn StoreTx,
    req: FhirRequest,
    id: Option<String>,
) -> FhirResult<FhirResponse> {
    let Target::Type(rtype) = &req.target else {
        return Err(FhirError::bad_request("create needs a resource type URL"));
    };
    check_body(req.body.as_ref(), rtype, None)?;
    if let Some(query) = &req.conditions.if_none_exist {
        let (total, matches) = super::find_matches_str(ctx, &req.access, tx, rtype, query)?;
        match total {
            0 => {}
            1 => {
                let existing = &matches[0];
                return Ok(
                    FhirResponse::version(StatusCode::OK, existing).with_preference(
                        req.conditions.prefer_return,
                        "a matching resource already exists; nothing was created",
                    ),
                );
            }
            n => {
                return Err(FhirError::PreconditionFailed(format!(
                    "If-None-Exist `{query}` matches {n} resources"
                )));
            }
        }
    }
    let id = id.unwrap_or_else(ids::new_id);
    let body = req.body.expect("checked above");
    let v = write_version(
        ctx,
        &req.access,
        tx,
        rtype,
        &id,
        None,
        WriteMethod::Create,
        body,
    )?;
    Ok(FhirResponse::version(StatusCode::CREATED, &v)
        .with_preference(req.conditions.prefer_return, "created"))
}
