//! The workloads: each worker owns one keep-alive connection ([`super::wire`]), sends requests
//! back to back until the workload's time is up, and records every latency in its own
//! histogram; the histograms are merged at the end.
//!
//! To add a workload: add a variant to [`Workload`], give it a [`Plan`] in [`Worker::new`] and a
//! request in [`Worker::next_request`].
//!
//! The search workloads pick a random loaded patient (or family name) per request, from paths
//! built before anything is timed ([`Corpus`]). `search-birthdate-paging` alternates a first
//! page and the page its `next` link points to, so it keeps the first page's body and finds the
//! link in it (after the latency of that request is taken); the two pages are measured apart
//! and reported as two rows, `(first page)` and `(next page)`, each counting its own requests.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use reqwest::header::HeaderValue;
use tokio::sync::{Barrier, watch};
use tokio::time::sleep_until;

use super::Result;
use super::data::{self, Rng};
use super::http::Target;
use super::sys;
use super::wire::{Connection, Endpoint, find};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// GET Patient/{id} of a random loaded patient.
    Read,
    /// POST Patient (server-assigned id).
    Create,
    /// PUT Patient/{id} with If-Match; each worker updates only its own patients.
    Update,
    /// GET Patient/{id}/_history of a random loaded patient.
    History,
    /// GET Patient?family={stem}: string, starts-with, ~10 matches (see `data::family_stem`).
    SearchFamily,
    /// GET Patient?identifier={system}|{value}: token, one match.
    SearchIdentifier,
    /// GET CareTeam?patient=Patient/{id}: reference, one match.
    SearchCareteam,
    /// GET ServiceRequest?patient={id}&status=active&_include=ServiceRequest:requester: one
    /// match plus its requester.
    SearchServicerequest,
    /// GET Patient?birthdate=ge2010-01-01&_count=50, then the `next` link of that page;
    /// reported as two rows.
    SearchBirthdatePaging,
    /// GET Condition?patient=Patient/{id}: one match, two for every tenth patient (whose
    /// second, `MH`-labelled Condition the provider's consent does not release).
    SearchCondition,
    /// GET Condition?code={SNOMED code}&_count=50: a full page of 50 out of ~1/9 of all
    /// Conditions (the consent-governed requester decides each one).
    SearchConditionCode,
}

/// Who sends a workload's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Requester {
    /// The custodian backend client: consent does not restrict it.
    Custodian,
    /// A backend client with role `provider` for the Organization every patient's privacy
    /// Consent permits (purpose TREAT): every resource is decided by the consent engine.
    Provider,
}

impl Requester {
    pub fn name(self) -> &'static str {
        match self {
            Self::Custodian => "custodian",
            Self::Provider => "provider",
        }
    }
}

impl Workload {
    /// The default workloads.
    pub const ALL: [Workload; 4] = [Self::Read, Self::Create, Self::Update, Self::History];

    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Create => "create",
            Self::Update => "update",
            Self::History => "history",
            Self::SearchFamily => "search-family",
            Self::SearchIdentifier => "search-identifier",
            Self::SearchCareteam => "search-careteam",
            Self::SearchServicerequest => "search-servicerequest",
            Self::SearchBirthdatePaging => "search-birthdate-paging",
            Self::SearchCondition => "search-condition",
            Self::SearchConditionCode => "search-condition-code",
        }
    }

    /// Whether the workload writes (run only as the custodian: the provider may only read).
    pub fn writes(self) -> bool {
        matches!(self, Self::Create | Self::Update)
    }

    /// Names of the result rows: one, or one per page for paging.
    fn parts(self) -> &'static [&'static str] {
        match self {
            Self::Read => &["read"],
            Self::Create => &["create"],
            Self::Update => &["update"],
            Self::History => &["history"],
            Self::SearchFamily => &["search-family"],
            Self::SearchIdentifier => &["search-identifier"],
            Self::SearchCareteam => &["search-careteam"],
            Self::SearchServicerequest => &["search-servicerequest"],
            Self::SearchBirthdatePaging => &[
                "search-birthdate-paging (first page)",
                "search-birthdate-paging (next page)",
            ],
            Self::SearchCondition => &["search-condition"],
            Self::SearchConditionCode => &["search-condition-code"],
        }
    }

    pub fn request_line(self) -> &'static str {
        match self {
            Self::Read => "GET Patient/{random id}",
            Self::Create => "POST Patient",
            Self::Update => "PUT Patient/{own id} + If-Match",
            Self::History => "GET Patient/{random id}/_history",
            Self::SearchFamily => "GET Patient?family={stem of a random family name}",
            Self::SearchIdentifier => "GET Patient?identifier={CIN system}|{random CIN}",
            Self::SearchCareteam => "GET CareTeam?patient=Patient/{random id}",
            Self::SearchServicerequest => {
                "GET ServiceRequest?patient={random id}&status=active&_include=ServiceRequest:requester"
            }
            Self::SearchBirthdatePaging => {
                "GET Patient?birthdate=ge2010-01-01&_count=50, then its next link"
            }
            Self::SearchCondition => "GET Condition?patient=Patient/{random id}",
            Self::SearchConditionCode => {
                "GET Condition?code=http://snomed.info/sct|{random code}&_count=50"
            }
        }
    }
}

/// The first page of `search-birthdate-paging`.
pub const BIRTHDATE_FIRST_PAGE: &str = "Patient?birthdate=ge2010-01-01&_count=50";

/// Request bodies built once, before anything is timed. They do not depend on the server, so one
/// corpus serves every run.
pub struct Corpus {
    /// Two alternating revisions of each loaded patient, for updates.
    updates: Vec<[Box<[u8]>; 2]>,
    /// New patients (no id), cycled through by the create workers.
    creates: Vec<Box<[u8]>>,
    /// Request paths (relative to the base) of each search workload that picks one at random.
    searches: Vec<(Workload, Vec<String>)>,
}

const CREATE_BODIES: usize = 1024;

impl Corpus {
    pub fn build(patients: usize, workloads: &[Workload]) -> Result<Self> {
        let bytes =
            |v: serde_json::Value| -> Result<Box<[u8]>> { Ok(serde_json::to_vec(&v)?.into()) };
        let groups = data::family_groups(patients);
        let mut updates = Vec::new();
        if workloads.contains(&Workload::Update) {
            updates.reserve(patients);
            for i in 0..patients {
                let id = data::patient_id(i);
                updates.push([
                    bytes(data::patient(i, groups, Some(&id), 1))?,
                    bytes(data::patient(i, groups, Some(&id), 2))?,
                ]);
            }
        }
        let mut creates = Vec::new();
        if workloads.contains(&Workload::Create) {
            for k in 0..CREATE_BODIES {
                creates.push(bytes(data::patient(patients + k, groups, None, 0))?);
            }
        }
        let mut searches = Vec::new();
        for &w in workloads {
            let paths: Vec<String> = match w {
                Workload::SearchFamily => (0..groups)
                    .map(|g| format!("Patient?family={}", data::family_stem(g)))
                    .collect(),
                Workload::SearchIdentifier => (0..patients)
                    .map(|i| {
                        let token = format!("{}|{}", data::CIN_SYSTEM, data::cin(i));
                        format!(
                            "Patient?identifier={}",
                            percent_encoding::utf8_percent_encode(
                                &token,
                                percent_encoding::NON_ALPHANUMERIC
                            )
                        )
                    })
                    .collect(),
                Workload::SearchCareteam => (0..patients)
                    .map(|i| format!("CareTeam?patient=Patient/{}", data::patient_id(i)))
                    .collect(),
                Workload::SearchCondition => (0..patients)
                    .map(|i| format!("Condition?patient=Patient/{}", data::patient_id(i)))
                    .collect(),
                Workload::SearchConditionCode => data::condition_codes()
                    .map(|code| format!("Condition?code=http://snomed.info/sct%7C{code}&_count=50"))
                    .collect(),
                Workload::SearchServicerequest => (0..patients)
                    .map(|i| {
                        format!(
                            "ServiceRequest?patient={}&status=active&_include=ServiceRequest:requester",
                            data::patient_id(i)
                        )
                    })
                    .collect(),
                _ => continue,
            };
            searches.push((w, paths));
        }
        Ok(Self {
            updates,
            creates,
            searches,
        })
    }
}

/// What every worker of one server's run shares.
pub struct Shared {
    pub target: Arc<Target>,
    endpoint: Endpoint,
    corpus: Arc<Corpus>,
    /// `Patient/{id}` of each loaded patient, relative to the base.
    patient_paths: Vec<String>,
    history_paths: Vec<String>,
    /// Current ETag of each loaded patient; handed to the update workers and taken back.
    etags: Mutex<Vec<Option<HeaderValue>>>,
}

impl Shared {
    pub async fn new(
        target: Arc<Target>,
        corpus: Arc<Corpus>,
        etags: Vec<Option<HeaderValue>>,
    ) -> Result<Self> {
        let patient_paths: Vec<String> = (0..etags.len())
            .map(|i| format!("Patient/{}", data::patient_id(i)))
            .collect();
        Ok(Self {
            endpoint: Endpoint::new(&target).await?,
            history_paths: patient_paths
                .iter()
                .map(|p| format!("{p}/_history"))
                .collect(),
            patient_paths,
            etags: Mutex::new(etags),
            target,
            corpus,
        })
    }

    fn patients(&self) -> usize {
        self.patient_paths.len()
    }
}

pub struct Settings {
    pub clients: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub request_timeout: Duration,
    /// Our server's process, to report its CPU use.
    pub server_pid: Option<u32>,
}

pub struct WorkloadResult {
    /// Row name: the workload's, or one of its pages, and `@provider` when the
    /// consent-governed requester sent it.
    pub name: String,
    /// Responses received in the measured window, errors included.
    pub requests: u64,
    /// Non-2xx responses and transport failures.
    pub errors: u64,
    /// 412 Precondition Failed (also counted in `errors`).
    pub conflicts: u64,
    pub elapsed: Duration,
    /// Latency in microseconds.
    pub hist: Histogram<u64>,
    /// Established connections to the server, sampled during the run.
    pub connections: Option<usize>,
    /// CPU use in percent of one core over the measured window.
    pub server_cpu: Option<f64>,
    pub client_cpu: Option<f64>,
    pub first_error: Option<String>,
}

impl WorkloadResult {
    pub fn per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency quantile in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        self.hist.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.hist.max() as f64 / 1000.0
    }
}

#[derive(Clone, Copy)]
struct Phases {
    measure_from: Instant,
    end: Instant,
}

/// Run `workload` with `settings.clients` workers: warm-up, then the measured window. One result
/// per row of the workload (two for paging).
pub async fn run(
    workload: Workload,
    requester: Requester,
    shared: Arc<Shared>,
    settings: &Settings,
) -> Result<Vec<WorkloadResult>> {
    // The renewer may have replaced the token since the last workload.
    shared.endpoint.refresh_authorization(&shared.target);
    let clients = settings.clients;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let (phase_tx, phase_rx) = watch::channel(None::<Phases>);
    let mut handles = Vec::with_capacity(clients);
    for index in 0..clients {
        let mut worker = Worker::new(
            workload,
            index,
            clients,
            shared.clone(),
            settings.request_timeout,
        )?;
        let barrier = barrier.clone();
        let mut phase_rx = phase_rx.clone();
        handles.push(tokio::spawn(async move {
            worker.prepare().await;
            barrier.wait().await;
            let phases = phase_rx
                .wait_for(Option::is_some)
                .await
                .map(|p| p.expect("checked by wait_for"));
            match phases {
                Ok(phases) => worker.run(phases).await,
                Err(_) => worker.stats,
            }
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let phases = Phases {
        measure_from: start + settings.warmup,
        end: start + settings.warmup + settings.duration,
    };
    phase_tx.send_replace(Some(phases));

    let ticks = sys::clock_ticks();
    sleep_until(phases.measure_from.into()).await;
    let server_pid = settings.server_pid.map(|p| p.to_string());
    let cpu_before = (
        sys::cpu_ticks("self"),
        server_pid.as_deref().and_then(sys::cpu_ticks),
    );
    sleep_until((phases.measure_from + (settings.duration / 2).min(Duration::from_secs(1))).into())
        .await;
    let connections = shared.target.port().and_then(sys::connections_to);
    sleep_until(phases.end.into()).await;
    let cpu_after = (
        sys::cpu_ticks("self"),
        server_pid.as_deref().and_then(sys::cpu_ticks),
    );
    let percent = |before: Option<u64>, after: Option<u64>| {
        Some((after? - before?) as f64 / ticks / settings.duration.as_secs_f64() * 100.0)
    };

    let mut results: Vec<WorkloadResult> = workload
        .parts()
        .iter()
        .map(|&name| WorkloadResult {
            name: match requester {
                Requester::Custodian => name.to_string(),
                other => format!("{name}@{}", other.name()),
            },
            requests: 0,
            errors: 0,
            conflicts: 0,
            elapsed: settings.duration,
            hist: new_histogram(),
            connections,
            server_cpu: percent(cpu_before.1, cpu_after.1),
            client_cpu: percent(cpu_before.0, cpu_after.0),
            first_error: None,
        })
        .collect();
    let mut finished = phases.end;
    for handle in handles {
        let stats = handle.await.map_err(|e| format!("worker failed: {e}"))?;
        for (result, part) in results.iter_mut().zip(stats.parts) {
            result.requests += part.requests;
            result.errors += part.errors;
            result.conflicts += part.conflicts;
            result.hist.add(&part.hist)?;
            result.first_error = result.first_error.take().or(part.first_error);
        }
        finished = finished.max(stats.finished);
        if let Some(owned) = stats.owned {
            let mut etags = shared.etags.lock().expect("etag lock");
            for p in owned {
                etags[p.index] = p.etag;
            }
        }
    }
    for result in &mut results {
        result.elapsed = finished.saturating_duration_since(phases.measure_from);
    }
    Ok(results)
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

struct OwnedPatient {
    index: usize,
    etag: Option<HeaderValue>,
    revision: usize,
}

/// What a worker iterates over.
enum Plan {
    Read,
    History,
    Create {
        next: usize,
    },
    Update {
        owned: Vec<OwnedPatient>,
        next: usize,
    },
    /// A random one of these paths (index into `Corpus::searches`).
    Search(usize),
    /// The first page; then, when set, the page its `next` link named.
    Paging {
        next_page: Option<String>,
    },
}

enum Next {
    /// The request for this row (part) of the workload is in the worker's buffer.
    Ready(usize),
    /// Nothing (left) to do for this worker.
    Done,
    /// Could not build the request; counted as an error.
    Skip(String),
}

/// What one worker measured for one row of its workload.
struct Part {
    requests: u64,
    errors: u64,
    conflicts: u64,
    hist: Histogram<u64>,
    first_error: Option<String>,
}

impl Part {
    fn new() -> Self {
        Self {
            requests: 0,
            errors: 0,
            conflicts: 0,
            hist: new_histogram(),
            first_error: None,
        }
    }

    fn error(&mut self, why: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(why());
        }
    }
}

struct Stats {
    parts: Vec<Part>,
    finished: Instant,
    owned: Option<Vec<OwnedPatient>>,
}

struct Worker {
    conn: Connection,
    /// The request being sent, rebuilt in place each time.
    out: Vec<u8>,
    timeout: Duration,
    shared: Arc<Shared>,
    rng: Rng,
    clients: usize,
    plan: Plan,
    stats: Stats,
}

impl Worker {
    fn new(
        workload: Workload,
        index: usize,
        clients: usize,
        shared: Arc<Shared>,
        timeout: Duration,
    ) -> Result<Self> {
        let plan = match workload {
            Workload::Read => Plan::Read,
            Workload::History => Plan::History,
            Workload::Create => Plan::Create { next: index },
            Workload::Update => {
                let etags = shared.etags.lock().expect("etag lock");
                let owned = (index..shared.patients())
                    .step_by(clients)
                    .map(|i| OwnedPatient {
                        index: i,
                        etag: etags[i].clone(),
                        revision: 0,
                    })
                    .collect();
                Plan::Update { owned, next: 0 }
            }
            Workload::SearchBirthdatePaging => Plan::Paging { next_page: None },
            search => Plan::Search(
                shared
                    .corpus
                    .searches
                    .iter()
                    .position(|(w, _)| *w == search)
                    .ok_or_else(|| format!("no request paths for {}", search.name()))?,
            ),
        };
        Ok(Self {
            conn: Connection::new(),
            out: Vec::with_capacity(4096),
            timeout,
            rng: Rng::new(0xBE7C_0000 + index as u64),
            clients,
            plan,
            stats: Stats {
                parts: workload.parts().iter().map(|_| Part::new()).collect(),
                finished: Instant::now(),
                owned: None,
            },
            shared,
        })
    }

    /// Untimed set-up: learn the current version of patients the load did not report.
    async fn prepare(&mut self) {
        if let Plan::Update { owned, .. } = &mut self.plan {
            for p in owned.iter_mut().filter(|p| p.etag.is_none()) {
                p.etag = current_etag(&mut self.conn, &mut self.out, &self.shared, p.index).await;
            }
        }
    }

    async fn run(mut self, phases: Phases) -> Stats {
        let want_etag = matches!(self.plan, Plan::Update { .. });
        loop {
            if Instant::now() >= phases.end {
                break;
            }
            let part = match self.next_request().await {
                Next::Ready(part) => part,
                Next::Done => break,
                Next::Skip(why) => {
                    if Instant::now() >= phases.measure_from {
                        self.stats.parts[0].error(|| why);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let first_page = matches!(self.plan, Plan::Paging { .. }) && part == 0;
            let t0 = Instant::now();
            let measured = t0 >= phases.measure_from;
            let keep_body = if first_page {
                PAGE_BODY
            } else if measured && self.stats.parts[part].first_error.is_none() {
                ERROR_BODY
            } else {
                0
            };
            let exchange =
                self.conn
                    .exchange(&self.shared.endpoint, &self.out, want_etag, keep_body);
            let outcome = match tokio::time::timeout(self.timeout, exchange).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => {
                    self.conn = Connection::new();
                    Err(format!("no response within {:?}", self.timeout))
                }
            };
            let done = Instant::now();
            let stats = &mut self.stats.parts[part];
            if measured {
                self.stats.finished = done;
                stats.requests += 1;
                let micros = (done - t0).as_micros().max(1) as u64;
                stats.hist.saturating_record(micros);
            }
            match outcome {
                Ok(reply) if (200..300).contains(&reply.status) => match &mut self.plan {
                    Plan::Update { owned, next } => {
                        owned[*next].etag = reply.etag;
                        *next = (*next + 1) % owned.len();
                    }
                    Plan::Paging { next_page } if part == 0 => {
                        let body = reply.body.unwrap_or_default();
                        *next_page = next_link(&body)
                            .and_then(|url| self.shared.endpoint.relative_path(&url));
                        if next_page.is_none() && measured {
                            stats.error(|| {
                                format!(
                                    "GET {BIRTHDATE_FIRST_PAGE}: HTTP {} without a usable next link: {}",
                                    reply.status,
                                    snippet(&body)
                                )
                            });
                        }
                    }
                    Plan::Paging { next_page } => *next_page = None,
                    _ => {}
                },
                Ok(reply) => {
                    if measured {
                        if reply.status == 412 {
                            stats.conflicts += 1;
                        }
                        let request = request_line(&self.out);
                        stats.error(|| {
                            format!(
                                "{request}: HTTP {}: {}",
                                reply.status,
                                snippet(&reply.body.unwrap_or_default())
                            )
                        });
                    }
                    match &mut self.plan {
                        Plan::Update { owned, next } => {
                            // Re-learn the version before touching this patient again.
                            owned[*next].etag = None;
                            *next = (*next + 1) % owned.len();
                        }
                        Plan::Paging { next_page } => *next_page = None,
                        _ => {}
                    }
                }
                Err(e) => {
                    if measured {
                        let request = request_line(&self.out);
                        stats.error(|| format!("{request}: {e}"));
                    }
                    if let Plan::Paging { next_page } = &mut self.plan {
                        *next_page = None;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        if let Plan::Update { owned, .. } = self.plan {
            self.stats.owned = Some(owned);
        }
        self.stats
    }

    /// Write the next request into `self.out`.
    async fn next_request(&mut self) -> Next {
        let shared = &*self.shared;
        let endpoint = &shared.endpoint;
        match &mut self.plan {
            Plan::Read => {
                let path = &shared.patient_paths[self.rng.below(shared.patients())];
                endpoint.write_request(&mut self.out, "GET", path, None, None);
            }
            Plan::History => {
                let path = &shared.history_paths[self.rng.below(shared.patients())];
                endpoint.write_request(&mut self.out, "GET", path, None, None);
            }
            Plan::Create { next } => {
                let bodies = &shared.corpus.creates;
                let body = &bodies[*next % bodies.len()];
                *next += self.clients;
                endpoint.write_request(&mut self.out, "POST", "Patient", None, Some(body));
            }
            Plan::Update { owned, next } => {
                let len = owned.len();
                let Some(p) = owned.get_mut(*next) else {
                    return Next::Done;
                };
                if p.etag.is_none() {
                    p.etag = current_etag(&mut self.conn, &mut self.out, shared, p.index).await;
                }
                let Some(etag) = &p.etag else {
                    *next = (*next + 1) % len;
                    return Next::Skip(format!(
                        "no ETag for Patient/{}",
                        data::patient_id(p.index)
                    ));
                };
                p.revision += 1;
                let body = &shared.corpus.updates[p.index][p.revision % 2];
                let path = &shared.patient_paths[p.index];
                endpoint.write_request(&mut self.out, "PUT", path, Some(etag), Some(body));
            }
            Plan::Search(k) => {
                let paths = &shared.corpus.searches[*k].1;
                let path = &paths[self.rng.below(paths.len())];
                endpoint.write_request(&mut self.out, "GET", path, None, None);
            }
            Plan::Paging { next_page } => {
                let (path, part) = match next_page {
                    Some(next) => (next.as_str(), 1),
                    None => (BIRTHDATE_FIRST_PAGE, 0),
                };
                endpoint.write_request(&mut self.out, "GET", path, None, None);
                return Next::Ready(part);
            }
        }
        Next::Ready(0)
    }
}

/// ETag of patient `index` from a read.
async fn current_etag(
    conn: &mut Connection,
    out: &mut Vec<u8>,
    shared: &Shared,
    index: usize,
) -> Option<HeaderValue> {
    let endpoint = &shared.endpoint;
    endpoint.write_request(out, "GET", &shared.patient_paths[index], None, None);
    let reply = conn.exchange(endpoint, out, true, 0).await.ok()?;
    reply.etag.filter(|_| reply.status == 200)
}

/// Bytes of a response body kept for an error message.
const ERROR_BODY: usize = 600;
/// Bytes of a first page kept to find its `next` link.
const PAGE_BODY: usize = 64 << 20;

/// The start of a body, for an error message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY)]);
    text.trim().to_owned()
}

/// `METHOD target` of the request in `out`.
fn request_line(out: &[u8]) -> String {
    let end = find(out, b" HTTP/1.1").unwrap_or(out.len().min(200));
    String::from_utf8_lossy(&out[..end]).into_owned()
}

#[derive(serde::Deserialize)]
struct Link {
    relation: String,
    url: String,
}

#[derive(serde::Deserialize)]
struct Links {
    #[serde(default)]
    link: Vec<Link>,
}

/// The `next` link of a searchset Bundle. Our server writes `link` before `entry`, so the
/// link array is read where it starts without parsing the entries; otherwise (another server,
/// another order) the whole Bundle is parsed.
fn next_link(body: &[u8]) -> Option<String> {
    let early = || {
        let at = find(body, b"\"link\"")?;
        if find(&body[..at], b"\"entry\"").is_some() {
            return None;
        }
        let rest = &body[at + 6..];
        let colon = rest.iter().position(|&b| b == b':')?;
        if !rest[..colon].iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        serde_json::Deserializer::from_slice(&rest[colon + 1..])
            .into_iter::<Vec<Link>>()
            .next()?
            .ok()
    };
    let links = early().or_else(|| Some(serde_json::from_slice::<Links>(body).ok()?.link))?;
    links
        .into_iter()
        .find(|l| l.relation == "next")
        .map(|l| l.url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_is_found_before_or_after_the_entries() {
        let ours = br#"{"resourceType":"Bundle","type":"searchset","total":3,"link":[{"relation":"self","url":"http://h/Patient?a=1"},{"relation":"next","url":"http://h/Patient?a=1&_cursor=xyz"}],"entry":[{"resource":{"link":[{"other":{}}]}}]}"#;
        assert_eq!(
            next_link(ours).as_deref(),
            Some("http://h/Patient?a=1&_cursor=xyz")
        );
        let theirs = br#"{"entry":[{"resource":{"resourceType":"Patient","link":[{"type":"seealso"}]}}],"link":[{"relation":"next","url":"n"}]}"#;
        assert_eq!(next_link(theirs).as_deref(), Some("n"));
        assert_eq!(
            next_link(br#"{"link":[{"relation":"self","url":"s"}]}"#),
            None
        );
    }
}
