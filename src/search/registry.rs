//! The search parameters the server supports: the R4 core SearchParameters plus our own, all
//! from `conformance/`, each compiled once at start-up. A parameter is supported when its
//! FHIRPath expression compiles and its type is one the store indexes; the CapabilityStatement
//! lists exactly those.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::fhirpath::{self, Expr};
use super::model::{IndexValue, ParamKind};
use crate::error::{FhirError, FhirResult};
use crate::fhir::structure;
use crate::store::IndexRow;

/// Bundles of SearchParameter resources loaded at start-up, in order (later ones may add
/// parameters; a code already defined for a type keeps its first definition).
const SOURCES: &[(&str, &str)] = &[
    (
        "conformance/search-parameters.json",
        include_str!("../../conformance/search-parameters.json"),
    ),
    (
        "conformance/search-parameters-foster-youth.json",
        include_str!("../../conformance/search-parameters-foster-youth.json"),
    ),
];

/// One supported search parameter.
pub struct ParamDef {
    /// The code used in queries.
    pub code: String,
    /// Its type.
    pub kind: ParamKind,
    /// Canonical URL of its definition.
    pub url: String,
    /// Definition text.
    pub description: String,
    /// Target types of a reference parameter, as declared.
    pub targets: Vec<String>,
    /// Target types per base type, where the expression narrows them (`resolve() is T`).
    narrowed: HashMap<String, Vec<String>>,
    /// The FHIRPath expression, compiled.
    expression: Expr,
    /// A composite parameter's components, evaluated on each node of `expression`.
    pub components: Vec<Component>,
}

/// One component of a composite parameter.
pub struct Component {
    /// The component's kind (from the SearchParameter it names).
    pub kind: ParamKind,
    /// Its expression, relative to the composite's node.
    expression: Expr,
}

impl std::fmt::Debug for ParamDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParamDef")
            .field("code", &self.code)
            .field("kind", &self.kind)
            .finish()
    }
}

impl ParamDef {
    /// The types this parameter can refer to from a resource of type `rtype`.
    pub fn targets_for(&self, rtype: &str) -> &[String] {
        self.narrowed.get(rtype).unwrap_or(&self.targets)
    }

    /// The parameter's values in a resource (not for composites).
    pub fn values(&self, resource: &Value) -> Vec<IndexValue> {
        super::extract::extract(self.kind, &self.expression, resource)
    }
}

/// Supported parameters per resource type.
pub struct SearchRegistry {
    by_type: HashMap<String, BTreeMap<String, Arc<ParamDef>>>,
}

/// Types whose composite parameters are supported (the clinical record's Observations; our own
/// types have none in R4). Others would need their own tests before being listed.
const COMPOSITE_TYPES: &[&str] = &["Observation"];

/// AuditEvents are written by the server, one per request: only the parameters its events
/// carry and the audit trail is searched by are indexed (each costs every request a row).
const AUDIT_EVENT_PARAMS: &[&str] = &[
    "_id",
    "_lastUpdated",
    // Break-the-glass events carry `BTG`: the Child Welfare Liaison's review queue.
    "_security",
    "action",
    "agent",
    "altid",
    "date",
    "entity",
    "entity-role",
    "entity-type",
    "outcome",
    "patient",
    "subtype",
    "type",
];

/// Parameter codes with their own handling rather than index rows.
const NOT_INDEXED: &[&str] = &["_id", super::child_welfare::PARAM];

impl SearchRegistry {
    /// Load and compile every SearchParameter in `conformance/`.
    pub fn load() -> FhirResult<Self> {
        let mut by_type: HashMap<String, BTreeMap<String, Arc<ParamDef>>> = HashMap::new();
        let mut skipped = 0usize;
        let bundles = SOURCES
            .iter()
            .map(|(name, text)| {
                serde_json::from_str::<Value>(text)
                    .map_err(|e| FhirError::internal(format!("{name}: {e}")))
            })
            .collect::<FhirResult<Vec<_>>>()?;
        let parameters: Vec<&Value> = bundles
            .iter()
            .flat_map(|b| b["entry"].as_array().into_iter().flatten())
            .map(|e| &e["resource"])
            .collect();
        // Composite components name other SearchParameters by URL.
        let kinds: HashMap<&str, ParamKind> = parameters
            .iter()
            .filter_map(|sp| {
                Some((
                    sp["url"].as_str()?,
                    ParamKind::from_code(sp["type"].as_str()?)?,
                ))
            })
            .collect();
        for sp in parameters {
            let Some(def) = compile(sp, &kinds) else {
                skipped += 1;
                continue;
            };
            let def = Arc::new(def);
            for base in sp["base"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if def.kind == ParamKind::Composite && !COMPOSITE_TYPES.contains(&base) {
                    continue;
                }
                for rtype in expand_base(base) {
                    if rtype == "AuditEvent" && !AUDIT_EVENT_PARAMS.contains(&def.code.as_str()) {
                        continue;
                    }
                    by_type
                        .entry(rtype.to_string())
                        .or_default()
                        .entry(def.code.clone())
                        .or_insert_with(|| def.clone());
                }
            }
        }
        tracing::debug!(skipped, "search parameters without a supported expression");
        Ok(SearchRegistry { by_type })
    }

    /// The parameter `code` on `rtype`.
    pub fn param(&self, rtype: &str, code: &str) -> Option<&Arc<ParamDef>> {
        self.by_type.get(rtype)?.get(code)
    }

    /// Every parameter supported on `rtype`, by code.
    pub fn params(&self, rtype: &str) -> impl Iterator<Item = &Arc<ParamDef>> {
        self.by_type.get(rtype).into_iter().flat_map(|m| m.values())
    }

    /// The index rows of a resource about to be stored. `base_url` is our FHIR base: an
    /// absolute reference elsewhere names another server's resource, never one of ours.
    pub fn index(&self, rtype: &str, resource: &Value, base_url: &str) -> Vec<IndexRow> {
        let mut rows = Vec::new();
        for def in self.params(rtype) {
            if NOT_INDEXED.contains(&def.code.as_str()) {
                continue;
            }
            if def.kind == ParamKind::Composite {
                composite_rows(def, resource, &mut rows);
                continue;
            }
            for mut value in super::extract::extract(def.kind, &def.expression, resource) {
                if let IndexValue::Reference {
                    target_type,
                    target_id,
                    url,
                } = &mut value
                    && is_foreign(url, base_url)
                {
                    *target_type = None;
                    *target_id = None;
                }
                rows.push(IndexRow {
                    param: def.code.clone(),
                    value,
                    group: None,
                });
            }
        }
        if rtype == "Patient" {
            rows.extend(super::child_welfare::index_rows(resource));
        }
        rows
    }
}

/// A composite parameter's rows: for each node of its expression, every combination of its
/// components' values, each combination one group, stored as `code#k` rows (one per component
/// `k`) sharing the group number, so a query can require all components of one combination.
fn composite_rows(def: &ParamDef, resource: &Value, rows: &mut Vec<IndexRow>) {
    let mut group = rows
        .iter()
        .filter_map(|r| r.group)
        .max()
        .map_or(0, |g| g + 1);
    for node in def.expression.evaluate(resource) {
        let per_component: Vec<Vec<IndexValue>> = def
            .components
            .iter()
            .map(|c| {
                super::extract::extract_nodes(c.kind, c.expression.evaluate_on(node, resource))
            })
            .collect();
        let mut combinations: Vec<Vec<&IndexValue>> = vec![vec![]];
        for values in &per_component {
            combinations = combinations
                .into_iter()
                .flat_map(|prefix| {
                    values
                        .iter()
                        .map(move |v| [prefix.clone(), vec![v]].concat())
                })
                .collect();
        }
        for combination in combinations
            .into_iter()
            .filter(|c| c.len() == def.components.len())
        {
            for (k, value) in combination.into_iter().enumerate() {
                rows.push(IndexRow {
                    param: format!("{}#{k}", def.code),
                    value: value.clone(),
                    group: Some(group),
                });
            }
            group += 1;
        }
    }
}

/// An absolute URL that is not under our base.
fn is_foreign(url: &str, base_url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && !url
            .strip_prefix(base_url)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Per base type, the targets its branches of the expression can reach: where each branch for
/// that type filters with `resolve() is T`, only those T (R4 lists Group among
/// `clinical-patient` targets, but `Observation.subject.where(resolve() is Patient)` only
/// ever selects Patients).
fn narrowed_targets(
    expression: &str,
    bases: &[&str],
    declared: &[String],
) -> HashMap<String, Vec<String>> {
    static RESOLVE_IS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"resolve\(\)\s+is\s+([A-Za-z]+)").expect("valid regex")
    });
    let mut out = HashMap::new();
    for base in bases {
        let prefix = format!("{base}.");
        let branches: Vec<&str> = expression
            .split('|')
            .map(|b| b.trim().trim_start_matches('('))
            .filter(|b| b.starts_with(&prefix))
            .collect();
        if branches.is_empty() || branches.iter().any(|b| !RESOLVE_IS.is_match(b)) {
            continue;
        }
        let named: Vec<&str> = branches
            .iter()
            .flat_map(|b| RESOLVE_IS.captures_iter(b))
            .filter_map(|c| c.get(1))
            .map(|m| m.as_str())
            .collect();
        let narrowed: Vec<String> = declared
            .iter()
            .filter(|t| named.contains(&t.as_str()))
            .cloned()
            .collect();
        if !narrowed.is_empty() {
            out.insert(base.to_string(), narrowed);
        }
    }
    out
}

/// `Resource` and `DomainResource` bases stand for every type they cover.
fn expand_base(base: &str) -> Vec<&str> {
    match base {
        "Resource" => structure::resource_types().to_vec(),
        "DomainResource" => structure::resource_types()
            .iter()
            .copied()
            .filter(|t| !matches!(*t, "Bundle" | "Binary" | "Parameters"))
            .collect(),
        other => vec![other],
    }
}

fn compile(sp: &Value, kinds: &HashMap<&str, ParamKind>) -> Option<ParamDef> {
    let kind = ParamKind::from_code(sp["type"].as_str()?)?;
    if kind == ParamKind::Special {
        return None;
    }
    let expression = sp["expression"].as_str()?;
    let compiled = fhirpath::compile(expression).ok()?;
    let components = if kind == ParamKind::Composite {
        let mut out = Vec::new();
        for c in sp["component"].as_array()? {
            let component_kind = *kinds.get(c["definition"].as_str()?)?;
            if matches!(component_kind, ParamKind::Composite | ParamKind::Special) {
                return None;
            }
            out.push(Component {
                kind: component_kind,
                expression: fhirpath::compile(c["expression"].as_str()?).ok()?,
            });
        }
        if out.is_empty() {
            return None;
        }
        out
    } else {
        vec![]
    };
    let bases: Vec<&str> = sp["base"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let targets: Vec<String> = sp["target"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    Some(ParamDef {
        code: sp["code"].as_str()?.to_string(),
        kind,
        url: sp["url"].as_str().unwrap_or_default().to_string(),
        description: sp["description"].as_str().unwrap_or_default().to_string(),
        narrowed: narrowed_targets(expression, &bases, &targets),
        targets,
        expression: compiled,
        components,
    })
}
