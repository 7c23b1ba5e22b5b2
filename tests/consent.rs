//! Consent-scoped sharing over HTTP with real tokens (DESIGN.md section 5; standards.md 2.3):
//! the custodian sees everything, the youth their whole record, everyone else what the youth's
//! active privacy Consents release: by actor (organization, practitioner, a CareTeam the
//! requester currently takes part in, directly or on behalf of its organization), purpose,
//! class, nested exceptions, deny beating permit, periods and status, and sensitivity labels
//! that only a provision naming them releases (minor-consented data only under the youth's own
//! signature). A denied resource cannot be told from a missing one.

mod common;

use common::auth::user_token;
use common::{Client, Server};
use serde_json::{Value, json};

const YOUTH: &str = "youth-c";
const OTHER_YOUTH: &str = "youth-d";
const REDIRECT: &str = "http://127.0.0.1:9/cb";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const OUR_LABELS: &str = "http://foster-passport.example/fhir/CodeSystem/security-label";

fn privacy_consent(id: &str, patient: &str, provision: Value) -> Value {
    json!({
        "resourceType": "Consent", "id": id, "status": "active",
        "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy" }] },
        "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0" }] }],
        "patient": { "reference": format!("Patient/{patient}") },
        "policyRule": { "coding": [{ "system": ACT_CODE, "code": "OPTIN" }] },
        "provision": provision,
    })
}

fn actor(reference: &str) -> Value {
    json!({ "role": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP" }] },
            "reference": { "reference": reference } })
}

fn purpose(code: &str) -> Value {
    json!({ "system": ACT_CODE, "code": code })
}

fn label(system: &str, code: &str) -> Value {
    json!({ "system": system, "code": code })
}

fn condition(id: &str, patient: &str, text: &str, labels: &[Value]) -> Value {
    let mut c = json!({
        "resourceType": "Condition", "id": id,
        "clinicalStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active" }] },
        "code": { "text": text },
        "subject": { "reference": format!("Patient/{patient}") },
    });
    if !labels.is_empty() {
        c["meta"] = json!({ "security": labels });
    }
    c
}

fn observation(id: &str, patient: &str) -> Value {
    json!({ "resourceType": "Observation", "id": id, "status": "final", "code": { "text": "weight" },
            "subject": { "reference": format!("Patient/{patient}") } })
}

/// The record of two youth, their care team and their consents.
async fn seed(admin: &Client) {
    let mut resources = vec![];
    for id in [YOUTH, OTHER_YOUTH] {
        let mut p = common::patient(id);
        p["id"] = json!(id);
        resources.push(p);
    }
    for org in ["plan-org", "clinic-org", "other-clinic", "county-org"] {
        resources.push(json!({ "resourceType": "Organization", "id": org, "name": org }));
    }
    for pr in ["pcp", "old-pcp"] {
        resources
            .push(json!({ "resourceType": "Practitioner", "id": pr, "name": [{ "family": pr }] }));
    }
    resources.push(json!({ "resourceType": "RelatedPerson", "id": "caregiver", "patient": { "reference": format!("Patient/{YOUTH}") } }));
    resources.push(json!({ "resourceType": "RelatedPerson", "id": "old-caregiver", "patient": { "reference": format!("Patient/{YOUTH}") } }));
    resources.push(json!({
        "resourceType": "CareTeam", "id": "ct-c", "status": "active",
        "subject": { "reference": format!("Patient/{YOUTH}") },
        "participant": [
            { "member": { "reference": "Practitioner/pcp" }, "onBehalfOf": { "reference": "Organization/clinic-org" },
              "period": { "start": "2025-01-01" } },
            { "member": { "reference": "Practitioner/old-pcp" }, "period": { "start": "2020-01-01", "end": "2024-12-31" } },
            { "member": { "reference": "RelatedPerson/caregiver" }, "period": { "start": "2026-01-01" } },
            { "member": { "reference": "RelatedPerson/old-caregiver" }, "period": { "start": "2022-01-01", "end": "2025-12-31" } },
        ]
    }));
    resources.push(observation("obs-c", YOUTH));
    resources.push(observation("obs-d", OTHER_YOUTH));
    resources.push(condition("cond-plain", YOUTH, "asthma", &[]));
    resources.push(condition(
        "cond-mh",
        YOUTH,
        "depression",
        &[label(ACT_CODE, "MH")],
    ));
    resources.push(condition(
        "cond-minor",
        YOUTH,
        "counselling",
        &[label(OUR_LABELS, "minor-consented")],
    ));
    resources.push(condition(
        "cond-hidden",
        YOUTH,
        "hidden by a nested deny",
        &[],
    ));
    resources.push(condition("cond-d", OTHER_YOUTH, "eczema", &[]));
    // The care team, for treatment; a nested deny keeps one instance back.
    resources.push(privacy_consent("c-careteam", YOUTH, json!({
        "type": "permit", "actor": [actor("CareTeam/ct-c")], "purpose": [purpose("TREAT")],
        "provision": [{ "type": "deny", "data": [{ "meaning": "instance", "reference": { "reference": "Condition/cond-hidden" } }] }]
    })));
    // Signed by the youth: the PCP may see mental health and minor-consented data.
    let mut signed = privacy_consent(
        "c-youth-pcp",
        YOUTH,
        json!({
            "type": "permit", "actor": [actor("Practitioner/pcp")],
            "securityLabel": [label(ACT_CODE, "MH"), label(OUR_LABELS, "minor-consented")]
        }),
    );
    signed["performer"] = json!([{ "reference": format!("Patient/{YOUTH}") }]);
    resources.push(signed);
    // The same labelled release to the other clinic, but not signed by the youth: its mental
    // health record, never the minor-consented one. (A provision naming labels selects only
    // resources carrying them.)
    resources.push(privacy_consent(
        "c-other-clinic",
        YOUTH,
        json!({
            "type": "permit", "actor": [actor("Organization/other-clinic")],
            "securityLabel": [label(ACT_CODE, "MH"), label(OUR_LABELS, "minor-consented")]
        }),
    ));
    // The plan: Observations only, for payment.
    resources.push(privacy_consent("c-plan", YOUTH, json!({
        "type": "permit", "actor": [actor("Organization/plan-org")], "purpose": [purpose("HPAYMT")],
        "class": [{ "system": "http://hl7.org/fhir/resource-types", "code": "Observation" }]
    })));
    // The county: a permit that expired, and one that is inactive.
    let mut expired = privacy_consent(
        "c-county-expired",
        YOUTH,
        json!({
            "type": "permit", "actor": [actor("Organization/county-org")], "period": { "start": "2020-01-01", "end": "2021-01-01" }
        }),
    );
    expired["provision"]["period"] = json!({ "start": "2020-01-01", "end": "2021-01-01" });
    resources.push(expired);
    let mut inactive = privacy_consent(
        "c-county-inactive",
        YOUTH,
        json!({ "type": "permit", "actor": [actor("Organization/county-org")] }),
    );
    inactive["status"] = json!("inactive");
    resources.push(inactive);
    for r in resources {
        let path = format!(
            "{}/{}",
            r["resourceType"].as_str().unwrap(),
            r["id"].as_str().unwrap()
        );
        admin.put_json(&path, &r).await.expect_status(201);
    }
}

fn backend(server: &Server, id: &str, org: &str, role: &str, purpose: &str) -> Client {
    common::auth::backend_client(server, id, role, org, purpose)
}

async fn user(server: &Server, username: &str, fhir_user: &str, scope: &str) -> Client {
    server.cli(&[
        "user",
        "add",
        "--username",
        username,
        "--password",
        "pw-123456",
        "--fhir-user",
        fhir_user,
    ]);
    let token = user_token(
        &server.origin(),
        &server.base,
        "app",
        REDIRECT,
        username,
        "pw-123456",
        scope,
    )
    .await;
    server
        .client()
        .with_token(token["access_token"].as_str().unwrap())
}

/// Ids of a search's matches, sorted.
async fn ids(client: &Client, query: &str) -> Vec<String> {
    let resp = client.get(query).await.expect_status(200);
    let mut out: Vec<String> = resp.body["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    if let Some(total) = resp.body["total"].as_u64() {
        assert_eq!(
            total as usize,
            out.len(),
            "{query}: _total counts only what may be seen"
        );
    }
    out
}

async fn sees(client: &Client, who: &str, expected: &[&str]) {
    let mut all = ids(client, "Condition").await;
    all.extend(ids(client, "Observation").await);
    all.sort();
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(all, expected, "what {who} sees of the clinical record");
    // Reads agree with searches, and a denied read is a missing id.
    for id in [
        "obs-c",
        "obs-d",
        "cond-plain",
        "cond-mh",
        "cond-minor",
        "cond-hidden",
        "cond-d",
    ] {
        let rtype = if id.starts_with("obs") {
            "Observation"
        } else {
            "Condition"
        };
        let resp = client.get(&format!("{rtype}/{id}")).await;
        if expected.iter().any(|e| e == id) {
            assert_eq!(resp.status, 200, "{who} reads {id}");
        } else {
            assert_eq!(resp.status, 404, "{who} must not read {id}: {}", resp.text);
            let missing = client.get(&format!("{rtype}/no-such-{id}")).await;
            assert_eq!(missing.status, 404);
            assert_eq!(
                resp.body["issue"][0]["code"], missing.body["issue"][0]["code"],
                "a denied read looks like a missing one"
            );
            assert_eq!(
                resp.outcome_text().replace(id, "X"),
                missing
                    .outcome_text()
                    .replace(&format!("no-such-{id}"), "X"),
                "the same words for denied and missing"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_requester_sees_what_the_consents_release() {
    let server = Server::start();
    let admin = server.client();
    seed(&admin).await;
    server.cli(&[
        "client",
        "add",
        "--id",
        "app",
        "--public",
        "--redirect-uri",
        REDIRECT,
        "--scope",
        "launch/patient openid fhirUser patient/*.rs user/*.rs",
        "--purpose",
        "TREAT",
    ]);

    // The custodian sees everything.
    sees(
        &admin,
        "the custodian",
        &[
            "obs-c",
            "obs-d",
            "cond-plain",
            "cond-mh",
            "cond-minor",
            "cond-hidden",
            "cond-d",
        ],
    )
    .await;
    // The youth sees all of her own record, sensitive data included, and nothing else.
    let youth = user(
        &server,
        "cee",
        &format!("Patient/{YOUTH}"),
        "launch/patient patient/*.rs",
    )
    .await;
    sees(
        &youth,
        "the youth",
        &[
            "obs-c",
            "cond-plain",
            "cond-mh",
            "cond-minor",
            "cond-hidden",
        ],
    )
    .await;
    // The PCP: the care team's permit (minus the nested deny) plus the youth-signed release.
    let pcp = user(&server, "dr-pcp", "Practitioner/pcp", "user/*.rs").await;
    sees(
        &pcp,
        "the PCP",
        &["obs-c", "cond-plain", "cond-mh", "cond-minor"],
    )
    .await;
    // The clinic's backend, on behalf of which the PCP sits on the care team: no labels named.
    let clinic = backend(&server, "clinic", "clinic-org", "provider", "TREAT");
    sees(&clinic, "the clinic", &["obs-c", "cond-plain"]).await;
    // The current caregiver is on the care team; the previous one left it.
    let caregiver = user(&server, "carol", "RelatedPerson/caregiver", "user/*.rs").await;
    sees(&caregiver, "the caregiver", &["obs-c", "cond-plain"]).await;
    let old_caregiver = user(&server, "olga", "RelatedPerson/old-caregiver", "user/*.rs").await;
    sees(&old_caregiver, "the previous caregiver", &[]).await;
    let old_pcp = user(&server, "dr-old", "Practitioner/old-pcp", "user/*.rs").await;
    sees(&old_pcp, "the previous PCP", &[]).await;
    // The plan: Observations for payment; with another purpose, nothing.
    let plan = backend(&server, "plan", "plan-org", "plan", "HPAYMT");
    sees(&plan, "the plan", &["obs-c"]).await;
    let plan_treat = backend(&server, "plan-treat", "plan-org", "plan", "TREAT");
    sees(&plan_treat, "the plan asking for treatment", &[]).await;
    // Minor-consented data needs the youth's own signature.
    let other_clinic = backend(&server, "other-clinic", "other-clinic", "provider", "TREAT");
    sees(&other_clinic, "the other clinic", &["cond-mh"]).await;
    // Expired and inactive consents release nothing; neither does having no consent at all.
    let county = backend(&server, "county", "county-org", "county", "COC");
    sees(&county, "the county (expired and inactive consents)", &[]).await;
    let stranger = backend(&server, "stranger", "nowhere", "provider", "TREAT");
    sees(&stranger, "an unrelated provider", &[]).await;
    // Reference data is not patient data.
    stranger
        .get("Organization/plan-org")
        .await
        .expect_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_data_leaks_through_no_side_door() {
    let server = Server::start();
    let admin = server.client();
    seed(&admin).await;
    let plan = backend(&server, "plan", "plan-org", "plan", "HPAYMT");
    // Patient: the plan has no Patient class, so no youth is visible (class = Observation).
    assert_eq!(ids(&plan, "Patient").await, Vec::<String>::new());
    let count = plan
        .get("Condition?_summary=count")
        .await
        .expect_status(200);
    assert_eq!(
        count.body["total"], 0,
        "_summary=count counts only what may be seen"
    );
    let total = plan
        .get("Condition?_total=accurate&_count=1")
        .await
        .expect_status(200);
    assert_eq!(total.body["total"], 0);
    // Includes, reverse includes, chains and _has see only the released set.
    let inc = plan
        .get("Observation?_include=Observation:subject")
        .await
        .expect_status(200);
    assert!(
        !inc.text.contains("\"Patient\""),
        "the youth's Patient is not released: {}",
        inc.text
    );
    assert!(!inc.text.contains("obs-d"));
    assert_eq!(
        ids(&plan, &format!("Observation?subject={YOUTH}")).await,
        vec!["obs-c"]
    );
    assert_eq!(
        ids(&plan, &format!("Observation?subject={OTHER_YOUTH}")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&plan, "Observation?subject:Patient.gender=female")
            .await
            .len(),
        0,
        "chains run only over what may be seen"
    );
    assert_eq!(
        ids(
            &plan,
            "Patient?_has:Condition:subject:clinical-status=active"
        )
        .await
        .len(),
        0
    );
    // History and vread.
    let history = plan.get("Condition/_history").await.expect_status(200);
    assert!(!history.text.contains("cond-"), "{}", history.text);
    plan.get("Condition/cond-mh/_history/1")
        .await
        .expect_outcome(404);
    plan.get("Condition/cond-mh/_history")
        .await
        .expect_outcome(404);
    // Batch and transaction entries.
    let bundle = json!({ "resourceType": "Bundle", "type": "batch", "entry": [
        { "request": { "method": "GET", "url": "Condition/cond-mh" } },
        { "request": { "method": "GET", "url": "Condition?_id=cond-mh" } },
        { "request": { "method": "GET", "url": "Observation/obs-c" } },
    ]});
    let batch = plan.post_json("", &bundle).await.expect_status(200);
    assert!(
        batch.body["entry"][0]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("404")
    );
    assert_eq!(batch.body["entry"][1]["resource"]["total"], 0);
    assert!(
        batch.body["entry"][2]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("200")
    );
    assert!(!batch.text.contains("depression"));
    let mut tx = bundle.clone();
    tx["type"] = json!("transaction");
    let tx = plan.post_json("", &tx).await;
    assert!(!tx.text.contains("depression"), "{}", tx.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn deny_wins_and_consent_changes_apply_at_once() {
    let server = Server::start();
    let admin = server.client();
    seed(&admin).await;
    let clinic = backend(&server, "clinic", "clinic-org", "provider", "TREAT");
    assert_eq!(ids(&clinic, "Observation").await, vec!["obs-c"]);
    // A second consent denying the clinic beats the care team's permit.
    admin
        .put_json(
            "Consent/c-deny-clinic",
            &privacy_consent(
                "c-deny-clinic",
                YOUTH,
                json!({ "type": "deny", "actor": [actor("Organization/clinic-org")] }),
            ),
        )
        .await
        .expect_status(201);
    assert_eq!(ids(&clinic, "Observation").await, Vec::<String>::new());
    clinic.get("Observation/obs-c").await.expect_outcome(404);
    // Revoking it (status inactive) restores access on the next request.
    let mut revoked = privacy_consent(
        "c-deny-clinic",
        YOUTH,
        json!({ "type": "deny", "actor": [actor("Organization/clinic-org")] }),
    );
    revoked["status"] = json!("inactive");
    admin
        .put_json("Consent/c-deny-clinic", &revoked)
        .await
        .expect_status(200);
    assert_eq!(ids(&clinic, "Observation").await, vec!["obs-c"]);
    // The care team changes: the PCP leaves, and the clinic loses access with it.
    let mut team = admin.read("CareTeam", "ct-c").await;
    team["participant"][0]["period"]["end"] = json!("2026-01-31");
    admin
        .put_json("CareTeam/ct-c", &team)
        .await
        .expect_status(200);
    assert_eq!(ids(&clinic, "Observation").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn consents_the_engine_cannot_enforce_are_refused() {
    let server = Server::start();
    let admin = server.client();
    seed(&admin).await;
    let before = admin.snapshot().await;
    let cases = [
        (
            "related data",
            json!({ "type": "permit", "data": [{ "meaning": "related", "reference": { "reference": "Condition/cond-mh" } }] }),
        ),
        (
            "deeper nesting",
            json!({ "type": "permit", "provision": [{ "type": "deny", "provision": [{ "type": "permit" }] }] }),
        ),
        (
            "an actor type we cannot resolve",
            json!({ "type": "permit", "actor": [actor("Device/d1")] }),
        ),
        (
            "nested without type",
            json!({ "type": "permit", "provision": [{ "actor": [actor("Practitioner/pcp")] }] }),
        ),
    ];
    for (what, provision) in cases {
        let resp = admin
            .post_json("Consent", &privacy_consent("x", YOUTH, provision))
            .await;
        assert_eq!(resp.status, 422, "{what}: {}", resp.text);
        resp.assert_operation_outcome();
    }
    let mut no_patient = privacy_consent("x", YOUTH, json!({ "type": "permit" }));
    no_patient.as_object_mut().unwrap().remove("patient");
    admin
        .post_json("Consent", &no_patient)
        .await
        .expect_outcome(422);
    admin.assert_unchanged(&before, "refused consents").await;
    // A treatment consent (a JV-220 psychotropic order) is stored, and widens nothing.
    let mut jv220 = privacy_consent(
        "jv220",
        YOUTH,
        json!({ "type": "permit", "actor": [actor("Organization/nowhere")] }),
    );
    jv220["scope"] = json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment" }] });
    admin
        .put_json("Consent/jv220", &jv220)
        .await
        .expect_status(201);
    let stranger = backend(&server, "stranger", "nowhere", "provider", "TREAT");
    assert_eq!(ids(&stranger, "Observation").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_users_see_different_slices_of_one_record() {
    let server = Server::builder().arg("--demo").start();
    let login = |username: &'static str| {
        let (origin, base) = (server.origin(), server.base.clone());
        async move {
            let token = user_token(
                &origin,
                &base,
                "demo-passport",
                "http://localhost:8000/callback",
                username,
                "passport-demo",
                "openid fhirUser user/*.rs",
            )
            .await;
            server_client(&base, token["access_token"].as_str().unwrap())
        }
    };
    let maria = login("maria").await;
    let sandra = login("sandra").await;
    let pcp = login("dr-whitfield").await;
    let conditions =
        |who: Client| async move { ids(&who, "Condition?subject=youth-maria-lopez").await };
    let all = conditions(maria.clone()).await;
    assert!(
        all.contains(&"cond-maria-depression".to_string()),
        "{all:?}"
    );
    // Her caregiver (on the care team, for treatment) sees her conditions except the
    // counselling record she consented to herself; her PCP sees that one too.
    let caregiver_view = conditions(sandra.clone()).await;
    let expected: Vec<String> = all
        .iter()
        .filter(|c| *c != "cond-maria-depression")
        .cloned()
        .collect();
    assert_eq!(caregiver_view, expected);
    assert_eq!(conditions(pcp.clone()).await, all);
    // Neither sees another youth; the caregiver reads her own RelatedPerson.
    assert!(
        ids(&sandra, "Condition?subject=youth-jayden-brooks")
            .await
            .is_empty()
    );
    sandra
        .get("RelatedPerson/rf-sandra-okoye")
        .await
        .expect_status(200);
    sandra
        .get("Condition/cond-maria-depression")
        .await
        .expect_outcome(404);
    pcp.get("Condition/cond-maria-depression")
        .await
        .expect_status(200);
}

fn server_client(base: &str, token: &str) -> Client {
    Client::new(reqwest::Client::new(), base).with_token(token)
}
