//! `GET Patient/[id]/$summary`: the youth's Health and Education Passport (W&I Code 16010) as
//! a FHIR document shaped after the International Patient Summary — a Composition whose sections
//! hold the care team and whom to call, problems, mental health history, medications, allergies,
//! immunizations, past problems and hospitalizations, open referrals and authorizations,
//! placements and the consents in force — built only from what the requester may see.
//!
//! Entries are found with the same access criteria as searches; section narratives are written
//! from those entries alone (a narrative cannot be filtered afterwards); the Bundle's
//! `meta.security` carries the high-water mark of what it holds. For a requester whom consent
//! limits, every section says so and an empty one gives `withheld` as its reason — for every
//! such requester alike, so the document never tells whether something was left out.

use serde_json::{Value, json};

use crate::access::Access;
use crate::access::consent::{ACT_CODE, sensitive_labels};
use crate::auth::scopes::Letter;
use crate::error::{FhirError, FhirResult};
use crate::fhir::ids;
use crate::interactions::{Ctx, FhirResponse, read};
use crate::store::{Reader, Version};

const LOINC: &str = "http://loinc.org";
const OUR_SECTIONS: &str = "http://foster-passport.example/fhir/CodeSystem/passport-section";
const ROLE_SYSTEM: &str = "http://foster-passport.example/fhir/CodeSystem/care-team-role";
const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
const EMPTY_REASON: &str = "http://terminology.hl7.org/CodeSystem/list-empty-reason";
/// Labels that put a record in the mental health section.
const MENTAL_HEALTH: &[&str] = &["MH", "PSY", "PSYTHPN", "BH"];
/// How many resources of a type one document holds at most.
const MAX_PER_TYPE: usize = 500;

/// One section as it is built.
struct Section {
    title: &'static str,
    code: (&'static str, &'static str, &'static str),
    entries: Vec<(String, Value)>,
    /// Narrative lines (already plain text; escaped when written).
    lines: Vec<String>,
}

impl Section {
    fn new(title: &'static str, code: (&'static str, &'static str, &'static str)) -> Section {
        Section {
            title,
            code,
            entries: vec![],
            lines: vec![],
        }
    }

    fn add(&mut self, reference: String, resource: &Value, line: String) {
        if !self.entries.iter().any(|(r, _)| *r == reference) {
            self.entries.push((reference, resource.clone()));
            self.lines.push(line);
        }
    }
}

/// Run `$summary` for `patient`.
pub fn summary(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    patient: &str,
    query: &[(String, String)],
) -> FhirResult<FhirResponse> {
    if let Some((name, _)) = query
        .iter()
        .find(|(n, _)| !matches!(n.as_str(), "_format" | "_pretty"))
    {
        return Err(FhirError::bad_value(
            "not-supported",
            format!("$summary has no parameter `{name}`"),
            name.clone(),
        ));
    }
    let youth_version = super::visible_patient(ctx, access, reader, patient)?;
    let youth = body(&youth_version)?;
    let limited = !access.sees_whole_record(patient);
    let mut of = |rtype: &str| -> FhirResult<Vec<(String, Value)>> {
        let page = super::compartment_page(
            ctx,
            access,
            reader,
            patient,
            super::query(rtype, vec![], MAX_PER_TYPE, None),
        )?;
        page.matches
            .iter()
            .map(|m| Ok((format!("{rtype}/{}", m.version.id), body(&m.version)?)))
            .collect()
    };
    let teams = of("CareTeam")?;
    let conditions = of("Condition")?;
    let medications = of("MedicationRequest")?;
    let allergies = of("AllergyIntolerance")?;
    let immunizations = of("Immunization")?;
    let encounters = of("Encounter")?;
    let requests = of("ServiceRequest")?;
    let consents = of("Consent")?;
    let related = of("RelatedPerson")?;

    let mut care = Section::new(
        "Care team and whom to call",
        (OUR_SECTIONS, "care-team", "Care team and contacts"),
    );
    let mut placements = Section::new(
        "Placements",
        (OUR_SECTIONS, "placements", "Placement history"),
    );
    // People the document names: included when the requester may see them.
    let mut people: Vec<(String, Value)> = Vec::new();
    for (reference, team) in teams.iter().filter(|(_, t)| t["status"] == "active") {
        let mut lines = Vec::new();
        for p in team["participant"].as_array().into_iter().flatten() {
            let Some(member) = p["member"]["reference"].as_str() else {
                continue;
            };
            let role = role_of(p);
            let period = &p["period"];
            let person = resource_named(ctx, access, reader, &related, member)?;
            let name = person
                .as_ref()
                .map(display_name)
                .or_else(|| p["member"]["display"].as_str().map(str::to_string))
                .unwrap_or_else(|| member.to_string());
            if role == "resource-family" {
                if let Some(person) = &person {
                    placements.add(
                        member.to_string(),
                        person,
                        format!("{name}: {}", span(period)),
                    );
                }
                if period["end"].is_null() {
                    lines.push(format!("Resource family: {name}{}", phone(person.as_ref())));
                }
            } else if period["end"].is_null() && role != "youth" {
                lines.push(format!(
                    "{}: {name}{}",
                    role_display(p),
                    phone(person.as_ref())
                ));
            }
            if let Some(person) = person
                && !people.iter().any(|(r, _)| r == member)
            {
                people.push((member.to_string(), person));
            }
        }
        care.add(
            reference.clone(),
            team,
            format!(
                "{} — {}",
                team["name"].as_str().unwrap_or("Care team"),
                lines.join("; ")
            ),
        );
    }

    let mut problems = Section::new("Problems", (LOINC, "11450-4", "Problem list - Reported"));
    let mut mental = Section::new(
        "Mental health history",
        (OUR_SECTIONS, "mental-health", "Mental health history"),
    );
    let mut past = Section::new(
        "Past health problems and hospitalizations",
        (LOINC, "11348-0", "History of Past illness Narrative"),
    );
    for (reference, c) in &conditions {
        let line = format!("{}{}", text_of(&c["code"]), since(c));
        let is_mental = sensitive_labels(c)
            .iter()
            .any(|(s, code)| s == ACT_CODE && MENTAL_HEALTH.contains(&code.as_str()));
        let status = c["clinicalStatus"]["coding"][0]["code"]
            .as_str()
            .unwrap_or("active");
        if is_mental {
            mental.add(reference.clone(), c, format!("{line} ({status})"));
        } else if matches!(status, "active" | "recurrence" | "relapse") {
            problems.add(reference.clone(), c, line);
        } else {
            past.add(reference.clone(), c, format!("{line} ({status})"));
        }
    }
    for (reference, e) in &encounters {
        let class = e["class"]["code"].as_str().unwrap_or_default();
        if matches!(class, "IMP" | "ACUTE" | "NONAC" | "EMER" | "OBSENC") {
            let what = e["type"][0]["text"]
                .as_str()
                .or(e["class"]["display"].as_str())
                .unwrap_or("Hospital stay");
            past.add(
                reference.clone(),
                e,
                format!("{what}: {}", span(&e["period"])),
            );
        }
    }
    let mut meds = Section::new(
        "Current medications",
        (LOINC, "10160-0", "History of Medication use Narrative"),
    );
    for (reference, m) in medications
        .iter()
        .filter(|(_, m)| matches!(m["status"].as_str(), Some("active" | "on-hold")))
    {
        let mut line = text_of(&m["medicationCodeableConcept"]);
        if let Some(dose) = m["dosageInstruction"][0]["text"].as_str() {
            line.push_str(&format!(" — {dose}"));
        }
        meds.add(reference.clone(), m, line);
    }
    let mut allergy = Section::new(
        "Allergies",
        (LOINC, "48765-2", "Allergies and adverse reactions Document"),
    );
    for (reference, a) in &allergies {
        allergy.add(reference.clone(), a, text_of(&a["code"]));
    }
    let mut shots = Section::new(
        "Immunizations",
        (LOINC, "11369-6", "History of Immunization Narrative"),
    );
    for (reference, i) in &immunizations {
        let when = i["occurrenceDateTime"].as_str().unwrap_or("date unknown");
        shots.add(
            reference.clone(),
            i,
            format!("{} ({when})", text_of(&i["vaccineCode"])),
        );
    }
    let mut open = Section::new(
        "Open referrals and authorizations",
        (LOINC, "18776-5", "Plan of care note"),
    );
    for (reference, r) in requests
        .iter()
        .filter(|(_, r)| matches!(r["status"].as_str(), Some("active" | "on-hold" | "draft")))
    {
        let category = text_of(&r["category"][0]);
        open.add(
            reference.clone(),
            r,
            format!(
                "{} ({category}, {})",
                text_of(&r["code"]),
                r["status"].as_str().unwrap_or("")
            ),
        );
    }
    let mut in_force = Section::new(
        "Consents in force",
        (OUR_SECTIONS, "consents", "Consents in force"),
    );
    for (reference, c) in consents.iter().filter(|(_, c)| c["status"] == "active") {
        let scope = c["scope"]["coding"][0]["code"]
            .as_str()
            .unwrap_or("consent");
        let by = c["performer"][0]["reference"].as_str().unwrap_or("unknown");
        in_force.add(
            reference.clone(),
            c,
            format!(
                "{scope}, given by {by}, {}",
                c["dateTime"].as_str().unwrap_or("")
            ),
        );
    }

    let sections = [
        care, problems, mental, meds, allergy, shots, past, open, placements, in_force,
    ];
    document(ctx, patient, &youth, &sections, &people, limited)
}

/// Assemble the document Bundle.
fn document(
    ctx: &Ctx,
    patient: &str,
    youth: &Value,
    sections: &[Section],
    people: &[(String, Value)],
    limited: bool,
) -> FhirResult<FhirResponse> {
    let now = ids::format_instant(chrono::Utc::now());
    let notice = "Shown as far as the youth's consents release it to you: records may be left out.";
    let mut labels: Vec<(String, String)> = sensitive_labels(youth);
    let mut composed = Vec::new();
    let mut entries: Vec<(String, Value)> = vec![(format!("Patient/{patient}"), youth.clone())];
    for s in sections {
        let mut section = json!({
            "title": s.title,
            "code": { "coding": [{ "system": s.code.0, "code": s.code.1, "display": s.code.2 }] },
            "text": { "status": "generated", "div": narrative(s.title, &s.lines, limited.then_some(notice)) },
        });
        if s.entries.is_empty() {
            let (code, display) = if limited {
                ("withheld", "Information Withheld")
            } else {
                ("nilknown", "Nil Known")
            };
            section["emptyReason"] =
                json!({ "coding": [{ "system": EMPTY_REASON, "code": code, "display": display }] });
        } else {
            section["entry"] = s
                .entries
                .iter()
                .map(|(r, _)| json!({ "reference": r }))
                .collect();
        }
        composed.push(section);
        for (reference, resource) in &s.entries {
            for l in sensitive_labels(resource) {
                if !labels.contains(&l) {
                    labels.push(l);
                }
            }
            if !entries.iter().any(|(r, _)| r == reference) {
                entries.push((reference.clone(), resource.clone()));
            }
        }
    }
    for (reference, resource) in people {
        if !entries.iter().any(|(r, _)| r == reference) {
            entries.push((reference.clone(), resource.clone()));
        }
    }
    let name = display_name(youth);
    let composition_id = uuid::Uuid::new_v4().to_string();
    let composition = json!({
        "resourceType": "Composition",
        "id": composition_id,
        "status": "final",
        "type": { "coding": [{ "system": LOINC, "code": "60591-5", "display": "Patient summary Document" }] },
        "subject": { "reference": format!("Patient/{patient}") },
        "date": now,
        "author": [{ "display": "foster-passport" }],
        "title": format!("Health and Education Passport: {name}"),
        "confidentiality": if labels.is_empty() { "N" } else { "R" },
        "section": composed,
    });
    let mut security = vec![json!({
        "system": CONFIDENTIALITY,
        "code": if labels.is_empty() { "N" } else { "R" },
    })];
    security.extend(
        labels
            .iter()
            .map(|(system, code)| json!({ "system": system, "code": code })),
    );
    let mut bundle_entries = vec![json!({
        "fullUrl": format!("urn:uuid:{composition_id}"),
        "resource": composition,
    })];
    for (reference, resource) in entries {
        bundle_entries.push(
            json!({ "fullUrl": format!("{}/{reference}", ctx.base_url), "resource": resource }),
        );
    }
    Ok(FhirResponse::json(json!({
        "resourceType": "Bundle",
        "id": ids::new_id(),
        "meta": { "lastUpdated": now, "security": security },
        "identifier": { "system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{}", uuid::Uuid::new_v4()) },
        "type": "document",
        "timestamp": now,
        "entry": bundle_entries,
    })))
}

fn body(v: &Version) -> FhirResult<Value> {
    serde_json::from_str(v.body.as_deref().unwrap_or("{}")).map_err(FhirError::internal)
}

/// A participant's resource, if the requester may see it (RelatedPersons come from the
/// youth's compartment as already decided; Practitioners and Organizations are read).
fn resource_named(
    ctx: &Ctx,
    access: &Access,
    reader: &mut dyn Reader,
    related: &[(String, Value)],
    reference: &str,
) -> FhirResult<Option<Value>> {
    if let Some((_, r)) = related.iter().find(|(r, _)| r == reference) {
        return Ok(Some(r.clone()));
    }
    let Some((rtype, id)) = reference.split_once('/') else {
        return Ok(None);
    };
    if !matches!(rtype, "Practitioner" | "Organization" | "PractitionerRole") {
        return Ok(None);
    }
    let grant = access.grant(rtype, Letter::R);
    let Some(v) = reader.current(rtype, id)? else {
        return Ok(None);
    };
    if grant.is_none() || v.is_deleted() || !read::visible(ctx, access, reader, &grant, &v)? {
        return Ok(None);
    }
    body(&v).map(Some)
}

fn role_of(participant: &Value) -> String {
    participant["role"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["coding"].as_array().into_iter().flatten())
        .find(|c| c["system"] == ROLE_SYSTEM)
        .and_then(|c| c["code"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn role_display(participant: &Value) -> String {
    text_of(&participant["role"][0])
}

/// A CodeableConcept (or Coding) as words.
fn text_of(concept: &Value) -> String {
    concept["text"]
        .as_str()
        .or(concept["coding"][0]["display"].as_str())
        .or(concept["display"].as_str())
        .or(concept["coding"][0]["code"].as_str())
        .unwrap_or("(not named)")
        .to_string()
}

fn display_name(resource: &Value) -> String {
    let name = &resource["name"];
    if let Some(text) = name.as_str() {
        return text.to_string();
    }
    let n = &name[0];
    if let Some(text) = n["text"].as_str() {
        return text.to_string();
    }
    let mut parts: Vec<&str> = Vec::new();
    for p in n["prefix"].as_array().into_iter().flatten() {
        parts.extend(p.as_str());
    }
    for g in n["given"].as_array().into_iter().flatten() {
        parts.extend(g.as_str());
    }
    parts.extend(n["family"].as_str());
    if parts.is_empty() {
        format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap_or(""),
            resource["id"].as_str().unwrap_or("")
        )
    } else {
        parts.join(" ")
    }
}

fn phone(resource: Option<&Value>) -> String {
    resource
        .and_then(|r| {
            r["telecom"]
                .as_array()?
                .iter()
                .find(|t| t["system"] == "phone")?["value"]
                .as_str()
                .map(|p| format!(", {p}"))
        })
        .unwrap_or_default()
}

fn span(period: &Value) -> String {
    format!(
        "{} to {}",
        period["start"].as_str().unwrap_or("?"),
        period["end"].as_str().unwrap_or("now")
    )
}

fn since(condition: &Value) -> String {
    condition["onsetDateTime"]
        .as_str()
        .or(condition["recordedDate"].as_str())
        .map(|d| format!(", since {}", &d[..d.len().min(10)]))
        .unwrap_or_default()
}

/// XHTML narrative from the section's own lines.
fn narrative(title: &str, lines: &[String], notice: Option<&str>) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut div = format!(
        "<div xmlns=\"http://www.w3.org/1999/xhtml\"><h3>{}</h3>",
        escape(title)
    );
    if lines.is_empty() {
        div.push_str("<p>None recorded.</p>");
    } else {
        div.push_str("<ul>");
        for l in lines {
            div.push_str(&format!("<li>{}</li>", escape(l)));
        }
        div.push_str("</ul>");
    }
    if let Some(notice) = notice {
        div.push_str(&format!("<p><i>{}</i></p>", escape(notice)));
    }
    div.push_str("</div>");
    div
}
