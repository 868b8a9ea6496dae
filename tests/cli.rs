//! The binary as an operator meets it: subcommands, config layering, SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

/// `version` and `--version` print the crate version and the commit built from (what git
/// says HEAD is here; "unknown" outside a checkout).
#[test]
fn version_prints_the_crate_version_and_commit() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let want = format!("switchyard {} (commit {commit})", env!("CARGO_PKG_VERSION"));
    for arg in ["version", "--version"] {
        let out = bin().arg(arg).output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want, "{arg}");
    }
}

/// `switchyard token` signs with the configured secret; the result verifies with it.
#[test]
fn token_subcommand_mints_verifiable_tokens() {
    let cfg = config_file("");
    let out = bin()
        .args([
            "token",
            "--user",
            "alice",
            "--ttl",
            "10m",
            "--info",
            r#"{"name":"A"}"#,
            "--config",
        ])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).unwrap();
    let v = switchyard::auth::Verifier::new(&switchyard::config::AuthConfig {
        token_hmac_secret: SECRET.into(),
        ..Default::default()
    })
    .unwrap();
    let c = v.connection(t.trim()).unwrap();
    assert_eq!(c.sub, "alice");
    assert_eq!(c.info.unwrap().get(), r#"{"name":"A"}"#);
    let exp = c.exp.unwrap();
    let now = switchyard::auth::unix_now();
    assert!(exp > now + 590 && exp <= now + 600);

    let out = bin()
        .args(["token", "--user", "bob", "--channel", "$chat:x", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    let t = String::from_utf8(out.stdout).unwrap();
    assert!(v.subscription(t.trim(), "bob", "c", "$chat:x").is_ok());

    let out = bin()
        .args(["token", "--user", "x", "--info", "{bad", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `--check-config` accepts the shipped config, refuses typos and bad values with a clear
/// line, and the environment overrides the file.
#[test]
fn check_config_and_layering() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let out = bin()
        .args(["serve", "--check-config", "--config", shipped])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = config_file("[log]\nlevle = \"debug\"");
    let out = bin()
        .args(["serve", "--check-config", "--config"])
        .arg(bad.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("levle"));

    let out = bin()
        .args(["serve", "--check-config", "--config", shipped])
        .env("SWITCHYARD_CLIENT__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("client.listen"));

    // Flags beat the environment.
    let out = bin()
        .args([
            "serve",
            "--check-config",
            "--config",
            shipped,
            "--client-listen",
            "127.0.0.1:9",
        ])
        .env("SWITCHYARD_CLIENT__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(out.status.success());

    let out = bin()
        .args(["serve", "--check-config", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The real binary: clients get 3001 on SIGTERM and the process exits 0; a numeric API key
/// from the environment is taken as a string.
#[tokio::test]
async fn sigterm_closes_clients_with_3001_and_exits_zero() {
    let cfg = config_file("");
    let mut p = Proc::start(cfg.path(), &[("SWITCHYARD_AUTH__API_KEY", "12345")]);
    let (st, _) = api_call(p.client_addr, "info", Some("12345"), "{}").await;
    assert_eq!(st, 200, "env overrides the file's api_key");
    let mut c = Client::open(&p.ws_url()).await;
    c.connect(&token("alice")).await;
    c.subscribe("chat:x").await;
    let (_, b) = api_call(
        p.client_addr,
        "publish",
        Some("12345"),
        &json!({"channel": "chat:x", "data": 1}).to_string(),
    )
    .await;
    assert_eq!(b["result"]["offset"], 1);
    p.signal("TERM");
    assert_eq!(c.closed().await, Closed::Code(3001, "shutdown".into()));
    assert_eq!(p.wait_exit(Duration::from_secs(15)), Some(0));
    let log = p.log.lock().unwrap().join("\n");
    assert!(
        log.contains("shutting down") && log.contains("SIGTERM"),
        "{log}"
    );

    // Restarted on the same data directory, it serves the same history.
    let data = p.data.take().expect("test-made data dir");
    let dir = data.path().display().to_string();
    let p2 = Proc::start(
        cfg.path(),
        &[
            ("SWITCHYARD_AUTH__API_KEY", "12345"),
            ("SWITCHYARD_NODE__DATA_DIR", dir.as_str()),
        ],
    );
    let (_, h) = api_call(
        p2.client_addr,
        "history",
        Some("12345"),
        &json!({"channel": "chat:x", "limit": -1}).to_string(),
    )
    .await;
    let pubs = h["result"]["publications"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(pubs.len(), 1, "{h}");
    assert_eq!(
        (pubs[0]["offset"].clone(), pubs[0]["data"].clone()),
        (json!(1), json!(1))
    );
}

/// JSON logs: one line per connection lifecycle event, carrying the connection id, client id,
/// user and (on disconnect) the close code; nothing per message at info level.
#[tokio::test]
async fn json_logs_one_line_per_lifecycle_event() {
    let cfg = config_file("");
    let p = Proc::start(cfg.path(), &[]);
    let mut c = Client::open(&p.ws_url()).await;
    let r = c.connect(&token("log-user")).await;
    let client_id = r["connect"]["client"].as_str().unwrap().to_string();
    c.subscribe("open:logs").await;
    for i in 0..20 {
        let body = json!({"channel": "open:logs", "data": {"i": i}}).to_string();
        let (st, _) = api_call(p.client_addr, "publish", Some(API_KEY), &body).await;
        assert_eq!(st, 200);
        c.publication("open:logs").await;
    }
    c.close().await;
    let lines = || -> Vec<serde_json::Value> {
        p.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    eventually("the disconnect is logged", || async {
        lines()
            .iter()
            .any(|v| v["fields"]["message"] == "client disconnected")
    })
    .await;
    let all = lines();
    let mine: Vec<&serde_json::Value> = all
        .iter()
        .filter(|v| v["fields"]["user"] == "log-user")
        .collect();
    assert_eq!(mine.len(), 2, "connected + disconnected only: {mine:?}");
    let (conn, disc) = (mine[0], mine[1]);
    assert_eq!(conn["fields"]["message"], "client connected");
    assert_eq!(conn["level"], "INFO");
    assert_eq!(conn["fields"]["client"], client_id.as_str());
    assert!(conn["fields"]["conn"].is_u64());
    assert_eq!(disc["fields"]["message"], "client disconnected");
    assert_eq!(disc["fields"]["conn"], conn["fields"]["conn"]);
    assert_eq!(disc["fields"]["client"], client_id.as_str());
    assert_eq!(disc["fields"]["code"], 1000, "the client's normal close");
    assert_eq!(disc["fields"]["channels"], 1);
    assert!(
        all.iter().all(|v| v["level"] != "INFO"
            || !v["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("publi")),
        "no info line per publication"
    );
}

/// `log.level` is checked against tracing's syntax, level by level: a bare word that is not a
/// level ("warning", which `EnvFilter` would take for a target, leaving the node silent) is
/// refused by `--check-config`, from the file and from the flag, with a line naming the key
/// and the valid levels; targets with levels pass.
#[test]
fn check_config_refuses_unknown_log_levels() {
    let check = |level: &str, flag: Option<&str>| {
        let cfg = config_file(&format!("[log]\nlevel = {level:?}"));
        let mut cmd = bin();
        cmd.args(["serve", "--check-config", "--config"])
            .arg(cfg.path());
        if let Some(f) = flag {
            cmd.args(["--log-level", f]);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    for bad in ["warning", "info,warning", "switchyard=warning", ""] {
        let (code, err) = check(bad, None);
        assert_eq!(code, Some(2), "{bad:?} was accepted");
        assert!(err.contains("log.level"), "{bad:?}: {err}");
        assert!(
            err.contains("trace, debug, info, warn, error, off"),
            "{bad:?}: {err}"
        );
    }
    let (_, err) = check("warning", None);
    assert!(err.contains("\"warning\" is not a level"), "{err}");
    for good in [
        "info",
        "WARN",
        "switchyard=debug,info",
        "info, openraft=debug",
    ] {
        assert_eq!(check(good, None), (Some(0), String::new()), "{good:?}");
    }
    // The flag is checked like the file.
    assert_eq!(check("info", Some("warning")).0, Some(2));
    assert_eq!(check("warning", Some("debug")).0, Some(0));
}

/// A SIGHUP that brings an unknown level is refused like a bad file (nothing changes, the
/// error names `log.level`); a good level afterwards is applied.
#[tokio::test]
async fn sighup_refuses_an_unknown_log_level() {
    let cfg = config_file("");
    let p = Proc::start(cfg.path(), &[]);
    let logged = |what: &'static str| {
        let log = p.log.clone();
        move || {
            let hit = log.lock().unwrap().iter().any(|l| l.contains(what));
            async move { hit }
        }
    };
    std::fs::write(
        cfg.path(),
        format!("{}\n[log]\nlevel = \"warning\"\n", base_toml()),
    )
    .unwrap();
    p.signal("HUP");
    eventually("the reload is refused", logged("reload refused")).await;
    let log = p.log.lock().unwrap().join("\n");
    assert!(
        log.contains("log.level") && log.contains("is not a level"),
        "{log}"
    );
    std::fs::write(
        cfg.path(),
        format!("{}\n[log]\nlevel = \"debug\"\n", base_toml()),
    )
    .unwrap();
    p.signal("HUP");
    eventually("the good level is applied", logged("reload done")).await;
}

/// JSON log lines of `p` at `level` from openraft's targets.
fn openraft_lines(p: &Proc, level: &str) -> Vec<String> {
    p.log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
                v["level"] == level
                    && v["target"]
                        .as_str()
                        .is_some_and(|t| t == "openraft" || t.starts_with("openraft::"))
            })
        })
        .cloned()
        .collect()
}

/// Waits until the node's `/readyz` answers 200: it has elected itself and caught up.
async fn ready(p: &Proc) {
    let admin = p.admin_addr;
    eventually("the node is ready", || async move {
        http_get(admin, "/readyz").await.0 == 200
    })
    .await;
}

/// The default filter keeps openraft at `warn`: a node electing itself at the default level
/// logs no openraft info line (openraft's state dumps run to ~2,300 characters), and one whose
/// `log.level` names openraft gets them.
#[tokio::test]
async fn openraft_info_lines_only_when_asked_for() {
    let cfg = config_file("");
    let p = Proc::start(cfg.path(), &[]);
    ready(&p).await;
    let q = Proc::start(
        config_file("[log]\nlevel = \"info,openraft=info\"").path(),
        &[],
    );
    ready(&q).await;
    eventually("openraft logs at info when asked to", || {
        let n = openraft_lines(&q, "INFO").len();
        async move { n > 0 }
    })
    .await;
    // By now the first node has been up at least as long as the second needed to log them.
    assert_eq!(openraft_lines(&p, "INFO"), Vec::<String>::new());
    assert!(
        p.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("\"level\":\"INFO\"")),
        "the node still logs at info"
    );
}

/// Runs `cmd` with stdout a pipe whose reading end is already closed (as after `| head -1`
/// has taken its line), stderr captured.
fn output_with_closed_stdout(cmd: &mut Command) -> std::process::Output {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // O_CLOEXEC: no other process the tests spawn meanwhile may inherit the reading end.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    cmd.stdout(write)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

/// Every subcommand that prints exits quietly when its stdout has been closed: the commands
/// of the binary finish their work and exit 0; `bench`, whose report cannot be printed,
/// exits 141 (as if killed by SIGPIPE). None prints a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stdout_is_not_a_panic() {
    let cfg = config_file("");
    let p = Proc::start(cfg.path(), &[]);
    ready(&p).await;
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("http://{}", p.admin_addr);
    let cfg_path = cfg.path().to_str().unwrap().to_string();
    let out_dir = dir.path().to_str().unwrap().to_string();
    let runs: Vec<(Vec<&str>, i32)> = vec![
        (vec!["version"], 0),
        (vec!["token", "--user", "u", "--config", &cfg_path], 0),
        (vec!["serve", "--check-config", "--config", &cfg_path], 0),
        (
            vec![
                "cluster", "status", "--admin", &admin, "--config", &cfg_path,
            ],
            0,
        ),
        (vec!["cert", "ca", "--out", &out_dir], 0),
    ];
    for (words, want) in runs {
        let out = tokio::task::block_in_place(|| output_with_closed_stdout(bin().args(&words)));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{words:?}: {err}");
        assert_eq!(out.status.code(), Some(want), "{words:?}: {err}");
    }
    // The work was done although nothing could be printed.
    assert!(dir.path().join("ca.pem").exists() && dir.path().join("ca.key").exists());

    let ws = p.ws_url();
    let words = [
        "bench",
        "connect",
        "--connections",
        "2",
        "--rate",
        "100",
        "--hold",
        "100ms",
        "--channel",
        "chat:pipe",
        "--quiet",
        "--token-secret",
        SECRET,
        "--url",
        &ws,
    ];
    let out = tokio::task::block_in_place(|| output_with_closed_stdout(bin().args(words)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "bench: {err}");
    assert_eq!(out.status.code(), Some(141), "bench: {err}");
}

/// Membership refusals an operator can act on, through `switchyard cluster` on one node: a
/// 401 from the admin listener names `admin.api_key` and the header, in its body and in the
/// CLI's message (no key sent, or a wrong one); removing or promoting a node that is not a
/// member fails with a message saying so, instead of exiting 0.
#[tokio::test]
async fn cluster_refusals_name_the_key_and_the_member() {
    let cfg = config_file("");
    let p = Proc::start(cfg.path(), &[("SWITCHYARD_ADMIN__API_KEY", "admin-secret")]);
    ready(&p).await;

    let (st, body) = http_post(p.admin_addr, "/cluster/remove", None, br#"{"id":42}"#).await;
    assert_eq!(st, 401);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("admin.api_key") && msg.contains("X-API-Key"),
        "{body}"
    );

    let admin = format!("http://{}", p.admin_addr);
    let cli = |key: Option<&str>, words: &[&str]| {
        let mut cmd = bin();
        cmd.args(["cluster"])
            .args(words)
            .args(["--admin", &admin, "--config"])
            .arg(cfg.path())
            .env_remove("SWITCHYARD_ADMIN__API_KEY");
        if let Some(k) = key {
            cmd.env("SWITCHYARD_ADMIN__API_KEY", k);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = cli(None, &["remove", "--id", "42"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("admin.api_key") && err.contains("X-API-Key") && err.contains("none was sent"),
        "{err}"
    );
    let (code, err) = cli(Some("wrong"), &["remove", "--id", "42"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("refused the admin.api_key"), "{err}");

    for op in ["remove", "promote"] {
        let (code, err) = cli(Some("admin-secret"), &[op, "--id", "42"]);
        assert_eq!(code, Some(1), "{op}: {err}");
        assert!(err.contains("node 42 is not a member"), "{op}: {err}");
    }
    // The node itself is a member: status still works, and the cluster is unchanged.
    let (code, err) = cli(None, &["status"]);
    assert_eq!((code, err.as_str()), (Some(0), ""));
}

/// The secrets of a generated config: `(auth.token_hmac_secret, auth.api_key, admin.api_key)`.
fn generated_secrets(text: &str) -> (String, String, String) {
    let cfg = switchyard::config::Config::from_toml(text).unwrap();
    (
        cfg.auth.token_hmac_secret,
        cfg.auth.api_key,
        cfg.admin.api_key,
    )
}

/// `genconfig` prints the shipped config with fresh secrets each time (never the examples),
/// its output passes `serve --check-config`, and `--output` writes a private file that it
/// refuses to overwrite without `--force`.
#[test]
fn genconfig_makes_fresh_valid_configs_and_keeps_existing_files() {
    let run = || {
        let out = bin().arg("genconfig").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let (a, b) = (run(), run());
    let (sa, sb) = (generated_secrets(&a), generated_secrets(&b));
    assert_ne!(sa.0, sb.0, "token secret repeated");
    assert_ne!(sa.1, sb.1, "API key repeated");
    assert_ne!(sa.2, sb.2, "admin key repeated");
    for s in [&sa.0, &sa.1, &sa.2] {
        assert!(s.len() >= 48 && !s.contains("example"), "weak secret {s:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let out = bin()
        .args(["genconfig", "--data-dir", "/var/lib/switchyard", "--output"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the file holds secrets");
    let out = bin()
        .args(["serve", "--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let first = std::fs::read_to_string(&path).unwrap();
    assert!(first.contains("data_dir = \"/var/lib/switchyard\""));

    // An existing file is kept, byte for byte, and the refusal says why.
    let out = bin().args(["genconfig", "-o"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
    // --force replaces it with new secrets.
    let out = bin()
        .args(["genconfig", "--force", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let second = std::fs::read_to_string(&path).unwrap();
    assert_ne!(generated_secrets(&second).0, generated_secrets(&first).0);
}

/// `completions bash` is a script bash accepts that completes every subcommand; the other
/// shells get a script too, and an unknown shell is refused.
#[test]
fn completions_for_each_shell() {
    let out = bin().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let script = String::from_utf8(out.stdout).unwrap();
    for sub in [
        "serve",
        "token",
        "cluster",
        "cert",
        "genconfig",
        "completions",
    ] {
        assert!(script.contains(sub), "bash completion lacks {sub}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.bash");
    std::fs::write(&file, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(check.status.success(), "bash -n: {check:?}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("genconfig"),
            "{shell}"
        );
    }
    let out = bin().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The man page is roff with a NAME section that `man -l` renders, and `manpage --dir`
/// writes a page for every subcommand the main page refers to.
#[test]
fn man_pages_render_and_cover_the_subcommands() {
    let out = bin().arg("manpage").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let roff = String::from_utf8(out.stdout).unwrap();
    assert!(roff.contains(".TH switchyard 1"), "{roff}");
    assert!(roff.contains(".SH NAME\nswitchyard \\- "), "{roff}");

    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["manpage", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let main = std::fs::read_to_string(dir.path().join("switchyard.1")).unwrap();
    assert_eq!(main.trim_end(), roff.trim_end());
    // Every "switchyard-x(1)" the main page names exists; the hidden manpage has none.
    let mut named = 0;
    for sub in main.split("switchyard\\-").skip(1) {
        let Some((name, _)) = sub.split_once("(1)") else {
            continue;
        };
        assert!(
            dir.path().join(format!("switchyard-{name}.1")).exists(),
            "{name}"
        );
        named += 1;
    }
    assert!(named >= 6, "{main}");
    assert!(!dir.path().join("switchyard-manpage.1").exists());

    // man(1) renders it (man-db: `-l` reads a local file), when installed.
    if Command::new("man").arg("--version").output().is_ok() {
        let out = Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(dir.path().join("switchyard-genconfig.1"))
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("NAME") && text.contains("--output"), "{text}");
    } else {
        eprintln!("man is not installed: rendering not checked (the roff is)");
    }
}

/// `/proc/<pid>/task/<tid>/{file}` of each thread of `pid` named `name`.
fn thread_files(pid: u32, name: &str, file: &str) -> Vec<String> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            out.push(std::fs::read_to_string(dir.join(file)).unwrap_or_default());
        }
    }
    out
}

/// The fields of a `/proc` `stat` line after the command name: index 0 is field 3 (state).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat.rsplit_once(')')?.1.split_whitespace().collect())
}

/// The scheduling policy and real-time priority of each thread of `pid` named `name`, from
/// `/proc/<pid>/task/<tid>/stat` (fields 41 and 40).
fn thread_policies(pid: u32, name: &str) -> Vec<(u32, u32)> {
    thread_files(pid, name, "stat")
        .iter()
        .filter_map(|stat| {
            let f = stat_fields(stat)?;
            Some((f[38].parse().unwrap(), f[37].parse().unwrap()))
        })
        .collect()
}

/// Whether the node's output so far has a line containing `needle`.
fn logged(p: &Proc, needle: &str) -> bool {
    p.log.lock().unwrap().iter().any(|l| l.contains(needle))
}

/// `cluster.realtime_priority` puts every thread of the Raft runtime (workers and the
/// blocking threads that flush the store) on SCHED_RR at that priority, and the write path
/// works on it; at 0 they stay on normal scheduling. Without the privilege (not root) the
/// node says so once and runs at normal priority.
#[tokio::test]
async fn realtime_priority_applies_to_the_raft_threads() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_RR: u32 = 2;
    let cfg = config_file("");
    for prio in [0u32, 7] {
        let p = Proc::start(
            cfg.path(),
            &[("SWITCHYARD_CLUSTER__REALTIME_PRIORITY", &prio.to_string())],
        );
        // Publications make the store flush, on the runtime's blocking threads.
        for i in 0..5 {
            let body = json!({"channel": "open:rt", "data": {"i": i}}).to_string();
            let (st, _) = api_call(p.client_addr, "publish", Some(API_KEY), &body).await;
            assert_eq!(st, 200);
        }
        let threads = thread_policies(p.child.id(), "raft");
        assert!(
            threads.len() >= 2,
            "workers and a blocking thread: {threads:?}"
        );
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        if prio == 0 || !root {
            assert!(
                threads.iter().all(|t| *t == (SCHED_OTHER, 0)),
                "{threads:?}"
            );
        } else {
            assert!(
                threads.iter().all(|t| *t == (SCHED_RR, prio)),
                "{threads:?}"
            );
        }
        let warned = p
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("cluster.realtime_priority"))
            .count();
        assert_eq!(
            warned,
            usize::from(prio != 0 && !root),
            "one warning without the privilege"
        );
        // The API runtime's thread has the same priority; the client runtime's are left alone.
        let api = thread_policies(p.child.id(), "api");
        assert!(!api.is_empty(), "an API runtime thread");
        assert!(
            api.iter().all(|t| *t == threads[0]),
            "{api:?} vs {threads:?}"
        );
        let workers = thread_policies(p.child.id(), "tokio-rt-worker");
        assert!(!workers.is_empty() && workers.iter().all(|t| t.0 == SCHED_OTHER));
    }
}

/// The fair scheduler's time slice (ns, `se.slice` in /proc's sched) of each of the
/// process's threads named `name`.
fn thread_slices(pid: u32, name: &str) -> Vec<u64> {
    thread_files(pid, name, "sched")
        .iter()
        .map(|sched| {
            sched
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == "se.slice").then(|| v.trim().parse::<u64>().ok())?
                })
                .expect("se.slice in /proc/<pid>/task/<tid>/sched")
        })
        .collect()
}

/// `cluster.raft_slice` (100us by default) is the fair-scheduler time slice of every thread
/// of the Raft and API runtimes, the store's blocking threads included, while the client
/// runtime's workers keep the kernel's default; 0 leaves the Raft threads at the default too.
#[tokio::test]
async fn the_raft_and_api_threads_ask_for_a_short_time_slice() {
    let cfg = config_file("");
    for (setting, want) in [
        (None, Some(100_000u64)),
        (Some("2ms"), Some(2_000_000)),
        (Some("0"), None),
    ] {
        let p = start_publishing(cfg.path(), "SWITCHYARD_CLUSTER__RAFT_SLICE", setting).await;
        let pid = p.child.id();
        let workers = thread_slices(pid, "tokio-rt-worker");
        assert!(!workers.is_empty(), "client runtime workers");
        let default = workers[0];
        assert!(
            workers.iter().all(|s| *s == default) && default != 100_000 && default != 2_000_000,
            "the client runtime keeps the kernel's default: {workers:?}"
        );
        let raft = thread_slices(pid, "raft");
        let api = thread_slices(pid, "api");
        assert!(raft.len() >= 2, "workers and a blocking thread: {raft:?}");
        assert!(!api.is_empty(), "an API runtime thread");
        let want = want.unwrap_or(default);
        assert!(
            raft.iter().chain(&api).all(|s| *s == want),
            "{setting:?}: raft {raft:?}, api {api:?}, want {want}"
        );
        assert!(!logged(&p, "cluster.raft_slice"), "no warning");
    }
}

/// Starts a node with the environment variable `key` set to `setting` (none: unset) and
/// publishes a few times, so that the store has flushed (on the Raft runtime's blocking
/// threads) and sled has started its threads.
async fn start_publishing(cfg: &std::path::Path, key: &str, setting: Option<&str>) -> Proc {
    let env: Vec<(&str, &str)> = setting.map(|s| vec![(key, s)]).unwrap_or_default();
    let p = Proc::start(cfg, &env);
    for i in 0..5 {
        let body = json!({"channel": "open:threads", "data": {"i": i}}).to_string();
        let (st, _) = api_call(p.client_addr, "publish", Some(API_KEY), &body).await;
        assert_eq!(st, 200);
    }
    p
}

/// The nice value in a `/proc` `stat` line (field 19).
fn stat_nice(stat: &str) -> Option<i32> {
    stat_fields(stat)?.get(16)?.parse().ok()
}

/// The nice value of each thread of `pid` named `name`.
fn thread_nices(pid: u32, name: &str) -> Vec<i32> {
    thread_files(pid, name, "stat")
        .iter()
        .filter_map(|stat| stat_nice(stat))
        .collect()
}

/// `cluster.client_nice`: the client runtime's threads run that much nicer than the process,
/// while the write path's threads (Raft, API, the store's flushes and sled's own threads) keep
/// its priority, whichever thread started them; at 0 every thread keeps it.
#[tokio::test]
async fn client_threads_run_nicer_than_the_write_path() {
    let cfg = config_file("");
    for (setting, by) in [(None, 10), (Some("3"), 3), (Some("0"), 0)] {
        let p = start_publishing(cfg.path(), "SWITCHYARD_CLUSTER__CLIENT_NICE", setting).await;
        let pid = p.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let base = stat_nice(&stat).expect("the process's nice value");
        let clients = thread_nices(pid, "tokio-rt-worker");
        assert!(!clients.is_empty(), "client runtime workers");
        let want = (base + by).min(19);
        assert!(
            clients.iter().all(|n| *n == want),
            "{setting:?}: clients {clients:?}, want {want}"
        );
        let mut write_path = Vec::new();
        for name in ["raft", "api", "log flusher"] {
            let nices = thread_nices(pid, name);
            assert!(!nices.is_empty(), "threads named {name}");
            write_path.extend(nices);
        }
        write_path.extend((0..16).flat_map(|i| thread_nices(pid, &format!("sled-io-{i}"))));
        assert!(
            write_path.iter().all(|n| *n == base),
            "{setting:?}: write path {write_path:?}, process {base}"
        );
        assert!(!logged(&p, "cluster.client_nice"), "no warning");
    }
}

/// CPU time (ns, from schedstat) of the process's threads named `name`.
fn thread_cpu_ns(pid: u32, name: &str) -> u64 {
    thread_files(pid, name, "schedstat")
        .iter()
        .filter_map(|st| st.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Sends `req` on `s` and reads one HTTP/1.1 response (Content-Length bodies); its status.
async fn keep_alive_exchange(s: &mut tokio::net::TcpStream, req: &[&[u8]]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for part in req {
        s.write_all(part).await.unwrap();
        s.flush().await.unwrap();
    }
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return head[9..12].parse().unwrap();
        }
    }
}

/// A backend's plain server API connection is served on the node's API runtime (its own
/// thread, named `api`), not among the client connections' tasks: a keep-alive connection's
/// publishes cost that thread CPU and the client runtime's workers (next to) none. A request
/// whose first bytes arrive split stays where it was accepted and is answered too.
#[tokio::test]
async fn server_api_connections_are_served_on_the_api_runtime() {
    let cfg = config_file("");
    let p = Proc::start(cfg.path(), &[]);
    let pid = p.child.id();
    let mut s = tokio::net::TcpStream::connect(p.client_addr).await.unwrap();
    let request = |i: u32| {
        let body = json!({"channel": "open:api-rt", "data": {"i": i}}).to_string();
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(
        keep_alive_exchange(&mut s, &[request(0).as_bytes()]).await,
        200
    );
    let (api0, workers0) = (
        thread_cpu_ns(pid, "api"),
        thread_cpu_ns(pid, "tokio-rt-worker"),
    );
    for i in 1..=300 {
        assert_eq!(
            keep_alive_exchange(&mut s, &[request(i).as_bytes()]).await,
            200
        );
    }
    let api = thread_cpu_ns(pid, "api") - api0;
    let workers = thread_cpu_ns(pid, "tokio-rt-worker") - workers0;
    eprintln!("300 API requests: api thread {api} ns, client workers {workers} ns");
    assert!(
        api > 2 * workers && api > 0,
        "300 API requests: api thread {api} ns, client workers {workers} ns"
    );

    // Split first bytes: served on the client runtime, answered the same.
    let mut split = tokio::net::TcpStream::connect(p.client_addr).await.unwrap();
    let r = request(301);
    let (a, b) = r.as_bytes().split_at(3);
    assert_eq!(keep_alive_exchange(&mut split, &[a, b]).await, 200);
    let (st, body) = api_call(
        p.client_addr,
        "history",
        Some(API_KEY),
        &json!({"channel": "open:api-rt", "limit": 1, "reverse": true}).to_string(),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        body["result"]["publications"][0]["data"]["i"], 301,
        "{body}"
    );
}
