//! From query parameters to a store [`Query`] plus result control (`_include`, `_summary`, …).
//!
//! R4 search.html: a parameter the server does not know is ignored (and reported), but a
//! known parameter with a bad value, modifier or prefix is an error naming the parameter.

use base64::Engine;

use super::model::ParamKind;
use super::registry::SearchRegistry;
use super::values;
use crate::error::{FhirError, FhirResult};
use crate::fhir::structure;
use crate::store::query::{
    Criterion, Cursor, Modifier, ParamRef, Query, SortBy, SortKey, SortValue,
};

/// Default page size.
pub const DEFAULT_COUNT: usize = 50;
/// Largest page size.
pub const MAX_COUNT: usize = 1000;
/// How deep chains and `_has` may nest.
const MAX_CHAIN_DEPTH: usize = 3;

/// `_include` / `_revinclude`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// The referring type.
    pub source_type: String,
    /// Its reference parameter (`None` for `*`).
    pub param: Option<String>,
    /// Only targets of this type.
    pub target_type: Option<String>,
    /// `:iterate`: apply to included resources too.
    pub iterate: bool,
}

/// `_summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Summary {
    /// Full resources.
    #[default]
    False,
    /// Summary elements only.
    True,
    /// Text, id, meta and mandatory elements.
    Text,
    /// Everything but the narrative.
    Data,
    /// Only the count.
    Count,
}

/// `_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalMode {
    /// No total.
    None,
    /// An estimate is fine (we give the exact count).
    Estimate,
    /// The exact count.
    Accurate,
}

/// A parsed search request.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The store query.
    pub query: Query,
    /// `_include`s.
    pub includes: Vec<Include>,
    /// `_revinclude`s.
    pub revincludes: Vec<Include>,
    /// `_summary`.
    pub summary: Summary,
    /// `_elements`.
    pub elements: Option<Vec<String>>,
    /// Parameters not understood (ignored).
    pub unknown: Vec<String>,
    /// The parameters applied, in order, for `self`/`next` links (without `_cursor`).
    pub applied: Vec<(String, String)>,
}

/// Parse a type-level search.
pub fn parse(
    registry: &SearchRegistry,
    rtype: &str,
    pairs: &[(String, String)],
    base_url: &str,
) -> FhirResult<SearchRequest> {
    let mut req = SearchRequest {
        query: Query {
            rtype: rtype.to_string(),
            criteria: vec![],
            sort: vec![],
            count: DEFAULT_COUNT,
            cursor: None,
            with_total: true,
        },
        includes: vec![],
        revincludes: vec![],
        summary: Summary::False,
        elements: None,
        unknown: vec![],
        applied: vec![],
    };
    let mut total = TotalMode::Accurate;
    for (name, value) in pairs {
        let (base_name, name_modifier) = name
            .split_once(':')
            .map_or((name.as_str(), None), |(n, m)| (n, Some(m)));
        let mut applied = true;
        match base_name {
            "_count" => req.query.count = parse_count(value)?,
            "_sort" => req.query.sort = parse_sort(registry, rtype, value)?,
            "_include" | "_revinclude" => {
                let iterate = match name_modifier {
                    None => false,
                    Some("iterate" | "recurse") => true,
                    Some(m) => return Err(bad(name, format!("unknown modifier `{m}`"))),
                };
                let include = parse_include(
                    registry,
                    rtype,
                    name,
                    value,
                    iterate,
                    base_name == "_revinclude",
                )?;
                if base_name == "_include" {
                    req.includes.push(include);
                } else {
                    req.revincludes.push(include);
                }
            }
            "_total" => {
                total = match value.as_str() {
                    "none" => TotalMode::None,
                    "estimate" => TotalMode::Estimate,
                    "accurate" => TotalMode::Accurate,
                    other => {
                        return Err(bad(
                            name,
                            format!("`{other}` is not none, estimate or accurate"),
                        ));
                    }
                }
            }
            "_summary" => {
                req.summary = match value.as_str() {
                    "true" => Summary::True,
                    "false" => Summary::False,
                    "text" => Summary::Text,
                    "data" => Summary::Data,
                    "count" => Summary::Count,
                    other => {
                        return Err(bad(
                            name,
                            format!("`{other}` is not true, false, text, data or count"),
                        ));
                    }
                }
            }
            "_elements" => {
                req.elements = Some(
                    value
                        .split(',')
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty())
                        .collect(),
                );
            }
            "_cursor" => {
                req.query.cursor = Some(decode_cursor(value)?);
                applied = false;
            }
            "_format" | "_pretty" => {}
            _ => match criterion(registry, rtype, name, value, base_url, 0)? {
                Some(c) => req.query.criteria.push(c),
                None => {
                    req.unknown.push(name.clone());
                    applied = false;
                }
            },
        }
        if applied {
            req.applied.push((name.clone(), value.clone()));
        }
    }
    req.query.with_total = total != TotalMode::None || req.summary == Summary::Count;
    if req.summary == Summary::Count {
        req.query.count = 0;
    }
    Ok(req)
}

/// Parse the criteria of a conditional interaction: every parameter must be understood
/// (ignoring one could match the wrong resource) and there must be at least one.
pub fn parse_conditional(
    registry: &SearchRegistry,
    rtype: &str,
    pairs: &[(String, String)],
    base_url: &str,
) -> FhirResult<Vec<Criterion>> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        match criterion(registry, rtype, name, value, base_url, 0)? {
            Some(c) => out.push(c),
            None => {
                return Err(FhirError::bad_value(
                    "not-supported",
                    format!("conditional criteria use the unknown parameter `{name}` on {rtype}"),
                    name.clone(),
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(FhirError::bad_request(
            "conditional criteria must name at least one search parameter",
        ));
    }
    Ok(out)
}

fn bad(param: &str, message: impl std::fmt::Display) -> FhirError {
    FhirError::bad_value(
        "value",
        format!("search parameter `{param}`: {message}"),
        param.to_string(),
    )
}

/// Parse `_count` (0 allowed, capped at [`MAX_COUNT`]).
pub fn parse_count(value: &str) -> FhirResult<usize> {
    value
        .parse::<usize>()
        .map(|n| n.min(MAX_COUNT))
        .map_err(|_| bad("_count", format!("`{value}` is not a non-negative integer")))
}

fn parse_sort(registry: &SearchRegistry, rtype: &str, value: &str) -> FhirResult<Vec<SortKey>> {
    let mut keys = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (descending, code) = part.strip_prefix('-').map_or((false, part), |c| (true, c));
        let by = match code {
            "_id" => SortBy::Id,
            "_lastUpdated" => SortBy::LastUpdated,
            _ => {
                let def = registry.param(rtype, code).ok_or_else(|| {
                    bad(
                        "_sort",
                        format!("`{code}` is not a search parameter of {rtype}"),
                    )
                })?;
                if def.kind == ParamKind::Composite {
                    return Err(bad(
                        "_sort",
                        format!("`{code}` is a composite parameter and cannot sort"),
                    ));
                }
                SortBy::Param(ParamRef {
                    code: def.code.clone(),
                    kind: def.kind,
                })
            }
        };
        keys.push(SortKey { by, descending });
    }
    Ok(keys)
}

fn parse_include(
    registry: &SearchRegistry,
    rtype: &str,
    name: &str,
    value: &str,
    iterate: bool,
    reverse: bool,
) -> FhirResult<Include> {
    if value == "*" {
        return Ok(Include {
            source_type: rtype.to_string(),
            param: None,
            target_type: None,
            iterate,
        });
    }
    let mut parts = value.split(':');
    let source = parts.next().unwrap_or_default();
    let param = parts
        .next()
        .ok_or_else(|| bad(name, format!("`{value}` is not Type:parameter[:Target]")))?;
    let target = parts.next();
    if !structure::is_resource_type(source) {
        return Err(bad(name, format!("`{source}` is not a resource type")));
    }
    if !reverse && !iterate && source != rtype {
        return Err(bad(
            name,
            format!("`{value}` does not start with the searched type {rtype}"),
        ));
    }
    if let Some(t) = target
        && !structure::is_resource_type(t)
    {
        return Err(bad(name, format!("`{t}` is not a resource type")));
    }
    if param == "*" {
        return Ok(Include {
            source_type: source.to_string(),
            param: None,
            target_type: target.map(str::to_string),
            iterate,
        });
    }
    match registry.param(source, param) {
        Some(def) if def.kind == ParamKind::Reference => Ok(Include {
            source_type: source.to_string(),
            param: Some(param.to_string()),
            target_type: target.map(str::to_string),
            iterate,
        }),
        Some(_) => Err(bad(
            name,
            format!("`{param}` is not a reference parameter of {source}"),
        )),
        None => Err(bad(
            name,
            format!("`{param}` is not a search parameter of {source}"),
        )),
    }
}

/// One criterion from `name=value`; `Ok(None)` when the parameter is unknown.
fn criterion(
    registry: &SearchRegistry,
    rtype: &str,
    name: &str,
    value: &str,
    base_url: &str,
    depth: usize,
) -> FhirResult<Option<Criterion>> {
    if depth > MAX_CHAIN_DEPTH {
        return Err(bad(name, "chains and _has nest too deeply"));
    }
    if let Some(rest) = name.strip_prefix("_has:") {
        return has(registry, rtype, name, rest, value, base_url, depth);
    }
    if let Some((head, tail)) = name.split_once('.') {
        return chain(registry, rtype, name, head, tail, value, base_url, depth);
    }
    let (code, modifier) = name
        .split_once(':')
        .map_or((name, None), |(c, m)| (c, Some(m)));
    if code == "_id" && modifier.is_none() {
        let ids: Vec<String> = values::split_or(value);
        if ids.iter().any(|i| !crate::fhir::ids::is_valid_id(i)) {
            return Err(bad(name, format!("`{value}` holds an invalid id")));
        }
        return Ok(Some(Criterion::Ids(ids)));
    }
    if rtype == "Patient" && code == super::child_welfare::PARAM {
        if let Some(m) = modifier {
            return Err(bad(name, format!("modifier `{m}` is not supported here")));
        }
        return super::child_welfare::criterion(value).map(Some);
    }
    let Some(def) = registry.param(rtype, code) else {
        return Ok(None);
    };
    let param = ParamRef {
        code: def.code.clone(),
        kind: def.kind,
    };
    if modifier == Some("missing") && def.kind == ParamKind::Composite {
        return Err(FhirError::bad_value(
            "not-supported",
            format!(
                "search parameter `{name}`: :missing is not supported on a composite parameter"
            ),
            name.to_string(),
        ));
    }
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            other => {
                return Err(bad(
                    name,
                    format!(":missing takes true or false, not `{other}`"),
                ));
            }
        };
        return Ok(Some(Criterion::Missing { param, missing }));
    }
    let parsed_modifier = match (def.kind, modifier) {
        (_, None) => Modifier::None,
        (ParamKind::String, Some("exact")) => Modifier::Exact,
        (ParamKind::String, Some("contains")) => Modifier::Contains,
        (ParamKind::Token, Some("not")) => Modifier::Not,
        (ParamKind::Token, Some("text")) => Modifier::Text,
        (ParamKind::Token, Some("of-type")) if def.code == "identifier" => Modifier::OfType,
        (ParamKind::Uri, Some("below")) => Modifier::Below,
        (ParamKind::Uri, Some("above")) => Modifier::Above,
        (ParamKind::Reference, Some(t)) if structure::is_resource_type(t) => {
            if !def.targets_for(rtype).is_empty() && !def.targets_for(rtype).iter().any(|x| x == t)
            {
                return Err(bad(name, format!("`{code}` cannot refer to a {t}")));
            }
            Modifier::None
        }
        (_, Some(m)) => {
            return Err(FhirError::bad_value(
                "not-supported",
                format!(
                    "search parameter `{name}`: the modifier `:{m}` is not supported on a {} parameter",
                    def.kind.code()
                ),
                name.to_string(),
            ));
        }
    };
    if def.kind == ParamKind::Composite {
        let kinds: Vec<ParamKind> = def.components.iter().map(|c| c.kind).collect();
        let mut tuples = Vec::new();
        for part in values::split_or(value) {
            let pieces = values::split_composite(&part);
            if pieces.len() != kinds.len() {
                return Err(bad(
                    name,
                    format!("`{part}` needs {} `$`-separated components", kinds.len()),
                ));
            }
            let tuple = kinds
                .iter()
                .zip(&pieces)
                .map(|(kind, piece)| {
                    values::parse_value(*kind, None, piece, base_url).map_err(|e| bad(name, e))
                })
                .collect::<FhirResult<Vec<_>>>()?;
            tuples.push(tuple);
        }
        return Ok(Some(Criterion::Composite {
            code: def.code.clone(),
            kinds,
            values: tuples,
        }));
    }
    let mut parsed = Vec::new();
    for part in values::split_or(value) {
        let v =
            values::parse_value(def.kind, modifier, &part, base_url).map_err(|e| bad(name, e))?;
        parsed.push(v);
    }
    if parsed.is_empty() {
        return Err(bad(name, "has no value"));
    }
    Ok(Some(Criterion::Match {
        param,
        modifier: parsed_modifier,
        values: parsed,
    }))
}

#[expect(
    clippy::too_many_arguments,
    reason = "one recursive step of the criterion parser"
)]
fn chain(
    registry: &SearchRegistry,
    rtype: &str,
    name: &str,
    head: &str,
    tail: &str,
    value: &str,
    base_url: &str,
    depth: usize,
) -> FhirResult<Option<Criterion>> {
    let (code, type_modifier) = head
        .split_once(':')
        .map_or((head, None), |(c, t)| (c, Some(t)));
    let Some(def) = registry.param(rtype, code) else {
        return Ok(None);
    };
    if def.kind != ParamKind::Reference {
        return Err(bad(
            name,
            format!("`{code}` is not a reference parameter, so it cannot be chained"),
        ));
    }
    let inner_code = tail.split(['.', ':']).next().unwrap_or_default();
    let candidates: Vec<&str> = match type_modifier {
        Some(t) if structure::is_resource_type(t) => vec![t],
        Some(t) => return Err(bad(name, format!("`{t}` is not a resource type"))),
        None => def
            .targets_for(rtype)
            .iter()
            .map(String::as_str)
            .filter(|t| inner_code == "_id" || registry.param(t, inner_code).is_some())
            .collect(),
    };
    let target_type = match candidates.as_slice() {
        [one] => one.to_string(),
        [] => {
            return Err(bad(
                name,
                format!("no type `{code}` refers to has a parameter `{inner_code}`"),
            ));
        }
        several => {
            return Err(bad(
                name,
                format!(
                    "`{code}` may refer to {}; name one, e.g. `{code}:{}.{tail}`",
                    several.join(", "),
                    several[0]
                ),
            ));
        }
    };
    let inner =
        criterion(registry, &target_type, tail, value, base_url, depth + 1)?.ok_or_else(|| {
            bad(
                name,
                format!("`{tail}` is not a search parameter of {target_type}"),
            )
        })?;
    Ok(Some(Criterion::Chain {
        param: ParamRef {
            code: def.code.clone(),
            kind: def.kind,
        },
        target_type,
        inner: vec![inner],
    }))
}

fn has(
    registry: &SearchRegistry,
    rtype: &str,
    name: &str,
    rest: &str,
    value: &str,
    base_url: &str,
    depth: usize,
) -> FhirResult<Option<Criterion>> {
    let mut parts = rest.splitn(3, ':');
    let (Some(source_type), Some(ref_code), Some(inner_name)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(name, "expected _has:Type:reference:parameter"));
    };
    if !structure::is_resource_type(source_type) {
        return Err(bad(name, format!("`{source_type}` is not a resource type")));
    }
    let def = registry
        .param(source_type, ref_code)
        .filter(|d| d.kind == ParamKind::Reference)
        .ok_or_else(|| {
            bad(
                name,
                format!("`{ref_code}` is not a reference parameter of {source_type}"),
            )
        })?;
    if !def.targets_for(source_type).is_empty()
        && !def.targets_for(source_type).iter().any(|t| t == rtype)
    {
        return Err(bad(
            name,
            format!("{source_type}.{ref_code} cannot refer to a {rtype}"),
        ));
    }
    let inner = criterion(
        registry,
        source_type,
        inner_name,
        value,
        base_url,
        depth + 1,
    )?
    .ok_or_else(|| {
        bad(
            name,
            format!("`{inner_name}` is not a search parameter of {source_type}"),
        )
    })?;
    Ok(Some(Criterion::Has {
        source_type: source_type.to_string(),
        param: ParamRef {
            code: def.code.clone(),
            kind: def.kind,
        },
        inner: vec![inner],
    }))
}

/// Cursors travel in links as base64url JSON: `[backwards, row, "i:12" | "r:1.5" | "t:text", …]`
/// (tagged strings, so numbers survive exactly).
pub fn encode_cursor(cursor: &Cursor) -> String {
    let mut items = vec![
        serde_json::json!(cursor.backwards),
        serde_json::json!(cursor.row),
    ];
    for v in &cursor.values {
        items.push(serde_json::Value::String(match v {
            SortValue::Int(n) => format!("i:{n}"),
            SortValue::Real(f) => format!("r:{f}"),
            SortValue::Text(t) => format!("t:{t}"),
        }));
    }
    let json = serde_json::to_vec(&items).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

pub fn decode_cursor(value: &str) -> FhirResult<Cursor> {
    let invalid = || bad("_cursor", "is not a cursor this server issued");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| invalid())?;
    let items: Vec<serde_json::Value> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let backwards = items
        .first()
        .and_then(serde_json::Value::as_bool)
        .ok_or_else(invalid)?;
    let row = items
        .get(1)
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(invalid)?;
    let mut values = Vec::new();
    for item in items.iter().skip(2) {
        let text = item.as_str().ok_or_else(invalid)?;
        values.push(match text.split_at_checked(2) {
            Some(("i:", n)) => SortValue::Int(n.parse().map_err(|_| invalid())?),
            Some(("r:", f)) => SortValue::Real(f.parse().map_err(|_| invalid())?),
            Some(("t:", t)) => SortValue::Text(t.to_string()),
            _ => return Err(invalid()),
        });
    }
    Ok(Cursor {
        values,
        row,
        backwards,
    })
}
