//! Acknowledged writes survive a crash, and shutdown is graceful (issue 2, Storage: "An
//! acknowledged write survives `kill -9` of the server"; CLI: "SIGINT/SIGTERM shut it down
//! gracefully (in-flight requests finish, the database closes cleanly)").
//!
//! FHIR R4 http.html §3.1.0.8: "The server returns a 201 Created HTTP status code … " — a 201
//! (or 200) is a promise that the resource version exists; it must still exist after the
//! process dies at any instant.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Client, Server};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WRITERS: usize = 8;
const CREATES_PER_WRITER: usize = 40;

/// Runs `WRITERS` concurrent writers; each creates patients and updates every third one.
/// Returns every acknowledged version: id → (version, body sent).
async fn burst(client: &Client) -> BTreeMap<String, (u64, Value)> {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..CREATES_PER_WRITER {
                let mut p = common::patient(&format!("Burst{w}x{i}"));
                let resp = client.post_json("Patient", &p).await.expect_status(201);
                let id = resp.location_id().expect("Location");
                p["id"] = json!(id);
                if i % 3 == 0 {
                    p["active"] = json!(false);
                    client
                        .put_json(&format!("Patient/{id}"), &p)
                        .await
                        .expect_status(200);
                    acked.push((id, (2, p)));
                } else {
                    acked.push((id, (1, p)));
                }
            }
            acked
        }));
    }
    let mut all = BTreeMap::new();
    for task in tasks {
        all.extend(task.await.expect("writer task"));
    }
    all
}

async fn assert_all_present(client: &Client, acked: &BTreeMap<String, (u64, Value)>) {
    let mut missing = Vec::new();
    for (id, (version, sent)) in acked {
        let resp = client.get(&format!("Patient/{id}")).await;
        if resp.status != 200 {
            missing.push(format!("Patient/{id}: {}", resp.status));
            continue;
        }
        if resp.body["meta"]["versionId"] != version.to_string().as_str() {
            missing.push(format!(
                "Patient/{id}: version {} instead of {version}",
                resp.body["meta"]["versionId"]
            ));
            continue;
        }
        if common::without_server_meta(&resp.body) != *sent {
            missing.push(format!("Patient/{id}: content differs"));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost or wrong after restart:\n{}",
        missing.len(),
        acked.len(),
        missing.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_creates_survive_sigkill() {
    let mut server = Server::start();
    let client = server.client();
    let acked = burst(&client).await;
    assert_eq!(acked.len(), WRITERS * CREATES_PER_WRITER);

    server.kill9();
    server.restart();
    let client = server.client();
    assert_all_present(&client, &acked).await;

    // The history survived too: one entry per acknowledged version.
    let versions: u64 = acked.values().map(|(v, _)| *v).sum();
    let history = client.all_pages("Patient/_history?_count=100").await;
    assert_eq!(
        history.len() as u64,
        versions,
        "Patient history after SIGKILL"
    );

    // And the server keeps working on the recovered database.
    client.create(&common::patient("AfterCrash")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_while_writes_are_in_flight_keeps_every_acknowledged_one() {
    let mut server = Server::start();
    let client = server.client();
    let token = client.token().await.expect("admin token");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = client.clone();
        let tx = tx.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let mut p = common::patient(&format!("Flight{w}x{i}"));
                // Errors are expected once the server is killed: stop at the first one.
                let Ok(resp) = client
                    .http
                    .post(client.url("Patient"))
                    .bearer_auth(&token)
                    .header("content-type", common::FHIR_JSON)
                    .body(common::to_bytes(&p))
                    .send()
                    .await
                else {
                    return;
                };
                if resp.status() != 201 {
                    return;
                }
                let Some(id) = resp
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .and_then(common::parse_location)
                    .map(|l| l.id)
                else {
                    return;
                };
                p["id"] = json!(id);
                let _ = tx.send((id, (1u64, p)));
            }
        }));
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    for task in tasks {
        let _ = task.await;
    }
    let mut acked = BTreeMap::new();
    while let Some((id, v)) = rx.recv().await {
        acked.insert(id, v);
    }
    assert!(
        acked.len() >= 10,
        "only {} creates acknowledged in 1.5 s",
        acked.len()
    );

    server.restart();
    assert_all_present(&server.client(), &acked).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_shuts_down_gracefully() {
    let mut server = Server::start();
    let client = server.client();
    let acked = burst(&client).await;

    // A request in flight when SIGTERM arrives: headers and half the body are sent before the
    // signal, the rest after it. Graceful shutdown must let it finish.
    let mut p = common::patient("InFlight");
    p["text"] = json!({ "status": "generated",
        "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>", "y".repeat(100_000)) });
    let body = common::to_bytes(&p);
    let addr = server.origin().trim_start_matches("http://").to_string();
    let token = client.token().await.expect("admin token");
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST /fhir/Patient HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {}\r\n\
         Content-Length: {}\r\nAuthorization: Bearer {token}\r\nPrefer: return=minimal\r\n\
         Connection: close\r\n\r\n",
        common::FHIR_JSON,
        body.len()
    );
    let half = body.len() / 2;
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..half]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream
        .write_all(&body[half..])
        .await
        .expect("finish the in-flight body after SIGTERM");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read the in-flight response");
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "request in flight at SIGTERM: {}",
        response.lines().next().unwrap_or("<no response>")
    );
    let id = response
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("location:"))
        .and_then(|l| common::parse_location(l["location:".len()..].trim()))
        .expect("Location on the in-flight create")
        .id;

    let (mut server, exit) = tokio::task::spawn_blocking(move || {
        let exit = server.wait_exit(Duration::from_secs(20));
        (server, exit)
    })
    .await
    .unwrap();
    let exit = exit.unwrap_or_else(|| panic!("server still running 20 s after SIGTERM"));
    assert!(
        exit.success(),
        "exit status after SIGTERM: {exit:?}\n{}",
        server.stderr()
    );

    server.restart();
    let client = server.client();
    assert_all_present(&client, &acked).await;
    client.read("Patient", &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_shuts_down_gracefully() {
    let mut server = Server::start();
    let client = server.client();
    let created = client.create(&common::patient("BeforeInt")).await;
    let exit = tokio::task::spawn_blocking(move || {
        let exit = server.stop_with("INT");
        (server, exit)
    })
    .await
    .unwrap();
    let (mut server, exit) = exit;
    assert!(
        exit.success(),
        "exit status after SIGINT: {exit:?}\n{}",
        server.stderr()
    );
    server.restart();
    server
        .client()
        .read("Patient", created["id"].as_str().unwrap())
        .await;
}
