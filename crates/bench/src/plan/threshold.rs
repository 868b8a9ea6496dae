//! A plan's thresholds: `FIGURE OP LIMIT[UNIT]` over a scenario's report figures
//! ([`Report::get`]), checked when the plan is read against the figures that scenario can
//! report ([`figures`]), and judged after it ran ([`Threshold::judge`]).

use anyhow::anyhow;
use serde::{Deserialize, Serialize};

use crate::report::{Report, fmt_num};

/// Figures every fan-out (and so `publish` and `soak`) report can carry: (key, unit).
const FANOUT: &[(&str, &str)] = &[
    ("offered_rate", "/s"),
    ("achieved_rate", "/s"),
    ("publications_unsent", ""),
    ("publish_lag_max_ms", "ms"),
    ("subscribers", ""),
    ("subscribers_failed", ""),
    ("subscribers_closed", ""),
    ("publications_acked", ""),
    ("publications_failed", ""),
    ("publications_per_sec", "/s"),
    ("deliveries_expected", ""),
    ("deliveries_received", ""),
    ("lost", ""),
    ("duplicates", ""),
    ("reordered", ""),
    ("disordered", ""),
    ("unacked_received", ""),
    ("delivered_per_sec", "/s"),
    ("publish_secs", "s"),
    ("api_http_version", ""),
    ("latency_p50_ms", "ms"),
    ("latency_p90_ms", "ms"),
    ("latency_p95_ms", "ms"),
    ("latency_p99_ms", "ms"),
    ("latency_p999_ms", "ms"),
    ("latency_max_ms", "ms"),
    ("ack_p50_ms", "ms"),
    ("ack_p90_ms", "ms"),
    ("ack_p99_ms", "ms"),
    ("ack_max_ms", "ms"),
    ("probe_acked", ""),
    ("probe_failed", ""),
    ("probe_http_version", ""),
    ("probe_ack_p50_ms", "ms"),
    ("probe_ack_p90_ms", "ms"),
    ("probe_ack_p99_ms", "ms"),
    ("probe_ack_max_ms", "ms"),
    ("server_cpu_secs", "s"),
    ("server_cpu_secs_per_million", "s"),
    ("server_rss_bytes", "B"),
    ("step_best_rate", "/s"),
];

/// What `soak` adds to the fan-out's figures.
const SOAK: &[(&str, &str)] = &[
    ("soak_samples", ""),
    ("rss_start_bytes", "B"),
    ("rss_end_bytes", "B"),
    ("rss_growth_pct", "%"),
    ("rss_growth_tenths_pct", "%"),
    ("rss_slope_bytes_per_hour", "B/h"),
    ("fds_slope_per_hour", "/h"),
    ("store_end_bytes", "B"),
    ("store_slope_bytes_per_hour", "B/h"),
    ("p99_slope_ms_per_hour", "ms/h"),
];

const CONNECT: &[(&str, &str)] = &[
    ("connections_target", ""),
    ("attempts", ""),
    ("connected", ""),
    ("failed", ""),
    ("closed_by_server", ""),
    ("success_rate", "%"),
    ("max_open", ""),
    ("time_to_all_connected_secs", "s"),
    ("connect_p50_ms", "ms"),
    ("connect_p95_ms", "ms"),
    ("connect_p99_ms", "ms"),
    ("connect_max_ms", "ms"),
    ("workers", ""),
    ("server_rss_baseline_bytes", "B"),
    ("server_rss_peak_bytes", "B"),
    ("server_fds_peak", ""),
    ("server_rss_per_connection_bytes", "B"),
    ("server_rss_per_connection_total_bytes", "B"),
];

const CHURN: &[(&str, &str)] = &[
    ("clients", ""),
    ("cycles", ""),
    ("recovered", ""),
    ("not_recovered", ""),
    ("connect_errors", ""),
    ("publications", ""),
    ("publications_failed", ""),
    ("stream_top", ""),
    ("deliveries_expected", ""),
    ("deliveries_received", ""),
    ("lost", ""),
    ("duplicates", ""),
    ("reconnect_p50_ms", "ms"),
    ("reconnect_p99_ms", "ms"),
];

const RECONNECT: &[(&str, &str)] = &[
    ("clients", ""),
    ("reconnects", ""),
    ("recovered", ""),
    ("not_recovered", ""),
    ("drops", ""),
    ("server_closes", ""),
    ("terminal_closes", ""),
    ("connect_errors", ""),
    ("clients_not_back", ""),
    ("publications", ""),
    ("publications_retried", ""),
    ("publications_failed", ""),
    ("stream_top", ""),
    ("deliveries_expected", ""),
    ("deliveries_received", ""),
    ("lost", ""),
    ("duplicates", ""),
    ("reconnect_p50_ms", "ms"),
    ("reconnect_p95_ms", "ms"),
    ("reconnect_p99_ms", "ms"),
    ("reconnect_max_ms", "ms"),
    ("restarts", ""),
    ("restarts_failed", ""),
    ("restart_cmd_max_secs", "s"),
    ("restart_clients_dropped", ""),
    ("back_p50_ms", "ms"),
    ("back_p95_ms", "ms"),
    ("back_max_ms", "ms"),
];

/// The figures (key, unit) a scenario's report can carry; some only with options that
/// measure them (`--pid`/`--admin` for server figures, `--probe-http` for `probe_*`, a
/// reconnect for `reconnect_*`, a `--restart-cmd` for `restart*` and `back_*`).
pub fn figures(scenario: &str) -> Vec<(&'static str, &'static str)> {
    match scenario {
        "connect" => CONNECT.to_vec(),
        "churn" => CHURN.to_vec(),
        "reconnect" => RECONNECT.to_vec(),
        "soak" => FANOUT.iter().chain(SOAK).copied().collect(),
        _ => FANOUT.to_vec(),
    }
}

/// The names for figures: `loss`, `rss_growth`, `delivery_p99` (→ `latency_p99_ms`);
/// any `X` whose figure is `X_ms` (`connect_p95` → `connect_p95_ms`).
fn resolve(name: &str, known: &[(&'static str, &'static str)]) -> Option<(String, String)> {
    let find = |k: &str| {
        known
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(key, unit)| (key.to_string(), unit.to_string()))
    };
    let name = match name {
        "loss" => "lost".to_string(),
        "rss_growth" => "rss_growth_pct".to_string(),
        n => n
            .strip_prefix("delivery_")
            .map_or_else(|| n.to_string(), |rest| format!("latency_{rest}")),
    };
    find(&name).or_else(|| find(&format!("{name}_ms")))
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    const ALL: [(&'static str, Op); 6] = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];

    fn holds(self, v: f64, limit: f64) -> bool {
        match self {
            Op::Lt => v < limit,
            Op::Le => v <= limit,
            Op::Gt => v > limit,
            Op::Ge => v >= limit,
            Op::Eq => v == limit,
            Op::Ne => v != limit,
        }
    }

    /// How far `v` is on the wrong side of `limit` (0 when it holds, or for `!=`).
    fn miss(self, v: f64, limit: f64) -> f64 {
        if self.holds(v, limit) {
            return 0.0;
        }
        match self {
            Op::Lt | Op::Le => v - limit,
            Op::Gt | Op::Ge => limit - v,
            Op::Eq => (v - limit).abs(),
            Op::Ne => 0.0,
        }
    }
}

/// One threshold, its limit in the figure's own unit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Threshold {
    /// As written in the plan.
    pub text: String,
    /// The report figure it reads.
    pub figure: String,
    /// The comparison.
    pub op: Op,
    /// The limit, in `unit`.
    pub limit: f64,
    /// The figure's unit.
    pub unit: String,
}

/// How a limit's suffix scales to a figure's unit; `None` when they do not fit.
fn scale(suffix: &str, unit: &str) -> Option<f64> {
    match (suffix, unit) {
        ("", _) => Some(1.0),
        ("ms", "ms") | ("s", "s") | ("%", "%") | ("/s", "/s") | ("b", "B") => Some(1.0),
        ("s", "ms") => Some(1000.0),
        ("ms", "s") => Some(0.001),
        ("kb", "B") => Some(1024.0),
        ("mb", "B") => Some(1024.0 * 1024.0),
        ("gb", "B") => Some(1024.0 * 1024.0 * 1024.0),
        _ => None,
    }
}

impl Threshold {
    /// Parses `FIGURE OP LIMIT[UNIT]` for a scenario whose report can carry `known`.
    pub fn parse(text: &str, known: &[(&'static str, &'static str)]) -> anyhow::Result<Self> {
        let (at, sym, op) = Op::ALL
            .iter()
            .filter_map(|(sym, op)| text.find(sym).map(|at| (at, *sym, *op)))
            .min_by_key(|(at, sym, _)| (*at, std::cmp::Reverse(sym.len())))
            .ok_or_else(|| {
                anyhow!("threshold {text:?}: expected FIGURE OP LIMIT (OP one of < <= > >= == !=)")
            })?;
        let name = text[..at].trim();
        let value = text[at + sym.len()..].trim();
        let (figure, unit) = resolve(name, known).ok_or_else(|| {
            let keys: Vec<&str> = known.iter().map(|(k, _)| *k).collect();
            anyhow!(
                "threshold {text:?}: no figure {name:?} in this scenario's report (known: {})",
                keys.join(", ")
            )
        })?;
        let split = value
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
            .unwrap_or(value.len());
        let (number, suffix) = value.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| anyhow!("threshold {text:?}: limit {value:?} is not a number"))?;
        let suffix = suffix.trim().to_ascii_lowercase();
        let factor = scale(&suffix, &unit).ok_or_else(|| {
            anyhow!("threshold {text:?}: unit {suffix:?} does not fit {figure} (in {unit:?})")
        })?;
        Ok(Threshold {
            text: text.trim().to_string(),
            figure,
            op,
            limit: number * factor,
            unit,
        })
    }

    /// Judges `report` (the run of `scenario`).
    pub fn judge(&self, scenario: &str, report: &Report) -> Verdict {
        let measured = report.get(&self.figure);
        let ok = measured.is_some_and(|v| self.op.holds(v, self.limit));
        let miss = measured.map(|v| self.op.miss(v, self.limit));
        Verdict {
            scenario: scenario.to_string(),
            threshold: self.text.clone(),
            figure: self.figure.clone(),
            measured,
            limit: self.limit,
            unit: self.unit.clone(),
            ok,
            miss,
            miss_pct: miss
                .filter(|m| *m > 0.0 && self.limit != 0.0)
                .map(|m| m / self.limit.abs() * 100.0),
        }
    }
}

/// A threshold judged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    /// The scenario's name in the plan.
    pub scenario: String,
    /// The threshold as written.
    pub threshold: String,
    /// The figure read.
    pub figure: String,
    /// Its value; `None` when the report did not carry it (not measured in this run).
    pub measured: Option<f64>,
    /// The limit, in `unit`.
    pub limit: f64,
    /// The figure's unit.
    pub unit: String,
    /// Whether it held.
    pub ok: bool,
    /// How far the value was on the wrong side of the limit, in `unit`.
    pub miss: Option<f64>,
    /// `miss` as a percentage of the limit (none when the limit is 0).
    pub miss_pct: Option<f64>,
}

impl Verdict {
    /// The result column: `ok`, or `FAIL` and by how much.
    pub fn result(&self) -> String {
        let unit = |v: f64| format!("{}{}{}", fmt_num(v), sep(&self.unit), self.unit);
        match (self.ok, self.measured, self.miss, self.miss_pct) {
            (true, ..) => "ok".into(),
            (false, None, ..) => {
                "FAIL: not measured in this run (server figures need --pid or --admin; back_* a restart that dropped clients)".into()
            }
            (false, _, Some(m), Some(p)) if m > 0.0 => {
                format!("FAIL by {} ({}%)", unit(m), fmt_num(p))
            }
            (false, _, Some(m), None) if m > 0.0 => format!("FAIL by {}", unit(m)),
            _ => "FAIL".into(),
        }
    }
}

fn sep(unit: &str) -> &'static str {
    if unit.is_empty() || unit == "%" {
        ""
    } else {
        " "
    }
}

/// A value with its unit, as the verdict table shows it.
pub fn shown(v: f64, unit: &str) -> String {
    format!("{}{}{}", fmt_num(v), sep(unit), unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_scale_to_the_figure_unit_and_aliases_resolve() {
        let fan = figures("fanout");
        let t = Threshold::parse("delivery_p99 < 2s", &fan).unwrap();
        assert_eq!(
            (t.figure.as_str(), t.op, t.limit),
            ("latency_p99_ms", Op::Lt, 2000.0)
        );
        let t = Threshold::parse("loss==0", &fan).unwrap();
        assert_eq!((t.figure.as_str(), t.op, t.limit), ("lost", Op::Eq, 0.0));
        let t = Threshold::parse("connect_p95 <= 500ms", &figures("connect")).unwrap();
        assert_eq!((t.figure.as_str(), t.op), ("connect_p95_ms", Op::Le));
        let t = Threshold::parse("rss_growth < 5%", &figures("soak")).unwrap();
        assert_eq!((t.figure.as_str(), t.limit), ("rss_growth_pct", 5.0));
        assert!(Threshold::parse("rss_growth < 5%", &fan).is_err());
        assert!(Threshold::parse("lost < 5ms", &fan).is_err());
        assert!(Threshold::parse("lost 5", &fan).is_err());
        assert!(Threshold::parse("latency_p99_ms < fast", &fan).is_err());
    }

    #[test]
    fn a_verdict_says_by_how_much_it_missed() {
        let fan = figures("fanout");
        let mut r = Report::default();
        r.fig("latency_p99_ms", "p99", 150.0, "ms");
        r.fig("lost", "lost", 0.0, "");
        let v = Threshold::parse("latency_p99_ms < 100ms", &fan)
            .unwrap()
            .judge("s", &r);
        assert!(!v.ok);
        assert_eq!((v.miss, v.miss_pct), (Some(50.0), Some(50.0)));
        assert_eq!(v.result(), "FAIL by 50 ms (50%)");
        let v = Threshold::parse("loss == 0", &fan).unwrap().judge("s", &r);
        assert!(v.ok, "{v:?}");
        let v = Threshold::parse("achieved_rate > 1", &fan)
            .unwrap()
            .judge("s", &r);
        assert!(!v.ok && v.measured.is_none() && v.result().contains("not measured"));
    }
}
