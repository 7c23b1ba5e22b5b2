//! Rewriting references inside a resource (transaction `urn:uuid:` resolution).

use std::collections::HashMap;

use serde_json::Value;

/// Replace every string equal to a key of `mapping` by its value, anywhere in the resource,
/// and occurrences inside narrative `div`s (R4 http.html#trules asks for both).
pub fn rewrite(value: &mut Value, mapping: &HashMap<String, String>) {
    if mapping.is_empty() {
        return;
    }
    match value {
        Value::String(s) => {
            if let Some(new) = mapping.get(s.as_str()) {
                *s = new.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, mapping)),
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "div"
                    && let Value::String(div) = v
                {
                    for (from, to) in mapping {
                        if div.contains(from.as_str()) {
                            *div = div.replace(from.as_str(), to);
                        }
                    }
                    continue;
                }
                rewrite(v, mapping);
            }
        }
        _ => {}
    }
}

/// Collect `reference` values of the conditional form `Type?criteria`.
pub fn collect_conditional(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| collect_conditional(v, out)),
        Value::Object(map) => {
            for (key, v) in map {
                if key == "reference"
                    && let Value::String(s) = v
                    && s.contains('?')
                    && !s.starts_with("urn:")
                    && !s.starts_with("http")
                    && !out.contains(s)
                {
                    out.push(s.clone());
                }
                collect_conditional(v, out);
            }
        }
        _ => {}
    }
}
