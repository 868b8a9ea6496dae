//! `soak`: a long steady fan-out that samples the servers' RSS, descriptors and store size
//! (and the delivery latency) over time, then reports their slopes. A leak shows as growth:
//! the check compares the RSS of the last tenth of the run with the first tenth after warm-up.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::fanout::{FanoutArgs, once};
use super::report::Report;
use super::stats::slope;

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

/// Runs `switchyard bench soak`.
pub async fn run(a: SoakArgs) -> anyhow::Result<Report> {
    let ctx = Arc::new(Ctx::new(&a.fanout.target)?);
    if ctx.probe.is_empty() {
        anyhow::bail!("soak needs --pid or --admin to sample the servers");
    }
    let o = once(&a.fanout, &ctx, a.fanout.rate, a.fanout.duration).await?;
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
    let rss_growth = growth(&rss);
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
        "RSS growth (last vs first tenth)",
        rss_growth,
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
        format!("{rss_growth:.1} % growth (bound {:.0} %)", a.max_growth),
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
}
