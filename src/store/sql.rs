//! The search SQL both stores run, built once for either dialect.
//!
//! Each criterion becomes a membership test of the resource row in an index table, so the
//! planner can drive from the index for selective criteria. Paging is keyset-based on the sort
//! values and the row id, so pages neither skip nor repeat rows while others write.
//!
//! The two databases share the schema's shape (`resources`, `resource_history`, `idx_*`) and
//! differ only in what [`Dialect`] covers: placeholders, boolean literals and SQLite's unary
//! `+` planner hint.

use super::index::{ParamKind, Prefix, QueryValue};
use super::query::{Criterion, Cursor, Modifier, ParamRef, Query, SortBy, SortKey, SortValue};

/// Which database the SQL is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `?` placeholders, `0`/`1` for booleans, `+column` to steer the planner.
    Sqlite,
    /// `$n` placeholders, `FALSE`/`TRUE`, no planner hints.
    Postgres,
}

/// A positional argument, independent of the driver that binds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// SQL NULL.
    Null,
    /// An integer (dates as ms, row ids, limits).
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
}

impl From<String> for Arg {
    fn from(s: String) -> Self {
        Arg::Text(s)
    }
}

impl From<i64> for Arg {
    fn from(n: i64) -> Self {
        Arg::Int(n)
    }
}

impl From<f64> for Arg {
    fn from(f: f64) -> Self {
        Arg::Real(f)
    }
}

/// SQL text with its positional arguments, built together so they never drift apart.
#[derive(Debug)]
pub struct Sql {
    /// The statement.
    pub text: String,
    /// Its arguments, in placeholder order.
    pub args: Vec<Arg>,
    aliases: usize,
    dialect: Dialect,
    /// Other criteria select few rows: conditions inside an OR check each of those rows
    /// (`EXISTS` on the row) rather than list every row they match.
    correlated: bool,
    /// How deep inside an OR the criterion being written is.
    in_any: usize,
    /// Inside a [`Criterion::Policy`]: text values are written as literals.
    in_policy: usize,
    /// Some value was written as a literal: the statement is one requester's, and a plan made
    /// for it once holds for all its executions.
    pub literals: bool,
}

impl Sql {
    /// An empty statement for `dialect`.
    pub fn new(dialect: Dialect) -> Self {
        Sql {
            text: String::new(),
            args: Vec::new(),
            aliases: 0,
            dialect,
            correlated: false,
            in_any: 0,
            in_policy: 0,
            literals: false,
        }
    }

    /// Append SQL text.
    pub fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// Append a placeholder bound to `value` (inside a policy, text as a quoted literal).
    pub fn arg(&mut self, value: impl Into<Arg>) {
        let value = value.into();
        if self.in_policy > 0
            && let Arg::Text(text) = &value
            && !text.contains(['\0', '\\'])
        {
            // A quote is escaped by doubling it. A backslash would be an escape where
            // PostgreSQL runs without standard_conforming_strings: such text stays bound.
            self.text.push('\'');
            self.text.push_str(&text.replace('\'', "''"));
            self.text.push('\'');
            self.literals = true;
            return;
        }
        self.args.push(value);
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.args.len().to_string());
            }
        }
    }

    fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    fn literal(&self, value: bool) -> &'static str {
        match (self.dialect, value) {
            (Dialect::Sqlite, false) => "0",
            (Dialect::Sqlite, true) => "1",
            (Dialect::Postgres, false) => "FALSE",
            (Dialect::Postgres, true) => "TRUE",
        }
    }
}

/// The index table holding a parameter kind's values.
pub fn table(kind: ParamKind) -> &'static str {
    match kind {
        ParamKind::String => "idx_string",
        ParamKind::Token => "idx_token",
        ParamKind::Reference => "idx_reference",
        ParamKind::Date => "idx_date",
        ParamKind::Number => "idx_number",
        ParamKind::Quantity => "idx_quantity",
        ParamKind::Uri | ParamKind::Composite | ParamKind::Special => "idx_uri",
    }
}

/// Largest code point: `text >= v AND text < v || MAX` is a starts-with test that uses the index
/// (under binary collation, which both stores use for text).
const TEXT_MAX: &str = "\u{10FFFF}";

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Append the criteria, ANDed, as conditions on the resources row `alias`.
fn criteria(sql: &mut Sql, list: &[Criterion], alias: &str, rtype: &str) {
    for c in list {
        sql.push(" AND ");
        criterion(sql, c, alias, rtype);
    }
}

fn criterion(sql: &mut Sql, c: &Criterion, alias: &str, rtype: &str) {
    match c {
        // PostgreSQL rejects `IN ()`; SQLite reads it as false, so its text stays as it was.
        Criterion::Ids(ids) if ids.is_empty() && sql.dialect == Dialect::Postgres => {
            sql.push("FALSE");
        }
        Criterion::Ids(ids) if ids.len() > MANY_IDS => {
            sql.push(&format!("{alias}.id IN ("));
            json_list(sql, ids.iter().map(String::as_str).collect());
            sql.push(")");
        }
        Criterion::Ids(ids) => {
            sql.push(&format!("{alias}.id IN ("));
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.arg(id.clone());
            }
            sql.push(")");
        }
        Criterion::Missing { param, missing } => {
            let not = if *missing { "NOT " } else { "" };
            sql.push(&format!(
                "{alias}.rid {not}IN (SELECT rid FROM {} WHERE rtype = ",
                table(param.kind)
            ));
            sql.arg(rtype.to_string());
            sql.push(" AND param = ");
            sql.arg(param.code.clone());
            sql.push(")");
        }
        Criterion::Match {
            param,
            modifier,
            values,
        } => {
            let not = if *modifier == Modifier::Not {
                "NOT "
            } else {
                ""
            };
            if sql.correlated && sql.in_any > 0 {
                // Access criteria list thousands of patients: check the few candidate rows
                // instead of listing every row of every patient.
                // SQLite would rather walk the (rtype, param, value) index over every row with
                // the value (all active Consents, say) than look up the one row: `+` rules it out.
                let x = sql.alias("e");
                let plus = if sql.dialect == Dialect::Sqlite {
                    "+"
                } else {
                    ""
                };
                sql.push(&format!(
                    "{not}EXISTS (SELECT 1 FROM {} {x} WHERE {x}.rid = {alias}.rid AND {plus}{x}.rtype = ",
                    table(param.kind)
                ));
            } else {
                sql.push(&format!(
                    "{alias}.rid {not}IN (SELECT rid FROM {} WHERE rtype = ",
                    table(param.kind)
                ));
            }
            sql.arg(rtype.to_string());
            sql.push(" AND param = ");
            sql.arg(param.code.clone());
            sql.push(" AND (");
            if let Some((target_type, ids)) = many_ids(modifier, values) {
                // Access criteria name thousands of patients: one JSON argument, not one per id.
                sql.push("target_type = ");
                sql.arg(target_type.to_string());
                sql.push(" AND target_id IN (");
                json_list(sql, ids);
                sql.push(")");
            } else {
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        sql.push(" OR ");
                    }
                    sql.push("(");
                    value_condition(sql, param, modifier, v);
                    sql.push(")");
                }
            }
            sql.push("))");
        }
        Criterion::Composite {
            code,
            kinds,
            values,
        } => {
            // One combination (group) of the resource must match every component.
            sql.push(&format!(
                "{alias}.rid IN (SELECT c0.rid FROM {} c0 WHERE c0.rtype = ",
                table(kinds[0])
            ));
            sql.arg(rtype.to_string());
            sql.push(" AND c0.param = ");
            sql.arg(format!("{code}#0"));
            sql.push(" AND (");
            for (i, tuple) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                sql.push("(");
                for (k, (kind, value)) in kinds.iter().zip(tuple).enumerate() {
                    let param = ParamRef {
                        code: format!("{code}#{k}"),
                        kind: *kind,
                    };
                    if k == 0 {
                        value_condition(sql, &param, &Modifier::None, value);
                        continue;
                    }
                    // Unqualified columns inside resolve to the innermost table, c{k}.
                    sql.push(&format!(
                        " AND EXISTS (SELECT 1 FROM {} c{k} WHERE c{k}.rid = c0.rid AND c{k}.grp = c0.grp AND c{k}.param = ",
                        table(*kind)
                    ));
                    sql.arg(param.code.clone());
                    sql.push(" AND (");
                    value_condition(sql, &param, &Modifier::None, value);
                    sql.push("))");
                }
                sql.push(")");
            }
            sql.push("))");
        }
        Criterion::Chain {
            param,
            target_type,
            inner,
        } if sql.correlated && sql.in_any > 0 => {
            // As for a Match inside an OR: follow the few candidate rows' references rather
            // than list every resource the chain reaches.
            let (x, target) = (sql.alias("e"), sql.alias("c"));
            sql.push(&format!(
                "EXISTS (SELECT 1 FROM idx_reference {x} JOIN resources {target} \
                 ON {target}.rtype = {x}.target_type AND {target}.id = {x}.target_id \
                 WHERE {x}.rid = {alias}.rid AND {x}.rtype = "
            ));
            sql.arg(rtype.to_string());
            sql.push(&format!(" AND {x}.param = "));
            sql.arg(param.code.clone());
            sql.push(&format!(" AND {x}.target_type = "));
            sql.arg(target_type.clone());
            sql.push(&format!(" AND {target}.deleted = 0"));
            criteria(sql, inner, &target, target_type);
            sql.push(")");
        }
        Criterion::Chain {
            param,
            target_type,
            inner,
        } => {
            let target = sql.alias("c");
            sql.push(&format!(
                "{alias}.rid IN (SELECT rid FROM idx_reference WHERE rtype = "
            ));
            sql.arg(rtype.to_string());
            sql.push(" AND param = ");
            sql.arg(param.code.clone());
            sql.push(" AND target_type = ");
            sql.arg(target_type.clone());
            sql.push(&format!(" AND target_id IN (SELECT {target}.id FROM resources {target} WHERE {target}.rtype = "));
            sql.arg(target_type.clone());
            sql.push(&format!(" AND {target}.deleted = 0"));
            criteria(sql, inner, &target, target_type);
            sql.push("))");
        }
        Criterion::Policy(list) => {
            let all = sql.literal(true);
            sql.push(&format!("({all}"));
            sql.in_policy += 1;
            criteria(sql, list, alias, rtype);
            sql.in_policy -= 1;
            sql.push(")");
        }
        Criterion::AnyOf(groups) => {
            let (none, all) = (sql.literal(false), sql.literal(true));
            sql.push(&format!("({none}"));
            sql.in_any += 1;
            for group in groups {
                sql.push(&format!(" OR ({all}"));
                criteria(sql, group, alias, rtype);
                sql.push(")");
            }
            sql.in_any -= 1;
            sql.push(")");
        }
        Criterion::Has {
            source_type,
            param,
            inner,
        } if sql.correlated && sql.in_any > 0 => {
            // The few candidate rows' referrers, through the index on reference targets.
            let (reference, source) = (sql.alias("x"), sql.alias("h"));
            sql.push(&format!(
                "EXISTS (SELECT 1 FROM idx_reference {reference} JOIN resources {source} \
                 ON {source}.rid = {reference}.rid WHERE {reference}.target_type = "
            ));
            sql.arg(rtype.to_string());
            sql.push(&format!(
                " AND {reference}.target_id = {alias}.id AND {reference}.rtype = "
            ));
            sql.arg(source_type.clone());
            sql.push(&format!(" AND {reference}.param = "));
            sql.arg(param.code.clone());
            sql.push(&format!(" AND {source}.deleted = 0"));
            criteria(sql, inner, &source, source_type);
            sql.push(")");
        }
        Criterion::Has {
            source_type,
            param,
            inner,
        } => {
            let source = sql.alias("h");
            let reference = sql.alias("x");
            sql.push(&format!(
                "{alias}.id IN (SELECT {reference}.target_id FROM idx_reference {reference} \
                 JOIN resources {source} ON {source}.rid = {reference}.rid WHERE {reference}.rtype = "
            ));
            sql.arg(source_type.clone());
            sql.push(&format!(" AND {reference}.param = "));
            sql.arg(param.code.clone());
            sql.push(&format!(" AND {reference}.target_type = "));
            sql.arg(rtype.to_string());
            sql.push(&format!(" AND {source}.deleted = 0"));
            criteria(sql, inner, &source, source_type);
            sql.push(")");
        }
    }
}

/// The condition one value puts on a row of the parameter's index table.
fn value_condition(sql: &mut Sql, param: &ParamRef, modifier: &Modifier, value: &QueryValue) {
    match value {
        QueryValue::String { normalized, exact } => match (param.kind, modifier) {
            (ParamKind::Token, _) => starts_with(sql, "text", normalized),
            (_, Modifier::Exact) => {
                sql.push("exact = ");
                sql.arg(exact.clone());
            }
            (_, Modifier::Contains) => {
                sql.push("norm LIKE ");
                sql.arg(format!("%{}%", escape_like(normalized)));
                sql.push(" ESCAPE '\\'");
            }
            _ => starts_with(sql, "norm", normalized),
        },
        QueryValue::Token { system, code } if *modifier == Modifier::OfType => {
            sql.push("of_type = ");
            sql.arg(system.clone().flatten().unwrap_or_default());
            sql.push(" AND code = ");
            sql.arg(code.clone().unwrap_or_default());
        }
        QueryValue::Token { system, code } => {
            let mut parts = 0;
            if let Some(code) = code {
                sql.push("code = ");
                sql.arg(code.clone());
                parts += 1;
            }
            match system {
                None => {}
                Some(None) => {
                    sql.push(if parts > 0 {
                        " AND system IS NULL"
                    } else {
                        "system IS NULL"
                    });
                    parts += 1;
                }
                Some(Some(s)) => {
                    sql.push(if parts > 0 {
                        " AND system = "
                    } else {
                        "system = "
                    });
                    sql.arg(s.clone());
                    parts += 1;
                }
            }
            if parts == 0 {
                let all = sql.literal(true);
                sql.push(all);
            }
        }
        QueryValue::Reference {
            target_type,
            target_id,
            url,
        } => match target_id {
            Some(id) => {
                sql.push("target_id = ");
                sql.arg(id.clone());
                if let Some(t) = target_type {
                    sql.push(" AND target_type = ");
                    sql.arg(t.clone());
                }
            }
            None => {
                sql.push("url = ");
                sql.arg(url.clone());
            }
        },
        QueryValue::Date { prefix, low, high } => date_condition(sql, *prefix, *low, *high),
        QueryValue::Number {
            prefix,
            value,
            low,
            high,
        } => number_condition(sql, *prefix, *value, *low, *high),
        QueryValue::Quantity {
            prefix,
            value,
            low,
            high,
            system,
            code,
        } => {
            number_condition(sql, *prefix, *value, *low, *high);
            if let Some(s) = system {
                sql.push(" AND system = ");
                sql.arg(s.clone());
            }
            if let Some(c) = code {
                if system.is_some() {
                    sql.push(" AND code = ");
                    sql.arg(c.clone());
                } else {
                    sql.push(" AND (code = ");
                    sql.arg(c.clone());
                    sql.push(" OR unit = ");
                    sql.arg(c.clone());
                    sql.push(")");
                }
            }
        }
        QueryValue::Uri(uri) => match modifier {
            Modifier::Below => {
                sql.push("uri LIKE ");
                sql.arg(format!("{}%", escape_like(uri)));
                sql.push(" ESCAPE '\\'");
            }
            Modifier::Above => {
                sql.push("substr(");
                sql.arg(uri.clone());
                sql.push(", 1, length(uri)) = uri");
            }
            _ => {
                sql.push("uri = ");
                sql.arg(uri.clone());
            }
        },
    }
}

fn starts_with(sql: &mut Sql, column: &str, prefix: &str) {
    sql.push(&format!("{column} >= "));
    sql.arg(prefix.to_string());
    sql.push(&format!(" AND {column} < "));
    sql.arg(format!("{prefix}{TEXT_MAX}"));
}

/// R4 search.html#prefix for ranges: the stored range `[low, high)` against the value's
/// precision range `[l, h)`.
fn date_condition(sql: &mut Sql, prefix: Prefix, l: i64, h: i64) {
    let within = |sql: &mut Sql| {
        sql.push("(low >= ");
        sql.arg(l);
        sql.push(" AND high <= ");
        sql.arg(h);
        sql.push(")");
    };
    match prefix {
        Prefix::Eq => within(sql),
        Prefix::Ne => {
            sql.push("NOT ");
            within(sql);
        }
        Prefix::Gt => {
            sql.push("high > ");
            sql.arg(h);
        }
        Prefix::Lt => {
            sql.push("low < ");
            sql.arg(l);
        }
        Prefix::Ge => {
            sql.push("high > ");
            sql.arg(h);
            sql.push(" OR ");
            within(sql);
        }
        Prefix::Le => {
            sql.push("low < ");
            sql.arg(l);
            sql.push(" OR ");
            within(sql);
        }
        Prefix::Covers => {
            sql.push("(low <= ");
            sql.arg(l);
            sql.push(" AND high >= ");
            sql.arg(h);
            sql.push(")");
        }
        Prefix::Sa => {
            sql.push("low >= ");
            sql.arg(h);
        }
        Prefix::Eb => {
            sql.push("high <= ");
            sql.arg(l);
        }
        Prefix::Ap => {
            // Approximately: the value widened by 10% of its distance from now (R4 leaves the
            // width to the server).
            let now = chrono::Utc::now().timestamp_millis();
            let gap = ((now - l).abs() / 10).max(24 * 3600 * 1000);
            sql.push("low < ");
            sql.arg(h.saturating_add(gap));
            sql.push(" AND high > ");
            sql.arg(l.saturating_sub(gap));
        }
    }
}

fn number_condition(sql: &mut Sql, prefix: Prefix, value: f64, low: f64, high: f64) {
    match prefix {
        Prefix::Eq | Prefix::Covers => {
            sql.push("value >= ");
            sql.arg(low);
            sql.push(" AND value < ");
            sql.arg(high);
        }
        Prefix::Ne => {
            sql.push("NOT (value >= ");
            sql.arg(low);
            sql.push(" AND value < ");
            sql.arg(high);
            sql.push(")");
        }
        Prefix::Gt | Prefix::Sa => {
            sql.push("value > ");
            sql.arg(value);
        }
        Prefix::Lt | Prefix::Eb => {
            sql.push("value < ");
            sql.arg(value);
        }
        Prefix::Ge => {
            sql.push("value >= ");
            sql.arg(value);
        }
        Prefix::Le => {
            sql.push("value <= ");
            sql.arg(value);
        }
        Prefix::Ap => {
            let gap = (value * 0.1).abs();
            sql.push("value >= ");
            sql.arg(value - gap);
            sql.push(" AND value <= ");
            sql.arg(value + gap);
        }
    }
}

/// The SQL expression of a sort key on the resources row `alias`, with missing values last.
fn sort_expression(sql: &mut Sql, key: &SortKey, alias: &str) {
    let param = match &key.by {
        SortBy::Id => return sql.push(&format!("{alias}.id")),
        SortBy::LastUpdated => return sql.push(&format!("{alias}.last_updated")),
        SortBy::Param(p) => p,
    };
    let (column, missing_asc, missing_desc): (&str, Arg, Arg) = match param.kind {
        ParamKind::String => ("norm", TEXT_MAX.to_string().into(), String::new().into()),
        ParamKind::Token => ("code", TEXT_MAX.to_string().into(), String::new().into()),
        ParamKind::Reference => (
            "COALESCE(target_type || '/' || target_id, url)",
            TEXT_MAX.to_string().into(),
            String::new().into(),
        ),
        ParamKind::Date if key.descending => ("high", i64::MAX.into(), i64::MIN.into()),
        ParamKind::Date => ("low", i64::MAX.into(), i64::MIN.into()),
        ParamKind::Number | ParamKind::Quantity => ("value", f64::MAX.into(), f64::MIN.into()),
        _ => ("uri", TEXT_MAX.to_string().into(), String::new().into()),
    };
    let aggregate = if key.descending { "MAX" } else { "MIN" };
    sql.push(&format!(
        "COALESCE((SELECT {aggregate}({column}) FROM {} s WHERE s.rid = {alias}.rid AND s.param = ",
        table(param.kind)
    ));
    sql.arg(param.code.clone());
    sql.push("), ");
    sql.arg(if key.descending {
        missing_desc
    } else {
        missing_asc
    });
    sql.push(")");
}

/// With a criterion that names matching rows, `+` keeps SQLite from walking every resource of
/// the type through the (rtype, id) index and makes it drive from the criterion's index instead.
/// PostgreSQL's planner costs the alternatives itself (and has no such operator on text).
fn type_term(dialect: Dialect, list: &[Criterion]) -> &'static str {
    if dialect == Dialect::Postgres {
        return "";
    }
    let selective = list.iter().any(|c| match c {
        Criterion::Missing { .. } => false,
        Criterion::Match { modifier, .. } => *modifier != Modifier::Not,
        _ => true,
    });
    if selective { "+" } else { "" }
}

/// A subquery listing `items`, bound as one JSON array argument.
fn json_list(sql: &mut Sql, items: Vec<&str>) {
    sql.push(match sql.dialect {
        Dialect::Sqlite => "SELECT value FROM json_each(",
        Dialect::Postgres => "SELECT jsonb_array_elements_text(",
    });
    sql.arg(serde_json::Value::from(items).to_string());
    sql.push(match sql.dialect {
        Dialect::Sqlite => ")",
        Dialect::Postgres => "::text::jsonb)",
    });
}

/// Above this many, ids (or references to one type by id) are matched against a list argument.
const MANY_IDS: usize = 16;

/// The target type and ids of a long OR of plain references to resources of one type.
fn many_ids<'a>(modifier: &Modifier, values: &'a [QueryValue]) -> Option<(&'a str, Vec<&'a str>)> {
    if *modifier != Modifier::None || values.len() <= MANY_IDS {
        return None;
    }
    let mut target = None;
    let mut ids = Vec::with_capacity(values.len());
    for v in values {
        let QueryValue::Reference {
            target_type: Some(t),
            target_id: Some(id),
            ..
        } = v
        else {
            return None;
        };
        if *target.get_or_insert(t.as_str()) != t.as_str() {
            return None;
        }
        ids.push(id.as_str());
    }
    target.map(|t| (t, ids))
}

/// One page of a search. Columns: `rid, version, last_updated, method, body, id`, then one
/// sort value per sort key; `count + 1` rows at most, so the caller can tell whether more follow.
pub fn page(dialect: Dialect, q: &Query) -> Sql {
    let backwards = q.cursor.as_ref().is_some_and(|c| c.backwards);
    let mut sql = Sql::new(dialect);
    sql.correlated = narrowed(&q.criteria);
    sql.push("SELECT m.rid, h.version, h.last_updated, h.method, h.body, m.id");
    for i in 0..q.sort.len() {
        sql.push(&format!(", m.k{i}"));
    }
    sql.push(" FROM (SELECT r.rid AS rid, r.seq AS seq, r.id AS id");
    for (i, key) in q.sort.iter().enumerate() {
        sql.push(", ");
        sort_expression(&mut sql, key, "r");
        sql.push(&format!(" AS k{i}"));
    }
    sql.push(&format!(
        " FROM resources r WHERE {}r.rtype = ",
        type_term(dialect, &q.criteria)
    ));
    sql.arg(q.rtype.clone());
    sql.push(" AND r.deleted = 0");
    criteria(&mut sql, &q.criteria, "r", &q.rtype);
    sql.push(") m JOIN resource_history h ON h.seq = m.seq");
    if let Some(cursor) = &q.cursor {
        sql.push(" WHERE ");
        cursor_condition(&mut sql, &q.sort, cursor);
    }
    sql.push(" ORDER BY ");
    for (i, key) in q.sort.iter().enumerate() {
        let descending = key.descending != backwards;
        sql.push(&format!(
            "m.k{i} {}, ",
            if descending { "DESC" } else { "ASC" }
        ));
    }
    sql.push(if backwards {
        "m.rid DESC LIMIT "
    } else {
        "m.rid ASC LIMIT "
    });
    sql.arg((q.count + 1) as i64);
    sql
}

/// How many current resources match a search (one `COUNT(*)` column).
/// Some criterion outside an OR narrows the rows by an index of its own.
fn narrowed(list: &[Criterion]) -> bool {
    list.iter().any(|c| match c {
        Criterion::AnyOf(_) | Criterion::Missing { .. } => false,
        Criterion::Match { modifier, .. } => *modifier != Modifier::Not,
        Criterion::Policy(inner) => narrowed(inner),
        _ => true,
    })
}

pub fn count(dialect: Dialect, q: &Query) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.correlated = narrowed(&q.criteria);
    sql.push(&format!(
        "SELECT COUNT(*) FROM resources r WHERE {}r.rtype = ",
        type_term(dialect, &q.criteria)
    ));
    sql.arg(q.rtype.clone());
    sql.push(" AND r.deleted = 0");
    criteria(&mut sql, &q.criteria, "r", &q.rtype);
    sql
}

/// Rows strictly after (or before, going back) the cursor in (keys…, rid) order.
fn cursor_condition(sql: &mut Sql, sort: &[SortKey], cursor: &Cursor) {
    let after = |descending: bool| {
        if descending != cursor.backwards {
            "<"
        } else {
            ">"
        }
    };
    sql.push("(");
    for i in 0..=sort.len() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        for j in 0..i {
            sql.push(&format!("m.k{j} = "));
            sql.arg(sort_arg(cursor.values.get(j)));
            sql.push(" AND ");
        }
        if i < sort.len() {
            sql.push(&format!("m.k{i} {} ", after(sort[i].descending)));
            sql.arg(sort_arg(cursor.values.get(i)));
        } else {
            sql.push(&format!("m.rid {} ", after(false)));
            sql.arg(cursor.row);
        }
        sql.push(")");
    }
    sql.push(")");
}

fn sort_arg(value: Option<&SortValue>) -> Arg {
    match value {
        Some(SortValue::Int(n)) => Arg::Int(*n),
        Some(SortValue::Real(f)) => Arg::Real(*f),
        Some(SortValue::Text(t)) => Arg::Text(t.clone()),
        None => Arg::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query::Criterion;

    fn query(criteria: Vec<Criterion>) -> Query {
        Query {
            rtype: "Patient".into(),
            criteria,
            sort: vec![],
            count: 10,
            cursor: None,
            with_total: false,
        }
    }

    #[test]
    fn placeholders_follow_the_dialect() {
        let q = query(vec![Criterion::Ids(vec!["a".into(), "b".into()])]);
        let lite = count(Dialect::Sqlite, &q);
        assert_eq!(
            lite.text,
            "SELECT COUNT(*) FROM resources r WHERE +r.rtype = ? AND r.deleted = 0 AND r.id IN (?, ?)"
        );
        let pg = count(Dialect::Postgres, &q);
        assert_eq!(
            pg.text,
            "SELECT COUNT(*) FROM resources r WHERE r.rtype = $1 AND r.deleted = 0 AND r.id IN ($2, $3)"
        );
        assert_eq!(lite.args, pg.args);
    }

    #[test]
    fn booleans_and_empty_lists_are_valid_postgres() {
        let q = query(vec![Criterion::AnyOf(vec![vec![Criterion::Ids(vec![])]])]);
        assert_eq!(
            count(Dialect::Postgres, &q).text,
            "SELECT COUNT(*) FROM resources r WHERE r.rtype = $1 AND r.deleted = 0 AND (FALSE OR (TRUE AND FALSE))"
        );
        assert_eq!(
            count(Dialect::Sqlite, &q).text,
            "SELECT COUNT(*) FROM resources r WHERE +r.rtype = ? AND r.deleted = 0 AND (0 OR (1 AND r.id IN ()))"
        );
    }

    #[test]
    fn long_id_lists_are_one_json_argument() {
        let ids: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
        let q = query(vec![Criterion::Ids(ids.clone())]);
        let lite = count(Dialect::Sqlite, &q);
        assert!(
            lite.text
                .ends_with("r.id IN (SELECT value FROM json_each(?))"),
            "{}",
            lite.text
        );
        assert_eq!(lite.args.len(), 2);
        let pg = count(Dialect::Postgres, &q);
        assert!(
            pg.text
                .ends_with("r.id IN (SELECT jsonb_array_elements_text($2::text::jsonb))"),
            "{}",
            pg.text
        );
        assert_eq!(
            pg.args[1],
            Arg::Text(serde_json::Value::from(ids).to_string())
        );
    }

    #[test]
    fn a_policy_is_written_as_literals_and_the_rest_stays_bound() {
        let q = query(vec![
            Criterion::Ids(vec!["asked-for".into()]),
            Criterion::Policy(vec![Criterion::Ids(vec![
                "o'brien".into(),
                "nul\0".into(),
                "back\\slash".into(),
            ])]),
        ]);
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let sql = count(dialect, &q);
            assert!(sql.literals, "{}", sql.text);
            // A quote is doubled; a value SQL text cannot hold stays a bound argument.
            assert!(sql.text.contains("r.id IN ('o''brien', "), "{}", sql.text);
            assert_eq!(
                sql.args,
                vec![
                    Arg::Text("Patient".into()),
                    Arg::Text("asked-for".into()),
                    Arg::Text("nul\0".into()),
                    Arg::Text("back\\slash".into())
                ]
            );
        }
        let plain = count(
            Dialect::Postgres,
            &query(vec![Criterion::Ids(vec!["a".into()])]),
        );
        assert!(!plain.literals);
    }
}
