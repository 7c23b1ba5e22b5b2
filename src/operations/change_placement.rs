//! `POST Patient/[id]/$change-placement` (`conformance/OperationDefinition-change-placement.json`):
//! a youth moves to a new resource family. In one transaction: the previous resource family's
//! CareTeam participation ends the day before the effective date and the new one's begins on it (access follows,
//! since consents name the CareTeam), a county change closes the ongoing episode and opens one in
//! the new county, open ServiceRequests are left as they are (authorizations carry over), a Task
//! asks the placing agency to hand the new caregiver the youth's medications and passport within
//! 48 hours (W&I Code 16010.5), a Task asks the plan's Child Welfare Liaison to connect the
//! caregiver with the DHCS Ombudsman when the new county is outside the plan's service area, and
//! a Provenance records who did it. Only a county or custodian requester may call it.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{NaiveDate, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::access::Access;
use crate::auth::scopes::Letter;
use crate::error::{FhirError, FhirResult};
use crate::fhir::ids;
use crate::interactions::{Ctx, FhirResponse, read, write_version};
use crate::search::child_welfare::EPISODE_URL;
use crate::store::query::Query;
use crate::store::{StoreTx, Version, WriteMethod};

const ROLE_SYSTEM: &str = "http://foster-passport.example/fhir/CodeSystem/care-team-role";
const COUNTY_SYSTEM: &str = "http://foster-passport.example/fhir/CodeSystem/california-county";
const TASK_CODE_SYSTEM: &str = "http://foster-passport.example/fhir/CodeSystem/placement-task";

/// Counties each plan serves, by plan Organization.
static SERVICE_AREAS: LazyLock<HashMap<String, Vec<String>>> = LazyLock::new(|| {
    let doc: Value =
        serde_json::from_str(include_str!("../../conformance/plan-service-areas.json"))
            .expect("conformance/plan-service-areas.json is valid JSON");
    serde_json::from_value(doc["plans"].clone()).expect("plans: organization → counties")
});

/// The operation's input.
struct Input {
    family: String,
    effective: NaiveDate,
    county: Option<Value>,
    reason: Option<String>,
}

fn invalid(why: impl Into<String>) -> FhirError {
    FhirError::Unprocessable(format!("$change-placement: {}", why.into()))
}

fn parse(body: Option<&Value>) -> FhirResult<Input> {
    let body =
        body.ok_or_else(|| FhirError::bad_request("$change-placement needs a Parameters body"))?;
    if body["resourceType"] != "Parameters" {
        return Err(FhirError::bad_value(
            "invalid",
            "$change-placement takes a Parameters resource",
            "resourceType",
        ));
    }
    let mut family = None;
    let mut effective = None;
    let mut county = None;
    let mut reason = None;
    for p in body["parameter"].as_array().into_iter().flatten() {
        match p["name"].as_str() {
            Some("resourceFamily") => family = p["valueReference"]["reference"].as_str(),
            Some("effectiveDate") => {
                effective = Some(
                    p["valueDate"]
                        .as_str()
                        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                        .ok_or_else(|| invalid("effectiveDate must be a valueDate (YYYY-MM-DD)"))?,
                )
            }
            Some("county") => {
                let coding = &p["valueCoding"];
                let code = coding["code"].as_str().unwrap_or_default();
                let ours = coding["system"] == COUNTY_SYSTEM
                    && code.len() == 5
                    && code.starts_with("06")
                    && code[2..]
                        .parse::<u32>()
                        .is_ok_and(|n| n % 2 == 1 && n <= 115);
                if !ours {
                    return Err(invalid(format!(
                        "county must be a valueCoding of {COUNTY_SYSTEM} (a California FIPS code)"
                    )));
                }
                county = Some(coding.clone());
            }
            Some("reason") => {
                reason = Some(
                    p["valueString"]
                        .as_str()
                        .ok_or_else(|| invalid("reason must be a valueString"))?
                        .to_string(),
                )
            }
            other => {
                return Err(FhirError::bad_value(
                    "not-supported",
                    format!(
                        "$change-placement has no parameter `{}`",
                        other.unwrap_or("")
                    ),
                    "Parameters.parameter",
                ));
            }
        }
    }
    let family = family
        .filter(|r| r.starts_with("RelatedPerson/"))
        .ok_or_else(|| invalid("resourceFamily must be a valueReference to a RelatedPerson"))?
        .to_string();
    Ok(Input {
        family,
        effective: effective.ok_or_else(|| invalid("effectiveDate is required"))?,
        county,
        reason,
    })
}

fn body_of(v: &Version) -> FhirResult<Value> {
    serde_json::from_str(v.body.as_deref().unwrap_or("{}")).map_err(FhirError::internal)
}

/// Run the placement change for `patient`.
pub fn change_placement(
    ctx: &Ctx,
    access: &Access,
    tx: &mut dyn StoreTx,
    patient: &str,
    body: Option<&Value>,
) -> FhirResult<FhirResponse> {
    let role = access.requester.role.as_deref();
    if !matches!(role, Some("county" | "custodian")) {
        return Err(FhirError::Forbidden(
            "only a county or custodian client may change a youth's placement".into(),
        ));
    }
    for t in ["Patient", "CareTeam"] {
        access.require(t, Letter::U)?;
    }
    for t in ["Task", "Provenance"] {
        access.require(t, Letter::C)?;
    }
    // A youth the requester may not see is answered as one that does not exist.
    let missing = || FhirError::NotFound(format!("Patient/{patient} is not known"));
    let Some(youth) = tx.current("Patient", patient)? else {
        return Err(missing());
    };
    let grant = access.grant("Patient", Letter::R);
    if grant.is_none() || !read::visible(ctx, access, tx, &grant, &youth)? || youth.is_deleted() {
        return Err(missing());
    }
    let input = parse(body)?;
    let (_, family_id) = input.family.split_once('/').expect("checked above");
    let family = tx
        .current("RelatedPerson", family_id)?
        .filter(|v| !v.is_deleted())
        .ok_or_else(|| invalid(format!("{} does not exist", input.family)))?;
    if body_of(&family)?["patient"]["reference"] != format!("Patient/{patient}") {
        return Err(invalid(format!(
            "{} is not a RelatedPerson of Patient/{patient}",
            input.family
        )));
    }
    let team_version = youth_team(ctx, tx, patient)?
        .ok_or_else(|| invalid(format!("Patient/{patient} has no active CareTeam")))?;
    let server = Access::server();
    let effective = input.effective.to_string();
    // Period ends are inclusive dates: the old family's last day is the day before.
    let last_day = input
        .effective
        .pred_opt()
        .unwrap_or(input.effective)
        .to_string();
    let now = Utc::now();

    // The care team: the old resource family leaves on the effective date, the new one joins.
    let mut team = body_of(&team_version)?;
    let participants = team["participant"]
        .as_array_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut kept = Vec::with_capacity(participants.len() + 1);
    let mut plan = None;
    for mut p in participants {
        let holds = |code: &str| {
            p["role"].as_array().into_iter().flatten().any(|r| {
                r["coding"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["system"] == ROLE_SYSTEM && c["code"] == code)
            })
        };
        let current = p["period"]["end"]
            .as_str()
            .is_none_or(|end| end >= effective.as_str());
        if holds("child-welfare-liaison") && current {
            plan = Some((
                p["member"]["reference"].as_str().map(str::to_string),
                p["onBehalfOf"]["reference"].as_str().map(str::to_string),
            ));
        }
        let same_family = p["member"]["reference"] == input.family.as_str();
        if holds("resource-family") && current && !same_family {
            p["period"]["end"] = json!(last_day);
        }
        kept.push(p);
    }
    kept.push(json!({
        "role": [{ "coding": [{ "system": ROLE_SYSTEM, "code": "resource-family", "display": "Resource family" }] }],
        "member": { "reference": input.family },
        "period": { "start": effective },
    }));
    team["participant"] = Value::Array(kept);
    let team_written = write_version(
        ctx,
        &server,
        tx,
        "CareTeam",
        &team_version.id,
        Some(&team_version),
        WriteMethod::Update,
        team,
    )?;
    let mut targets = vec![format!(
        "CareTeam/{}/_history/{}",
        team_written.id, team_written.version
    )];

    // The county: the ongoing episode ends the day before; one in the new county begins.
    let mut new_county = None;
    if let Some(county) = &input.county {
        let mut p = body_of(&youth)?;
        if move_county(&mut p, county, input.effective) {
            let written = write_version(
                ctx,
                &server,
                tx,
                "Patient",
                patient,
                Some(&youth),
                WriteMethod::Update,
                p,
            )?;
            targets.push(format!("Patient/{patient}/_history/{}", written.version));
        }
        new_county = county["code"].as_str().map(str::to_string);
    }

    let agent = access
        .requester
        .organization
        .clone()
        .or_else(|| access.requester.fhir_user.clone());
    // 48 hours from the start of the effective date, in California.
    let start = input
        .effective
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_local_timezone(chrono_tz::America::Los_Angeles)
        .earliest()
        .ok_or_else(|| invalid("effectiveDate has no midnight in California"))?;
    let due = (start + TimeDelta::hours(48)).to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let mut handoff = json!({
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": "urgent",
        "code": { "coding": [{ "system": TASK_CODE_SYSTEM, "code": "placement-handoff",
            "display": "Hand the new caregiver the youth's medications and health passport" }] },
        "description": "Within 48 hours of the placement, give the new resource family the youth's current medications and Health and Education Passport (W&I Code 16010.5).",
        "focus": { "reference": format!("Patient/{patient}") },
        "for": { "reference": format!("Patient/{patient}") },
        "authoredOn": ids::format_instant(now),
        "restriction": { "period": { "start": effective, "end": due } },
        "input": [{ "type": { "text": "new resource family" }, "valueReference": { "reference": input.family } }],
    });
    if let Some(agent) = &agent {
        handoff["requester"] = json!({ "reference": agent });
        handoff["owner"] = json!({ "reference": agent });
    }
    let handoff_id = ids::new_id();
    write_version(
        ctx,
        &server,
        tx,
        "Task",
        &handoff_id,
        None,
        WriteMethod::Create,
        handoff,
    )?;

    // Outside the plan's service area: the liaison connects the caregiver with the Ombudsman.
    let mut ombudsman_id = None;
    if let (Some(county), Some((liaison, Some(plan_org)))) = (&new_county, &plan)
        && SERVICE_AREAS
            .get(plan_org)
            .is_some_and(|area| !area.contains(county))
    {
        let mut task = json!({
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": { "coding": [{ "system": TASK_CODE_SYSTEM, "code": "ombudsman-referral",
                "display": "Connect the caregiver with the DHCS Medi-Cal Managed Care Ombudsman" }] },
            "description": format!("The youth was placed in county {county}, outside the service area of {plan_org}: connect the new resource family with the DHCS Medi-Cal Managed Care Ombudsman."),
            "focus": { "reference": format!("Patient/{patient}") },
            "for": { "reference": format!("Patient/{patient}") },
            "authoredOn": ids::format_instant(now),
            "input": [{ "type": { "text": "new resource family" }, "valueReference": { "reference": input.family } }],
        });
        task["owner"] = json!({ "reference": liaison.clone().unwrap_or_else(|| plan_org.clone()) });
        let id = ids::new_id();
        write_version(
            ctx,
            &server,
            tx,
            "Task",
            &id,
            None,
            WriteMethod::Create,
            task,
        )?;
        ombudsman_id = Some(id);
    }

    let mut provenance = json!({
        "resourceType": "Provenance",
        "target": targets.iter().map(|t| json!({ "reference": t })).collect::<Vec<_>>(),
        "recorded": ids::format_instant(now),
        "occurredDateTime": effective,
        "activity": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE" }],
                      "text": "placement change" },
        "agent": [{ "who": { "identifier": { "system": "urn:foster-passport:client", "value": access.requester.client_id } } }],
    });
    if let Some(agent) = &agent {
        provenance["agent"][0]["who"]["reference"] = json!(agent);
    }
    if let Some(reason) = &input.reason {
        provenance["reason"] = json!([{ "text": reason }]);
    }
    let provenance_id = ids::new_id();
    write_version(
        ctx,
        &server,
        tx,
        "Provenance",
        &provenance_id,
        None,
        WriteMethod::Create,
        provenance,
    )?;

    let mut out = vec![
        json!({ "name": "careTeam", "valueReference": { "reference": format!("CareTeam/{}", team_written.id) } }),
        json!({ "name": "handoffTask", "valueReference": { "reference": format!("Task/{handoff_id}") } }),
        json!({ "name": "provenance", "valueReference": { "reference": format!("Provenance/{provenance_id}") } }),
    ];
    if let Some(id) = ombudsman_id {
        out.push(json!({ "name": "ombudsmanTask", "valueReference": { "reference": format!("Task/{id}") } }));
    }
    Ok(FhirResponse::json(
        json!({ "resourceType": "Parameters", "parameter": out }),
    ))
}

/// The youth's active CareTeam (the newest, when there are several).
fn youth_team(ctx: &Ctx, tx: &mut dyn StoreTx, patient: &str) -> FhirResult<Option<Version>> {
    let criteria = crate::search::parse::parse_conditional(
        &ctx.search,
        "CareTeam",
        &[
            ("patient".into(), format!("Patient/{patient}")),
            ("status".into(), "active".into()),
        ],
        &ctx.base_url,
    )?;
    let page = tx.search(&Query {
        rtype: "CareTeam".into(),
        criteria,
        sort: vec![],
        count: 100,
        cursor: None,
        with_total: false,
    })?;
    Ok(page.matches.into_iter().map(|m| m.version).next_back())
}

/// End the ongoing episode outside `county` the day before `effective` and open the same
/// service in `county` from it; `false` when nothing changes.
fn move_county(patient: &mut Value, county: &Value, effective: NaiveDate) -> bool {
    let Some(extensions) = patient["extension"].as_array_mut() else {
        return false;
    };
    let day_before = effective.pred_opt().unwrap_or(effective).to_string();
    let mut opened = Vec::new();
    for e in extensions.iter_mut().filter(|e| e["url"] == EPISODE_URL) {
        let Some(parts) = e["extension"].as_array_mut() else {
            continue;
        };
        let ongoing = parts
            .iter()
            .any(|p| p["url"] == "period" && p["valuePeriod"]["end"].is_null());
        let same = parts
            .iter()
            .any(|p| p["url"] == "county" && p["valueCoding"]["code"] == county["code"]);
        if !ongoing || same {
            continue;
        }
        let mut next = parts.clone();
        for p in parts.iter_mut().filter(|p| p["url"] == "period") {
            p["valuePeriod"]["end"] = json!(day_before);
        }
        for p in next.iter_mut() {
            match p["url"].as_str() {
                Some("period") => p["valuePeriod"] = json!({ "start": effective.to_string() }),
                Some("county") => p["valueCoding"] = county.clone(),
                _ => {}
            }
        }
        opened.push(json!({ "url": EPISODE_URL, "extension": next }));
    }
    let changed = !opened.is_empty();
    extensions.extend(opened);
    changed
}
