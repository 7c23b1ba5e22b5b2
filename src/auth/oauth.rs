//! The OAuth 2 endpoints of the built-in authorization server (SMART App Launch 2): discovery,
//! JWK Set, token (client_credentials, authorization_code, refresh_token), introspection
//! (RFC 7662) and revocation (RFC 7009).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::Validation;
use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::crypto;
use super::registry::{self, Client};
use super::scopes::ScopeSet;
use super::tokens::{self, AccessClaims, LEEWAY_SECS};
use crate::state::AppState;
use crate::store::Records;

/// Longest lifetime of a backend-services access token (SMART: SHOULD NOT exceed 300 s).
pub const BACKEND_TOKEN_SECS: u64 = 300;
/// Lifetime of an app's access token.
pub const APP_TOKEN_SECS: u64 = 3600;
/// Lifetime of a refresh token.
pub const REFRESH_TOKEN_SECS: u64 = 30 * 24 * 3600;
/// How far ahead a client assertion's `exp` may be (SMART: 5 minutes), plus clock skew.
const MAX_ASSERTION_SECS: u64 = 300 + LEEWAY_SECS;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An OAuth error answer (RFC 6749 section 5.2).
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = match error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            "slow_down" => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        };
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    pub fn server(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "authorization server failure");
        OAuthError::new("server_error", "the server could not complete the request")
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = no_store(
            self.status,
            json!({ "error": self.error, "error_description": self.description }),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"foster-passport\""),
            );
        }
        response
    }
}

/// A JSON answer that no cache may keep (SMART: token responses carry both headers).
pub fn no_store(status: StatusCode, body: Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn json_ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Run records work on the blocking pool.
async fn records<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn Records) -> crate::error::FhirResult<T> + Send + 'static,
) -> Result<T, OAuthError> {
    state
        .with_store(move |store, _| f(store.records()))
        .await
        .map_err(OAuthError::server)
}

/// `GET [base]/.well-known/smart-configuration`
pub async fn smart_configuration(State(state): State<AppState>) -> Response {
    let auth = &state.auth;
    json_ok(json!({
        "issuer": auth.issuer,
        "jwks_uri": auth.endpoints.jwks,
        "authorization_endpoint": auth.endpoints.authorize,
        "token_endpoint": auth.endpoints.token,
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "introspection_endpoint": auth.endpoints.introspect,
        "revocation_endpoint": auth.endpoints.revoke,
        "scopes_supported": [
            "openid", "fhirUser", "launch", "launch/patient", "offline_access", "online_access",
            "patient/*.cruds", "user/*.cruds", "system/*.cruds",
            "patient/*.read", "user/*.read", "system/*.read",
        ],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": [
            "launch-ehr", "launch-standalone", "authorize-post", "client-public",
            "client-confidential-symmetric", "client-confidential-asymmetric",
            "sso-openid-connect", "context-ehr-patient", "context-standalone-patient",
            "permission-offline", "permission-online", "permission-patient", "permission-user",
            "permission-v1", "permission-v2",
        ],
    }))
}

/// `GET [issuer]/.well-known/openid-configuration`
pub async fn openid_configuration(State(state): State<AppState>) -> Response {
    let auth = &state.auth;
    json_ok(json!({
        "issuer": auth.issuer,
        "authorization_endpoint": auth.endpoints.authorize,
        "token_endpoint": auth.endpoints.token,
        "jwks_uri": auth.endpoints.jwks,
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "fhirUser"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

/// `GET /auth/jwks`: our public keys.
pub async fn jwks(State(state): State<AppState>) -> Response {
    json_ok(state.auth.key.jwks.clone())
}

/// Form parameters; a parameter given twice is an error (RFC 6749 section 3.2).
fn form(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(OAuthError::new(
                "invalid_request",
                format!("the parameter `{k}` is repeated"),
            ));
        }
    }
    Ok(out)
}

/// What the client assertion told about who asks (HL7 B2B authorization extension).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct B2b {
    purpose: Vec<String>,
    organization: Option<String>,
    subject_name: Option<String>,
    subject_role: Option<String>,
}

/// Authenticate the client of a token, revocation or introspection request: a JWT assertion
/// (`private_key_jwt`), a secret (Basic or form), or a public client's bare `client_id`.
pub async fn authenticate(
    state: &AppState,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(Client, B2b), OAuthError> {
    let bad = |why: String| OAuthError::new("invalid_client", why);
    if let Some(kind) = form.get("client_assertion_type") {
        if kind != JWT_BEARER {
            return Err(bad(format!("client_assertion_type must be {JWT_BEARER}")));
        }
        let assertion = form
            .get("client_assertion")
            .ok_or_else(|| bad("client_assertion is missing".into()))?;
        return verify_assertion(state, assertion, form.get("client_id")).await;
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (id, secret) = s.split_once(':')?;
            let decode = |t: &str| {
                percent_encoding::percent_decode_str(t)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            Some((decode(id), decode(secret)))
        });
    let (id, secret) = match (basic, form.get("client_secret")) {
        (Some((id, secret)), _) => (id, Some(secret)),
        (None, Some(secret)) => (
            form.get("client_id").cloned().unwrap_or_default(),
            Some(secret.clone()),
        ),
        (None, None) => (
            form.get("client_id")
                .cloned()
                .ok_or_else(|| bad("the client did not identify itself".into()))?,
            None,
        ),
    };
    if state.auth.is_limited(&id) {
        return Err(OAuthError::new(
            "slow_down",
            "too many failed requests; wait a minute",
        ));
    }
    let lookup = id.clone();
    let client = records(state, move |r| registry::client(r, &lookup))
        .await?
        .ok_or_else(|| bad(format!("unknown client `{id}`")))?;
    match (secret, &client.secret_hash) {
        (Some(secret), Some(hash)) => {
            let hash = hash.clone();
            let ok = tokio::task::spawn_blocking(move || crypto::verify_password(&secret, &hash))
                .await
                .unwrap_or(false);
            if !ok {
                state.auth.record_failure(&client.id);
                return Err(bad("the client secret is wrong".into()));
            }
        }
        (Some(_), None) => return Err(bad("this client has no secret".into())),
        (None, _) if client.public => {}
        (None, _) => return Err(bad("this client must authenticate".into())),
    }
    Ok((client, B2b::default()))
}

/// Verify a client assertion (SMART client-confidential-asymmetric, RFC 7523 section 3).
async fn verify_assertion(
    state: &AppState,
    assertion: &str,
    client_id: Option<&String>,
) -> Result<(Client, B2b), OAuthError> {
    let bad = |why: String| OAuthError::new("invalid_client", why);
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|e| bad(format!("the client assertion is not a JWT: {e}")))?;
    use jsonwebtoken::Algorithm::*;
    if !matches!(
        header.alg,
        RS384 | ES384 | RS256 | ES256 | RS512 | PS384 | PS256
    ) {
        return Err(bad(format!(
            "assertions signed {:?} are not accepted",
            header.alg
        )));
    }
    let kid = header
        .kid
        .clone()
        .ok_or_else(|| bad("the assertion header has no kid".into()))?;
    let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
        .map_err(|e| bad(format!("the client assertion is not a JWT: {e}")))?;
    let iss = unverified
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if client_id.is_some_and(|c| *c != iss) {
        return Err(bad("client_id differs from the assertion's iss".into()));
    }
    if state.auth.is_limited(&iss) {
        return Err(OAuthError::new(
            "slow_down",
            "too many failed requests; wait a minute",
        ));
    }
    let lookup = iss.clone();
    let client = records(state, move |r| registry::client(r, &lookup))
        .await?
        .ok_or_else(|| bad(format!("unknown client `{iss}`")))?;
    let result = check_assertion(state, &client, assertion, &header, &kid).await;
    if result.is_err() {
        state.auth.record_failure(&client.id);
    }
    result.map(|b2b| (client, b2b))
}

async fn check_assertion(
    state: &AppState,
    client: &Client,
    assertion: &str,
    header: &jsonwebtoken::Header,
    kid: &str,
) -> Result<B2b, OAuthError> {
    let bad = |why: String| OAuthError::new("invalid_client", why);
    let set: JwkSet = match (&client.jwks, &client.jwks_uri) {
        (_, Some(uri)) => {
            if header.jku.as_ref().is_some_and(|jku| jku != uri) {
                return Err(bad("jku is not the registered JWK Set URL".into()));
            }
            let auth = &state.auth;
            let mut set = auth
                .jwks_cache
                .get(&auth.http, uri, false)
                .await
                .map_err(bad)?;
            if set.find(kid).is_none() {
                set = auth
                    .jwks_cache
                    .get(&auth.http, uri, true)
                    .await
                    .map_err(bad)?;
            }
            set
        }
        (Some(value), None) => {
            if header.jku.is_some() {
                return Err(bad(
                    "jku given but the client registered its keys by value".into()
                ));
            }
            serde_json::from_value(value.clone())
                .map_err(|e| bad(format!("registered JWKS: {e}")))?
        }
        (None, None) => return Err(bad("this client has no registered keys".into())),
    };
    let jwk = tokens::select_key(&set, kid, header.alg).map_err(bad)?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_audience(&[&state.auth.endpoints.token]);
    validation.set_issuer(&[&client.id]);
    validation.sub = Some(client.id.clone());
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .map_err(|e| bad(format!("the client assertion is not valid: {e}")))?
        .claims;
    let now = tokens::now();
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    if exp > now + MAX_ASSERTION_SECS {
        return Err(bad(
            "the assertion's exp is more than 5 minutes ahead".into()
        ));
    }
    if claims
        .get("iat")
        .and_then(Value::as_u64)
        .is_some_and(|iat| iat > now + LEEWAY_SECS)
    {
        return Err(bad("the assertion's iat is in the future".into()));
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("the assertion has no jti".into()))?
        .to_string();
    let key = format!("{}|{jti}", client.id);
    let expires = (exp + LEEWAY_SECS) as i64;
    let fresh = records(state, move |r| r.insert("jti", &key, "", Some(expires))).await?;
    if !fresh {
        return Err(bad("the assertion's jti was already used".into()));
    }
    Ok(b2b(&claims))
}

/// The HL7 B2B authorization extension (`extensions.hl7-b2b`), if the assertion carries one.
fn b2b(claims: &Value) -> B2b {
    let ext = &claims["extensions"]["hl7-b2b"];
    let text = |k: &str| ext.get(k).and_then(Value::as_str).map(str::to_string);
    B2b {
        // `urn:oid:2.16.840.1.113883.5.8#TREAT` and `TREAT` both name TREAT.
        purpose: ext["purpose_of_use"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|p| p.rsplit('#').next().unwrap_or(p).to_string())
            .collect(),
        organization: text("organization_id"),
        subject_name: text("subject_name"),
        subject_role: text("subject_role"),
    }
}

/// `POST /auth/token`
pub async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match token_inner(&state, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn token_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let form = form(body)?;
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| OAuthError::new("invalid_request", "grant_type is missing"))?
        .clone();
    match grant_type.as_str() {
        "client_credentials" => client_credentials(state, &form, headers).await,
        "authorization_code" => super::authorize::exchange_code(state, &form, headers).await,
        "refresh_token" => refresh(state, &form, headers).await,
        other => Err(OAuthError::new(
            "unsupported_grant_type",
            format!("grant_type `{other}` is not supported"),
        )),
    }
}

async fn client_credentials(
    state: &AppState,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, OAuthError> {
    if form.get("client_assertion_type").is_none() {
        return Err(OAuthError::new(
            "invalid_client",
            "backend services authenticate with a client assertion (private_key_jwt)",
        ));
    }
    let (client, b2b) = authenticate(state, form, headers).await?;
    let asked = ScopeSet::parse(form.get("scope").map_or("", String::as_str));
    let granted = asked.intersect(&ScopeSet::parse(&client.scope));
    if granted.is_empty() {
        return Err(OAuthError::new(
            "invalid_scope",
            "none of the requested scopes is registered for this client",
        ));
    }
    let now = tokens::now();
    let purpose = if b2b.purpose.is_empty() {
        client.purpose.iter().cloned().collect()
    } else {
        b2b.purpose.clone()
    };
    let claims = AccessClaims {
        iss: state.auth.issuer.clone(),
        aud: state.auth.audience.clone(),
        sub: client.id.clone(),
        exp: now + BACKEND_TOKEN_SECS,
        iat: now,
        jti: crypto::random_handle(16),
        client_id: client.id.clone(),
        scope: granted.to_string(),
        patient: None,
        fhir_user: None,
        organization: client.organization.clone().or(b2b.organization),
        role: client.role.map(|r| r.as_str().to_string()),
        purpose,
        subject_name: b2b.subject_name,
        subject_role: b2b.subject_role,
    };
    let access_token = state.auth.key.sign(&claims).map_err(OAuthError::server)?;
    Ok(no_store(
        StatusCode::OK,
        json!({
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": BACKEND_TOKEN_SECS,
            "scope": claims.scope,
        }),
    ))
}

/// What a refresh token stands for (stored under the SHA-256 of the token).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshGrant {
    /// The client it was issued to.
    pub client_id: String,
    /// The user.
    pub sub: String,
    /// The scopes granted at approval (a refresh never gets more).
    pub scope: String,
    /// Patient context.
    pub patient: Option<String>,
    /// The user's resource.
    pub fhir_user: Option<String>,
    /// The user's organization.
    pub organization: Option<String>,
}

/// Issue an app's access token (and the token response) for a grant.
pub async fn issue_app_tokens(
    state: &AppState,
    client: &Client,
    grant: &RefreshGrant,
    scope: &ScopeSet,
    refresh_token: Option<String>,
    with_id_token: bool,
) -> Result<Response, OAuthError> {
    let now = tokens::now();
    let claims = AccessClaims {
        iss: state.auth.issuer.clone(),
        aud: state.auth.audience.clone(),
        sub: grant.sub.clone(),
        exp: now + APP_TOKEN_SECS,
        iat: now,
        jti: crypto::random_handle(16),
        client_id: client.id.clone(),
        scope: scope.to_string(),
        patient: grant.patient.clone(),
        fhir_user: grant.fhir_user.clone(),
        organization: grant.organization.clone().or(client.organization.clone()),
        role: client.role.map(|r| r.as_str().to_string()),
        purpose: client.purpose.iter().cloned().collect(),
        subject_name: None,
        subject_role: None,
    };
    let access_token = state.auth.key.sign(&claims).map_err(OAuthError::server)?;
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": APP_TOKEN_SECS,
        "scope": claims.scope,
    });
    if let Some(p) = &grant.patient {
        body["patient"] = json!(p);
        body["need_patient_banner"] = json!(true);
    }
    if with_id_token {
        let fhir_user = grant
            .fhir_user
            .as_ref()
            .map(|u| format!("{}/{u}", state.auth.audience));
        let id_token = state
            .auth
            .key
            .sign(&json!({
                "iss": state.auth.issuer,
                "sub": grant.sub,
                "aud": client.id,
                "exp": now + APP_TOKEN_SECS,
                "iat": now,
                "fhirUser": fhir_user,
            }))
            .map_err(OAuthError::server)?;
        body["id_token"] = json!(id_token);
    }
    if let Some(r) = refresh_token {
        body["refresh_token"] = json!(r);
    }
    Ok(no_store(StatusCode::OK, body))
}

async fn refresh(
    state: &AppState,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, OAuthError> {
    let token = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::new("invalid_request", "refresh_token is missing"))?
        .clone();
    let (client, _) = authenticate(state, form, headers).await?;
    let key = crypto::sha256_b64url(token.as_bytes());
    let stored = records(state, move |r| r.get("refresh", &key)).await?;
    let grant: RefreshGrant = stored
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| OAuthError::new("invalid_grant", "the refresh token is not valid"))?;
    if grant.client_id != client.id {
        return Err(OAuthError::new(
            "invalid_grant",
            "the refresh token belongs to another client",
        ));
    }
    let original = ScopeSet::parse(&grant.scope);
    let scope = match form.get("scope") {
        None => original,
        Some(asked) => {
            let asked = ScopeSet::parse(asked);
            if !asked.is_subset_of(&original) {
                return Err(OAuthError::new(
                    "invalid_scope",
                    "a refresh cannot ask for more than was granted",
                ));
            }
            asked
        }
    };
    let with_id = scope.contains(&super::scopes::Scope::OpenId)
        && scope.contains(&super::scopes::Scope::FhirUser);
    issue_app_tokens(state, &client, &grant, &scope, Some(token), with_id).await
}

/// `POST /auth/introspect` (RFC 7662). Anyone holding a token may learn what it grants; an
/// inactive token gets exactly `{"active": false}`.
pub async fn introspect(State(state): State<AppState>, body: Bytes) -> Response {
    let inactive = || json_ok(json!({ "active": false }));
    let Ok(form) = form(&body) else {
        return inactive();
    };
    let Some(token) = form.get("token") else {
        return OAuthError::new("invalid_request", "token is missing").into_response();
    };
    let Ok(claims) = super::verify_bearer(&state, token).await else {
        return inactive();
    };
    let mut body = json!({
        "active": true,
        "scope": claims.scope,
        "client_id": claims.client_id,
        "exp": claims.exp,
        "iat": claims.iat,
        "sub": claims.sub,
        "iss": claims.iss,
        "aud": claims.aud,
        "token_type": "Bearer",
    });
    if let Some(p) = &claims.patient {
        body["patient"] = json!(p);
    }
    if let Some(u) = &claims.fhir_user {
        body["fhirUser"] = json!(format!("{}/{u}", state.auth.audience));
    }
    json_ok(body)
}

/// `POST /auth/revoke` (RFC 7009): always 200, whatever the token.
pub async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match form(&body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let Some(token) = form.get("token").cloned() else {
        return OAuthError::new("invalid_request", "token is missing").into_response();
    };
    if let Some(hint) = form.get("token_type_hint")
        && hint != "access_token"
        && hint != "refresh_token"
    {
        return OAuthError::new("unsupported_token_type", format!("unknown hint `{hint}`"))
            .into_response();
    }
    let client = match authenticate(&state, &form, &headers).await {
        Ok((c, _)) => c,
        Err(e) => return e.into_response(),
    };
    if let Ok(claims) = super::verify_bearer(&state, &token).await {
        if claims.client_id == client.id {
            let jti = claims.jti.clone();
            let exp = claims.exp as i64;
            if let Err(e) = records(&state, move |r| r.put("revoked", &jti, "", Some(exp))).await {
                return e.into_response();
            }
        }
    } else {
        let key = crypto::sha256_b64url(token.as_bytes());
        let client_id = client.id.clone();
        let result = records(&state, move |r| {
            let owned = r
                .get("refresh", &key)?
                .and_then(|t| serde_json::from_str::<RefreshGrant>(&t).ok())
                .is_some_and(|g| g.client_id == client_id);
            if owned {
                r.remove("refresh", &key)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = result {
            return e.into_response();
        }
    }
    no_store(StatusCode::OK, json!({}))
}
