#!/usr/bin/env python3
"""Write the snapshot of every StructureDefinition in profiles/ from its differential.

Usage (from the repository root):
    python3 scripts/gen_profile_snapshots.py [--check] [--base DIR]

The differential is the source; the snapshot is generated: each base element (from the base
resource's snapshot in DIR, default ../shared/data/fhir-r4-core) in order, with the
differential's element of the same id merged onto it, followed right after by the
differential's slices and the children the base does not list (datatype children, e.g.
`Patient.identifier:cin.system`: the R4 datatype StructureDefinitions are not in DIR, so they
are taken from the differential as written). Constraints the differential adds get `source`
= the profile's url. Extensions derive from Extension, whose five base elements are written
out below (StructureDefinition-Extension is not in DIR either).

--check: write nothing; exit 1 and name each file whose committed snapshot differs.
"""

import copy
import glob
import json
import os
import sys

EXTENSION_BASE = [
    {"id": "Extension", "path": "Extension", "short": "Optional Extensions Element", "min": 0, "max": "*",
     "base": {"path": "Extension", "min": 0, "max": "*"}},
    {"id": "Extension.id", "path": "Extension.id", "min": 0, "max": "1",
     "base": {"path": "Element.id", "min": 0, "max": "1"}, "type": [{"code": "http://hl7.org/fhirpath/System.String"}]},
    {"id": "Extension.extension", "path": "Extension.extension", "min": 0, "max": "*",
     "base": {"path": "Element.extension", "min": 0, "max": "*"}, "type": [{"code": "Extension"}]},
    {"id": "Extension.url", "path": "Extension.url", "min": 1, "max": "1",
     "base": {"path": "Extension.url", "min": 1, "max": "1"}, "type": [{"code": "http://hl7.org/fhirpath/System.String"}]},
    {"id": "Extension.value[x]", "path": "Extension.value[x]", "min": 0, "max": "1",
     "base": {"path": "Extension.value[x]", "min": 0, "max": "1"},
     "type": [{"code": t} for t in [
         "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant",
         "integer", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url", "uuid",
         "Address", "Age", "Annotation", "Attachment", "CodeableConcept", "Coding", "ContactPoint", "Count",
         "Distance", "Duration", "HumanName", "Identifier", "Money", "Period", "Quantity", "Range", "Ratio",
         "Reference", "SampledData", "Signature", "Timing", "ContactDetail", "Contributor", "DataRequirement",
         "Expression", "ParameterDefinition", "RelatedArtifact", "TriggerDefinition", "UsageContext", "Dosage",
         "Meta"]]},
]


def base_elements(sd, base_dir):
    if sd["type"] == "Extension":
        return copy.deepcopy(EXTENSION_BASE)
    path = os.path.join(base_dir, f"StructureDefinition-{sd['type']}.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)["snapshot"]["element"]


def merge(base, diff, url):
    out = copy.deepcopy(base)
    for key, value in diff.items():
        if key == "constraint":
            added = [dict(c, source=url) for c in value]
            out["constraint"] = out.get("constraint", []) + added
        elif key in ("id", "path"):
            out[key] = value
        else:
            out[key] = copy.deepcopy(value)
    return out


def strip_slices(element_id):
    """`Patient.identifier:cin.system` -> `Patient.identifier.system`."""
    return ".".join(seg.split(":")[0] for seg in element_id.split("."))


def snapshot(sd, base_dir):
    url = sd["url"]
    base = base_elements(sd, base_dir)
    diff = sd["differential"]["element"]
    by_id = {e["id"]: e for e in diff}
    base_ids = {e["id"] for e in base}
    base_by_id = {e["id"]: e for e in base}
    # Differential elements not in the base, grouped under the base element they follow.
    extra = {}
    for e in diff:
        if e["id"] in base_ids:
            continue
        anchor = strip_slices(e["id"])
        while anchor not in base_ids:
            anchor = anchor.rsplit(".", 1)[0]
        extra.setdefault(anchor, []).append(e)
    out = []
    for b in base:
        out.append(merge(b, by_id.get(b["id"], {}), url))
        for e in extra.get(b["id"], []):
            template = base_by_id.get(strip_slices(e["id"]), {})
            merged = merge(template, e, url)
            merged.setdefault("min", 0)
            merged.setdefault("max", "*")
            out.append(merged)
    return {"element": out}


def main(argv):
    check = "--check" in argv
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base_dir = os.path.join(root, "..", "shared", "data", "fhir-r4-core")
    if "--base" in argv:
        base_dir = argv[argv.index("--base") + 1]
    stale = []
    for path in sorted(glob.glob(os.path.join(root, "profiles", "StructureDefinition-*.json"))):
        with open(path, encoding="utf-8") as f:
            sd = json.load(f)
        wanted = dict(sd)
        wanted.pop("snapshot", None)
        keys = list(wanted)
        # The snapshot goes right before the differential.
        at = keys.index("differential")
        items = list(wanted.items())
        items.insert(at, ("snapshot", snapshot(sd, base_dir)))
        wanted = dict(items)
        text = json.dumps(wanted, indent=2, ensure_ascii=False) + "\n"
        with open(path, encoding="utf-8") as f:
            current = f.read()
        if text != current:
            stale.append(os.path.relpath(path, root))
            if not check:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
    if check and stale:
        print("snapshots out of date (run scripts/gen_profile_snapshots.py):", *stale, sep="\n  ")
        return 1
    if not check:
        print(f"{len(stale)} file(s) rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
