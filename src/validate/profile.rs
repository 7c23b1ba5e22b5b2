//! One StructureDefinition compiled into an element tree, and the walk that checks a resource
//! (or an extension) against it: cardinality, fixed and pattern values, choice types and
//! reference targets, required bindings to our ValueSets, slices (by `url` or `system`,
//! open or closed) and invariants our FHIRPath evaluator can run.

use std::collections::HashMap;

use serde_json::Value;

use super::{Profiles, ValueSet};
use crate::error::Issue;
use crate::search::fhirpath::{self, Node};

/// A compiled profile or extension definition.
pub struct Profile {
    /// Canonical url.
    pub url: String,
    /// Constrained type (`Patient`, `Extension`).
    pub rtype: String,
    kind: String,
    root: Elem,
}

#[derive(Default)]
struct Elem {
    /// Last path segment (`identifier`, `value[x]`).
    name: String,
    slice_name: Option<String>,
    min: usize,
    max: Option<usize>,
    fixed: Option<Value>,
    pattern: Option<Value>,
    /// Allowed type codes (from the element's `type`).
    types: Vec<String>,
    /// Allowed reference targets (resource type names); empty = any.
    targets: Vec<String>,
    /// Extension definition urls the type names.
    type_profiles: Vec<String>,
    /// A required binding to a value set we know.
    binding: Option<String>,
    constraints: Vec<(String, String, fhirpath::Expr)>,
    slicing: Option<Slicing>,
    children: Vec<Elem>,
    slices: Vec<Elem>,
}

struct Slicing {
    paths: Vec<String>,
    closed: bool,
}

impl Profile {
    /// Compile a StructureDefinition's snapshot (constraints only from our own sources are
    /// evaluated: the base ones are the structure check's business).
    pub(super) fn compile(sd: &Value, sets: &HashMap<String, ValueSet>) -> Result<Profile, String> {
        let url = sd["url"]
            .as_str()
            .ok_or("a StructureDefinition has no url")?;
        let rtype = sd["type"].as_str().ok_or(format!("{url}: no type"))?;
        let elements = sd["snapshot"]["element"]
            .as_array()
            .ok_or(format!("{url}: no snapshot"))?;
        let mut root: Option<Elem> = None;
        for e in elements {
            let id = e["id"]
                .as_str()
                .ok_or(format!("{url}: an element has no id"))?;
            let segs: Vec<&str> = id.split('.').collect();
            let elem = compile_elem(url, segs[segs.len() - 1], e, sets)?;
            if segs.len() == 1 {
                root = Some(elem);
                continue;
            }
            let mut at = root
                .as_mut()
                .ok_or(format!("{url}: {id} before the root"))?;
            for seg in &segs[1..segs.len() - 1] {
                let (name, slice) = split_slice(seg);
                at = at
                    .children
                    .iter_mut()
                    .find(|c| c.name == name)
                    .ok_or(format!("{url}: {id} has no parent"))?;
                if let Some(slice) = slice {
                    at = at
                        .slices
                        .iter_mut()
                        .find(|s| s.slice_name.as_deref() == Some(slice))
                        .ok_or(format!("{url}: {id}: no slice {slice}"))?;
                }
            }
            if elem.slice_name.is_some() {
                let owner = at
                    .children
                    .iter_mut()
                    .find(|c| c.name == elem.name)
                    .ok_or(format!("{url}: slice {id} of nothing"))?;
                owner.slices.push(elem);
            } else {
                at.children.push(elem);
            }
        }
        Ok(Profile {
            url: url.to_string(),
            rtype: rtype.to_string(),
            kind: sd["kind"].as_str().unwrap_or("").to_string(),
            root: root.ok_or(format!("{url}: empty snapshot"))?,
        })
    }

    /// Whether this constrains a resource (not a datatype such as Extension).
    pub fn kind_is_resource(&self) -> bool {
        self.kind == "resource"
    }

    /// Check a resource (or an extension) at its root; issues are appended.
    pub fn check(&self, all: &Profiles, value: &Value, issues: &mut Vec<Issue>) {
        let path = value["resourceType"]
            .as_str()
            .unwrap_or(&self.rtype)
            .to_string();
        self.check_at(all, value, value, &path, issues);
    }

    fn check_at(
        &self,
        all: &Profiles,
        resource: &Value,
        value: &Value,
        path: &str,
        issues: &mut Vec<Issue>,
    ) {
        let w = Walk {
            all,
            resource,
            profile: &self.url,
        };
        w.item(&self.root, &[], value, path, issues);
    }
}

fn split_slice(seg: &str) -> (&str, Option<&str>) {
    match seg.split_once(':') {
        Some((n, s)) => (n, Some(s)),
        None => (seg, None),
    }
}

fn compile_elem(
    url: &str,
    seg: &str,
    e: &Value,
    sets: &HashMap<String, ValueSet>,
) -> Result<Elem, String> {
    let (name, slice) = split_slice(seg);
    let obj = e.as_object().ok_or("an element is not an object")?;
    let mut elem = Elem {
        name: name.to_string(),
        slice_name: slice.map(String::from),
        min: e["min"].as_u64().unwrap_or(0) as usize,
        max: match e["max"].as_str() {
            Some("*") | None => None,
            Some(n) => Some(n.parse().map_err(|_| format!("{url}: bad max {n}"))?),
        },
        ..Elem::default()
    };
    for (k, v) in obj {
        if k.starts_with("fixed") {
            elem.fixed = Some(v.clone());
        } else if k.starts_with("pattern") {
            elem.pattern = Some(v.clone());
        }
    }
    for t in e["type"].as_array().into_iter().flatten() {
        if let Some(code) = t["code"].as_str() {
            elem.types.push(code.to_string());
        }
        for p in t["targetProfile"].as_array().into_iter().flatten() {
            if let Some(name) = p.as_str().and_then(|p| p.rsplit('/').next()) {
                elem.targets.push(name.to_string());
            }
        }
        for p in t["profile"].as_array().into_iter().flatten() {
            if let Some(p) = p.as_str() {
                elem.type_profiles.push(p.to_string());
            }
        }
    }
    if e["binding"]["strength"] == "required"
        && let Some(vs) = e["binding"]["valueSet"].as_str()
        && sets.contains_key(vs)
    {
        elem.binding = Some(vs.to_string());
    }
    for c in e["constraint"].as_array().into_iter().flatten() {
        let ours = c["source"]
            .as_str()
            .is_some_and(|s| s.starts_with(super::CANONICAL));
        if !ours || c["severity"] != "error" {
            continue;
        }
        let key = c["key"].as_str().unwrap_or("?");
        let expr = c["expression"]
            .as_str()
            .ok_or(format!("{url}: constraint {key} has no expression"))?;
        let compiled = fhirpath::compile(expr).map_err(|e| format!("{url}: {key}: {e}"))?;
        let human = c["human"].as_str().unwrap_or("").to_string();
        elem.constraints.push((key.to_string(), human, compiled));
    }
    if let Some(s) = e.get("slicing") {
        elem.slicing = Some(Slicing {
            paths: s["discriminator"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["path"].as_str().map(String::from))
                .collect(),
            closed: s["rules"] == "closed",
        });
    }
    Ok(elem)
}

struct Walk<'a> {
    all: &'a Profiles,
    resource: &'a Value,
    profile: &'a str,
}

impl Walk<'_> {
    fn issue(&self, issues: &mut Vec<Issue>, code: &'static str, path: &str, text: String) {
        issues.push(
            Issue::error(code, format!("{path}: {text} (profile {})", self.profile)).at(path),
        );
    }

    /// Check one value against `elem` (and the extra rules of the base element it is a slice
    /// of, `base_children`), then its children.
    fn item(
        &self,
        elem: &Elem,
        base_children: &[Elem],
        value: &Value,
        path: &str,
        issues: &mut Vec<Issue>,
    ) {
        if let Some(fixed) = &elem.fixed
            && value != fixed
        {
            self.issue(issues, "value", path, format!("must be exactly {fixed}"));
        }
        if let Some(pattern) = &elem.pattern
            && !matches_pattern(value, pattern)
        {
            self.issue(
                issues,
                "value",
                path,
                format!("must match the pattern {pattern}"),
            );
        }
        if !elem.targets.is_empty()
            && !elem.targets.iter().any(|t| t == "Resource")
            && let Some(reference) = value["reference"].as_str()
            && let Some(t) = reference_type(reference)
            && !elem.targets.iter().any(|x| x == t)
        {
            self.issue(
                issues,
                "value",
                &format!("{path}.reference"),
                format!("must refer to {}, not {t}", elem.targets.join(" or ")),
            );
        }
        if let Some(vs_url) = &elem.binding
            && let Some(vs) = self.all.value_set(vs_url)
        {
            self.binding(vs, vs_url, value, path, issues);
        }
        for (key, human, expr) in &elem.constraints {
            let focus = Node {
                value,
                type_name: None,
            };
            let result = expr.evaluate_on(focus, self.resource);
            let ok = result.len() == 1 && result[0].value == &Value::Bool(true);
            if !ok {
                self.issue(issues, "invariant", path, format!("{key}: {human}"));
            }
        }
        if let Some(obj) = value.as_object() {
            for child in base_children {
                // A child the slice restates is checked by the slice's rules.
                if elem.children.iter().any(|c| c.name == child.name) {
                    continue;
                }
                self.child(child, obj, path, issues);
            }
            for child in &elem.children {
                self.child(child, obj, path, issues);
            }
        }
    }

    fn child(
        &self,
        elem: &Elem,
        obj: &serde_json::Map<String, Value>,
        path: &str,
        issues: &mut Vec<Issue>,
    ) {
        let (key, value) = match elem.name.strip_suffix("[x]") {
            Some(prefix) => match obj.iter().find(|(k, _)| {
                k.strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
            }) {
                Some((k, v)) => (k.as_str(), Some(v)),
                None => (elem.name.as_str(), None),
            },
            None => (elem.name.as_str(), obj.get(&elem.name)),
        };
        let items: Vec<(String, &Value)> = match value {
            None => vec![],
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}.{key}[{i}]"), v))
                .collect(),
            Some(v) => vec![(format!("{path}.{key}"), v)],
        };
        let here = format!("{path}.{}", key);
        if items.len() < elem.min {
            self.issue(
                issues,
                "required",
                &here,
                format!("at least {} required, found {}", elem.min, items.len()),
            );
        }
        if let Some(max) = elem.max
            && items.len() > max
        {
            let at = &items[max].0;
            let text = if max == 0 {
                "not allowed by the profile".to_string()
            } else {
                format!("at most {max} allowed, found {}", items.len())
            };
            self.issue(issues, "structure", at, text);
        }
        if let Some(prefix) = elem.name.strip_suffix("[x]")
            && value.is_some()
            && !elem.types.is_empty()
        {
            let suffix = &key[prefix.len()..];
            let allowed = elem.types.iter().any(|t| t.eq_ignore_ascii_case(suffix));
            if !allowed {
                self.issue(
                    issues,
                    "structure",
                    &here,
                    format!(
                        "type {suffix} is not allowed here: use {}",
                        elem.types.join(" or ")
                    ),
                );
                return;
            }
        }
        // Assign each item to a slice.
        let mut in_slice: Vec<Vec<usize>> = vec![vec![]; elem.slices.len()];
        for (i, (item_path, item)) in items.iter().enumerate() {
            let slice = elem.slicing.as_ref().and_then(|s| {
                elem.slices
                    .iter()
                    .position(|sl| s.paths.iter().all(|p| discriminator_matches(sl, p, item)))
            });
            match slice {
                Some(s) => in_slice[s].push(i),
                None => {
                    if elem.slicing.as_ref().is_some_and(|s| s.closed) {
                        let what = elem
                            .slicing
                            .as_ref()
                            .and_then(|s| s.paths.first())
                            .and_then(|p| item[p.as_str()].as_str())
                            .map(|v| format!(" (`{v}`)"))
                            .unwrap_or_default();
                        self.issue(
                            issues,
                            "structure",
                            item_path,
                            format!("matches none of the allowed slices{what}"),
                        );
                        continue;
                    }
                    self.item(elem, &[], item, item_path, issues);
                }
            }
        }
        for (slice, members) in elem.slices.iter().zip(&in_slice) {
            let name = slice.slice_name.as_deref().unwrap_or("");
            if members.len() < slice.min {
                self.issue(
                    issues,
                    "required",
                    &here,
                    format!(
                        "slice `{name}`: at least {} required, found {}",
                        slice.min,
                        members.len()
                    ),
                );
            }
            if let Some(max) = slice.max
                && members.len() > max
            {
                self.issue(
                    issues,
                    "structure",
                    &items[members[max]].0,
                    format!(
                        "slice `{name}`: at most {max} allowed, found {}",
                        members.len()
                    ),
                );
            }
            for &i in members {
                let (item_path, item) = &items[i];
                // The base element's own rules, then the slice's.
                self.item_rules_only(elem, item, item_path, issues);
                self.item(slice, &elem.children, item, item_path, issues);
            }
        }
    }

    /// The base element's value rules for an item that is in one of its slices.
    fn item_rules_only(&self, elem: &Elem, value: &Value, path: &str, issues: &mut Vec<Issue>) {
        let shallow = Elem {
            fixed: elem.fixed.clone(),
            pattern: elem.pattern.clone(),
            binding: elem.binding.clone(),
            targets: elem.targets.clone(),
            ..Elem::default()
        };
        self.item(&shallow, &[], value, path, issues);
    }

    fn binding(
        &self,
        vs: &ValueSet,
        vs_url: &str,
        value: &Value,
        path: &str,
        issues: &mut Vec<Issue>,
    ) {
        let coding_ok = |c: &Value| match (c["system"].as_str(), c["code"].as_str()) {
            (Some(s), Some(code)) => vs.contains(s, code),
            _ => false,
        };
        let coding_issue = |c: &Value, at: &str, issues: &mut Vec<Issue>| {
            let system = c["system"].as_str().unwrap_or("");
            let code = c["code"].as_str().unwrap_or("");
            if vs.has_system(system) {
                self.issue(
                    issues,
                    "code-invalid",
                    &format!("{at}.code"),
                    format!("`{code}` is not a code of {system} in {vs_url}"),
                );
            } else {
                self.issue(
                    issues,
                    "code-invalid",
                    &format!("{at}.system"),
                    format!("system `{system}` is not in the required value set {vs_url}"),
                );
            }
        };
        match value {
            Value::String(code) if !vs.contains_code(code) => {
                self.issue(
                    issues,
                    "code-invalid",
                    path,
                    format!("`{code}` is not in the required value set {vs_url}"),
                );
            }
            Value::Object(obj) if obj.contains_key("coding") || obj.contains_key("text") => {
                let codings: Vec<&Value> =
                    value["coding"].as_array().into_iter().flatten().collect();
                if codings.iter().any(|c| coding_ok(c)) {
                    return;
                }
                let pick = codings
                    .iter()
                    .position(|c| c["system"].as_str().is_some_and(|s| vs.has_system(s)))
                    .unwrap_or(0);
                match codings.get(pick) {
                    Some(c) => coding_issue(c, &format!("{path}.coding[{pick}]"), issues),
                    None => self.issue(
                        issues,
                        "code-invalid",
                        path,
                        format!("needs a coding from the required value set {vs_url}"),
                    ),
                }
            }
            Value::Object(_) if !coding_ok(value) => coding_issue(value, path, issues),
            _ => {}
        }
    }
}

/// Whether `item` belongs to `slice` by discriminator `path` (`url`, `system`): the slice's
/// fixed or pattern value there, or for `url` the extension definition its type names.
fn discriminator_matches(slice: &Elem, path: &str, item: &Value) -> bool {
    let actual = &item[path];
    if path == "url"
        && let Some(p) = slice.type_profiles.first()
    {
        return actual.as_str() == Some(p.as_str());
    }
    match slice.children.iter().find(|c| c.name == path) {
        Some(c) => match (&c.fixed, &c.pattern) {
            (Some(f), _) => actual == f,
            (None, Some(p)) => matches_pattern(actual, p),
            _ => false,
        },
        None => false,
    }
}

/// FHIR pattern matching: every element of the pattern is present with the same value; each
/// array item of the pattern is matched by some item of the value.
fn matches_pattern(value: &Value, pattern: &Value) -> bool {
    match (value, pattern) {
        (Value::Object(v), Value::Object(p)) => p
            .iter()
            .all(|(k, pv)| v.get(k).is_some_and(|vv| matches_pattern(vv, pv))),
        (Value::Array(v), Value::Array(p)) => p
            .iter()
            .all(|pi| v.iter().any(|vi| matches_pattern(vi, pi))),
        _ => value == pattern,
    }
}

/// `Patient/1`, `http://x/fhir/Patient/1`, `Patient/1/_history/2` → `Patient`; contained
/// (`#x`) and `urn:` references have no type to check.
fn reference_type(reference: &str) -> Option<&str> {
    if reference.starts_with('#') || reference.starts_with("urn:") {
        return None;
    }
    let segs: Vec<&str> = reference.split('/').collect();
    let n = segs.len();
    let at = if n >= 4 && segs[n - 2] == "_history" {
        n - 4
    } else {
        n.checked_sub(2)?
    };
    segs.get(at)
        .copied()
        .filter(|t| crate::fhir::structure::is_resource_type(t))
}

/// Every extension anywhere in `value` whose url is one of ours is checked against its
/// definition; one in our namespace that we do not define is an error.
pub(super) fn check_our_extensions(
    all: &Profiles,
    resource: &Value,
    path: &str,
    issues: &mut Vec<Issue>,
) {
    walk_extensions(all, resource, resource, path, issues);
}

fn walk_extensions(
    all: &Profiles,
    resource: &Value,
    value: &Value,
    path: &str,
    issues: &mut Vec<Issue>,
) {
    let prefix = format!("{}/StructureDefinition/", super::CANONICAL);
    let Value::Object(obj) = value else {
        return;
    };
    for (k, v) in obj {
        if k == "contained" || (k == "resource" && v.get("resourceType").is_some()) {
            continue;
        }
        let is_ext = k == "extension" || k == "modifierExtension";
        match v {
            Value::Array(list) => {
                for (i, item) in list.iter().enumerate() {
                    let at = format!("{path}.{k}[{i}]");
                    if is_ext
                        && let Some(url) = item["url"].as_str()
                        && url.starts_with(&prefix)
                    {
                        match all.get(url) {
                            Some(def) if def.rtype == "Extension" => {
                                def.check_at(all, resource, item, &at, issues);
                                continue;
                            }
                            _ => {
                                issues.push(
                                    Issue::error(
                                        "structure",
                                        format!(
                                            "{at}: {url} is not an extension this server defines"
                                        ),
                                    )
                                    .at(format!("{at}.url")),
                                );
                                continue;
                            }
                        }
                    }
                    walk_extensions(all, resource, item, &at, issues);
                }
            }
            Value::Object(_) => walk_extensions(all, resource, v, &format!("{path}.{k}"), issues),
            _ => {}
        }
    }
}
