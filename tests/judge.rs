//! Self-test of the third-party judge the other test files rely on: the HL7 R4 JSON Schema as
//! loaded and corrected by `tests/common/schema.rs` accepts valid R4 and rejects what R4
//! forbids (FHIR R4 json.html: "the JSON format … is described by a JSON Schema"). A judge that
//! accepted everything would make every other test pass vacuously.

mod common;

use common::schema::check_resource;
use serde_json::json;

#[test]
fn judge_accepts_valid_r4() {
    for resource in [
        common::patient("Valid"),
        common::shared_fixture("fhir-r4-examples/Patient-example.json"),
        common::shared_fixture("fhir-r4-examples/Bundle-bundle-transaction.json"),
        // A no-break space is not white space in FHIR's (XML Schema) regexes.
        json!({ "resourceType": "Patient", "name": [{ "text": "Ana\u{a0}Lopez" }] }),
        json!({ "resourceType": "CapabilityStatement", "status": "active", "date": "2026-01-01",
                "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"] }),
    ] {
        let problems = check_resource(&resource);
        assert!(
            problems.is_empty(),
            "valid resource rejected: {problems:?}\n{resource}"
        );
    }
}

#[test]
fn judge_rejects_invalid_r4() {
    let cases = [
        (
            "unknown element",
            json!({ "resourceType": "Patient", "favouriteColour": "blue" }),
        ),
        (
            "required binding",
            json!({ "resourceType": "Patient", "gender": "girl" }),
        ),
        (
            "bad date",
            json!({ "resourceType": "Patient", "birthDate": "2020-13-01" }),
        ),
        (
            "wrong JSON type",
            json!({ "resourceType": "Patient", "active": "true" }),
        ),
        (
            "empty string",
            json!({ "resourceType": "Patient", "name": [{ "family": "" }] }),
        ),
        (
            "code with trailing space",
            json!({ "resourceType": "Patient", "gender": "male " }),
        ),
        (
            "uri with a space",
            json!({ "resourceType": "Patient", "identifier": [{ "system": "urn:a b" }] }),
        ),
        (
            "bad id",
            json!({ "resourceType": "Patient", "id": "no_underscores" }),
        ),
        (
            "unknown resource type",
            json!({ "resourceType": "Martian" }),
        ),
        (
            "invalid resource inside a Bundle entry",
            json!({ "resourceType": "Bundle", "type": "collection",
                 "entry": [{ "resource": { "resourceType": "Patient", "gender": "girl" } }] }),
        ),
        (
            "invalid Bundle shell",
            json!({ "resourceType": "Bundle", "type": "not-a-type" }),
        ),
        (
            "invalid outcome in a Bundle response",
            json!({ "resourceType": "Bundle", "type": "batch-response",
                 "entry": [{ "response": { "status": "400", "outcome": { "resourceType": "OperationOutcome", "issue": [{ "severity": "bad" }] } } }] }),
        ),
        (
            "invalid contained resource",
            json!({ "resourceType": "Patient", "contained": [{ "resourceType": "Organization", "id": "o", "active": "yes" }] }),
        ),
    ];
    for (what, resource) in cases {
        assert!(
            !check_resource(&resource).is_empty(),
            "{what}: judge accepted {resource}"
        );
    }
}
