//! Result control: `_include`/`_revinclude`, `_sort`, `_count`, paging, `_total`, `_summary`,
//! `_elements`, `POST _search` and the handling of bad parameters, over HTTP against the real
//! binary (issue 3).
//!
//! FHIR R4 search.html, quoted:
//!
//! > "`_include=[type]:[search parameter]` … `:iterate` … the inclusion process should be
//! > iterated … `*` … include all" and "entries … `search.mode` = `match` … `include` …
//! > `outcome`"; included resources appear once.
//! >
//! > "`_sort=status,-date,category` … Each item in the comma separated list is a search
//! > parameter, optionally with a '-' prefix for descending order."
//! >
//! > "`_count` … the number of results per page"; "the server SHOULD return … links: `first`,
//! > `previous`, `next`, `last`, `self`"; paging links must stay usable while data changes.
//! >
//! > "`_total` … `none` | `estimate` | `accurate`"; "`_summary=count` … return just the count of
//! > the matching resources, without returning the actual matches"; "`_summary=true` … only
//! > those elements marked as 'summary' … the SUBSETTED tag"; "`_elements` … a comma separated
//! > list of base element names".
//! >
//! > "`POST [base]/[type]/_search` … the parameters in the body (application/x-www-form-
//! > urlencoded) … the same as a GET."
//! >
//! > "Servers … unknown or unsupported parameter … ignore … `Prefer: handling=strict` … SHOULD
//! > return an error … `Prefer: handling=lenient`"; the ignored parameter is reported in an
//! > OperationOutcome with `search.mode = outcome`.
//!
//! Issue 3 ("Result control", "Errors"): `_count` default 50, max 1000; paging "no duplicates,
//! no gaps" while resources are written; a bad prefix, date, token, `_sort` or `_count` is a 400
//! naming the parameter.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::search::Cases;
use common::{Client, Server, next_link};
use serde_json::{Value, json};

/// GET a search, assert 200 and a searchset Bundle whose entries all carry `search.mode`.
async fn search(client: &Client, query: &str) -> Value {
    let bundle = client.get(query).await.expect_status(200).body;
    assert_eq!(bundle["resourceType"], "Bundle", "{query}: not a Bundle");
    assert_eq!(bundle["type"], "searchset", "{query}: not a searchset");
    for e in bundle["entry"].as_array().into_iter().flatten() {
        let mode = e["search"]["mode"].as_str().unwrap_or("");
        assert!(
            ["match", "include", "outcome"].contains(&mode),
            "{query}: entry without a valid search.mode: {e}"
        );
    }
    bundle
}

fn resource(rtype: &str, id: &str, body: Value) -> Value {
    let mut r = json!({ "resourceType": rtype, "id": id });
    for (k, v) in body.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

/// Creates resources in one batch (POST of a `batch` Bundle), asserting every entry is 201.
async fn batch_create(client: &Client, resources: Vec<Value>) {
    for chunk in resources.chunks(500) {
        let entries: Vec<Value> = chunk
            .iter()
            .map(|r| {
                let ty = r["resourceType"].as_str().unwrap();
                json!({ "resource": r, "request": { "method": "POST", "url": ty } })
            })
            .collect();
        let bundle = json!({ "resourceType": "Bundle", "type": "batch", "entry": entries });
        let resp = client.post_json("", &bundle).await.expect_status(200);
        for e in resp.body["entry"].as_array().unwrap() {
            let status = e["response"]["status"].as_str().unwrap_or("");
            assert!(status.starts_with("201"), "batch create failed: {e}");
        }
    }
}

fn entries(bundle: &Value) -> Vec<Value> {
    bundle["entry"].as_array().cloned().unwrap_or_default()
}

fn ids_in_order(bundle: &Value) -> Vec<String> {
    entries(bundle)
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .and_then(|l| l["url"].as_str())
        .map(str::to_string)
}

/// (type/id, mode) of every entry.
fn keyed(bundle: &Value) -> Vec<(String, String)> {
    entries(bundle)
        .iter()
        .map(|e| {
            let r = &e["resource"];
            (
                format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap_or("?"),
                    r["id"].as_str().unwrap_or("?")
                ),
                e["search"]["mode"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

fn assert_keyed(query: &str, bundle: &Value, expected: &[(&str, &str)]) {
    let got = keyed(bundle);
    let unique: BTreeSet<&String> = got.iter().map(|(k, _)| k).collect();
    assert_eq!(
        unique.len(),
        got.len(),
        "GET {query}: a resource appears twice: {got:?}"
    );
    let got: BTreeSet<(String, String)> = got.into_iter().collect();
    let want: BTreeSet<(String, String)> = expected
        .iter()
        .map(|(k, m)| (k.to_string(), m.to_string()))
        .collect();
    assert_eq!(got, want, "GET {query}: entries (resource, search.mode)");
}

fn includes(cases: &mut Cases, client: &Client) {
    let rows: Vec<(&'static str, Vec<(&'static str, &'static str)>)> = vec![
        (
            "ServiceRequest?_id=in-sr1&_include=ServiceRequest:subject",
            vec![
                ("ServiceRequest/in-sr1", "match"),
                ("Patient/in-p1", "include"),
            ],
        ),
        (
            "ServiceRequest?_id=in-sr1,in-sr2&_include=ServiceRequest:requester:Practitioner",
            vec![
                ("ServiceRequest/in-sr1", "match"),
                ("ServiceRequest/in-sr2", "match"),
                ("Practitioner/in-dr-req", "include"),
            ],
        ),
        (
            "ServiceRequest?_id=in-sr1,in-sr2&_include=ServiceRequest:requester",
            vec![
                ("ServiceRequest/in-sr1", "match"),
                ("ServiceRequest/in-sr2", "match"),
                ("Practitioner/in-dr-req", "include"),
                ("Organization/in-org", "include"),
            ],
        ),
        (
            "ServiceRequest?_id=in-sr1&_include=ServiceRequest:*",
            vec![
                ("ServiceRequest/in-sr1", "match"),
                ("Patient/in-p1", "include"),
                ("Practitioner/in-dr-req", "include"),
            ],
        ),
        (
            // two SRs about the same patient: the patient once
            "ServiceRequest?_id=in-sr1,in-sr3&_include=ServiceRequest:subject",
            vec![
                ("ServiceRequest/in-sr1", "match"),
                ("ServiceRequest/in-sr3", "match"),
                ("Patient/in-p1", "include"),
            ],
        ),
        (
            // :iterate across two hops: ServiceRequest -> Patient -> Practitioner
            "ServiceRequest?_id=in-sr1&_include=ServiceRequest:subject&_include:iterate=Patient:general-practitioner",
            vec![
                ("ServiceRequest/in-sr1", "match"),
                ("Patient/in-p1", "include"),
                ("Practitioner/in-dr-gp", "include"),
            ],
        ),
        (
            // without :iterate the second hop is not followed
            "ServiceRequest?_id=in-sr1&_include=ServiceRequest:subject",
            vec![
                ("ServiceRequest/in-sr1", "match"),
                ("Patient/in-p1", "include"),
            ],
        ),
        (
            "Patient?_id=in-p1&_revinclude=ServiceRequest:subject",
            vec![
                ("Patient/in-p1", "match"),
                ("ServiceRequest/in-sr1", "include"),
                ("ServiceRequest/in-sr3", "include"),
            ],
        ),
        (
            "Practitioner?_id=in-dr-gp&_revinclude=Patient:general-practitioner&_revinclude:iterate=ServiceRequest:subject",
            vec![
                ("Practitioner/in-dr-gp", "match"),
                ("Patient/in-p1", "include"),
                ("ServiceRequest/in-sr1", "include"),
                ("ServiceRequest/in-sr3", "include"),
            ],
        ),
        (
            // an included resource that is also a match appears once, as a match
            "Patient?_id=in-p1,in-p2&_include=Patient:link",
            vec![("Patient/in-p1", "match"), ("Patient/in-p2", "match")],
        ),
        (
            "Patient?_id=in-p2&_include=Patient:link",
            vec![("Patient/in-p2", "match"), ("Patient/in-p1", "include")],
        ),
        (
            // no match: nothing included
            "ServiceRequest?_id=in-none&_include=ServiceRequest:subject",
            vec![],
        ),
    ];
    for (query, expected) in rows {
        let client = client.clone();
        cases.spawn(query, async move {
            let bundle = search(&client, query).await;
            assert_keyed(query, &bundle, &expected);
        });
    }
}

async fn include_fixtures(client: &Client) {
    for r in [
        resource(
            "Practitioner",
            "in-dr-gp",
            json!({ "name": [{ "family": "Gp" }] }),
        ),
        resource(
            "Practitioner",
            "in-dr-req",
            json!({ "name": [{ "family": "Req" }] }),
        ),
        resource(
            "Organization",
            "in-org",
            json!({ "name": "Requesting Org" }),
        ),
        resource(
            "Patient",
            "in-p1",
            json!({ "generalPractitioner": [{ "reference": "Practitioner/in-dr-gp" }] }),
        ),
        resource(
            "Patient",
            "in-p2",
            json!({ "link": [{ "other": { "reference": "Patient/in-p1" }, "type": "seealso" }] }),
        ),
    ] {
        client.upsert(&r).await;
    }
    let sr = |id: &str, subject: &str, requester: &str| {
        resource(
            "ServiceRequest",
            id,
            json!({ "status": "active", "intent": "order",
                    "subject": { "reference": subject },
                    "requester": { "reference": requester } }),
        )
    };
    for r in [
        sr("in-sr1", "Patient/in-p1", "Practitioner/in-dr-req"),
        sr("in-sr2", "Patient/in-p2", "Organization/in-org"),
        sr("in-sr3", "Patient/in-p1", "Practitioner/in-dr-req"),
    ] {
        client.upsert(&r).await;
    }
}

async fn sort_fixtures(client: &Client) -> Vec<String> {
    let p = |id: &str, family: Option<&str>, birth: Option<&str>| {
        let mut r = resource(
            "Patient",
            id,
            json!({ "identifier": [{ "system": "urn:sort", "value": id }] }),
        );
        if let Some(f) = family {
            r["name"] = json!([{ "family": f }]);
        }
        if let Some(b) = birth {
            r["birthDate"] = json!(b);
        }
        r
    };
    let list = vec![
        p("so-1", Some("Adams"), Some("2001-01-01")),
        p("so-2", Some("Baker"), Some("2000-01-01")),
        p("so-3", Some("Adams"), Some("1999-01-01")),
        p("so-4", None, Some("2002-01-01")),
        p("so-5", Some("Carter"), None),
        p("so-6", Some("Baker"), Some("2000-01-01")),
    ];
    let mut ids = Vec::new();
    for r in list {
        client.upsert(&r).await;
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    ids
}

/// `got` is `expected` with ties (inner vectors) in any order and `missing` at one end.
fn assert_order(query: &str, got: &[String], expected: &[&[&str]], missing: &[&str]) {
    let flat_len: usize = expected.iter().map(|g| g.len()).sum::<usize>() + missing.len();
    assert_eq!(got.len(), flat_len, "GET {query}: {got:?}");
    let (body, tail) = if missing
        .iter()
        .any(|m| got.first().map(String::as_str) == Some(*m))
    {
        (&got[missing.len()..], &got[..missing.len()])
    } else {
        (
            &got[..got.len() - missing.len()],
            &got[got.len() - missing.len()..],
        )
    };
    let tail: BTreeSet<&str> = tail.iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        missing.iter().copied().collect(),
        "GET {query}: resources without a value should come first or last: {got:?}"
    );
    let mut at = 0;
    for group in expected {
        let part: BTreeSet<&str> = body[at..at + group.len()]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(
            part,
            group.iter().copied().collect(),
            "GET {query}: order {got:?}, expected groups {expected:?} then missing {missing:?}"
        );
        at += group.len();
    }
}

/// `_sort` value, expected groups of ties in order, and the resources without a value.
type SortCase = (
    &'static str,
    Vec<&'static [&'static str]>,
    Vec<&'static str>,
);

fn sorting(cases: &mut Cases, client: &Client) {
    let rows: Vec<SortCase> = vec![
        (
            "_sort=family",
            vec![&["so-1", "so-3"], &["so-2", "so-6"], &["so-5"]],
            vec!["so-4"],
        ),
        (
            "_sort=-family",
            vec![&["so-5"], &["so-2", "so-6"], &["so-1", "so-3"]],
            vec!["so-4"],
        ),
        (
            "_sort=family,-birthdate",
            vec![&["so-1"], &["so-3"], &["so-2", "so-6"], &["so-5"]],
            vec!["so-4"],
        ),
        (
            "_sort=family,birthdate",
            vec![&["so-3"], &["so-1"], &["so-2", "so-6"], &["so-5"]],
            vec!["so-4"],
        ),
        (
            "_sort=birthdate",
            vec![&["so-3"], &["so-2", "so-6"], &["so-1"], &["so-4"]],
            vec!["so-5"],
        ),
        (
            "_sort=-birthdate",
            vec![&["so-4"], &["so-1"], &["so-2", "so-6"], &["so-3"]],
            vec!["so-5"],
        ),
        (
            "_sort=-_id",
            vec![
                &["so-6"],
                &["so-5"],
                &["so-4"],
                &["so-3"],
                &["so-2"],
                &["so-1"],
            ],
            vec![],
        ),
    ];
    for (sort, expected, missing) in rows {
        let client = client.clone();
        cases.spawn(sort, async move {
            let query = format!("Patient?identifier=urn:sort%7C&{sort}");
            let first = ids_in_order(&search(&client, &query).await);
            assert_order(&query, &first, &expected, &missing);
            // stable: the same order again, and the same order when paged two at a time
            let again = ids_in_order(&search(&client, &query).await);
            assert_eq!(
                first, again,
                "GET {query}: order is not stable between requests"
            );
            let paged: Vec<String> = client
                .all_pages(&format!("{query}&_count=2"))
                .await
                .iter()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(
                first, paged,
                "GET {query}&_count=2: pages disagree with the single page"
            );
        });
    }
    let client = client.clone();
    cases.spawn("_sort=_lastUpdated", async move {
        let query = "Patient?identifier=urn:sort%7C&_sort=_lastUpdated";
        let got = ids_in_order(&search(&client, query).await);
        assert_eq!(
            got,
            ["so-1", "so-2", "so-3", "so-4", "so-5", "so-6"],
            "GET {query}"
        );
        let query = "Patient?identifier=urn:sort%7C&_sort=-_lastUpdated";
        let got = ids_in_order(&search(&client, query).await);
        assert_eq!(
            got,
            ["so-6", "so-5", "so-4", "so-3", "so-2", "so-1"],
            "GET {query}"
        );
    });
}

/// Pages `first` through `next`, returning every match id per page.
async fn walk(client: &Client, first: &str, between: impl Fn()) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut url = first.to_string();
    for _ in 0..1000 {
        let page = search(client, &url).await;
        assert!(link(&page, "self").is_some(), "page {url} has no self link");
        pages.push(ids_in_order(&page));
        between();
        match next_link(&page) {
            Some(next) => url = next,
            None => return pages,
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("more than 1000 pages from {first}");
}

async fn paging(client: &Client) -> Vec<String> {
    let mut failures = Vec::new();
    let originals: Vec<Value> = (0..120)
        .map(|i| {
            json!({
                "resourceType": "Patient",
                "identifier": [{ "system": "urn:pager", "value": format!("orig-{i}") }],
                "name": [{ "family": "Pager" }],
                "birthDate": format!("{}-{:02}-{:02}", 1990 + (i * 7) % 30, 1 + i % 12, 1 + i % 28)
            })
        })
        .collect();
    batch_create(client, originals).await;
    let all = client
        .all_pages("Patient?family:exact=Pager&_count=1000")
        .await;
    let start: BTreeSet<String> = all
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        start.len(),
        120,
        "the 120 paging patients are not all found"
    );

    // A writer keeps creating matching and non-matching patients while pages are fetched.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let client = client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let family = if n.is_multiple_of(2) {
                    "Pager"
                } else {
                    "Outsider"
                };
                let body = json!({
                    "resourceType": "Patient",
                    "name": [{ "family": family }],
                    "birthDate": format!("{}-06-15", 1990 + n % 30)
                });
                client.post_json("Patient", &body).await.expect_status(201);
            }
            n
        })
    };
    for query in [
        "Patient?family:exact=Pager&_count=10",
        "Patient?family:exact=Pager&_count=10&_sort=birthdate",
        "Patient?family:exact=Pager&_count=7&_sort=-birthdate,_id",
    ] {
        let pages = walk(client, query, || {}).await;
        let flat: Vec<&String> = pages.iter().flatten().collect();
        let unique: BTreeSet<&String> = flat.iter().copied().collect();
        if unique.len() != flat.len() {
            let mut count: BTreeMap<&String, usize> = BTreeMap::new();
            for id in &flat {
                *count.entry(id).or_default() += 1;
            }
            let dups: Vec<_> = count.into_iter().filter(|(_, n)| *n > 1).collect();
            failures.push(format!(
                "[paging {query}] duplicates across pages: {dups:?}"
            ));
        }
        let gaps: Vec<&String> = start.iter().filter(|id| !unique.contains(id)).collect();
        if !gaps.is_empty() {
            failures.push(format!(
                "[paging {query}] {} of the 120 resources present at the start were never returned: {gaps:?}",
                gaps.len()
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("writer task");
    assert!(written > 0, "the writer created nothing while paging");

    // previous: from page 3 back to page 2 and page 1 (no writes now).
    let query = "Patient?family:exact=Pager&_count=10&_sort=birthdate,_id";
    let p1 = search(client, query).await;
    if link(&p1, "previous").is_some() {
        failures.push(format!(
            "[paging previous] the first page of {query} has a previous link"
        ));
    }
    let p2 = search(client, &next_link(&p1).expect("page 1 has next")).await;
    let p3 = search(client, &next_link(&p2).expect("page 2 has next")).await;
    match link(&p3, "previous") {
        None => failures.push("[paging previous] page 3 has no previous link".into()),
        Some(prev) => {
            let back2 = search(client, &prev).await;
            if ids_in_order(&back2) != ids_in_order(&p2) {
                failures.push(format!(
                    "[paging previous] previous of page 3 is not page 2: {:?} vs {:?}",
                    ids_in_order(&back2),
                    ids_in_order(&p2)
                ));
            }
            match link(&back2, "previous") {
                Some(prev1) => {
                    let back1 = search(client, &prev1).await;
                    if ids_in_order(&back1) != ids_in_order(&p1) {
                        failures.push(format!(
                            "[paging previous] previous of page 2 is not page 1: {:?} vs {:?}",
                            ids_in_order(&back1),
                            ids_in_order(&p1)
                        ));
                    }
                }
                None => failures
                    .push("[paging previous] page 2 (reached backwards) has no previous".into()),
            }
        }
    }
    // self reproduces the page
    let again = search(client, &link(&p2, "self").expect("self link")).await;
    if ids_in_order(&again) != ids_in_order(&p2) {
        failures.push("[paging self] the self link of page 2 does not give page 2".into());
    }
    // default page size 50
    let default = search(client, "Patient?family:exact=Pager").await;
    if ids_in_order(&default).len() != 50 || next_link(&default).is_none() {
        failures.push(format!(
            "[_count default] expected 50 entries and a next link, got {} entries",
            ids_in_order(&default).len()
        ));
    }
    failures
}

async fn counts(client: &Client) -> Vec<String> {
    let mut failures = Vec::new();
    let basics: Vec<Value> = (0..1005)
        .map(|i| {
            json!({ "resourceType": "Basic",
                    "code": { "coding": [{ "system": "urn:bulk", "code": "bulk" }] },
                    "identifier": [{ "system": "urn:bulk-id", "value": format!("b{i}") }] })
        })
        .collect();
    batch_create(client, basics).await;
    for (query, want) in [
        ("Basic?code=urn:bulk%7Cbulk&_count=5000", 1000),
        ("Basic?code=urn:bulk%7Cbulk&_count=1000", 1000),
        ("Basic?code=urn:bulk%7Cbulk", 50),
        ("Basic?code=urn:bulk%7Cbulk&_count=3", 3),
    ] {
        let page = search(client, query).await;
        let n = ids_in_order(&page).len();
        if n != want || next_link(&page).is_none() {
            failures.push(format!(
                "[_count] GET {query}: {n} entries (want {want}) and next link {:?}",
                next_link(&page)
            ));
        }
    }
    let q = "Basic?code=urn:bulk%7Cbulk&_count=0";
    let zero = search(client, q).await;
    if !entries(&zero).is_empty() || zero["total"] != 1005 {
        failures.push(format!(
            "[_count=0] GET {q}: want no entries and total 1005, got {} entries, total {}",
            entries(&zero).len(),
            zero["total"]
        ));
    }
    for (q, want) in [
        (
            "Basic?code=urn:bulk%7Cbulk&_total=accurate&_count=1",
            Some(1005),
        ),
        ("Basic?code=urn:bulk%7Cbulk&_summary=count", Some(1005)),
    ] {
        let b = search(client, q).await;
        if b["total"].as_u64() != want {
            failures.push(format!(
                "[_total] GET {q}: total {} (want {want:?})",
                b["total"]
            ));
        }
        if q.contains("_summary=count") && !ids_in_order(&b).is_empty() {
            failures.push(format!("[_summary=count] GET {q}: has match entries"));
        }
    }
    let b = search(client, "Basic?code=urn:bulk%7Cbulk&_total=none&_count=1").await;
    if !b["total"].is_null() && b["total"] != 1005 {
        failures.push(format!(
            "[_total=none] a total, if given, must be right: {}",
            b["total"]
        ));
    }
    let b = search(
        client,
        "Basic?code=urn:bulk%7Cbulk&_total=estimate&_count=1",
    )
    .await;
    if !b["total"].is_null() && b["total"].as_u64().is_none_or(|t| t == 0) {
        failures.push(format!(
            "[_total=estimate] nonsense estimate: {}",
            b["total"]
        ));
    }
    failures
}

fn subsetting(cases: &mut Cases, client: &Client) {
    let client = client.clone();
    cases.spawn("_summary and _elements", async move {
        let p = resource(
            "Patient",
            "sum-1",
            json!({
                "text": { "status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Summ</div>" },
                "identifier": [{ "system": "urn:summ", "value": "1" }],
                "name": [{ "family": "Summary" }],
                "gender": "female",
                "birthDate": "2012-02-02",
                "maritalStatus": { "text": "unmarried" },
                "contact": [{ "name": { "family": "Contact" } }],
                "communication": [{ "language": { "text": "English" } }]
            }),
        );
        client.upsert(&p).await;
        let subsetted = |r: &Value| {
            r["meta"]["tag"].as_array().into_iter().flatten().any(|t| {
                t["code"] == "SUBSETTED" && t["system"] == "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
            })
        };
        let one = |b: &Value| entries(b)[0]["resource"].clone();

        let q = "Patient?_id=sum-1&_summary=true";
        let r = one(&search(&client, q).await);
        for present in ["identifier", "name", "gender", "birthDate"] {
            assert!(!r[present].is_null(), "GET {q}: summary element {present} missing: {r}");
        }
        for absent in ["maritalStatus", "contact", "communication"] {
            assert!(r[absent].is_null(), "GET {q}: non-summary element {absent} returned: {r}");
        }
        assert!(subsetted(&r), "GET {q}: no SUBSETTED tag: {r}");

        let q = "Patient?_id=sum-1&_summary=data";
        let r = one(&search(&client, q).await);
        assert!(r["text"].is_null(), "GET {q}: text returned");
        assert!(!r["maritalStatus"].is_null(), "GET {q}: data element missing");

        let q = "Patient?_id=sum-1&_summary=text";
        let r = one(&search(&client, q).await);
        assert!(!r["text"].is_null(), "GET {q}: text missing");
        assert!(r["birthDate"].is_null() && r["maritalStatus"].is_null(), "GET {q}: {r}");

        let q = "Patient?_id=sum-1&_elements=name,gender";
        let r = one(&search(&client, q).await);
        assert_eq!(r["id"], "sum-1", "GET {q}: id missing");
        assert!(!r["name"].is_null() && !r["gender"].is_null(), "GET {q}: {r}");
        for absent in ["birthDate", "identifier", "maritalStatus", "contact"] {
            assert!(r[absent].is_null(), "GET {q}: {absent} returned: {r}");
        }
        assert!(subsetted(&r), "GET {q}: no SUBSETTED tag: {r}");
    });
}

fn requests(cases: &mut Cases, client: &Client) {
    let c = client.clone();
    cases.spawn("POST _search", async move {
        let get =
            ids_in_order(&search(&c, "Patient?identifier=urn:sort%7C&_sort=family&_count=3").await);
        let post = c
            .request(reqwest::Method::POST, "Patient/_search")
            .body(
                "application/x-www-form-urlencoded",
                "identifier=urn%3Asort%7C&_sort=family&_count=3",
            )
            .send()
            .await
            .expect_status(200);
        assert_eq!(post.body["type"], "searchset");
        assert_eq!(
            ids_in_order(&post.body),
            get,
            "POST Patient/_search differs from GET"
        );
        assert!(
            next_link(&post.body).is_some(),
            "POST _search result has no next link"
        );
        // parameters split between URL and body are combined (AND)
        let post = c
            .request(reqwest::Method::POST, "Patient/_search?_sort=family")
            .body(
                "application/x-www-form-urlencoded",
                "identifier=urn%3Asort%7Cso-2",
            )
            .send()
            .await
            .expect_status(200);
        assert_eq!(
            ids_in_order(&post.body),
            ["so-2"],
            "POST with URL and body parameters"
        );
    });

    let c = client.clone();
    cases.spawn("unknown parameter: lenient and strict", async move {
        let q = "Patient?identifier=urn:sort%7Cso-1&no-such-param=1";
        for prefer in [None, Some("handling=lenient")] {
            let mut req = c.request(reqwest::Method::GET, q);
            if let Some(p) = prefer {
                req = req.header("prefer", p);
            }
            let b = req.send().await.expect_status(200).body;
            assert_eq!(
                ids_in_order(&b),
                ["so-1"],
                "GET {q} ({prefer:?}): the unknown parameter must be ignored"
            );
            let outcome = entries(&b)
                .into_iter()
                .find(|e| e["search"]["mode"] == "outcome")
                .unwrap_or_else(|| {
                    panic!(
                        "GET {q} ({prefer:?}): no OperationOutcome entry with search.mode=outcome"
                    )
                });
            assert_eq!(outcome["resource"]["resourceType"], "OperationOutcome");
            assert!(
                outcome.to_string().contains("no-such-param"),
                "outcome does not name it: {outcome}"
            );
        }
        let resp = c
            .request(reqwest::Method::GET, q)
            .header("prefer", "handling=strict")
            .send()
            .await
            .expect_outcome(400);
        assert!(
            resp.outcome_text().contains("no-such-param"),
            "strict 400 does not name it: {}",
            resp.text
        );
    });

    for (query, name) in [
        ("Patient?birthdate=xx2010-01-01", "birthdate"),
        ("Patient?birthdate=2010-13-45", "birthdate"),
        ("Patient?birthdate=not-a-date", "birthdate"),
        ("Patient?identifier=a%7Cb%7Cc", "identifier"),
        ("RiskAssessment?probability=abc", "probability"),
        ("Observation?value-quantity=zz5.4", "value-quantity"),
        ("Patient?_sort=no-such-param", "_sort"),
        ("Patient?_count=abc", "_count"),
        ("Patient?_count=-1", "_count"),
        ("Patient?family:nonsense=x", "family"),
        ("Patient?_include=Patient:no-such-param", "_include"),
    ] {
        let c = client.clone();
        cases.spawn(format!("400 {query}"), async move {
            let resp = c.get(query).await.expect_outcome(400);
            assert!(
                resp.outcome_text().contains(name),
                "GET {query}: the OperationOutcome does not name `{name}`:\n{}",
                resp.text
            );
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_control() {
    let server = Server::start();
    let client = server.client();
    include_fixtures(&client).await;
    sort_fixtures(&client).await;
    let mut cases = Cases::default();
    includes(&mut cases, &client);
    sorting(&mut cases, &client);
    subsetting(&mut cases, &client);
    requests(&mut cases, &client);
    let client2 = client.clone();
    cases.spawn("paging while writing", async move {
        let failures = paging(&client2).await;
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
    let client3 = client.clone();
    cases.spawn("_count, _total, _summary=count", async move {
        let failures = counts(&client3).await;
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
    cases.finish().await;
}
