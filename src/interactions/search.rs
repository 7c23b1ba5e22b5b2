//! search: `GET [type]?params` and `POST [type]/_search`, answered with a searchset Bundle.
//! Parameters the server does not support are ignored and reported in an OperationOutcome
//! entry, or refused with 400 under `Prefer: handling=strict`.

use serde_json::{Value, json};

use super::history::{DEFAULT_COUNT, parse_count, with_query};
use super::{Ctx, FhirResponse};
use crate::error::{FhirError, FhirResult, Issue, operation_outcome};
use crate::fhir::bundle;
use crate::store::Reader;

/// Run a type-level search.
pub fn search(
    ctx: &Ctx,
    reader: &mut dyn Reader,
    rtype: &str,
    query: &[(String, String)],
    strict: bool,
) -> FhirResult<FhirResponse> {
    let parsed = ctx.search.parse(rtype, query)?;
    if strict && let Some((name, _)) = parsed.unknown.first() {
        return Err(FhirError::bad_value(
            "not-supported",
            format!("unknown search parameter `{name}` on {rtype}"),
            name.clone(),
        ));
    }
    let mut count = DEFAULT_COUNT;
    let mut offset = 0usize;
    for (name, value) in &parsed.control {
        match name.as_str() {
            "_count" => count = parse_count(value)?,
            "_offset" => {
                offset = value.parse().map_err(|_| {
                    FhirError::bad_value(
                        "value",
                        format!("_offset `{value}` is not valid"),
                        "_offset",
                    )
                })?;
            }
            _ => {}
        }
    }
    let page = reader.search(rtype, &parsed.criteria, offset, count)?;
    let path = format!("{}/{rtype}", ctx.base_url);
    let applied: Vec<(String, String)> = query
        .iter()
        .filter(|(n, _)| !parsed.unknown.iter().any(|(u, _)| u == n) && n != "_offset")
        .cloned()
        .collect();
    let page_link = |at: usize| {
        let mut q = applied.clone();
        if at > 0 {
            q.push(("_offset".into(), at.to_string()));
        }
        with_query(&path, &q)
    };
    let mut links = vec![("self", page_link(offset))];
    if count > 0 && (offset + count) < page.total as usize {
        links.push(("next", page_link(offset + count)));
    }
    if offset > 0 {
        links.push(("previous", page_link(offset.saturating_sub(count.max(1)))));
    }
    let mut entries = page
        .matches
        .iter()
        .map(|v| bundle::search_entry(&ctx.base_url, v, "match"))
        .collect::<FhirResult<Vec<Value>>>()?;
    if !parsed.unknown.is_empty() {
        let issues: Vec<Issue> = parsed
            .unknown
            .iter()
            .map(|(n, _)| Issue {
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
        Some(page.total),
        links,
        entries,
    )))
}
