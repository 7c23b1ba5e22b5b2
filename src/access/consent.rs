//! Privacy Consents as access rules (DESIGN.md section 5; `../shared/standards.md` 2.3: IHE PCF
//! and LEAP semantics). A Consent is compiled once per decision into its root provision (the
//! base decision) and the nested provisions one level down (its exceptions). For a requester
//! and a resource: the root must match, a matching nested deny denies, a matching nested permit
//! permits, else the root's type decides; across the patient's consents any deny wins, then any
//! permit, else the default is deny. A permit releases a resource carrying sensitivity labels
//! only if the permitting provisions name each of them, and a `minor-consented` resource only
//! under a Consent the youth signed. Statewide rules (Consents without a patient, from
//! `conformance/statewide/`) are evaluated with each youth's own consents by the same rules.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// HL7 v3 ActCode, where the sensitivity codes live.
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
/// Our own labels.
pub const OUR_LABELS: &str = "http://foster-passport.example/fhir/CodeSystem/security-label";
/// Data a minor consented to on their own (Family Code 6920 ff.).
pub const MINOR_CONSENTED: &str = "minor-consented";
/// The Consent scope of privacy consents.
const PRIVACY_SCOPE: &str = "patient-privacy";
/// Our CareTeam participant roles. A provision actor may name one as
/// `reference.identifier {system: this, value: code}`: whoever currently holds that role in the
/// youth's CareTeam (statewide rules cannot name a person).
pub const CARE_TEAM_ROLE: &str = "http://foster-passport.example/fhir/CodeSystem/care-team-role";

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
    /// Actor references (`Type/id`); empty (with no `team_roles`) = anyone.
    pub actors: Vec<String>,
    /// Actors named by their role in the youth's CareTeam ([`CARE_TEAM_ROLE`] codes).
    pub team_roles: Vec<String>,
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
    /// Data whose clinical date lies within `[start, end)` (ms since the epoch).
    pub data_period: Option<(i64, i64)>,
}

/// A privacy Consent, compiled.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Its id.
    pub id: String,
    /// The patient it governs; `None` for a statewide rule, which governs every youth.
    pub patient: Option<String>,
    /// The youth signed it (releases `minor-consented` data).
    pub signed_by_youth: bool,
    /// The base rule.
    pub root: Provision,
    /// Its exceptions.
    pub nested: Vec<Provision>,
}

impl Compiled {
    /// Some provision limits the data by its clinical date.
    pub fn names_data_period(&self) -> bool {
        std::iter::once(&self.root)
            .chain(&self.nested)
            .any(|p| p.data_period.is_some())
    }
}

/// Compile a Consent. `Ok(None)`: not an enforceable privacy grant (treatment consents such as
/// JV-220 orders, inactive ones); `Err`: a privacy Consent we could not enforce faithfully.
pub fn compile(consent: &Value) -> Result<Option<Compiled>, String> {
    if !is_privacy(consent) {
        return Ok(None);
    }
    let patient = consent["patient"]["reference"]
        .as_str()
        .and_then(|r| r.strip_prefix("Patient/"))
        .ok_or("a privacy Consent needs patient as a Patient/id reference")?
        .to_string();
    compile_provisions(consent, Some(patient))
}

/// Compile a statewide rule: a privacy Consent without a patient whose `policyRule` names the
/// law. Its root may permit only actors named by CareTeam role, so that it reaches the youth
/// the requester cares for, not every youth in the state.
pub fn compile_statewide(consent: &Value) -> Result<Compiled, String> {
    if !is_privacy(consent) {
        return Err("a statewide rule must have scope patient-privacy".into());
    }
    if consent.get("patient").is_some() {
        return Err("a statewide rule has no patient".into());
    }
    if consent["policyRule"].is_null() {
        return Err("a statewide rule names the law it applies in policyRule".into());
    }
    let compiled =
        compile_provisions(consent, None)?.ok_or("a statewide rule must be active to be loaded")?;
    let root = &compiled.root;
    if root.kind == Some(Kind::Permit) && (!root.actors.is_empty() || root.team_roles.is_empty()) {
        return Err(
            "a statewide permit must name its actors by CareTeam role (provision.actor.reference.identifier)"
                .into(),
        );
    }
    Ok(compiled)
}

fn is_privacy(consent: &Value) -> bool {
    consent["scope"]["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["code"] == PRIVACY_SCOPE)
}

fn compile_provisions(
    consent: &Value,
    patient: Option<String>,
) -> Result<Option<Compiled>, String> {
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
    let signed_by_youth = patient.as_ref().is_some_and(|patient| {
        consent["performer"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["reference"].as_str() == Some(&format!("Patient/{patient}")))
    });
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
    let mut team_roles = Vec::new();
    for a in p["actor"].as_array().into_iter().flatten() {
        let identifier = &a["reference"]["identifier"];
        if a["reference"].get("reference").is_none() && identifier["system"] == CARE_TEAM_ROLE {
            let role = identifier["value"]
                .as_str()
                .ok_or_else(|| format!("{at}.actor.reference.identifier needs a value"))?;
            team_roles.push(role.to_string());
            continue;
        }
        let reference = a["reference"]["reference"].as_str().ok_or_else(|| {
            format!("{at}.actor needs a reference, or an identifier from {CARE_TEAM_ROLE}")
        })?;
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
    let data_period = p.get("dataPeriod").map(period_range);
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
        team_roles,
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
        data_period,
    })
}

/// Who asks, as far as consent rules can tell.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// References that stand for the requester: their fhirUser, organization, and the
    /// CareTeams they currently take part in.
    pub actors: HashSet<String>,
    /// By patient, the roles the requester currently holds in that youth's CareTeams.
    pub team_roles: HashMap<String, Vec<String>>,
    /// Purposes of use.
    pub purposes: Vec<String>,
    /// The action asked (`access` for reads and searches).
    pub action: &'static str,
    /// Now, ms since the epoch.
    pub now: i64,
}

impl Provision {
    /// The dimensions that do not depend on the resource: time, actor, action, purpose.
    fn matches_requester(&self, facts: &Facts, patient: &str) -> bool {
        let in_period = self
            .period
            .is_none_or(|(start, end)| start <= facts.now && facts.now < end);
        let actor = (self.actors.is_empty() && self.team_roles.is_empty())
            || self.actors.iter().any(|a| facts.actors.contains(a))
            || (!self.team_roles.is_empty()
                && facts
                    .team_roles
                    .get(patient)
                    .is_some_and(|held| self.team_roles.iter().any(|r| held.contains(r))));
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

    /// The dimensions about the resource: type, instance, codes, labels, clinical date.
    fn matches_resource(&self, subject: &Subject<'_>, labels: &[Label]) -> bool {
        let Subject {
            rtype,
            id,
            resource,
            clinical_date,
            ..
        } = *subject;
        // An undated resource is outside any data period a permit names, but inside one a
        // deny names: when in doubt, withhold.
        let dated = self
            .data_period
            .is_none_or(|(start, end)| match clinical_date {
                Some((low, high)) => start <= low && high <= end,
                None => self.kind == Some(Kind::Deny),
            });
        if !dated {
            return false;
        }
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

    /// Whether the provision is about the resource's content (not only its type).
    fn has_resource_conditions(&self) -> bool {
        !(self.classes.is_empty()
            && self.codes.is_empty()
            && self.data.is_empty()
            && self.data_period.is_none())
    }
}

/// What one decision is about: the resource, its patient, and who asks.
pub struct Subject<'a> {
    /// The patient whose consents govern the resource.
    pub patient: &'a str,
    /// Resource type.
    pub rtype: &'a str,
    /// Logical id.
    pub id: &'a str,
    /// The resource.
    pub resource: &'a Value,
    /// Its clinical date as `[low, high)` ms since the epoch, if it has one.
    pub clinical_date: Option<(i64, i64)>,
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
    /// A deny came from a Consent the youth signed, over data the youth consented to alone:
    /// break-the-glass crosses it only in an emergency.
    pub youth_denies_minor_consented: bool,
}

/// Decide one resource under its patient's own consents and the statewide rules.
pub fn decide(
    own: &[Compiled],
    statewide: &[Compiled],
    facts: &Facts,
    subject: &Subject<'_>,
) -> Decision {
    let patient = subject.patient;
    let labels = sensitive_labels(subject.resource);
    let matches =
        |p: &Provision| p.matches_requester(facts, patient) && p.matches_resource(subject, &labels);
    let minor_consented = labels.iter().any(|l| l.1 == MINOR_CONSENTED);
    let mut permits = Vec::new();
    let mut denies = Vec::new();
    let mut youth_denies_minor_consented = false;
    for c in own.iter().chain(statewide) {
        if !matches(&c.root) {
            continue;
        }
        let nested_deny = c
            .nested
            .iter()
            .find(|n| n.kind == Some(Kind::Deny) && matches(n));
        let nested_permit = c
            .nested
            .iter()
            .find(|n| n.kind == Some(Kind::Permit) && matches(n));
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
            Kind::Deny => {
                youth_denies_minor_consented |= c.signed_by_youth && minor_consented;
                denies.push(c.id.clone());
            }
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
            youth_denies_minor_consented,
        };
    }
    Decision {
        permit: !permits.is_empty(),
        by: permits,
        youth_denies_minor_consented: false,
    }
}

/// What a requester may see of one patient's resources of one type, for a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Resources whose sensitivity labels are all among these are released.
    pub labels: Vec<Label>,
    /// The Consents that release them.
    pub by: Vec<String>,
    /// The labels rule is the whole decision; otherwise finer provisions (codes, instances,
    /// exceptions, labels split across consents) are decided per resource after the query.
    pub exact: bool,
}

/// The release of one patient's resources of `rtype` to the requester: `None` for nothing.
pub fn type_release(
    own: &[Compiled],
    statewide: &[Compiled],
    facts: &Facts,
    patient: &str,
    rtype: &str,
) -> Option<Release> {
    let mut release = Release {
        labels: Vec::new(),
        by: Vec::new(),
        exact: true,
    };
    let mut labelled_permits = 0;
    for c in own.iter().chain(statewide) {
        let root_may = c.root.matches_requester(facts, patient)
            && (c.root.classes.is_empty() || c.root.classes.iter().any(|x| x == rtype));
        if !root_may {
            continue;
        }
        let exceptions: Vec<&Provision> = c
            .nested
            .iter()
            .filter(|n| n.matches_requester(facts, patient))
            .collect();
        let unconditional = |p: &Provision| !p.has_resource_conditions() && p.labels.is_empty();
        if c.root.kind == Some(Kind::Deny) {
            // A root deny with no resource conditions and no exception for this requester
            // shuts the type; a conditional one is decided per resource.
            if unconditional(&c.root) && exceptions.is_empty() {
                return None;
            }
            release.exact = false;
        }
        // A root naming codes, instances, dates or labels selects only the resources that
        // carry them.
        if !c.root.codes.is_empty()
            || !c.root.data.is_empty()
            || c.root.data_period.is_some()
            || !c.root.labels.is_empty()
        {
            release.exact = false;
        }
        if exceptions
            .iter()
            .any(|n| n.kind == Some(Kind::Deny) || n.has_resource_conditions())
        {
            release.exact = false;
        }
        let mut named = Vec::new();
        for p in std::iter::once(&c.root).chain(exceptions.iter().copied()) {
            if p.kind == Some(Kind::Permit) {
                for l in p.labels.iter().chain(&c.root.labels) {
                    // Only the youth's own consent releases what the youth consented to alone.
                    if (l.1 != MINOR_CONSENTED || c.signed_by_youth) && !named.contains(l) {
                        named.push(l.clone());
                    }
                }
                if !release.by.contains(&c.id) {
                    release.by.push(c.id.clone());
                }
            }
        }
        if !named.is_empty() {
            labelled_permits += 1;
            for l in named {
                if !release.labels.contains(&l) {
                    release.labels.push(l);
                }
            }
        }
    }
    if labelled_permits > 1 {
        // Each consent must name all of a resource's labels by itself.
        release.exact = false;
    }
    (!release.by.is_empty()).then_some(release)
}
