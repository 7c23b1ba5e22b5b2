//! `foster-passport migrate --from URL --to URL`: copy a whole database into an empty one, so
//! a county that started on the embedded SQLite default can move to PostgreSQL without losing
//! anything.
//!
//! Every version of every resource is copied in write order (the audit trail with the rest, so
//! its hash chain, which is ordered by write sequence, verifies in the copy), with its version
//! number, time and method; each resource's index rows are derived again from its current
//! version by the target's own search registry; the authorization server's records (clients,
//! users, signing keys, unexpired `jti`s and tokens, subscription cursors) are copied as they
//! are. One transaction per page of versions keeps memory flat for a state-wide database; a
//! failed copy leaves a target that `migrate` refuses (not empty), to be dropped and retried.

use std::sync::Arc;

use crate::access::compartment_key;
use crate::interactions::Ctx;
use crate::search::registry::SearchRegistry;
use crate::store::{self, NewVersion, Store};

/// Versions copied per transaction.
const PAGE: usize = 500;

/// What a migration copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Versions (every history row, deletions included).
    pub versions: u64,
    /// Of which AuditEvents.
    pub audit_events: u64,
    /// Authorization-server records.
    pub records: u64,
}

/// Copy everything in `from` into the empty database `to`. `base_url` is the public FHIR base
/// the data was written under (references to it index as local ones), as given to `serve`.
pub fn migrate(from: &str, to: &str, base_url: &str) -> Result<Report, String> {
    if from == to {
        return Err("--from and --to name the same database".into());
    }
    let source = store::open(from).map_err(|e| format!("{from}: {e}"))?;
    let target = store::open(to).map_err(|e| format!("{to}: {e}"))?;
    ensure_empty(target.as_ref()).map_err(|why| format!("{to}: {why}"))?;
    let ctx = Ctx {
        base_url: base_url.trim_end_matches('/').to_string(),
        search: Arc::new(SearchRegistry::load().map_err(|e| e.to_string())?),
        capability_statement: Arc::from(""),
        consents: Default::default(),
    };

    let mut report = Report::default();
    for r in source.records().all().map_err(|e| e.to_string())? {
        target
            .records()
            .put(&r.kind, &r.key, &r.value, r.expires)
            .map_err(|e| e.to_string())?;
        report.records += 1;
    }

    let progress = indicatif::ProgressBar::new_spinner();
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} versions copied {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let mut reader = source.reader().map_err(|e| e.to_string())?;
    let mut after = 0;
    loop {
        let page = reader
            .versions_after(after, PAGE)
            .map_err(|e| e.to_string())?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        let mut tx = target.begin().map_err(|e| e.to_string())?;
        for (seq, v) in page {
            // Index rows follow the resource's current version only; older versions are
            // written without, as the target replaces them with each newer one.
            let is_current = reader
                .current(&v.rtype, &v.id)
                .map_err(|e| e.to_string())?
                .is_some_and(|c| c.version == v.version);
            let value: Option<serde_json::Value> = match &v.body {
                Some(body) => Some(serde_json::from_str(body).map_err(|e| {
                    format!(
                        "{}/{} version {} is not JSON: {e}",
                        v.rtype, v.id, v.version
                    )
                })?),
                None => None,
            };
            let index = match (&value, is_current) {
                (Some(value), true) => ctx.search.index(&v.rtype, value, &ctx.base_url),
                _ => vec![],
            };
            // The first version decides, as when the server wrote it.
            let compartment = match (&value, v.version) {
                (Some(value), 1) => compartment_key(&ctx, &v.rtype, &v.id, value),
                _ => String::new(),
            };
            if v.rtype == "AuditEvent" {
                report.audit_events += 1;
            }
            tx.put(NewVersion {
                rtype: v.rtype.clone(),
                id: v.id.clone(),
                version: v.version,
                last_updated: v.last_updated,
                method: v.method,
                body: v.body.as_deref().map(str::to_string),
                index,
                compartment,
            })
            .map_err(|e| {
                format!(
                    "{}/{} version {} (sequence {seq}): {e}",
                    v.rtype, v.id, v.version
                )
            })?;
            report.versions += 1;
        }
        tx.commit().map_err(|e| e.to_string())?;
        progress.set_position(report.versions);
    }
    progress.finish_and_clear();
    Ok(report)
}

/// A migration only ever fills an empty database: merging two would fork versions and chains.
fn ensure_empty(target: &dyn Store) -> Result<(), String> {
    let mut reader = target.reader().map_err(|e| e.to_string())?;
    let has_versions = !reader
        .versions_after(0, 1)
        .map_err(|e| e.to_string())?
        .is_empty();
    let has_records = !target
        .records()
        .all()
        .map_err(|e| e.to_string())?
        .is_empty();
    if has_versions || has_records {
        return Err("the target database is not empty; migrate copies into a new database".into());
    }
    Ok(())
}
