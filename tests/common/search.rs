//! Helpers shared by the search test files: a sub-case runner that reports every failure at
//! once, and searchset assertions.

use std::collections::BTreeSet;
use std::future::Future;

use serde_json::Value;

use super::Client;

/// Sub-cases run as tasks; a panicking one is recorded and the others go on.
#[derive(Default)]
pub struct Cases {
    handles: Vec<(String, tokio::task::JoinHandle<()>)>,
}

impl Cases {
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        fut: impl Future<Output = ()> + Send + 'static,
    ) {
        self.handles.push((name.into(), tokio::spawn(fut)));
    }

    pub async fn finish(self) {
        let total = self.handles.len();
        let mut failures = Vec::new();
        for (name, handle) in self.handles {
            if let Err(e) = handle.await {
                let msg = if e.is_panic() {
                    let p = e.into_panic();
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into())
                } else {
                    e.to_string()
                };
                failures.push(format!("[{name}] {msg}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {total} sub-cases failed:\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}

/// GET a search, assert 200 and a searchset Bundle whose entries all carry `search.mode`.
pub async fn search(client: &Client, query: &str) -> Value {
    let bundle = client.get(query).await.expect_status(200).body;
    assert_eq!(bundle["resourceType"], "Bundle", "{query}: not a Bundle");
    assert_eq!(bundle["type"], "searchset", "{query}: not a searchset");
    for e in bundle["entry"].as_array().into_iter().flatten() {
        let mode = e["search"]["mode"].as_str().unwrap_or("");
        assert!(
            ["match", "include", "outcome"].contains(&mode),
            "{query}: entry without a valid search.mode: {e}"
        );
    }
    bundle
}

pub fn match_ids(bundle: &Value) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap_or("?").to_string())
        .collect()
}
