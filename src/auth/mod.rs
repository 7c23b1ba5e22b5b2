//! SMART on FHIR 2 authorization: the built-in authorization server (clients and users in the
//! database, OAuth endpoints, signed JWT tokens) and the bearer-token check every FHIR request
//! passes before the access layer decides what it may see.

pub mod authorize;
pub mod crypto;
pub mod oauth;
pub mod registry;
pub mod scopes;
pub mod server;
pub mod tokens;

use std::sync::Arc;

use axum::http::{HeaderMap, header};

use crate::access::Requester;
use crate::error::{FhirError, FhirResult};
use crate::state::AppState;
use crate::store::Records;
use tokens::AccessClaims;

/// The bearer token of a request, if it carries one.
pub fn bearer(headers: &HeaderMap) -> FhirResult<Option<&str>> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(FhirError::Unauthorized {
            message: "the Authorization header must be `Bearer <token>`".into(),
            invalid_token: true,
        }),
    }
}

/// Check a token's signature, issuer, audience and times (no database access).
pub async fn verify_signature(state: &AppState, token: &str) -> FhirResult<AccessClaims> {
    Ok(verified(state, token).await?.claims.clone())
}

/// A checked token and the requester it describes, from the cache of tokens already verified
/// (a signature check and a claims parse per request would dominate a read).
pub async fn verified(state: &AppState, token: &str) -> FhirResult<Arc<server::Verified>> {
    let auth = &state.auth;
    if let Some(hit) = auth.cached_token(token) {
        return Ok(hit);
    }
    let claims = tokens::verify_access_token(
        token,
        &auth.key,
        &auth.issuer,
        &auth.audience,
        &auth.trusted,
        &auth.jwks_cache,
        &auth.http,
    )
    .await?;
    let requester = Arc::new(Requester::from_claims(&claims, &auth.audience));
    let verified = Arc::new(server::Verified { claims, requester });
    auth.cache_token(token, verified.clone());
    Ok(verified)
}

/// Refuse a revoked token (run on the blocking pool, with the request's other store work).
pub fn check_not_revoked(records: &dyn Records, claims: &AccessClaims) -> FhirResult<()> {
    if records.get("revoked", &claims.jti)?.is_some() {
        return Err(FhirError::Unauthorized {
            message: "the access token was revoked".into(),
            invalid_token: true,
        });
    }
    Ok(())
}

/// A fully checked token: signature, claims and revocation.
pub async fn verify_bearer(state: &AppState, token: &str) -> FhirResult<AccessClaims> {
    let claims = verify_signature(state, token).await?;
    let checked = claims.clone();
    state
        .with_store(move |store, _| check_not_revoked(store.records(), &checked))
        .await?;
    Ok(claims)
}
