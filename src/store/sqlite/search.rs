//! Index rows and search queries for the SQLite store; the search SQL itself is shared with
//! PostgreSQL ([`crate::store::sql`]).

use std::sync::Arc;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params, params_from_iter};

use super::millis_to_utc;
use crate::error::FhirResult;
use crate::store::IndexRow;
use crate::store::Version;
use crate::store::index::IndexValue;
use crate::store::query::{Match, Page, Query, SortValue};
use crate::store::sql::{self, Arg, Dialect};

/// Write a resource's index rows.
pub fn write_index(conn: &Connection, rid: i64, rtype: &str, rows: &[IndexRow]) -> FhirResult<()> {
    for row in rows {
        let p = row.param.as_str();
        let g = row.group;
        match &row.value {
            IndexValue::String { normalized, exact } => {
                conn.prepare_cached(
                    "INSERT INTO idx_string (rid, rtype, param, norm, exact, grp) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![rid, rtype, p, normalized, exact, g])?;
            }
            IndexValue::Token {
                system,
                code,
                text,
                of_type,
            } => {
                conn.prepare_cached(
                    "INSERT INTO idx_token (rid, rtype, param, system, code, text, of_type, grp)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![rid, rtype, p, system, code, text, of_type, g])?;
            }
            IndexValue::Reference {
                target_type,
                target_id,
                url,
            } => {
                conn.prepare_cached(
                    "INSERT INTO idx_reference (rid, rtype, param, target_type, target_id, url, grp)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![rid, rtype, p, target_type, target_id, url, g])?;
            }
            IndexValue::Date { low, high } => {
                conn.prepare_cached(
                    "INSERT INTO idx_date (rid, rtype, param, low, high, grp) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![rid, rtype, p, low, high, g])?;
            }
            IndexValue::Number { value } => {
                conn.prepare_cached("INSERT INTO idx_number (rid, rtype, param, value, grp) VALUES (?1, ?2, ?3, ?4, ?5)")?
                    .execute(params![rid, rtype, p, value, g])?;
            }
            IndexValue::Quantity {
                value,
                system,
                code,
                unit,
            } => {
                conn.prepare_cached(
                    "INSERT INTO idx_quantity (rid, rtype, param, value, system, code, unit, grp)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![rid, rtype, p, value, system, code, unit, g])?;
            }
            IndexValue::Uri { uri } => {
                conn.prepare_cached(
                    "INSERT INTO idx_uri (rid, rtype, param, uri, grp) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![rid, rtype, p, uri, g])?;
            }
        }
    }
    Ok(())
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Arg::Null => ValueRef::Null,
            Arg::Int(n) => ValueRef::Integer(*n),
            Arg::Real(f) => ValueRef::Real(*f),
            Arg::Text(t) => ValueRef::Text(t.as_bytes()),
        }))
    }
}

/// Run a search page.
pub fn search(conn: &Connection, q: &Query) -> FhirResult<Page> {
    let total = if q.with_total {
        Some(count(conn, q)?)
    } else {
        None
    };
    let backwards = q.cursor.as_ref().is_some_and(|c| c.backwards);
    let sql = sql::page(Dialect::Sqlite, q);
    tracing::trace!(sql = %sql.text, args = ?sql.args, "search page");
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let keys = q.sort.len();
    let mut matches = stmt
        .query_map(params_from_iter(sql.args.iter()), |row| {
            let body: Option<String> = row.get(4)?;
            let method: String = row.get(3)?;
            let mut sort_values = Vec::with_capacity(keys);
            for i in 0..keys {
                sort_values.push(match row.get::<_, SqlValue>(6 + i)? {
                    SqlValue::Integer(n) => SortValue::Int(n),
                    SqlValue::Real(f) => SortValue::Real(f),
                    SqlValue::Text(t) => SortValue::Text(t),
                    _ => SortValue::Text(String::new()),
                });
            }
            Ok(Match {
                version: Version {
                    rtype: q.rtype.clone(),
                    id: row.get(5)?,
                    version: row.get::<_, i64>(1)? as u64,
                    last_updated: millis_to_utc(row.get(2)?),
                    method: crate::store::WriteMethod::from_http(&method),
                    body: body.map(Arc::from),
                },
                sort_values,
                row: row.get(0)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let more = matches.len() > q.count;
    matches.truncate(q.count);
    if backwards {
        matches.reverse();
    }
    Ok(Page {
        matches,
        more,
        total,
    })
}

fn count(conn: &Connection, q: &Query) -> FhirResult<u64> {
    let sql = sql::count(Dialect::Sqlite, q);
    tracing::trace!(sql = %sql.text, args = ?sql.args, "search count");
    let n: i64 = conn
        .prepare_cached(&sql.text)?
        .query_row(params_from_iter(sql.args.iter()), |r| r.get(0))?;
    Ok(n as u64)
}

/// `_include` targets.
pub fn outgoing(
    conn: &Connection,
    sources: &[(String, String)],
    param: Option<&str>,
    target_type: Option<&str>,
) -> FhirResult<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT x.target_type, x.target_id FROM resources s
         JOIN idx_reference x ON x.rid = s.rid
         WHERE s.rtype = ?1 AND s.id = ?2 AND x.target_id IS NOT NULL AND x.target_type IS NOT NULL
           AND (?3 IS NULL OR x.param = ?3) AND (?4 IS NULL OR x.target_type = ?4)",
    )?;
    let mut out = Vec::new();
    for (rtype, id) in sources {
        let rows = stmt.query_map(params![rtype, id, param, target_type], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        for row in rows {
            let pair: (String, String) = row?;
            if !out.contains(&pair) {
                out.push(pair);
            }
        }
    }
    Ok(out)
}

/// `_revinclude` sources.
pub fn incoming(
    conn: &Connection,
    source_type: &str,
    param: Option<&str>,
    targets: &[(String, String)],
) -> FhirResult<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT s.rtype, s.id FROM idx_reference x JOIN resources s ON s.rid = x.rid
         WHERE x.rtype = ?1 AND (?2 IS NULL OR x.param = ?2) AND x.target_type = ?3 AND x.target_id = ?4
           AND s.deleted = 0",
    )?;
    let mut out = Vec::new();
    for (rtype, id) in targets {
        let rows = stmt.query_map(params![source_type, param, rtype, id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        for row in rows {
            let pair: (String, String) = row?;
            if !out.contains(&pair) {
                out.push(pair);
            }
        }
    }
    Ok(out)
}
