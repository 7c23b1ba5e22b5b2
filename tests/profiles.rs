//! Profiles and validation (issue 6, DESIGN.md section 6): every file in `profiles/` is valid
//! R4 to the server's parser, the HL7 JSON Schema and fhir.resources, and its snapshot is what
//! `scripts/gen_profile_snapshots.py` makes of its differential; the CapabilityStatement names
//! the profiles;
//! the demo data validates against the profiles it claims; a write of a resource that claims
//! one of our profiles and fails it gets 422 with the element path of each issue and stores
//! nothing, on create, update, PATCH and in a batch, and `$validate` reports the same paths;
//! a body claiming no profile of ours is checked against the base specification only; and an
//! instance `$validate` of what the requester may not see answers as for a missing resource.

mod common;

use std::path::Path;

use common::{Client, Resp, Server};
use serde_json::{Value, json};

const SD: &str = "http://foster-passport.example/fhir/StructureDefinition/";
const MARIA: &str = include_str!("../demo/Patient-youth-maria-lopez.json");

fn maria(id: &str) -> Value {
    let mut p: Value = serde_json::from_str(MARIA).unwrap();
    p["id"] = json!(id);
    p
}

/// A JV-220 psychotropic medication authorization by the juvenile court (no demo file has one).
fn jv220(id: &str) -> Value {
    json!({
        "resourceType": "Consent",
        "id": id,
        "meta": { "profile": [format!("{SD}jv220-medication-consent")] },
        "status": "active",
        "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment" }] },
        "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0" }] }],
        "patient": { "reference": "Patient/youth-maria-lopez" },
        "dateTime": "2026-09-02",
        "performer": [{ "reference": "Organization/la-juvenile-court", "display": "Los Angeles County Juvenile Court" }],
        "provision": {
            "type": "permit",
            "period": { "start": "2026-09-02", "end": "2027-03-01" },
            "data": [{ "meaning": "instance", "reference": { "reference": "MedicationRequest/medrx-maria-sertraline" } }]
        }
    })
}

/// The element paths of an OperationOutcome's error issues, sorted.
fn paths(resp: &Resp) -> Vec<String> {
    let mut out: Vec<String> = resp.body["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["severity"] == "error")
        .map(|i| i["expression"][0].as_str().unwrap_or("(none)").to_string())
        .collect();
    out.sort();
    out
}

fn sorted(paths: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = paths.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn every_profile_file_is_valid_r4_and_snapshots_are_generated() {
    let server = Server::start();
    let admin = server.client();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for path in &files {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        // The HL7 R4 JSON Schema.
        let problems = common::schema::check_resource(&v);
        assert!(problems.is_empty(), "{}: {problems:#?}", path.display());
        // The server's own parser (structure check and the fhirbolt R4 model), through
        // `$validate`, and a create that stores it.
        let rtype = v["resourceType"].as_str().unwrap();
        let resp = admin
            .post_json(&format!("{rtype}/$validate"), &v)
            .await
            .expect_status(200);
        assert_eq!(
            resp.body["issue"][0]["severity"],
            "information",
            "{}: {}",
            path.display(),
            resp.text
        );
        let id = v["id"].as_str().unwrap();
        admin
            .put_json(&format!("{rtype}/{id}"), &v)
            .await
            .expect_status(201);
    }
    assert_eq!(
        files.len(),
        21,
        "profiles/ holds 9 StructureDefinitions, 6 CodeSystems, 6 ValueSets"
    );
    // fhir.resources 6.4.0 (FHIR 4.0.1), a model nobody here wrote.
    let out = std::process::Command::new(common::clients::py_r4())
        .arg(common::clients::scripts_dir().join("r4_check.py"))
        .args(&files)
        .output()
        .expect("run r4_check.py");
    assert!(
        out.status.success(),
        "fhir.resources refuses files of profiles/:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ok {}", files.len())
    );
    // The snapshots are the generator's.
    let out = std::process::Command::new("python3")
        .arg("scripts/gen_profile_snapshots.py")
        .arg("--check")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "snapshots differ from the generator's: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The CapabilityStatement names each resource profile for its type.
    let cs = server
        .anonymous_client()
        .get("metadata")
        .await
        .expect_status(200);
    let supported = |t: &str| -> Vec<String> {
        cs.body["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == t)
            .and_then(|r| r["supportedProfile"].as_array())
            .into_iter()
            .flatten()
            .map(|u| u.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(supported("Patient"), [format!("{SD}foster-youth-patient")]);
    assert_eq!(
        supported("CareTeam"),
        [format!("{SD}foster-youth-careteam")]
    );
    assert_eq!(
        supported("ServiceRequest"),
        [format!("{SD}foster-youth-servicerequest")]
    );
    assert_eq!(
        supported("Consent"),
        [
            format!("{SD}foster-youth-privacy-consent"),
            format!("{SD}jv220-medication-consent")
        ]
    );
    assert!(supported("Observation").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_data_validates_against_its_profiles() {
    // The demo loads through the write path, so a demo resource failing its profile would stop
    // the server here; then each file is judged again by `$validate`.
    let server = Server::builder().arg("--demo").start();
    let admin = server.client();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo");
    let mut claimed = 0;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let demo_files = files.clone();
    for path in files {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let rtype = v["resourceType"].as_str().unwrap();
        let profile = v["meta"]["profile"][0].as_str().unwrap_or("");
        if matches!(rtype, "Patient" | "CareTeam" | "ServiceRequest" | "Consent") {
            assert!(
                profile.starts_with(SD),
                "{} claims its profile",
                path.display()
            );
        }
        if profile.is_empty() {
            continue;
        }
        claimed += 1;
        let resp = admin
            .post_json(&format!("{rtype}/$validate"), &v)
            .await
            .expect_status(200);
        assert_eq!(
            resp.body["issue"],
            json!([{ "severity": "information", "code": "informational",
                     "diagnostics": "no issues: the resource conforms to the base specification and the profiles it claims" }]),
            "{}",
            path.display()
        );
    }
    assert_eq!(claimed, 50);
    // fhir.resources agrees the demo is valid R4.
    let out = std::process::Command::new(common::clients::py_r4())
        .arg(common::clients::scripts_dir().join("r4_check.py"))
        .args(&demo_files)
        .output()
        .expect("run r4_check.py");
    assert!(
        out.status.success(),
        "fhir.resources refuses demo files:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The stored youth, through the instance form with a Parameters body.
    let stored = admin.read("Patient", "youth-maria-lopez").await;
    let resp = admin
        .post_json(
            "Patient/youth-maria-lopez/$validate",
            &json!({ "resourceType": "Parameters", "parameter": [
                { "name": "resource", "resource": stored },
                { "name": "mode", "valueCode": "update" } ] }),
        )
        .await
        .expect_status(200);
    assert_eq!(resp.body["issue"][0]["severity"], "information");
}

/// A broken variant of a valid resource and the element paths it must be refused with.
struct Case {
    what: &'static str,
    valid: Value,
    broken: Value,
    paths: Vec<String>,
}

fn cases() -> Vec<Case> {
    let p = maria("pv");
    let mut out = vec![];
    let mut case =
        |what: &'static str, valid: &Value, edit: &dyn Fn(&mut Value), paths: &[&str]| {
            let mut broken = valid.clone();
            edit(&mut broken);
            out.push(Case {
                what,
                valid: valid.clone(),
                broken,
                paths: sorted(paths),
            });
        };
    case(
        "no Medi-Cal CIN",
        &p,
        &|b| {
            b["identifier"].as_array_mut().unwrap().remove(0);
        },
        &["Patient.identifier"],
    );
    case(
        "two CINs",
        &p,
        &|b| {
            let cin = b["identifier"][0].clone();
            b["identifier"].as_array_mut().unwrap().push(cin);
        },
        &["Patient.identifier[3]"],
    );
    case(
        "an unknown child welfare service",
        &p,
        &|b| b["extension"][0]["extension"][0]["valueCoding"]["code"] = json!("kinship-care"),
        &["Patient.extension[0].extension[0].valueCoding.code"],
    );
    case(
        "a county outside California",
        &p,
        &|b| b["extension"][1]["extension"][2]["valueCoding"]["code"] = json!("32003"),
        &["Patient.extension[1].extension[2].valueCoding.code"],
    );
    case(
        "a Direct Member flag that is not a boolean",
        &p,
        &|b| {
            b["extension"][2] = json!({ "url": format!("{SD}direct-member"), "valueString": "yes" })
        },
        &["Patient.extension[2].valueString"],
    );
    case(
        "an unknown sub-extension of an episode",
        &p,
        &|b| {
            b["extension"][0]["extension"]
                .as_array_mut()
                .unwrap()
                .push(json!({ "url": "placement-type", "valueString": "kin" }))
        },
        &["Patient.extension[0].extension[4]"],
    );
    case(
        "an episode without a start (invariant cwe-1)",
        &p,
        &|b| b["extension"][1]["extension"][1]["valuePeriod"] = json!({ "end": "2026-12-01" }),
        &["Patient.extension[1]"],
    );
    case(
        "an extension of ours that we do not define",
        &p,
        &|b| {
            b["extension"]
                .as_array_mut()
                .unwrap()
                .push(json!({ "url": format!("{SD}placement"), "valueString": "x" }))
        },
        &["Patient.extension[3].url"],
    );
    let consent: Value = serde_json::from_str(include_str!(
        "../demo/Consent-consent-maria-counselling-pcp.json"
    ))
    .unwrap();
    case(
        "a privacy Consent with another scope (pattern)",
        &consent,
        &|b| b["scope"]["coding"][0]["code"] = json!("treatment"),
        &["Consent.scope"],
    );
    case(
        "a performer kind outside its value set",
        &consent,
        &|b| {
            b["performer"][0]["extension"] = json!([{
                "url": format!("{SD}consent-performer-kind"),
                "valueCoding": { "system": "http://foster-passport.example/fhir/CodeSystem/consent-performer-kind", "code": "foster-parent" } }])
        },
        &["Consent.performer[0].extension[0].valueCoding.code"],
    );
    case(
        "a privacy Consent that neither permits nor denies (invariant fyc-1)",
        &consent,
        &|b| {
            b["provision"].as_object_mut().unwrap().remove("type");
        },
        &["Consent"],
    );
    let jv220 = jv220("jv");
    case(
        "a JV-220 authorization signed by a practitioner",
        &jv220,
        &|b| b["performer"][0] = json!({ "reference": "Practitioner/sw-1" }),
        &["Consent.performer[0].reference"],
    );
    case(
        "a JV-220 authorization with two performers",
        &jv220,
        &|b| {
            b["performer"]
                .as_array_mut()
                .unwrap()
                .push(json!({ "reference": "Organization/other-court" }))
        },
        &["Consent.performer[1]"],
    );
    case(
        "a JV-220 authorization of a Condition (invariant jv-1)",
        &jv220,
        &|b| b["provision"]["data"][0]["reference"]["reference"] = json!("Condition/c-1"),
        &["Consent"],
    );
    case(
        "a JV-220 authorization with a privacy scope (pattern)",
        &jv220,
        &|b| b["scope"]["coding"][0]["code"] = json!("patient-privacy"),
        &["Consent.scope"],
    );
    let careteam: Value =
        serde_json::from_str(include_str!("../demo/CareTeam-careteam-maria-lopez.json")).unwrap();
    case(
        "a care team role we do not know",
        &careteam,
        &|b| b["participant"][1]["role"][0]["coding"][0]["code"] = json!("foster-mother"),
        &["CareTeam.participant[1].role[0].coding[0].code"],
    );
    case(
        "a care team member without a role",
        &careteam,
        &|b| {
            b["participant"][1].as_object_mut().unwrap().remove("role");
        },
        &["CareTeam.participant[1].role"],
    );
    let sr: Value =
        serde_json::from_str(include_str!("../demo/ServiceRequest-sr-andre-ecm.json")).unwrap();
    case(
        "a service request about a Group",
        &sr,
        &|b| b["subject"] = json!({ "reference": "Group/g1" }),
        &["ServiceRequest.subject.reference"],
    );
    case(
        "a service request category we do not know",
        &sr,
        &|b| b["category"][0]["coding"][0]["code"] = json!("housing"),
        &["ServiceRequest.category[0].coding[0].code"],
    );
    case(
        "a service request with two categories",
        &sr,
        &|b| {
            let c = b["category"][0].clone();
            b["category"].as_array_mut().unwrap().push(c);
        },
        &["ServiceRequest.category[1]"],
    );
    case(
        "a service request without its authoring date",
        &sr,
        &|b| {
            b.as_object_mut().unwrap().remove("authoredOn");
        },
        &["ServiceRequest.authoredOn"],
    );
    out
}

async fn refused(client: &Client, resp: Resp, case: &Case, how: &str) {
    let resp = resp.expect_outcome(422);
    assert_eq!(
        paths(&resp),
        case.paths,
        "{}, {how}: {}",
        case.what,
        resp.text
    );
    let _ = client;
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_failing_a_claimed_profile_get_422_with_element_paths() {
    let server = Server::start();
    let admin = server.client();
    for (n, case) in cases().iter().enumerate() {
        let rtype = case.valid["resourceType"].as_str().unwrap();
        let id = format!("case-{n}");
        let mut valid = case.valid.clone();
        valid["id"] = json!(id);
        let mut broken = case.broken.clone();
        broken["id"] = json!(id);

        // Create: refused, nothing stored.
        let mut create = broken.clone();
        create.as_object_mut().unwrap().remove("id");
        let resp = admin.post_json(rtype, &create).await;
        refused(&admin, resp, case, "create").await;
        // $validate says the same, type level and through Parameters.
        let resp = admin
            .post_json(&format!("{rtype}/$validate"), &broken)
            .await
            .expect_status(200);
        assert_eq!(
            paths(&resp),
            case.paths,
            "{}, $validate: {}",
            case.what,
            resp.text
        );
        let resp = admin
            .post_json(
                &format!("{rtype}/$validate"),
                &json!({ "resourceType": "Parameters", "parameter": [{ "name": "resource", "resource": broken }] }),
            )
            .await
            .expect_status(200);
        assert_eq!(
            paths(&resp),
            case.paths,
            "{}, $validate(Parameters)",
            case.what
        );

        // Update of a stored valid version: refused, the stored version unchanged.
        admin
            .put_json(&format!("{rtype}/{id}"), &valid)
            .await
            .expect_status(201);
        let resp = admin.put_json(&format!("{rtype}/{id}"), &broken).await;
        refused(&admin, resp, case, "update").await;
        let stored = admin.read(rtype, &id).await;
        assert_eq!(
            stored["meta"]["versionId"], "1",
            "{}: nothing stored",
            case.what
        );
        // Instance-level $validate of the same body.
        let resp = admin
            .post_json(&format!("{rtype}/{id}/$validate"), &broken)
            .await
            .expect_status(200);
        assert_eq!(
            paths(&resp),
            case.paths,
            "{}, instance $validate",
            case.what
        );
    }
    let created = admin.get("Patient").await.expect_status(200);
    assert!(
        created.body["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| e["resource"]["id"].as_str().unwrap().starts_with("case-")),
        "no refused create was stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_and_batch_results_are_checked_too() {
    let server = Server::start();
    let admin = server.client();
    admin
        .put_json("Patient/pp", &maria("pp"))
        .await
        .expect_status(201);
    // A patch that removes the CIN.
    let resp = admin
        .patch(
            "Patient/pp",
            &json!([{ "op": "remove", "path": "/identifier/0" }]),
        )
        .await
        .expect_outcome(422);
    assert_eq!(paths(&resp), ["Patient.identifier"]);
    assert_eq!(admin.read("Patient", "pp").await["meta"]["versionId"], "1");

    // A batch: the bad entry fails alone with 422, the good one is stored.
    let mut bad = maria("pb-bad");
    bad["identifier"].as_array_mut().unwrap().remove(0);
    let bundle = json!({ "resourceType": "Bundle", "type": "batch", "entry": [
        { "resource": bad, "request": { "method": "PUT", "url": "Patient/pb-bad" } },
        { "resource": maria("pb-good"), "request": { "method": "PUT", "url": "Patient/pb-good" } } ] });
    let resp = admin.post_json("", &bundle).await.expect_status(200);
    assert_eq!(
        resp.body["entry"][0]["response"]["status"],
        "422 Unprocessable Entity"
    );
    assert_eq!(
        resp.body["entry"][0]["response"]["outcome"]["issue"][0]["expression"][0],
        "Patient.identifier"
    );
    assert!(
        resp.body["entry"][1]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("201")
    );
    admin.get("Patient/pb-bad").await.expect_status(404);

    // A transaction with the same bad entry: all or nothing.
    let mut bundle = bundle;
    bundle["type"] = json!("transaction");
    bundle["entry"][1]["request"]["url"] = json!("Patient/pt-good");
    bundle["entry"][1]["resource"]["id"] = json!("pt-good");
    let resp = admin.post_json("", &bundle).await.expect_outcome(422);
    assert!(resp.text.contains("Patient.identifier"), "{}", resp.text);
    admin.get("Patient/pt-good").await.expect_status(404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_claiming_no_profile_of_ours_is_checked_against_base_only() {
    let server = Server::start();
    let admin = server.client();
    let mut p = maria("np");
    p.as_object_mut().unwrap().remove("meta");
    p["identifier"].as_array_mut().unwrap().remove(0);
    p["extension"][0]["extension"][0]["valueCoding"]["code"] = json!("kinship-care");
    admin.put_json("Patient/np", &p).await.expect_status(201);
    let resp = admin
        .post_json("Patient/$validate", &p)
        .await
        .expect_status(200);
    assert_eq!(resp.body["issue"][0]["severity"], "information");
    // Someone else's profile is not ours to judge.
    p["meta"] =
        json!({ "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"] });
    admin.put_json("Patient/np", &p).await.expect_status(200);
    // A profile in our namespace that we do not define is refused.
    p["meta"] = json!({ "profile": [format!("{SD}foster-youth-person")] });
    let resp = admin.put_json("Patient/np", &p).await.expect_outcome(422);
    assert_eq!(paths(&resp), ["Patient.meta.profile[0]"]);
    // ... as is one of ours for another type.
    p["meta"] = json!({ "profile": [format!("{SD}foster-youth-careteam")] });
    let resp = admin.put_json("Patient/np", &p).await.expect_outcome(422);
    assert_eq!(paths(&resp), ["Patient.meta.profile[0]"]);
    // Base-spec problems are still a 400, whatever the profile.
    p["birthDate"] = json!("2011-02-30");
    admin.put_json("Patient/np", &p).await.expect_outcome(400);
    // `$validate` with a `profile` parameter checks against it even when not claimed.
    let mut unclaimed = maria("np2");
    unclaimed.as_object_mut().unwrap().remove("meta");
    unclaimed["identifier"].as_array_mut().unwrap().remove(0);
    let resp = admin
        .post_json(
            "Patient/$validate",
            &json!({ "resourceType": "Parameters", "parameter": [
                { "name": "resource", "resource": unclaimed },
                { "name": "profile", "valueUri": format!("{SD}foster-youth-patient") } ] }),
        )
        .await
        .expect_status(200);
    assert_eq!(paths(&resp), ["Patient.identifier"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn instance_validate_of_a_hidden_resource_answers_as_missing() {
    let server = Server::start();
    let admin = server.client();
    admin
        .put_json("Patient/hv", &maria("hv"))
        .await
        .expect_status(201);
    admin
        .put_json(
            "Organization/stranger-org",
            &json!({ "resourceType": "Organization", "id": "stranger-org", "name": "stranger" }),
        )
        .await
        .expect_status(201);
    let stranger = common::auth::backend_client_with_scope(
        &server,
        "stranger",
        "provider",
        "stranger-org",
        "TREAT",
        "system/*.cruds",
    );
    let body = maria("hv");
    let hidden = stranger
        .post_json("Patient/hv/$validate", &body)
        .await
        .expect_outcome(404);
    let missing = stranger
        .post_json("Patient/nobody/$validate", &maria("nobody"))
        .await
        .expect_outcome(404);
    assert_eq!(
        hidden.body["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .replace("hv", "ID"),
        missing.body["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .replace("nobody", "ID")
    );
    assert!(!hidden.text.contains("Lopez"));
    // The custodian sees it, and gets the answer.
    admin
        .post_json("Patient/hv/$validate", &body)
        .await
        .expect_status(200);
    // The type-level form reads nothing stored: the stranger may use it.
    let resp = stranger
        .post_json("Patient/$validate", &body)
        .await
        .expect_status(200);
    assert_eq!(resp.body["issue"][0]["severity"], "information");
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_reports_base_problems_and_needs_a_token_and_a_write_scope() {
    let server = Server::start();
    let admin = server.client();
    // Base-spec problems are the answer (200), with their paths, not a refusal.
    let mut p = maria("vb");
    p["birthDate"] = json!("2011-02-30");
    let resp = admin
        .post_json("Patient/$validate", &p)
        .await
        .expect_status(200);
    assert!(
        paths(&resp).contains(&"Patient.birthDate".to_string()),
        "{}",
        resp.text
    );
    // ... which a write of the same body refuses with 400.
    admin.put_json("Patient/vb", &p).await.expect_outcome(400);
    // A `profile` parameter the server does not know is named.
    let resp = admin
        .post_json(
            "Patient/$validate",
            &json!({ "resourceType": "Parameters", "parameter": [
                { "name": "resource", "resource": maria("vb") },
                { "name": "profile", "valueUri": "http://example.org/StructureDefinition/nobody" } ] }),
        )
        .await
        .expect_status(200);
    assert_eq!(paths(&resp), ["Parameters.parameter[1].valueUri"]);
    // A JV-220 authorization that conforms.
    let resp = admin
        .post_json("Consent/$validate", &jv220("jv-ok"))
        .await
        .expect_status(200);
    assert_eq!(
        resp.body["issue"][0]["severity"], "information",
        "{}",
        resp.text
    );
    // The body names another type than the URL.
    admin
        .post_json("Consent/$validate", &maria("vb"))
        .await
        .expect_outcome(400);

    // No token: 401, like every FHIR route but the CapabilityStatement.
    server
        .anonymous_client()
        .post_json("Patient/$validate", &maria("vb"))
        .await
        .expect_outcome(401);
    // A token that may only read Patients, or write only Observations: 403 on both forms.
    admin
        .put_json("Patient/vb", &maria("vb"))
        .await
        .expect_status(201);
    for (id, scope) in [
        ("reader", "system/Patient.rs"),
        ("observer", "system/Observation.cruds"),
    ] {
        let client = common::auth::backend_client_with_scope(
            &server,
            id,
            "custodian",
            "vb-org",
            "TREAT",
            scope,
        );
        client
            .post_json("Patient/$validate", &maria("vb"))
            .await
            .expect_outcome(403);
        client
            .post_json("Patient/vb/$validate", &maria("vb"))
            .await
            .expect_outcome(403);
    }
    // Create (or update) alone is enough.
    let creator = common::auth::backend_client_with_scope(
        &server,
        "creator",
        "custodian",
        "vb-org",
        "TREAT",
        "system/Patient.c",
    );
    creator
        .post_json("Patient/$validate", &maria("vb"))
        .await
        .expect_status(200);
}
