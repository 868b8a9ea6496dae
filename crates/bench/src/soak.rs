//! `soak`: a long steady fan-out that samples the servers' RSS, descriptors and store size
//! (and the delivery latency) over time, then reports their slopes. A leak shows as growth:
//! the check takes the least-squares line through the RSS samples after warm-up and reports
//! how much it rises across the run, relative to where it starts. The RSS of a healthy node is
//! a sawtooth (the Raft log fills between snapshots and is purged at each), so comparing two
//! short windows, such as the first and last tenth, mostly measures where in a tooth each
//! fell; that figure is reported too, for information.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fanout::{FanoutArgs, once};
use super::report::Report;
use super::stats::slope;
use super::{Ctx, Hooks};

/// Arguments of `switchyard bench soak` (a fan-out, run long, with server sampling).
#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct SoakArgs {
    /// The steady load (its --duration is the soak's length).
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// Time at the start excluded from the growth figures (allocators and caches settle).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Largest RSS growth (percent) the check accepts.
    #[arg(long, default_value_t = 5.0)]
    pub max_growth: f64,
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Growth (percent) of the mean of the last tenth over the mean of the first tenth.
fn growth(points: &[(f64, f64)]) -> f64 {
    let n = (points.len() / 10).max(1);
    if points.len() < 2 {
        return 0.0;
    }
    let first = mean(&points[..n].iter().map(|p| p.1).collect::<Vec<_>>());
    let last = mean(
        &points[points.len() - n..]
            .iter()
            .map(|p| p.1)
            .collect::<Vec<_>>(),
    );
    if first > 0.0 {
        100.0 * (last - first) / first
    } else {
        0.0
    }
}

/// Growth (percent) along the least-squares line through the samples: its rise from the
/// first to the last sample time, over its value at the first.
fn trend_growth(points: &[(f64, f64)]) -> f64 {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return 0.0;
    };
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let k = slope(points);
    let start = my + k * (first.0 - mx);
    if start > 0.0 {
        100.0 * k * (last.0 - first.0) / start
    } else {
        0.0
    }
}

/// Runs `switchyard bench soak`.
pub async fn run(a: SoakArgs, hooks: Hooks) -> anyhow::Result<Report> {
    let ctx = Arc::new(Ctx::new(&a.fanout.target, hooks).await?);
    if ctx.probe.is_empty() {
        anyhow::bail!("soak needs --pid or --admin to sample the servers");
    }
    let o = once(&a.fanout, &ctx, a.fanout.rate, a.fanout.publishing.duration).await?;
    let mut r = Report::new("soak", &a);
    o.fill(&mut r);
    let warm = a.warmup.as_secs_f64();
    let settled: Vec<_> = o.server.iter().filter(|s| s.t >= warm).collect();
    let series = |f: &dyn Fn(&super::stats::ServerSample) -> f64| -> Vec<(f64, f64)> {
        settled.iter().map(|s| (s.t, f(s))).collect()
    };
    let rss = series(&|s| s.rss_bytes as f64);
    let fds = series(&|s| s.fds as f64);
    let store = series(&|s| s.store_bytes as f64);
    let p99: Vec<(f64, f64)> = o
        .timeline
        .iter()
        .filter(|p| p.t >= warm && p.rate > 0.0)
        .map(|p| (p.t, p.p99))
        .collect();
    let rss_growth = trend_growth(&rss);
    let rss_tenths = growth(&rss);
    r.fig(
        "soak_samples",
        "server samples after warm-up",
        settled.len() as f64,
        "",
    );
    r.fig(
        "rss_start_bytes",
        "RSS after warm-up",
        rss.first().map_or(0.0, |p| p.1),
        "B",
    );
    r.fig(
        "rss_end_bytes",
        "RSS at the end",
        rss.last().map_or(0.0, |p| p.1),
        "B",
    );
    r.fig(
        "rss_growth_pct",
        "RSS growth (trend over the run)",
        rss_growth,
        "%",
    );
    r.fig(
        "rss_growth_tenths_pct",
        "RSS last vs first tenth",
        rss_tenths,
        "%",
    );
    r.fig(
        "rss_slope_bytes_per_hour",
        "RSS slope",
        slope(&rss) * 3600.0,
        "B/h",
    );
    r.fig("fds_slope_per_hour", "FD slope", slope(&fds) * 3600.0, "/h");
    r.fig(
        "store_end_bytes",
        "store size at the end",
        store.last().map_or(0.0, |p| p.1),
        "B",
    );
    r.fig(
        "store_slope_bytes_per_hour",
        "store size slope",
        slope(&store) * 3600.0,
        "B/h",
    );
    r.fig(
        "p99_slope_ms_per_hour",
        "p99 latency slope",
        slope(&p99) * 3600.0,
        "ms/h",
    );
    r.check(
        "flat RSS",
        rss_growth < a.max_growth,
        format!(
            "{rss_growth:.1} % growth along the trend (bound {:.0} %; last vs first tenth {rss_tenths:.1} %)",
            a.max_growth
        ),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_compares_tenths() {
        let pts: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 100.0 + i as f64)).collect();
        let g = growth(&pts);
        assert!((g - 18.0).abs() < 1.0, "{g}");
    }

    #[test]
    fn trend_growth_sees_a_leak_and_not_a_sawtooth() {
        // Steady growth 100 -> 119: the line rises 19 %.
        let leak: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 100.0 + i as f64)).collect();
        let g = trend_growth(&leak);
        assert!((g - 19.0).abs() < 0.5, "{g}");
        // A flat sawtooth (period 7 samples, 100..130) over 70 samples: no trend.
        let saw: Vec<(f64, f64)> = (0..70)
            .map(|i| (i as f64, 100.0 + 5.0 * ((i + 3) % 7) as f64))
            .collect();
        assert!(trend_growth(&saw).abs() < 2.0, "{}", trend_growth(&saw));
        // The same sawtooth on a leak of 0.5 per sample is still caught.
        let both: Vec<(f64, f64)> = saw.iter().map(|&(t, v)| (t, v + 0.5 * t)).collect();
        assert!(trend_growth(&both) > 20.0, "{}", trend_growth(&both));
    }
}
