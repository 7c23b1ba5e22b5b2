//! `POST Patient/[id]/$change-placement` end to end on the demo record (issue 6): Maria moves
//! from Sandra to a new resource family in San Diego County, outside her plan's service area.
//! The old caregiver loses access and the new one gains it, open authorizations stay, the
//! hand-off and Ombudsman Tasks and the Provenance are written, and of two subscribers to her
//! care team only the one her consents let read it gets a signed notification.

mod common;

use std::time::Duration;

use common::auth::backend_client_registered;
use common::{Client, Server};
use serde_json::{Value, json};

const MARIA: &str = "youth-maria-lopez";
const COUNTY: &str = "http://foster-passport.example/fhir/CodeSystem/california-county";

fn placement(family: &str, effective: &str, county: Option<&str>) -> Value {
    let mut parameter = vec![
        json!({ "name": "resourceFamily", "valueReference": { "reference": format!("RelatedPerson/{family}") } }),
        json!({ "name": "effectiveDate", "valueDate": effective }),
        json!({ "name": "reason", "valueString": "placement with a relative" }),
    ];
    if let Some(code) = county {
        parameter
            .push(json!({ "name": "county", "valueCoding": { "system": COUNTY, "code": code } }));
    }
    json!({ "resourceType": "Parameters", "parameter": parameter })
}

fn output<'a>(params: &'a Value, name: &str) -> Option<&'a str> {
    params["parameter"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["valueReference"]["reference"]
        .as_str()
}

async fn condition_ids(client: &Client) -> usize {
    let resp = client
        .get(&format!("Condition?patient={MARIA}"))
        .await
        .expect_status(200);
    resp.body["entry"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_placement_change_moves_access_keeps_authorizations_and_notifies() {
    let server = Server::builder()
        .arg("--demo")
        .env("FP_SUBSCRIPTION_INTERVAL_MS", "100")
        .start();
    let admin = server.client();
    let (hooks, got) = common::webhook_receiver().await;
    let today = foster_passport::search::child_welfare::today();

    // The new family, and a login for it.
    admin
        .put_json(
            "RelatedPerson/rf-new-family",
            &json!({ "resourceType": "RelatedPerson", "id": "rf-new-family",
                    "patient": { "reference": format!("Patient/{MARIA}") },
                    "name": [{ "family": "Alvarez", "given": ["Rosa"] }] }),
        )
        .await
        .expect_status(201);
    server.cli(&[
        "user",
        "add",
        "--username",
        "rosa",
        "--password",
        "rosa-123456",
        "--fhir-user",
        "RelatedPerson/rf-new-family",
    ]);
    let sandra = common::auth::demo_user(&server, "sandra", "passport-demo").await;
    let rosa = common::auth::demo_user(&server, "rosa", "rosa-123456").await;
    let before = condition_ids(&sandra).await;
    assert!(before > 0);
    assert_eq!(condition_ids(&rosa).await, 0);
    let open_authorizations = admin
        .get(&format!("ServiceRequest?patient={MARIA}&status=active"))
        .await
        .expect_status(200)
        .body["total"]
        .clone();

    // Two subscribers to her care team: the plan (on it) and a clinic that is not.
    for (id, org) in [
        ("sub-plan", "sierra-poppy-health-plan"),
        ("sub-clinic", "capitol-oaks-pediatrics"),
    ] {
        let client = backend_client_registered(
            &server,
            id,
            "plan",
            org,
            "TREAT",
            "system/*.cruds",
            &["--webhook-secret", &format!("secret-{id}")],
        );
        client
            .post_json(
                "Subscription",
                &json!({ "resourceType": "Subscription", "status": "requested", "reason": "placements",
                         "criteria": format!("CareTeam?patient=Patient/{MARIA}"),
                         "channel": { "type": "rest-hook", "endpoint": format!("{hooks}/{id}"),
                                      "payload": "application/fhir+json" } }),
            )
            .await
            .expect_status(201);
    }

    // Only a county or custodian client may move a youth; a provider may not.
    let provider = backend_client_registered(
        &server,
        "ehr",
        "provider",
        "jacaranda-pediatrics",
        "TREAT",
        "system/*.cruds",
        &[],
    );
    provider
        .post_json(
            &format!("Patient/{MARIA}/$change-placement"),
            &placement("rf-new-family", &today.to_string(), Some("06073")),
        )
        .await
        .expect_status(403);
    let county = backend_client_registered(
        &server,
        "county-cws",
        "county",
        "la-dcfs",
        "COC",
        "system/*.cruds",
        &[],
    );
    // Bad input changes nothing.
    for (body, status) in [
        (
            json!({ "resourceType": "Parameters", "parameter": [
            { "name": "resourceFamily", "valueReference": { "reference": "RelatedPerson/rf-new-family" } }] }),
            422,
        ),
        (placement("rf-jayden-nobody", &today.to_string(), None), 422),
        (
            placement("rf-karen-whitaker-jayden", &today.to_string(), None),
            422,
        ),
        (placement("rf-new-family", "not-a-date", None), 400),
        (
            json!({ "resourceType": "Parameters", "parameter": [{ "name": "bogus", "valueString": "x" }] }),
            400,
        ),
        (
            placement("rf-new-family", &today.to_string(), Some("99999")),
            422,
        ),
    ] {
        county
            .post_json(&format!("Patient/{MARIA}/$change-placement"), &body)
            .await
            .expect_status(status);
    }
    assert_eq!(condition_ids(&rosa).await, 0, "nothing changed yet");
    // A youth the county may not see is a youth that does not exist.
    let hidden = county
        .post_json(
            "Patient/youth-ethan-vang/$change-placement",
            &placement("rf-new-family", &today.to_string(), None),
        )
        .await;
    let missing = county
        .post_json(
            "Patient/no-such-youth/$change-placement",
            &placement("rf-new-family", &today.to_string(), None),
        )
        .await;
    assert_eq!(hidden.status, 404, "{}", hidden.text);
    assert_eq!(
        hidden.outcome_text().replace("youth-ethan-vang", "X"),
        missing.outcome_text().replace("no-such-youth", "X")
    );

    // The move, to San Diego County (outside the plan's Los Angeles, Fresno and Sacramento).
    let moved = county
        .post_json(
            &format!("Patient/{MARIA}/$change-placement"),
            &placement("rf-new-family", &today.to_string(), Some("06073")),
        )
        .await
        .expect_status(200);
    let team_ref = output(&moved.body, "careTeam").unwrap().to_string();
    let handoff_ref = output(&moved.body, "handoffTask").unwrap().to_string();
    let ombudsman_ref = output(&moved.body, "ombudsmanTask")
        .expect("outside the service area")
        .to_string();
    let provenance_ref = output(&moved.body, "provenance").unwrap().to_string();

    // Access followed the youth: the old caregiver lost it, the new one has it.
    assert_eq!(condition_ids(&sandra).await, 0);
    sandra
        .get(&format!("Patient/{MARIA}"))
        .await
        .expect_status(404);
    assert_eq!(condition_ids(&rosa).await, before);
    rosa.get(&format!("Patient/{MARIA}"))
        .await
        .expect_status(200);
    // Open authorizations carried over.
    assert_eq!(
        admin
            .get(&format!("ServiceRequest?patient={MARIA}&status=active"))
            .await
            .expect_status(200)
            .body["total"],
        open_authorizations
    );
    // The care team, the county episode, the tasks and the provenance.
    let team = admin.get(&team_ref).await.expect_status(200).body;
    let families: Vec<(String, Value)> = team["participant"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["role"][0]["coding"][0]["code"] == "resource-family")
        .map(|p| {
            (
                p["member"]["reference"].as_str().unwrap().to_string(),
                p["period"].clone(),
            )
        })
        .collect();
    let yesterday = today.pred_opt().unwrap().to_string();
    assert!(
        families.contains(&(
            "RelatedPerson/rf-sandra-okoye".into(),
            json!({ "start": "2026-06-15", "end": yesterday })
        )),
        "{families:?}"
    );
    assert!(
        families.contains(&(
            "RelatedPerson/rf-new-family".into(),
            json!({ "start": today.to_string() })
        )),
        "{families:?}"
    );
    let maria = admin
        .get(&format!("Patient/{MARIA}"))
        .await
        .expect_status(200)
        .body;
    let episodes = maria["extension"].to_string();
    assert!(episodes.contains("06073"), "{episodes}");
    assert!(
        episodes.contains(&yesterday),
        "the LA episode ends the day before: {episodes}"
    );
    let handoff = admin.get(&handoff_ref).await.expect_status(200).body;
    assert_eq!(handoff["for"]["reference"], format!("Patient/{MARIA}"));
    assert_eq!(handoff["owner"]["reference"], "Organization/la-dcfs");
    // Due 48 hours after the placement began (midnight in California).
    let due = chrono::DateTime::parse_from_rfc3339(
        handoff["restriction"]["period"]["end"].as_str().unwrap(),
    )
    .unwrap();
    let began = today
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_local_timezone(chrono_tz::America::Los_Angeles)
        .earliest()
        .unwrap();
    assert_eq!(
        due.signed_duration_since(began),
        chrono::TimeDelta::hours(48)
    );
    let ombudsman = admin.get(&ombudsman_ref).await.expect_status(200).body;
    assert_eq!(
        ombudsman["owner"]["reference"],
        "Practitioner/cwl-gloria-benavides"
    );
    let provenance = admin.get(&provenance_ref).await.expect_status(200).body;
    assert_eq!(
        provenance["agent"][0]["who"]["reference"],
        "Organization/la-dcfs"
    );
    assert!(
        provenance["target"]
            .to_string()
            .contains("CareTeam/careteam-maria-lopez")
    );
    assert_eq!(provenance["reason"][0]["text"], "placement with a relative");

    // One signed notification to the plan, none to the clinic.
    for _ in 0..100 {
        if !got.lock().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let received = got.lock().clone();
    assert_eq!(received.len(), 1, "{received:?}");
    let (name, headers, body) = &received[0];
    assert_eq!(name, "sub-plan");
    assert_eq!(
        headers["x-foster-passport-signature"].to_str().unwrap(),
        foster_passport::subscriptions::signature("secret-sub-plan", body.as_bytes())
    );
    let notified: Value = serde_json::from_str(body).unwrap();
    assert!(notified.to_string().contains("rf-new-family"));

    // Back to Los Angeles County, inside the service area: no Ombudsman task this time.
    let again = county
        .post_json(
            &format!("Patient/{MARIA}/$change-placement"),
            &placement("rf-sandra-okoye", &today.to_string(), Some("06037")),
        )
        .await
        .expect_status(200);
    assert!(
        output(&again.body, "ombudsmanTask").is_none(),
        "{}",
        again.text
    );
}
