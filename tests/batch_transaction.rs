//! batch and transaction (FHIR R4 http.html §3.1.0.11 batch/transaction, §3.1.0.11.1–.5).
//!
//! > "For a batch, … each entry is treated as if it were an individual interaction … there SHALL
//! > be no interdependencies between the different entries … The outcome of processing a batch
//! > is … each entry will contain the outcome of processing the entry, in the same order."
//! >
//! > "For a transaction, servers SHALL either accept all actions and return a 200 OK, along with
//! > a response bundle, or reject all resources and return an HTTP 400 or 500 type response …
//! > A transaction SHALL be processed in this order: 1. Process any DELETE interactions
//! > 2. Process any POST interactions 3. Process any PUT or PATCH interactions 4. Process any GET
//! > or HEAD interactions … If any resource identities (including resolved identities from
//! > conditional update/delete) overlap in steps 1–3, then the transaction SHALL fail."
//! >
//! > "When processing the create, the server … SHALL update any references to the fullUrl
//! > (`urn:uuid:…`) to the new location of the resource."
//! >
//! > Conditional references: "When constructing the bundle, the client may … use a search URI
//! > in a reference (`Patient?identifier=…`) … the server … resolves it … If there are no
//! > matches, or multiple matches, the transaction fails."
//!
//! Issue 2 adds: a failing entry rolls back everything and the response is that entry's
//! OperationOutcome with its status; responses come back in request order.

mod common;

use common::{Client, Resp, Server, enc, parse_location};
use reqwest::Method;
use serde_json::{Value, json};

fn bundle(ty: &str, entries: Vec<Value>) -> Value {
    let mut b = json!({ "resourceType": "Bundle", "type": ty });
    if !entries.is_empty() {
        // FHIR JSON has no empty arrays.
        b["entry"] = json!(entries);
    }
    b
}

fn post(full_url: &str, resource: Value) -> Value {
    let ty = resource["resourceType"].as_str().unwrap().to_string();
    json!({ "fullUrl": full_url, "resource": resource, "request": { "method": "POST", "url": ty } })
}

fn put(resource: Value) -> Value {
    let url = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    );
    json!({ "resource": resource, "request": { "method": "PUT", "url": url } })
}

fn get(url: &str) -> Value {
    json!({ "request": { "method": "GET", "url": url } })
}

fn delete(url: &str) -> Value {
    json!({ "request": { "method": "DELETE", "url": url } })
}

fn urn() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

/// The numeric status of a response entry (`"201 Created"` → 201).
fn entry_status(entry: &Value) -> u16 {
    let status = entry["response"]["status"]
        .as_str()
        .unwrap_or_else(|| panic!("entry without response.status: {entry}"));
    status[..3]
        .parse()
        .unwrap_or_else(|_| panic!("response.status {status:?}"))
}

fn entry_id(entry: &Value) -> String {
    let location = entry["response"]["location"]
        .as_str()
        .unwrap_or_else(|| panic!("entry without response.location: {entry}"));
    parse_location(location).unwrap().id
}

async fn submit(client: &Client, body: &Value) -> Resp {
    client.request(Method::POST, "").json(body).send().await
}

/// Submits a transaction expecting success; returns the response entries.
async fn commit(client: &Client, body: &Value) -> Vec<Value> {
    let resp = submit(client, body).await.expect_status(200);
    assert_eq!(resp.body["type"], "transaction-response", "{}", resp.text);
    let entries = resp.body["entry"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        entries.len(),
        body["entry"].as_array().map_or(0, Vec::len),
        "one response entry per request entry"
    );
    entries
}

/// Submits a transaction that must fail as a whole and change nothing.
async fn must_fail(client: &Client, what: &str, body: &Value, statuses: &[u16]) -> Resp {
    let before = client.snapshot().await;
    let resp = submit(client, body).await;
    assert!(
        statuses.contains(&resp.status.as_u16()),
        "{what}: expected one of {statuses:?}, got {}\n{}",
        resp.status,
        resp.text
    );
    resp.assert_operation_outcome();
    client.assert_unchanged(&before, what).await;
    resp
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_resolves_urn_uuids_and_rewrites_references() {
    let server = Server::start();
    let client = server.client();
    let (patient_urn, obs_urn, org_urn) = (urn(), urn(), urn());
    let fixed_id = common::unique("fixed");

    let tx = bundle(
        "transaction",
        vec![
            post(&patient_urn, common::patient("Urn")),
            // References an Organization that comes later in the Bundle.
            post(
                &obs_urn,
                json!({
                    "resourceType": "Observation",
                    "status": "final",
                    "code": { "text": "Weight" },
                    "subject": { "reference": patient_urn, "display": "the patient" },
                    "performer": [{ "reference": org_urn }],
                    "extension": [{ "url": "http://example.org/ext/about", "valueReference": { "reference": patient_urn } }]
                }),
            ),
            post(
                &org_urn,
                json!({ "resourceType": "Organization", "name": "Clinic" }),
            ),
            put(json!({
                "resourceType": "Patient",
                "id": fixed_id,
                "generalPractitioner": [{ "reference": org_urn }],
                "link": [{ "other": { "reference": patient_urn }, "type": "seealso" }]
            })),
        ],
    );
    let entries = commit(&client, &tx).await;
    for (i, entry) in entries.iter().enumerate().take(3) {
        assert_eq!(entry_status(entry), 201, "entry {i}: {entry}");
    }
    assert_eq!(entry_status(&entries[3]), 201, "PUT creating {fixed_id}");
    let patient_id = entry_id(&entries[0]);
    let obs_id = entry_id(&entries[1]);
    let org_id = entry_id(&entries[2]);
    assert_eq!(entry_id(&entries[3]), fixed_id);

    let obs = client
        .get(&format!("Observation/{obs_id}"))
        .await
        .expect_status(200);
    assert!(
        !obs.text.contains("urn:uuid"),
        "urn:uuid left in {}",
        obs.text
    );
    assert_eq!(
        obs.body["subject"]["reference"],
        format!("Patient/{patient_id}")
    );
    assert_eq!(obs.body["subject"]["display"], "the patient");
    assert_eq!(
        obs.body["performer"][0]["reference"],
        format!("Organization/{org_id}")
    );
    assert_eq!(
        obs.body["extension"][0]["valueReference"]["reference"],
        format!("Patient/{patient_id}")
    );

    let fixed = client.read("Patient", &fixed_id).await;
    assert_eq!(
        fixed["generalPractitioner"][0]["reference"],
        format!("Organization/{org_id}")
    );
    assert_eq!(
        fixed["link"][0]["other"]["reference"],
        format!("Patient/{patient_id}")
    );
    client.read("Patient", &patient_id).await;
    client.read("Organization", &org_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_entry_rolls_back_the_whole_transaction() {
    let server = Server::start();
    let client = server.client();
    let existing = client.create(&common::patient("Existing")).await;
    let existing_path = format!("Patient/{}", existing["id"].as_str().unwrap());

    let mut bad = common::patient("Bad");
    bad["birthDate"] = json!("2020-02-30");
    let resp = must_fail(
        &client,
        "invalid resource in the last entry",
        &bundle(
            "transaction",
            vec![
                post(&urn(), common::patient("Good1")),
                delete(&existing_path),
                post(&urn(), common::patient("Good2")),
                post(&urn(), bad),
            ],
        ),
        &[400],
    )
    .await;
    assert!(
        resp.outcome_text().contains("birthdate"),
        "outcome should name birthDate: {}",
        resp.text
    );
    client
        .read("Patient", existing["id"].as_str().unwrap())
        .await;

    // A stale ifMatch: 412.
    let mut stale = existing.clone();
    stale["active"] = json!(false);
    let mut entry = put(stale);
    entry["request"]["ifMatch"] = json!("W/\"7\"");
    must_fail(
        &client,
        "stale ifMatch",
        &bundle(
            "transaction",
            vec![post(&urn(), common::patient("Good")), entry],
        ),
        &[412],
    )
    .await;

    // A GET of a missing resource: 404.
    must_fail(
        &client,
        "GET of a missing resource",
        &bundle(
            "transaction",
            vec![
                post(&urn(), common::patient("Good")),
                get("Patient/missing"),
            ],
        ),
        &[404],
    )
    .await;

    // An unknown type: 404.
    must_fail(
        &client,
        "POST of an unknown type",
        &bundle(
            "transaction",
            vec![
                post(&urn(), common::patient("Good")),
                json!({ "fullUrl": urn(), "resource": { "resourceType": "Martian" }, "request": { "method": "POST", "url": "Martian" } }),
            ],
        ),
        &[400, 404],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn large_transaction_commits_or_rolls_back_as_one() {
    let server = Server::start();
    let client = server.client();
    let mut entries: Vec<Value> = (0..200)
        .map(|i| post(&urn(), common::patient(&format!("Bulk{i}"))))
        .collect();
    let ok = commit(&client, &bundle("transaction", entries.clone())).await;
    assert!(ok.iter().all(|e| entry_status(e) == 201));
    let ids: std::collections::BTreeSet<String> = ok.iter().map(entry_id).collect();
    assert_eq!(ids.len(), 200);

    let mut bad = common::patient("Last");
    bad["gender"] = json!(7);
    entries.push(post(&urn(), bad));
    must_fail(
        &client,
        "201st entry invalid",
        &bundle("transaction", entries),
        &[400],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_processes_delete_post_put_get_but_answers_in_request_order() {
    let server = Server::start();
    let client = server.client();
    let x = client.create(&common::patient("X")).await;
    let y = client.create(&common::patient("Y")).await;
    let x_path = format!("Patient/{}", x["id"].as_str().unwrap());
    let y_path = format!("Patient/{}", y["id"].as_str().unwrap());

    let mut x2 = x.clone();
    x2["name"][0]["family"] = json!("Updated");
    let new_urn = urn();
    let tx = bundle(
        "transaction",
        vec![
            get(&x_path),
            put(x2),
            post(&new_urn, common::patient("New")),
            delete(&y_path),
        ],
    );
    let entries = commit(&client, &tx).await;

    // Entry 0 is the GET, answered first but processed last: it sees the PUT.
    assert_eq!(entry_status(&entries[0]), 200, "{}", entries[0]);
    assert_eq!(
        entries[0]["resource"]["name"][0]["family"], "Updated",
        "GET ran before the PUT"
    );
    assert_eq!(entries[0]["resource"]["meta"]["versionId"], "2");
    assert_eq!(entry_status(&entries[1]), 200, "PUT: {}", entries[1]);
    assert_eq!(entry_status(&entries[2]), 201, "POST: {}", entries[2]);
    assert!(
        matches!(entry_status(&entries[3]), 200 | 204),
        "DELETE: {}",
        entries[3]
    );

    client.get(&y_path).await.expect_outcome(410);
    assert_eq!(
        client.read("Patient", x["id"].as_str().unwrap()).await["name"][0]["family"],
        "Updated"
    );
    client.read("Patient", &entry_id(&entries[2])).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_deletes_before_it_creates() {
    // The conditional create comes first in the Bundle but runs after the DELETE, so it finds
    // no match and creates.
    let server = Server::start();
    let client = server.client();
    let old = client.create(&common::patient("Old")).await;
    let identifier = format!(
        "urn:fp-test|{}",
        old["identifier"][0]["value"].as_str().unwrap()
    );

    let mut create = post(&urn(), {
        let mut p = old.clone();
        p.as_object_mut().unwrap().remove("id");
        p.as_object_mut().unwrap().remove("meta");
        p
    });
    create["request"]["ifNoneExist"] = json!(format!("identifier={}", enc(&identifier)));
    let entries = commit(
        &client,
        &bundle(
            "transaction",
            vec![
                create,
                delete(&format!("Patient/{}", old["id"].as_str().unwrap())),
            ],
        ),
    )
    .await;
    assert_eq!(
        entry_status(&entries[0]),
        201,
        "conditional create after the delete: {}",
        entries[0]
    );
    assert_ne!(entry_id(&entries[0]), old["id"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_create_in_a_transaction_resolves_its_urn_to_the_match() {
    let server = Server::start();
    let client = server.client();
    let existing = client.create(&common::patient("Matched")).await;
    let identifier = format!(
        "urn:fp-test|{}",
        existing["identifier"][0]["value"].as_str().unwrap()
    );
    let patient_urn = urn();

    let mut create = post(&patient_urn, common::patient("Ignored"));
    create["request"]["ifNoneExist"] = json!(format!("identifier={}", enc(&identifier)));
    let obs = post(
        &urn(),
        json!({ "resourceType": "Observation", "status": "final", "code": { "text": "x" },
                "subject": { "reference": patient_urn } }),
    );
    let entries = commit(&client, &bundle("transaction", vec![create, obs])).await;
    assert_eq!(
        entry_status(&entries[0]),
        200,
        "conditional create with a match: {}",
        entries[0]
    );
    let obs = client.read("Observation", &entry_id(&entries[1])).await;
    assert_eq!(
        obs["subject"]["reference"],
        format!("Patient/{}", existing["id"].as_str().unwrap()),
        "reference to the conditional create's fullUrl must point at the matched resource"
    );
    // No second Patient was created.
    let search = client
        .get(&format!("Patient?identifier={}", enc(&identifier)))
        .await
        .expect_status(200)
        .body;
    assert_eq!(search["entry"].as_array().map_or(0, Vec::len), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_references_resolve_to_exactly_one_match() {
    let server = Server::start();
    let client = server.client();
    let target = client.create(&common::patient("Target")).await;
    let identifier = format!(
        "urn:fp-test|{}",
        target["identifier"][0]["value"].as_str().unwrap()
    );
    let observation = |reference: String| {
        post(
            &urn(),
            json!({ "resourceType": "Observation", "status": "final", "code": { "text": "x" },
                    "subject": { "reference": reference } }),
        )
    };

    let entries = commit(
        &client,
        &bundle(
            "transaction",
            vec![observation(format!("Patient?identifier={identifier}"))],
        ),
    )
    .await;
    let obs = client.read("Observation", &entry_id(&entries[0])).await;
    assert_eq!(
        obs["subject"]["reference"],
        format!("Patient/{}", target["id"].as_str().unwrap())
    );

    // No match.
    must_fail(
        &client,
        "conditional reference with no match",
        &bundle(
            "transaction",
            vec![
                post(&urn(), common::patient("Along")),
                observation("Patient?identifier=urn:fp-test|nobody".into()),
            ],
        ),
        &[400, 404, 409, 412, 422],
    )
    .await;

    // Two matches.
    let mut twin = target.clone();
    twin["id"] = json!(common::unique("twin"));
    client.upsert(&twin).await;
    must_fail(
        &client,
        "conditional reference with two matches",
        &bundle(
            "transaction",
            vec![observation(format!("Patient?identifier={identifier}"))],
        ),
        &[400, 409, 412, 422],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_identities_fail_the_transaction() {
    let server = Server::start();
    let client = server.client();
    let x = client.create(&common::patient("Twice")).await;
    let mut a = x.clone();
    a["active"] = json!(false);
    let mut b = x.clone();
    b["gender"] = json!("male");
    must_fail(
        &client,
        "two PUTs to the same resource",
        &bundle("transaction", vec![put(a), put(b)]),
        &[400, 409, 422],
    )
    .await;
    must_fail(
        &client,
        "DELETE and PUT of the same resource",
        &bundle(
            "transaction",
            vec![
                delete(&format!("Patient/{}", x["id"].as_str().unwrap())),
                put(x.clone()),
            ],
        ),
        &[400, 409, 422],
    )
    .await;
}

/// Standard base64 (RFC 4648) with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn json_patch_inside_a_transaction() {
    let server = Server::start();
    let client = server.client();
    let x = client.create(&common::patient("ToPatch")).await;
    let path = format!("Patient/{}", x["id"].as_str().unwrap());
    let patch = json!([{ "op": "replace", "path": "/name/0/family", "value": "PatchedInTx" }]);
    let entry = json!({
        "resource": { "resourceType": "Binary", "contentType": "application/json-patch+json",
                      "data": base64(&common::to_bytes(&patch)) },
        "request": { "method": "PATCH", "url": path }
    });
    let entries = commit(&client, &bundle("transaction", vec![entry, get(&path)])).await;
    assert_eq!(entry_status(&entries[0]), 200, "{}", entries[0]);
    assert_eq!(
        entries[1]["resource"]["name"][0]["family"], "PatchedInTx",
        "GET runs after PATCH"
    );
    assert_eq!(
        client.read("Patient", x["id"].as_str().unwrap()).await["meta"]["versionId"],
        "2"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_entries_succeed_or_fail_independently() {
    let server = Server::start();
    let client = server.client();
    let existing = client.create(&common::patient("BatchExisting")).await;
    let existing_path = format!("Patient/{}", existing["id"].as_str().unwrap());
    let new_id = common::unique("batch");
    let mut bad = common::patient("BatchBad");
    bad["unknownElement"] = json!(true);

    let body = bundle(
        "batch",
        vec![
            post(&urn(), common::patient("BatchGood")),
            post(&urn(), bad),
            get("Patient/does-not-exist"),
            put({
                let mut p = common::patient("BatchPut");
                p["id"] = json!(new_id);
                p
            }),
            delete(&existing_path),
            get(&format!("Patient?_id={new_id}")),
        ],
    );
    let resp = submit(&client, &body).await.expect_status(200);
    assert_eq!(resp.body["type"], "batch-response");
    let entries = resp.body["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 6);
    assert_eq!(entry_status(&entries[0]), 201, "{}", entries[0]);
    assert_eq!(entry_status(&entries[1]), 400, "{}", entries[1]);
    assert_eq!(
        entries[1]["response"]["outcome"]["resourceType"], "OperationOutcome",
        "{}",
        entries[1]
    );
    assert_eq!(entry_status(&entries[2]), 404, "{}", entries[2]);
    assert_eq!(entry_status(&entries[3]), 201, "{}", entries[3]);
    assert!(
        matches!(entry_status(&entries[4]), 200 | 204),
        "{}",
        entries[4]
    );
    assert_eq!(entry_status(&entries[5]), 200, "{}", entries[5]);
    // Batch entries run in order: the search sees the PUT before it.
    assert_eq!(entries[5]["resource"]["resourceType"], "Bundle");
    assert_eq!(entries[5]["resource"]["type"], "searchset");
    assert_eq!(
        entries[5]["resource"]["entry"]
            .as_array()
            .map_or(0, Vec::len),
        1
    );

    client.read("Patient", &entry_id(&entries[0])).await;
    client.read("Patient", &new_id).await;
    client.get(&existing_path).await.expect_outcome(410);
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_transaction_and_batch_succeed() {
    let server = Server::start();
    let client = server.client();
    let before = client.snapshot().await;
    for ty in ["transaction", "batch"] {
        let resp = submit(&client, &bundle(ty, vec![]))
            .await
            .expect_status(200);
        assert_eq!(resp.body["type"], format!("{ty}-response"));
    }
    client.assert_unchanged(&before, "empty Bundles").await;
}
