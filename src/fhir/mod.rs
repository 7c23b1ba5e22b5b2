//! FHIR R4 glue: parsing and checking bodies, ids and instants, Bundles and references.

pub mod bundle;
pub mod ids;
pub mod parse;
pub mod references;
pub mod structure;
pub mod summary;
