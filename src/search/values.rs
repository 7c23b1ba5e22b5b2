//! Parsing search parameter values from a query string (FHIR R4 search, §3.1.1.4–3.1.1.5).
//!
//! The caller splits `name:modifier=value` and decodes the URL. It then splits the value on
//! unescaped commas with [`split_or`] (the parts are ORed), and parses each part with
//! [`parse_value`] for the parameter's [`ParamKind`]. Errors are plain messages naming what is
//! wrong with the value; the caller wraps them into a 400 naming the parameter.
//!
//! Escaping (R4 §3.1.1.5.7): in a value, `\,` `\|` `\$` and `\\` stand for a literal `,` `|` `$`
//! and `\`. [`split_or`] and [`split_composite`] keep escapes in place so that the kind-specific
//! separators (`|` in tokens, quantities, `of-type` and canonicals) can still be told apart from
//! escaped bars; [`parse_value`] unescapes each piece after splitting. A backslash before any
//! other character is kept as written.

use chrono::{Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};

use super::model::{ParamKind, Prefix, QueryValue, fold};

/// Split a parameter value on unescaped commas (OR).
///
/// The escapes `\,` `\|` `\$` `\\` are left in place in each part — a token or reference part
/// must keep `\|` distinguishable from its `system|code` separator — and [`parse_value`]
/// unescapes after its own splitting. An empty value gives one empty part; empty parts
/// (`a,,b`) are kept so that [`parse_value`] reports them.
///
/// `split_or(r"a\,b,c")` → `[r"a\,b", "c"]`.
pub fn split_or(raw: &str) -> Vec<String> {
    split_unescaped(raw, ',')
}

/// Split a composite parameter value (`code$value`) on unescaped `$` into its components,
/// escapes left in place as in [`split_or`]; parse each component with [`parse_value`] for the
/// component's kind.
pub fn split_composite(raw: &str) -> Vec<String> {
    split_unescaped(raw, '$')
}

/// Resolve the search escapes `\,` `\|` `\$` `\\` to the literal character. A backslash before
/// any other character (or at the end) is kept as written.
pub fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(next @ (',' | '|' | '$' | '\\')) => out.push(next),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Split on `sep` where it is not escaped by a backslash; escapes stay in the parts.
fn split_unescaped(raw: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            current.push(c);
            if let Some(next) = chars.next() {
                current.push(next);
            }
        } else if c == sep {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

/// Parse one OR-part (from [`split_or`], escapes still in place) of a parameter of `kind`.
///
/// `modifier` is what followed the `:` in the parameter name, if anything (`exact`,
/// `contains`, `text`, `not`, `missing`, `above`, `below`, `of-type`, `identifier`, or a
/// resource type such as `Patient` on a reference). `base_url` is this server's FHIR base
/// (`http://host/fhir`, with or without a trailing `/`): reference values under it become
/// relative `Type/id`.
///
/// What comes back, by kind and modifier:
///
/// * any kind with `:missing` — the value must be `true` or `false`;
///   returns `Token { system: None, code: Some("true" | "false") }`.
/// * **number** — `[prefix]decimal`; returns [`QueryValue::Number`] with the implied precision
///   range (see [`parse_value`]'s notes on numbers below).
/// * **date** — `[prefix]date`; returns [`QueryValue::Date`] with the precision range from
///   [`date_range`].
/// * **quantity** — `[prefix]number|system|code`, `[prefix]number||code` (code matches the
///   unit code or the unit text) or `[prefix]number`; returns [`QueryValue::Quantity`] with
///   `system`/`code` unescaped, `None` when empty (= any).
/// * **string** (no modifier, `:exact`, `:contains`) — [`QueryValue::String`] with
///   `normalized = fold(value)` and `exact = value`, unescaped. Which match to apply is the
///   caller's, from the modifier.
/// * **token** (no modifier or `:not`) — [`QueryValue::Token`]: `system|code` →
///   `system: Some(Some(system))`, `|code` → `system: Some(None)` (no system), `system|` →
///   `code: None` (any code), `code` → `system: None` (any system). More than one unescaped
///   `|` is an error.
/// * **token `:text`** — [`QueryValue::String`] with the folded text (match it against the
///   folded display/text).
/// * **token `:of-type`** (identifiers) — the value is `typeSystem|typeCode|value`; returns
///   `Token { system: Some(Some("typeSystem|typeCode")), code: Some(value) }`. That is,
///   `system` carries the Identifier.type coding joined with `|` exactly as
///   `IndexValue::Token::of_type` stores it, and `code` is the Identifier.value. The type
///   code and the value are required; the type system may be empty (giving `"|typeCode"`).
/// * **reference** (no modifier or `:Type`) — [`QueryValue::Reference`]:
///   `Type/id` and `Type/id/_history/n` (version ignored) → `target_type`, `target_id`,
///   `url = "Type/id"`; a plain `id` → `target_id` only (`target_type` from a `:Type`
///   modifier, and then `url = "Type/id"`, else `url = id`); an absolute URL under `base_url`
///   → as its relative `Type/id`; any other absolute URL (or URN) → `url` only, the type
///   modifier not applied; a canonical `url|version` → the url, version stripped. A `:Type`
///   modifier that contradicts the value's type is an error.
/// * **reference `:identifier`** — the value is a token (`system|value`); returns
///   [`QueryValue::Token`] as for a token parameter (the planner matches it against
///   `Reference.identifier`, or rejects it if it does not index that).
/// * **uri** (no modifier, `:below`, `:above`) — [`QueryValue::Uri`] as written, unescaped;
///   the caller applies `:below`/`:above`.
/// * **composite** and **special** — an error: composite values are split with
///   [`split_composite`] and each component parsed for its own kind; special parameters
///   (`near`, `_content`, `_text`, …) have their own syntax.
///
/// Any other modifier for the kind is an error, as is an empty value.
///
/// Numbers (and quantity values): the implied range is half a unit of the last significant
/// digit either side, as in R4's examples — `100` means `[99.5, 100.5)`, `100.00` means
/// `[99.995, 100.005)`, `5.4` means `[5.35, 5.45)` and `5.40e-3` means `0.0054 ± 0.000005`.
/// In exponent form the mantissa's digits are the significant ones, so `1e2` (one significant
/// figure) means `[50, 150)` and `1.00e2` means `[99.5, 100.5)`. (R4's number table says `1e2`
/// is "100, to 1 significant figures precision" but then gives the range `[95 ... 105)`, which
/// contradicts both that wording and the quantity example `5.40e-3`; we follow the
/// significant-figure rule.) The bounds are computed in decimal and rounded once to `f64`, so `low` for `100.00` is
/// exactly the `f64` nearest to `99.995`. Whether the range or the exact `value` applies
/// depends on the prefix (R4: `gt lt ge le sa eb` use the exact value) and is the caller's.
pub fn parse_value(
    kind: ParamKind,
    modifier: Option<&str>,
    raw: &str,
    base_url: &str,
) -> Result<QueryValue, String> {
    if raw.is_empty() {
        return Err("the value is empty".into());
    }
    if modifier == Some("missing") {
        return match raw {
            "true" | "false" => Ok(QueryValue::Token {
                system: None,
                code: Some(raw.to_string()),
            }),
            _ => Err(format!(":missing takes `true` or `false`, not `{raw}`")),
        };
    }
    match kind {
        ParamKind::Number => {
            no_modifier(kind, modifier)?;
            let (prefix, number) = parse_prefixed(raw, parse_number)?;
            Ok(QueryValue::Number {
                prefix,
                value: number.value,
                low: number.low,
                high: number.high,
            })
        }
        ParamKind::Date => {
            no_modifier(kind, modifier)?;
            let (prefix, (low, high)) = parse_prefixed(raw, date_range)?;
            Ok(QueryValue::Date { prefix, low, high })
        }
        ParamKind::Quantity => {
            no_modifier(kind, modifier)?;
            parse_quantity(raw)
        }
        ParamKind::String => match modifier {
            None | Some("exact") | Some("contains") => Ok(string_value(unescape(raw))),
            Some(other) => Err(unsupported(kind, other)),
        },
        ParamKind::Token => match modifier {
            None | Some("not") => parse_token(raw),
            Some("text") => Ok(string_value(unescape(raw))),
            Some("of-type") => parse_of_type(raw),
            Some(other) => Err(unsupported(kind, other)),
        },
        ParamKind::Reference => match modifier {
            None => parse_reference(raw, None, base_url),
            Some("identifier") => parse_token(raw),
            Some(t) if is_type_name(t) => parse_reference(raw, Some(t), base_url),
            Some(other) => Err(unsupported(kind, other)),
        },
        ParamKind::Uri => match modifier {
            None | Some("below") | Some("above") => Ok(QueryValue::Uri(unescape(raw))),
            Some(other) => Err(unsupported(kind, other)),
        },
        ParamKind::Composite => Err(
            "a composite value is parsed component by component (`code$value`), not as a whole"
                .into(),
        ),
        ParamKind::Special => Err("special parameters have their own value syntax".into()),
    }
}

fn unsupported(kind: ParamKind, modifier: &str) -> String {
    format!(
        "the modifier `:{modifier}` is not supported on {} parameters",
        kind.code()
    )
}

fn no_modifier(kind: ParamKind, modifier: Option<&str>) -> Result<(), String> {
    match modifier {
        None => Ok(()),
        Some(m) => Err(unsupported(kind, m)),
    }
}

fn string_value(text: String) -> QueryValue {
    QueryValue::String {
        normalized: fold(&text),
        exact: text,
    }
}

/// Split a prefix (`eq ne gt lt ge le sa eb ap`) off a number, date or quantity value.
///
/// Returns [`Prefix::Eq`] and the whole value when it does not start with one of these nine
/// (lower-case) prefixes. No number or date starts with a letter, so the split is never
/// ambiguous; an unknown two-letter prefix (`xx10`) is left in the value, and [`parse_value`]
/// reports it as an unknown prefix.
///
/// `split_prefix("ge2010-01-01")` → `(Prefix::Ge, "2010-01-01")`;
/// `split_prefix("2020")` → `(Prefix::Eq, "2020")`.
pub fn split_prefix(raw: &str) -> (Prefix, &str) {
    let Some(head) = raw.get(..2) else {
        return (Prefix::Eq, raw);
    };
    let prefix = match head {
        "eq" => Prefix::Eq,
        "ne" => Prefix::Ne,
        "gt" => Prefix::Gt,
        "lt" => Prefix::Lt,
        "ge" => Prefix::Ge,
        "le" => Prefix::Le,
        "sa" => Prefix::Sa,
        "eb" => Prefix::Eb,
        "ap" => Prefix::Ap,
        _ => return (Prefix::Eq, raw),
    };
    (prefix, &raw[2..])
}

/// Split the prefix off and parse the rest; tell an unknown prefix from a bad value.
fn parse_prefixed<T>(
    raw: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<(Prefix, T), String> {
    let (prefix, rest) = split_prefix(raw);
    if rest.is_empty() {
        return Err(format!("`{raw}` has a prefix but no value"));
    }
    match parse(rest) {
        Ok(value) => Ok((prefix, value)),
        Err(message) => {
            let bytes = raw.as_bytes();
            let unprefixed = rest.len() == raw.len();
            if unprefixed
                && bytes.len() > 2
                && bytes[0].is_ascii_alphabetic()
                && bytes[1].is_ascii_alphabetic()
                && parse(&raw[2..]).is_ok()
            {
                Err(format!(
                    "unknown prefix `{}` in `{raw}` (expected one of eq, ne, gt, lt, ge, le, sa, eb, ap)",
                    &raw[..2]
                ))
            } else {
                Err(message)
            }
        }
    }
}

/// A decimal with its implied precision range.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Decimal {
    value: f64,
    low: f64,
    high: f64,
}

/// Parse a search number: `-?digits(.digits)?([eE][+-]?digits)?` (leading zeros allowed).
fn parse_number(text: &str) -> Result<Decimal, String> {
    let bad = |why: &str| format!("`{text}` is not a valid number ({why})");
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("expected digits before any decimal point"));
    }
    if mantissa.contains('.')
        && (frac_part.is_empty() || !frac_part.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("expected digits after the decimal point"));
    }
    let exp: Option<i64> = match exponent {
        None => None,
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("expected digits in the exponent"));
            }
            match e.parse::<i64>() {
                Ok(v) if v.abs() <= 10_000 => Some(v),
                _ => return Err(bad("exponent out of range")),
            }
        }
    };
    let value: f64 = text.parse().map_err(|_| bad("not a decimal"))?;
    if !value.is_finite() {
        return Err(bad("out of range"));
    }
    // The value in units of 10^scale: `units` (decimal digits) × 10^scale.
    // The last significant digit is at 10^scale.
    let scale = exp.unwrap_or(0) - frac_part.len() as i64;
    let units = format!("{int_part}{frac_part}");
    let units = units.trim_start_matches('0');
    // Bounds: (10·units ∓ 5) × 10^(scale−1).
    let above = format!("{units}5");
    let below = if units.is_empty() {
        None // zero: the range is symmetric around 0
    } else {
        Some(format!("{}5", decrement(units)))
    };
    let decimal = |digits: &str, neg: bool| -> f64 {
        let sign = if neg { "-" } else { "" };
        format!("{sign}{digits}e{}", scale - 1)
            .parse::<f64>()
            .unwrap_or(f64::NAN)
    };
    let (low, high) = match (&below, negative) {
        (None, _) => (decimal(&above, true), decimal(&above, false)),
        (Some(below), false) => (decimal(below, false), decimal(&above, false)),
        (Some(below), true) => (decimal(&above, true), decimal(below, true)),
    };
    // Beyond f64's precision the range can collapse onto the value; keep it non-empty.
    let low = low.min(value);
    let high = if high > value { high } else { value.next_up() };
    Ok(Decimal { value, low, high })
}

/// Subtract one from a non-zero string of decimal digits.
fn decrement(digits: &str) -> String {
    let mut bytes = digits.as_bytes().to_vec();
    for b in bytes.iter_mut().rev() {
        if *b == b'0' {
            *b = b'9';
        } else {
            *b -= 1;
            break;
        }
    }
    let text = String::from_utf8(bytes).unwrap_or_default();
    let trimmed = text.trim_start_matches('0');
    if trimmed.is_empty() {
        String::new()
    } else {
        trimmed.to_string()
    }
}

fn parse_quantity(raw: &str) -> Result<QueryValue, String> {
    let parts = split_unescaped(raw, '|');
    let (number, system, code) = match parts.as_slice() {
        [number] => (number.as_str(), None, None),
        [number, system, code] => {
            let system = unescape(system);
            let code = unescape(code);
            (
                number.as_str(),
                (!system.is_empty()).then_some(system),
                (!code.is_empty()).then_some(code),
            )
        }
        _ => {
            return Err(format!(
                "`{raw}` is not a quantity (expected number, number|system|code or number||code)"
            ));
        }
    };
    let (prefix, decimal) = parse_prefixed(number, parse_number)?;
    Ok(QueryValue::Quantity {
        prefix,
        value: decimal.value,
        low: decimal.low,
        high: decimal.high,
        system,
        code,
    })
}

fn parse_token(raw: &str) -> Result<QueryValue, String> {
    let parts = split_unescaped(raw, '|');
    match parts.as_slice() {
        [code] => {
            let code = unescape(code);
            if code.is_empty() {
                return Err("the token is empty".into());
            }
            Ok(QueryValue::Token {
                system: None,
                code: Some(code),
            })
        }
        [system, code] => {
            let system = unescape(system);
            let code = unescape(code);
            if system.is_empty() && code.is_empty() {
                return Err("the token `|` names neither a system nor a code".into());
            }
            Ok(QueryValue::Token {
                system: Some((!system.is_empty()).then_some(system)),
                code: (!code.is_empty()).then_some(code),
            })
        }
        _ => Err(format!(
            "the token `{raw}` has more than one unescaped `|` (write a literal bar as `\\|`)"
        )),
    }
}

fn parse_of_type(raw: &str) -> Result<QueryValue, String> {
    let parts = split_unescaped(raw, '|');
    let [system, code, value] = parts.as_slice() else {
        return Err(format!(
            "`{raw}` is not an :of-type value (expected typeSystem|typeCode|value)"
        ));
    };
    let (system, code, value) = (unescape(system), unescape(code), unescape(value));
    if code.is_empty() || value.is_empty() {
        return Err(format!(
            "`{raw}` is not an :of-type value (the type code and the identifier value are required)"
        ));
    }
    Ok(QueryValue::Token {
        system: Some(Some(format!("{system}|{code}"))),
        code: Some(value),
    })
}

/// A resource type name: an upper-case ASCII letter then ASCII letters.
fn is_type_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_alphabetic())
}

/// A FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
fn is_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn parse_reference(
    raw: &str,
    type_modifier: Option<&str>,
    base_url: &str,
) -> Result<QueryValue, String> {
    let parts = split_unescaped(raw, '|');
    if parts.len() > 2 {
        return Err(format!(
            "the reference `{raw}` has more than one unescaped `|` (expected url or url|version)"
        ));
    }
    let value = unescape(&parts[0]);
    if value.is_empty() {
        return Err(format!("the reference `{raw}` is empty"));
    }
    let base = base_url.trim_end_matches('/');
    let ours = (!base.is_empty())
        .then(|| value.strip_prefix(base)?.strip_prefix('/'))
        .flatten();
    let relative = match ours {
        Some(path) => path,
        None if value.contains(':') => {
            // Another server's URL, a URN or a canonical: matched as written.
            return Ok(QueryValue::Reference {
                target_type: None,
                target_id: None,
                url: value,
            });
        }
        None => value.as_str(),
    };
    let not_a_reference =
        || format!("`{raw}` is not a reference (expected Type/id, an id, or an absolute URL)");
    let segments: Vec<&str> = relative.split('/').collect();
    let (rtype, id) = match segments.as_slice() {
        [id] => (None, *id),
        [rtype, id] | [rtype, id, "_history", _] => (Some(*rtype), *id),
        _ => return Err(not_a_reference()),
    };
    if let [_, _, _, version] = segments.as_slice()
        && !is_id(version)
    {
        return Err(format!("`{raw}` has an invalid version `{version}`"));
    }
    if !is_id(id) {
        return Err(format!("`{raw}` holds the invalid id `{id}`"));
    }
    let rtype = match (rtype, type_modifier) {
        (Some(t), _) if !is_type_name(t) => {
            return Err(format!("`{raw}` names the invalid resource type `{t}`"));
        }
        (Some(t), Some(m)) if t != m => {
            return Err(format!(
                "`{raw}` is a {t} reference, but the modifier asks for :{m}"
            ));
        }
        (Some(t), _) | (None, Some(t)) => Some(t),
        (None, None) => None,
    };
    Ok(QueryValue::Reference {
        target_type: rtype.map(str::to_string),
        target_id: Some(id.to_string()),
        url: match rtype {
            Some(t) => format!("{t}/{id}"),
            None => id.to_string(),
        },
    })
}

/// Date precision, from the parts given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    Year,
    Month,
    Day,
    Minute,
    Second,
    Millisecond,
}

/// Parse a FHIR date/dateTime/instant search value (without prefix) into its precision range
/// `[low, high)` in milliseconds since the epoch.
///
/// Accepted forms (R4 date, dateTime and instant, plus minutes, which R4 search allows):
/// `YYYY` (the whole year), `YYYY-MM` (the month), `YYYY-MM-DD` (the day),
/// `YYYY-MM-DDThh:mm` (that minute), `YYYY-MM-DDThh:mm:ss` (that second) and
/// `YYYY-MM-DDThh:mm:ss.f…` (that millisecond; digits past the third are ignored). A time may
/// end in a zone, `Z` or `±hh:mm`; without one it is read as UTC, as are the date-only forms.
/// A space in place of the `+` of a zone is read as `+` (an unencoded `+` in a query string
/// decodes to a space).
///
/// Errors name what is wrong: an impossible month or day (`2024-13-01`, `2024-02-30`), a time
/// out of range (`25:00`, a leap second), a zone beyond ±14:00, year `0000`, or text that is
/// not a date at all (`yesterday`).
pub fn date_range(text: &str) -> Result<(i64, i64), String> {
    let bad = |why: &str| format!("`{text}` is not a valid date ({why})");
    let shape =
        || bad("expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.sss]][Z|±hh:mm]");
    let b = text.as_bytes();
    let digits = |from: usize, len: usize| -> Option<u32> {
        let slice = b.get(from..from + len)?;
        if !slice.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(slice).ok()?.parse().ok()
    };
    let year = digits(0, 4).ok_or_else(shape)? as i32;
    if year == 0 {
        return Err(bad("year 0000"));
    }
    let mut precision = Precision::Year;
    let (mut month, mut day) = (1, 1);
    let (mut hour, mut minute, mut second, mut milli) = (0, 0, 0, 0);
    let mut at = 4;
    if at < b.len() {
        if b[at] != b'-' {
            return Err(shape());
        }
        month = digits(at + 1, 2).ok_or_else(shape)?;
        if !(1..=12).contains(&month) {
            return Err(bad(&format!("month {month:02} does not exist")));
        }
        precision = Precision::Month;
        at += 3;
    }
    if at < b.len() {
        if b[at] != b'-' {
            return Err(shape());
        }
        day = digits(at + 1, 2).ok_or_else(shape)?;
        if NaiveDate::from_ymd_opt(year, month, day).is_none() {
            return Err(bad(&format!("{year:04}-{month:02} has no day {day:02}")));
        }
        precision = Precision::Day;
        at += 3;
    }
    let mut offset_seconds = 0;
    if at < b.len() {
        if b[at] != b'T' {
            return Err(shape());
        }
        hour = digits(at + 1, 2).ok_or_else(shape)?;
        if b.get(at + 3) != Some(&b':') {
            return Err(shape());
        }
        minute = digits(at + 4, 2).ok_or_else(shape)?;
        precision = Precision::Minute;
        at += 6;
        if b.get(at) == Some(&b':') {
            second = digits(at + 1, 2).ok_or_else(shape)?;
            precision = Precision::Second;
            at += 3;
            if b.get(at) == Some(&b'.') {
                let start = at + 1;
                let mut end = start;
                while b.get(end).is_some_and(u8::is_ascii_digit) {
                    end += 1;
                }
                if end == start {
                    return Err(bad("expected digits after the decimal point"));
                }
                let first3 = format!("{:0<3}", &text[start..end.min(start + 3)]);
                milli = first3.parse().map_err(|_| shape())?;
                precision = Precision::Millisecond;
                at = end;
            }
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(bad(&format!(
                "time {hour:02}:{minute:02}:{second:02} is out of range"
            )));
        }
        match b.get(at) {
            None => {}
            Some(b'Z') => at += 1,
            Some(sign @ (b'+' | b'-' | b' ')) => {
                let zh = digits(at + 1, 2).ok_or_else(shape)?;
                if b.get(at + 3) != Some(&b':') {
                    return Err(shape());
                }
                let zm = digits(at + 4, 2).ok_or_else(shape)?;
                if zm > 59 || zh > 14 || (zh == 14 && zm > 0) {
                    return Err(bad("time zone offset out of range"));
                }
                let magnitude = (zh * 3600 + zm * 60) as i32;
                offset_seconds = if *sign == b'-' { -magnitude } else { magnitude };
                at += 6;
            }
            Some(_) => return Err(shape()),
        }
        if at != b.len() {
            return Err(shape());
        }
    }
    let date = NaiveDate::from_ymd_opt(year, month, day).ok_or_else(shape)?;
    let time = NaiveTime::from_hms_milli_opt(hour, minute, second, milli).ok_or_else(shape)?;
    let start = NaiveDateTime::new(date, time);
    let end = match precision {
        Precision::Year => NaiveDate::from_ymd_opt(year + 1, 1, 1).map(|d| d.and_time(time)),
        Precision::Month => {
            let (y, m) = if month == 12 {
                (year + 1, 1)
            } else {
                (year, month + 1)
            };
            NaiveDate::from_ymd_opt(y, m, 1).map(|d| d.and_time(time))
        }
        Precision::Day => date.succ_opt().map(|d| d.and_time(time)),
        Precision::Minute => start.checked_add_signed(Duration::minutes(1)),
        Precision::Second => start.checked_add_signed(Duration::seconds(1)),
        Precision::Millisecond => start.checked_add_signed(Duration::milliseconds(1)),
    }
    .ok_or_else(|| bad("out of range"))?;
    let zone = FixedOffset::east_opt(offset_seconds).ok_or_else(|| bad("bad zone"))?;
    let millis = |t: NaiveDateTime| -> Result<i64, String> {
        zone.from_local_datetime(&t)
            .single()
            .map(|dt| dt.timestamp_millis())
            .ok_or_else(|| bad("out of range"))
    };
    Ok((millis(start)?, millis(end)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://host/fhir";

    fn ms(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    fn parse(kind: ParamKind, modifier: Option<&str>, raw: &str) -> Result<QueryValue, String> {
        parse_value(kind, modifier, raw, BASE)
    }

    fn f(text: &str) -> f64 {
        text.parse().unwrap()
    }

    fn number(raw: &str) -> (Prefix, f64, f64, f64) {
        match parse(ParamKind::Number, None, raw).unwrap() {
            QueryValue::Number {
                prefix,
                value,
                low,
                high,
            } => (prefix, value, low, high),
            other => panic!("not a number: {other:?}"),
        }
    }

    fn date(raw: &str) -> (Prefix, i64, i64) {
        match parse(ParamKind::Date, None, raw).unwrap() {
            QueryValue::Date { prefix, low, high } => (prefix, low, high),
            other => panic!("not a date: {other:?}"),
        }
    }

    fn token(system: Option<Option<&str>>, code: Option<&str>) -> QueryValue {
        QueryValue::Token {
            system: system.map(|s| s.map(str::to_string)),
            code: code.map(str::to_string),
        }
    }

    fn reference(t: Option<&str>, id: Option<&str>, url: &str) -> QueryValue {
        QueryValue::Reference {
            target_type: t.map(str::to_string),
            target_id: id.map(str::to_string),
            url: url.to_string(),
        }
    }

    fn err(kind: ParamKind, modifier: Option<&str>, raw: &str) -> String {
        match parse(kind, modifier, raw) {
            Err(message) => message,
            Ok(v) => panic!("`{raw}` parsed as {v:?}"),
        }
    }

    // ---- split_or / escapes -------------------------------------------------------------

    #[test]
    fn split_or_splits_on_unescaped_commas_and_keeps_escapes() {
        assert_eq!(split_or("a,b"), ["a", "b"]);
        assert_eq!(split_or("a"), ["a"]);
        assert_eq!(split_or(""), [""]);
        assert_eq!(split_or("a,,b"), ["a", "", "b"]);
        assert_eq!(split_or("a,"), ["a", ""]);
        assert_eq!(split_or(r"a\,b,c"), [r"a\,b", "c"]);
        assert_eq!(split_or(r"s\|x|c,d"), [r"s\|x|c", "d"]);
        // An escaped backslash does not escape the comma after it.
        assert_eq!(split_or(r"a\\,b"), [r"a\\", "b"]);
        assert_eq!(split_or(r"trailing\"), [r"trailing\"]);
    }

    #[test]
    fn unescape_resolves_the_four_escapes_only() {
        assert_eq!(unescape(r"a\,b\|c\$d\\e"), r"a,b|c$d\e");
        assert_eq!(unescape(r"C:\temp"), r"C:\temp");
        assert_eq!(unescape(r"end\"), r"end\");
        assert_eq!(unescape("plain"), "plain");
    }

    #[test]
    fn split_composite_on_unescaped_dollar() {
        assert_eq!(
            split_composite("http://loinc.org|8480-6$lt60"),
            ["http://loinc.org|8480-6", "lt60"]
        );
        assert_eq!(split_composite(r"a\$b$c"), [r"a\$b", "c"]);
    }

    #[test]
    fn spec_escaping_example() {
        // R4: `?parameter=first\,value` is a single value `first,value`.
        let parts = split_or(r"first\,value");
        assert_eq!(parts.len(), 1);
        assert_eq!(
            parse(ParamKind::String, None, &parts[0]).unwrap(),
            QueryValue::String {
                normalized: "first,value".into(),
                exact: "first,value".into()
            }
        );
    }

    // ---- prefixes -----------------------------------------------------------------------

    #[test]
    fn split_prefix_recognises_the_nine_prefixes() {
        for (text, prefix) in [
            ("eq", Prefix::Eq),
            ("ne", Prefix::Ne),
            ("gt", Prefix::Gt),
            ("lt", Prefix::Lt),
            ("ge", Prefix::Ge),
            ("le", Prefix::Le),
            ("sa", Prefix::Sa),
            ("eb", Prefix::Eb),
            ("ap", Prefix::Ap),
        ] {
            assert_eq!(split_prefix(&format!("{text}2020")), (prefix, "2020"));
        }
        assert_eq!(split_prefix("2020"), (Prefix::Eq, "2020"));
        assert_eq!(split_prefix("-5"), (Prefix::Eq, "-5"));
        assert_eq!(split_prefix("xx10"), (Prefix::Eq, "xx10"));
        assert_eq!(split_prefix("GE10"), (Prefix::Eq, "GE10"));
        assert_eq!(split_prefix("g"), (Prefix::Eq, "g"));
        assert_eq!(split_prefix(""), (Prefix::Eq, ""));
        assert_eq!(split_prefix("ge"), (Prefix::Ge, ""));
        assert_eq!(split_prefix("é1"), (Prefix::Eq, "é1"));
    }

    #[test]
    fn unknown_prefixes_are_reported_as_such() {
        let e = err(ParamKind::Number, None, "xx10");
        assert!(e.contains("unknown prefix `xx`"), "{e}");
        let e = err(ParamKind::Date, None, "on2020-01-01");
        assert!(e.contains("unknown prefix `on`"), "{e}");
        let e = err(ParamKind::Quantity, None, "zz5.4||mg");
        assert!(e.contains("unknown prefix `zz`"), "{e}");
        let e = err(ParamKind::Number, None, "GE10");
        assert!(e.contains("unknown prefix `GE`"), "{e}");
        // Not a prefix: the rest is no number or date either.
        let e = err(ParamKind::Date, None, "yesterday");
        assert!(e.contains("not a valid date"), "{e}");
        let e = err(ParamKind::Number, None, "ten");
        assert!(e.contains("not a valid number"), "{e}");
        // A known prefix with nothing after it.
        let e = err(ParamKind::Number, None, "ge");
        assert!(e.contains("no value"), "{e}");
        // A known prefix followed by a bad value reports the value.
        let e = err(ParamKind::Date, None, "ge2024-13-01");
        assert!(e.contains("month 13"), "{e}");
    }

    // ---- numbers ------------------------------------------------------------------------

    #[test]
    fn spec_number_examples() {
        // R4 §3.1.1.5.1
        assert_eq!(number("100"), (Prefix::Eq, 100.0, 99.5, 100.5));
        assert_eq!(
            number("100.00"),
            (Prefix::Eq, 100.0, f("99.995"), f("100.005"))
        );
        // R4's table gives [95 ... 105) here, contradicting its own "1 significant figure" and
        // the quantity example 5.40e-3 (see `parse_value`): one significant figure is ±50.
        assert_eq!(number("1e2"), (Prefix::Eq, 100.0, 50.0, 150.0));
        assert_eq!(number("1.00e2"), (Prefix::Eq, 100.0, 99.5, 100.5));
        assert_eq!(number("lt100"), (Prefix::Lt, 100.0, 99.5, 100.5));
        assert_eq!(number("le100").0, Prefix::Le);
        assert_eq!(number("gt100").0, Prefix::Gt);
        assert_eq!(number("ge100").0, Prefix::Ge);
        assert_eq!(number("ne100"), (Prefix::Ne, 100.0, 99.5, 100.5));
        // RiskAssessment?probability=gt0.8
        assert_eq!(number("gt0.8"), (Prefix::Gt, 0.8, f("0.75"), f("0.85")));
    }

    #[test]
    fn number_precision_variants() {
        assert_eq!(number("0"), (Prefix::Eq, 0.0, -0.5, 0.5));
        assert_eq!(number("0.0"), (Prefix::Eq, 0.0, -0.05, 0.05));
        assert_eq!(number("-100"), (Prefix::Eq, -100.0, -100.5, -99.5));
        assert_eq!(number("-0.5"), (Prefix::Eq, -0.5, f("-0.55"), f("-0.45")));
        assert_eq!(number("1"), (Prefix::Eq, 1.0, 0.5, 1.5));
        assert_eq!(number("10"), (Prefix::Eq, 10.0, 9.5, 10.5));
        assert_eq!(
            number("100.5"),
            (Prefix::Eq, 100.5, f("100.45"), f("100.55"))
        );
        assert_eq!(number("007"), (Prefix::Eq, 7.0, 6.5, 7.5));
        assert_eq!(number("1.5e2"), (Prefix::Eq, 150.0, 145.0, 155.0));
        assert_eq!(number("1E2"), (Prefix::Eq, 100.0, 50.0, 150.0));
        assert_eq!(number("1e+2"), (Prefix::Eq, 100.0, 50.0, 150.0));
        assert_eq!(
            number("1.0e-2"),
            (Prefix::Eq, 0.01, f("0.0095"), f("0.0105"))
        );
        assert_eq!(
            number("5e-3"),
            (Prefix::Eq, 0.005, f("0.0045"), f("0.0055"))
        );
        assert_eq!(number("-1e2"), (Prefix::Eq, -100.0, -150.0, -50.0));
        assert_eq!(number("0e0"), (Prefix::Eq, 0.0, -0.5, 0.5));
        assert_eq!(number("1000e-1"), (Prefix::Eq, 100.0, 99.95, 100.05));
        assert_eq!(number("ap2020"), (Prefix::Ap, 2020.0, 2019.5, 2020.5));
        assert_eq!(number("ge10"), (Prefix::Ge, 10.0, 9.5, 10.5));
        let (_, v, low, high) = number("12345678901234567890123.5");
        assert!(low <= v && v < high);
    }

    #[test]
    fn bad_numbers_are_rejected() {
        for raw in [
            "abc",
            "1.",
            ".5",
            "1e",
            "1e+",
            "--1",
            "+1",
            "1.2.3",
            "1,5",
            "0x10",
            "inf",
            "NaN",
            "1 ",
            " 1",
            "1e400",
            "1e99999999999",
            "e5",
            "-",
        ] {
            let e = err(ParamKind::Number, None, raw);
            assert!(!e.is_empty(), "{raw}");
        }
        assert!(err(ParamKind::Number, None, "1.").contains("`1.` is not a valid number"));
    }

    // ---- dates --------------------------------------------------------------------------

    #[test]
    fn date_precision_ranges() {
        assert_eq!(
            date_range("2024").unwrap(),
            (ms("2024-01-01T00:00:00Z"), ms("2025-01-01T00:00:00Z"))
        );
        assert_eq!(
            date_range("2024-02").unwrap(),
            (ms("2024-02-01T00:00:00Z"), ms("2024-03-01T00:00:00Z"))
        );
        assert_eq!(
            date_range("2024-12").unwrap(),
            (ms("2024-12-01T00:00:00Z"), ms("2025-01-01T00:00:00Z"))
        );
        assert_eq!(
            date_range("2024-02-29").unwrap(),
            (ms("2024-02-29T00:00:00Z"), ms("2024-03-01T00:00:00Z"))
        );
        assert_eq!(
            date_range("2024-12-31").unwrap(),
            (ms("2024-12-31T00:00:00Z"), ms("2025-01-01T00:00:00Z"))
        );
        assert_eq!(
            date_range("2024-03-05T10:00").unwrap(),
            (ms("2024-03-05T10:00:00Z"), ms("2024-03-05T10:01:00Z"))
        );
        assert_eq!(
            date_range("2024-03-05T10:00:30").unwrap(),
            (ms("2024-03-05T10:00:30Z"), ms("2024-03-05T10:00:31Z"))
        );
        assert_eq!(
            date_range("2024-03-05T10:00:30.250").unwrap(),
            (
                ms("2024-03-05T10:00:30.250Z"),
                ms("2024-03-05T10:00:30.251Z")
            )
        );
        assert_eq!(
            date_range("2024-03-05T10:00:30.5").unwrap(),
            (
                ms("2024-03-05T10:00:30.500Z"),
                ms("2024-03-05T10:00:30.501Z")
            )
        );
        assert_eq!(
            date_range("2024-03-05T10:00:30.123456").unwrap(),
            (
                ms("2024-03-05T10:00:30.123Z"),
                ms("2024-03-05T10:00:30.124Z")
            )
        );
        assert_eq!(
            date_range("2024-03-05T23:59:59").unwrap(),
            (ms("2024-03-05T23:59:59Z"), ms("2024-03-06T00:00:00Z"))
        );
        assert_eq!(
            date_range("1969-07-20").unwrap(),
            (ms("1969-07-20T00:00:00Z"), ms("1969-07-21T00:00:00Z"))
        );
        assert_eq!(date_range("1970").unwrap().0, 0);
    }

    #[test]
    fn date_zones() {
        assert_eq!(
            date_range("2024-03-05T10:00:00Z").unwrap(),
            (ms("2024-03-05T10:00:00Z"), ms("2024-03-05T10:00:01Z"))
        );
        assert_eq!(
            date_range("2024-03-05T10:00:00+01:00").unwrap(),
            (ms("2024-03-05T09:00:00Z"), ms("2024-03-05T09:00:01Z"))
        );
        assert_eq!(
            date_range("2024-03-05T10:00-05:00").unwrap(),
            (ms("2024-03-05T15:00:00Z"), ms("2024-03-05T15:01:00Z"))
        );
        assert_eq!(
            date_range("2024-03-05T10:00:00.1+14:00").unwrap().0,
            ms("2024-03-04T20:00:00.100Z")
        );
        // An unencoded `+` decodes to a space.
        assert_eq!(
            date_range("2024-03-05T10:00:00 01:00").unwrap(),
            date_range("2024-03-05T10:00:00+01:00").unwrap()
        );
    }

    #[test]
    fn spec_date_examples() {
        // R4 §3.1.1.5.2 / §3.1.1.4.x
        assert_eq!(
            date("eq2013-01-14"),
            (
                Prefix::Eq,
                ms("2013-01-14T00:00:00Z"),
                ms("2013-01-15T00:00:00Z")
            )
        );
        assert_eq!(date("ne2013-01-14").0, Prefix::Ne);
        assert_eq!(date("lt2013-01-14T10:00").0, Prefix::Lt);
        assert_eq!(
            date("gt2013-01-14T10:00"),
            (
                Prefix::Gt,
                ms("2013-01-14T10:00:00Z"),
                ms("2013-01-14T10:01:00Z")
            )
        );
        assert_eq!(date("ge2013-03-14").0, Prefix::Ge);
        assert_eq!(date("le2013-03-14").0, Prefix::Le);
        assert_eq!(date("sa2013-03-14").0, Prefix::Sa);
        assert_eq!(date("eb2013-03-14").0, Prefix::Eb);
        assert_eq!(
            date("ap2013-03-14"),
            (
                Prefix::Ap,
                ms("2013-03-14T00:00:00Z"),
                ms("2013-03-15T00:00:00Z")
            )
        );
        assert_eq!(
            date("2020"),
            (
                Prefix::Eq,
                ms("2020-01-01T00:00:00Z"),
                ms("2021-01-01T00:00:00Z")
            )
        );
        assert_eq!(date("ap2020").0, Prefix::Ap);
        assert_eq!(date("ge2010-01-01").1, ms("2010-01-01T00:00:00Z"));
        assert_eq!(
            date("2013-01-14T00:00:00.000+10:00").1,
            ms("2013-01-13T14:00:00Z")
        );
    }

    #[test]
    fn bad_dates_are_rejected() {
        for (raw, hint) in [
            ("2024-13-01", "month 13"),
            ("2024-00", "month 00"),
            ("2024-02-30", "no day 30"),
            ("2023-02-29", "no day 29"),
            ("2024-04-31", "no day 31"),
            ("yesterday", "not a valid date"),
            ("0000", "year 0000"),
            ("24", "expected YYYY"),
            ("20240", "expected YYYY"),
            ("2024-1-01", "expected YYYY"),
            ("2024-01-1", "expected YYYY"),
            ("2024/01/01", "expected YYYY"),
            ("2024-01-01T10", "expected YYYY"),
            ("2024-01-01T1:00", "expected YYYY"),
            ("2024-01-01 10:00", "expected YYYY"),
            ("2024-01-01T25:00", "out of range"),
            ("2024-01-01T10:60", "out of range"),
            ("2024-01-01T23:59:60", "out of range"),
            ("2024-01-01T10:00:00.", "digits after the decimal point"),
            ("2024-01-01T10:00:00+15:00", "offset out of range"),
            ("2024-01-01T10:00:00+14:30", "offset out of range"),
            ("2024-01-01T10:00:00+0100", "expected YYYY"),
            ("2024-01-01T10:00:00ZZ", "expected YYYY"),
            ("2024-01-01T10:00:00X", "expected YYYY"),
            ("2024Z", "expected YYYY"),
            ("2024-01-01Z", "expected YYYY"),
            ("2024-01-01T", "expected YYYY"),
            ("", "expected YYYY"),
            ("２０２４", "expected YYYY"),
        ] {
            let e = date_range(raw).expect_err(raw);
            assert!(e.contains(hint), "{raw}: {e}");
            assert!(e.contains(&format!("`{raw}`")), "{raw}: {e}");
        }
        for raw in [
            "2024-13-01",
            "2024-02-30",
            "yesterday",
            "ge",
            "ge2024-02-30",
        ] {
            err(ParamKind::Date, None, raw);
        }
    }

    // ---- quantities ---------------------------------------------------------------------

    #[test]
    fn spec_quantity_examples() {
        // R4 §3.1.1.5.6
        assert_eq!(
            parse(
                ParamKind::Quantity,
                None,
                "5.4|http://unitsofmeasure.org|mg"
            )
            .unwrap(),
            QueryValue::Quantity {
                prefix: Prefix::Eq,
                value: 5.4,
                low: f("5.35"),
                high: f("5.45"),
                system: Some("http://unitsofmeasure.org".into()),
                code: Some("mg".into()),
            }
        );
        assert_eq!(
            parse(ParamKind::Quantity, None, "5.4||mg").unwrap(),
            QueryValue::Quantity {
                prefix: Prefix::Eq,
                value: 5.4,
                low: f("5.35"),
                high: f("5.45"),
                system: None,
                code: Some("mg".into()),
            }
        );
        assert_eq!(
            parse(ParamKind::Quantity, None, "5.4").unwrap(),
            QueryValue::Quantity {
                prefix: Prefix::Eq,
                value: 5.4,
                low: f("5.35"),
                high: f("5.45"),
                system: None,
                code: None,
            }
        );
        let QueryValue::Quantity {
            value,
            low,
            high,
            system,
            code,
            ..
        } = parse(
            ParamKind::Quantity,
            None,
            "5.40e-3|http://unitsofmeasure.org|g",
        )
        .unwrap()
        else {
            panic!()
        };
        assert_eq!(value, 0.0054);
        assert_eq!((low, high), (f("0.005395"), f("0.005405")));
        assert_eq!(system.as_deref(), Some("http://unitsofmeasure.org"));
        assert_eq!(code.as_deref(), Some("g"));
        assert_eq!(
            parse(
                ParamKind::Quantity,
                None,
                "le5.4|http://unitsofmeasure.org|mg"
            )
            .map(|q| match q {
                QueryValue::Quantity { prefix, .. } => prefix,
                _ => panic!(),
            }),
            Ok(Prefix::Le)
        );
        assert!(matches!(
            parse(
                ParamKind::Quantity,
                None,
                "ap5.4|http://unitsofmeasure.org|mg"
            ),
            Ok(QueryValue::Quantity {
                prefix: Prefix::Ap,
                ..
            })
        ));
    }

    #[test]
    fn quantity_escapes_and_errors() {
        assert!(matches!(
            parse(ParamKind::Quantity, None, r"5|http://s\|x|mm\|Hg"),
            Ok(QueryValue::Quantity { system: Some(s), code: Some(c), .. })
                if s == "http://s|x" && c == "mm|Hg"
        ));
        assert!(matches!(
            parse(ParamKind::Quantity, None, "5|http://unitsofmeasure.org|"),
            Ok(QueryValue::Quantity {
                system: Some(_),
                code: None,
                ..
            })
        ));
        for raw in [
            "5.4|mg",
            "5.4|a|b|c",
            "abc||mg",
            "||mg",
            "ge||mg",
            "5,4||mg",
            "5.4 mg",
        ] {
            err(ParamKind::Quantity, None, raw);
        }
        assert!(err(ParamKind::Quantity, None, "5.4|mg").contains("not a quantity"));
        err(ParamKind::Quantity, Some("exact"), "5.4");
    }

    // ---- strings ------------------------------------------------------------------------

    #[test]
    fn strings_fold_and_keep_the_exact_text() {
        for modifier in [None, Some("exact"), Some("contains")] {
            assert_eq!(
                parse(ParamKind::String, modifier, "Eve").unwrap(),
                QueryValue::String {
                    normalized: "eve".into(),
                    exact: "Eve".into()
                }
            );
        }
        assert_eq!(
            parse(ParamKind::String, None, "José Núñez").unwrap(),
            QueryValue::String {
                normalized: "jose nunez".into(),
                exact: "José Núñez".into()
            }
        );
        assert_eq!(
            parse(ParamKind::String, None, r"a\|b\$c\\d").unwrap(),
            QueryValue::String {
                normalized: r"a|b$c\d".into(),
                exact: r"a|b$c\d".into()
            }
        );
        err(ParamKind::String, None, "");
        let e = err(ParamKind::String, Some("text"), "Eve");
        assert!(e.contains("`:text` is not supported on string"), "{e}");
        err(ParamKind::String, Some("below"), "Eve");
    }

    // ---- tokens -------------------------------------------------------------------------

    #[test]
    fn spec_token_forms() {
        let t = |raw| parse(ParamKind::Token, None, raw).unwrap();
        assert_eq!(
            t("http://acme.org/patient|2345"),
            token(Some(Some("http://acme.org/patient")), Some("2345"))
        );
        assert_eq!(t("|2345"), token(Some(None), Some("2345")));
        assert_eq!(
            t("http://acme.org/patient|"),
            token(Some(Some("http://acme.org/patient")), None)
        );
        assert_eq!(t("2345"), token(None, Some("2345")));
        assert_eq!(t("true"), token(None, Some("true")));
        assert_eq!(
            parse(
                ParamKind::Token,
                Some("not"),
                "http://hl7.org/fhir/administrative-gender|male"
            )
            .unwrap(),
            token(
                Some(Some("http://hl7.org/fhir/administrative-gender")),
                Some("male")
            )
        );
    }

    #[test]
    fn token_escapes_and_errors() {
        assert_eq!(
            parse(ParamKind::Token, None, r"http://a\|b|x\|y").unwrap(),
            token(Some(Some("http://a|b")), Some("x|y"))
        );
        assert_eq!(
            parse(ParamKind::Token, None, r"a\,b").unwrap(),
            token(None, Some("a,b"))
        );
        let e = err(ParamKind::Token, None, "a|b|c");
        assert!(e.contains("more than one unescaped `|`"), "{e}");
        err(ParamKind::Token, None, "");
        err(ParamKind::Token, None, "|");
        err(ParamKind::Token, Some("in"), "http://x/ValueSet/y");
        err(ParamKind::Token, Some("below"), "x");
        err(ParamKind::Token, Some("exact"), "x");
    }

    #[test]
    fn token_text_is_a_folded_string() {
        assert_eq!(
            parse(ParamKind::Token, Some("text"), "Héart Attack").unwrap(),
            QueryValue::String {
                normalized: "heart attack".into(),
                exact: "Héart Attack".into()
            }
        );
    }

    #[test]
    fn spec_of_type_example() {
        // R4: Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|446053
        assert_eq!(
            parse(
                ParamKind::Token,
                Some("of-type"),
                "http://terminology.hl7.org/CodeSystem/v2-0203|MR|446053"
            )
            .unwrap(),
            token(
                Some(Some("http://terminology.hl7.org/CodeSystem/v2-0203|MR")),
                Some("446053")
            )
        );
        assert_eq!(
            parse(ParamKind::Token, Some("of-type"), "|MR|446053").unwrap(),
            token(Some(Some("|MR")), Some("446053"))
        );
        for raw in ["MR|446053", "s|MR|", "s||446053", "a|b|c|d", "446053"] {
            err(ParamKind::Token, Some("of-type"), raw);
        }
    }

    // ---- references ---------------------------------------------------------------------

    #[test]
    fn reference_forms() {
        let r = |modifier, raw| parse(ParamKind::Reference, modifier, raw).unwrap();
        assert_eq!(
            r(None, "Patient/23"),
            reference(Some("Patient"), Some("23"), "Patient/23")
        );
        assert_eq!(r(None, "23"), reference(None, Some("23"), "23"));
        assert_eq!(
            r(None, "Patient/23/_history/2"),
            reference(Some("Patient"), Some("23"), "Patient/23")
        );
        assert_eq!(
            r(None, "http://host/fhir/Patient/23"),
            reference(Some("Patient"), Some("23"), "Patient/23")
        );
        assert_eq!(
            r(None, "http://host/fhir/Patient/23/_history/7"),
            reference(Some("Patient"), Some("23"), "Patient/23")
        );
        assert_eq!(
            r(None, "http://other/fhir/Patient/23"),
            reference(None, None, "http://other/fhir/Patient/23")
        );
        assert_eq!(
            r(None, "http://host/fhirx/Patient/23"),
            reference(None, None, "http://host/fhirx/Patient/23")
        );
        assert_eq!(
            r(None, "urn:uuid:2f7a8b6e-3c1d-4e5f-9a0b-1c2d3e4f5a6b"),
            reference(None, None, "urn:uuid:2f7a8b6e-3c1d-4e5f-9a0b-1c2d3e4f5a6b")
        );
        assert_eq!(
            r(Some("Patient"), "23"),
            reference(Some("Patient"), Some("23"), "Patient/23")
        );
        assert_eq!(
            r(Some("Patient"), "Patient/23"),
            reference(Some("Patient"), Some("23"), "Patient/23")
        );
        assert_eq!(
            r(None, "http://example.org/fhir/ValueSet/vs|1.2"),
            reference(None, None, "http://example.org/fhir/ValueSet/vs")
        );
        assert_eq!(
            r(None, "http://example.org/fhir/ValueSet/vs"),
            reference(None, None, "http://example.org/fhir/ValueSet/vs")
        );
        // A base URL with a trailing slash.
        assert_eq!(
            parse_value(
                ParamKind::Reference,
                None,
                "http://host/fhir/Group/g-1",
                "http://host/fhir/"
            )
            .unwrap(),
            reference(Some("Group"), Some("g-1"), "Group/g-1")
        );
        // R4: the reference :identifier modifier takes a token.
        assert_eq!(
            r(
                Some("identifier"),
                "http://acme.org/fhir/identifier/mrn|123456"
            ),
            token(
                Some(Some("http://acme.org/fhir/identifier/mrn")),
                Some("123456")
            )
        );
    }

    #[test]
    fn bad_references_are_rejected() {
        let e = err(ParamKind::Reference, Some("Patient"), "Group/1");
        assert!(e.contains("modifier asks for :Patient"), "{e}");
        for raw in [
            "",
            "Patient/",
            "/23",
            "a/b/c",
            "Patient/23/_history/",
            "Patient/23/history/2",
            "patient/23",
            "Patient/bad id",
            "bad id",
            "#contained",
            "http://host/fhir/Patient/",
            "a|b|c",
            "|1.0",
        ] {
            err(ParamKind::Reference, None, raw);
        }
        err(ParamKind::Reference, Some("below"), "Patient/1");
        err(ParamKind::Reference, Some("exact"), "Patient/1");
        err(
            ParamKind::Reference,
            None,
            &format!("Patient/{}", "x".repeat(65)),
        );
    }

    // ---- uri, missing, the rest ---------------------------------------------------------

    #[test]
    fn uris_as_written() {
        for modifier in [None, Some("below"), Some("above")] {
            assert_eq!(
                parse(
                    ParamKind::Uri,
                    modifier,
                    "http://acme.org/fhir/ValueSet/123"
                )
                .unwrap(),
                QueryValue::Uri("http://acme.org/fhir/ValueSet/123".into())
            );
        }
        assert_eq!(
            parse(ParamKind::Uri, None, "urn:oid:1.2.3.4.5").unwrap(),
            QueryValue::Uri("urn:oid:1.2.3.4.5".into())
        );
        assert_eq!(
            parse(ParamKind::Uri, None, r"http://a/b\,c").unwrap(),
            QueryValue::Uri("http://a/b,c".into())
        );
        err(ParamKind::Uri, None, "");
        err(ParamKind::Uri, Some("contains"), "http://a");
    }

    #[test]
    fn missing_takes_a_boolean_on_every_kind() {
        for kind in [
            ParamKind::Number,
            ParamKind::Date,
            ParamKind::String,
            ParamKind::Token,
            ParamKind::Reference,
            ParamKind::Composite,
            ParamKind::Quantity,
            ParamKind::Uri,
            ParamKind::Special,
        ] {
            assert_eq!(
                parse(kind, Some("missing"), "true").unwrap(),
                token(None, Some("true"))
            );
            assert_eq!(
                parse(kind, Some("missing"), "false").unwrap(),
                token(None, Some("false"))
            );
            for raw in ["", "yes", "TRUE", "1"] {
                err(kind, Some("missing"), raw);
            }
        }
    }

    #[test]
    fn empty_values_and_unsupported_kinds_are_errors() {
        for kind in [
            ParamKind::Number,
            ParamKind::Date,
            ParamKind::String,
            ParamKind::Token,
            ParamKind::Reference,
            ParamKind::Composite,
            ParamKind::Quantity,
            ParamKind::Uri,
            ParamKind::Special,
        ] {
            assert!(err(kind, None, "").contains("empty"), "{kind:?}");
        }
        err(ParamKind::Composite, None, "a$b");
        err(ParamKind::Special, None, "x");
        err(ParamKind::Number, Some("exact"), "1");
        err(ParamKind::Date, Some("below"), "2024");
    }
}
