//! Privacy Consents as access rules (DESIGN.md section 5; `../shared/standards.md` 2.3: IHE PCF
//! and LEAP semantics). A Consent is compiled once per decision into its root provision (the
//! base decision) and the nested provisions one level down (its exceptions). For a requester
//! and a resource: the root must match, a matching nested deny denies, a matching nested permit
//! permits, else the root's type decides; across the patient's consents any deny wins, then any
//! permit, else the default is deny. A permit releases a resource carrying sensitivity labels
//! only if the permitting provisions name each of them, and a `minor-consented` resource only
//! under a Consent the youth signed.

use std::collections::HashSet;

use serde_json::Value;

/// HL7 v3 ActCode, where the sensitivity codes live.
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
/// Our own labels.
pub const OUR_LABELS: &str = "http://foster-passport.example/fhir/CodeSystem/security-label";
/// Data a minor consented to on their own (Family Code 6920 ff.).
pub const MINOR_CONSENTED: &str = "minor-consented";
/// The Consent scope of privacy consents.
const PRIVACY_SCOPE: &str = "patient-privacy";

/// HL7 v3 ActCode sensitivity codes that gate release (mental health, substance use, sexual and
/// reproductive health, HIV, violence, genetics, ethnicity, taboo).
const SENSITIVE_ACT_CODES: &[&str] = &[
    "BH", "ETH", "ETHUD", "GDIS", "HIV", "MH", "OPIOIDUD", "PSY", "PSYTHPN", "SCA", "SDV", "SEX",
    "SICKLE", "STD", "SUD", "TBOO",
];

/// Actor types we can resolve against a requester.
const ACTOR_TYPES: &[&str] = &[
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
    "CareTeam",
    "Patient",
];

/// A sensitivity label as `system|code`.
pub type Label = (String, String);

/// The sensitivity labels on a resource (`meta.security`), those that gate release.
pub fn sensitive_labels(resource: &Value) -> Vec<Label> {
    resource["meta"]["security"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["system"].as_str()?, c["code"].as_str()?)))
        .filter(|(s, c)| is_sensitive(s, c))
        .map(|(s, c)| (s.to_string(), c.to_string()))
        .collect()
}

/// Whether `system|code` is a label that gates release.
pub fn is_sensitive(system: &str, code: &str) -> bool {
    (system == ACT_CODE && SENSITIVE_ACT_CODES.contains(&code))
        || (system == OUR_LABELS && code == MINOR_CONSENTED)
}

/// Every gating label, for queries that must leave out labels nobody released.
pub fn all_sensitive_labels() -> Vec<Label> {
    SENSITIVE_ACT_CODES
        .iter()
        .map(|c| (ACT_CODE.to_string(), c.to_string()))
        .chain([(OUR_LABELS.to_string(), MINOR_CONSENTED.to_string())])
        .collect()
}

/// A FHIR Period as `[start, end)` in ms since the epoch; a missing bound is open.
pub fn period_range(period: &Value) -> (i64, i64) {
    let bound = |key: &str| {
        period[key]
            .as_str()
            .and_then(crate::search::extract::date_range)
    };
    (
        bound("start").map_or(i64::MIN, |r| r.0),
        bound("end").map_or(i64::MAX, |r| r.1),
    )
}

/// Permit or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Allows.
    Permit,
    /// Refuses.
    Deny,
}

/// One provision, compiled.
#[derive(Debug, Clone, Default)]
pub struct Provision {
    /// `permit` or `deny` (a root without a type is a permit: IHE PCF's agreement).
    pub kind: Option<Kind>,
    /// In force during `[start, end)` (ms since the epoch).
    pub period: Option<(i64, i64)>,
    /// Actor references (`Type/id`); empty = anyone.
    pub actors: Vec<String>,
    /// Action codes; empty = any.
    pub actions: Vec<String>,
    /// Purpose-of-use codes; empty = any.
    pub purposes: Vec<String>,
    /// Resource types; empty = any.
    pub classes: Vec<String>,
    /// Codes (`system|code` or `|code` when no system); empty = any.
    pub codes: Vec<(Option<String>, String)>,
    /// Security labels named; empty = none.
    pub labels: Vec<Label>,
    /// Instances (`Type/id`); empty = any.
    pub data: Vec<String>,
}

/// A privacy Consent, compiled.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Its id.
    pub id: String,
    /// The patient it governs.
    pub patient: String,
    /// The youth signed it (releases `minor-consented` data).
    pub signed_by_youth: bool,
    /// The base rule.
    pub root: Provision,
    /// Its exceptions.
    pub nested: Vec<Provision>,
}

/// Compile a Consent. `Ok(None)`: not an enforceable privacy grant (treatment consents such as
/// JV-220 orders, inactive ones); `Err`: a privacy Consent we could not enforce faithfully.
pub fn compile(consent: &Value) -> Result<Option<Compiled>, String> {
    let is_privacy = consent["scope"]["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["code"] == PRIVACY_SCOPE);
    if !is_privacy {
        return Ok(None);
    }
    let patient = consent["patient"]["reference"]
        .as_str()
        .and_then(|r| r.strip_prefix("Patient/"))
        .ok_or("a privacy Consent needs patient as a Patient/id reference")?
        .to_string();
    let root_value = &consent["provision"];
    let root = provision(root_value, true)?;
    let mut nested = Vec::new();
    for (i, n) in root_value["provision"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if n.get("provision").is_some() {
            return Err(format!(
                "provision.provision[{i}] nests further: only one level of exceptions is enforced"
            ));
        }
        let p = provision(n, false)?;
        if p.kind.is_none() {
            return Err(format!("provision.provision[{i}].type is required"));
        }
        nested.push(p);
    }
    if consent["status"] != "active" {
        return Ok(None);
    }
    let signed_by_youth = consent["performer"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["reference"].as_str() == Some(&format!("Patient/{patient}")));
    Ok(Some(Compiled {
        id: consent["id"].as_str().unwrap_or_default().to_string(),
        patient,
        signed_by_youth,
        root,
        nested,
    }))
}

fn provision(p: &Value, root: bool) -> Result<Provision, String> {
    let at = if root {
        "provision"
    } else {
        "provision.provision"
    };
    if p.get("dataPeriod").is_some() {
        return Err(format!("{at}.dataPeriod is not enforced yet"));
    }
    let codes_of = |key: &str| -> Vec<String> {
        p[key]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|cc| {
                // CodeableConcept (action) or Coding (purpose, class).
                let codings: Vec<&Value> = match cc.get("coding").and_then(Value::as_array) {
                    Some(list) => list.iter().collect(),
                    None => vec![cc],
                };
                codings
                    .into_iter()
                    .filter_map(|c| c["code"].as_str().map(str::to_string))
            })
            .collect()
    };
    let mut actors = Vec::new();
    for a in p["actor"].as_array().into_iter().flatten() {
        let reference = a["reference"]["reference"]
            .as_str()
            .ok_or_else(|| format!("{at}.actor needs a reference"))?;
        let kind = reference.split('/').next().unwrap_or_default();
        if !ACTOR_TYPES.contains(&kind) || reference.split('/').count() != 2 {
            return Err(format!(
                "{at}.actor `{reference}` is not a Type/id of a type we can resolve"
            ));
        }
        actors.push(reference.to_string());
    }
    let mut data = Vec::new();
    for d in p["data"].as_array().into_iter().flatten() {
        if d["meaning"] != "instance" {
            return Err(format!(
                "{at}.data.meaning `{}` is not enforced yet (only `instance`)",
                d["meaning"].as_str().unwrap_or("?")
            ));
        }
        let reference = d["reference"]["reference"]
            .as_str()
            .ok_or_else(|| format!("{at}.data needs a reference"))?;
        data.push(reference.to_string());
    }
    let period = p.get("period").map(period_range);
    Ok(Provision {
        kind: match p["type"].as_str() {
            Some("permit") => Some(Kind::Permit),
            Some("deny") => Some(Kind::Deny),
            Some(other) => return Err(format!("{at}.type `{other}` is not permit or deny")),
            None if root => Some(Kind::Permit),
            None => None,
        },
        period,
        actors,
        actions: codes_of("action"),
        purposes: codes_of("purpose"),
        classes: codes_of("class"),
        codes: p["code"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|cc| cc["coding"].as_array().into_iter().flatten())
            .filter_map(|c| {
                Some((
                    c["system"].as_str().map(str::to_string),
                    c["code"].as_str()?.to_string(),
                ))
            })
            .collect(),
        labels: p["securityLabel"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some((
                    c["system"].as_str()?.to_string(),
                    c["code"].as_str()?.to_string(),
                ))
            })
            .collect(),
        data,
    })
}

/// Who asks, as far as consent rules can tell.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// References that stand for the requester: their fhirUser, organization, and the
    /// CareTeams they currently take part in.
    pub actors: HashSet<String>,
    /// Purposes of use.
    pub purposes: Vec<String>,
    /// The action asked (`access` for reads and searches).
    pub action: &'static str,
    /// Now, ms since the epoch.
    pub now: i64,
}

impl Provision {
    /// The dimensions that do not depend on the resource: time, actor, action, purpose.
    fn matches_requester(&self, facts: &Facts) -> bool {
        let in_period = self
            .period
            .is_none_or(|(start, end)| start <= facts.now && facts.now < end);
        let actor = self.actors.is_empty() || self.actors.iter().any(|a| facts.actors.contains(a));
        let action = self.actions.is_empty()
            || self.actions.iter().any(|a| {
                a == facts.action
                    || (facts.action == "access" && matches!(a.as_str(), "use" | "disclose"))
            });
        // ETREAT (emergency treatment) counts as TREAT, never the reverse.
        let purpose = self.purposes.is_empty()
            || facts.purposes.iter().any(|p| {
                self.purposes.contains(p)
                    || (p == "ETREAT" && self.purposes.iter().any(|q| q == "TREAT"))
            });
        in_period && actor && action && purpose
    }

    /// The dimensions about the resource: type, instance, codes, labels.
    fn matches_resource(&self, rtype: &str, id: &str, resource: &Value, labels: &[Label]) -> bool {
        let class = self.classes.is_empty() || self.classes.iter().any(|c| c == rtype);
        let data = self.data.is_empty() || self.data.contains(&format!("{rtype}/{id}"));
        let code = self.codes.is_empty() || {
            let mut found = Vec::new();
            collect_codings(resource, &mut found, 0);
            self.codes.iter().any(|(system, code)| {
                found
                    .iter()
                    .any(|(s, c)| c == code && (system.is_none() || system.as_deref() == *s))
            })
        };
        let label = self.labels.is_empty() || self.labels.iter().any(|l| labels.contains(l));
        class && data && code && label
    }

    fn matches(
        &self,
        facts: &Facts,
        rtype: &str,
        id: &str,
        resource: &Value,
        labels: &[Label],
    ) -> bool {
        self.matches_requester(facts) && self.matches_resource(rtype, id, resource, labels)
    }
}

fn collect_codings<'a>(v: &'a Value, out: &mut Vec<(Option<&'a str>, &'a str)>, depth: usize) {
    if depth > 12 {
        return;
    }
    match v {
        Value::Object(map) => {
            if let Some(code) = map.get("code").and_then(Value::as_str) {
                out.push((map.get("system").and_then(Value::as_str), code));
            }
            for (k, child) in map {
                if k != "meta" && k != "text" {
                    collect_codings(child, out, depth + 1);
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|i| collect_codings(i, out, depth + 1)),
        _ => {}
    }
}

/// A decision and the Consents that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Released.
    pub permit: bool,
    /// Ids of the deciding Consents.
    pub by: Vec<String>,
}

/// Decide one resource of the patient under the patient's consents.
pub fn decide(
    consents: &[Compiled],
    facts: &Facts,
    rtype: &str,
    id: &str,
    resource: &Value,
) -> Decision {
    let labels = sensitive_labels(resource);
    let mut permits = Vec::new();
    let mut denies = Vec::new();
    for c in consents {
        if !c.root.matches(facts, rtype, id, resource, &labels) {
            continue;
        }
        let nested_deny = c
            .nested
            .iter()
            .find(|n| n.kind == Some(Kind::Deny) && n.matches(facts, rtype, id, resource, &labels));
        let nested_permit = c.nested.iter().find(|n| {
            n.kind == Some(Kind::Permit) && n.matches(facts, rtype, id, resource, &labels)
        });
        let (kind, named): (Kind, Vec<&Label>) = match (nested_deny, nested_permit) {
            (Some(_), _) => (Kind::Deny, vec![]),
            (None, Some(n)) => (
                Kind::Permit,
                n.labels.iter().chain(&c.root.labels).collect(),
            ),
            (None, None) => (
                c.root.kind.unwrap_or(Kind::Permit),
                c.root.labels.iter().collect(),
            ),
        };
        match kind {
            Kind::Deny => denies.push(c.id.clone()),
            Kind::Permit => {
                // Sensitive data needs every one of its labels named; minor-consented data
                // needs the youth's own signature.
                let released = labels
                    .iter()
                    .all(|l| named.contains(&l) && (l.1 != MINOR_CONSENTED || c.signed_by_youth));
                if released {
                    permits.push(c.id.clone());
                }
            }
        }
    }
    if !denies.is_empty() {
        return Decision {
            permit: false,
            by: denies,
        };
    }
    Decision {
        permit: !permits.is_empty(),
        by: permits,
    }
}

/// What a requester may see of one patient's resources of one type, for a search: nothing,
/// or resources whose sensitive labels are within `released` — refined per resource after.
pub fn type_release(consents: &[Compiled], facts: &Facts, rtype: &str) -> Option<Vec<Label>> {
    let mut released: Vec<Label> = Vec::new();
    let mut any = false;
    for c in consents {
        let root_may = c.root.matches_requester(facts)
            && (c.root.classes.is_empty() || c.root.classes.iter().any(|x| x == rtype));
        if !root_may {
            continue;
        }
        // A root deny with no resource conditions and no permitting exception shuts the type.
        let unconditional = |p: &Provision| {
            p.classes.is_empty() && p.codes.is_empty() && p.labels.is_empty() && p.data.is_empty()
        };
        if c.root.kind == Some(Kind::Deny)
            && unconditional(&c.root)
            && !c
                .nested
                .iter()
                .any(|n| n.kind == Some(Kind::Permit) && n.matches_requester(facts))
        {
            return None;
        }
        for p in std::iter::once(&c.root).chain(c.nested.iter()) {
            if p.kind == Some(Kind::Permit) && p.matches_requester(facts) {
                any = true;
                for l in p.labels.iter().chain(&c.root.labels) {
                    if !released.contains(l) {
                        released.push(l.clone());
                    }
                }
            }
        }
    }
    any.then_some(released)
}
