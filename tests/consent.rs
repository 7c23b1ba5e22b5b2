//! Consent-scoped sharing over HTTP with real tokens (DESIGN.md section 5; standards.md 2.3):
//! the custodian sees everything, the youth their whole record, everyone else what the youth's
//! active privacy Consents release: by actor (organization, practitioner, a CareTeam the
//! requester currently takes part in, directly or on behalf of its organization), purpose,
//! class, nested exceptions, deny beating permit, periods and status, and sensitivity labels
//! that only a provision naming them releases (minor-consented data only under the youth's own
//! signature). A denied resource cannot be told from a missing one.

mod common;

use common::auth::user_token;
use common::{Client, Server, ServerBuilder};
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

async fn each_requester_sees_what_the_consents_release(builder: ServerBuilder) {
    let server = builder.start();
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

async fn denied_data_leaks_through_no_side_door(builder: ServerBuilder) {
    let server = builder.start();
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

async fn deny_wins_and_consent_changes_apply_at_once(builder: ServerBuilder) {
    let server = builder.start();
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

async fn consents_the_engine_cannot_enforce_are_refused(builder: ServerBuilder) {
    let server = builder.start();
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

async fn demo_users_see_different_slices_of_one_record(builder: ServerBuilder) {
    let server = builder.arg("--demo").start();
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
    // Her caregiver before the move lost access with it; her social worker and the plan's
    // liaison see what the care team sees; a PCP who does not treat her sees nothing.
    let lupe = login("lupe").await;
    assert!(conditions(lupe.clone()).await.is_empty());
    lupe.get("Patient/youth-maria-lopez")
        .await
        .expect_outcome(404);
    let rachel = login("rachel").await;
    assert_eq!(conditions(rachel).await, expected);
    let gloria = login("gloria").await;
    assert_eq!(conditions(gloria.clone()).await, expected);
    gloria
        .get("Condition/cond-maria-depression")
        .await
        .expect_outcome(404);
    let stranger = login("dr-natarajan").await;
    assert!(conditions(stranger.clone()).await.is_empty());
    stranger
        .get("Patient/youth-maria-lopez")
        .await
        .expect_outcome(404);
    // The custodian sees all of it.
    let custodian = server.client();
    assert_eq!(conditions(custodian).await, all);
}

fn server_client(base: &str, token: &str) -> Client {
    Client::new(reqwest::Client::new(), base).with_token(token)
}

// ---------------------------------------------------------------------------------------------
// Statewide rules, break-the-glass, authorship, full pages (issue 5 rules 3, 6 and 7)
// ---------------------------------------------------------------------------------------------

const BTG: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const STATEWIDE_56_103: &str = "statewide-ca-civil-code-56-103";

fn team_member(member: &str, org: &str, role: &str, period: Value) -> Value {
    json!({
        "role": [{ "coding": [{ "system": "http://foster-passport.example/fhir/CodeSystem/care-team-role", "code": role }] }],
        "member": { "reference": member },
        "onBehalfOf": { "reference": format!("Organization/{org}") },
        "period": period,
    })
}

/// Youth S: a care team with a current and a former social worker and a probation officer, a
/// plain, a mental-health and a minor-consented Condition, and the youth's own deny of the
/// minor-consented one to everyone. No consent names the county: only the statewide rule can.
async fn seed_statewide(admin: &Client) {
    let mut resources = vec![];
    let mut p = common::patient("youth-s");
    p["id"] = json!("youth-s");
    resources.push(p);
    for org in [
        "county-dss",
        "old-county",
        "probation",
        "er-hospital",
        "author-clinic",
        "some-plan",
    ] {
        resources.push(json!({ "resourceType": "Organization", "id": org, "name": org }));
    }
    resources.push(json!({
        "resourceType": "CareTeam", "id": "ct-s", "status": "active",
        "subject": { "reference": "Patient/youth-s" },
        "participant": [
            team_member("Practitioner/sw", "county-dss", "county-social-worker", json!({ "start": "2025-01-01" })),
            team_member("Practitioner/old-sw", "old-county", "county-social-worker", json!({ "start": "2022-01-01", "end": "2025-01-01" })),
            team_member("Practitioner/po", "probation", "probation-officer", json!({ "start": "2025-01-01" })),
        ]
    }));
    resources.push(condition("s-plain", "youth-s", "asthma", &[]));
    resources.push(condition(
        "s-mh",
        "youth-s",
        "anxiety",
        &[label(ACT_CODE, "MH")],
    ));
    resources.push(condition(
        "s-minor",
        "youth-s",
        "counselling",
        &[label(OUR_LABELS, "minor-consented")],
    ));
    let mut youth_deny = privacy_consent(
        "c-s-youth-deny",
        "youth-s",
        json!({ "type": "deny", "securityLabel": [label(OUR_LABELS, "minor-consented")] }),
    );
    youth_deny["performer"] = json!([{ "reference": "Patient/youth-s" }]);
    resources.push(youth_deny);
    for r in resources {
        let path = format!(
            "{}/{}",
            r["resourceType"].as_str().unwrap(),
            r["id"].as_str().unwrap()
        );
        admin.put_json(&path, &r).await.expect_status(201);
    }
}

/// The AuditEvents a backend client's requests wrote (the writer batches asynchronously).
async fn audit_of(admin: &Client, client_id: &str, at_least: usize) -> Vec<Value> {
    for _ in 0..50 {
        let resp = admin
            .get(&format!("AuditEvent?altid={client_id}&_count=200"))
            .await;
        let events: Vec<Value> = resp.body["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["resource"].clone())
            .collect();
        if events.len() >= at_least {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("fewer than {at_least} AuditEvents for client {client_id}");
}

fn decided_by(event: &Value) -> Vec<String> {
    event["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["url"]
                .as_str()
                .is_some_and(|u| u.ends_with("audit-decided-by"))
        })
        .flat_map(|e| e["extension"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["valueString"].as_str().map(str::to_string))
        .collect()
}

fn has_btg(security: &Value) -> bool {
    security
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["system"] == BTG && c["code"] == "BTG")
}

async fn the_statewide_rule_reaches_the_current_social_worker_for_care_coordination(
    builder: ServerBuilder,
) {
    let server = builder.start();
    let admin = server.client();
    seed_statewide(&admin).await;
    let plain_only = ["s-plain"];

    // Civil Code 56.103: the youth's current social worker and probation officer, for care
    // coordination, see what is not sensitive; never mental health or minor-consented data.
    let county = backend(&server, "county", "county-dss", "county", "COC");
    assert_eq!(ids(&county, "Condition").await, plain_only);
    assert_eq!(
        ids(&county, "Condition?patient=youth-s&_total=accurate").await,
        plain_only
    );
    county.get("Condition/s-plain").await.expect_status(200);
    county.get("Condition/s-mh").await.expect_status(404);
    county.get("Condition/s-minor").await.expect_status(404);
    let probation = backend(&server, "probation", "probation", "county", "COC");
    assert_eq!(ids(&probation, "Condition").await, plain_only);

    // Not for another purpose, not for a former social worker, not for a stranger.
    let treating = backend(&server, "county-treat", "county-dss", "county", "TREAT");
    assert!(ids(&treating, "Condition").await.is_empty());
    treating.get("Condition/s-plain").await.expect_status(404);
    let former = backend(&server, "old-county", "old-county", "county", "COC");
    assert!(ids(&former, "Condition").await.is_empty());
    former.get("Condition/s-plain").await.expect_status(404);
    let stranger = backend(&server, "stranger", "some-plan", "county", "COC");
    assert!(ids(&stranger, "Condition").await.is_empty());

    // The rule needs no consent of the youth's own: a youth who signed none is reached too.
    let mut youth_t = common::patient("youth-t");
    youth_t["id"] = json!("youth-t");
    admin
        .put_json("Patient/youth-t", &youth_t)
        .await
        .expect_status(201);
    admin
        .put_json(
            "CareTeam/ct-t",
            &json!({ "resourceType": "CareTeam", "id": "ct-t", "status": "active",
                     "subject": { "reference": "Patient/youth-t" },
                     "participant": [team_member("Practitioner/sw", "county-dss", "county-social-worker",
                                                 json!({ "start": "2025-01-01" }))] }),
        )
        .await
        .expect_status(201);
    admin
        .put_json(
            "Condition/t-plain",
            &condition("t-plain", "youth-t", "otitis", &[]),
        )
        .await
        .expect_status(201);
    assert_eq!(
        ids(&county, "Condition?patient=youth-t").await,
        vec!["t-plain".to_string()]
    );
    county.get("Condition/t-plain").await.expect_status(200);
    assert!(ids(&stranger, "Condition?patient=youth-t").await.is_empty());
    admin.delete("Condition/t-plain").await.expect_status(204);

    // The rule is named in the AuditEvent of what it released.
    let events = audit_of(&admin, "county", 5).await;
    assert!(
        events
            .iter()
            .any(|e| decided_by(e).iter().any(|d| d == STATEWIDE_56_103)),
        "the statewide rule is recorded as deciding: {events:#?}"
    );

    // The youth's own deny beats the statewide permit, at once; revoking it restores it.
    let deny = privacy_consent(
        "c-s-deny-county",
        "youth-s",
        json!({ "type": "deny", "actor": [actor("Organization/county-dss")] }),
    );
    admin
        .put_json("Consent/c-s-deny-county", &deny)
        .await
        .expect_status(201);
    assert!(ids(&county, "Condition").await.is_empty());
    county.get("Condition/s-plain").await.expect_status(404);
    let mut revoked = deny.clone();
    revoked["status"] = json!("inactive");
    admin
        .put_json("Consent/c-s-deny-county", &revoked)
        .await
        .expect_status(200);
    assert_eq!(ids(&county, "Condition").await, plain_only);

    // When the social worker leaves the care team, the rule no longer reaches them.
    let mut team = admin.get("CareTeam/ct-s").await.expect_status(200).body;
    team["participant"][0]["period"]["end"] = json!("2026-01-01");
    admin
        .put_json("CareTeam/ct-s", &team)
        .await
        .expect_status(200);
    assert!(ids(&county, "Condition").await.is_empty());
    county.get("Condition/s-plain").await.expect_status(404);
    assert_eq!(ids(&probation, "Condition").await, plain_only);
}

async fn break_the_glass_reads_through_a_deny_and_is_flagged(builder: ServerBuilder) {
    let server = builder.start();
    let admin = server.client();
    seed_statewide(&admin).await;
    // A consent that shuts the hospital out: break-the-glass reads through it.
    admin
        .put_json(
            "Consent/c-s-deny-er",
            &privacy_consent(
                "c-s-deny-er",
                "youth-s",
                json!({ "type": "deny", "actor": [actor("Organization/er-hospital")] }),
            ),
        )
        .await
        .expect_status(201);
    let everything = ["s-mh", "s-minor", "s-plain"];

    // An emergency (ETREAT) by a provider: all of it, even the youth's deny of what she
    // consented to alone; every response carries the BTG marker.
    let er = backend(&server, "er", "er-hospital", "provider", "ETREAT");
    for id in everything {
        let resp = er.get(&format!("Condition/{id}")).await.expect_status(200);
        assert!(
            has_btg(&resp.body["meta"]["security"]),
            "{id} is marked as read by break-the-glass: {}",
            resp.text
        );
    }
    let bundle = er
        .get("Condition?patient=youth-s&_total=accurate")
        .await
        .expect_status(200);
    assert!(has_btg(&bundle.body["meta"]["security"]), "{}", bundle.text);
    assert_eq!(ids(&er, "Condition?patient=youth-s").await, everything);
    // Data consent does not govern is not break-the-glass.
    let org = er.get("Organization/er-hospital").await.expect_status(200);
    assert!(!has_btg(&org.body["meta"]["security"]), "{}", org.text);

    // Break-the-glass without an emergency: through the hospital's deny, never through the
    // youth's own deny of minor-consented data.
    let btg = backend(&server, "er-btg", "er-hospital", "provider", "BTG");
    let resp = btg.get("Condition/s-plain").await.expect_status(200);
    assert!(has_btg(&resp.body["meta"]["security"]));
    btg.get("Condition/s-mh").await.expect_status(200);
    btg.get("Condition/s-minor").await.expect_status(404);
    assert_eq!(
        ids(&btg, "Condition?patient=youth-s").await,
        ["s-mh", "s-plain"]
    );

    // Only a provider breaks the glass: a plan stating an emergency gets nothing.
    let plan = backend(&server, "plan-etreat", "some-plan", "plan", "ETREAT");
    plan.get("Condition/s-plain").await.expect_status(404);
    assert!(ids(&plan, "Condition").await.is_empty());

    // Each use is flagged for the Child Welfare Liaison's review: BTG in meta.security and in
    // purposeOfEvent, found by `_security`.
    let flagged = audit_of(&admin, "er", 4).await;
    let reviewed: Vec<&Value> = flagged
        .iter()
        .filter(|e| has_btg(&e["meta"]["security"]))
        .collect();
    assert!(reviewed.len() >= 4, "{flagged:#?}");
    for e in &reviewed {
        assert!(
            e["purposeOfEvent"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["coding"][0]["code"] == "BTG"),
            "{e:#}"
        );
    }
    let queue = admin
        .get(&format!("AuditEvent?_security={BTG}|BTG&_count=500"))
        .await
        .expect_status(200);
    let queued = queue.body["entry"].as_array().map_or(0, Vec::len);
    assert!(queued >= reviewed.len(), "{}", queue.text);
    // The plan's refused attempts were not break-the-glass.
    let plan_events = audit_of(&admin, "plan-etreat", 2).await;
    assert!(plan_events.iter().all(|e| !has_btg(&e["meta"]["security"])));
}

async fn an_author_reads_what_it_wrote_and_cannot_claim_what_it_did_not(builder: ServerBuilder) {
    let server = builder.start();
    let admin = server.client();
    seed_statewide(&admin).await;
    // The clinic may record for youth S (action `correct`), not read her record.
    admin
        .put_json(
            "Consent/c-s-clinic-writes",
            &privacy_consent(
                "c-s-clinic-writes",
                "youth-s",
                json!({ "type": "permit", "actor": [actor("Organization/author-clinic")],
                        "action": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "correct" }] }] }),
            ),
        )
        .await
        .expect_status(201);
    let clinic = common::auth::backend_client_with_scope(
        &server,
        "clinic-w",
        "provider",
        "author-clinic",
        "TREAT",
        "system/*.cruds",
    );
    let mut visit = condition("s-by-clinic", "youth-s", "sprained ankle", &[]);
    visit["meta"] = json!({ "source": "http://elsewhere.example/fhir/Organization/county-dss" });
    clinic
        .put_json("Condition/s-by-clinic", &visit)
        .await
        .expect_status(201);
    // The server, not the client, records the author.
    let stored = admin.get("Condition/s-by-clinic").await.expect_status(200);
    assert_eq!(
        stored.body["meta"]["source"],
        format!("{}/Organization/author-clinic", server.base)
    );
    // The author reads and revises what it wrote, and only that.
    clinic.get("Condition/s-by-clinic").await.expect_status(200);
    assert_eq!(ids(&clinic, "Condition").await, ["s-by-clinic"]);
    assert_eq!(
        ids(&clinic, "Condition?patient=youth-s&_total=accurate").await,
        ["s-by-clinic"]
    );
    clinic.get("Condition/s-plain").await.expect_status(404);
    let mut revised = stored.body.clone();
    revised["code"]["text"] = json!("sprained left ankle");
    clinic
        .put_json("Condition/s-by-clinic", &revised)
        .await
        .expect_status(200);
    clinic.get("Condition/s-by-clinic").await.expect_status(200);
    // Another organization sees nothing of it, and a forged source grants nothing.
    let other = common::auth::backend_client_with_scope(
        &server,
        "other-w",
        "provider",
        "er-hospital",
        "TREAT",
        "system/*.cruds",
    );
    other.get("Condition/s-by-clinic").await.expect_status(404);
    let mut forged = condition("s-forged", "youth-s", "forged", &[]);
    forged["meta"] = json!({ "source": format!("{}/Organization/er-hospital", server.base) });
    other
        .put_json("Condition/s-forged", &forged)
        .await
        .expect_status(403);
    admin.get("Condition/s-forged").await.expect_status(404);
    // Authorship is recorded as what decided.
    let events = audit_of(&admin, "clinic-w", 4).await;
    assert!(
        events
            .iter()
            .any(|e| decided_by(e).iter().any(|d| d == "author")),
        "{events:#?}"
    );
}

async fn pages_stay_full_when_matches_are_decided_one_by_one(builder: ServerBuilder) {
    let server = builder.start();
    let admin = server.client();
    let mut p = common::patient("youth-p");
    p["id"] = json!("youth-p");
    admin
        .put_json("Patient/youth-p", &p)
        .await
        .expect_status(201);
    admin
        .put_json(
            "Organization/pager",
            &json!({ "resourceType": "Organization", "id": "pager", "name": "pager" }),
        )
        .await
        .expect_status(201);
    for i in 0..9 {
        let id = format!("p-obs-{i}");
        admin
            .put_json(&format!("Observation/{id}"), &observation(&id, "youth-p"))
            .await
            .expect_status(201);
    }
    // Instance-level exceptions cannot be put in the query: they are decided per match.
    let hidden = ["p-obs-1", "p-obs-2", "p-obs-5", "p-obs-6"];
    let exceptions: Vec<Value> = hidden
        .iter()
        .map(|id| json!({ "type": "deny", "data": [{ "meaning": "instance", "reference": { "reference": format!("Observation/{id}") } }] }))
        .collect();
    admin
        .put_json(
            "Consent/c-p",
            &privacy_consent(
                "c-p",
                "youth-p",
                json!({ "type": "permit", "actor": [actor("Organization/pager")], "provision": exceptions }),
            ),
        )
        .await
        .expect_status(201);
    let pager = backend(&server, "pager", "pager", "provider", "TREAT");
    let mut seen = vec![];
    let mut sizes = vec![];
    let mut next = Some("Observation?_count=2&_sort=_id&_total=accurate".to_string());
    while let Some(url) = next {
        let resp = pager.get(&url).await.expect_status(200);
        assert_eq!(resp.body["total"], 5, "{}", resp.text);
        let page: Vec<String> = resp.body["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
            .collect();
        sizes.push(page.len());
        seen.extend(page);
        next = resp.body["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_string());
    }
    assert_eq!(
        sizes,
        [2, 2, 1],
        "full pages, and no next link after the last"
    );
    assert_eq!(
        seen,
        ["p-obs-0", "p-obs-3", "p-obs-4", "p-obs-7", "p-obs-8"]
    );
    // One page holding every match: its total is counted from the page itself.
    for query in [
        "Observation?_count=20&_total=accurate",
        "Observation?_summary=count",
    ] {
        let resp = pager.get(query).await.expect_status(200);
        assert_eq!(resp.body["total"], 5, "{query}: {}", resp.text);
    }
}

async fn data_periods_release_only_data_from_their_time(builder: ServerBuilder) {
    let server = builder.start();
    let admin = server.client();
    let mut p = common::patient("youth-t");
    p["id"] = json!("youth-t");
    admin
        .put_json("Patient/youth-t", &p)
        .await
        .expect_status(201);
    admin
        .put_json(
            "Organization/dp-clinic",
            &json!({ "resourceType": "Organization", "id": "dp-clinic", "name": "dp" }),
        )
        .await
        .expect_status(201);
    for (id, when) in [
        ("t-2019", Some("2019-03-01")),
        ("t-2024", Some("2024-06-01")),
        ("t-2025", Some("2025-06-01")),
        ("t-undated", None),
    ] {
        let mut obs = observation(id, "youth-t");
        if let Some(when) = when {
            obs["effectiveDateTime"] = json!(when);
        }
        admin
            .put_json(&format!("Observation/{id}"), &obs)
            .await
            .expect_status(201);
    }
    // Data from 2019 through 2024 is released, except what a nested deny keeps back (2019);
    // an undated observation is outside the permit's period.
    admin
        .put_json(
            "Consent/c-t",
            &privacy_consent(
                "c-t",
                "youth-t",
                json!({ "type": "permit", "actor": [actor("Organization/dp-clinic")],
                        "dataPeriod": { "start": "2019-01-01", "end": "2024-12-31" },
                        "provision": [{ "type": "deny", "dataPeriod": { "start": "2019-01-01", "end": "2019-12-31" } }] }),
            ),
        )
        .await
        .expect_status(201);
    let clinic = backend(&server, "dp-clinic", "dp-clinic", "provider", "TREAT");
    assert_eq!(
        ids(&clinic, "Observation?_total=accurate").await,
        ["t-2024"]
    );
    clinic.get("Observation/t-2024").await.expect_status(200);
    for hidden in ["t-2019", "t-2025", "t-undated"] {
        clinic
            .get(&format!("Observation/{hidden}"))
            .await
            .expect_outcome(404);
    }
}

async fn a_consent_naming_a_practitioner_role_reaches_whoever_holds_it(builder: ServerBuilder) {
    let server = builder.start();
    let admin = server.client();
    let mut p = common::patient("youth-r");
    p["id"] = json!("youth-r");
    for r in [
        p,
        json!({ "resourceType": "Practitioner", "id": "dr-role", "name": [{ "family": "Role" }] }),
        json!({ "resourceType": "PractitionerRole", "id": "pr-1", "active": true,
                "practitioner": { "reference": "Practitioner/dr-role" } }),
        observation("r-obs", "youth-r"),
        privacy_consent(
            "c-r",
            "youth-r",
            json!({ "type": "permit", "actor": [actor("PractitionerRole/pr-1")] }),
        ),
    ] {
        let path = format!(
            "{}/{}",
            r["resourceType"].as_str().unwrap(),
            r["id"].as_str().unwrap()
        );
        admin.put_json(&path, &r).await.expect_status(201);
    }
    server.cli(&[
        "client",
        "add",
        "--id",
        "app",
        "--public",
        "--redirect-uri",
        REDIRECT,
        "--scope",
        "openid fhirUser user/*.rs",
        "--purpose",
        "TREAT",
    ]);
    let doctor = user(&server, "dr-role", "Practitioner/dr-role", "user/*.rs").await;
    assert_eq!(ids(&doctor, "Observation").await, ["r-obs"]);
    doctor.get("Observation/r-obs").await.expect_status(200);
    // The role ends: so does what it was given, on the next request.
    let mut ended = admin
        .get("PractitionerRole/pr-1")
        .await
        .expect_status(200)
        .body;
    ended["active"] = json!(false);
    admin
        .put_json("PractitionerRole/pr-1", &ended)
        .await
        .expect_status(200);
    assert!(ids(&doctor, "Observation").await.is_empty());
    doctor.get("Observation/r-obs").await.expect_outcome(404);
}

async fn a_requester_named_by_many_youth_sees_each_of_them_and_no_one_else(builder: ServerBuilder) {
    let server = builder.start();
    let admin = server.client();
    admin
        .put_json(
            "Organization/many-org",
            &json!({ "resourceType": "Organization", "id": "many-org", "name": "many" }),
        )
        .await
        .expect_status(201);
    // 40 youth name the organization (more than fit one query argument each), 5 do not; every
    // fifth named youth also has a mental-health record the organization may not see.
    let mut expected = vec![];
    let mut bundle = vec![];
    for i in 0..45 {
        let patient = format!("many-{i:02}");
        let mut p = common::patient(&patient);
        p["id"] = json!(patient);
        bundle.push(p);
        bundle.push(observation(&format!("many-obs-{i:02}"), &patient));
        if i < 40 {
            expected.push(format!("many-obs-{i:02}"));
            bundle.push(privacy_consent(
                &format!("many-c-{i:02}"),
                &patient,
                json!({ "type": "permit", "actor": [actor("Organization/many-org")] }),
            ));
            if i % 5 == 0 {
                let mut mh = observation(&format!("many-mh-{i:02}"), &patient);
                mh["meta"] = json!({ "security": [label(ACT_CODE, "MH")] });
                bundle.push(mh);
            }
        }
    }
    let entries: Vec<Value> = bundle
        .into_iter()
        .map(|r| {
            let url = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            );
            json!({ "resource": r, "request": { "method": "PUT", "url": url } })
        })
        .collect();
    admin
        .post_json(
            "",
            &json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries }),
        )
        .await
        .expect_status(200);
    let org = backend(&server, "many-org", "many-org", "provider", "TREAT");
    let mut seen = vec![];
    let mut next = Some("Observation?_count=50&_total=accurate".to_string());
    while let Some(url) = next {
        let resp = org.get(&url).await.expect_status(200);
        assert_eq!(resp.body["total"], 40, "{}", resp.text);
        seen.extend(
            resp.body["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string()),
        );
        next = resp.body["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_string());
    }
    seen.sort();
    assert_eq!(seen, expected);
    let patients = ids(&org, "Patient?_count=100").await;
    assert_eq!(patients.len(), 40);
    assert!(patients.iter().all(|p| p.as_str() < "many-40"));
    // A long `_id` list takes the same path.
    let all: Vec<String> = (0..45).map(|i| format!("many-{i:02}")).collect();
    let by_id = ids(&org, &format!("Patient?_id={}&_count=100", all.join(","))).await;
    assert_eq!(by_id, patients);
    let by_admin = ids(&admin, &format!("Patient?_id={}&_count=100", all.join(","))).await;
    assert_eq!(by_admin, all);
}

/// Every scenario twice: with the consenting patients named in each query, and with the server
/// told to name none (`--consent-inline-patients 0`), so that queries join the patients' active
/// privacy Consents and decide each match in turn, as for a requester named by thousands of
/// youth. Both must release exactly the same.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod named_patients {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(super::Server::builder()).await
                }
            )*
        }
        mod joined_consents {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(super::Server::builder().env("FP_CONSENT_INLINE_PATIENTS", "0"))
                        .await
                }
            )*
        }
    };
}

scenarios!(
    each_requester_sees_what_the_consents_release,
    denied_data_leaks_through_no_side_door,
    deny_wins_and_consent_changes_apply_at_once,
    consents_the_engine_cannot_enforce_are_refused,
    demo_users_see_different_slices_of_one_record,
    the_statewide_rule_reaches_the_current_social_worker_for_care_coordination,
    break_the_glass_reads_through_a_deny_and_is_flagged,
    an_author_reads_what_it_wrote_and_cannot_claim_what_it_did_not,
    pages_stay_full_when_matches_are_decided_one_by_one,
    data_periods_release_only_data_from_their_time,
    a_consent_naming_a_practitioner_role_reaches_whoever_holds_it,
    a_requester_named_by_many_youth_sees_each_of_them_and_no_one_else,
);
