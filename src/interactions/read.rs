//! read and vread: `GET [type]/[id]` and `GET [type]/[id]/_history/[vid]`.
//!
//! A resource the requester may not see answers exactly as one that does not exist (404), so
//! a `patient/` token cannot even learn that another youth's record exists.

use axum::http::StatusCode;
use serde_json::Value;

use super::{Conditions, Ctx, FhirResponse};
use crate::access::{Access, Grant};
use crate::auth::scopes::Letter;
use crate::error::{FhirError, FhirResult};
use crate::fhir::ids;
use crate::store::{Reader, Version};

/// The grant for reading `rtype/id`: the scopes' `r` grant, or everything for the
/// requester's own fhirUser resource.
fn read_grant(access: &Access, rtype: &str, id: &str) -> FhirResult<Grant> {
    if access.is_own_user(rtype, id) {
        return Ok(Grant::All);
    }
    access.require(rtype, Letter::R)
}

/// Whether the grant covers a stored version. A deletion has no body: it is judged by the
/// version before it.
pub fn visible(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    grant: &Grant,
    v: &Version,
) -> FhirResult<bool> {
    if *grant == Grant::All && access.consent_exempt() || access.is_own_user(&v.rtype, &v.id) {
        return Ok(true);
    }
    let Some(body) = last_body(reader, v)? else {
        return Ok(false);
    };
    access.covers(ctx, reader, grant, &v.rtype, &v.id, &body)
}

/// The body of a version, or for a deletion the body of the version before it.
pub fn last_body(reader: &mut dyn Reader, v: &Version) -> FhirResult<Option<Value>> {
    let text = match v.body.as_deref() {
        Some(text) => text.to_string(),
        None => {
            let mut previous = v.version;
            loop {
                if previous <= 1 {
                    return Ok(None);
                }
                previous -= 1;
                if let Some(p) = reader.version(&v.rtype, &v.id, previous)?
                    && let Some(text) = p.body.as_deref()
                {
                    break text.to_string();
                }
            }
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(FhirError::internal)
}

fn unknown(rtype: &str, id: &str) -> FhirError {
    FhirError::NotFound(format!("{rtype}/{id} is not known"))
}

/// The current version; 410 if deleted, 404 if it never existed.
pub fn read(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    rtype: &str,
    id: &str,
    conditions: &Conditions,
) -> FhirResult<FhirResponse> {
    let grant = read_grant(access, rtype, id)?;
    let Some(v) = reader.current(rtype, id)? else {
        return Err(unknown(rtype, id));
    };
    if !visible(ctx, access, reader, &grant, &v)? {
        return Err(unknown(rtype, id));
    }
    if v.is_deleted() {
        return Err(FhirError::Gone(format!("{rtype}/{id} was deleted")));
    }
    if let Some(tag) = &conditions.if_none_match
        && (tag == "*" || ids::parse_etag(tag) == Some(v.version))
    {
        let mut response = FhirResponse::version(StatusCode::NOT_MODIFIED, &v);
        response.body = None;
        return Ok(response);
    }
    let mut response = FhirResponse::version(StatusCode::OK, &v);
    response.location = None;
    Ok(response)
}

/// A specific version; a version that records a deletion answers 410.
pub fn vread(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    rtype: &str,
    id: &str,
    vid: &str,
) -> FhirResult<FhirResponse> {
    let grant = read_grant(access, rtype, id)?;
    let missing = || FhirError::NotFound(format!("{rtype}/{id} has no version `{vid}`"));
    let version: u64 = vid.parse().map_err(|_| missing())?;
    let Some(v) = reader.version(rtype, id, version)? else {
        return Err(missing());
    };
    if !visible(ctx, access, reader, &grant, &v)? {
        return Err(missing());
    }
    if v.is_deleted() {
        return Err(FhirError::Gone(format!(
            "{rtype}/{id} version {vid} records its deletion"
        )));
    }
    let mut response = FhirResponse::version(StatusCode::OK, &v);
    response.location = None;
    Ok(response)
}
