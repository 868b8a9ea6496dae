use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

/// Writes the duration as a humantime string.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Reads a humantime string; `"0"` means zero, and so does the number 0 (what an
/// environment variable set to `0` or an unquoted TOML `0` gives). Other numbers need a unit.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(u64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(s) => parse(&s).map_err(serde::de::Error::custom),
        Raw::Number(0) => Ok(Duration::ZERO),
        Raw::Number(n) => Err(serde::de::Error::custom(format!(
            "invalid duration {n} (give a unit, e.g. \"{n}s\" or \"{n}ms\")"
        ))),
    }
}

/// Parses `"30s"`-style durations; `"0"` is zero.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("invalid duration {s:?} (use e.g. \"30s\", \"10m\", \"1h\"): {e}"))
}
