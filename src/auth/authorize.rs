//! The authorization endpoint (SMART App Launch 2, authorization code with PKCE S256): a plain
//! login page for built-in users, then an approval page listing the scopes (and a patient
//! picker when the user can see several), then a redirect with a single-use code that lives a
//! minute. Also the code exchange at the token endpoint, and EHR launch contexts.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::crypto;
use super::oauth::{self, OAuthError, REFRESH_TOKEN_SECS, RefreshGrant};
use super::registry::{self, Client, User};
use super::scopes::{Scope, ScopeSet};
use super::tokens;
use crate::error::FhirResult;
use crate::interactions::Ctx;
use crate::state::AppState;
use crate::store::Store;
use crate::store::query::Query;

/// How long a code is valid (SMART: "within around one minute").
const CODE_SECS: i64 = 60;
/// How long the approval page may wait after a login.
const LOGIN_SECS: i64 = 600;
/// How long an EHR launch context is valid.
pub const LAUNCH_SECS: i64 = 3600;

/// What a code stands for (stored under the SHA-256 of the code).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    grant: RefreshGrant,
}

/// An EHR launch context (`launch` parameter), made by `foster-passport launch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    /// The patient in context.
    pub patient: String,
}

/// Create an EHR launch context for `patient`; returns the `launch` value.
pub fn create_launch(store: &dyn Store, patient: &str) -> FhirResult<String> {
    let id = crypto::random_handle(16);
    let text = serde_json::to_string(&Launch {
        patient: patient.to_string(),
    })
    .map_err(crate::error::FhirError::internal)?;
    store.records().put(
        "launch",
        &id,
        &text,
        Some(tokens::now() as i64 + LAUNCH_SECS),
    )?;
    Ok(id)
}

/// `GET|POST /auth/authorize`
pub async fn authorize(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let raw: &[u8] = if method == Method::POST {
        &body
    } else {
        uri.query().unwrap_or("").as_bytes()
    };
    let params: HashMap<String, String> = form_urlencoded::parse(raw).into_owned().collect();
    match authorize_inner(&state, &params).await {
        Ok(r) => r,
        Err(page) => page,
    }
}

/// Where errors go once the redirect URI is trusted (RFC 6749 section 4.1.2.1).
fn redirect_error(redirect_uri: &str, state: Option<&String>, error: &str, text: &str) -> Response {
    let mut pairs = vec![
        ("error", error.to_string()),
        ("error_description", text.to_string()),
    ];
    if let Some(s) = state {
        pairs.push(("state", s.clone()));
    }
    redirect(redirect_uri, &pairs)
}

fn redirect(redirect_uri: &str, pairs: &[(&str, String)]) -> Response {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, format!("{redirect_uri}{sep}{query}")),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
    )
        .into_response()
}

/// An error page shown instead of redirecting (unknown client or redirect URI).
fn error_page(status: StatusCode, text: &str) -> Response {
    (
        status,
        Html(page(
            "Authorization error",
            &format!("<p class=\"error\">{}</p>", escape(text)),
        )),
    )
        .into_response()
}

async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn Store, &Ctx) -> FhirResult<T> + Send + 'static,
) -> Result<T, Response> {
    state.with_store(f).await.map_err(|e| {
        tracing::error!(error = %e, "authorize failed");
        error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server cannot complete the request now",
        )
    })
}

async fn authorize_inner(
    state: &AppState,
    p: &HashMap<String, String>,
) -> Result<Response, Response> {
    let get = |k: &str| p.get(k).filter(|v| !v.is_empty());
    let Some(client_id) = get("client_id").cloned() else {
        return Err(error_page(StatusCode::BAD_REQUEST, "client_id is missing"));
    };
    let lookup = client_id.clone();
    let client = blocking(state, move |s, _| registry::client(s.records(), &lookup))
        .await?
        .ok_or_else(|| error_page(StatusCode::BAD_REQUEST, "unknown client"))?;
    let Some(redirect_uri) = get("redirect_uri").cloned() else {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "redirect_uri is missing",
        ));
    };
    if !client.redirect_uris.contains(&redirect_uri) {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "redirect_uri is not registered for this client",
        ));
    }
    let app_state = get("state");
    let fail = |error: &str, text: &str| redirect_error(&redirect_uri, app_state, error, text);
    if get("response_type").map(String::as_str) != Some("code") {
        return Err(fail(
            "unsupported_response_type",
            "response_type must be code",
        ));
    }
    if get("code_challenge").is_none()
        || get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        return Err(fail(
            "invalid_request",
            "PKCE is required: code_challenge with code_challenge_method=S256",
        ));
    }
    let aud = get("aud").or_else(|| get("resource"));
    if aud.map(|a| a.trim_end_matches('/')) != Some(state.auth.audience.as_str()) {
        return Err(fail(
            "invalid_request",
            "aud must be this server's FHIR base URL",
        ));
    }
    let asked = ScopeSet::parse(get("scope").map_or("", String::as_str));
    let granted = asked.intersect(&ScopeSet::parse(&client.scope));
    if granted.is_empty() {
        return Err(fail(
            "invalid_scope",
            "none of the requested scopes is allowed for this client",
        ));
    }
    let launch = match get("launch") {
        Some(id) => {
            let id = id.clone();
            let found = blocking(state, move |s, _| s.records().get("launch", &id)).await?;
            match found.and_then(|t| serde_json::from_str::<Launch>(&t).ok()) {
                Some(l) => Some(l),
                None => return Err(fail("invalid_request", "unknown or expired launch")),
            }
        }
        None => None,
    };

    // Step 3: approval decision, with the ticket the login step issued.
    if let Some(decision) = get("decision") {
        let Some(ticket) = get("login_ticket") else {
            return Ok(login_page(p, None));
        };
        let key = crypto::sha256_b64url(ticket.as_bytes());
        let Some(username) = blocking(state, move |s, _| s.records().take("login", &key)).await?
        else {
            return Ok(login_page(p, Some("your sign-in expired; sign in again")));
        };
        let lookup = username.clone();
        let Some(user) = blocking(state, move |s, _| registry::user(s.records(), &lookup)).await?
        else {
            return Ok(login_page(p, Some("unknown user")));
        };
        if decision != "approve" {
            return Err(fail("access_denied", "the user denied the request"));
        }
        let patients = patients_of(state, &user).await?;
        let wants_patient = granted.contains(&Scope::LaunchPatient);
        let patient = if let Some(l) = &launch {
            Some(l.patient.clone())
        } else if wants_patient {
            match (get("patient"), patients.as_slice()) {
                (Some(chosen), list) if list.contains(chosen) => Some(chosen.clone()),
                (Some(_), _) => {
                    return Err(fail(
                        "access_denied",
                        "that patient is not one the user may choose",
                    ));
                }
                (None, [only]) => Some(only.clone()),
                (None, []) => {
                    return Err(fail("access_denied", "the user has no patient to choose"));
                }
                (None, _) => return Err(fail("invalid_request", "choose a patient")),
            }
        } else {
            None
        };
        let grant = RefreshGrant {
            client_id: client.id.clone(),
            sub: user.username.clone(),
            scope: granted.to_string(),
            patient,
            fhir_user: Some(user.fhir_user.clone()),
            organization: user.organization.clone(),
        };
        let code = crypto::random_handle(24);
        let stored = CodeGrant {
            client_id: client.id.clone(),
            redirect_uri: redirect_uri.clone(),
            code_challenge: get("code_challenge").cloned().unwrap_or_default(),
            grant,
        };
        let text = serde_json::to_string(&stored)
            .map_err(|_| error_page(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?;
        let key = crypto::sha256_b64url(code.as_bytes());
        blocking(state, move |s, _| {
            s.records()
                .insert("code", &key, &text, Some(tokens::now() as i64 + CODE_SECS))
        })
        .await?;
        let mut pairs = vec![("code", code)];
        if let Some(s) = app_state {
            pairs.push(("state", s.clone()));
        }
        return Ok(redirect(&redirect_uri, &pairs));
    }

    // Step 2: credentials posted from the login page.
    if let (Some(username), Some(password)) = (get("username"), get("password")) {
        let lookup = username.clone();
        let user = blocking(state, move |s, _| registry::user(s.records(), &lookup)).await?;
        let password = password.clone();
        let ok = match &user {
            Some(u) => {
                let hash = u.password_hash.clone();
                tokio::task::spawn_blocking(move || crypto::verify_password(&password, &hash))
                    .await
                    .unwrap_or(false)
            }
            None => false,
        };
        let Some(user) = user.filter(|_| ok) else {
            tracing::info!(client = %client.id, "failed sign-in");
            return Ok(login_page(p, Some("wrong username or password")));
        };
        let ticket = crypto::random_handle(24);
        let key = crypto::sha256_b64url(ticket.as_bytes());
        let name = user.username.clone();
        blocking(state, move |s, _| {
            s.records().put(
                "login",
                &key,
                &name,
                Some(tokens::now() as i64 + LOGIN_SECS),
            )
        })
        .await?;
        let patients = if launch.is_none() && granted.contains(&Scope::LaunchPatient) {
            patients_of(state, &user).await?
        } else {
            vec![]
        };
        return Ok(approval_page(
            p, &client, &user, &granted, &ticket, &patients,
        ));
    }

    // Step 1: the login page.
    Ok(login_page(p, None))
}

/// Patients the user may pick: themselves, the youth a caregiver (RelatedPerson) is linked
/// to, the patients a Person links, or the subjects of CareTeams a Practitioner is part of.
async fn patients_of(state: &AppState, user: &User) -> Result<Vec<String>, Response> {
    let fhir_user = user.fhir_user.clone();
    blocking(state, move |store, ctx| {
        let (rtype, id) = fhir_user.split_once('/').unwrap_or(("", ""));
        let mut reader = store.reader()?;
        let reference_ids = |body: &Value, pointer: &str| -> Vec<String> {
            let mut out = vec![];
            let mut collect = |v: &Value| {
                if let Some(id) = v.as_str().and_then(|r| r.strip_prefix("Patient/")) {
                    out.push(id.to_string());
                }
            };
            match body.pointer(pointer) {
                Some(Value::Array(items)) => items.iter().for_each(&mut collect),
                Some(v) => collect(v),
                None => {}
            }
            out
        };
        let body = |reader: &mut dyn crate::store::Reader,
                    t: &str,
                    i: &str|
         -> FhirResult<Option<Value>> {
            Ok(reader
                .current(t, i)?
                .and_then(|v| v.body.as_deref().and_then(|b| serde_json::from_str(b).ok())))
        };
        Ok(match rtype {
            "Patient" => vec![id.to_string()],
            "RelatedPerson" => body(reader.as_mut(), rtype, id)?
                .map(|b| reference_ids(&b, "/patient/reference"))
                .unwrap_or_default(),
            "Person" => body(reader.as_mut(), rtype, id)?
                .and_then(|b| b.get("link").and_then(Value::as_array).cloned())
                .unwrap_or_default()
                .iter()
                .flat_map(|l| reference_ids(l, "/target/reference"))
                .collect(),
            "Practitioner" => {
                let criteria = crate::search::parse::parse_conditional(
                    &ctx.search,
                    "CareTeam",
                    &[("participant".into(), fhir_user.clone())],
                    &ctx.base_url,
                )?;
                let page = reader.search(&Query {
                    rtype: "CareTeam".into(),
                    criteria,
                    sort: vec![],
                    count: 200,
                    cursor: None,
                    with_total: false,
                })?;
                let mut out = Vec::new();
                for m in page.matches {
                    if let Some(b) = m
                        .version
                        .body
                        .as_deref()
                        .and_then(|b| serde_json::from_str::<Value>(b).ok())
                    {
                        for p in reference_ids(&b, "/subject/reference") {
                            if !out.contains(&p) {
                                out.push(p);
                            }
                        }
                    }
                }
                out
            }
            _ => vec![],
        })
    })
    .await
}

/// The authorization request's parameters, carried through the pages as hidden inputs.
const CARRIED: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "aud",
    "resource",
    "code_challenge",
    "code_challenge_method",
    "launch",
];

fn hidden(p: &HashMap<String, String>) -> String {
    CARRIED
        .iter()
        .filter_map(|k| p.get(*k).map(|v| (k, v)))
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                escape(v)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn login_page(p: &HashMap<String, String>, error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "{error}<form method=\"post\" action=\"/auth/authorize\">\n{}\n\
         <label>Username <input name=\"username\" autocomplete=\"username\" required></label>\n\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\n\
         <button id=\"login\" type=\"submit\">Sign in</button>\n</form>",
        hidden(p)
    );
    let status = if error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Html(page("Sign in to foster-passport", &body)),
    )
        .into_response()
}

fn approval_page(
    p: &HashMap<String, String>,
    client: &Client,
    user: &User,
    granted: &ScopeSet,
    ticket: &str,
    patients: &[String],
) -> Response {
    let scopes: String = granted
        .iter()
        .map(|s| format!("<li><code>{}</code></li>", escape(&s.to_string())))
        .collect();
    let picker = if patients.len() > 1 {
        let options: String = patients
            .iter()
            .map(|id| format!("<option value=\"{0}\">Patient/{0}</option>", escape(id)))
            .collect();
        format!("<label>Patient <select id=\"patient\" name=\"patient\">{options}</select></label>")
    } else {
        String::new()
    };
    let body = format!(
        "<p>Signed in as <strong>{user}</strong>.</p>\n\
         <p><strong>{app}</strong> asks for:</p>\n<ul>{scopes}</ul>\n\
         <form method=\"post\" action=\"/auth/authorize\">\n{hidden}\n\
         <input type=\"hidden\" name=\"login_ticket\" value=\"{ticket}\">\n{picker}\n\
         <button id=\"approve\" name=\"decision\" value=\"approve\" type=\"submit\">Allow</button>\n\
         <button id=\"deny\" name=\"decision\" value=\"deny\" type=\"submit\">Deny</button>\n</form>",
        user = escape(&user.username),
        app = escape(client.name.as_deref().unwrap_or(&client.id)),
        hidden = hidden(p),
        ticket = escape(ticket),
    );
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Html(page("Allow access?", &body)),
    )
        .into_response()
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>body{{font-family:sans-serif;max-width:32em;margin:2em auto}}\
         label{{display:block;margin:.5em 0}}.error{{color:#b00}}</style></head>\
         <body><h1>{t}</h1>\n{body}\n</body></html>\n",
        t = escape(title)
    )
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `grant_type=authorization_code` at the token endpoint.
pub async fn exchange_code(
    state: &AppState,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, OAuthError> {
    let invalid = |why: &str| OAuthError::new("invalid_grant", why);
    let code = form
        .get("code")
        .ok_or_else(|| OAuthError::new("invalid_request", "code is missing"))?
        .clone();
    let (client, _) = oauth::authenticate(state, form, headers).await?;
    let key = crypto::sha256_b64url(code.as_bytes());
    // Taken, not read: a code works once, even when this exchange then fails.
    let stored = state
        .with_store(move |s, _| s.records().take("code", &key))
        .await
        .map_err(OAuthError::server)?;
    let stored: CodeGrant = stored
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| invalid("the code is not valid, expired or was already used"))?;
    if stored.client_id != client.id {
        return Err(invalid("the code was issued to another client"));
    }
    if form.get("redirect_uri") != Some(&stored.redirect_uri) {
        return Err(invalid(
            "redirect_uri differs from the authorization request",
        ));
    }
    let verifier = form
        .get("code_verifier")
        .ok_or_else(|| invalid("code_verifier is missing"))?;
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !well_formed || crypto::sha256_b64url(verifier.as_bytes()) != stored.code_challenge {
        return Err(invalid("code_verifier does not match the code_challenge"));
    }
    let scope = ScopeSet::parse(&stored.grant.scope);
    let refresh = if scope.contains(&Scope::OfflineAccess) || scope.contains(&Scope::OnlineAccess) {
        let token = crypto::random_handle(32);
        let key = crypto::sha256_b64url(token.as_bytes());
        let text = serde_json::to_string(&stored.grant).map_err(OAuthError::server)?;
        state
            .with_store(move |s, _| {
                s.records().put(
                    "refresh",
                    &key,
                    &text,
                    Some(tokens::now() as i64 + REFRESH_TOKEN_SECS as i64),
                )
            })
            .await
            .map_err(OAuthError::server)?;
        Some(token)
    } else {
        None
    };
    let with_id = scope.contains(&Scope::OpenId) && scope.contains(&Scope::FhirUser);
    oauth::issue_app_tokens(state, &client, &stored.grant, &scope, refresh, with_id).await
}
