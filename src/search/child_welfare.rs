//! `Patient?child-welfare-status=`: the five definitions of child welfare-involved youth
//! (DESIGN.md section 6; standards.md 3.1), derived on the day of the query from the facts a
//! Patient carries — its child welfare episodes and birth date — never stored as a status.
//!
//! On write, each Patient gets index rows that do not depend on the day (episode periods, when
//! it left foster care, whether it was in care on or after its 18th birthday); a query turns a
//! status into conditions on them and on `birthdate` relative to today, so a youth who ages
//! out of a category stops matching without any write. "Today" is the date in California.

use chrono::{Months, NaiveDate, Utc};
use serde_json::Value;

use super::model::{IndexValue, ParamKind, Prefix, QueryValue};
use crate::error::{FhirError, FhirResult};
use crate::store::IndexRow;
use crate::store::query::{Criterion, Modifier, ParamRef};

/// The repeating Patient extension holding one episode of child welfare services.
pub const EPISODE_URL: &str =
    "http://foster-passport.example/fhir/StructureDefinition/child-welfare-episode";
/// The code system of the derived statuses.
pub const STATUS_SYSTEM: &str =
    "http://foster-passport.example/fhir/CodeSystem/child-welfare-status";
/// The search parameter's code.
pub const PARAM: &str = "child-welfare-status";
/// Every status, in the order of the definitions; `involved` stands for any of them.
pub const STATUSES: &[&str] = &[
    "in-foster-care",
    "former-foster-care",
    "aged-out",
    "adoption-assistance",
    "family-maintenance",
];

// Derived index parameters (not in the CapabilityStatement; `_` keeps them apart from ours).
/// Foster-care episode periods.
const FOSTER_CARE: &str = "_cw-foster-care";
/// The last day in foster care, once every foster-care episode has ended.
const LEFT_FOSTER_CARE: &str = "_cw-left-foster-care";
/// `true` when a foster-care episode reached the 18th birthday.
const IN_CARE_AT_18: &str = "_cw-in-care-at-18";
/// Adoption-assistance episode periods.
const ADOPTION_ASSISTANCE: &str = "_cw-adoption-assistance";
/// Family-maintenance episode periods.
const FAMILY_MAINTENANCE: &str = "_cw-family-maintenance";
/// The last day of each family-maintenance episode that has an end.
const FAMILY_MAINTENANCE_END: &str = "_cw-family-maintenance-end";

const DAY_MS: i64 = 24 * 3600 * 1000;

/// One episode: its service code and its days `[start, end]` (`None`: open).
struct Episode {
    service: String,
    start: Option<NaiveDate>,
    end: Option<NaiveDate>,
}

fn date(text: Option<&str>) -> Option<NaiveDate> {
    // Episode periods are dates; a dateTime counts by its date.
    NaiveDate::parse_from_str(text?.get(..10)?, "%Y-%m-%d").ok()
}

fn episodes(patient: &Value) -> Vec<Episode> {
    patient["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == EPISODE_URL)
        .filter_map(|e| {
            let part = |name: &str| {
                e["extension"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|x| x["url"] == name)
            };
            let period = &part("period")?["valuePeriod"];
            Some(Episode {
                service: part("service")?["valueCoding"]["code"]
                    .as_str()?
                    .to_string(),
                start: date(period["start"].as_str()),
                end: date(period["end"].as_str()),
            })
        })
        .collect()
}

fn ms(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis()
}

/// The days `[first, last]` as an index range.
fn days(first: Option<NaiveDate>, last: Option<NaiveDate>) -> IndexValue {
    IndexValue::Date {
        low: first.map_or(i64::MIN, ms),
        high: last.map_or(i64::MAX, |d| ms(d) + DAY_MS),
    }
}

fn row(param: &str, value: IndexValue) -> IndexRow {
    IndexRow {
        param: param.to_string(),
        value,
        group: None,
    }
}

/// The derived index rows of a Patient.
pub fn index_rows(patient: &Value) -> Vec<IndexRow> {
    let episodes = episodes(patient);
    if episodes.is_empty() {
        return vec![];
    }
    let birth = date(patient["birthDate"].as_str());
    let mut rows = Vec::new();
    let foster: Vec<&Episode> = episodes
        .iter()
        .filter(|e| e.service == "foster-care")
        .collect();
    for e in &foster {
        rows.push(row(FOSTER_CARE, days(e.start, e.end)));
    }
    if !foster.is_empty() && foster.iter().all(|e| e.end.is_some()) {
        let last = foster.iter().filter_map(|e| e.end).max();
        rows.push(row(LEFT_FOSTER_CARE, days(last, last)));
    }
    if let Some(eighteen) = birth.and_then(|b| years_after(b, 18)) {
        let reached = foster
            .iter()
            .any(|e| e.end.is_none_or(|end| end >= eighteen));
        rows.push(row(
            IN_CARE_AT_18,
            IndexValue::Token {
                system: None,
                code: Some(reached.to_string()),
                text: None,
                of_type: None,
            },
        ));
    }
    for e in &episodes {
        match e.service.as_str() {
            "adoption-assistance" => rows.push(row(ADOPTION_ASSISTANCE, days(e.start, e.end))),
            "family-maintenance" => {
                rows.push(row(FAMILY_MAINTENANCE, days(e.start, e.end)));
                if e.end.is_some() {
                    rows.push(row(FAMILY_MAINTENANCE_END, days(e.end, e.end)));
                }
            }
            _ => {}
        }
    }
    rows
}

/// The day `n` years after `day` (a 29 February birthday falls on 28 February).
fn years_after(day: NaiveDate, n: u32) -> Option<NaiveDate> {
    day.checked_add_months(Months::new(12 * n))
}

fn years_before(day: NaiveDate, n: u32) -> NaiveDate {
    day.checked_sub_months(Months::new(12 * n))
        .unwrap_or(NaiveDate::MIN)
}

fn param(code: &str, kind: ParamKind) -> ParamRef {
    ParamRef {
        code: code.to_string(),
        kind,
    }
}

fn on_dates(code: &str, prefix: Prefix, low: i64, high: i64) -> Criterion {
    Criterion::Match {
        param: param(code, ParamKind::Date),
        modifier: Modifier::None,
        values: vec![QueryValue::Date { prefix, low, high }],
    }
}

/// The episode periods of `code` include `today`.
fn ongoing(code: &str, today: NaiveDate) -> Criterion {
    on_dates(code, Prefix::Covers, ms(today), ms(today) + DAY_MS)
}

/// A day of `code` falls in the 12 months before `today`.
fn within_last_year(code: &str, today: NaiveDate) -> Criterion {
    let year_ago = today
        .checked_sub_months(Months::new(12))
        .unwrap_or(NaiveDate::MIN);
    on_dates(code, Prefix::Eq, ms(year_ago), ms(today))
}

/// Born after the day that many years before today: under that age today.
fn under(age: u32, today: NaiveDate) -> Criterion {
    let day = years_before(today, age);
    on_dates("birthdate", Prefix::Gt, ms(day), ms(day) + DAY_MS)
}

/// One status as criteria on the derived rows, for `today`.
fn status(code: &str, today: NaiveDate) -> Vec<Criterion> {
    match code {
        "in-foster-care" => vec![ongoing(FOSTER_CARE, today), under(21, today)],
        "former-foster-care" => vec![within_last_year(LEFT_FOSTER_CARE, today), under(21, today)],
        "aged-out" => {
            let twenty_one = years_before(today, 21);
            vec![
                Criterion::Match {
                    param: param(IN_CARE_AT_18, ParamKind::Token),
                    modifier: Modifier::None,
                    values: vec![QueryValue::Token {
                        system: None,
                        code: Some("true".into()),
                    }],
                },
                // Left care: every episode ended, or the youth turned 21.
                Criterion::AnyOf(vec![
                    vec![on_dates(
                        LEFT_FOSTER_CARE,
                        Prefix::Lt,
                        ms(today),
                        ms(today) + DAY_MS,
                    )],
                    vec![on_dates(
                        "birthdate",
                        Prefix::Le,
                        ms(twenty_one),
                        ms(twenty_one) + DAY_MS,
                    )],
                ]),
                under(26, today),
            ]
        }
        "adoption-assistance" => vec![ongoing(ADOPTION_ASSISTANCE, today), under(18, today)],
        "family-maintenance" => vec![
            Criterion::AnyOf(vec![
                vec![ongoing(FAMILY_MAINTENANCE, today)],
                vec![within_last_year(FAMILY_MAINTENANCE_END, today)],
            ]),
            under(18, today),
        ],
        _ => unreachable!("codes are checked before"),
    }
}

/// Today in California, where the age and 12-month rules are counted (standards.md 3.1).
pub fn today() -> NaiveDate {
    Utc::now()
        .with_timezone(&chrono_tz::America::Los_Angeles)
        .date_naive()
}

/// The criterion for `child-welfare-status=value` (codes ORed; `involved`: any status), as of
/// today. An optional system must be ours.
pub fn criterion(value: &str) -> FhirResult<Criterion> {
    criterion_on(value, today())
}

fn criterion_on(value: &str, today: NaiveDate) -> FhirResult<Criterion> {
    let mut groups = Vec::new();
    for raw in value.split(',') {
        let code = match raw.split_once('|') {
            Some((system, code)) if system.is_empty() || system == STATUS_SYSTEM => code,
            Some((system, _)) => {
                return Err(bad(format!(
                    "`{system}` is not the child welfare status system ({STATUS_SYSTEM})"
                )));
            }
            None => raw,
        };
        if code == "involved" {
            groups.extend(STATUSES.iter().map(|s| status(s, today)));
        } else if STATUSES.contains(&code) {
            groups.push(status(code, today));
        } else {
            return Err(bad(format!(
                "`{code}` is not a child welfare status; the statuses are {}, and involved",
                STATUSES.join(", ")
            )));
        }
    }
    Ok(Criterion::AnyOf(groups))
}

fn bad(message: String) -> FhirError {
    FhirError::bad_value("value", message, PARAM)
}

/// The statuses a Patient has today, by the same rules (for `$summary` and tests).
pub fn statuses_on(patient: &Value, today: NaiveDate) -> Vec<&'static str> {
    let episodes = episodes(patient);
    let Some(birth) = date(patient["birthDate"].as_str()) else {
        return vec![];
    };
    let age_under = |n: u32| years_after(birth, n).is_some_and(|d| today < d);
    let covers =
        |e: &Episode| e.start.is_none_or(|s| s <= today) && e.end.is_none_or(|x| x >= today);
    let year_ago = today
        .checked_sub_months(Months::new(12))
        .unwrap_or(NaiveDate::MIN);
    let in_last_year = |d: NaiveDate| year_ago <= d && d < today;
    let of = |service: &'static str| episodes.iter().filter(move |e| e.service == service);
    let foster_ended = of("foster-care").count() > 0 && of("foster-care").all(|e| e.end.is_some());
    let left = of("foster-care")
        .filter_map(|e| e.end)
        .max()
        .filter(|_| foster_ended);
    let at_18 = years_after(birth, 18)
        .is_some_and(|d| of("foster-care").any(|e| e.end.is_none_or(|end| end >= d)));
    let mut out = Vec::new();
    if of("foster-care").any(covers) && age_under(21) {
        out.push("in-foster-care");
    }
    if left.is_some_and(in_last_year) && age_under(21) {
        out.push("former-foster-care");
    }
    if at_18 && (left.is_some_and(|d| d < today) || !age_under(21)) && age_under(26) {
        out.push("aged-out");
    }
    if of("adoption-assistance").any(covers) && age_under(18) {
        out.push("adoption-assistance");
    }
    if (of("family-maintenance").any(covers)
        || of("family-maintenance").any(|e| e.end.is_some_and(in_last_year)))
        && age_under(18)
    {
        out.push("family-maintenance");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn youth(birth: &str, episodes: &[(&str, &str, Option<&str>)]) -> Value {
        let ext: Vec<Value> = episodes
            .iter()
            .map(|(service, start, end)| {
                let mut period = json!({ "start": start });
                if let Some(end) = end {
                    period["end"] = json!(end);
                }
                json!({ "url": EPISODE_URL, "extension": [
                    { "url": "service", "valueCoding": { "code": service } },
                    { "url": "period", "valuePeriod": period },
                ]})
            })
            .collect();
        json!({ "resourceType": "Patient", "birthDate": birth, "extension": ext })
    }

    #[test]
    fn statuses_follow_the_definitions() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        let p = youth("2010-01-01", &[("foster-care", "2020-01-01", None)]);
        assert_eq!(statuses_on(&p, today), ["in-foster-care"]);
        let p = youth("2005-12-05", &[("foster-care", "2020-01-01", None)]);
        assert_eq!(statuses_on(&p, today), ["aged-out"], "21 today");
        let p = youth(
            "2007-01-01",
            &[("foster-care", "2020-01-01", Some("2026-01-05"))],
        );
        assert_eq!(statuses_on(&p, today), ["former-foster-care", "aged-out"]);
        let p = youth("2010-01-01", &[("adoption-assistance", "2015-01-01", None)]);
        assert_eq!(statuses_on(&p, today), ["adoption-assistance"]);
    }

    #[test]
    fn unknown_codes_and_systems_are_refused() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        assert!(criterion_on("in-foster-care,involved", today).is_ok());
        assert!(criterion_on(&format!("{STATUS_SYSTEM}|aged-out"), today).is_ok());
        assert!(criterion_on("|aged-out", today).is_ok());
        assert!(criterion_on("fostered", today).is_err());
        assert!(criterion_on("http://other|aged-out", today).is_err());
    }
}
