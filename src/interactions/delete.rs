//! delete: `DELETE [type]/[id]` and conditional delete `DELETE [type]?criteria` (single match).
//! Deletion is a new version; history keeps everything before it.

use axum::http::StatusCode;

use super::{Ctx, FhirRequest, FhirResponse, Target, check_if_match, write_deletion};
use crate::error::{FhirError, FhirResult};
use crate::store::StoreTx;

/// Delete one resource. Deleting a deleted resource succeeds without a new version.
pub fn delete(ctx: &Ctx, tx: &mut dyn StoreTx, req: FhirRequest) -> FhirResult<FhirResponse> {
    let (rtype, id) = match &req.target {
        Target::Instance(t, id) => (t.clone(), id.clone()),
        Target::Type(t) => {
            if req.query.is_empty() {
                return Err(FhirError::MethodNotAllowed(
                    "delete needs an id or search criteria".into(),
                ));
            }
            let (total, matches) = super::find_matches(ctx, &req.access, tx, t, &req.query)?;
            match total {
                0 => return Ok(no_content()),
                1 => (t.clone(), matches[0].id.clone()),
                n => {
                    return Err(FhirError::PreconditionFailed(format!(
                        "the delete criteria match {n} resources; only single-match conditional delete is supported"
                    )));
                }
            }
        }
        _ => {
            return Err(FhirError::bad_request(
                "delete needs an instance URL or search criteria",
            ));
        }
    };
    let Ok(Some(current)) = super::current_for_write(ctx, &req.access, tx, &rtype, &id)? else {
        return Err(FhirError::NotFound(format!("{rtype}/{id} is not known")));
    };
    check_if_match(&req.conditions, Some(&current))?;
    if current.is_deleted() {
        return Ok(no_content());
    }
    let v = write_deletion(ctx, &req.access, tx, &current)?;
    let mut response = no_content();
    response.version = Some((v.version, v.last_updated));
    Ok(response)
}

fn no_content() -> FhirResponse {
    FhirResponse {
        status: StatusCode::NO_CONTENT,
        body: None,
        version: None,
        location: None,
    }
}
