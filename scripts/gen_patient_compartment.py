#!/usr/bin/env python3
"""Write conformance/patient-compartment.json: for each resource type, the search parameters
that put a resource in a Patient's compartment, from the R4 CompartmentDefinition (in
../shared/data/fhir-r4-core), widened where R4 leaves gaps (DESIGN.md section 5)."""
import json
import pathlib

here = pathlib.Path(__file__).resolve().parent.parent
source = here.parent / "shared/data/fhir-r4-core/CompartmentDefinition-patient.json"
definition = json.loads(source.read_text())
params = {r["code"]: r["param"] for r in definition["resource"] if r.get("param")}
# R4 leaves Task out of the compartment; a Task `for` the youth is about the youth.
params.setdefault("Task", []).append("patient")
out = {
    "source": "http://hl7.org/fhir/CompartmentDefinition/patient (R4 4.0.1), plus Task.patient",
    "params": dict(sorted(params.items())),
}
(here / "conformance/patient-compartment.json").write_text(json.dumps(out, indent=1) + "\n")
