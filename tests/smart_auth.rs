//! SMART on FHIR 2 authorization over HTTP with real tokens (SMART App Launch 2.2: discovery,
//! backend services, authorization code with PKCE, EHR launch, refresh, introspection RFC 7662,
//! revocation RFC 7009; RFC 6750 for the resource server), and the attacks each part must
//! refuse without disclosing anything.

mod common;

use std::collections::HashMap;

use common::auth::{BackendKey, client_credentials_form, form_body, now};
use common::{Client, Server};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

const YOUTH: &str = "youth-a";
const OTHER: &str = "youth-b";
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const USERNAME: &str = "ana";
const PASSWORD: &str = "s3cret-passphrase";
/// A valid PKCE verifier (43 characters) and its S256 challenge (RFC 7636 appendix B).
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn post_form(url: &str, pairs: &[(&str, &str)]) -> (u16, HeaderMapLite, Value) {
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let resp = http()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&owned))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = HeaderMapLite::from(resp.headers());
    let text = resp.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// Response headers, lower-cased names.
struct HeaderMapLite(HashMap<String, String>);

impl HeaderMapLite {
    fn from(h: &reqwest::header::HeaderMap) -> Self {
        HeaderMapLite(
            h.iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
        )
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Two youth, an Observation for each, and a CareTeam naming a practitioner for the first.
async fn seed(server: &Server) -> (String, String) {
    let admin = server.client();
    for id in [YOUTH, OTHER] {
        let mut p = common::patient(id);
        p["id"] = json!(id);
        admin
            .request(Method::PUT, &format!("Patient/{id}"))
            .json(&p)
            .send()
            .await
            .expect_status(201);
    }
    let mut obs_ids = vec![];
    for id in [YOUTH, OTHER] {
        let obs = json!({
            "resourceType": "Observation",
            "status": "final",
            "code": { "text": "weight" },
            "subject": { "reference": format!("Patient/{id}") },
        });
        obs_ids.push(admin.create(&obs).await["id"].as_str().unwrap().to_string());
    }
    (obs_ids[0].clone(), obs_ids[1].clone())
}

fn register_backend(server: &Server, id: &str, alg: Algorithm, scope: &str) -> BackendKey {
    let key = BackendKey::generate(server.data_dir(), id, alg);
    let jwks = BackendKey::jwks_path(server.data_dir(), id, alg);
    server.cli(&[
        "client",
        "add",
        "--id",
        id,
        "--scope",
        scope,
        "--jwks",
        jwks.to_str().unwrap(),
        "--role",
        "custodian",
        "--organization",
        "Organization/county-la",
        "--purpose",
        "TREAT",
    ]);
    key
}

async fn backend_token(
    server: &Server,
    key: &BackendKey,
    scope: &str,
) -> (u16, HeaderMapLite, Value) {
    let assertion = key.assertion(&server.token_url(), json!({}));
    let form = client_credentials_form(&assertion, scope);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    post_form(&server.token_url(), &pairs).await
}

fn assert_oauth_error(what: &str, got: &(u16, HeaderMapLite, Value), error: &str) {
    let (status, headers, body) = got;
    assert!(
        (400..500).contains(status),
        "{what}: expected a 4xx OAuth error, got {status} {body}"
    );
    assert_eq!(body["error"], error, "{what}: {body}");
    assert!(
        body.get("access_token").is_none(),
        "{what}: a token leaked: {body}"
    );
    assert_eq!(headers.get("cache-control"), Some("no-store"), "{what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_and_metadata_are_public_and_complete() {
    let server = Server::start();
    let http = http();
    let get = |path: &str| {
        http.get(format!("{}{path}", server.base))
            .header("Origin", "https://app.example")
            .send()
    };
    let resp = get("/.well-known/smart-configuration").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let cors = resp
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string());
    assert!(
        matches!(cors.as_deref(), Some("*") | Some("https://app.example")),
        "CORS: {cors:?}"
    );
    let smart: Value = resp.json().await.unwrap();
    for field in [
        "issuer",
        "jwks_uri",
        "authorization_endpoint",
        "token_endpoint",
        "introspection_endpoint",
        "revocation_endpoint",
    ] {
        let url = smart[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} missing: {smart}"));
        assert!(url.starts_with("http"), "{field} must be absolute: {url}");
    }
    assert_eq!(smart["code_challenge_methods_supported"], json!(["S256"]));
    for grant in ["authorization_code", "client_credentials"] {
        assert!(
            smart["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(grant))
        );
    }
    for cap in [
        "launch-ehr",
        "launch-standalone",
        "client-public",
        "client-confidential-asymmetric",
        "context-ehr-patient",
        "context-standalone-patient",
        "permission-patient",
        "permission-user",
        "permission-v1",
        "permission-v2",
        "sso-openid-connect",
        "authorize-post",
    ] {
        assert!(
            smart["capabilities"]
                .as_array()
                .unwrap()
                .contains(&json!(cap)),
            "{cap}"
        );
    }
    assert_eq!(smart["token_endpoint"], json!(server.token_url()));

    // OpenID discovery at the issuer, and a JWKS with an RSA key.
    let issuer = smart["issuer"].as_str().unwrap();
    let oidc: Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(oidc["issuer"], smart["issuer"]);
    assert!(
        oidc["id_token_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("RS256"))
    );
    let jwks: Value = http
        .get(smart["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert!(
        key.get("d").is_none(),
        "the private part must never be published"
    );

    // metadata needs no token, carries CORS and the SMART security block.
    let resp = get("/metadata").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("access-control-allow-origin").is_some());
    let cs: Value = resp.json().await.unwrap();
    let security = &cs["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    let uris = &security["extension"][0];
    assert_eq!(
        uris["url"],
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    );
    let token = uris["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == "token")
        .unwrap();
    assert_eq!(token["valueUri"], json!(server.token_url()));

    // CORS preflight for a browser app sending Authorization.
    let resp = http
        .request(Method::OPTIONS, format!("{}/Patient", server.base))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "preflight: {}", resp.status());
    assert!(resp.headers().get("access-control-allow-origin").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fhir_endpoint_needs_a_valid_token() {
    let server = Server::start();
    let admin = server.client();
    let (obs, _) = seed(&server).await;
    let before = admin.snapshot().await;
    let anonymous = server.anonymous_client();
    let forged = server
        .client()
        .with_token("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.");
    let bundle = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "resource": common::patient("Sneaky"), "request": { "method": "POST", "url": "Patient" } }
    ]});
    for (client, expect_invalid) in [(&anonymous, false), (&forged, true)] {
        let requests = vec![
            client.request(Method::GET, &format!("Patient/{YOUTH}")),
            client.request(Method::GET, &format!("Observation/{obs}/_history/1")),
            client.request(Method::GET, "Observation?subject=Patient/youth-a"),
            client.request(Method::GET, "_history"),
            client.request(Method::GET, "Patient/_history"),
            client
                .request(Method::POST, "Patient")
                .json(&common::patient("Sneaky")),
            client
                .request(Method::PUT, &format!("Patient/{YOUTH}"))
                .json(&common::patient("X")),
            client.request(Method::DELETE, &format!("Patient/{YOUTH}")),
            client.request(Method::POST, "").json(&bundle),
            client
                .request(Method::POST, "Patient/_search")
                .body("application/x-www-form-urlencoded", "name=a"),
        ];
        for req in requests {
            let resp = req.send().await;
            assert_eq!(
                resp.status, 401,
                "{} {}: {}",
                resp.method, resp.url, resp.text
            );
            let challenge = resp.header("www-authenticate").unwrap_or_default();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
            assert_eq!(
                challenge.contains("invalid_token"),
                expect_invalid,
                "{challenge}"
            );
            resp.assert_operation_outcome();
            assert!(!resp.text.contains("Rivera") && !resp.text.contains("weight"));
        }
    }
    admin
        .assert_unchanged(&before, "requests without a valid token")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_services_with_es384_and_rs384() {
    let server = Server::start();
    seed(&server).await;
    for (id, alg) in [
        ("county-es", Algorithm::ES384),
        ("county-rs", Algorithm::RS384),
    ] {
        let key = register_backend(&server, id, alg, "system/Patient.rs system/Observation.rs");
        // Asking for more than registered is narrowed, not refused.
        let (status, headers, body) =
            backend_token(&server, &key, "system/*.rs system/Patient.cruds").await;
        assert_eq!(status, 200, "{id}: {body}");
        assert_eq!(headers.get("cache-control"), Some("no-store"));
        assert_eq!(headers.get("pragma"), Some("no-cache"));
        assert!(
            body["token_type"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case("bearer")
        );
        let lifetime = body["expires_in"].as_u64().expect("numeric expires_in");
        assert!(lifetime > 0 && lifetime <= 300, "{lifetime}");
        assert!(body.get("refresh_token").is_none());
        let granted: Vec<&str> = body["scope"].as_str().unwrap().split(' ').collect();
        assert!(
            granted.contains(&"system/Patient.rs") && granted.contains(&"system/Observation.rs"),
            "{granted:?}"
        );
        assert!(
            !granted
                .iter()
                .any(|s| s.contains('c') && s.ends_with(".cruds")),
            "{granted:?}"
        );

        let client = server
            .client()
            .with_token(body["access_token"].as_str().unwrap());
        client
            .get(&format!("Patient/{YOUTH}"))
            .await
            .expect_status(200);
        let found = client
            .get("Observation?subject=Patient/youth-b")
            .await
            .expect_status(200);
        assert_eq!(found.body["total"], 1);
        // Reads only: writes are 403 and change nothing; other types are 403.
        client
            .post_json("Patient", &common::patient("NoWrite"))
            .await
            .expect_outcome(403);
        client.get("Organization?name=x").await.expect_outcome(403);
        let resp = client.get("_history").await.expect_outcome(403);
        assert!(
            resp.header("www-authenticate")
                .unwrap_or("")
                .contains("insufficient_scope")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_assertion_attacks_are_refused() {
    let server = Server::start();
    let key = register_backend(&server, "county", Algorithm::ES384, "system/*.rs");
    let token_url = server.token_url();
    let scope = "system/*.rs";
    let try_assertion = |assertion: String| {
        let token_url = token_url.clone();
        async move {
            let form = client_credentials_form(&assertion, scope);
            let pairs: Vec<(&str, &str)> =
                form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            post_form(&token_url, &pairs).await
        }
    };
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let claims = json!({ "iss": "county", "sub": "county", "aud": token_url, "exp": now() + 200, "jti": "x1" });

    // alg: none
    let none = format!(
        "{}.{}.",
        b64(&json!({ "alg": "none", "typ": "JWT", "kid": key.kid })),
        b64(&claims)
    );
    assert_oauth_error("alg none", &try_assertion(none).await, "invalid_client");
    // HS256 "signed" with the client's public key (algorithm confusion).
    let public = std::fs::read(BackendKey::jwks_path(
        server.data_dir(),
        "county",
        Algorithm::ES384,
    ))
    .unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    let hs = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&public)).unwrap();
    assert_oauth_error(
        "HS256 with the public key",
        &try_assertion(hs).await,
        "invalid_client",
    );
    // Expired, far future, future iat, wrong aud, no jti, unknown kid, unknown client.
    let cases = [
        ("expired", json!({ "exp": now() - 600 })),
        (
            "exp more than 5 minutes ahead",
            json!({ "exp": now() + 3600 }),
        ),
        ("future iat", json!({ "iat": now() + 3600 })),
        ("wrong aud", json!({ "aud": "https://other.example/token" })),
        ("no jti", json!({ "jti": null })),
        ("sub differs", json!({ "sub": "someone-else" })),
    ];
    for (what, extra) in cases {
        assert_oauth_error(
            what,
            &try_assertion(key.assertion(&token_url, extra)).await,
            "invalid_client",
        );
    }
    let mut wrong_kid = key.clone();
    wrong_kid.kid = "not-a-registered-kid".into();
    assert_oauth_error(
        "unknown kid",
        &try_assertion(wrong_kid.assertion(&token_url, json!({}))).await,
        "invalid_client",
    );
    let mut stranger = key.clone();
    stranger.client_id = "nobody".into();
    assert_oauth_error(
        "unknown client",
        &try_assertion(stranger.assertion(&token_url, json!({}))).await,
        "invalid_client",
    );
    // Tampered signature.
    let good = key.assertion(&token_url, json!({}));
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[1] = b64(
        &json!({ "iss": "county", "sub": "county", "aud": token_url, "exp": now() + 200, "jti": "forged" }),
    );
    assert_oauth_error(
        "tampered",
        &try_assertion(parts.join(".")).await,
        "invalid_client",
    );

    // Replayed jti: the first use works, the second is refused.
    let once = key.assertion(&token_url, json!({ "jti": "use-once" }));
    let (status, _, body) = try_assertion(once.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_oauth_error("replayed jti", &try_assertion(once).await, "invalid_client");

    // Scope beyond the registration.
    let (status, _, body) = backend_token(&server, &key, "system/*.cruds").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "system/*.rs", "granted is the intersection");
    assert_oauth_error(
        "only unregistered scopes",
        &backend_token(&server, &key, "system/Patient.c").await,
        "invalid_scope",
    );

    // Protocol errors.
    let bad_type = post_form(
        &token_url,
        &[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("client_assertion_type", "not_an_assertion_type"),
            ("client_assertion", &good),
        ],
    )
    .await;
    assert!(matches!(bad_type.0, 400 | 401), "{}", bad_type.0);
    assert_oauth_error(
        "unknown grant_type",
        &post_form(&token_url, &[("grant_type", "not_a_grant_type")]).await,
        "unsupported_grant_type",
    );
    assert_eq!(
        post_form(&token_url, &[("grant_type", "not_a_grant_type")])
            .await
            .0,
        400
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_foreign_access_tokens_are_refused() {
    let server = Server::start();
    let other = Server::start();
    seed(&server).await;
    // A token the other server issued (its key, its audience) is worthless here.
    let foreign = other.client().token().await.unwrap();
    let resp = server
        .client()
        .with_token(&foreign)
        .get(&format!("Patient/{YOUTH}"))
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text);
    // A token of ours with its payload changed (more scope) fails its signature.
    let ours = server.client().token().await.unwrap();
    let parts: Vec<&str> = ours.split('.').collect();
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
    claims["scope"] = json!("system/*.cruds user/*.cruds");
    claims["exp"] = json!(now() + 86_400);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        engine.encode(claims.to_string()),
        parts[2]
    );
    let resp = server
        .client()
        .with_token(&tampered)
        .get(&format!("Patient/{YOUTH}"))
        .await;
    assert_eq!(resp.status, 401);
    assert!(
        resp.header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn introspection_and_revocation() {
    let server = Server::start();
    seed(&server).await;
    let key = register_backend(&server, "county", Algorithm::RS384, "system/*.rs");
    let (_, _, body) = backend_token(&server, &key, "system/*.rs").await;
    let token = body["access_token"].as_str().unwrap().to_string();
    let origin = server.origin();
    let introspect = format!("{origin}/auth/introspect");
    let (status, _, info) = post_form(&introspect, &[("token", &token)]).await;
    assert_eq!(status, 200);
    assert_eq!(info["active"], true);
    assert_eq!(info["client_id"], "county");
    assert_eq!(info["scope"], "system/*.rs");
    assert!(info["exp"].as_u64().unwrap() > now());
    let (status, _, info) = post_form(&introspect, &[("token", "not-a-token")]).await;
    assert_eq!(status, 200);
    assert_eq!(
        info,
        json!({ "active": false }),
        "an inactive token gets exactly active:false"
    );

    let client = server.client().with_token(&token);
    client
        .get(&format!("Patient/{YOUTH}"))
        .await
        .expect_status(200);
    // Revocation needs the client's own authentication; then the token is dead everywhere.
    let assertion = key.assertion(&server.token_url(), json!({}));
    let (status, _, _) = post_form(
        &format!("{origin}/auth/revoke"),
        &[
            ("token", &token),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let resp = client.get(&format!("Patient/{YOUTH}")).await;
    assert_eq!(
        resp.status, 401,
        "a revoked token must not work: {}",
        resp.text
    );
    let (_, _, info) = post_form(&introspect, &[("token", &token)]).await;
    assert_eq!(info, json!({ "active": false }));
}

/// Walks our login and approval pages like a browser: returns the redirect Location.
async fn login_and_approve(
    authorize_url: &str,
    username: &str,
    password: &str,
    patient: Option<&str>,
) -> String {
    let http = http();
    let page = http.get(authorize_url).send().await.unwrap();
    assert_eq!(page.status(), 200, "login page");
    let html = page.text().await.unwrap();
    let mut fields = hidden_inputs(&html);
    fields.push(("username".into(), username.into()));
    fields.push(("password".into(), password.into()));
    let action = authorize_url.split('?').next().unwrap();
    let approval = http
        .post(action)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&fields))
        .send()
        .await
        .unwrap();
    assert_eq!(approval.status(), 200, "approval page");
    let html = approval.text().await.unwrap();
    assert!(html.contains("id=\"approve\""), "{html}");
    let mut fields = hidden_inputs(&html);
    fields.push(("decision".into(), "approve".into()));
    if let Some(p) = patient {
        fields.push(("patient".into(), p.into()));
    }
    let done = http
        .post(action)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&fields))
        .send()
        .await
        .unwrap();
    assert_eq!(
        done.status(),
        302,
        "{}",
        done.text().await.unwrap_or_default()
    );
    done.headers()["location"].to_str().unwrap().to_string()
}

fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let re = regex::Regex::new(r#"<input type="hidden" name="([^"]+)" value="([^"]*)">"#).unwrap();
    re.captures_iter(html)
        .map(|c| (c[1].to_string(), unescape(&c[2])))
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn authorize_url(server: &Server, client_id: &str, scope: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = vec![
        ("response_type".into(), "code".into()),
        ("client_id".into(), client_id.into()),
        ("redirect_uri".into(), REDIRECT.into()),
        ("scope".into(), scope.into()),
        ("state".into(), "st-123".into()),
        ("aud".into(), server.base.clone()),
        ("code_challenge".into(), CHALLENGE.into()),
        ("code_challenge_method".into(), "S256".into()),
    ];
    for (k, v) in extra {
        pairs.retain(|(name, _)| name != k);
        if !v.is_empty() {
            pairs.push((k.to_string(), v.to_string()));
        }
    }
    format!("{}/auth/authorize?{}", server.origin(), form_body(&pairs))
}

fn query_of(location: &str) -> HashMap<String, String> {
    let query = location.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

async fn exchange(
    server: &Server,
    code: &str,
    verifier: &str,
    client_id: &str,
) -> (u16, HeaderMapLite, Value) {
    post_form(
        &server.token_url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("client_id", client_id),
        ],
    )
    .await
}

fn register_app(server: &Server, fhir_user: &str) {
    server.cli(&[
        "client",
        "add",
        "--id",
        "passport",
        "--public",
        "--redirect-uri",
        REDIRECT,
        "--scope",
        "launch launch/patient openid fhirUser offline_access patient/*.rs patient/Observation.c",
        "--role",
        "passport-app",
    ]);
    server.cli(&[
        "user",
        "add",
        "--username",
        USERNAME,
        "--password",
        PASSWORD,
        "--fhir-user",
        fhir_user,
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn standalone_launch_with_pkce_refresh_and_id_token() {
    let server = Server::start();
    let (own_obs, other_obs) = seed(&server).await;
    register_app(&server, &format!("Patient/{YOUTH}"));
    let url = authorize_url(
        &server,
        "passport",
        "launch/patient openid fhirUser offline_access patient/*.rs patient/Observation.c user/*.cruds",
        &[],
    );
    let location = login_and_approve(&url, USERNAME, PASSWORD, None).await;
    assert!(location.starts_with(REDIRECT), "{location}");
    let q = query_of(&location);
    assert_eq!(q["state"], "st-123");
    let code = q["code"].clone();

    let (status, headers, body) = exchange(&server, &code, VERIFIER, "passport").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers.get("cache-control"), Some("no-store"));
    assert_eq!(headers.get("pragma"), Some("no-cache"));
    assert_eq!(body["patient"], YOUTH);
    assert!(body["expires_in"].is_u64());
    let scope = body["scope"].as_str().unwrap();
    assert!(
        !scope.contains("user/"),
        "user/*.cruds is not registered: {scope}"
    );
    // The id_token: RS256, our issuer, aud = client, fhirUser the youth, verified by our JWKS.
    let id_token = body["id_token"].as_str().expect("id_token");
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let jwks: jsonwebtoken::jwk::JwkSet = http()
        .get(format!("{}/auth/jwks", server.origin()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key =
        jsonwebtoken::DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap())
            .unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
    validation.set_audience(&["passport"]);
    validation.set_issuer(&[server.base.as_str()]);
    let claims = jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(
        claims["fhirUser"],
        json!(format!("{}/Patient/{YOUTH}", server.base))
    );

    // The code works once.
    assert_oauth_error(
        "code reuse",
        &exchange(&server, &code, VERIFIER, "passport").await,
        "invalid_grant",
    );

    let youth = server
        .client()
        .with_token(body["access_token"].as_str().unwrap());
    for path in [format!("Patient/{YOUTH}"), format!("Observation/{own_obs}")] {
        youth.get(&path).await.expect_status(200);
    }
    // Another youth's record is invisible: directly, by version, by search, by include.
    for path in [
        format!("Patient/{OTHER}"),
        format!("Observation/{other_obs}"),
        format!("Observation/{other_obs}/_history/1"),
        format!("Observation/{other_obs}/_history"),
    ] {
        youth.get(&path).await.expect_outcome(404);
    }
    let all = youth.get("Observation?_count=100").await.expect_status(200);
    let ids: Vec<&str> = all.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![own_obs.as_str()]);
    let patients = youth
        .get("Patient?_revinclude=Observation:subject")
        .await
        .expect_status(200);
    assert_eq!(patients.body["total"], 1);
    assert!(
        !patients.text.contains(OTHER) && !patients.text.contains(&other_obs),
        "{}",
        patients.text
    );
    let by_subject = youth
        .get(&format!(
            "Observation?subject=Patient/{OTHER}&_include=Observation:subject"
        ))
        .await
        .expect_status(200);
    assert_eq!(by_subject.body["total"], 0);
    let history = youth.get("Observation/_history").await.expect_status(200);
    assert!(!history.text.contains(&other_obs));
    // Inside a batch and a transaction too.
    let bundle = |kind: &str| {
        json!({ "resourceType": "Bundle", "type": kind, "entry": [
            { "request": { "method": "GET", "url": format!("Patient/{OTHER}") } },
            { "request": { "method": "GET", "url": format!("Observation?subject=Patient/{OTHER}") } },
        ]})
    };
    let batch = youth
        .post_json("", &bundle("batch"))
        .await
        .expect_status(200);
    assert_eq!(
        batch.body["entry"][0]["response"]["status"]
            .as_str()
            .unwrap()
            .split(' ')
            .next(),
        Some("404")
    );
    assert!(!batch.text.contains("\"family\""), "{}", batch.text);
    let tx = youth.post_json("", &bundle("transaction")).await;
    assert!(!tx.text.contains("\"family\""), "{}", tx.text);
    assert!(tx.status == 404 || tx.status == 200 && !tx.text.contains(OTHER));
    // Writes outside the scopes or the compartment are 403.
    let before = server.client().snapshot().await;
    youth
        .put_json(
            &format!("Patient/{YOUTH}"),
            &json!({"resourceType": "Patient", "id": YOUTH}),
        )
        .await
        .expect_outcome(403);
    let foreign_obs = json!({ "resourceType": "Observation", "status": "final", "code": { "text": "x" },
        "subject": { "reference": format!("Patient/{OTHER}") } });
    youth
        .post_json("Observation", &foreign_obs)
        .await
        .expect_outcome(403);
    let tx_write = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "resource": foreign_obs, "request": { "method": "POST", "url": "Observation" } }
    ]});
    youth.post_json("", &tx_write).await.expect_outcome(403);
    server
        .client()
        .assert_unchanged(&before, "writes refused to a patient token")
        .await;
    // Within the compartment, the granted `c` works.
    let own_new = json!({ "resourceType": "Observation", "status": "final", "code": { "text": "mood" },
        "subject": { "reference": format!("Patient/{YOUTH}") } });
    youth
        .post_json("Observation", &own_new)
        .await
        .expect_status(201);

    // Refresh, with and without scope; never more than granted.
    let refresh_token = body["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();
    let (status, _, refreshed) = post_form(
        &server.token_url(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
            ("client_id", "passport"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(refreshed["scope"], body["scope"]);
    let (status, _, narrower) = post_form(
        &server.token_url(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
            ("client_id", "passport"),
            ("scope", "patient/Patient.rs"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{narrower}");
    assert_eq!(narrower["scope"], "patient/Patient.rs");
    let narrow = server
        .client()
        .with_token(narrower["access_token"].as_str().unwrap());
    narrow
        .get(&format!("Observation/{own_obs}"))
        .await
        .expect_outcome(403);
    assert_oauth_error(
        "refresh asking for more",
        &post_form(
            &server.token_url(),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_token),
                ("client_id", "passport"),
                ("scope", "patient/*.cruds"),
            ],
        )
        .await,
        "invalid_scope",
    );
    assert_oauth_error(
        "refresh by another client",
        &post_form(
            &server.token_url(),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_token),
                ("client_id", "someone"),
            ],
        )
        .await,
        "invalid_client",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_request_attacks() {
    let server = Server::start();
    seed(&server).await;
    register_app(&server, &format!("Patient/{YOUTH}"));
    let http = http();
    let scope = "launch/patient patient/*.rs";

    // Unregistered redirect URI or unknown client: an error page, never a redirect.
    for extra in [
        vec![("redirect_uri", "https://evil.example/cb")],
        vec![("client_id", "unknown-app")],
    ] {
        let resp = http
            .get(authorize_url(&server, "passport", scope, &extra))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{extra:?}");
        assert!(resp.headers().get("location").is_none());
    }
    // PKCE missing or plain, wrong aud, unsupported response type: redirected errors with state.
    for (extra, error) in [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (
            vec![("code_challenge", ""), ("code_challenge_method", "")],
            "invalid_request",
        ),
        (
            vec![("aud", "https://other.example/fhir")],
            "invalid_request",
        ),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![("scope", "system/*.cruds")], "invalid_scope"),
    ] {
        let resp = http
            .get(authorize_url(&server, "passport", scope, &extra))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302, "{extra:?}");
        let q = query_of(resp.headers()["location"].to_str().unwrap());
        assert_eq!(q.get("error").map(String::as_str), Some(error), "{extra:?}");
        assert_eq!(q["state"], "st-123");
        assert!(!q.contains_key("code"));
    }
    // Wrong password: the login page again, no code.
    let url = authorize_url(&server, "passport", scope, &[]);
    let html = http.get(&url).send().await.unwrap().text().await.unwrap();
    let mut fields = hidden_inputs(&html);
    fields.push(("username".into(), USERNAME.into()));
    fields.push(("password".into(), "wrong".into()));
    let resp = http
        .post(format!("{}/auth/authorize", server.origin()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&fields))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(!resp.text().await.unwrap().contains("login_ticket"));

    // PKCE verifier mismatch, and a redirect_uri differing at the token step.
    let location = login_and_approve(&url, USERNAME, PASSWORD, None).await;
    let code = query_of(&location)["code"].clone();
    let wrong = "A".repeat(43);
    assert_oauth_error(
        "PKCE mismatch",
        &exchange(&server, &code, &wrong, "passport").await,
        "invalid_grant",
    );
    // The failed attempt consumed the code.
    assert_oauth_error(
        "code after a failed attempt",
        &exchange(&server, &code, VERIFIER, "passport").await,
        "invalid_grant",
    );
    let location = login_and_approve(&url, USERNAME, PASSWORD, None).await;
    let code = query_of(&location)["code"].clone();
    let mismatch = post_form(
        &server.token_url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("code_verifier", VERIFIER),
            ("client_id", "passport"),
        ],
    )
    .await;
    assert_oauth_error("redirect_uri mismatch", &mismatch, "invalid_grant");
}

#[tokio::test(flavor = "multi_thread")]
async fn ehr_launch_and_patient_picker() {
    let server = Server::start();
    let (own_obs, other_obs) = seed(&server).await;
    // A practitioner on both youths' care teams picks one; an EHR launch fixes one.
    let admin = server.client();
    admin.upsert(&json!({ "resourceType": "Practitioner", "id": "pcp-1", "name": [{ "family": "Lee" }] })).await;
    for (team, youth) in [("ct-a", YOUTH), ("ct-b", OTHER)] {
        admin
            .upsert(
                &json!({ "resourceType": "CareTeam", "id": team, "status": "active",
            "subject": { "reference": format!("Patient/{youth}") },
            "participant": [{ "member": { "reference": "Practitioner/pcp-1" } }] }),
            )
            .await;
    }
    register_app(&server, "Practitioner/pcp-1");
    // The second youth consents to sharing with her care team (consent decides what a
    // practitioner sees, beyond the token's patient context).
    admin
        .upsert(&json!({ "resourceType": "Consent", "id": "share-b", "status": "active",
            "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy" }] },
            "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0" }] }],
            "patient": { "reference": format!("Patient/{OTHER}") },
            "policyRule": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN" }] },
            "provision": { "type": "permit", "actor": [{
                "role": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP" }] },
                "reference": { "reference": "CareTeam/ct-b" } }] } }))
        .await;
    let url = authorize_url(
        &server,
        "passport",
        "launch/patient openid fhirUser patient/*.rs",
        &[],
    );
    // The approval page offers both youth.
    let http = http();
    let html = http.get(&url).send().await.unwrap().text().await.unwrap();
    let mut fields = hidden_inputs(&html);
    fields.push(("username".into(), USERNAME.into()));
    fields.push(("password".into(), PASSWORD.into()));
    let approval = http
        .post(format!("{}/auth/authorize", server.origin()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&fields))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        approval.contains("id=\"patient\"") && approval.contains(OTHER) && approval.contains(YOUTH),
        "{approval}"
    );
    let location = login_and_approve(&url, USERNAME, PASSWORD, Some(OTHER)).await;
    let (status, _, body) =
        exchange(&server, &query_of(&location)["code"], VERIFIER, "passport").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["patient"], OTHER);
    let picked = server
        .client()
        .with_token(body["access_token"].as_str().unwrap());
    picked
        .get(&format!("Observation/{other_obs}"))
        .await
        .expect_status(200);
    picked
        .get(&format!("Observation/{own_obs}"))
        .await
        .expect_outcome(404);
    // The practitioner's own resource is always readable.
    picked.get("Practitioner/pcp-1").await.expect_status(200);

    // EHR launch: the launch value fixes the patient, with no picker.
    let launch = server
        .cli(&["launch", "--patient", YOUTH])
        .trim()
        .to_string();
    let url = authorize_url(
        &server,
        "passport",
        "launch openid fhirUser patient/*.rs",
        &[("launch", &launch)],
    );
    let location = login_and_approve(&url, USERNAME, PASSWORD, None).await;
    let (status, _, body) =
        exchange(&server, &query_of(&location)["code"], VERIFIER, "passport").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["patient"], YOUTH);
    // An unknown launch is refused.
    let url = authorize_url(
        &server,
        "passport",
        "launch patient/*.rs",
        &[("launch", "no-such-launch")],
    );
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        query_of(resp.headers()["location"].to_str().unwrap())["error"],
        "invalid_request"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scopes_needing_a_missing_claim_grant_nothing() {
    let server = Server::start();
    seed(&server).await;
    // A backend client holding patient/ and user/ scopes: its token has neither a patient nor a
    // fhirUser, so those scopes are refused, never widened to everything.
    let key = register_backend(&server, "odd", Algorithm::ES384, "patient/*.rs user/*.rs");
    let (status, _, body) = backend_token(&server, &key, "patient/*.rs user/*.rs").await;
    assert_eq!(status, 200, "{body}");
    let client: Client = server
        .client()
        .with_token(body["access_token"].as_str().unwrap());
    client
        .get(&format!("Patient/{YOUTH}"))
        .await
        .expect_outcome(403);
    client.get("Observation").await.expect_outcome(403);
}

/// Serves one JSON document over plain HTTP/1.1 on a free port until the test ends.
async fn serve_json(body: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_of_a_trusted_external_issuer() {
    const ISSUER: &str = "https://idp.county.example";
    let dir = tempfile::tempdir().unwrap();
    let idp = BackendKey::generate(dir.path(), "idp", Algorithm::RS256);
    let impostor = BackendKey::generate(dir.path(), "impostor", Algorithm::RS256);
    let jwks = std::fs::read_to_string(BackendKey::jwks_path(dir.path(), "idp", Algorithm::RS256))
        .unwrap();
    let jwks_url = serve_json(jwks).await;
    let server = Server::builder()
        .args(["--trust-issuer", &format!("{ISSUER}={jwks_url}")])
        .start();
    seed(&server).await;
    let claims = |aud: &str| {
        json!({
            "role": "custodian",
            "iss": ISSUER, "aud": aud, "sub": "worker-17", "client_id": "county-portal",
            "scope": "system/Patient.rs", "exp": now() + 300, "iat": now(), "jti": "ext-1",
        })
    };
    let good = idp.sign(&claims(&server.base));
    let client = server.client().with_token(&good);
    client
        .get(&format!("Patient/{YOUTH}"))
        .await
        .expect_status(200);
    client.get("Observation").await.expect_outcome(403);
    // Same issuer, wrong audience; or signed by another key under the issuer's kid.
    let wrong_aud = idp.sign(&claims("https://other.example/fhir"));
    assert_eq!(
        server
            .client()
            .with_token(&wrong_aud)
            .get(&format!("Patient/{YOUTH}"))
            .await
            .status,
        401
    );
    let mut forged_key = impostor.clone();
    forged_key.kid = idp.kid.clone();
    let forged = forged_key.sign(&claims(&server.base));
    assert_eq!(
        server
            .client()
            .with_token(&forged)
            .get(&format!("Patient/{YOUTH}"))
            .await
            .status,
        401
    );
    // An issuer nobody configured.
    let mut stranger = claims(&server.base);
    stranger["iss"] = json!("https://stranger.example");
    let resp = server
        .client()
        .with_token(&idp.sign(&stranger))
        .get(&format!("Patient/{YOUTH}"))
        .await;
    assert_eq!(resp.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_failures_are_rate_limited_per_client() {
    let server = Server::start();
    let key = register_backend(&server, "noisy", Algorithm::ES384, "system/*.rs");
    let quiet = register_backend(&server, "quiet", Algorithm::ES384, "system/*.rs");
    let token_url = server.token_url();
    let mut wrong_aud = 0;
    loop {
        let assertion = key.assertion(&token_url, json!({ "aud": "https://wrong.example" }));
        let got = backend_token_with(&server, &assertion).await;
        if got.0 == 429 {
            assert_eq!(got.2["error"], "slow_down");
            break;
        }
        assert_eq!(got.0, 401, "{}", got.2);
        wrong_aud += 1;
        assert!(wrong_aud <= 50, "never limited");
    }
    // Even a valid assertion waits now; another client is not affected.
    let (status, _, _) = backend_token(&server, &key, "system/*.rs").await;
    assert_eq!(status, 429);
    let (status, _, body) = backend_token(&server, &quiet, "system/*.rs").await;
    assert_eq!(status, 200, "{body}");
}

async fn backend_token_with(server: &Server, assertion: &str) -> (u16, HeaderMapLite, Value) {
    let form = client_credentials_form(assertion, "system/*.rs");
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    post_form(&server.token_url(), &pairs).await
}

#[tokio::test(flavor = "multi_thread")]
async fn confidential_apps_authenticate_at_the_code_exchange() {
    let server = Server::start();
    seed(&server).await;
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
    server.cli(&[
        "client",
        "add",
        "--id",
        "county-app",
        "--secret",
        "app-secret-1",
        "--redirect-uri",
        REDIRECT,
        "--scope",
        "launch/patient patient/*.rs",
    ]);
    let key = BackendKey::generate(server.data_dir(), "keyed-app", Algorithm::RS384);
    let jwks = BackendKey::jwks_path(server.data_dir(), "keyed-app", Algorithm::RS384);
    server.cli(&[
        "client",
        "add",
        "--id",
        "keyed-app",
        "--jwks",
        jwks.to_str().unwrap(),
        "--redirect-uri",
        REDIRECT,
        "--scope",
        "launch/patient patient/*.rs",
    ]);
    let code_for = |client: &'static str| {
        let url = authorize_url(&server, client, "launch/patient patient/*.rs", &[]);
        async move { query_of(&login_and_approve(&url, USERNAME, PASSWORD, None).await)["code"].clone() }
    };
    use base64::Engine;
    let basic = |secret: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("county-app:{secret}"))
        )
    };
    let exchange_basic = |code: String, secret: &'static str| {
        let url = server.token_url();
        let auth = basic(secret);
        async move {
            let form = form_body(&[
                ("grant_type".into(), "authorization_code".into()),
                ("code".into(), code),
                ("redirect_uri".into(), REDIRECT.into()),
                ("code_verifier".into(), VERIFIER.into()),
            ]);
            let resp = http()
                .post(url)
                .header("authorization", auth)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    // Wrong secret, then no secret at all: refused; the right one works.
    let (status, body) = exchange_basic(code_for("county-app").await, "wrong").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let code = code_for("county-app").await;
    assert_oauth_error(
        "confidential client without credentials",
        &exchange(&server, &code, VERIFIER, "county-app").await,
        "invalid_client",
    );
    let (status, body) = exchange_basic(code_for("county-app").await, "app-secret-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["patient"], YOUTH);
    // private_key_jwt at the code exchange.
    let code = code_for("keyed-app").await;
    let assertion = key.assertion(&server.token_url(), json!({}));
    let (status, _, body) = post_form(
        &server.token_url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Nothing secret reached the log.
    let log = server.stderr();
    for secret in [
        PASSWORD,
        "app-secret-1",
        "PRIVATE KEY",
        body["access_token"].as_str().unwrap(),
    ] {
        assert!(
            !log.contains(secret),
            "the server log holds a secret: {secret}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_registers_clients_and_users_and_says_how_to_get_tokens() {
    let server = Server::builder().arg("--demo").start();
    let key = server.data_dir().join("demo-county");
    assert!(
        key.with_extension("pem").exists(),
        "the demo key pair is written next to the database"
    );
    let token = server.cli_plain(&[
        "token",
        "--token-url",
        &server.token_url(),
        "--client-id",
        "demo-county",
        "--key",
        key.to_str().unwrap(),
        "--scope",
        "system/*.rs",
    ]);
    let county = server.client().with_token(token.trim());
    county
        .get("Patient/youth-maria-lopez")
        .await
        .expect_status(200);
    let listed = server.cli(&["client", "list"]);
    assert!(
        listed.contains("\"demo-passport\"") && listed.contains("\"demo-county\""),
        "{listed}"
    );
    assert!(
        !listed.contains("secret_hash") && !listed.contains("\"kty\""),
        "{listed}"
    );
    let users = server.cli(&["user", "list"]);
    for name in ["maria", "sandra", "dr-whitfield"] {
        assert!(users.contains(name), "{users}");
    }
    assert!(!users.contains("argon2"), "{users}");
    // The youth signs in to the passport app and sees her own record only.
    let pairs: Vec<(String, String)> = vec![
        ("response_type".into(), "code".into()),
        ("client_id".into(), "demo-passport".into()),
        (
            "redirect_uri".into(),
            "http://localhost:8000/callback".into(),
        ),
        (
            "scope".into(),
            "launch/patient openid fhirUser patient/*.rs".into(),
        ),
        ("state".into(), "s".into()),
        ("aud".into(), server.base.clone()),
        ("code_challenge".into(), CHALLENGE.into()),
        ("code_challenge_method".into(), "S256".into()),
    ];
    let url = format!("{}/auth/authorize?{}", server.origin(), form_body(&pairs));
    let location = login_and_approve(&url, "maria", "passport-demo", None).await;
    let code = query_of(&location)["code"].clone();
    let (status, _, body) = post_form(
        &server.token_url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://localhost:8000/callback"),
            ("code_verifier", VERIFIER),
            ("client_id", "demo-passport"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["patient"], "youth-maria-lopez");
    let maria = server
        .client()
        .with_token(body["access_token"].as_str().unwrap());
    maria
        .get("Patient/youth-jayden-brooks")
        .await
        .expect_outcome(404);
    let conditions = maria.get("Condition").await.expect_status(200);
    assert!(conditions.body["total"].as_u64().unwrap() > 0);
    assert!(
        !conditions.text.contains("youth-jayden"),
        "{}",
        conditions.text
    );
    // Removing a client unregisters it.
    server.cli(&["client", "remove", "demo-county"]);
    assert!(!server.cli(&["client", "list"]).contains("\"demo-county\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn b2b_extension_sets_purpose_and_organization() {
    let server = Server::start();
    seed(&server).await;
    let key = register_backend(&server, "plan", Algorithm::ES384, "system/*.rs");
    let payload = |token: &str| -> Value {
        use base64::Engine;
        let part = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    };
    // Without the extension, the registration's defaults apply.
    let (_, _, body) = backend_token(&server, &key, "system/*.rs").await;
    let claims = payload(body["access_token"].as_str().unwrap());
    assert_eq!(claims["purpose"], json!(["TREAT"]));
    assert_eq!(claims["organization"], "Organization/county-la");
    assert_eq!(claims["role"], "custodian");
    // The HL7 B2B extension overrides the purpose and names the person behind the request.
    let assertion = key.assertion(
        &server.token_url(),
        json!({ "extensions": { "hl7-b2b": {
            "version": "1",
            "purpose_of_use": ["urn:oid:2.16.840.1.113883.5.8#HPAYMT", "COC"],
            "organization_id": "https://plan.example/org/1",
            "subject_name": "Pat Reviewer",
            "subject_role": "http://nucc.org/provider-taxonomy#163W00000X",
        }}}),
    );
    let (status, _, body) = backend_token_with(&server, &assertion).await;
    assert_eq!(status, 200, "{body}");
    let claims = payload(body["access_token"].as_str().unwrap());
    assert_eq!(claims["purpose"], json!(["HPAYMT", "COC"]));
    assert_eq!(claims["subject_name"], "Pat Reviewer");
    assert_eq!(
        claims["organization"], "Organization/county-la",
        "the registration wins"
    );
    server
        .client()
        .with_token(body["access_token"].as_str().unwrap())
        .get(&format!("Patient/{YOUTH}"))
        .await
        .expect_status(200);
}
