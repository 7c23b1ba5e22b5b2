//! Tokens for tests, obtained through the real flows: a backend-services client signs a client
//! assertion with its own key (made by `foster-passport keygen`) and trades it at the token
//! endpoint, as an EHR or county system would.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A registered backend client's signing key.
#[derive(Clone, Debug)]
pub struct BackendKey {
    pub client_id: String,
    pub alg: Algorithm,
    pub kid: String,
    pub private_pem: String,
}

impl BackendKey {
    /// Makes a key pair with `foster-passport keygen` under `dir` (`NAME.pem`, `NAME.jwks.json`).
    pub fn generate(dir: &Path, client_id: &str, alg: Algorithm) -> BackendKey {
        let name = match alg {
            Algorithm::ES384 => "es384",
            Algorithm::RS384 => "rs384",
            Algorithm::RS256 => "rs256",
            other => panic!("no keygen for {other:?}"),
        };
        let prefix = dir.join(format!("{client_id}-{name}"));
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_foster-passport"))
            .args(["keygen", "--alg", name, "--out"])
            .arg(&prefix)
            .output()
            .expect("run foster-passport keygen");
        assert!(output.status.success(), "keygen failed: {output:?}");
        let kid = String::from_utf8(output.stdout).unwrap().trim().to_string();
        let private_pem = std::fs::read_to_string(prefix.with_extension("pem"))
            .or_else(|_| std::fs::read_to_string(format!("{}.pem", prefix.display())))
            .expect("read the private key");
        BackendKey {
            client_id: client_id.to_string(),
            alg,
            kid,
            private_pem,
        }
    }

    /// Path of the public JWK Set `generate` wrote.
    pub fn jwks_path(dir: &Path, client_id: &str, alg: Algorithm) -> std::path::PathBuf {
        let name = format!("{alg:?}").to_ascii_lowercase();
        dir.join(format!("{client_id}-{name}.jwks.json"))
    }

    /// A client assertion with the standard claims, merged with `extra` (a `null` removes one).
    pub fn assertion(&self, token_url: &str, extra: Value) -> String {
        let mut claims = json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url,
            "exp": now() + 240,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(&k);
            } else {
                claims[k] = v;
            }
        }
        self.sign(&claims)
    }

    /// Signs arbitrary claims with this key, header `{alg, kid, typ: JWT}`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let key = match self.alg {
            Algorithm::ES384 => EncodingKey::from_ec_pem(self.private_pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(self.private_pem.as_bytes()),
        }
        .expect("load the private key");
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The form of a client_credentials token request.
pub fn client_credentials_form(assertion: &str, scope: &str) -> Vec<(String, String)> {
    vec![
        ("grant_type".into(), "client_credentials".into()),
        ("scope".into(), scope.into()),
        (
            "client_assertion_type".into(),
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
        ),
        ("client_assertion".into(), assertion.into()),
    ]
}

/// `application/x-www-form-urlencoded` text.
pub fn form_body(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter())
        .finish()
}

/// Gets (and renews before it expires) a backend-services token.
pub struct TokenSource {
    pub key: BackendKey,
    pub token_url: String,
    pub scope: String,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl TokenSource {
    pub fn new(key: BackendKey, token_url: String, scope: &str) -> Arc<TokenSource> {
        Arc::new(TokenSource {
            key,
            token_url,
            scope: scope.to_string(),
            cached: tokio::sync::Mutex::new(None),
        })
    }

    pub async fn token(&self, http: &reqwest::Client) -> String {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && *until > Instant::now()
        {
            return token.clone();
        }
        let assertion = self.key.assertion(&self.token_url, json!({}));
        let response = http
            .post(&self.token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&client_credentials_form(&assertion, &self.scope)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {} failed: {e}", self.token_url));
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "token request for {} failed: {status} {body}",
            self.key.client_id
        );
        let token = body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string();
        let lifetime = body["expires_in"].as_u64().unwrap_or(60);
        // Renew a minute early: a slow CI machine must never send an expired token.
        let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(60).max(1));
        *cached = Some((token.clone(), until));
        token
    }
}

/// Signs `username` in through the login and approval pages of a public app (PKCE S256) and
/// returns the token response. The app must be registered with `redirect_uri`.
pub async fn user_token(
    origin: &str,
    base: &str,
    client_id: &str,
    redirect_uri: &str,
    username: &str,
    password: &str,
    scope: &str,
) -> Value {
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let authorize = format!("{origin}/auth/authorize");
    let mut fields: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", scope),
        ("state", "s"),
        ("aud", base),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
        ("username", username),
        ("password", password),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let post = |fields: Vec<(String, String)>| {
        http.post(&authorize)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&fields))
            .send()
    };
    let approval = post(fields.clone()).await.unwrap().text().await.unwrap();
    let ticket = regex::Regex::new(r#"name="login_ticket" value="([^"]+)""#)
        .unwrap()
        .captures(&approval)
        .unwrap_or_else(|| panic!("no approval page for {username}: {approval}"))[1]
        .to_string();
    fields.retain(|(k, _)| k != "username" && k != "password");
    fields.push(("login_ticket".into(), ticket));
    fields.push(("decision".into(), "approve".into()));
    let done = post(fields).await.unwrap();
    assert_eq!(
        done.status(),
        302,
        "{}",
        done.text().await.unwrap_or_default()
    );
    let location = done.headers()["location"].to_str().unwrap().to_string();
    let code = form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "code")
        .expect("code")
        .1
        .into_owned();
    let token_request = vec![
        ("grant_type".to_string(), "authorization_code".to_string()),
        ("code".into(), code),
        ("redirect_uri".into(), redirect_uri.into()),
        ("code_verifier".into(), VERIFIER.into()),
        ("client_id".into(), client_id.into()),
    ];
    let resp = http
        .post(format!("{origin}/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&token_request))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Registers a backend client (`system/*.rs`, an ES384 key made with `keygen`) acting for
/// `Organization/{org}` with `role` and purpose of use `purpose`, and returns a client that
/// fetches its tokens through the real flow.
pub fn backend_client(
    server: &super::Server,
    id: &str,
    role: &str,
    org: &str,
    purpose: &str,
) -> super::Client {
    backend_client_with_scope(server, id, role, org, purpose, "system/*.rs")
}

/// [`backend_client`] with other scopes.
pub fn backend_client_with_scope(
    server: &super::Server,
    id: &str,
    role: &str,
    org: &str,
    purpose: &str,
    scope: &str,
) -> super::Client {
    backend_client_registered(server, id, role, org, purpose, scope, &[])
}

/// [`backend_client_with_scope`] with more `client add` options (`--webhook-secret S`).
pub fn backend_client_registered(
    server: &super::Server,
    id: &str,
    role: &str,
    org: &str,
    purpose: &str,
    scope: &str,
    extra: &[&str],
) -> super::Client {
    let key = BackendKey::generate(server.data_dir(), id, Algorithm::ES384);
    let jwks = BackendKey::jwks_path(server.data_dir(), id, Algorithm::ES384);
    server.cli(
        &[
            "client",
            "add",
            "--id",
            id,
            "--scope",
            scope,
            "--jwks",
            jwks.to_str().unwrap(),
            "--role",
            role,
            "--organization",
            &format!("Organization/{org}"),
            "--purpose",
            purpose,
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
    );
    server
        .client()
        .with_auth(super::Auth::Backend(TokenSource::new(
            key,
            server.token_url(),
            scope,
        )))
}

/// A client logged in as one of the demo users (`--demo`), through the demo passport app.
pub async fn demo_user(server: &super::Server, username: &str, password: &str) -> super::Client {
    let token = user_token(
        &server.origin(),
        &server.base,
        "demo-passport",
        "http://localhost:8000/callback",
        username,
        password,
        "openid fhirUser user/*.rs",
    )
    .await;
    server
        .client()
        .with_token(token["access_token"].as_str().unwrap())
}
