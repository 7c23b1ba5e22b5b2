//! The audit trail: an AuditEvent for every FHIR request that reaches the data (a disclosure,
//! a denial, a write), following IHE Basic Audit Log Patterns, hash-chained so that an edit
//! made behind the server's back is found (`foster-passport audit verify`).
//!
//! Requests hand a record to a bounded queue; one writer thread builds the events and stores
//! them in batches, one transaction each, so auditing costs a request a queue slot, not a
//! commit. The queue is bounded: if the writer falls behind, requests wait rather than go
//! unaudited. The chain is in write order: each event carries the hash of the one before.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::access::{Access, Requester, Trail};
use crate::auth::crypto;
use crate::error::{FhirError, FhirResult};
use crate::interactions::{Ctx, write_version};
use crate::store::{HistoryQuery, HistoryScope, Reader, Store, WriteMethod};

/// The extension naming what decided a request: a `valueString` per Consent id (or `author`).
pub const DECIDED_BY_URL: &str =
    "http://foster-passport.example/fhir/StructureDefinition/audit-decided-by";
/// The chain extension on every AuditEvent we write.
pub const CHAIN_URL: &str = "http://foster-passport.example/fhir/StructureDefinition/audit-chain";
/// What the first event names as its predecessor (FHIR strings may not be empty).
const GENESIS: &str = "genesis";
const QUEUE: usize = 10_000;
const BATCH: usize = 500;

/// What one request did, as the audit writer needs it.
#[derive(Debug)]
pub struct AuditRecord {
    /// Who asked.
    pub requester: Arc<Requester>,
    /// The interaction (`read`, `search-type`, …, R4 restful-interaction codes).
    pub interaction: &'static str,
    /// BALP action code: C, R, U, D or E.
    pub action: &'static str,
    /// The path asked for, relative to the base, with its query.
    pub query: String,
    /// HTTP status answered.
    pub status: u16,
    /// The resource asked for, when the request named one.
    pub target: Option<String>,
    /// The answer's body (resources disclosed), if any.
    pub body: Option<Arc<str>>,
    /// What decided the disclosures: Consents, authorship, break-the-glass.
    pub trail: Trail,
    /// When.
    pub at: DateTime<Utc>,
}

/// The queue to the audit writer.
pub struct AuditLog {
    queue: tokio::sync::mpsc::Sender<AuditRecord>,
    /// Records queued or being written: how far the writer is behind.
    pending: Arc<AtomicUsize>,
}

impl AuditLog {
    /// Start the writer thread; the handle finishes once every sender is gone and the queue
    /// is written out.
    pub fn start(store: Arc<dyn Store>, ctx: Arc<Ctx>) -> FhirResult<(AuditLog, JoinHandle<()>)> {
        store.ping()?;
        let (queue, rx) = tokio::sync::mpsc::channel(QUEUE);
        let pending = Arc::new(AtomicUsize::new(0));
        let written = pending.clone();
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer(rx, store, ctx, &written))
            .map_err(FhirError::internal)?;
        Ok((AuditLog { queue, pending }, handle))
    }

    /// Queue a record (waits while the queue is full).
    pub async fn record(&self, record: AuditRecord) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        if self.queue.send(record).await.is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("the audit writer has stopped; an audit record is lost");
        }
    }

    /// How many records are queued or being written.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

fn writer(
    mut rx: tokio::sync::mpsc::Receiver<AuditRecord>,
    store: Arc<dyn Store>,
    ctx: Arc<Ctx>,
    pending: &AtomicUsize,
) {
    let server = Access::server();
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let result = (|| -> FhirResult<()> {
            let mut tx = store.begin()?;
            // The head is read inside the write transaction, after every other writer on the
            // database (other processes too) committed: the chain never forks.
            let mut chained = last_hash(tx.as_mut())?;
            for record in &batch {
                let mut event = event(&ctx, record);
                chained = link(&mut event, &chained);
                let id = crate::fhir::ids::new_id();
                write_version(
                    &ctx,
                    &server,
                    tx.as_mut(),
                    "AuditEvent",
                    &id,
                    None,
                    WriteMethod::Create,
                    event,
                )?;
            }
            tx.commit()
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, lost = batch.len(), "audit events could not be written")
        }
        pending.fetch_sub(batch.len(), Ordering::Relaxed);
    }
}

/// Set the chain extension: the previous hash, and this event's hash over the event with it.
/// Returns the new hash.
fn link(event: &mut Value, previous: &str) -> String {
    let extensions = event["extension"]
        .as_array_mut()
        .expect("events carry extensions");
    extensions.push(json!({
        "url": CHAIN_URL,
        "extension": [{ "url": "previous", "valueString": previous }]
    }));
    let hash = chain_hash(previous, event);
    let chain = event["extension"]
        .as_array_mut()
        .and_then(|e| e.last_mut())
        .and_then(|c| c["extension"].as_array_mut())
        .expect("chain extension just added");
    chain.push(json!({ "url": "hash", "valueString": hash }));
    hash
}

/// SHA-256 over the previous hash and the event without `id`, `meta` and its own hash.
pub fn chain_hash(previous: &str, event: &Value) -> String {
    let mut content = event.clone();
    if let Some(obj) = content.as_object_mut() {
        // shift_remove keeps the order of the other keys (remove would swap the last one in).
        obj.shift_remove("id");
        obj.shift_remove("meta");
    }
    if let Some(chain) = content["extension"]
        .as_array_mut()
        .and_then(|list| list.iter_mut().find(|e| e["url"] == CHAIN_URL))
        .and_then(|c| c["extension"].as_array_mut())
    {
        chain.retain(|e| e["url"] != "hash");
    }
    let text = serde_json::to_string(&content).unwrap_or_default();
    crypto::sha256_b64url(format!("{previous}\n{text}").as_bytes())
}

fn chain_part<'a>(event: &'a Value, part: &str) -> Option<&'a str> {
    event["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == CHAIN_URL)?["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == part)?["valueString"]
        .as_str()
}

/// The hash of the newest AuditEvent (the chain's head), or [`GENESIS`].
fn last_hash(reader: &mut dyn Reader) -> FhirResult<String> {
    Ok(reader
        .newest_body("AuditEvent")?
        .and_then(|b| serde_json::from_str::<Value>(&b).ok())
        .and_then(|e| chain_part(&e, "hash").map(str::to_string))
        .unwrap_or_else(|| GENESIS.to_string()))
}

/// Check the whole chain, newest to oldest: every event's hash recomputes, and names the one
/// before it. Returns how many events were checked, or the first broken link.
pub fn verify(store: &dyn Store) -> Result<u64, String> {
    let mut reader = store.reader().map_err(|e| e.to_string())?;
    let mut before_seq = None;
    let mut checked = 0u64;
    // The `previous` of the newer event just checked: what this one's hash must be.
    let mut expected: Option<(String, String)> = None;
    loop {
        let page = reader
            .history(&HistoryQuery {
                scope: HistoryScope::Type("AuditEvent".into()),
                since: None,
                before_seq,
                count: 1000,
            })
            .map_err(|e| e.to_string())?;
        if page.entries.is_empty() {
            break;
        }
        for (seq, v) in &page.entries {
            before_seq = Some(*seq);
            let name = format!("AuditEvent/{} (version {})", v.id, v.version);
            if v.version != 1 || v.body.is_none() {
                return Err(format!("{name}: an AuditEvent was changed or deleted"));
            }
            let event: Value = serde_json::from_str(v.body.as_deref().unwrap_or_default())
                .map_err(|e| format!("{name}: unreadable: {e}"))?;
            let (Some(hash), Some(previous)) =
                (chain_part(&event, "hash"), chain_part(&event, "previous"))
            else {
                return Err(format!("{name}: no chain extension"));
            };
            if chain_hash(previous, &event) != hash {
                return Err(format!("{name}: its content does not match its hash"));
            }
            if let Some((newer, want)) = &expected
                && want != hash
            {
                return Err(format!(
                    "{newer}: names a previous event that is not {name}"
                ));
            }
            expected = Some((name, previous.to_string()));
            checked += 1;
        }
    }
    match expected {
        Some((oldest, previous)) if previous != GENESIS => Err(format!(
            "{oldest}: the first event names a predecessor that is missing"
        )),
        _ => Ok(checked),
    }
}

/// Build the AuditEvent for one request (IHE BALP RESTful event).
fn event(ctx: &Ctx, r: &AuditRecord) -> Value {
    let outcome = match r.status {
        200..=399 => "0",
        400..=499 => "4",
        _ => "8",
    };
    let requester = &r.requester;
    let mut who = json!({ "identifier": { "system": "urn:foster-passport:client", "value": requester.client_id } });
    if let Some(reference) = requester
        .fhir_user
        .as_ref()
        .or(requester.organization.as_ref())
    {
        who["reference"] = json!(reference);
    }
    let mut agent = json!({
        "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP" }] },
        "who": who,
        "requestor": true,
    });
    if !requester.subject.is_empty() {
        agent["altId"] = json!(requester.subject);
    }
    let mut entities = Vec::new();
    let mut patients: Vec<String> = Vec::new();
    let mut disclosed = Vec::new();
    if let Some(body) = r
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
    {
        let resources: Vec<&Value> = if body["resourceType"] == "Bundle" {
            body["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.get("resource"))
                .collect()
        } else {
            vec![&body]
        };
        for res in resources {
            let (Some(t), Some(id)) = (res["resourceType"].as_str(), res["id"].as_str()) else {
                continue;
            };
            if t == "OperationOutcome" {
                continue;
            }
            for p in crate::access::patients_of(ctx, t, id, res) {
                if !patients.contains(&p) {
                    patients.push(p);
                }
            }
            disclosed.push(format!("{t}/{id}"));
        }
    }
    if let Some(target) = &r.target
        && let Some(p) = target.strip_prefix("Patient/")
        && !patients.iter().any(|x| x == p)
    {
        patients.push(p.split('/').next().unwrap_or(p).to_string());
    }
    for p in &patients {
        entities.push(json!({
            "what": { "reference": format!("Patient/{p}") },
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1" },
            "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1" },
        }));
    }
    for d in disclosed.iter().filter(|d| !d.starts_with("Patient/")) {
        entities.push(json!({
            "what": { "reference": d },
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2" },
        }));
    }
    if disclosed.is_empty()
        && let Some(target) = &r.target
        && !target.starts_with("Patient/")
    {
        // A denied or missing resource: named by what was asked, never resolved.
        entities.push(json!({ "what": { "display": target }, "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2" } }));
    }
    entities.push(json!({
        "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2" },
        "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24" },
        "query": base64_text(&r.query),
    }));
    let mut event = json!({
        "resourceType": "AuditEvent",
        "extension": [],
        "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation" },
        "subtype": [{ "system": "http://hl7.org/fhir/restful-interaction", "code": r.interaction }],
        "action": r.action,
        "recorded": crate::fhir::ids::format_instant(r.at),
        "outcome": outcome,
        "agent": [agent],
        "source": {
            "observer": { "display": ctx.base_url },
            "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4" }]
        },
        "entity": entities,
    });
    if outcome != "0" {
        event["outcomeDesc"] = json!(format!("HTTP {}", r.status));
    }
    let mut purposes: Vec<&str> = requester.purpose.iter().map(String::as_str).collect();
    if r.trail.broke_glass {
        // Flagged for review by the plan's Child Welfare Liaison: `AuditEvent?_security=BTG`.
        event["meta"] = json!({ "security": [crate::access::break_glass_label()] });
        if !purposes.contains(&"BTG") {
            purposes.push("BTG");
        }
    }
    if !purposes.is_empty() {
        event["purposeOfEvent"] = json!(purposes
            .iter()
            .map(|p| json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": p }] }))
            .collect::<Vec<_>>());
    }
    let decided = r.trail.decided_for(&patients);
    if !decided.is_empty() {
        let ids: Vec<Value> = decided
            .iter()
            .map(|id| json!({ "url": "consent", "valueString": id }))
            .collect();
        event["extension"]
            .as_array_mut()
            .expect("events carry extensions")
            .push(json!({ "url": DECIDED_BY_URL, "extension": ids }));
    }
    event
}

fn base64_text(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
