//! foster-passport: a FHIR R4 gateway keeping one portable, consent-scoped health record per
//! child or youth in the child welfare system.

pub mod access;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod config;
pub mod demo;
pub mod eligibility;
pub mod error;
pub mod fhir;
pub mod http;
pub mod interactions;
pub mod migrate;
pub mod operations;
pub mod routes;
pub mod search;
pub mod serve;
pub mod state;
pub mod store;
pub mod subscriptions;
pub mod validate;
