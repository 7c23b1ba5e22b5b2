//! Every search parameter the CapabilityStatement lists is indexed: a data-driven test judged by
//! a third party.
//!
//! Issue 3, "Done when": "Every parameter listed in the CapabilityStatement has at least one test
//! that would fail if its indexing broke." For each `(resource type, parameter)` in
//! `GET /fhir/metadata`:
//!
//! 1. the parameter's FHIRPath `expression` (from `conformance/`) is evaluated by npm
//!    `fhirpath@5.2.0` (not our evaluator) on the official R4 examples (npm
//!    `hl7.fhir.r4.examples@4.0.1`, in `$FP_R4_EXAMPLES_DIR`; files over 300 KB left out) and
//!    `demo/*.json`, which names one example and one value (values needing no escaping first);
//! 2. every example that is not one of the specification's own definitions (SearchParameter,
//!    ValueSet, CodeSystem, StructureDefinition, ConceptMap: thousands) is loaded into a fresh
//!    server by batch PUTs at its id, and so is every chosen definition; refused examples are
//!    reported, not fatal;
//! 3. the expression is evaluated again on the example as stored (server `meta` included) and a
//!    query value is derived by the parameter type (token `system|code`, string prefix, date
//!    `eq`/`ge`, reference `Type/id`, quantity `value|system|code`, number, uri);
//!    `GET /fhir/{type}?{param}={value}&_id={id}` must return the example (total 1) while the
//!    same query with a decoy value must not.
//!
//! Parameters no example gives a value for are tested on a synthetic resource: a loaded example
//! of the type (or a minimal resource) with a value written at the expression's path, judged by
//! fhirpath.js the same way. A parameter covered by neither fails the test unless it is in
//! [`ALLOW_UNCOVERED`] with its reason.
//!
//! The package is not in the repository: `$FP_R4_EXAMPLES_DIR` names its extracted folder, or
//! the harness fetches it once with npm into `target/third-party/r4-examples/`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use common::{Client, Server, enc};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// Examples larger than this (the specification's big definition Bundles, StructureDefinitions
/// and ValueSets) are not loaded.
const MAX_EXAMPLE_BYTES: u64 = 300 * 1024;
/// Entries per batch, and the body size at which a batch is sent early.
const BATCH_ENTRIES: usize = 200;
const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Searches in flight at once.
const PARALLEL_QUERIES: usize = 16;

/// A code, string, number or date no resource of the corpus holds.
const DECOY_CODE: &str = "fp-decoy-code-7f3a";
const DECOY_STRING: &str = "qqzxqj";
const DECOY_NUMBER: &str = "-987654";
const DECOY_DATE: &str = "eq1066-10-14";
const DECOY_URI: &str = "http://decoy.invalid/fp/none";

/// Listed parameters that neither the corpus nor a synthetic resource can exercise, with why.
/// Keep this short and honest: everything here is a parameter the server lists but this test
/// cannot prove is indexed.
const ALLOW_UNCOVERED: &[(&str, &str, &str)] = &[
    ("Observation", "code-value-concept", COMPOSITE),
    ("Observation", "code-value-date", COMPOSITE),
    ("Observation", "code-value-quantity", COMPOSITE),
    ("Observation", "code-value-string", COMPOSITE),
    ("Observation", "combo-code-value-concept", COMPOSITE),
    ("Observation", "combo-code-value-quantity", COMPOSITE),
    ("Observation", "component-code-value-concept", COMPOSITE),
    ("Observation", "component-code-value-quantity", COMPOSITE),
    (
        "Subscription",
        "criteria",
        "the server accepts only criteria on the types it watches, which no derived value is: covered by tests/subscriptions.rs",
    ),
    (
        "Patient",
        "child-welfare-status",
        "derived on the day of the query, not indexed from its expression: covered by tests/child_welfare_status.rs",
    ),
];

/// Types only the server writes: clients cannot create them, so this corpus cannot seed them.
/// `tests/audit.rs` searches AuditEvents on the parameters the server's events carry.
const SERVER_WRITTEN_TYPES: &[&str] = &["AuditEvent"];

/// Composite values pair components of one element; this test derives single values, so the
/// composites are judged by hand-made positive and negative cases in `tests/search_composite.rs`.
const COMPOSITE: &str = "composite: covered by tests/search_composite.rs";

// ---------------------------------------------------------------------------------------------
// Third-party material: the R4 examples and fhirpath.js
// ---------------------------------------------------------------------------------------------

/// The folder holding the extracted examples (`…/package`).
fn examples_dir() -> PathBuf {
    common::r4_examples_dir()
}

/// One node value from fhirpath.js: its FHIR data type and its JSON.
type Node = (String, Value);

/// Evaluates `expressions` on each resource with fhirpath.js in one node process.
fn fhirpath_eval(
    node_dir: &Path,
    items: &[(&Value, &[String])],
) -> Vec<Vec<Result<Vec<Node>, String>>> {
    let mut input = b"[".to_vec();
    for (i, (resource, expressions)) in items.iter().enumerate() {
        if i > 0 {
            input.push(b',');
        }
        input.extend_from_slice(b"{\"resource\":");
        serde_json::to_writer(&mut input, resource).unwrap();
        input.extend_from_slice(b",\"expressions\":");
        serde_json::to_writer(&mut input, expressions).unwrap();
        input.push(b'}');
    }
    input.push(b']');
    let script = Path::new(MANIFEST).join("tests/fixtures/search-params/eval.js");
    let answers = common::run_node_json(&script, node_dir, input);
    assert_eq!(
        answers.len(),
        items.len(),
        "eval.js answered a different number of items"
    );
    answers
        .into_iter()
        .map(|per_item| {
            per_item
                .into_iter()
                .map(|answer| match answer["ok"].as_array() {
                    Some(nodes) => Ok(nodes
                        .iter()
                        .map(|n| (n[0].as_str().unwrap_or_default().to_string(), n[1].clone()))
                        .collect()),
                    None => Err(answer["error"].to_string()),
                })
                .collect()
        })
        .collect()
}

/// The expression fhirpath.js is given (the same rewrites as `tests/fhirpath_oracle.rs`):
/// fhirpath.js 5.2.0 does not match a leading `Resource.` against every resource type, and raises
/// "Expected singleton on left side of 'as'" where R4 search uses `as` as a filter, so `as` is
/// asked as `ofType`.
fn oracle_expression(expression: &str, resource_type: &str) -> String {
    static PATTERNS: std::sync::LazyLock<(regex::Regex, regex::Regex, regex::Regex)> =
        std::sync::LazyLock::new(|| {
            (
                regex::Regex::new(r"\bResource\.").unwrap(),
                regex::Regex::new(r"\(([A-Za-z0-9_.]+) as ([A-Za-z]+)\)").unwrap(),
                regex::Regex::new(r"\.as\(([A-Za-z]+)\)").unwrap(),
            )
        });
    let (resource, paren, dotted) = &*PATTERNS;
    let e = resource.replace_all(expression, format!("{resource_type}.").as_str());
    let e = paren.replace_all(&e, "$1.ofType($2)");
    dotted.replace_all(&e, ".ofType($1)").into_owned()
}

// ---------------------------------------------------------------------------------------------
// What the server lists, and the definitions in conformance/
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Listed {
    rtype: String,
    code: String,
    kind: String,
    definition: String,
    expression: Option<String>,
    targets: Vec<String>,
}

/// Every SearchParameter in `conformance/*.json` (Bundles of them or single ones).
fn conformance_parameters() -> Vec<Value> {
    let dir = Path::new(MANIFEST).join("conformance");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let value = common::load_json(&file);
        if value["resourceType"] == "SearchParameter" {
            out.push(value);
        } else if value["resourceType"] == "Bundle" {
            for entry in value["entry"].as_array().into_iter().flatten() {
                if entry["resource"]["resourceType"] == "SearchParameter" {
                    out.push(entry["resource"].clone());
                }
            }
        }
    }
    out
}

fn listed_parameters(metadata: &Value) -> Vec<Listed> {
    let definitions = conformance_parameters();
    let by_url: HashMap<&str, &Value> = definitions
        .iter()
        .filter_map(|sp| Some((sp["url"].as_str()?, sp)))
        .collect();
    let mut out = Vec::new();
    for rest in metadata["rest"].as_array().into_iter().flatten() {
        for resource in rest["resource"].as_array().into_iter().flatten() {
            let rtype = resource["type"].as_str().unwrap_or_default();
            for param in resource["searchParam"].as_array().into_iter().flatten() {
                let code = param["name"].as_str().unwrap_or_default();
                let definition = param["definition"].as_str().unwrap_or_default();
                let sp = by_url.get(definition).copied().or_else(|| {
                    definitions.iter().find(|sp| {
                        sp["code"] == code
                            && sp["base"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|b| b == rtype || b == "Resource" || b == "DomainResource")
                    })
                });
                out.push(Listed {
                    rtype: rtype.to_string(),
                    code: code.to_string(),
                    kind: param["type"].as_str().unwrap_or_default().to_string(),
                    definition: definition.to_string(),
                    expression: sp
                        .and_then(|sp| sp["expression"].as_str())
                        .map(str::to_string),
                    targets: sp
                        .and_then(|sp| sp["target"].as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(|t| Some(t.as_str()?.to_string()))
                        .collect(),
                });
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Corpus and loading
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Example {
    /// Where it came from (file name, or `synthetic …`).
    label: String,
    rtype: String,
    id: String,
    /// As sent, with `meta.versionId`/`meta.lastUpdated` as the server answered.
    resource: Value,
}

/// The example files: every `*.json` with a `resourceType` and an `id`, of a listed type,
/// at most [`MAX_EXAMPLE_BYTES`]. Returns them and how many were left out, by reason.
fn corpus(listed_types: &BTreeSet<&str>) -> (Vec<Example>, BTreeMap<String, usize>) {
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    // Our own examples come first: they stand in for R4 ones the server refuses by design
    // (Subscriptions on types it does not watch).
    for dir in [
        Path::new(MANIFEST).join("tests/fixtures/search-params/examples"),
        examples_dir(),
        Path::new(MANIFEST).join("demo"),
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for path in files {
            let label = path.file_name().unwrap().to_string_lossy().into_owned();
            if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) > MAX_EXAMPLE_BYTES {
                *skipped
                    .entry(format!("larger than {MAX_EXAMPLE_BYTES} bytes"))
                    .or_default() += 1;
                continue;
            }
            let Ok(resource) =
                serde_json::from_str::<Value>(&std::fs::read_to_string(&path).unwrap())
            else {
                continue;
            };
            let Some(rtype) = resource["resourceType"].as_str() else {
                continue; // package.json, .index.json
            };
            let Some(id) = resource["id"].as_str() else {
                *skipped.entry("no id".into()).or_default() += 1;
                continue;
            };
            if !listed_types.contains(rtype) {
                *skipped.entry("type not listed".into()).or_default() += 1;
                continue;
            }
            if !seen.insert((rtype.to_string(), id.to_string())) {
                *skipped
                    .entry("same type and id as an earlier file".into())
                    .or_default() += 1;
                continue;
            }
            out.push(Example {
                label,
                rtype: rtype.to_string(),
                id: id.to_string(),
                resource,
            });
        }
    }
    (out, skipped)
}

/// PUTs every example through batches. Returns the stored ones (with the server's meta) and
/// a line for each one refused.
async fn load(client: &Client, examples: Vec<Example>) -> (Vec<Example>, Vec<String>) {
    let mut loaded = Vec::new();
    let mut refused = Vec::new();
    let mut chunk: Vec<Example> = Vec::new();
    let mut bytes = 0usize;
    let mut iter = examples.into_iter().peekable();
    while let Some(example) = iter.next() {
        bytes += serde_json::to_vec(&example.resource)
            .map(|v| v.len())
            .unwrap_or(0);
        chunk.push(example);
        if chunk.len() >= BATCH_ENTRIES || bytes >= BATCH_BYTES || iter.peek().is_none() {
            load_batch(
                client,
                std::mem::take(&mut chunk),
                &mut loaded,
                &mut refused,
            )
            .await;
            bytes = 0;
        }
    }
    (loaded, refused)
}

async fn load_batch(
    client: &Client,
    chunk: Vec<Example>,
    loaded: &mut Vec<Example>,
    refused: &mut Vec<String>,
) {
    let entries: Vec<Value> = chunk
        .iter()
        .map(|e| {
            json!({
                "resource": e.resource,
                "request": { "method": "PUT", "url": format!("{}/{}", e.rtype, e.id) }
            })
        })
        .collect();
    let bundle = json!({ "resourceType": "Bundle", "type": "batch", "entry": entries });
    let resp = client
        .request(reqwest::Method::POST, "")
        .header("prefer", "return=minimal")
        .json(&bundle)
        .send_unchecked()
        .await;
    let answers = resp.body["entry"].as_array().cloned().unwrap_or_default();
    if resp.status != 200 || answers.len() != chunk.len() {
        for e in chunk {
            refused.push(format!(
                "{} {}/{}: the whole batch failed: {} {}",
                e.label,
                e.rtype,
                e.id,
                resp.status,
                truncate(&resp.text, 300)
            ));
        }
        return;
    }
    for (mut example, answer) in chunk.into_iter().zip(answers) {
        let status = answer["response"]["status"].as_str().unwrap_or_default();
        if status.starts_with("200") || status.starts_with("201") {
            // The server owns meta.versionId and meta.lastUpdated: evaluate on its values.
            let version = answer["response"]["etag"]
                .as_str()
                .map(common::etag_version)
                .unwrap_or("1")
                .to_string();
            let last_modified = answer["response"]["lastModified"].clone();
            let resource = example.resource.as_object_mut().unwrap();
            let meta = resource.entry("meta").or_insert_with(|| json!({}));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert("versionId".into(), Value::String(version));
                if last_modified.is_string() {
                    meta.insert("lastUpdated".into(), last_modified);
                }
            }
            loaded.push(example);
        } else {
            let why: Vec<String> = answer["response"]["outcome"]["issue"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["diagnostics"].as_str().map(str::to_string))
                .collect();
            refused.push(format!(
                "{} {}/{}: {status}: {}",
                example.label,
                example.rtype,
                example.id,
                truncate(&why.join("; "), 300)
            ));
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ---------------------------------------------------------------------------------------------
// Query values from fhirpath.js nodes
// ---------------------------------------------------------------------------------------------

/// A search value for one parameter and a decoy that must not find the same resource.
#[derive(Clone, Debug)]
struct Probe {
    value: String,
    decoy: String,
    /// No character needed escaping and nothing was approximated: preferred over others.
    clean: bool,
    /// The node the value came from (for messages).
    from: String,
}

/// FHIR search escaping of `\ , $ |` inside one value part.
fn esc(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '$' | '|') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn needs_escape(s: &str) -> bool {
    s.contains(['\\', ',', '$', '|'])
}

fn text(v: &Value) -> Option<&str> {
    v.as_str().map(str::trim).filter(|s| !s.is_empty())
}

fn number_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if s.parse::<f64>().is_ok() => Some(s.clone()),
        _ => None,
    }
}

/// `system|code` (or the plain code when there is no system) for a token.
fn token_probe(system: Option<&str>, code: &str, from: String) -> Probe {
    let clean = !needs_escape(code) && !system.is_some_and(needs_escape);
    match system {
        Some(system) => Probe {
            value: format!("{}|{}", esc(system), esc(code)),
            decoy: format!("{}|{DECOY_CODE}", esc(system)),
            clean,
            from,
        },
        None => Probe {
            value: esc(code),
            decoy: DECOY_CODE.into(),
            clean,
            from,
        },
    }
}

fn derive(p: &Listed, (ty, v): &Node) -> Option<Probe> {
    let kind = p.kind.as_str();
    let from = format!("{ty} {}", truncate(&v.to_string(), 200));
    match kind {
        "token" => match ty.as_str() {
            "Coding" => Some(token_probe(text(&v["system"]), text(&v["code"])?, from)),
            "CodeableConcept" => {
                let coding = v["coding"]
                    .as_array()?
                    .iter()
                    .find(|c| text(&c["code"]).is_some())?;
                Some(token_probe(
                    text(&coding["system"]),
                    text(&coding["code"])?,
                    from,
                ))
            }
            "Identifier" => Some(token_probe(text(&v["system"]), text(&v["value"])?, from)),
            "ContactPoint" => Some(token_probe(None, text(&v["value"])?, from)),
            "boolean" => Some(Probe {
                value: v.as_bool()?.to_string(),
                decoy: (!v.as_bool()?).to_string(),
                clean: true,
                from,
            }),
            "code" | "string" | "id" | "uri" | "url" | "canonical" | "oid" | "uuid" | "" => {
                Some(token_probe(None, text(v)?, from))
            }
            _ => None,
        },
        "string" => {
            let s = match ty.as_str() {
                "HumanName" => text(&v["family"])
                    .or_else(|| v["given"].as_array().and_then(|g| g.first()).and_then(text))
                    .or_else(|| text(&v["text"]))?,
                "Address" => text(&v["city"])
                    .or_else(|| v["line"].as_array().and_then(|l| l.first()).and_then(text))
                    .or_else(|| text(&v["district"]))
                    .or_else(|| text(&v["state"]))
                    .or_else(|| text(&v["postalCode"]))
                    .or_else(|| text(&v["country"]))
                    .or_else(|| text(&v["text"]))?,
                "string" | "markdown" | "code" | "id" | "uri" | "url" | "canonical" | "" => {
                    text(v)?
                }
                _ => return None,
            };
            let prefix: String = s.chars().take(5).collect::<String>().to_lowercase();
            Some(Probe {
                clean: !needs_escape(&prefix) && prefix.chars().all(char::is_alphanumeric),
                value: esc(&prefix),
                decoy: DECOY_STRING.into(),
                from,
            })
        }
        "date" => {
            let value = match ty.as_str() {
                "date" | "dateTime" | "instant" => format!("eq{}", text(v)?),
                "Period" => match (text(&v["start"]), text(&v["end"])) {
                    (Some(start), _) => format!("ge{start}"),
                    (None, Some(end)) => format!("le{end}"),
                    _ => return None,
                },
                "Timing" => {
                    let first_event = v["event"].as_array().and_then(|e| e.first()).and_then(text);
                    let bounds_start = text(&v["repeat"]["boundsPeriod"]["start"]);
                    format!("ge{}", first_event.or(bounds_start)?)
                }
                _ => return None,
            };
            Some(Probe {
                value,
                decoy: DECOY_DATE.into(),
                clean: true,
                from,
            })
        }
        "reference" => {
            let reference = match ty.as_str() {
                "Reference" => text(&v["reference"])?,
                "canonical" | "uri" | "url" | "" => text(v)?,
                // A whole resource (`Bundle.entry[0].resource`) of a target type: it is referred
                // to as Type/id.
                _ => {
                    let (rt, id) = (text(&v["resourceType"])?, text(&v["id"])?);
                    if !p.targets.is_empty() && !p.targets.iter().any(|t| t == rt) {
                        return None;
                    }
                    return Some(Probe {
                        value: format!("{rt}/{id}"),
                        decoy: format!("{rt}/fp-decoy-ref"),
                        clean: false,
                        from,
                    });
                }
            };
            if reference.starts_with('#') || reference.starts_with("urn:") {
                return None;
            }
            let parts: Vec<&str> = reference.split('/').collect();
            let relative = ty == "Reference"
                && parts.len() == 2
                && parts[0]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase());
            let decoy = if relative {
                format!("{}/fp-decoy-ref", parts[0])
            } else {
                DECOY_URI.into()
            };
            Some(Probe {
                value: esc(reference),
                decoy,
                clean: relative && !needs_escape(reference),
                from,
            })
        }
        "quantity" => {
            let value = number_text(&v["value"])?;
            let (system, code) = match ty.as_str() {
                "Quantity" | "Age" | "Duration" | "Distance" | "Count" | "SimpleQuantity"
                | "MoneyQuantity" => (text(&v["system"]), text(&v["code"])),
                "Money" => (None, None),
                _ => return None,
            };
            Some(match (system, code) {
                (Some(system), Some(code)) => Probe {
                    value: format!("{value}|{}|{}", esc(system), esc(code)),
                    decoy: format!("{DECOY_NUMBER}|{}|{}", esc(system), esc(code)),
                    clean: true,
                    from,
                },
                _ => Probe {
                    value,
                    decoy: DECOY_NUMBER.into(),
                    clean: true,
                    from,
                },
            })
        }
        "number" => Some(Probe {
            value: number_text(v)?,
            decoy: DECOY_NUMBER.into(),
            clean: true,
            from,
        }),
        "uri" => {
            let uri = text(v)?;
            Some(Probe {
                value: esc(uri),
                decoy: DECOY_URI.into(),
                clean: !needs_escape(uri),
                from,
            })
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Cases and their checks
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Case {
    rtype: String,
    code: String,
    kind: String,
    id: String,
    label: String,
    probe: Probe,
}

/// Searches with the value and the decoy; `Err` says what went wrong.
async fn check(client: &Client, case: &Case) -> Result<(), String> {
    let found = |value: &str| {
        format!(
            "{}?{}={}&_id={}",
            case.rtype,
            case.code,
            enc(value),
            enc(&case.id)
        )
    };
    let describe = |query: &str, resp: &common::Resp, ids: &[String]| {
        let outcome: Vec<String> = resp.body["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["resource"]["resourceType"] == "OperationOutcome")
            .map(|e| e["resource"]["issue"].to_string())
            .collect();
        format!(
            "GET {query} -> {} total {} ids {ids:?}{}{}",
            resp.status,
            resp.body["total"],
            if outcome.is_empty() { "" } else { " outcome " },
            truncate(&outcome.join(" "), 300)
        )
    };
    let context = format!(
        "{}.{} ({}) on {} {}/{} (value from {})",
        case.rtype, case.code, case.kind, case.label, case.rtype, case.id, case.probe.from
    );

    let query = found(&case.probe.value);
    let resp = client.get(&query).await;
    let ids = matched_ids(&resp, &case.rtype);
    if let Err(problems) = resp.check_schema() {
        return Err(format!(
            "{context}: GET {query}: response fails the R4 JSON Schema: {problems}"
        ));
    }
    if resp.status != 200
        || !ids.contains(&case.id)
        || resp.body["total"].as_u64().is_some_and(|t| t != 1)
    {
        return Err(format!(
            "{context}: expected the example (total 1): {}",
            describe(&query, &resp, &ids)
        ));
    }

    let decoy = found(&case.probe.decoy);
    let resp = client.get(&decoy).await;
    let ids = matched_ids(&resp, &case.rtype);
    if let Err(problems) = resp.check_schema() {
        return Err(format!(
            "{context}: GET {decoy}: response fails the R4 JSON Schema: {problems}"
        ));
    }
    if resp.status != 200 || ids.contains(&case.id) {
        return Err(format!(
            "{context}: the decoy value must not find the example: {}",
            describe(&decoy, &resp, &ids)
        ));
    }
    Ok(())
}

/// Ids of the `match` entries of type `rtype` in a searchset.
fn matched_ids(resp: &common::Resp, rtype: &str) -> Vec<String> {
    resp.body["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["resource"]["resourceType"] == rtype)
        .filter(|e| e["search"]["mode"].as_str().is_none_or(|m| m == "match"))
        .filter_map(|e| e["resource"]["id"].as_str().map(str::to_string))
        .collect()
}

/// The first usable probe among nodes: a clean one if any.
fn best_probe(p: &Listed, nodes: &[Node]) -> Option<Probe> {
    let mut fallback = None;
    for node in nodes {
        if let Some(probe) = derive(p, node) {
            if probe.clean {
                return Some(probe);
            }
            fallback.get_or_insert(probe);
        }
    }
    fallback
}

/// Per type, the distinct fhirpath.js expressions of its parameters, and for each parameter
/// the index of its expression.
struct Expressions {
    per_type: BTreeMap<String, Vec<String>>,
    at: HashMap<(String, String), usize>,
}

impl Expressions {
    fn new(params: &[&Listed]) -> Expressions {
        let mut per_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut at = HashMap::new();
        for p in params {
            let expression = oracle_expression(p.expression.as_deref().unwrap(), &p.rtype);
            let list = per_type.entry(p.rtype.clone()).or_default();
            let i = list
                .iter()
                .position(|e| *e == expression)
                .unwrap_or_else(|| {
                    list.push(expression);
                    list.len() - 1
                });
            at.insert((p.rtype.clone(), p.code.clone()), i);
        }
        Expressions { per_type, at }
    }
}

/// Runs fhirpath.js on `jobs` (resource, expressions) split over two node processes.
fn fhirpath_parallel(
    node_dir: &Path,
    jobs: &[(&Value, Vec<String>)],
) -> Vec<Vec<Result<Vec<Node>, String>>> {
    let half = jobs.len().div_ceil(2).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(half)
            .map(|chunk| {
                scope.spawn(move || {
                    let items: Vec<(&Value, &[String])> =
                        chunk.iter().map(|(r, e)| (*r, e.as_slice())).collect();
                    fhirpath_eval(node_dir, &items)
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("fhirpath.js thread"))
            .collect()
    })
}

/// Examples of each type asked every expression in the first round; the rest are asked only
/// what is still without a clean value.
const FIRST_ROUND_PER_TYPE: usize = 25;

/// For each listed parameter, the index of the first example (clean values first) that gives a
/// usable value.
fn select(
    node_dir: &Path,
    params: &[&Listed],
    examples: &[Example],
    fhirpath_errors: &mut BTreeSet<String>,
) -> BTreeMap<(String, String), (usize, bool)> {
    let exprs = Expressions::new(params);
    let by_key: BTreeMap<(String, String), &Listed> = params
        .iter()
        .map(|p| ((p.rtype.clone(), p.code.clone()), *p))
        .collect();
    let mut chosen: BTreeMap<(String, String), (usize, bool)> = BTreeMap::new();
    let mut seen_per_type: HashMap<&str, usize> = HashMap::new();
    let (mut first, mut rest) = (Vec::new(), Vec::new());
    for (i, e) in examples.iter().enumerate() {
        let n = seen_per_type.entry(e.rtype.as_str()).or_default();
        *n += 1;
        if *n <= FIRST_ROUND_PER_TYPE {
            first.push(i);
        } else {
            rest.push(i);
        }
    }
    for round in [first, rest] {
        // Per example, the parameters still open and the expressions they need.
        let mut jobs: Vec<(&Value, Vec<String>)> = Vec::new();
        let mut asked: Vec<(usize, Vec<(&Listed, usize)>)> = Vec::new();
        for i in round {
            let example = &examples[i];
            let Some(all) = exprs.per_type.get(&example.rtype) else {
                continue;
            };
            let mut expressions: Vec<String> = Vec::new();
            let mut open = Vec::new();
            for ((rtype, _), p) in by_key.range((example.rtype.clone(), String::new())..) {
                if *rtype != example.rtype {
                    break;
                }
                if chosen
                    .get(&(p.rtype.clone(), p.code.clone()))
                    .is_some_and(|c| c.1)
                {
                    continue;
                }
                let expression = &all[exprs.at[&(p.rtype.clone(), p.code.clone())]];
                let j = expressions
                    .iter()
                    .position(|e| e == expression)
                    .unwrap_or_else(|| {
                        expressions.push(expression.clone());
                        expressions.len() - 1
                    });
                open.push((*p, j));
            }
            if !open.is_empty() {
                jobs.push((&example.resource, expressions));
                asked.push((i, open));
            }
        }
        let answers = fhirpath_parallel(node_dir, &jobs);
        for ((i, open), answer) in asked.into_iter().zip(answers) {
            for (p, j) in open {
                let key = (p.rtype.clone(), p.code.clone());
                match &answer[j] {
                    Err(e) => {
                        fhirpath_errors.insert(format!(
                            "{}.{} `{}` on {}: {e}",
                            p.rtype,
                            p.code,
                            jobs_expression(p),
                            examples[i].label
                        ));
                    }
                    Ok(nodes) => {
                        if let Some(probe) = best_probe(p, nodes)
                            && chosen.get(&key).is_none_or(|c| !c.1 && probe.clean)
                        {
                            chosen.insert(key, (i, probe.clean));
                        }
                    }
                }
            }
        }
    }
    chosen
}

fn jobs_expression(p: &Listed) -> String {
    oracle_expression(p.expression.as_deref().unwrap(), &p.rtype)
}

// ---------------------------------------------------------------------------------------------
// Synthetic resources for parameters the corpus has no value for
// ---------------------------------------------------------------------------------------------

/// One step of a simple path: an element (with the choice type an `as` names) and the
/// conditions of the `where(...)` that follow it.
#[derive(Debug, Default)]
struct Step {
    name: String,
    choice: Option<String>,
    equals: Vec<(String, String)>,
    resolves_to: Option<String>,
}

/// Splits on `sep` outside parentheses and quotes.
fn split_top(s: &str, sep: char) -> Vec<String> {
    let (mut depth, mut quoted) = (0i32, false);
    let mut parts = vec![String::new()];
    for c in s.chars() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            _ => {}
        }
        if c == sep && depth == 0 && !quoted {
            parts.push(String::new());
        } else {
            parts.last_mut().unwrap().push(c);
        }
    }
    parts.into_iter().map(|p| p.trim().to_string()).collect()
}

fn strip_parens(s: &str) -> &str {
    let mut s = s.trim();
    while s.starts_with('(') && s.ends_with(')') && split_top(&s[1..s.len() - 1], '|').len() == 1 {
        let inner = &s[1..s.len() - 1];
        // Only when the parentheses enclose the whole text.
        let mut depth = 0;
        let balanced = inner.chars().all(|c| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            depth >= 0
        });
        if !balanced {
            break;
        }
        s = inner.trim();
    }
    s
}

/// The simple paths of `expression` that start at `rtype` (or `Resource`/`DomainResource`).
fn simple_paths(expression: &str, rtype: &str) -> Vec<Result<Vec<Step>, String>> {
    let mut out = Vec::new();
    for alternative in split_top(expression, '|') {
        let alternative = strip_parens(&alternative);
        let parts = split_top(alternative, '.');
        if !matches!(parts[0].as_str(), t if t == rtype || t == "Resource" || t == "DomainResource")
        {
            continue;
        }
        out.push(parse_steps(&parts[1..]));
    }
    out
}

fn parse_steps(parts: &[String]) -> Result<Vec<Step>, String> {
    static EQ: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^where\(\s*([A-Za-z]+)\s*=\s*'([^']*)'\s*\)$").unwrap()
    });
    static RESOLVE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^where\(\s*resolve\(\)\s+is\s+([A-Za-z]+)\s*\)$").unwrap()
    });
    static AS_FN: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"^(?:as|ofType)\(([A-Za-z]+)\)$").unwrap());
    static NAME: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^([a-z][A-Za-z0-9]*)(?:\[0\])?(?:\s+as\s+([A-Za-z]+))?$").unwrap()
    });
    let mut steps: Vec<Step> = Vec::new();
    for part in parts {
        if let Some(c) = EQ.captures(part) {
            let last = steps.last_mut().ok_or("where() without an element")?;
            last.equals.push((c[1].to_string(), c[2].to_string()));
        } else if let Some(c) = RESOLVE.captures(part) {
            let last = steps.last_mut().ok_or("where() without an element")?;
            last.resolves_to = Some(c[1].to_string());
        } else if let Some(c) = AS_FN.captures(part) {
            let last = steps.last_mut().ok_or("as() without an element")?;
            last.choice = Some(c[1].to_string());
        } else if let Some(c) = NAME.captures(part) {
            steps.push(Step {
                name: c[1].to_string(),
                choice: c.get(2).map(|m| m.as_str().to_string()),
                ..Step::default()
            });
        } else {
            return Err(format!("`{part}` is not a simple path step"));
        }
    }
    if steps.is_empty() {
        return Err("no element".into());
    }
    Ok(steps)
}

/// The HL7 R4 JSON Schema's definitions, to learn element types and required elements.
struct Schema {
    definitions: Map<String, Value>,
    /// Required primitive elements the server named in 400 answers (`Type_Part` → names); the
    /// JSON Schema lists only complex required elements.
    learned: BTreeMap<String, BTreeSet<String>>,
}

const PRIMITIVES: &[&str] = &[
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "markdown",
    "oid",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "uuid",
];

/// An element's type in the schema: definition name, whether it repeats, and its enum.
struct ElementType {
    name: String,
    array: bool,
    codes: Vec<String>,
}

impl Schema {
    fn load() -> Schema {
        let schema = common::load_json(
            &common::shared_data_dir().join("fhir-r4-json-schema/fhir.schema.json"),
        );
        Schema {
            definitions: schema["definitions"].as_object().unwrap().clone(),
            learned: BTreeMap::new(),
        }
    }

    fn properties(&self, def: &str) -> Option<&Map<String, Value>> {
        self.definitions.get(def)?["properties"].as_object()
    }

    fn element(&self, def: &str, property: &str) -> Option<ElementType> {
        let p = self.properties(def)?.get(property)?;
        let array = p["type"] == "array";
        let item = if array { &p["items"] } else { p };
        let codes: Vec<String> = item["enum"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some(c.as_str()?.to_string()))
            .collect();
        let name = match item["$ref"].as_str() {
            Some(r) => r.trim_start_matches("#/definitions/").to_string(),
            None if !codes.is_empty() => "code".to_string(),
            // Primitive choice variants are inlined (`occurredDateTime`: a pattern): the type
            // is the name's suffix.
            None => PRIMITIVES
                .iter()
                .filter(|t| property.ends_with(&capitalize(t)))
                .max_by_key(|t| t.len())
                .map(|t| t.to_string())
                .or_else(|| (item["type"] == "boolean").then(|| "boolean".to_string()))
                .or_else(|| (item["type"] == "number").then(|| "decimal".to_string()))
                .or_else(|| (item["type"] == "string").then(|| "string".to_string()))?,
        };
        Some(ElementType { name, array, codes })
    }

    /// Required elements of a definition: the schema's and the learned ones.
    fn required(&self, def: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .definitions
            .get(def)
            .and_then(|d| d["required"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|r| Some(r.as_str()?.to_string()))
            .filter(|r| r != "resourceType")
            .collect();
        for name in self.learned.get(def).into_iter().flatten() {
            if !out.contains(name) {
                out.push(name.clone());
            }
        }
        out
    }
}

/// Choice-type suffixes to try for a parameter type when the expression names none.
fn choice_preference(kind: &str) -> &'static [&'static str] {
    match kind {
        "token" => &[
            "CodeableConcept",
            "Coding",
            "Identifier",
            "Code",
            "Boolean",
            "String",
        ],
        "date" => &["DateTime", "Period", "Date", "Instant", "Timing"],
        "reference" => &["Reference", "Canonical", "Uri"],
        "quantity" => &["Quantity", "Money", "Age", "Duration", "Range"],
        "number" => &["Decimal", "Integer", "PositiveInt", "UnsignedInt"],
        "string" => &["String", "Markdown", "HumanName", "Address"],
        "uri" => &["Uri", "Url", "Canonical"],
        _ => &[],
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// What a synthetic value is built for.
struct Want<'a> {
    kind: &'a str,
    targets: &'a [String],
    n: usize,
    /// A stored example per type, for elements that hold a whole resource.
    examples: &'a HashMap<&'a str, &'a Value>,
}

impl Schema {
    /// The property that `step` names in `def`: the element itself or its choice variant.
    fn resolve_step(&self, def: &str, step: &Step, kind: &str) -> Option<(String, ElementType)> {
        let props = self.properties(def)?;
        if let Some(choice) = &step.choice {
            let property = format!("{}{}", step.name, capitalize(choice));
            if let Some(t) = self.element(def, &property) {
                return Some((property, t));
            }
            let t = self.element(def, &step.name)?;
            return (t.name == *choice || t.name.eq_ignore_ascii_case(choice))
                .then_some((step.name.clone(), t));
        }
        if props.contains_key(&step.name) {
            return Some((step.name.clone(), self.element(def, &step.name)?));
        }
        for suffix in choice_preference(kind) {
            let property = format!("{}{suffix}", step.name);
            if let Some(t) = self.element(def, &property) {
                return Some((property, t));
            }
        }
        None
    }

    /// A generic value for a required element nobody asked about.
    fn filler(&self, t: &ElementType, depth: usize) -> Value {
        if let Some(code) = t.codes.first() {
            return json!(code);
        }
        match t.name.as_str() {
            "code" => json!("unknown"),
            "string" | "markdown" | "id" => json!("fp-sp-filler"),
            "uri" | "url" | "canonical" => json!("http://example.org/fp-sp/filler"),
            "boolean" => json!(true),
            "integer" | "positiveInt" | "unsignedInt" => json!(1),
            "decimal" => json!(1.5),
            "date" => json!("2019-03-04"),
            "dateTime" | "instant" => json!("2019-03-04T05:06:07Z"),
            "time" => json!("05:06:07"),
            "base64Binary" => json!("Zm8="),
            "CodeableConcept" => json!({ "text": "fp-sp filler" }),
            "Coding" => json!({ "system": "http://example.org/fp-sp", "code": "filler" }),
            "Reference" => json!({ "display": "fp-sp filler" }),
            "Identifier" => json!({ "value": "fp-sp-filler" }),
            "Quantity" | "Age" | "Duration" | "Distance" | "Count" | "Money" => {
                json!({ "value": 1 })
            }
            "Period" => json!({ "start": "2019-03-04" }),
            _ => self.new_object(&t.name, depth + 1),
        }
    }

    /// A new object of `def` with its required elements filled in.
    fn new_object(&self, def: &str, depth: usize) -> Value {
        let mut object = Map::new();
        if depth > 6 {
            return Value::Object(object);
        }
        for name in self.required(def) {
            // A required choice (`value[x]`): the first variant in a usual order.
            let name = match name.strip_suffix("[x]") {
                Some(stem) => {
                    let Some(variant) = [
                        "CodeableConcept",
                        "Reference",
                        "Quantity",
                        "String",
                        "Boolean",
                        "DateTime",
                    ]
                    .iter()
                    .map(|suffix| format!("{stem}{suffix}"))
                    .find(|v| self.element(def, v).is_some()) else {
                        continue;
                    };
                    variant
                }
                None => name,
            };
            if let Some(t) = self.element(def, &name) {
                let v = self.filler(&t, depth);
                object.insert(name, if t.array { json!([v]) } else { v });
            }
        }
        Value::Object(object)
    }

    /// The value written at the end of the path.
    fn leaf(&self, t: &ElementType, step: &Step, want: &Want) -> Option<Value> {
        let n = want.n;
        let target = step
            .resolves_to
            .clone()
            .or_else(|| want.targets.first().cloned())
            .unwrap_or_else(|| "Patient".into());
        let mut value = match (want.kind, t.name.as_str()) {
            (_, "CodeableConcept") => json!({ "coding": [
                { "system": "http://example.org/fp-sp", "code": format!("fp-sp-code-{n}") }
            ] }),
            (_, "Coding") => {
                json!({ "system": "http://example.org/fp-sp", "code": format!("fp-sp-code-{n}") })
            }
            (_, "Identifier") => {
                json!({ "system": "http://example.org/fp-sp", "value": format!("fp-sp-id-{n}") })
            }
            (_, "ContactPoint") => json!({ "system": "phone", "value": format!("555-01{n:04}") }),
            (_, "HumanName") => json!({ "family": "Fpsynth", "given": ["Fpsynth"] }),
            (_, "Address") => json!({ "city": "Fpsynth", "line": ["Fpsynth"] }),
            (_, "Reference") => json!({ "reference": format!("{target}/fp-sp-target-{n}") }),
            (_, "Quantity" | "Age" | "Duration" | "Distance" | "Count") => json!({
                "value": 7.5, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"
            }),
            (_, "Money") => json!({ "value": 7.5, "currency": "USD" }),
            (_, "Range") => json!({ "low": {
                "value": 7.5, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"
            } }),
            (_, "Period") => json!({ "start": "2019-03-04", "end": "2019-03-05" }),
            (_, "Timing") => json!({ "event": ["2019-03-04T05:06:07Z"] }),
            (_, "date") => json!("2019-03-04"),
            (_, "dateTime") => json!("2019-03-04T05:06:07Z"),
            (_, "instant") => json!("2019-03-04T05:06:07.123Z"),
            (_, "boolean") => json!(true),
            (_, "integer" | "positiveInt" | "unsignedInt") => json!(7),
            (_, "decimal") => json!(7.5),
            ("reference", "canonical" | "uri" | "url") => {
                json!(format!("http://example.org/fp-sp/canonical-{n}"))
            }
            ("token", "code") => json!(
                t.codes
                    .first()
                    .cloned()
                    .unwrap_or(format!("fp-sp-code-{n}"))
            ),
            ("token", "string" | "id") => json!(format!("fp-sp-token-{n}")),
            ("token" | "uri", "uri" | "url" | "canonical" | "oid" | "uuid") => {
                json!(format!("http://example.org/fp-sp/uri-{n}"))
            }
            ("string", "string" | "markdown") => json!(format!("Fpsynth {n}")),
            // An element holding a resource (`Bundle.entry[0].resource`): a stored example of
            // the target type, under a new id.
            ("reference", "ResourceList") => {
                let mut resource = (*want.examples.get(target.as_str())?).clone();
                resource["id"] = json!(format!("fp-sp-target-{n}"));
                if let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) {
                    meta.remove("versionId");
                    meta.remove("lastUpdated");
                    if meta.is_empty() {
                        resource.as_object_mut()?.remove("meta");
                    }
                }
                resource
            }
            _ => return None,
        };
        if let Some(object) = value.as_object_mut() {
            for (field, v) in &step.equals {
                object.insert(field.clone(), json!(v));
            }
        }
        Some(value)
    }

    /// Writes a value at `steps` inside `object` (of definition `def`).
    fn write(
        &self,
        object: &mut Map<String, Value>,
        def: &str,
        steps: &[Step],
        want: &Want,
    ) -> Result<(), String> {
        let step = &steps[0];
        let (property, t) = self.resolve_step(def, step, want.kind).ok_or_else(|| {
            format!(
                "no element `{}` in {def} for a {} value",
                step.name, want.kind
            )
        })?;
        // Another choice of the same element would make the resource invalid.
        if property != step.name {
            let stale: Vec<String> = object
                .keys()
                .filter(|k| {
                    k.starts_with(&step.name)
                        && **k != property
                        && k[step.name.len()..].starts_with(|c: char| c.is_ascii_uppercase())
                })
                .cloned()
                .collect();
            for k in stale {
                object.remove(&k);
            }
        }
        if steps.len() == 1 {
            let value = self
                .leaf(&t, step, want)
                .ok_or_else(|| format!("no {} value for a {} element", want.kind, t.name))?;
            if t.array {
                match object.get_mut(&property).and_then(Value::as_array_mut) {
                    Some(items) => items.insert(0, value),
                    None => {
                        object.insert(property, json!([value]));
                    }
                }
            } else {
                object.insert(property, value);
            }
            return Ok(());
        }
        let fresh = !step.equals.is_empty() || step.resolves_to.is_some();
        let existing = match object.get_mut(&property) {
            Some(Value::Array(items)) if !fresh => items.first_mut().and_then(Value::as_object_mut),
            Some(Value::Object(o)) if !fresh => Some(o),
            _ => None,
        };
        if let Some(inner) = existing {
            return self.write(inner, &t.name, &steps[1..], want);
        }
        let mut inner = self.new_object(&t.name, 1);
        for (field, v) in &step.equals {
            inner[field.as_str()] = json!(v);
        }
        self.write(inner.as_object_mut().unwrap(), &t.name, &steps[1..], want)?;
        if t.array {
            match object.get_mut(&property).and_then(Value::as_array_mut) {
                Some(items) => items.insert(0, inner),
                None => {
                    object.insert(property, json!([inner]));
                }
            }
        } else {
            object.insert(property, inner);
        }
        Ok(())
    }

    /// A copy of `base` (or a new resource) with a value for `p`, or why none could be made.
    fn synthetic(
        &self,
        p: &Listed,
        examples: &HashMap<&str, &Value>,
        n: usize,
    ) -> Result<Value, String> {
        let base = examples.get(p.rtype.as_str()).copied();
        let expression = p.expression.as_deref().unwrap();
        let paths = simple_paths(expression, &p.rtype);
        if paths.is_empty() {
            return Err("no path for this type in the expression".into());
        }
        let want = Want {
            kind: &p.kind,
            targets: &p.targets,
            n,
            examples,
        };
        let mut why = Vec::new();
        for path in paths {
            let steps = match path {
                Ok(steps) => steps,
                Err(e) => {
                    why.push(e);
                    continue;
                }
            };
            let mut resource = match base {
                Some(base) => base.clone(),
                None => {
                    let mut r = self.new_object(&p.rtype, 0);
                    r["resourceType"] = json!(p.rtype);
                    r
                }
            };
            let object = resource.as_object_mut().unwrap();
            object.insert("id".into(), json!(format!("fp-sp-{n}")));
            if let Some(meta) = object.get_mut("meta").and_then(Value::as_object_mut) {
                meta.remove("versionId");
                meta.remove("lastUpdated");
                if meta.is_empty() {
                    object.remove("meta");
                }
            }
            // `Resource.id`: the synthetic id is the value.
            if steps.len() == 1 && steps[0].name == "id" {
                return Ok(resource);
            }
            match self.write(object, &p.rtype, &steps, &want) {
                Ok(()) => return Ok(resource),
                Err(e) => why.push(e),
            }
        }
        Err(why.join("; "))
    }
}

/// `missing required element `X` in Type_Part` in a server answer, as (definition, element).
fn learn_required(message: &str) -> Vec<(String, String)> {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"missing required element `([A-Za-z0-9]+(?:\[x\])?)` in `?([A-Za-z0-9_]+)",
        )
        .unwrap()
    });
    RE.captures_iter(message)
        .map(|c| (c[2].to_string(), c[1].to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

/// The specification's definitions: loaded only when chosen for a parameter (there are
/// thousands and their parameters are few).
const DEFINITION_TYPES: &[&str] = &[
    "SearchParameter",
    "ValueSet",
    "CodeSystem",
    "StructureDefinition",
    "ConceptMap",
];

#[tokio::test(flavor = "multi_thread")]
async fn every_listed_search_parameter_is_indexed() {
    let started = Instant::now();
    let examples_dir = examples_dir();
    let node_dir = common::fhirpath_js();
    let server = Server::start();
    let client = server.client();

    let metadata = client.get("metadata").await.expect_status(200).body;
    let listed = listed_parameters(&metadata);
    assert!(
        !listed.is_empty(),
        "the CapabilityStatement lists no search parameter"
    );
    let listed_types: BTreeSet<&str> = listed.iter().map(|p| p.rtype.as_str()).collect();
    let with_expression: Vec<&Listed> = listed.iter().filter(|p| p.expression.is_some()).collect();
    let mut failures: Vec<String> = Vec::new();
    let mut leftovers: Vec<String> = listed
        .iter()
        .filter(|p| p.expression.is_none())
        .map(|p| {
            format!(
                "{}.{} ({}): no expression in conformance/ for {}",
                p.rtype, p.code, p.kind, p.definition
            )
        })
        .collect();

    // 1. Which example gives each parameter a value (fhirpath.js on the files as they are).
    let (examples, skipped) = corpus(&listed_types);
    let mut fhirpath_errors = BTreeSet::new();
    let chosen = select(&node_dir, &with_expression, &examples, &mut fhirpath_errors);
    eprintln!(
        "corpus: {} R4 example and demo/ files of listed types (from {}; left out {skipped:?}); \
         {} of {} listed parameters with an expression have a value in them ({:.1?})",
        examples.len(),
        examples_dir.display(),
        chosen.len(),
        with_expression.len(),
        started.elapsed()
    );

    // 2. Load every example that is not a specification definition, and the chosen ones.
    let chosen_examples: BTreeSet<usize> = chosen.values().map(|c| c.0).collect();
    let to_load: Vec<Example> = examples
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            !DEFINITION_TYPES.contains(&e.rtype.as_str()) || chosen_examples.contains(i)
        })
        .map(|(_, e)| e.clone())
        .collect();
    let offered = to_load.len();
    let (loaded, refused) = load(&client, to_load).await;
    eprintln!(
        "loaded {} of {offered} examples ({} refused, reported below, not fatal) ({:.1?})",
        loaded.len(),
        refused.len(),
        started.elapsed()
    );
    for line in &refused {
        eprintln!("  refused example: {line}");
    }
    let loaded_by_key: HashMap<(String, String), &Example> = loaded
        .iter()
        .map(|e| ((e.rtype.clone(), e.id.clone()), e))
        .collect();
    // A parameter whose chosen example was refused goes to the synthetic resources.
    let chosen: BTreeMap<(String, String), &Example> = chosen
        .into_iter()
        .filter_map(|(key, (i, _))| {
            let e = &examples[i];
            Some((key, *loaded_by_key.get(&(e.rtype.clone(), e.id.clone()))?))
        })
        .collect();

    // 3. Synthetic resources for the others: a stored example of the type (or a new resource)
    //    with a value written at the expression's path, rebuilt a few times with what the
    //    server says is missing.
    let mut schema = Schema::load();
    let first_of_type: HashMap<&str, &Value> = loaded
        .iter()
        .rev()
        .map(|e| (e.rtype.as_str(), &e.resource))
        .collect();
    let uncovered: Vec<&Listed> = with_expression
        .iter()
        .filter(|p| !chosen.contains_key(&(p.rtype.clone(), p.code.clone())))
        .copied()
        .collect();
    let mut synthetic_loaded: BTreeMap<(String, String), Example> = BTreeMap::new();
    let mut synthetic_problems: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut pending: Vec<(usize, &Listed)> = uncovered.iter().copied().enumerate().collect();
    for _attempt in 0..4 {
        let mut batch = Vec::new();
        for (n, p) in &pending {
            let key = (p.rtype.clone(), p.code.clone());
            match schema.synthetic(p, &first_of_type, *n) {
                Ok(resource) => batch.push(Example {
                    label: format!("synthetic fp-sp-{n}"),
                    rtype: p.rtype.clone(),
                    id: format!("fp-sp-{n}"),
                    resource,
                }),
                Err(why) => {
                    synthetic_problems.insert(key, format!("no synthetic resource: {why}"));
                }
            }
        }
        let by_id: HashMap<String, &Listed> = pending
            .iter()
            .map(|(n, p)| (format!("fp-sp-{n}"), *p))
            .collect();
        let (ok, refused) = load(&client, batch).await;
        for example in ok {
            let p = by_id[&example.id];
            synthetic_problems.remove(&(p.rtype.clone(), p.code.clone()));
            synthetic_loaded.insert((p.rtype.clone(), p.code.clone()), example);
        }
        let mut learned_any = false;
        let mut retry = Vec::new();
        for line in refused {
            let id = line.split_whitespace().nth(2).unwrap_or_default();
            let id = id
                .split('/')
                .nth(1)
                .unwrap_or_default()
                .trim_end_matches(':');
            let Some(p) = by_id.get(id) else { continue };
            for (def, element) in learn_required(&line) {
                learned_any |= schema.learned.entry(def).or_default().insert(element);
            }
            synthetic_problems.insert(
                (p.rtype.clone(), p.code.clone()),
                format!("refused: {line}"),
            );
            let n: usize = id.trim_start_matches("fp-sp-").parse().unwrap();
            retry.push((n, *p));
        }
        if retry.is_empty() || !learned_any {
            break;
        }
        pending = retry;
    }
    eprintln!(
        "synthetic: {} resources loaded for {} parameters without a corpus value ({:.1?})",
        synthetic_loaded.len(),
        uncovered.len(),
        started.elapsed()
    );

    // 4. Probes from what was stored (server meta included), judged by fhirpath.js again.
    let mut subjects: Vec<(&Listed, &Example)> = Vec::new();
    for p in &with_expression {
        let key = (p.rtype.clone(), p.code.clone());
        if let Some(stored) = chosen.get(&key) {
            subjects.push((p, stored));
        } else if let Some(e) = synthetic_loaded.get(&key) {
            subjects.push((p, e));
        } else {
            leftovers.push(format!(
                "{}.{} ({}) `{}`: no value in the corpus; {}",
                p.rtype,
                p.code,
                p.kind,
                p.expression.as_deref().unwrap(),
                synthetic_problems
                    .get(&key)
                    .map(String::as_str)
                    .unwrap_or("?")
            ));
        }
    }
    let jobs: Vec<(&Value, Vec<String>)> = subjects
        .iter()
        .map(|(p, e)| (&e.resource, vec![jobs_expression(p)]))
        .collect();
    let answers = fhirpath_parallel(&node_dir, &jobs);
    let mut cases = Vec::new();
    let (mut from_corpus, mut from_synthetic) = (0usize, 0usize);
    for ((p, e), answer) in subjects.iter().zip(answers) {
        let nodes = answer.into_iter().next().unwrap().unwrap_or_default();
        match best_probe(p, &nodes) {
            Some(probe) => {
                if e.label.starts_with("synthetic") {
                    from_synthetic += 1;
                } else {
                    from_corpus += 1;
                }
                cases.push(Case {
                    rtype: p.rtype.clone(),
                    code: p.code.clone(),
                    kind: p.kind.clone(),
                    id: e.id.clone(),
                    label: e.label.clone(),
                    probe,
                });
            }
            None => leftovers.push(format!(
                "{}.{} ({}) `{}`: fhirpath.js finds no usable value in {} {}",
                p.rtype,
                p.code,
                p.kind,
                p.expression.as_deref().unwrap(),
                e.label,
                truncate(&e.resource.to_string(), 300)
            )),
        }
    }

    // 5. Search.
    let exercised = cases.len();
    failures.extend(run_checks(&client, cases).await);

    // 6. Report.
    let allowed: BTreeSet<(&str, &str)> =
        ALLOW_UNCOVERED.iter().map(|(t, c, _)| (*t, *c)).collect();
    leftovers.sort();
    let (allowed_left, unexplained): (Vec<&String>, Vec<&String>) =
        leftovers.iter().partition(|line| {
            let head = line.split_whitespace().next().unwrap_or_default();
            let (t, c) = head.split_once('.').unwrap_or_default();
            allowed.contains(&(t, c)) || SERVER_WRITTEN_TYPES.contains(&t)
        });
    eprintln!(
        "coverage: {} listed parameters; {exercised} exercised ({from_corpus} on R4/demo examples, \
         {from_synthetic} on synthetic resources); {} not covered ({} allow-listed); \
         {} search failures ({:.1?})",
        listed.len(),
        leftovers.len(),
        allowed_left.len(),
        failures.len(),
        started.elapsed()
    );
    for line in &leftovers {
        eprintln!("  not covered: {line}");
    }
    if !fhirpath_errors.is_empty() {
        eprintln!("fhirpath.js errors ({}):", fhirpath_errors.len());
        for line in fhirpath_errors.iter().take(20) {
            eprintln!("  {line}");
        }
    }
    for line in unexplained {
        failures.push(format!("not covered and not in ALLOW_UNCOVERED: {line}"));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

async fn run_checks(client: &Client, cases: Vec<Case>) -> Vec<String> {
    let limit = Arc::new(Semaphore::new(PARALLEL_QUERIES));
    let mut tasks = tokio::task::JoinSet::new();
    for case in cases {
        let client = client.clone();
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            check(&client, &case).await.err()
        });
    }
    let mut failures = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Some(failure) = result.expect("check task") {
            failures.push(failure);
        }
    }
    failures.sort();
    failures
}
