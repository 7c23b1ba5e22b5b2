#!/usr/bin/env python3
"""Judge FHIR R4 JSON files with fhir.resources 6.4.0 (FHIR 4.0.1), a model nobody here wrote.

Usage: r4_check.py FILE...
Prints one line `FILE: problem` per file it refuses and exits 1 if any; prints `ok N` otherwise.
"""
import json
import sys

from fhir.resources import __fhir_version__, construct_fhir_element

assert __fhir_version__ == "4.0.1", __fhir_version__

bad = 0
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    try:
        construct_fhir_element(data["resourceType"], data)
    except Exception as e:  # pydantic.ValidationError and friends: report them all
        bad += 1
        print(f"{path}: {' '.join(str(e).split())}")
if bad:
    sys.exit(1)
print(f"ok {len(sys.argv) - 1}")
