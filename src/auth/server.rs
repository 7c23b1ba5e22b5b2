//! The authorization server's state: issuer, endpoint URLs, signing key, trusted external
//! issuers, the JWK Set cache and the token endpoint's failure limiter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::tokens::{AccessClaims, JwksCache, LEEWAY_SECS, SigningKey, TrustedIssuer};
use crate::access::Requester;

/// Verified tokens kept in memory; the map is emptied when it grows past this.
const TOKEN_CACHE_MAX: usize = 50_000;

/// A token whose signature and claims were checked, with the requester it describes.
#[derive(Debug)]
pub struct Verified {
    /// Its claims.
    pub claims: AccessClaims,
    /// Who it speaks for.
    pub requester: Arc<Requester>,
}

/// Failed token requests a client may make per window before it is refused for a while.
const MAX_FAILURES: u32 = 20;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Endpoint URLs (absolute).
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `authorization_endpoint`
    pub authorize: String,
    /// `token_endpoint` (also the `aud` of client assertions)
    pub token: String,
    /// `introspection_endpoint`
    pub introspect: String,
    /// `revocation_endpoint`
    pub revoke: String,
    /// `jwks_uri`
    pub jwks: String,
}

/// Everything the OAuth endpoints and the resource server's token check need.
pub struct AuthServer {
    /// `iss` of our tokens: the FHIR base, so `{issuer}/.well-known/openid-configuration`
    /// is served next to the SMART discovery document.
    pub issuer: String,
    /// The FHIR base (`aud` of access tokens).
    pub audience: String,
    /// Endpoint URLs.
    pub endpoints: Endpoints,
    /// Our signing key.
    pub key: SigningKey,
    /// External issuers whose tokens we accept.
    pub trusted: Vec<TrustedIssuer>,
    /// Fetched client and issuer JWK Sets.
    pub jwks_cache: JwksCache,
    /// For JWK Set fetches.
    pub http: reqwest::Client,
    failures: Mutex<HashMap<String, (Instant, u32)>>,
    verified: Mutex<HashMap<Box<str>, Arc<Verified>>>,
}

impl AuthServer {
    /// State for a server whose FHIR base is `base_url`.
    pub fn new(base_url: &str, key: SigningKey, trusted: Vec<TrustedIssuer>) -> AuthServer {
        let origin = base_url.strip_suffix("/fhir").unwrap_or(base_url);
        let at = |path: &str| format!("{origin}/auth/{path}");
        AuthServer {
            issuer: base_url.to_string(),
            audience: base_url.to_string(),
            endpoints: Endpoints {
                authorize: at("authorize"),
                token: at("token"),
                introspect: at("introspect"),
                revoke: at("revoke"),
                jwks: at("jwks"),
            },
            key,
            trusted,
            jwks_cache: JwksCache::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("reqwest client"),
            failures: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// A token verified before and not yet expired (revocation is checked per request).
    pub fn cached_token(&self, token: &str) -> Option<Arc<Verified>> {
        let hit = self.verified.lock().get(token).cloned()?;
        (hit.claims.exp + LEEWAY_SECS > super::tokens::now()).then_some(hit)
    }

    /// Remember a verified token.
    pub fn cache_token(&self, token: &str, verified: Arc<Verified>) {
        let mut map = self.verified.lock();
        if map.len() >= TOKEN_CACHE_MAX {
            map.clear();
        }
        map.insert(token.into(), verified);
    }

    /// The client has failed too often lately.
    pub fn is_limited(&self, client_id: &str) -> bool {
        let failures = self.failures.lock();
        failures
            .get(client_id)
            .is_some_and(|(since, n)| since.elapsed() < FAILURE_WINDOW && *n >= MAX_FAILURES)
    }

    /// Count a failed token request.
    pub fn record_failure(&self, client_id: &str) {
        let mut failures = self.failures.lock();
        if failures.len() > 10_000 {
            failures.retain(|_, (since, _)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = failures
            .entry(client_id.to_string())
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}
