//! Composite search parameters (issue 3), one case set per composite the CapabilityStatement
//! lists (R4 Observation's eight).
//!
//! R4 search.html#composite: "the components of a composite search parameter are matched
//! together": `code-value-quantity=loinc|8302-2$gt150` finds an Observation only when the same
//! element carries that code AND a value over 150, never when one element has the code and
//! another the value. Values are `$`-separated, each component parsed by its own type.

mod common;

use std::collections::BTreeSet;

use common::{Server, enc};
use serde_json::{Value, json};

const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";

fn coding(code: &str) -> Value {
    json!({ "coding": [{ "system": LOINC, "code": code }] })
}

fn observation(id: &str, extra: Value) -> Value {
    let mut o = json!({ "resourceType": "Observation", "id": id, "status": "final", "code": coding("8302-2") });
    for (k, v) in extra.as_object().expect("object") {
        o[k] = v.clone();
    }
    o
}

fn quantity(value: f64, code: &str) -> Value {
    json!({ "value": value, "unit": code, "system": UCUM, "code": code })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_parameters_match_components_of_one_element() {
    let server = Server::start();
    let client = server.client();
    let fixtures = [
        observation("cv-tall", json!({ "valueQuantity": quantity(180.0, "cm") })),
        observation(
            "cv-short",
            json!({ "valueQuantity": quantity(120.0, "cm") }),
        ),
        // A different code with a tall value: code and value must come from one element.
        json!({ "resourceType": "Observation", "id": "cv-other", "status": "final",
                "code": coding("29463-7"), "valueQuantity": quantity(180.0, "cm") }),
        observation(
            "cv-concept",
            json!({ "code": coding("11557-6"),
            "valueCodeableConcept": { "coding": [{ "system": "http://snomed.info/sct", "code": "260385009" }] } }),
        ),
        observation(
            "cv-date",
            json!({ "code": coding("21112-8"), "valueDateTime": "2020-05-04" }),
        ),
        observation(
            "cv-string",
            json!({ "code": coding("8251-1"), "valueString": "Feeling well today" }),
        ),
        // Blood pressure: components pair their own codes and values.
        json!({ "resourceType": "Observation", "id": "cv-bp", "status": "final", "code": coding("85354-9"),
                "component": [
                    { "code": coding("8480-6"), "valueQuantity": quantity(140.0, "mm[Hg]") },
                    { "code": coding("8462-4"), "valueQuantity": quantity(90.0, "mm[Hg]") },
                    { "code": coding("8867-4"), "valueCodeableConcept": { "coding": [{ "system": "http://snomed.info/sct", "code": "271636001" }] } }
                ] }),
    ];
    for f in &fixtures {
        let resp = client
            .put_json(&format!("Observation/{}", f["id"].as_str().unwrap()), f)
            .await;
        assert!(
            resp.status == 201 || resp.status == 200,
            "loading {}: {}",
            f["id"],
            resp.status
        );
    }
    let ids = "cv-tall,cv-short,cv-other,cv-concept,cv-date,cv-string,cv-bp";
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "code-value-quantity",
            "http://loinc.org|8302-2$gt150|http://unitsofmeasure.org|cm",
            &["cv-tall"],
        ),
        ("code-value-quantity", "8302-2$lt150", &["cv-short"]),
        ("code-value-quantity", "8302-2$180", &["cv-tall"]),
        ("code-value-quantity", "8302-2$gt500", &[]),
        ("code-value-quantity", "29463-7$gt150", &["cv-other"]),
        // The blood pressure's systolic pairs with 140, never with the diastolic 90.
        ("code-value-quantity", "8480-6$90", &[]),
        (
            "code-value-concept",
            "11557-6$http://snomed.info/sct|260385009",
            &["cv-concept"],
        ),
        (
            "code-value-concept",
            "11557-6$http://snomed.info/sct|0000",
            &[],
        ),
        ("code-value-date", "21112-8$2020-05", &["cv-date"]),
        ("code-value-date", "21112-8$gt2021", &[]),
        ("code-value-string", "8251-1$feeling", &["cv-string"]),
        ("code-value-string", "8251-1$sad", &[]),
        ("component-code-value-quantity", "8480-6$gt130", &["cv-bp"]),
        ("component-code-value-quantity", "8480-6$90", &[]),
        ("component-code-value-quantity", "8462-4$90", &["cv-bp"]),
        (
            "component-code-value-concept",
            "8867-4$271636001",
            &["cv-bp"],
        ),
        ("component-code-value-concept", "8867-4$0000", &[]),
        ("combo-code-value-quantity", "8480-6$140", &["cv-bp"]),
        ("combo-code-value-quantity", "8302-2$gt150", &["cv-tall"]),
        ("combo-code-value-quantity", "8462-4$140", &[]),
        ("combo-code-value-concept", "8867-4$271636001", &["cv-bp"]),
        (
            "combo-code-value-concept",
            "11557-6$260385009",
            &["cv-concept"],
        ),
        ("combo-code-value-concept", "11557-6$271636001", &[]),
        // OR of tuples.
        (
            "code-value-quantity",
            "8302-2$gt150,8302-2$lt130",
            &["cv-short", "cv-tall"],
        ),
    ];
    let mut failures = Vec::new();
    for (param, value, expected) in cases {
        let path = format!("Observation?{param}={}&_id={ids}", enc(value));
        let resp = client.get(&path).await;
        if resp.status != 200 {
            failures.push(format!("{path}: status {}", resp.status));
            continue;
        }
        let got: BTreeSet<String> = resp.body["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["search"]["mode"] == "match")
            .map(|e| e["resource"]["id"].as_str().unwrap_or_default().to_string())
            .collect();
        let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        if got != want {
            failures.push(format!("{path}: expected {want:?}, got {got:?}"));
        }
    }
    for bad in [
        "code-value-quantity=8302-2",
        "code-value-quantity=8302-2$x$y",
        "code-value-quantity:missing=true",
    ] {
        let resp = client.get(&format!("Observation?{bad}")).await;
        if resp.status != 400 {
            failures.push(format!(
                "Observation?{bad}: expected 400, got {}",
                resp.status
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "composite search failures:\n{}",
        failures.join("\n")
    );
}
