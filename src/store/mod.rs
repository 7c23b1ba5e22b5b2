//! Storage: versioned resources, history and index rows, behind a small trait so the REST
//! layer never sees which database holds them.
//!
//! Calls are synchronous; async callers run them on the blocking pool
//! ([`crate::state::AppState::with_store`]). Every FHIR write happens inside one [`StoreTx`]:
//! the resource version, its history row and its index rows commit together or not at all.

pub mod index;
pub mod postgres;
pub mod query;
pub mod sql;
pub mod sqlite;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::error::{FhirError, FhirResult};

/// One stored version of a resource.
#[derive(Debug, Clone)]
pub struct Version {
    /// Resource type.
    pub rtype: String,
    /// Logical id.
    pub id: String,
    /// Version number, from 1.
    pub version: u64,
    /// When this version was written.
    pub last_updated: DateTime<Utc>,
    /// How it was written.
    pub method: WriteMethod,
    /// The full resource JSON (with `id` and `meta`); `None` for a deletion.
    pub body: Option<Arc<str>>,
}

impl Version {
    /// True when this version records a deletion.
    pub fn is_deleted(&self) -> bool {
        self.body.is_none()
    }
}

/// How a version came to be (history entries report it as `request.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMethod {
    /// Created by POST.
    Create,
    /// Created or replaced by PUT (or PATCH).
    Update,
    /// Deleted.
    Delete,
}

impl WriteMethod {
    /// The HTTP verb history reports.
    pub fn as_http(self) -> &'static str {
        match self {
            WriteMethod::Create => "POST",
            WriteMethod::Update => "PUT",
            WriteMethod::Delete => "DELETE",
        }
    }

    /// From the stored HTTP verb.
    pub fn from_http(s: &str) -> Self {
        match s {
            "POST" => WriteMethod::Create,
            "DELETE" => WriteMethod::Delete,
            _ => WriteMethod::Update,
        }
    }
}

/// One index value of one search parameter, written with the version it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    /// Search parameter code.
    pub param: String,
    /// The value.
    pub value: index::IndexValue,
    /// For a composite parameter's component rows, the combination they belong to.
    pub group: Option<u32>,
}

/// A version to write.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// Resource type.
    pub rtype: String,
    /// Logical id.
    pub id: String,
    /// Version number (current + 1, or 1).
    pub version: u64,
    /// Write time.
    pub last_updated: DateTime<Utc>,
    /// How it is written.
    pub method: WriteMethod,
    /// Full JSON, `None` to delete.
    pub body: Option<String>,
    /// Index rows for the new content (empty for a deletion).
    pub index: Vec<IndexRow>,
    /// The id of the Patient whose compartment the resource belongs to (`""` for shared
    /// resources such as an Organization): the distribution key of a sharded PostgreSQL
    /// deployment. Fixed by the first version; later ones keep it.
    pub compartment: String,
}

/// Which history to list.
#[derive(Debug, Clone)]
pub enum HistoryScope {
    /// Every resource except the audit trail, which grows with every request and is read as
    /// `AuditEvent` history and search instead.
    System,
    /// Every resource of one type.
    Type(String),
    /// One resource.
    Instance(String, String),
}

/// A page request over history, newest first.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    /// Which history.
    pub scope: HistoryScope,
    /// Only versions written at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only versions strictly older (by write sequence) than this cursor.
    pub before_seq: Option<i64>,
    /// Page size.
    pub count: usize,
}

/// One page of history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// Versions with their global write sequence, newest first.
    pub entries: Vec<(i64, Version)>,
    /// How many versions match the query ignoring paging.
    pub total: u64,
}

/// Read access, shared by pooled readers and open write transactions.
pub trait Reader {
    /// The current version of a resource (a deletion if it was deleted), if it ever existed.
    fn current(&mut self, rtype: &str, id: &str) -> FhirResult<Option<Version>>;
    /// A specific version.
    fn version(&mut self, rtype: &str, id: &str, version: u64) -> FhirResult<Option<Version>>;
    /// A page of history.
    fn history(&mut self, query: &HistoryQuery) -> FhirResult<HistoryPage>;
    /// One page of current, non-deleted resources matching a query.
    fn search(&mut self, query: &query::Query) -> FhirResult<query::Page>;
    /// Targets (`type`, `id`) that the sources reference through `param` (any reference
    /// parameter when `None`), limited to `target_type` when given (`_include`).
    fn outgoing(
        &mut self,
        sources: &[(String, String)],
        param: Option<&str>,
        target_type: Option<&str>,
    ) -> FhirResult<Vec<(String, String)>>;
    /// A number that grows whenever any resource of these types is written (the newest history
    /// sequence among them; 0 when none): caches of derived data compare it to stay fresh,
    /// also across processes sharing the database.
    fn last_change(&mut self, rtypes: &[&str]) -> FhirResult<i64>;
    /// The body of the most recently written version of any resource of `rtype` (`None` when
    /// there is none, or it was a deletion): the audit chain's head.
    fn newest_body(&mut self, rtype: &str) -> FhirResult<Option<String>>;
    /// Up to `count` versions of any resource (the audit trail too) written after the write
    /// sequence `after_seq`, oldest first, with their sequence: what `migrate` copies.
    fn versions_after(&mut self, after_seq: i64, count: usize) -> FhirResult<Vec<(i64, Version)>>;
    /// Resources of `source_type` that reference any target through `param` (any reference
    /// parameter when `None`) (`_revinclude`).
    fn incoming(
        &mut self,
        source_type: &str,
        param: Option<&str>,
        targets: &[(String, String)],
    ) -> FhirResult<Vec<(String, String)>>;
}

/// An open write transaction. Dropping it without [`StoreTx::commit`] rolls back.
pub trait StoreTx: Reader {
    /// Write a new version (and replace the resource's index rows).
    fn put(&mut self, version: NewVersion) -> FhirResult<Version>;
    /// Commit everything written.
    fn commit(self: Box<Self>) -> FhirResult<()>;
}

/// A database.
pub trait Store: Send + Sync {
    /// A reader (pooled connection).
    fn reader(&self) -> FhirResult<Box<dyn Reader + '_>>;
    /// A reader for searches: a read replica's connection where one is configured (it may lag
    /// the primary), else [`Store::reader`].
    fn search_reader(&self) -> FhirResult<Box<dyn Reader + '_>> {
        self.reader()
    }
    /// Start a write transaction (serialised with other writers).
    fn begin(&self) -> FhirResult<Box<dyn StoreTx + '_>>;
    /// Check the database answers.
    fn ping(&self) -> FhirResult<()>;
    /// The authorization server's small records (see [`Records`]).
    fn records(&self) -> &dyn Records;
}

/// Small JSON records the authorization server keeps under (kind, key): clients, users,
/// signing keys, used assertion `jti`s, codes, refresh tokens, revocations, launches. A record
/// past its `expires` time (seconds since the epoch) is treated as absent. Every call is its
/// own transaction, so `insert` and `take` are atomic across processes sharing the database.
pub trait Records: Send + Sync {
    /// Store a record unless a live one exists under the key; `false` when one did.
    fn insert(&self, kind: &str, key: &str, value: &str, expires: Option<i64>) -> FhirResult<bool>;
    /// Store or replace a record.
    fn put(&self, kind: &str, key: &str, value: &str, expires: Option<i64>) -> FhirResult<()>;
    /// A live record.
    fn get(&self, kind: &str, key: &str) -> FhirResult<Option<String>>;
    /// Remove and return a live record (single-use codes).
    fn take(&self, kind: &str, key: &str) -> FhirResult<Option<String>>;
    /// Remove a record; `false` when there was none.
    fn remove(&self, kind: &str, key: &str) -> FhirResult<bool>;
    /// Every live record of a kind, by key.
    fn list(&self, kind: &str) -> FhirResult<Vec<(String, String)>>;
    /// Every live record of every kind: what `migrate` copies.
    fn all(&self) -> FhirResult<Vec<Record>>;
}

/// One of the [`Records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: String,
    pub key: String,
    pub value: String,
    /// Seconds since the epoch; `None` = never.
    pub expires: Option<i64>,
}

/// Open the store a `--database` URL names, with searches served by the replica `read_url`
/// names (PostgreSQL only).
pub fn open_with_replica(url: &str, read_url: Option<&str>) -> FhirResult<Arc<dyn Store>> {
    let Some(read_url) = read_url else {
        return open(url);
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        || !(read_url.starts_with("postgres://") || read_url.starts_with("postgresql://"))
    {
        return Err(FhirError::bad_request(
            "a read database needs PostgreSQL for both --database and --read-database",
        ));
    }
    Ok(Arc::new(
        postgres::PgStore::open(url)?.with_replica(read_url)?,
    ))
}

/// Open the store a `--database` URL names.
pub fn open(url: &str) -> FhirResult<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(sqlite::SqliteStore::open(path)?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::PgStore::open(url)?));
    }
    Err(FhirError::bad_request(format!(
        "unsupported database URL `{url}`: expected sqlite://PATH or postgres://USER@HOST/DB"
    )))
}
