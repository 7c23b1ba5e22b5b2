//! Deterministic synthetic pediatric records: a Patient with one Condition, one
//! AllergyIntolerance, one Immunization, one CareTeam, one or two ServiceRequests and an active
//! privacy Consent each (permitting the provider Organization [`PROVIDER_ORG`] access for
//! treatment, no sensitive labels), every [`SENSITIVE_EVERY`]th patient also a second Condition
//! labelled `MH` that the Consent does not release; plus [`PRACTITIONERS`] shared Practitioners
//! that the care teams and requests refer to, and the Organization. Record `i`
//! of a population of N patients is always the same, so runs against different servers load
//! identical data and updates can be rebuilt from the index alone.
//!
//! Family names are generated so that a search can hit a known number of patients at any N:
//! there are [`family_groups`]`(N)` ≈ N/10 distinct names, patient `i` has name number
//! `i % groups` (so the ~10 namesakes are spread over the whole load, not adjacent), and each
//! name is a fixed-length stem of five syllables plus an ending. Because every stem has the
//! same length, a stem is a prefix of exactly one family name: `Patient?family={stem}` is a
//! starts-with search matching exactly the ~10 patients of that name.

use chrono::{Days, NaiveDate};
use serde_json::{Value, json};

/// Identifier system of the Medi-Cal Client Index Number.
pub const CIN_SYSTEM: &str = "http://foster-passport.example/fhir/sid/medi-cal-cin";
/// Most resources written per synthetic patient (Patient, Condition, AllergyIntolerance,
/// Immunization, CareTeam, one or two ServiceRequests, a privacy Consent, and for one patient
/// in [`SENSITIVE_EVERY`] a second, mental-health-labelled Condition).
pub const MAX_RESOURCES_PER_PATIENT: usize = 9;
/// The provider Organization every patient's privacy Consent permits (purpose TREAT, no
/// sensitive labels): the consent-governed requester of the `@provider` workloads acts for it.
pub const PROVIDER_ORG: &str = "fpb-clinic";
/// One patient in this many also has a Condition labelled `MH` (v3 ActCode), which the
/// Consent does not release.
pub const SENSITIVE_EVERY: usize = 10;
/// HL7 v3 ActCode (purposes of use and sensitivity labels).
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
/// Shared Practitioners, written before the patients.
pub const PRACTITIONERS: usize = 100;
/// Patients per family name, on average.
pub const PATIENTS_PER_FAMILY: usize = 10;

/// Small, fast, deterministic PRNG (splitmix64 seeding, xorshift64* output).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const GIVEN_FEMALE: &[&str] = &[
    "Sofia", "Isabella", "Camila", "Mia", "Aaliyah", "Emily", "Jasmine", "Valeria", "Mai", "Ava",
    "Zoe", "Leilani", "Ximena", "Destiny", "Hannah", "Priya",
];
const GIVEN_MALE: &[&str] = &[
    "Mateo", "Jayden", "Diego", "Ethan", "Isaiah", "Daniel", "Elijah", "Angel", "Minh", "Noah",
    "Jose", "Marcus", "Julian", "Kai", "Andre", "Arjun",
];
const STREETS: &[&str] = &[
    "Maple Ave",
    "Olive St",
    "Mission Blvd",
    "El Camino Real",
    "Sierra Vista Dr",
    "Oak St",
    "Cedar Ln",
    "Palm Ave",
    "Vineyard Rd",
    "Sunset Blvd",
];
/// (city, county, ZIP code, phone area code)
const PLACES: &[(&str, &str, &str, &str)] = &[
    ("Los Angeles", "Los Angeles County", "90012", "213"),
    ("Fresno", "Fresno County", "93721", "559"),
    ("Sacramento", "Sacramento County", "95814", "916"),
    ("Oakland", "Alameda County", "94612", "510"),
    ("San Diego", "San Diego County", "92101", "619"),
    ("Riverside", "Riverside County", "92501", "951"),
    ("San Bernardino", "San Bernardino County", "92401", "909"),
    ("Bakersfield", "Kern County", "93301", "661"),
    ("Stockton", "San Joaquin County", "95202", "209"),
    ("San Jose", "Santa Clara County", "95113", "408"),
    ("Modesto", "Stanislaus County", "95354", "209"),
    ("Santa Ana", "Orange County", "92701", "714"),
];
/// SNOMED CT problems common in pediatric foster care.
const CONDITIONS: &[(&str, &str)] = &[
    ("195967001", "Asthma"),
    ("406506008", "Attention deficit hyperactivity disorder"),
    ("24079001", "Atopic dermatitis"),
    ("65363002", "Otitis media"),
    ("197480006", "Anxiety disorder"),
    ("47505003", "Posttraumatic stress disorder"),
    ("87522002", "Iron deficiency anemia"),
    ("414916001", "Obesity"),
    ("35489007", "Depressive disorder"),
];
/// The SNOMED CT codes of the synthetic Conditions.
pub fn condition_codes() -> impl Iterator<Item = &'static str> {
    CONDITIONS.iter().map(|(code, _)| *code)
}

/// SNOMED CT allergies: (code, display, category, criticality).
const ALLERGIES: &[(&str, &str, &str, &str)] = &[
    ("91935009", "Allergy to peanut", "food", "high"),
    ("91936005", "Allergy to penicillin", "medication", "high"),
    ("300913006", "Shellfish allergy", "food", "high"),
    ("418689008", "Allergy to grass pollen", "environment", "low"),
    ("232347008", "Dander (animal) allergy", "environment", "low"),
    ("425525006", "Allergy to dairy product", "food", "low"),
    ("300916003", "Latex allergy", "environment", "high"),
];
/// CDC CVX vaccines on the pediatric schedule.
const VACCINES: &[(&str, &str)] = &[
    ("08", "Hep B, adolescent or pediatric"),
    ("20", "DTaP"),
    ("10", "IPV"),
    ("03", "MMR"),
    ("21", "varicella"),
    ("83", "Hep A, ped/adol, 2 dose"),
    ("133", "Pneumococcal conjugate PCV 13"),
    ("115", "Tdap"),
    ("141", "Influenza, seasonal, injectable"),
];

/// Syllables of the family-name stems (16, so five of them number 2^20 names).
const SYLLABLES: &[&str] = &[
    "ba", "ro", "mi", "ta", "ne", "lu", "ka", "so", "de", "vi", "ga", "lo", "ri", "ma", "no", "pe",
];
const STEM_SYLLABLES: u32 = 5;
/// Endings after the stem: the searched prefix never ends a name.
const ENDINGS: &[&str] = &[
    "ez", "son", "er", "ski", "ian", "ova", "ini", "berg", "ado", "ley", "ard", "man",
];
const PRACTITIONER_FAMILY: &[&str] = &[
    "Okafor",
    "Lindqvist",
    "Castillo",
    "Yamamoto",
    "Bennett",
    "Haddad",
    "Novak",
    "Osei",
    "Reyes",
    "Fitzgerald",
];
const PRACTITIONER_GIVEN: &[&str] = &[
    "Amara", "Lars", "Elena", "Kenji", "Grace", "Omar", "Petra", "Kwame", "Lucia", "Sean",
];
/// Referrals typical of foster-care health screening: (SNOMED CT code, text).
const REFERRALS: &[(&str, &str)] = &[
    ("306206005", "Referral to behavioral health service"),
    ("306136006", "Referral to pediatric dentist"),
    ("308447003", "Referral to speech and language therapist"),
    ("183519002", "Referral to developmental pediatrician"),
    ("306252003", "Referral to pediatric psychiatrist"),
    ("390866009", "Referral to audiology service"),
    ("308470006", "Referral to optometrist"),
    ("103696004", "Referral to trauma-focused therapy"),
];

/// Distinct family names in a population of `patients`: about one per
/// [`PATIENTS_PER_FAMILY`] patients (at most 2^20, the number of stems).
pub fn family_groups(patients: usize) -> usize {
    patients
        .div_ceil(PATIENTS_PER_FAMILY)
        .clamp(1, 1 << (4 * STEM_SYLLABLES))
}

/// The stem of family name `group`: five syllables, capitalized, e.g. `Rotadeluka`. Groups are
/// scrambled (an odd multiplier is a bijection modulo 2^20) so neighbours do not look alike.
pub fn family_stem(group: usize) -> String {
    let mut n = (group as u64).wrapping_mul(0x9E37_79B1) & ((1 << (4 * STEM_SYLLABLES)) - 1);
    let mut stem = String::with_capacity(2 * STEM_SYLLABLES as usize);
    for _ in 0..STEM_SYLLABLES {
        stem.push_str(SYLLABLES[(n & 15) as usize]);
        n >>= 4;
    }
    stem[..1].make_ascii_uppercase();
    stem
}

/// Family name number `group`: its stem and an ending.
pub fn family_name(group: usize) -> String {
    let mut name = family_stem(group);
    name.push_str(ENDINGS[group.wrapping_mul(7) % ENDINGS.len()]);
    name
}

/// Id of Practitioner `k`.
pub fn practitioner_id(k: usize) -> String {
    format!("fpb-pr-{k:04}")
}

/// Practitioner `k` (a pediatrician, nurse practitioner or social worker of the county).
pub fn practitioner(k: usize) -> Value {
    let mut rng = Rng::new(0x0D0C_0000 ^ k as u64);
    let family = *rng.pick(PRACTITIONER_FAMILY);
    let given = *rng.pick(PRACTITIONER_GIVEN);
    json!({
        "resourceType": "Practitioner",
        "id": practitioner_id(k),
        "identifier": [{ "system": "http://hl7.org/fhir/sid/us-npi", "value": format!("{}", 1_234_500_000 + k) }],
        "active": true,
        "name": [{ "use": "official", "family": family, "given": [given], "prefix": ["Dr."] }],
        "telecom": [{ "system": "phone", "value": format!("(916) 555-{:04}", 1000 + k % 9000), "use": "work" }],
    })
}

/// Id of synthetic patient `i`.
pub fn patient_id(i: usize) -> String {
    format!("fpb-{i:06}")
}

fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2006, 1, 1).expect("valid date")
}

fn last_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 12, 31).expect("valid date")
}

/// A date uniformly between `from` and the end of 2025.
fn date_after(rng: &mut Rng, from: NaiveDate) -> NaiveDate {
    let span = (last_day() - from).num_days().max(0) as usize + 1;
    from + Days::new(rng.below(span) as u64)
}

/// The Patient resource of record `i` among `groups` family names ([`family_groups`]). `id` is
/// `None` for a create; `revision` changes the home phone number so that successive updates
/// really change the resource.
pub fn patient(i: usize, groups: usize, id: Option<&str>, revision: u32) -> Value {
    let mut rng = Rng::new(i as u64);
    let gender = match rng.below(100) {
        0..=47 => "female",
        48..=95 => "male",
        96..=97 => "other",
        _ => "unknown",
    };
    let given_pool = match gender {
        "female" => GIVEN_FEMALE,
        "male" => GIVEN_MALE,
        _ if rng.below(2) == 0 => GIVEN_FEMALE,
        _ => GIVEN_MALE,
    };
    let given = *rng.pick(given_pool);
    let middle = *rng.pick(given_pool);
    let family = family_name(i % groups.max(1));
    let birth_span = (NaiveDate::from_ymd_opt(2024, 12, 31).expect("valid date") - first_day())
        .num_days() as usize;
    let birth = first_day() + Days::new(rng.below(birth_span + 1) as u64);
    let (city, county, zip, area) = *rng.pick(PLACES);
    let house = 100 + rng.below(9800);
    let street = *rng.pick(STREETS);
    let phone = format!(
        "({area}) 555-{:04}",
        (rng.below(10_000) + revision as usize * 7919) % 10_000
    );
    let cin = cin(i);

    let mut resource = json!({
        "resourceType": "Patient",
        "identifier": [{
            "use": "official",
            "system": CIN_SYSTEM,
            "value": cin,
        }],
        "active": true,
        "name": [{
            "use": "official",
            "family": family,
            "given": [given, middle],
        }],
        "telecom": [{ "system": "phone", "value": phone, "use": "home" }],
        "gender": gender,
        "birthDate": birth.to_string(),
        "address": [{
            "use": "home",
            "type": "physical",
            "line": [format!("{house} {street}")],
            "city": city,
            "district": county,
            "state": "CA",
            "postalCode": zip,
            "country": "US",
        }],
        "communication": [{
            "language": {
                "coding": [{ "system": "urn:ietf:bcp:47", "code": "en-US", "display": "English (United States)" }],
            },
            "preferred": true,
        }],
    });
    if let Some(id) = id {
        set_id(&mut resource, id);
    }
    resource
}

/// Medi-Cal CIN (identifier value) of patient `i`, unique below 10 million patients.
pub fn cin(i: usize) -> String {
    format!("9{:07}{}", i % 10_000_000, (b'A' + (i % 26) as u8) as char)
}

fn set_id(resource: &mut Value, id: &str) {
    // Keep `id` right after `resourceType`, as FHIR JSON usually has it.
    let Value::Object(map) = resource else {
        return;
    };
    let rest = std::mem::take(map);
    let mut rest = rest.into_iter();
    if let Some((k, v)) = rest.next() {
        map.insert(k, v);
    }
    map.insert("id".to_owned(), Value::String(id.to_owned()));
    map.extend(rest);
}

/// How many ServiceRequests patient `i` has (1 or 2): the first is active, the second completed.
pub fn service_requests(i: usize) -> usize {
    1 + (Rng::new(0x5E4E_0000 ^ i as u64).below(2))
}

/// Patient `i` followed by its clinical resources, each with its client-assigned id: the Patient
/// first, then 5 or 6 more (see [`MAX_RESOURCES_PER_PATIENT`]).
pub fn record(i: usize, groups: usize) -> Vec<Value> {
    let pid = patient_id(i);
    let patient = patient(i, groups, Some(&pid), 0);
    let birth = patient["birthDate"]
        .as_str()
        .and_then(|d| d.parse::<NaiveDate>().ok())
        .unwrap_or_else(first_day);
    let subject = json!({ "reference": format!("Patient/{pid}") });
    let mut rng = Rng::new(0x5EED_0000 ^ i as u64);

    let (code, display) = *rng.pick(CONDITIONS);
    let onset = date_after(&mut rng, birth);
    let recorded = date_after(&mut rng, onset);
    let condition = json!({
        "resourceType": "Condition",
        "id": format!("{pid}-c1"),
        "clinicalStatus": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active",
        }]},
        "verificationStatus": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed",
        }]},
        "category": [{ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
            "code": "problem-list-item",
            "display": "Problem List Item",
        }]}],
        "code": {
            "coding": [{ "system": "http://snomed.info/sct", "code": code, "display": display }],
            "text": display,
        },
        "subject": subject,
        "onsetDateTime": onset.to_string(),
        "recordedDate": recorded.to_string(),
    });

    let (code, display, category, criticality) = *rng.pick(ALLERGIES);
    let allergy = json!({
        "resourceType": "AllergyIntolerance",
        "id": format!("{pid}-a1"),
        "clinicalStatus": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active",
        }]},
        "verificationStatus": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
            "code": "confirmed",
        }]},
        "type": "allergy",
        "category": [category],
        "criticality": criticality,
        "code": {
            "coding": [{ "system": "http://snomed.info/sct", "code": code, "display": display }],
            "text": display,
        },
        "patient": subject,
        "recordedDate": date_after(&mut rng, birth).to_string(),
    });

    let (code, display) = *rng.pick(VACCINES);
    let immunization = json!({
        "resourceType": "Immunization",
        "id": format!("{pid}-i1"),
        "status": "completed",
        "vaccineCode": {
            "coding": [{ "system": "http://hl7.org/fhir/sid/cvx", "code": code, "display": display }],
            "text": display,
        },
        "patient": subject,
        "occurrenceDateTime": date_after(&mut rng, birth).to_string(),
        "primarySource": true,
        "lotNumber": format!("LOT{:06}", rng.below(1_000_000)),
    });

    let mut out = Vec::with_capacity(MAX_RESOURCES_PER_PATIENT);
    out.extend([patient, condition, allergy, immunization]);

    let lead = practitioner_ref(rng.below(PRACTITIONERS));
    let since = date_after(&mut rng, birth);
    out.push(json!({
        "resourceType": "CareTeam",
        "id": format!("{pid}-ct"),
        "status": "active",
        "category": [{ "coding": [{
            "system": "http://loinc.org", "code": "LA27976-2", "display": "Encounter-focused care team",
        }]}],
        "name": "Foster care health team",
        "subject": subject,
        "period": { "start": since.to_string() },
        "participant": [{
            "role": [{ "text": "Primary care provider" }],
            "member": lead,
        }],
    }));

    if i.is_multiple_of(SENSITIVE_EVERY) {
        let mut hidden = out[1].clone();
        hidden["id"] = json!(format!("{pid}-c2"));
        hidden["meta"] = json!({ "security": [{ "system": ACT_CODE, "code": "MH" }] });
        hidden["code"] = json!({
            "coding": [{ "system": "http://snomed.info/sct", "code": "35489007", "display": "Depressive disorder" }],
            "text": "Depressive disorder",
        });
        out.push(hidden);
    }
    out.push(privacy_consent(&pid, since));

    for k in 0..service_requests(i) {
        let (code, text) = *rng.pick(REFERRALS);
        out.push(json!({
            "resourceType": "ServiceRequest",
            "id": format!("{pid}-sr{}", k + 1),
            "status": if k == 0 { "active" } else { "completed" },
            "intent": "order",
            "code": {
                "coding": [{ "system": "http://snomed.info/sct", "code": code, "display": text }],
                "text": text,
            },
            "subject": subject,
            "authoredOn": date_after(&mut rng, since).to_string(),
            "requester": practitioner_ref(rng.below(PRACTITIONERS)),
        }));
    }
    out
}

/// Patient `pid`'s active privacy Consent: [`PROVIDER_ORG`] may access the record for
/// treatment, sensitive (labelled) data excepted.
fn privacy_consent(pid: &str, since: NaiveDate) -> Value {
    json!({
        "resourceType": "Consent",
        "id": format!("{pid}-consent"),
        "status": "active",
        "scope": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy",
        }]},
        "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0" }] }],
        "patient": { "reference": format!("Patient/{pid}") },
        "dateTime": format!("{since}T09:00:00Z"),
        "policyRule": { "coding": [{ "system": ACT_CODE, "code": "OPTIN" }] },
        "provision": {
            "type": "permit",
            "actor": [{
                "role": { "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP",
                }]},
                "reference": { "reference": format!("Organization/{PROVIDER_ORG}") },
            }],
            "action": [{ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access",
            }]}],
            "purpose": [{ "system": ACT_CODE, "code": "TREAT" }],
        },
    })
}

/// The provider Organization the Consents name.
pub fn provider_organization() -> Value {
    json!({
        "resourceType": "Organization",
        "id": PROVIDER_ORG,
        "active": true,
        "name": "Foster Passport Bench Pediatrics",
    })
}

fn practitioner_ref(k: usize) -> Value {
    json!({ "reference": format!("Practitioner/{}", practitioner_id(k)) })
}

/// A transaction Bundle entry that PUTs `resource` under its type and id.
fn put_entry(base: &str, resource: Value) -> Value {
    let url = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default()
    );
    json!({
        "fullUrl": format!("{base}/{url}"),
        "resource": resource,
        "request": { "method": "PUT", "url": url },
    })
}

/// A transaction Bundle that PUTs the records of patients `range`, and the entry index of each
/// patient's Patient in it.
pub fn transaction_bundle(
    base: &str,
    range: std::ops::Range<usize>,
    groups: usize,
) -> (Value, Vec<usize>) {
    let mut entries = Vec::with_capacity(range.len() * MAX_RESOURCES_PER_PATIENT);
    let mut patient_entries = Vec::with_capacity(range.len());
    for i in range {
        patient_entries.push(entries.len());
        entries.extend(record(i, groups).into_iter().map(|r| put_entry(base, r)));
    }
    let bundle = json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries });
    (bundle, patient_entries)
}

/// A transaction Bundle that PUTs the shared Practitioners.
pub fn practitioners_bundle(base: &str) -> Value {
    let entries: Vec<Value> = (0..PRACTITIONERS)
        .map(|k| put_entry(base, practitioner(k)))
        .chain([put_entry(base, provider_organization())])
        .collect();
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_deterministic_and_plausible() {
        let a = record(42, 1000);
        let b = record(42, 1000);
        assert_eq!(a, b);
        assert!((7..=MAX_RESOURCES_PER_PATIENT).contains(&a.len()));
        let labelled = |r: &[Value]| {
            r.iter()
                .filter(|x| x["meta"]["security"][0]["code"] == "MH")
                .count()
        };
        assert_eq!(
            labelled(&record(40, 1000)),
            1,
            "patient 40 has an MH Condition"
        );
        assert_eq!(labelled(&a), 0);
        let p = &a[0];
        assert_eq!(p["id"], "fpb-000042");
        assert_eq!(p["identifier"][0]["system"], CIN_SYSTEM);
        let birth: NaiveDate = p["birthDate"].as_str().unwrap().parse().unwrap();
        assert!((2006..=2024).contains(&chrono::Datelike::year(&birth)));
        assert_eq!(a[1]["subject"]["reference"], "Patient/fpb-000042");
        assert_ne!(patient(42, 1000, None, 0), patient(42, 1000, None, 1));
        assert_eq!(a[4]["resourceType"], "CareTeam");
        assert_eq!(a[5]["resourceType"], "Consent");
        assert_eq!(a[6]["status"], "active");
    }

    #[test]
    fn each_family_stem_prefixes_exactly_one_name() {
        let groups = family_groups(100_000);
        assert_eq!(groups, 10_000);
        let names: Vec<String> = (0..groups).map(family_name).collect();
        let stems: std::collections::HashSet<String> = (0..groups).map(family_stem).collect();
        assert_eq!(stems.len(), groups);
        for g in [0, 1, 17, 9_999] {
            let stem = family_stem(g).to_lowercase();
            let hits = names
                .iter()
                .filter(|n| n.to_lowercase().starts_with(&stem))
                .count();
            assert_eq!(hits, 1, "stem {stem}");
        }
        let namesakes = (0..100_000).filter(|i| i % groups == 17).count();
        assert_eq!(namesakes, 10);
    }
}
