//! Real SMART on FHIR clients that nobody here wrote drive our authorization server and FHIR API
//! (TESTING.md "Real clients"; SMART App Launch 2.2 standalone launch, PKCE, backend services):
//!
//! - the SMART Python client, PyPI `fhirclient==4.4.0`: a standalone patient launch with PKCE
//!   (`tests/clients/smart_standalone.py`; a headless script fills our login and approval forms),
//!   and backend services with a PyJWT-signed RS384 / ES384 client assertion
//!   (`tests/clients/smart_backend.py`);
//! - the SMART JS client, npm `fhirclient@2.6.3`, in headless Debian Chromium driven by
//!   `playwright-core@1.65.1` (`tests/clients/smart_js.js` and its pages): a standalone launch
//!   from a small app served on another 127.0.0.1 port, so CORS is exercised too.
//!
//! Each script prints one JSON report; the assertions here judge it, showing the whole report,
//! the script's stderr and the server's stderr on failure. Two `harness_*` tests prove the
//! installs and the drivers work on their own (against a fake page / fake server), so a failure
//! of the others points at the server.

mod common;

use std::time::Duration;

use common::Server;
use common::clients::{self, Finished};
use reqwest::Method;
use serde_json::{Value, json};

const YOUTH: &str = "youth-1";
const OTHER: &str = "other-1";
const USERNAME: &str = "ana.youth";
const PASSWORD: &str = "correct horse battery staple";
/// What a patient-facing standalone app asks for (Inferno's default standalone scopes).
const STANDALONE_SCOPE: &str = "launch/patient openid fhirUser offline_access patient/*.rs";

/// The youth's Patient, an Observation about them and another youth's Patient; returns the
/// Observation's id.
async fn seed(server: &Server) -> String {
    let client = server.client();
    for (id, family, given) in [(YOUTH, "Rivera", "Ana"), (OTHER, "Okafor", "Jude")] {
        let patient = json!({
            "resourceType": "Patient",
            "id": id,
            "identifier": [{ "system": "urn:fp-test", "value": common::unique(id) }],
            "active": true,
            "name": [{ "family": family, "given": [given] }],
            "gender": "female",
            "birthDate": "2011-04-05"
        });
        client
            .request(Method::PUT, &format!("Patient/{id}"))
            .json(&patient)
            .send()
            .await
            .expect_status(201);
    }
    let observation = json!({
        "resourceType": "Observation",
        "status": "final",
        "code": { "coding": [{ "system": "http://loinc.org", "code": "29463-7", "display": "Body weight" }] },
        "subject": { "reference": format!("Patient/{YOUTH}") },
        "effectiveDateTime": "2026-01-02T10:00:00Z",
        "valueQuantity": { "value": 40.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg" }
    });
    let resp = client
        .post_json("Observation", &observation)
        .await
        .expect_status(201);
    resp.location_id()
        .unwrap_or_else(|| panic!("201 without a usable Location: {:?}", resp.location()))
}

fn add_youth_user(server: &Server) {
    server.cli(&[
        "user",
        "add",
        "--username",
        USERNAME,
        "--password",
        PASSWORD,
        "--fhir-user",
        &format!("Patient/{YOUTH}"),
    ]);
}

/// The report, the script's stderr and the server's stderr, for assertion messages.
fn context(run: &Finished, server_stderr: &str) -> String {
    let server_tail = if server_stderr.len() > 6000 {
        let mut start = server_stderr.len() - 6000;
        while !server_stderr.is_char_boundary(start) {
            start += 1;
        }
        &server_stderr[start..]
    } else {
        server_stderr
    };
    format!("{}\n--- server stderr ---\n{server_tail}", run.explain())
}

macro_rules! ensure {
    ($cond:expr, $ctx:expr, $($msg:tt)+) => {
        if !$cond {
            panic!("{}\n{}", format!($($msg)+), $ctx);
        }
    };
}

fn words(v: &Value) -> Vec<&str> {
    v.as_str().unwrap_or("").split_whitespace().collect()
}

fn ok_value(step: &Value) -> Option<&Value> {
    (step["ok"] == true).then(|| &step["value"])
}

fn is_denial(status: &Value) -> bool {
    matches!(status.as_u64(), Some(401 | 403 | 404))
}

// ---------------------------------------------------------------------------------------------
// SMART Python client, standalone launch
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn python_fhirclient_standalone_launch_with_pkce() {
    clients::py_smart(); // install first: an install failure is not a server failure
    let server = Server::start();
    let observation = seed(&server).await;
    let client_id = "py-standalone";
    let redirect = "http://127.0.0.1:9/callback";
    server.cli(&[
        "client",
        "add",
        "--id",
        client_id,
        "--name",
        "SMART Python client (fhirclient 4.4.0)",
        "--public",
        "--redirect-uri",
        redirect,
        "--scope",
        STANDALONE_SCOPE,
    ]);
    add_youth_user(&server);

    let args: Vec<String> = [
        ("--api-base", server.base.as_str()),
        ("--client-id", client_id),
        ("--redirect-uri", redirect),
        ("--scope", STANDALONE_SCOPE),
        ("--username", USERNAME),
        ("--password", PASSWORD),
        ("--patient", YOUTH),
        ("--other-patient", OTHER),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect();
    let run = clients::run_python("smart_standalone.py", &args);
    let r = &run.report;
    let ctx = context(&run, &server.stderr());

    ensure!(
        r["ok"] == true && run.status.success(),
        ctx,
        "the SMART Python client's standalone launch failed (see `error` in the report)"
    );
    let origin = server.origin();
    ensure!(
        r["discovered"]["authorize_uri"] == format!("{origin}/auth/authorize")
            && r["discovered"]["token_uri"] == format!("{origin}/auth/token"),
        ctx,
        "fhirclient found other OAuth endpoints in the CapabilityStatement's oauth-uris extension"
    );
    let authz = &r["authorize_request"];
    ensure!(
        authz["code_challenge_method"] == "S256" && authz["has_code_challenge"] == true,
        ctx,
        "fhirclient sent no PKCE S256 challenge"
    );
    ensure!(
        authz["aud"] == server.base.as_str(),
        ctx,
        "aud is not the FHIR base"
    );
    ensure!(
        r["callback"]["has_code"] == true && r["callback"]["state_matches"] == true,
        ctx,
        "the redirect to the app lacks the code or does not echo the state"
    );

    let token_request = &r["token_requests"][0];
    ensure!(
        token_request["status"] == 200
            && token_request["params"]["grant_type"] == "authorization_code"
            && token_request["params"].get("code_verifier").is_some()
            && token_request["params"].get("state").is_some(),
        ctx,
        "the code exchange (client_id, code, redirect_uri, state, code_verifier) was not answered 200"
    );
    let tok = &r["launch_context"];
    ensure!(
        tok["patient"] == YOUTH && r["patient_id"] == YOUTH,
        ctx,
        "the token response's `patient` is not {YOUTH}"
    );
    ensure!(
        tok["token_type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer")),
        ctx,
        "token_type is not Bearer"
    );
    let granted = words(&tok["scope"]);
    ensure!(
        [
            "launch/patient",
            "openid",
            "fhirUser",
            "offline_access",
            "patient/*.rs"
        ]
        .iter()
        .all(|s| granted.contains(s)),
        ctx,
        "granted scope {granted:?} lacks part of what was requested and allowed"
    );
    ensure!(
        r["has_refresh_token"] == true,
        ctx,
        "offline_access was granted but no refresh_token came"
    );

    ensure!(
        ok_value(&r["read_patient"]).is_some_and(|p| p["id"] == YOUTH),
        ctx,
        "Patient.read({YOUTH}) through fhirclient failed"
    );
    ensure!(
        ok_value(&r["client_patient"]).is_some_and(|p| p["id"] == YOUTH),
        ctx,
        "FHIRClient.patient (the launch context patient) was not read"
    );
    ensure!(
        ok_value(&r["search_observations"]).is_some_and(|list| list
            .as_array()
            .is_some_and(|l| l.iter().any(|o| o["id"] == observation.as_str()))),
        ctx,
        "Observation?patient={YOUTH} through fhirclient did not find Observation/{observation}"
    );
    ensure!(
        ok_value(&r["search_patients"]).is_some_and(|ids| *ids == json!([YOUTH])),
        ctx,
        "Patient search under patient/*.rs should find exactly the launch patient"
    );
    ensure!(
        r["other_patient"]["denied"] == true && is_denial(&r["other_patient"]["status"]),
        ctx,
        "Patient/{OTHER} (outside the launch patient's compartment) was readable or failed \
         otherwise than 401/403/404"
    );

    let id_token = ok_value(&r["id_token"]);
    ensure!(
        id_token.is_some_and(|t| t["claims"]["fhirUser"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("Patient/{YOUTH}")))),
        ctx,
        "the id_token did not verify with PyJWT against the published jwks_uri, or its fhirUser \
         is not Patient/{YOUTH}"
    );
    let refresh = ok_value(&r["refresh"]);
    ensure!(
        refresh.is_some_and(|f| f["reauthorized"] == true
            && f["new_access_token"] == true
            && f["patient_after_refresh"] == YOUTH),
        ctx,
        "fhirclient's reauthorize() (refresh_token grant) did not give a working new access token"
    );
}

// ---------------------------------------------------------------------------------------------
// SMART Python client, backend services
// ---------------------------------------------------------------------------------------------

async fn backend_services(alg: &str) {
    clients::py_smart();
    let server = Server::start();
    seed(&server).await;
    let slug = alg.to_ascii_lowercase();
    let prefix = server.data_dir().join(format!("backend-{slug}"));
    let kid = clients::keygen(alg, &prefix);
    let jwks = format!("{}.jwks.json", prefix.display());
    let pem = format!("{}.pem", prefix.display());
    let client_id = format!("py-backend-{slug}");
    let scope = "system/*.rs";
    server.cli(&[
        "client",
        "add",
        "--id",
        &client_id,
        "--name",
        "SMART Python client (fhirclient 4.4.0), backend services",
        "--jwks",
        &jwks,
        "--scope",
        scope,
        // The county agency keeping the record: consent does not narrow what it reads, so this
        // test judges SMART alone.
        "--role",
        "custodian",
    ]);

    let args: Vec<String> = [
        ("--api-base", server.base.as_str()),
        ("--client-id", client_id.as_str()),
        ("--key", pem.as_str()),
        ("--kid", kid.as_str()),
        ("--alg", alg),
        ("--scope", scope),
        ("--patient", YOUTH),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect();
    let run = clients::run_python("smart_backend.py", &args);
    let r = &run.report;
    let ctx = context(&run, &server.stderr());

    ensure!(
        r["ok"] == true && run.status.success(),
        ctx,
        "the SMART Python client's backend-services token request ({alg}) failed"
    );
    ensure!(
        r["discovered"]["token_uri"] == format!("{}/auth/token", server.origin()),
        ctx,
        "the token endpoint in the CapabilityStatement is not {{origin}}/auth/token"
    );
    let request = &r["token_requests"][0];
    ensure!(
        request["status"] == 200
            && request["params"]["grant_type"] == "client_credentials"
            && request["params"]["client_assertion_type"]
                == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ctx,
        "the client_credentials request with a {alg} client assertion was not answered 200"
    );
    let token = &r["token"];
    ensure!(
        token["token_type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
            && words(&token["scope"]).contains(&scope),
        ctx,
        "token_type/scope of the backend token"
    );
    ensure!(
        r["expires_in_s"].as_i64().is_some_and(|s| s > 0),
        ctx,
        "the backend token response has no positive expires_in"
    );
    ensure!(
        ok_value(&r["read_patient"]).is_some_and(|p| p["id"] == YOUTH),
        ctx,
        "Patient.read({YOUTH}) with the backend token failed"
    );
    ensure!(
        ok_value(&r["search_patient"]).is_some_and(|ids| *ids == json!([YOUTH])),
        ctx,
        "Patient?_id={YOUTH} with the backend token did not find exactly that patient"
    );
    ensure!(
        r["replay"]["rejected"] == true
            && matches!(r["replay"]["status"].as_u64(), Some(400 | 401)),
        ctx,
        "a replayed client assertion (same jti) was not rejected with 400/401 (SMART: the server \
         SHALL reject a jti it has seen)"
    );
    ensure!(
        ok_value(&r["second_token"]).is_some(),
        ctx,
        "a fresh assertion after the replay no longer got a token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_fhirclient_backend_services_rs384() {
    backend_services("RS384").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_fhirclient_backend_services_es384() {
    backend_services("ES384").await;
}

// ---------------------------------------------------------------------------------------------
// SMART JS client in headless Chromium
// ---------------------------------------------------------------------------------------------

struct JsExpect<'a> {
    /// The FHIR base the app was launched against (`aud`), when known to the test.
    base: Option<&'a str>,
    /// The app's own origin (CORS answers must allow it).
    app_origin: &'a str,
    patient: &'a str,
    observation: &'a str,
}

fn assert_js_report(run: &Finished, expect: &JsExpect, ctx: &str) {
    let r = &run.report;
    ensure!(
        r["ok"] == true && run.status.success(),
        ctx,
        "the SMART JS client's launch failed at `{}`",
        r["failedStep"]
            .as_str()
            .unwrap_or("the app's redirect page (see app.error)")
    );
    let authorize = &r["authorize"];
    ensure!(
        authorize["params"]["code_challenge_method"] == "S256"
            && authorize["paramNames"]
                .as_array()
                .is_some_and(|n| n.iter().any(|p| p == "code_challenge")),
        ctx,
        "the authorize URL the page navigated to carried no PKCE S256 challenge"
    );
    if let Some(base) = expect.base {
        ensure!(
            authorize["params"]["aud"] == base,
            ctx,
            "aud is not the FHIR base"
        );
    }
    let token = &r["token"][0];
    ensure!(
        token["status"] == 200
            && token["grant_type"] == "authorization_code"
            && token["code_verifier_length"]
                .as_u64()
                .is_some_and(|n| (43..=128).contains(&n)),
        ctx,
        "the browser's code exchange with a code_verifier was not answered 200"
    );
    ensure!(
        token["allowOrigin"] == "*" || token["allowOrigin"] == expect.app_origin,
        ctx,
        "the token response does not allow the app's origin {} (CORS)",
        expect.app_origin
    );
    let app = &r["app"];
    ensure!(
        app["token"]["patient"] == expect.patient && app["patientId"] == expect.patient,
        ctx,
        "the token response's `patient` is not {}",
        expect.patient
    );
    ensure!(
        app["token"]["token_type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
            && app["token"]["has_access_token"] == true
            && app["token"]["expires_in"].is_number(),
        ctx,
        "token_type/access_token/expires_in (a number) in the token response"
    );
    for step in ["request", "patientRead"] {
        ensure!(
            ok_value(&app[step])
                .is_some_and(|p| p["resourceType"] == "Patient" && p["id"] == expect.patient),
            ctx,
            "the app's {step} of Patient/{} failed",
            expect.patient
        );
    }
    ensure!(
        app["fhirUser"] == format!("Patient/{}", expect.patient)
            && ok_value(&app["userRead"]).is_some_and(|u| u["id"] == expect.patient),
        ctx,
        "client.user (fhirUser from the id_token) is not Patient/{} or could not be read",
        expect.patient
    );
    ensure!(
        ok_value(&app["observations"]).is_some_and(|list| list
            .as_array()
            .is_some_and(|l| l.iter().any(|o| o["id"] == expect.observation))),
        ctx,
        "Observation?patient={} from the browser did not find {}",
        expect.patient,
        expect.observation
    );
    ensure!(
        app["other"]["denied"] == true && is_denial(&app["other"]["error"]["status"]),
        ctx,
        "another patient was readable from the browser, or the refusal was not a 401/403/404 the \
         page could see (a CORS-less error answer shows as status null)"
    );
    let fhir = r["fhir"].as_array().cloned().unwrap_or_default();
    let api_calls: Vec<&Value> = fhir
        .iter()
        .filter(|f| {
            f["path"]
                .as_str()
                .is_some_and(|p| !p.starts_with("/.well-known/") && p != "/metadata")
        })
        .collect();
    ensure!(
        !api_calls.is_empty()
            && api_calls.iter().all(|f| f["bearer"] == true
                && (f["allowOrigin"] == "*" || f["allowOrigin"] == expect.app_origin)),
        ctx,
        "every FHIR API call from the browser should carry the bearer token and be answered with \
         CORS for the app's origin"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn smart_js_client_standalone_launch_in_chromium() {
    clients::chromium();
    clients::smart_js();
    let server = Server::start();
    let observation = seed(&server).await;
    add_youth_user(&server);
    let client_id = "js-standalone";
    let mut script = clients::start_smart_js(json!({
        "iss": server.base,
        "clientId": client_id,
        "scope": STANDALONE_SCOPE,
        "username": USERNAME,
        "password": PASSWORD,
        "patient": YOUTH,
        "otherPatient": OTHER,
    }));
    let listening = script.next_json(Duration::from_secs(30), "the `listening` line");
    let redirect = listening["redirect_uri"]
        .as_str()
        .expect("listening line has redirect_uri")
        .to_string();
    let app_origin = listening["origin"]
        .as_str()
        .expect("listening line has origin")
        .to_string();
    server.cli(&[
        "client",
        "add",
        "--id",
        client_id,
        "--name",
        "SMART JS client (fhirclient 2.6.3)",
        "--public",
        "--redirect-uri",
        &redirect,
        "--scope",
        STANDALONE_SCOPE,
    ]);
    script.send_line("go");
    let run = script.finish(clients::BROWSER_TIMEOUT);
    let ctx = context(&run, &server.stderr());
    assert_js_report(
        &run,
        &JsExpect {
            base: Some(&server.base),
            app_origin: &app_origin,
            patient: YOUTH,
            observation: &observation,
        },
        &ctx,
    );
}

// ---------------------------------------------------------------------------------------------
// The harness on its own
// ---------------------------------------------------------------------------------------------

/// The Python form walker against a fake login/approval page shaped like the contract.
#[test]
fn harness_python_form_walker_self_test() {
    let run = clients::run_python("smart_forms.py", &["--self-test".to_string()]);
    assert!(
        run.status.success() && run.report["ok"] == true,
        "{}",
        run.explain()
    );
}

/// Chromium + playwright-core + fhirclient.js, the app pages and the assertions, against a
/// fake SMART server in the node process (on its own port, so with CORS).
#[test]
fn harness_smart_js_in_chromium_against_a_fake_server() {
    let mut script = clients::start_smart_js(json!({ "selfTest": true }));
    let listening = script.next_json(Duration::from_secs(30), "the `listening` line");
    let app_origin = listening["origin"].as_str().expect("origin").to_string();
    script.send_line("go");
    let run = script.finish(clients::BROWSER_TIMEOUT);
    let ctx = run.explain();
    assert_js_report(
        &run,
        &JsExpect {
            base: None,
            app_origin: &app_origin,
            patient: "youth-1",
            observation: "obs-1",
        },
        &ctx,
    );
}
