//! Index rows and search queries for the PostgreSQL store; the search SQL itself is shared with
//! SQLite ([`crate::store::sql`]).

use std::sync::Arc;

use postgres::types::{ToSql, Type};

use super::{PgConn, millis_to_utc, text};
use crate::error::FhirResult;
use crate::store::index::IndexValue;
use crate::store::query::{Match, Page, Query, SortValue};
use crate::store::sql::{self, Dialect};
use crate::store::{IndexRow, Version, WriteMethod};

/// Clears a resource's old index rows and writes the new ones in one statement: every
/// sub-statement of a `WITH` sees the same snapshot, so the deletes never see the inserts.
const REPLACE_INDEX: &str = "WITH
 d1 AS (DELETE FROM idx_string WHERE rid = $1::bigint AND $3::boolean),
 d2 AS (DELETE FROM idx_token WHERE rid = $1::bigint AND $3::boolean),
 d3 AS (DELETE FROM idx_reference WHERE rid = $1::bigint AND $3::boolean),
 d4 AS (DELETE FROM idx_date WHERE rid = $1::bigint AND $3::boolean),
 d5 AS (DELETE FROM idx_number WHERE rid = $1::bigint AND $3::boolean),
 d6 AS (DELETE FROM idx_quantity WHERE rid = $1::bigint AND $3::boolean),
 d7 AS (DELETE FROM idx_uri WHERE rid = $1::bigint AND $3::boolean),
 i1 AS (INSERT INTO idx_string (rid, compartment, rtype, param, grp, norm, exact)
    SELECT $1::bigint, $35::text, $2::text, * FROM UNNEST($4::text[], $5::bigint[], $6::text[], $7::text[])),
 i2 AS (INSERT INTO idx_token (rid, compartment, rtype, param, grp, system, code, text, of_type)
    SELECT $1::bigint, $35::text, $2::text, * FROM UNNEST($8::text[], $9::bigint[], $10::text[], $11::text[],
        $12::text[], $13::text[])),
 i3 AS (INSERT INTO idx_reference (rid, compartment, rtype, param, grp, target_type, target_id, url)
    SELECT $1::bigint, $35::text, $2::text, * FROM UNNEST($14::text[], $15::bigint[], $16::text[], $17::text[],
        $18::text[])),
 i4 AS (INSERT INTO idx_date (rid, compartment, rtype, param, grp, low, high)
    SELECT $1::bigint, $35::text, $2::text, * FROM UNNEST($19::text[], $20::bigint[], $21::bigint[], $22::bigint[])),
 i5 AS (INSERT INTO idx_number (rid, compartment, rtype, param, grp, value)
    SELECT $1::bigint, $35::text, $2::text, * FROM UNNEST($23::text[], $24::bigint[], $25::float8[])),
 i6 AS (INSERT INTO idx_quantity (rid, compartment, rtype, param, grp, value, system, code, unit)
    SELECT $1::bigint, $35::text, $2::text, * FROM UNNEST($26::text[], $27::bigint[], $28::float8[], $29::text[],
        $30::text[], $31::text[])),
 i7 AS (INSERT INTO idx_uri (rid, compartment, rtype, param, grp, uri)
    SELECT $1::bigint, $35::text, $2::text, * FROM UNNEST($32::text[], $33::bigint[], $34::text[]))
SELECT 1";

/// Column arrays for one index table, filled row by row.
#[derive(Default)]
struct Columns {
    param: Vec<String>,
    grp: Vec<Option<i64>>,
    text: Vec<Vec<Option<String>>>,
    int: Vec<Vec<i64>>,
    real: Vec<Vec<f64>>,
}

impl Columns {
    fn row(&mut self, row: &IndexRow) -> &mut Self {
        self.param.push(text(&row.param).into_owned());
        self.grp.push(row.group.map(i64::from));
        self
    }
    fn text(&mut self, k: usize, value: Option<&str>) -> &mut Self {
        if self.text.len() <= k {
            self.text.resize_with(k + 1, Vec::new);
        }
        self.text[k].push(value.map(|v| text(v).into_owned()));
        self
    }
    fn int(&mut self, k: usize, value: i64) -> &mut Self {
        if self.int.len() <= k {
            self.int.resize_with(k + 1, Vec::new);
        }
        self.int[k].push(value);
        self
    }
    fn real(&mut self, k: usize, value: f64) -> &mut Self {
        if self.real.len() <= k {
            self.real.resize_with(k + 1, Vec::new);
        }
        self.real[k].push(value);
        self
    }
    /// The `k`-th text column, empty when no row was added.
    fn texts(&self, k: usize) -> &[Option<String>] {
        self.text.get(k).map_or(&[], Vec::as_slice)
    }
    fn ints(&self, k: usize) -> &[i64] {
        self.int.get(k).map_or(&[], Vec::as_slice)
    }
    fn reals(&self, k: usize) -> &[f64] {
        self.real.get(k).map_or(&[], Vec::as_slice)
    }
}

/// Replace a resource's index rows (`clear`: it had some, from an earlier version).
pub(super) fn replace_index(
    c: &mut PgConn,
    rid: i64,
    rtype: &str,
    compartment: &str,
    clear: bool,
    rows: &[IndexRow],
) -> FhirResult<()> {
    if !clear && rows.is_empty() {
        return Ok(());
    }
    let [mut s, mut t, mut r, mut d, mut n, mut q, mut u] =
        std::array::from_fn::<Columns, 7, _>(|_| Columns::default());
    for row in rows {
        match &row.value {
            IndexValue::String { normalized, exact } => {
                s.row(row).text(0, Some(normalized)).text(1, Some(exact));
            }
            IndexValue::Token {
                system,
                code,
                text,
                of_type,
            } => {
                t.row(row)
                    .text(0, system.as_deref())
                    .text(1, code.as_deref())
                    .text(2, text.as_deref())
                    .text(3, of_type.as_deref());
            }
            IndexValue::Reference {
                target_type,
                target_id,
                url,
            } => {
                r.row(row)
                    .text(0, target_type.as_deref())
                    .text(1, target_id.as_deref())
                    .text(2, Some(url));
            }
            IndexValue::Date { low, high } => {
                d.row(row).int(0, *low).int(1, *high);
            }
            IndexValue::Number { value } => {
                n.row(row).real(0, *value);
            }
            IndexValue::Quantity {
                value,
                system,
                code,
                unit,
            } => {
                q.row(row)
                    .real(0, *value)
                    .text(0, system.as_deref())
                    .text(1, code.as_deref())
                    .text(2, unit.as_deref());
            }
            IndexValue::Uri { uri } => {
                u.row(row).text(0, Some(uri));
            }
        }
    }
    let rtype = text(rtype);
    let rtype = rtype.as_ref();
    let args: [&(dyn ToSql + Sync); 35] = [
        &rid,
        &rtype,
        &clear,
        &s.param,
        &s.grp,
        &s.texts(0),
        &s.texts(1),
        &t.param,
        &t.grp,
        &t.texts(0),
        &t.texts(1),
        &t.texts(2),
        &t.texts(3),
        &r.param,
        &r.grp,
        &r.texts(0),
        &r.texts(1),
        &r.texts(2),
        &d.param,
        &d.grp,
        &d.ints(0),
        &d.ints(1),
        &n.param,
        &n.grp,
        &n.reals(0),
        &q.param,
        &q.grp,
        &q.reals(0),
        &q.texts(0),
        &q.texts(1),
        &q.texts(2),
        &u.param,
        &u.grp,
        &u.texts(0),
        &compartment,
    ];
    c.query(REPLACE_INDEX, &args)?;
    Ok(())
}

/// Run a search page.
pub(super) fn search(c: &mut PgConn, q: &Query) -> FhirResult<Page> {
    let total = if q.with_total {
        Some(count(c, q)?)
    } else {
        None
    };
    let backwards = q.cursor.as_ref().is_some_and(|c| c.backwards);
    let sql = sql::page(Dialect::Postgres, q);
    tracing::trace!(sql = %sql.text, args = ?sql.args, "search page");
    c.plan_search(sql.literals)?;
    let keys = q.sort.len();
    let mut matches = c
        .query_sql(&sql)?
        .iter()
        .map(|row| {
            let mut sort_values = Vec::with_capacity(keys);
            for i in 6..6 + keys {
                sort_values.push(match *row.columns()[i].type_() {
                    Type::INT8 => SortValue::Int(row.try_get(i)?),
                    Type::FLOAT8 => SortValue::Real(row.try_get(i)?),
                    Type::TEXT => SortValue::Text(row.try_get(i)?),
                    _ => SortValue::Text(String::new()),
                });
            }
            let method: &str = row.try_get(3)?;
            let body: Option<String> = row.try_get(4)?;
            Ok(Match {
                version: Version {
                    rtype: q.rtype.clone(),
                    id: row.try_get(5)?,
                    version: row.try_get::<_, i64>(1)? as u64,
                    last_updated: millis_to_utc(row.try_get(2)?),
                    method: WriteMethod::from_http(method),
                    body: body.map(Arc::from),
                },
                sort_values,
                row: row.try_get(0)?,
            })
        })
        .collect::<FhirResult<Vec<_>>>()?;
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

fn count(c: &mut PgConn, q: &Query) -> FhirResult<u64> {
    let sql = sql::count(Dialect::Postgres, q);
    tracing::trace!(sql = %sql.text, args = ?sql.args, "search count");
    c.plan_search(sql.literals)?;
    let n: i64 = c.query_sql(&sql)?.first().map_or(Ok(0), |r| r.try_get(0))?;
    Ok(n as u64)
}

/// `_include` targets, in the order the SQLite store gives them (source by source).
pub(super) fn outgoing(
    c: &mut PgConn,
    sources: &[(String, String)],
    param: Option<&str>,
    target_type: Option<&str>,
) -> FhirResult<Vec<(String, String)>> {
    let param = param.map(text);
    let target_type = target_type.map(text);
    let mut out = Vec::new();
    for (rtype, id) in sources {
        let rows = c.query(
            "SELECT DISTINCT x.target_type, x.target_id FROM resources s
             JOIN idx_reference x ON x.rid = s.rid
             WHERE s.rtype = $1 AND s.id = $2 AND x.target_id IS NOT NULL
               AND x.target_type IS NOT NULL
               AND ($3::text IS NULL OR x.param = $3) AND ($4::text IS NULL OR x.target_type = $4)",
            &[
                &text(rtype).as_ref(),
                &text(id).as_ref(),
                &param.as_deref(),
                &target_type.as_deref(),
            ],
        )?;
        for row in rows {
            let pair: (String, String) = (row.try_get(0)?, row.try_get(1)?);
            if !out.contains(&pair) {
                out.push(pair);
            }
        }
    }
    Ok(out)
}

/// `_revinclude` sources.
pub(super) fn incoming(
    c: &mut PgConn,
    source_type: &str,
    param: Option<&str>,
    targets: &[(String, String)],
) -> FhirResult<Vec<(String, String)>> {
    let source_type = text(source_type);
    let param = param.map(text);
    let mut out = Vec::new();
    for (rtype, id) in targets {
        let rows = c.query(
            "SELECT DISTINCT s.rtype, s.id FROM idx_reference x JOIN resources s ON s.rid = x.rid
             WHERE x.rtype = $1 AND ($2::text IS NULL OR x.param = $2) AND x.target_type = $3
               AND x.target_id = $4 AND s.deleted = 0",
            &[
                &source_type.as_ref(),
                &param.as_deref(),
                &text(rtype).as_ref(),
                &text(id).as_ref(),
            ],
        )?;
        for row in rows {
            let pair: (String, String) = (row.try_get(0)?, row.try_get(1)?);
            if !out.contains(&pair) {
                out.push(pair);
            }
        }
    }
    Ok(out)
}
