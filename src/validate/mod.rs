//! Profile validation against our StructureDefinitions, CodeSystems and ValueSets in
//! `profiles/` (DESIGN.md section 6), compiled once into checkers when first used (`serve`
//! forces it at start-up). A resource is checked against each of our profiles its
//! `meta.profile` claims; one that claims none is left to the base-spec structure check
//! ([`crate::fhir::structure`]).

mod profile;

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use include_dir::{Dir, include_dir};
use serde_json::Value;

use crate::error::Issue;

pub use profile::Profile;

/// Canonical base of everything we define.
pub const CANONICAL: &str = "http://foster-passport.example/fhir";

static PROFILE_FILES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/profiles");
static PROFILES: LazyLock<Profiles> = LazyLock::new(|| {
    Profiles::load().unwrap_or_else(|e| panic!("profiles/ does not compile: {e}"))
});

/// Every compiled profile and value set.
pub struct Profiles {
    structures: HashMap<String, Profile>,
    value_sets: HashMap<String, ValueSet>,
}

/// The codes of a ValueSet by system; `None` = any code of that system (one of
/// [`EXTERNAL_SYSTEMS`], checked by system only).
#[derive(Debug, Default)]
pub struct ValueSet {
    systems: HashMap<String, Option<HashSet<String>>>,
}

impl ValueSet {
    /// Whether `system|code` is in the set.
    pub fn contains(&self, system: &str, code: &str) -> bool {
        match self.systems.get(system) {
            Some(None) => true,
            Some(Some(codes)) => codes.contains(code),
            None => false,
        }
    }

    /// Whether the set draws codes from `system`.
    pub fn has_system(&self, system: &str) -> bool {
        self.systems.contains_key(system)
    }

    /// Whether `code` (a bare `code` element) is in the set under any system.
    pub fn contains_code(&self, code: &str) -> bool {
        self.systems
            .values()
            .any(|c| c.as_ref().is_none_or(|c| c.contains(code)))
    }
}

/// The compiled profiles of `profiles/`.
pub fn profiles() -> &'static Profiles {
    &PROFILES
}

/// Issues of `resource` against the profiles of ours it claims in `meta.profile` (empty when
/// valid or when it claims none of ours).
pub fn check_claimed(resource: &Value) -> Vec<Issue> {
    PROFILES.check_claimed(resource, &[])
}

impl Profiles {
    fn load() -> Result<Profiles, String> {
        let mut code_systems: HashMap<String, HashSet<String>> = HashMap::new();
        let mut value_sets: Vec<Value> = vec![];
        let mut structures: Vec<Value> = vec![];
        for file in PROFILE_FILES.files() {
            if file.path().extension().is_none_or(|e| e != "json") {
                continue;
            }
            let name = file.path().display().to_string();
            let v: Value =
                serde_json::from_slice(file.contents()).map_err(|e| format!("{name}: {e}"))?;
            match v["resourceType"].as_str() {
                Some("CodeSystem") => {
                    let url = v["url"].as_str().ok_or(format!("{name}: no url"))?;
                    let mut codes = HashSet::new();
                    collect_concepts(&v["concept"], &mut codes);
                    code_systems.insert(url.to_string(), codes);
                }
                Some("ValueSet") => value_sets.push(v),
                Some("StructureDefinition") => structures.push(v),
                other => return Err(format!("{name}: unexpected resourceType {other:?}")),
            }
        }
        let mut sets = HashMap::new();
        for vs in value_sets {
            let (url, set) = compile_value_set(&vs, &code_systems)?;
            sets.insert(url, set);
        }
        let mut compiled = HashMap::new();
        for sd in &structures {
            let p = Profile::compile(sd, &sets)?;
            compiled.insert(p.url.clone(), p);
        }
        Ok(Profiles {
            structures: compiled,
            value_sets: sets,
        })
    }

    /// A profile or extension definition by canonical url (a `|version` suffix is ignored).
    pub fn get(&self, url: &str) -> Option<&Profile> {
        self.structures.get(strip_version(url))
    }

    /// The urls of our profiles of resource type `rtype`, sorted (the CapabilityStatement's
    /// `supportedProfile`).
    pub fn resource_profiles(&self, rtype: &str) -> Vec<&str> {
        let mut urls: Vec<&str> = self
            .structures
            .values()
            .filter(|p| p.kind_is_resource() && p.rtype == rtype)
            .map(|p| p.url.as_str())
            .collect();
        urls.sort();
        urls
    }

    /// A value set by canonical url.
    pub fn value_set(&self, url: &str) -> Option<&ValueSet> {
        self.value_sets.get(strip_version(url))
    }

    /// Check `resource` against the profiles of ours it claims and against `also` (extra
    /// profile urls, e.g. `$validate`'s `profile` parameter).
    pub fn check_claimed(&self, resource: &Value, also: &[&str]) -> Vec<Issue> {
        let rtype = resource["resourceType"].as_str().unwrap_or("Resource");
        let mut issues = vec![];
        let mut wanted: Vec<(String, String)> = vec![];
        for (i, p) in resource["meta"]["profile"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(url) = p.as_str() {
                wanted.push((url.to_string(), format!("{rtype}.meta.profile[{i}]")));
            }
        }
        for url in also {
            wanted.push((url.to_string(), rtype.to_string()));
        }
        let mut checked = false;
        for (url, at) in wanted {
            match self.get(&url) {
                Some(p) if p.kind_is_resource() => {
                    if p.rtype != rtype {
                        issues.push(
                            Issue::error(
                                "processing",
                                format!("profile {url} is for {}, not {rtype}", p.rtype),
                            )
                            .at(at),
                        );
                    } else {
                        checked = true;
                        p.check(self, resource, &mut issues);
                    }
                }
                _ if url.starts_with(CANONICAL) => issues.push(
                    Issue::error(
                        "processing",
                        format!("{url} is not a resource profile this server knows"),
                    )
                    .at(at),
                ),
                // Someone else's profile: not ours to judge.
                _ => {}
            }
        }
        if checked {
            profile::check_our_extensions(self, resource, rtype, &mut issues);
        }
        dedup(&mut issues);
        issues
    }
}

/// External code systems a ValueSet of ours may include whole. We hold none of their codes, so
/// a binding to them is checked by system only; any other system must be one of our
/// CodeSystems or list its codes in the ValueSet.
pub const EXTERNAL_SYSTEMS: &[&str] = &[
    "http://loinc.org",
    "http://snomed.info/sct",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
];

/// One ValueSet's `compose.include`s as codes by system.
fn compile_value_set(
    vs: &Value,
    code_systems: &HashMap<String, HashSet<String>>,
) -> Result<(String, ValueSet), String> {
    let url = vs["url"].as_str().ok_or("a ValueSet has no url")?;
    let mut set = ValueSet::default();
    for include in vs["compose"]["include"].as_array().into_iter().flatten() {
        let system = include["system"]
            .as_str()
            .ok_or(format!("{url}: an include without a system"))?;
        let codes = match include["concept"].as_array() {
            Some(list) => Some(
                list.iter()
                    .filter_map(|c| c["code"].as_str().map(String::from))
                    .collect(),
            ),
            None => match code_systems.get(system) {
                Some(codes) => Some(codes.clone()),
                None if EXTERNAL_SYSTEMS.contains(&system) => None,
                None => {
                    return Err(format!(
                        "{url}: includes all of {system}, which is neither ours nor a known external system"
                    ));
                }
            },
        };
        set.systems.insert(system.to_string(), codes);
    }
    Ok((url.to_string(), set))
}

fn dedup(issues: &mut Vec<Issue>) {
    let mut seen = HashSet::new();
    issues.retain(|i| seen.insert((i.expression.clone(), i.diagnostics.clone())));
}

fn strip_version(url: &str) -> &str {
    url.split_once('|').map_or(url, |(u, _)| u)
}

fn collect_concepts(concepts: &Value, into: &mut HashSet<String>) {
    for c in concepts.as_array().into_iter().flatten() {
        if let Some(code) = c["code"].as_str() {
            into.insert(code.to_string());
        }
        collect_concepts(&c["concept"], into);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use serde_json::json;

    #[test]
    fn external_systems_are_checked_by_system_only() {
        let ours = HashMap::from([("http://x/cs".to_string(), HashSet::from(["a".to_string()]))]);
        let vs = json!({ "url": "http://x/vs", "compose": { "include": [
            { "system": "http://x/cs" },
            { "system": "http://loinc.org" },
            { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "concept": [{ "code": "PSY" }] } ] } });
        let (_, set) = super::compile_value_set(&vs, &ours).unwrap();
        assert!(set.contains("http://x/cs", "a"));
        assert!(!set.contains("http://x/cs", "b"));
        assert!(set.contains("http://loinc.org", "59284-0"));
        assert!(set.contains("http://loinc.org", "anything"));
        assert!(set.contains("http://terminology.hl7.org/CodeSystem/v3-ActCode", "PSY"));
        assert!(!set.contains("http://terminology.hl7.org/CodeSystem/v3-ActCode", "HIV"));
        assert!(!set.contains("http://unknown.example/cs", "a"));
        // A whole system we can check nothing of is a load error, not a silent pass.
        let vs = json!({ "url": "http://x/vs2", "compose": { "include": [{ "system": "http://unknown.example/cs" }] } });
        assert!(super::compile_value_set(&vs, &ours).is_err());
    }

    #[test]
    fn profiles_compile() {
        let p = super::profiles();
        assert!(
            p.get("http://foster-passport.example/fhir/StructureDefinition/foster-youth-patient")
                .is_some()
        );
        let vs = p
            .value_set("http://foster-passport.example/fhir/ValueSet/california-county")
            .unwrap();
        assert!(vs.contains(
            "http://foster-passport.example/fhir/CodeSystem/california-county",
            "06115"
        ));
    }
}
