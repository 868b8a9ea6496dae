//! `[log]`: the level filter, checked against `tracing`'s directive syntax, and the filter the
//! node installs from it (noisy targets quietened unless named).
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
    /// `switchyard=debug,info`; levels are [`LEVELS`]. Unless a directive names `openraft`,
    /// openraft is kept at `warn` (see [`LogConfig::filter`]).
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

/// One directive taken apart: its target (if any) and its level.
struct Directive<'a> {
    target: Option<&'a str>,
    level: LevelFilter,
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
fn directive(d: &str) -> Result<Directive<'_>, String> {
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
            Some(level) => Ok(Directive {
                target: None,
                level,
            }),
            None if d.contains('[') => Err(format!("{d:?} names no level")),
            None => Err(format!("{d:?} is not a level")),
        };
    };
    let (head, level) = (&d[..eq], d[eq + 1..].trim());
    let Some(level) = level_named(level) else {
        return Err(format!("{level:?} in {d:?} is not a level"));
    };
    let target = head.split('[').next().unwrap_or("").trim();
    Ok(Directive {
        target: (!target.is_empty()).then_some(target),
        level,
    })
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
        match tracing_subscriber::EnvFilter::try_new(self.filter(&[])) {
            Ok(_) => Ok(()),
            Err(e) => fail(e.to_string()),
        }
    }

    /// The filter the node installs: the directives of `level`, plus `target=warn` for each
    /// of the `quiet` targets (`cluster::QUIET_LOG_TARGETS`: openraft) that no directive names
    /// (itself or a module under it), when the default level is more verbose than `warn`. An
    /// operator who wants openraft's info lines writes `info,openraft=info`.
    pub fn filter(&self, quiet: &[&str]) -> String {
        let parsed: Vec<Directive> = self
            .directives()
            .filter_map(|d| directive(d).ok())
            .collect();
        let named = |target: &str| {
            parsed.iter().any(|d| {
                d.target
                    .and_then(|t| t.strip_prefix(target))
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
        };
        let default = parsed
            .iter()
            .filter(|d| d.target.is_none())
            .map(|d| d.level)
            .max();
        let mut out: Vec<String> = self.directives().map(str::to_string).collect();
        if default.is_some_and(|l| l > LevelFilter::WARN) {
            out.extend(
                quiet
                    .iter()
                    .filter(|t| !named(t))
                    .map(|t| format!("{t}=warn")),
            );
        }
        out.join(",")
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

    #[test]
    fn quiet_targets_are_kept_at_warn_unless_named() {
        let q = &["openraft"];
        assert_eq!(log("info").filter(q), "info,openraft=warn");
        assert_eq!(
            log(" debug, switchyard=trace").filter(q),
            "debug,switchyard=trace,openraft=warn"
        );
        assert_eq!(log("info,openraft=info").filter(q), "info,openraft=info");
        assert_eq!(
            log("info,openraft::core=debug").filter(q),
            "info,openraft::core=debug"
        );
        // A target that merely starts with the name is another target.
        assert_eq!(
            log("info,openraftish=debug").filter(q),
            "info,openraftish=debug,openraft=warn"
        );
        // Not more verbose than warn: openraft follows the default level.
        assert_eq!(log("warn").filter(q), "warn");
        assert_eq!(log("error").filter(q), "error");
        assert_eq!(log("switchyard=debug").filter(q), "switchyard=debug");
        assert_eq!(log("info").filter(&[]), "info");
    }
}
