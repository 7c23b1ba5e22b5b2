//! issue 7: searches can be served by a read replica (`serve --read-database`), while reads by
//! id, history and writes stay on the primary. A `migrate` copy of the primary stands in for a
//! standby that has not replayed the newest writes yet: what a search finds shows which
//! database answered it.
//!
//! PostgreSQL only (`FP_TEST_BACKEND=postgres`): replicas are a PostgreSQL deployment.

mod common;

use common::{PgDatabase, Server};

#[tokio::test(flavor = "multi_thread")]
async fn searches_go_to_the_read_replica_and_everything_else_to_the_primary() {
    if std::env::var("FP_TEST_BACKEND").as_deref() != Ok("postgres") {
        eprintln!(
            "SKIPPED searches_go_to_the_read_replica_and_everything_else_to_the_primary: \
             it needs FP_TEST_BACKEND=postgres"
        );
        return;
    }
    let primary = Server::start();
    let before = primary
        .client()
        .create(&common::patient("Replicated"))
        .await;

    // The "standby": everything written so far.
    let replica = PgDatabase::create();
    let copied = std::process::Command::new(env!("CARGO_BIN_EXE_foster-passport"))
        .args([
            "migrate",
            "--from",
            &primary.database_url(),
            "--to",
            replica.url(),
        ])
        .output()
        .unwrap();
    assert!(copied.status.success(), "{copied:?}");

    let server = primary.sibling_with(&["--read-database", replica.url()]);
    let client = server.client();
    let after = client.create(&common::patient("Unreplicated")).await;
    let after_id = after["id"].as_str().unwrap();

    // Searches: the replica, which has the first patient and not the second.
    let found = client
        .get("Patient?family=Replicated&_total=accurate")
        .await
        .expect_status(200);
    assert_eq!(found.body["total"], 1, "{}", found.text);
    assert_eq!(found.body["entry"][0]["resource"]["id"], before["id"]);
    let lagging = client
        .get(&format!("Patient?_id={after_id}&_total=accurate"))
        .await
        .expect_status(200);
    assert_eq!(
        lagging.body["total"], 0,
        "the replica has not seen it: {}",
        lagging.text
    );

    // Reads by id, history and conditional writes: the primary, which has both.
    client
        .get(&format!("Patient/{after_id}"))
        .await
        .expect_status(200);
    client
        .get(&format!("Patient/{after_id}/_history"))
        .await
        .expect_status(200);
    let primary_search = primary
        .client()
        .get(&format!("Patient?_id={after_id}&_total=accurate"))
        .await
        .expect_status(200);
    assert_eq!(primary_search.body["total"], 1);
    drop(server);
}
