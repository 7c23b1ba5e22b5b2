//! SMART App Launch 2 scopes: parsing, narrowing what a client asked for to what it may have,
//! and answering "does this token allow letter X on type T".
//!
//! Grammar (scopes-and-launch-context, SMART 2.2):
//! `context "/" (type / "*") "." perms ["?" param *("&" param)]`, with v2 perms a non-empty
//! subsequence of `cruds` and the v1 forms `read` (= `rs`), `write` (= `cud`) and `*`
//! (= `cruds`). Anything that does not fit is kept as [`Scope::Other`] and grants nothing:
//! guessing what a malformed scope meant could only widen access.
//!
//! Granular scopes (`patient/Observation.rs?category=…`) carry their restriction as decoded
//! search parameters; applying them to a search is the caller's job. The restriction is printed
//! back re-encoded, escaping only what would break the scope grammar, so the usual
//! `system|code` tokens read the same way they were written.

use std::fmt;

/// The launch context a resource scope applies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    /// `patient/`: limited to the in-context patient's compartment.
    Patient,
    /// `user/`: whatever the signed-in user may see.
    User,
    /// `system/`: backend services without a user.
    System,
}

impl Context {
    /// The scope prefix, without the slash.
    pub fn as_str(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }

    /// Parses a scope prefix; case-sensitive, as the spec's grammar is.
    pub fn parse(text: &str) -> Option<Context> {
        match text {
            "patient" => Some(Context::Patient),
            "user" => Some(Context::User),
            "system" => Some(Context::System),
            _ => None,
        }
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One v2 permission letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Letter {
    /// Create.
    C,
    /// Read, vread and instance history.
    R,
    /// Update and patch.
    U,
    /// Delete.
    D,
    /// Search, type history and system history.
    S,
}

impl Letter {
    /// All letters in the only order the grammar allows.
    pub const ALL: [Letter; 5] = [Letter::C, Letter::R, Letter::U, Letter::D, Letter::S];

    /// The letter as written in a scope.
    pub fn as_char(self) -> char {
        match self {
            Letter::C => 'c',
            Letter::R => 'r',
            Letter::U => 'u',
            Letter::D => 'd',
            Letter::S => 's',
        }
    }

    /// The letter for a scope character, if it is one.
    pub fn from_char(c: char) -> Option<Letter> {
        Letter::ALL.into_iter().find(|l| l.as_char() == c)
    }

    // Bits follow `cruds` order so comparing bit positions checks the grammar's ordering.
    fn bit(self) -> u8 {
        match self {
            Letter::C => 1,
            Letter::R => 2,
            Letter::U => 4,
            Letter::D => 8,
            Letter::S => 16,
        }
    }
}

/// A set of permission letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Perms(u8);

impl Perms {
    /// No permission.
    pub const NONE: Perms = Perms(0);
    /// `cruds`, which v1 writes as `*`.
    pub const ALL: Perms = Perms(31);
    /// `rs`, which v1 writes as `read`.
    pub const READ: Perms = Perms(2 | 16);
    /// `cud`, which v1 writes as `write`.
    pub const WRITE: Perms = Perms(1 | 4 | 8);

    /// The set holding just `letter`.
    pub fn of(letter: Letter) -> Perms {
        Perms(letter.bit())
    }

    /// Whether `letter` is granted.
    pub fn contains(self, letter: Letter) -> bool {
        self.0 & letter.bit() != 0
    }

    /// Whether every letter of `other` is also here.
    pub fn contains_all(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no letter is granted.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The letters in both sets.
    pub fn intersect(self, other: Perms) -> Perms {
        Perms(self.0 & other.0)
    }

    /// The letters in either set.
    pub fn union(self, other: Perms) -> Perms {
        Perms(self.0 | other.0)
    }

    /// The letters present, in `cruds` order.
    pub fn letters(self) -> impl Iterator<Item = Letter> {
        Letter::ALL.into_iter().filter(move |l| self.contains(*l))
    }

    /// Parses v2 letters: non-empty, each of `cruds` at most once and in that order
    /// (`rs` yes, `sr` no). v1 words are not letters and give `None`.
    pub fn from_letters(text: &str) -> Option<Perms> {
        let mut bits = 0u8;
        for c in text.chars() {
            let bit = Letter::from_char(c)?.bit();
            // A bit at or below the highest one seen means a repeat or an out-of-order letter.
            if bits >= bit {
                return None;
            }
            bits |= bit;
        }
        (bits != 0).then_some(Perms(bits))
    }

    /// The v1 word for these letters, when there is one.
    pub fn v1_word(self) -> Option<&'static str> {
        match self {
            Perms::READ => Some("read"),
            Perms::WRITE => Some("write"),
            Perms::ALL => Some("*"),
            _ => None,
        }
    }

    fn from_v1_word(text: &str) -> Option<Perms> {
        match text {
            "read" => Some(Perms::READ),
            "write" => Some(Perms::WRITE),
            "*" => Some(Perms::ALL),
            _ => None,
        }
    }
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.letters()
            .try_for_each(|l| fmt::Write::write_char(f, l.as_char()))
    }
}

/// A scope granting access to FHIR resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    /// The launch context it applies in.
    pub context: Context,
    /// The resource type; `None` for `*`.
    pub resource_type: Option<String>,
    /// The letters granted.
    pub perms: Perms,
    /// Decoded search parameters restricting the scope; empty when not granular.
    pub query: Vec<(String, String)>,
    /// Whether it was written with a v1 word, so it is printed back that way.
    pub v1: bool,
}

impl ResourceScope {
    /// Whether the scope applies to resources of type `rtype`.
    pub fn covers_type(&self, rtype: &str) -> bool {
        self.resource_type.as_deref().is_none_or(|t| t == rtype)
    }

    /// Whether a search restriction narrows the scope.
    pub fn is_granular(&self) -> bool {
        !self.query.is_empty()
    }

    /// Whether the scope restricts to the same parameters as `other`, in any order.
    pub fn same_query(&self, other: &ResourceScope) -> bool {
        same_query(&self.query, &other.query)
    }

    /// Whether everything `other` grants is granted by this scope alone.
    pub fn implies(&self, other: &ResourceScope) -> bool {
        self.context == other.context
            && (self.resource_type.is_none() || self.resource_type == other.resource_type)
            && self.perms.contains_all(other.perms)
            && (!self.is_granular() || self.same_query(other))
    }

    fn parse(text: &str) -> Option<ResourceScope> {
        let (context, rest) = text.split_once('/')?;
        let context = Context::parse(context)?;
        let (body, query) = match rest.split_once('?') {
            Some((body, query)) => (body, Some(query)),
            None => (rest, None),
        };
        let (rtype, perms) = body.split_once('.')?;
        let resource_type = if rtype == "*" {
            None
        } else if is_resource_type(rtype) {
            Some(rtype.to_owned())
        } else {
            return None;
        };
        let (perms, v1) = match Perms::from_v1_word(perms) {
            Some(p) => (p, true),
            None => (Perms::from_letters(perms)?, false),
        };
        let query = match query {
            Some(q) => parse_query(q)?,
            None => Vec::new(),
        };
        Some(ResourceScope {
            context,
            resource_type,
            perms,
            query,
            v1,
        })
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rtype = self.resource_type.as_deref().unwrap_or("*");
        write!(f, "{}/{}.", self.context, rtype)?;
        match self.perms.v1_word().filter(|_| self.v1) {
            Some(word) => f.write_str(word)?,
            None => write!(f, "{}", self.perms)?,
        }
        for (i, (name, value)) in self.query.iter().enumerate() {
            f.write_str(if i == 0 { "?" } else { "&" })?;
            write_encoded(f, name)?;
            f.write_str("=")?;
            write_encoded(f, value)?;
        }
        Ok(())
    }
}

/// One scope, as requested or granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `patient/…`, `user/…` or `system/…`.
    Resource(ResourceScope),
    /// `openid`.
    OpenId,
    /// `fhirUser`.
    FhirUser,
    /// `profile`.
    Profile,
    /// `launch`: EHR launch, context from the launch parameter.
    Launch,
    /// `launch/patient`.
    LaunchPatient,
    /// `launch/encounter`.
    LaunchEncounter,
    /// Any other `launch/…` scope; holds the text after `launch/` (e.g. `location?role=…`).
    LaunchOther(String),
    /// `offline_access`.
    OfflineAccess,
    /// `online_access`.
    OnlineAccess,
    /// Unknown or malformed; kept for display, grants nothing.
    Other(String),
}

impl Scope {
    /// Parses one scope; never fails, as unknown scopes must be tolerated (and ignored).
    pub fn parse(text: &str) -> Scope {
        match text {
            "openid" => return Scope::OpenId,
            "fhirUser" => return Scope::FhirUser,
            "profile" => return Scope::Profile,
            "launch" => return Scope::Launch,
            "launch/patient" => return Scope::LaunchPatient,
            "launch/encounter" => return Scope::LaunchEncounter,
            "offline_access" => return Scope::OfflineAccess,
            "online_access" => return Scope::OnlineAccess,
            _ => {}
        }
        if let Some(rest) = text.strip_prefix("launch/") {
            return if rest.is_empty() || rest.contains(char::is_whitespace) {
                Scope::Other(text.to_owned())
            } else {
                Scope::LaunchOther(rest.to_owned())
            };
        }
        match ResourceScope::parse(text) {
            Some(r) => Scope::Resource(r),
            None => Scope::Other(text.to_owned()),
        }
    }

    /// The resource scope, if this is one.
    pub fn as_resource(&self) -> Option<&ResourceScope> {
        match self {
            Scope::Resource(r) => Some(r),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Resource(r) => r.fmt(f),
            Scope::OpenId => f.write_str("openid"),
            Scope::FhirUser => f.write_str("fhirUser"),
            Scope::Profile => f.write_str("profile"),
            Scope::Launch => f.write_str("launch"),
            Scope::LaunchPatient => f.write_str("launch/patient"),
            Scope::LaunchEncounter => f.write_str("launch/encounter"),
            Scope::LaunchOther(rest) => write!(f, "launch/{rest}"),
            Scope::OfflineAccess => f.write_str("offline_access"),
            Scope::OnlineAccess => f.write_str("online_access"),
            Scope::Other(text) => f.write_str(text),
        }
    }
}

/// A space-separated scope list: deduplicated, in order of first appearance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet {
    scopes: Vec<Scope>,
}

impl ScopeSet {
    /// Parses an OAuth `scope` value.
    pub fn parse(text: &str) -> ScopeSet {
        text.split_ascii_whitespace().map(Scope::parse).collect()
    }

    /// The scopes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.scopes.iter()
    }

    /// The resource scopes, in order.
    pub fn resource_scopes(&self) -> impl Iterator<Item = &ResourceScope> {
        self.scopes.iter().filter_map(Scope::as_resource)
    }

    /// Whether exactly this scope is present (meant for `openid`, `launch/patient`, …).
    pub fn contains(&self, s: &Scope) -> bool {
        self.scopes.contains(s)
    }

    /// Whether any resource scope is in context `c`.
    pub fn has_context(&self, c: Context) -> bool {
        self.resource_scopes().any(|r| r.context == c)
    }

    /// Resource scopes granting `letter` on `rtype` (any context).
    pub fn matching<'a>(
        &'a self,
        rtype: &'a str,
        letter: Letter,
    ) -> impl Iterator<Item = &'a ResourceScope> + 'a {
        self.resource_scopes()
            .filter(move |r| r.perms.contains(letter) && r.covers_type(rtype))
    }

    /// Whether an unrestricted `*` scope grants `letter`; interactions spanning every type
    /// (system-level history) need one, as per-type scopes cannot cover unknown types.
    pub fn grants_all_types(&self, letter: Letter) -> bool {
        self.resource_scopes()
            .any(|r| r.resource_type.is_none() && !r.is_granular() && r.perms.contains(letter))
    }

    /// What may be granted: `self` (asked) narrowed by `ceiling` (registered or approved).
    pub fn intersect(&self, ceiling: &ScopeSet) -> ScopeSet {
        let mut out: Vec<Scope> = Vec::new();
        for asked in &self.scopes {
            let Scope::Resource(a) = asked else {
                if !matches!(asked, Scope::Other(_)) && ceiling.contains(asked) {
                    out.push(asked.clone());
                }
                continue;
            };
            for c in ceiling.resource_scopes() {
                if let Some(r) = narrow(a, c) {
                    push_unimplied(&mut out, r);
                }
            }
        }
        ScopeSet { scopes: out }
    }

    /// Every permission in `self` is also in `other` (refresh with a narrower `scope`).
    /// Checked letter by letter, so `rs` is covered by separate `r` and `s` scopes.
    pub fn is_subset_of(&self, other: &ScopeSet) -> bool {
        self.scopes.iter().all(|s| match s {
            Scope::Resource(a) => a.perms.letters().all(|letter| {
                other.resource_scopes().any(|b| {
                    b.context == a.context
                        && (b.resource_type.is_none() || b.resource_type == a.resource_type)
                        && b.perms.contains(letter)
                        && (!b.is_granular() || b.same_query(a))
                })
            }),
            _ => other.contains(s),
        })
    }

    /// Whether there is no scope at all.
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    /// The number of distinct scopes.
    pub fn len(&self) -> usize {
        self.scopes.len()
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut scopes: Vec<Scope> = Vec::new();
        for s in iter {
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        ScopeSet { scopes }
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.scopes.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// The part of asked scope `a` that ceiling scope `c` allows, if any.
fn narrow(a: &ResourceScope, c: &ResourceScope) -> Option<ResourceScope> {
    if a.context != c.context {
        return None;
    }
    let resource_type = match (&a.resource_type, &c.resource_type) {
        (Some(x), Some(y)) if x != y => return None,
        (Some(x), _) | (None, Some(x)) => Some(x.clone()),
        (None, None) => None,
    };
    let perms = a.perms.intersect(c.perms);
    if perms.is_empty() {
        return None;
    }
    // Two different restrictions would need their conjunction, which a scope cannot express.
    if a.is_granular() && c.is_granular() && !a.same_query(c) {
        return None;
    }
    let query = if a.is_granular() {
        a.query.clone()
    } else {
        c.query.clone()
    };
    // The v1 spelling is only the client's own words when nothing about the scope changed.
    let v1 = a.v1 && perms == a.perms && resource_type == a.resource_type && query == a.query;
    Some(ResourceScope {
        context: a.context,
        resource_type,
        perms,
        query,
        v1,
    })
}

/// Adds `r` unless an earlier result already grants it, dropping earlier results it grants.
fn push_unimplied(out: &mut Vec<Scope>, r: ResourceScope) {
    let implied_by_kept = out
        .iter()
        .filter_map(Scope::as_resource)
        .any(|k| k.implies(&r));
    if implied_by_kept {
        return;
    }
    out.retain(|s| s.as_resource().is_none_or(|k| !r.implies(k)));
    out.push(Scope::Resource(r));
}

fn is_resource_type(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_alphabetic())
}

/// Splits a granular restriction into decoded pairs; `None` when a piece is not `name=value`,
/// so the whole scope becomes `Other` instead of a wider scope than was written.
fn parse_query(query: &str) -> Option<Vec<(String, String)>> {
    query
        .split('&')
        .map(|piece| {
            let (name, _) = piece.split_once('=')?;
            if name.is_empty() {
                return None;
            }
            form_urlencoded::parse(piece.as_bytes())
                .next()
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
        })
        .collect()
}

fn same_query(a: &[(String, String)], b: &[(String, String)]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut a: Vec<_> = a.iter().collect();
    let mut b: Vec<_> = b.iter().collect();
    a.sort();
    b.sort();
    a == b
}

/// Percent-encodes what would be misread on the way back in: separators (`&`, `=`, `#`,
/// whitespace), `%` and `+` (form decoding turns it into a space), and non-ASCII. FHIR token
/// and URL characters such as `|`, `:` and `/` stay readable.
fn write_encoded(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    for b in text.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$'()*,;:@/?|".contains(&b);
        if keep {
            fmt::Write::write_char(f, char::from(b))?;
        } else {
            write!(f, "%{b:02X}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(text: &str) -> ResourceScope {
        match Scope::parse(text) {
            Scope::Resource(r) => r,
            other => panic!("{text} parsed as {other:?}"),
        }
    }

    fn set(text: &str) -> ScopeSet {
        ScopeSet::parse(text)
    }

    fn letters(r: &ResourceScope) -> String {
        r.perms.to_string()
    }

    #[test]
    fn v1_read_is_rs() {
        let r = res("patient/Observation.read");
        assert_eq!(r.context, Context::Patient);
        assert_eq!(r.resource_type.as_deref(), Some("Observation"));
        assert_eq!(r.perms, Perms::from_letters("rs").unwrap());
        assert!(r.v1);
        assert_eq!(r.to_string(), "patient/Observation.read");

        let s = set("patient/Observation.read");
        assert_eq!(s.matching("Observation", Letter::R).count(), 1);
        assert_eq!(s.matching("Observation", Letter::S).count(), 1);
        assert_eq!(s.matching("Observation", Letter::C).count(), 0);
        assert_eq!(s.matching("Observation", Letter::U).count(), 0);
        assert_eq!(s.matching("Patient", Letter::R).count(), 0);
    }

    #[test]
    fn v1_write_and_star() {
        let w = res("user/Patient.write");
        assert_eq!(letters(&w), "cud");
        assert!(w.v1);
        assert!(!w.perms.contains(Letter::R));
        assert_eq!(w.to_string(), "user/Patient.write");

        let all = res("system/Patient.*");
        assert_eq!(all.perms, Perms::ALL);
        assert!(all.v1);
        assert_eq!(all.to_string(), "system/Patient.*");

        let v2 = res("system/Patient.cruds");
        assert_eq!(v2.perms, Perms::ALL);
        assert!(!v2.v1);
        assert_eq!(v2.to_string(), "system/Patient.cruds");
        assert_ne!(Scope::Resource(all), Scope::Resource(v2));
    }

    #[test]
    fn v2_letters() {
        let r = res("patient/Observation.rs");
        assert!(!r.v1);
        assert!(r.perms.contains(Letter::R) && r.perms.contains(Letter::S));
        assert!(!r.perms.contains(Letter::D));
        assert_eq!(r.to_string(), "patient/Observation.rs");
        // v2 `rs` prints as letters, not as its v1 equivalent.
        assert_eq!(
            res("patient/Observation.cud").to_string(),
            "patient/Observation.cud"
        );
        for ok in ["c", "r", "u", "d", "s", "cd", "rus", "cruds"] {
            assert_eq!(Perms::from_letters(ok).unwrap().to_string(), ok);
        }
    }

    #[test]
    fn wildcard_type() {
        let s = set("patient/*.rs");
        let r = s.resource_scopes().next().unwrap();
        assert_eq!(r.resource_type, None);
        assert!(r.covers_type("Observation") && r.covers_type("Patient"));
        assert_eq!(s.matching("Condition", Letter::S).count(), 1);
        assert_eq!(s.matching("Condition", Letter::U).count(), 0);
        assert!(s.grants_all_types(Letter::R));
        assert!(!s.grants_all_types(Letter::C));
        assert_eq!(s.to_string(), "patient/*.rs");

        assert!(!set("patient/Observation.rs").grants_all_types(Letter::R));
        assert!(!set("patient/*.rs?_tag=x").grants_all_types(Letter::R));
        assert!(set("system/*.*").grants_all_types(Letter::D));
    }

    #[test]
    fn malformed_scopes_are_other_and_grant_nothing() {
        let bad = [
            "patient/Observation.dus",
            "patient/Observation.rx",
            "patient/Observation.sr",
            "patient/Observation.rr",
            "patient/Observation.",
            "patient/Observation",
            "patient/observation.rs",
            "patient/Obs3rvation.rs",
            "patient/.rs",
            "foo/Patient.r",
            "Patient/Patient.r",
            "*/Patient.read",
            "patient/Observation.READ",
            "patient/Observation.rs?",
            "patient/Observation.rs?category",
            "patient/Observation.rs?=x",
            "patient/Observation.rs?a=1&&b=2",
            "launch/",
        ];
        for text in bad {
            assert_eq!(Scope::parse(text), Scope::Other(text.to_owned()), "{text}");
        }
        let s = set(&bad.join(" "));
        assert_eq!(s.len(), bad.len());
        assert_eq!(s.resource_scopes().count(), 0);
        for letter in Letter::ALL {
            assert_eq!(s.matching("Observation", letter).count(), 0);
            assert_eq!(s.matching("Patient", letter).count(), 0);
            assert!(!s.grants_all_types(letter));
        }
        assert!(!s.has_context(Context::Patient));
        // Unknown scopes print back verbatim.
        assert_eq!(s.to_string(), bad.join(" "));
    }

    #[test]
    fn granular_query_is_decoded() {
        let text = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
        let r = res(text);
        assert!(r.is_granular());
        assert_eq!(
            r.query,
            vec![(
                "category".to_owned(),
                "http://terminology.hl7.org/CodeSystem/observation-category|laboratory".to_owned()
            )]
        );
        assert_eq!(letters(&r), "rs");
        assert_eq!(r.to_string(), text);

        let enc = res("user/Observation.s?code=http%3A%2F%2Floinc.org%7C1234-5&status=final");
        assert_eq!(
            enc.query,
            vec![
                ("code".to_owned(), "http://loinc.org|1234-5".to_owned()),
                ("status".to_owned(), "final".to_owned()),
            ]
        );
        assert_eq!(
            enc.to_string(),
            "user/Observation.s?code=http://loinc.org|1234-5&status=final"
        );

        // What would break the grammar stays encoded; `+` is a space under form rules.
        let odd = res("patient/Condition.r?note=a+b%26c%3Dd%25&x=%C3%A9");
        assert_eq!(odd.query[0].1, "a b&c=d%");
        assert_eq!(odd.query[1].1, "é");
        assert_eq!(
            odd.to_string(),
            "patient/Condition.r?note=a%20b%26c%3Dd%25&x=%C3%A9"
        );
        assert_eq!(res(&odd.to_string()), odd);

        assert!(!res("patient/Condition.r").is_granular());
    }

    #[test]
    fn non_resource_scopes() {
        assert_eq!(Scope::parse("openid"), Scope::OpenId);
        assert_eq!(Scope::parse("fhirUser"), Scope::FhirUser);
        assert_eq!(Scope::parse("profile"), Scope::Profile);
        assert_eq!(Scope::parse("launch"), Scope::Launch);
        assert_eq!(Scope::parse("launch/patient"), Scope::LaunchPatient);
        assert_eq!(Scope::parse("launch/encounter"), Scope::LaunchEncounter);
        assert_eq!(Scope::parse("offline_access"), Scope::OfflineAccess);
        assert_eq!(Scope::parse("online_access"), Scope::OnlineAccess);
        assert_eq!(
            Scope::parse("launch/location?role=https://example.org/r"),
            Scope::LaunchOther("location?role=https://example.org/r".to_owned())
        );
        assert_eq!(
            Scope::parse("fhiruser"),
            Scope::Other("fhiruser".to_owned())
        );
        assert_eq!(Scope::parse("OpenID"), Scope::Other("OpenID".to_owned()));

        let s = set("openid fhirUser launch/patient offline_access");
        assert!(s.contains(&Scope::OpenId));
        assert!(s.contains(&Scope::FhirUser));
        assert!(s.contains(&Scope::LaunchPatient));
        assert!(s.contains(&Scope::OfflineAccess));
        assert!(!s.contains(&Scope::OnlineAccess));
        assert!(!s.contains(&Scope::LaunchEncounter));
        assert_eq!(s.resource_scopes().count(), 0);
        assert!(!s.has_context(Context::Patient));
    }

    #[test]
    fn has_context() {
        let s = set("openid user/Patient.r system/Observation.s");
        assert!(s.has_context(Context::User));
        assert!(s.has_context(Context::System));
        assert!(!s.has_context(Context::Patient));
    }

    #[test]
    fn parse_dedupes_in_first_order() {
        let s = set("  openid patient/Patient.r\topenid\npatient/Patient.r launch  ");
        assert_eq!(s.len(), 3);
        assert_eq!(s.to_string(), "openid patient/Patient.r launch");
        // Differently encoded, same restriction: one scope.
        let g = set("patient/Observation.r?code=a%7Cb patient/Observation.r?code=a|b");
        assert_eq!(g.len(), 1);
        assert!(set("").is_empty());
        assert!(set("   ").is_empty());
        assert!(!s.is_empty());
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "openid fhirUser profile launch launch/patient launch/encounter offline_access online_access",
            "patient/*.rs user/Observation.cruds system/Patient.read patient/Encounter.write user/*.*",
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory&status=final",
            "launch/practitioner?role=https://example.org/role custom:thing patient/Observation.dus",
        ] {
            let once = set(text);
            assert_eq!(once.to_string(), text);
            assert_eq!(set(&once.to_string()), once);
        }
    }

    #[test]
    fn intersect_wildcard_narrows_to_ceiling_types() {
        let asked = set("patient/*.rs");
        let ceiling = set("patient/Observation.rs patient/Patient.r");
        assert_eq!(
            asked.intersect(&ceiling).to_string(),
            "patient/Observation.rs patient/Patient.r"
        );
        // The other way round, the asked type is kept.
        assert_eq!(
            set("patient/Observation.cruds")
                .intersect(&set("patient/*.rs"))
                .to_string(),
            "patient/Observation.rs"
        );
    }

    #[test]
    fn intersect_letters() {
        assert_eq!(
            set("user/Observation.crud")
                .intersect(&set("user/Observation.rs"))
                .to_string(),
            "user/Observation.r"
        );
        assert!(
            set("user/Observation.c")
                .intersect(&set("user/Observation.rs"))
                .is_empty()
        );
        assert!(
            set("user/Observation.rs")
                .intersect(&set("user/Patient.rs"))
                .is_empty()
        );
    }

    #[test]
    fn intersect_needs_same_context() {
        assert!(
            set("system/Observation.rs")
                .intersect(&set("patient/Observation.rs patient/*.cruds user/*.*"))
                .is_empty()
        );
        assert!(set("patient/*.*").intersect(&set("system/*.*")).is_empty());
    }

    #[test]
    fn intersect_v1_kept_only_when_unchanged() {
        let ceiling = set("patient/*.read user/Patient.rs user/Observation.r");
        let got = set("patient/*.read user/Patient.read user/Observation.read").intersect(&ceiling);
        let texts: Vec<String> = got.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            texts,
            ["patient/*.read", "user/Patient.read", "user/Observation.r"]
        );
        // Narrowed type: v2 letters even though the letters stayed `rs`.
        assert_eq!(
            set("patient/*.read")
                .intersect(&set("patient/Observation.cruds"))
                .to_string(),
            "patient/Observation.rs"
        );
        // Narrowed letters.
        assert_eq!(
            set("patient/Observation.*")
                .intersect(&set("patient/Observation.read"))
                .to_string(),
            "patient/Observation.rs"
        );
        assert_eq!(
            set("patient/Observation.*")
                .intersect(&set("patient/Observation.cruds"))
                .to_string(),
            "patient/Observation.*"
        );
    }

    #[test]
    fn intersect_granular() {
        let lab = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
        let vitals = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs";
        // The ceiling's restriction carries over to an unrestricted ask.
        assert_eq!(
            set("patient/Observation.rs")
                .intersect(&set(lab))
                .to_string(),
            lab
        );
        assert_eq!(
            set("patient/*.r").intersect(&set(lab)).to_string(),
            "patient/Observation.r?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
        );
        // The ask's restriction carries over under an unrestricted ceiling.
        assert_eq!(set(lab).intersect(&set("patient/*.cruds")).to_string(), lab);
        // Equal restrictions, in any order, are compatible.
        assert_eq!(
            set("user/Observation.r?a=1&b=2")
                .intersect(&set("user/Observation.r?b=2&a=1"))
                .to_string(),
            "user/Observation.r?a=1&b=2"
        );
        // Different restrictions cannot be combined.
        assert!(set(lab).intersect(&set(vitals)).is_empty());
    }

    #[test]
    fn intersect_non_resource_and_other() {
        let asked = set("openid fhirUser launch/patient offline_access foo launch/x?role=a");
        let ceiling = set("openid launch/patient foo launch/x?role=a online_access");
        assert_eq!(
            asked.intersect(&ceiling).to_string(),
            "openid launch/patient launch/x?role=a"
        );
    }

    #[test]
    fn intersect_drops_implied_results() {
        // `patient/*.rs` and `patient/Observation.rs` both match; the specific one adds nothing.
        let got = set("patient/Observation.rs patient/*.rs").intersect(&set("patient/*.rs"));
        assert_eq!(got.to_string(), "patient/*.rs");
        let got = set("patient/*.rs patient/Observation.r").intersect(&set("patient/*.rs"));
        assert_eq!(got.to_string(), "patient/*.rs");
        // v1 and v2 spellings of the same grant collapse to the first.
        let got = set("patient/Observation.read patient/Observation.rs")
            .intersect(&set("patient/Observation.rs"));
        assert_eq!(got.to_string(), "patient/Observation.read");
        // A granular result is implied by the unrestricted one, not the reverse.
        let got = set("patient/Observation.r?code=x patient/Observation.r")
            .intersect(&set("patient/Observation.r"));
        assert_eq!(got.to_string(), "patient/Observation.r");
        // Different letters on the same type are both needed.
        let got =
            set("patient/Observation.rs").intersect(&set("patient/*.r patient/Observation.s"));
        assert_eq!(
            got.to_string(),
            "patient/Observation.r patient/Observation.s"
        );
    }

    #[test]
    fn subset() {
        let granted =
            set("openid launch/patient offline_access patient/*.rs user/Observation.r?code=a|b");
        assert!(set("").is_subset_of(&granted));
        assert!(granted.is_subset_of(&granted));
        assert!(set("openid patient/Observation.r").is_subset_of(&granted));
        assert!(set("patient/Patient.read patient/*.s").is_subset_of(&granted));
        assert!(set("user/Observation.r?code=a%7Cb").is_subset_of(&granted));

        assert!(!set("fhirUser").is_subset_of(&granted));
        assert!(!set("patient/Observation.rsd").is_subset_of(&granted));
        assert!(!set("patient/*.cruds").is_subset_of(&granted));
        assert!(!set("system/Observation.r").is_subset_of(&granted));
        // A restriction in `other` does not cover the unrestricted or differently restricted scope.
        assert!(!set("user/Observation.r").is_subset_of(&granted));
        assert!(!set("user/Observation.r?code=a|c").is_subset_of(&granted));
        // A restriction in `self` is covered by the unrestricted scope.
        assert!(set("patient/Observation.r?code=x").is_subset_of(&granted));
        // A specific type never covers `*`.
        assert!(!set("user/*.r").is_subset_of(&set("user/Observation.r user/Patient.r")));
        // Letters may come from separate scopes.
        assert!(set("user/Patient.rs").is_subset_of(&set("user/Patient.r user/*.s")));
        assert!(!set("foo").is_subset_of(&granted));
    }

    #[test]
    fn perms_ops() {
        let rs = Perms::from_letters("rs").unwrap();
        let cr = Perms::from_letters("cr").unwrap();
        assert_eq!(rs.intersect(cr), Perms::of(Letter::R));
        assert!(rs.intersect(Perms::WRITE).is_empty());
        assert_eq!(rs.union(Perms::WRITE), Perms::ALL);
        assert!(Perms::ALL.contains_all(rs));
        assert!(!rs.contains_all(cr));
        assert_eq!(Perms::from_letters(""), None);
        assert_eq!(Perms::from_letters("read"), None);
        assert_eq!(Perms::ALL.to_string(), "cruds");
        assert_eq!(Letter::D.as_char(), 'd');
    }
}
