#!/usr/bin/env python3
"""Generate src/fhir/r4_elements.json, the compact R4 type table read by src/fhir/structure.rs.

Usage (from the repository root):
    python3 scripts/gen_r4_elements.py [path/to/fhir.schema.json] [--sd FILE_OR_DIR ...]

The default schema path is ../shared/data/fhir-r4-json-schema/fhir.schema.json.

The schema's `required` lists omit most required primitives (Consent.status, Bundle.type,
ServiceRequest.intent, ...). Base StructureDefinitions (derivation = specialization) given
with --sd add every element with min >= 1 to the required lists; by default the snapshots in
../shared/data/fhir-r4-core are used (13 resources). The committed table covers every
resource and datatype; it was made with the base StructureDefinitions of the HL7 package:

    python3 scripts/gen_r4_elements.py --sd target/third-party/r4-examples/package

(`.ci/run` unpacks npm hl7.fhir.r4.examples@4.0.1 there.)

`generated_from` in the output records which sources were used.

Output layout (all keys are short on purpose, the file is embedded in the binary):
    {
      "primitives": {"date": "<anchored regex>", "xhtml": null, ...},
      "resources":  ["Account", ...],            # sorted
      "enums":      [["male", "female", ...], ...],
      "types": {
        "Patient": {
          "p": {"gender": "code#3", "name": "HumanName[]", "deceasedBoolean": "boolean|deceased", ...},
          "r": ["...", "value[x]"]               # required properties, omitted when empty
        },
        ...
      }
    }

A property spec is `Type`, then `[]` for arrays, then `#N` (index into `enums`) for
required-binding codes, then `|base` when the property is one type of a choice element
`base[x]`. `ResourceList` means "any resource". `_foo` shadow properties and `resourceType`
are not listed: the validator derives them (a `_foo` exists exactly when `foo` is primitive).
"""

import argparse
import glob
import json
import os
import sys

DEFAULT_SCHEMA = "../shared/data/fhir-r4-json-schema/fhir.schema.json"
DEFAULT_SD_DIR = "../shared/data/fhir-r4-core"
OUTPUT = "src/fhir/r4_elements.json"

# The schema gives base64Binary no pattern at its definition, only on inline choice types.
BASE64_FALLBACK = r"^(\s*([0-9a-zA-Z\+/=]){4}\s*)+$"


def ref_type(spec: dict) -> str | None:
    item = spec.get("items", spec)
    ref = item.get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


def structure_definitions(paths: list[str]) -> list[dict]:
    """Base (specialization) StructureDefinitions found in the given files/dirs."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(glob.glob(os.path.join(path, "StructureDefinition-*.json")))
        else:
            files.append(path)
    found = []
    for file in files:
        with open(file, encoding="utf-8") as f:
            sd = json.load(f)
        if (sd.get("resourceType") == "StructureDefinition"
                and sd.get("derivation") == "specialization"
                and sd.get("kind") in ("resource", "complex-type")
                and "snapshot" in sd):
            found.append(sd)
    return found


def sd_required(defs: dict, types: dict, sds: list[dict]) -> int:
    """Adds min >= 1 elements of base StructureDefinitions to the types' required lists."""
    added = 0
    for sd in sds:
        for element in sd["snapshot"]["element"]:
            segs = element["path"].split(".")
            if element.get("min", 0) < 1 or len(segs) < 2 or segs[0] not in types:
                continue
            cur = segs[0]
            for seg in segs[1:-1]:
                cur = ref_type(defs.get(cur, {}).get("properties", {}).get(seg, {}))
                if cur is None:
                    break
            if cur is None or cur not in types:
                print(f"warning: cannot place {element['path']}", file=sys.stderr)
                continue
            last, entry = segs[-1], types[cur]
            if last.endswith("[x]"):
                base = last[:-3]
                if not any(spec.endswith(f"|{base}") for spec in entry["p"].values()):
                    print(f"warning: no choice {cur}.{last}", file=sys.stderr)
                    continue
            elif last not in entry["p"]:
                print(f"warning: no element {cur}.{last}", file=sys.stderr)
                continue
            required = entry.setdefault("r", [])
            if last not in required:
                required.append(last)
                added += 1
    return added


def main() -> None:
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("schema", nargs="?", default=os.path.join(repo_root, DEFAULT_SCHEMA))
    parser.add_argument("--sd", action="append", help="StructureDefinition file or directory")
    args = parser.parse_args()
    schema_path = args.schema
    sd_paths = args.sd
    if sd_paths is None:
        default_sd = os.path.join(repo_root, DEFAULT_SD_DIR)
        sd_paths = [default_sd] if os.path.isdir(default_sd) else []
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    defs = schema["definitions"]

    resources = sorted(schema["discriminator"]["mapping"])
    one_of = sorted(r["$ref"].rsplit("/", 1)[-1] for r in schema["oneOf"])
    if one_of != resources:
        sys.exit("discriminator.mapping and oneOf disagree on the resource list")

    primitives = {}
    for name, d in defs.items():
        if "properties" in d or "oneOf" in d:
            continue
        primitives[name] = d.get("pattern")
    if primitives.get("base64Binary") is None:
        primitives["base64Binary"] = BASE64_FALLBACK

    # Inline (choice) primitives carry a pattern instead of a $ref: recover the type name
    # from the property-name suffix, longest match first (valueDateTime is dateTime, not time).
    by_suffix = sorted(primitives, key=len, reverse=True)

    def inline_type(prop: str, spec: dict) -> str:
        for prim in by_suffix:
            cap = prim[0].upper() + prim[1:]
            if prop.endswith(cap) and len(prop) > len(cap):
                pattern = primitives[prim]
                if spec.get("pattern") != pattern:
                    sys.exit(f"inline pattern of {prop} differs from {prim}")
                return prim
        sys.exit(f"cannot type inline property {prop}")

    enums: list[list[str]] = []
    enum_index: dict[tuple, int] = {}

    def enum_id(codes: list[str]) -> int:
        key = tuple(codes)
        if key not in enum_index:
            enum_index[key] = len(enums)
            enums.append(list(codes))
        return enum_index[key]

    types = {}
    for name, d in defs.items():
        props = d.get("properties")
        if props is None:
            continue
        out = {}
        kinds = {}
        for prop, spec in props.items():
            # `resourceType` is a `const` in resources (checked by the validator), but a plain
            # code in ExampleScenario.instance.
            if prop.startswith("_") or "const" in spec:
                continue
            is_array = spec.get("type") == "array"
            item = spec["items"] if is_array else spec
            codes = None
            if "$ref" in item:
                typ = item["$ref"].rsplit("/", 1)[-1]
            elif "enum" in item:
                typ, codes = "code", item["enum"]
                # The schema predates the 4.0.1 technical correction: its FHIRVersion list
                # stops at 4.0.0, yet every R4 4.0.1 resource declares fhirVersion 4.0.1.
                if "4.0.0" in codes and "4.0.1" not in codes:
                    codes = codes + ["4.0.1"]
            elif "pattern" in item:
                typ = inline_type(prop, item)
            else:
                sys.exit(f"unexpected property shape {name}.{prop}: {spec}")
            if typ not in defs:
                sys.exit(f"{name}.{prop} refers to unknown type {typ}")
            kinds[prop] = (typ, spec.get("description"))
            text = typ + ("[]" if is_array else "")
            if codes is not None:
                text += f"#{enum_id(codes)}"
            out[prop] = text

        # Choice elements: two or more properties `base` + TypeName sharing one description.
        groups: dict[tuple, list[str]] = {}
        for prop, (typ, desc) in kinds.items():
            cap = typ[0].upper() + typ[1:]
            if prop.endswith(cap) and len(prop) > len(cap):
                groups.setdefault((prop[: -len(cap)], desc), []).append(prop)
        for (base, _), members in groups.items():
            if len(members) > 1:
                for prop in members:
                    out[prop] += f"|{base}"

        entry = {"p": out}
        required = [r for r in d.get("required", []) if r in out]
        if required:
            entry["r"] = required
        types[name] = entry

    sds = structure_definitions(sd_paths)
    added = sd_required(defs, types, sds)
    versions = sorted({sd.get("fhirVersion", "?") for sd in sds})
    generated_from = (f"{os.path.basename(schema_path)}; {len(sds)} base StructureDefinitions "
                      f"(FHIR {', '.join(versions) or '-'}) adding {added} required elements")

    table = {"generated_from": generated_from, "primitives": primitives, "resources": resources, "enums": enums, "types": types}
    out_path = os.path.join(repo_root, OUTPUT)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(table, f, separators=(",", ":"), ensure_ascii=False)
        f.write("\n")
    print(f"wrote {out_path}: {len(types)} types, {len(resources)} resources, "
          f"{len(primitives)} primitives, {len(enums)} enums, {added} required elements from "
          f"StructureDefinitions, {os.path.getsize(out_path)} bytes")


if __name__ == "__main__":
    main()
