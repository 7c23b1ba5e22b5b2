//! FHIR operations (`[type]/$name`, `[type]/[id]/$name`), one file each. Each goes through the
//! access layer like every interaction: what it returns is what the requester may see.

pub mod change_placement;
pub mod everything;

use axum::http::Method;

use crate::error::{FhirError, FhirResult};
use crate::interactions::{Ctx, FhirRequest, FhirResponse, Target};
use crate::store::{Reader, StoreTx};

/// Whether `$op` called with `method` only reads.
pub fn only_reads(method: &Method, op: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD) || !matches!(op, "change-placement")
}

/// Run an operation that only reads.
pub fn read(ctx: &Ctx, reader: &mut dyn Reader, req: &FhirRequest) -> FhirResult<FhirResponse> {
    match (&req.method, &req.target) {
        (&Method::GET | &Method::HEAD, Target::InstanceOperation(t, id, op))
            if t == "Patient" && op == "everything" =>
        {
            everything::everything(ctx, &req.access, reader, id, &req.query)
        }
        _ => Err(unknown(req)),
    }
}

/// Run an operation that writes, inside an open transaction.
pub fn write(ctx: &Ctx, tx: &mut dyn StoreTx, req: FhirRequest) -> FhirResult<FhirResponse> {
    match (&req.method, &req.target) {
        (&Method::POST, Target::InstanceOperation(t, id, op))
            if t == "Patient" && op == "change-placement" =>
        {
            change_placement::change_placement(ctx, &req.access, tx, id, req.body.as_ref())
        }
        _ => Err(unknown(&req)),
    }
}

fn unknown(req: &FhirRequest) -> FhirError {
    FhirError::NotFound(format!(
        "{} {} is not an operation this server supports",
        req.method,
        req.target.path()
    ))
}
