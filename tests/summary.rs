//! `GET Patient/[id]/$summary` (issue 6): Maria's Health and Education Passport as a FHIR
//! document, per demo role — the sections each may see, narratives written from those entries
//! only, the high-water mark in `meta.security`, and the same notice for every requester whom
//! consent limits.

mod common;

use common::auth::demo_user;
use common::{Client, Server};
use serde_json::Value;

const MARIA: &str = "youth-maria-lopez";
const NOTICE: &str = "records may be left out";

/// Section code → the references it holds.
fn sections(doc: &Value) -> Vec<(String, Vec<String>, Value)> {
    let composition = &doc["entry"][0]["resource"];
    assert_eq!(composition["resourceType"], "Composition");
    composition["section"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let refs = s["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["reference"].as_str().unwrap().to_string())
                .collect();
            (
                s["code"]["coding"][0]["code"].as_str().unwrap().to_string(),
                refs,
                s.clone(),
            )
        })
        .collect()
}

fn section<'a>(
    doc: &'a [(String, Vec<String>, Value)],
    code: &str,
) -> &'a (String, Vec<String>, Value) {
    doc.iter()
        .find(|(c, _, _)| c == code)
        .unwrap_or_else(|| panic!("section {code}"))
}

fn security(doc: &Value) -> Vec<String> {
    doc["meta"]["security"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap().to_string())
        .collect()
}

async fn passport(client: &Client) -> Value {
    let resp = client
        .get(&format!("Patient/{MARIA}/$summary"))
        .await
        .expect_status(200);
    let doc = resp.body;
    assert_eq!(doc["type"], "document");
    // Every reference of the Composition resolves inside the document.
    let full_urls: Vec<String> = doc["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["fullUrl"].as_str().unwrap().to_string())
        .collect();
    for (code, refs, _) in sections(&doc) {
        for r in refs {
            assert!(
                full_urls.iter().any(|u| u.ends_with(&format!("/{r}"))),
                "{code}: {r} is in the document"
            );
        }
    }
    doc
}

#[tokio::test(flavor = "multi_thread")]
async fn each_demo_role_gets_its_passport() {
    let server = Server::builder().arg("--demo").start();
    let counselling = "Condition/cond-maria-depression";

    // The youth, her PCP and the custodian: her mental health history is there.
    for (who, client) in [
        ("maria", demo_user(&server, "maria", "passport-demo").await),
        (
            "dr-whitfield",
            demo_user(&server, "dr-whitfield", "passport-demo").await,
        ),
        ("the custodian", server.client()),
    ] {
        let doc = passport(&client).await;
        let s = sections(&doc);
        assert_eq!(section(&s, "mental-health").1, [counselling], "{who}");
        let marks = security(&doc);
        assert!(
            marks.contains(&"R".to_string()) && marks.contains(&"PSY".to_string()),
            "{who}: {marks:?}"
        );
        let limited = doc.to_string().contains(NOTICE);
        assert_eq!(limited, who == "dr-whitfield", "{who}: the consent notice");
    }

    // The caregiver: everything but the counselling record, with no trace of it anywhere.
    let sandra = demo_user(&server, "sandra", "passport-demo").await;
    let doc = passport(&sandra).await;
    let s = sections(&doc);
    let mental = section(&s, "mental-health");
    assert!(mental.1.is_empty());
    assert_eq!(mental.2["emptyReason"]["coding"][0]["code"], "withheld");
    let text = doc.to_string().to_lowercase();
    for hidden in ["depression", "counsel", "psy", "minor-consented"] {
        assert!(
            !text.contains(hidden),
            "the caregiver's passport mentions {hidden}"
        );
    }
    assert_eq!(security(&doc), ["N"]);
    for (code, _, section) in &s {
        assert!(
            section["text"]["div"].as_str().unwrap().contains(NOTICE),
            "{code}"
        );
    }
    // What she does see, section by section, with narratives from those entries.
    let problems = section(&s, "11450-4");
    assert!(
        problems
            .1
            .contains(&"Condition/cond-maria-eczema".to_string()),
        "{problems:?}"
    );
    assert!(
        problems.2["text"]["div"]
            .as_str()
            .unwrap()
            .contains("Eczema")
    );
    assert_eq!(section(&s, "10160-0").1.len(), 2, "current medications");
    assert_eq!(
        section(&s, "48765-2").1,
        ["AllergyIntolerance/allergy-maria-penicillin"]
    );
    assert_eq!(section(&s, "11369-6").1.len(), 3, "immunizations");
    assert_eq!(
        section(&s, "18776-5").1.len(),
        3,
        "open referrals and authorizations"
    );
    let care = section(&s, "care-team");
    assert_eq!(care.1, ["CareTeam/careteam-maria-lopez"]);
    let whom = care.2["text"]["div"].as_str().unwrap();
    assert!(
        whom.contains("Whitfield") && whom.contains("(909) 555-0151"),
        "{whom}"
    );
    assert!(
        !whom.contains("Lupe"),
        "a former caregiver is not whom to call: {whom}"
    );
    let placements = section(&s, "placements");
    assert!(
        placements
            .1
            .contains(&"RelatedPerson/rf-sandra-okoye".to_string()),
        "{placements:?}"
    );
    assert_eq!(
        section(&s, "consents").1,
        ["Consent/consent-maria-lopez-careteam"]
    );

    // Someone who may not see her gets what a missing youth gets.
    let lupe = demo_user(&server, "lupe", "passport-demo").await;
    let hidden = lupe
        .get(&format!("Patient/{MARIA}/$summary"))
        .await
        .expect_status(404);
    let missing = lupe.get("Patient/nobody/$summary").await.expect_status(404);
    assert_eq!(
        hidden.outcome_text().replace(MARIA, "X"),
        missing.outcome_text().replace("nobody", "X")
    );
    server
        .client()
        .get(&format!("Patient/{MARIA}/$summary?section=all"))
        .await
        .expect_status(400);
}
