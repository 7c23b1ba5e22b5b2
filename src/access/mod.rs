//! The access layer: every resource that leaves the server, and every write, passes here.
//!
//! A request is made by a [`Requester`] (from its token). For each resource type and SMART
//! permission letter, its scopes give a [`Grant`]: everything, nothing, or some resources —
//! those in the token patient's compartment (`patient/` scopes) and those matching a granular
//! scope's query (`?category=…`). Searches AND the grant into their query (so paging and
//! totals stay right); single resources (reads, history entries, includes, write bodies) are
//! checked one by one. Consent rules (DESIGN.md section 5) will add to [`Access`], not bypass it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use serde_json::Value;

use crate::auth::scopes::{Context, Letter, ScopeSet};
use crate::auth::tokens::AccessClaims;
use crate::error::{FhirError, FhirResult};
use crate::interactions::Ctx;
use crate::search::model::{IndexValue, ParamKind, QueryValue};
use crate::store::Reader;
use crate::store::query::{Criterion, Modifier, ParamRef, Query};

/// Who is asking, from their access token.
#[derive(Debug, Clone)]
pub struct Requester {
    /// The client.
    pub client_id: String,
    /// The token's subject (user or client).
    pub subject: String,
    /// Granted scopes.
    pub scopes: ScopeSet,
    /// Patient context (`patient/` scopes bind to it).
    pub patient: Option<String>,
    /// The user's resource, relative (`Practitioner/1`).
    pub fhir_user: Option<String>,
    /// `Organization/ID` the requester acts for.
    pub organization: Option<String>,
    /// The client's role.
    pub role: Option<String>,
    /// Purposes of use.
    pub purpose: Vec<String>,
    /// The token id.
    pub token_id: String,
}

impl Requester {
    /// The requester a verified token describes. `fhirUser` may be absolute (an external
    /// issuer's): an absolute URL on our base is made relative.
    pub fn from_claims(claims: &AccessClaims, base_url: &str) -> Requester {
        let relative = |r: &String| {
            r.strip_prefix(base_url)
                .map(|rest| rest.trim_start_matches('/').to_string())
                .unwrap_or_else(|| r.clone())
        };
        Requester {
            client_id: claims.client_id.clone(),
            subject: claims.sub.clone(),
            scopes: ScopeSet::parse(&claims.scope),
            patient: claims.patient.clone(),
            fhir_user: claims.fhir_user.as_ref().map(relative),
            organization: claims.organization.clone(),
            role: claims.role.clone(),
            purpose: claims.purpose.clone(),
            token_id: claims.jti.clone(),
        }
    }
}

/// One way a scope lets some resources through: all of its conditions hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Restriction {
    /// The resource must be in this patient's compartment.
    pub patient: Option<String>,
    /// The resource must match this search query (a granular scope).
    pub query: Vec<(String, String)>,
}

impl Restriction {
    /// The granular query as search criteria on `rtype`.
    fn query_criteria(&self, ctx: &Ctx, rtype: &str) -> FhirResult<Vec<Criterion>> {
        if self.query.is_empty() {
            return Ok(vec![]);
        }
        crate::search::parse::parse_conditional(&ctx.search, rtype, &self.query, &ctx.base_url)
    }
}

/// What the scopes allow for one resource type and permission letter.
#[derive(Debug, Clone, PartialEq)]
pub enum Grant {
    /// Every resource of the type.
    All,
    /// Resources meeting any one of the restrictions (none: nothing).
    Some(Vec<Restriction>),
}

impl Grant {
    /// Nothing at all is allowed.
    pub fn is_none(&self) -> bool {
        matches!(self, Grant::Some(r) if r.is_empty())
    }
}

/// The Patient compartment: for each type, the reference parameters that put a resource in a
/// patient's compartment (R4 CompartmentDefinition, widened; see the generating script).
static COMPARTMENT: LazyLock<HashMap<String, Vec<String>>> = LazyLock::new(|| {
    let doc: Value =
        serde_json::from_str(include_str!("../../conformance/patient-compartment.json"))
            .expect("conformance/patient-compartment.json is valid JSON");
    doc["params"]
        .as_object()
        .expect("params object")
        .iter()
        .map(|(t, list)| {
            let params = list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            (t.clone(), params)
        })
        .collect()
});

/// The access decisions for one request.
#[derive(Debug, Clone)]
pub struct Access {
    /// Who asks.
    pub requester: Arc<Requester>,
}

impl Access {
    /// The server itself (loading the demo data set): every permission.
    pub fn server() -> Access {
        Access::new(Requester {
            client_id: "foster-passport".into(),
            subject: "foster-passport".into(),
            scopes: ScopeSet::parse("system/*.cruds"),
            patient: None,
            fhir_user: None,
            organization: None,
            role: Some("custodian".into()),
            purpose: vec![],
            token_id: String::new(),
        })
    }

    /// No token (the CapabilityStatement): no permission at all.
    pub fn anonymous() -> Access {
        Access::new(Requester {
            client_id: String::new(),
            subject: String::new(),
            scopes: ScopeSet::default(),
            patient: None,
            fhir_user: None,
            organization: None,
            role: None,
            purpose: vec![],
            token_id: String::new(),
        })
    }

    /// Access for a requester.
    pub fn new(requester: impl Into<Arc<Requester>>) -> Access {
        Access {
            requester: requester.into(),
        }
    }

    /// What the scopes grant for `letter` on `rtype`. A `patient/` scope without a patient in
    /// context, or a `user/` scope without a fhirUser, grants nothing: never widened.
    pub fn grant(&self, rtype: &str, letter: Letter) -> Grant {
        let r = &self.requester;
        let mut restrictions = Vec::new();
        for scope in r.scopes.matching(rtype, letter) {
            let patient = match scope.context {
                Context::Patient => match &r.patient {
                    Some(p) => Some(p.clone()),
                    None => continue,
                },
                Context::User if r.fhir_user.is_none() => continue,
                Context::User | Context::System => None,
            };
            // Granular scopes restrict reads and searches; they never grant writes, which a
            // query cannot check before the resource exists.
            if scope.is_granular() && !matches!(letter, Letter::R | Letter::S) {
                continue;
            }
            if patient.is_none() && !scope.is_granular() {
                return Grant::All;
            }
            let restriction = Restriction {
                patient,
                query: scope.query.clone(),
            };
            if !restrictions.contains(&restriction) {
                restrictions.push(restriction);
            }
        }
        Grant::Some(restrictions)
    }

    /// The grant for `letter` on `rtype`, or 403 when the scopes allow none of it.
    pub fn require(&self, rtype: &str, letter: Letter) -> FhirResult<Grant> {
        let grant = self.grant(rtype, letter);
        if grant.is_none() {
            return Err(self.forbidden(Some(rtype), letter));
        }
        Ok(grant)
    }

    /// System-level interactions (system history) need a `*` scope with the letter.
    pub fn require_all_types(&self, letter: Letter) -> FhirResult<Grant> {
        let scopes = &self.requester.scopes;
        let grant = self.grant("*", letter);
        if !scopes.grants_all_types(letter) || grant.is_none() {
            return Err(self.forbidden(None, letter));
        }
        Ok(grant)
    }

    fn forbidden(&self, rtype: Option<&str>, letter: Letter) -> FhirError {
        let what = match letter {
            Letter::C => "create",
            Letter::R => "read",
            Letter::U => "update",
            Letter::D => "delete",
            Letter::S => "search",
        };
        FhirError::Forbidden(format!(
            "the granted scopes do not allow to {what} {}",
            rtype.map_or_else(
                || "every resource type".to_string(),
                |t| format!("{t} resources")
            )
        ))
    }

    /// The criterion a search of `rtype` must AND in (`None`: no restriction).
    pub fn criterion(
        &self,
        ctx: &Ctx,
        rtype: &str,
        grant: &Grant,
    ) -> FhirResult<Option<Criterion>> {
        let Grant::Some(restrictions) = grant else {
            return Ok(None);
        };
        let mut groups = Vec::with_capacity(restrictions.len());
        for r in restrictions {
            let mut group = Vec::new();
            if let Some(patient) = &r.patient {
                group.push(compartment_criterion(ctx, rtype, patient));
            }
            group.extend(r.query_criteria(ctx, rtype)?);
            groups.push(group);
        }
        Ok(Some(Criterion::AnyOf(groups)))
    }

    /// Whether `grant` covers this resource. Compartment membership is read from the body;
    /// a granular query is run against the stored current version.
    pub fn covers(
        &self,
        ctx: &Ctx,
        reader: &mut dyn Reader,
        grant: &Grant,
        rtype: &str,
        id: &str,
        body: &Value,
    ) -> FhirResult<bool> {
        let Grant::Some(restrictions) = grant else {
            return Ok(true);
        };
        for r in restrictions {
            if let Some(patient) = &r.patient
                && !in_compartment(ctx, rtype, id, body, patient)
            {
                continue;
            }
            if !r.query.is_empty() {
                let mut criteria = r.query_criteria(ctx, rtype)?;
                criteria.push(Criterion::Ids(vec![id.to_string()]));
                let page = reader.search(&Query {
                    rtype: rtype.to_string(),
                    criteria,
                    sort: vec![],
                    count: 1,
                    cursor: None,
                    with_total: false,
                })?;
                if page.matches.is_empty() {
                    continue;
                }
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// `rtype/id` is the requester's own fhirUser resource.
    pub fn is_own_user(&self, rtype: &str, id: &str) -> bool {
        self.requester.fhir_user.as_deref().is_some_and(|u| {
            u.split_once('/')
                .is_some_and(|(t, i)| t == rtype && i == id)
        })
    }

    /// Check a write: the scopes grant `letter` on the type and cover the resource as it is
    /// (`body`) — for updates, both the stored and the new version must be covered.
    pub fn check_write(
        &self,
        ctx: &Ctx,
        reader: &mut dyn Reader,
        letter: Letter,
        rtype: &str,
        id: &str,
        body: &Value,
    ) -> FhirResult<()> {
        let grant = self.require(rtype, letter)?;
        if self.covers(ctx, reader, &grant, rtype, id, body)? {
            Ok(())
        } else {
            Err(FhirError::Forbidden(format!(
                "the granted scopes do not cover {rtype}/{id}: it is outside the patient's \
                 compartment or the scope's query"
            )))
        }
    }
}

/// Resources of `rtype` in `patient`'s compartment, as a search criterion (matches nothing
/// for types outside the compartment).
fn compartment_criterion(ctx: &Ctx, rtype: &str, patient: &str) -> Criterion {
    let mut groups = Vec::new();
    if rtype == "Patient" {
        groups.push(vec![Criterion::Ids(vec![patient.to_string()])]);
    }
    for code in COMPARTMENT.get(rtype).into_iter().flatten() {
        let Some(def) = ctx.search.param(rtype, code) else {
            continue;
        };
        if def.kind != ParamKind::Reference {
            continue;
        }
        groups.push(vec![Criterion::Match {
            param: ParamRef {
                code: code.clone(),
                kind: ParamKind::Reference,
            },
            modifier: Modifier::None,
            values: vec![QueryValue::Reference {
                target_type: Some("Patient".into()),
                target_id: Some(patient.to_string()),
                url: format!("Patient/{patient}"),
            }],
        }]);
    }
    Criterion::AnyOf(groups)
}

/// Whether a resource body is in `patient`'s compartment.
pub fn in_compartment(ctx: &Ctx, rtype: &str, id: &str, body: &Value, patient: &str) -> bool {
    if rtype == "Patient" && id == patient {
        return true;
    }
    COMPARTMENT.get(rtype).into_iter().flatten().any(|code| {
        ctx.search.param(rtype, code).is_some_and(|def| {
            def.kind == ParamKind::Reference && def.values(body).iter().any(|v| {
                matches!(v, IndexValue::Reference { target_type: Some(t), target_id: Some(i), .. }
                        if t == "Patient" && i == patient)
            })
        })
    })
}
