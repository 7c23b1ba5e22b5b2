//! The HTTP side: one place that builds every request, so that headers common to all of them
//! (content negotiation today, `Authorization` once access is token-protected) are added once.

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Body, Client, Method, Request, Response, Url};

use super::Result;

pub const FHIR_JSON: &str = "application/fhir+json";

/// A FHIR server under test: its base URL and the credentials every request carries.
pub struct Target {
    /// FHIR base without a trailing slash, e.g. `http://127.0.0.1:8080/fhir`.
    pub base: String,
    /// Sent as `Authorization` on every request when set; replaced when a token is renewed.
    authorization: std::sync::RwLock<Option<HeaderValue>>,
}

impl Target {
    pub fn new(base: &str, bearer_token: Option<&str>) -> Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        Url::parse(&base).map_err(|e| format!("bad FHIR base URL {base:?}: {e}"))?;
        let authorization = bearer_token.map(bearer).transpose()?;
        Ok(Self {
            base,
            authorization: std::sync::RwLock::new(authorization),
        })
    }

    /// Use a new bearer token from now on (short-lived backend tokens are renewed).
    pub fn set_token(&self, token: &str) -> Result<()> {
        let value = bearer(token)?;
        *self.authorization.write().expect("lock") = Some(value);
        Ok(())
    }

    /// `base` + `/` + `path`; the base itself (no trailing slash) for an empty `path`, as
    /// batch and transaction Bundles are posted to it.
    pub fn url(&self, path: &str) -> Url {
        let url = if path.is_empty() {
            Url::parse(&self.base)
        } else {
            Url::parse(&format!("{}/{}", self.base, path))
        };
        url.expect("base URL was validated")
    }

    /// The `Authorization` header value every request carries now, if any.
    pub fn authorization(&self) -> Option<HeaderValue> {
        self.authorization.read().expect("lock").clone()
    }

    /// TCP port of the server, for counting its connections.
    pub fn port(&self) -> Option<u16> {
        Url::parse(&self.base).ok()?.port_or_known_default()
    }

    /// A bodiless request with the common headers.
    pub fn request(&self, method: Method, url: Url) -> Request {
        let mut req = Request::new(method, url);
        let headers = req.headers_mut();
        headers.insert(ACCEPT, HeaderValue::from_static(FHIR_JSON));
        if let Some(auth) = self.authorization() {
            headers.insert(AUTHORIZATION, auth);
        }
        req
    }

    /// A request carrying a FHIR JSON body.
    pub fn request_with_body(&self, method: Method, url: Url, body: impl Into<Body>) -> Request {
        let mut req = self.request(method, url);
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        *req.body_mut() = Some(body.into());
        req
    }
}

fn bearer(token: &str) -> std::result::Result<HeaderValue, reqwest::header::InvalidHeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// An HTTP/1.1 client with keep-alive. A worker that sends its requests one after another keeps
/// exactly one connection open, so N workers with a client each hold N connections.
pub fn client(timeout: Duration, max_idle: usize) -> Result<Client> {
    Ok(Client::builder()
        .http1_only()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(max_idle)
        .pool_idle_timeout(Duration::from_secs(300))
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .build()?)
}

/// Read and discard the body so the connection can be reused, without collecting or parsing it.
pub async fn drain(mut resp: Response) -> reqwest::Result<()> {
    while resp.chunk().await?.is_some() {}
    Ok(())
}

/// The start of a response body, for error messages.
pub async fn snippet(resp: Response) -> String {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let mut end = body.len().min(600);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("HTTP {status}: {}", body[..end].trim())
}
