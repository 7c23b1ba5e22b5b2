//! R4 Subscriptions with the rest-hook channel, on changes to Patient, CareTeam and
//! ServiceRequest: a worker reads what was written since it last looked, and for each active
//! Subscription whose criteria the changed resource matches, notifies the subscriber — only if
//! the access layer lets the subscribing client read that resource (consent is checked at send
//! time, as the Subscriptions Backport asks), signed with the client's registered secret
//! (`X-Foster-Passport-Signature: sha256=HEX`, HMAC-SHA256 over the body), retried with back-off;
//! a delivery that keeps failing sets `Subscription.status` to `error` with the reason.
//!
//! Where the worker stands is kept in the database, and one instance at a time holds the lease
//! to deliver, so several gateway instances on one database notify once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::access::{Access, Requester};
use crate::audit::{AuditLog, AuditRecord};
use crate::auth::registry;
use crate::auth::scopes::{Letter, ScopeSet};
use crate::error::{FhirError, FhirResult};
use crate::interactions::{Ctx, read, write_version};
use crate::store::query::{Criterion, Query};
use crate::store::{HistoryQuery, HistoryScope, Store, Version, WriteMethod};

/// The types whose changes Subscriptions may watch.
pub const TYPES: &[&str] = &["Patient", "CareTeam", "ServiceRequest"];
/// `meta.tag` system naming the client that owns a Subscription (set by the server).
pub const OWNER_SYSTEM: &str = "http://foster-passport.example/fhir/CodeSystem/subscription-owner";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-foster-passport-signature";
/// The header naming the Subscription a notification is for.
pub const SUBSCRIPTION_HEADER: &str = "x-foster-passport-subscription";

const RECORD_KIND: &str = "subscriptions";
const CURSOR_KEY: &str = "cursor";
const LEASE_KEY: &str = "lease";
/// Changes handled per round, at most.
const BATCH: usize = 500;
/// Delivery attempts before the Subscription is set to `error`.
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Check a Subscription a client writes and complete it: a rest-hook to an http(s) endpoint,
/// criteria on a watched type the server understands; the server marks it `active` and records
/// its owner (the client, whose registration decides what it may be told).
pub fn prepare(ctx: &Ctx, access: &Access, body: &mut Value) -> FhirResult<()> {
    let invalid = |why: String| FhirError::Unprocessable(format!("this Subscription {why}"));
    if body["channel"]["type"] != "rest-hook" {
        return Err(invalid("needs channel.type rest-hook".into()));
    }
    let endpoint = body["channel"]["endpoint"].as_str().unwrap_or_default();
    if !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        || reqwest::Url::parse(endpoint).is_err()
    {
        return Err(invalid(format!(
            "needs an http(s) channel.endpoint, not `{endpoint}`"
        )));
    }
    let criteria = body["criteria"].as_str().unwrap_or_default();
    criteria_of(ctx, criteria)
        .map_err(|e| invalid(format!("has criteria it cannot watch: {e}")))?;
    match body["status"].as_str() {
        Some("requested" | "active") => {
            body["status"] = Value::from("active");
            if let Some(obj) = body.as_object_mut() {
                obj.shift_remove("error");
            }
        }
        Some("off") => {}
        other => {
            return Err(invalid(format!(
                "may be written as requested, active or off, not {}",
                other.unwrap_or("(missing)")
            )));
        }
    }
    let owner = serde_json::json!({ "system": OWNER_SYSTEM, "code": access.requester.client_id });
    let meta = body
        .as_object_mut()
        .ok_or_else(|| invalid("is not an object".into()))?
        .entry("meta")
        .or_insert_with(|| serde_json::json!({}));
    let tags = meta
        .as_object_mut()
        .ok_or_else(|| invalid("has a meta that is not an object".into()))?
        .entry("tag")
        .or_insert_with(|| serde_json::json!([]));
    if let Some(list) = tags.as_array_mut() {
        list.retain(|t| t["system"] != OWNER_SYSTEM);
        list.push(owner);
    }
    Ok(())
}

/// `Type?query` → the type and its criteria (none: every resource of the type).
fn criteria_of(ctx: &Ctx, criteria: &str) -> FhirResult<(String, Vec<Criterion>)> {
    let (rtype, query) = criteria.split_once('?').unwrap_or((criteria, ""));
    if !TYPES.contains(&rtype) {
        return Err(FhirError::bad_request(format!(
            "`{rtype}` is not one of {}",
            TYPES.join(", ")
        )));
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let criteria = if pairs.is_empty() {
        vec![]
    } else {
        crate::search::parse::parse_conditional(&ctx.search, rtype, &pairs, &ctx.base_url)?
    };
    Ok((rtype.to_string(), criteria))
}

/// An active Subscription, ready to match.
struct Watch {
    id: String,
    rtype: String,
    criteria: Vec<Criterion>,
    endpoint: String,
    with_payload: bool,
    headers: Vec<(String, String)>,
    owner: String,
}

/// One notification to send.
struct Delivery {
    subscription: String,
    endpoint: String,
    headers: Vec<(String, String)>,
    body: Arc<str>,
    secret: Option<String>,
    access: Access,
    target: String,
}

/// Set the worker's starting point to now, if it has none: changes from here on are notified
/// (called before the server takes requests, so none is missed on a first start).
pub fn init_cursor(store: &dyn Store) -> FhirResult<()> {
    let records = store.records();
    if records.get(RECORD_KIND, CURSOR_KEY)?.is_some() {
        return Ok(());
    }
    let mut reader = store.reader()?;
    let newest = reader.last_change(TYPES)?;
    records.insert(RECORD_KIND, CURSOR_KEY, &newest.to_string(), None)?;
    Ok(())
}

/// Start the worker; abort the handle to stop it.
pub fn start(
    store: Arc<dyn Store>,
    ctx: Arc<Ctx>,
    audit: Arc<AuditLog>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let instance = crate::fhir::ids::new_id();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let (store2, ctx2, instance2) = (store.clone(), ctx.clone(), instance.clone());
            let lease = interval.as_millis() as i64 * 5 + 5_000;
            let planned = tokio::task::spawn_blocking(move || {
                if !hold_lease(store2.as_ref(), &instance2, lease)? {
                    return Ok(vec![]);
                }
                plan(store2.as_ref(), &ctx2)
            })
            .await;
            let deliveries = match planned {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "subscription round failed");
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "subscription round panicked");
                    continue;
                }
            };
            for d in deliveries {
                let (http, store, ctx, audit) =
                    (http.clone(), store.clone(), ctx.clone(), audit.clone());
                tokio::spawn(async move { deliver(&http, store, ctx, &audit, d).await });
            }
        }
    })
}

/// Take or renew the delivery lease; `false` while another instance holds it.
fn hold_lease(store: &dyn Store, instance: &str, lease_ms: i64) -> FhirResult<bool> {
    let records = store.records();
    let until = chrono::Utc::now().timestamp_millis() + lease_ms;
    if records.insert(RECORD_KIND, LEASE_KEY, instance, Some(until))? {
        return Ok(true);
    }
    if records.get(RECORD_KIND, LEASE_KEY)?.as_deref() == Some(instance) {
        records.put(RECORD_KIND, LEASE_KEY, instance, Some(until))?;
        return Ok(true);
    }
    Ok(false)
}

/// Read the changes since the cursor, decide who is told, and move the cursor past them.
fn plan(store: &dyn Store, ctx: &Ctx) -> FhirResult<Vec<Delivery>> {
    let records = store.records();
    let mut reader = store.reader()?;
    let newest = reader.last_change(TYPES)?;
    let Some(cursor) = records
        .get(RECORD_KIND, CURSOR_KEY)?
        .and_then(|c| c.parse::<i64>().ok())
    else {
        init_cursor(store)?;
        return Ok(vec![]);
    };
    if newest <= cursor {
        return Ok(vec![]);
    }
    let mut changes: Vec<(i64, Version)> = Vec::new();
    for rtype in TYPES {
        let page = reader.history(&HistoryQuery {
            scope: HistoryScope::Type((*rtype).to_string()),
            since: None,
            before_seq: None,
            count: BATCH,
        })?;
        changes.extend(page.entries.into_iter().filter(|(seq, _)| *seq > cursor));
    }
    changes.sort_by_key(|(seq, _)| *seq);
    changes.truncate(BATCH);
    let watches = watches(store, ctx)?;
    let mut out = Vec::new();
    for (_, v) in &changes {
        if v.is_deleted() {
            continue;
        }
        for w in watches.iter().filter(|w| w.rtype == v.rtype) {
            if let Some(d) = decide(store, ctx, reader.as_mut(), w, v)? {
                out.push(d);
            }
        }
    }
    let moved = changes.last().map_or(newest, |(seq, _)| *seq);
    records.put(RECORD_KIND, CURSOR_KEY, &moved.to_string(), None)?;
    Ok(out)
}

/// Every active Subscription.
fn watches(store: &dyn Store, ctx: &Ctx) -> FhirResult<Vec<Watch>> {
    let mut reader = store.reader()?;
    let criteria = crate::search::parse::parse_conditional(
        &ctx.search,
        "Subscription",
        &[("status".into(), "active".into())],
        &ctx.base_url,
    )?;
    let page = reader.search(&Query {
        rtype: "Subscription".into(),
        criteria,
        sort: vec![],
        count: 10_000,
        cursor: None,
        with_total: false,
    })?;
    let mut out = Vec::new();
    for m in page.matches {
        let Some(text) = m.version.body.as_deref() else {
            continue;
        };
        let sub: Value = serde_json::from_str(text).map_err(FhirError::internal)?;
        let Ok((rtype, criteria)) = criteria_of(ctx, sub["criteria"].as_str().unwrap_or_default())
        else {
            continue;
        };
        let Some(owner) = sub["meta"]["tag"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["system"] == OWNER_SYSTEM)
            .and_then(|t| t["code"].as_str())
        else {
            continue;
        };
        let headers = sub["channel"]["header"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| {
                let (k, v) = h.as_str()?.split_once(':')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        out.push(Watch {
            id: m.version.id.clone(),
            rtype,
            criteria,
            endpoint: sub["channel"]["endpoint"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            with_payload: sub["channel"]["payload"].as_str().is_some(),
            headers,
            owner: owner.to_string(),
        });
    }
    Ok(out)
}

/// Whether `w` is told about `v`: it matches the criteria, and the owning client may read it.
fn decide(
    store: &dyn Store,
    ctx: &Ctx,
    reader: &mut dyn crate::store::Reader,
    w: &Watch,
    v: &Version,
) -> FhirResult<Option<Delivery>> {
    if !w.criteria.is_empty() {
        let mut criteria = w.criteria.clone();
        criteria.push(Criterion::Ids(vec![v.id.clone()]));
        let page = reader.search(&Query {
            rtype: v.rtype.clone(),
            criteria,
            sort: vec![],
            count: 1,
            cursor: None,
            with_total: false,
        })?;
        if page.matches.is_empty() {
            return Ok(None);
        }
    }
    let Some(client) = registry::client(store.records(), &w.owner)? else {
        return Ok(None);
    };
    let access = Access::new(Requester {
        client_id: client.id.clone(),
        subject: client.id.clone(),
        scopes: ScopeSet::parse(&client.scope),
        patient: None,
        fhir_user: None,
        organization: client.organization.clone(),
        role: client.role.map(|r| r.as_str().to_string()),
        purpose: client.purpose.clone().into_iter().collect(),
        token_id: format!("subscription:{}", w.id),
    });
    let grant = access.grant(&v.rtype, Letter::R);
    if grant.is_none() || !read::visible(ctx, &access, reader, &grant, v)? {
        // Consent (or scope) keeps it from this subscriber: no notification at all.
        return Ok(None);
    }
    let body: Arc<str> = if w.with_payload {
        v.body.clone().unwrap_or_else(|| Arc::from(""))
    } else {
        Arc::from("")
    };
    Ok(Some(Delivery {
        subscription: w.id.clone(),
        endpoint: w.endpoint.clone(),
        headers: w.headers.clone(),
        body,
        secret: client.webhook_secret,
        access,
        target: format!("{}/{}", v.rtype, v.id),
    }))
}

/// `sha256=HEX` of the body under the secret.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

async fn deliver(
    http: &reqwest::Client,
    store: Arc<dyn Store>,
    ctx: Arc<Ctx>,
    audit: &AuditLog,
    d: Delivery,
) {
    let result = send(http, &d).await;
    let status = match &result {
        Ok(code) => *code,
        Err(_) => 502,
    };
    audit
        .record(AuditRecord {
            requester: d.access.requester.clone(),
            interaction: "operation",
            action: "E",
            query: format!("NOTIFY Subscription/{} {}", d.subscription, d.endpoint),
            status,
            target: Some(d.target.clone()),
            body: (!d.body.is_empty()).then(|| d.body.clone()),
            trail: d.access.trail(),
            at: chrono::Utc::now(),
        })
        .await;
    if let Err(why) = result {
        tracing::warn!(subscription = %d.subscription, error = %why, "notification failed");
        let id = d.subscription.clone();
        let marked =
            tokio::task::spawn_blocking(move || mark_error(store.as_ref(), &ctx, &id, &why)).await;
        if let Ok(Err(e)) = marked {
            tracing::error!(error = %e, "cannot record a failed notification");
        }
    }
}

/// Post the notification, retrying with back-off; the subscriber's HTTP status, or why not.
async fn send(http: &reqwest::Client, d: &Delivery) -> Result<u16, String> {
    let Some(secret) = &d.secret else {
        return Err(format!(
            "the subscribing client {} has no webhook secret to sign with",
            d.access.requester.client_id
        ));
    };
    let signed = signature(secret, d.body.as_bytes());
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(attempt - 1)).await;
        }
        let mut request = http
            .post(&d.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/fhir+json")
            .header(SIGNATURE_HEADER, &signed)
            .header(SUBSCRIPTION_HEADER, &d.subscription);
        for (k, v) in &d.headers {
            request = request.header(k, v);
        }
        match request.body(d.body.to_string()).send().await {
            Ok(r) if r.status().is_success() => return Ok(r.status().as_u16()),
            Ok(r) => last = format!("{} answered HTTP {}", d.endpoint, r.status()),
            Err(e) => last = format!("{} could not be reached: {e}", d.endpoint),
        }
    }
    Err(format!("{last} ({ATTEMPTS} attempts)"))
}

/// Record on the Subscription that its notifications fail.
fn mark_error(store: &dyn Store, ctx: &Ctx, id: &str, why: &str) -> FhirResult<()> {
    let mut tx = store.begin()?;
    let Some(current) = tx.current("Subscription", id)? else {
        return Ok(());
    };
    let Some(text) = current.body.as_deref() else {
        return Ok(());
    };
    let mut sub: Value = serde_json::from_str(text).map_err(FhirError::internal)?;
    sub["status"] = Value::from("error");
    sub["error"] = Value::from(why);
    write_version(
        ctx,
        &Access::server(),
        tx.as_mut(),
        "Subscription",
        id,
        Some(&current),
        WriteMethod::Update,
        sub,
    )?;
    tx.commit()
}
