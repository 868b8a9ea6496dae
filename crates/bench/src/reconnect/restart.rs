//! `--restart-cmd`: shell commands (`sh -c`) the run executes while it publishes, e.g.
//! `systemctl restart switchyard@2` or `scripts/cluster-local.sh restart-node 2`. The first
//! starts `--restart-at` into the run; each next one `--restart-gap` after the previous one
//! exited and every client was back (or `--restart-timeout` passed). Publishing goes on until
//! the last one is over, so that publications are made all through every restart.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::Shared;

/// One command run.
#[derive(Debug, Clone)]
pub struct Run {
    /// The command.
    pub cmd: String,
    /// When it started.
    pub started: Instant,
    /// How long it ran.
    pub secs: f64,
    /// Why it failed (non-zero exit, could not start, timed out), with its output's tail.
    pub error: Option<String>,
}

/// When and how long.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// When the first command starts.
    pub at: Instant,
    /// Pause between one command's end (every client back) and the next.
    pub gap: Duration,
    /// Longest a command may run, and longest wait for every client after it.
    pub timeout: Duration,
}

/// Runs `cmds` one after another as `t` says; records each start in `shared.restarts`.
/// Clears `shared.restarting` at the end.
pub async fn run(cmds: Vec<String>, t: Timing, clients: usize, shared: Shared) -> Vec<Run> {
    let mut out = Vec::new();
    tokio::time::sleep_until(t.at).await;
    for (k, cmd) in cmds.into_iter().enumerate() {
        if k > 0 {
            tokio::time::sleep(t.gap).await;
        }
        let started = Instant::now();
        shared.restarts.lock().push(started);
        let error = execute(&cmd, t.timeout).await.err();
        let secs = started.elapsed().as_secs_f64();
        out.push(Run {
            cmd,
            started,
            secs,
            error,
        });
        // Every client back (or stopped for good, or the timeout) before the next command.
        let deadline = started + t.timeout;
        let back =
            || shared.online.load(Ordering::Relaxed) + shared.stopped.load(Ordering::Relaxed);
        while back() < clients && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    shared.restarting.store(false, Ordering::Relaxed);
    out
}

/// `sh -c cmd`, its output captured; an error with the output's tail unless it exited 0
/// within `timeout` (killed then).
async fn execute(cmd: &str, timeout: Duration) -> Result<(), String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(timeout, child).await {
        Err(_) => return Err(format!("{cmd:?} did not finish within {timeout:?}")),
        Ok(Err(e)) => return Err(format!("{cmd:?} could not start: {e}")),
        Ok(Ok(o)) => o,
    };
    if out.status.success() {
        return Ok(());
    }
    let all = [out.stdout, out.stderr].concat();
    let text = String::from_utf8_lossy(&all);
    let tail: String = text
        .trim()
        .chars()
        .rev()
        .take(300)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(format!("{cmd:?} failed ({}): {tail}", out.status))
}
