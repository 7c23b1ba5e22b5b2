//! search: `GET [type]?params` and `POST [type]/_search`, answered with a searchset Bundle.
//! Parameters the server does not know are ignored and reported in an OperationOutcome entry
//! (`search.mode = outcome`), or refused with 400 under `Prefer: handling=strict`.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::history::with_query;
use super::{Ctx, FhirResponse};
use crate::access::Access;
use crate::auth::scopes::Letter;
use crate::error::{FhirError, FhirResult, Issue, operation_outcome};
use crate::fhir::bundle;
use crate::fhir::summary::{self, Subset};
use crate::search::parse::{self, Include, SearchRequest, Summary};
use crate::store::query::{Cursor, Match, Page};
use crate::store::{Reader, Version};

/// How many rounds `:iterate` includes may take.
const MAX_INCLUDE_ROUNDS: usize = 4;
/// How many resources includes may add to one page.
const MAX_INCLUDED: usize = 1000;

/// Run a type-level search.
pub fn search(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    rtype: &str,
    query: &[(String, String)],
    strict: bool,
) -> FhirResult<FhirResponse> {
    let grant = access.require(rtype, Letter::S)?;
    let mut req = parse::parse(&ctx.search, rtype, query, &ctx.base_url)?;
    access.restrict_nested(ctx, reader, &mut req.query.criteria)?;
    req.query
        .criteria
        .extend(access.criterion(ctx, reader, rtype, &grant)?);
    if strict && let Some(name) = req.unknown.first() {
        return Err(FhirError::bad_value(
            "not-supported",
            format!("unknown search parameter `{name}` on {rtype}"),
            name.clone(),
        ));
    }
    let per_match = access.checks_each_match();
    let page = if per_match {
        let mut page = visible_page(ctx, access, reader, rtype, &req.query)?;
        if req.query.with_total && page.total.is_none() {
            page.total = Some(exact_total(ctx, access, reader, rtype, &req.query)?);
        }
        page
    } else {
        reader.search(&req.query)?
    };
    let path = format!("{}/{rtype}", ctx.base_url);
    let links = page_links(&path, &req, &page.matches, page.more);

    let subset = match (req.summary, &req.elements) {
        (Summary::True, _) => Some(Subset::Summary),
        (Summary::Text, _) => Some(Subset::Text),
        (Summary::Data, _) => Some(Subset::Data),
        (_, Some(list)) => Some(Subset::Elements(list.as_slice())),
        _ => None,
    };
    let mut entries = Vec::with_capacity(page.matches.len());
    for m in &page.matches {
        entries.push(entry(&ctx.base_url, &m.version, "match", subset)?);
    }
    if req.summary != Summary::Count {
        for v in included(ctx, access, reader, &req, &page.matches)? {
            entries.push(entry(&ctx.base_url, &v, "include", subset)?);
        }
    }
    if !req.unknown.is_empty() {
        let issues: Vec<Issue> = req
            .unknown
            .iter()
            .map(|n| Issue {
                severity: "warning",
                code: "not-supported",
                diagnostics: format!("unknown search parameter `{n}` on {rtype} was ignored"),
                expression: Some(n.clone()),
            })
            .collect();
        entries.push(
            json!({ "resource": operation_outcome(&issues), "search": { "mode": "outcome" } }),
        );
    }
    Ok(FhirResponse::json(bundle::bundle(
        "searchset",
        page.total,
        links,
        entries,
    )))
}

/// Whether consent releases a match (when the query could not hold the whole decision).
fn released(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    rtype: &str,
    m: &Match,
) -> FhirResult<bool> {
    let Some(text) = m.version.body.as_deref() else {
        return Ok(false);
    };
    let body: Value = serde_json::from_str(text).map_err(FhirError::internal)?;
    access.consent_permits(ctx, reader, "access", rtype, &m.version.id, &body)
}

/// A page of the matches consent releases, when it is decided per resource after the query:
/// the store is read on past withheld rows until the page is full, so pages stay full and
/// `next` is offered only when a released match follows. When the query asks for a total and
/// this first page decided every match there is, the page carries that total.
pub(crate) fn visible_page(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    rtype: &str,
    query: &crate::store::query::Query,
) -> FhirResult<Page> {
    let want = query.count;
    let backwards = query.cursor.as_ref().is_some_and(|c| c.backwards);
    let mut q = query.clone();
    q.with_total = false;
    // Kept in the direction of travel.
    let mut kept: Vec<Match> = Vec::new();
    let decided_all = loop {
        let page = reader.search(&q)?;
        let mut examined = page.matches;
        if backwards {
            examined.reverse();
        }
        let furthest = examined.last().map(|m| Cursor {
            values: m.sort_values.clone(),
            row: m.row,
            backwards,
        });
        for m in examined {
            if released(ctx, access, reader, rtype, &m)? {
                kept.push(m);
                if kept.len() > want {
                    break;
                }
            }
        }
        match furthest {
            Some(cursor) if kept.len() <= want && page.more => q.cursor = Some(cursor),
            _ => break !page.more && kept.len() <= want,
        }
    };
    let more = kept.len() > want;
    let total =
        (query.with_total && query.cursor.is_none() && decided_all).then_some(kept.len() as u64);
    kept.truncate(want);
    if backwards {
        kept.reverse();
    }
    Ok(Page {
        matches: kept,
        more,
        total,
    })
}

/// How many matches the requester may see, when consent is decided per resource after the
/// query: the query's count would tell that hidden resources exist.
fn exact_total(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    rtype: &str,
    query: &crate::store::query::Query,
) -> FhirResult<u64> {
    const BATCH: usize = 1000;
    let mut q = query.clone();
    q.count = BATCH;
    q.cursor = None;
    q.with_total = false;
    let mut total = 0;
    loop {
        let page = reader.search(&q)?;
        for m in &page.matches {
            if released(ctx, access, reader, rtype, m)? {
                total += 1;
            }
        }
        match page.matches.last() {
            Some(last) if page.more => {
                q.cursor = Some(Cursor {
                    values: last.sort_values.clone(),
                    row: last.row,
                    backwards: false,
                });
            }
            _ => return Ok(total),
        }
    }
}

fn entry(base: &str, v: &Version, mode: &str, subset: Option<Subset<'_>>) -> FhirResult<Value> {
    let mut e = bundle::search_entry(base, v, mode)?;
    if let Some(subset) = subset {
        summary::apply(&mut e["resource"], subset);
    }
    Ok(e)
}

/// `self`, `next` and `previous`, as keyset cursors on the first and last rows of the page.
fn page_links(
    path: &str,
    req: &SearchRequest,
    matches: &[Match],
    more: bool,
) -> Vec<(&'static str, String)> {
    let link = |cursor: Option<Cursor>| {
        let mut q = req.applied.clone();
        if let Some(c) = cursor {
            q.push(("_cursor".into(), parse::encode_cursor(&c)));
        }
        with_query(path, &q)
    };
    let mut links = vec![("self", link(req.query.cursor.clone()))];
    let backwards = req.query.cursor.as_ref().is_some_and(|c| c.backwards);
    let first_page = req.query.cursor.is_none();
    let at = |m: &Match, backwards: bool| Cursor {
        values: m.sort_values.clone(),
        row: m.row,
        backwards,
    };
    let has_next = if backwards { true } else { more };
    let has_previous = if backwards { more } else { !first_page };
    if has_next && let Some(last) = matches.last() {
        links.push(("next", link(Some(at(last, false)))));
    }
    if has_previous && let Some(first) = matches.first() {
        links.push(("previous", link(Some(at(first, true)))));
    }
    links
}

/// `_include` and `_revinclude` (with `:iterate`) for the page's matches, each resource once.
fn included(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    req: &SearchRequest,
    matches: &[Match],
) -> FhirResult<Vec<Version>> {
    if req.includes.is_empty() && req.revincludes.is_empty() {
        return Ok(vec![]);
    }
    let mut seen: HashSet<(String, String)> = matches
        .iter()
        .map(|m| (m.version.rtype.clone(), m.version.id.clone()))
        .collect();
    let mut frontier: Vec<(String, String)> = seen.iter().cloned().collect();
    let mut out = Vec::new();
    for round in 0..MAX_INCLUDE_ROUNDS {
        let mut found = Vec::new();
        let active = |i: &&Include| round == 0 || i.iterate;
        for inc in req.includes.iter().filter(active) {
            let sources: Vec<(String, String)> = frontier
                .iter()
                .filter(|(t, _)| *t == inc.source_type)
                .cloned()
                .collect();
            if !sources.is_empty() {
                found.extend(reader.outgoing(
                    &sources,
                    inc.param.as_deref(),
                    inc.target_type.as_deref(),
                )?);
            }
        }
        for inc in req.revincludes.iter().filter(active) {
            let targets: Vec<(String, String)> = frontier
                .iter()
                .filter(|(t, _)| inc.target_type.as_ref().is_none_or(|tt| tt == t))
                .cloned()
                .collect();
            if !targets.is_empty() {
                found.extend(reader.incoming(&inc.source_type, inc.param.as_deref(), &targets)?);
            }
        }
        frontier.clear();
        for key in found {
            if out.len() >= MAX_INCLUDED || !seen.insert(key.clone()) {
                continue;
            }
            if let Some(v) = reader.current(&key.0, &key.1)?
                && !v.is_deleted()
                && super::read::visible(ctx, access, reader, &access.grant(&key.0, Letter::S), &v)?
            {
                out.push(v);
                frontier.push(key);
            }
        }
        if frontier.is_empty() {
            break;
        }
    }
    Ok(out)
}
