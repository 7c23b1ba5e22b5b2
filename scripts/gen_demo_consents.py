#!/usr/bin/env python3
"""Write the demo's privacy Consents (demo/Consent-*.json): for each youth, the county social
worker's standing consent for the youth's current CareTeam (treatment and care coordination,
no sensitive data); and Maria's own consent releasing her minor-consented counselling record
to her PCP only. Re-run after editing CareTeams."""
import json
import pathlib

demo = pathlib.Path(__file__).resolve().parent.parent / "demo"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
IRCP = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}


def consent(cid, patient, performer, organization, provision, policy_text):
    return {
        "resourceType": "Consent",
        "id": cid,
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "dateTime": "2026-07-02T09:00:00-07:00",
        "performer": [{"reference": performer}],
        "organization": [{"reference": organization}],
        "policy": [{"uri": "http://foster-passport.example/fhir/policy/" + policy_text}],
        "provision": provision,
    }


for path in sorted(demo.glob("CareTeam-*.json")):
    team = json.loads(path.read_text())
    patient = team["subject"]["reference"].split("/")[1]
    current_sw = [
        p for p in team["participant"]
        if p["role"][0]["coding"][0]["code"] == "county-social-worker" and "end" not in p.get("period", {})
    ]
    if not current_sw:
        continue
    sw = current_sw[0]
    c = consent(
        f"consent-{patient.removeprefix('youth-')}-careteam",
        patient,
        sw["member"]["reference"],
        sw["onBehalfOf"]["reference"],
        {
            "type": "permit",
            "actor": [{"role": IRCP, "reference": {"reference": f"CareTeam/{team['id']}"}}],
            "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"}]}],
            "purpose": [{"system": ACT, "code": "TREAT"}, {"system": ACT, "code": "COC"}],
        },
        "standing-care-team-consent",
    )
    (demo / f"Consent-{c['id']}.json").write_text(json.dumps(c, indent=2) + "\n")

maria = consent(
    "consent-maria-counselling-pcp",
    "youth-maria-lopez",
    "Patient/youth-maria-lopez",
    "Organization/la-dcfs",
    {
        "type": "permit",
        "actor": [{"role": IRCP, "reference": {"reference": "Practitioner/pcp-amara-whitfield"}}],
        "securityLabel": [
            {"system": ACT, "code": "PSY"},
            {"system": "http://foster-passport.example/fhir/CodeSystem/security-label", "code": "minor-consented"},
        ],
        "data": [{"meaning": "instance", "reference": {"reference": "Condition/cond-maria-depression"}}],
    },
    "minor-consent-release",
)
(demo / f"Consent-{maria['id']}.json").write_text(json.dumps(maria, indent=2) + "\n")
