//! Loading the synthetic patients, timed, before the workloads run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{ETAG, HeaderValue};
use serde_json::Value;
use tokio::task::JoinSet;

use super::Result;
use super::data::{self, MAX_RESOURCES_PER_PATIENT};
use super::http::{self, Target};

/// How the synthetic records reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadMode {
    /// Transaction Bundles of `--bundle-size` PUT entries.
    Transaction,
    /// One PUT per resource (for servers without transaction support).
    Put,
}

pub struct LoadResult {
    pub mode: LoadMode,
    pub resources: usize,
    pub requests: usize,
    pub elapsed: Duration,
    /// ETag of each patient after loading (`None` if the server did not say).
    pub etags: Vec<Option<HeaderValue>>,
}

impl LoadResult {
    pub fn resources_per_sec(&self) -> f64 {
        self.resources as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn describe(&self) -> String {
        let how = match self.mode {
            LoadMode::Transaction => format!(
                "{} transaction Bundles of ~{} PUT entries",
                self.requests,
                self.resources.div_ceil(self.requests.max(1))
            ),
            LoadMode::Put => format!("{} single PUTs", self.requests),
        };
        format!(
            "{} resources in {:.2} s ({:.0} resources/s; {how})",
            self.resources,
            self.elapsed.as_secs_f64(),
            self.resources_per_sec()
        )
    }
}

/// Write the shared Practitioners, then patients `0..patients` with their clinical resources, to
/// `target`, `concurrency` requests at a time.
pub async fn load(
    target: Arc<Target>,
    patients: usize,
    bundle_resources: usize,
    concurrency: usize,
    mode: LoadMode,
) -> Result<LoadResult> {
    let per_request = match mode {
        LoadMode::Transaction => (bundle_resources / MAX_RESOURCES_PER_PATIENT).max(1),
        LoadMode::Put => 1,
    };
    let groups = data::family_groups(patients);
    let chunks = patients.div_ceil(per_request);
    let client = http::client(Duration::from_secs(600), concurrency)?;
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut requests = load_practitioners(&target, &client, mode).await?;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (target, client, next, done, written) = (
            target.clone(),
            client.clone(),
            next.clone(),
            done.clone(),
            written.clone(),
        );
        tasks.spawn(async move {
            let mut etags = Vec::new();
            let mut requests = 0;
            loop {
                let chunk = next.fetch_add(1, Ordering::Relaxed);
                if chunk >= chunks {
                    return Ok::<_, super::Error>((etags, requests));
                }
                let range = chunk * per_request..((chunk + 1) * per_request).min(patients);
                let start = range.start;
                let (chunk_etags, resources) = match mode {
                    LoadMode::Transaction => load_bundle(&target, &client, range, groups).await?,
                    LoadMode::Put => {
                        let (etag, n) = load_put(&target, &client, start, groups).await?;
                        (vec![etag], n)
                    }
                };
                written.fetch_add(resources, Ordering::Relaxed);
                requests += match mode {
                    LoadMode::Transaction => 1,
                    LoadMode::Put => resources,
                };
                etags.extend(
                    chunk_etags
                        .into_iter()
                        .enumerate()
                        .map(|(k, e)| (start + k, e)),
                );
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                if finished * 10 / chunks != (finished - 1) * 10 / chunks {
                    eprintln!(
                        "  loaded {:>3}% ({:.1} s)",
                        finished * 100 / chunks,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        });
    }
    let mut etags = vec![None; patients];
    while let Some(joined) = tasks.join_next().await {
        let (chunk_etags, n) = joined??;
        requests += n;
        for (i, etag) in chunk_etags {
            etags[i] = etag;
        }
    }
    Ok(LoadResult {
        mode,
        resources: data::PRACTITIONERS + 1 + written.load(Ordering::Relaxed),
        requests,
        elapsed: started.elapsed(),
        etags,
    })
}

/// The shared Practitioners and the provider Organization, before any patient refers to them; returns the requests made.
async fn load_practitioners(
    target: &Target,
    client: &reqwest::Client,
    mode: LoadMode,
) -> Result<usize> {
    match mode {
        LoadMode::Transaction => {
            let body = serde_json::to_vec(&data::practitioners_bundle(&target.base))?;
            let req = target.request_with_body(Method::POST, target.url(""), body);
            let resp = client.execute(req).await?;
            if !resp.status().is_success() {
                return Err(format!(
                    "Practitioner transaction Bundle refused: {}",
                    http::snippet(resp).await
                )
                .into());
            }
            http::drain(resp).await?;
            Ok(1)
        }
        LoadMode::Put => {
            for k in 0..data::PRACTITIONERS {
                put(target, client, &data::practitioner(k)).await?;
            }
            put(target, client, &data::provider_organization()).await?;
            Ok(data::PRACTITIONERS + 1)
        }
    }
}

/// Just the part of a transaction-response that the loader reads.
#[derive(serde::Deserialize)]
struct TransactionReply {
    #[serde(default)]
    entry: Vec<ReplyEntry>,
}

#[derive(serde::Deserialize)]
struct ReplyEntry {
    #[serde(default)]
    response: Option<ReplyResponse>,
}

#[derive(serde::Deserialize)]
struct ReplyResponse {
    #[serde(default)]
    etag: Option<String>,
}

/// POST one transaction Bundle; returns the new ETag of each Patient in it and the number of
/// resources written.
async fn load_bundle(
    target: &Target,
    client: &reqwest::Client,
    range: std::ops::Range<usize>,
    groups: usize,
) -> Result<(Vec<Option<HeaderValue>>, usize)> {
    let (bundle, patient_entries) = data::transaction_bundle(&target.base, range, groups);
    let resources = bundle["entry"].as_array().map_or(0, Vec::len);
    let body = serde_json::to_vec(&bundle)?;
    drop(bundle);
    let req = target.request_with_body(Method::POST, target.url(""), body);
    let resp = client.execute(req).await?;
    if !resp.status().is_success() {
        return Err(format!("transaction Bundle refused: {}", http::snippet(resp).await).into());
    }
    let reply: TransactionReply = serde_json::from_slice(&resp.bytes().await?)?;
    let etags = patient_entries
        .iter()
        .map(|&k| {
            let etag = reply.entry.get(k)?.response.as_ref()?.etag.as_deref()?;
            HeaderValue::from_str(etag).ok()
        })
        .collect();
    Ok((etags, resources))
}

/// PUT one resource under its type and id; returns its ETag.
async fn put(
    target: &Target,
    client: &reqwest::Client,
    resource: &Value,
) -> Result<Option<HeaderValue>> {
    let path = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default()
    );
    let req = target.request_with_body(
        Method::PUT,
        target.url(&path),
        serde_json::to_vec(resource)?,
    );
    let resp = client.execute(req).await?;
    if !resp.status().is_success() {
        return Err(format!("PUT {path} refused: {}", http::snippet(resp).await).into());
    }
    let etag = resp.headers().get(ETAG).cloned();
    http::drain(resp).await?;
    Ok(etag)
}

/// PUT the resources of patient `i` one by one; returns the Patient's new ETag and the number
/// of resources written.
async fn load_put(
    target: &Target,
    client: &reqwest::Client,
    i: usize,
    groups: usize,
) -> Result<(Option<HeaderValue>, usize)> {
    let record = data::record(i, groups);
    let mut patient_etag = None;
    for (k, resource) in record.iter().enumerate() {
        let etag = put(target, client, resource).await?;
        if k == 0 {
            patient_etag = etag;
        }
    }
    Ok((patient_etag, record.len()))
}
