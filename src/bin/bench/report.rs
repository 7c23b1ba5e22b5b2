//! Printing results and appending them to `BENCHMARKS.md`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use super::Result;
use super::load::LoadResult;
use super::workload::WorkloadResult;

/// All workloads against one server.
pub struct Run {
    /// e.g. "foster-passport (sqlite)" or "external http://127.0.0.1:8101".
    pub title: String,
    pub load: LoadResult,
    pub results: Vec<WorkloadResult>,
}

/// What is common to every run of one invocation.
pub struct Context {
    pub date: String,
    pub label: Option<String>,
    pub machine: String,
    pub commit: String,
    pub command: String,
    pub patients: usize,
    pub clients: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub client_threads: usize,
}

const INTRO: &str = "# Benchmarks

Figures from `foster-passport-bench` (`src/bin/foster-passport-bench.rs`), appended one dated
section per run. Method: the bench starts the release build of the server on a fresh database
(or uses `--target URL`), loads 100 shared Practitioners and N synthetic pediatric patients with
a Condition, an AllergyIntolerance, an Immunization, a CareTeam and one or two ServiceRequests
each (6.5 resources per patient on average) through transaction Bundles of PUTs (timed), then
for each workload runs C concurrent HTTP/1.1 keep-alive clients, one connection each, sending
requests back to back for a warm-up and then a measured window (the client is a minimal one
that writes prepared requests and skips response bodies unparsed, to leave the CPU to the
server). Every response in the window
counts, and its latency (request sent to body fully read) goes into an HdrHistogram.
Workloads: **read** `GET Patient/{random id}`; **create** `POST Patient`; **update**
`PUT Patient/{id}` with `If-Match` (each client updates only its own patients, so a 412 means a
server bug); **history** `GET Patient/{random id}/_history` (after the updates, so most
patients have a few versions). Search workloads (run only when named in `--workloads`), each on
a random loaded patient: **search-family** `Patient?family={stem}` (string, starts-with: there
are N/10 family names, each a fixed-length stem plus an ending, so the stem matches exactly ~10
patients at any N); **search-identifier** `Patient?identifier={system}|{CIN}` (token, one match);
**search-careteam** `CareTeam?patient=Patient/{id}` (reference, one match);
**search-servicerequest** `ServiceRequest?patient={id}&status=active&_include=ServiceRequest:requester`
(one match plus its Practitioner); **search-birthdate-paging**
`Patient?birthdate=ge2010-01-01&_count=50` (about 4/5 of the patients match), then the page its
`next` link names: each client alternates the two, and they are reported as two rows, `(first
page)` and `(next page)`, each counting only its own requests (the workload's throughput is their
sum). Errors are non-2xx responses and transport failures (412s also
shown apart). CPU is the share of one core used by the server and by the bench over the
measured window: client and server share the machine, so read the figures together. Absolute
figures on shared machines vary; compare runs made side by side (`--compare URL`).

Consent (from the section of 2026-12-05 on): every loaded patient also has an active privacy
Consent (`patient-privacy`) permitting `Organization/fpb-clinic` access for purpose TREAT with no
sensitivity labels, and every tenth patient a second Condition labelled `MH` (v3 ActCode) that the
Consent does not release. `--as custodian,provider` runs each read and search workload twice: as
the custodian backend client (consent exempt) and as a backend client registered with role
`provider`, organization `Organization/fpb-clinic`, purpose TREAT, scope `system/*.rs`, for which
the consent engine decides every resource; its rows are named `{workload}@provider` and a table
gives provider ÷ custodian. Two more search workloads: **search-condition**
`Condition?patient=Patient/{id}` (1 match, 2 for every tenth patient as the custodian) and
**search-condition-code** `Condition?code=http://snomed.info/sct|{code}&_count=50` (a full page of
50 out of ~1/9 of the Conditions). `foster-passport-decide-bench` measures the consent work of one
search page in-process (see its doc comment).
";

fn fmt_int(n: f64) -> String {
    let s = format!("{:.0}", n);
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

fn fmt_pct(p: Option<f64>) -> String {
    p.map_or_else(|| "–".to_owned(), |p| format!("{p:.0}%"))
}

fn table(run: &Run) -> String {
    let mut t = String::from(
        "| Workload | Requests | Req/s | p50 ms | p90 ms | p99 ms | Max ms | Errors (412) | Conns | Server CPU | Bench CPU |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &run.results {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} |",
            r.name,
            fmt_int(r.requests as f64),
            fmt_int(r.per_sec()),
            fmt_ms(r.ms(0.50)),
            fmt_ms(r.ms(0.90)),
            fmt_ms(r.ms(0.99)),
            fmt_ms(r.max_ms()),
            fmt_int(r.errors as f64),
            fmt_int(r.conflicts as f64),
            r.connections
                .map_or_else(|| "–".to_owned(), |c| c.to_string()),
            fmt_pct(r.server_cpu),
            fmt_pct(r.client_cpu),
        );
    }
    t
}

/// Ratios of the first run to the second, per workload both have.
fn ratio_table(ours: &Run, peer: &Run) -> String {
    let mut t = format!(
        "{} ÷ {} (req/s above 1: first is faster; p99 below 1: first answers sooner)\n\n\
         | Workload | Req/s ratio | p99 ratio |\n|---|---:|---:|\n",
        ours.title, peer.title
    );
    let _ = writeln!(
        t,
        "| load (resources/s) | {:.2}× | – |",
        ours.load.resources_per_sec() / peer.load.resources_per_sec().max(1e-9)
    );
    for r in &ours.results {
        if let Some(p) = peer.results.iter().find(|p| p.name == r.name) {
            let _ = writeln!(
                t,
                "| {} | {:.2}× | {:.2}× |",
                r.name,
                r.per_sec() / p.per_sec().max(1e-9),
                r.ms(0.99) / p.ms(0.99).max(1e-9),
            );
        }
    }
    t
}

fn errors_note(run: &Run) -> String {
    let mut s = String::new();
    for r in run.results.iter().filter(|r| r.requests == 0) {
        let _ = writeln!(
            s,
            "- {}: no response to a request sent in the measured window arrived before it ended \
             (requests still in flight at the end are not counted; see `--duration`, \
             `--request-timeout`)",
            r.name
        );
    }
    for r in run.results.iter().filter(|r| r.errors > 0) {
        if let Some(e) = &r.first_error {
            let e: String = e.chars().take(300).collect();
            let _ = writeln!(
                s,
                "- first {} error: `{}`",
                r.name,
                e.replace(['\n', '`'], " ")
            );
        }
    }
    s
}

/// Human-readable results of one run, for the terminal.
pub fn print_run(run: &Run) {
    println!("\n== {} ==", run.title);
    println!("load: {}", run.load.describe());
    print!("{}", table(run));
    print!("{}", errors_note(run));
}

pub fn print_ratios(runs: &[Run]) {
    for run in runs {
        if let Some(t) = consent_table(run) {
            println!("\n== with and without consent ({}) ==", run.title);
            print!("{t}");
        }
    }
    if let [ours, peer, ..] = runs {
        println!("\n== ratio ==");
        print!("{}", ratio_table(ours, peer));
    }
}

/// The dated Markdown section for `BENCHMARKS.md`.
pub fn section(ctx: &Context, runs: &[Run]) -> String {
    let mut s = format!("\n## {}", ctx.date);
    if let Some(label) = &ctx.label {
        let _ = write!(s, " — {label}");
    }
    let _ = write!(
        s,
        "\n\n- Machine: {}\n- Commit: {}\n- Command: `{}`\n- Setup: {} patients with 7–9 \
         resources each (a privacy Consent for Organization/fpb-clinic among them) plus 100 \
         Practitioners and that Organization; {} \
         clients (HTTP/1.1 keep-alive); {} s warm-up + {} s measured per workload; bench on {} \
         runtime threads\n",
        ctx.machine,
        ctx.commit,
        ctx.command,
        fmt_int(ctx.patients as f64),
        ctx.clients,
        ctx.warmup.as_secs_f64(),
        ctx.duration.as_secs_f64(),
        ctx.client_threads,
    );
    for run in runs {
        let _ = write!(
            s,
            "\n### {}\n\nLoad: {}\n\n{}{}",
            run.title,
            run.load.describe(),
            table(run),
            errors_note(run)
        );
    }
    for run in runs {
        if let Some(t) = consent_table(run) {
            let _ = write!(s, "\n### With and without consent ({})\n\n{t}", run.title);
        }
    }
    if let [ours, peer, ..] = runs {
        let _ = write!(s, "\n### Ratio\n\n{}", ratio_table(ours, peer));
    }
    s
}

/// Each `{workload}@provider` row against the custodian's `{workload}` row of the same run.
fn consent_table(run: &Run) -> Option<String> {
    let mut t = String::from(
        "Provider (consent decided) ÷ custodian (consent exempt). Target (issue 5): req/s ratio \
         at least 0.85.\n\n\
         | Workload | Custodian req/s | Provider req/s | Req/s ratio | Custodian p50 ms | Provider p50 ms | p99 ratio |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut any = false;
    for p in &run.results {
        let Some(base) = p.name.strip_suffix("@provider") else {
            continue;
        };
        let Some(c) = run.results.iter().find(|c| c.name == base) else {
            continue;
        };
        any = true;
        let _ = writeln!(
            t,
            "| {base} | {} | {} | {:.2}× | {} | {} | {:.2}× |",
            fmt_int(c.per_sec()),
            fmt_int(p.per_sec()),
            p.per_sec() / c.per_sec().max(1e-9),
            fmt_ms(c.ms(0.5)),
            fmt_ms(p.ms(0.5)),
            p.ms(0.99) / c.ms(0.99).max(1e-9),
        );
    }
    any.then_some(t)
}

/// Append `section` to `path`, writing the introduction first if the file is new.
pub fn append(path: &Path, section: &str) -> Result<()> {
    let fresh = !path.exists() || std::fs::metadata(path)?.len() == 0;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if fresh {
        file.write_all(INTRO.as_bytes())?;
    }
    file.write_all(section.as_bytes())?;
    Ok(())
}

/// The command line as typed, with secrets removed, quoted for a shell.
pub fn command_line() -> String {
    let mut out = Vec::new();
    let mut redact_next = false;
    for (k, arg) in std::env::args().enumerate() {
        let arg = if k == 0 {
            Path::new(&arg)
                .file_name()
                .map_or(arg.clone(), |n| n.to_string_lossy().into_owned())
        } else if redact_next {
            redact_next = false;
            "REDACTED".to_owned()
        } else if arg == "--bearer-token" {
            redact_next = true;
            arg
        } else if arg.starts_with("--bearer-token=") {
            "--bearer-token=REDACTED".to_owned()
        } else {
            arg
        };
        let plain = arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
        out.push(if plain && !arg.is_empty() {
            arg
        } else {
            format!("'{}'", arg.replace('\'', r"'\''"))
        });
    }
    out.join(" ")
}
