//! `publish`: how fast a node or cluster commits publications. A few subscribers (3 by
//! default) each subscribe to every one of many channels (100); the publishers (1 by default)
//! publish open loop at the offered rate, each one's publications going round the channels.
//! The same phases as [`fanout`](super::fanout) (open-loop schedule, per-stream accounting at
//! every subscriber, drain), reported with the acknowledgement latency as the headline:
//! committed publications/s, publish→acknowledgement percentiles, offered vs achieved rate.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fanout::{FanoutArgs, Layout, Publishing, once};
use super::report::Report;
use super::{Ctx, Hooks, Target};

/// Arguments of `switchyard bench publish`.
#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct PublishArgs {
    /// Nodes, credentials, outputs.
    #[command(flatten)]
    pub target: Target,
    /// Subscribed connections, each subscribed to every channel.
    #[arg(long, default_value_t = 3)]
    pub subscribers: usize,
    /// Channels; each publisher's publications go round them.
    #[arg(long, default_value_t = 100)]
    pub channels: usize,
    /// Publishers (each one stream on one connection; see `fanout --help`).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Publications per second offered, all publishers together (open loop).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Payload, duration, how to publish, drain, sampling.
    #[command(flatten)]
    #[serde(flatten)]
    pub publishing: Publishing,
}

impl PublishArgs {
    /// The fan-out run this is: every subscriber on every channel, publications spread.
    fn fanout(&self) -> FanoutArgs {
        FanoutArgs {
            target: self.target.clone(),
            subscribers: self.subscribers,
            channels: self.channels,
            publishers: self.publishers,
            rate: self.rate,
            publishing: self.publishing.clone(),
            probe_http: false,
            probe_http2: false,
            inject_drop: None,
            step: false,
            p99_bound: Duration::from_millis(100),
            step_factor: 2.0,
            max_steps: 1,
            layout: Layout::Spread,
        }
    }
}

/// Runs `switchyard bench publish`.
pub async fn run(a: PublishArgs, hooks: Hooks) -> anyhow::Result<Report> {
    let ctx = Arc::new(Ctx::new(&a.target, hooks).await?);
    let o = once(&a.fanout(), &ctx, a.rate, a.publishing.duration).await?;
    let mut r = Report::new("publish", &a);
    o.fill_acks(&mut r);
    Ok(r)
}
