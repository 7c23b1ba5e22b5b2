//! The vocabulary shared by search and storage: parameter kinds, index values extracted on
//! write, and parsed query values. Search builds these; stores persist and match them.

/// A SearchParameter `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// `number`
    Number,
    /// `date` (date, dateTime, instant, Period, Timing)
    Date,
    /// `string`
    String,
    /// `token`
    Token,
    /// `reference`
    Reference,
    /// `composite`
    Composite,
    /// `quantity`
    Quantity,
    /// `uri`
    Uri,
    /// `special`
    Special,
}

impl ParamKind {
    /// From the SearchParameter `type` code.
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "number" => ParamKind::Number,
            "date" => ParamKind::Date,
            "string" => ParamKind::String,
            "token" => ParamKind::Token,
            "reference" => ParamKind::Reference,
            "composite" => ParamKind::Composite,
            "quantity" => ParamKind::Quantity,
            "uri" => ParamKind::Uri,
            "special" => ParamKind::Special,
            _ => return None,
        })
    }

    /// The SearchParameter `type` code.
    pub fn code(self) -> &'static str {
        match self {
            ParamKind::Number => "number",
            ParamKind::Date => "date",
            ParamKind::String => "string",
            ParamKind::Token => "token",
            ParamKind::Reference => "reference",
            ParamKind::Composite => "composite",
            ParamKind::Quantity => "quantity",
            ParamKind::Uri => "uri",
            ParamKind::Special => "special",
        }
    }
}

/// One value extracted from a resource for one search parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// A string parameter value: `normalized` is lower-cased with accents removed (for the
    /// default starts-with and `:contains` matches), `exact` is the text as written.
    String {
        /// Case- and accent-folded text.
        normalized: String,
        /// Text as written (`:exact`).
        exact: String,
    },
    /// A token: from a code, Coding, CodeableConcept, Identifier, ContactPoint, boolean, id…
    Token {
        /// Code system / identifier system (`None` when absent).
        system: Option<String>,
        /// Code / identifier value (`None` when only text is present).
        code: Option<String>,
        /// Display or text, case- and accent-folded, for `:text`.
        text: Option<String>,
        /// Identifier.type codings as `system|code`, for `:of-type`.
        of_type: Option<String>,
    },
    /// A reference to another resource.
    Reference {
        /// Target type when known (`Patient` from `Patient/123` or an absolute URL to us).
        target_type: Option<String>,
        /// Target logical id when known.
        target_id: Option<String>,
        /// The reference as written (also canonical URLs).
        url: String,
    },
    /// A date range in milliseconds since the epoch: `[low, high)`; open ends use
    /// `i64::MIN` / `i64::MAX`.
    Date {
        /// Inclusive start.
        low: i64,
        /// Exclusive end.
        high: i64,
    },
    /// A number.
    Number {
        /// The value.
        value: f64,
    },
    /// A quantity.
    Quantity {
        /// The value.
        value: f64,
        /// Unit system.
        system: Option<String>,
        /// Unit code.
        code: Option<String>,
        /// Human unit, for matching `||unit`.
        unit: Option<String>,
    },
    /// A uri / url / canonical.
    Uri {
        /// The URI as written.
        uri: String,
    },
}

/// Search prefix for ordered types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefix {
    /// equal (the default)
    #[default]
    Eq,
    /// not equal
    Ne,
    /// greater than
    Gt,
    /// less than
    Lt,
    /// greater or equal
    Ge,
    /// less or equal
    Le,
    /// starts after
    Sa,
    /// ends before
    Eb,
    /// approximately
    Ap,
    /// The resource's range contains the value's (internal: derived criteria such as "an
    /// episode ongoing today"; no query string spells it).
    Covers,
}

/// A parsed query value for one parameter (the values of one parameter occurrence are ORed).
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    /// String: folded text (for starts-with/contains) and the raw text (for `:exact`).
    String {
        /// Case- and accent-folded.
        normalized: String,
        /// As written.
        exact: String,
    },
    /// Token: `system|code`, `|code` (system must be absent), `system|` (any code), `code`.
    Token {
        /// `None` = any system; `Some(None)` = no system; `Some(Some(s))` = that system.
        system: Option<Option<String>>,
        /// `None` = any code.
        code: Option<String>,
    },
    /// Date with prefix: the value's implied range `[low, high)` in ms since the epoch.
    Date {
        /// Comparison.
        prefix: Prefix,
        /// Inclusive start of the value's precision range.
        low: i64,
        /// Exclusive end of the value's precision range.
        high: i64,
    },
    /// Number with prefix and the implied precision range `[low, high)`.
    Number {
        /// Comparison.
        prefix: Prefix,
        /// The number.
        value: f64,
        /// Start of the implied range.
        low: f64,
        /// End of the implied range.
        high: f64,
    },
    /// Quantity: `[prefix]number|system|code` (system/code optional).
    Quantity {
        /// Comparison.
        prefix: Prefix,
        /// The number.
        value: f64,
        /// Start of the implied range.
        low: f64,
        /// End of the implied range.
        high: f64,
        /// Unit system (`None` = any).
        system: Option<String>,
        /// Unit code or unit text (`None` = any).
        code: Option<String>,
    },
    /// Reference: `Type/id`, `id`, or an absolute URL (our base stripped to `Type/id`).
    Reference {
        /// Target type if given.
        target_type: Option<String>,
        /// Target id if given (relative forms).
        target_id: Option<String>,
        /// The value as written (absolute URLs and canonicals match on this).
        url: String,
    },
    /// Uri.
    Uri(String),
}

/// Fold text for string matching: Unicode NFD, combining marks removed, lower-cased
/// (`"Ångström"` → `"angstrom"`), so searches are case- and accent-insensitive.
pub fn fold(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    use unicode_normalization::char::is_combining_mark;
    text.nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_and_accents() {
        assert_eq!(fold("Ångström"), "angstrom");
        assert_eq!(fold("JOSÉ Núñez"), "jose nunez");
        assert_eq!(fold("plain"), "plain");
    }
}
