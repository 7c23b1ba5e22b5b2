//! FHIR RESTful interactions, one file each, shared by top-level HTTP requests and Bundle
//! entries: both build a [`FhirRequest`] and get a [`FhirResponse`] or a [`FhirError`].

pub mod batch;
pub mod capabilities;
pub mod create;
pub mod delete;
pub mod history;
pub mod patch;
pub mod read;
pub mod search;
pub mod transaction;
pub mod update;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::access::Access;
use crate::auth::scopes::Letter;
use crate::error::{FhirError, FhirResult, Issue, operation_outcome};
use crate::fhir::{ids, structure};
use crate::search::SearchRegistry;
use crate::store::{NewVersion, Reader, StoreTx, Version, WriteMethod};

/// What the interactions need to know about the server.
pub struct Ctx {
    /// Absolute FHIR base URL without a trailing slash (`http://host:port/fhir`).
    pub base_url: String,
    /// Search parameters the server supports.
    pub search: Arc<SearchRegistry>,
    /// The CapabilityStatement, rendered once at start-up.
    pub capability_statement: Arc<str>,
    /// Compiled privacy Consents and CareTeams, reused while neither type changes.
    pub consents: crate::access::ConsentCache,
}

/// The path part of a FHIR request, relative to the base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `[base]`
    System,
    /// `[base]/metadata`
    Metadata,
    /// `[base]/_history`
    SystemHistory,
    /// `[base]/[type]`
    Type(String),
    /// `[base]/[type]/_search`
    TypeSearch(String),
    /// `[base]/[type]/_history`
    TypeHistory(String),
    /// `[base]/[type]/[id]`
    Instance(String, String),
    /// `[base]/[type]/[id]/_history`
    InstanceHistory(String, String),
    /// `[base]/[type]/[id]/_history/[vid]`
    Version(String, String, String),
    /// `[base]/[type]/$[operation]`
    TypeOperation(String, String),
    /// `[base]/[type]/[id]/$[operation]`
    InstanceOperation(String, String, String),
}

/// `$name` → `name`, when it is a plausible operation name.
fn operation_name(segment: &str) -> FhirResult<String> {
    let name = &segment[1..];
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(FhirError::NotFound(format!("no operation `{segment}`")));
    }
    Ok(name.to_string())
}

impl Target {
    /// One path of each shape a FHIR request can take, `ID` standing for a logical id (a test
    /// walks them all through the access layer; the unit test below keeps the list whole).
    pub const SHAPES: &'static [&'static str] = &[
        "",
        "metadata",
        "_history",
        "Condition",
        "Condition/_search",
        "Condition/_history",
        "Condition/ID",
        "Condition/ID/_history",
        "Condition/ID/_history/1",
        "Patient/$everything",
        "Patient/ID/$everything",
        "Patient/ID/$summary",
        "Patient/ID/$change-placement",
        "Patient/$validate",
        "Patient/ID/$validate",
    ];

    /// Parse a path relative to the FHIR base (`Patient/1/_history/2`, no leading slash).
    /// Unknown resource types and malformed ids are errors here, before any storage access.
    pub fn parse(path: &str) -> FhirResult<Target> {
        let segments: Vec<&str> = if path.is_empty() {
            vec![]
        } else {
            path.split('/').collect()
        };
        let known_type = |t: &str| -> FhirResult<String> {
            if structure::is_resource_type(t) {
                Ok(t.to_string())
            } else {
                Err(FhirError::NotFound(format!("unknown resource type `{t}`")))
            }
        };
        let valid_id = |id: &str| -> FhirResult<String> {
            if ids::is_valid_id(id) {
                Ok(id.to_string())
            } else {
                Err(FhirError::bad_value(
                    "value",
                    format!("`{id}` is not a valid FHIR id"),
                    "id",
                ))
            }
        };
        Ok(match segments.as_slice() {
            [] => Target::System,
            ["metadata"] => Target::Metadata,
            ["_history"] => Target::SystemHistory,
            [t] => Target::Type(known_type(t)?),
            [t, "_search"] => Target::TypeSearch(known_type(t)?),
            [t, "_history"] => Target::TypeHistory(known_type(t)?),
            [t, op] if op.starts_with('$') => {
                Target::TypeOperation(known_type(t)?, operation_name(op)?)
            }
            [t, id, op] if op.starts_with('$') => {
                Target::InstanceOperation(known_type(t)?, valid_id(id)?, operation_name(op)?)
            }
            [t, id] => Target::Instance(known_type(t)?, valid_id(id)?),
            [t, id, "_history"] => Target::InstanceHistory(known_type(t)?, valid_id(id)?),
            [t, id, "_history", vid] => {
                Target::Version(known_type(t)?, valid_id(id)?, vid.to_string())
            }
            _ => return Err(FhirError::NotFound(format!("no FHIR route for `{path}`"))),
        })
    }

    /// The path relative to the base, as [`Target::parse`] reads it.
    pub fn path(&self) -> String {
        match self {
            Target::System => String::new(),
            Target::Metadata => "metadata".into(),
            Target::SystemHistory => "_history".into(),
            Target::Type(t) => t.clone(),
            Target::TypeSearch(t) => format!("{t}/_search"),
            Target::TypeHistory(t) => format!("{t}/_history"),
            Target::Instance(t, id) => format!("{t}/{id}"),
            Target::InstanceHistory(t, id) => format!("{t}/{id}/_history"),
            Target::Version(t, id, v) => format!("{t}/{id}/_history/{v}"),
            Target::TypeOperation(t, op) => format!("{t}/${op}"),
            Target::InstanceOperation(t, id, op) => format!("{t}/{id}/${op}"),
        }
    }
}

/// `Prefer: return=…`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PreferReturn {
    /// No body.
    Minimal,
    /// The resource (default).
    #[default]
    Representation,
    /// An OperationOutcome about the interaction.
    OperationOutcome,
}

/// Conditional and preference headers, as they apply to one request or Bundle entry.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// `If-Match` version.
    pub if_match: Option<u64>,
    /// `If-None-Exist` query (without `?`).
    pub if_none_exist: Option<String>,
    /// `If-None-Match` value (`*` or an ETag).
    pub if_none_match: Option<String>,
    /// `Prefer: return=`.
    pub prefer_return: PreferReturn,
    /// `Prefer: handling=strict`.
    pub strict: bool,
}

/// One FHIR request, from HTTP or from a Bundle entry.
#[derive(Debug, Clone)]
pub struct FhirRequest {
    /// HTTP method.
    pub method: Method,
    /// Path relative to the base.
    pub target: Target,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Conditional headers and preferences.
    pub conditions: Conditions,
    /// The parsed body, for writes.
    pub body: Option<Value>,
    /// Who asks, and what they may do.
    pub access: Arc<Access>,
}

/// A response body.
#[derive(Debug, Clone)]
pub enum Body {
    /// Stored JSON text, sent as is.
    Stored(Arc<str>),
    /// A built value (Bundles, OperationOutcomes).
    Json(Value),
}

impl Body {
    /// The body as a JSON value (Bundle entries need one).
    pub fn to_value(&self) -> FhirResult<Value> {
        match self {
            Body::Stored(text) => serde_json::from_str(text).map_err(FhirError::internal),
            Body::Json(v) => Ok(v.clone()),
        }
    }
}

/// The outcome of one interaction.
#[derive(Debug, Clone)]
pub struct FhirResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Body, if any.
    pub body: Option<Body>,
    /// Version and write time, for `ETag`/`Last-Modified`.
    pub version: Option<(u64, DateTime<Utc>)>,
    /// Location relative to the base (`Patient/1/_history/2`).
    pub location: Option<String>,
}

impl FhirResponse {
    /// A 200 with a built body.
    pub fn json(body: Value) -> Self {
        FhirResponse {
            status: StatusCode::OK,
            body: Some(Body::Json(body)),
            version: None,
            location: None,
        }
    }

    /// A response carrying one stored version.
    pub fn version(status: StatusCode, v: &Version) -> Self {
        FhirResponse {
            status,
            body: v.body.clone().map(Body::Stored),
            version: Some((v.version, v.last_updated)),
            location: Some(format!("{}/{}/_history/{}", v.rtype, v.id, v.version)),
        }
    }

    /// Apply `Prefer: return=` to the response of a write.
    pub fn with_preference(mut self, prefer: PreferReturn, message: &str) -> Self {
        match prefer {
            PreferReturn::Representation => {}
            PreferReturn::Minimal => self.body = None,
            PreferReturn::OperationOutcome => {
                let issue = Issue {
                    severity: "information",
                    code: "informational",
                    diagnostics: message.to_string(),
                    expression: None,
                };
                self.body = Some(Body::Json(operation_outcome(&[issue])));
            }
        }
        self
    }
}

/// Run a read-only interaction.
pub fn execute_read(
    ctx: &Ctx,
    reader: &mut dyn Reader,
    req: &FhirRequest,
) -> FhirResult<FhirResponse> {
    let access = &req.access;
    match (&req.method, &req.target) {
        (&Method::GET | &Method::HEAD, Target::Metadata) => Ok(FhirResponse {
            status: StatusCode::OK,
            body: Some(Body::Stored(ctx.capability_statement.clone())),
            version: None,
            location: None,
        }),
        (&Method::GET | &Method::HEAD, Target::Instance(t, id)) => {
            read::read(ctx, access, reader, t, id, &req.conditions)
        }
        (&Method::GET | &Method::HEAD, Target::Version(t, id, vid)) => {
            read::vread(ctx, access, reader, t, id, vid)
        }
        (&Method::GET | &Method::HEAD, Target::Type(t))
        | (&Method::POST, Target::TypeSearch(t)) => {
            search::search(ctx, access, reader, t, &req.query, req.conditions.strict)
        }
        (
            &Method::GET | &Method::HEAD,
            Target::SystemHistory | Target::TypeHistory(_) | Target::InstanceHistory(..),
        ) => history::history(ctx, access, reader, &req.target, &req.query),
        (_, Target::TypeOperation(..) | Target::InstanceOperation(..)) => {
            crate::operations::read(ctx, reader, req)
        }
        _ => Err(not_allowed(req)),
    }
}

/// Run a write interaction inside an open transaction.
pub fn execute_write(
    ctx: &Ctx,
    tx: &mut dyn StoreTx,
    req: FhirRequest,
) -> FhirResult<FhirResponse> {
    match (&req.method, &req.target) {
        (&Method::POST, Target::Type(_)) => create::create(ctx, tx, req),
        (&Method::PUT, Target::Instance(..) | Target::Type(_)) => update::update(ctx, tx, req),
        (&Method::PATCH, Target::Instance(..) | Target::Type(_)) => patch::patch(ctx, tx, req),
        (&Method::DELETE, Target::Instance(..) | Target::Type(_)) => delete::delete(ctx, tx, req),
        (_, Target::TypeOperation(..) | Target::InstanceOperation(..)) => {
            crate::operations::write(ctx, tx, req)
        }
        _ => Err(not_allowed(&req)),
    }
}

/// True when the interaction only reads.
pub fn is_read(req: &FhirRequest) -> bool {
    match &req.target {
        Target::TypeOperation(_, op) | Target::InstanceOperation(_, _, op) => {
            crate::operations::only_reads(&req.method, op)
        }
        _ => {
            matches!(req.method, Method::GET | Method::HEAD)
                || matches!(
                    (&req.method, &req.target),
                    (&Method::POST, Target::TypeSearch(_))
                )
        }
    }
}

/// Whether a request is a search (`GET [type]`, `POST [type]/_search`), which a read replica
/// may serve.
pub fn is_search(req: &FhirRequest) -> bool {
    matches!(
        (&req.method, &req.target),
        (&Method::GET | &Method::HEAD, Target::Type(_)) | (&Method::POST, Target::TypeSearch(_))
    )
}

fn not_allowed(req: &FhirRequest) -> FhirError {
    FhirError::MethodNotAllowed(format!("{} is not supported on this path", req.method))
}

/// Set server-owned `id` and `meta.versionId`/`meta.lastUpdated` on a resource, keeping the rest
/// of `meta` and the client's element order (new `id`/`meta` go right after `resourceType`).
pub fn stamp(resource: &mut Value, id: &str, version: u64, at: DateTime<Utc>) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    if !obj.contains_key("id") || !matches!(obj.get("meta"), Some(Value::Object(_))) {
        let old = std::mem::take(obj);
        let mut rebuilt = Map::with_capacity(old.len() + 2);
        let mut rest = Map::new();
        let mut meta = Map::new();
        for (key, value) in old {
            match (key.as_str(), value) {
                ("resourceType", v) => {
                    rebuilt.insert(key, v);
                }
                ("meta", Value::Object(m)) => meta = m,
                ("meta" | "id", _) => {}
                (_, v) => {
                    rest.insert(key, v);
                }
            }
        }
        rebuilt.insert("id".into(), Value::Null);
        rebuilt.insert("meta".into(), Value::Object(meta));
        rebuilt.extend(rest);
        *obj = rebuilt;
    }
    obj.insert("id".into(), Value::String(id.to_string()));
    let meta = obj
        .get_mut("meta")
        .and_then(Value::as_object_mut)
        .expect("meta is an object");
    meta.shift_insert(0, "versionId".into(), Value::String(version.to_string()));
    meta.shift_insert(
        1,
        "lastUpdated".into(),
        Value::String(ids::format_instant(at)),
    );
}

/// Write a new version of `rtype/id` holding `body` (stamped here), after `previous`. Every
/// write passes here, so here the access layer checks that the requester may make it: the
/// scopes must cover the stored version being replaced and the new one.
#[allow(clippy::too_many_arguments)]
pub fn write_version(
    ctx: &Ctx,
    access: &Access,
    tx: &mut dyn StoreTx,
    rtype: &str,
    id: &str,
    previous: Option<&Version>,
    method: WriteMethod,
    mut body: Value,
) -> FhirResult<Version> {
    if rtype == "AuditEvent" && !access.is_server() {
        return Err(audit_is_append_only());
    }
    let letter = match method {
        WriteMethod::Create => Letter::C,
        _ => Letter::U,
    };
    // The server records who wrote what (`meta.source`): a client's own claim is not trusted,
    // since authorship lets the author read what it wrote.
    let author = access.author_source(ctx);
    if author.is_some() {
        set_source(&mut body, None);
    }
    if let Some(p) = previous
        && let Some(old) = p.body.as_deref()
    {
        let old: Value = serde_json::from_str(old).map_err(FhirError::internal)?;
        access.check_write(ctx, tx, letter, rtype, id, &old)?;
        if author.is_some() && old["meta"]["source"].as_str() == author.as_deref() {
            // The author revises its own resource: the new version stays its own.
            set_source(&mut body, author.as_deref());
        }
    }
    access.check_write(ctx, tx, letter, rtype, id, &body)?;
    // A body claiming one of our profiles must conform to it (DESIGN.md section 6).
    let issues = crate::validate::check_claimed(&body);
    if !issues.is_empty() {
        return Err(FhirError::ProfileInvalid(issues));
    }
    if author.is_some() {
        set_source(&mut body, author.as_deref());
    }
    if rtype == "Subscription" && !access.is_server() {
        crate::subscriptions::prepare(ctx, access, &mut body)?;
    }
    if rtype == "Consent" {
        // A privacy Consent the engine cannot enforce faithfully is refused, never stored and
        // silently ignored.
        crate::access::consent::compile(&body).map_err(|why| {
            FhirError::Unprocessable(format!("this Consent cannot be enforced: {why}"))
        })?;
        label_consent(tx, &mut body)?;
    }
    let version = previous.map_or(1, |p| p.version + 1);
    let now = next_instant(previous);
    stamp(&mut body, id, version, now);
    let index = ctx.search.index(rtype, &body, &ctx.base_url);
    let compartment = crate::access::compartment_key(ctx, rtype, id, &body);
    let text = serde_json::to_string(&body).map_err(FhirError::internal)?;
    tx.put(NewVersion {
        rtype: rtype.to_string(),
        id: id.to_string(),
        version,
        last_updated: now,
        method,
        body: Some(text),
        index,
        compartment,
    })
}

/// The current version of `rtype/id` as a writer may know it. A version the requester may
/// neither read nor change under consent is hidden (`Err` carries nothing): a write answers as
/// for a missing id, so writes cannot reveal what reads hide.
pub fn current_for_write(
    ctx: &Ctx,
    access: &Access,
    tx: &mut dyn StoreTx,
    rtype: &str,
    id: &str,
) -> FhirResult<Result<Option<Version>, Hidden>> {
    let Some(v) = tx.current(rtype, id)? else {
        return Ok(Ok(None));
    };
    if access.consent_exempt() || access.is_own_user(rtype, id) {
        return Ok(Ok(Some(v)));
    }
    let Some(body) = read::last_body(tx, &v)? else {
        return Ok(Err(Hidden));
    };
    let known = access.consent_permits(ctx, tx, "access", rtype, id, &body)?
        || access.consent_permits(ctx, tx, "correct", rtype, id, &body)?;
    Ok(if known { Ok(Some(v)) } else { Err(Hidden) })
}

/// A stored resource the requester must not learn of.
#[derive(Debug, Clone, Copy)]
pub struct Hidden;

/// A Consent about sensitive data tells that the data exists: it carries the sensitivity
/// labels its provisions name, and those of the instances they point at, so that it is
/// released only to whom the data itself would be.
fn label_consent(tx: &mut dyn StoreTx, consent: &mut Value) -> FhirResult<()> {
    use crate::access::consent::{is_sensitive, sensitive_labels};
    let provisions: Vec<&Value> = std::iter::once(&consent["provision"])
        .chain(
            consent["provision"]["provision"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .collect();
    let mut labels: Vec<(String, String)> = Vec::new();
    for p in &provisions {
        for c in p["securityLabel"].as_array().into_iter().flatten() {
            if let (Some(system), Some(code)) = (c["system"].as_str(), c["code"].as_str())
                && is_sensitive(system, code)
            {
                labels.push((system.to_string(), code.to_string()));
            }
        }
        for d in p["data"].as_array().into_iter().flatten() {
            let Some((t, id)) = d["reference"]["reference"]
                .as_str()
                .and_then(|r| r.split_once('/'))
            else {
                continue;
            };
            if let Some(text) = tx.current(t, id)?.and_then(|v| v.body) {
                let data: Value = serde_json::from_str(&text).map_err(FhirError::internal)?;
                labels.extend(sensitive_labels(&data));
            }
        }
    }
    let present = sensitive_labels(consent);
    labels.retain(|l| !present.contains(l));
    labels.sort();
    labels.dedup();
    if labels.is_empty() {
        return Ok(());
    }
    let meta = consent
        .as_object_mut()
        .ok_or_else(|| FhirError::bad_request("a Consent must be an object"))?
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    let security = meta
        .as_object_mut()
        .ok_or_else(|| FhirError::bad_request("Consent.meta must be an object"))?
        .entry("security")
        .or_insert_with(|| Value::Array(vec![]));
    if let Some(list) = security.as_array_mut() {
        for (system, code) in labels {
            list.push(serde_json::json!({ "system": system, "code": code }));
        }
    }
    Ok(())
}

/// Set (or with `None`, remove) `meta.source`.
fn set_source(body: &mut Value, source: Option<&str>) {
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    match source {
        Some(s) => {
            let meta = obj
                .entry("meta")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert("source".into(), Value::String(s.to_string()));
            }
        }
        None => {
            if let Some(meta) = obj.get_mut("meta").and_then(Value::as_object_mut) {
                meta.shift_remove("source");
            }
        }
    }
}

/// Write a deletion of `rtype/id` after `previous`, when the requester may delete it.
pub fn write_deletion(
    ctx: &Ctx,
    access: &Access,
    tx: &mut dyn StoreTx,
    previous: &Version,
) -> FhirResult<Version> {
    if previous.rtype == "AuditEvent" {
        return Err(audit_is_append_only());
    }
    if let Some(old) = previous.body.as_deref() {
        let old: Value = serde_json::from_str(old).map_err(FhirError::internal)?;
        access.check_write(ctx, tx, Letter::D, &previous.rtype, &previous.id, &old)?;
    } else {
        access.require(&previous.rtype, Letter::D)?;
    }
    tx.put(NewVersion {
        rtype: previous.rtype.clone(),
        id: previous.id.clone(),
        version: previous.version + 1,
        last_updated: next_instant(Some(previous)),
        method: WriteMethod::Delete,
        body: None,
        index: vec![],
        // Kept from the first version.
        compartment: String::new(),
    })
}

fn audit_is_append_only() -> FhirError {
    FhirError::Forbidden(
        "AuditEvents are written by the server and never changed or deleted".into(),
    )
}

/// Now, but never earlier than the previous version's time (clocks step back).
fn next_instant(previous: Option<&Version>) -> DateTime<Utc> {
    let now = Utc::now();
    match previous {
        Some(p) if p.last_updated >= now => p.last_updated + chrono::Duration::milliseconds(1),
        _ => now,
    }
}

/// Check that the body is a resource of the type the URL names, with a matching id if required.
pub fn check_body<'a>(
    body: Option<&'a Value>,
    rtype: &str,
    url_id: Option<&str>,
) -> FhirResult<&'a Value> {
    let body =
        body.ok_or_else(|| FhirError::bad_request("this interaction needs a resource body"))?;
    let body_type = crate::fhir::parse::resource_type(body);
    if body_type != rtype {
        return Err(FhirError::bad_value(
            "invalid",
            format!("the body is a {body_type} but the URL names {rtype}"),
            "resourceType",
        ));
    }
    if let Some(url_id) = url_id {
        match body.get("id").and_then(Value::as_str) {
            Some(body_id) if body_id == url_id => {}
            Some(body_id) => {
                return Err(FhirError::bad_value(
                    "invalid",
                    format!("the body's id `{body_id}` does not match the URL's id `{url_id}`"),
                    "id",
                ));
            }
            None => {
                return Err(FhirError::bad_value(
                    "required",
                    "an update body must carry the resource id",
                    "id",
                ));
            }
        }
    }
    Ok(body)
}

/// Resources matching conditional criteria (`If-None-Exist`, conditional update/delete/patch,
/// conditional references): the total and up to two matches, enough to tell 0, 1 or many.
/// Matching is a search: it needs the `s` permission and sees only what the requester may.
pub fn find_matches(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    rtype: &str,
    pairs: &[(String, String)],
) -> FhirResult<(u64, Vec<Version>)> {
    let grant = access.require(rtype, Letter::S)?;
    let mut criteria =
        crate::search::parse::parse_conditional(&ctx.search, rtype, pairs, &ctx.base_url)?;
    criteria.extend(access.criterion(ctx, reader, rtype, &grant)?);
    let query = crate::store::query::Query {
        rtype: rtype.to_string(),
        criteria,
        sort: vec![],
        count: 2,
        cursor: None,
        with_total: true,
    };
    let page = reader.search(&query)?;
    Ok((
        page.total.unwrap_or(0),
        page.matches.into_iter().map(|m| m.version).collect(),
    ))
}

/// As [`find_matches`], from a query string (`identifier=a|b`, with or without `Type?`).
pub fn find_matches_str(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    rtype: &str,
    query: &str,
) -> FhirResult<(u64, Vec<Version>)> {
    let query = query.rsplit_once('?').map_or(query, |(_, q)| q);
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    find_matches(ctx, access, reader, rtype, &pairs)
}

/// Check `If-Match` against the current version (412 when stale).
pub fn check_if_match(conditions: &Conditions, current: Option<&Version>) -> FhirResult<()> {
    let Some(expected) = conditions.if_match else {
        return Ok(());
    };
    match current {
        Some(c) if !c.is_deleted() && c.version == expected => Ok(()),
        Some(c) => Err(FhirError::PreconditionFailed(format!(
            "If-Match expected version {expected} but the current version is {}",
            c.version
        ))),
        None => Err(FhirError::PreconditionFailed(format!(
            "If-Match expected version {expected} but the resource does not exist"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn shapes_cover_every_target() {
        let mut seen = [false; 11];
        for shape in Target::SHAPES {
            let target = Target::parse(&shape.replace("ID", "x")).unwrap();
            // Exhaustive: a new kind of target fails to compile here until SHAPES names it.
            let i = match target {
                Target::System => 0,
                Target::Metadata => 1,
                Target::SystemHistory => 2,
                Target::Type(_) => 3,
                Target::TypeSearch(_) => 4,
                Target::TypeHistory(_) => 5,
                Target::Instance(..) => 6,
                Target::InstanceHistory(..) => 7,
                Target::Version(..) => 8,
                Target::TypeOperation(..) => 9,
                Target::InstanceOperation(..) => 10,
            };
            seen[i] = true;
        }
        assert!(seen.iter().all(|s| *s), "every target shape is listed");
    }
}
