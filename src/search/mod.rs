//! Search parameters: which ones the server supports, parsing them from queries, and the index
//! rows extracted on write.
//!
//! This increment supports `_id` on every type and the `identifier` token parameter where the R4
//! definitions (`conformance/search-parameters.json`) give a type one on its `identifier`
//! element. The CapabilityStatement lists exactly these.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::error::{FhirError, FhirResult};
use crate::store::{Criterion, TokenMatch, TokenRow};

/// The R4 core SearchParameter Bundle.
const CORE_PARAMETERS: &str = include_str!("../../conformance/search-parameters.json");

/// A supported search parameter, as the CapabilityStatement lists it.
#[derive(Debug, Clone)]
pub struct SupportedParam {
    /// Parameter code.
    pub code: &'static str,
    /// Canonical URL of its definition.
    pub definition: String,
    /// Search type (`token`, …).
    pub kind: &'static str,
    /// Short description.
    pub documentation: String,
}

/// Supported parameters per resource type.
pub struct SearchRegistry {
    by_type: HashMap<String, Vec<SupportedParam>>,
    identifier_types: HashSet<String>,
}

impl SearchRegistry {
    /// Load from the embedded conformance resources.
    pub fn load() -> FhirResult<Self> {
        let bundle: Value = serde_json::from_str(CORE_PARAMETERS).map_err(FhirError::internal)?;
        let mut identifier_types = HashSet::new();
        let mut identifier_defs: HashMap<String, (String, String)> = HashMap::new();
        for entry in bundle["entry"].as_array().into_iter().flatten() {
            let sp = &entry["resource"];
            if sp["code"] != "identifier" || sp["type"] != "token" {
                continue;
            }
            let expression = sp["expression"].as_str().unwrap_or_default();
            for base in sp["base"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                // Only the plain `Type.identifier` path; other shapes need the FHIRPath engine.
                let plain = format!("{base}.identifier");
                if expression.split('|').any(|part| part.trim() == plain) {
                    identifier_types.insert(base.to_string());
                    identifier_defs.insert(
                        base.to_string(),
                        (
                            sp["url"].as_str().unwrap_or_default().to_string(),
                            sp["description"].as_str().unwrap_or_default().to_string(),
                        ),
                    );
                }
            }
        }
        let mut by_type: HashMap<String, Vec<SupportedParam>> = HashMap::new();
        for t in crate::fhir::structure::resource_types() {
            let mut params = vec![SupportedParam {
                code: "_id",
                definition: "http://hl7.org/fhir/SearchParameter/Resource-id".into(),
                kind: "token",
                documentation: "Logical id of this artifact".into(),
            }];
            if let Some((url, doc)) = identifier_defs.get(*t) {
                params.push(SupportedParam {
                    code: "identifier",
                    definition: url.clone(),
                    kind: "token",
                    documentation: doc.clone(),
                });
            }
            by_type.insert(t.to_string(), params);
        }
        Ok(SearchRegistry {
            by_type,
            identifier_types,
        })
    }

    /// The parameters supported on a type.
    pub fn params(&self, rtype: &str) -> &[SupportedParam] {
        self.by_type.get(rtype).map_or(&[], Vec::as_slice)
    }

    /// Index rows for a resource about to be stored.
    pub fn index_tokens(&self, rtype: &str, resource: &Value) -> Vec<TokenRow> {
        let mut rows = Vec::new();
        if !self.identifier_types.contains(rtype) {
            return rows;
        }
        let identifiers = match resource.get("identifier") {
            Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => vec![],
        };
        for ident in identifiers {
            if let Some(code) = ident.get("value").and_then(Value::as_str) {
                rows.push(TokenRow {
                    param: "identifier",
                    system: ident
                        .get("system")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    code: code.to_string(),
                });
            }
        }
        rows
    }

    /// Parse the criteria of a conditional interaction (`If-None-Exist` value). Every parameter
    /// must be understood: ignoring one could match the wrong resource.
    pub fn parse_conditional(&self, rtype: &str, query: &str) -> FhirResult<Vec<Criterion>> {
        let query = query.strip_prefix('?').unwrap_or(query);
        let query = query.rsplit_once('?').map_or(query, |(_, q)| q);
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        self.parse_conditional_pairs(rtype, &pairs)
    }

    /// As [`Self::parse_conditional`], from decoded pairs.
    pub fn parse_conditional_pairs(
        &self,
        rtype: &str,
        pairs: &[(String, String)],
    ) -> FhirResult<Vec<Criterion>> {
        let parsed = self.parse(rtype, pairs)?;
        if let Some((name, _)) = parsed.unknown.first() {
            return Err(FhirError::bad_value(
                "not-supported",
                format!("conditional criteria use the unsupported parameter `{name}`"),
                name.clone(),
            ));
        }
        if parsed.criteria.is_empty() {
            return Err(FhirError::bad_request(
                "conditional criteria must name at least one search parameter",
            ));
        }
        Ok(parsed.criteria)
    }

    /// Parse search parameters; result-control parameters are left to the caller.
    pub fn parse(&self, rtype: &str, pairs: &[(String, String)]) -> FhirResult<ParsedQuery> {
        let mut out = ParsedQuery::default();
        for (name, value) in pairs {
            match name.as_str() {
                "_id" => {
                    let ids: Vec<String> = value.split(',').map(str::to_string).collect();
                    if ids.iter().any(|i| !crate::fhir::ids::is_valid_id(i)) {
                        return Err(FhirError::bad_value(
                            "value",
                            format!("_id `{value}` holds an invalid id"),
                            "_id",
                        ));
                    }
                    out.criteria.push(Criterion::Id(ids));
                }
                "identifier" if self.identifier_types.contains(rtype) => {
                    let values = value
                        .split(',')
                        .map(|v| parse_token(name, v))
                        .collect::<FhirResult<Vec<_>>>()?;
                    out.criteria.push(Criterion::Token {
                        param: "identifier",
                        values,
                    });
                }
                "_count" | "_offset" | "_format" | "_total" => {
                    out.control.push((name.clone(), value.clone()))
                }
                _ => out.unknown.push((name.clone(), value.clone())),
            }
        }
        Ok(out)
    }
}

/// Criteria, result-control parameters and parameters not understood.
#[derive(Debug, Default)]
pub struct ParsedQuery {
    /// Criteria to AND.
    pub criteria: Vec<Criterion>,
    /// `_count`, `_offset`, …
    pub control: Vec<(String, String)>,
    /// Parameters the server does not support (reported, or 400 under strict handling).
    pub unknown: Vec<(String, String)>,
}

/// Parse one token value: `system|code`, `|code`, `system|` or `code`.
fn parse_token(param: &str, value: &str) -> FhirResult<TokenMatch> {
    if value.is_empty() {
        return Err(FhirError::bad_value(
            "value",
            format!("`{param}` has an empty value"),
            param.to_string(),
        ));
    }
    Ok(match value.split_once('|') {
        None => TokenMatch {
            system: None,
            code: Some(value.to_string()),
        },
        Some((system, code)) => TokenMatch {
            system: Some(system.to_string()),
            code: (!code.is_empty()).then(|| code.to_string()),
        },
    })
}
