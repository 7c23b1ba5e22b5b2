//! HTTP glue: turning axum requests into [`crate::interactions::FhirRequest`]s, FHIR responses
//! into HTTP responses, and the request log and metrics middleware.

pub mod middleware;
pub mod request;
pub mod response;
