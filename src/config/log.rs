//! `[log]`: the level filter, checked against `tracing`'s directive syntax, and the filter the
//! node installs from it.
//!
//! A filter is comma-separated directives, each a level (`info`) or `target=level`
//! (`switchyard=debug`, also `target[span{field=value}]=level`). `EnvFilter` reads a bare word
//! that is not a level as a *target* with every level on, so `level = "warning"` would parse
//! and the node would then log nothing at all; here each directive must name one of
//! [`LEVELS`] explicitly.

use serde::{Deserialize, Serialize};
use tracing::level_filters::LevelFilter;

/// The level names a directive may use (any case).
pub const LEVELS: &str = "trace, debug, info, warn, error, off";

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter: comma-separated `level` or `target=level` directives, e.g. `info` or
    /// `switchyard=debug,info`; levels are [`LEVELS`].
    pub level: String,
    /// `text` (human) or `json` (one JSON object per line).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// A level name of [`LEVELS`], in any case (`EnvFilter` also takes digits; we do not).
fn level_named(s: &str) -> Option<LevelFilter> {
    [
        ("trace", LevelFilter::TRACE),
        ("debug", LevelFilter::DEBUG),
        ("info", LevelFilter::INFO),
        ("warn", LevelFilter::WARN),
        ("error", LevelFilter::ERROR),
        ("off", LevelFilter::OFF),
    ]
    .into_iter()
    .find(|(name, _)| s.eq_ignore_ascii_case(name))
    .map(|(_, l)| l)
}

/// Parses one (trimmed, non-empty) directive; the error says what is wrong with it.
fn directive(d: &str) -> Result<(), String> {
    // The level follows the first `=` outside a `[span{field=value}]` part.
    let mut depth = 0usize;
    let eq = d.char_indices().find_map(|(i, c)| {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '=' if depth == 0 => return Some(i),
            _ => {}
        }
        None
    });
    let Some(eq) = eq else {
        return match level_named(d) {
            Some(_) => Ok(()),
            None if d.contains('[') => Err(format!("{d:?} names no level")),
            None => Err(format!("{d:?} is not a level")),
        };
    };
    let level = d[eq + 1..].trim();
    match level_named(level) {
        Some(_) => Ok(()),
        None => Err(format!("{level:?} in {d:?} is not a level")),
    }
}

impl LogConfig {
    /// The directives of `level`, trimmed, empty ones dropped (`EnvFilter` would misread a
    /// directive with a leading space).
    fn directives(&self) -> impl Iterator<Item = &str> {
        self.level
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
    }

    /// Checks `level`: at least one directive, each naming a level of [`LEVELS`], and the
    /// whole accepted by `EnvFilter`. The error is a sentence naming `log.level`.
    pub fn check_level(&self) -> Result<(), String> {
        let fail = |why: String| {
            Err(format!(
                "log.level = {:?}: {why}; levels are {LEVELS}, alone (the default) or as \
                 target=level (e.g. \"switchyard=debug,info\")",
                self.level
            ))
        };
        if self.directives().next().is_none() {
            return fail("no directive".into());
        }
        for d in self.directives() {
            if let Err(why) = directive(d) {
                return fail(why);
            }
        }
        match tracing_subscriber::EnvFilter::try_new(self.filter()) {
            Ok(_) => Ok(()),
            Err(e) => fail(e.to_string()),
        }
    }

    /// The filter the node installs: the directives of `level`, trimmed and joined.
    pub fn filter(&self) -> String {
        self.directives().collect::<Vec<_>>().join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(level: &str) -> LogConfig {
        LogConfig {
            level: level.into(),
            ..Default::default()
        }
    }

    #[test]
    fn levels_are_checked_per_directive() {
        for ok in [
            "info",
            "WARN",
            "switchyard=debug,info",
            " info , openraft=debug ",
            "off",
            "switchyard[conn{user=alice}]=trace,warn",
            "switchyard::transport=debug",
        ] {
            log(ok)
                .check_level()
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "warning",
            "info,warning",
            "switchyard=warning",
            "switchyard=",
            "3",
            "",
            " , ",
            "switchyard",
            "[span]",
            "switchyard=debug=info",
        ] {
            let e = log(bad).check_level().unwrap_err();
            assert!(e.starts_with("log.level = "), "{bad}: {e}");
            assert!(e.contains(LEVELS), "{bad}: {e}");
        }
        let e = log("warning").check_level().unwrap_err();
        assert!(e.contains("\"warning\" is not a level"), "{e}");
    }
}
