//! A run's report: every figure (ordered, with a label and unit), pass/fail checks, latency
//! percentiles, a per-second timeline and server samples. Rendered as a human table, as JSON
//! (`--json`) and as one self-contained HTML page with inline SVG plots (`--html`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::redact;
use super::stats::{Percentiles, ServerSample};

/// One figure: a key (JSON), a label and unit (table), a value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// JSON key.
    pub key: String,
    /// Human label.
    pub label: String,
    /// Value.
    pub value: f64,
    /// Unit ("" for counts).
    pub unit: String,
}

/// A pass/fail statement about the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// The figures behind it.
    pub detail: String,
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Point {
    /// Seconds since the start.
    pub t: f64,
    /// Events (deliveries, connects) in this second.
    pub rate: f64,
    /// Latency percentiles of the events in this second (ms).
    pub p50: f64,
    /// 99th percentile (ms).
    pub p99: f64,
    /// Largest (ms).
    pub max: f64,
    /// Open connections at this time, when the scenario tracks them.
    pub connections: f64,
}

/// A latency besides the headline one, shown on a line of its own (the sequential probe of
/// `fanout --probe-http`); in the JSON under `latencies`, its percentiles also as figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyLine {
    /// Short name (`probe`).
    pub key: String,
    /// What it measures.
    pub label: String,
    /// Its percentiles (ms).
    pub latency: Percentiles,
    /// What else to say about it (counts).
    pub detail: String,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The arguments it ran with, secrets redacted ([`Report::new`] stores them so, and
    /// every writer shows them through [`Report::shown_args`]).
    pub args: Value,
    /// Every figure, in table order.
    pub figures: Vec<Figure>,
    /// Checks.
    pub checks: Vec<Check>,
    /// What `latency` measures.
    pub latency_label: String,
    /// Latency percentiles of the whole run.
    pub latency: Option<Percentiles>,
    /// Other latencies, each on a line of its own.
    #[serde(default)]
    pub latencies: Vec<LatencyLine>,
    /// (percentile, ms) for the percentile plot.
    pub percentiles: Vec<(f64, f64)>,
    /// Per-second timeline.
    pub timeline: Vec<Point>,
    /// Server readings over time.
    pub server: Vec<ServerSample>,
    /// Step mode: one object per step.
    pub steps: Vec<Value>,
}

/// A number as the table shows it: thousands separators for integers, a few decimals otherwise.
pub fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let s = format!("{}", v as i64);
        // Thousands separators for readability.
        let (sign, digits) = s.split_at(usize::from(s.starts_with('-')));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

impl Report {
    /// An empty report for `scenario` run with `args` (kept with their secrets redacted).
    pub fn new(scenario: &str, args: &impl Serialize) -> Report {
        Report {
            scenario: scenario.into(),
            args: redact::args(&serde_json::to_value(args).unwrap_or(Value::Null)),
            ..Default::default()
        }
    }

    /// The arguments as every output shows them: secrets redacted, however `args` was set.
    pub fn shown_args(&self) -> Value {
        redact::args(&self.args)
    }

    /// Adds a figure.
    pub fn fig(&mut self, key: &str, label: &str, value: f64, unit: &str) {
        self.figures.push(Figure {
            key: key.into(),
            label: label.into(),
            value,
            unit: unit.into(),
        });
    }

    /// A figure's value by key.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.key == key).map(|f| f.value)
    }

    /// Adds a check.
    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail: detail.into(),
        });
    }

    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The JSON document: figures as a `key → value` object plus everything else.
    pub fn to_json(&self) -> Value {
        let figures: Map<String, Value> = self
            .figures
            .iter()
            .map(|f| (f.key.clone(), json!(f.value)))
            .collect();
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("figures".into(), Value::Object(figures));
            o.insert(
                "units".into(),
                self.figures
                    .iter()
                    .map(|f| (f.key.clone(), json!(f.unit)))
                    .collect::<Map<_, _>>()
                    .into(),
            );
            o.insert("passed".into(), json!(self.passed()));
            o.insert("args".into(), self.shown_args());
        }
        v
    }

    /// The human summary.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\nswitchyard bench {}", self.scenario);
        let w = self
            .figures
            .iter()
            .map(|f| f.label.len())
            .max()
            .unwrap_or(10)
            .max(24);
        for f in &self.figures {
            let _ = writeln!(
                out,
                "  {:<w$}  {:>14} {}",
                f.label,
                fmt_num(f.value),
                f.unit
            );
        }
        if let Some(l) = &self.latency {
            let _ = writeln!(
                out,
                "  {:<w$}  p50 {} · p90 {} · p99 {} · p99.9 {} · max {} ms ({} samples)",
                self.latency_label,
                fmt_num(l.p50),
                fmt_num(l.p90),
                fmt_num(l.p99),
                fmt_num(l.p999),
                fmt_num(l.max),
                fmt_num(l.count as f64)
            );
        }
        for l in &self.latencies {
            let p = &l.latency;
            let _ = writeln!(
                out,
                "  {:<w$}  p50 {} · p90 {} · p99 {} · max {} ms ({} samples; {})",
                l.label,
                fmt_num(p.p50),
                fmt_num(p.p90),
                fmt_num(p.p99),
                fmt_num(p.max),
                fmt_num(p.count as f64),
                l.detail
            );
        }
        if !self.steps.is_empty() {
            let _ = writeln!(out, "  steps:");
            for s in &self.steps {
                let _ = writeln!(out, "    {s}");
            }
        }
        for c in &self.checks {
            let _ = writeln!(
                out,
                "  [{}] {} ({})",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        out
    }

    /// A self-contained HTML page: figures, checks, and SVG plots (no scripts, no CDN).
    pub fn html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>switchyard bench {s}</title>\
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:1000px;color:#222}}\
table{{border-collapse:collapse}}td{{padding:2px 12px;border-bottom:1px solid #eee}}\
td.v{{text-align:right;font-variant-numeric:tabular-nums}}.ok{{color:#080}}.fail{{color:#c00;font-weight:bold}}\
h2{{margin-top:1.5em}}svg{{background:#fafafa;border:1px solid #ddd}}</style></head><body>\
<h1>switchyard bench {s}</h1>",
            s = esc(&self.scenario)
        );
        self.html_checks(&mut h);
        self.html_figures(&mut h);
        self.html_timeline(&mut h);
        self.html_percentiles(&mut h);
        self.html_server(&mut h);
        if !self.steps.is_empty() {
            h.push_str("<h2>Steps</h2><pre>");
            for s in &self.steps {
                let _ = writeln!(h, "{}", esc(&s.to_string()));
            }
            h.push_str("</pre>");
        }
        let _ = writeln!(
            h,
            "<h2>Arguments</h2><pre>{}</pre></body></html>",
            esc(&serde_json::to_string_pretty(&self.shown_args()).unwrap_or_default())
        );
        h
    }

    /// The checks, as a list.
    fn html_checks(&self, h: &mut String) {
        if !self.checks.is_empty() {
            h.push_str("<h2>Checks</h2><ul>");
            for c in &self.checks {
                let _ = write!(
                    h,
                    "<li class=\"{}\">{} {} <small>({})</small></li>",
                    if c.ok { "ok" } else { "fail" },
                    if c.ok { "✔" } else { "✘" },
                    esc(&c.name),
                    esc(&c.detail)
                );
            }
            h.push_str("</ul>");
        }
    }

    /// The figures and the latency summary, as a table.
    fn html_figures(&self, h: &mut String) {
        h.push_str("<h2>Figures</h2><table>");
        for f in &self.figures {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=v>{}</td><td>{}</td></tr>",
                esc(&f.label),
                fmt_num(f.value),
                esc(&f.unit)
            );
        }
        if let Some(l) = &self.latency {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=v colspan=2>p50 {} · p90 {} · p99 {} · p99.9 {} · max {} ms</td></tr>",
                esc(&self.latency_label),
                fmt_num(l.p50),
                fmt_num(l.p90),
                fmt_num(l.p99),
                fmt_num(l.p999),
                fmt_num(l.max)
            );
        }
        for l in &self.latencies {
            let p = &l.latency;
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=v colspan=2>p50 {} · p90 {} · p99 {} · max {} ms ({} samples; {})</td></tr>",
                esc(&l.label),
                fmt_num(p.p50),
                fmt_num(p.p90),
                fmt_num(p.p99),
                fmt_num(p.max),
                fmt_num(p.count as f64),
                esc(&l.detail)
            );
        }
        h.push_str("</table>");
    }

    /// Latency and rate (and open connections) over time.
    fn html_timeline(&self, h: &mut String) {
        if !self.timeline.is_empty() {
            let pts = |f: fn(&Point) -> f64| -> Vec<(f64, f64)> {
                self.timeline.iter().map(|p| (p.t, f(p))).collect()
            };
            // Latency lines only where something was measured (no false zeros).
            let lat = |f: fn(&Point) -> f64| -> Vec<(f64, f64)> {
                self.timeline
                    .iter()
                    .filter(|p| p.rate > 0.0)
                    .map(|p| (p.t, f(p)))
                    .collect()
            };
            h.push_str("<h2>Latency over time</h2>");
            h.push_str(&chart(
                "seconds",
                "ms",
                &[
                    ("p50", "#1f77b4", lat(|p| p.p50)),
                    ("p99", "#ff7f0e", lat(|p| p.p99)),
                    ("max", "#d62728", lat(|p| p.max)),
                ],
                false,
            ));
            h.push_str("<h2>Rate over time</h2>");
            let mut series = vec![("per second", "#2ca02c", pts(|p| p.rate))];
            if self.timeline.iter().any(|p| p.connections > 0.0) {
                series.push(("open connections", "#9467bd", pts(|p| p.connections)));
            }
            h.push_str(&chart("seconds", "count", &series, false));
        }
    }

    /// The latency percentile plot.
    fn html_percentiles(&self, h: &mut String) {
        if !self.percentiles.is_empty() {
            let _ = write!(
                h,
                "<h2>Latency by percentile ({})</h2>",
                esc(&self.latency_label)
            );
            h.push_str(&chart(
                "percentile",
                "ms",
                &[("latency", "#1f77b4", self.percentiles.clone())],
                true,
            ));
        }
    }

    /// Server RSS, FDs and store size over time.
    fn html_server(&self, h: &mut String) {
        if !self.server.is_empty() {
            h.push_str("<h2>Server over time</h2>");
            let mib: Vec<(f64, f64)> = self
                .server
                .iter()
                .map(|s| (s.t, s.rss_bytes as f64 / 1048576.0))
                .collect();
            let fds: Vec<(f64, f64)> = self.server.iter().map(|s| (s.t, s.fds as f64)).collect();
            h.push_str(&chart(
                "seconds",
                "RSS MiB",
                &[("RSS MiB", "#8c564b", mib)],
                false,
            ));
            h.push_str(&chart(
                "seconds",
                "open FDs",
                &[("FDs", "#7f7f7f", fds)],
                false,
            ));
            if self.server.iter().any(|s| s.store_bytes > 0) {
                let st: Vec<(f64, f64)> = self
                    .server
                    .iter()
                    .map(|s| (s.t, s.store_bytes as f64 / 1048576.0))
                    .collect();
                h.push_str(&chart(
                    "seconds",
                    "store MiB",
                    &[("sled MiB", "#17becf", st)],
                    false,
                ));
            }
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line of a chart: name, colour, points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// An SVG line chart. With `nines`, x is a percentile drawn on a "number of nines" scale
/// (0, 90, 99, 99.9, …) the way latency percentile plots usually are.
fn chart(x_label: &str, y_label: &str, series: &[Series<'_>], nines: bool) -> String {
    let (w, hgt, ml, mr, mt, mb) = (900.0, 300.0, 70.0, 45.0, 20.0, 40.0);
    let tx = |x: f64| {
        if nines {
            -(1.0 - x / 100.0).max(1e-6).log10()
        } else {
            x
        }
    };
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.2.iter().map(|&(x, y)| (tx(x), y)))
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    if all.is_empty() {
        return String::new();
    }
    let (mut x0, mut x1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let y1 = all.iter().fold(0.0f64, |a, p| a.max(p.1)) * 1.05;
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 };
    if x1 <= x0 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    let sx = |x: f64| ml + (x - x0) / (x1 - x0) * (w - ml - mr);
    let sy = |y: f64| mt + (1.0 - y / y1) * (hgt - mt - mb);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hgt}\" viewBox=\"0 0 {w} {hgt}\" font-size=\"11\">"
    );
    // Grid and axis labels.
    for i in 0..=4 {
        let y = y1 * f64::from(i) / 4.0;
        let py = sy(y);
        let _ = write!(
            s,
            "<line x1=\"{ml}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            w - mr,
            ml - 4.0,
            py + 4.0,
            fmt_num((y * 100.0).round() / 100.0),
        );
    }
    if nines {
        let mut n = 0.0;
        while n <= x1 + 1e-9 {
            let label = 100.0 * (1.0 - 10f64.powf(-n));
            let _ = write!(
                s,
                "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{mt}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{}%</text>",
                hgt - mb,
                hgt - mb + 14.0,
                format!("{label:.4}")
                    .trim_end_matches('0')
                    .trim_end_matches('.'),
                px = sx(n)
            );
            n += 1.0;
        }
    } else {
        for i in 0..=5 {
            let x = x0 + (x1 - x0) * f64::from(i) / 5.0;
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                sx(x),
                hgt - mb + 14.0,
                fmt_num((x * 10.0).round() / 10.0)
            );
        }
    }
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text><text x=\"12\" y=\"{}\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">{}</text>",
        (ml + w - mr) / 2.0,
        hgt - 6.0,
        esc(x_label),
        hgt / 2.0,
        hgt / 2.0,
        esc(y_label)
    );
    for (k, (name, color, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| (tx(x), y))
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/><rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            path.join(" "),
            ml + 10.0 + 140.0 * k as f64,
            mt - 14.0,
            ml + 24.0 + 140.0 * k as f64,
            mt - 5.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_table_json_and_html() {
        let mut r = Report::new("fanout", &json!({"rate": 10}));
        r.fig("deliveries_expected", "deliveries expected", 1234.0, "");
        r.check("no loss", true, "0 lost");
        r.timeline.push(Point {
            t: 0.0,
            rate: 5.0,
            p50: 1.0,
            p99: 2.0,
            max: 3.0,
            connections: 0.0,
        });
        r.percentiles = vec![(0.0, 1.0), (99.0, 2.0), (99.9, 3.0)];
        assert!(r.table().contains("1,234"));
        assert_eq!(r.to_json()["figures"]["deliveries_expected"], 1234.0);
        let h = r.html();
        assert!(h.contains("<svg") && h.contains("polyline"));
    }

    #[test]
    fn no_output_shows_a_secret() {
        let args = json!({
            "target": {"api_key": "k-123456", "token_secret": "s-123456", "token": null,
                       "urls": ["ws://127.0.0.1:1/connection/websocket?token=t-123456"]},
        });
        let mut r = Report::new("fanout", &args);
        r.check("no loss", true, "0 lost");
        let outputs = |r: &Report| {
            [
                r.table(),
                serde_json::to_string(&r.to_json()).unwrap(),
                r.html(),
            ]
        };
        for out in outputs(&r) {
            for secret in ["k-123456", "s-123456", "t-123456"] {
                assert!(!out.contains(secret), "{secret} in {out}");
            }
        }
        assert_eq!(r.to_json()["args"]["target"]["api_key"], redact::MARK);
        assert!(r.html().contains(redact::MARK));
        // Arguments set by hand, not through `new`, are shown redacted all the same.
        r.args = args;
        for out in outputs(&r) {
            assert!(
                !out.contains("k-123456") && !out.contains("s-123456"),
                "{out}"
            );
        }
    }
}
