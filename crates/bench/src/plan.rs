//! `switchyard bench run PLAN.toml`: scenarios one after another, each with the command-line
//! words `switchyard bench` takes, and thresholds over their report figures that decide the
//! exit code. The plan is read and every scenario's arguments and thresholds checked before
//! anything runs (a bad plan exits 2); then each scenario runs and prints its report, and a
//! verdict table says which threshold failed and by how much (exit 1), or that all held (0).
//!
//! ```toml
//! target = ["--channel", "chat:plan"]          # words added to every scenario
//! [[scenario]]
//! name = "fanout 50"                           # optional: shown in the verdicts
//! run = ["fanout", "--subscribers", "50", "--rate", "100", "--duration", "30s"]
//! thresholds = ["delivery_p99 < 100ms", "loss == 0"]
//! ```
//!
//! A scenario's words are its own `run`, then the plan's `target`, then the words given after
//! the plan on the command line; an option given later replaces the same option given earlier
//! (so `--url` on the command line replaces the plan's).
//!
//! A `reconnect` scenario may carry `restart_cmd = ["…", …]`: the commands it runs mid-run
//! (its `--restart-cmd` words). `bench run --restart-cmd CMD` (repeatable, before PLAN)
//! replaces them in every scenario that has the key; a scenario whose key is left empty
//! (`restart_cmd = []`) needs it, else the plan is refused.

pub mod threshold;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Hooks, Report, Scenario};
use threshold::{Threshold, Verdict, shown};

/// Arguments of `switchyard bench run`.
#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct RunArgs {
    /// Write the verdicts and every scenario's report as one JSON document to this file
    /// (give it before PLAN).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Restart commands (`sh -c`) for the plan's scenarios that have a `restart_cmd` key,
    /// replacing the plan's (repeat for several; give it before PLAN).
    #[arg(long = "restart-cmd")]
    #[serde(default)]
    pub restart_cmds: Vec<String>,
    /// The plan (TOML): `target` words, then `[[scenario]]` tables with `run` and `thresholds`.
    pub plan: PathBuf,
    /// Options added to every scenario after the plan's `target` (they replace the same
    /// options there): `--url`, `--api`, `--token-secret`, `--quiet`, …
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub words: Vec<String>,
}

/// The plan file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(default)]
    target: Vec<String>,
    #[serde(default)]
    scenario: Vec<StepFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    name: Option<String>,
    run: Vec<String>,
    #[serde(default)]
    thresholds: Vec<String>,
    /// `--restart-cmd` commands (`reconnect` only); empty = given on the command line.
    restart_cmd: Option<Vec<String>>,
}

/// One scenario of a plan, checked.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its name (the plan's, else `<n>-<scenario>`).
    pub name: String,
    /// What to run.
    pub scenario: Scenario,
    /// Its thresholds.
    pub thresholds: Vec<Threshold>,
}

/// Reads and checks a plan: every scenario's words parse, every threshold names a figure that
/// scenario reports, with a unit that fits. `words` are the command line's after the plan;
/// `restart_cmds` its `--restart-cmd`s (for the scenarios with a `restart_cmd` key).
pub fn load(text: &str, words: &[String], restart_cmds: &[String]) -> anyhow::Result<Vec<Step>> {
    let file: PlanFile = toml::from_str(text).context("reading the plan")?;
    if file.scenario.is_empty() {
        bail!("the plan has no [[scenario]]");
    }
    let mut out = Vec::new();
    for (n, s) in file.scenario.into_iter().enumerate() {
        let kind = s.run.first().cloned().unwrap_or_default();
        let name = s.name.unwrap_or_else(|| format!("{}-{kind}", n + 1));
        if matches!(kind.as_str(), "worker" | "run") || kind.is_empty() {
            bail!(
                "scenario {name}: run must start with connect, fanout, publish, churn, reconnect or soak"
            );
        }
        let mut restart = Vec::new();
        if let Some(plan_cmds) = &s.restart_cmd {
            let cmds = if restart_cmds.is_empty() {
                plan_cmds
            } else {
                restart_cmds
            };
            if cmds.is_empty() {
                bail!(
                    "scenario {name}: needs a restart command: give --restart-cmd CMD before the plan"
                );
            }
            if kind != "reconnect" {
                bail!("scenario {name}: restart_cmd is for reconnect scenarios");
            }
            for c in cmds {
                restart.extend(["--restart-cmd".to_string(), c.clone()]);
            }
        }
        let all = merge(&[&s.run, &file.target, words]);
        let all: Vec<String> = all.into_iter().chain(restart).collect();
        let scenario = crate::parse(&all).map_err(|e| anyhow!("scenario {name}: {e}"))?;
        let known = threshold::figures(&kind);
        let thresholds = s
            .thresholds
            .iter()
            .map(|t| Threshold::parse(t, &known))
            .collect::<anyhow::Result<Vec<_>>>()
            .with_context(|| format!("scenario {name}"))?;
        out.push(Step {
            name,
            scenario,
            thresholds,
        });
    }
    Ok(out)
}

/// The option an argument word names (`--url` of `--url=x`), if it is one.
fn option(word: &str) -> Option<&str> {
    word.starts_with("--")
        .then(|| word.split('=').next().unwrap_or(word))
}

/// Joins groups of words; an option in a later group removes the same option (and its value:
/// the next word when it is not an option) from the earlier ones.
fn merge(groups: &[&[String]]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for group in groups {
        let given: HashSet<&str> = group.iter().filter_map(|w| option(w)).collect();
        let mut kept = Vec::new();
        let mut i = 0;
        while i < out.len() {
            let w = &out[i];
            let valued = !w.contains('=') && out.get(i + 1).is_some_and(|v| option(v).is_none());
            let span = if option(w).is_some() && valued { 2 } else { 1 };
            if option(w).is_some_and(|o| given.contains(o)) {
                i += span;
                continue;
            }
            kept.extend(out[i..i + span].iter().cloned());
            i += span;
        }
        out = kept;
        out.extend(group.iter().cloned());
    }
    out
}

/// A run of a plan: each scenario's report and the verdicts.
#[derive(Debug, Default)]
pub struct Outcome {
    /// (name, report) of each scenario that ran.
    pub reports: Vec<(String, Report)>,
    /// Every threshold, judged.
    pub verdicts: Vec<Verdict>,
    /// A scenario that could not run: (name, error).
    pub error: Option<(String, String)>,
}

impl Outcome {
    /// Whether every threshold held and every scenario ran and passed its own checks.
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && self.verdicts.iter().all(|v| v.ok)
            && self.reports.iter().all(|(_, r)| r.passed())
    }

    /// The verdict table: one line a threshold, then the scenarios whose own checks failed.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let failed = self.verdicts.iter().filter(|v| !v.ok).count();
        let _ = writeln!(
            out,
            "\nswitchyard bench run: {} threshold(s), {failed} failed",
            self.verdicts.len()
        );
        let rows: Vec<[String; 5]> = self
            .verdicts
            .iter()
            .map(|v| {
                [
                    v.scenario.clone(),
                    v.threshold.clone(),
                    v.measured.map_or_else(|| "-".into(), |m| shown(m, &v.unit)),
                    shown(v.limit, &v.unit),
                    v.result(),
                ]
            })
            .collect();
        let head = ["scenario", "threshold", "measured", "limit", "result"].map(String::from);
        let width = |c: usize| {
            std::iter::once(&head)
                .chain(&rows)
                .map(|r| r[c].len())
                .max()
                .unwrap_or(0)
        };
        let w = [width(0), width(1), width(2), width(3)];
        for r in std::iter::once(&head).chain(&rows) {
            let _ = writeln!(
                out,
                "  {:<a$}  {:<b$}  {:>c$}  {:>d$}  {}",
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                a = w[0],
                b = w[1],
                c = w[2],
                d = w[3]
            );
        }
        for (name, r) in &self.reports {
            for c in r.checks.iter().filter(|c| !c.ok) {
                let _ = writeln!(out, "  {name}: check failed: {} ({})", c.name, c.detail);
            }
        }
        if let Some((name, e)) = &self.error {
            let _ = writeln!(out, "  {name}: could not run: {e}");
        }
        let verdict = if self.passed() { "PASSED" } else { "FAILED" };
        let _ = writeln!(out, "  plan {verdict}");
        out
    }

    /// The JSON document: verdicts, each scenario's report, whether the plan passed.
    pub fn to_json(&self) -> Value {
        json!({
            "passed": self.passed(),
            "verdicts": self.verdicts,
            "scenarios": self.reports.iter().map(|(name, r)| json!({
                "name": name,
                "passed": r.passed(),
                "report": r.to_json(),
            })).collect::<Vec<_>>(),
            "error": self.error.as_ref().map(|(name, e)| json!({"scenario": name, "error": e})),
        })
    }
}

/// Runs the steps one after another, printing each report as it ends; stops at a scenario
/// that cannot run.
pub async fn run(steps: Vec<Step>, hooks: Hooks) -> Outcome {
    let mut out = Outcome::default();
    for step in steps {
        let target = crate::target_of(&step.scenario);
        match crate::run(step.scenario, hooks).await {
            Ok(report) => {
                print!("{}", report.table());
                if let Some(t) = target {
                    if let Err(e) = crate::write_outputs(&report, &t) {
                        eprintln!("switchyard bench: {e:#}");
                    }
                }
                let judged = step.thresholds.iter().map(|t| t.judge(&step.name, &report));
                out.verdicts.extend(judged);
                out.reports.push((step.name, report));
            }
            Err(e) => {
                out.error = Some((step.name, format!("{e:#}")));
                break;
            }
        }
    }
    out
}

/// `switchyard bench run`: exit 0 when every threshold held and every scenario passed its
/// checks, 1 when one did not, 2 when the plan is bad or a scenario could not run.
pub fn main(a: RunArgs, hooks: Hooks) -> std::process::ExitCode {
    use std::process::ExitCode;
    let steps = std::fs::read_to_string(&a.plan)
        .with_context(|| format!("reading {}", a.plan.display()))
        .and_then(|text| load(&text, &a.words, &a.restart_cmds));
    let steps = match steps {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchyard bench run: {}: {e:#}", a.plan.display());
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = rt.block_on(run(steps, hooks));
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    print!("{}", outcome.table());
    if let Some(p) = &a.json {
        let written = serde_json::to_vec_pretty(&outcome.to_json())
            .map_err(anyhow::Error::from)
            .and_then(|b| std::fs::write(p, b).map_err(Into::into));
        if let Err(e) = written {
            eprintln!("switchyard bench run: writing {}: {e:#}", p.display());
            return ExitCode::from(2);
        }
    }
    match (&outcome.error, outcome.passed()) {
        (Some(_), _) => ExitCode::from(2),
        (None, true) => ExitCode::SUCCESS,
        (None, false) => ExitCode::from(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn later_options_replace_earlier_ones() {
        let all = merge(&[
            &words("fanout --rate 5 --quiet --url a"),
            &words("--url b --channel c"),
            &words("--url=d --rate 7"),
        ]);
        assert_eq!(all, words("fanout --quiet --channel c --url=d --rate 7"));
    }

    #[test]
    fn a_bad_plan_is_refused_before_anything_runs() {
        let ok =
            "[[scenario]]\nrun = [\"fanout\", \"--token\", \"t\"]\nthresholds = [\"loss == 0\"]";
        assert_eq!(load(ok, &[], &[]).unwrap().len(), 1);
        let unknown = ok.replace("loss", "lossage");
        let e = load(&unknown, &[], &[]).unwrap_err();
        assert!(format!("{e:#}").contains("no figure \"lossage\""), "{e:#}");
        assert!(load(&ok.replace("--token", "--tokne"), &[], &[]).is_err());
        assert!(load(&ok.replace("fanout", "worker"), &[], &[]).is_err());
        assert!(load("", &[], &[]).is_err());
        assert!(load(&format!("{ok}\nbogus = 1"), &[], &[]).is_err());
    }

    #[test]
    fn restart_commands_come_from_the_plan_or_the_command_line() {
        let plan = |cmds: &str| {
            format!(
                "[[scenario]]\nrun = [\"reconnect\", \"--token\", \"t\"]\nrestart_cmd = [{cmds}]\nthresholds = [\"back_max < 30s\"]"
            )
        };
        let cmds = |steps: Vec<Step>| match &steps[0].scenario {
            Scenario::Reconnect(a) => a.restart_cmds.clone(),
            _ => unreachable!(),
        };
        let given = load(&plan("\"a 1\", \"b\""), &[], &[]).unwrap();
        assert_eq!(cmds(given), ["a 1", "b"]);
        let replaced = load(&plan("\"a\""), &[], &["c, d".into()]).unwrap();
        assert_eq!(cmds(replaced), ["c, d"]);
        let e = load(&plan(""), &[], &[]).unwrap_err();
        assert!(format!("{e:#}").contains("--restart-cmd"), "{e:#}");
        assert_eq!(cmds(load(&plan(""), &[], &["x".into()]).unwrap()), ["x"]);
        let fanout = plan("\"a\"")
            .replace("reconnect", "fanout")
            .replace("back_max < 30s", "loss == 0");
        assert!(load(&fanout, &[], &[]).is_err());
    }
}
