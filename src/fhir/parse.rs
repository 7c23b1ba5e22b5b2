//! From request bytes to a checked R4 resource.
//!
//! Three judges in order: serde_json (well-formed, bounded depth), our schema-driven
//! structure check (precise element paths, primitive formats fhirbolt does not check), and
//! fhirbolt's R4 model (required elements and anything else the model enforces). The JSON the
//! client sent is what we keep; fhirbolt only judges it.

use serde_json::Value;

use crate::error::{FhirError, FhirResult, Issue};
use crate::fhir::structure;

/// Parse a body that must be one R4 resource.
pub fn parse_resource(bytes: &[u8]) -> FhirResult<Value> {
    let value: Value = serde_json::from_slice(bytes).map_err(malformed)?;
    check_structure(&value)?;
    fhirbolt::json::from_slice::<fhirbolt::model::r4::Resource>(bytes, None)
        .map_err(|e| model_error(&e.to_string()))?;
    Ok(value)
}

/// Parse a body that must be a JSON object, leaving the FHIR checks to the caller
/// ([`base_issues`]).
pub fn parse_object(bytes: &[u8]) -> FhirResult<Value> {
    let value: Value = serde_json::from_slice(bytes).map_err(malformed)?;
    if !value.is_object() {
        return Err(FhirError::bad_value(
            "structure",
            "the body must be a JSON object",
            "$this",
        ));
    }
    Ok(value)
}

/// The base-spec problems of a resource value, as issues with their element paths (empty
/// when it conforms): the same judges as [`parse_resource`], reported rather than raised.
pub fn base_issues(value: &Value) -> Vec<Issue> {
    match check_resource_value(value) {
        Ok(()) => vec![],
        Err(e) => e.issues(),
    }
}

/// Parse a batch or transaction Bundle: the Bundle itself is checked here, each entry's resource
/// when its entry runs, so one bad entry of a batch fails alone.
pub fn parse_bundle(bytes: &[u8]) -> FhirResult<Value> {
    let value: Value = serde_json::from_slice(bytes).map_err(malformed)?;
    if resource_type(&value) != "Bundle" {
        return Err(FhirError::bad_value(
            "invalid",
            "POST to the base needs a Bundle",
            "resourceType",
        ));
    }
    let mut shell = value.clone();
    if let Some(entries) = shell.get_mut("entry").and_then(Value::as_array_mut) {
        for entry in entries {
            if let Some(e) = entry.as_object_mut() {
                e.remove("resource");
            }
        }
    }
    check_resource_value(&shell)?;
    Ok(value)
}

/// Check a resource value that did not come straight from request bytes (a patch result).
pub fn check_resource_value(value: &Value) -> FhirResult<()> {
    check_structure(value)?;
    fhirbolt::json::from_json_value::<fhirbolt::model::r4::Resource>(value.clone(), None)
        .map_err(|e| model_error(&e.to_string()))?;
    Ok(())
}

/// The `resourceType` of a checked resource.
pub fn resource_type(value: &Value) -> &str {
    value
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn check_structure(value: &Value) -> FhirResult<()> {
    let Some(obj) = value.as_object() else {
        return Err(FhirError::bad_value(
            "structure",
            "the body must be a JSON object",
            "$this",
        ));
    };
    match obj.get("resourceType") {
        Some(Value::String(t)) if structure::is_resource_type(t) => {}
        Some(Value::String(t)) => {
            return Err(FhirError::bad_value(
                "not-supported",
                format!("unknown resourceType `{t}`"),
                "resourceType",
            ));
        }
        _ => {
            return Err(FhirError::bad_value(
                "required",
                "the body must carry a string `resourceType`",
                "resourceType",
            ));
        }
    }
    let issues = structure::check_resource(value);
    if issues.is_empty() {
        return Ok(());
    }
    Err(FhirError::Invalid(
        issues
            .into_iter()
            .map(|i| {
                let text = format!("{}: {}", i.path, i.message);
                Issue::error("structure", text).at(i.path)
            })
            .collect(),
    ))
}

fn malformed(e: serde_json::Error) -> FhirError {
    let text = e.to_string();
    if text.contains("recursion limit") {
        return FhirError::bad_value("structure", "the JSON body is nested too deeply", "$this");
    }
    FhirError::bad_value("structure", format!("malformed JSON: {text}"), "$this")
}

fn model_error(text: &str) -> FhirError {
    FhirError::bad_value(
        "structure",
        format!("the resource does not conform to the R4 model: {text}"),
        "$this",
    )
}
