//! `POST [type]/$validate` and `POST [type]/[id]/$validate` (FHIR R4 `Resource/$validate`):
//! the body is the resource, or a Parameters with `resource` (and optional `profile`, `mode`).
//! The answer is a 200 OperationOutcome with one issue per problem, each at its element path,
//! or a single `information` issue when all is well; base-spec problems are reported the same
//! way (200), not refused. It needs a create or update scope on the type. The instance form
//! first reads the stored resource through the access layer: one the requester may not see
//! answers as a missing one.

use serde_json::Value;

use crate::access::{Access, Grant};
use crate::auth::scopes::Letter;
use crate::error::{FhirError, FhirResult, Issue, operation_outcome};
use crate::fhir::parse::{self, check_resource_value};
use crate::interactions::{Ctx, FhirResponse, read as read_interaction};
use crate::store::Reader;

/// Run `$validate` on `rtype` (and `id` for the instance form).
pub fn validate(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    rtype: &str,
    id: Option<&str>,
    body: Option<&Value>,
) -> FhirResult<FhirResponse> {
    // A preview of a create or update: it needs the scope of one of them on the type.
    if access.grant(rtype, Letter::C).is_none() {
        access.require(rtype, Letter::U)?;
    }
    if let Some(id) = id {
        require_visible(ctx, access, reader, rtype, id)?;
    }
    let body = body.ok_or_else(|| FhirError::bad_request("$validate needs a resource body"))?;
    let mut issues = vec![];
    let (resource, profiles, mode) =
        if body["resourceType"] == "Parameters" && rtype != "Parameters" {
            // The Parameters itself must be well-formed; the resource in it is what we judge.
            let mut shell = body.clone();
            for p in shell["parameter"].as_array_mut().into_iter().flatten() {
                if let Some(p) = p.as_object_mut() {
                    p.remove("resource");
                }
            }
            check_resource_value(&shell)?;
            let params = body["parameter"].as_array().cloned().unwrap_or_default();
            let resource = params
                .iter()
                .find(|p| p["name"] == "resource")
                .and_then(|p| p.get("resource").cloned());
            let mut profiles = vec![];
            for (i, p) in params.iter().enumerate() {
                if p["name"] != "profile" {
                    continue;
                }
                let (key, url) = match (p["valueUri"].as_str(), p["valueCanonical"].as_str()) {
                    (Some(u), _) => ("valueUri", u),
                    (None, Some(u)) => ("valueCanonical", u),
                    (None, None) => continue,
                };
                if crate::validate::profiles().get(url).is_some() {
                    profiles.push(url.to_string());
                } else {
                    issues.push(
                        Issue::error(
                            "not-supported",
                            format!("{url} is not a profile this server knows"),
                        )
                        .at(format!("Parameters.parameter[{i}].{key}")),
                    );
                }
            }
            let mode = params
                .iter()
                .find(|p| p["name"] == "mode")
                .and_then(|p| p["valueCode"].as_str().map(String::from))
                .unwrap_or_else(|| if id.is_some() { "update" } else { "create" }.into());
            (resource, profiles, mode)
        } else {
            let mode = if id.is_some() { "update" } else { "create" };
            (Some(body.clone()), vec![], mode.to_string())
        };
    if !matches!(mode.as_str(), "create" | "update" | "delete" | "profile") {
        return Err(FhirError::bad_value(
            "value",
            format!("mode `{mode}` is not one of create, update, delete, profile"),
            "Parameters.parameter.valueCode",
        ));
    }
    match (resource, mode.as_str()) {
        // Deleting needs no content; who may delete is the interaction's business.
        (_, "delete") => {}
        (None, _) => {
            return Err(FhirError::bad_value(
                "required",
                "$validate needs the resource to check (the body, or parameter `resource`)",
                "Parameters.parameter",
            ));
        }
        (Some(resource), _) => {
            let found = parse::resource_type(&resource);
            if found != rtype {
                return Err(FhirError::bad_value(
                    "invalid",
                    format!("the resource is a {found} but the URL names {rtype}"),
                    "resourceType",
                ));
            }
            if let Some(id) = id
                && let Some(own) = resource["id"].as_str()
                && own != id
            {
                issues.push(
                    Issue::error(
                        "invalid",
                        format!("the resource's id `{own}` is not `{id}`"),
                    )
                    .at(format!("{rtype}.id")),
                );
            }
            // The base specification, then the profiles it claims (and those asked for).
            issues.extend(parse::base_issues(&resource));
            let also: Vec<&str> = profiles.iter().map(String::as_str).collect();
            issues.extend(crate::validate::profiles().check_claimed(&resource, &also));
        }
    }
    let issues = if issues.is_empty() {
        vec![Issue {
            severity: "information",
            code: "informational",
            diagnostics: "no issues: the resource conforms to the base specification and the profiles it claims".into(),
            expression: None,
        }]
    } else {
        issues
    };
    Ok(FhirResponse::json(operation_outcome(&issues)))
}

/// The stored `rtype/id` exists and the requester may read it; otherwise the 404 of a missing
/// id (410 when deleted, as a read would say).
fn require_visible(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    rtype: &str,
    id: &str,
) -> FhirResult<()> {
    let missing = || FhirError::NotFound(format!("{rtype}/{id} is not known"));
    let grant = if access.is_own_user(rtype, id) {
        Grant::All
    } else {
        access.require(rtype, Letter::R)?
    };
    let Some(v) = reader.current(rtype, id)? else {
        return Err(missing());
    };
    if !read_interaction::visible(ctx, access, reader, &grant, &v)? {
        return Err(missing());
    }
    if v.is_deleted() {
        return Err(FhirError::Gone(format!("{rtype}/{id} was deleted")));
    }
    Ok(())
}
