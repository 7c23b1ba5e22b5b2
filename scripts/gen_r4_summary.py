#!/usr/bin/env python3
"""Write src/fhir/r4_summary.json: per R4 resource type, its top-level elements marked
isSummary (for _summary=true) and its mandatory top-level elements (min >= 1, for
_summary=text), read from the base StructureDefinitions of npm hl7.fhir.r4.examples@4.0.1.

Usage: scripts/gen_r4_summary.py PACKAGE_DIR  (the extracted package/ folder)
"""
import glob, json, os, sys

package = sys.argv[1]
out = {}
for path in sorted(glob.glob(os.path.join(package, "StructureDefinition-*.json"))):
    sd = json.load(open(path))
    if sd.get("kind") != "resource" or sd.get("derivation") != "specialization" or sd.get("abstract"):
        continue
    rtype = sd["type"]
    summary, mandatory = [], []
    for el in sd["snapshot"]["element"]:
        parts = el["path"].split(".")
        if len(parts) != 2:
            continue
        name = parts[1]
        if el.get("isSummary"):
            summary.append(name)
        if el.get("min", 0) >= 1:
            mandatory.append(name)
    out[rtype] = {"summary": summary, "mandatory": mandatory}
target = os.path.join(os.path.dirname(__file__), "..", "src", "fhir", "r4_summary.json")
with open(target, "w") as f:
    json.dump(out, f, separators=(",", ":"), sort_keys=True)
print(f"{len(out)} resource types -> {os.path.normpath(target)}")
