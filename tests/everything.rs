//! `GET Patient/[id]/$everything` (issue 6; R4 Patient-everything) on the demo record, per demo
//! role: each requester gets the slice of Maria's record its consents release — the same
//! resources its own searches of each type find — paged with full pages, filtered by `_type` and
//! `_since`; a requester who may not see her gets exactly what a missing youth gets.

mod common;

use std::collections::BTreeSet;

use common::{Client, Server};

const MARIA: &str = "youth-maria-lopez";

/// Every `Type/id` of `$everything`, following `next` links; checks each page is full but the
/// last.
async fn everything(client: &Client, query: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut next = Some(format!("Patient/{MARIA}/$everything?{query}"));
    let mut sizes = vec![];
    while let Some(url) = next {
        let resp = client.get(&url).await.expect_status(200);
        assert_eq!(resp.body["type"], "searchset");
        let page: Vec<String> = resp.body["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap(),
                    e["resource"]["id"].as_str().unwrap()
                )
            })
            .collect();
        sizes.push(page.len());
        for id in page {
            assert!(out.insert(id.clone()), "{id} twice");
        }
        next = resp.body["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_string());
    }
    if let Some(count) = query
        .split('&')
        .find_map(|p| p.strip_prefix("_count="))
        .and_then(|c| c.parse::<usize>().ok())
    {
        let (last, full) = sizes.split_last().unwrap();
        assert!(full.iter().all(|n| *n == count), "full pages: {sizes:?}");
        assert!(
            *last <= count && (*last > 0 || sizes.len() == 1),
            "{sizes:?}"
        );
    }
    out
}

/// What the requester's own searches find of Maria's record, type by type.
async fn searched(client: &Client) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let types = [
        ("Patient", format!("_id={MARIA}")),
        ("Condition", format!("patient={MARIA}")),
        ("AllergyIntolerance", format!("patient={MARIA}")),
        ("Immunization", format!("patient={MARIA}")),
        ("MedicationRequest", format!("patient={MARIA}")),
        ("ServiceRequest", format!("patient={MARIA}")),
        ("CareTeam", format!("patient={MARIA}")),
        ("Consent", format!("patient={MARIA}")),
        ("RelatedPerson", format!("patient={MARIA}")),
    ];
    for (t, q) in types {
        let resp = client
            .get(&format!("{t}?{q}&_count=500"))
            .await
            .expect_status(200);
        for e in resp.body["entry"].as_array().into_iter().flatten() {
            out.insert(format!("{t}/{}", e["resource"]["id"].as_str().unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn each_demo_role_gets_its_slice_of_the_record() {
    let server = Server::builder().arg("--demo").start();
    let custodian = server.client();
    let all = everything(&custodian, "_count=7").await;
    assert!(all.contains(&format!("Patient/{MARIA}")));
    assert!(all.contains("Condition/cond-maria-depression"));
    assert!(all.contains("CareTeam/careteam-maria-lopez"));
    assert!(all.iter().all(|r| !r.starts_with("AuditEvent/")), "{all:?}");
    assert!(!all.contains("Condition/cond-jayden-adhd"), "only Maria's");
    let searchable = searched(&custodian).await;
    assert!(searchable.is_subset(&all), "{searchable:?} ⊆ {all:?}");

    // The counselling record and the consent about it (labelled as what it governs: it tells
    // that the record exists) are the youth's to release.
    let counselling = "Condition/cond-maria-depression";
    let consent = "Consent/consent-maria-counselling-pcp";
    for (user, hidden) in [
        ("maria", vec![]),
        ("dr-whitfield", vec![consent]),
        ("sandra", vec![counselling, consent]),
        ("rachel", vec![counselling, consent]),
        ("gloria", vec![counselling, consent]),
    ] {
        let client = common::auth::demo_user(&server, user, "passport-demo").await;
        let got = everything(&client, "_count=5").await;
        let expected: BTreeSet<String> = all
            .iter()
            .filter(|r| !hidden.contains(&r.as_str()))
            .cloned()
            .collect();
        assert_eq!(got, expected, "{user}'s slice");
        assert_eq!(
            searched(&client).await,
            got.intersection(&searchable)
                .cloned()
                .collect::<BTreeSet<_>>(),
            "{user}: $everything agrees with the same requester's searches"
        );
    }

    // Maria's caregiver before the move and a PCP who does not treat her: exactly as a youth
    // who does not exist.
    for user in ["lupe", "dr-natarajan"] {
        let client = common::auth::demo_user(&server, user, "passport-demo").await;
        let hidden = client
            .get(&format!("Patient/{MARIA}/$everything"))
            .await
            .expect_status(404);
        let missing = client
            .get("Patient/no-such-youth/$everything")
            .await
            .expect_status(404);
        assert_eq!(
            hidden.outcome_text().replace(MARIA, "X"),
            missing.outcome_text().replace("no-such-youth", "X")
        );
    }

    // _type and _since narrow it; bad parameters are refused.
    let conditions = everything(&custodian, "_type=Condition").await;
    assert!(!conditions.is_empty());
    assert!(conditions.iter().all(|r| r.starts_with("Condition/")));
    let future = everything(&custodian, "_since=2999-01-01T00:00:00Z").await;
    assert!(future.is_empty(), "{future:?}");
    for bad in [
        "_since=yesterday",
        "_type=Nonsense",
        "_count=0",
        "start=2020",
    ] {
        custodian
            .get(&format!("Patient/{MARIA}/$everything?{bad}"))
            .await
            .expect_status(400);
    }
    custodian
        .get(&format!("Patient/{MARIA}/$nothing"))
        .await
        .expect_status(404);
}
