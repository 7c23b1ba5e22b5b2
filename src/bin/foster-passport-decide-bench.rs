//! `foster-passport-decide-bench`: the cost of the consent decision for one search page,
//! measured in-process (issue 5: "a search page of 50 candidate resources is decided in under
//! 1 ms total").
//!
//! ```text
//! cargo run --release --bin foster-passport-decide-bench -- [--patients 10000] \
//!     [--iterations 2000] [--page 50]
//! ```
//!
//! It writes the benchmark's synthetic records (`src/bin/bench/data.rs`: every patient with an
//! active privacy Consent permitting `Organization/fpb-clinic` for treatment, every tenth with a
//! second, `MH`-labelled Condition that Consent does not release) into a fresh SQLite store
//! through the server's own write path, then measures, for a requester with role `provider`
//! acting for that Organization with purpose TREAT, what one search request of Conditions does
//! for consent (`src/interactions/search.rs`), each step timed apart, per iteration:
//!
//! - **criterion**: a fresh `Access` (one per request, as the server makes) builds the consent
//!   criterion the search ANDs into its query (`Access::criterion`: the compiled-consent cache
//!   checked against the database, the requester's facts, then `type_release` and a compartment
//!   criterion for every patient whose consents could release something to it);
//! - **page**: each of `--page` candidate Conditions, stored JSON text as the query returns it,
//!   is parsed and decided with `Access::consent_permits` (patients of the resource, then
//!   `access::consent::decide` over that patient's compiled consents), as the search does for
//!   every match of the page;
//! - **decide only**: the same resources, already parsed, through `access::consent::decide`
//!   alone (the engine without the JSON parse and the compartment lookup).
//!
//! Each page mixes plain and `MH`-labelled Conditions of random patients (about one in five
//! labelled, so some are denied). Prints median, p99 and max per step in microseconds.

#[allow(dead_code)]
#[path = "bench/data.rs"]
mod data;

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::Value;

use foster_passport::access::consent;
use foster_passport::access::{Access, Requester};
use foster_passport::auth::scopes::{Letter, ScopeSet};
use foster_passport::interactions::{Ctx, write_version};
use foster_passport::search::SearchRegistry;
use foster_passport::store::query::Criterion;
use foster_passport::store::{self, WriteMethod};

#[derive(Parser, Debug)]
#[command(name = "foster-passport-decide-bench", version)]
struct Cli {
    /// Synthetic patients to write (each with a privacy Consent).
    #[arg(long, default_value_t = 10_000)]
    patients: usize,
    /// Pages decided (each a fresh request).
    #[arg(long, default_value_t = 2_000)]
    iterations: usize,
    /// Candidate resources per page.
    #[arg(long, default_value_t = 50)]
    page: usize,
    /// Patients per write transaction while loading.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Result<()> {
    let cli = Cli::parse();
    let dir = std::env::temp_dir().join(format!("fp-decide-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let outcome = run(&cli, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn run(cli: &Cli, dir: &std::path::Path) -> Result<()> {
    let url = format!("sqlite://{}", dir.join("decide.db").display());
    let store = store::open(&url)?;
    let ctx = Ctx {
        base_url: "http://127.0.0.1:8080/fhir".into(),
        search: Arc::new(SearchRegistry::load()?),
        capability_statement: Arc::from("{}"),
        consents: Default::default(),
    };

    // Load through the server's own write path (index rows, compiled-consent checks).
    let started = Instant::now();
    let groups = data::family_groups(cli.patients);
    let server = Access::server();
    {
        let mut tx = store.begin()?;
        let org = data::provider_organization();
        write_version(
            &ctx,
            &server,
            tx.as_mut(),
            "Organization",
            data::PROVIDER_ORG,
            None,
            WriteMethod::Update,
            org,
        )?;
        for k in 0..data::PRACTITIONERS {
            write_version(
                &ctx,
                &server,
                tx.as_mut(),
                "Practitioner",
                &data::practitioner_id(k),
                None,
                WriteMethod::Update,
                data::practitioner(k),
            )?;
        }
        tx.commit()?;
    }
    let mut written = data::PRACTITIONERS + 1;
    for chunk in (0..cli.patients)
        .collect::<Vec<_>>()
        .chunks(cli.batch.max(1))
    {
        let mut tx = store.begin()?;
        for &i in chunk {
            for r in data::record(i, groups) {
                let rtype = r["resourceType"].as_str().unwrap_or_default().to_string();
                let id = r["id"].as_str().unwrap_or_default().to_string();
                write_version(
                    &ctx,
                    &server,
                    tx.as_mut(),
                    &rtype,
                    &id,
                    None,
                    WriteMethod::Update,
                    r,
                )?;
                written += 1;
            }
        }
        tx.commit()?;
    }
    eprintln!(
        "loaded {written} resources for {} patients in {:.1} s",
        cli.patients,
        started.elapsed().as_secs_f64()
    );

    let provider = Arc::new(Requester {
        client_id: "bench-provider".into(),
        subject: "bench-provider".into(),
        scopes: ScopeSet::parse("system/*.rs"),
        patient: None,
        fhir_user: None,
        organization: Some(format!("Organization/{}", data::PROVIDER_ORG)),
        role: Some("provider".into()),
        purpose: vec!["TREAT".into()],
        token_id: "bench".into(),
    });

    // Candidate pages: stored text of Conditions of random patients, labelled ones included.
    let mut reader = store.reader()?;
    let mut rng = data::Rng::new(0xDEC1_DE50);
    let labelled: Vec<usize> = (0..cli.patients)
        .filter(|i| i.is_multiple_of(data::SENSITIVE_EVERY))
        .collect();
    let mut pages: Vec<Vec<(String, String)>> = Vec::new();
    for _ in 0..64 {
        let mut page = Vec::with_capacity(cli.page);
        while page.len() < cli.page {
            // One in five a labelled (hidden) Condition.
            let id = if rng.below(5) == 0 && !labelled.is_empty() {
                format!("{}-c2", data::patient_id(*rng.pick(&labelled)))
            } else {
                format!("{}-c1", data::patient_id(rng.below(cli.patients)))
            };
            let v = reader
                .current("Condition", &id)?
                .ok_or_else(|| format!("Condition/{id} was not stored"))?;
            page.push((id, v.body.as_deref().unwrap_or_default().to_string()));
        }
        pages.push(page);
    }

    let mut criterion = hist();
    let mut decided = hist();
    let mut total = hist();
    let mut engine = hist();
    let mut permitted = 0usize;
    let mut groups_in_criterion = 0usize;
    let warmup = (cli.iterations / 10).max(1);
    for n in 0..warmup + cli.iterations {
        let page = &pages[n % pages.len()];
        let t0 = Instant::now();
        let access = Access::new(provider.clone());
        let grant = access.require("Condition", Letter::S)?;
        let criteria = access.criterion(&ctx, reader.as_mut(), "Condition", &grant)?;
        let t1 = Instant::now();
        let mut allowed = 0;
        for (id, text) in page {
            let body: Value = serde_json::from_str(text)?;
            if access.consent_permits(&ctx, reader.as_mut(), "access", "Condition", id, &body)? {
                allowed += 1;
            }
        }
        let t2 = Instant::now();
        std::hint::black_box(&criteria);
        if n >= warmup {
            criterion.saturating_record(micros(t1 - t0));
            decided.saturating_record(micros(t2 - t1));
            total.saturating_record(micros(t2 - t0));
            permitted = allowed;
            groups_in_criterion = criteria.iter().map(groups_of).sum();
        }
    }

    // The engine alone: compiled consents of each resource's patient, parsed bodies.
    let facts = consent::Facts {
        actors: [format!("Organization/{}", data::PROVIDER_ORG)]
            .into_iter()
            .collect(),
        team_roles: Default::default(),
        purposes: vec!["TREAT".into()],
        action: "access",
        now: chrono::Utc::now().timestamp_millis(),
    };
    let parsed: Vec<Vec<(String, Value, Vec<consent::Compiled>)>> = pages
        .iter()
        .map(|page| {
            page.iter()
                .map(|(id, text)| {
                    let body: Value = serde_json::from_str(text).expect("stored JSON");
                    let patient = body["subject"]["reference"]
                        .as_str()
                        .and_then(|r| r.strip_prefix("Patient/"))
                        .unwrap_or_default()
                        .to_string();
                    let c = data::record(
                        patient
                            .strip_prefix("fpb-")
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0),
                        groups,
                    )
                    .into_iter()
                    .filter(|r| r["resourceType"] == "Consent")
                    .filter_map(|r| consent::compile(&r).ok().flatten())
                    .collect();
                    (id.clone(), body, c)
                })
                .collect()
        })
        .collect();
    let mut engine_permits = 0;
    for n in 0..warmup + cli.iterations {
        let page = &parsed[n % parsed.len()];
        let t0 = Instant::now();
        let mut allowed = 0;
        for (id, body, consents) in page {
            let patient = body["subject"]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Patient/"))
                .unwrap_or_default();
            let subject = consent::Subject {
                patient,
                rtype: "Condition",
                id,
                resource: body,
                clinical_date: None,
            };
            if consent::decide(consents, &[], &facts, &subject).permit {
                allowed += 1;
            }
        }
        let t1 = Instant::now();
        if n >= warmup {
            engine.saturating_record(micros(t1 - t0));
            engine_permits = allowed;
        }
    }

    println!(
        "\n{} patients (each with a privacy Consent for Organization/{}); {} pages of {} candidate \
         Conditions; {} measured iterations after {} warm-up",
        cli.patients,
        data::PROVIDER_ORG,
        pages.len(),
        cli.page,
        cli.iterations,
        warmup
    );
    println!(
        "last page: {permitted} of {} permitted (engine alone: {engine_permits}); consent criterion: {} patient groups",
        cli.page, groups_in_criterion
    );
    println!("\n| Step (per search request / page) | Median µs | p90 µs | p99 µs | Max µs |");
    println!("|---|---:|---:|---:|---:|");
    for (name, h) in [
        (
            "criterion (fresh Access, Access::criterion for Condition)",
            &criterion,
        ),
        ("page: parse + Access::consent_permits × page", &decided),
        ("criterion + page", &total),
        ("decide only: consent::decide × page (parsed)", &engine),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.max()
        );
    }
    Ok(())
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn micros(d: std::time::Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// How many OR groups a criterion holds (a policy counts its own criteria's groups).
fn groups_of(c: &Criterion) -> usize {
    match c {
        Criterion::AnyOf(groups) => groups.len(),
        Criterion::Policy(inner) => inner.iter().map(groups_of).sum(),
        _ => 1,
    }
}
