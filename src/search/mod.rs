//! FHIR search: the parameter registry (SearchParameters from `conformance/`, compiled once),
//! index extraction on write, and parsing search requests into store queries.

pub mod child_welfare;
pub mod extract;
pub mod fhirpath;
pub mod parse;
pub mod registry;
pub mod values;

/// The parameter kinds, index values and query values search shares with storage.
pub use crate::store::index as model;
pub use registry::{ParamDef, SearchRegistry};
