//! issue 7: several `foster-passport serve` processes on one PostgreSQL database behave as one
//! server. Two instances share a database and a public base URL (as behind a load balancer);
//! the tests race them: `If-Match` updates never fork a version, a client assertion's `jti`
//! used at one is refused at the other, a Consent revoked through one is enforced by the other
//! on the next request, and the audit hash chain written by both stays one chain.
//!
//! PostgreSQL only (`FP_TEST_BACKEND=postgres`; `.ci/run` runs the suite that way too).

mod common;

use common::auth::{client_credentials_form, form_body};
use common::{Client, Server};
use serde_json::{Value, json};

fn postgres_selected(test: &str) -> bool {
    if std::env::var("FP_TEST_BACKEND").as_deref() == Ok("postgres") {
        return true;
    }
    eprintln!("SKIPPED {test}: it needs FP_TEST_BACKEND=postgres (two servers on one database)");
    false
}

/// The same client, speaking to another instance.
fn at(client: &Client, instance: &Server) -> Client {
    let mut c = client.clone();
    c.base = instance.base.clone();
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_if_match_updates_on_two_instances_never_fork_a_version() {
    if !postgres_selected("racing_if_match_updates_on_two_instances_never_fork_a_version") {
        return;
    }
    let a = Server::start();
    let b = a.sibling();
    let (on_a, on_b) = (a.client(), b.client());
    let created = on_a.create(&common::patient("Race")).await;
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("Patient/{id}");

    const ROUNDS: u64 = 15;
    for round in 1..=ROUNDS {
        let etag = format!("W/\"{round}\"");
        let update = |client: &Client, who: &str| {
            let mut body = created.clone();
            body["name"][0]["given"] = json!([format!("{who}-{round}")]);
            client
                .request(reqwest::Method::PUT, &path)
                .header("If-Match", &etag)
                .json(&body)
                .send_unchecked()
        };
        let (ra, rb) = tokio::join!(update(&on_a, "a"), update(&on_b, "b"));
        let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
        statuses.sort();
        assert_eq!(
            statuses,
            [200, 412],
            "round {round}: exactly one instance wins ({}: {}, {}: {})",
            ra.url,
            ra.text,
            rb.url,
            rb.text
        );
        let winner = if ra.status == 200 { &ra } else { &rb };
        assert_eq!(
            winner.body["meta"]["versionId"],
            json!((round + 1).to_string())
        );
    }

    // One line of versions, the same from either instance.
    let history = on_b
        .get(&format!("{path}/_history?_count=100"))
        .await
        .expect_status(200);
    let mut versions: Vec<u64> = history.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["resource"]["meta"]["versionId"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    versions.sort();
    assert_eq!(versions, (1..=ROUNDS + 1).collect::<Vec<_>>());
    let read_a = on_a.read("Patient", &id).await;
    let read_b = on_b.read("Patient", &id).await;
    assert_eq!(read_a, read_b);
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_assertion_used_at_one_instance_is_refused_at_the_other() {
    if !postgres_selected("a_client_assertion_used_at_one_instance_is_refused_at_the_other") {
        return;
    }
    let a = Server::start();
    let b = a.sibling();
    // A registered backend client; both instances know it (it is in the database).
    let key = common::auth::BackendKey::generate(
        a.data_dir(),
        "replayer",
        jsonwebtoken::Algorithm::ES384,
    );
    let jwks = common::auth::BackendKey::jwks_path(
        a.data_dir(),
        "replayer",
        jsonwebtoken::Algorithm::ES384,
    );
    a.cli(&[
        "client",
        "add",
        "--id",
        "replayer",
        "--scope",
        "system/*.rs",
        "--jwks",
        jwks.to_str().unwrap(),
    ]);
    // The assertion's audience is the shared public token endpoint, whichever instance
    // receives it.
    let audience = a.token_url();
    let http = reqwest::Client::new();
    let post = |instance: &Server, assertion: &str| {
        let url = format!("{}/auth/token", instance.origin());
        let body = form_body(&client_credentials_form(assertion, "system/*.rs"));
        let request = http
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        async move {
            let resp = request.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    for (first, second) in [(&a, &b), (&b, &a)] {
        let assertion = key.assertion(
            &audience,
            json!({ "jti": uuid::Uuid::new_v4().to_string() }),
        );
        let (status, body) = post(first, &assertion).await;
        assert_eq!(status, 200, "a fresh assertion is accepted: {body}");
        assert!(body["access_token"].is_string());
        let (status, body) = post(second, &assertion).await;
        assert_eq!(
            status, 401,
            "the replay is refused by the other instance: {body}"
        );
        assert_eq!(body["error"], "invalid_client", "{body}");
    }

    // Racing the same assertion at both at once: exactly one token.
    for _ in 0..5 {
        let assertion = key.assertion(
            &audience,
            json!({ "jti": uuid::Uuid::new_v4().to_string() }),
        );
        let ((sa, _), (sb, _)) = tokio::join!(post(&a, &assertion), post(&b, &assertion));
        let mut statuses = [sa, sb];
        statuses.sort();
        assert_eq!(statuses, [200, 401], "one use of a jti across instances");
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consent_revoked_through_one_instance_is_enforced_by_the_other_at_once() {
    if !postgres_selected("a_consent_revoked_through_one_instance_is_enforced_by_the_other_at_once")
    {
        return;
    }
    let a = Server::start();
    let b = a.sibling();
    let admin_a = a.client();
    let mut youth = common::patient("Revoked");
    youth["id"] = json!("youth-r");
    admin_a
        .put_json("Patient/youth-r", &youth)
        .await
        .expect_status(201);
    admin_a
        .put_json(
            "Organization/plan-org",
            &json!({ "resourceType": "Organization", "id": "plan-org", "name": "Plan" }),
        )
        .await
        .expect_status(201);
    admin_a
        .put_json(
            "Condition/cond-r",
            &json!({ "resourceType": "Condition", "id": "cond-r", "code": { "text": "asthma" },
                     "subject": { "reference": "Patient/youth-r" } }),
        )
        .await
        .expect_status(201);
    let plan = common::auth::backend_client(&a, "plan-client", "plan", "plan-org", "TREAT");
    let (plan_a, plan_b) = (at(&plan, &a), at(&plan, &b));

    // Before any consent: hidden on both (and the view is now cached on both).
    for client in [&plan_a, &plan_b] {
        client.get("Condition/cond-r").await.expect_outcome(404);
    }
    let mut consent = json!({
        "resourceType": "Consent", "id": "c-plan", "status": "active",
        "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy" }] },
        "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0" }] }],
        "patient": { "reference": "Patient/youth-r" },
        "policyRule": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN" }] },
        "provision": { "type": "permit",
            "actor": [{ "role": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP" }] },
                        "reference": { "reference": "Organization/plan-org" } }],
            "purpose": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "TREAT" }] }
    });
    // Granted through B: A releases at once.
    at(&admin_a, &b)
        .put_json("Consent/c-plan", &consent)
        .await
        .expect_status(201);
    for client in [&plan_a, &plan_b] {
        client.get("Condition/cond-r").await.expect_status(200);
    }
    // Revoked through A: B refuses on the very next request, and searches agree.
    consent["status"] = json!("inactive");
    admin_a
        .put_json("Consent/c-plan", &consent)
        .await
        .expect_status(200);
    plan_b.get("Condition/cond-r").await.expect_outcome(404);
    let search = plan_b
        .get("Condition?patient=youth-r&_total=accurate")
        .await
        .expect_status(200);
    assert_eq!(search.body["total"], 0, "{}", search.text);
    plan_a.get("Condition/cond-r").await.expect_outcome(404);
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_writing_audit_events_keep_one_hash_chain() {
    if !postgres_selected("two_instances_writing_audit_events_keep_one_hash_chain") {
        return;
    }
    let a = Server::start();
    let b = a.sibling();
    let (on_a, on_b) = (a.client(), b.client());
    let patient = on_a.create(&common::patient("Chain")).await;
    let path = format!("Patient/{}", patient["id"].as_str().unwrap());
    // Both instances audit every read, concurrently.
    let reads = |client: Client, path: String| async move {
        for _ in 0..40 {
            client.get(&path).await.expect_status(200);
        }
    };
    tokio::join!(
        reads(on_a.clone(), path.clone()),
        reads(on_b.clone(), path.clone()),
        reads(on_a.clone(), path.clone()),
        reads(on_b.clone(), path.clone()),
    );
    // 160 audited reads, written by two writers racing for the chain's head. The trail is
    // written asynchronously: wait until every read is in it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let count = loop {
        let count = on_b
            .get("AuditEvent?_summary=count")
            .await
            .expect_status(200)
            .body["total"]
            .as_u64()
            .unwrap();
        if count >= 160 {
            break count;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {count} events after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let verified = a.cli(&["audit", "verify"]);
    assert!(verified.contains("the chain is intact"), "{verified}");
    let checked: u64 = verified.split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        checked >= count,
        "verify walks every event: {verified} (search counted {count})"
    );
    drop(b);
}
