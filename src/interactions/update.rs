//! update: `PUT [type]/[id]` (create-on-update with a client id) and conditional update
//! `PUT [type]?criteria`.

use axum::http::StatusCode;

use super::{Ctx, FhirRequest, FhirResponse, Target, check_body, check_if_match, write_version};
use crate::auth::scopes::Letter;
use crate::error::{FhirError, FhirResult};
use crate::fhir::ids;
use crate::store::{StoreTx, WriteMethod};

/// Replace (or create) a resource.
pub fn update(ctx: &Ctx, tx: &mut dyn StoreTx, req: FhirRequest) -> FhirResult<FhirResponse> {
    let (rtype, id) = match &req.target {
        Target::Instance(t, id) => {
            check_body(req.body.as_ref(), t, Some(id))?;
            (t.clone(), id.clone())
        }
        Target::Type(t) => {
            let body = check_body(req.body.as_ref(), t, None)?;
            (
                t.clone(),
                resolve_conditional_target(ctx, tx, t, &req, body)?,
            )
        }
        _ => {
            return Err(FhirError::bad_request(
                "update needs an instance URL or search criteria",
            ));
        }
    };
    let current = match super::current_for_write(ctx, &req.access, tx, &rtype, &id)? {
        Ok(current) => current,
        Err(super::Hidden) => {
            // Answer as the create-on-update of a missing id would be refused; never create
            // over a resource the requester may not know of.
            check_if_match(&req.conditions, None)?;
            let body = req.body.as_ref().expect("checked above");
            req.access
                .check_write(ctx, tx, Letter::C, &rtype, &id, body)?;
            return Err(FhirError::Forbidden(format!(
                "no consent lets this requester write {rtype} resources of this patient"
            )));
        }
    };
    check_if_match(&req.conditions, current.as_ref())?;
    let created = current.as_ref().is_none_or(|c| c.is_deleted());
    let body = req.body.expect("checked above");
    let v = write_version(
        ctx,
        &req.access,
        tx,
        &rtype,
        &id,
        current.as_ref(),
        WriteMethod::Update,
        body,
    )?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(FhirResponse::version(status, &v).with_preference(
        req.conditions.prefer_return,
        if created { "created" } else { "updated" },
    ))
}

/// The id a conditional update writes to: the one match, or the body's id / a new id when none.
fn resolve_conditional_target(
    ctx: &Ctx,
    tx: &mut dyn StoreTx,
    rtype: &str,
    req: &FhirRequest,
    body: &serde_json::Value,
) -> FhirResult<String> {
    if req.query.is_empty() {
        return Err(FhirError::bad_request(
            "a conditional update needs search criteria",
        ));
    }
    let (total, matches) = super::find_matches(ctx, &req.access, tx, rtype, &req.query)?;
    let body_id = body.get("id").and_then(|v| v.as_str());
    match total {
        0 => Ok(body_id.map_or_else(ids::new_id, str::to_string)),
        1 => {
            let found = &matches[0].id;
            if let Some(body_id) = body_id
                && body_id != found
            {
                return Err(FhirError::bad_value(
                    "invalid",
                    format!(
                        "the body's id `{body_id}` differs from the matching resource `{found}`"
                    ),
                    "id",
                ));
            }
            Ok(found.clone())
        }
        n => Err(FhirError::PreconditionFailed(format!(
            "the update criteria match {n} resources"
        ))),
    }
}
