//! Operational endpoints and the capability statement (FHIR R4 http.html §3.1.0.10 capabilities;
//! issue 2: "`GET /healthz` answers 200 when the database is reachable …; `GET /metrics`
//! exposes request counts and latencies in the Prometheus text format"; "`GET /fhir/metadata`
//! returns a CapabilityStatement … every resource type, interaction, search parameter and
//! operation listed works, and nothing unimplemented is listed").
//!
//! > "The capabilities interaction retrieves the server's Capability Statement that defines how
//! > it supports resources … `GET [base]/metadata{?mode=[mode]}` … Servers SHALL provide a
//! > Capability Statement that specifies which interactions and resources are supported."

mod common;

use std::collections::BTreeSet;

use common::Server;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn healthz_answers_200() {
    let server = Server::start();
    let client = server.client();
    let resp = client.get("/healthz").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_in_prometheus_text() {
    let server = Server::start();
    let client = server.client();
    let created = client.create(&common::patient("Metrics")).await;
    for _ in 0..5 {
        client
            .read("Patient", created["id"].as_str().unwrap())
            .await;
    }
    client.get("Patient/missing").await.expect_status(404);

    let resp = client.get("/metrics").await.expect_status(200);
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "metrics Content-Type {content_type:?}"
    );
    let text = &resp.text;

    // Well-formed exposition: every sample line is `name{labels} value`.
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad sample line {line:?}"
        );
    }
    let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    assert!(
        types.iter().any(|l| l.ends_with(" counter")),
        "no counter in:\n{text}"
    );
    assert!(
        types
            .iter()
            .any(|l| l.ends_with(" histogram") || l.ends_with(" summary")),
        "no latency histogram or summary in:\n{text}"
    );

    // The request counter saw at least the 7 FHIR requests above, with their statuses.
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| {
            !l.starts_with('#')
                && l.contains("request")
                && !l.contains("_bucket")
                && !l.contains("quantile")
        })
        .collect();
    assert!(!requests.is_empty(), "no request metric in:\n{text}");
    let status_labels = |code: &str| requests.iter().any(|l| l.contains(&format!("\"{code}\"")));
    assert!(
        status_labels("200"),
        "no status=\"200\" label in request metrics:\n{text}"
    );
    assert!(
        status_labels("404"),
        "no status=\"404\" label in request metrics:\n{text}"
    );
    assert!(
        status_labels("201"),
        "no status=\"201\" label in request metrics:\n{text}"
    );
    let total: f64 = requests
        .iter()
        .filter(|l| l.contains("_total") || l.contains("_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        total >= 7.0,
        "request counts add up to {total} after 7 requests:\n{text}"
    );

    // How far the audit writer is behind: a gauge that returns to 0 once the trail is written.
    let pending = |text: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with("audit_events_pending "))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    };
    assert!(
        pending(text).is_some(),
        "no audit_events_pending in:\n{text}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = client.get("/metrics").await.expect_status(200).text;
        if pending(&text) == Some(0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the audit writer never caught up:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_is_a_capability_statement_that_lists_what_works() {
    let server = Server::start();
    let client = server.client();
    let resp = client.get("metadata").await.expect_status(200);
    let cs = &resp.body;
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert_eq!(cs["kind"], "instance");
    let formats: Vec<&str> = cs["format"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        formats.iter().any(|f| f.contains("json")),
        "format {formats:?}"
    );
    assert_eq!(
        cs["implementation"]["url"],
        server.base.as_str(),
        "implementation.url is the FHIR base"
    );

    let rest = &cs["rest"][0];
    assert_eq!(rest["mode"], "server");
    let system: BTreeSet<&str> = rest["interaction"]
        .as_array()
        .expect("rest.interaction")
        .iter()
        .filter_map(|i| i["code"].as_str())
        .collect();
    for code in ["transaction", "batch", "history-system"] {
        assert!(
            system.contains(code),
            "system interaction {code} not listed: {system:?}"
        );
    }

    let resources = rest["resource"].as_array().expect("rest.resource");
    let types: BTreeSet<&str> = resources
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    for ty in [
        "Patient",
        "CareTeam",
        "ServiceRequest",
        "Consent",
        "Observation",
        "Organization",
        "Bundle",
        "Binary",
    ] {
        assert!(
            types.contains(ty),
            "{ty} missing from the CapabilityStatement"
        );
    }
    assert!(
        types.len() >= 140,
        "only {} resource types listed; R4 has 145",
        types.len()
    );
    for ty in &types {
        assert!(
            common::schema::is_known_type(ty),
            "{ty} listed but is not an R4 resource type"
        );
    }

    let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
    let interactions: BTreeSet<&str> = patient["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["code"].as_str())
        .collect();
    for code in [
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    ] {
        assert!(
            interactions.contains(code),
            "Patient interaction {code} not listed: {interactions:?}"
        );
    }
    // If-Match is supported, so "versioned-update" is the precise code; "versioned" is fine too.
    assert!(
        matches!(
            patient["versioning"].as_str(),
            Some("versioned" | "versioned-update")
        ),
        "Patient.versioning {}",
        patient["versioning"]
    );
    assert_eq!(patient["readHistory"], true);
    assert_eq!(patient["updateCreate"], true);
    assert_eq!(patient["conditionalCreate"], true);
    assert_eq!(patient["conditionalDelete"], "single");
    assert_eq!(patient["conditionalUpdate"], true);

    // Only implemented search parameters are listed; the ones this increment implements are.
    let params: BTreeSet<&str> = patient["searchParam"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        params.contains("identifier"),
        "Patient searchParam identifier missing: {params:?}"
    );
    for name in &params {
        // `x` may be a bad value for the parameter's type (400), but never an unknown one.
        let resp = client.get(&format!("Patient?{name}=x")).await;
        let unsupported = resp.status != 200
            && (resp.status != 400
                || resp.outcome_text().contains("unknown")
                || resp.outcome_text().contains("not supported"));
        assert!(
            !unsupported,
            "listed search parameter {name} does not work: {} {}",
            resp.status, resp.text
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_honours_mode_and_unknown_paths_are_404() {
    let server = Server::start();
    let client = server.client();
    client.get("metadata?mode=full").await.expect_status(200);
    let resp = client.get("/not-a-route").await;
    assert_eq!(resp.status, 404, "{}", resp.text);
}
