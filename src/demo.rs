//! The demo data set (`serve --demo`): FHIR JSON files under `demo/`, embedded in the binary and
//! loaded idempotently (a resource that already exists is left alone).

use std::path::Path;

use include_dir::{Dir, include_dir};

use crate::access::Access;
use crate::error::{FhirError, FhirResult};
use crate::fhir::parse;
use crate::interactions::{Ctx, write_version};
use crate::store::{Store, WriteMethod};

static DEMO: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/demo");

/// Load every demo resource not yet present; returns how many were written.
pub fn load(store: &dyn Store, ctx: &Ctx) -> FhirResult<usize> {
    let mut files: Vec<_> = DEMO
        .files()
        .filter(|f| f.path().extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort_by_key(|f| f.path());
    let mut tx = store.begin()?;
    let mut written = 0;
    for file in files {
        let resource = parse::parse_resource(file.contents()).map_err(|e| {
            FhirError::internal(format!("{}: {e}: {:?}", file.path().display(), e.issues()))
        })?;
        let rtype = parse::resource_type(&resource).to_string();
        let id = resource
            .get("id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| FhirError::internal(format!("{} has no id", file.path().display())))?
            .to_string();
        if tx.current(&rtype, &id)?.is_some() {
            continue;
        }
        write_version(
            ctx,
            &Access::server(),
            tx.as_mut(),
            &rtype,
            &id,
            None,
            WriteMethod::Update,
            resource,
        )?;
        written += 1;
    }
    tx.commit()?;
    Ok(written)
}

/// The demo's built-in users' password (public: it is in the README).
pub const DEMO_PASSWORD: &str = "passport-demo";

/// Register the demo clients and users (idempotent) and return how to get a token for each.
/// The county backend client's key pair is written to `key_dir` on first use.
pub fn register(store: &dyn Store, key_dir: &Path, base_url: &str) -> FhirResult<String> {
    use crate::auth::crypto::{self, KeyAlg};
    use crate::auth::registry::{self, Client, Role, User};
    let records = store.records();
    let prefix = key_dir.join("demo-county");
    let pem = prefix.with_extension("pem");
    let jwks_path = prefix.with_extension("jwks.json");
    if !pem.exists() || !jwks_path.exists() {
        let key = crypto::generate_key(KeyAlg::Es384)?;
        std::fs::write(&pem, &key.private_pem)
            .map_err(|e| FhirError::internal(format!("cannot write {}: {e}", pem.display())))?;
        let jwks = serde_json::json!({ "keys": [key.public_jwk] });
        std::fs::write(&jwks_path, jwks.to_string()).map_err(|e| {
            FhirError::internal(format!("cannot write {}: {e}", jwks_path.display()))
        })?;
    }
    let jwks: serde_json::Value = std::fs::read_to_string(&jwks_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| FhirError::internal(format!("{} is unreadable", jwks_path.display())))?;
    registry::put_client(
        records,
        &Client {
            id: "demo-county".into(),
            name: Some("Los Angeles County DCFS (demo backend)".into()),
            scope: "system/*.cruds".into(),
            jwks: Some(jwks),
            jwks_uri: None,
            secret_hash: None,
            public: false,
            redirect_uris: vec![],
            organization: Some("Organization/la-dcfs".into()),
            role: Some(Role::Custodian),
            purpose: Some("COC".into()),
            webhook_secret: None,
        },
    )?;
    registry::put_client(
        records,
        &Client {
            id: "demo-passport".into(),
            name: Some("Health passport (demo app)".into()),
            scope: "launch launch/patient openid fhirUser offline_access online_access patient/*.rs patient/Consent.cruds user/*.rs".into(),
            jwks: None,
            jwks_uri: None,
            secret_hash: None,
            public: true,
            redirect_uris: vec![
                "http://localhost:8000/callback".into(),
                "http://127.0.0.1:8000/callback".into(),
            ],
            organization: None,
            role: Some(Role::PassportApp),
            purpose: Some("TREAT".into()),
            webhook_secret: None,
        },
    )?;
    let users = [
        ("maria", "Patient/youth-maria-lopez", None),
        ("sandra", "RelatedPerson/rf-sandra-okoye", None),
        (
            "dr-whitfield",
            "Practitioner/pcp-amara-whitfield",
            Some("Organization/jacaranda-pediatrics"),
        ),
        ("lupe", "RelatedPerson/rf-lupe-herrera", None),
        (
            "rachel",
            "Practitioner/sw-rachel-kim",
            Some("Organization/la-dcfs"),
        ),
        (
            "gloria",
            "Practitioner/cwl-gloria-benavides",
            Some("Organization/sierra-poppy-health-plan"),
        ),
        (
            "dr-natarajan",
            "Practitioner/pcp-priya-natarajan",
            Some("Organization/capitol-oaks-pediatrics"),
        ),
    ];
    for (username, fhir_user, organization) in users {
        if registry::user(records, username)?.is_none() {
            registry::put_user(
                records,
                &User {
                    username: username.into(),
                    password_hash: crypto::hash_password(DEMO_PASSWORD)?,
                    fhir_user: fhir_user.into(),
                    organization: organization.map(str::to_string),
                },
            )?;
        }
    }
    let origin = base_url.strip_suffix("/fhir").unwrap_or(base_url);
    Ok(format!(
        "demo clients and users:\n\
         - county backend (custodian, system/*.cruds):\n    \
           foster-passport token --token-url {origin}/auth/token --client-id demo-county --key {key} --scope 'system/*.rs'\n\
         - passport app (public, PKCE S256): client_id demo-passport, redirect_uri http://localhost:8000/callback,\n    \
           authorize at {origin}/auth/authorize, aud {base_url}\n\
         - users for the login page (password {DEMO_PASSWORD}): maria (youth Patient/youth-maria-lopez), \
           sandra (caregiver RelatedPerson/rf-sandra-okoye), dr-whitfield (PCP Practitioner/pcp-amara-whitfield),\n    \
           lupe (Maria's previous caregiver), rachel (her county social worker), gloria (the plan's Child Welfare Liaison), \
           dr-natarajan (a PCP who does not treat her)",
        key = prefix.display(),
    ))
}
