#!/usr/bin/env python3
"""Validate the foster-passport demo data set with third-party code.

Setup (once):
    python3 -m venv /tmp/venv-r4
    /tmp/venv-r4/bin/pip install "fhir.resources==6.4.0" "pydantic[email]<2"
Run:
    /tmp/venv-r4/bin/python demo/check.py [demo-dir]

Checks, for every demo/*.json file:
  * it parses as FHIR R4 (fhir.resources 6.4.0 = FHIR 4.0.1, via construct_fhir_element);
  * the file is named <resourceType>-<id>.json and the id matches [A-Za-z0-9\\-\\.]{1,64};
  * no meta.versionId / meta.lastUpdated (the server sets those);
  * every reference is relative (<Type>/<id>) and resolves to a file in the folder;
  * CareTeam rule ctm-1: onBehalfOf only when the member is a Practitioner;
  * foster-passport conventions: each Patient has a Medi-Cal CIN, a county case number,
    at least one child-welfare-episode (service, period, county, source) and direct-member.
Exits non-zero on any error.
"""
import json
import re
import sys
from collections import Counter
from pathlib import Path

from fhir.resources import construct_fhir_element
from fhir.resources import __fhir_version__

BASE = "http://foster-passport.example/fhir"
ID_RE = re.compile(r"^[A-Za-z0-9\-\.]{1,64}$")
REL_REF_RE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-\.]{1,64})$")
CIN_RE = re.compile(r"^9[0-9]{7}[A-Z]$")
EPISODE_URL = f"{BASE}/StructureDefinition/child-welfare-episode"
DIRECT_MEMBER_URL = f"{BASE}/StructureDefinition/direct-member"
SERVICES = {"foster-care", "adoption-assistance", "family-maintenance"}


def walk_refs(node, path="$"):
    """Yield (path, reference-string) for every Reference.reference in the tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{path}.{k}"
            if k == "reference" and isinstance(v, str):
                yield p, v
            else:
                yield from walk_refs(v, p)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk_refs(v, f"{path}[{i}]")


def check_patient(d, err):
    idents = d.get("identifier", [])
    cins = [i for i in idents if i.get("system") == f"{BASE}/sid/medi-cal-cin"]
    if len(cins) != 1 or not CIN_RE.match(cins[0].get("value", "")):
        err("needs exactly one Medi-Cal CIN like 91234567A")
    cases = [i for i in idents
             if i.get("system", "").startswith(f"{BASE}/sid/county-case-number/")]
    if not cases:
        err("needs a county case number")
    exts = d.get("extension", [])
    eps = [e for e in exts if e.get("url") == EPISODE_URL]
    if not eps:
        err("needs at least one child-welfare-episode extension")
    for e in eps:
        sub = {s["url"]: s for s in e.get("extension", [])}
        if set(sub) != {"service", "period", "county", "source"}:
            err(f"episode sub-extensions are {sorted(sub)}")
            continue
        if sub["service"]["valueCoding"].get("code") not in SERVICES:
            err(f"unknown episode service {sub['service']['valueCoding']}")
        if sub["county"]["valueCoding"].get("system") != f"{BASE}/CodeSystem/california-county":
            err("episode county must use the california-county code system")
        if "start" not in sub["period"]["valuePeriod"]:
            err("episode period needs a start")
        if not sub["source"].get("valueString"):
            err("episode source must be a valueString")
    dm = [e for e in exts if e.get("url") == DIRECT_MEMBER_URL]
    if len(dm) != 1 or dm[0].get("valueBoolean") is not True:
        err("needs the direct-member extension (valueBoolean true)")
    if not d.get("generalPractitioner"):
        err("needs generalPractitioner (the medical home)")


def main():
    demo = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    files = sorted(demo.glob("*.json"))
    errors = []
    docs = {}
    present = set()  # every <Type>/<id> that has a file, valid or not
    counts = Counter()

    for f in files:
        def err(msg, f=f):
            errors.append(f"{f.name}: {msg}")
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            err(f"not JSON: {e}")
            continue
        rt, rid = d.get("resourceType"), d.get("id")
        if not rt or not rid:
            err("missing resourceType or id")
            continue
        present.add(f"{rt}/{rid}")
        if not ID_RE.match(rid):
            err(f"id {rid!r} does not match [A-Za-z0-9\\-\\.]{{1,64}}")
        if f.name != f"{rt}-{rid}.json":
            err(f"file name should be {rt}-{rid}.json")
        meta = d.get("meta", {})
        for k in ("versionId", "lastUpdated"):
            if k in meta:
                err(f"meta.{k} must not be set (the server sets it)")
        try:
            construct_fhir_element(rt, d)
        except Exception as e:  # pydantic.ValidationError and friends
            err(f"FHIR R4 validation failed:\n    " + str(e).replace("\n", "\n    "))
            continue
        key = f"{rt}/{rid}"
        if key in docs:
            err(f"duplicate {key}")
        docs[key] = d
        counts[rt] += 1

    for key, d in docs.items():
        fname = key.replace("/", "-") + ".json"

        def err(msg, fname=fname):
            errors.append(f"{fname}: {msg}")

        for path, r in walk_refs(d):
            m = REL_REF_RE.match(r)
            if not m:
                err(f"{path}: reference {r!r} is not relative <Type>/<id>")
            elif r not in present:
                err(f"{path}: reference {r!r} does not resolve to a file in demo/")
        if d["resourceType"] == "CareTeam":
            for i, p in enumerate(d.get("participant", [])):
                member = p.get("member", {}).get("reference", "")
                if "onBehalfOf" in p and not member.startswith("Practitioner/"):
                    err(f"participant[{i}]: onBehalfOf only allowed for Practitioner members (ctm-1)")
                if "start" not in p.get("period", {}):
                    err(f"participant[{i}]: period.start missing")
                if not p.get("role"):
                    err(f"participant[{i}]: role missing")
        if d["resourceType"] == "Patient":
            check_patient(d, err)

    print(f"fhir.resources validates FHIR {__fhir_version__}; {len(files)} files in {demo}")
    for rt, n in sorted(counts.items()):
        print(f"  {rt:20s} {n:4d}")
    if errors:
        print(f"\n{len(errors)} error(s):")
        for e in errors:
            print(" -", e)
        sys.exit(1)
    print("OK: every file is valid FHIR R4 and every reference resolves.")


if __name__ == "__main__":
    main()
