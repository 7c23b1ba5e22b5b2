//! The embedded default store: SQLite in WAL mode with `synchronous=FULL`, so readers never
//! wait for the writer and an acknowledged write survives a crash.
//!
//! One writer connection (FHIR writes are serialised by `BEGIN IMMEDIATE`) and a pool of reader
//! connections. A resource row points at its current history row, so every version is written
//! once.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use parking_lot::{Mutex, MutexGuard};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};

mod search;

use super::query::{Page, Query};
use super::{
    HistoryPage, HistoryQuery, HistoryScope, NewVersion, Reader, Record, Records, Store, StoreTx,
    Version, WriteMethod,
};
use crate::error::{FhirError, FhirResult};

/// Migrations, applied in order; the `schema_version` table records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE resource_history (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    rtype        TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL, -- milliseconds since the epoch
    method       TEXT    NOT NULL,
    body         TEXT,             -- NULL for a deletion
    UNIQUE (rtype, id, version)
);
CREATE INDEX resource_history_by_type ON resource_history (rtype, seq);
CREATE INDEX resource_history_by_time ON resource_history (last_updated);
-- One row per logical resource; rid keys its index rows and gives the insertion order.
CREATE TABLE resources (
    rid          INTEGER PRIMARY KEY AUTOINCREMENT,
    rtype        TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    version      INTEGER NOT NULL,
    deleted      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    UNIQUE (rtype, id)
);
CREATE TABLE idx_string (rid INTEGER NOT NULL, grp INTEGER, rtype TEXT NOT NULL, param TEXT NOT NULL,
    norm TEXT NOT NULL, exact TEXT NOT NULL);
CREATE INDEX idx_string_lookup ON idx_string (rtype, param, norm);
CREATE INDEX idx_string_exact ON idx_string (rtype, param, exact);
CREATE INDEX idx_string_rid ON idx_string (rid);
CREATE TABLE idx_token (rid INTEGER NOT NULL, grp INTEGER, rtype TEXT NOT NULL, param TEXT NOT NULL,
    system TEXT, code TEXT, text TEXT, of_type TEXT);
CREATE INDEX idx_token_lookup ON idx_token (rtype, param, code, system);
CREATE INDEX idx_token_text ON idx_token (rtype, param, text);
CREATE INDEX idx_token_rid ON idx_token (rid);
CREATE TABLE idx_reference (rid INTEGER NOT NULL, grp INTEGER, rtype TEXT NOT NULL, param TEXT NOT NULL,
    target_type TEXT, target_id TEXT, url TEXT NOT NULL);
CREATE INDEX idx_reference_lookup ON idx_reference (rtype, param, target_id, target_type);
CREATE INDEX idx_reference_target ON idx_reference (target_type, target_id);
CREATE INDEX idx_reference_url ON idx_reference (rtype, param, url);
CREATE INDEX idx_reference_rid ON idx_reference (rid);
CREATE TABLE idx_date (rid INTEGER NOT NULL, grp INTEGER, rtype TEXT NOT NULL, param TEXT NOT NULL,
    low INTEGER NOT NULL, high INTEGER NOT NULL);
CREATE INDEX idx_date_low ON idx_date (rtype, param, low);
CREATE INDEX idx_date_high ON idx_date (rtype, param, high);
CREATE INDEX idx_date_rid ON idx_date (rid);
CREATE TABLE idx_number (rid INTEGER NOT NULL, grp INTEGER, rtype TEXT NOT NULL, param TEXT NOT NULL,
    value REAL NOT NULL);
CREATE INDEX idx_number_lookup ON idx_number (rtype, param, value);
CREATE INDEX idx_number_rid ON idx_number (rid);
CREATE TABLE idx_quantity (rid INTEGER NOT NULL, grp INTEGER, rtype TEXT NOT NULL, param TEXT NOT NULL,
    value REAL NOT NULL, system TEXT, code TEXT, unit TEXT);
CREATE INDEX idx_quantity_lookup ON idx_quantity (rtype, param, value);
CREATE INDEX idx_quantity_rid ON idx_quantity (rid);
CREATE TABLE idx_uri (rid INTEGER NOT NULL, grp INTEGER, rtype TEXT NOT NULL, param TEXT NOT NULL,
    uri TEXT NOT NULL);
CREATE INDEX idx_uri_lookup ON idx_uri (rtype, param, uri);
CREATE INDEX idx_uri_rid ON idx_uri (rid);
"#,
    r#"
-- Instance history, newest first, without walking the type's whole history.
CREATE INDEX resource_history_by_instance ON resource_history (rtype, id, seq);
"#,
    r#"
-- The authorization server's records (clients, users, keys, jtis, codes, tokens, launches).
CREATE TABLE records (
    kind    TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    expires INTEGER, -- seconds since the epoch; NULL = never
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE INDEX records_expiry ON records (kind, expires) WHERE expires IS NOT NULL;
"#,
];

/// Every index table (an update or deletion clears the resource's rows from each).
const INDEX_TABLES: &[&str] = &[
    "idx_string",
    "idx_token",
    "idx_reference",
    "idx_date",
    "idx_number",
    "idx_quantity",
    "idx_uri",
];

const READER_POOL_MAX: usize = 16;

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    path: String,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl SqliteStore {
    /// Open (creating if missing) the database at `path` and run pending migrations.
    pub fn open(path: &str) -> FhirResult<Self> {
        if let Some(parent) = Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| FhirError::Unavailable(format!("cannot create {parent:?}: {e}")))?;
        }
        let writer = open_connection(path, false)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        migrate(&writer)?;
        Ok(SqliteStore {
            path: path.to_string(),
            writer: Mutex::new(writer),
            readers: Mutex::new(vec![]),
        })
    }

    fn take_reader(&self) -> FhirResult<PooledReader<'_>> {
        let conn = match self.readers.lock().pop() {
            Some(c) => c,
            None => open_connection(&self.path, true)?,
        };
        Ok(PooledReader {
            store: self,
            conn: Some(conn),
        })
    }
}

fn open_connection(path: &str, read_only: bool) -> FhirResult<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| FhirError::Unavailable(format!("cannot open {path}: {e}")))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Plans must not depend on bound values: otherwise SQLite marks a statement whose plan
    // looked at one (a `LIMIT ?`, say) expired at every new binding and parses it again on
    // every run, which for a consent-narrowed search cost more than running it.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &Connection) -> FhirResult<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let done: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; INSERT INTO schema_version (version) VALUES ({}); COMMIT;",
            i + 1
        ))?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn reader(&self) -> FhirResult<Box<dyn Reader + '_>> {
        Ok(Box::new(self.take_reader()?))
    }

    fn begin(&self) -> FhirResult<Box<dyn StoreTx + '_>> {
        let conn = self.writer.lock();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Box::new(SqliteTx { conn, open: true }))
    }

    fn records(&self) -> &dyn Records {
        self
    }

    fn ping(&self) -> FhirResult<()> {
        if !Path::new(&self.path).exists() {
            return Err(FhirError::Unavailable(format!(
                "database file {} is missing",
                self.path
            )));
        }
        let reader = self.take_reader()?;
        let conn = reader.conn.as_ref().expect("reader holds a connection");
        conn.query_row("SELECT COUNT(*) FROM schema_version", [], |r| {
            r.get::<_, i64>(0)
        })?;
        Ok(())
    }
}

fn now_secs() -> i64 {
    Utc::now().timestamp()
}

impl SqliteStore {
    /// Runs `f` on a reader connection.
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> FhirResult<T>) -> FhirResult<T> {
        let reader = self.take_reader()?;
        f(reader.conn.as_ref().expect("reader holds a connection"))
    }
}

impl Records for SqliteStore {
    fn insert(&self, kind: &str, key: &str, value: &str, expires: Option<i64>) -> FhirResult<bool> {
        let conn = self.writer.lock();
        let now = now_secs();
        // Expired records of the kind go first, so the key is free again and the table stays small.
        conn.prepare_cached("DELETE FROM records WHERE kind = ?1 AND expires < ?2")?
            .execute(params![kind, now])?;
        let n = conn
            .prepare_cached(
                "INSERT INTO records (kind, key, value, expires) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (kind, key) DO NOTHING",
            )?
            .execute(params![kind, key, value, expires])?;
        Ok(n == 1)
    }

    fn put(&self, kind: &str, key: &str, value: &str, expires: Option<i64>) -> FhirResult<()> {
        let conn = self.writer.lock();
        conn.prepare_cached(
            "INSERT INTO records (kind, key, value, expires) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, expires = excluded.expires",
        )?
        .execute(params![kind, key, value, expires])?;
        Ok(())
    }

    fn get(&self, kind: &str, key: &str) -> FhirResult<Option<String>> {
        self.with_reader(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT value FROM records WHERE kind = ?1 AND key = ?2 \
                     AND (expires IS NULL OR expires >= ?3)",
                )?
                .query_row(params![kind, key, now_secs()], |r| r.get(0))
                .optional()?)
        })
    }

    fn take(&self, kind: &str, key: &str) -> FhirResult<Option<String>> {
        let conn = self.writer.lock();
        Ok(conn
            .prepare_cached(
                "DELETE FROM records WHERE kind = ?1 AND key = ?2 \
                 AND (expires IS NULL OR expires >= ?3) RETURNING value",
            )?
            .query_row(params![kind, key, now_secs()], |r| r.get(0))
            .optional()?)
    }

    fn remove(&self, kind: &str, key: &str) -> FhirResult<bool> {
        let conn = self.writer.lock();
        let n = conn
            .prepare_cached("DELETE FROM records WHERE kind = ?1 AND key = ?2")?
            .execute(params![kind, key])?;
        Ok(n > 0)
    }

    fn list(&self, kind: &str) -> FhirResult<Vec<(String, String)>> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, value FROM records WHERE kind = ?1 \
                 AND (expires IS NULL OR expires >= ?2) ORDER BY key",
            )?;
            let rows = stmt.query_map(params![kind, now_secs()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn all(&self) -> FhirResult<Vec<Record>> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT kind, key, value, expires FROM records \
                 WHERE expires IS NULL OR expires >= ?1 ORDER BY kind, key",
            )?;
            let rows = stmt.query_map(params![now_secs()], |r| {
                Ok(Record {
                    kind: r.get(0)?,
                    key: r.get(1)?,
                    value: r.get(2)?,
                    expires: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

struct PooledReader<'a> {
    store: &'a SqliteStore,
    conn: Option<Connection>,
}

impl Drop for PooledReader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut pool = self.store.readers.lock();
            if pool.len() < READER_POOL_MAX {
                pool.push(conn);
            }
        }
    }
}

fn last_change(conn: &Connection, rtypes: &[&str]) -> FhirResult<i64> {
    let mut statement =
        conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM resource_history WHERE rtype = ?1")?;
    let mut newest = 0;
    for rtype in rtypes {
        newest = newest.max(statement.query_row(params![rtype], |r| r.get::<_, i64>(0))?);
    }
    Ok(newest)
}

fn newest_body(conn: &Connection, rtype: &str) -> FhirResult<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT body FROM resource_history WHERE rtype = ?1 ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![rtype], |r| r.get::<_, Option<String>>(0))
        .optional()?
        .flatten())
}

/// A `SELECT seq, rtype, id, version, last_updated, method, body` row of `resource_history`.
fn seq_and_version(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, Version)> {
    let method: String = row.get(5)?;
    let body: Option<String> = row.get(6)?;
    Ok((
        row.get::<_, i64>(0)?,
        Version {
            rtype: row.get(1)?,
            id: row.get(2)?,
            version: row.get::<_, i64>(3)? as u64,
            last_updated: millis_to_utc(row.get(4)?),
            method: WriteMethod::from_http(&method),
            body: body.map(Arc::from),
        },
    ))
}

fn versions_after(conn: &Connection, after: i64, count: usize) -> FhirResult<Vec<(i64, Version)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, rtype, id, version, last_updated, method, body FROM resource_history
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, count as i64], seq_and_version)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

impl Reader for PooledReader<'_> {
    fn newest_body(&mut self, rtype: &str) -> FhirResult<Option<String>> {
        newest_body(
            self.conn.as_ref().expect("reader holds a connection"),
            rtype,
        )
    }

    fn versions_after(&mut self, after_seq: i64, count: usize) -> FhirResult<Vec<(i64, Version)>> {
        versions_after(
            self.conn.as_ref().expect("reader holds a connection"),
            after_seq,
            count,
        )
    }

    fn last_change(&mut self, rtypes: &[&str]) -> FhirResult<i64> {
        last_change(
            self.conn.as_ref().expect("reader holds a connection"),
            rtypes,
        )
    }

    fn current(&mut self, rtype: &str, id: &str) -> FhirResult<Option<Version>> {
        current(
            self.conn.as_ref().expect("reader holds a connection"),
            rtype,
            id,
        )
    }
    fn version(&mut self, rtype: &str, id: &str, version: u64) -> FhirResult<Option<Version>> {
        version_of(
            self.conn.as_ref().expect("reader holds a connection"),
            rtype,
            id,
            version,
        )
    }
    fn history(&mut self, query: &HistoryQuery) -> FhirResult<HistoryPage> {
        history(
            self.conn.as_ref().expect("reader holds a connection"),
            query,
        )
    }
    fn search(&mut self, query: &Query) -> FhirResult<Page> {
        search::search(
            self.conn.as_ref().expect("reader holds a connection"),
            query,
        )
    }
    fn outgoing(
        &mut self,
        sources: &[(String, String)],
        param: Option<&str>,
        target_type: Option<&str>,
    ) -> FhirResult<Vec<(String, String)>> {
        search::outgoing(
            self.conn.as_ref().expect("reader holds a connection"),
            sources,
            param,
            target_type,
        )
    }
    fn incoming(
        &mut self,
        source_type: &str,
        param: Option<&str>,
        targets: &[(String, String)],
    ) -> FhirResult<Vec<(String, String)>> {
        search::incoming(
            self.conn.as_ref().expect("reader holds a connection"),
            source_type,
            param,
            targets,
        )
    }
}

struct SqliteTx<'a> {
    conn: MutexGuard<'a, Connection>,
    open: bool,
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if self.open
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "rollback failed");
        }
    }
}

impl Reader for SqliteTx<'_> {
    fn last_change(&mut self, rtypes: &[&str]) -> FhirResult<i64> {
        last_change(&self.conn, rtypes)
    }

    fn newest_body(&mut self, rtype: &str) -> FhirResult<Option<String>> {
        newest_body(&self.conn, rtype)
    }

    fn versions_after(&mut self, after_seq: i64, count: usize) -> FhirResult<Vec<(i64, Version)>> {
        versions_after(&self.conn, after_seq, count)
    }

    fn current(&mut self, rtype: &str, id: &str) -> FhirResult<Option<Version>> {
        current(&self.conn, rtype, id)
    }
    fn version(&mut self, rtype: &str, id: &str, version: u64) -> FhirResult<Option<Version>> {
        version_of(&self.conn, rtype, id, version)
    }
    fn history(&mut self, query: &HistoryQuery) -> FhirResult<HistoryPage> {
        history(&self.conn, query)
    }
    fn search(&mut self, query: &Query) -> FhirResult<Page> {
        search::search(&self.conn, query)
    }
    fn outgoing(
        &mut self,
        sources: &[(String, String)],
        param: Option<&str>,
        target_type: Option<&str>,
    ) -> FhirResult<Vec<(String, String)>> {
        search::outgoing(&self.conn, sources, param, target_type)
    }
    fn incoming(
        &mut self,
        source_type: &str,
        param: Option<&str>,
        targets: &[(String, String)],
    ) -> FhirResult<Vec<(String, String)>> {
        search::incoming(&self.conn, source_type, param, targets)
    }
}

impl StoreTx for SqliteTx<'_> {
    fn put(&mut self, v: NewVersion) -> FhirResult<Version> {
        let conn = &self.conn;
        let millis = v.last_updated.timestamp_millis();
        let method = v.method.as_http();
        let seq: i64 = conn
            .prepare_cached(
                "INSERT INTO resource_history (rtype, id, version, last_updated, method, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING seq",
            )?
            .query_row(
                params![v.rtype, v.id, v.version as i64, millis, method, v.body],
                |r| r.get(0),
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    FhirError::PreconditionFailed(format!(
                        "{}/{} version {} was written concurrently",
                        v.rtype, v.id, v.version
                    ))
                }
                other => other.into(),
            })?;
        let rid: i64 = conn
            .prepare_cached(
                "INSERT INTO resources (rtype, id, seq, version, deleted, last_updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (rtype, id) DO UPDATE SET seq = excluded.seq, version = excluded.version,
                 deleted = excluded.deleted, last_updated = excluded.last_updated
                 RETURNING rid",
            )?
            .query_row(params![v.rtype, v.id, seq, v.version as i64, v.body.is_none(), millis], |r| r.get(0))?;
        if v.version > 1 {
            for table in INDEX_TABLES {
                conn.prepare_cached(&format!("DELETE FROM {table} WHERE rid = ?1"))?
                    .execute([rid])?;
            }
        }
        search::write_index(conn, rid, &v.rtype, &v.index)?;
        Ok(Version {
            rtype: v.rtype,
            id: v.id,
            version: v.version,
            last_updated: v.last_updated,
            method: v.method,
            body: v.body.map(Arc::from),
        })
    }

    fn commit(mut self: Box<Self>) -> FhirResult<()> {
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        Ok(())
    }
}

fn millis_to_utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn row_to_version(row: &rusqlite::Row<'_>, rtype: &str, id: &str) -> rusqlite::Result<Version> {
    let body: Option<String> = row.get(3)?;
    let method: String = row.get(2)?;
    Ok(Version {
        rtype: rtype.to_string(),
        id: id.to_string(),
        version: row.get::<_, i64>(0)? as u64,
        last_updated: millis_to_utc(row.get(1)?),
        method: WriteMethod::from_http(&method),
        body: body.map(Arc::from),
    })
}

fn current(conn: &Connection, rtype: &str, id: &str) -> FhirResult<Option<Version>> {
    Ok(conn
        .prepare_cached(
            "SELECT h.version, h.last_updated, h.method, h.body FROM resources r
             JOIN resource_history h ON h.seq = r.seq WHERE r.rtype = ?1 AND r.id = ?2",
        )?
        .query_row(params![rtype, id], |row| row_to_version(row, rtype, id))
        .optional()?)
}

fn version_of(
    conn: &Connection,
    rtype: &str,
    id: &str,
    version: u64,
) -> FhirResult<Option<Version>> {
    Ok(conn
        .prepare_cached(
            "SELECT version, last_updated, method, body FROM resource_history
             WHERE rtype = ?1 AND id = ?2 AND version = ?3",
        )?
        .query_row(params![rtype, id, version as i64], |row| {
            row_to_version(row, rtype, id)
        })
        .optional()?)
}

fn history(conn: &Connection, q: &HistoryQuery) -> FhirResult<HistoryPage> {
    let mut filters = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    match &q.scope {
        HistoryScope::System => filters.push("rtype <> 'AuditEvent'"),
        HistoryScope::Type(t) => {
            filters.push("rtype = ?");
            args.push(t.clone().into());
        }
        HistoryScope::Instance(t, id) => {
            filters.push("rtype = ? AND id = ?");
            args.push(t.clone().into());
            args.push(id.clone().into());
        }
    }
    if let Some(since) = q.since {
        filters.push("last_updated >= ?");
        args.push(since.timestamp_millis().into());
    }
    let base_where = if filters.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", filters.join(" AND "))
    };
    let total: i64 = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM resource_history {base_where}"
        ))?
        .query_row(params_from_iter(args.iter()), |r| r.get(0))?;
    if let Some(before) = q.before_seq {
        filters.push("seq < ?");
        args.push(before.into());
    }
    let page_where = if filters.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", filters.join(" AND "))
    };
    args.push((q.count as i64).into());
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT seq, rtype, id, version, last_updated, method, body FROM resource_history
         {page_where} ORDER BY seq DESC LIMIT ?"
    ))?;
    let entries = stmt
        .query_map(params_from_iter(args.iter()), seq_and_version)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HistoryPage {
        entries,
        total: total as u64,
    })
}
