//! The PostgreSQL store, for deployments where several gateway processes share one database.
//!
//! Same schema shape and behaviour as the SQLite store: a resource row points at its current
//! history row, index rows are replaced in the transaction that writes the version, and the
//! search SQL is the one [`crate::store::sql`] builds for both.
//!
//! Writers are serialised across every process on the database by a transaction-scoped
//! advisory lock taken in [`Store::begin`], exactly as SQLite's `BEGIN IMMEDIATE` serialises
//! them within one file: every read inside a write transaction (READ COMMITTED, so each
//! statement sees everything committed before it) happens after the previous writer committed,
//! so `If-Match`, conditional creates and version numbers decide on current data and versions
//! never fork. The unique key on `(rtype, id, version)` and the version guard on the resource
//! row are a second line: a write that gets past the lock some other way fails with 412 rather
//! than forking.
//!
//! The `postgres` client blocks on a runtime of its own, which tokio forbids inside async code;
//! every call therefore goes through [`unblocked`], so the store also works where it is used
//! outside the blocking pool (start-up, shutdown).

mod search;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use parking_lot::{Mutex, MutexGuard};
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Row, Statement};

use super::query::{Page, Query};
use super::sql::{Arg, Dialect, Sql};
use super::{
    HistoryPage, HistoryQuery, HistoryScope, NewVersion, Reader, Record, Records, Store, StoreTx,
    Version, WriteMethod,
};
use crate::error::{FhirError, FhirResult};

/// Migrations, applied in order inside one transaction; `schema_version` records how many ran.
///
/// Distribution (Citus): every resource-derived table carries `compartment`, the id of the
/// Patient whose compartment the resource belongs to (`''` for shared resources such as an
/// Organization), fixed by its first version, as the distribution column; `records` and
/// `schema_version` are reference tables. README.md ("Deployment") gives the exact commands.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE resource_history (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rtype        TEXT COLLATE "C" NOT NULL,
    id           TEXT COLLATE "C" NOT NULL,
    version      BIGINT NOT NULL,
    last_updated BIGINT NOT NULL, -- milliseconds since the epoch
    method       TEXT NOT NULL,
    body         TEXT,            -- NULL for a deletion
    UNIQUE (rtype, id, version)
);
CREATE INDEX resource_history_by_type ON resource_history (rtype, seq);
CREATE INDEX resource_history_by_time ON resource_history (last_updated);
CREATE INDEX resource_history_by_instance ON resource_history (rtype, id, seq);
-- One row per logical resource; rid keys its index rows and gives the insertion order.
CREATE TABLE resources (
    rid          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rtype        TEXT COLLATE "C" NOT NULL,
    id           TEXT COLLATE "C" NOT NULL,
    seq          BIGINT NOT NULL,
    version      BIGINT NOT NULL,
    deleted      BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    UNIQUE (rtype, id)
);
-- Index tables.
CREATE TABLE idx_string (rid BIGINT NOT NULL, grp BIGINT, rtype TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL, norm TEXT COLLATE "C" NOT NULL, exact TEXT COLLATE "C" NOT NULL);
CREATE INDEX idx_string_lookup ON idx_string (rtype, param, norm);
CREATE INDEX idx_string_exact ON idx_string (rtype, param, exact);
CREATE INDEX idx_string_rid ON idx_string (rid);
CREATE TABLE idx_token (rid BIGINT NOT NULL, grp BIGINT, rtype TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL, system TEXT COLLATE "C", code TEXT COLLATE "C",
    text TEXT COLLATE "C", of_type TEXT COLLATE "C");
CREATE INDEX idx_token_lookup ON idx_token (rtype, param, code, system);
CREATE INDEX idx_token_text ON idx_token (rtype, param, text);
CREATE INDEX idx_token_rid ON idx_token (rid);
CREATE TABLE idx_reference (rid BIGINT NOT NULL, grp BIGINT, rtype TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL, target_type TEXT COLLATE "C", target_id TEXT COLLATE "C",
    url TEXT COLLATE "C" NOT NULL);
CREATE INDEX idx_reference_lookup ON idx_reference (rtype, param, target_id, target_type);
CREATE INDEX idx_reference_target ON idx_reference (target_type, target_id);
CREATE INDEX idx_reference_url ON idx_reference (rtype, param, url);
CREATE INDEX idx_reference_rid ON idx_reference (rid);
CREATE TABLE idx_date (rid BIGINT NOT NULL, grp BIGINT, rtype TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL, low BIGINT NOT NULL, high BIGINT NOT NULL);
CREATE INDEX idx_date_low ON idx_date (rtype, param, low);
CREATE INDEX idx_date_high ON idx_date (rtype, param, high);
CREATE INDEX idx_date_rid ON idx_date (rid);
CREATE TABLE idx_number (rid BIGINT NOT NULL, grp BIGINT, rtype TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL, value DOUBLE PRECISION NOT NULL);
CREATE INDEX idx_number_lookup ON idx_number (rtype, param, value);
CREATE INDEX idx_number_rid ON idx_number (rid);
CREATE TABLE idx_quantity (rid BIGINT NOT NULL, grp BIGINT, rtype TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL, value DOUBLE PRECISION NOT NULL, system TEXT COLLATE "C",
    code TEXT COLLATE "C", unit TEXT COLLATE "C");
CREATE INDEX idx_quantity_lookup ON idx_quantity (rtype, param, value);
CREATE INDEX idx_quantity_rid ON idx_quantity (rid);
CREATE TABLE idx_uri (rid BIGINT NOT NULL, grp BIGINT, rtype TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL, uri TEXT COLLATE "C" NOT NULL);
CREATE INDEX idx_uri_lookup ON idx_uri (rtype, param, uri);
CREATE INDEX idx_uri_rid ON idx_uri (rid);
-- The authorization server's records (clients, users, keys, jtis, codes, tokens, launches).
CREATE TABLE records (
    kind    TEXT COLLATE "C" NOT NULL,
    key     TEXT COLLATE "C" NOT NULL,
    value   TEXT NOT NULL,
    expires BIGINT, -- seconds since the epoch; NULL = never
    PRIMARY KEY (kind, key)
);
CREATE INDEX records_expiry ON records (kind, expires) WHERE expires IS NOT NULL;
"#,
    // 2: the patient compartment, the distribution column of a sharded deployment.
    r#"
ALTER TABLE resource_history ADD COLUMN compartment TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE resources ADD COLUMN compartment TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE idx_string ADD COLUMN compartment TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE idx_token ADD COLUMN compartment TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE idx_reference ADD COLUMN compartment TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE idx_date ADD COLUMN compartment TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE idx_number ADD COLUMN compartment TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE idx_quantity ADD COLUMN compartment TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE idx_uri ADD COLUMN compartment TEXT COLLATE "C" NOT NULL DEFAULT '';
-- Keys that lead with the distribution column, as Citus requires; writes conflict on them.
-- (rtype, id) stays unique through the write lock: a resource's compartment is looked up by
-- (rtype, id) before each write.
CREATE UNIQUE INDEX resources_by_compartment ON resources (compartment, rtype, id);
CREATE UNIQUE INDEX resource_history_by_compartment ON resource_history (compartment, rtype, id, version);
"#,
];

/// Advisory lock key every write transaction holds (`"fp-writ"` in ASCII): one writer at a time
/// per database, across processes. Advisory locks are per database, so unrelated databases on
/// one server do not contend.
const WRITE_LOCK: i64 = 0x0066_702d_7772_6974;
/// Advisory lock key held while migrating, so instances starting together migrate once.
const MIGRATION_LOCK: i64 = 0x0066_702d_6d69_6772;

/// Connections per process: as many as the SQLite store's readers, well under PostgreSQL's
/// default `max_connections` (100) for a handful of instances.
const POOL_MAX: u32 = 16;
/// How long a request waits for a connection before it is answered 503.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening a connection may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a writer waits for the write lock (SQLite's busy timeout is the same) before 503,
/// first behind this process's writers, then behind other processes'.
const WRITER_WAIT: Duration = Duration::from_secs(10);
/// [`WRITER_WAIT`] as PostgreSQL's `lock_timeout`.
const LOCK_TIMEOUT: &str = "10s";
/// A writer that stalls this long inside a transaction (a frozen process) is ended by the
/// server, so its lock cannot stop every other instance's writes.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "60s";
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;
/// Tries for a statement that failed in a way that is safe to repeat.
const ATTEMPTS: u32 = 3;

/// TLS for connections. `NoTls` serves a database on the same host or private network; a
/// rustls `MakeTlsConnect` (e.g. from `tokio-postgres-rustls`) plugs in here for `sslmode=require`.
type Tls = NoTls;

/// Runs blocking database work where blocking is allowed: on a multi-threaded runtime's thread
/// through `block_in_place`, on a current-thread runtime on a scoped helper thread, elsewhere
/// (the blocking pool, plain threads) directly.
fn unblocked<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Err(_) => f(),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
    }
}

/// One pooled connection with its prepared statements.
struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
    /// Set when the connection's state is unknown (a rollback failed): the pool drops it.
    broken: bool,
    /// The session's `plan_cache_mode`, when known (a rollback may undo a `SET`).
    plan_mode: Option<PlanMode>,
}

/// How PostgreSQL plans the connection's prepared statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlanMode {
    /// Planned for their arguments at every execution (`force_custom_plan`).
    Custom,
    /// PostgreSQL's own choice (`auto`): after five executions it keeps one generic plan when
    /// that costs no more than the custom ones.
    Auto,
}

impl PgConn {
    /// Sets how the next search statement is planned. A search carrying a requester's consent
    /// policy (see [`Criterion::Policy`](crate::store::query::Criterion::Policy)) takes
    /// milliseconds to plan and a fraction of one to run; its policy values are literals, so
    /// a plan PostgreSQL keeps for it is made for them (and is made again after an ANALYZE).
    /// Other searches are planned for their values.
    fn plan_search(&mut self, reusable: bool) -> Result<(), postgres::Error> {
        let mode = if reusable {
            PlanMode::Auto
        } else {
            PlanMode::Custom
        };
        if self.plan_mode != Some(mode) {
            self.plan_mode = None;
            self.client.batch_execute(match mode {
                PlanMode::Auto => "SET plan_cache_mode = auto",
                PlanMode::Custom => "SET plan_cache_mode = force_custom_plan",
            })?;
            self.plan_mode = Some(mode);
        }
        Ok(())
    }

    /// The prepared statement for `sql`, preparing it on first use.
    fn prepare(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn query(
        &mut self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let statement = self.prepare(sql)?;
        self.client.query(&statement, args)
    }

    fn query_opt(
        &mut self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let statement = self.prepare(sql)?;
        self.client.query_opt(&statement, args)
    }

    fn query_one(
        &mut self,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error> {
        let statement = self.prepare(sql)?;
        self.client.query_one(&statement, args)
    }

    fn execute(&mut self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<u64, postgres::Error> {
        let statement = self.prepare(sql)?;
        self.client.execute(&statement, args)
    }

    /// Runs a statement built by [`Sql`].
    fn query_sql(&mut self, sql: &Sql) -> Result<Vec<Row>, postgres::Error> {
        let args: Vec<&(dyn ToSql + Sync)> =
            sql.args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        self.query(&sql.text, &args)
    }
}

/// Opens connections for the pool.
#[derive(Debug)]
struct Manager {
    config: postgres::Config,
    tls: Tls,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        let mut client = self.config.connect(self.tls)?;
        // Statements stay prepared (no parse round trip) but are planned for their arguments
        // each time: a generic plan made while a table was small is kept until the next
        // ANALYZE, and a search plan made at 100 rows ran for a minute at 30,000.
        client.batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'; \
             SET plan_cache_mode = force_custom_plan"
        ))?;
        Ok(PgConn {
            client,
            statements: HashMap::new(),
            broken: false,
            plan_mode: Some(PlanMode::Custom),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        conn.client.batch_execute("")
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.broken || conn.client.is_closed()
    }
}

/// Logs why the pool could not open a connection (the request that waited gets a 503).
#[derive(Debug)]
struct LogErrors;

impl r2d2::HandleError<postgres::Error> for LogErrors {
    fn handle_error(&self, error: postgres::Error) {
        tracing::warn!(error = %describe(&error), "cannot connect to PostgreSQL");
    }
}

type Pooled = r2d2::PooledConnection<Manager>;

/// A connection pool for the database a `postgres://` URL names.
fn pool(url: &str) -> FhirResult<r2d2::Pool<Manager>> {
    let mut config = postgres::Config::from_str(url)
        .map_err(|e| FhirError::bad_request(format!("invalid PostgreSQL URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("foster-passport");
    }
    Ok(r2d2::Pool::builder()
        .max_size(POOL_MAX)
        // Connections open on demand: CLI commands need one, an idle instance few.
        .min_idle(Some(1))
        .connection_timeout(CHECKOUT_TIMEOUT)
        .error_handler(Box::new(LogErrors))
        .build_unchecked(Manager { config, tls: NoTls }))
}

/// PostgreSQL-backed [`Store`].
pub struct PgStore {
    /// `None` only while dropping.
    pool: Option<r2d2::Pool<Manager>>,
    /// A read replica's pool for searches (`--read-database`).
    replica: Option<r2d2::Pool<Manager>>,
    /// This process's writers queue here, as on SQLite's writer connection, so that waiting
    /// writers do not each hold a pooled connection that readers need; across processes the
    /// advisory lock orders them.
    writer: Mutex<()>,
}

impl PgStore {
    /// Connect to the database a `postgres://` URL names and run pending migrations.
    pub fn open(url: &str) -> FhirResult<Self> {
        let store = PgStore {
            pool: Some(pool(url)?),
            replica: None,
            writer: Mutex::new(()),
        };
        unblocked(|| store.migrate())?;
        Ok(store)
    }

    /// Serve searches from the replica `url` names (a hot standby of this database; it is
    /// never written or migrated).
    pub fn with_replica(mut self, url: &str) -> FhirResult<Self> {
        self.replica = Some(pool(url)?);
        Ok(self)
    }

    fn checkout_replica(&self) -> Option<FhirResult<Pooled>> {
        self.replica.as_ref().map(|pool| {
            pool.get().map_err(|e| {
                FhirError::Unavailable(format!("the PostgreSQL read replica is unavailable: {e}"))
            })
        })
    }

    fn checkout(&self) -> FhirResult<Pooled> {
        self.pool
            .as_ref()
            .expect("pool lives as long as the store")
            .get()
            .map_err(|e| FhirError::Unavailable(format!("PostgreSQL is unavailable: {e}")))
    }

    fn migrate(&self) -> FhirResult<()> {
        let mut conn = self.checkout()?;
        let mut tx = conn.client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        // Checked rather than `IF NOT EXISTS`, which logs a notice at every start.
        let fresh: bool = tx
            .query_one("SELECT to_regclass('schema_version') IS NULL", &[])?
            .try_get(0)?;
        if fresh {
            tx.batch_execute("CREATE TABLE schema_version (version BIGINT NOT NULL)")?;
        }
        let done: i64 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?
            .try_get(0)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&(i as i64 + 1)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs one autocommit operation on a pooled connection, again on a fresh connection when
    /// it failed in a way that is safe to repeat: a serialization failure or deadlock (nothing
    /// was written), or a lost connection when `idempotent` (it may have been).
    fn run<T: Send>(
        &self,
        idempotent: bool,
        f: impl FnMut(&mut PgConn) -> Result<T, postgres::Error> + Send,
    ) -> FhirResult<T> {
        let mut f = f;
        unblocked(|| {
            let mut attempt = 1;
            loop {
                let mut conn = self.checkout()?;
                match f(&mut conn) {
                    Ok(v) => return Ok(v),
                    Err(e) if attempt < ATTEMPTS && retryable(&e, idempotent) => {
                        tracing::warn!(error = %describe(&e), attempt, "retrying a PostgreSQL statement");
                        attempt += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Closing a connection blocks on its runtime, which async code may not.
        let pools = (self.pool.take(), self.replica.take());
        unblocked(move || drop(pools));
    }
}

/// The error with the server's message (`postgres::Error` alone says only "db error").
fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// True when repeating the statement on another connection is safe and may succeed.
fn retryable(e: &postgres::Error, idempotent: bool) -> bool {
    use postgres::error::SqlState;
    match e.code() {
        Some(c) => {
            *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
        }
        None => idempotent && connection_lost(e),
    }
}

/// The error says the server could not be reached or the connection died.
fn connection_lost(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    // Connect and timeout errors carry no source of their own.
    let text = e.to_string();
    text.starts_with("error connecting to server") || text.starts_with("timeout")
}

impl From<postgres::Error> for FhirError {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        let unavailable = match e.code() {
            Some(c) => {
                let class = &c.code()[..2];
                // 08 connection, 53 resources, 57 operator intervention (shutdown, cancel),
                // 40 transaction rollback (serialization, deadlock), 55P03 lock timeout.
                matches!(class, "08" | "53" | "57" | "40") || *c == SqlState::LOCK_NOT_AVAILABLE
            }
            None => connection_lost(&e),
        };
        let message = format!("PostgreSQL: {}", describe(&e));
        if unavailable {
            FhirError::Unavailable(message)
        } else {
            FhirError::Internal(message)
        }
    }
}

/// Binds a shared-builder argument to whatever type PostgreSQL inferred for its placeholder, so
/// one builder serves both databases (SQLite compares across types; PostgreSQL needs them equal).
impl ToSql for Arg {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Int(n) => match *ty {
                Type::INT8 => n.to_sql(ty, out),
                Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
                Type::FLOAT8 => (*n as f64).to_sql(ty, out),
                Type::FLOAT4 => (*n as f32).to_sql(ty, out),
                Type::BOOL => (*n != 0).to_sql(ty, out),
                _ => n.to_string().to_sql(ty, out),
            },
            Arg::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::INT8 => (*f as i64).to_sql(ty, out),
                Type::INT4 => (*f as i32).to_sql(ty, out),
                _ => f.to_string().to_sql(ty, out),
            },
            Arg::Text(t) => match *ty {
                Type::INT8 => t.parse::<i64>().unwrap_or_default().to_sql(ty, out),
                Type::INT4 => t.parse::<i32>().unwrap_or_default().to_sql(ty, out),
                Type::FLOAT8 => t.parse::<f64>().unwrap_or_default().to_sql(ty, out),
                _ => text(t).as_ref().to_sql(ty, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// PostgreSQL text cannot hold NUL; SQLite's can. Index values and query values are mapped the
/// same way, so a search still finds what was written.
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

impl Store for PgStore {
    fn reader(&self) -> FhirResult<Box<dyn Reader + '_>> {
        let conn = unblocked(|| self.checkout())?;
        Ok(Box::new(PgReader { conn: Some(conn) }))
    }

    fn search_reader(&self) -> FhirResult<Box<dyn Reader + '_>> {
        match unblocked(|| self.checkout_replica()) {
            Some(conn) => Ok(Box::new(PgReader { conn: Some(conn?) })),
            None => self.reader(),
        }
    }

    fn begin(&self) -> FhirResult<Box<dyn StoreTx + '_>> {
        let writer = self.writer.try_lock_for(WRITER_WAIT).ok_or_else(|| {
            FhirError::Unavailable("the database is busy with other writes".into())
        })?;
        let conn = unblocked(|| {
            let mut attempt = 1;
            loop {
                let mut conn = self.checkout()?;
                match conn.client.batch_execute(&format!(
                    "BEGIN ISOLATION LEVEL READ COMMITTED; \
                     SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; \
                     SELECT pg_advisory_xact_lock({WRITE_LOCK})"
                )) {
                    Ok(()) => return Ok(conn),
                    Err(e) => {
                        rollback(&mut conn);
                        if attempt < ATTEMPTS && retryable(&e, true) {
                            tracing::warn!(error = %describe(&e), attempt, "retrying BEGIN");
                            attempt += 1;
                            continue;
                        }
                        return Err(FhirError::from(e));
                    }
                }
            }
        })?;
        Ok(Box::new(PgTx {
            _writer: writer,
            conn: Some(conn),
            open: true,
            failed: false,
        }))
    }

    fn records(&self) -> &dyn Records {
        self
    }

    fn ping(&self) -> FhirResult<()> {
        self.run(true, |conn| {
            conn.query_one("SELECT COUNT(*) FROM schema_version", &[])
                .map(|_| ())
        })
    }
}

/// Ends whatever transaction the connection is in; a connection that cannot is dropped by the
/// pool rather than handed to the next request mid-transaction.
fn rollback(conn: &mut PgConn) {
    // A `SET` made in the transaction is undone with it.
    conn.plan_mode = None;
    if let Err(e) = conn.client.batch_execute("ROLLBACK") {
        tracing::warn!(error = %describe(&e), "rollback failed; discarding the connection");
        conn.broken = true;
    }
}

fn now_secs() -> i64 {
    Utc::now().timestamp()
}

impl Records for PgStore {
    fn insert(&self, kind: &str, key: &str, value: &str, expires: Option<i64>) -> FhirResult<bool> {
        let (kind, key, value) = (text(kind), text(key), text(value));
        let (kind, key, value) = (kind.as_ref(), key.as_ref(), value.as_ref());
        let now = now_secs();
        self.run(false, |c| {
            // Expired records of the kind go first, so the table stays small.
            c.execute(
                "DELETE FROM records WHERE kind = $1 AND expires < $2",
                &[&kind, &now],
            )?;
            // A record that expired since is replaced too: the key is free again.
            let n = c.execute(
                "INSERT INTO records (kind, key, value, expires) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, \
                 expires = excluded.expires WHERE records.expires < $5",
                &[&kind, &key, &value, &expires, &now],
            )?;
            Ok(n == 1)
        })
    }

    fn put(&self, kind: &str, key: &str, value: &str, expires: Option<i64>) -> FhirResult<()> {
        let (kind, key, value) = (text(kind), text(key), text(value));
        let (kind, key, value) = (kind.as_ref(), key.as_ref(), value.as_ref());
        self.run(true, |c| {
            c.execute(
                "INSERT INTO records (kind, key, value, expires) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, \
                 expires = excluded.expires",
                &[&kind, &key, &value, &expires],
            )?;
            Ok(())
        })
    }

    fn get(&self, kind: &str, key: &str) -> FhirResult<Option<String>> {
        let (kind, key) = (text(kind), text(key));
        let (kind, key) = (kind.as_ref(), key.as_ref());
        let now = now_secs();
        self.run(true, |c| {
            c.query_opt(
                "SELECT value FROM records WHERE kind = $1 AND key = $2 \
                 AND (expires IS NULL OR expires >= $3)",
                &[&kind, &key, &now],
            )?
            .map(|r| r.try_get(0))
            .transpose()
        })
    }

    fn take(&self, kind: &str, key: &str) -> FhirResult<Option<String>> {
        let (kind, key) = (text(kind), text(key));
        let (kind, key) = (kind.as_ref(), key.as_ref());
        let now = now_secs();
        self.run(false, |c| {
            c.query_opt(
                "DELETE FROM records WHERE kind = $1 AND key = $2 \
                 AND (expires IS NULL OR expires >= $3) RETURNING value",
                &[&kind, &key, &now],
            )?
            .map(|r| r.try_get(0))
            .transpose()
        })
    }

    fn remove(&self, kind: &str, key: &str) -> FhirResult<bool> {
        let (kind, key) = (text(kind), text(key));
        let (kind, key) = (kind.as_ref(), key.as_ref());
        self.run(false, |c| {
            let n = c.execute(
                "DELETE FROM records WHERE kind = $1 AND key = $2",
                &[&kind, &key],
            )?;
            Ok(n > 0)
        })
    }

    fn list(&self, kind: &str) -> FhirResult<Vec<(String, String)>> {
        let kind = text(kind);
        let kind = kind.as_ref();
        let now = now_secs();
        self.run(true, |c| {
            c.query(
                "SELECT key, value FROM records WHERE kind = $1 \
                 AND (expires IS NULL OR expires >= $2) ORDER BY key",
                &[&kind, &now],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
        })
    }

    fn all(&self) -> FhirResult<Vec<Record>> {
        let now = now_secs();
        self.run(true, |c| {
            c.query(
                "SELECT kind, key, value, expires FROM records \
                 WHERE expires IS NULL OR expires >= $1 ORDER BY kind, key",
                &[&now],
            )?
            .iter()
            .map(|r| {
                Ok(Record {
                    kind: r.try_get(0)?,
                    key: r.try_get(1)?,
                    value: r.try_get(2)?,
                    expires: r.try_get(3)?,
                })
            })
            .collect()
        })
    }
}

/// A pooled connection lent to one request for reads.
struct PgReader {
    conn: Option<Pooled>,
}

impl PgReader {
    fn conn(&mut self) -> &mut PgConn {
        self.conn.as_mut().expect("reader holds a connection")
    }
}

impl Drop for PgReader {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            unblocked(move || drop(conn));
        }
    }
}

impl Reader for PgReader {
    fn last_change(&mut self, rtypes: &[&str]) -> FhirResult<i64> {
        let c = self.conn();
        unblocked(|| last_change(c, rtypes))
    }

    fn newest_body(&mut self, rtype: &str) -> FhirResult<Option<String>> {
        let c = self.conn();
        unblocked(|| newest_body(c, rtype))
    }

    fn versions_after(&mut self, after_seq: i64, count: usize) -> FhirResult<Vec<(i64, Version)>> {
        let c = self.conn();
        unblocked(|| versions_after(c, after_seq, count))
    }
    fn current(&mut self, rtype: &str, id: &str) -> FhirResult<Option<Version>> {
        let c = self.conn();
        unblocked(|| current(c, rtype, id))
    }
    fn version(&mut self, rtype: &str, id: &str, version: u64) -> FhirResult<Option<Version>> {
        let c = self.conn();
        unblocked(|| version_of(c, rtype, id, version))
    }
    fn history(&mut self, query: &HistoryQuery) -> FhirResult<HistoryPage> {
        let c = self.conn();
        unblocked(|| history(c, query))
    }
    fn search(&mut self, query: &Query) -> FhirResult<Page> {
        let c = self.conn();
        unblocked(|| search::search(c, query))
    }
    fn outgoing(
        &mut self,
        sources: &[(String, String)],
        param: Option<&str>,
        target_type: Option<&str>,
    ) -> FhirResult<Vec<(String, String)>> {
        let c = self.conn();
        unblocked(|| search::outgoing(c, sources, param, target_type))
    }
    fn incoming(
        &mut self,
        source_type: &str,
        param: Option<&str>,
        targets: &[(String, String)],
    ) -> FhirResult<Vec<(String, String)>> {
        let c = self.conn();
        unblocked(|| search::incoming(c, source_type, param, targets))
    }
}

/// An open write transaction holding the write lock.
struct PgTx<'a> {
    /// Released after the connection (see [`Drop`]): the next local writer finds it free.
    _writer: MutexGuard<'a, ()>,
    conn: Option<Pooled>,
    open: bool,
    /// A statement failed, which aborts a PostgreSQL transaction: committing must not pretend
    /// the rest was kept (PostgreSQL answers such a `COMMIT` with a silent rollback).
    failed: bool,
}

impl PgTx<'_> {
    /// Runs `f` on the transaction's connection, remembering a failure.
    fn exec<T: Send>(
        &mut self,
        f: impl FnOnce(&mut PgConn) -> FhirResult<T> + Send,
    ) -> FhirResult<T> {
        let conn = self.conn.as_mut().expect("transaction holds a connection");
        let result = unblocked(|| f(conn));
        if result.is_err() {
            self.failed = true;
        }
        result
    }
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        let open = self.open;
        if let Some(mut conn) = self.conn.take() {
            unblocked(move || {
                if open {
                    rollback(&mut conn);
                }
                drop(conn);
            });
        }
    }
}

impl Reader for PgTx<'_> {
    fn last_change(&mut self, rtypes: &[&str]) -> FhirResult<i64> {
        self.exec(|c| last_change(c, rtypes))
    }

    fn newest_body(&mut self, rtype: &str) -> FhirResult<Option<String>> {
        self.exec(|c| newest_body(c, rtype))
    }

    fn versions_after(&mut self, after_seq: i64, count: usize) -> FhirResult<Vec<(i64, Version)>> {
        self.exec(|c| versions_after(c, after_seq, count))
    }
    fn current(&mut self, rtype: &str, id: &str) -> FhirResult<Option<Version>> {
        self.exec(|c| current(c, rtype, id))
    }
    fn version(&mut self, rtype: &str, id: &str, version: u64) -> FhirResult<Option<Version>> {
        self.exec(|c| version_of(c, rtype, id, version))
    }
    fn history(&mut self, query: &HistoryQuery) -> FhirResult<HistoryPage> {
        self.exec(|c| history(c, query))
    }
    fn search(&mut self, query: &Query) -> FhirResult<Page> {
        self.exec(|c| search::search(c, query))
    }
    fn outgoing(
        &mut self,
        sources: &[(String, String)],
        param: Option<&str>,
        target_type: Option<&str>,
    ) -> FhirResult<Vec<(String, String)>> {
        self.exec(|c| search::outgoing(c, sources, param, target_type))
    }
    fn incoming(
        &mut self,
        source_type: &str,
        param: Option<&str>,
        targets: &[(String, String)],
    ) -> FhirResult<Vec<(String, String)>> {
        self.exec(|c| search::incoming(c, source_type, param, targets))
    }
}

impl StoreTx for PgTx<'_> {
    fn put(&mut self, v: NewVersion) -> FhirResult<Version> {
        self.exec(|c| put(c, v))
    }

    fn commit(mut self: Box<Self>) -> FhirResult<()> {
        if self.failed {
            return Err(FhirError::internal(
                "a statement of the transaction failed; it was rolled back",
            ));
        }
        let conn = self.conn.as_mut().expect("transaction holds a connection");
        let result = unblocked(|| conn.client.batch_execute("COMMIT"));
        // Committed or not, the transaction is over; an unknown outcome retires the connection.
        self.open = false;
        if let Err(e) = &result
            && connection_lost(e)
        {
            conn.broken = true;
        }
        Ok(result?)
    }
}

/// Writes the history row and points the resource row at it in one statement; the guard on the
/// resource's version refuses to move it backwards or sideways.
/// Writes a version; the compartment is the resource's first version's (`$8` for a new one).
const PUT_VERSION: &str = "WITH k AS (
    SELECT COALESCE((SELECT compartment FROM resources WHERE rtype = $1::text AND id = $2::text),
        $8::text) AS compartment),
h AS (
    INSERT INTO resource_history (rtype, id, version, last_updated, method, body, compartment)
    SELECT $1::text, $2::text, $3::bigint, $4::bigint, $5::text, $6::text, k.compartment FROM k
    RETURNING seq, compartment)
INSERT INTO resources (rtype, id, seq, version, deleted, last_updated, compartment)
SELECT $1::text, $2::text, h.seq, $3::bigint, $7::bigint, $4::bigint, h.compartment FROM h
ON CONFLICT (compartment, rtype, id) DO UPDATE SET seq = excluded.seq, version = excluded.version,
    deleted = excluded.deleted, last_updated = excluded.last_updated
    WHERE resources.version < excluded.version
RETURNING rid, compartment";

fn put(c: &mut PgConn, v: NewVersion) -> FhirResult<Version> {
    use postgres::error::SqlState;
    let conflict = || {
        FhirError::PreconditionFailed(format!(
            "{}/{} version {} was written concurrently",
            v.rtype, v.id, v.version
        ))
    };
    let millis = v.last_updated.timestamp_millis();
    let deleted = i64::from(v.body.is_none());
    let rows = c
        .query(
            PUT_VERSION,
            &[
                &text(&v.rtype).as_ref(),
                &text(&v.id).as_ref(),
                &(v.version as i64),
                &millis,
                &v.method.as_http(),
                &v.body.as_deref().map(text).as_deref(),
                &deleted,
                &text(&v.compartment).as_ref(),
            ],
        )
        .map_err(|e| match e.code() {
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => conflict(),
            _ => e.into(),
        })?;
    let Some(row) = rows.first() else {
        return Err(conflict());
    };
    let rid: i64 = row.try_get(0)?;
    let compartment: &str = row.try_get(1)?;
    search::replace_index(c, rid, &v.rtype, compartment, v.version > 1, &v.index)?;
    Ok(Version {
        rtype: v.rtype,
        id: v.id,
        version: v.version,
        last_updated: v.last_updated,
        method: v.method,
        body: v.body.map(Arc::from),
    })
}

fn millis_to_utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// A version from the columns `version, last_updated, method, body` starting at `at`.
fn row_to_version(row: &Row, at: usize, rtype: String, id: String) -> FhirResult<Version> {
    let method: &str = row.try_get(at + 2)?;
    let body: Option<String> = row.try_get(at + 3)?;
    Ok(Version {
        rtype,
        id,
        version: row.try_get::<_, i64>(at)? as u64,
        last_updated: millis_to_utc(row.try_get(at + 1)?),
        method: WriteMethod::from_http(method),
        body: body.map(Arc::from),
    })
}

/// The newest history sequence of any of these types. Writers commit one at a time, in sequence
/// order, so it only grows as other processes' readers see it too.
fn last_change(c: &mut PgConn, rtypes: &[&str]) -> FhirResult<i64> {
    let types: Vec<String> = rtypes.iter().map(|t| text(t).into_owned()).collect();
    Ok(c.query_one(
        // One round trip for all the types. The range (not `=`) leaves only the (rtype, seq)
        // index to give this order: with `=` the planner walks the primary key backwards past
        // every newer row of other types (100 ms per request once the audit trail has grown;
        // see BENCHMARKS.md).
        "SELECT COALESCE(MAX((SELECT seq FROM resource_history WHERE rtype >= t AND rtype <= t \
         ORDER BY rtype DESC, seq DESC LIMIT 1)), 0) FROM unnest($1::text[]) AS t",
        &[&types],
    )?
    .try_get(0)?)
}

fn newest_body(c: &mut PgConn, rtype: &str) -> FhirResult<Option<String>> {
    let t = text(rtype);
    Ok(c.query_opt(
        // As in `last_change`: the range keeps the planner on the (rtype, seq) index.
        "SELECT body FROM resource_history WHERE rtype >= $1 AND rtype <= $1 \
         ORDER BY rtype DESC, seq DESC LIMIT 1",
        &[&t.as_ref()],
    )?
    .map(|row| row.try_get::<_, Option<String>>(0))
    .transpose()?
    .flatten())
}

fn versions_after(c: &mut PgConn, after: i64, count: usize) -> FhirResult<Vec<(i64, Version)>> {
    c.query(
        "SELECT seq, rtype, id, version, last_updated, method, body FROM resource_history
         WHERE seq > $1 ORDER BY seq LIMIT $2",
        &[&after, &(count as i64)],
    )?
    .iter()
    .map(|row| {
        Ok((
            row.try_get::<_, i64>(0)?,
            row_to_version(row, 3, row.try_get(1)?, row.try_get(2)?)?,
        ))
    })
    .collect()
}

fn current(c: &mut PgConn, rtype: &str, id: &str) -> FhirResult<Option<Version>> {
    let (t, i) = (text(rtype), text(id));
    c.query_opt(
        "SELECT h.version, h.last_updated, h.method, h.body FROM resources r
         JOIN resource_history h ON h.seq = r.seq WHERE r.rtype = $1 AND r.id = $2",
        &[&t.as_ref(), &i.as_ref()],
    )?
    .map(|row| row_to_version(&row, 0, rtype.to_string(), id.to_string()))
    .transpose()
}

fn version_of(c: &mut PgConn, rtype: &str, id: &str, version: u64) -> FhirResult<Option<Version>> {
    let (t, i) = (text(rtype), text(id));
    c.query_opt(
        "SELECT version, last_updated, method, body FROM resource_history
         WHERE rtype = $1 AND id = $2 AND version = $3",
        &[&t.as_ref(), &i.as_ref(), &(version as i64)],
    )?
    .map(|row| row_to_version(&row, 0, rtype.to_string(), id.to_string()))
    .transpose()
}

fn history(c: &mut PgConn, q: &HistoryQuery) -> FhirResult<HistoryPage> {
    let mut filter = Sql::new(Dialect::Postgres);
    filter.push("WHERE TRUE");
    match &q.scope {
        // As on SQLite: the audit trail grows with every request and is read on its own.
        HistoryScope::System => filter.push(" AND rtype <> 'AuditEvent'"),
        HistoryScope::Type(t) => {
            filter.push(" AND rtype = ");
            filter.arg(t.clone());
        }
        HistoryScope::Instance(t, id) => {
            filter.push(" AND rtype = ");
            filter.arg(t.clone());
            filter.push(" AND id = ");
            filter.arg(id.clone());
        }
    }
    if let Some(since) = q.since {
        filter.push(" AND last_updated >= ");
        filter.arg(since.timestamp_millis());
    }
    let mut total = Sql::new(Dialect::Postgres);
    total.push("SELECT COUNT(*) FROM resource_history ");
    total.push(&filter.text);
    total.args.clone_from(&filter.args);
    let total: i64 = c
        .query_sql(&total)?
        .first()
        .map_or(Ok(0), |r| r.try_get(0))?;
    let mut page = filter;
    if let Some(before) = q.before_seq {
        page.push(" AND seq < ");
        page.arg(before);
    }
    page.push(" ORDER BY seq DESC LIMIT ");
    page.arg(q.count as i64);
    page.text = format!(
        "SELECT seq, rtype, id, version, last_updated, method, body FROM resource_history {}",
        page.text
    );
    let entries = c
        .query_sql(&page)?
        .iter()
        .map(|row| {
            Ok((
                row.try_get::<_, i64>(0)?,
                row_to_version(row, 3, row.try_get(1)?, row.try_get(2)?)?,
            ))
        })
        .collect::<FhirResult<Vec<_>>>()?;
    Ok(HistoryPage {
        entries,
        total: total as u64,
    })
}
