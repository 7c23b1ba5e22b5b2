//! Index values for a search parameter: its FHIRPath expression evaluated on a resource, each
//! result node converted by parameter kind following the R4 search rules (search.html).
//!
//! Conversions: string ← string primitives, HumanName (family, given, prefix, suffix, text) and
//! Address (line, city, district, state, postalCode, country, text); token ← code/string/uri/id
//! and boolean primitives, Coding, CodeableConcept, Identifier, ContactPoint; reference ←
//! Reference.reference (contained `#…` references and identifier-only references are skipped)
//! and canonical/uri strings (URL only); date ← date/dateTime/instant, Period, Timing (each
//! event, else repeat.boundsPeriod); number ← integer/decimal; quantity ← Quantity and its
//! profiles, Money (system `urn:iso:std:iso:4217`); uri ← uri/url/canonical strings. A Range is
//! not indexed as a quantity (a single value cannot stand for it). Composite and special
//! parameters yield nothing here. Values that cannot be converted are left out; duplicates are
//! removed.

use chrono::{NaiveDate, NaiveTime};
use serde_json::Value;

use super::fhirpath::{Expr, Node};
use super::model::{IndexValue, ParamKind, fold};

/// The currency code system for Money.
const ISO_4217: &str = "urn:iso:std:iso:4217";

/// Index values for one search parameter on one resource.
pub fn extract(kind: ParamKind, expr: &Expr, resource: &Value) -> Vec<IndexValue> {
    if matches!(kind, ParamKind::Composite | ParamKind::Special) {
        return Vec::new();
    }
    extract_nodes(kind, expr.evaluate(resource))
}

/// Index values from already evaluated nodes (a composite parameter's components).
pub fn extract_nodes(kind: ParamKind, nodes: Vec<Node<'_>>) -> Vec<IndexValue> {
    let mut out = Vec::new();
    for node in nodes {
        let mut push = |v: IndexValue| {
            if !out.contains(&v) {
                out.push(v);
            }
        };
        match kind {
            ParamKind::String => strings(node, &mut push),
            ParamKind::Token => tokens(node, &mut push),
            ParamKind::Reference => references(node, &mut push),
            ParamKind::Date => dates(node, &mut push),
            ParamKind::Number => {
                if let Some(value) = number(node.value) {
                    push(IndexValue::Number { value });
                }
            }
            ParamKind::Quantity => quantities(node, &mut push),
            ParamKind::Uri => {
                if let Some(uri) = node.value.as_str() {
                    push(IndexValue::Uri {
                        uri: uri.to_string(),
                    });
                }
            }
            ParamKind::Composite | ParamKind::Special => {}
        }
    }
    out
}

fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// A string field, or each string of an array field.
fn str_list<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a str> {
    let field = value.get(key);
    let items = match field {
        Some(Value::Array(items)) => items.as_slice(),
        Some(one) => std::slice::from_ref(one),
        None => &[],
    };
    items.iter().filter_map(Value::as_str)
}

fn number(value: &Value) -> Option<f64> {
    value.as_f64().filter(|v| v.is_finite())
}

// ---------------------------------------------------------------------------------------------
// string

const NAME_FIELDS: [&str; 4] = ["family", "given", "prefix", "suffix"];
const ADDRESS_FIELDS: [&str; 6] = ["line", "city", "district", "state", "postalCode", "country"];

fn strings(node: Node<'_>, push: &mut dyn FnMut(IndexValue)) {
    let mut one = |text: &str| {
        if !text.is_empty() {
            push(IndexValue::String {
                normalized: fold(text),
                exact: text.to_string(),
            });
        }
    };
    match node.value {
        Value::String(text) => one(text),
        Value::Object(map) => {
            let fields: &[&str] = match node.type_name {
                Some("HumanName") => &NAME_FIELDS,
                Some("Address") => &ADDRESS_FIELDS,
                _ if NAME_FIELDS.iter().any(|k| map.contains_key(*k)) => &NAME_FIELDS,
                _ if ADDRESS_FIELDS.iter().any(|k| map.contains_key(*k)) => &ADDRESS_FIELDS,
                // Another complex type: not a string.
                _ => return,
            };
            for field in fields {
                str_list(node.value, field).for_each(&mut one);
            }
            if let Some(text) = str_field(node.value, "text") {
                one(text);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// token

fn token(system: Option<&str>, code: Option<&str>, text: Option<&str>) -> IndexValue {
    IndexValue::Token {
        system: system.map(str::to_string),
        code: code.map(str::to_string),
        text: text.map(fold),
        of_type: None,
    }
}

fn tokens(node: Node<'_>, push: &mut dyn FnMut(IndexValue)) {
    let value = node.value;
    match value {
        Value::String(code) => push(token(None, Some(code), None)),
        Value::Bool(b) => push(token(None, Some(if *b { "true" } else { "false" }), None)),
        Value::Number(n) => push(token(None, Some(&n.to_string()), None)),
        Value::Object(map) => {
            let is = |t: &str| node.type_name == Some(t);
            if is("CodeableConcept") || map.contains_key("coding") {
                codeable_concept(value, push);
            } else if is("Identifier")
                || is("ContactPoint")
                || map.get("value").is_some_and(Value::is_string)
            {
                identifier(value, push);
            } else if is("Coding") || map.contains_key("code") || map.contains_key("system") {
                if map.get("value").is_some_and(Value::is_number) {
                    return; // a Quantity, not a token
                }
                push(token(
                    str_field(value, "system"),
                    str_field(value, "code"),
                    str_field(value, "display"),
                ));
            } else if let Some(text) = str_field(value, "text") {
                push(token(None, None, Some(text)));
            }
        }
        _ => {}
    }
}

fn codeable_concept(concept: &Value, push: &mut dyn FnMut(IndexValue)) {
    let text = str_field(concept, "text");
    let codings = concept.get("coding").and_then(Value::as_array);
    let mut any = false;
    for coding in codings.into_iter().flatten().filter(|c| c.is_object()) {
        any = true;
        push(token(
            str_field(coding, "system"),
            str_field(coding, "code"),
            str_field(coding, "display").or(text),
        ));
    }
    if !any && text.is_some() {
        push(token(None, None, text));
    }
}

/// Identifier (`system|value`, type text and type codings for `:of-type`) and ContactPoint
/// (`system|value`, where the system is `phone`, `email`, …): the same shape.
fn identifier(ident: &Value, push: &mut dyn FnMut(IndexValue)) {
    let system = str_field(ident, "system");
    let code = str_field(ident, "value");
    let ty = ident.get("type");
    let type_codings: Vec<&Value> = ty
        .and_then(|t| t.get("coding"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let text = ty
        .and_then(|t| str_field(t, "text"))
        .or_else(|| type_codings.iter().find_map(|c| str_field(c, "display")));
    let with_type = |of_type: Option<String>| IndexValue::Token {
        system: system.map(str::to_string),
        code: code.map(str::to_string),
        text: text.map(fold),
        of_type,
    };
    let mut typed = false;
    for coding in type_codings {
        if let (Some(s), Some(c)) = (str_field(coding, "system"), str_field(coding, "code")) {
            typed = true;
            push(with_type(Some(format!("{s}|{c}"))));
        }
    }
    if !typed {
        push(with_type(None));
    }
}

// ---------------------------------------------------------------------------------------------
// reference

fn references(node: Node<'_>, push: &mut dyn FnMut(IndexValue)) {
    match node.value {
        // canonical / uri: relative forms (`Questionnaire/gcs`, or a bare id) are matched like
        // references; absolute canonicals by URL only.
        Value::String(url) => {
            let unversioned = url.split('|').next().unwrap_or(url);
            let (target_type, target_id) = match split_reference(unversioned) {
                Some((t, id)) if !unversioned.contains("://") => {
                    (Some(t.to_string()), Some(id.to_string()))
                }
                _ if crate::fhir::ids::is_valid_id(unversioned) => {
                    (None, Some(unversioned.to_string()))
                }
                _ => (None, None),
            };
            push(IndexValue::Reference {
                target_type,
                target_id,
                url: url.clone(),
            })
        }
        // A resource in place of a reference (`Bundle.entry[0].resource` for `Bundle?composition=`).
        Value::Object(_) if node.value.get("resourceType").is_some() => {
            if let (Some(ty), Some(id)) = (
                str_field(node.value, "resourceType"),
                str_field(node.value, "id"),
            ) {
                push(IndexValue::Reference {
                    target_type: Some(ty.to_string()),
                    target_id: Some(id.to_string()),
                    url: format!("{ty}/{id}"),
                });
            }
        }
        Value::Object(_) => {
            if let Some(v) = str_field(node.value, "reference").and_then(reference_value) {
                push(v);
            }
        }
        _ => {}
    }
}

/// `Type/id`, `http…/Type/id[/_history/n]` → typed; `urn:` and other forms → URL only;
/// contained (`#id`) and empty references → nothing.
fn reference_value(reference: &str) -> Option<IndexValue> {
    if reference.is_empty() || reference.starts_with('#') {
        return None;
    }
    let target = (!reference.starts_with("urn:"))
        .then(|| split_reference(reference))
        .flatten();
    Some(IndexValue::Reference {
        target_type: target.map(|(t, _)| t.to_string()),
        target_id: target.map(|(_, id)| id.to_string()),
        url: reference.to_string(),
    })
}

fn split_reference(reference: &str) -> Option<(&str, &str)> {
    let absolute = reference.starts_with("http://") || reference.starts_with("https://");
    let path = reference.split(['?', '#']).next()?;
    let path = path.find("/_history/").map_or(path, |i| &path[..i]);
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() < 2 || (!absolute && segments.len() != 2) {
        return None;
    }
    let (ty, id) = (segments[segments.len() - 2], segments[segments.len() - 1]);
    let type_ok = ty.starts_with(|c: char| c.is_ascii_uppercase())
        && ty.bytes().all(|b| b.is_ascii_alphanumeric());
    let id_ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    (type_ok && id_ok).then_some((ty, id))
}

// ---------------------------------------------------------------------------------------------
// date

fn dates(node: Node<'_>, push: &mut dyn FnMut(IndexValue)) {
    let value = node.value;
    match value {
        Value::String(text) => {
            if let Some((low, high)) = date_range(text) {
                push(IndexValue::Date { low, high });
            }
        }
        Value::Object(map) => {
            if node.type_name == Some("Timing")
                || map.contains_key("event")
                || map.contains_key("repeat")
            {
                let mut any = false;
                for event in str_list(value, "event") {
                    if let Some((low, high)) = date_range(event) {
                        any = true;
                        push(IndexValue::Date { low, high });
                    }
                }
                let bounds = value.get("repeat").and_then(|r| r.get("boundsPeriod"));
                if let (false, Some(v)) = (any, bounds.and_then(period)) {
                    push(v);
                }
            } else if let Some(v) = period(value) {
                push(v);
            }
        }
        _ => {}
    }
}

/// A Period's range; an absent end is open, an unreadable one leaves the period out.
fn period(value: &Value) -> Option<IndexValue> {
    let start = value.get("start");
    let end = value.get("end");
    if start.is_none() && end.is_none() {
        return None;
    }
    let low = match start {
        Some(s) => date_range(s.as_str()?)?.0,
        None => i64::MIN,
    };
    let high = match end {
        Some(e) => date_range(e.as_str()?)?.1,
        None => i64::MAX,
    };
    Some(IndexValue::Date { low, high })
}

/// The `[low, high)` range in epoch milliseconds a date, dateTime or instant covers at its
/// precision; without a zone it is taken as UTC.
pub fn date_range(text: &str) -> Option<(i64, i64)> {
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let digits = |s: &str, n: usize| {
        (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let year = digits(parts.next()?, 4)? as i32;
    let month = match parts.next() {
        Some(m) => Some(digits(m, 2)?),
        None => None,
    };
    let day = match parts.next() {
        Some(d) => Some(digits(d, 2)?),
        None => None,
    };
    if parts.next().is_some() || (time.is_some() && day.is_none()) {
        return None;
    }
    let ms = |d: NaiveDate| d.and_time(NaiveTime::MIN).and_utc().timestamp_millis();
    let Some(time) = time else {
        let (low, high) = match (month, day) {
            (None, _) => (
                NaiveDate::from_ymd_opt(year, 1, 1)?,
                NaiveDate::from_ymd_opt(year + 1, 1, 1)?,
            ),
            (Some(m), None) => {
                let start = NaiveDate::from_ymd_opt(year, m, 1)?;
                (start, start.checked_add_months(chrono::Months::new(1))?)
            }
            (Some(m), Some(d)) => {
                let day = NaiveDate::from_ymd_opt(year, m, d)?;
                (day, day.succ_opt()?)
            }
        };
        return Some((ms(low), ms(high)));
    };
    let day = NaiveDate::from_ymd_opt(year, month?, day?)?;
    // Split the zone off: `Z`, `+hh:mm`, `-hh:mm`, or none (UTC).
    let (clock, offset_ms) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, zone) = time.split_at(i);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':')?;
        let minutes = i64::from(digits(h, 2)?) * 60 + i64::from(digits(m, 2)?);
        (c, sign * minutes * 60_000)
    } else {
        (time, 0)
    };
    let mut fields = clock.splitn(3, ':');
    let hour = digits(fields.next()?, 2)?;
    let minute = digits(fields.next()?, 2)?;
    let (second, millis, width) = match fields.next() {
        None => (0, 0, 60_000),
        Some(sec) => {
            let (whole, fraction) = sec.split_once('.').unwrap_or((sec, ""));
            let second = digits(whole, 2)?;
            if !fraction.bytes().all(|b| b.is_ascii_digit()) || sec.ends_with('.') {
                return None;
            }
            let kept = &fraction[..fraction.len().min(3)];
            let scale = 10_i64.pow(3 - kept.len() as u32);
            let millis = if kept.is_empty() {
                0
            } else {
                kept.parse::<i64>().ok()? * scale
            };
            (
                second,
                millis,
                if fraction.is_empty() { 1000 } else { scale },
            )
        }
    };
    let clock = NaiveTime::from_hms_opt(hour, minute, second)?;
    let low = day.and_time(clock).and_utc().timestamp_millis() + millis - offset_ms;
    Some((low, low + width))
}

// ---------------------------------------------------------------------------------------------
// quantity

fn quantities(node: Node<'_>, push: &mut dyn FnMut(IndexValue)) {
    match node.value {
        Value::Number(_) => {
            if let Some(value) = number(node.value) {
                push(IndexValue::Quantity {
                    value,
                    system: None,
                    code: None,
                    unit: None,
                });
            }
        }
        Value::Object(map) => {
            let Some(value) = map.get("value").and_then(number) else {
                return; // Range, SampledData, or no value
            };
            let owned = |key: &str| str_field(node.value, key).map(str::to_string);
            if let Some(currency) = owned("currency") {
                push(IndexValue::Quantity {
                    value,
                    system: Some(ISO_4217.to_string()),
                    code: Some(currency),
                    unit: None,
                });
            } else {
                push(IndexValue::Quantity {
                    value,
                    system: owned("system"),
                    code: owned("code"),
                    unit: owned("unit"),
                });
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::fhirpath::compile;
    use serde_json::json;

    fn run(kind: ParamKind, expression: &str, resource: &Value) -> Vec<IndexValue> {
        extract(kind, &compile(expression).unwrap(), resource)
    }

    fn string(s: &str) -> IndexValue {
        IndexValue::String {
            normalized: fold(s),
            exact: s.to_string(),
        }
    }

    #[test]
    fn strings_from_names_and_addresses() {
        let patient = json!({"resourceType": "Patient",
            "name": [{"family": "Núñez", "given": ["Ana", "María"], "prefix": ["Dr."], "text": "Dr. Ana Núñez"},
                     {"family": "Núñez"}],
            "address": [{"line": ["1 Main St"], "city": "Fresno", "postalCode": "93701", "country": "US"}]});
        assert_eq!(
            run(ParamKind::String, "Patient.name", &patient),
            vec![
                string("Núñez"),
                string("Ana"),
                string("María"),
                string("Dr."),
                string("Dr. Ana Núñez")
            ]
        );
        assert_eq!(
            run(ParamKind::String, "Patient.address", &patient),
            vec![
                string("1 Main St"),
                string("Fresno"),
                string("93701"),
                string("US")
            ]
        );
        assert_eq!(
            run(ParamKind::String, "Patient.name.family", &patient),
            vec![string("Núñez")]
        );
        let IndexValue::String { normalized, .. } =
            &run(ParamKind::String, "Patient.name.family", &patient)[0]
        else {
            panic!()
        };
        assert_eq!(normalized, "nunez");
    }

    #[test]
    fn tokens_from_codings_identifiers_and_primitives() {
        let patient = json!({"resourceType": "Patient", "gender": "female", "active": true,
            "identifier": [{"system": "urn:x", "value": "42",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR", "display": "Medical Record"}]}}],
            "telecom": [{"system": "phone", "value": "555"}, {"system": "email", "value": "a@b.c"}],
            "maritalStatus": {"coding": [{"system": "s", "code": "M", "display": "Married"}], "text": "wed"},
            "language": {"text": "Éire"}});
        assert_eq!(
            run(ParamKind::Token, "Patient.gender", &patient),
            vec![token(None, Some("female"), None)]
        );
        assert_eq!(
            run(ParamKind::Token, "Patient.active", &patient),
            vec![token(None, Some("true"), None)]
        );
        assert_eq!(
            run(ParamKind::Token, "Patient.identifier", &patient),
            vec![IndexValue::Token {
                system: Some("urn:x".into()),
                code: Some("42".into()),
                text: Some("medical record".into()),
                of_type: Some("http://terminology.hl7.org/CodeSystem/v2-0203|MR".into()),
            }]
        );
        assert_eq!(
            run(
                ParamKind::Token,
                "Patient.telecom.where(system='email')",
                &patient
            ),
            vec![token(Some("email"), Some("a@b.c"), None)]
        );
        assert_eq!(
            run(ParamKind::Token, "Patient.maritalStatus", &patient),
            vec![token(Some("s"), Some("M"), Some("married"))]
        );
        assert_eq!(
            run(ParamKind::Token, "Patient.language", &patient),
            vec![token(None, None, Some("eire"))]
        );
        assert_eq!(
            run(
                ParamKind::Token,
                "Patient.deceased.exists() and Patient.deceased != false",
                &patient
            ),
            vec![token(None, Some("false"), None)]
        );
    }

    #[test]
    fn references_by_form() {
        let r = |s: &str| reference_value(s);
        assert_eq!(
            r("Patient/1"),
            Some(IndexValue::Reference {
                target_type: Some("Patient".into()),
                target_id: Some("1".into()),
                url: "Patient/1".into()
            })
        );
        assert_eq!(
            r("https://ex.org/fhir/Patient/a-1/_history/2"),
            Some(IndexValue::Reference {
                target_type: Some("Patient".into()),
                target_id: Some("a-1".into()),
                url: "https://ex.org/fhir/Patient/a-1/_history/2".into()
            })
        );
        assert_eq!(r("#contained"), None);
        let urn = "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0";
        assert_eq!(
            r(urn),
            Some(IndexValue::Reference {
                target_type: None,
                target_id: None,
                url: urn.into()
            })
        );
        let obs = json!({"resourceType": "Observation", "subject": {"reference": "Patient/p"},
            "performer": [{"identifier": {"value": "x"}}, {"reference": "#c"}]});
        assert_eq!(
            run(ParamKind::Reference, "Observation.performer", &obs),
            vec![]
        );
        assert_eq!(
            run(
                ParamKind::Reference,
                "Observation.subject.where(resolve() is Patient)",
                &obs
            )
            .len(),
            1
        );
        assert_eq!(
            run(
                ParamKind::Reference,
                "Observation.subject.where(resolve() is Group)",
                &obs
            ),
            vec![]
        );
    }

    #[test]
    fn date_precision_ranges() {
        let day = 86_400_000;
        assert_eq!(date_range("1970"), Some((0, 365 * day)));
        assert_eq!(date_range("1970-02"), Some((31 * day, 59 * day)));
        assert_eq!(date_range("1970-01-02"), Some((day, 2 * day)));
        assert_eq!(date_range("1970-01-01T01:00"), Some((3_600_000, 3_660_000)));
        assert_eq!(date_range("1970-01-01T00:00:01Z"), Some((1000, 2000)));
        assert_eq!(date_range("1970-01-01T00:00:01.5Z"), Some((1500, 1600)));
        assert_eq!(
            date_range("1970-01-01T00:00:01.123456Z"),
            Some((1123, 1124))
        );
        assert_eq!(date_range("1970-01-01T01:00:00+01:00"), Some((0, 1000)));
        assert_eq!(
            date_range("1970-01-01T00:00:00-00:30"),
            Some((1_800_000, 1_801_000))
        );
        for bad in [
            "",
            "70",
            "1970-13",
            "1970-02-30",
            "1970-01-01T25:00:00Z",
            "1970-1-1",
            "x",
        ] {
            assert_eq!(date_range(bad), None, "{bad}");
        }
        let res = json!({"resourceType": "Encounter", "period": {"start": "2020-01-01"},
            "x": 1});
        assert_eq!(
            run(ParamKind::Date, "Encounter.period", &res),
            vec![IndexValue::Date {
                low: date_range("2020-01-01").unwrap().0,
                high: i64::MAX
            }]
        );
        let timing = json!({"resourceType": "MedicationRequest", "dosageInstruction": [{"timing":
            {"event": ["2020-01-01", "2020-01-02"]}}, {"timing": {"repeat": {"boundsPeriod": {"end": "2021"}}}}]});
        assert_eq!(
            run(
                ParamKind::Date,
                "MedicationRequest.dosageInstruction.timing",
                &timing
            ),
            vec![
                IndexValue::Date {
                    low: date_range("2020-01-01").unwrap().0,
                    high: date_range("2020-01-01").unwrap().1
                },
                IndexValue::Date {
                    low: date_range("2020-01-02").unwrap().0,
                    high: date_range("2020-01-02").unwrap().1
                },
                IndexValue::Date {
                    low: i64::MIN,
                    high: date_range("2021").unwrap().1
                },
            ]
        );
    }

    #[test]
    fn numbers_quantities_uris_and_dedup() {
        let obs: Value = serde_json::from_str(
            r#"{"resourceType": "Observation", "valueQuantity": {"value": 1.50, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
            "component": [{"valueQuantity": {"value": 1.50, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}},
                          {"valueRange": {"low": {"value": 1}}}]}"#,
        )
        .unwrap();
        let q = run(
            ParamKind::Quantity,
            "(Observation.value as Quantity) | (Observation.component.value as Quantity) | (Observation.component.value as Range)",
            &obs,
        );
        assert_eq!(
            q,
            vec![IndexValue::Quantity {
                value: 1.5,
                system: Some("http://unitsofmeasure.org".into()),
                code: Some("kg".into()),
                unit: Some("kg".into())
            }]
        );
        let claim = json!({"resourceType": "ChargeItem", "priceOverride": {"value": 12, "currency": "USD"}, "factorOverride": 0.5});
        assert_eq!(
            run(ParamKind::Quantity, "ChargeItem.priceOverride", &claim),
            vec![IndexValue::Quantity {
                value: 12.0,
                system: Some(ISO_4217.into()),
                code: Some("USD".into()),
                unit: None
            }]
        );
        assert_eq!(
            run(ParamKind::Number, "ChargeItem.factorOverride", &claim),
            vec![IndexValue::Number { value: 0.5 }]
        );
        let vs = json!({"resourceType": "ValueSet", "url": "http://x/vs"});
        assert_eq!(
            run(ParamKind::Uri, "ValueSet.url", &vs),
            vec![IndexValue::Uri {
                uri: "http://x/vs".into()
            }]
        );
        assert_eq!(run(ParamKind::Composite, "ValueSet", &vs), vec![]);
    }
}
