//! issue 7: "clean errors when the database is down (503 with an OperationOutcome; the process
//! keeps running and recovers when the database returns)".
//!
//! PostgreSQL only (`FP_TEST_BACKEND=postgres`): the server's own database is closed to
//! connections and its sessions ended, which is what a database restart looks like to the pool,
//! without stopping the PostgreSQL that other tests share.

mod common;

use std::time::{Duration, Instant};

use common::Server;

/// Runs statements on the server's maintenance database `test`, off the async runtime.
fn admin(sql: String) {
    std::thread::spawn(move || {
        let mut client =
            postgres::Client::connect("postgres://postgres@127.0.0.1:5432/test", postgres::NoTls)
                .expect("connect to the test PostgreSQL");
        client.batch_execute(&sql).expect("admin statement");
    })
    .join()
    .expect("admin thread");
}

#[tokio::test(flavor = "multi_thread")]
async fn database_outage_answers_503_and_the_server_recovers() {
    if std::env::var("FP_TEST_BACKEND").as_deref() != Ok("postgres") {
        eprintln!(
            "SKIPPED database_outage_answers_503_and_the_server_recovers: \
             it needs FP_TEST_BACKEND=postgres (it closes the server's PostgreSQL database)"
        );
        return;
    }
    let mut server = Server::start();
    let client = server.client();
    let created = client.create(&common::patient("Outage")).await;
    let path = format!("Patient/{}", created["id"].as_str().unwrap());
    client.get("/healthz").await.expect_status(200);

    let url = server.database_url();
    let db = url.rsplit('/').next().unwrap().to_string();
    admin(format!(
        "ALTER DATABASE {db} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
    ));

    client.get("/healthz").await.expect_status(503);
    client.get(&path).await.expect_outcome(503);
    assert!(server.is_running(), "the server must survive the outage");

    admin(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get("/healthz").await.status != 200 {
        assert!(Instant::now() < deadline, "no recovery within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let read = client.get(&path).await.expect_status(200);
    assert_eq!(read.body["id"], created["id"]);
    client.create(&common::patient("AfterOutage")).await;
}
