//! read and vread (FHIR R4 http.html §3.1.0.2 and §3.1.0.3).
//!
//! > "The read interaction accesses the current contents of a resource. The interaction is
//! > performed by an HTTP GET … The returned resource SHALL have an id element with a value that
//! > is the [id]. Servers SHOULD return an ETag header with the versionId of the resource (if
//! > versioning is supported) and a Last-Modified header."
//! >
//! > "Unknown resources and deleted resources are treated differently on a read: a GET for a
//! > deleted resource returns a 410 Gone status code …, and a GET for an unknown resource returns
//! > 404 Not Found."
//! >
//! > "The vread interaction performs a version specific read of the resource …
//! > GET [base]/[type]/[id]/_history/[vid]"
//!
//! And issue 2: "The stored and returned JSON is what the client sent plus server-owned `id` and
//! `meta`: nothing the client sent is lost … (extensions, `_`-prefixed primitive elements,
//! contained resources, decimal precision such as `1.50`)."

mod common;

use common::{Server, assert_same_content, etag_version};
use reqwest::Method;
use serde_json::{Value, json};

/// A Patient that exercises what must survive storage unchanged.
fn rich_patient() -> Value {
    // Parsed from text so that decimals keep their exact spelling (arbitrary_precision).
    serde_json::from_str(
        r##"{
        "resourceType": "Patient",
        "meta": { "profile": ["http://example.org/StructureDefinition/test-patient"],
                  "tag": [{ "system": "urn:fp-test", "code": "roundtrip" }] },
        "text": { "status": "generated",
                  "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Ana <b>Lopez</b></div>" },
        "contained": [{ "resourceType": "Organization", "id": "org1", "name": "Contained Org" }],
        "extension": [
            { "url": "http://example.org/fhir/StructureDefinition/weight-at-birth",
              "valueQuantity": { "value": 3.50, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg" } },
            { "url": "http://example.org/fhir/StructureDefinition/score",
              "valueDecimal": 100.000 },
            { "url": "http://example.org/fhir/StructureDefinition/tiny",
              "valueDecimal": 0.0000000000000000000012 },
            { "url": "http://example.org/fhir/StructureDefinition/nested",
              "extension": [{ "url": "inner", "valueString": "déjà vu – ünïcode ✓" }] }
        ],
        "identifier": [{ "system": "urn:fp-test", "value": "rich-1" }],
        "active": true,
        "name": [{ "use": "official", "family": "Lopez", "given": ["Ana", "María"],
                   "_given": [null, { "extension": [{ "url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier", "valueCode": "MID" }] }] }],
        "gender": "female",
        "birthDate": "2012-03-04",
        "_birthDate": { "extension": [{ "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                         "valueDateTime": "2012-03-04T10:15:00-08:00" }] },
        "multipleBirthInteger": 2,
        "managingOrganization": { "reference": "#org1" }
    }"##,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn read_returns_what_was_sent_plus_id_and_meta() {
    let server = Server::start();
    let client = server.client();
    let sent = rich_patient();

    let created = client.post_json("Patient", &sent).await.expect_status(201);
    let id = created.location_id().expect("Location with id");

    let resp = client
        .get(&format!("Patient/{id}"))
        .await
        .expect_status(200);
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/fhir+json"),
        "Content-Type {content_type:?}"
    );
    let body = &resp.body;
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["meta"]["versionId"], "1");
    let last_updated = body["meta"]["lastUpdated"]
        .as_str()
        .expect("meta.lastUpdated");
    chrono::DateTime::parse_from_rfc3339(last_updated)
        .unwrap_or_else(|e| panic!("meta.lastUpdated {last_updated:?} is not an instant: {e}"));
    // Client meta other than versionId/lastUpdated is kept.
    assert_eq!(body["meta"]["profile"], sent["meta"]["profile"]);
    assert_eq!(body["meta"]["tag"], sent["meta"]["tag"]);

    let mut expected = sent.clone();
    expected["id"] = json!(id);
    assert_same_content(&expected, body);

    // Decimal spelling survives byte-for-byte in the response text.
    for literal in ["3.50", "100.000", "0.0000000000000000000012"] {
        assert!(
            resp.text.contains(literal),
            "decimal {literal} lost its text form: {}",
            resp.text
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn read_sends_etag_and_last_modified() {
    let server = Server::start();
    let client = server.client();
    let created = client.create(&common::patient("Headers")).await;
    let id = created["id"].as_str().unwrap();

    let resp = client
        .get(&format!("Patient/{id}"))
        .await
        .expect_status(200);
    assert_eq!(resp.etag(), Some("W/\"1\""), "ETag");
    let last_modified = resp.header("last-modified").expect("Last-Modified header");
    let http_date = chrono::DateTime::parse_from_rfc2822(last_modified)
        .unwrap_or_else(|e| panic!("Last-Modified {last_modified:?} is not an HTTP date: {e}"));
    let meta =
        chrono::DateTime::parse_from_rfc3339(resp.body["meta"]["lastUpdated"].as_str().unwrap())
            .unwrap();
    assert_eq!(
        http_date.timestamp(),
        meta.timestamp(),
        "Last-Modified and meta.lastUpdated name different seconds"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn read_of_unknown_id_or_type_is_404_operation_outcome() {
    let server = Server::start();
    let client = server.client();
    client
        .get("Patient/does-not-exist")
        .await
        .expect_outcome(404);
    client.get("NotAType/123").await.expect_outcome(404);
    // Resource type names are case-sensitive.
    client.get("patient/123").await.expect_outcome(404);
}

#[tokio::test(flavor = "multi_thread")]
async fn vread_returns_each_version_with_its_own_etag() {
    let server = Server::start();
    let client = server.client();
    let mut resource = client.create(&common::patient("Version1")).await;
    let id = resource["id"].as_str().unwrap().to_string();

    let mut sent = vec![resource.clone()];
    for family in ["Version2", "Version3"] {
        resource["name"][0]["family"] = json!(family);
        client.upsert(&resource).await;
        sent.push(resource.clone());
    }

    for (i, expected) in sent.iter().enumerate() {
        let vid = (i + 1).to_string();
        let resp = client
            .get(&format!("Patient/{id}/_history/{vid}"))
            .await
            .expect_status(200);
        assert_eq!(resp.body["meta"]["versionId"], vid.as_str());
        assert_eq!(resp.etag().map(etag_version), Some(vid.as_str()));
        assert!(
            resp.header("last-modified").is_some(),
            "vread Last-Modified"
        );
        assert_same_content(expected, &resp.body);
    }

    // The current read is the last version.
    let current = client.read("Patient", &id).await;
    assert_eq!(current["meta"]["versionId"], "3");
    assert_eq!(current["name"][0]["family"], "Version3");

    client
        .get(&format!("Patient/{id}/_history/4"))
        .await
        .expect_outcome(404);
    client
        .get("Patient/unknown-id/_history/1")
        .await
        .expect_outcome(404);
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_read_with_if_none_match() {
    let server = Server::start();
    let client = server.client();
    let mut resource = client.create(&common::patient("Cached")).await;
    let id = resource["id"].as_str().unwrap().to_string();
    let path = format!("Patient/{id}");

    let resp = client
        .request(Method::GET, &path)
        .header("If-None-Match", "W/\"1\"")
        .send()
        .await;
    assert_eq!(
        resp.status, 304,
        "If-None-Match on the current version: {}",
        resp.text
    );

    resource["active"] = json!(false);
    client.upsert(&resource).await;

    let resp = client
        .request(Method::GET, &path)
        .header("If-None-Match", "W/\"1\"")
        .send()
        .await
        .expect_status(200);
    assert_eq!(resp.body["meta"]["versionId"], "2");
    assert_eq!(resp.etag(), Some("W/\"2\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn client_chosen_ids_up_to_64_characters_read_back() {
    let server = Server::start();
    let client = server.client();
    for id in ["a", "A-b.9", &"x".repeat(64)] {
        let mut resource = common::patient("ClientId");
        resource["id"] = json!(id);
        let resp = client.upsert(&resource).await;
        assert_eq!(resp.status, 201, "PUT creating Patient/{id}");
        let read = client.read("Patient", id).await;
        assert_eq!(read["id"], id);
        assert_same_content(&resource, &read);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_resource_type_can_be_read() {
    // A sample beyond the four core types: EHRs send whatever their records hold.
    let server = Server::start();
    let client = server.client();
    let samples = [
        json!({"resourceType": "Observation", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
               "valueQuantity": {"value": 41.20, "unit": "kg"}}),
        json!({"resourceType": "Condition",
               "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
               "subject": {"reference": "Patient/p1"}}),
        json!({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p1"},
               "code": {"text": "Peanut"}}),
        json!({"resourceType": "Organization", "name": "County of Alameda"}),
        json!({"resourceType": "Basic", "code": {"text": "note"}}),
        json!({"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8="}),
    ];
    for sample in samples {
        let read = client.create(&sample).await;
        assert_same_content(
            &{
                let mut s = sample.clone();
                s["id"] = read["id"].clone();
                s
            },
            &read,
        );
    }
}
