//! `foster-passport import-eligibility FILE.csv`: MEDS-style eligibility rows become each
//! youth's Patient (found by Medi-Cal CIN, created when new) and child welfare episodes, from the
//! aid-code table in `conformance/aid-codes.json` (or `--aid-codes FILE`).
//!
//! Each row is one transaction: a bad row is reported with its line number and changes nothing,
//! and the rows after it are still read. A row that would change nothing writes nothing, so a
//! rerun of the same file leaves every Patient at its version.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::Access;
use crate::error::FhirError;
use crate::interactions::{Ctx, write_version};
use crate::search::SearchRegistry;
use crate::search::child_welfare::EPISODE_URL;
use crate::store::query::Query;
use crate::store::{Store, StoreTx, WriteMethod};

/// The Medi-Cal Client Index Number's identifier system.
pub const CIN_SYSTEM: &str = "http://foster-passport.example/fhir/sid/medi-cal-cin";
const SERVICE_SYSTEM: &str = "http://foster-passport.example/fhir/CodeSystem/child-welfare-service";
const COUNTY_SYSTEM: &str = "http://foster-passport.example/fhir/CodeSystem/california-county";
const DEFAULT_AID_CODES: &str = include_str!("../conformance/aid-codes.json");

/// California's counties in MEDS order (county code 01–58); the FIPS code of the n-th is
/// `06` followed by `2n - 1` in three digits.
const COUNTIES: [&str; 58] = [
    "Alameda",
    "Alpine",
    "Amador",
    "Butte",
    "Calaveras",
    "Colusa",
    "Contra Costa",
    "Del Norte",
    "El Dorado",
    "Fresno",
    "Glenn",
    "Humboldt",
    "Imperial",
    "Inyo",
    "Kern",
    "Kings",
    "Lake",
    "Lassen",
    "Los Angeles",
    "Madera",
    "Marin",
    "Mariposa",
    "Mendocino",
    "Merced",
    "Modoc",
    "Mono",
    "Monterey",
    "Napa",
    "Nevada",
    "Orange",
    "Placer",
    "Plumas",
    "Riverside",
    "Sacramento",
    "San Benito",
    "San Bernardino",
    "San Diego",
    "San Francisco",
    "San Joaquin",
    "San Luis Obispo",
    "San Mateo",
    "Santa Barbara",
    "Santa Clara",
    "Santa Cruz",
    "Shasta",
    "Sierra",
    "Siskiyou",
    "Solano",
    "Sonoma",
    "Stanislaus",
    "Sutter",
    "Tehama",
    "Trinity",
    "Tulare",
    "Tuolumne",
    "Ventura",
    "Yolo",
    "Yuba",
];

/// One row of the feed, as the CSV header names its columns.
#[derive(Debug, Deserialize)]
struct Row {
    cin: String,
    family_name: String,
    given_name: String,
    birth_date: String,
    aid_code: String,
    county: String,
    eligibility_start: String,
    #[serde(default)]
    eligibility_end: String,
}

#[derive(Debug, Deserialize)]
struct AidCodeTable {
    codes: Vec<AidCode>,
}

#[derive(Debug, Deserialize)]
struct AidCode {
    code: String,
    service: Option<String>,
}

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Patients created.
    pub created: usize,
    /// Patients given a new version.
    pub updated: usize,
    /// Rows that matched the record as it was.
    pub unchanged: usize,
    /// Rows refused: line number and why.
    pub rejected: Vec<(u64, String)>,
}

/// Aid code → the service its episodes record (`None`: eligibility only).
fn aid_codes(path: Option<&Path>) -> Result<HashMap<String, Option<String>>, String> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read the aid-code table {}: {e}", p.display()))?,
        None => DEFAULT_AID_CODES.to_string(),
    };
    let table: AidCodeTable =
        serde_json::from_str(&text).map_err(|e| format!("the aid-code table is invalid: {e}"))?;
    Ok(table
        .codes
        .into_iter()
        .map(|c| (c.code, c.service))
        .collect())
}

/// Import `file` into the database at `database`, showing progress on a terminal.
pub fn import(database: &str, file: &Path, aid_code_file: Option<&Path>) -> Result<Report, String> {
    let codes = aid_codes(aid_code_file)?;
    let store = crate::store::open(database).map_err(|e| e.to_string())?;
    let ctx = Ctx {
        base_url: String::new(),
        search: Arc::new(SearchRegistry::load().map_err(|e| e.to_string())?),
        capability_statement: Arc::from(""),
        consents: Default::default(),
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_path(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let headers = reader
        .headers()
        .map_err(|e| format!("cannot read the header of {}: {e}", file.display()))?
        .clone();
    let rows = std::fs::read_to_string(file)
        .map(|t| t.lines().count().saturating_sub(1) as u64)
        .unwrap_or(0);
    let progress = indicatif::ProgressBar::new(rows);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut report = Report::default();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                report.rejected.push((line, format!("unreadable row: {e}")));
                continue;
            }
        }
        progress.inc(1);
        let line = record.position().map_or(line, |p| p.line());
        let outcome = record
            .deserialize::<Row>(Some(&headers))
            .map_err(|e| format!("unreadable row: {e}"))
            .and_then(|row| import_row(store.as_ref(), &ctx, &codes, &row));
        match outcome {
            Ok(Outcome::Created) => report.created += 1,
            Ok(Outcome::Updated) => report.updated += 1,
            Ok(Outcome::Unchanged) => report.unchanged += 1,
            Err(why) => report.rejected.push((line, why)),
        }
    }
    progress.finish_and_clear();
    Ok(report)
}

enum Outcome {
    Created,
    Updated,
    Unchanged,
}

/// The checked content of a row.
struct Eligibility {
    cin: String,
    birth: NaiveDate,
    service: Option<String>,
    aid_code: String,
    fips: String,
    county: &'static str,
    start: NaiveDate,
    end: Option<NaiveDate>,
}

fn check(row: &Row, codes: &HashMap<String, Option<String>>) -> Result<Eligibility, String> {
    let cin = row.cin.to_ascii_uppercase();
    if cin.len() != 9 || !cin.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "cin `{}` is not a 9-character Medi-Cal CIN",
            row.cin
        ));
    }
    let day = |column: &str, text: &str| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| format!("{column} `{text}` is not a date (YYYY-MM-DD)"))
    };
    let birth = day("birth_date", &row.birth_date)?;
    let start = day("eligibility_start", &row.eligibility_start)?;
    let end = match row.eligibility_end.as_str() {
        "" => None,
        text => Some(day("eligibility_end", text)?),
    };
    if end.is_some_and(|e| e < start) {
        return Err("eligibility_end is before eligibility_start".into());
    }
    if start < birth {
        return Err("eligibility_start is before birth_date".into());
    }
    let service = codes
        .get(&row.aid_code)
        .ok_or_else(|| format!("aid code `{}` is not in the aid-code table", row.aid_code))?
        .clone();
    let (fips, county) = county(&row.county)?;
    if row.family_name.is_empty() && row.given_name.is_empty() {
        return Err("the row has no name".into());
    }
    Ok(Eligibility {
        cin,
        birth,
        service,
        aid_code: row.aid_code.clone(),
        fips,
        county,
        start,
        end,
    })
}

/// A county as MEDS (`19`) or FIPS (`06037`) writes it: its FIPS code and name.
fn county(text: &str) -> Result<(String, &'static str), String> {
    let index = match text.len() {
        1 | 2 => text.parse::<usize>().ok(),
        5 if text.starts_with("06") => text[2..]
            .parse::<usize>()
            .ok()
            .filter(|n| n % 2 == 1)
            .map(|n| n.div_ceil(2)),
        _ => None,
    }
    .filter(|n| (1..=COUNTIES.len()).contains(n))
    .ok_or_else(|| {
        format!("county `{text}` is not a California county code (MEDS 01–58 or FIPS 06xxx)")
    })?;
    Ok((format!("06{:03}", 2 * index - 1), COUNTIES[index - 1]))
}

fn import_row(
    store: &dyn Store,
    ctx: &Ctx,
    codes: &HashMap<String, Option<String>>,
    row: &Row,
) -> Result<Outcome, String> {
    let e = check(row, codes)?;
    let err = |e: FhirError| e.to_string();
    let mut tx = store.begin().map_err(err)?;
    let existing = find_by_cin(ctx, tx.as_mut(), &e.cin).map_err(err)?;
    let (id, previous, mut patient) = match existing {
        Some((id, version, body)) => (id, Some(version), body),
        None => (crate::fhir::ids::new_id(), None, new_patient(row, &e)),
    };
    if let Some(recorded) = patient["birthDate"].as_str()
        && recorded != e.birth.to_string()
    {
        return Err(format!(
            "birth_date {} does not match the record of CIN {} ({recorded}): not merged",
            e.birth, e.cin
        ));
    }
    let before = patient.clone();
    if let Some(service) = &e.service {
        merge_episode(&mut patient, service, &e);
    }
    if previous.is_some() && patient == before {
        return Ok(Outcome::Unchanged);
    }
    let current = tx.current("Patient", &id).map_err(err)?;
    write_version(
        ctx,
        &Access::server(),
        tx.as_mut(),
        "Patient",
        &id,
        current.as_ref(),
        WriteMethod::Update,
        patient,
    )
    .map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(if previous.is_some() {
        Outcome::Updated
    } else {
        Outcome::Created
    })
}

/// The Patient holding this CIN: id, version and body without server-owned meta.
fn find_by_cin(
    ctx: &Ctx,
    tx: &mut dyn StoreTx,
    cin: &str,
) -> Result<Option<(String, u64, Value)>, FhirError> {
    let criteria = crate::search::parse::parse_conditional(
        &ctx.search,
        "Patient",
        &[("identifier".into(), format!("{CIN_SYSTEM}|{cin}"))],
        &ctx.base_url,
    )?;
    let page = tx.search(&Query {
        rtype: "Patient".into(),
        criteria,
        sort: vec![],
        count: 2,
        cursor: None,
        with_total: false,
    })?;
    if page.matches.len() > 1 {
        return Err(FhirError::Conflict(format!(
            "more than one Patient holds CIN {cin}"
        )));
    }
    let Some(m) = page.matches.into_iter().next() else {
        return Ok(None);
    };
    let Some(text) = m.version.body.as_deref() else {
        return Ok(None);
    };
    let body: Value = serde_json::from_str(text).map_err(FhirError::internal)?;
    Ok(Some((m.version.id.clone(), m.version.version, body)))
}

fn new_patient(row: &Row, e: &Eligibility) -> Value {
    let mut name = json!({ "use": "official" });
    if !row.family_name.is_empty() {
        name["family"] = json!(row.family_name);
    }
    if !row.given_name.is_empty() {
        name["given"] = json!([row.given_name]);
    }
    json!({
        "resourceType": "Patient",
        "identifier": [{
            "use": "official",
            "type": { "text": "Medi-Cal Client Index Number (CIN)" },
            "system": CIN_SYSTEM,
            "value": e.cin,
        }],
        "active": true,
        "name": [name],
        "birthDate": e.birth.to_string(),
    })
}

/// Add the row's episode, or bring the one with the same aid code and start up to date
/// (its end and county): eligibility spans are reported again as they change.
fn merge_episode(patient: &mut Value, service: &str, e: &Eligibility) {
    let mut period = json!({ "start": e.start.to_string() });
    if let Some(end) = e.end {
        period["end"] = json!(end.to_string());
    }
    let episode = json!({
        "url": EPISODE_URL,
        "extension": [
            { "url": "service", "valueCoding": { "system": SERVICE_SYSTEM, "code": service } },
            { "url": "period", "valuePeriod": period },
            { "url": "county", "valueCoding": { "system": COUNTY_SYSTEM, "code": e.fips, "display": e.county } },
            { "url": "source", "valueString": e.aid_code },
        ]
    });
    let start = e.start.to_string();
    let same = |x: &Value| {
        let part = |name: &str| {
            x["extension"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["url"] == name)
                .cloned()
                .unwrap_or(Value::Null)
        };
        x["url"] == EPISODE_URL
            && part("source")["valueString"] == e.aid_code.as_str()
            && part("service")["valueCoding"]["code"] == service
            && part("period")["valuePeriod"]["start"] == start.as_str()
    };
    let Some(obj) = patient.as_object_mut() else {
        return;
    };
    let list = obj
        .entry("extension")
        .or_insert_with(|| json!([]))
        .as_array_mut();
    let Some(list) = list else {
        return;
    };
    match list.iter_mut().find(|x| same(x)) {
        Some(found) => {
            if *found != episode {
                *found = episode;
            }
        }
        None => list.push(episode),
    }
}

#[cfg(test)]
mod tests {
    use super::county;

    #[test]
    fn counties_by_meds_or_fips_code() {
        assert_eq!(county("19").unwrap(), ("06037".into(), "Los Angeles"));
        assert_eq!(county("06037").unwrap(), ("06037".into(), "Los Angeles"));
        assert_eq!(county("34").unwrap(), ("06067".into(), "Sacramento"));
        assert_eq!(county("10").unwrap(), ("06019".into(), "Fresno"));
        assert_eq!(county("58").unwrap(), ("06115".into(), "Yuba"));
        for bad in ["0", "59", "06038", "06117", "LA", "36037"] {
            assert!(county(bad).is_err(), "{bad}");
        }
    }
}
