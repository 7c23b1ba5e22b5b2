//! The admin commands (`client`, `user`, `keygen`): they open the same database as `serve`
//! and work while it runs (SQLite in WAL mode; the server reads registrations per request).

use std::io::Write;

use serde_json::json;

use crate::auth::crypto;
use crate::auth::registry::{self, Client, User};
use crate::auth::scopes::ScopeSet;
use crate::config::{ClientCommand, KeygenArgs, UserCommand};
use crate::store;

/// `client …`
pub fn client(command: ClientCommand) -> Result<(), String> {
    match command {
        ClientCommand::Add(a) => {
            let jwks = match &a.jwks {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    let value: serde_json::Value = serde_json::from_str(&text)
                        .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
                    serde_json::from_value::<jsonwebtoken::jwk::JwkSet>(value.clone())
                        .map_err(|e| format!("{} is not a JWK Set: {e}", path.display()))?;
                    Some(value)
                }
                None => None,
            };
            if a.public && (jwks.is_some() || a.jwks_uri.is_some() || a.secret.is_some()) {
                return Err("a public client has no keys or secret".into());
            }
            if !a.public && jwks.is_none() && a.jwks_uri.is_none() && a.secret.is_none() {
                return Err(
                    "give --jwks, --jwks-uri or --secret, or make the client --public".into(),
                );
            }
            if ScopeSet::parse(&a.scope).is_empty() {
                return Err(format!("--scope `{}` holds no scope we know", a.scope));
            }
            let secret_hash = a
                .secret
                .as_deref()
                .map(crypto::hash_password)
                .transpose()
                .map_err(|e| e.to_string())?;
            let client = Client {
                id: a.id.clone(),
                name: a.name,
                scope: a.scope,
                jwks,
                jwks_uri: a.jwks_uri,
                secret_hash,
                public: a.public,
                redirect_uris: a.redirect_uris,
                organization: a.organization,
                role: a.role,
                purpose: a.purpose,
                webhook_secret: a.webhook_secret,
            };
            let store = store::open(&a.db.database).map_err(|e| e.to_string())?;
            registry::put_client(store.records(), &client).map_err(|e| e.to_string())?;
            println!("client {} registered", a.id);
            Ok(())
        }
        ClientCommand::List(db) => {
            let store = store::open(&db.database).map_err(|e| e.to_string())?;
            let mut out = std::io::stdout().lock();
            for c in registry::clients(store.records()).map_err(|e| e.to_string())? {
                let line = json!({
                    "id": c.id,
                    "name": c.name,
                    "scope": c.scope,
                    "public": c.public,
                    "keys": if c.jwks_uri.is_some() { "jwks_uri" } else if c.jwks.is_some() { "jwks" } else if c.secret_hash.is_some() { "secret" } else { "none" },
                    "redirect_uris": c.redirect_uris,
                    "organization": c.organization,
                    "role": c.role.map(|r| r.as_str()),
                    "purpose": c.purpose,
                });
                let _ = writeln!(out, "{line}");
            }
            Ok(())
        }
        ClientCommand::Remove { id, db } => {
            let store = store::open(&db.database).map_err(|e| e.to_string())?;
            if registry::remove_client(store.records(), &id).map_err(|e| e.to_string())? {
                println!("client {id} removed");
                Ok(())
            } else {
                Err(format!("no client `{id}`"))
            }
        }
    }
}

/// `user …`
pub fn user(command: UserCommand) -> Result<(), String> {
    match command {
        UserCommand::Add(a) => {
            let valid = a.fhir_user.split_once('/').is_some_and(|(t, id)| {
                matches!(t, "Patient" | "RelatedPerson" | "Practitioner" | "Person")
                    && crate::fhir::ids::is_valid_id(id)
            });
            if !valid {
                return Err(format!(
                    "--fhir-user `{}` must be Patient/ID, RelatedPerson/ID, Practitioner/ID or Person/ID",
                    a.fhir_user
                ));
            }
            let user = User {
                username: a.username.clone(),
                password_hash: crypto::hash_password(&a.password).map_err(|e| e.to_string())?,
                fhir_user: a.fhir_user,
                organization: a.organization,
            };
            let store = store::open(&a.db.database).map_err(|e| e.to_string())?;
            registry::put_user(store.records(), &user).map_err(|e| e.to_string())?;
            println!("user {} added", a.username);
            Ok(())
        }
        UserCommand::List(db) => {
            let store = store::open(&db.database).map_err(|e| e.to_string())?;
            let mut out = std::io::stdout().lock();
            for u in registry::users(store.records()).map_err(|e| e.to_string())? {
                let line = json!({ "username": u.username, "fhirUser": u.fhir_user, "organization": u.organization });
                let _ = writeln!(out, "{line}");
            }
            Ok(())
        }
        UserCommand::Remove { username, db } => {
            let store = store::open(&db.database).map_err(|e| e.to_string())?;
            if registry::remove_user(store.records(), &username).map_err(|e| e.to_string())? {
                println!("user {username} removed");
                Ok(())
            } else {
                Err(format!("no user `{username}`"))
            }
        }
    }
}

/// `audit verify`: checks the hash chain of the AuditEvents.
pub fn audit(command: crate::config::AuditCommand) -> Result<(), String> {
    match command {
        crate::config::AuditCommand::Verify(db) => {
            let store = store::open(&db.database).map_err(|e| e.to_string())?;
            let checked = crate::audit::verify(store.as_ref())
                .map_err(|broken| format!("the audit chain is broken: {broken}"))?;
            println!("{checked} AuditEvents checked; the chain is intact");
            Ok(())
        }
    }
}

/// `launch`: prints the new launch value (valid for an hour).
pub fn launch(args: crate::config::LaunchArgs) -> Result<(), String> {
    if !crate::fhir::ids::is_valid_id(&args.patient) {
        return Err(format!("`{}` is not a FHIR id", args.patient));
    }
    let store = store::open(&args.db.database).map_err(|e| e.to_string())?;
    let id = crate::auth::authorize::create_launch(store.as_ref(), &args.patient)
        .map_err(|e| e.to_string())?;
    println!("{id}");
    Ok(())
}

/// `keygen`: prints the new key's kid.
pub fn keygen(args: KeygenArgs) -> Result<(), String> {
    let key = crypto::generate_key(args.alg).map_err(|e| e.to_string())?;
    let base = args.out.display().to_string();
    let private = format!("{base}.pem");
    let public = format!("{base}.jwks.json");
    std::fs::write(&private, &key.private_pem)
        .map_err(|e| format!("cannot write {private}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600));
    }
    let jwks = json!({ "keys": [key.public_jwk] });
    std::fs::write(&public, format!("{jwks:#}\n"))
        .map_err(|e| format!("cannot write {public}: {e}"))?;
    println!("{}", key.kid);
    Ok(())
}

/// `token`: a client assertion signed with the key pair, traded at the token endpoint; prints
/// the access token.
pub fn token(args: crate::config::TokenArgs) -> Result<(), String> {
    let prefix = args.key.display().to_string();
    let pem = std::fs::read_to_string(format!("{prefix}.pem"))
        .map_err(|e| format!("cannot read {prefix}.pem: {e}"))?;
    let jwks: serde_json::Value = std::fs::read_to_string(format!("{prefix}.jwks.json"))
        .map_err(|e| format!("cannot read {prefix}.jwks.json: {e}"))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{prefix}.jwks.json: {e}")))?;
    let jwk = &jwks["keys"][0];
    let (Some(kid), Some(alg)) = (jwk["kid"].as_str(), jwk["alg"].as_str()) else {
        return Err(format!("{prefix}.jwks.json has no kid and alg"));
    };
    let alg = <crate::auth::crypto::KeyAlg as clap::ValueEnum>::from_str(alg, true)
        .map_err(|_| format!("unsupported key algorithm {alg}"))?;
    let key = crypto::encoding_key(alg, &pem).map_err(|e| e.to_string())?;
    let now = crate::auth::tokens::now();
    let claims = json!({
        "iss": args.client_id, "sub": args.client_id, "aud": args.token_url,
        "exp": now + 240, "jti": crypto::random_handle(16),
    });
    let mut header = jsonwebtoken::Header::new(alg.jose());
    header.kid = Some(kid.to_string());
    header.typ = Some("JWT".into());
    let assertion = jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())?;
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "client_credentials"),
            ("scope", args.scope.as_str()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
        ])
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let body: serde_json::Value = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(&args.token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| format!("POST {}: {e}", args.token_url))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("the token endpoint answered {status}: {body}"));
        }
        Ok(body)
    })?;
    let token = body["access_token"]
        .as_str()
        .ok_or("no access_token in the answer")?;
    println!("{token}");
    Ok(())
}

/// `import-eligibility`: import, then report what was created, updated, left and refused (exit
/// status 1 when a row was refused; the other rows are imported all the same).
pub fn import_eligibility(args: crate::config::ImportEligibilityArgs) -> Result<(), String> {
    let report =
        crate::eligibility::import(&args.db.database, &args.file, args.aid_codes.as_deref())?;
    for (line, why) in &report.rejected {
        eprintln!("line {line}: {why}");
    }
    println!(
        "created {}, updated {}, unchanged {}, rejected {}",
        report.created,
        report.updated,
        report.unchanged,
        report.rejected.len()
    );
    if report.rejected.is_empty() {
        Ok(())
    } else {
        Err(format!("{} rows were rejected", report.rejected.len()))
    }
}

/// `migrate --from A --to B`.
pub fn migrate(args: crate::config::MigrateArgs) -> Result<(), String> {
    let report = crate::migrate::migrate(&args.from, &args.to, &args.base_url)?;
    println!(
        "copied {} versions ({} AuditEvents) and {} records",
        report.versions, report.audit_events, report.records
    );
    Ok(())
}
