//! The one error vocabulary of the server and its single mapping to
//! (HTTP status, OperationOutcome issue code, diagnostics).
//!
//! Handlers and interactions return [`FhirError`]; the same [`FhirError::outcome`] renders a
//! top-level error response and a failed Bundle entry, so a batch entry fails exactly like the
//! single request would. Internal errors never leak details to the client: they are logged
//! under the request span and answered with a generic message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An error that becomes an OperationOutcome.
#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    /// The request is malformed (400, issue `invalid` or a more specific code).
    #[error("{message}")]
    BadRequest {
        /// OperationOutcome issue code (`invalid`, `structure`, `value`, `required`, …).
        code: &'static str,
        /// What is wrong, for the client.
        message: String,
        /// FHIRPath-like locations of the problems, when known.
        expression: Vec<String>,
    },
    /// Several structural problems found in one body (400).
    #[error("{} problems in the resource", .0.len())]
    Invalid(Vec<Issue>),
    /// No usable bearer token (401 with `WWW-Authenticate`); `Some` text when a token was
    /// presented and refused (`error="invalid_token"`).
    #[error("{message}")]
    Unauthorized {
        /// Why, for the client.
        message: String,
        /// A token was presented.
        invalid_token: bool,
    },
    /// The token's scopes do not allow the interaction (403).
    #[error("{0}")]
    Forbidden(String),
    /// Unknown resource type, id or route (404).
    #[error("{0}")]
    NotFound(String),
    /// The resource was deleted (410).
    #[error("{0}")]
    Gone(String),
    /// Method not allowed on this route (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Version conflict or conditional ambiguity (412).
    #[error("{0}")]
    PreconditionFailed(String),
    /// Conflict with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than the configured limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The Content-Type is not a FHIR JSON type (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The `Accept` header asks for a format we do not produce (406).
    #[error("{0}")]
    NotAcceptable(String),
    /// The request is well-formed but breaks a business rule (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The resource fails one of our profiles it claims (422), one issue per element.
    #[error("the resource fails its profile: {}", issue_list(.0))]
    ProfileInvalid(Vec<Issue>),
    /// The database is unreachable (503).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: logged, answered with a generic 500.
    #[error("internal error: {0}")]
    Internal(String),
}

/// One issue of an OperationOutcome.
#[derive(Debug, Clone)]
pub struct Issue {
    /// `error`, `warning` or `information`.
    pub severity: &'static str,
    /// Issue type code.
    pub code: &'static str,
    /// Human-readable text.
    pub diagnostics: String,
    /// FHIRPath-like location.
    pub expression: Option<String>,
}

impl Issue {
    /// An `error` issue.
    pub fn error(code: &'static str, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: "error",
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    /// Attach a location.
    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression = Some(expression.into());
        self
    }

    fn to_json(&self) -> Value {
        let mut issue = json!({
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        });
        if let Some(expr) = &self.expression {
            issue["expression"] = json!([expr]);
        }
        issue
    }
}

/// `path: text; path: text` for logs and start-up errors.
fn issue_list(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| match &i.expression {
            Some(at) if !i.diagnostics.starts_with(at.as_str()) => {
                format!("{at}: {}", i.diagnostics)
            }
            _ => i.diagnostics.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Shorthand result type.
pub type FhirResult<T> = Result<T, FhirError>;

impl FhirError {
    /// A 400 with issue code `invalid`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        FhirError::BadRequest {
            code: "invalid",
            message: message.into(),
            expression: vec![],
        }
    }

    /// A 400 with a specific issue code and location.
    pub fn bad_value(
        code: &'static str,
        message: impl Into<String>,
        at: impl Into<String>,
    ) -> Self {
        FhirError::BadRequest {
            code,
            message: message.into(),
            expression: vec![at.into()],
        }
    }

    /// A 500 whose cause is logged, never shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        FhirError::Internal(cause.to_string())
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            FhirError::BadRequest { .. } | FhirError::Invalid(_) => StatusCode::BAD_REQUEST,
            FhirError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            FhirError::Forbidden(_) => StatusCode::FORBIDDEN,
            FhirError::NotFound(_) => StatusCode::NOT_FOUND,
            FhirError::Gone(_) => StatusCode::GONE,
            FhirError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            FhirError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            FhirError::Conflict(_) => StatusCode::CONFLICT,
            FhirError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            FhirError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            FhirError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            FhirError::Unprocessable(_) | FhirError::ProfileInvalid(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            FhirError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            FhirError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The issues this error reports.
    pub fn issues(&self) -> Vec<Issue> {
        let simple = |code: &'static str, text: &str| vec![Issue::error(code, text)];
        match self {
            FhirError::BadRequest {
                code,
                message,
                expression,
            } => {
                let mut issue = Issue::error(code, message.clone());
                if let Some(first) = expression.first() {
                    issue = issue.at(first.clone());
                }
                vec![issue]
            }
            FhirError::Invalid(issues) | FhirError::ProfileInvalid(issues) => issues.clone(),
            FhirError::Unauthorized { message, .. } => simple("login", message),
            FhirError::Forbidden(m) => simple("forbidden", m),
            FhirError::NotFound(m) => simple("not-found", m),
            FhirError::Gone(m) => simple("deleted", m),
            FhirError::MethodNotAllowed(m) => simple("not-supported", m),
            FhirError::PreconditionFailed(m) | FhirError::Conflict(m) => simple("conflict", m),
            FhirError::PayloadTooLarge(m) => simple("too-costly", m),
            FhirError::UnsupportedMediaType(m) | FhirError::NotAcceptable(m) => {
                simple("not-supported", m)
            }
            FhirError::Unprocessable(m) => simple("processing", m),
            FhirError::Unavailable(_) => {
                simple("transient", "the database is unavailable; retry later")
            }
            FhirError::Internal(_) => simple("exception", "internal server error"),
        }
    }

    /// The OperationOutcome resource for this error.
    pub fn outcome(&self) -> Value {
        operation_outcome(&self.issues())
    }
}

/// Build an OperationOutcome from issues.
pub fn operation_outcome(issues: &[Issue]) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": issues.iter().map(Issue::to_json).collect::<Vec<_>>(),
    })
}

/// Marker put in response extensions so the logging middleware can log the cause.
#[derive(Clone, Debug)]
pub struct LoggedError {
    /// The status answered.
    pub status: StatusCode,
    /// The full message, including internal causes.
    pub message: String,
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = self.outcome();
        let mut response = crate::http::response::fhir_json(status, &body);
        let challenge = match &self {
            FhirError::Unauthorized {
                invalid_token: false,
                ..
            } => Some("Bearer"),
            FhirError::Unauthorized { .. } => Some("Bearer error=\"invalid_token\""),
            FhirError::Forbidden(_) => Some("Bearer error=\"insufficient_scope\""),
            _ => None,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(challenge),
            );
        }
        response.extensions_mut().insert(LoggedError {
            status,
            message: self.to_string(),
        });
        response
    }
}

impl From<rusqlite::Error> for FhirError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(code, _)
                if matches!(
                    code.code,
                    rusqlite::ErrorCode::CannotOpen
                        | rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::NotADatabase
                ) =>
            {
                FhirError::Unavailable(e.to_string())
            }
            _ => FhirError::Internal(e.to_string()),
        }
    }
}
