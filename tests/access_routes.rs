//! Every route passes the access layer (issue 5, DESIGN.md section 5): the walk below covers
//! each path the router is built from (`routes::paths`) and, behind the FHIR paths, each shape a
//! FHIR request can take (`Target::SHAPES`) with every method, directly and as batch and
//! transaction entries. A requester with every scope but no consent for the youth gets none of
//! her record anywhere, and a resource it may not see answers exactly as a missing id, whatever
//! the method: reads, searches, history, writes, conditional headers.

mod common;

use std::collections::BTreeSet;

use common::{Client, Resp, Server};
use foster_passport::interactions::Target;
use reqwest::Method;
use serde_json::{Value, json};

const YOUTH: &str = "youth-w";
/// The youth's record: none of it may reach the stranger.
const RECORD: &[&str] = &["youth-w", "w-cond", "w-obs", "w-ct", "w-consent"];
const HIDDEN: &str = "w-cond";
const MISSING: &str = "w-none";

async fn seed(admin: &Client) {
    let mut p = common::patient("Walker");
    p["id"] = json!(YOUTH);
    let subject = json!({ "reference": format!("Patient/{YOUTH}") });
    let resources = [
        p,
        json!({ "resourceType": "Organization", "id": "stranger-org", "name": "stranger" }),
        json!({ "resourceType": "Organization", "id": "friend-org", "name": "friend" }),
        json!({ "resourceType": "Condition", "id": "w-cond", "code": { "text": "asthma" }, "subject": subject }),
        json!({ "resourceType": "Observation", "id": "w-obs", "status": "final", "code": { "text": "weight" }, "subject": subject }),
        json!({ "resourceType": "CareTeam", "id": "w-ct", "status": "active", "subject": subject,
                "participant": [{ "member": { "reference": "Organization/friend-org" } }] }),
        json!({ "resourceType": "Consent", "id": "w-consent", "status": "active",
                "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy" }] },
                "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0" }] }],
                "patient": subject,
                "provision": { "type": "permit", "actor": [{ "role": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP" }] }, "reference": { "reference": "Organization/friend-org" } }] } }),
    ];
    for r in resources {
        let path = format!(
            "{}/{}",
            r["resourceType"].as_str().unwrap(),
            r["id"].as_str().unwrap()
        );
        admin.put_json(&path, &r).await.expect_status(201);
    }
    // A second version, so history has something to hide.
    let mut cond = admin.get("Condition/w-cond").await.expect_status(200).body;
    cond["note"] = json!([{ "text": "seen again" }]);
    admin
        .put_json("Condition/w-cond", &cond)
        .await
        .expect_status(200);
}

/// Every resource a response carries (itself, or a Bundle's entries and nested responses).
fn resources(body: &Value, out: &mut Vec<Value>) {
    match body["resourceType"].as_str() {
        Some("Bundle") => {
            for e in body["entry"].as_array().into_iter().flatten() {
                resources(&e["resource"], out);
                resources(&e["response"]["outcome"], out);
            }
        }
        Some("OperationOutcome") | None => {}
        Some(_) => out.push(body.clone()),
    }
}

/// Nothing of the youth's record in the response: no resource of it, no reference to it, no
/// count of it.
fn assert_nothing_disclosed(what: &str, resp: &Resp) {
    let mut found = vec![];
    resources(&resp.body, &mut found);
    for r in &found {
        let text = r.to_string();
        for id in RECORD {
            assert!(
                !text.contains(id),
                "{what} disclosed {id} in a {}: {text}",
                r["resourceType"]
            );
        }
    }
    if resp.body["resourceType"] == "Bundle"
        && let Some(total) = resp.body["total"].as_u64()
    {
        let visible = resp.body["entry"].as_array().map_or(0, |e| {
            e.iter().filter(|e| e["search"]["mode"] == "match").count()
        });
        assert_eq!(
            total as usize, visible,
            "{what}: total counts only what is shown"
        );
    }
}

/// What a response says, with the id asked for blanked: a hidden and a missing resource must
/// produce the same.
fn shape(resp: &Resp, id: &str) -> (u16, String) {
    let mut issues = String::new();
    for issue in resp.body["issue"].as_array().into_iter().flatten() {
        issues.push_str(&format!(
            "{}|{}|{};",
            issue["severity"], issue["code"], issue["diagnostics"]
        ));
    }
    if resp.body["resourceType"] == "Bundle" {
        for e in resp.body["entry"].as_array().into_iter().flatten() {
            issues.push_str(&format!(
                "{}|{};",
                e["response"]["status"], e["response"]["outcome"]["issue"]
            ));
        }
    }
    (resp.status.as_u16(), issues.replace(id, "ID"))
}

fn condition_body(id: &str) -> Value {
    json!({ "resourceType": "Condition", "id": id, "code": { "text": "probe" },
            "subject": { "reference": format!("Patient/{YOUTH}") } })
}

/// One request of the walk: method, path relative to the base, body.
fn request(stranger: &Client, method: &Method, path: &str, id: &str) -> common::Req {
    let req = stranger.request(method.clone(), path);
    match *method {
        Method::PUT => req.json(&condition_body(id)),
        Method::POST if path.ends_with("_search") => {
            req.body("application/x-www-form-urlencoded", format!("_id={id}"))
        }
        Method::POST if path.is_empty() => req.json(&json!({
            "resourceType": "Bundle", "type": "batch",
            "entry": [{ "request": { "method": "GET", "url": format!("Condition/{id}") } }]
        })),
        Method::POST => req.json(&condition_body(id)),
        Method::PATCH => req.body(
            common::JSON_PATCH,
            r#"[{"op":"replace","path":"/code/text","value":"x"}]"#,
        ),
        _ => req,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_route_returns_a_resource_without_the_access_layer() {
    let server = Server::start();
    let admin = server.client();
    seed(&admin).await;
    // Every scope, a provider's role, a purpose: but no consent of the youth names it.
    let stranger = common::auth::backend_client_with_scope(
        &server,
        "stranger",
        "provider",
        "stranger-org",
        "TREAT",
        "system/*.cruds",
    );

    // The walk must cover every route the router is built from.
    let walked: BTreeSet<&str> = [
        "/healthz",
        "/metrics",
        "/fhir/.well-known/smart-configuration",
        "/fhir/.well-known/openid-configuration",
        "/auth/authorize",
        "/auth/jwks",
        "/auth/token",
        "/auth/introspect",
        "/auth/revoke",
        "/fhir",
        "/fhir/",
        "/fhir/{*path}",
    ]
    .into_iter()
    .collect();
    let routes: BTreeSet<&str> = foster_passport::routes::paths().into_iter().collect();
    assert_eq!(routes, walked, "a new route must be added to this walk");

    // Routes outside FHIR carry no record data, whoever asks.
    let http = reqwest::Client::new();
    for (method, path) in [
        (Method::GET, "/healthz"),
        (Method::GET, "/metrics"),
        (Method::GET, "/fhir/.well-known/smart-configuration"),
        (Method::GET, "/fhir/.well-known/openid-configuration"),
        (
            Method::GET,
            "/auth/authorize?client_id=stranger&response_type=code",
        ),
        (Method::POST, "/auth/authorize"),
        (Method::GET, "/auth/jwks"),
        (Method::POST, "/auth/token"),
        (Method::POST, "/auth/introspect"),
        (Method::POST, "/auth/revoke"),
    ] {
        let text = http
            .request(method.clone(), format!("{}{path}", server.origin()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for id in RECORD {
            assert!(!text.contains(id), "{method} {path} mentions {id}: {text}");
        }
    }

    // The FHIR routes: the base with and without a slash, and each shape behind it.
    for method in [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ] {
        for raw in Target::SHAPES {
            // Patient paths aim at the youth herself, the others at her Condition.
            let hidden_id = if raw.starts_with("Patient/") {
                YOUTH
            } else {
                HIDDEN
            };
            let hidden_path = raw.replace("ID", hidden_id);
            let missing_path = raw.replace("ID", MISSING);
            let what = format!("{method} [base]/{hidden_path}");
            let hidden = request(&stranger, &method, &hidden_path, hidden_id)
                .send_unchecked()
                .await;
            let missing = request(&stranger, &method, &missing_path, MISSING)
                .send_unchecked()
                .await;
            assert_nothing_disclosed(&what, &hidden);
            assert_nothing_disclosed(&what, &missing);
            assert_eq!(
                shape(&hidden, hidden_id),
                shape(&missing, MISSING),
                "{what}: a hidden resource answers as a missing one\n{}\n{}",
                hidden.text,
                missing.text
            );
        }
        for base in ["/fhir", "/fhir/"] {
            let resp = request(&stranger, &method, "", HIDDEN)
                .url(&format!("{}{base}", server.origin()))
                .send_unchecked()
                .await;
            assert_nothing_disclosed(&format!("{method} {base}"), &resp);
        }
    }

    // Conditional headers on a hidden resource tell nothing either.
    for (name, value) in [("If-Match", "W/\"2\""), ("If-None-Match", "W/\"2\"")] {
        for method in [Method::GET, Method::PUT, Method::PATCH, Method::DELETE] {
            let hidden = request(&stranger, &method, &format!("Condition/{HIDDEN}"), HIDDEN)
                .header(name, value)
                .send_unchecked()
                .await;
            let missing = request(&stranger, &method, &format!("Condition/{MISSING}"), MISSING)
                .header(name, value)
                .send_unchecked()
                .await;
            assert_eq!(
                shape(&hidden, HIDDEN),
                shape(&missing, MISSING),
                "{method} with {name}: {}\n{}",
                hidden.text,
                missing.text
            );
        }
    }

    // Batch and transaction entries of every kind, side by side for hidden and missing.
    for kind in ["batch", "transaction"] {
        for (method, url) in [
            ("GET", "Condition/ID"),
            ("GET", "Condition/ID/_history"),
            ("GET", "Condition/ID/_history/1"),
            ("GET", "Condition?_id=ID"),
            ("GET", "Condition/_history"),
            ("GET", "_history"),
            ("PUT", "Condition/ID"),
            ("PATCH", "Condition/ID"),
            ("DELETE", "Condition/ID"),
        ] {
            let entry = |id: &str| {
                let mut e =
                    json!({ "request": { "method": method, "url": url.replace("ID", id) } });
                match method {
                    "PUT" => e["resource"] = condition_body(id),
                    "PATCH" => {
                        e["resource"] = json!({ "resourceType": "Binary", "contentType": common::JSON_PATCH,
                            "data": "W3sib3AiOiJyZXBsYWNlIiwicGF0aCI6Ii9jb2RlL3RleHQiLCJ2YWx1ZSI6IngifV0=" })
                    }
                    _ => {}
                }
                e
            };
            let send = |id: &'static str| {
                let stranger = stranger.clone();
                let bundle =
                    json!({ "resourceType": "Bundle", "type": kind, "entry": [entry(id)] });
                async move { stranger.post_json("", &bundle).await }
            };
            let hidden = send(HIDDEN).await;
            let missing = send(MISSING).await;
            let what = format!("{kind} entry {method} {url}");
            assert_nothing_disclosed(&what, &hidden);
            assert_eq!(
                shape(&hidden, HIDDEN),
                shape(&missing, MISSING),
                "{what}\n{}\n{}",
                hidden.text,
                missing.text
            );
        }
    }

    // Nothing was changed by any of it.
    let cond = admin.get("Condition/w-cond").await.expect_status(200);
    assert_eq!(cond.body["meta"]["versionId"], "2");
    admin
        .get(&format!("Condition/{MISSING}"))
        .await
        .expect_status(404);

    // And every refused read of the hidden resource was audited as a denial.
    let mut denials = 0;
    for _ in 0..50 {
        let events = admin
            .get("AuditEvent?altid=stranger&outcome=4&_count=500")
            .await
            .expect_status(200);
        denials = events.body["entry"].as_array().map_or(0, Vec::len);
        if denials >= 10 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(denials >= 10, "denials are audited ({denials})");
}
