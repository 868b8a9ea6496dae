//! The SDKs' reconnect back-off. centrifuge-js 5.x (`backoff()` and `_getReconnectDelay()` in
//! its build) waits `min(max, min + randomInt(0, min(max, min · 2^step)))` ms before reconnect
//! attempt `step` (0 for the first after a loss; reset by a successful connect), with
//! `minReconnectDelay` 500 ms and `maxReconnectDelay` 20 s by default: "full jitter" over a
//! doubling span. `Jitter::None` gives the plain doubling `min · 2^step` capped at `max`
//! (1, 2, 4 … 30 s with `--backoff-min 1s --backoff-max 30s`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the delay is drawn within its span.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Jitter {
    /// centrifuge-js: `min + random(0 ..= min(max, min · 2^step))`, capped at `max`.
    Full,
    /// No randomness: `min · 2^step`, capped at `max`.
    None,
}

/// A reconnect back-off.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// `minReconnectDelay`.
    pub min: Duration,
    /// `maxReconnectDelay`.
    pub max: Duration,
    /// How the delay is drawn.
    pub jitter: Jitter,
}

impl Backoff {
    /// The delay before reconnect attempt `step` (0 = the first after a loss).
    pub fn delay(&self, step: u32, rng: &mut fastrand::Rng) -> Duration {
        let (min, max) = (millis(self.min), millis(self.max));
        let span = max.min(min.saturating_mul(1u64 << step.min(31)));
        let ms = match self.jitter {
            Jitter::Full => max.min(min + rng.u64(0..=span)),
            Jitter::None => span,
        };
        Duration::from_millis(ms)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_in_the_sdk_bounds() {
        let b = Backoff {
            min: Duration::from_millis(500),
            max: Duration::from_secs(20),
            jitter: Jitter::Full,
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for step in 0..40u32 {
            let span = 20_000u64.min(500u64.saturating_mul(1 << step.min(31)));
            let (mut lo, mut hi) = (u64::MAX, 0);
            for _ in 0..2000 {
                let d = b.delay(step, &mut rng).as_millis() as u64;
                assert!(
                    d >= 500 && d <= (500 + span).min(20_000),
                    "step {step}: {d}"
                );
                (lo, hi) = (lo.min(d), hi.max(d));
            }
            // Spread over the span: not a fixed delay.
            assert!(hi - lo > span.min(19_500) / 2, "step {step}: {lo}..{hi}");
        }
    }

    #[test]
    fn no_jitter_doubles_up_to_the_cap() {
        let b = Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: Jitter::None,
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let got: Vec<u64> = (0..8).map(|s| b.delay(s, &mut rng).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
