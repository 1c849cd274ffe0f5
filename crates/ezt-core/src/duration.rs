//! Durations on the wire: humantime strings (`"250ms"`, `"90s"`, `"1h"`) or integer milliseconds.

use serde::Deserialize;

/// A duration as a client may send it. Integers are milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DurationIn {
    /// Milliseconds.
    Millis(u64),
    /// A humantime string such as `"1h 30m"`.
    Text(String),
}

impl DurationIn {
    /// The duration in milliseconds, or a reason it is not one.
    pub fn to_millis(&self) -> Result<u64, String> {
        match self {
            DurationIn::Millis(ms) => Ok(*ms),
            DurationIn::Text(s) => parse_millis(s),
        }
    }
}

/// Parses a humantime string (or a bare integer of milliseconds) into milliseconds.
pub fn parse_millis(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Ok(ms) = t.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_duration(t)
        .map(|d| d.as_millis().min(u64::MAX as u128) as u64)
        .map_err(|e| format!("not a duration ({e}); use e.g. \"250ms\", \"90s\", \"1h\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("90s"), Ok(90_000));
        assert_eq!(parse_millis("1h"), Ok(3_600_000));
        assert_eq!(parse_millis("1500"), Ok(1500));
        assert!(parse_millis("soon").is_err(), "garbage is an error");
        assert_eq!(DurationIn::Millis(7).to_millis(), Ok(7));
    }
}
