//! read and vread: `GET [type]/[id]` and `GET [type]/[id]/_history/[vid]`.

use axum::http::StatusCode;

use super::{Conditions, FhirResponse};
use crate::error::{FhirError, FhirResult};
use crate::fhir::ids;
use crate::store::Reader;

/// The current version; 410 if deleted, 404 if it never existed.
pub fn read(
    reader: &mut dyn Reader,
    rtype: &str,
    id: &str,
    conditions: &Conditions,
) -> FhirResult<FhirResponse> {
    let Some(v) = reader.current(rtype, id)? else {
        return Err(FhirError::NotFound(format!("{rtype}/{id} is not known")));
    };
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
    reader: &mut dyn Reader,
    rtype: &str,
    id: &str,
    vid: &str,
) -> FhirResult<FhirResponse> {
    let missing = || FhirError::NotFound(format!("{rtype}/{id} has no version `{vid}`"));
    let version: u64 = vid.parse().map_err(|_| missing())?;
    let Some(v) = reader.version(rtype, id, version)? else {
        return Err(missing());
    };
    if v.is_deleted() {
        return Err(FhirError::Gone(format!(
            "{rtype}/{id} version {vid} records its deletion"
        )));
    }
    let mut response = FhirResponse::version(StatusCode::OK, &v);
    response.location = None;
    Ok(response)
}
