//! Access tokens and id_tokens: JWTs signed with the server's RSA key (created at first start,
//! kept in the database, published at `jwks_uri`), and their verification by the resource
//! server, also for tokens of configured external issuers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::crypto::{self, KeyAlg};
use crate::error::{FhirError, FhirResult};
use crate::store::Records;

/// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 60;

/// The server's signing key.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The public JWK Set published at `jwks_uri`.
    pub jwks: Value,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    pem: String,
    jwk: Value,
}

impl SigningKey {
    /// The key kept in the database, created on first use. Two processes starting together on
    /// one database agree: only the first insert wins and both then read it.
    pub fn load_or_create(records: &dyn Records) -> FhirResult<SigningKey> {
        if records.get("signing-key", "current")?.is_none() {
            let generated = crypto::generate_key(KeyAlg::Rs256)?;
            let stored = StoredKey {
                kid: generated.kid,
                pem: generated.private_pem,
                jwk: generated.public_jwk,
            };
            let text = serde_json::to_string(&stored).map_err(FhirError::internal)?;
            records.insert("signing-key", "current", &text, None)?;
        }
        let text = records
            .get("signing-key", "current")?
            .ok_or_else(|| FhirError::Internal("the signing key vanished".into()))?;
        let stored: StoredKey = serde_json::from_str(&text).map_err(FhirError::internal)?;
        let encoding = crypto::encoding_key(KeyAlg::Rs256, &stored.pem)?;
        let jwk: Jwk = serde_json::from_value(stored.jwk.clone()).map_err(FhirError::internal)?;
        let decoding = DecodingKey::from_jwk(&jwk).map_err(FhirError::internal)?;
        Ok(SigningKey {
            kid: stored.kid,
            encoding,
            decoding,
            jwks: serde_json::json!({ "keys": [stored.jwk] }),
        })
    }

    /// Sign claims as an RS256 JWT carrying our `kid`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> FhirResult<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(FhirError::internal)
    }
}

/// The claims of an access token (ours, or an external issuer's with the same names).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience: the FHIR base.
    pub aud: String,
    /// Subject: the user, or the client for backend services.
    pub sub: String,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Token id (revocation is by `jti`).
    pub jti: String,
    /// The client.
    pub client_id: String,
    /// Granted scopes.
    pub scope: String,
    /// Patient context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// The user's FHIR resource (`Practitioner/1`, relative to the base).
    #[serde(default, rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// `Organization/ID` the requester acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// The client's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Purposes of use (ActReason codes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purpose: Vec<String>,
    /// The human behind a backend request (HL7 B2B `subject_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_name: Option<String>,
    /// Their role (HL7 B2B `subject_role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_role: Option<String>,
}

/// An external issuer whose tokens we accept (`--trust-issuer ISSUER=JWKS_URL`).
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    /// Its `iss`.
    pub issuer: String,
    /// Where its keys are published.
    pub jwks_url: String,
}

/// Fetched JWK Sets, kept as long as the publisher's `Cache-Control` allows.
#[derive(Default)]
pub struct JwksCache {
    entries: Mutex<HashMap<String, (JwkSet, Instant)>>,
}

/// How long a fetched JWK Set is kept when its response says nothing.
const DEFAULT_JWKS_TTL: Duration = Duration::from_secs(300);

impl JwksCache {
    /// The JWK Set at `url`: cached, or fetched with reqwest (`refresh` skips the cache, for a
    /// `kid` the cached set lacks: keys rotate).
    pub async fn get(
        &self,
        http: &reqwest::Client,
        url: &str,
        refresh: bool,
    ) -> Result<JwkSet, String> {
        if !refresh
            && let Some((set, until)) = self.entries.lock().get(url)
            && *until > Instant::now()
        {
            return Ok(set.clone());
        }
        let response = http
            .get(url)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("cannot fetch the JWK Set at {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "the JWK Set at {url} answered {}",
                response.status()
            ));
        }
        let ttl = cache_ttl(response.headers());
        let set: JwkSet = response
            .json()
            .await
            .map_err(|e| format!("the JWK Set at {url} is not a JWK Set: {e}"))?;
        if let Some(ttl) = ttl {
            self.entries
                .lock()
                .insert(url.to_string(), (set.clone(), Instant::now() + ttl));
        }
        Ok(set)
    }
}

/// From `Cache-Control`: `None` for `no-store`/`no-cache`, else `max-age` or the default.
fn cache_ttl(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let Some(value) = headers
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
    else {
        return Some(DEFAULT_JWKS_TTL);
    };
    let mut ttl = DEFAULT_JWKS_TTL;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return None;
        }
        if let Some(age) = lower.strip_prefix("max-age=") {
            ttl = Duration::from_secs(age.trim_matches('"').parse().unwrap_or(0));
        }
    }
    (!ttl.is_zero()).then_some(ttl)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verify an access token: signature by our key (or a trusted issuer's), `exp`/`nbf`, `iss`,
/// `aud` = the FHIR base. Revocation is checked by the caller against the database.
pub async fn verify_access_token(
    token: &str,
    ours: &SigningKey,
    issuer: &str,
    audience: &str,
    trusted: &[TrustedIssuer],
    cache: &JwksCache,
    http: &reqwest::Client,
) -> FhirResult<AccessClaims> {
    let invalid = |why: String| FhirError::Unauthorized {
        message: format!("the access token is not valid: {why}"),
        invalid_token: true,
    };
    let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
    let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|e| invalid(e.to_string()))?;
    let iss = unverified.get("iss").and_then(Value::as_str).unwrap_or("");
    let (key, alg, expected_iss) = if iss == issuer {
        if header.alg != Algorithm::RS256 || header.kid.as_deref() != Some(ours.kid.as_str()) {
            return Err(invalid("not signed with the server's key".into()));
        }
        (ours.decoding.clone(), Algorithm::RS256, issuer)
    } else if let Some(t) = trusted.iter().find(|t| t.issuer == iss) {
        let key = external_key(&header, &t.jwks_url, cache, http)
            .await
            .map_err(invalid)?;
        (key, header.alg, t.issuer.as_str())
    } else {
        return Err(invalid(format!("issuer `{iss}` is not trusted")));
    };
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_audience(&[audience]);
    validation.set_issuer(&[expected_iss]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<AccessClaims>(token, &key, &validation)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(data.claims)
}

/// The key of an external issuer's JWK Set named by the token's `kid`, of a type fitting `alg`.
async fn external_key(
    header: &Header,
    url: &str,
    cache: &JwksCache,
    http: &reqwest::Client,
) -> Result<DecodingKey, String> {
    if !matches!(
        header.alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
    ) {
        return Err(format!("algorithm {:?} is not accepted", header.alg));
    }
    let kid = header.kid.as_deref().ok_or("the token names no kid")?;
    let mut set = cache.get(http, url, false).await?;
    if set.find(kid).is_none() {
        set = cache.get(http, url, true).await?;
    }
    let jwk = select_key(&set, kid, header.alg)?;
    DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())
}

/// The one key of `set` whose `kid` is `kid` and whose type fits `alg` (SMART: zero or several
/// matches fail).
pub fn select_key<'a>(set: &'a JwkSet, kid: &str, alg: Algorithm) -> Result<&'a Jwk, String> {
    use jsonwebtoken::jwk::AlgorithmParameters;
    let fits = |jwk: &Jwk| {
        matches!(
            (&jwk.algorithm, alg),
            (
                AlgorithmParameters::RSA(_),
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512,
            ) | (
                AlgorithmParameters::EllipticCurve(_),
                Algorithm::ES256 | Algorithm::ES384
            )
        )
    };
    let mut matches = set
        .keys
        .iter()
        .filter(|k| k.common.key_id.as_deref() == Some(kid) && fits(k));
    match (matches.next(), matches.next()) {
        (Some(k), None) => Ok(k),
        (None, _) => Err(format!("no registered key has kid `{kid}` for {alg:?}")),
        (Some(_), Some(_)) => Err(format!("several registered keys have kid `{kid}`")),
    }
}
