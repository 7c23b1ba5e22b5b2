//! patch with JSON Patch (FHIR R4 http.html §3.1.0.6 patch; RFC 6902).
//!
//! > "As an alternative to updating an entire resource, clients can perform a patch interaction
//! > … `PATCH [base]/[type]/[id]` … The body of a PATCH operation SHALL be either a JSON Patch
//! > document with a content type of `application/json-patch+json` … or a FHIRPath Patch … The
//! > patch operation is applied to the current version … Servers SHALL … process patch
//! > atomically: either all operations succeed or none are applied … Servers MAY use ETags
//! > (`If-Match`) … if the version id given in the If-Match header does not match, the server
//! > returns a 412 Precondition Failed."
//! >
//! > "Processing a patch MAY result in a resource that is invalid … In this case, the server
//! > SHALL return an error: 422 Unprocessable Entity" (the resource must still be valid R4
//! > after the patch).
//!
//! HL7's JSON Patch conformance cases (`tests/fixtures/hl7-json-patch-tests.json`) are run as
//! restated on a FHIR Patient in `tests/fixtures/json-patch-fhir-cases.json`, one for one.

mod common;

use common::{Client, Resp, Server, assert_same_content, fixture};
use reqwest::Method;
use serde_json::{Value, json};

async fn put_at(client: &Client, id: &str, doc: &Value) -> Value {
    let mut doc = doc.clone();
    doc["id"] = json!(id);
    client.upsert(&doc).await;
    doc
}

fn is_patch_failure(resp: &Resp) -> bool {
    matches!(resp.status.as_u16(), 400 | 422) && resp.body["resourceType"] == "OperationOutcome"
}

#[tokio::test(flavor = "multi_thread")]
async fn hl7_json_patch_cases_restated_on_fhir_resources() {
    let hl7 = fixture("hl7-json-patch-tests.json");
    let cases = fixture("json-patch-fhir-cases.json");
    let hl7_names: Vec<&str> = hl7
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["comment"].as_str().unwrap())
        .collect();
    let our_names: Vec<&str> = cases
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["hl7"].as_str().unwrap())
        .collect();
    assert_eq!(
        our_names, hl7_names,
        "every HL7 case is restated (or explained), in order"
    );

    let server = Server::start();
    let client = server.client();
    let mut failures = Vec::new();
    let mut ran = 0;
    for (n, case) in cases.as_array().unwrap().iter().enumerate() {
        let name = case["hl7"].as_str().unwrap();
        if case.get("not_expressible").is_some() {
            continue;
        }
        ran += 1;
        let id = format!("patch-case-{n}");
        let doc = put_at(&client, &id, &case["doc"]).await;
        let path = format!("Patient/{id}");
        let resp = client
            .request(Method::PATCH, &path)
            .body(common::JSON_PATCH, common::to_bytes(&case["patch"]))
            .send()
            .await;
        let current = client.read("Patient", &id).await;

        if let Some(expected) = case.get("expected") {
            if resp.status != 200 {
                failures.push(format!(
                    "{name}: expected 200, got {} {}",
                    resp.status, resp.text
                ));
                continue;
            }
            let mut expected = expected.clone();
            expected["id"] = json!(id);
            let diff = common::json_diff(
                &common::without_server_meta(&expected),
                &common::without_server_meta(&current),
                10,
            );
            if !diff.is_empty() {
                failures.push(format!(
                    "{name}: patched resource differs:\n  {}",
                    diff.join("\n  ")
                ));
            }
        } else {
            if !is_patch_failure(&resp) {
                failures.push(format!(
                    "{name} ({}): expected 400/422 with an OperationOutcome, got {} {}",
                    case["error"], resp.status, resp.text
                ));
            }
            if current["meta"]["versionId"] != "1" || common::without_server_meta(&current) != doc {
                failures.push(format!(
                    "{name}: a failed patch changed the resource: {current}"
                ));
            }
        }
    }
    assert_eq!(ran, 15);
    assert!(
        failures.is_empty(),
        "{} JSON Patch case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_makes_a_new_version_with_headers() {
    let server = Server::start();
    let client = server.client();
    let created = client.create(&common::patient("Patchy")).await;
    let id = created["id"].as_str().unwrap().to_string();

    let patch = json!([
        { "op": "replace", "path": "/name/0/family", "value": "Patched" },
        { "op": "add", "path": "/telecom", "value": [{ "system": "phone", "value": "555-0100" }] },
        { "op": "remove", "path": "/birthDate" }
    ]);
    let resp = client
        .request(Method::PATCH, &format!("Patient/{id}"))
        .header("Prefer", "return=representation")
        .body(common::JSON_PATCH, common::to_bytes(&patch))
        .send()
        .await
        .expect_status(200);
    assert_eq!(resp.etag(), Some("W/\"2\""));
    assert!(
        resp.header("last-modified").is_some(),
        "Last-Modified on patch"
    );
    assert_eq!(resp.body["meta"]["versionId"], "2");

    let mut expected = created.clone();
    expected["name"][0]["family"] = json!("Patched");
    expected["telecom"] = json!([{ "system": "phone", "value": "555-0100" }]);
    expected.as_object_mut().unwrap().remove("birthDate");
    assert_same_content(&expected, &resp.body);
    assert_same_content(&expected, &client.read("Patient", &id).await);

    // Version 1 is untouched.
    let v1 = client
        .get(&format!("Patient/{id}/_history/1"))
        .await
        .expect_status(200);
    assert_same_content(&created, &v1.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_is_atomic_and_never_stores_an_invalid_resource() {
    let server = Server::start();
    let client = server.client();
    let created = client.create(&common::patient("Atomic")).await;
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("Patient/{id}");

    let bad_patches = [
        // The second operation fails: the first must not stick.
        (
            "failing second op",
            json!([
                { "op": "replace", "path": "/gender", "value": "male" },
                { "op": "remove", "path": "/deceasedBoolean" }
            ]),
        ),
        (
            "result has a bad date",
            json!([{ "op": "replace", "path": "/birthDate", "value": "yesterday" }]),
        ),
        (
            "result has an unknown element",
            json!([{ "op": "add", "path": "/favouriteColour", "value": "blue" }]),
        ),
        (
            "result has the wrong JSON type",
            json!([{ "op": "replace", "path": "/active", "value": "yes" }]),
        ),
        (
            "changes the id",
            json!([{ "op": "replace", "path": "/id", "value": "another-id" }]),
        ),
        (
            "changes the resourceType",
            json!([{ "op": "replace", "path": "/resourceType", "value": "Person" }]),
        ),
        ("unknown op", json!([{ "op": "delete", "path": "/active" }])),
        ("not an array", json!({ "op": "remove", "path": "/active" })),
        ("missing path", json!([{ "op": "remove" }])),
    ];
    for (what, patch) in bad_patches {
        let before = client.snapshot().await;
        let resp = client.patch(&path, &patch).await;
        assert!(
            is_patch_failure(&resp),
            "{what}: expected 400/422 with an OperationOutcome, got {} {}",
            resp.status,
            resp.text
        );
        client.assert_unchanged(&before, what).await;
    }
    let current = client.read("Patient", &id).await;
    assert_eq!(current["meta"]["versionId"], "1");
    assert_same_content(&created, &current);

    // Malformed JSON as a patch body.
    let before = client.snapshot().await;
    client
        .request(Method::PATCH, &path)
        .body(common::JSON_PATCH, "[{\"op\": \"add\",")
        .send()
        .await
        .expect_outcome(400);
    client
        .assert_unchanged(&before, "malformed patch JSON")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_honours_if_match() {
    let server = Server::start();
    let client = server.client();
    let created = client.create(&common::patient("PatchMatch")).await;
    let path = format!("Patient/{}", created["id"].as_str().unwrap());
    let patch = common::to_bytes(&json!([{ "op": "replace", "path": "/active", "value": false }]));

    client
        .request(Method::PATCH, &path)
        .header("If-Match", "W/\"1\"")
        .body(common::JSON_PATCH, patch.clone())
        .send()
        .await
        .expect_status(200);
    let before = client.snapshot().await;
    client
        .request(Method::PATCH, &path)
        .header("If-Match", "W/\"1\"")
        .body(common::JSON_PATCH, patch)
        .send()
        .await
        .expect_outcome(412);
    client
        .assert_unchanged(&before, "stale If-Match on patch")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_of_missing_or_deleted_resource_and_wrong_content_type() {
    let server = Server::start();
    let client = server.client();
    let patch = json!([{ "op": "replace", "path": "/active", "value": false }]);

    client
        .patch("Patient/not-there", &patch)
        .await
        .expect_outcome(404);

    let created = client.create(&common::patient("Gone")).await;
    let path = format!("Patient/{}", created["id"].as_str().unwrap());
    client.delete(&path).await;
    let before = client.snapshot().await;
    client.patch(&path, &patch).await.expect_outcome(410);
    client
        .assert_unchanged(&before, "patch of a deleted resource")
        .await;

    let live = client.create(&common::patient("Live")).await;
    let path = format!("Patient/{}", live["id"].as_str().unwrap());
    let before = client.snapshot().await;
    for content_type in [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
    ] {
        client
            .request(Method::PATCH, &path)
            .body(content_type, common::to_bytes(&patch))
            .send()
            .await
            .expect_outcome(415);
    }
    client
        .assert_unchanged(&before, "patch with a wrong Content-Type")
        .await;
}
