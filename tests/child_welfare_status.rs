//! `Patient?child-welfare-status=` (issue 6; DESIGN.md section 6): the five definitions of child
//! welfare-involved youth, derived from the Patient's child welfare episodes and birth date on
//! the day of the query. Each status is checked at its edges, relative to today: the 18th, 21st
//! and 26th birthdays falling today or tomorrow, foster care and family maintenance that ended
//! 11 and 13 months ago.

mod common;

use chrono::{Months, NaiveDate};
use common::Client;
use serde_json::{Value, json};

const EPISODE: &str =
    "http://foster-passport.example/fhir/StructureDefinition/child-welfare-episode";
const STATUS_SYSTEM: &str = "http://foster-passport.example/fhir/CodeSystem/child-welfare-status";

/// The server counts ages and months by the date in California.
fn today() -> NaiveDate {
    foster_passport::search::child_welfare::today()
}

fn years_ago(n: u32) -> NaiveDate {
    today().checked_sub_months(Months::new(12 * n)).unwrap()
}

fn months_ago(n: u32) -> NaiveDate {
    today().checked_sub_months(Months::new(n)).unwrap()
}

fn day(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn episode(service: &str, start: NaiveDate, end: Option<NaiveDate>) -> Value {
    let mut period = json!({ "start": day(start) });
    if let Some(end) = end {
        period["end"] = json!(day(end));
    }
    json!({ "url": EPISODE, "extension": [
        { "url": "service", "valueCoding": {
            "system": "http://foster-passport.example/fhir/CodeSystem/child-welfare-service",
            "code": service } },
        { "url": "period", "valuePeriod": period },
        { "url": "county", "valueCoding": {
            "system": "http://foster-passport.example/fhir/CodeSystem/california-county", "code": "06037" } },
        { "url": "source", "valueString": "4M" },
    ]})
}

async fn youth(admin: &Client, id: &str, birth: NaiveDate, episodes: Vec<Value>) {
    let mut p = common::patient(id);
    p["id"] = json!(id);
    p["birthDate"] = json!(day(birth));
    if !episodes.is_empty() {
        p["extension"] = json!(episodes);
    }
    admin
        .put_json(&format!("Patient/{id}"), &p)
        .await
        .expect_status(201);
}

async fn matching(admin: &Client, query: &str) -> Vec<String> {
    let resp = admin
        .get(&format!("Patient?{query}&_count=100&_sort=_id"))
        .await
        .expect_status(200);
    let ids: Vec<String> = resp.body["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        resp.body["total"].as_u64(),
        Some(ids.len() as u64),
        "{query}"
    );
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn statuses_are_derived_on_the_day_of_the_query() {
    let server = common::Server::start();
    let admin = server.client();
    let tomorrow = |d: NaiveDate| d.succ_opt().unwrap();
    let long_ago = years_ago(10);

    // In foster care: under 21. Turns 21 today: no longer in care by definition, aged out.
    youth(
        &admin,
        "fc-20",
        tomorrow(years_ago(21)),
        vec![episode("foster-care", long_ago, None)],
    )
    .await;
    youth(
        &admin,
        "fc-21-today",
        years_ago(21),
        vec![episode("foster-care", long_ago, None)],
    )
    .await;
    // Left foster care 11 / 13 months ago, at 19 (so in care on the 18th birthday).
    youth(
        &admin,
        "left-11m",
        years_ago(19),
        vec![episode("foster-care", long_ago, Some(months_ago(11)))],
    )
    .await;
    youth(
        &admin,
        "left-13m",
        years_ago(19),
        vec![episode("foster-care", long_ago, Some(months_ago(13)))],
    )
    .await;
    // Left foster care at 12, long ago: never in care at 18, so not aged out; not former.
    youth(
        &admin,
        "left-young",
        years_ago(17),
        vec![episode("foster-care", years_ago(14), Some(years_ago(5)))],
    )
    .await;
    // Aged out: 26th birthday today (no longer), or tomorrow (still).
    youth(
        &admin,
        "aged-26-today",
        years_ago(26),
        vec![episode("foster-care", years_ago(20), Some(years_ago(7)))],
    )
    .await;
    youth(
        &admin,
        "aged-25",
        tomorrow(years_ago(26)),
        vec![episode("foster-care", years_ago(20), Some(years_ago(7)))],
    )
    .await;
    // Left on the 18th birthday itself: was in care on it.
    youth(
        &admin,
        "left-at-18",
        years_ago(20),
        vec![episode("foster-care", years_ago(15), Some(years_ago(2)))],
    )
    .await;
    // Adoption assistance: under 18. 18th birthday today: no longer.
    youth(
        &admin,
        "aa-17",
        tomorrow(years_ago(18)),
        vec![episode("adoption-assistance", long_ago, None)],
    )
    .await;
    youth(
        &admin,
        "aa-18-today",
        years_ago(18),
        vec![episode("adoption-assistance", long_ago, None)],
    )
    .await;
    // Family maintenance: ongoing, or ended within 12 months; under 18.
    youth(
        &admin,
        "fm-now",
        years_ago(9),
        vec![episode("family-maintenance", months_ago(3), None)],
    )
    .await;
    youth(
        &admin,
        "fm-11m",
        years_ago(9),
        vec![episode(
            "family-maintenance",
            months_ago(30),
            Some(months_ago(11)),
        )],
    )
    .await;
    youth(
        &admin,
        "fm-13m",
        years_ago(9),
        vec![episode(
            "family-maintenance",
            months_ago(30),
            Some(months_ago(13)),
        )],
    )
    .await;
    youth(
        &admin,
        "fm-18-today",
        years_ago(18),
        vec![episode("family-maintenance", months_ago(3), None)],
    )
    .await;
    // Back in care after leaving once: in foster care, not former.
    youth(
        &admin,
        "re-entered",
        years_ago(15),
        vec![
            episode("foster-care", years_ago(5), Some(months_ago(20))),
            episode("foster-care", months_ago(6), None),
        ],
    )
    .await;
    // No episodes at all.
    youth(&admin, "none", years_ago(12), vec![]).await;

    let expect = |code: &str, ids: &[&str]| {
        (
            code.to_string(),
            ids.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    let cases = [
        expect("in-foster-care", &["fc-20", "re-entered"]),
        expect("former-foster-care", &["left-11m"]),
        expect(
            "aged-out",
            &["aged-25", "fc-21-today", "left-11m", "left-at-18"],
        ),
        expect("adoption-assistance", &["aa-17"]),
        expect("family-maintenance", &["fm-11m", "fm-now"]),
    ];
    let mut involved: Vec<String> = vec![];
    for (code, mut ids) in cases {
        ids.sort();
        assert_eq!(
            matching(&admin, &format!("child-welfare-status={code}")).await,
            ids,
            "{code}"
        );
        // The code system may be named.
        assert_eq!(
            matching(
                &admin,
                &format!("child-welfare-status={STATUS_SYSTEM}|{code}")
            )
            .await,
            ids,
            "{code} with its system"
        );
        involved.extend(ids);
    }
    involved.sort();
    involved.dedup();
    assert_eq!(
        matching(&admin, "child-welfare-status=involved").await,
        involved
    );
    assert_eq!(
        matching(
            &admin,
            "child-welfare-status=adoption-assistance,family-maintenance"
        )
        .await,
        ["aa-17", "fm-11m", "fm-now"]
    );
    // It combines with other parameters and reaches through chains.
    assert_eq!(
        matching(&admin, "child-welfare-status=aged-out&_id=aged-25,fc-20").await,
        ["aged-25"]
    );
    admin
        .put_json(
            "Observation/obs-aa",
            &json!({ "resourceType": "Observation", "id": "obs-aa", "status": "final",
                    "code": { "text": "weight" }, "subject": { "reference": "Patient/aa-17" } }),
        )
        .await
        .expect_status(201);
    let chained = admin
        .get("Observation?subject:Patient.child-welfare-status=adoption-assistance")
        .await
        .expect_status(200);
    assert_eq!(chained.body["total"], 1, "{}", chained.text);
    // Bad values are refused, and say what is known.
    for bad in ["fostered", "http://elsewhere|aged-out", ""] {
        let resp = admin
            .get(&format!("Patient?child-welfare-status={bad}"))
            .await
            .expect_status(400);
        assert!(
            resp.outcome_text().contains("child-welfare-status"),
            "{}",
            resp.text
        );
    }
    admin
        .get("Patient?child-welfare-status:not=aged-out")
        .await
        .expect_status(400);
    // Published in the CapabilityStatement.
    let metadata = admin.get("metadata").await.expect_status(200);
    let patient = metadata.body["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Patient")
        .unwrap();
    assert!(
        patient["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "child-welfare-status"),
        "{patient:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn county_and_care_team_role_are_searchable() {
    let server = common::Server::start();
    let admin = server.client();
    youth(
        &admin,
        "la-youth",
        years_ago(12),
        vec![episode("foster-care", years_ago(3), None)],
    )
    .await;
    youth(&admin, "no-county", years_ago(12), vec![]).await;
    assert_eq!(
        matching(
            &admin,
            "county=http://foster-passport.example/fhir/CodeSystem/california-county|06037"
        )
        .await,
        ["la-youth"]
    );
    assert!(matching(&admin, "county=06067").await.is_empty());
    admin
        .put_json(
            "CareTeam/ct-role",
            &json!({ "resourceType": "CareTeam", "id": "ct-role", "status": "active",
                    "subject": { "reference": "Patient/la-youth" },
                    "participant": [{ "role": [{ "coding": [{
                        "system": "http://foster-passport.example/fhir/CodeSystem/care-team-role",
                        "code": "county-social-worker" }] }],
                        "member": { "reference": "Patient/la-youth" } }] }),
        )
        .await
        .expect_status(201);
    let found = admin
        .get("CareTeam?role=county-social-worker")
        .await
        .expect_status(200);
    assert_eq!(found.body["total"], 1);
    let none = admin
        .get("CareTeam?role=resource-family")
        .await
        .expect_status(200);
    assert_eq!(none.body["total"], 0);
}
