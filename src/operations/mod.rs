//! FHIR operations (`[type]/$name`, `[type]/[id]/$name`), one file each. Each goes through the
//! access layer like every interaction: what it returns is what the requester may see.

pub mod change_placement;
pub mod everything;
pub mod summary;
pub mod validate;

use axum::http::Method;

use crate::access::{self, Access};
use crate::auth::scopes::Letter;
use crate::error::{FhirError, FhirResult};
use crate::interactions::search::visible_page;
use crate::interactions::{Ctx, FhirRequest, FhirResponse, Target, read as read_interaction};
use crate::store::query::{Criterion, Cursor, Page, Query};
use crate::store::{Reader, StoreTx, Version};

/// The youth's Patient, when the requester may see it; else the 404 of a missing youth.
fn visible_patient(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    patient: &str,
) -> FhirResult<Version> {
    let missing = || FhirError::NotFound(format!("Patient/{patient} is not known"));
    let grant = access.require("Patient", Letter::R)?;
    let Some(v) = reader.current("Patient", patient)? else {
        return Err(missing());
    };
    if !read_interaction::visible(ctx, access, reader, &grant, &v)? {
        return Err(missing());
    }
    if v.is_deleted() {
        return Err(FhirError::Gone(format!("Patient/{patient} was deleted")));
    }
    Ok(v)
}

/// A page of the youth's resources for `q` (its type, extra criteria, size and cursor), as far
/// as the requester may see them: the compartment, `q`'s criteria and the access criteria in
/// one query (and per-match decisions where consent needs them). Nothing when the scopes allow
/// no search of the type.
fn compartment_page(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    patient: &str,
    mut q: Query,
) -> FhirResult<Page> {
    let grant = access.grant(&q.rtype, Letter::S);
    if grant.is_none() {
        return Ok(Page {
            matches: vec![],
            more: false,
            total: None,
        });
    }
    q.criteria
        .push(access::compartment_criterion(ctx, &q.rtype, patient));
    q.criteria
        .extend(access.criterion(ctx, reader, &q.rtype, &grant)?);
    if access.checks_each_match() {
        visible_page(ctx, access, reader, &q.rtype.clone(), &q)
    } else {
        reader.search(&q)
    }
}

/// A query of `rtype` for [`compartment_page`].
fn query(rtype: &str, criteria: Vec<Criterion>, count: usize, cursor: Option<Cursor>) -> Query {
    Query {
        rtype: rtype.to_string(),
        criteria,
        sort: vec![],
        count,
        cursor,
        with_total: false,
    }
}

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
        (&Method::GET | &Method::HEAD, Target::InstanceOperation(t, id, op))
            if t == "Patient" && op == "summary" =>
        {
            summary::summary(ctx, &req.access, reader, id, &req.query)
        }
        (&Method::POST, Target::TypeOperation(t, op)) if op == "validate" => {
            validate::validate(ctx, &req.access, reader, t, None, req.body.as_ref())
        }
        (&Method::POST, Target::InstanceOperation(t, id, op)) if op == "validate" => {
            validate::validate(ctx, &req.access, reader, t, Some(id), req.body.as_ref())
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
