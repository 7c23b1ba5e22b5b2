//! issue 7: `foster-passport migrate --from sqlite://A --to postgres://B` copies a whole
//! database, so a county can grow from the embedded default without losing anything: every
//! resource and version (deletions too, with their times), the audit trail with its hash
//! chain intact, and the registered clients and keys; the copy serves searches from index
//! rows derived again. The source is always SQLite; the target is a fresh PostgreSQL database
//! under `FP_TEST_BACKEND=postgres` (as `.ci/run` runs it), another SQLite file otherwise.

mod common;

use common::{Client, PgDatabase, Server};
use serde_json::{Value, json};

/// Every history entry as (request method, request url, resource), oldest first.
async fn history(client: &Client, path: &str) -> Vec<(String, String, Value)> {
    let mut entries: Vec<_> = client
        .all_pages(path)
        .await
        .into_iter()
        .map(|e| {
            (
                e["request"]["method"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["request"]["url"].as_str().unwrap_or_default().to_string(),
                e.get("resource").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    entries.reverse();
    entries
}

/// How many events `audit verify` checked (it fails on a broken chain).
fn verified_events(output: &str) -> u64 {
    assert!(output.contains("the chain is intact"), "{output}");
    output.split_whitespace().next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_copies_every_version_audit_event_and_client_round_trip() {
    let mut source = Server::builder().sqlite().start();
    let admin = source.client();

    // A record with history: updates, a deletion, a consent and its care team.
    let youth = admin.create(&common::patient("Migrant")).await;
    let youth_id = youth["id"].as_str().unwrap().to_string();
    for given in ["Ana", "Ana Maria"] {
        let mut revised = youth.clone();
        revised["name"][0]["given"] = json!([given]);
        admin
            .put_json(&format!("Patient/{youth_id}"), &revised)
            .await
            .expect_status(200);
    }
    let obs = admin
        .create(&json!({ "resourceType": "Observation", "status": "final",
                          "code": { "text": "weight" },
                          "subject": { "reference": format!("Patient/{youth_id}") } }))
        .await;
    let obs_path = format!("Observation/{}", obs["id"].as_str().unwrap());
    admin.delete(&obs_path).await.expect_status(204);
    admin
        .create(
            &json!({ "resourceType": "Condition", "code": { "text": "asthma" },
                          "subject": { "reference": format!("Patient/{youth_id}") } }),
        )
        .await;
    for _ in 0..5 {
        admin
            .get(&format!("Patient/{youth_id}"))
            .await
            .expect_status(200);
    }

    let versions_before = history(&admin, "_history?_count=50").await;
    let audit_before = history(&admin, "AuditEvent/_history?_count=50").await;
    assert!(versions_before.len() >= 6, "{}", versions_before.len());
    assert!(!audit_before.is_empty());
    // A clean stop writes out the audit queue; nothing writes to the source after it.
    source.terminate();
    let source_events = verified_events(&source.cli(&["audit", "verify"]));

    let pg =
        (std::env::var("FP_TEST_BACKEND").as_deref() == Ok("postgres")).then(PgDatabase::create);
    let target_url = match &pg {
        Some(db) => db.url().to_string(),
        None => format!(
            "sqlite://{}",
            source.data_dir().join("copy.sqlite").display()
        ),
    };
    let migrate = |from: &str, to: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_foster-passport"))
            .args(["migrate", "--from", from, "--to", to])
            .output()
            .expect("run migrate")
    };
    let copied = migrate(&source.database_url(), &target_url);
    let stdout = String::from_utf8_lossy(&copied.stdout);
    assert!(
        copied.status.success(),
        "migrate failed: {stdout}{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert!(
        stdout.contains(&format!("({source_events} AuditEvents)")),
        "every audit row is copied: {stdout}"
    );

    // The copy's chain verifies, with every event.
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_foster-passport"))
        .args(["audit", "verify", "--database", &target_url])
        .output()
        .unwrap();
    assert_eq!(
        verified_events(&String::from_utf8_lossy(&verify.stdout)),
        source_events
    );

    // A second run refuses: the target is no longer empty.
    let again = migrate(&source.database_url(), &target_url);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // A server on the copy: the source's custodian client and signing keys work there.
    let mut target = source.successor(&target_url);
    let copy = target.client();
    assert_eq!(history(&copy, "_history?_count=50").await, versions_before);
    let audit_after = history(&copy, "AuditEvent/_history?_count=50").await;
    assert_eq!(
        &audit_after[..audit_before.len()],
        &audit_before[..],
        "the audit trail arrives identical, in order"
    );
    // Index rows were derived again: searches, chains and current reads work on the copy.
    let found = copy
        .get("Patient?given=Ana%20Maria&_total=accurate")
        .await
        .expect_status(200);
    assert_eq!(found.body["total"], 1, "{}", found.text);
    let chained = copy
        .get(&format!(
            "Condition?subject:Patient.given=Ana%20Maria&patient={youth_id}"
        ))
        .await
        .expect_status(200);
    assert_eq!(chained.body["entry"].as_array().map_or(0, Vec::len), 1);
    let old_name = copy
        .get("Patient?given:exact=Ana&_total=accurate")
        .await
        .expect_status(200);
    assert_eq!(
        old_name.body["total"], 0,
        "only the current version is indexed"
    );
    copy.get(&obs_path).await.expect_outcome(410);
    let first = copy
        .get(&format!("Patient/{youth_id}/_history/1"))
        .await
        .expect_status(200);
    assert_eq!(first.body["meta"], youth["meta"]);
    // The copy keeps writing one chain after the copied one.
    copy.create(&common::patient("AfterMigration")).await;
    target.terminate();
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_foster-passport"))
        .args(["audit", "verify", "--database", &target_url])
        .output()
        .unwrap();
    assert!(
        verified_events(&String::from_utf8_lossy(&verify.stdout)) > source_events,
        "the copy's server extends the chain"
    );
    drop(pg);
}
