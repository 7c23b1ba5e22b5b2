//! The access layer: every resource that leaves the server, and every write, passes here.
//!
//! A request is made by a [`Requester`] (from its token). For each resource type and SMART
//! permission letter, its scopes give a [`Grant`]: everything, nothing, or some resources —
//! those in the token patient's compartment (`patient/` scopes) and those matching a granular
//! scope's query (`?category=…`). Searches AND the grant into their query (so paging and
//! totals stay right); single resources (reads, history entries, includes, write bodies) are
//! checked one by one. Consent rules (DESIGN.md section 5) will add to [`Access`], not bypass it.

pub mod consent;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use serde_json::Value;

use crate::auth::scopes::{Context, Letter, ScopeSet};
use crate::auth::tokens::AccessClaims;
use crate::error::{FhirError, FhirResult};
use crate::interactions::Ctx;
use crate::search::model::{IndexValue, ParamKind, QueryValue};
use crate::store::Reader;
use crate::store::query::{Criterion, Modifier, ParamRef, Query};

/// Who is asking, from their access token.
#[derive(Debug, Clone)]
pub struct Requester {
    /// The client.
    pub client_id: String,
    /// The token's subject (user or client).
    pub subject: String,
    /// Granted scopes.
    pub scopes: ScopeSet,
    /// Patient context (`patient/` scopes bind to it).
    pub patient: Option<String>,
    /// The user's resource, relative (`Practitioner/1`).
    pub fhir_user: Option<String>,
    /// `Organization/ID` the requester acts for.
    pub organization: Option<String>,
    /// The client's role.
    pub role: Option<String>,
    /// Purposes of use.
    pub purpose: Vec<String>,
    /// The token id.
    pub token_id: String,
}

impl Requester {
    /// The requester a verified token describes. `fhirUser` may be absolute (an external
    /// issuer's): an absolute URL on our base is made relative.
    pub fn from_claims(claims: &AccessClaims, base_url: &str) -> Requester {
        let relative = |r: &String| {
            r.strip_prefix(base_url)
                .map(|rest| rest.trim_start_matches('/').to_string())
                .unwrap_or_else(|| r.clone())
        };
        Requester {
            client_id: claims.client_id.clone(),
            subject: claims.sub.clone(),
            scopes: ScopeSet::parse(&claims.scope),
            patient: claims.patient.clone(),
            fhir_user: claims.fhir_user.as_ref().map(relative),
            organization: claims.organization.clone(),
            role: claims.role.clone(),
            purpose: claims.purpose.clone(),
            token_id: claims.jti.clone(),
        }
    }
}

/// One way a scope lets some resources through: all of its conditions hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Restriction {
    /// The resource must be in this patient's compartment.
    pub patient: Option<String>,
    /// The resource must match this search query (a granular scope).
    pub query: Vec<(String, String)>,
}

impl Restriction {
    /// The granular query as search criteria on `rtype`.
    fn query_criteria(&self, ctx: &Ctx, rtype: &str) -> FhirResult<Vec<Criterion>> {
        if self.query.is_empty() {
            return Ok(vec![]);
        }
        crate::search::parse::parse_conditional(&ctx.search, rtype, &self.query, &ctx.base_url)
    }
}

/// What the scopes allow for one resource type and permission letter.
#[derive(Debug, Clone, PartialEq)]
pub enum Grant {
    /// Every resource of the type.
    All,
    /// Resources meeting any one of the restrictions (none: nothing).
    Some(Vec<Restriction>),
}

impl Grant {
    /// Nothing at all is allowed.
    pub fn is_none(&self) -> bool {
        matches!(self, Grant::Some(r) if r.is_empty())
    }
}

/// The Patient compartment: for each type, the reference parameters that put a resource in a
/// patient's compartment (R4 CompartmentDefinition, widened; see the generating script).
static COMPARTMENT: LazyLock<HashMap<String, Vec<String>>> = LazyLock::new(|| {
    let doc: Value =
        serde_json::from_str(include_str!("../../conformance/patient-compartment.json"))
            .expect("conformance/patient-compartment.json is valid JSON");
    doc["params"]
        .as_object()
        .expect("params object")
        .iter()
        .map(|(t, list)| {
            let params = list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            (t.clone(), params)
        })
        .collect()
});

/// The access decisions for one request.
#[derive(Debug)]
pub struct Access {
    /// Who asks.
    pub requester: Arc<Requester>,
    /// The consents that apply, loaded on first need.
    consents: OnceLock<Arc<ConsentContext>>,
    /// What decided this request's disclosures, for its AuditEvent.
    trail: parking_lot::Mutex<Trail>,
    /// Some search criterion could not hold the whole decision: matches are decided one by one.
    per_match: AtomicBool,
}

/// What decided a request's disclosures.
#[derive(Debug, Default, Clone)]
pub struct Trail {
    /// The Consents (and authorship, as `author`) that released or withheld single resources.
    pub decided_by: Vec<String>,
    /// The releases searches were narrowed by: which Consents release each patient.
    releases: Vec<Arc<TypeAccess>>,
    /// A resource was released through a deny by break-the-glass.
    pub broke_glass: bool,
}

impl Trail {
    /// The Consents that decided what was disclosed about these patients.
    pub fn decided_for(&self, patients: &[String]) -> Vec<String> {
        let mut out = self.decided_by.clone();
        for release in &self.releases {
            for p in patients {
                for id in release.by_patient.get(p).into_iter().flatten() {
                    if !out.contains(id) {
                        out.push(id.clone());
                    }
                }
            }
        }
        out
    }
}

/// How consent narrows a requester's searches of one type: the criterion, whether it is the
/// whole decision, and which Consents release each patient.
#[derive(Debug)]
struct TypeAccess {
    criterion: Criterion,
    exact: bool,
    by_patient: HashMap<String, Vec<String>>,
}

/// The `meta.security` marker of what break-the-glass released (HL7 v3 ActReason `BTG`).
pub fn break_glass_label() -> Value {
    serde_json::json!({
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
        "code": "BTG",
        "display": "break the glass"
    })
}

/// How consent applies to a requester.
enum ConsentMode {
    /// The custodian sees everything (every access audited).
    Exempt,
    /// The youth sees all of their own record and nothing else.
    Youth(String),
    /// A provider treating an emergency (purpose `ETREAT` or `BTG`): reads through denies,
    /// flagged. Only an emergency (`ETREAT`) crosses a youth's deny of minor-consented data.
    BreakGlass { emergency: bool },
    /// Everyone else: the youth's privacy Consents decide.
    Consents,
}

/// The active privacy Consents, by patient, and the requester's facts; shared by a
/// requester's requests for a short while (see [`VIEW_TTL`]).
#[derive(Debug)]
struct ConsentContext {
    by_patient: Arc<BTreeMap<String, Vec<consent::Compiled>>>,
    statewide: Arc<Vec<consent::Compiled>>,
    /// The patients whose consents could release something to this requester.
    candidates: Vec<String>,
    facts: consent::Facts,
    /// Search narrowing per resource type, built on first need.
    types: parking_lot::Mutex<HashMap<String, Arc<TypeAccess>>>,
}

/// How long a requester's view of the consents is reused. Writes of a Consent, CareTeam or
/// PractitionerRole end it at once; this bounds only how late a period ending by the clock
/// (a consent or team membership that expires) takes effect.
const VIEW_TTL: std::time::Duration = std::time::Duration::from_secs(10);

impl ConsentContext {
    fn own(&self, patient: &str) -> &[consent::Compiled] {
        self.by_patient.get(patient).map_or(&[][..], Vec::as_slice)
    }
}

/// Every active privacy Consent, compiled and grouped by patient, and every CareTeam, as of the
/// newest write to a Consent, CareTeam or PractitionerRole (`key`).
#[derive(Debug)]
struct CompiledConsents {
    key: i64,
    by_patient: Arc<BTreeMap<String, Vec<consent::Compiled>>>,
    /// Patients whose consents name an actor, by actor; and those with a provision for anyone.
    by_actor: HashMap<String, Vec<String>>,
    for_anyone: Vec<String>,
    teams: Vec<Team>,
    /// Teams by the references of their participants (`member` and `onBehalfOf`).
    teams_by_participant: HashMap<String, Vec<usize>>,
    /// The PractitionerRoles consents name, by the Practitioner who holds them.
    roles_by_practitioner: HashMap<String, Vec<HeldRole>>,
    /// Each requester's view, while fresh, by [`requester_key`].
    views: parking_lot::Mutex<HashMap<String, (std::time::Instant, Arc<ConsentContext>)>>,
}

/// What decides a requester's view of the consents.
fn requester_key(r: &Requester) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        r.client_id,
        r.fhir_user.as_deref().unwrap_or(""),
        r.organization.as_deref().unwrap_or(""),
        r.role.as_deref().unwrap_or(""),
        r.purpose.join(",")
    )
}

/// A PractitionerRole a consent names as actor: the requester acts in it while its
/// practitioner is the requester's fhirUser and it is active now.
#[derive(Debug)]
struct HeldRole {
    reference: String,
    organization: Option<String>,
    period: (i64, i64),
}

/// A CareTeam as consent needs it.
#[derive(Debug)]
struct Team {
    reference: String,
    patient: Option<String>,
    in_force: bool,
    period: (i64, i64),
    participants: Vec<Participant>,
}

#[derive(Debug)]
struct Participant {
    member: Option<String>,
    on_behalf_of: Option<String>,
    roles: Vec<String>,
    period: (i64, i64),
}

/// The compiled Consents, shared by requests until a Consent or CareTeam is written (checked
/// per request against the database, so it holds across processes on one database too), and
/// the statewide rules loaded at start-up.
#[derive(Debug)]
pub struct ConsentCache {
    current: parking_lot::Mutex<Option<Arc<CompiledConsents>>>,
    building: parking_lot::Mutex<()>,
    statewide: Arc<Vec<consent::Compiled>>,
    /// See [`DEFAULT_INLINE_PATIENTS`].
    inline_patients: usize,
}

/// The most patients a search's consent criterion names one by one. A requester whom many
/// youth's consents name (a plan, a large clinic) would otherwise send thousands of ids with
/// every query; beyond this the query joins the patients' active privacy Consents instead (a
/// superset, which every match's own decision then narrows).
pub const DEFAULT_INLINE_PATIENTS: usize = 500;

impl Default for ConsentCache {
    fn default() -> Self {
        ConsentCache {
            current: Default::default(),
            building: Default::default(),
            statewide: Default::default(),
            inline_patients: DEFAULT_INLINE_PATIENTS,
        }
    }
}

/// The statewide rules kept in `conformance/statewide/`: privacy Consents without a patient.
static STATEWIDE: include_dir::Dir<'_> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/conformance/statewide");

impl ConsentCache {
    /// A cache evaluating the statewide rules of `conformance/statewide/` with every youth's own.
    pub fn with_statewide_rules() -> FhirResult<ConsentCache> {
        let mut rules = Vec::new();
        for file in STATEWIDE.files() {
            let name = file.path().display();
            let value: Value = serde_json::from_slice(file.contents()).map_err(|e| {
                FhirError::Internal(format!("statewide rule {name} is not JSON: {e}"))
            })?;
            rules.push(consent::compile_statewide(&value).map_err(|why| {
                FhirError::Internal(format!("statewide rule {name} cannot be enforced: {why}"))
            })?);
        }
        rules.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(ConsentCache {
            statewide: Arc::new(rules),
            ..Default::default()
        })
    }

    /// The same cache naming at most `n` patients inline (see [`DEFAULT_INLINE_PATIENTS`]).
    pub fn with_inline_patients(mut self, n: usize) -> Self {
        self.inline_patients = n;
        self
    }

    fn get(&self, ctx: &Ctx, reader: &mut dyn Reader) -> FhirResult<Arc<CompiledConsents>> {
        let key = reader.last_change(&["Consent", "CareTeam", "PractitionerRole"])?;
        if let Some(c) = self.current.lock().as_ref()
            && c.key == key
        {
            return Ok(c.clone());
        }
        // One compilation at a time: the others wait for it rather than repeat it.
        let _building = self.building.lock();
        if let Some(c) = self.current.lock().as_ref()
            && c.key == key
        {
            return Ok(c.clone());
        }
        let compiled = Arc::new(compile_all(ctx, reader, key)?);
        *self.current.lock() = Some(compiled.clone());
        Ok(compiled)
    }
}

fn compile_all(ctx: &Ctx, reader: &mut dyn Reader, key: i64) -> FhirResult<CompiledConsents> {
    let criteria = active_privacy_consent(ctx)?;
    let page = reader.search(&Query {
        rtype: "Consent".into(),
        criteria,
        sort: vec![],
        count: MAX_CONSENTS,
        cursor: None,
        with_total: false,
    })?;
    let mut by_patient: BTreeMap<String, Vec<consent::Compiled>> = BTreeMap::new();
    for m in page.matches {
        let Some(body) = m.version.body.as_deref() else {
            continue;
        };
        let value: Value = serde_json::from_str(body).map_err(FhirError::internal)?;
        // Unenforceable Consents are refused on write; one stored before that rule is skipped.
        if let Ok(Some(c)) = consent::compile(&value)
            && let Some(patient) = c.patient.clone()
        {
            by_patient.entry(patient).or_default().push(c);
        }
    }
    let mut by_actor: HashMap<String, Vec<String>> = HashMap::new();
    let mut for_anyone = Vec::new();
    for (patient, consents) in &by_patient {
        for p in consents
            .iter()
            .flat_map(|c| std::iter::once(&c.root).chain(&c.nested))
        {
            if p.actors.is_empty() && p.team_roles.is_empty() {
                for_anyone.push(patient.clone());
            }
            for a in &p.actors {
                by_actor.entry(a.clone()).or_default().push(patient.clone());
            }
        }
    }
    for list in by_actor.values_mut() {
        list.dedup();
    }
    for_anyone.dedup();
    let (teams, teams_by_participant) = compile_teams(reader)?;
    let mut roles_by_practitioner: HashMap<String, Vec<HeldRole>> = HashMap::new();
    for reference in by_actor.keys() {
        let Some(id) = reference.strip_prefix("PractitionerRole/") else {
            continue;
        };
        let Some(body) = reader.current("PractitionerRole", id)?.and_then(|v| v.body) else {
            continue;
        };
        let role: Value = serde_json::from_str(&body).map_err(FhirError::internal)?;
        if role["active"] == false {
            continue;
        }
        if let Some(practitioner) = role["practitioner"]["reference"].as_str() {
            roles_by_practitioner
                .entry(practitioner.to_string())
                .or_default()
                .push(HeldRole {
                    reference: reference.clone(),
                    organization: role["organization"]["reference"]
                        .as_str()
                        .map(str::to_string),
                    period: consent::period_range(&role["period"]),
                });
        }
    }
    Ok(CompiledConsents {
        key,
        by_patient: Arc::new(by_patient),
        by_actor,
        for_anyone,
        teams,
        teams_by_participant,
        roles_by_practitioner,
        views: Default::default(),
    })
}

/// Every CareTeam, compiled, and an index by participant.
#[allow(clippy::type_complexity)]
fn compile_teams(reader: &mut dyn Reader) -> FhirResult<(Vec<Team>, HashMap<String, Vec<usize>>)> {
    let page = reader.search(&Query {
        rtype: "CareTeam".into(),
        criteria: vec![],
        sort: vec![],
        count: MAX_CONSENTS,
        cursor: None,
        with_total: false,
    })?;
    let mut teams = Vec::with_capacity(page.matches.len());
    let mut index: HashMap<String, Vec<usize>> = HashMap::new();
    for m in page.matches {
        let Some(body) = m.version.body.as_deref() else {
            continue;
        };
        let team: Value = serde_json::from_str(body).map_err(FhirError::internal)?;
        let reference = |v: &Value| v["reference"].as_str().map(str::to_string);
        let participants: Vec<Participant> = team["participant"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| Participant {
                member: reference(&p["member"]),
                on_behalf_of: reference(&p["onBehalfOf"]),
                roles: p["role"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|cc| cc["coding"].as_array().into_iter().flatten())
                    .filter(|c| c["system"] == consent::CARE_TEAM_ROLE)
                    .filter_map(|c| c["code"].as_str().map(str::to_string))
                    .collect(),
                period: consent::period_range(&p["period"]),
            })
            .collect();
        let at = teams.len();
        for p in &participants {
            for r in [&p.member, &p.on_behalf_of].into_iter().flatten() {
                let list = index.entry(r.clone()).or_default();
                if list.last() != Some(&at) {
                    list.push(at);
                }
            }
        }
        teams.push(Team {
            reference: format!("CareTeam/{}", m.version.id),
            patient: team["subject"]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Patient/"))
                .map(str::to_string),
            in_force: !matches!(
                team["status"].as_str(),
                Some("inactive" | "entered-in-error")
            ),
            period: consent::period_range(&team["period"]),
            participants,
        });
    }
    Ok((teams, index))
}

impl ConsentContext {
    fn load(ctx: &Ctx, reader: &mut dyn Reader, r: &Requester) -> FhirResult<Arc<ConsentContext>> {
        let compiled = ctx.consents.get(ctx, reader)?;
        let key = requester_key(r);
        // Made under the lock, so requests arriving as a view expires wait for one new view.
        let mut views = compiled.views.lock();
        if let Some((made, view)) = views.get(&key)
            && made.elapsed() < VIEW_TTL
        {
            return Ok(view.clone());
        }
        let view = Arc::new(Self::make(ctx, &compiled, r));
        views.insert(key, (std::time::Instant::now(), view.clone()));
        Ok(view)
    }

    fn make(ctx: &Ctx, compiled: &CompiledConsents, r: &Requester) -> ConsentContext {
        let now = chrono::Utc::now().timestamp_millis();
        let mut actors: HashSet<String> = [&r.fhir_user, &r.organization]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        // The PractitionerRoles the user holds now (for the organization they act for, when
        // both name one).
        if let Some(user) = &r.fhir_user {
            for held in compiled
                .roles_by_practitioner
                .get(user)
                .into_iter()
                .flatten()
            {
                let (start, end) = held.period;
                let same_org = match (&held.organization, &r.organization) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                if same_org && start <= now && now < end {
                    actors.insert(held.reference.clone());
                }
            }
        }
        // Current participation, evaluated now: access follows the youth across placements.
        let mut team_roles: HashMap<String, Vec<String>> = HashMap::new();
        let covers = |(start, end): (i64, i64)| start <= now && now < end;
        let mut joined = Vec::new();
        for a in &actors {
            for &i in compiled.teams_by_participant.get(a).into_iter().flatten() {
                let team = &compiled.teams[i];
                if !team.in_force || !covers(team.period) {
                    continue;
                }
                for p in &team.participants {
                    let named = |r: &Option<String>| r.as_ref().is_some_and(|r| actors.contains(r));
                    if (named(&p.member) || named(&p.on_behalf_of)) && covers(p.period) {
                        joined.push(team.reference.clone());
                        if let Some(patient) = &team.patient {
                            let held = team_roles.entry(patient.clone()).or_default();
                            held.extend(p.roles.iter().cloned());
                        }
                    }
                }
            }
        }
        actors.extend(joined);
        let mut candidates: Vec<String> = compiled.for_anyone.clone();
        for a in &actors {
            candidates.extend(compiled.by_actor.get(a).into_iter().flatten().cloned());
        }
        // Rules naming actors by CareTeam role reach the youth whose teams the requester is in.
        candidates.extend(team_roles.keys().cloned());
        candidates.sort();
        candidates.dedup();
        ConsentContext {
            by_patient: compiled.by_patient.clone(),
            statewide: ctx.consents.statewide.clone(),
            candidates,
            facts: consent::Facts {
                actors,
                team_roles,
                purposes: r.purpose.clone(),
                action: "access",
                now,
            },
            types: Default::default(),
        }
    }
}

/// The client id the server's own writes are made under (no token carries it: a registered
/// client of that name still has a token id, which the server's access has not).
const SERVER_CLIENT: &str = "foster-passport";

/// How many active privacy Consents one decision reads at most.
const MAX_CONSENTS: usize = 100_000;

/// The patients a resource is about: itself for a Patient, else the Patient references of its
/// compartment parameters.
pub fn patients_of(ctx: &Ctx, rtype: &str, id: &str, body: &Value) -> Vec<String> {
    if rtype == "Patient" {
        return vec![id.to_string()];
    }
    let mut out: Vec<String> = Vec::new();
    for i in referenced_patients(ctx, rtype, body) {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// The patient compartment a resource is stored under ([`crate::store::NewVersion::compartment`]):
/// its first patient, `""` when it is about none.
pub fn compartment_key(ctx: &Ctx, rtype: &str, id: &str, body: &Value) -> String {
    if rtype == "Patient" {
        return id.to_string();
    }
    referenced_patients(ctx, rtype, body)
        .next()
        .unwrap_or_default()
}

/// The reference parameters that put a resource of `rtype` in a Patient's compartment.
fn compartment_params<'a>(
    ctx: &'a Ctx,
    rtype: &'a str,
) -> impl Iterator<Item = &'a Arc<crate::search::ParamDef>> + 'a {
    COMPARTMENT
        .get(rtype)
        .into_iter()
        .flatten()
        .filter_map(move |code| ctx.search.param(rtype, code))
        .filter(|def| def.kind == ParamKind::Reference)
}

/// The ids of the Patients a body references through its compartment parameters.
fn referenced_patients<'a>(
    ctx: &'a Ctx,
    rtype: &'a str,
    body: &'a Value,
) -> impl Iterator<Item = String> + 'a {
    compartment_params(ctx, rtype)
        .flat_map(move |def| def.values(body))
        .filter_map(|v| match v {
            IndexValue::Reference {
                target_type: Some(t),
                target_id: Some(i),
                ..
            } if t == "Patient" => Some(i),
            _ => None,
        })
}

impl Access {
    /// The server itself (loading the demo data set): every permission.
    pub fn server() -> Access {
        Access::new(Requester {
            client_id: SERVER_CLIENT.into(),
            subject: SERVER_CLIENT.into(),
            scopes: ScopeSet::parse("system/*.cruds"),
            patient: None,
            fhir_user: None,
            organization: None,
            role: Some("custodian".into()),
            purpose: vec![],
            token_id: String::new(),
        })
    }

    /// The server itself (demo data, the audit writer), not a client.
    pub fn is_server(&self) -> bool {
        self.requester.client_id == SERVER_CLIENT && self.requester.token_id.is_empty()
    }

    /// No token (the CapabilityStatement): no permission at all.
    pub fn anonymous() -> Access {
        Access::new(Requester {
            client_id: String::new(),
            subject: String::new(),
            scopes: ScopeSet::default(),
            patient: None,
            fhir_user: None,
            organization: None,
            role: None,
            purpose: vec![],
            token_id: String::new(),
        })
    }

    /// Access for a requester.
    pub fn new(requester: impl Into<Arc<Requester>>) -> Access {
        Access {
            requester: requester.into(),
            consents: OnceLock::new(),
            trail: Default::default(),
            per_match: AtomicBool::new(false),
        }
    }

    /// What the scopes grant for `letter` on `rtype`. A `patient/` scope without a patient in
    /// context, or a `user/` scope without a fhirUser, grants nothing: never widened.
    pub fn grant(&self, rtype: &str, letter: Letter) -> Grant {
        let r = &self.requester;
        let mut restrictions = Vec::new();
        for scope in r.scopes.matching(rtype, letter) {
            let patient = match scope.context {
                Context::Patient => match &r.patient {
                    Some(p) => Some(p.clone()),
                    None => continue,
                },
                Context::User if r.fhir_user.is_none() => continue,
                Context::User | Context::System => None,
            };
            // Granular scopes restrict reads and searches; they never grant writes, which a
            // query cannot check before the resource exists.
            if scope.is_granular() && !matches!(letter, Letter::R | Letter::S) {
                continue;
            }
            if patient.is_none() && !scope.is_granular() {
                return Grant::All;
            }
            let restriction = Restriction {
                patient,
                query: scope.query.clone(),
            };
            if !restrictions.contains(&restriction) {
                restrictions.push(restriction);
            }
        }
        Grant::Some(restrictions)
    }

    /// The grant for `letter` on `rtype`, or 403 when the scopes allow none of it.
    pub fn require(&self, rtype: &str, letter: Letter) -> FhirResult<Grant> {
        let grant = self.grant(rtype, letter);
        if grant.is_none() {
            return Err(self.forbidden(Some(rtype), letter));
        }
        Ok(grant)
    }

    /// System-level interactions (system history) need a `*` scope with the letter.
    pub fn require_all_types(&self, letter: Letter) -> FhirResult<Grant> {
        let scopes = &self.requester.scopes;
        let grant = self.grant("*", letter);
        if !scopes.grants_all_types(letter) || grant.is_none() {
            return Err(self.forbidden(None, letter));
        }
        Ok(grant)
    }

    fn forbidden(&self, rtype: Option<&str>, letter: Letter) -> FhirError {
        let what = match letter {
            Letter::C => "create",
            Letter::R => "read",
            Letter::U => "update",
            Letter::D => "delete",
            Letter::S => "search",
        };
        FhirError::Forbidden(format!(
            "the granted scopes do not allow to {what} {}",
            rtype.map_or_else(
                || "every resource type".to_string(),
                |t| format!("{t} resources")
            )
        ))
    }

    /// The criteria a search of `rtype` must AND in: the scopes' grant, then consent.
    pub fn criterion(
        &self,
        ctx: &Ctx,
        reader: &mut dyn Reader,
        rtype: &str,
        grant: &Grant,
    ) -> FhirResult<Vec<Criterion>> {
        let mut out: Vec<Criterion> = self
            .scope_criterion(ctx, rtype, grant)?
            .into_iter()
            .collect();
        out.extend(self.consent_criterion(ctx, reader, rtype)?);
        Ok(out)
    }

    /// Chains and `_has` look only at what the requester may see: each nested query gets the
    /// scope and consent criteria of the type it searches.
    pub fn restrict_nested(
        &self,
        ctx: &Ctx,
        reader: &mut dyn Reader,
        criteria: &mut [Criterion],
    ) -> FhirResult<()> {
        for c in criteria {
            let (rtype, inner) = match c {
                Criterion::Chain {
                    target_type, inner, ..
                } => (target_type.clone(), inner),
                Criterion::Has {
                    source_type, inner, ..
                } => (source_type.clone(), inner),
                Criterion::AnyOf(groups) => {
                    for g in groups {
                        self.restrict_nested(ctx, reader, g)?;
                    }
                    continue;
                }
                _ => continue,
            };
            self.restrict_nested(ctx, reader, inner)?;
            let grant = self.grant(&rtype, Letter::S);
            if grant.is_none() {
                // An empty OR matches nothing.
                inner.push(Criterion::AnyOf(vec![]));
            } else {
                let extra = self.criterion(ctx, reader, &rtype, &grant)?;
                inner.extend(extra);
            }
        }
        Ok(())
    }

    fn scope_criterion(
        &self,
        ctx: &Ctx,
        rtype: &str,
        grant: &Grant,
    ) -> FhirResult<Option<Criterion>> {
        let Grant::Some(restrictions) = grant else {
            return Ok(None);
        };
        let mut groups = Vec::with_capacity(restrictions.len());
        for r in restrictions {
            let mut group = Vec::new();
            if let Some(patient) = &r.patient {
                group.push(compartment_criterion(ctx, rtype, patient));
            }
            group.extend(r.query_criteria(ctx, rtype)?);
            groups.push(group);
        }
        Ok(Some(Criterion::AnyOf(groups)))
    }

    /// Whether the requester may see this resource under `grant`: the scopes cover it and
    /// consent releases it.
    pub fn covers(
        &self,
        ctx: &Ctx,
        reader: &mut dyn Reader,
        grant: &Grant,
        rtype: &str,
        id: &str,
        body: &Value,
    ) -> FhirResult<bool> {
        Ok(self.scope_covers(ctx, reader, grant, rtype, id, body)?
            && self.consent_permits(ctx, reader, "access", rtype, id, body)?)
    }

    /// Whether `grant` covers this resource. Compartment membership is read from the body;
    /// a granular query is run against the stored current version.
    fn scope_covers(
        &self,
        ctx: &Ctx,
        reader: &mut dyn Reader,
        grant: &Grant,
        rtype: &str,
        id: &str,
        body: &Value,
    ) -> FhirResult<bool> {
        let Grant::Some(restrictions) = grant else {
            return Ok(true);
        };
        for r in restrictions {
            if let Some(patient) = &r.patient
                && !in_compartment(ctx, rtype, id, body, patient)
            {
                continue;
            }
            if !r.query.is_empty() {
                let mut criteria = r.query_criteria(ctx, rtype)?;
                criteria.push(Criterion::Ids(vec![id.to_string()]));
                let page = reader.search(&Query {
                    rtype: rtype.to_string(),
                    criteria,
                    sort: vec![],
                    count: 1,
                    cursor: None,
                    with_total: false,
                })?;
                if page.matches.is_empty() {
                    continue;
                }
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// `rtype/id` is the requester's own fhirUser resource.
    pub fn is_own_user(&self, rtype: &str, id: &str) -> bool {
        self.requester.fhir_user.as_deref().is_some_and(|u| {
            u.split_once('/')
                .is_some_and(|(t, i)| t == rtype && i == id)
        })
    }

    /// Check a write: the scopes grant `letter` on the type and cover the resource as it is
    /// (`body`) — for updates, both the stored and the new version must be covered.
    pub fn check_write(
        &self,
        ctx: &Ctx,
        reader: &mut dyn Reader,
        letter: Letter,
        rtype: &str,
        id: &str,
        body: &Value,
    ) -> FhirResult<()> {
        let grant = self.require(rtype, letter)?;
        if !self.scope_covers(ctx, reader, &grant, rtype, id, body)? {
            return Err(FhirError::Forbidden(format!(
                "the granted scopes do not cover {rtype}/{id}: it is outside the patient's \
                 compartment or the scope's query"
            )));
        }
        if !self.consent_permits(ctx, reader, "correct", rtype, id, body)? {
            return Err(FhirError::Forbidden(format!(
                "no consent lets this requester write {rtype} resources of this patient"
            )));
        }
        Ok(())
    }

    /// Search matches must each pass [`Access::consent_permits`]: the consent criterion
    /// narrowed by patient, label and authorship, but finer provisions (codes, instances,
    /// exceptions) remain to be decided per resource. Asked after the criterion is built.
    pub fn checks_each_match(&self) -> bool {
        match self.consent_mode() {
            ConsentMode::BreakGlass { .. } => true,
            ConsentMode::Consents => self.per_match.load(Ordering::Relaxed),
            ConsentMode::Exempt | ConsentMode::Youth(_) => false,
        }
    }

    /// Consent does not limit what this requester sees of `patient`'s record: the custodian,
    /// or the youth herself.
    pub fn sees_whole_record(&self, patient: &str) -> bool {
        match self.consent_mode() {
            ConsentMode::Exempt => true,
            ConsentMode::Youth(youth) => youth == patient,
            ConsentMode::BreakGlass { .. } | ConsentMode::Consents => false,
        }
    }

    /// Consent does not restrict this requester (the custodian).
    pub fn consent_exempt(&self) -> bool {
        matches!(self.consent_mode(), ConsentMode::Exempt)
    }

    /// What decided this request's disclosures so far.
    pub fn trail(&self) -> Trail {
        self.trail.lock().clone()
    }

    fn note(&self, by: &[String]) {
        let mut trail = self.trail.lock();
        for id in by {
            if !trail.decided_by.contains(id) {
                trail.decided_by.push(id.clone());
            }
        }
    }

    /// How consent applies to this requester.
    fn consent_mode(&self) -> ConsentMode {
        let r = &self.requester;
        if r.role.as_deref() == Some("custodian") {
            return ConsentMode::Exempt;
        }
        if let Some(youth) = r
            .fhir_user
            .as_deref()
            .and_then(|u| u.strip_prefix("Patient/"))
        {
            return ConsentMode::Youth(youth.to_string());
        }
        let states = |code: &str| r.purpose.iter().any(|p| p == code);
        if r.role.as_deref() == Some("provider") && (states("ETREAT") || states("BTG")) {
            return ConsentMode::BreakGlass {
                emergency: states("ETREAT"),
            };
        }
        ConsentMode::Consents
    }

    /// The active privacy Consents by patient and what the requester is, loaded once per request.
    fn consents(&self, ctx: &Ctx, reader: &mut dyn Reader) -> FhirResult<Arc<ConsentContext>> {
        if let Some(loaded) = self.consents.get() {
            return Ok(loaded.clone());
        }
        let loaded = ConsentContext::load(ctx, reader, &self.requester)?;
        Ok(self.consents.get_or_init(|| loaded).clone())
    }

    /// What the server records as `meta.source` of what this requester writes: its
    /// organization (else its user) as an absolute URL, so it may read what it wrote. `None` for
    /// the custodian and the server, whose writes keep the source they carry.
    pub fn author_source(&self, ctx: &Ctx) -> Option<String> {
        if self.consent_exempt() || self.is_server() {
            return None;
        }
        let r = &self.requester;
        let who = r.organization.as_ref().or(r.fhir_user.as_ref())?;
        Some(format!("{}/{who}", ctx.base_url))
    }

    /// The requester wrote this resource (rule 3: an author may read what it wrote).
    fn is_author(&self, ctx: &Ctx, body: &Value) -> bool {
        body["meta"]["source"]
            .as_str()
            .is_some_and(|s| self.author_source(ctx).as_deref() == Some(s))
    }

    /// The consent criterion for searches of `rtype` (`None`: consent does not restrict).
    fn consent_criterion(
        &self,
        ctx: &Ctx,
        reader: &mut dyn Reader,
        rtype: &str,
    ) -> FhirResult<Option<Criterion>> {
        match self.consent_mode() {
            ConsentMode::Exempt | ConsentMode::BreakGlass { .. } => Ok(None),
            ConsentMode::Youth(youth) => Ok(Some(compartment_criterion(ctx, rtype, &youth))),
            ConsentMode::Consents => {
                if rtype != "Patient" && !COMPARTMENT.contains_key(rtype) {
                    return Ok(None);
                }
                let loaded = self.consents(ctx, reader)?;
                // Built under the lock: concurrent searches wait for one build, not each make it.
                let access = {
                    let mut types = loaded.types.lock();
                    match types.get(rtype) {
                        Some(a) => a.clone(),
                        None => {
                            let built = Arc::new(self.type_access(ctx, &loaded, rtype));
                            types.insert(rtype.to_string(), built.clone());
                            built
                        }
                    }
                };
                if !access.exact {
                    self.per_match.store(true, Ordering::Relaxed);
                }
                let criterion = access.criterion.clone();
                self.trail.lock().releases.push(access);
                Ok(Some(criterion))
            }
        }
    }

    /// Build how consent narrows this requester's searches of `rtype`.
    fn type_access(&self, ctx: &Ctx, loaded: &ConsentContext, rtype: &str) -> TypeAccess {
        // Patients released alike share one group: the query names each patient once.
        let mut releases: Vec<(Vec<consent::Label>, Vec<String>)> = Vec::new();
        let mut by_patient = HashMap::new();
        let mut exact = true;
        for patient in &loaded.candidates {
            let Some(release) = consent::type_release(
                loaded.own(patient),
                &loaded.statewide,
                &loaded.facts,
                patient,
                rtype,
            ) else {
                continue;
            };
            exact &= release.exact;
            by_patient.insert(patient.clone(), release.by);
            let mut labels = release.labels;
            labels.sort();
            match releases.iter_mut().find(|(l, _)| *l == labels) {
                Some((_, patients)) => patients.push(patient.clone()),
                None => releases.push((labels, vec![patient.clone()])),
            }
        }
        let mut groups = Vec::with_capacity(releases.len() + 1);
        for (labels, patients) in releases {
            let patients_criterion = if patients.len() > ctx.consents.inline_patients {
                exact = false;
                // Statewide rules reach the youth of the requester's care teams whether or not
                // they signed a consent of their own: those few stay named.
                let on_teams: Vec<String> = patients
                    .iter()
                    .filter(|p| loaded.facts.team_roles.contains_key(*p))
                    .cloned()
                    .collect();
                let mut either = vec![vec![consenting_patients_criterion(ctx, rtype)]];
                if !on_teams.is_empty() {
                    either.push(vec![compartment_criterion_of(ctx, rtype, &on_teams)]);
                }
                Criterion::AnyOf(either)
            } else {
                compartment_criterion_of(ctx, rtype, &patients)
            };
            let mut group = vec![patients_criterion];
            let blocked: Vec<QueryValue> = consent::all_sensitive_labels()
                .into_iter()
                .filter(|l| !labels.contains(l))
                .map(|(system, code)| QueryValue::Token {
                    system: Some(Some(system)),
                    code: Some(code),
                })
                .collect();
            if !blocked.is_empty() {
                group.push(Criterion::Match {
                    param: ParamRef {
                        code: "_security".into(),
                        kind: ParamKind::Token,
                    },
                    modifier: Modifier::Not,
                    values: blocked,
                });
            }
            groups.push(group);
        }
        if let Some(source) = self.author_source(ctx) {
            groups.push(vec![Criterion::Match {
                param: ParamRef {
                    code: "_source".into(),
                    kind: ParamKind::Uri,
                },
                modifier: Modifier::None,
                values: vec![QueryValue::Uri(source)],
            }]);
        }
        TypeAccess {
            criterion: Criterion::Policy(vec![Criterion::AnyOf(groups)]),
            exact,
            by_patient,
        }
    }

    /// Whether consent releases this resource to the requester for `action`.
    pub fn consent_permits(
        &self,
        ctx: &Ctx,
        reader: &mut dyn Reader,
        action: &'static str,
        rtype: &str,
        id: &str,
        body: &Value,
    ) -> FhirResult<bool> {
        let emergency = match self.consent_mode() {
            ConsentMode::Exempt => return Ok(true),
            ConsentMode::Youth(youth) => return Ok(in_compartment(ctx, rtype, id, body, &youth)),
            ConsentMode::BreakGlass { emergency } if action == "access" => Some(emergency),
            ConsentMode::BreakGlass { .. } | ConsentMode::Consents => None,
        };
        let patients = patients_of(ctx, rtype, id, body);
        if patients.is_empty() {
            // Not about a patient (an Organization, a Practitioner): consent does not
            // govern it. Patient data with no patient found is held back.
            return Ok(!COMPARTMENT.contains_key(rtype));
        }
        if self.is_author(ctx, body) {
            self.note(&["author".to_string()]);
            return Ok(true);
        }
        let loaded = self.consents(ctx, reader)?;
        let corrected;
        let facts = if action == loaded.facts.action {
            &loaded.facts
        } else {
            corrected = consent::Facts {
                action,
                ..loaded.facts.clone()
            };
            &corrected
        };
        // The clinical date matters only to a provision with a dataPeriod.
        let dated = patients.iter().any(|p| {
            loaded
                .own(p)
                .iter()
                .chain(loaded.statewide.iter())
                .any(consent::Compiled::names_data_period)
        });
        let clinical_date = if dated {
            clinical_date(ctx, rtype, body)
        } else {
            None
        };
        let mut permit = true;
        let mut glass = false;
        for patient in &patients {
            let decision = consent::decide(
                loaded.own(patient),
                &loaded.statewide,
                facts,
                &consent::Subject {
                    patient,
                    rtype,
                    id,
                    resource: body,
                    clinical_date,
                },
            );
            self.note(&decision.by);
            if decision.permit {
                continue;
            }
            match emergency {
                // Break the glass: through any deny but the youth's own over what they
                // consented to alone, which only an emergency crosses.
                Some(emergency) if emergency || !decision.youth_denies_minor_consented => {
                    glass = true;
                }
                _ => permit = false,
            }
        }
        if permit && glass {
            self.trail.lock().broke_glass = true;
        }
        Ok(permit)
    }
}

/// Search parameters that carry a resource's clinical date, in order of preference.
const CLINICAL_DATE_PARAMS: &[&str] = &[
    "date",
    "onset-date",
    "recorded-date",
    "authoredon",
    "authored",
    "occurrence",
    "period",
];

/// The clinical date of a resource (`Consent.provision.dataPeriod` is about it): the span of
/// the first of [`CLINICAL_DATE_PARAMS`] its type has and it carries.
fn clinical_date(ctx: &Ctx, rtype: &str, body: &Value) -> Option<(i64, i64)> {
    CLINICAL_DATE_PARAMS
        .iter()
        .filter_map(|code| ctx.search.param(rtype, code))
        .filter(|def| def.kind == ParamKind::Date)
        .find_map(|def| {
            def.values(body)
                .into_iter()
                .fold(None, |span: Option<(i64, i64)>, v| match v {
                    IndexValue::Date { low, high } => Some(match span {
                        None => (low, high),
                        Some((l, h)) => (l.min(low), h.max(high)),
                    }),
                    _ => span,
                })
        })
}

/// The resource types in the Patient compartment (as we widen it), sorted.
pub fn compartment_types() -> Vec<&'static str> {
    let mut types: Vec<&'static str> = COMPARTMENT.keys().map(String::as_str).collect();
    types.sort_unstable();
    types
}

/// Resources of `rtype` in `patient`'s compartment, as a search criterion (matches nothing
/// for types outside the compartment).
pub fn compartment_criterion(ctx: &Ctx, rtype: &str, patient: &str) -> Criterion {
    compartment_criterion_of(ctx, rtype, &[patient.to_string()])
}

/// Resources of `rtype` in any of these patients' compartments.
fn compartment_criterion_of(ctx: &Ctx, rtype: &str, patients: &[String]) -> Criterion {
    let mut groups = Vec::new();
    if rtype == "Patient" {
        groups.push(vec![Criterion::Ids(patients.to_vec())]);
    }
    for def in compartment_params(ctx, rtype) {
        groups.push(vec![Criterion::Match {
            param: ParamRef {
                code: def.code.clone(),
                kind: ParamKind::Reference,
            },
            modifier: Modifier::None,
            values: patients
                .iter()
                .map(|p| QueryValue::Reference {
                    target_type: Some("Patient".into()),
                    target_id: Some(p.clone()),
                    url: format!("Patient/{p}"),
                })
                .collect(),
        }]);
    }
    Criterion::AnyOf(groups)
}

/// Resources of `rtype` in the compartment of any patient with an active privacy Consent: a
/// superset of every consent-released patient list, for lists too long to name.
fn consenting_patients_criterion(ctx: &Ctx, rtype: &str) -> Criterion {
    let has_consent = Criterion::Has {
        source_type: "Consent".into(),
        param: ParamRef {
            code: "patient".into(),
            kind: ParamKind::Reference,
        },
        // Without its criteria (they always parse) the join is a wider superset, still safe.
        inner: active_privacy_consent(ctx).unwrap_or_default(),
    };
    if rtype == "Patient" {
        return has_consent;
    }
    Criterion::AnyOf(
        compartment_params(ctx, rtype)
            .map(|def| {
                vec![Criterion::Chain {
                    param: ParamRef {
                        code: def.code.clone(),
                        kind: ParamKind::Reference,
                    },
                    target_type: "Patient".into(),
                    inner: vec![has_consent.clone()],
                }]
            })
            .collect(),
    )
}

/// `Consent?status=active&scope=patient-privacy`: the Consents the engine compiles.
fn active_privacy_consent(ctx: &Ctx) -> FhirResult<Vec<Criterion>> {
    crate::search::parse::parse_conditional(
        &ctx.search,
        "Consent",
        &[
            ("status".into(), "active".into()),
            ("scope".into(), "patient-privacy".into()),
        ],
        &ctx.base_url,
    )
}

/// Whether a resource body is in `patient`'s compartment.
pub fn in_compartment(ctx: &Ctx, rtype: &str, id: &str, body: &Value, patient: &str) -> bool {
    if rtype == "Patient" && id == patient {
        return true;
    }
    referenced_patients(ctx, rtype, body).any(|i| i == patient)
}
