//! Command line and environment (`FP_*`) configuration.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// foster-passport: a consent-scoped FHIR R4 gateway for foster youth health records.
#[derive(Debug, Parser)]
#[command(name = "foster-passport", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the FHIR server.
    Serve(ServeArgs),
}

/// Where the database lives (shared by every command).
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://PATH` (created if missing).
    #[arg(
        long,
        env = "FP_DATABASE",
        default_value = "sqlite://foster-passport.db"
    )]
    pub database: String,
}

/// `serve` options.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "FP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Public base URL of the FHIR endpoint (default: derived from the listen address).
    #[arg(long, env = "FP_BASE_URL")]
    pub base_url: Option<String>,
    /// Load the demo data set (idempotent).
    #[arg(long, env = "FP_DEMO")]
    pub demo: bool,
    /// PEM certificate chain: serve HTTPS.
    #[arg(long, env = "FP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "FP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "FP_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
}
