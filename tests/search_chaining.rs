//! Chained parameters and reverse chaining (`_has`), over HTTP against the real binary (issue 3).
//!
//! FHIR R4 search.html §3.1.1.4.13 (chaining) and §3.1.1.4.14 (reverse chaining), quoted:
//!
//! > "In order to save a client from performing a series of search operations, reference
//! > parameters may be 'chained' by appending them with a period (.) followed by the name of a
//! > search parameter defined for the target resource. … `GET [base]/DiagnosticReport?
//! > subject.name=peter` … Since the subject can be one of several types, … `GET [base]/
//! > DiagnosticReport?subject:Patient.name=peter`." Chains may be several levels deep.
//! >
//! > "Where a chained parameter searches a resource reference that may have more than one type
//! > of resource as its target, the parameter chain may end up referring to search parameters
//! > with the same name on more than one kind of resource at once" — issue 3 asks the server to
//! > refuse such an ambiguous chain with 400 and a clear message.
//! >
//! > "The `_has` parameter provides limited support for reverse chaining — that is, selecting
//! > resources based on the properties of resources that refer to them … `GET [base]/Patient?
//! > _has:Observation:patient:code=1234-5` … `_has` parameters can be nested."
//!
//! Issue 3 ("Common parameters": `_has`, chained parameters `subject:Patient.name=`,
//! `patient.identifier=`; "Errors"). Each case checks the exact set of matches among the
//! file's resources, so decoys that must not match are caught.

mod common;

use std::collections::BTreeSet;

use common::search::{Cases, match_ids, search};
use common::{Client, Server};
use serde_json::{Value, json};

/// `query` restricted to the `scope` ids must match exactly `expected` (ids in `ignore` may or
/// may not match: the spec leaves them to the server).
async fn expect(
    client: &Client,
    query: &str,
    scope: &[String],
    expected: &[&str],
    ignore: &[&str],
) {
    let sep = if query.contains('?') { '&' } else { '?' };
    let full = format!("{query}{sep}_id={}", scope.join(","));
    let got: BTreeSet<String> = match_ids(&search(client, &full).await)
        .into_iter()
        .filter(|id| !ignore.contains(&id.as_str()))
        .collect();
    let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    if got != want {
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        panic!(
            "GET {query}\n  expected {want:?}\n  got      {got:?}\n  missing {missing:?}, unexpected (decoys) {extra:?}"
        );
    }
}

/// Spawns one sub-case per row `(query, expected matches)` scoped to `scope`.
fn table(cases: &mut Cases, client: &Client, scope: &[String], rows: &[(&str, &[&str])]) {
    for (query, expected) in rows {
        let client = client.clone();
        let scope = scope.to_vec();
        let query = query.to_string();
        let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        cases.spawn(query.clone(), async move {
            let e: Vec<&str> = expected.iter().map(String::as_str).collect();
            expect(&client, &query, &scope, &e, &[]).await;
        });
    }
}

/// `query` must be refused with 400 and an OperationOutcome that names `names` (lower case).
fn refused(cases: &mut Cases, client: &Client, query: &str, names: &'static [&'static str]) {
    let client = client.clone();
    let query = query.to_string();
    cases.spawn(format!("400 {query}"), async move {
        let resp = client.get(&query).await.expect_outcome(400);
        let text = resp.outcome_text();
        for n in names {
            assert!(
                text.contains(&n.to_lowercase()),
                "GET {query}: the OperationOutcome should name `{n}`:\n{}",
                resp.text
            );
        }
    });
}

fn resource(rtype: &str, id: &str, body: Value) -> Value {
    let mut r = json!({ "resourceType": rtype, "id": id });
    for (k, v) in body.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

fn observation(id: &str, subject: &str, code: &str) -> Value {
    resource(
        "Observation",
        id,
        json!({
            "status": "final",
            "code": { "coding": [{ "system": "http://loinc.org", "code": code }] },
            "subject": { "reference": subject }
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaining_and_has() {
    let server = Server::start();
    let client = server.client();
    let fixtures = vec![
        resource("Organization", "ch-org1", json!({ "name": "Acme Care" })),
        resource("Organization", "ch-org2", json!({ "name": "Zeta Health" })),
        resource(
            "Practitioner",
            "ch-dr1",
            json!({ "name": [{ "family": "Smithers" }] }),
        ),
        resource(
            "Practitioner",
            "ch-dr2",
            json!({ "name": [{ "family": "Burns" }] }),
        ),
        resource(
            "Patient",
            "ch-pa",
            json!({
                "identifier": [{ "system": "urn:chain", "value": "A1" }],
                "name": [{ "family": "Alpha", "given": ["Chainfirst"] }],
                "generalPractitioner": [{ "reference": "Practitioner/ch-dr1" }],
                "managingOrganization": { "reference": "Organization/ch-org1" }
            }),
        ),
        resource(
            "Patient",
            "ch-pb",
            json!({
                "identifier": [{ "system": "urn:chain", "value": "B1" }],
                "name": [{ "family": "Beta", "given": ["Chainfirst"] }],
                "generalPractitioner": [{ "reference": "Practitioner/ch-dr2" }],
                "managingOrganization": { "reference": "Organization/ch-org2" }
            }),
        ),
        resource(
            "Patient",
            "ch-pc",
            json!({ "identifier": [{ "system": "urn:chain", "value": "C1" }],
                    "name": [{ "family": "Gamma" }] }),
        ),
        resource(
            "Patient",
            "ch-gone",
            json!({ "identifier": [{ "system": "urn:chain", "value": "G1" }],
                    "name": [{ "family": "Gone", "given": ["Chainfirst"] }] }),
        ),
        resource("Location", "ch-loc", json!({ "name": "Chainfirst Clinic" })),
        observation("ch-oa", "Patient/ch-pa", "1234-5"),
        observation("ch-ob", "Patient/ch-pb", "9999-9"),
        observation("ch-oc", "Patient/ch-pc", "9999-9"),
        observation("ch-ol", "Location/ch-loc", "1234-5"),
        observation("ch-ogone", "Patient/ch-gone", "1234-5"),
        observation("ch-odangling", "Patient/ch-nowhere", "1234-5"),
    ];
    let mut by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for r in &fixtures {
        client.upsert(r).await;
        by_type
            .entry(r["resourceType"].as_str().unwrap().to_string())
            .or_default()
            .push(r["id"].as_str().unwrap().to_string());
    }
    // A deleted target no longer satisfies a chain.
    let deleted = client.delete("Patient/ch-gone").await;
    assert!(
        matches!(deleted.status.as_u16(), 200 | 204),
        "DELETE Patient/ch-gone: {}",
        deleted.status
    );
    let obs = by_type["Observation"].clone();
    let pats = by_type["Patient"].clone();
    let drs = by_type["Practitioner"].clone();
    let orgs = by_type["Organization"].clone();
    let mut cases = Cases::default();

    table(
        &mut cases,
        &client,
        &obs,
        &[
            // typed chain: Location's name does not count
            (
                "Observation?subject:Patient.name=chainfirst",
                &["ch-oa", "ch-ob"],
            ),
            ("Observation?subject:Patient.family=alpha", &["ch-oa"]),
            ("Observation?subject:Location.name=chainfirst", &["ch-ol"]),
            ("Observation?subject:Patient.name=nobody", &[]),
            // patient targets only Patient: no type needed
            ("Observation?patient.identifier=urn:chain%7CA1", &["ch-oa"]),
            ("Observation?patient.identifier=B1", &["ch-ob"]),
            ("Observation?patient.identifier=urn:chain%7CZZZ", &[]),
            ("Observation?patient.identifier=urn:other%7CA1", &[]),
            (
                "Observation?patient.identifier=urn:chain%7CA1,urn:chain%7CC1",
                &["ch-oa", "ch-oc"],
            ),
            (
                "Observation?patient.family=alpha&patient.given=chainfirst",
                &["ch-oa"],
            ),
            ("Observation?patient.family=alpha&patient.family=beta", &[]),
            ("Observation?patient.family:exact=Alpha", &["ch-oa"]),
            ("Observation?patient.family:exact=alpha", &[]),
            ("Observation?patient._id=ch-pb", &["ch-ob"]),
            ("Observation?patient.name=gone", &[]),
            ("Observation?patient.identifier=G1", &[]),
            // chain combined with a plain parameter
            (
                "Observation?patient.given=chainfirst&code=9999-9",
                &["ch-ob"],
            ),
            // two levels
            (
                "Observation?patient.general-practitioner:Practitioner.name=smithers",
                &["ch-oa"],
            ),
            ("Observation?patient.organization.name=zeta", &["ch-ob"]),
            (
                "Observation?subject:Patient.organization.name=acme",
                &["ch-oa"],
            ),
            ("Observation?patient.organization.name=nothing", &[]),
        ],
    );
    table(
        &mut cases,
        &client,
        &pats,
        &[
            ("Patient?organization.name=acme", &["ch-pa"]),
            (
                "Patient?general-practitioner:Practitioner.family=burns",
                &["ch-pb"],
            ),
            // _has: patients referred to by an Observation with that code
            ("Patient?_has:Observation:patient:code=1234-5", &["ch-pa"]),
            (
                "Patient?_has:Observation:subject:code=http://loinc.org%7C9999-9",
                &["ch-pb", "ch-pc"],
            ),
            ("Patient?_has:Observation:patient:code=0000-0", &[]),
            (
                "Patient?_has:Observation:patient:code=1234-5,9999-9",
                &["ch-pa", "ch-pb", "ch-pc"],
            ),
            (
                "Patient?_has:Observation:patient:code=9999-9&family=gamma",
                &["ch-pc"],
            ),
            (
                "Patient?_has:Observation:patient:code=9999-9&_has:Observation:patient:code=1234-5",
                &[],
            ),
        ],
    );
    table(
        &mut cases,
        &client,
        &drs,
        &[
            // nested _has: practitioners who are GP of a patient with a 1234-5 observation
            (
                "Practitioner?_has:Patient:general-practitioner:_has:Observation:patient:code=1234-5",
                &["ch-dr1"],
            ),
            (
                "Practitioner?_has:Patient:general-practitioner:_has:Observation:patient:code=9999-9",
                &["ch-dr2"],
            ),
            (
                "Practitioner?_has:Patient:general-practitioner:family=alpha",
                &["ch-dr1"],
            ),
            (
                "Practitioner?_has:Patient:general-practitioner:family=gamma",
                &[],
            ),
        ],
    );
    table(
        &mut cases,
        &client,
        &orgs,
        &[
            // _has whose inner criterion is itself a chain
            (
                "Organization?_has:Patient:organization:general-practitioner:Practitioner.name=burns",
                &["ch-org2"],
            ),
        ],
    );

    // Errors.
    refused(
        &mut cases,
        &client,
        "Observation?subject.name=chainfirst",
        &["subject.name", "patient", "location"],
    );
    refused(
        &mut cases,
        &client,
        "Observation?status.name=x",
        &["status.name"],
    );
    refused(
        &mut cases,
        &client,
        "Observation?subject:NotAType.name=x",
        &["subject:notatype.name"],
    );
    refused(
        &mut cases,
        &client,
        "Observation?_has:Observation:code",
        &["_has:observation:code"],
    );
    refused(
        &mut cases,
        &client,
        "Patient?_has:NotAType:patient:code=x",
        &["_has:notatype:patient:code"],
    );
    refused(
        &mut cases,
        &client,
        "Patient?_has:Observation:status:code=final",
        &["_has:observation:status:code"],
    );
    {
        // An unknown parameter at the end of a chain: refused under strict handling, and never
        // silently ignored by default (either 400, or 200 with an outcome entry naming it).
        let client = client.clone();
        cases.spawn("unknown chained parameter", async move {
            let q = "Observation?patient.no-such-param=x";
            client
                .request(reqwest::Method::GET, q)
                .header("prefer", "handling=strict")
                .send()
                .await
                .expect_outcome(400);
            let resp = client.get(q).await;
            if resp.status == 200 {
                let outcome = resp.body["entry"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["search"]["mode"] == "outcome")
                    .unwrap_or_else(|| {
                        panic!("GET {q}: 200 without an outcome entry:\n{}", resp.text)
                    });
                assert!(
                    outcome.to_string().contains("no-such-param"),
                    "GET {q}: outcome does not name the parameter: {outcome}"
                );
            } else {
                let resp = resp.expect_outcome(400);
                assert!(
                    resp.outcome_text().contains("no-such-param"),
                    "GET {q}: {}",
                    resp.text
                );
            }
        });
    }
    cases.finish().await;
}
