//! Fast structural validation of FHIR R4 JSON resources.
//!
//! The type table `r4_elements.json` is generated from the HL7 R4 JSON Schema by
//! `scripts/gen_r4_elements.py`. It is parsed once into an in-memory table with precompiled
//! regexes. Walking a resource allocates nothing unless an issue is found: the location is
//! kept as a stack of borrowed segments and rendered only when reporting.
//!
//! Checked: known `resourceType`, unknown elements, JSON kinds (array vs single, object vs
//! primitive, string vs number vs boolean), empty arrays/objects/strings, `null` placement,
//! primitive lexical rules (R4 regexes, integer ranges, decimal lexemes, real calendar dates),
//! required-binding codes, required elements, one type per choice element, and nested
//! resources (`contained`, `Bundle.entry.resource`, `Parameters.parameter.resource`, ...).
//! Not checked: invariants, profiles, terminology beyond required-binding enums.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};

/// One problem found, with a FHIRPath-like location such as `Patient.contact[0].name.family`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructureIssue {
    /// Location of the offending element, e.g. `Bundle.entry[0].resource.birthDate`.
    pub path: String,
    /// Human-readable description naming the element.
    pub message: String,
}

impl fmt::Display for StructureIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Checks a whole resource (resourceType must be an R4 resource type). Returns every issue
/// found (empty = structurally valid).
pub fn check_resource(resource: &serde_json::Value) -> Vec<StructureIssue> {
    let mut walker = Walker {
        table: &TABLE,
        path: Vec::with_capacity(16),
        issues: Vec::new(),
    };
    let Some(obj) = resource.as_object() else {
        walker.path.push(Seg::Name("Resource"));
        walker.report(format!(
            "a resource must be a JSON object, found {}",
            kind(resource)
        ));
        return walker.issues;
    };
    match obj.get("resourceType") {
        Some(Value::String(rt)) => match TABLE.resource(rt) {
            Some(ty) => {
                walker.path.push(Seg::Name(rt));
                walker.object(obj, ty);
            }
            None => {
                walker.path.push(Seg::Name("Resource"));
                walker.report(format!("unknown resourceType `{}`", clip(rt)));
            }
        },
        Some(other) => {
            walker.path.push(Seg::Name("Resource"));
            walker.report(format!(
                "`resourceType` must be a string, found {}",
                kind(other)
            ));
        }
        None => {
            walker.path.push(Seg::Name("Resource"));
            walker.report("missing `resourceType`".to_owned());
        }
    }
    walker.issues
}

/// True when `name` is an R4 resource type (e.g. "Patient"; false for "Element",
/// "HumanName", "Foo").
pub fn is_resource_type(name: &str) -> bool {
    TABLE.resource(name).is_some()
}

/// Every R4 resource type name, sorted.
pub fn resource_types() -> &'static [&'static str] {
    &TABLE.resources
}

static TABLE_JSON: &str = include_str!("r4_elements.json");
static TABLE: LazyLock<Table> = LazyLock::new(Table::load);

/// FNV-1a: the keys are short element names, for which SipHash is needlessly slow.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

#[derive(Deserialize)]
struct RawTable {
    #[serde(borrow)]
    primitives: HashMap<&'static str, Option<String>>,
    #[serde(borrow)]
    resources: Vec<&'static str>,
    #[serde(borrow)]
    enums: Vec<Vec<&'static str>>,
    #[serde(borrow)]
    types: HashMap<&'static str, RawType>,
}

#[derive(Deserialize)]
struct RawType {
    #[serde(borrow)]
    p: HashMap<&'static str, &'static str>,
    #[serde(borrow, default)]
    r: Vec<&'static str>,
}

/// How a primitive's value is checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PrimKind {
    Boolean,
    /// JSON integer with this lower bound (upper bound: i32::MAX).
    Integer(i64),
    /// JSON number whose original lexeme matches the decimal regex.
    Decimal,
    /// string / markdown: non-empty with some non-whitespace content.
    Text,
    /// JSON string matching the type's regex.
    Pattern,
    /// Narrative `div`.
    Xhtml,
}

struct Primitive {
    name: &'static str,
    kind: PrimKind,
    regex: Option<Regex>,
    /// Hand-written equivalent of `regex` for the most frequent simple patterns.
    fast: Option<fn(&str) -> bool>,
    /// date / dateTime / instant: the day must exist in its month.
    calendar: bool,
}

#[derive(Clone, Copy)]
enum Target {
    Primitive(u8),
    Complex(u16),
    AnyResource,
    /// `_foo` companion of primitive `foo`: an Element.
    Shadow,
}

#[derive(Clone, Copy)]
struct Prop {
    target: Target,
    array: bool,
    /// Required-binding codes (index into `Table::enums`).
    codes: Option<u16>,
    /// Base name of the choice element this property is one type of (`deceased`).
    choice: Option<&'static str>,
    /// For primitive `foo` its `_foo`, for `_foo` its `foo` (null pairing in arrays).
    partner: Option<&'static str>,
    /// Bit set in the "required seen" mask when present (`_foo` shares `foo`'s bit).
    required_bit: Option<u8>,
}

struct TypeDef {
    name: &'static str,
    is_resource: bool,
    props: FastMap<&'static str, Prop>,
    /// Required property names (`value[x]` for choices); name `i` is bit `i` of the mask.
    required: Vec<&'static str>,
}

struct Table {
    types: Vec<TypeDef>,
    resource_index: FastMap<&'static str, u16>,
    resources: Vec<&'static str>,
    primitives: Vec<Primitive>,
    enums: Vec<Vec<&'static str>>,
    element: u16,
}

impl Table {
    fn load() -> Table {
        let raw: RawTable =
            serde_json::from_str(TABLE_JSON).expect("r4_elements.json is a valid type table");

        let mut prim_names: Vec<&'static str> = raw.primitives.keys().copied().collect();
        prim_names.sort_unstable();
        let mut primitives = Vec::with_capacity(prim_names.len());
        let mut prim_index: FastMap<&'static str, u8> = FastMap::default();
        for name in prim_names {
            let kind = match name {
                "boolean" => PrimKind::Boolean,
                "integer" => PrimKind::Integer(i64::from(i32::MIN)),
                "unsignedInt" => PrimKind::Integer(0),
                "positiveInt" => PrimKind::Integer(1),
                "decimal" => PrimKind::Decimal,
                "string" | "markdown" => PrimKind::Text,
                "xhtml" => PrimKind::Xhtml,
                _ => PrimKind::Pattern,
            };
            let regex = match (kind, &raw.primitives[name]) {
                (PrimKind::Pattern | PrimKind::Decimal, Some(pattern)) => {
                    Some(Regex::new(&xsd_regex(pattern)).expect("R4 pattern compiles"))
                }
                (PrimKind::Pattern | PrimKind::Decimal, None) => {
                    panic!("primitive {name} has no pattern")
                }
                _ => None,
            };
            let fast: Option<fn(&str) -> bool> = match name {
                "uri" | "url" | "canonical" => Some(is_uri),
                "code" => Some(is_code),
                "id" => Some(is_id),
                _ => None,
            };
            let index = u8::try_from(primitives.len()).expect("fewer than 256 primitives");
            prim_index.insert(name, index);
            primitives.push(Primitive {
                name,
                kind,
                regex,
                fast,
                calendar: matches!(name, "date" | "dateTime" | "instant"),
            });
        }

        let mut type_names: Vec<&'static str> = raw.types.keys().copied().collect();
        type_names.sort_unstable();
        let type_index: HashMap<&'static str, u16> = type_names
            .iter()
            .enumerate()
            .map(|(i, &n)| (n, u16::try_from(i).expect("fewer than 65536 types")))
            .collect();

        let mut types = Vec::with_capacity(type_names.len());
        for &name in &type_names {
            let raw_type = &raw.types[name];
            let mut props = FastMap::default();
            assert!(raw_type.r.len() <= 64, "{name}: too many required elements");
            // A required choice is listed as `value[x]`: any of its types satisfies it.
            let required_bit = |prop: &str, choice: Option<&str>| {
                let i = raw_type.r.iter().position(|&r| {
                    r == prop || choice.is_some_and(|c| r.strip_suffix("[x]") == Some(c))
                })?;
                u8::try_from(i).ok()
            };
            for (&prop_name, &spec) in &raw_type.p {
                let (spec, choice) = match spec.split_once('|') {
                    Some((s, base)) => (s, Some(base)),
                    None => (spec, None),
                };
                let (spec, codes) = match spec.split_once('#') {
                    Some((s, n)) => (s, Some(n.parse::<u16>().expect("enum index"))),
                    None => (spec, None),
                };
                let (type_name, array) = match spec.strip_suffix("[]") {
                    Some(t) => (t, true),
                    None => (spec, false),
                };
                let target = if type_name == "ResourceList" {
                    Target::AnyResource
                } else if let Some(&p) = prim_index.get(type_name) {
                    Target::Primitive(p)
                } else {
                    Target::Complex(*type_index.get(type_name).unwrap_or_else(|| {
                        panic!("{name}.{prop_name} has unknown type {type_name}")
                    }))
                };
                // Element/Resource `id` (System.String) and xhtml cannot carry extensions.
                let shadowed = matches!(target, Target::Primitive(p)
                    if prop_name != "id" && primitives[usize::from(p)].kind != PrimKind::Xhtml);
                let partner = shadowed.then(|| leak(format!("_{prop_name}")));
                let required_bit = required_bit(prop_name, choice);
                props.insert(
                    prop_name,
                    Prop {
                        target,
                        array,
                        codes,
                        choice,
                        partner,
                        required_bit,
                    },
                );
                if let Some(shadow_name) = partner {
                    props.insert(
                        shadow_name,
                        Prop {
                            target: Target::Shadow,
                            array,
                            codes: None,
                            choice: None,
                            partner: Some(prop_name),
                            required_bit,
                        },
                    );
                }
            }
            types.push(TypeDef {
                name,
                is_resource: false,
                props,
                required: raw_type.r.clone(),
            });
        }

        let mut resources = raw.resources;
        resources.sort_unstable();
        let mut resource_index = FastMap::default();
        for &r in &resources {
            let i = type_index[r];
            types[usize::from(i)].is_resource = true;
            resource_index.insert(r, i);
        }
        Table {
            element: type_index["Element"],
            types,
            resource_index,
            resources,
            primitives,
            enums: raw.enums,
        }
    }

    fn resource(&self, name: &str) -> Option<u16> {
        self.resource_index.get(name).copied()
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[derive(Clone, Copy)]
enum Seg<'v> {
    Name(&'v str),
    Index(usize),
}

struct Walker<'v> {
    table: &'static Table,
    path: Vec<Seg<'v>>,
    issues: Vec<StructureIssue>,
}

impl<'v> Walker<'v> {
    fn report(&mut self, message: String) {
        let mut path = String::new();
        for seg in &self.path {
            match seg {
                Seg::Name(n) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(n);
                }
                Seg::Index(i) => {
                    path.push('[');
                    path.push_str(&i.to_string());
                    path.push(']');
                }
            }
        }
        self.issues.push(StructureIssue { path, message });
    }

    /// Reports with `name` as the last path segment.
    fn report_at(&mut self, name: &'v str, message: String) {
        self.path.push(Seg::Name(name));
        self.report(message);
        self.path.pop();
    }

    fn object(&mut self, obj: &'v Map<String, Value>, ty: u16) {
        let def = &self.table.types[usize::from(ty)];
        if obj.is_empty() {
            self.report(format!("empty object for {}", def.name));
            return;
        }
        // Choice elements seen so far: (base, key). Objects rarely have more than a few.
        let mut choices: [(&str, &str); 8] = [("", ""); 8];
        let mut n_choices = 0;
        let mut required_seen = 0u64;
        for (key, value) in obj {
            let Some(prop) = def.props.get(key.as_str()) else {
                if !(def.is_resource && key == "resourceType") {
                    self.report_at(key, format!("unknown element `{key}` in {}", def.name));
                }
                continue;
            };
            if let Some(bit) = prop.required_bit {
                required_seen |= 1 << bit;
            }
            if let Some(base) = prop.choice {
                match choices[..n_choices].iter().find(|(b, _)| *b == base) {
                    Some(&(_, first)) => self.report_at(
                        key,
                        format!(
                            "only one of `{base}[x]` may be present, found `{first}` and `{key}`"
                        ),
                    ),
                    None if n_choices < choices.len() => {
                        choices[n_choices] = (base, key);
                        n_choices += 1;
                    }
                    None => {}
                }
            }
            self.path.push(Seg::Name(key));
            self.element(key, value, prop, obj);
            self.path.pop();
        }
        for (bit, name) in def.required.iter().enumerate() {
            if required_seen & (1 << bit) == 0 {
                self.report(format!("missing required element `{name}` in {}", def.name));
            }
        }
    }

    fn element(
        &mut self,
        key: &str,
        value: &'v Value,
        prop: &Prop,
        parent: &'v Map<String, Value>,
    ) {
        match (value, prop.array) {
            (Value::Array(items), true) => {
                if items.is_empty() {
                    self.report(format!("`{key}` must not be an empty array"));
                    return;
                }
                let partner = prop
                    .partner
                    .and_then(|p| parent.get(p))
                    .and_then(Value::as_array);
                if let (Some(other), Target::Shadow) = (partner, prop.target)
                    && other.len() != items.len()
                {
                    self.report(format!(
                        "`{key}` has {} items but `{}` has {}",
                        items.len(),
                        prop.partner.unwrap_or_default(),
                        other.len()
                    ));
                }
                for (i, item) in items.iter().enumerate() {
                    self.path.push(Seg::Index(i));
                    if item.is_null() {
                        let paired = partner.and_then(|o| o.get(i)).is_some_and(|v| !v.is_null());
                        if !paired {
                            self.report(format!(
                                "null in `{key}` is only allowed where the parallel `{}` item \
                                 has a value",
                                prop.partner.unwrap_or("_")
                            ));
                        }
                    } else {
                        self.single(key, item, prop);
                    }
                    self.path.pop();
                }
            }
            (Value::Array(_), false) => {
                self.report(format!("`{key}` must be a single value, not an array"));
            }
            (Value::Null, _) => self.report(format!("`{key}` must not be null")),
            (_, true) => self.report(format!("`{key}` must be an array, found {}", kind(value))),
            (_, false) => self.single(key, value, prop),
        }
    }

    fn single(&mut self, key: &str, value: &'v Value, prop: &Prop) {
        match prop.target {
            Target::Primitive(p) => self.primitive(key, value, p, prop.codes),
            Target::Complex(ty) => match value {
                Value::Object(m) => self.object(m, ty),
                _ => self.report(format!(
                    "`{key}` must be an object ({}), found {}",
                    self.table.types[usize::from(ty)].name,
                    kind(value)
                )),
            },
            Target::Shadow => match value {
                Value::Object(m) => self.object(m, self.table.element),
                _ => self.report(format!(
                    "`{key}` must be an object (Element), found {}",
                    kind(value)
                )),
            },
            Target::AnyResource => self.nested_resource(key, value),
        }
    }

    fn nested_resource(&mut self, key: &str, value: &'v Value) {
        let Value::Object(obj) = value else {
            self.report(format!(
                "`{key}` must be a resource (JSON object), found {}",
                kind(value)
            ));
            return;
        };
        match obj.get("resourceType") {
            Some(Value::String(rt)) => match self.table.resource(rt) {
                Some(ty) => self.object(obj, ty),
                None => self.report_at(
                    "resourceType",
                    format!("unknown resourceType `{}`", clip(rt)),
                ),
            },
            Some(other) => self.report_at(
                "resourceType",
                format!("`resourceType` must be a string, found {}", kind(other)),
            ),
            None => self.report(format!("`{key}` is missing `resourceType`")),
        }
    }

    fn primitive(&mut self, key: &str, value: &'v Value, p: u8, codes: Option<u16>) {
        let prim = &self.table.primitives[usize::from(p)];
        let name = prim.name;
        match (prim.kind, value) {
            (PrimKind::Boolean, Value::Bool(_)) => {}
            (PrimKind::Integer(min), Value::Number(n)) => {
                let text = n.as_str();
                if !is_integer_lexeme(text) {
                    self.report(format!(
                        "`{key}` ({name}) must be a JSON integer, found {}",
                        clip(text)
                    ));
                } else if !text
                    .parse::<i64>()
                    .is_ok_and(|v| v >= min && v <= i64::from(i32::MAX))
                {
                    self.report(format!(
                        "`{key}` ({name}) is out of range [{min}, {}]: {}",
                        i32::MAX,
                        clip(text)
                    ));
                }
            }
            (PrimKind::Decimal, Value::Number(n)) => {
                let text = n.as_str();
                if !prim.regex.as_ref().is_some_and(|r| r.is_match(text)) {
                    self.report(format!("`{key}` is not a valid decimal: {}", clip(text)));
                }
            }
            (PrimKind::Text | PrimKind::Pattern | PrimKind::Xhtml, Value::String(s)) => {
                if s.is_empty() {
                    self.report(format!("`{key}` must not be an empty string"));
                    return;
                }
                let ok = match prim.kind {
                    PrimKind::Text => is_r4_string(s),
                    PrimKind::Xhtml => s.trim_start().starts_with("<div"),
                    _ => match prim.fast {
                        Some(fast) => fast(s),
                        None => {
                            prim.regex.as_ref().is_some_and(|r| r.is_match(s))
                                && (!prim.calendar || day_exists(s))
                        }
                    },
                };
                if !ok {
                    let what = match prim.kind {
                        PrimKind::Text => "must not be whitespace only".to_owned(),
                        PrimKind::Xhtml => "must be an XHTML <div> element".to_owned(),
                        _ => format!("is not a valid {name}: `{}`", clip(s)),
                    };
                    self.report(format!("`{key}` {what}"));
                    return;
                }
                if let Some(e) = codes {
                    let allowed = &self.table.enums[usize::from(e)];
                    if !allowed.contains(&s.as_str()) {
                        let list = if allowed.len() <= 12 {
                            format!(": one of {}", allowed.join(", "))
                        } else {
                            format!(" ({} codes)", allowed.len())
                        };
                        self.report(format!(
                            "`{key}` has code `{}`, which is not in its required value set{list}",
                            clip(s)
                        ));
                    }
                }
            }
            _ => {
                let expected = match prim.kind {
                    PrimKind::Boolean => "a JSON boolean",
                    PrimKind::Integer(_) | PrimKind::Decimal => "a JSON number",
                    _ => "a JSON string",
                };
                self.report(format!(
                    "`{key}` ({name}) must be {expected}, found {}",
                    kind(value)
                ));
            }
        }
    }
}

/// Turns an R4 pattern from the schema into a Rust regex with the meaning FHIR gives it.
///
/// FHIR's patterns are XML Schema regexes, where `\s` is only space, tab, CR and LF; in the
/// JSON Schema (and in Rust) it is all of Unicode White_Space, which would reject the
/// no-break spaces found in HL7's own examples. The whole pattern is also re-anchored: some
/// (`^true|false$`) bind their anchors to one alternative only.
fn xsd_regex(pattern: &str) -> String {
    let inner = pattern.trim_start_matches('^').trim_end_matches('$');
    // Rust regex accepts nested classes, so these also work inside `[...]`.
    let inner = inner
        .replace(r"\s", r"[ \t\n\r]")
        .replace(r"\S", r"[^ \t\n\r]");
    format!("^(?:{inner})$")
}

/// XSD whitespace, the only whitespace FHIR patterns mean by `\s`.
fn is_xsd_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// uri / url / canonical: `\S*`.
fn is_uri(s: &str) -> bool {
    !s.bytes().any(is_xsd_space)
}

/// code: `[^\s]+(\s[^\s]+)*`, i.e. single whitespace between non-whitespace runs.
fn is_code(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    !is_xsd_space(first)
        && !is_xsd_space(last)
        && !b
            .windows(2)
            .any(|w| is_xsd_space(w[0]) && is_xsd_space(w[1]))
}

/// id: `[A-Za-z0-9\-\.]{1,64}`.
fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// R4 integer lexical form `-?([0]|([1-9][0-9]*))`: no exponent, fraction or leading zeros.
fn is_integer_lexeme(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    match digits.as_bytes() {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// R4 string: `[ \r\n\t\S]+` read as an XML Schema regex accepts any non-empty text; on top
/// of that the spec says strings SHOULD contain non-whitespace content, which we require.
fn is_r4_string(s: &str) -> bool {
    s.chars().any(|c| !c.is_whitespace())
}

/// The regexes accept 2021-02-31; check the day against its month (input already matched).
fn day_exists(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 10 {
        return true;
    }
    let num = |r: std::ops::Range<usize>| {
        b[r].iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    let max = match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    day <= max
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Shortens echoed values so one bad attachment does not blow up the message.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn data_dir(sub: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/data")
            .join(sub)
    }

    fn load(sub: &str, file: &str) -> Value {
        let path = data_dir(sub).join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_json::from_str(&text).expect("example is JSON")
    }

    fn example(file: &str) -> Value {
        load("fhir-r4-examples", file)
    }

    fn patient() -> Value {
        example("Patient-example.json")
    }

    /// Asserts exactly one issue at `path` whose message contains `needle`.
    fn assert_one(resource: &Value, path: &str, needle: &str) {
        let issues = check_resource(resource);
        assert_eq!(issues.len(), 1, "expected one issue, got {issues:#?}");
        assert_eq!(issues[0].path, path, "{issues:#?}");
        assert!(
            issues[0].message.contains(needle),
            "message {:?} lacks {needle:?}",
            issues[0].message
        );
    }

    #[test]
    fn table_loads() {
        assert_eq!(resource_types().len(), 146);
        assert!(resource_types().windows(2).all(|w| w[0] < w[1]));
        assert!(is_resource_type("Patient"));
        assert!(is_resource_type("Bundle"));
        for name in [
            "Element",
            "HumanName",
            "Foo",
            "Patient_Contact",
            "ResourceList",
            "",
        ] {
            assert!(!is_resource_type(name), "{name}");
        }
    }

    #[test]
    fn fast_paths_agree_with_regexes() {
        let samples = [
            "",
            "a",
            "A-z.09",
            "a b",
            "a  b",
            " a",
            "a ",
            "a\tb",
            "a\n",
            "http://x/y?z=1",
            "x\u{a0}y",
            "\u{a0}",
            "é",
            "a.b-c",
            "under_score",
            "urn:oid:1.2",
            "ab\r\ncd",
        ];
        let long = "a".repeat(65);
        for prim in &TABLE.primitives {
            let (Some(fast), Some(regex)) = (prim.fast, &prim.regex) else {
                continue;
            };
            for s in samples.iter().copied().chain([long.as_str(), &long[1..]]) {
                assert_eq!(fast(s), regex.is_match(s), "{} {s:?}", prim.name);
            }
        }
    }

    #[test]
    fn official_examples_are_valid() {
        let mut count = 0;
        for entry in std::fs::read_dir(data_dir("fhir-r4-examples")).expect("examples dir") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let value: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
            let issues = check_resource(&value);
            assert!(issues.is_empty(), "{}: {issues:#?}", path.display());
            count += 1;
        }
        assert!(count >= 10, "only {count} examples found");
    }

    #[test]
    fn named_examples_and_transaction_bundle_are_valid() {
        for file in [
            "Patient-example.json",
            "Patient-f001.json",
            "RelatedPerson-peter.json",
            "CareTeam-example.json",
            "Consent-consent-example-basic.json",
            "ServiceRequest-example.json",
            "Bundle-bundle-transaction.json",
            "Bundle-bundle-response.json",
        ] {
            let issues = check_resource(&example(file));
            assert!(issues.is_empty(), "{file}: {issues:#?}");
        }
    }

    /// The HL7 R4 example corpus (npm hl7.fhir.r4.examples@4.0.1), when `.ci/run` fetched it.
    #[test]
    fn synthetic_bundles_are_valid() {
        for sub in ["synthetic/carebundle", "synthetic/pysynthea"] {
            let Ok(dir) = std::fs::read_dir(data_dir(sub)) else {
                continue;
            };
            for entry in dir {
                let path = entry.expect("dir entry").path();
                if path.extension().is_some_and(|e| e == "json") {
                    let text = std::fs::read_to_string(&path).expect("read");
                    let issues = check_resource(&serde_json::from_str(&text).expect("json"));
                    assert!(issues.is_empty(), "{}: {issues:#?}", path.display());
                }
            }
        }
    }

    #[test]
    fn top_level_must_be_known_resource() {
        assert_one(&json!([]), "Resource", "JSON object");
        assert_one(&json!({"id": "x"}), "Resource", "missing `resourceType`");
        assert_one(
            &json!({"resourceType": "Foo"}),
            "Resource",
            "unknown resourceType `Foo`",
        );
        assert_one(
            &json!({"resourceType": "HumanName"}),
            "Resource",
            "unknown resourceType",
        );
        assert_one(&json!({"resourceType": 3}), "Resource", "must be a string");
    }

    #[test]
    fn unknown_element() {
        let mut p = patient();
        p["foo"] = json!("bar");
        assert_one(&p, "Patient.foo", "unknown element `foo`");
        let mut p = patient();
        p["contact"][0]["name"]["nickname"] = json!("Bob");
        assert_one(
            &p,
            "Patient.contact[0].name.nickname",
            "unknown element `nickname`",
        );
        // Choice elements only exist with their type suffix.
        assert_one(
            &json!({"resourceType": "Patient", "deceased": true}),
            "Patient.deceased",
            "unknown element",
        );
    }

    #[test]
    fn wrong_json_kind() {
        let mut p = patient();
        p["name"] = json!({"family": "Chalmers"});
        assert_one(&p, "Patient.name", "must be an array");
        let mut p = patient();
        p["gender"] = json!(["male"]);
        assert_one(&p, "Patient.gender", "not an array");
        let mut p = patient();
        p["maritalStatus"] = json!("married");
        assert_one(
            &p,
            "Patient.maritalStatus",
            "must be an object (CodeableConcept)",
        );
        let mut p = patient();
        p["active"] = json!("true");
        assert_one(&p, "Patient.active", "must be a JSON boolean, found string");
        let mut p = patient();
        p["birthDate"] = json!(19741225);
        assert_one(
            &p,
            "Patient.birthDate",
            "must be a JSON string, found number",
        );
        let mut p = patient();
        p["name"][0]["given"] = json!([{"value": "Peter"}]);
        assert_one(&p, "Patient.name[0].given[0]", "found object");
    }

    #[test]
    fn empty_and_null_values() {
        let mut p = patient();
        p["identifier"] = json!([]);
        assert_one(&p, "Patient.identifier", "empty array");
        let mut p = patient();
        p["maritalStatus"] = json!({});
        assert_one(&p, "Patient.maritalStatus", "empty object");
        let mut p = patient();
        p["birthDate"] = json!(null);
        assert_one(&p, "Patient.birthDate", "must not be null");
        let mut p = patient();
        p["name"][0]["given"] = json!(["Peter", null]);
        assert_one(&p, "Patient.name[0].given[1]", "null");
    }

    #[test]
    fn null_in_primitive_array_paired_with_shadow() {
        let p = json!({
            "resourceType": "Patient",
            "name": [{
                "given": ["Peter", null],
                "_given": [null, {"extension": [{"url": "http://x", "valueString": "J"}]}]
            }]
        });
        assert!(check_resource(&p).is_empty(), "{:#?}", check_resource(&p));
        let p = json!({
            "resourceType": "Patient",
            "name": [{"given": ["Peter", null], "_given": [null, null]}]
        });
        let issues = check_resource(&p);
        assert!(
            issues.iter().any(|i| i.path == "Patient.name[0].given[1]"),
            "{issues:#?}"
        );
        let p = json!({
            "resourceType": "Patient",
            "name": [{"given": ["Peter", "James"], "_given": [null]}]
        });
        assert_one(
            &p,
            "Patient.name[0]._given",
            "has 1 items but `given` has 2",
        );
    }

    #[test]
    fn dates_and_times() {
        let mut p = patient();
        p["birthDate"] = json!("2020-13-01");
        assert_one(&p, "Patient.birthDate", "not a valid date: `2020-13-01`");
        let mut p = patient();
        p["birthDate"] = json!("2021-02-29");
        assert_one(&p, "Patient.birthDate", "not a valid date");
        for ok in ["2020", "2020-02", "2020-02-29"] {
            let mut p = patient();
            p["birthDate"] = json!(ok);
            assert!(check_resource(&p).is_empty(), "{ok}");
        }
        let mut p = patient();
        p.as_object_mut().expect("object").remove("deceasedBoolean");
        p["deceasedDateTime"] = json!("2020-01-01T10:00:00");
        assert_one(&p, "Patient.deceasedDateTime", "not a valid dateTime");
        p["deceasedDateTime"] = json!("2020-01-01T10:00:00.123+02:00");
        assert!(check_resource(&p).is_empty());
        let mut p = patient();
        p["meta"] = json!({"lastUpdated": "2020-01-01T10:00:00"});
        assert_one(&p, "Patient.meta.lastUpdated", "not a valid instant");
        let mut p = patient();
        p["meta"] = json!({"lastUpdated": "2020-01-01"});
        assert_one(&p, "Patient.meta.lastUpdated", "not a valid instant");
        let mut p = patient();
        p["meta"] = json!({"lastUpdated": "2020-01-01T10:00:00Z"});
        assert!(check_resource(&p).is_empty());
    }

    #[test]
    fn resource_id() {
        let mut p = patient();
        p["id"] = json!("bad id!");
        assert_one(&p, "Patient.id", "not a valid id");
        let mut p = patient();
        p["id"] = json!("a".repeat(65));
        assert_one(&p, "Patient.id", "not a valid id");
        let mut p = patient();
        p["id"] = json!("A-z.09");
        assert!(check_resource(&p).is_empty());
        let mut p = patient();
        p["_id"] = json!({"extension": []});
        assert_one(&p, "Patient._id", "unknown element");
    }

    #[test]
    fn strings() {
        let mut p = patient();
        p["name"][0]["family"] = json!("");
        assert_one(&p, "Patient.name[0].family", "empty string");
        let mut p = patient();
        p["name"][0]["family"] = json!("  \t");
        assert_one(&p, "Patient.name[0].family", "whitespace only");
        let mut p = patient();
        p["name"][0]["family"] = json!(" van\tder\r\nBerg ");
        assert!(check_resource(&p).is_empty());
        let mut p = patient();
        p["telecom"][0]["system"] = json!("phone ");
        assert_one(&p, "Patient.telecom[0].system", "not a valid code");
        let mut p = patient();
        p["implicitRules"] = json!("http://x y");
        assert_one(&p, "Patient.implicitRules", "not a valid uri");
    }

    #[test]
    fn decimals_and_integers() {
        let obs = |value: Value| {
            json!({
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "weight"},
                "valueQuantity": {"value": value, "unit": "kg"}
            })
        };
        let v: Value = serde_json::from_str(
            r#"{"resourceType":"Observation","status":"final","code":{"text":"w"},
                "valueQuantity":{"value":1.50}}"#,
        )
        .expect("json");
        assert_eq!(v["valueQuantity"]["value"].to_string(), "1.50");
        assert!(check_resource(&v).is_empty());
        assert!(check_resource(&obs(json!(-0.001))).is_empty());
        assert_one(
            &obs(json!("1.50")),
            "Observation.valueQuantity.value",
            "must be a JSON number, found string",
        );

        let mut p = patient();
        p["multipleBirthInteger"] = json!(2);
        p.as_object_mut().expect("object").remove("deceasedBoolean");
        assert!(check_resource(&p).is_empty(), "{:#?}", check_resource(&p));
        p["multipleBirthInteger"] = json!(2.5);
        assert_one(&p, "Patient.multipleBirthInteger", "must be a JSON integer");
        p["multipleBirthInteger"] = json!(3_000_000_000_i64);
        assert_one(&p, "Patient.multipleBirthInteger", "out of range");
        p["multipleBirthInteger"] = json!(1e3);
        assert_one(&p, "Patient.multipleBirthInteger", "must be a JSON integer");
        let huge = r#"{"resourceType":"Patient","multipleBirthInteger":123456789012345678901234}"#;
        let p: Value = serde_json::from_str(huge).expect("json");
        assert_one(&p, "Patient.multipleBirthInteger", "out of range");
        let mut p = patient();
        p["photo"] = json!([{"size": -1}]);
        assert_one(&p, "Patient.photo[0].size", "out of range [0,");
    }

    #[test]
    fn required_binding_codes() {
        let mut p = patient();
        p["gender"] = json!("girl");
        assert_one(&p, "Patient.gender", "`girl`");
        assert!(
            check_resource(&p)[0]
                .message
                .contains("male, female, other, unknown")
        );
    }

    #[test]
    fn shadow_elements() {
        let mut p = patient();
        p["_birthDate"] = json!({
            "extension": [{
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                "valueDateTime": "1974-12-25T14:35:45-05:00"
            }]
        });
        assert!(check_resource(&p).is_empty(), "{:#?}", check_resource(&p));
        // Extension only, no value: still fine.
        p.as_object_mut().expect("object").remove("birthDate");
        assert!(check_resource(&p).is_empty());
        // `_foo` only exists for primitives.
        let mut p = patient();
        p["_maritalStatus"] = json!({"extension": []});
        assert_one(&p, "Patient._maritalStatus", "unknown element");
        let mut p = patient();
        p["_birthDate"] = json!("x");
        assert_one(&p, "Patient._birthDate", "must be an object (Element)");
        let mut p = patient();
        p["_birthDate"] = json!({"url": "x"});
        assert_one(&p, "Patient._birthDate.url", "unknown element");
    }

    #[test]
    fn choice_elements_are_exclusive() {
        let mut p = patient();
        p["deceasedDateTime"] = json!("2020-01-01");
        assert_one(&p, "Patient.deceasedDateTime", "only one of `deceased[x]`");
    }

    #[test]
    fn required_elements() {
        // Narrative.div and Narrative.status are required.
        let mut p = patient();
        p["text"] = json!({"status": "generated"});
        assert_one(&p, "Patient.text", "missing required element `div`");
        let mut p = patient();
        p["text"]["div"] = json!("hello");
        assert_one(&p, "Patient.text.div", "XHTML");
        // Backbone-level required: Patient.link.other.
        let mut p = patient();
        p["link"] = json!([{"type": "seealso"}]);
        assert_one(&p, "Patient.link[0]", "missing required element `other`");
        // Required primitives come from the base StructureDefinitions, not the schema.
        let mut p = patient();
        p["link"] = json!([{"other": {"reference": "Patient/x"}}]);
        assert_one(&p, "Patient.link[0]", "missing required element `type`");
        p["link"][0]["_type"] = json!({"extension": [{"url": "http://x", "valueCode": "y"}]});
        assert!(check_resource(&p).is_empty(), "{:#?}", check_resource(&p));
        let mut consent = example("Consent-consent-example-basic.json");
        consent.as_object_mut().expect("object").remove("status");
        assert_one(&consent, "Consent", "missing required element `status`");
        let bundle = json!({"resourceType": "Bundle"});
        assert_one(&bundle, "Bundle", "missing required element `type`");
    }

    #[test]
    fn required_choice_elements() {
        let audit = |detail: Value| {
            json!({
                "resourceType": "AuditEvent",
                "type": {"code": "rest"},
                "recorded": "2020-01-01T00:00:00Z",
                "agent": [{"requestor": true}],
                "source": {"observer": {"display": "server"}},
                "entity": [{"detail": [detail]}]
            })
        };
        assert!(check_resource(&audit(json!({"type": "t", "valueString": "v"}))).is_empty());
        assert!(
            check_resource(&audit(json!({"type": "t", "valueBase64Binary": "AAAA"}))).is_empty()
        );
        assert_one(
            &audit(json!({"type": "t"})),
            "AuditEvent.entity[0].detail[0]",
            "missing required element `value[x]`",
        );
    }

    #[test]
    fn contained_resources_are_checked_by_their_type() {
        let mut p = patient();
        p["contained"] = json!([
            {"resourceType": "Organization", "id": "org1", "name": "Good Health"},
            {"resourceType": "Practitioner", "id": "p1", "name": [{"family": "Smith", "foo": 1}]}
        ]);
        assert_one(
            &p,
            "Patient.contained[1].name[0].foo",
            "unknown element `foo`",
        );
        let mut p = patient();
        p["contained"] = json!([{"resourceType": "Nope"}]);
        assert_one(
            &p,
            "Patient.contained[0].resourceType",
            "unknown resourceType `Nope`",
        );
        let mut p = patient();
        p["contained"] = json!([{"id": "x"}]);
        assert_one(&p, "Patient.contained[0]", "missing `resourceType`");
    }

    #[test]
    fn bundle_and_parameters_entries() {
        let mut b = example("Bundle-bundle-transaction.json");
        b["entry"][0]["resource"]["birthDate"] = json!("2020-13-01");
        let issues = check_resource(&b);
        assert_eq!(issues.len(), 1, "{issues:#?}");
        assert!(issues[0].path.starts_with("Bundle.entry[0].resource."));
        assert!(issues[0].path.ends_with("birthDate"));
        let params = json!({
            "resourceType": "Parameters",
            "parameter": [
                {"name": "p", "resource": {"resourceType": "Patient", "gender": "girl"}},
                {"name": "n", "valueInteger": 1}
            ]
        });
        assert_one(&params, "Parameters.parameter[0].resource.gender", "`girl`");
    }

    #[test]
    fn collects_every_issue() {
        let p = json!({
            "resourceType": "Patient",
            "id": "bad id",
            "gender": "girl",
            "birthDate": "2020-13-01",
            "foo": 1,
            "name": []
        });
        let paths: Vec<String> = check_resource(&p).into_iter().map(|i| i.path).collect();
        assert_eq!(
            paths,
            [
                "Patient.id",
                "Patient.gender",
                "Patient.birthDate",
                "Patient.foo",
                "Patient.name"
            ]
        );
    }
}
