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
    /// Manage registered OAuth clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage the built-in login page's users.
    #[command(subcommand)]
    User(UserCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Create an EHR launch context for a patient and print its `launch` value.
    Launch(LaunchArgs),
    /// Get a backend-services access token (signs a client assertion with a keygen key pair)
    /// and print it.
    Token(TokenArgs),
    /// Generate a signing key pair: `PREFIX.pem` (private, PKCS#8) and `PREFIX.jwks.json`.
    Keygen(KeygenArgs),
    /// Import MEDS-style eligibility rows (CSV) as youth and their child welfare episodes.
    ImportEligibility(ImportEligibilityArgs),
    /// Copy a whole database (every version, the audit trail, clients and keys) into a new,
    /// empty one: `migrate --from sqlite://foster-passport.db --to postgres://USER@HOST/DB`.
    Migrate(MigrateArgs),
}

/// `migrate` options.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The database to copy (`sqlite://PATH` or `postgres://…`); it is only read.
    #[arg(long)]
    pub from: String,
    /// The new database (`postgres://…` or `sqlite://PATH`); it must be empty.
    #[arg(long)]
    pub to: String,
    /// The public FHIR base URL the data was served under (`serve --base-url`), so absolute
    /// references to it are indexed as local ones, as the server indexed them.
    #[arg(long, env = "FP_BASE_URL", default_value = "")]
    pub base_url: String,
}

/// `import-eligibility` options.
#[derive(Debug, Args)]
pub struct ImportEligibilityArgs {
    /// The CSV file: a header row naming cin, family_name, given_name, birth_date, aid_code,
    /// county, eligibility_start, eligibility_end; dates as YYYY-MM-DD; county as a MEDS
    /// (01–58) or FIPS (06xxx) code.
    pub file: std::path::PathBuf,
    /// The aid-code table (JSON, the shape of `conformance/aid-codes.json`, which is the
    /// default).
    #[arg(long)]
    pub aid_codes: Option<std::path::PathBuf>,
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArgs,
}

/// `client …`
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register (or replace) a client.
    Add(Box<ClientAddArgs>),
    /// List registered clients.
    List(DatabaseArgs),
    /// Remove a client.
    Remove {
        /// Its client_id.
        id: String,
        /// The database.
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// `client add` options.
#[derive(Debug, Args)]
pub struct ClientAddArgs {
    /// client_id.
    #[arg(long)]
    pub id: String,
    /// The most the client may ever be granted (space-separated SMART scopes).
    #[arg(long)]
    pub scope: String,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Its JWK Set, by value (a file).
    #[arg(long, conflicts_with = "jwks_uri")]
    pub jwks: Option<PathBuf>,
    /// Its JWK Set URL (fetched when needed, cached as its Cache-Control allows).
    #[arg(long)]
    pub jwks_uri: Option<String>,
    /// A client secret (stored hashed).
    #[arg(long)]
    pub secret: Option<String>,
    /// A public client (no credentials; PKCE alone).
    #[arg(long)]
    pub public: bool,
    /// Redirect URIs (exact match), repeatable.
    #[arg(long = "redirect-uri")]
    pub redirect_uris: Vec<String>,
    /// `Organization/ID` the client acts for.
    #[arg(long)]
    pub organization: Option<String>,
    /// Its role.
    #[arg(long, value_enum)]
    pub role: Option<crate::auth::registry::Role>,
    /// Default purpose of use (HL7 v3 ActReason code, e.g. TREAT).
    #[arg(long)]
    pub purpose: Option<String>,
    /// The secret its Subscription notifications are signed with (HMAC-SHA256 in the
    /// `X-Foster-Passport-Signature` header).
    #[arg(long)]
    pub webhook_secret: Option<String>,
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArgs,
}

/// `user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add (or replace) a user.
    Add(UserAddArgs),
    /// List users.
    List(DatabaseArgs),
    /// Remove a user.
    Remove {
        /// The login name.
        username: String,
        /// The database.
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// `user add` options.
#[derive(Debug, Args)]
pub struct UserAddArgs {
    /// Login name.
    #[arg(long)]
    pub username: String,
    /// Password (stored as an argon2 hash).
    #[arg(long)]
    pub password: String,
    /// The user's FHIR resource: Patient/ID, RelatedPerson/ID, Practitioner/ID or Person/ID.
    #[arg(long)]
    pub fhir_user: String,
    /// `Organization/ID` the user works for.
    #[arg(long)]
    pub organization: Option<String>,
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArgs,
}

/// `audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the AuditEvent hash chain; report the first broken link (exit status 1).
    Verify(DatabaseArgs),
}

/// `launch` options.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// The patient in context (logical id).
    #[arg(long)]
    pub patient: String,
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArgs,
}

/// `token` options.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The token endpoint (`token_endpoint` of `.well-known/smart-configuration`).
    #[arg(long)]
    pub token_url: String,
    /// The client's id.
    #[arg(long)]
    pub client_id: String,
    /// Key pair prefix, as written by `keygen`: `PREFIX.pem` and `PREFIX.jwks.json`.
    #[arg(long)]
    pub key: PathBuf,
    /// Scopes to ask for.
    #[arg(long, default_value = "system/*.rs")]
    pub scope: String,
}

/// `keygen` options.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Signing algorithm.
    #[arg(long, value_enum, ignore_case = true, default_value = "es384")]
    pub alg: crate::auth::crypto::KeyAlg,
    /// Output path prefix.
    #[arg(long)]
    pub out: PathBuf,
}

/// Where the database lives (shared by every command).
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://PATH` (created if missing) or `postgres://USER@HOST[:PORT]/DB`
    /// (the database must exist; its tables are created).
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
    /// Accept access tokens of an external issuer: `ISSUER=JWKS_URL` (repeatable).
    #[arg(long, env = "FP_TRUST_ISSUER", value_parser = parse_trusted_issuer, value_delimiter = ',')]
    pub trust_issuer: Vec<crate::auth::tokens::TrustedIssuer>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "FP_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How often the Subscription worker looks for changes to notify, in milliseconds.
    #[arg(long, env = "FP_SUBSCRIPTION_INTERVAL_MS", default_value_t = 1000)]
    pub subscription_interval_ms: u64,
    /// A PostgreSQL read replica (hot standby of `--database`) that serves searches; reads by
    /// id, history, operations and writes stay on the primary.
    #[arg(long, env = "FP_READ_DATABASE")]
    pub read_database: Option<String>,
    /// The most consenting patients a search names one by one in its consent criterion;
    /// beyond it the query finds them through their active privacy Consents (a join) and each
    /// match is decided in turn.
    #[arg(long, env = "FP_CONSENT_INLINE_PATIENTS", default_value_t = crate::access::DEFAULT_INLINE_PATIENTS)]
    pub consent_inline_patients: usize,
}

fn parse_trusted_issuer(text: &str) -> Result<crate::auth::tokens::TrustedIssuer, String> {
    let (issuer, jwks_url) = text.split_once('=').ok_or("expected ISSUER=JWKS_URL")?;
    if !jwks_url.starts_with("https://") && !jwks_url.starts_with("http://") {
        return Err("the JWKS URL must be http(s)".into());
    }
    Ok(crate::auth::tokens::TrustedIssuer {
        issuer: issuer.trim_end_matches('/').to_string(),
        jwks_url: jwks_url.to_string(),
    })
}
