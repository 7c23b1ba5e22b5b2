//! history: `GET [base]/_history`, `GET [type]/_history`, `GET [type]/[id]/_history`,
//! newest first, with `_since`, `_count` and cursor paging that stays stable while new
//! versions are written (new versions only ever appear before the first page).

use super::{Ctx, FhirResponse, Target};
use crate::access::{Access, Grant};
use crate::auth::scopes::Letter;
use crate::error::{FhirError, FhirResult};
use crate::fhir::{bundle, ids};
use crate::store::{HistoryQuery, HistoryScope, Reader};

/// Default and maximum page sizes.
pub const DEFAULT_COUNT: usize = 50;
/// Largest `_count` honoured.
pub const MAX_COUNT: usize = 1000;

/// List versions as a `history` Bundle.
pub fn history(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    target: &Target,
    query: &[(String, String)],
) -> FhirResult<FhirResponse> {
    // SMART: instance history is `r`, type and system history are `s`.
    let (scope, grant) = match target {
        Target::SystemHistory => (HistoryScope::System, access.require_all_types(Letter::S)?),
        Target::TypeHistory(t) => (HistoryScope::Type(t.clone()), access.require(t, Letter::S)?),
        Target::InstanceHistory(t, id) => {
            let grant = if access.is_own_user(t, id) {
                Grant::All
            } else {
                access.require(t, Letter::R)?
            };
            let visible = match reader.current(t, id)? {
                None => false,
                Some(v) => super::read::visible(ctx, access, reader, &grant, &v)?,
            };
            if !visible {
                return Err(FhirError::NotFound(format!("{t}/{id} is not known")));
            }
            (HistoryScope::Instance(t.clone(), id.clone()), grant)
        }
        _ => return Err(FhirError::bad_request("not a history URL")),
    };
    let mut q = HistoryQuery {
        scope,
        since: None,
        before_seq: None,
        count: DEFAULT_COUNT,
    };
    for (name, value) in query {
        match name.as_str() {
            "_since" => {
                q.since = Some(ids::parse_instant_param(value).ok_or_else(|| {
                    FhirError::bad_value(
                        "value",
                        format!("_since `{value}` is not an instant"),
                        "_since",
                    )
                })?);
            }
            "_count" => q.count = parse_count(value)?,
            "_cursor" => {
                q.before_seq = Some(value.parse().map_err(|_| {
                    FhirError::bad_value(
                        "value",
                        format!("_cursor `{value}` is not valid"),
                        "_cursor",
                    )
                })?);
            }
            "_format" => {}
            other => {
                return Err(FhirError::bad_value(
                    "not-supported",
                    format!("history does not support the parameter `{other}`"),
                    other.to_string(),
                ));
            }
        }
    }
    let page = reader.history(&q)?;
    let path = format!("{}/{}", ctx.base_url, target.path());
    let mut keep: Vec<(String, String)> = query
        .iter()
        .filter(|(n, _)| n != "_cursor")
        .cloned()
        .collect();
    let self_link = with_query(&path, query);
    let mut links = vec![("self", self_link)];
    if page.entries.len() == q.count
        && let Some((last_seq, _)) = page.entries.last()
    {
        keep.push(("_cursor".into(), last_seq.to_string()));
        links.push(("next", with_query(&path, &keep)));
    }
    let restricted = grant != Grant::All || !access.consent_exempt();
    let mut entries = Vec::with_capacity(page.entries.len());
    for (_, v) in &page.entries {
        // A restricted grant is decided entry by entry (and for each entry's own type at
        // system level); the total would count what the requester may not see, so it goes.
        if restricted || matches!(target, Target::SystemHistory) {
            let entry_grant = match target {
                Target::SystemHistory => access.grant(&v.rtype, Letter::S),
                _ => grant.clone(),
            };
            if !super::read::visible(ctx, access, reader, &entry_grant, v)? {
                continue;
            }
        }
        entries.push(bundle::history_entry(&ctx.base_url, v)?);
    }
    Ok(FhirResponse::json(bundle::bundle(
        "history",
        (!restricted).then_some(page.total),
        links,
        entries,
    )))
}

/// Parse `_count` (0 allowed, capped at [`MAX_COUNT`]).
pub fn parse_count(value: &str) -> FhirResult<usize> {
    value
        .parse::<usize>()
        .map(|n| n.min(MAX_COUNT))
        .map_err(|_| {
            FhirError::bad_value(
                "value",
                format!("_count `{value}` is not a non-negative integer"),
                "_count",
            )
        })
}

/// `path?name=value&…`, percent-encoded.
pub fn with_query(path: &str, query: &[(String, String)]) -> String {
    if query.is_empty() {
        return path.to_string();
    }
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query.iter())
        .finish();
    format!("{path}?{encoded}")
}
