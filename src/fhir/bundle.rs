//! Building Bundles (searchset, history, batch/transaction responses).

use serde_json::{Map, Value, json};

use crate::error::FhirResult;
use crate::fhir::ids;
use crate::interactions::Body;
use crate::store::{Version, WriteMethod};

/// A Bundle with a fresh id, a type, an optional total, links and entries.
pub fn bundle(
    kind: &str,
    total: Option<u64>,
    links: Vec<(&str, String)>,
    entries: Vec<Value>,
) -> Value {
    let mut b = Map::new();
    b.insert("resourceType".into(), json!("Bundle"));
    b.insert("id".into(), json!(ids::new_id()));
    b.insert(
        "meta".into(),
        json!({ "lastUpdated": ids::format_instant(chrono::Utc::now()) }),
    );
    b.insert("type".into(), json!(kind));
    if let Some(total) = total {
        b.insert("total".into(), json!(total));
    }
    if !links.is_empty() {
        let links: Vec<Value> = links
            .into_iter()
            .map(|(rel, url)| json!({ "relation": rel, "url": url }))
            .collect();
        b.insert("link".into(), Value::Array(links));
    }
    if !entries.is_empty() {
        b.insert("entry".into(), Value::Array(entries));
    }
    Value::Object(b)
}

/// The absolute URL of a resource (`fullUrl`).
pub fn full_url(base: &str, rtype: &str, id: &str) -> String {
    format!("{base}/{rtype}/{id}")
}

/// A searchset entry for a current version.
pub fn search_entry(base: &str, v: &Version, mode: &str) -> FhirResult<Value> {
    let resource = Body::Stored(v.body.clone().unwrap_or_else(|| "{}".into())).to_value()?;
    Ok(json!({
        "fullUrl": full_url(base, &v.rtype, &v.id),
        "resource": resource,
        "search": { "mode": mode },
    }))
}

/// A history entry for any version, deletions included.
pub fn history_entry(base: &str, v: &Version) -> FhirResult<Value> {
    let mut entry = Map::new();
    entry.insert("fullUrl".into(), json!(full_url(base, &v.rtype, &v.id)));
    if let Some(body) = &v.body {
        entry.insert("resource".into(), Body::Stored(body.clone()).to_value()?);
    }
    let (url, status) = match v.method {
        WriteMethod::Create => (v.rtype.clone(), "201 Created"),
        WriteMethod::Update if v.version == 1 => (format!("{}/{}", v.rtype, v.id), "201 Created"),
        WriteMethod::Update => (format!("{}/{}", v.rtype, v.id), "200 OK"),
        WriteMethod::Delete => (format!("{}/{}", v.rtype, v.id), "204 No Content"),
    };
    entry.insert(
        "request".into(),
        json!({ "method": v.method.as_http(), "url": url }),
    );
    entry.insert(
        "response".into(),
        json!({
            "status": status,
            "etag": ids::etag(v.version),
            "lastModified": ids::format_instant(v.last_updated),
        }),
    );
    Ok(Value::Object(entry))
}
