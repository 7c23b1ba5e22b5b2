//! The audit trail (DESIGN.md section 5, IHE BALP): every disclosure and every denial writes an
//! AuditEvent, the youth can see who looked at her record, nobody can change or delete one,
//! and `foster-passport audit verify` finds a row edited behind the server's back.

mod common;

use std::time::Duration;

use common::{Client, Server};
use reqwest::Method;
use serde_json::{Value, json};

const YOUTH: &str = "youth-e";

fn backend(server: &Server, id: &str, role: &str, org: &str) -> Client {
    common::auth::backend_client(server, id, role, org, "TREAT")
}

/// AuditEvents matching `query`, waiting a little for the writer (it batches asynchronously).
async fn audit_events(client: &Client, query: &str, at_least: usize) -> Vec<Value> {
    for _ in 0..50 {
        let resp = client
            .get(&format!("AuditEvent?{query}&_count=200"))
            .await
            .expect_status(200);
        let events: Vec<Value> = resp.body["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["resource"].clone())
            .collect();
        if events.len() >= at_least {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {at_least} AuditEvents for {query}");
}

fn references(event: &Value) -> Vec<String> {
    event["entity"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            e["what"]["reference"]
                .as_str()
                .or(e["what"]["display"].as_str())
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn disclosures_and_denials_are_audited_and_the_youth_sees_who_looked() {
    let server = Server::start();
    let admin = server.client();
    let mut p = common::patient(YOUTH);
    p["id"] = json!(YOUTH);
    admin
        .put_json(&format!("Patient/{YOUTH}"), &p)
        .await
        .expect_status(201);
    let obs = admin
        .create(
            &json!({ "resourceType": "Observation", "status": "final", "code": { "text": "bp" },
            "subject": { "reference": format!("Patient/{YOUTH}") } }),
        )
        .await;
    let obs_id = obs["id"].as_str().unwrap().to_string();
    // The custodian reads (audited like everyone), a stranger is denied.
    let county = backend(&server, "county", "custodian", "county-org");
    county
        .get(&format!("Observation/{obs_id}"))
        .await
        .expect_status(200);
    let stranger = backend(&server, "stranger", "provider", "nowhere");
    stranger
        .get(&format!("Observation/{obs_id}"))
        .await
        .expect_outcome(404);

    let events = audit_events(
        &admin,
        &format!("patient={YOUTH}&entity=Observation/{obs_id}"),
        1,
    )
    .await;
    let read = events
        .iter()
        .find(|e| e["agent"][0]["who"]["identifier"]["value"] == "county")
        .expect("the county's read is audited");
    assert_eq!(read["subtype"][0]["code"], "read");
    assert_eq!(read["outcome"], "0");
    assert_eq!(
        read["agent"][0]["who"]["reference"],
        "Organization/county-org"
    );
    assert_eq!(read["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
    assert!(references(read).contains(&format!("Patient/{YOUTH}")));
    // The denial names what was asked, not whose it is.
    let all = audit_events(&admin, "outcome=4", 1).await;
    let denial = all
        .iter()
        .find(|e| e["agent"][0]["who"]["identifier"]["value"] == "stranger")
        .expect("the stranger's denied read is audited");
    assert!(
        references(denial).contains(&format!("Observation/{obs_id}")),
        "{denial}"
    );
    assert!(
        !references(denial).contains(&format!("Patient/{YOUTH}")),
        "a denial must not say whose it was"
    );

    // The youth searches the audit trail of her own record and sees the county looked.
    server.cli(&[
        "client",
        "add",
        "--id",
        "app",
        "--public",
        "--redirect-uri",
        "http://127.0.0.1:9/cb",
        "--scope",
        "launch/patient openid fhirUser patient/*.rs",
        "--purpose",
        "TREAT",
    ]);
    server.cli(&[
        "user",
        "add",
        "--username",
        "eve",
        "--password",
        "pw-123456",
        "--fhir-user",
        &format!("Patient/{YOUTH}"),
    ]);
    let token = common::auth::user_token(
        &server.origin(),
        &server.base,
        "app",
        "http://127.0.0.1:9/cb",
        "eve",
        "pw-123456",
        "launch/patient patient/*.rs",
    )
    .await;
    let youth = server
        .client()
        .with_token(token["access_token"].as_str().unwrap());
    let own = audit_events(&youth, &format!("patient={YOUTH}"), 1).await;
    assert!(
        own.iter()
            .any(|e| e["agent"][0]["who"]["identifier"]["value"] == "county")
    );
    // Another youth's audit trail is not hers to see.
    assert!(
        youth
            .get("AuditEvent?patient=someone-else")
            .await
            .expect_status(200)
            .body["entry"]
            .is_null()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_events_are_append_only_and_the_chain_detects_tampering() {
    let server = Server::start();
    let admin = server.client();
    for i in 0..5 {
        admin.create(&common::patient(&format!("Audited{i}"))).await;
    }
    let events = audit_events(&admin, "subtype=create", 5).await;
    let id = events[0]["id"].as_str().unwrap();
    // Nobody changes, deletes or forges an AuditEvent, the custodian included.
    let mut changed = events[0].clone();
    changed["outcome"] = json!("8");
    admin
        .put_json(&format!("AuditEvent/{id}"), &changed)
        .await
        .expect_outcome(403);
    admin
        .delete(&format!("AuditEvent/{id}"))
        .await
        .expect_outcome(403);
    let mut forged = events[0].clone();
    forged.as_object_mut().unwrap().remove("id");
    admin
        .post_json("AuditEvent", &forged)
        .await
        .expect_outcome(403);
    admin
        .request(Method::GET, &format!("AuditEvent/{id}"))
        .send()
        .await
        .expect_status(200);

    let verified = server.cli(&["audit", "verify"]);
    assert!(verified.contains("intact"), "{verified}");
    // Edit one stored event directly in the database: verify names it.
    let edited = tamper(
        &server.database_url(),
        "UPDATE resource_history SET body = replace(body, '\"outcome\":\"0\"', '\"outcome\":\"4\"') \
         WHERE rtype = 'AuditEvent' AND id = ?1",
        id,
    );
    assert_eq!(edited, 1);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_foster-passport"))
        .args(["audit", "verify", "--database", &server.database_url()])
        .output()
        .unwrap();
    assert!(!output.status.success(), "verify must fail after tampering");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(id), "the broken link is named: {stderr}");
}

/// Runs an UPDATE with one argument (`?1`) directly on the server's database, SQLite or
/// PostgreSQL, and returns how many rows it changed.
fn tamper(database_url: &str, sql: &str, arg: &str) -> u64 {
    if database_url.starts_with("postgres://") {
        let (url, sql, arg) = (
            database_url.to_string(),
            sql.replace("?1", "$1"),
            arg.to_string(),
        );
        // The synchronous client may not block inside the test's async runtime.
        return std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client.execute(&sql, &[&arg]).unwrap()
        })
        .join()
        .unwrap();
    }
    let db = rusqlite::Connection::open(database_url.trim_start_matches("sqlite://")).unwrap();
    db.execute(sql, [arg]).unwrap() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_events_are_searchable_on_what_they_record() {
    let server = Server::start();
    let admin = server.client();
    let mut p = common::patient(YOUTH);
    p["id"] = json!(YOUTH);
    admin
        .put_json(&format!("Patient/{YOUTH}"), &p)
        .await
        .expect_status(201);
    admin
        .get(&format!("Patient/{YOUTH}"))
        .await
        .expect_status(200);
    admin.get("Observation/nope").await.expect_outcome(404);
    audit_events(&admin, "subtype=read", 2).await;
    let count = |query: &'static str| {
        let admin = admin.clone();
        async move {
            admin
                .get(&format!("AuditEvent?{query}"))
                .await
                .expect_status(200)
                .body["entry"]
                .as_array()
                .map_or(0, Vec::len)
        }
    };
    let positive = [
        "action=R",
        "action=U",
        "altid=test-admin",
        "date=gt2020-01-01",
        "entity=Patient/youth-e",
        "entity-type=http://terminology.hl7.org/CodeSystem/audit-entity-type|1",
        "entity-role=http://terminology.hl7.org/CodeSystem/object-role|24",
        "outcome=0",
        "outcome=4",
        "patient=youth-e",
        "subtype=http://hl7.org/fhir/restful-interaction|update",
        "type=http://terminology.hl7.org/CodeSystem/audit-event-type|rest",
        "_lastUpdated=gt2020-01-01",
    ];
    for q in positive {
        assert!(count(q).await > 0, "AuditEvent?{q} finds the events");
    }
    for q in [
        "action=D",
        "outcome=8",
        "patient=someone-else",
        "date=lt2020-01-01",
        "altid=nobody",
    ] {
        assert_eq!(count(q).await, 0, "AuditEvent?{q} finds nothing");
    }
}
