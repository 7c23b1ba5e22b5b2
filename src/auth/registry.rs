//! Registered clients and built-in users, kept as records in the database (the admin CLI writes
//! them; the authorization server reads them on every request, so a change applies at once).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{FhirError, FhirResult};
use crate::store::Records;

const CLIENT: &str = "client";
const USER: &str = "user";

/// What kind of party a client is (drives the consent rules of DESIGN.md section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Keeps the record (the county child welfare agency): sees everything, audited.
    Custodian,
    /// A Medi-Cal managed care plan.
    Plan,
    /// A county system other than the custodian.
    County,
    /// A provider's EHR.
    Provider,
    /// A caregiver's (resource family's) app.
    Caregiver,
    /// The youth's health passport app.
    PassportApp,
}

impl Role {
    /// The registered spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Custodian => "custodian",
            Role::Plan => "plan",
            Role::County => "county",
            Role::Provider => "provider",
            Role::Caregiver => "caregiver",
            Role::PassportApp => "passport-app",
        }
    }
}

/// A registered OAuth client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Client {
    /// `client_id`.
    pub id: String,
    /// Display name for the approval page.
    #[serde(default)]
    pub name: Option<String>,
    /// The most it may ever be granted (space-separated scopes).
    pub scope: String,
    /// Its JWK Set, registered by value.
    #[serde(default)]
    pub jwks: Option<Value>,
    /// Where its JWK Set is published.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// argon2 hash of its client secret.
    #[serde(default)]
    pub secret_hash: Option<String>,
    /// A public client (PKCE alone).
    #[serde(default)]
    pub public: bool,
    /// Redirect URIs, matched exactly.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// `Organization/ID` it acts for.
    #[serde(default)]
    pub organization: Option<String>,
    /// Its role.
    #[serde(default)]
    pub role: Option<Role>,
    /// Default purpose of use (HL7 v3 ActReason code such as `TREAT`).
    #[serde(default)]
    pub purpose: Option<String>,
    /// The secret its Subscription notifications are signed with (HMAC-SHA256).
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

impl Client {
    /// The client can prove who it is (a key or a secret).
    pub fn is_confidential(&self) -> bool {
        self.jwks.is_some() || self.jwks_uri.is_some() || self.secret_hash.is_some()
    }
}

/// A built-in user of the login page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    /// Login name.
    pub username: String,
    /// argon2 hash of the password.
    pub password_hash: String,
    /// `Patient/ID`, `RelatedPerson/ID`, `Practitioner/ID` or `Person/ID`.
    pub fhir_user: String,
    /// `Organization/ID` the user works for.
    #[serde(default)]
    pub organization: Option<String>,
}

fn decode<T: for<'de> Deserialize<'de>>(kind: &str, text: &str) -> FhirResult<T> {
    serde_json::from_str(text)
        .map_err(|e| FhirError::Internal(format!("a stored {kind} record is unreadable: {e}")))
}

fn encode<T: Serialize>(value: &T) -> FhirResult<String> {
    serde_json::to_string(value).map_err(FhirError::internal)
}

/// A client by id.
pub fn client(records: &dyn Records, id: &str) -> FhirResult<Option<Client>> {
    records
        .get(CLIENT, id)?
        .map(|t| decode(CLIENT, &t))
        .transpose()
}

/// Register or replace a client.
pub fn put_client(records: &dyn Records, client: &Client) -> FhirResult<()> {
    records.put(CLIENT, &client.id, &encode(client)?, None)
}

/// Every client.
pub fn clients(records: &dyn Records) -> FhirResult<Vec<Client>> {
    records
        .list(CLIENT)?
        .iter()
        .map(|(_, t)| decode(CLIENT, t))
        .collect()
}

/// Remove a client; `false` when it was not registered.
pub fn remove_client(records: &dyn Records, id: &str) -> FhirResult<bool> {
    records.remove(CLIENT, id)
}

/// A user by login name.
pub fn user(records: &dyn Records, username: &str) -> FhirResult<Option<User>> {
    records
        .get(USER, username)?
        .map(|t| decode(USER, &t))
        .transpose()
}

/// Add or replace a user.
pub fn put_user(records: &dyn Records, user: &User) -> FhirResult<()> {
    records.put(USER, &user.username, &encode(user)?, None)
}

/// Every user.
pub fn users(records: &dyn Records) -> FhirResult<Vec<User>> {
    records
        .list(USER)?
        .iter()
        .map(|(_, t)| decode(USER, t))
        .collect()
}

/// Remove a user; `false` when there was none.
pub fn remove_user(records: &dyn Records, username: &str) -> FhirResult<bool> {
    records.remove(USER, username)
}
