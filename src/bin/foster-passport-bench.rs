//! `foster-passport-bench`: load and throughput benchmark for the foster-passport FHIR server.
//!
//! ```text
//! cargo run --release --bin foster-passport-bench -- [--patients 10000] [--clients 16] \
//!     [--duration 10s] [--warmup 2s] [--workloads read,create,update,history] \
//!     [--server-bin PATH] [--database URL] [--target URL] [--compare URL] \
//!     [--as custodian,provider] [--no-write-results] [--label TEXT]
//! ```
//!
//! By default it builds (under `cargo run`) and starts `foster-passport serve` from the same
//! target directory on a fresh SQLite database in a temporary directory, loads 100 shared
//! Practitioners and `--patients` synthetic pediatric patients (Patient + Condition +
//! AllergyIntolerance + Immunization + CareTeam + one or two ServiceRequests) through
//! transaction Bundles and reports the load rate. Then, for each workload, it runs
//! `--clients` concurrent HTTP/1.1 keep-alive connections for `--warmup` plus `--duration`
//! and reports requests/s and latency percentiles. Results are printed and appended to
//! `BENCHMARKS.md` at the repository root (see `--results-file`, `--no-write-results`).
//!
//! The default workloads are read, create, update and history. The search workloads run only
//! when named: `--workloads search-family,search-identifier,search-careteam,\
//! search-servicerequest,search-birthdate-paging` (see `bench::workload::Workload`).
//!
//! Every patient's record carries an active privacy Consent that permits the Organization
//! `fpb-clinic` access for treatment (no sensitive labels), and every tenth patient has a second
//! Condition labelled `MH`, which that Consent does not release. `--as custodian,provider` runs
//! each read and search workload twice: as the custodian backend client (consent exempt) and as
//! a backend client with role `provider` for `fpb-clinic`, purpose TREAT, whose every resource
//! the consent engine decides; the provider's rows are named `{workload}@provider`. Write
//! workloads run as the custodian only.
//!
//! `--target URL` benchmarks a server that is already running (its FHIR base, e.g. the HFS
//! peer at `http://127.0.0.1:8101`) instead of starting ours; `--compare URL` benchmarks ours
//! and then that server in the same invocation and adds a ratio table. Run it on an otherwise
//! idle machine: client and server share the CPUs.

mod bench;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use bench::Result;
use bench::data;
use bench::http::Target;
use bench::load::{self, LoadMode};
use bench::report::{self, Context, Run};
use bench::server::{BenchClient, Registration, ServerProcess, WorkDir};
use bench::sys;
use bench::workload::{self, Corpus, Requester, Settings, Shared, Workload};

/// Benchmark a FHIR server: load synthetic patients, then measure read, create, update, history
/// and searches under concurrent keep-alive clients.
#[derive(Parser, Debug)]
#[command(name = "foster-passport-bench", version)]
struct Cli {
    /// Synthetic patients to load (each with 5 or 6 more resources).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    patients: u64,
    /// Concurrent clients, one keep-alive connection each.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    clients: u64,
    /// Measured time per workload (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before each workload's measured time.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Workloads to run, in order [default: read,create,update,history; the search-* ones run
    /// only when named].
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Workload::ALL)]
    workloads: Vec<Workload>,
    /// Who sends the read and search workloads, in order: `custodian` (consent exempt),
    /// `provider` (a consent-governed backend client; our server only). Write workloads run
    /// as the custodian only.
    #[arg(long = "as", value_enum, value_delimiter = ',', default_values_t = [Requester::Custodian])]
    requesters: Vec<Requester>,
    /// Server binary to start [default: foster-passport next to this executable].
    #[arg(long, conflicts_with = "target")]
    server_bin: Option<PathBuf>,
    /// Database URL for our server [default: SQLite in a fresh temporary directory].
    #[arg(long, conflicts_with = "target")]
    database: Option<String>,
    /// Benchmark an already running server at this FHIR base URL instead of starting ours.
    #[arg(long)]
    target: Option<String>,
    /// After the main run, run the same workloads against this FHIR base URL (e.g. the HFS
    /// peer) and report the ratios.
    #[arg(long)]
    compare: Option<String>,
    /// Do not `cargo build` the server binary first when run under `cargo run`.
    #[arg(long)]
    no_build: bool,
    /// How to load the patients.
    #[arg(long, value_enum, default_value_t = LoadMode::Transaction)]
    load_mode: LoadMode,
    /// The patients are already loaded (with `--target`): measure only. Workloads that update
    /// patients need the ETags a load gives and are not for this mode.
    #[arg(long, requires = "target")]
    no_load: bool,
    /// Resources per transaction Bundle when loading.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(4..))]
    bundle_size: u64,
    /// Load requests in flight at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=256))]
    load_concurrency: u64,
    /// Threads of the bench's own async runtime.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=256))]
    client_threads: u64,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Bearer token sent in `Authorization` on every request.
    #[arg(long, env = "FP_BENCH_TOKEN", hide_env_values = true)]
    bearer_token: Option<String>,
    /// Print results only; do not append them to the results file.
    #[arg(long)]
    no_write_results: bool,
    /// File the results are appended to.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md"))]
    results_file: PathBuf,
    /// Free text for the heading of the results section.
    #[arg(long)]
    label: Option<String>,
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 10s, 500ms or 1m"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.client_threads as usize)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = run(&cli) => r,
            _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("foster-passport-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<()> {
    let mut workloads = cli.workloads.clone();
    workloads.dedup();
    let mut requesters = cli.requesters.clone();
    requesters.dedup();
    if cli.target.is_some() && requesters.contains(&Requester::Provider) {
        return Err("--as provider needs our own server (it registers the provider client)".into());
    }
    let patients = cli.patients as usize;
    let corpus = Arc::new(Corpus::build(patients, &workloads)?);
    let token = cli.bearer_token.as_deref();

    let mut runs = Vec::new();
    if let Some(url) = &cli.target {
        let target = Arc::new(Target::new(url, token)?);
        runs.push(bench_server(cli, &workloads, &corpus, target, url.clone(), None, None).await?);
    } else {
        let workdir = WorkDir::create()?;
        let bin = server_bin(cli)?;
        let database = cli
            .database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", workdir.path().join("bench.db").display()));
        let backend = database.split(':').next().unwrap_or("?").to_owned();
        eprintln!("starting {} on {database}", bin.display());
        let log = workdir.path().join("server.log");
        let client =
            BenchClient::register(&bin, &database, workdir.path(), Registration::custodian())?;
        let provider = if requesters.contains(&Requester::Provider) {
            Some(BenchClient::register(
                &bin,
                &database,
                workdir.path(),
                Registration::provider(data::PROVIDER_ORG),
            )?)
        } else {
            None
        };
        let server = ServerProcess::start(&bin, &database, &log, Duration::from_secs(60))?;
        eprintln!("server listening at {}", server.base);
        let client = Arc::new(client.for_server(&server.base));
        let target = Target::new(&server.base, Some(&client.token()?))?;
        let title = format!("foster-passport ({backend})");
        let target = Arc::new(target);
        // Backend tokens live 300 s; a run takes longer. Renew every 200 s.
        let renewer = renew_tokens(client.clone(), target.clone());
        let provider = provider.map(|p| Arc::new(p.for_server(&server.base)));
        let run = bench_server(
            cli,
            &workloads,
            &corpus,
            target,
            title,
            Some(server.pid()),
            provider,
        )
        .await;
        renewer.abort();
        server.stop(Duration::from_secs(10));
        runs.push(run?);
    }
    if let Some(url) = &cli.compare {
        let target = Arc::new(Target::new(url, token)?);
        runs.push(bench_server(cli, &workloads, &corpus, target, url.clone(), None, None).await?);
    }

    for run in &runs {
        report::print_run(run);
    }
    report::print_ratios(&runs);

    if !cli.no_write_results {
        let ctx = Context {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            label: cli.label.clone(),
            machine: sys::machine(),
            commit: sys::git_commit(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))),
            command: report::command_line(),
            patients,
            clients: cli.clients as usize,
            warmup: cli.warmup,
            duration: cli.duration,
            client_threads: cli.client_threads as usize,
        };
        report::append(&cli.results_file, &report::section(&ctx, &runs))?;
        println!("\nappended to {}", cli.results_file.display());
    }
    Ok(())
}

/// The server binary; under `cargo run`, first brought up to date with `cargo build`.
fn server_bin(cli: &Cli) -> Result<PathBuf> {
    if let Some(bin) = &cli.server_bin {
        return Ok(bin.clone());
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .ok_or("executable has no directory")?
        .join("foster-passport");
    if let (false, Some(cargo)) = (cli.no_build, std::env::var_os("CARGO")) {
        let mut build = std::process::Command::new(cargo);
        build
            .args(["build", "--bin", "foster-passport"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        eprintln!("building foster-passport ({build:?})");
        if !build.status()?.success() {
            return Err("cargo build of foster-passport failed".into());
        }
    }
    if !bin.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release --bin foster-passport`, or pass --server-bin",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

/// Load the patients into `target`, then run every workload against it, as each requester of
/// `--as` (the provider only when `provider` is given).
async fn bench_server(
    cli: &Cli,
    workloads: &[Workload],
    corpus: &Arc<Corpus>,
    target: Arc<Target>,
    title: String,
    server_pid: Option<u32>,
    provider: Option<Arc<BenchClient>>,
) -> Result<Run> {
    eprintln!(
        "[{title}] loading {} patients into {}",
        cli.patients, target.base
    );
    let mut load = if cli.no_load {
        load::LoadResult {
            mode: cli.load_mode,
            resources: 0,
            requests: 0,
            elapsed: Duration::ZERO,
            etags: vec![None; cli.patients as usize],
        }
    } else {
        load::load(
            target.clone(),
            cli.patients as usize,
            cli.bundle_size as usize,
            cli.load_concurrency as usize,
            cli.load_mode,
        )
        .await?
    };
    eprintln!("[{title}] load: {}", load.describe());
    let etags = std::mem::take(&mut load.etags);
    let patients = etags.len();
    let base = target.base.clone();
    let mut senders = vec![(
        Requester::Custodian,
        Arc::new(Shared::new(target, corpus.clone(), etags).await?),
    )];
    let mut renewer = None;
    if let Some(client) = provider {
        let token = {
            let client = client.clone();
            tokio::task::spawn_blocking(move || client.token()).await??
        };
        let target = Arc::new(Target::new(&base, Some(&token))?);
        renewer = Some(renew_tokens(client, target.clone()));
        senders.push((
            Requester::Provider,
            Arc::new(Shared::new(target, corpus.clone(), vec![None; patients]).await?),
        ));
    }
    let result = run_workloads(cli, workloads, &title, &senders, server_pid).await;
    if let Some(r) = renewer {
        r.abort();
    }
    Ok(Run {
        title,
        load,
        results: result?,
    })
}

/// Every workload, as each requester of `--as` that has a sender (writes as the custodian only).
async fn run_workloads(
    cli: &Cli,
    workloads: &[Workload],
    title: &str,
    senders: &[(Requester, Arc<Shared>)],
    server_pid: Option<u32>,
) -> Result<Vec<workload::WorkloadResult>> {
    let settings = Settings {
        clients: cli.clients as usize,
        warmup: cli.warmup,
        duration: cli.duration,
        request_timeout: cli.request_timeout,
        server_pid,
    };
    let mut results = Vec::new();
    for &w in workloads {
        for &requester in &cli.requesters {
            if w.writes() && requester != Requester::Custodian {
                eprintln!(
                    "[{title}] {}: skipped as {} (writes run as the custodian only)",
                    w.name(),
                    requester.name()
                );
                continue;
            }
            let Some((_, shared)) = senders.iter().find(|(r, _)| *r == requester) else {
                continue;
            };
            run_one(title, w, requester, shared, &settings, &mut results).await?;
        }
    }
    Ok(results)
}

/// One workload as one requester; its rows are added to `results`.
async fn run_one(
    title: &str,
    w: Workload,
    requester: Requester,
    shared: &Arc<Shared>,
    settings: &Settings,
    results: &mut Vec<workload::WorkloadResult>,
) -> Result<()> {
    eprintln!(
        "[{title}] {} as {}: {} with {} clients, {:?} warm-up + {:?}",
        w.name(),
        requester.name(),
        w.request_line(),
        settings.clients,
        settings.warmup,
        settings.duration
    );
    if let Some(waited) = audit_caught_up(&shared.target).await {
        eprintln!(
            "[{title}] the audit writer caught up with earlier requests in {:.1} s",
            waited.as_secs_f64()
        );
    }
    for r in workload::run(w, requester, shared.clone(), settings).await? {
        eprintln!(
            "[{title}] {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            r.name,
            r.per_sec(),
            r.ms(0.5),
            r.ms(0.99),
            r.errors
        );
        if let Some(e) = r.first_error.as_deref().filter(|_| r.errors > 0) {
            eprintln!("[{title}] {}: first error: {e}", r.name);
        }
        results.push(r);
    }
    Ok(())
}

/// Waits until the server's audit writer has written every event of earlier requests (its
/// `audit_events_pending` gauge reads 0, for at most 10 minutes), so that one workload's backlog
/// does not slow the next; how long that took. `None` for servers without the gauge.
async fn audit_caught_up(target: &Target) -> Option<Duration> {
    let mut url = target.url("");
    url.set_path("/metrics");
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    loop {
        let text = client
            .get(url.clone())
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let pending: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("audit_events_pending "))?
            .trim()
            .parse()
            .ok()?;
        if pending == 0.0 || started.elapsed() > Duration::from_secs(600) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Renew `client`'s token for `target` every 200 s (backend tokens live 300 s).
fn renew_tokens(client: Arc<BenchClient>, target: Arc<Target>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(200)).await;
            let client = client.clone();
            match tokio::task::spawn_blocking(move || client.token()).await {
                Ok(Ok(token)) => {
                    if let Err(e) = target.set_token(&token) {
                        eprintln!("cannot use the renewed token: {e}");
                    }
                }
                Ok(Err(e)) => eprintln!("token renewal failed: {e}"),
                Err(e) => eprintln!("token renewal failed: {e}"),
            }
        }
    })
}
