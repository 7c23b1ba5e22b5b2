//! capabilities: `GET [base]/metadata`, assembled from `conformance/capability-statement.json`
//! and what the server really implements (every resource type, interaction and search
//! parameter listed works, and each profile of `profiles/` is enforced on write).

use serde_json::{Value, json};

use crate::error::{FhirError, FhirResult};
use crate::fhir::structure;
use crate::search::SearchRegistry;

const BASE: &str = include_str!("../../conformance/capability-statement.json");

/// Interactions supported on every resource type.
const TYPE_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
];

/// Build the CapabilityStatement.
pub fn build(base_url: &str, search: &SearchRegistry) -> FhirResult<Value> {
    let mut cs: Value = serde_json::from_str(BASE).map_err(FhirError::internal)?;
    cs["date"] = json!(crate::fhir::ids::format_instant(chrono::Utc::now()));
    cs["software"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    cs["implementation"] = json!({ "description": "foster-passport", "url": base_url });
    let resources: Vec<Value> = structure::resource_types()
        .iter()
        .map(|t| {
            let params: Vec<Value> = search
                .params(t)
                .map(|p| json!({ "name": p.code, "definition": p.url, "type": p.kind.code(), "documentation": p.description }))
                .collect();
            let mut resource = json!({
                "type": t,
                "interaction": TYPE_INTERACTIONS.iter().map(|c| json!({ "code": c })).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-match",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchParam": params,
            });
            let profiles = crate::validate::profiles().resource_profiles(t);
            if !profiles.is_empty() {
                resource["supportedProfile"] = json!(profiles);
            }
            resource
        })
        .collect();
    let rest = &mut cs["rest"][0];
    rest["security"] = security(base_url);
    rest["resource"] = Value::Array(resources);
    rest["interaction"] = json!([
        { "code": "transaction" },
        { "code": "batch" },
        { "code": "history-system" }
    ]);
    Ok(cs)
}

/// `rest.security`: SMART on FHIR, with the endpoints in the `oauth-uris` extension (deprecated
/// by SMART 2 in favour of `.well-known/smart-configuration`, which we also serve, but some
/// clients, such as the Python `fhirclient`, read only this).
fn security(base_url: &str) -> Value {
    let origin = base_url.strip_suffix("/fhir").unwrap_or(base_url);
    let uri = |name: &str, path: &str| json!({ "url": name, "valueUri": format!("{origin}/auth/{path}") });
    json!({
        "cors": true,
        "service": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR",
                "display": "SMART-on-FHIR"
            }],
            "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)"
        }],
        "description": "SMART App Launch 2: authorization code with PKCE and backend services (private_key_jwt). Discovery at .well-known/smart-configuration.",
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [
                uri("authorize", "authorize"),
                uri("token", "token"),
                uri("introspect", "introspect"),
                uri("revoke", "revoke"),
            ]
        }]
    })
}
