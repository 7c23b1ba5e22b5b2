//! create, update, conditional create/update, versioning headers and `Prefer`
//! (FHIR R4 http.html §3.1.0.4 update, §3.1.0.8 create, §3.1.0.4.3 conditional update,
//! §3.1.0.8.1 conditional create, §3.1.0.5 managing resource contention, §3.1.0.1.10 Prefer).
//!
//! > create: "The server returns a 201 Created HTTP status code, and SHALL also return a Location
//! > header which contains the new Logical Id and Version Id of the created resource version:
//! > `Location: [base]/[type]/[id]/_history/[vid]` … Servers SHOULD return an ETag header with the
//! > versionId … and a Last-Modified header." "If an id is provided, the server SHALL ignore it."
//! >
//! > update: "If the interaction is successful, the server SHALL return either a 200 OK HTTP
//! > status code if the resource was updated, or a 201 Created status code if the resource was
//! > created." "The resource SHALL have an id element that has an identical value to the [id] in
//! > the URL."
//! >
//! > conditional create (If-None-Exist): "No matches: the server processes the create as normal;
//! > One Match: the server ignores the post and returns 200 OK; Multiple matches: the server
//! > returns a 412 Precondition Failed error".
//! >
//! > conditional update: "No matches, no id provided: the server creates the resource … One
//! > Match, no resource id provided OR (resource id provided and it matches the found resource):
//! > the server performs the update against the matching resource … One Match, resource id
//! > provided but does not match resource found: 400 Bad Request … Multiple matches: 412".
//! >
//! > "If the version id given in the If-Match header does not match, the server returns a 412
//! > Precondition Failed status code instead of updating the resource."
//! >
//! > Prefer: "return=minimal … return=representation … return=OperationOutcome".

mod common;

use common::{
    Client, Resp, Server, assert_same_content, enc, etag_version, is_fhir_id, parse_location,
};
use reqwest::Method;
use serde_json::{Value, json};

fn identifier_of(resource: &Value) -> String {
    format!(
        "{}|{}",
        resource["identifier"][0]["system"].as_str().unwrap(),
        resource["identifier"][0]["value"].as_str().unwrap()
    )
}

async fn count_matches(client: &Client, identifier: &str) -> usize {
    let bundle = client
        .get(&format!("Patient?identifier={}", enc(identifier)))
        .await
        .expect_status(200)
        .body;
    bundle["entry"].as_array().map_or(0, Vec::len)
}

#[track_caller]
fn assert_last_modified_matches(resp: &Resp, resource: &Value) {
    let last_modified = resp
        .header("last-modified")
        .unwrap_or_else(|| panic!("{} {}: no Last-Modified", resp.method, resp.url));
    let http = chrono::DateTime::parse_from_rfc2822(last_modified)
        .unwrap_or_else(|e| panic!("Last-Modified {last_modified:?}: {e}"));
    let meta =
        chrono::DateTime::parse_from_rfc3339(resource["meta"]["lastUpdated"].as_str().unwrap())
            .unwrap();
    assert_eq!(
        http.timestamp(),
        meta.timestamp(),
        "Last-Modified vs meta.lastUpdated"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_returns_201_with_location_etag_and_last_modified() {
    let server = Server::start();
    let client = server.client();
    let sent = common::patient("Create");

    let resp = client
        .request(Method::POST, "Patient")
        .header("Prefer", "return=representation")
        .json(&sent)
        .send()
        .await
        .expect_status(201);

    let location = resp.header("location").expect("Location header");
    let expected_prefix = format!("{}/Patient/", server.base);
    assert!(
        location.starts_with(&expected_prefix) && location.ends_with("/_history/1"),
        "Location {location:?} should be {expected_prefix}{{id}}/_history/1"
    );
    let loc = parse_location(location).unwrap();
    assert!(
        is_fhir_id(&loc.id),
        "server-assigned id {:?} is not a FHIR id",
        loc.id
    );
    assert_eq!(resp.etag(), Some("W/\"1\""));

    assert_eq!(resp.body["resourceType"], "Patient");
    assert_eq!(resp.body["id"], loc.id.as_str());
    assert_eq!(resp.body["meta"]["versionId"], "1");
    assert_last_modified_matches(&resp, &resp.body);
    let mut expected = sent.clone();
    expected["id"] = json!(loc.id);
    assert_same_content(&expected, &resp.body);
    assert_same_content(&expected, &client.read("Patient", &loc.id).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn create_ignores_client_id_and_meta_version() {
    let server = Server::start();
    let client = server.client();
    let mut sent = common::patient("IgnoreId");
    sent["id"] = json!("client-chosen");
    sent["meta"] = json!({ "versionId": "42", "lastUpdated": "2001-01-01T00:00:00Z" });

    let resp = client.post_json("Patient", &sent).await.expect_status(201);
    let id = resp.location_id().unwrap();
    assert_ne!(id, "client-chosen", "create must ignore the id in the body");
    let read = client.read("Patient", &id).await;
    assert_eq!(read["meta"]["versionId"], "1");
    assert_ne!(read["meta"]["lastUpdated"], "2001-01-01T00:00:00Z");
    client
        .get("Patient/client-chosen")
        .await
        .expect_outcome(404);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_assigned_ids_are_distinct() {
    let server = Server::start();
    let client = server.client();
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let resp = client
            .post_json("Patient", &common::patient("Distinct"))
            .await
            .expect_status(201);
        let id = resp.location_id().unwrap();
        assert!(is_fhir_id(&id), "{id:?}");
        assert!(ids.insert(id.clone()), "id {id} assigned twice");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn update_creates_a_new_version() {
    let server = Server::start();
    let client = server.client();
    let created = client.create(&common::patient("Before")).await;
    let id = created["id"].as_str().unwrap();

    let mut changed = created.clone();
    changed["name"] = json!([{ "family": "After" }]);
    changed.as_object_mut().unwrap().remove("birthDate");
    let resp = client
        .request(Method::PUT, &format!("Patient/{id}"))
        .header("Prefer", "return=representation")
        .json(&changed)
        .send()
        .await
        .expect_status(200);
    assert_eq!(resp.etag(), Some("W/\"2\""));
    assert_eq!(resp.body["meta"]["versionId"], "2");
    assert_last_modified_matches(&resp, &resp.body);

    let read = client.read("Patient", id).await;
    assert_same_content(&changed, &read);
    assert!(read.get("birthDate").is_none(), "removed element came back");
    let v1 = client
        .get(&format!("Patient/{id}/_history/1"))
        .await
        .expect_status(200);
    assert_eq!(v1.body["name"][0]["family"], "Before");
}

#[tokio::test(flavor = "multi_thread")]
async fn update_with_a_new_client_id_creates_with_201() {
    let server = Server::start();
    let client = server.client();
    let mut sent = common::patient("UpdateAsCreate");
    let id = common::unique("client");
    sent["id"] = json!(id);

    let resp = client
        .put_json(&format!("Patient/{id}"), &sent)
        .await
        .expect_status(201);
    let location = resp
        .header("location")
        .expect("Location on update-as-create");
    assert_eq!(location, format!("{}/Patient/{id}/_history/1", server.base));
    assert_eq!(resp.etag(), Some("W/\"1\""));
    assert_same_content(&sent, &client.read("Patient", &id).await);

    // The same PUT again is an update.
    let resp = client
        .put_json(&format!("Patient/{id}"), &sent)
        .await
        .expect_status(200);
    assert_eq!(resp.etag(), Some("W/\"2\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn if_match_guards_against_lost_updates() {
    let server = Server::start();
    let client = server.client();
    let created = client.create(&common::patient("Contention")).await;
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("Patient/{id}");

    let mut first = created.clone();
    first["name"][0]["family"] = json!("First");
    let resp = client
        .request(Method::PUT, &path)
        .header("If-Match", "W/\"1\"")
        .json(&first)
        .send()
        .await
        .expect_status(200);
    assert_eq!(resp.etag(), Some("W/\"2\""));

    // A second writer still holding version 1 loses.
    let before = client.snapshot().await;
    let mut second = created.clone();
    second["name"][0]["family"] = json!("Second");
    client
        .request(Method::PUT, &path)
        .header("If-Match", "W/\"1\"")
        .json(&second)
        .send()
        .await
        .expect_outcome(412);
    client.assert_unchanged(&before, "stale If-Match").await;
    let read = client.read("Patient", &id).await;
    assert_eq!(read["name"][0]["family"], "First");
    assert_eq!(read["meta"]["versionId"], "2");

    // The current version wins.
    client
        .request(Method::PUT, &path)
        .header("If-Match", "W/\"2\"")
        .json(&second)
        .send()
        .await
        .expect_status(200);
    assert_eq!(client.read("Patient", &id).await["meta"]["versionId"], "3");
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_create_with_if_none_exist() {
    let server = Server::start();
    let client = server.client();
    let sent = common::patient("Conditional");
    let identifier = identifier_of(&sent);
    let condition = format!("identifier={}", enc(&identifier));

    // No match: created.
    let resp = client
        .request(Method::POST, "Patient")
        .header("If-None-Exist", &condition)
        .json(&sent)
        .send()
        .await
        .expect_status(201);
    let id = resp.location_id().unwrap();

    // One match: 200, nothing new, and the response points at the existing resource.
    let before = client.snapshot().await;
    let resp = client
        .request(Method::POST, "Patient")
        .header("If-None-Exist", &condition)
        .header("Prefer", "return=representation")
        .json(&sent)
        .send()
        .await
        .expect_status(200);
    client
        .assert_unchanged(&before, "conditional create with one match")
        .await;
    if let Some(loc_id) = resp.location_id() {
        assert_eq!(loc_id, id, "Location of the matched resource");
    }
    if resp.body["resourceType"] == "Patient" {
        assert_eq!(resp.body["id"], id.as_str());
    }
    assert_eq!(count_matches(&client, &identifier).await, 1);

    // Two matches: 412, nothing written.
    let mut twin = sent.clone();
    twin["id"] = json!(common::unique("twin"));
    client.upsert(&twin).await;
    let before = client.snapshot().await;
    client
        .request(Method::POST, "Patient")
        .header("If-None-Exist", &condition)
        .json(&sent)
        .send()
        .await
        .expect_outcome(412);
    client
        .assert_unchanged(&before, "conditional create with two matches")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_update_by_identifier() {
    let server = Server::start();
    let client = server.client();
    let sent = common::patient("CondUpdate");
    let identifier = identifier_of(&sent);
    let path = format!("Patient?identifier={}", enc(&identifier));

    // No match, no id: created.
    let resp = client.put_json(&path, &sent).await.expect_status(201);
    let id = resp
        .location_id()
        .expect("Location on conditional create-by-update");
    assert_eq!(count_matches(&client, &identifier).await, 1);

    // One match: updates that resource.
    let mut changed = sent.clone();
    changed["active"] = json!(false);
    let resp = client.put_json(&path, &changed).await.expect_status(200);
    assert_eq!(resp.etag(), Some("W/\"2\""));
    let read = client.read("Patient", &id).await;
    assert_eq!(read["active"], false);
    assert_eq!(read["meta"]["versionId"], "2");

    // One match with the matching id in the body: also an update.
    changed["id"] = json!(id);
    changed["active"] = json!(true);
    client.put_json(&path, &changed).await.expect_status(200);
    assert_eq!(client.read("Patient", &id).await["meta"]["versionId"], "3");

    // One match but a different id in the body: 400.
    let before = client.snapshot().await;
    changed["id"] = json!("some-other-id");
    client.put_json(&path, &changed).await.expect_outcome(400);
    client
        .assert_unchanged(&before, "conditional update with a mismatching id")
        .await;

    // Multiple matches: 412.
    let mut twin = sent.clone();
    twin["id"] = json!(common::unique("twin"));
    client.upsert(&twin).await;
    let before = client.snapshot().await;
    let mut body = sent.clone();
    body["active"] = json!(false);
    client.put_json(&path, &body).await.expect_outcome(412);
    client
        .assert_unchanged(&before, "conditional update with two matches")
        .await;
}

async fn send_with_prefer(
    client: &Client,
    method: Method,
    path: &str,
    prefer: &str,
    body: &Value,
) -> Resp {
    client
        .request(method, path)
        .header("Prefer", prefer)
        .json(body)
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn prefer_return_variants_on_create_and_update() {
    let server = Server::start();
    let client = server.client();

    // return=minimal: no body, headers still there.
    let resp = send_with_prefer(
        &client,
        Method::POST,
        "Patient",
        "return=minimal",
        &common::patient("Min"),
    )
    .await
    .expect_status(201);
    assert!(
        resp.text.trim().is_empty(),
        "return=minimal sent a body: {}",
        resp.text
    );
    assert_eq!(resp.etag(), Some("W/\"1\""));
    let id = resp.location_id().expect("Location with return=minimal");

    // return=representation: the stored resource.
    let resp = send_with_prefer(
        &client,
        Method::POST,
        "Patient",
        "return=representation",
        &common::patient("Rep"),
    )
    .await
    .expect_status(201);
    assert_eq!(resp.body["resourceType"], "Patient");
    assert_eq!(resp.body["id"], resp.location_id().unwrap().as_str());
    assert_eq!(resp.body["meta"]["versionId"], "1");

    // return=OperationOutcome: an OperationOutcome about the interaction.
    let resp = send_with_prefer(
        &client,
        Method::POST,
        "Patient",
        "return=OperationOutcome",
        &common::patient("OO"),
    )
    .await
    .expect_status(201);
    assert_eq!(
        resp.body["resourceType"], "OperationOutcome",
        "{}",
        resp.text
    );
    assert!(resp.location_id().is_some());

    // The same three on update.
    let mut current = client.read("Patient", &id).await;
    current["active"] = json!(false);
    let path = format!("Patient/{id}");
    let resp = send_with_prefer(&client, Method::PUT, &path, "return=minimal", &current)
        .await
        .expect_status(200);
    assert!(
        resp.text.trim().is_empty(),
        "return=minimal sent a body: {}",
        resp.text
    );
    assert_eq!(resp.etag(), Some("W/\"2\""));

    let resp = send_with_prefer(
        &client,
        Method::PUT,
        &path,
        "return=representation",
        &current,
    )
    .await
    .expect_status(200);
    assert_eq!(resp.body["id"], id.as_str());
    assert_eq!(resp.body["meta"]["versionId"], "3");
    assert_eq!(resp.etag().map(etag_version), Some("3"));

    let resp = send_with_prefer(
        &client,
        Method::PUT,
        &path,
        "return=OperationOutcome",
        &current,
    )
    .await
    .expect_status(200);
    assert_eq!(
        resp.body["resourceType"], "OperationOutcome",
        "{}",
        resp.text
    );
    assert_eq!(resp.etag(), Some("W/\"4\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn content_type_with_charset_is_accepted() {
    let server = Server::start();
    let client = server.client();
    let body = common::to_bytes(&common::patient("Charset"));
    client
        .request(Method::POST, "Patient")
        .body("application/fhir+json; charset=utf-8", body)
        .send()
        .await
        .expect_status(201);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_updates_make_consecutive_versions() {
    // Ten writers racing on one resource: every acknowledged update gets its own version
    // number, with no gaps and no duplicates.
    let server = Server::start();
    let client = server.client();
    let created = client.create(&common::patient("Race")).await;
    let id = created["id"].as_str().unwrap().to_string();

    let mut tasks = Vec::new();
    for i in 0..10 {
        let client = client.clone();
        let mut body = created.clone();
        body["name"][0]["given"] = json!([format!("Writer{i}")]);
        tasks.push(tokio::spawn(async move {
            let resp = client
                .put_json(&format!("Patient/{}", body["id"].as_str().unwrap()), &body)
                .await;
            let resp = resp.expect_status(200);
            etag_version(resp.etag().expect("ETag")).to_string()
        }));
    }
    let mut versions: Vec<u32> = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap().parse().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (2..=11).collect::<Vec<u32>>());
    assert_eq!(client.read("Patient", &id).await["meta"]["versionId"], "11");
}
