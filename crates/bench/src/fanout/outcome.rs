//! What one fan-out run measured ([`Outcome`]), and how it goes into a report: figures,
//! latency sections and checks.

use super::probe::ProbeResult;
use super::publishers::{RATE_TOLERANCE, kept_up};
use crate::client::Http;
use crate::report::{LatencyLine, Report};
use crate::stats::{Percentiles, ServerSample};

/// The measured outcome of one fan-out run.
pub struct Outcome {
    /// Rate asked for.
    pub rate: f64,
    /// Subscribers connected / asked for.
    pub subscribed: usize,
    /// Subscribers that failed to connect or subscribe.
    pub sub_failed: usize,
    /// Subscribers closed by the server during the run.
    pub sub_closed: usize,
    /// Publications scheduled (all publishers).
    pub scheduled: u64,
    /// Publications sent within their publisher's window.
    pub sent: u64,
    /// Offered publish rate: every scheduled publication over the window.
    pub offered_rate: f64,
    /// Achieved publish rate: the publications sent over the window.
    pub achieved_rate: f64,
    /// How far a publisher fell behind its schedule at most, ms.
    pub lag_max_ms: f64,
    /// Publications acknowledged.
    pub acked: u64,
    /// Publications refused or failed.
    pub pub_failed: u64,
    /// Deliveries expected (acknowledged × subscribers of their channel).
    pub expected: u64,
    /// Expected deliveries received.
    pub received: u64,
    /// Expected deliveries never received.
    pub lost: u64,
    /// Deliveries of publications not acknowledged (their publish failed or timed out).
    pub unacked_received: u64,
    /// Deliveries received more than once.
    pub duplicates: u64,
    /// Deliveries that arrived after a later one of the same stream.
    pub reordered: u64,
    /// Whether a publisher's publications have an order of their own (not over HTTP/2,
    /// whose concurrent requests the server may commit in any order): then `reordered` must
    /// be 0.
    pub ordered_streams: bool,
    /// Subscriber streams received in another order than at the other subscribers of their
    /// channels that received the same publications.
    pub disordered: u64,
    /// The HTTP version the server API answered the publishers over (`--via api`).
    pub api_http: Option<Http>,
    /// The sequential HTTP probe (`--probe-http`).
    pub probe: Option<ProbeResult>,
    /// Seconds publishing.
    pub publish_secs: f64,
    /// Seconds from the first publication to the last delivery.
    pub delivery_secs: f64,
    /// Publication→delivery latency.
    pub latency: Percentiles,
    /// Publish→acknowledgement latency (from when each publication was due).
    pub ack: Percentiles,
    /// Percentile curve of the delivery latency.
    pub curve: Vec<(f64, f64)>,
    /// Percentile curve of the acknowledgement latency.
    pub ack_curve: Vec<(f64, f64)>,
    /// Per-second timeline of the deliveries.
    pub timeline: Vec<crate::report::Point>,
    /// Per-second timeline of the acknowledgements.
    pub ack_timeline: Vec<crate::report::Point>,
    /// Server samples.
    pub server: Vec<ServerSample>,
    /// Server CPU seconds during publishing + drain (with --pid).
    pub cpu_secs: Option<f64>,
    /// Payload bytes the servers wrote to clients during publishing + drain (with --admin).
    pub bytes_out: Option<u64>,
    /// First error of a publisher or subscriber, for the report.
    pub first_error: Option<String>,
}

impl Outcome {
    /// Delivered messages per second.
    pub fn delivered_per_sec(&self) -> f64 {
        let total = self.received + self.unacked_received;
        if self.delivery_secs > 0.0 {
            total as f64 / self.delivery_secs
        } else {
            0.0
        }
    }

    /// Publications acknowledged per second, from the start of the schedule to the last
    /// acknowledgement.
    pub fn committed_per_sec(&self) -> f64 {
        if self.publish_secs > 0.0 {
            self.acked as f64 / self.publish_secs
        } else {
            0.0
        }
    }

    /// Adds the figures and checks to `r`, with the delivery latency as the headline (its
    /// percentiles, curve and timeline).
    pub fn fill(&self, r: &mut Report) {
        self.fill_figures(r);
        r.latency_label = "publish→delivery".into();
        r.latency = Some(self.latency);
        r.percentiles = self.curve.clone();
        r.timeline = self.timeline.clone();
        self.probe_section(r);
    }

    /// Adds the figures and checks to `r`, with the acknowledgement latency as the headline.
    pub fn fill_acks(&self, r: &mut Report) {
        self.fill_figures(r);
        r.latency_label = "publish→acknowledgement".into();
        r.latency = Some(self.ack);
        r.percentiles = self.ack_curve.clone();
        r.timeline = self.ack_timeline.clone();
        self.probe_section(r);
    }

    /// The probe's latency on a line of its own.
    fn probe_section(&self, r: &mut Report) {
        if let Some(p) = &self.probe {
            r.latencies.push(LatencyLine {
                key: "probe".into(),
                label: format!("sequential {} probe ack", p.http.name()),
                latency: p.latency(),
                detail: format!("{} publishes one at a time, {} failed", p.acked, p.failed),
            });
        }
    }

    /// Every figure, the server samples and the checks.
    fn fill_figures(&self, r: &mut Report) {
        self.count_figures(r);
        self.schedule_figures(r);
        self.latency_figures(r);
        self.probe_figures(r);
        self.server_figures(r);
        r.server = self.server.clone();
        self.checks(r);
    }

    /// Offered and achieved publish rates, and how far behind schedule the publishers got.
    fn schedule_figures(&self, r: &mut Report) {
        r.fig(
            "offered_rate",
            "publish rate offered",
            self.offered_rate,
            "/s",
        );
        r.fig(
            "achieved_rate",
            "publish rate achieved",
            self.achieved_rate,
            "/s",
        );
        r.fig(
            "publications_unsent",
            "publications not sent (behind schedule)",
            self.scheduled.saturating_sub(self.sent) as f64,
            "",
        );
        r.fig(
            "publish_lag_max_ms",
            "publishers behind schedule, max",
            self.lag_max_ms,
            "ms",
        );
    }

    /// Subscribers, publications and deliveries: counts and rates.
    fn count_figures(&self, r: &mut Report) {
        r.fig(
            "subscribers",
            "subscribers connected",
            self.subscribed as f64,
            "",
        );
        r.fig(
            "subscribers_failed",
            "subscribers failed",
            self.sub_failed as f64,
            "",
        );
        r.fig(
            "subscribers_closed",
            "subscribers closed by server",
            self.sub_closed as f64,
            "",
        );
        r.fig(
            "publications_acked",
            "publications acknowledged",
            self.acked as f64,
            "",
        );
        r.fig(
            "publications_failed",
            "publications failed",
            self.pub_failed as f64,
            "",
        );
        r.fig(
            "publications_per_sec",
            "publications committed/s",
            self.committed_per_sec(),
            "/s",
        );
        r.fig(
            "deliveries_expected",
            "deliveries expected",
            self.expected as f64,
            "",
        );
        r.fig(
            "deliveries_received",
            "deliveries received",
            self.received as f64,
            "",
        );
        r.fig("lost", "lost", self.lost as f64, "");
        r.fig("duplicates", "duplicates", self.duplicates as f64, "");
        let reordered = if self.ordered_streams {
            "reordered"
        } else {
            "out of sequence order (HTTP/2: allowed)"
        };
        r.fig("reordered", reordered, self.reordered as f64, "");
        r.fig(
            "disordered",
            "subscriber streams in another order than the others'",
            self.disordered as f64,
            "",
        );
        r.fig(
            "unacked_received",
            "received but not acknowledged",
            self.unacked_received as f64,
            "",
        );
        r.fig(
            "delivered_per_sec",
            "delivered msgs/s",
            self.delivered_per_sec(),
            "/s",
        );
        r.fig("publish_secs", "publishing time", self.publish_secs, "s");
        if let Some(h) = self.api_http {
            let label = format!("server API HTTP version ({})", h.name());
            r.fig("api_http_version", &label, h.number(), "");
        }
    }

    /// Delivery and acknowledgement latency percentiles.
    fn latency_figures(&self, r: &mut Report) {
        r.fig("latency_p50_ms", "latency p50", self.latency.p50, "ms");
        r.fig("latency_p90_ms", "latency p90", self.latency.p90, "ms");
        r.fig("latency_p95_ms", "latency p95", self.latency.p95, "ms");
        r.fig("latency_p99_ms", "latency p99", self.latency.p99, "ms");
        r.fig("latency_p999_ms", "latency p99.9", self.latency.p999, "ms");
        r.fig("latency_max_ms", "latency max", self.latency.max, "ms");
        r.fig("ack_p50_ms", "publish ack p50", self.ack.p50, "ms");
        r.fig("ack_p90_ms", "publish ack p90", self.ack.p90, "ms");
        r.fig("ack_p99_ms", "publish ack p99", self.ack.p99, "ms");
        r.fig("ack_max_ms", "publish ack max", self.ack.max, "ms");
    }

    /// The sequential probe: answered, failed, protocol, latency percentiles.
    fn probe_figures(&self, r: &mut Report) {
        let Some(p) = &self.probe else {
            return;
        };
        let l = p.latency();
        r.fig(
            "probe_acked",
            "probe: publishes acknowledged",
            p.acked as f64,
            "",
        );
        r.fig(
            "probe_failed",
            "probe: publishes failed",
            p.failed as f64,
            "",
        );
        if let Some(h) = p.answered_over {
            let label = format!("probe: HTTP version ({})", h.name());
            r.fig("probe_http_version", &label, h.number(), "");
        }
        r.fig("probe_ack_p50_ms", "probe ack p50", l.p50, "ms");
        r.fig("probe_ack_p90_ms", "probe ack p90", l.p90, "ms");
        r.fig("probe_ack_p99_ms", "probe ack p99", l.p99, "ms");
        r.fig("probe_ack_max_ms", "probe ack max", l.max, "ms");
    }

    /// Server CPU (with `--pid`) and RSS at the end.
    fn server_figures(&self, r: &mut Report) {
        if let Some(cpu) = self.cpu_secs {
            r.fig("server_cpu_secs", "server CPU", cpu, "s");
            let m = (self.received + self.unacked_received) as f64 / 1e6;
            if m > 0.0 {
                r.fig(
                    "server_cpu_secs_per_million",
                    "server CPU per million deliveries",
                    cpu / m,
                    "s",
                );
            }
        }
        let deliveries = self.received + self.unacked_received;
        if let (Some(b), true) = (self.bytes_out, deliveries > 0) {
            r.fig(
                "wire_bytes_per_delivery",
                "bytes written per delivery",
                b as f64 / deliveries as f64,
                "B",
            );
        }
        if let Some(last) = self.server.last() {
            r.fig(
                "server_rss_bytes",
                "server RSS (end)",
                last.rss_bytes as f64,
                "B",
            );
        }
    }

    /// Deliveries add up; nothing failed, lost, duplicated or reordered.
    fn checks(&self, r: &mut Report) {
        r.check(
            "deliveries add up",
            self.expected == self.received + self.lost,
            format!(
                "expected {} = received {} + lost {}",
                self.expected, self.received, self.lost
            ),
        );
        r.check(
            "something was delivered",
            self.expected > 0,
            format!("{} deliveries expected", self.expected),
        );
        r.check(
            "every publication acknowledged",
            self.pub_failed == 0,
            format!(
                "{} failed{}",
                self.pub_failed,
                self.first_error
                    .as_deref()
                    .map(|e| format!("; first error: {e}"))
                    .unwrap_or_default()
            ),
        );
        let pct = if self.offered_rate > 0.0 {
            100.0 * self.achieved_rate / self.offered_rate
        } else {
            0.0
        };
        r.check(
            "publishers kept to the offered rate",
            kept_up(self.offered_rate, self.achieved_rate),
            format!(
                "achieved {:.1}/s of {:.1}/s offered ({pct:.1} %, at least {:.0} % needed); {} not sent; at most {:.1} ms behind schedule",
                self.achieved_rate,
                self.offered_rate,
                100.0 * (1.0 - RATE_TOLERANCE),
                self.scheduled.saturating_sub(self.sent),
                self.lag_max_ms
            ),
        );
        r.check("no loss", self.lost == 0, format!("{} lost", self.lost));
        r.check(
            "no duplicates",
            self.duplicates == 0,
            format!("{} duplicates", self.duplicates),
        );
        self.order_checks(r);
        if let Some(p) = &self.probe {
            r.check(
                "every probe publish acknowledged",
                p.failed == 0 && p.acked > 0,
                format!(
                    "{} acknowledged, {} failed{}",
                    p.acked,
                    p.failed,
                    p.error
                        .as_deref()
                        .map(|e| format!("; first error: {e}"))
                        .unwrap_or_default()
                ),
            );
        }
        r.check(
            "every subscriber connected and stayed",
            self.sub_failed == 0 && self.sub_closed == 0,
            format!(
                "{} failed, {} closed{}",
                self.sub_failed,
                self.sub_closed,
                self.first_error
                    .as_deref()
                    .map(|e| format!("; first error: {e}"))
                    .unwrap_or_default()
            ),
        );
    }

    /// In order (unless over HTTP/2), and in one order at every subscriber.
    fn order_checks(&self, r: &mut Report) {
        if self.ordered_streams {
            r.check(
                "in order",
                self.reordered == 0,
                format!("{} reordered", self.reordered),
            );
        }
        r.check(
            "one order at every subscriber",
            self.disordered == 0,
            format!(
                "{} subscriber streams differ in order from the others of their channels{}",
                self.disordered,
                if self.ordered_streams {
                    String::new()
                } else {
                    format!(
                        "; {} deliveries out of sequence order, as HTTP/2 requests in flight together have no order",
                        self.reordered
                    )
                }
            ),
        );
    }
}
