//! Resource ids, version ids, instants and ETags.

use chrono::{DateTime, SecondsFormat, Utc};

/// True when `id` is a valid R4 `id` (`[A-Za-z0-9\-\.]{1,64}`).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A fresh server-assigned id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Render an instant the way `meta.lastUpdated` carries it (UTC, milliseconds).
pub fn format_instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Render an instant as an HTTP date (`Last-Modified`).
pub fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// The weak ETag for a version.
pub fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// Parse `W/"3"`, `"3"` or `3` into a version number.
pub fn parse_etag(value: &str) -> Option<u64> {
    let v = value.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v.trim_matches('"');
    v.parse().ok()
}

/// Parse a FHIR `instant`/`dateTime`-like parameter value (`_since`) into UTC.
/// Accepts full date-times with zone, and dates (`2024-01-01`, meaning its start in UTC).
pub fn parse_instant_param(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc));
    }
    let date = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_valid_id("abc-1.2"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("a_b"));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(is_valid_id(&new_id()));
    }

    #[test]
    fn etags() {
        assert_eq!(parse_etag("W/\"12\""), Some(12));
        assert_eq!(parse_etag("\"3\""), Some(3));
        assert_eq!(parse_etag("x"), None);
        assert_eq!(etag(4), "W/\"4\"");
    }
}
