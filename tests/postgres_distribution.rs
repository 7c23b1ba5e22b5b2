//! issue 7: the PostgreSQL schema is keyed for distribution by patient compartment (Citus):
//! every resource, history and index row carries `compartment`, the id of the Patient whose
//! compartment the resource belongs to, fixed by its first version, so a patient's rows stay on
//! one shard; shared resources carry `''`. README.md ("Deployment") distributes on it.
//!
//! PostgreSQL only (`FP_TEST_BACKEND=postgres`): the column exists only there.

mod common;

use common::Server;
use serde_json::json;

/// `SELECT DISTINCT compartment` of each table for one resource, off the async runtime.
fn compartments(database_url: &str, rtype: &str, id: &str) -> Vec<(String, Vec<String>)> {
    let (url, rtype, id) = (database_url.to_string(), rtype.to_string(), id.to_string());
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let mut out = vec![];
        for table in ["resources", "resource_history"] {
            let rows = client
                .query(
                    &format!(
                        "SELECT DISTINCT compartment FROM {table} WHERE rtype = $1 AND id = $2"
                    ),
                    &[&rtype, &id],
                )
                .unwrap();
            out.push((table.to_string(), rows.iter().map(|r| r.get(0)).collect()));
        }
        for table in ["idx_token", "idx_reference", "idx_date", "idx_string"] {
            let rows = client
                .query(
                    &format!(
                        "SELECT DISTINCT i.compartment FROM {table} i \
                         JOIN resources r ON r.rid = i.rid WHERE r.rtype = $1 AND r.id = $2"
                    ),
                    &[&rtype, &id],
                )
                .unwrap();
            out.push((table.to_string(), rows.iter().map(|r| r.get(0)).collect()));
        }
        out
    })
    .join()
    .unwrap()
}

fn assert_all(found: &[(String, Vec<String>)], expected: &str, what: &str) {
    for (table, values) in found {
        assert!(
            values.iter().all(|v| v == expected),
            "{what}: {table} holds compartments {values:?}, expected {expected:?}"
        );
    }
    assert!(
        found.iter().take(2).all(|(_, v)| !v.is_empty()),
        "{what}: {found:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_row_carries_its_patient_compartment() {
    if std::env::var("FP_TEST_BACKEND").as_deref() != Ok("postgres") {
        eprintln!(
            "SKIPPED every_row_carries_its_patient_compartment: it needs FP_TEST_BACKEND=postgres"
        );
        return;
    }
    let server = Server::start();
    let admin = server.client();
    let first = admin.create(&common::patient("First")).await;
    let second = admin.create(&common::patient("Second")).await;
    let (first_id, second_id) = (
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    );
    let obs = admin
        .create(&json!({ "resourceType": "Observation", "status": "final",
                          "code": { "coding": [{ "system": "http://loinc.org", "code": "29463-7" }] },
                          "effectiveDateTime": "2026-01-02",
                          "subject": { "reference": format!("Patient/{first_id}") } }))
        .await;
    let obs_id = obs["id"].as_str().unwrap();
    let org = admin
        .create(&json!({ "resourceType": "Organization", "name": "Shared" }))
        .await;
    let url = server.database_url();

    assert_all(
        &compartments(&url, "Patient", first_id),
        first_id,
        "a Patient is its own compartment",
    );
    assert_all(
        &compartments(&url, "Observation", obs_id),
        first_id,
        "an Observation is in its subject's compartment",
    );
    assert_all(
        &compartments(&url, "Organization", org["id"].as_str().unwrap()),
        "",
        "an Organization is shared",
    );

    // A later version keeps the first version's compartment (rows never move between shards;
    // consent and search follow the current subject through the index rows).
    let mut moved = obs.clone();
    moved["subject"]["reference"] = json!(format!("Patient/{second_id}"));
    admin
        .put_json(&format!("Observation/{obs_id}"), &moved)
        .await
        .expect_status(200);
    assert_all(
        &compartments(&url, "Observation", obs_id),
        first_id,
        "the compartment is fixed by the first version",
    );
    let found = admin
        .get(&format!("Observation?subject=Patient/{second_id}"))
        .await
        .expect_status(200);
    assert_eq!(found.body["entry"][0]["resource"]["id"], obs_id);
}
