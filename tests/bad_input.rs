//! Bad input is refused with the right status and an OperationOutcome, and writes nothing
//! (FHIR R4 http.html §3.1.0.4 update, §3.1.0.8 create, §3.1.6.3 and §3.1.0.1.5 error codes).
//!
//! > "400 Bad Request — resource could not be parsed or failed basic FHIR validation rules …
//! > 404 Not Found — resource type not supported, or not a FHIR end-point … 410 Gone — resource
//! > deleted … 412 Precondition Failed … 413 … 415 Unsupported Media Type … 422 Unprocessable
//! > Entity — the proposed resource violated applicable FHIR profiles or server business rules."
//! > "The body of the error response SHALL be an OperationOutcome."
//! >
//! > update: "If no id element is provided, or the id disagrees with the id in the URL, the
//! > server SHALL respond with an HTTP 400 error code, and SHOULD provide an OperationOutcome."
//!
//! Issue 2: unknown elements, wrong JSON types, missing required elements, a resourceType that
//! does not match the URL, an id that is not a FHIR id and primitive values that break their R4
//! format give 400 naming the element; bodies over the limit 413; wrong Content-Type 415;
//! absurdly deep JSON is rejected, not a stack overflow; nothing is written in any of those
//! cases.

mod common;

use common::{Client, Resp, Server};
use reqwest::Method;
use serde_json::{Value, json};

/// Sends a request expecting `status` with an OperationOutcome, and proves the store is
/// unchanged afterwards.
async fn refused(client: &Client, what: &str, status: u16, request: common::Req) -> Resp {
    let before = client.snapshot().await;
    let resp = request.send().await;
    assert_eq!(
        resp.status.as_u16(),
        status,
        "{what}: {} {} expected {status}, got {}\n{}",
        resp.method,
        resp.url,
        resp.status,
        resp.text
    );
    resp.assert_operation_outcome();
    client.assert_unchanged(&before, what).await;
    resp
}

/// An existing Patient to aim updates at.
async fn existing(client: &Client) -> Value {
    client.create(&common::patient("Existing")).await
}

fn raw_post(client: &Client, path: &str, body: &str) -> common::Req {
    client
        .request(Method::POST, path)
        .body(common::FHIR_JSON, body.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_is_400() {
    let server = Server::start();
    let client = server.client();
    let target = existing(&client).await;
    let put_path = format!("Patient/{}", target["id"].as_str().unwrap());
    for body in [
        "{\"resourceType\": \"Patient\",",
        "{\"resourceType\": \"Patient\" \"active\": true}",
        "not json at all",
        "",
        "{\"resourceType\": \"Patient\", \"active\": true} trailing",
        "\u{feff}{\"resourceType\": \"Patient\"",
    ] {
        refused(
            &client,
            &format!("POST {body:?}"),
            400,
            raw_post(&client, "Patient", body),
        )
        .await;
        refused(
            &client,
            &format!("PUT {body:?}"),
            400,
            client
                .request(Method::PUT, &put_path)
                .body(common::FHIR_JSON, body.as_bytes().to_vec()),
        )
        .await;
    }
    // Invalid UTF-8.
    refused(
        &client,
        "invalid UTF-8",
        400,
        client.request(Method::POST, "Patient").body(
            common::FHIR_JSON,
            b"{\"resourceType\":\"Patient\",\"gender\":\"\xff\xfe\"}".to_vec(),
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn json_that_is_not_a_resource_is_400() {
    let server = Server::start();
    let client = server.client();
    for body in [
        "[]",
        "\"Patient\"",
        "42",
        "null",
        "{}",
        "{\"active\": true}",
    ] {
        refused(&client, body, 400, raw_post(&client, "Patient", body)).await;
    }
}

/// Each case: what it is, the element that is wrong (must appear in the OperationOutcome), and
/// the Patient fields to add.
fn invalid_patients() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "unknown element",
            "favouritecolour",
            json!({ "favouriteColour": "blue" }),
        ),
        (
            "unknown nested element",
            "nickname",
            json!({ "name": [{ "family": "X", "nickname": "Y" }] }),
        ),
        ("boolean as string", "active", json!({ "active": "true" })),
        (
            "array element given as object",
            "name",
            json!({ "name": { "family": "X" } }),
        ),
        (
            "string given as number",
            "family",
            json!({ "name": [{ "family": 12 }] }),
        ),
        (
            "date with month 13",
            "birthdate",
            json!({ "birthDate": "2020-13-01" }),
        ),
        (
            "date in US format",
            "birthdate",
            json!({ "birthDate": "01/02/2020" }),
        ),
        (
            "date with day 31 in April",
            "birthdate",
            json!({ "birthDate": "2020-04-31" }),
        ),
        (
            "dateTime without seconds or zone",
            "deceaseddatetime",
            json!({ "deceasedDateTime": "2020-01-01T10:00" }),
        ),
        (
            "dateTime with time but no zone",
            "deceaseddatetime",
            json!({ "deceasedDateTime": "2020-01-01T10:00:00" }),
        ),
        (
            "empty string",
            "family",
            json!({ "name": [{ "family": "" }] }),
        ),
        ("empty string in a code", "gender", json!({ "gender": "" })),
        (
            "code with leading whitespace",
            "gender",
            json!({ "gender": " female" }),
        ),
        (
            "uri with whitespace",
            "system",
            json!({ "identifier": [{ "system": "urn:has space", "value": "1" }] }),
        ),
        (
            "integer given as decimal",
            "multiplebirthinteger",
            json!({ "multipleBirthInteger": 1.5 }),
        ),
        (
            "integer given as string",
            "multiplebirthinteger",
            json!({ "multipleBirthInteger": "2" }),
        ),
        ("empty object", "name", json!({ "name": [{}] })),
        ("empty array", "name", json!({ "name": [] })),
        ("null value", "gender", json!({ "gender": null })),
        (
            "invalid id in a contained resource",
            "contained",
            json!({ "contained": [{ "resourceType": "Organization", "id": "bad id!", "name": "O" }] }),
        ),
        (
            "unknown contained type",
            "contained",
            json!({ "contained": [{ "resourceType": "Martian", "id": "m" }] }),
        ),
        (
            "_element with no value partner of wrong shape",
            "_birthdate",
            json!({ "_birthDate": "2020-01-01" }),
        ),
        (
            "required binding violated",
            "gender",
            json!({ "gender": "girl" }),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_resources_are_400_naming_the_element() {
    let server = Server::start();
    let client = server.client();
    let target = existing(&client).await;
    let id = target["id"].as_str().unwrap();
    for (what, element, fields) in invalid_patients() {
        let mut body = json!({ "resourceType": "Patient" });
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        let resp = refused(
            &client,
            &format!("create: {what}"),
            400,
            client.request(Method::POST, "Patient").json(&body),
        )
        .await;
        assert!(
            resp.outcome_text().contains(element),
            "create: {what}: the OperationOutcome should name `{element}`: {}",
            resp.text
        );

        body["id"] = json!(id);
        refused(
            &client,
            &format!("update: {what}"),
            400,
            client
                .request(Method::PUT, &format!("Patient/{id}"))
                .json(&body),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_required_elements_are_400() {
    let server = Server::start();
    let client = server.client();
    let cases = [
        (
            "Observation without status",
            json!({ "resourceType": "Observation", "code": { "text": "x" } }),
        ),
        (
            "Observation without code",
            json!({ "resourceType": "Observation", "status": "final" }),
        ),
        (
            "Extension without url",
            json!({ "resourceType": "Patient", "extension": [{ "valueString": "x" }] }),
        ),
        (
            "AllergyIntolerance without patient",
            json!({ "resourceType": "AllergyIntolerance", "code": { "text": "x" } }),
        ),
    ];
    for (what, body) in cases {
        let ty = body["resourceType"].as_str().unwrap().to_string();
        refused(
            &client,
            what,
            400,
            client.request(Method::POST, &ty).json(&body),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn resource_type_and_id_must_match_the_url() {
    let server = Server::start();
    let client = server.client();
    let target = existing(&client).await;
    let id = target["id"].as_str().unwrap();
    let observation =
        json!({ "resourceType": "Observation", "status": "final", "code": { "text": "x" } });

    refused(
        &client,
        "POST Observation to /Patient",
        400,
        client.request(Method::POST, "Patient").json(&observation),
    )
    .await;
    let mut body = observation.clone();
    body["id"] = json!(id);
    refused(
        &client,
        "PUT Observation to /Patient/{id}",
        400,
        client
            .request(Method::PUT, &format!("Patient/{id}"))
            .json(&body),
    )
    .await;

    let mut other = target.clone();
    other["id"] = json!("a-different-id");
    refused(
        &client,
        "PUT with an id that disagrees with the URL",
        400,
        client
            .request(Method::PUT, &format!("Patient/{id}"))
            .json(&other),
    )
    .await;

    let mut no_id = target.clone();
    no_id.as_object_mut().unwrap().remove("id");
    refused(
        &client,
        "PUT without an id",
        400,
        client
            .request(Method::PUT, &format!("Patient/{id}"))
            .json(&no_id),
    )
    .await;

    let mut no_type = target.clone();
    no_type.as_object_mut().unwrap().remove("resourceType");
    refused(
        &client,
        "POST without resourceType",
        400,
        client.request(Method::POST, "Patient").json(&no_type),
    )
    .await;

    // Ids that are not FHIR ids, in the URL (with a matching body).
    for bad in [
        "a".repeat(65),
        "has_underscore".to_string(),
        "has%20space".to_string(),
    ] {
        let mut body = common::patient("BadId");
        body["id"] = json!(bad.replace("%20", " "));
        refused(
            &client,
            &format!("PUT Patient/{bad}"),
            400,
            client
                .request(Method::PUT, &format!("Patient/{bad}"))
                .json(&body),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_type_is_404_and_writes_nothing() {
    let server = Server::start();
    let client = server.client();
    let body = json!({ "resourceType": "Martian", "name": "Zork" });
    refused(
        &client,
        "POST unknown type",
        404,
        client.request(Method::POST, "Martian").json(&body),
    )
    .await;
    let mut with_id = body.clone();
    with_id["id"] = json!("z1");
    refused(
        &client,
        "PUT unknown type",
        404,
        client.request(Method::PUT, "Martian/z1").json(&with_id),
    )
    .await;
    refused(
        &client,
        "GET unknown type",
        404,
        client.request(Method::GET, "Martian/z1"),
    )
    .await;
    refused(
        &client,
        "DELETE unknown type",
        404,
        client.request(Method::DELETE, "Martian/z1"),
    )
    .await;
    refused(
        &client,
        "history of unknown type",
        404,
        client.request(Method::GET, "Martian/_history"),
    )
    .await;
    refused(
        &client,
        "search unknown type",
        404,
        client.request(Method::GET, "Martian?_id=z1"),
    )
    .await;
    // Abstract and non-resource types are not resource endpoints either.
    refused(
        &client,
        "POST /Resource",
        404,
        client
            .request(Method::POST, "Resource")
            .json(&json!({"resourceType": "Resource"})),
    )
    .await;
    refused(
        &client,
        "POST /HumanName",
        404,
        client
            .request(Method::POST, "HumanName")
            .json(&json!({"resourceType": "HumanName"})),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_deleted_ids() {
    let server = Server::start();
    let client = server.client();
    refused(
        &client,
        "read unknown id",
        404,
        client.request(Method::GET, "Patient/nope"),
    )
    .await;
    refused(
        &client,
        "vread unknown id",
        404,
        client.request(Method::GET, "Patient/nope/_history/1"),
    )
    .await;
    refused(
        &client,
        "history of unknown id",
        404,
        client.request(Method::GET, "Patient/nope/_history"),
    )
    .await;

    let target = existing(&client).await;
    let path = format!("Patient/{}", target["id"].as_str().unwrap());
    client.delete(&path).await;
    refused(
        &client,
        "read deleted",
        410,
        client.request(Method::GET, &path),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_if_match_is_412() {
    let server = Server::start();
    let client = server.client();
    let target = existing(&client).await;
    let path = format!("Patient/{}", target["id"].as_str().unwrap());
    for etag in ["W/\"2\"", "W/\"0\"", "W/\"abc\""] {
        let resp = {
            let before = client.snapshot().await;
            let resp = client
                .request(Method::PUT, &path)
                .header("If-Match", etag)
                .json(&target)
                .send()
                .await;
            client
                .assert_unchanged(&before, &format!("If-Match {etag}"))
                .await;
            resp
        };
        assert!(
            resp.status == 412 || (resp.status == 400 && etag != "W/\"2\"" && etag != "W/\"0\""),
            "If-Match {etag}: expected 412 (or 400 for a malformed ETag), got {} {}",
            resp.status,
            resp.text
        );
        resp.assert_operation_outcome();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_content_type_is_415() {
    let server = Server::start();
    let client = server.client();
    let target = existing(&client).await;
    let body = common::to_bytes(&common::patient("Typed"));
    for content_type in [
        "text/plain",
        "application/xml",
        "application/fhir+xml",
        "multipart/form-data; boundary=x",
    ] {
        refused(
            &client,
            &format!("POST as {content_type}"),
            415,
            client
                .request(Method::POST, "Patient")
                .body(content_type, body.clone()),
        )
        .await;
        refused(
            &client,
            &format!("PUT as {content_type}"),
            415,
            client
                .request(
                    Method::PUT,
                    &format!("Patient/{}", target["id"].as_str().unwrap()),
                )
                .body(content_type, common::to_bytes(&target)),
        )
        .await;
        refused(
            &client,
            &format!("transaction as {content_type}"),
            415,
            client.request(Method::POST, "").body(
                content_type,
                common::to_bytes(&json!({"resourceType": "Bundle", "type": "batch", "entry": []})),
            ),
        )
        .await;
    }
}

/// A valid Patient whose JSON is about `size` bytes long.
fn patient_of_size(size: usize) -> Vec<u8> {
    let mut p = common::patient("Big");
    p["text"] = json!({
        "status": "generated",
        "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>", "x".repeat(size))
    });
    common::to_bytes(&p)
}

#[tokio::test(flavor = "multi_thread")]
async fn body_over_the_configured_limit_is_413() {
    let server = Server::builder().args(["--max-body-bytes", "4096"]).start();
    let client = server.client();
    let small = patient_of_size(1000);
    assert!(small.len() < 4096);
    client
        .request(Method::POST, "Patient")
        .body(common::FHIR_JSON, small)
        .send()
        .await
        .expect_status(201);
    let big = patient_of_size(5000);
    refused(
        &client,
        "5 KB body with a 4 KiB limit",
        413,
        client
            .request(Method::POST, "Patient")
            .body(common::FHIR_JSON, big.clone()),
    )
    .await;
    refused(
        &client,
        "5 KB transaction with a 4 KiB limit",
        413,
        client.request(Method::POST, "").body(common::FHIR_JSON, {
            let p: Value = serde_json::from_slice(&big).unwrap();
            common::to_bytes(&json!({"resourceType": "Bundle", "type": "transaction",
                "entry": [{"resource": p, "request": {"method": "POST", "url": "Patient"}}]}))
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn default_limit_is_16_mib() {
    let server = Server::start();
    let client = server.client();
    let over = patient_of_size(16 * 1024 * 1024 + 1024);
    refused(
        &client,
        "body just over 16 MiB",
        413,
        client
            .request(Method::POST, "Patient")
            .body(common::FHIR_JSON, over),
    )
    .await;
    // Just under the limit is accepted (checked last: the snapshots stay small).
    let under = patient_of_size(15 * 1024 * 1024);
    client
        .request(Method::POST, "Patient")
        .header("Prefer", "return=minimal")
        .body(common::FHIR_JSON, under)
        .send()
        .await
        .expect_status(201);
}

#[tokio::test(flavor = "multi_thread")]
async fn absurdly_deep_json_is_rejected_without_a_crash() {
    let server = Server::start();
    let client = server.client();
    let depth = 100_000;

    // Nested arrays.
    let arrays = format!(
        "{{\"resourceType\":\"Patient\",\"name\":{}{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    refused(
        &client,
        "100k nested arrays",
        400,
        raw_post(&client, "Patient", &arrays),
    )
    .await;

    // Nested extensions: each level is individually valid FHIR.
    let mut ext = String::new();
    for _ in 0..depth {
        ext.push_str("{\"url\":\"http://e.org/x\",\"extension\":[");
    }
    ext.push_str("{\"url\":\"http://e.org/x\",\"valueString\":\"deep\"}");
    for _ in 0..depth {
        ext.push_str("]}");
    }
    let extensions = format!("{{\"resourceType\":\"Patient\",\"extension\":[{ext}]}}");
    refused(
        &client,
        "100k nested extensions",
        400,
        raw_post(&client, "Patient", &extensions),
    )
    .await;

    // Deep nesting inside a transaction Bundle.
    let bundle = format!(
        "{{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":[{{\"request\":{{\"method\":\"POST\",\"url\":\"Patient\"}},\"resource\":{extensions}}}]}}"
    );
    refused(
        &client,
        "deep resource in a transaction",
        400,
        raw_post(&client, "", &bundle),
    )
    .await;

    // A JSON Patch value nested deeply.
    let target = existing(&client).await;
    let patch = format!("[{{\"op\":\"add\",\"path\":\"/extension\",\"value\":[{ext}]}}]");
    let before = client.snapshot().await;
    let resp = client
        .request(
            Method::PATCH,
            &format!("Patient/{}", target["id"].as_str().unwrap()),
        )
        .body(common::JSON_PATCH, patch.into_bytes())
        .send()
        .await;
    assert!(
        resp.status == 400 || resp.status == 422,
        "deep JSON Patch: expected 400/422, got {} {}",
        resp.status,
        resp.text
    );
    resp.assert_operation_outcome();
    client.assert_unchanged(&before, "deep JSON Patch").await;

    // Still alive.
    client.get("/healthz").await.expect_status(200);
    client.create(&common::patient("AfterDeep")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_bundles_for_batch_and_transaction_are_400() {
    let server = Server::start();
    let client = server.client();
    let cases = [
        ("not a Bundle", json!({ "resourceType": "Patient" })),
        (
            "collection Bundle",
            json!({ "resourceType": "Bundle", "type": "collection", "entry": [] }),
        ),
        (
            "Bundle without type",
            json!({ "resourceType": "Bundle", "entry": [] }),
        ),
        (
            "entry without request",
            json!({ "resourceType": "Bundle", "type": "transaction", "entry": [{ "resource": common::patient("NoReq") }] }),
        ),
        (
            "unknown method",
            json!({ "resourceType": "Bundle", "type": "transaction", "entry": [{ "resource": common::patient("Verb"), "request": { "method": "FETCH", "url": "Patient" } }] }),
        ),
    ];
    for (what, body) in cases {
        refused(
            &client,
            what,
            400,
            client.request(Method::POST, "").json(&body),
        )
        .await;
    }
}
