//! transaction: `POST [base]` with a Bundle of type `transaction`, atomic.
//!
//! R4 http.html#trules: entries are processed DELETE, then POST, then PUT/PATCH, then GET/HEAD,
//! and answered in request order; `urn:uuid:` fullUrls get server ids and every reference to
//! them is rewritten; conditional references (`Patient?identifier=…`) resolve to exactly one
//! match. Any failure rolls back everything and answers with that entry's OperationOutcome.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::http::Method;
use serde_json::Value;

use super::batch::{parse_entry, response_entry};
use super::{
    Conditions, Ctx, FhirRequest, FhirResponse, Target, create, execute_read, execute_write,
};
use crate::access::Access;
use crate::error::{FhirError, FhirResult, Issue};
use crate::fhir::{bundle, ids, references};
use crate::store::{Store, StoreTx};

/// Run a transaction Bundle.
pub fn transaction(
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
    let mut requests = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let req = parse_entry(ctx, index, entry, prefer, access)?;
        let full_url = entry
            .get("fullUrl")
            .and_then(Value::as_str)
            .map(str::to_string);
        requests.push((index, full_url, req));
    }
    check_unique_targets(&requests)?;

    let phase = |m: &Method| match *m {
        Method::DELETE => 0,
        Method::POST => 1,
        Method::PUT | Method::PATCH => 2,
        _ => 3,
    };
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| phase(&requests[i].2.method));
    let (deletes, rest) =
        order.split_at(order.partition_point(|&i| requests[i].2.method == Method::DELETE));

    let mut tx = store.begin()?;
    let mut responses: Vec<Option<FhirResponse>> = vec![None; requests.len()];
    for &i in deletes {
        let (index, _, req) = &requests[i];
        let r = execute_write(ctx, tx.as_mut(), req.clone()).map_err(|e| at_entry(*index, e))?;
        responses[i] = Some(r);
    }
    // Ids and conditional matches are decided after the deletes, as their results depend on them.
    let mapping = assign_ids(ctx, tx.as_mut(), &requests)?;
    for (index, _, req) in requests.iter_mut() {
        if let Some(body) = req.body.as_mut()
            && req.method != Method::PATCH
            && req.method != Method::DELETE
        {
            references::rewrite(body, &mapping.ids);
            resolve_conditional_references(ctx, access, tx.as_mut(), body)
                .map_err(|e| at_entry(*index, e))?;
        }
    }
    for &i in rest {
        let (index, full_url, req) = &requests[i];
        let r = run_entry(ctx, tx.as_mut(), req.clone(), full_url.as_deref(), &mapping)
            .map_err(|e| at_entry(*index, e))?;
        responses[i] = Some(r);
    }
    tx.commit()?;
    let entries = responses
        .iter()
        .map(|r| response_entry(ctx, r.as_ref().expect("every entry ran")))
        .collect::<FhirResult<Vec<_>>>()?;
    Ok(FhirResponse::json(bundle::bundle(
        "transaction-response",
        None,
        vec![],
        entries,
    )))
}

/// Ids decided before any entry runs.
struct Mapping {
    /// `urn:uuid:…` (or other fullUrl) → `Type/id`.
    ids: HashMap<String, String>,
}

fn assign_ids(
    ctx: &Ctx,
    tx: &mut dyn StoreTx,
    requests: &[(usize, Option<String>, FhirRequest)],
) -> FhirResult<Mapping> {
    let mut mapping = Mapping {
        ids: HashMap::new(),
    };
    for (index, full_url, req) in requests {
        let Some(full_url) = full_url else { continue };
        let reference = match (&req.method, &req.target) {
            (&Method::POST, Target::Type(t)) => {
                let mut found = None;
                if let Some(query) = &req.conditions.if_none_exist {
                    let (total, matches) = super::find_matches_str(ctx, &req.access, tx, t, query)
                        .map_err(|e| at_entry(*index, e))?;
                    match total {
                        0 => {}
                        1 => found = Some(matches[0].id.clone()),
                        n => {
                            return Err(at_entry(
                                *index,
                                FhirError::PreconditionFailed(format!(
                                    "ifNoneExist `{query}` matches {n} resources"
                                )),
                            ));
                        }
                    }
                }
                format!("{t}/{}", found.unwrap_or_else(ids::new_id))
            }
            (&Method::PUT, Target::Instance(t, id)) => format!("{t}/{id}"),
            _ => continue,
        };
        if full_url.starts_with("urn:uuid:") || full_url.starts_with("urn:oid:") {
            mapping.ids.insert(full_url.clone(), reference);
        } else if let Some(stripped) = full_url.strip_prefix(&format!("{}/", ctx.base_url)) {
            mapping.ids.insert(full_url.clone(), stripped.to_string());
        }
    }
    Ok(mapping)
}

fn run_entry(
    ctx: &Ctx,
    tx: &mut dyn StoreTx,
    req: FhirRequest,
    full_url: Option<&str>,
    mapping: &Mapping,
) -> FhirResult<FhirResponse> {
    if matches!(req.method, Method::GET | Method::HEAD) {
        return execute_read(ctx, tx, &req);
    }
    if req.method == Method::POST
        && let Target::Type(t) = &req.target
    {
        let assigned = full_url
            .and_then(|u| mapping.ids.get(u))
            .and_then(|r| r.strip_prefix(&format!("{t}/")))
            .map(str::to_string);
        return create::create_with_id(ctx, tx, req, assigned);
    }
    execute_write(ctx, tx, req)
}

/// Two entries may not act on the same resource (R4 http.html#trules).
fn check_unique_targets(requests: &[(usize, Option<String>, FhirRequest)]) -> FhirResult<()> {
    let mut seen = HashSet::new();
    for (index, _, req) in requests {
        if let Target::Instance(t, id) = &req.target
            && req.method != Method::GET
            && req.method != Method::HEAD
            && !seen.insert(format!("{t}/{id}"))
        {
            return Err(FhirError::bad_request(format!(
                "entry {index}: {t}/{id} is the target of more than one entry"
            )));
        }
    }
    Ok(())
}

/// Replace every `reference` of the form `Type?criteria` by the one resource it matches.
fn resolve_conditional_references(
    ctx: &Ctx,
    access: &Access,
    tx: &mut dyn StoreTx,
    body: &mut Value,
) -> FhirResult<()> {
    let mut pending = Vec::new();
    references::collect_conditional(body, &mut pending);
    for reference in pending {
        let (rtype, query) = reference
            .split_once('?')
            .expect("conditional references hold `?`");
        if !crate::fhir::structure::is_resource_type(rtype) {
            return Err(FhirError::bad_value(
                "value",
                format!("conditional reference `{reference}` names an unknown type"),
                "reference",
            ));
        }
        let (total, matches) = super::find_matches_str(ctx, access, tx, rtype, query)?;
        let resolved = match total {
            1 => format!("{rtype}/{}", matches[0].id),
            n => {
                return Err(FhirError::PreconditionFailed(format!(
                    "conditional reference `{reference}` matches {n} resources; it must match exactly one"
                )));
            }
        };
        let one = HashMap::from([(reference.clone(), resolved)]);
        references::rewrite(body, &one);
    }
    Ok(())
}

/// Name the entry in the error.
fn at_entry(index: usize, error: FhirError) -> FhirError {
    let prefix = |m: String| format!("transaction entry {index}: {m}");
    match error {
        FhirError::BadRequest {
            code,
            message,
            expression,
        } => FhirError::BadRequest {
            code,
            message: prefix(message),
            expression,
        },
        FhirError::Invalid(issues) => FhirError::Invalid(
            issues
                .into_iter()
                .map(|i| Issue {
                    diagnostics: prefix(i.diagnostics),
                    ..i
                })
                .collect(),
        ),
        FhirError::NotFound(m) => FhirError::NotFound(prefix(m)),
        FhirError::Gone(m) => FhirError::Gone(prefix(m)),
        FhirError::PreconditionFailed(m) => FhirError::PreconditionFailed(prefix(m)),
        FhirError::Conflict(m) => FhirError::Conflict(prefix(m)),
        FhirError::Unprocessable(m) => FhirError::Unprocessable(prefix(m)),
        FhirError::MethodNotAllowed(m) => FhirError::MethodNotAllowed(prefix(m)),
        other => other,
    }
}
