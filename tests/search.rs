//! Type-level search by `_id` and `identifier` with `_count` paging (FHIR R4 http.html §3.1.0.12
//! search, search.html §3.1.1.4.1 `_id`, §3.1.1.5.6 token).
//!
//! > "The search interaction searches a set of resources based on some filter criteria …
//! > `GET [base]/[type]{?[parameters]}` … The response is a Bundle with type `searchset` …
//! > entries with `search.mode` = match."
//! >
//! > token: "`[parameter]=[code]`: the value of [code] matches a Coding.code or Identifier.value
//! > irrespective of the value of the system property; `[parameter]=[system]|[code]`: … matches
//! > … and the system property matches; `[parameter]=[system]|`: any element where the value of
//! > [system] matches the system property."
//! >
//! > "`_count` … the server returns a Bundle with links to the next pages."
//!
//! Issue 2 limits this increment to `_id`, `identifier` and `_count`.

mod common;

use std::collections::BTreeSet;

use common::{Client, Server, enc};
use serde_json::{Value, json};

async fn search_ids(client: &Client, query: &str) -> Vec<String> {
    let bundle = client.get(query).await.expect_status(200).body;
    assert_searchset(client, &bundle);
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

fn assert_searchset(client: &Client, bundle: &Value) {
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "searchset");
    for entry in bundle["entry"].as_array().into_iter().flatten() {
        assert_eq!(entry["search"]["mode"], "match", "{entry}");
        let resource = &entry["resource"];
        let expected = format!(
            "{}/{}/{}",
            client.base,
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        assert_eq!(entry["fullUrl"], expected.as_str(), "entry.fullUrl");
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn search_by_id() {
    let server = Server::start();
    let client = server.client();
    let a = client.create(&common::patient("A")).await;
    let b = client.create(&common::patient("B")).await;
    client.create(&common::patient("C")).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());

    assert_eq!(
        search_ids(&client, &format!("Patient?_id={a}")).await,
        vec![a.to_string()]
    );
    assert_eq!(
        sorted(search_ids(&client, &format!("Patient?_id={a},{b}")).await),
        sorted(vec![a.to_string(), b.to_string()])
    );
    assert!(search_ids(&client, "Patient?_id=nobody").await.is_empty());
    assert!(
        search_ids(&client, &format!("Observation?_id={a}"))
            .await
            .is_empty(),
        "search crossed types"
    );

    // Deleted resources are not found.
    client.delete(&format!("Patient/{a}")).await;
    assert!(
        search_ids(&client, &format!("Patient?_id={a}"))
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn search_by_identifier_token_forms() {
    let server = Server::start();
    let client = server.client();
    let value = common::unique("mrn");
    let with = |system: &str| {
        let mut p = common::patient("Token");
        p["identifier"] = json!([{ "system": system, "value": value }]);
        p
    };
    let x = client.create(&with("urn:sys:x")).await;
    let y = client.create(&with("urn:sys:y")).await;
    let mut other = common::patient("Other");
    other["identifier"] =
        json!([{ "system": "urn:sys:x", "value": "other-value" }, { "value": "no-system" }]);
    let other = client.create(&other).await;
    let id = |r: &Value| r["id"].as_str().unwrap().to_string();

    let q = |v: &str| format!("Patient?identifier={}", enc(v));
    assert_eq!(
        search_ids(&client, &q(&format!("urn:sys:x|{value}"))).await,
        vec![id(&x)]
    );
    assert_eq!(
        sorted(search_ids(&client, &q(&value)).await),
        sorted(vec![id(&x), id(&y)])
    );
    assert_eq!(
        sorted(search_ids(&client, &q("urn:sys:x|")).await),
        sorted(vec![id(&x), id(&other)])
    );
    assert_eq!(
        search_ids(&client, &q("|no-system")).await,
        vec![id(&other)]
    );
    assert!(
        search_ids(&client, &q("urn:sys:z|nothing"))
            .await
            .is_empty()
    );
    // Token matching on the value is exact (case-sensitive for identifiers).
    assert!(
        search_ids(&client, &q(&value.to_uppercase()))
            .await
            .is_empty()
    );
    // Comma means OR.
    assert_eq!(
        sorted(
            search_ids(
                &client,
                &q(&format!("urn:sys:y|{value},urn:sys:x|other-value"))
            )
            .await
        ),
        sorted(vec![id(&y), id(&other)])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn search_pages_with_count() {
    let server = Server::start();
    let client = server.client();
    let system = format!("urn:{}", common::unique("paging"));
    let mut expected = BTreeSet::new();
    for i in 0..7 {
        let mut p = common::patient(&format!("Page{i}"));
        p["identifier"] = json!([{ "system": system, "value": format!("v{i}") }]);
        expected.insert(client.create(&p).await["id"].as_str().unwrap().to_string());
    }
    let first = format!("Patient?identifier={}&_count=3", enc(&format!("{system}|")));
    let mut url = client.url(&first);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = client.get(&url).await.expect_status(200).body;
        assert_searchset(&client, &page);
        let entries = page["entry"].as_array().cloned().unwrap_or_default();
        assert!(
            entries.len() <= 3,
            "page of {} with _count=3",
            entries.len()
        );
        if let Some(total) = page["total"].as_u64() {
            assert_eq!(total, 7, "Bundle.total");
        }
        seen.extend(
            entries
                .iter()
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string()),
        );
        pages += 1;
        match common::next_link(&page) {
            Some(next) => url = next,
            None => break,
        }
    }
    assert_eq!(pages, 3, "7 matches at 3 per page");
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "duplicates across pages: {seen:?}"
    );
    assert_eq!(unique, expected);
}
