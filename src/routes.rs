//! Every route in one table.
//!
//! FHIR paths all go to one handler that parses them with [`Target::parse`] — the same parser
//! that reads Bundle entry URLs, so a batch entry reaches exactly what the HTTP request would.
//! Layers, outermost first: request log and metrics → handler.

use axum::Router;
use axum::body::Body as HttpBody;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};

use std::sync::Arc;

use crate::access::Access;
use crate::audit::AuditRecord;
use crate::auth::{self, authorize, oauth};
use crate::error::{FhirError, FhirResult};
use crate::http::request::{self, BodyKind};
use crate::http::{middleware, response};
use crate::interactions::{self, Body, FhirRequest, Target, batch, transaction};
use crate::state::AppState;

/// Every path the router serves, with its handlers. The router is built from this table alone,
/// so a test can walk every route (`tests/access_routes.rs` does, to prove each one passes the
/// access layer).
fn table() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/healthz", get(healthz)),
        ("/metrics", get(metrics)),
        (
            "/fhir/.well-known/smart-configuration",
            get(oauth::smart_configuration),
        ),
        (
            "/fhir/.well-known/openid-configuration",
            get(oauth::openid_configuration),
        ),
        (
            "/auth/authorize",
            get(authorize::authorize).post(authorize::authorize),
        ),
        ("/auth/jwks", get(oauth::jwks)),
        ("/auth/token", post(oauth::token)),
        ("/auth/introspect", post(oauth::introspect)),
        ("/auth/revoke", post(oauth::revoke)),
        ("/fhir", any(fhir)),
        ("/fhir/", any(fhir)),
        ("/fhir/{*path}", any(fhir)),
    ]
}

/// The paths of every route, as the router matches them.
pub fn paths() -> Vec<&'static str> {
    table().into_iter().map(|(path, _)| path).collect()
}

/// Build the application router.
pub fn app(state: AppState) -> Router {
    table()
        .into_iter()
        .fold(Router::new(), |router, (path, handlers)| {
            router.route(path, handlers)
        })
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        // Bearer tokens, never cookies: any origin may call, as browser SMART apps must.
        .layer(tower_http::cors::CorsLayer::permissive())
        .layer(axum::middleware::from_fn(middleware::log_and_measure))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.with_store(|store, _| store.ping()).await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    metrics::gauge!("audit_events_pending").set(state.audit.pending() as f64);
    let text = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}

async fn not_found(uri: Uri) -> Response {
    FhirError::NotFound(format!("no route for {}", uri.path())).into_response()
}

async fn fhir(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: HttpBody,
) -> Response {
    match handle(&state, method, &uri, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: &AppState,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: HttpBody,
) -> FhirResult<Response> {
    let path = uri.path().strip_prefix("/fhir").unwrap_or("");
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    let target = Target::parse(path)?;
    // Every FHIR endpoint needs a token except the CapabilityStatement.
    let public = target == Target::Metadata && matches!(method, Method::GET | Method::HEAD);
    let claims = if public {
        None
    } else {
        let token = auth::bearer(headers)?.ok_or_else(|| FhirError::Unauthorized {
            message: "this endpoint needs a bearer access token".into(),
            invalid_token: false,
        })?;
        Some(auth::verified(state, token).await?)
    };
    let access = Arc::new(match &claims {
        Some(v) => Access::new(v.requester.clone()),
        None => Access::anonymous(),
    });
    let mut query: Vec<(String, String)> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    request::check_accept(headers, &query)?;
    let conditions = request::conditions(headers)?;
    let kind = request::body_kind(&method, &target);
    let (body, form) = if kind == BodyKind::None {
        (None, vec![])
    } else {
        let bytes = request::read_body(headers, body, state.max_body_bytes).await?;
        request::parse_body(kind, headers, &bytes)?
    };
    query.extend(form);
    let audit = claims.as_ref().map(|v| {
        let (interaction, action) = audit_kind(&method, &target);
        let target_ref = match &target {
            Target::Instance(t, id)
            | Target::InstanceHistory(t, id)
            | Target::Version(t, id, _)
            | Target::InstanceOperation(t, id, _) => Some(format!("{t}/{id}")),
            _ => None,
        };
        (v.requester.clone(), interaction, action, target_ref)
    });
    let audit_query = match uri.query() {
        Some(q) => format!("{} {}?{q}", method, uri.path()),
        None => format!("{} {}", method, uri.path()),
    };
    let decisions = access.clone();
    let req = FhirRequest {
        method,
        target,
        query,
        conditions,
        body,
        access,
    };
    let base_url = state.ctx.base_url.clone();
    let response = state
        .with_store(move |store, ctx| {
            if let Some(verified) = &claims {
                auth::check_not_revoked(store.records(), &verified.claims)?;
            }
            if req.method == Method::POST && req.target == Target::System {
                return bundle_interaction(ctx, store, &req);
            }
            if interactions::is_read(&req) {
                let mut reader = if interactions::is_search(&req) {
                    store.search_reader()?
                } else {
                    store.reader()?
                };
                return interactions::execute_read(ctx, reader.as_mut(), &req);
            }
            let mut tx = store.begin()?;
            let response = interactions::execute_write(ctx, tx.as_mut(), req)?;
            tx.commit()?;
            Ok(response)
        })
        .await;
    let trail = decisions.trail();
    let response = response.map(|mut r| {
        if trail.broke_glass {
            mark_broken_glass(&mut r);
        }
        r
    });
    let Some((requester, interaction, action, target)) = audit else {
        return Ok(response::to_http(&base_url, response?));
    };
    // Every request that reached the data is audited: disclosures with what they disclosed,
    // denials and failures with what was asked.
    let (status, body, result) = match response {
        Ok(mut r) => {
            let body = match r.body.take() {
                Some(Body::Json(v)) => Some(Arc::<str>::from(v.to_string())),
                Some(Body::Stored(text)) => Some(text),
                None => None,
            };
            r.body = body.clone().map(Body::Stored);
            (r.status.as_u16(), body, Ok(r))
        }
        Err(e) => (e.status().as_u16(), None, Err(e)),
    };
    state
        .audit
        .record(AuditRecord {
            requester,
            interaction,
            action,
            query: audit_query,
            status,
            target,
            body,
            trail,
            at: chrono::Utc::now(),
        })
        .await;
    Ok(response::to_http(&base_url, result?))
}

/// Tag a response released through break-the-glass (`meta.security` v3-ActReason `BTG` on the
/// resource, or on the Bundle that carries it), so the receiving system knows how it came.
fn mark_broken_glass(r: &mut interactions::FhirResponse) {
    let mut value = match r.body.take() {
        Some(Body::Json(v)) => v,
        Some(Body::Stored(text)) => match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => {
                r.body = Some(Body::Stored(text));
                return;
            }
        },
        None => return,
    };
    if let Some(obj) = value.as_object_mut() {
        let meta = obj.entry("meta").or_insert_with(|| serde_json::json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let security = meta
                .entry("security")
                .or_insert_with(|| serde_json::json!([]));
            if let Some(list) = security.as_array_mut() {
                list.push(crate::access::break_glass_label());
            }
        }
    }
    r.body = Some(Body::Json(value));
}

/// The R4 restful-interaction code and the BALP action of a request.
fn audit_kind(method: &Method, target: &Target) -> (&'static str, &'static str) {
    match (method, target) {
        (&Method::GET | &Method::HEAD, Target::Instance(..)) => ("read", "R"),
        (&Method::GET | &Method::HEAD, Target::Version(..)) => ("vread", "R"),
        (&Method::GET | &Method::HEAD, Target::InstanceHistory(..)) => ("history-instance", "R"),
        (&Method::GET | &Method::HEAD, Target::TypeHistory(_)) => ("history-type", "R"),
        (&Method::GET | &Method::HEAD, Target::SystemHistory) => ("history-system", "R"),
        (_, Target::TypeOperation(..) | Target::InstanceOperation(..)) => ("operation", "E"),
        (&Method::GET | &Method::HEAD, _) | (&Method::POST, Target::TypeSearch(_)) => {
            ("search-type", "E")
        }
        (&Method::POST, Target::System) => ("transaction", "E"),
        (&Method::POST, _) => ("create", "C"),
        (&Method::PUT, _) => ("update", "U"),
        (&Method::PATCH, _) => ("patch", "U"),
        (&Method::DELETE, _) => ("delete", "D"),
        _ => ("operation", "E"),
    }
}

fn bundle_interaction(
    ctx: &interactions::Ctx,
    store: &dyn crate::store::Store,
    req: &FhirRequest,
) -> FhirResult<interactions::FhirResponse> {
    let bundle = req
        .body
        .as_ref()
        .ok_or_else(|| FhirError::bad_request("POST to the base needs a Bundle"))?;
    if crate::fhir::parse::resource_type(bundle) != "Bundle" {
        return Err(FhirError::bad_value(
            "invalid",
            "POST to the base needs a Bundle",
            "resourceType",
        ));
    }
    match bundle.get("type").and_then(|t| t.as_str()) {
        Some("batch") => batch::batch(ctx, store, bundle, &req.conditions, &req.access),
        Some("transaction") => {
            transaction::transaction(ctx, store, bundle, &req.conditions, &req.access)
        }
        other => Err(FhirError::bad_value(
            "value",
            format!(
                "Bundle.type must be batch or transaction, not {}",
                other.unwrap_or("(missing)")
            ),
            "Bundle.type",
        )),
    }
}
