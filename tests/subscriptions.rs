//! Subscriptions (issue 6; R4 Subscription, rest-hook): a change to a watched resource notifies
//! each subscriber whose criteria it matches — once, signed with the HMAC secret the client
//! registered — and only when the subscribing client may read the resource under the youth's
//! consents; a subscriber that cannot be reached sees `status: error` and why.

mod common;

use std::time::Duration;

use common::{Client, Server};
use serde_json::{Value, json};

fn subscription(criteria: &str, endpoint: &str) -> Value {
    json!({
        "resourceType": "Subscription", "status": "requested",
        "reason": "follow the youth's care team", "criteria": criteria,
        "channel": { "type": "rest-hook", "endpoint": endpoint,
                     "payload": "application/fhir+json", "header": ["X-Test: hello"] }
    })
}

fn subscriber(server: &Server, id: &str, org: &str, secret: &str) -> Client {
    common::auth::backend_client_registered(
        server,
        id,
        "provider",
        org,
        "TREAT",
        "system/*.cruds",
        &["--webhook-secret", secret],
    )
}

/// Poll until `f` holds (the worker runs every 100 ms here).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_notifies_the_consented_subscriber_once_signed() {
    let server = Server::builder()
        .env("FP_SUBSCRIPTION_INTERVAL_MS", "100")
        .start();
    let admin = server.client();
    let (hooks, got) = common::webhook_receiver().await;
    let mut youth = common::patient("youth-n");
    youth["id"] = json!("youth-n");
    for r in [
        youth,
        json!({ "resourceType": "Organization", "id": "sub-ok", "name": "ok" }),
        json!({ "resourceType": "Organization", "id": "sub-denied", "name": "denied" }),
        json!({ "resourceType": "CareTeam", "id": "ct-n", "status": "active",
                "subject": { "reference": "Patient/youth-n" } }),
        json!({ "resourceType": "Consent", "id": "c-n", "status": "active",
                "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy" }] },
                "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0" }] }],
                "patient": { "reference": "Patient/youth-n" },
                "provision": { "type": "permit", "actor": [{
                    "role": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP" }] },
                    "reference": { "reference": "Organization/sub-ok" } }] } }),
    ] {
        let path = format!(
            "{}/{}",
            r["resourceType"].as_str().unwrap(),
            r["id"].as_str().unwrap()
        );
        admin.put_json(&path, &r).await.expect_status(201);
    }
    let ok = subscriber(&server, "sub-ok", "sub-ok", "s3cret-ok");
    let denied = subscriber(&server, "sub-denied", "sub-denied", "s3cret-denied");
    let created = ok
        .post_json(
            "Subscription",
            &subscription("CareTeam?patient=Patient/youth-n", &format!("{hooks}/ok")),
        )
        .await
        .expect_status(201);
    assert_eq!(created.body["status"], "active", "{}", created.text);
    let sub_id = created.body["id"].as_str().unwrap().to_string();
    denied
        .post_json(
            "Subscription",
            &subscription(
                "CareTeam?patient=Patient/youth-n",
                &format!("{hooks}/denied"),
            ),
        )
        .await
        .expect_status(201);
    // Subscriptions are found by their criteria and status.
    let found = admin
        .get("Subscription?criteria=CareTeam&status=active")
        .await
        .expect_status(200);
    assert_eq!(found.body["total"], 2, "{}", found.text);
    let none = admin
        .get("Subscription?criteria=Patient")
        .await
        .expect_status(200);
    assert_eq!(none.body["total"], 0);
    // What cannot be watched is refused.
    for (criteria, endpoint) in [
        ("Observation?subject=Patient/youth-n", format!("{hooks}/ok")),
        ("CareTeam?nonsense=1", format!("{hooks}/ok")),
        ("CareTeam", "ftp://example.org/x".to_string()),
    ] {
        ok.post_json("Subscription", &subscription(criteria, &endpoint))
            .await
            .expect_status(422);
    }

    // The care team changes: the consented subscriber hears of it once, signed.
    let mut team = admin.get("CareTeam/ct-n").await.expect_status(200).body;
    team["name"] = json!("Team N");
    admin
        .put_json("CareTeam/ct-n", &team)
        .await
        .expect_status(200);
    eventually("the subscriber is notified", || !got.lock().is_empty()).await;
    // A change that matches no criteria notifies nobody.
    let mut p = admin.get("Patient/youth-n").await.expect_status(200).body;
    p["active"] = json!(false);
    admin
        .put_json("Patient/youth-n", &p)
        .await
        .expect_status(200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let received = got.lock().clone();
    assert_eq!(received.len(), 1, "one notification: {received:?}");
    let (name, headers, body) = &received[0];
    assert_eq!(name, "ok", "the denied subscriber hears nothing");
    let resource: Value = serde_json::from_str(body).unwrap();
    assert_eq!(resource["id"], "ct-n");
    assert_eq!(resource["name"], "Team N");
    assert_eq!(
        headers["x-foster-passport-signature"].to_str().unwrap(),
        foster_passport::subscriptions::signature("s3cret-ok", body.as_bytes())
    );
    assert_ne!(
        headers["x-foster-passport-signature"].to_str().unwrap(),
        foster_passport::subscriptions::signature("another secret", body.as_bytes())
    );
    assert_eq!(headers["x-foster-passport-subscription"], sub_id.as_str());
    assert_eq!(headers["x-test"], "hello");

    // A subscriber that cannot be reached: retried, then the Subscription says why.
    let broken = ok
        .post_json(
            "Subscription",
            &subscription(
                "CareTeam?patient=Patient/youth-n",
                "http://127.0.0.1:9/closed",
            ),
        )
        .await
        .expect_status(201);
    let broken_id = broken.body["id"].as_str().unwrap().to_string();
    team["name"] = json!("Team N, again");
    admin
        .put_json("CareTeam/ct-n", &team)
        .await
        .expect_status(200);
    let mut last = Value::Null;
    for _ in 0..100 {
        last = admin
            .get(&format!("Subscription/{broken_id}"))
            .await
            .expect_status(200)
            .body;
        if last["status"] == "error" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["status"], "error", "{last:#}");
    assert!(
        last["error"].as_str().unwrap().contains("127.0.0.1:9"),
        "{last:#}"
    );
    eventually("the working subscriber hears of the second change", || {
        got.lock().iter().filter(|(n, _, _)| n == "ok").count() == 2
    })
    .await;
    assert!(got.lock().iter().all(|(n, _, _)| n == "ok"));

    // Each notification is a disclosure, audited.
    let mut audited = 0;
    for _ in 0..50 {
        let events = admin
            .get("AuditEvent?altid=sub-ok&subtype=operation")
            .await
            .expect_status(200);
        audited = events.body["entry"].as_array().map_or(0, Vec::len);
        if audited >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(audited >= 2, "notifications are audited ({audited})");
}
