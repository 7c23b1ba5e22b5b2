//! Modules of the `foster-passport-bench` binary.

pub mod data;
pub mod http;
pub mod load;
pub mod report;
pub mod server;
pub mod sys;
pub mod wire;
pub mod workload;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;
