//! The HL7 R4 JSON Schema as a third-party judge of every resource we receive.
//!
//! The schema's top level is a `oneOf` over every resource type, far too big to compile in one
//! go, so one validator is compiled per resource type (`"$ref": "#/definitions/<Type>"`, Draft
//! 6) and cached for the test binary. A Bundle's own definition refers to every resource type
//! through `entry.resource` and `entry.response.outcome`; its shell is validated with those two
//! elements relaxed to "an object", and each contained resource with its own type's validator.
//!
//! Two defects of the published schema (not of FHIR) are corrected before compiling, or the
//! judge would reject valid R4 content:
//!
//! - Its FHIR version enums stop at `4.0.0`: `4.0.1`, the version of R4 itself, is added, or
//!   every CapabilityStatement (our `/metadata`) and ImplementationGuide would fail.
//! - FHIR's regexes use XML Schema's `\s`, which is only space, tab, CR and LF; the Rust engine
//!   reads `\s` as any Unicode white space, so a no-break space (U+00A0) in a `string` or a
//!   `code` would be refused (the official example DiagnosticReport-gingival-mass has one). The
//!   four patterns that use `\s`/`\S` are rewritten with the XML Schema meaning spelled out.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use jsonschema::Validator;
use serde_json::Value;

const SCHEMA_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/fhir-r4-json-schema/fhir.schema.json"
);

/// The key under which the relaxed Bundle-shell validator is cached.
const BUNDLE_SHELL: &str = "Bundle (shell)";

static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    let text = std::fs::read_to_string(SCHEMA_PATH).unwrap_or_else(|e| {
        panic!("read the HL7 R4 JSON Schema at {SCHEMA_PATH}: {e} (shared/ must sit beside the checkout)")
    });
    let mut schema: Value = serde_json::from_str(&text).expect("parse fhir.schema.json");
    correct(&mut schema);
    schema
});

/// XML Schema white space, as FHIR's regexes mean `\s`.
const XML_SPACE: &str = "[ \\t\\n\\r]";
const XML_NON_SPACE: &str = "[^ \\t\\n\\r]";

/// Applies the corrections described in the module documentation.
fn correct(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if let Some(Value::Array(values)) = map.get_mut("enum")
                && values.iter().any(|v| v == "4.0.0")
                && values.iter().any(|v| v == "3.0.1")
                && !values.iter().any(|v| v == "4.0.1")
            {
                values.push(Value::String("4.0.1".into()));
            }
            if let Some(Value::String(pattern)) = map.get_mut("pattern") {
                *pattern = xml_schema_pattern(pattern);
            }
            map.values_mut().for_each(correct);
        }
        Value::Array(items) => items.iter_mut().for_each(correct),
        _ => {}
    }
}

fn xml_schema_pattern(pattern: &str) -> String {
    match pattern {
        // string, markdown: space, CR, LF, tab or any non-space = any character.
        r"^[ \r\n\t\S]+$" => r"^[\s\S]+$".to_string(),
        // code
        r"^[^\s]+(\s[^\s]+)*$" => format!("^{XML_NON_SPACE}+({XML_SPACE}{XML_NON_SPACE}+)*$"),
        // uri, url, canonical, …
        r"^\S*$" => format!("^{XML_NON_SPACE}*$"),
        // base64Binary
        r"^(\s*([0-9a-zA-Z\+/=]){4}\s*)+$" => {
            format!("^({XML_SPACE}*([0-9a-zA-Z\\+/=]){{4}}{XML_SPACE}*)+$")
        }
        other => {
            assert!(
                !other.contains(r"\s") && !other.contains(r"\S"),
                "unexpected white-space pattern in the R4 schema: {other}"
            );
            other.to_string()
        }
    }
}

type Slot = Arc<OnceLock<Arc<Validator>>>;

/// One compiled validator per resource type seen. A slot per type lets different types compile
/// in parallel while each is compiled once.
static VALIDATORS: LazyLock<Mutex<HashMap<String, Slot>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Whether the schema defines `ty` as a resource type.
pub fn is_known_type(ty: &str) -> bool {
    SCHEMA["definitions"]["ResourceList"]["oneOf"]
        .as_array()
        .expect("ResourceList.oneOf")
        .iter()
        .any(|r| r["$ref"].as_str() == Some(&format!("#/definitions/{ty}")))
}

fn validator(key: &str) -> Arc<Validator> {
    let slot = {
        let mut map = VALIDATORS.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key.to_string()).or_default().clone()
    };
    slot.get_or_init(|| Arc::new(compile(key))).clone()
}

fn compile(key: &str) -> Validator {
    let mut schema = SCHEMA.clone();
    let root = schema.as_object_mut().expect("schema is an object");
    root.remove("oneOf");
    root.remove("discriminator");
    let ty = if key == BUNDLE_SHELL {
        let defs = root["definitions"].as_object_mut().expect("definitions");
        let any_object = serde_json::json!({ "type": "object" });
        defs["Bundle_Entry"]["properties"]["resource"] = any_object.clone();
        defs["Bundle_Response"]["properties"]["outcome"] = any_object;
        "Bundle"
    } else {
        key
    };
    root.insert(
        "$ref".to_string(),
        Value::String(format!("#/definitions/{ty}")),
    );
    jsonschema::draft6::new(&schema)
        .unwrap_or_else(|e| panic!("compile the R4 JSON Schema for {key}: {e}"))
}

/// Every schema error in a resource, as `Type at /path: message` lines (empty when valid).
/// Bundles are checked entry by entry, recursively.
pub fn check_resource(resource: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    check_into(resource, "", &mut problems);
    problems
}

fn check_into(resource: &Value, at: &str, problems: &mut Vec<String>) {
    let Some(ty) = resource.get("resourceType").and_then(Value::as_str) else {
        problems.push(format!("{at}: not a resource (no resourceType string)"));
        return;
    };
    if !is_known_type(ty) {
        problems.push(format!("{at}: unknown resourceType {ty:?}"));
        return;
    }
    if ty == "Bundle" {
        let mut shell = resource.clone();
        if let Some(entries) = shell.get_mut("entry").and_then(Value::as_array_mut) {
            for entry in entries {
                if let Some(entry) = entry.as_object_mut() {
                    entry.remove("resource");
                    if let Some(response) = entry.get_mut("response").and_then(Value::as_object_mut)
                    {
                        response.remove("outcome");
                    }
                }
            }
        }
        collect(&validator(BUNDLE_SHELL), &shell, ty, at, problems);
        for (i, entry) in resource["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(inner) = entry.get("resource") {
                check_into(inner, &format!("{at}/entry/{i}/resource"), problems);
            }
            if let Some(outcome) = entry.get("response").and_then(|r| r.get("outcome")) {
                check_into(
                    outcome,
                    &format!("{at}/entry/{i}/response/outcome"),
                    problems,
                );
            }
        }
    } else {
        collect(&validator(ty), resource, ty, at, problems);
    }
}

fn collect(
    validator: &Validator,
    instance: &Value,
    ty: &str,
    at: &str,
    problems: &mut Vec<String>,
) {
    const MAX: usize = 25;
    for (n, error) in validator.iter_errors(instance).enumerate() {
        if n == MAX {
            problems.push(format!("{ty} at {at}: … more errors"));
            break;
        }
        let message = error.to_string();
        let message = if message.len() > 300 {
            format!("{}…", &message[..message.floor_char_boundary(300)])
        } else {
            message
        };
        problems.push(format!("{ty} at {at}{}: {message}", error.instance_path()));
    }
}
