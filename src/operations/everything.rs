//! `GET Patient/[id]/$everything` (R4 `Patient-everything`): the youth's Patient and every
//! resource in their compartment that the requester may see, as a paged searchset Bundle.
//! Each type is searched with the same access criteria as a search of that type, so consent is
//! decided inside the query and pages stay full. `_since`, `_type` and `_count` as R4 defines
//! them; paging with `next` links across types.

use crate::access::{self, Access};
use crate::error::{FhirError, FhirResult};
use crate::fhir::bundle;
use crate::interactions::history::with_query;
use crate::interactions::{Ctx, FhirResponse};
use crate::search::model::{ParamKind, Prefix, QueryValue};
use crate::search::parse::{decode_cursor, encode_cursor};
use crate::store::Reader;
use crate::store::query::{Criterion, Cursor, Modifier, ParamRef};

const DEFAULT_COUNT: usize = 50;
const MAX_COUNT: usize = 1000;
/// The record, not the log of who looked at it.
const LEFT_OUT: &[&str] = &["AuditEvent"];

/// Run `$everything` for `patient`.
pub fn everything(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    patient: &str,
    query: &[(String, String)],
) -> FhirResult<FhirResponse> {
    let params = Params::parse(query)?;
    // A youth the requester may not see is answered as one that does not exist.
    super::visible_patient(ctx, access, reader, patient)?;
    let types: Vec<&str> = std::iter::once("Patient")
        .chain(
            access::compartment_types()
                .into_iter()
                .filter(|t| *t != "Patient" && !LEFT_OUT.contains(t)),
        )
        .filter(|t| {
            params
                .types
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == t))
        })
        .collect();
    let mut entries = Vec::new();
    let here = params.position.clone();
    let (mut index, mut cursor) = params.position.clone();
    let mut next = None;
    while index < types.len() {
        let rtype = types[index];
        let want = params.count - entries.len();
        let mut extra = Vec::new();
        if let Some(since) = params.since {
            extra.push(Criterion::Match {
                param: ParamRef {
                    code: "_lastUpdated".into(),
                    kind: ParamKind::Date,
                },
                modifier: Modifier::None,
                values: vec![QueryValue::Date {
                    prefix: Prefix::Ge,
                    low: since,
                    high: since + 1,
                }],
            });
        }
        let page = super::compartment_page(
            ctx,
            access,
            reader,
            patient,
            super::query(rtype, extra, want, cursor.take()),
        )?;
        for m in &page.matches {
            entries.push(bundle::search_entry(&ctx.base_url, &m.version, "match")?);
        }
        if page.more {
            let last = page.matches.last().expect("a page with more has matches");
            next = Some((
                index,
                Some(Cursor {
                    values: last.sort_values.clone(),
                    row: last.row,
                    backwards: false,
                }),
            ));
            break;
        }
        index += 1;
        if entries.len() >= params.count {
            if index < types.len() {
                next = Some((index, None));
            }
            break;
        }
    }
    let path = format!("{}/Patient/{patient}/$everything", ctx.base_url);
    let mut links = vec![("self", with_query(&path, &params.applied(here)))];
    if let Some(position) = next {
        links.push(("next", with_query(&path, &params.applied(position))));
    }
    Ok(FhirResponse::json(bundle::bundle(
        "searchset",
        None,
        links,
        entries,
    )))
}

/// Where a page starts: the index of a type, and a cursor within it.
type Position = (usize, Option<Cursor>);

struct Params {
    since: Option<i64>,
    since_text: Option<String>,
    types: Option<Vec<String>>,
    count: usize,
    position: Position,
}

impl Params {
    fn parse(query: &[(String, String)]) -> FhirResult<Params> {
        let bad = |name: &str, why: String| {
            FhirError::bad_value(
                "value",
                format!("$everything `{name}`: {why}"),
                name.to_string(),
            )
        };
        let mut p = Params {
            since: None,
            since_text: None,
            types: None,
            count: DEFAULT_COUNT,
            position: (0, None),
        };
        for (name, value) in query {
            match name.as_str() {
                "_since" => {
                    let (low, _) = crate::search::extract::date_range(value)
                        .filter(|_| value.contains('T'))
                        .ok_or_else(|| bad(name, format!("`{value}` is not an instant")))?;
                    p.since = Some(low);
                    p.since_text = Some(value.clone());
                }
                "_type" => {
                    let types: Vec<String> = value.split(',').map(str::to_string).collect();
                    if let Some(t) = types
                        .iter()
                        .find(|t| !crate::fhir::structure::is_resource_type(t))
                    {
                        return Err(bad(name, format!("`{t}` is not a resource type")));
                    }
                    p.types = Some(types);
                }
                "_count" => {
                    p.count = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(name, format!("`{value}` is not a positive count")))?
                        .min(MAX_COUNT);
                }
                "_cursor" => {
                    let (index, rest) = value
                        .split_once('.')
                        .ok_or_else(|| bad(name, "not a cursor of this server".into()))?;
                    let index = index
                        .parse()
                        .map_err(|_| bad(name, "not a cursor of this server".into()))?;
                    let cursor = if rest.is_empty() {
                        None
                    } else {
                        Some(decode_cursor(rest)?)
                    };
                    p.position = (index, cursor);
                }
                "_format" | "_pretty" => {}
                other => {
                    return Err(FhirError::bad_value(
                        "not-supported",
                        format!("$everything has no parameter `{other}`"),
                        other.to_string(),
                    ));
                }
            }
        }
        Ok(p)
    }

    /// The query that asks for the page at `position`.
    fn applied(&self, position: Position) -> Vec<(String, String)> {
        let mut q = Vec::new();
        if let Some(since) = &self.since_text {
            q.push(("_since".into(), since.clone()));
        }
        if let Some(types) = &self.types {
            q.push(("_type".into(), types.join(",")));
        }
        q.push(("_count".into(), self.count.to_string()));
        let (index, cursor) = position;
        if index > 0 || cursor.is_some() {
            let at = cursor.map(|c| encode_cursor(&c)).unwrap_or_default();
            q.push(("_cursor".into(), format!("{index}.{at}")));
        }
        q
    }
}
