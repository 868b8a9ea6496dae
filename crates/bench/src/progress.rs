//! A run's progress on stderr while it goes. On a terminal, a live line (indicatif) refreshed
//! five times a second; elsewhere (CI, nohup, a pipe), where indicatif draws nothing, a plain
//! line every `--progress-every` with the same figures, so a long soak is not silent until it
//! ends. `--quiet` shows neither.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::Target;

/// `--progress-every`'s default.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(5);

/// [`DEFAULT_EVERY`], for serde.
pub fn default_every() -> Duration {
    DEFAULT_EVERY
}

/// How a run shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing (`--quiet`, worker processes, `--progress-every 0` off a terminal).
    Off,
    /// A live line, redrawn in place (stderr is a terminal).
    Bar,
    /// A plain line this often (stderr is not a terminal).
    Lines(Duration),
}

impl Mode {
    /// The mode for `quiet`, whether stderr is a `terminal`, and `--progress-every`.
    pub fn choose(quiet: bool, terminal: bool, every: Duration) -> Mode {
        if quiet {
            Mode::Off
        } else if terminal {
            Mode::Bar
        } else if every.is_zero() {
            Mode::Off
        } else {
            Mode::Lines(every)
        }
    }

    /// The mode `t` asks for, given where stderr goes.
    pub fn of(t: &Target) -> Mode {
        Mode::choose(t.quiet, std::io::stderr().is_terminal(), t.progress_every)
    }
}

/// A run's progress, shown from `msg` until dropped.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    stop: CancellationToken,
}

impl Progress {
    /// Starts showing `msg()` as `mode` says.
    pub fn start(mode: Mode, msg: impl Fn() -> String + Send + 'static) -> Progress {
        let stop = CancellationToken::new();
        let bar = match mode {
            Mode::Off => None,
            Mode::Bar => Some(bar(msg, stop.clone())),
            Mode::Lines(every) => {
                lines(every, msg, stop.clone());
                None
            }
        };
        Progress { bar, stop }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The live line: `msg()` five times a second after a spinner and the elapsed time.
fn bar(
    msg: impl Fn() -> String + Send + 'static,
    stop: CancellationToken,
) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let b = bar.clone();
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            b.set_message(msg());
            b.tick();
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    });
    bar
}

/// The plain lines: [`line`] every `every`, the first one `every` after the start.
fn lines(every: Duration, msg: impl Fn() -> String + Send + 'static, stop: CancellationToken) {
    let start = Instant::now();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    let text = line(start.elapsed(), &msg());
                    // Best effort: a closed stderr must not end the run.
                    let _ = writeln!(std::io::stderr().lock(), "{text}");
                }
            }
        }
    });
}

/// One plain progress line: `switchyard bench [HH:MM:SS] <msg>`, the elapsed time as the
/// live line shows it.
pub fn line(elapsed: Duration, msg: &str) -> String {
    let s = elapsed.as_secs();
    format!(
        "switchyard bench [{:02}:{:02}:{:02}] {msg}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// A counter's rate per second for a progress line, over windows of about a second or more (a
/// line shown five times a second would otherwise jitter): the last full window's, 0 before.
pub struct Rate {
    /// When the window began, the count then, and the rate of the last full window.
    last: Mutex<(Instant, u64, f64)>,
}

impl Default for Rate {
    fn default() -> Rate {
        Rate {
            last: Mutex::new((Instant::now(), 0, 0.0)),
        }
    }
}

impl Rate {
    /// The rate, given the counter's value now.
    pub fn per_sec(&self, count: u64) -> f64 {
        self.at(Instant::now(), count)
    }

    fn at(&self, now: Instant, count: u64) -> f64 {
        let mut last = self.last.lock();
        let secs = now.saturating_duration_since(last.0).as_secs_f64();
        // Not quite 1 s: plain lines a second apart arrive a hair early or late.
        if secs >= 0.9 {
            let rate = count.saturating_sub(last.1) as f64 / secs;
            *last = (now, count, rate);
        }
        last.2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_gets_the_bar_anything_else_plain_lines() {
        let five = Duration::from_secs(5);
        assert_eq!(Mode::choose(false, true, five), Mode::Bar);
        assert_eq!(Mode::choose(false, false, five), Mode::Lines(five));
        assert_eq!(Mode::choose(true, true, five), Mode::Off);
        assert_eq!(Mode::choose(true, false, five), Mode::Off);
        assert_eq!(Mode::choose(false, false, Duration::ZERO), Mode::Off);
        assert_eq!(Mode::choose(false, true, Duration::ZERO), Mode::Bar);
    }

    #[test]
    fn a_line_carries_the_elapsed_time_and_the_figures() {
        assert_eq!(
            line(Duration::from_millis(3_725_900), "sent 10 · acked 9"),
            "switchyard bench [01:02:05] sent 10 · acked 9"
        );
    }

    #[test]
    fn a_rate_is_taken_over_about_a_second_or_more() {
        let r = Rate::default();
        let t0 = r.last.lock().0;
        assert_eq!(r.at(t0 + Duration::from_millis(500), 400), 0.0);
        assert_eq!(r.at(t0 + Duration::from_millis(850), 400), 0.0);
        assert_eq!(r.at(t0 + Duration::from_secs(2), 1000), 500.0);
        // Within the next second the last full window's rate stands.
        assert_eq!(r.at(t0 + Duration::from_millis(2500), 5000), 500.0);
        assert_eq!(r.at(t0 + Duration::from_secs(4), 3000), 1000.0);
    }
}
