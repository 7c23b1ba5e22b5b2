//! delete, conditional delete and history (FHIR R4 http.html §3.1.0.7 delete, §3.1.0.7.1
//! conditional delete, §3.1.0.9 history).
//!
//! > delete: "Upon successful deletion, or if the resource does not exist at all, the server
//! > should return either a 200 OK if the response contains a payload, or a 204 No Content with
//! > no response payload … Performing this interaction on a resource that is already deleted has
//! > no effect … A delete interaction means that subsequent non-version specific reads of a
//! > resource return a 410 HTTP status code … resources that have been deleted may be 'brought
//! > back to life' by a subsequent update interaction … Since deleted resources may be brought
//! > back to life, servers MAY include a ETag on the delete response."
//! >
//! > history: "The history interaction retrieves the history of either a particular resource, all
//! > resources of a given type, or all resources supported by the system … `_count`: the maximum
//! > number of search results on a page … `_since`: Only include resource versions that were
//! > created at or after the given instant in time … The return content is a Bundle with type set
//! > to history containing the specified version history, sorted with oldest versions last, and
//! > including deleted resources. Each entry SHALL minimally contain at least one of: a resource
//! > which holds the resource as it is at the conclusion of the interaction, or a request with
//! > entry.request.method … the request.method of a deleted entry is DELETE."

mod common;

use std::collections::BTreeSet;

use common::{Client, Server, enc, history_key, next_link};
use reqwest::Method;
use serde_json::{Value, json};

fn assert_history_bundle(bundle: &Value) {
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "history", "history Bundle.type");
    for entry in bundle["entry"].as_array().into_iter().flatten() {
        let method = entry["request"]["method"].as_str();
        assert!(
            matches!(method, Some("POST" | "PUT" | "DELETE" | "PATCH")),
            "history entry without request.method: {entry}"
        );
        assert!(
            entry["request"]["url"].is_string(),
            "history entry without request.url: {entry}"
        );
        assert!(
            entry["response"]["status"].is_string(),
            "history entry without response.status: {entry}"
        );
        if method == Some("DELETE") {
            assert!(
                entry.get("resource").is_none(),
                "deleted entry carries a resource: {entry}"
            );
        } else {
            assert!(
                entry["resource"].is_object(),
                "entry without resource: {entry}"
            );
        }
    }
}

fn entries(bundle: &Value) -> Vec<Value> {
    bundle["entry"].as_array().cloned().unwrap_or_default()
}

fn version_of(entry: &Value) -> u64 {
    let vid = entry["resource"]["meta"]["versionId"]
        .as_str()
        .or_else(|| entry["response"]["etag"].as_str().map(common::etag_version))
        .unwrap_or_else(|| panic!("no version in history entry {entry}"));
    vid.parse().unwrap_or_else(|_| panic!("versionId {vid:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_then_read_is_410_and_old_versions_remain() {
    let server = Server::start();
    let client = server.client();
    let created = client.create(&common::patient("Deleted")).await;
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("Patient/{id}");

    let resp = client.delete(&path).await;
    match resp.status.as_u16() {
        204 => assert!(
            resp.text.trim().is_empty(),
            "204 with a body: {}",
            resp.text
        ),
        200 => assert_eq!(
            resp.body["resourceType"], "OperationOutcome",
            "{}",
            resp.text
        ),
        other => panic!(
            "DELETE {path}: expected 200 or 204, got {other}: {}",
            resp.text
        ),
    }

    client.get(&path).await.expect_outcome(410);
    let v1 = client
        .get(&format!("{path}/_history/1"))
        .await
        .expect_status(200);
    assert_eq!(v1.body["name"][0]["family"], "Deleted");

    // The deletion is version 2 in the history, newest first.
    let history = client
        .get(&format!("{path}/_history"))
        .await
        .expect_status(200)
        .body;
    assert_history_bundle(&history);
    let list = entries(&history);
    assert_eq!(list.len(), 2, "history after create+delete: {history}");
    assert_eq!(list[0]["request"]["method"], "DELETE");
    assert_eq!(version_of(&list[0]), 2);
    assert_eq!(version_of(&list[1]), 1);

    // The deleted version itself is gone.
    let deleted_version = client.get(&format!("{path}/_history/2")).await;
    assert_eq!(
        deleted_version.status, 410,
        "vread of the delete version: {}",
        deleted_version.text
    );

    // Deleting again changes nothing.
    let before = client.snapshot().await;
    let again = client.delete(&path).await;
    assert!(
        again.status == 200 || again.status == 204,
        "second DELETE: {} {}",
        again.status,
        again.text
    );
    client
        .assert_unchanged(&before, "deleting a deleted resource")
        .await;

    // An update brings it back to life as version 3.
    let resp = client.put_json(&path, &created).await;
    assert!(
        resp.status == 200 || resp.status == 201,
        "revive: {} {}",
        resp.status,
        resp.text
    );
    assert_eq!(resp.etag(), Some("W/\"3\""));
    assert_eq!(client.read("Patient", &id).await["meta"]["versionId"], "3");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_of_unknown_resource_writes_nothing() {
    let server = Server::start();
    let client = server.client();
    let before = client.snapshot().await;
    let resp = client.delete("Patient/never-existed").await;
    assert!(
        matches!(resp.status.as_u16(), 200 | 204 | 404),
        "DELETE of an unknown id: {} {}",
        resp.status,
        resp.text
    );
    client
        .assert_unchanged(&before, "delete of an unknown id")
        .await;
    client
        .get("Patient/never-existed")
        .await
        .expect_outcome(404);
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_delete_by_identifier() {
    let server = Server::start();
    let client = server.client();
    let target = client.create(&common::patient("CondDelete")).await;
    let bystander = client.create(&common::patient("Bystander")).await;
    let identifier = format!(
        "urn:fp-test|{}",
        target["identifier"][0]["value"].as_str().unwrap()
    );

    let resp = client
        .delete(&format!("Patient?identifier={}", enc(&identifier)))
        .await;
    assert!(
        resp.status == 200 || resp.status == 204,
        "{} {}",
        resp.status,
        resp.text
    );
    client
        .get(&format!("Patient/{}", target["id"].as_str().unwrap()))
        .await
        .expect_outcome(410);
    client
        .read("Patient", bystander["id"].as_str().unwrap())
        .await;

    // Several matches: 412 and nothing deleted.
    let shared = common::unique("shared");
    for _ in 0..2 {
        let mut p = common::patient("Twin");
        p["identifier"][0]["value"] = json!(shared);
        client.create(&p).await;
    }
    let before = client.snapshot().await;
    client
        .delete(&format!(
            "Patient?identifier={}",
            enc(&format!("urn:fp-test|{shared}"))
        ))
        .await
        .expect_outcome(412);
    client
        .assert_unchanged(&before, "conditional delete with two matches")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn history_at_instance_type_and_system_level() {
    let server = Server::start();
    let client = server.client();

    let mut a = client.create(&common::patient("A")).await;
    let b = client.create(&common::patient("B")).await;
    let obs = client
        .create(
            &json!({"resourceType": "Observation", "status": "final", "code": {"text": "Height"}}),
        )
        .await;
    a["active"] = json!(false);
    client.upsert(&a).await;
    client
        .delete(&format!("Patient/{}", b["id"].as_str().unwrap()))
        .await;

    let a_id = a["id"].as_str().unwrap();
    let instance = client
        .get(&format!("Patient/{a_id}/_history"))
        .await
        .expect_status(200)
        .body;
    assert_history_bundle(&instance);
    let versions: Vec<u64> = entries(&instance).iter().map(version_of).collect();
    assert_eq!(versions, vec![2, 1], "instance history, newest first");
    assert_eq!(entries(&instance)[0]["resource"]["active"], false);

    let patients = client.get("Patient/_history").await.expect_status(200).body;
    assert_history_bundle(&patients);
    let keys: Vec<String> = entries(&patients).iter().map(history_key).collect();
    assert_eq!(
        keys.len(),
        4,
        "Patient history: 2 versions of A, create+delete of B: {keys:?}"
    );
    assert!(
        entries(&patients).iter().all(|e| e["request"]["url"]
            .as_str()
            .unwrap_or("")
            .contains("Patient")),
        "type history contains another type: {keys:?}"
    );
    assert_eq!(
        entries(&patients)[0]["request"]["method"],
        "DELETE",
        "newest first"
    );

    let system = client.get("_history").await.expect_status(200).body;
    assert_history_bundle(&system);
    assert_eq!(entries(&system).len(), 5, "system history: {system}");
    let obs_id = obs["id"].as_str().unwrap();
    assert!(
        entries(&system).iter().any(
            |e| e["resource"]["resourceType"] == "Observation" && e["resource"]["id"] == obs_id
        ),
        "system history lacks the Observation"
    );
    // Sorted newest first throughout.
    let times: Vec<String> = entries(&system)
        .iter()
        .filter_map(|e| {
            e["resource"]["meta"]["lastUpdated"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let parsed: Vec<_> = times
        .iter()
        .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap())
        .collect();
    assert!(
        parsed.windows(2).all(|w| w[0] >= w[1]),
        "system history not newest first: {times:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_since_includes_versions_at_or_after_the_instant() {
    let server = Server::start();
    let client = server.client();
    let early = client.create(&common::patient("Early")).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let late = client.create(&common::patient("Late")).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let later = client.create(&common::patient("Later")).await;

    let since = late["meta"]["lastUpdated"].as_str().unwrap();
    for path in ["_history", "Patient/_history"] {
        let bundle = client
            .get(&format!("{path}?_since={}", enc(since)))
            .await
            .expect_status(200)
            .body;
        assert_history_bundle(&bundle);
        let ids: BTreeSet<&str> = bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["resource"]["id"].as_str())
            .collect();
        let expected: BTreeSet<&str> =
            [late["id"].as_str().unwrap(), later["id"].as_str().unwrap()].into();
        assert_eq!(
            ids, expected,
            "{path}?_since={since} (early is {})",
            early["id"]
        );
    }

    // Instance level: only the versions since.
    let mut a = early.clone();
    a["active"] = json!(false);
    let v2 = client
        .request(
            Method::PUT,
            &format!("Patient/{}", a["id"].as_str().unwrap()),
        )
        .header("Prefer", "return=representation")
        .json(&a)
        .send()
        .await
        .expect_status(200)
        .body;
    let bundle = client
        .get(&format!(
            "Patient/{}/_history?_since={}",
            a["id"].as_str().unwrap(),
            enc(v2["meta"]["lastUpdated"].as_str().unwrap())
        ))
        .await
        .expect_status(200)
        .body;
    let versions: Vec<u64> = entries(&bundle).iter().map(version_of).collect();
    assert_eq!(versions, vec![2]);

    // A _since in the future: nothing.
    let future = client
        .get(&format!("_history?_since={}", enc("2999-01-01T00:00:00Z")))
        .await
        .expect_status(200)
        .body;
    assert!(entries(&future).is_empty(), "{future}");
}

/// Walks the `next` links from `first`, asserting every page is a history Bundle of at most
/// `count` entries; returns the entries' keys in order.
async fn page_keys(client: &Client, first: &str, count: usize) -> Vec<String> {
    let mut keys = Vec::new();
    let mut url = client.url(first);
    for _ in 0..1000 {
        let page = client.get(&url).await.expect_status(200).body;
        assert_history_bundle(&page);
        let list = entries(&page);
        assert!(
            list.len() <= count,
            "page of {} entries with _count={count}",
            list.len()
        );
        keys.extend(list.iter().map(history_key));
        match next_link(&page) {
            Some(next) => {
                assert!(
                    next.starts_with("http://") || next.starts_with("https://"),
                    "next link {next:?} is not absolute"
                );
                assert!(!list.is_empty(), "an empty page still links to a next one");
                url = next;
            }
            None => return keys,
        }
    }
    panic!("paging did not end");
}

#[tokio::test(flavor = "multi_thread")]
async fn history_paging_with_count_has_no_gaps_or_duplicates() {
    let server = Server::start();
    let client = server.client();
    let mut expected = BTreeSet::new();
    for i in 0..9 {
        let mut p = client.create(&common::patient(&format!("Page{i}"))).await;
        expected.insert(format!(
            "Patient/{}/_history/1 POST",
            p["id"].as_str().unwrap()
        ));
        if i % 3 == 0 {
            p["active"] = json!(false);
            client.upsert(&p).await;
            expected.insert(format!(
                "Patient/{}/_history/2 PUT",
                p["id"].as_str().unwrap()
            ));
        }
    }
    assert_eq!(expected.len(), 12);

    for count in [1, 4, 5, 12, 50] {
        let keys = page_keys(&client, &format!("_history?_count={count}"), count).await;
        let unique: BTreeSet<String> = keys.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            keys.len(),
            "_count={count}: duplicates across pages: {keys:?}"
        );
        let normalized: BTreeSet<String> = unique.iter().map(|k| normalize_method(k)).collect();
        let wanted: BTreeSet<String> = expected.iter().map(|k| normalize_method(k)).collect();
        assert_eq!(normalized, wanted, "_count={count}: gaps or extras");

        let type_keys =
            page_keys(&client, &format!("Patient/_history?_count={count}"), count).await;
        assert_eq!(
            type_keys, keys,
            "type and system history differ (only Patients exist)"
        );
    }
}

/// History keys name the method used; servers may record a create-by-PUT as PUT. Only the
/// version identity matters for gap/duplicate checks.
fn normalize_method(key: &str) -> String {
    key.rsplit_once(' ').map_or(key, |(k, _)| k).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn history_paging_is_stable_while_new_versions_arrive() {
    // Newest-first paging must not shift when writes land between page fetches: the pages that
    // follow still hold exactly the versions that existed when paging began.
    let server = Server::start();
    let client = server.client();
    let mut expected = BTreeSet::new();
    for i in 0..10 {
        let p = client.create(&common::patient(&format!("Stable{i}"))).await;
        expected.insert(format!("Patient/{}/_history/1", p["id"].as_str().unwrap()));
    }

    let first = client
        .get("Patient/_history?_count=3")
        .await
        .expect_status(200)
        .body;
    let mut seen: Vec<String> = entries(&first)
        .iter()
        .map(|e| normalize_method(&history_key(e)))
        .collect();
    let mut next = next_link(&first).expect("next link on the first page");

    for i in 0..3 {
        client
            .create(&common::patient(&format!("Arrived{i}")))
            .await;
    }
    loop {
        let page = client.get(&next).await.expect_status(200).body;
        seen.extend(
            entries(&page)
                .iter()
                .map(|e| normalize_method(&history_key(e))),
        );
        match next_link(&page) {
            Some(url) => next = url,
            None => break,
        }
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "duplicates after concurrent writes: {seen:?}"
    );
    let missing: Vec<_> = expected.difference(&unique).collect();
    assert!(
        missing.is_empty(),
        "versions skipped after concurrent writes: {missing:?}"
    );
}
