//! Compatibility with the real client SDKs: centrifuge-js (npm `centrifuge` + `ws`) and
//! centrifuge-python, each driven by a script under tests/compat/ against the built binary.
//!
//! `scripts/test.sh` installs the SDKs (npm ci, a Python venv); run it rather than bare
//! `cargo test`, or these tests fail with a line saying what is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs one SDK script against a fresh node (started with `envs`) and asserts it exits 0.
fn run_sdk_script(program: &Path, script: &Path, prefix: &str, envs: &[(&str, &str)]) {
    run_sdk_script_with(program, script, prefix, envs, "", &[]);
}

/// [`run_sdk_script`] with `extra` TOML tables appended to the node's config and
/// `script_envs` set for the script itself.
fn run_sdk_script_with(
    program: &Path,
    script: &Path,
    prefix: &str,
    envs: &[(&str, &str)],
    extra: &str,
    script_envs: &[(&str, &str)],
) {
    assert!(
        program.exists() || program.components().count() == 1,
        "{} is missing: run scripts/test.sh, which installs the SDKs",
        program.display()
    );
    let cfg = config_file(extra);
    let p = Proc::start(cfg.path(), envs);
    let mut child = Command::new(program)
        .arg(script)
        .env("SY_WS_URL", p.ws_url())
        .env("SY_API_URL", format!("http://{}/api", p.client_addr))
        .env("SY_API_KEY", API_KEY)
        .env("SY_ADMIN_URL", format!("http://{}", p.admin_addr))
        .env("SY_BIN", env!("CARGO_BIN_EXE_switchyard"))
        .env("SY_CONFIG", cfg.path())
        .env("SY_CHANNEL_PREFIX", prefix)
        .envs(script_envs.iter().copied())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (run scripts/test.sh)",
                program.display()
            )
        });
    let status = wait_child(
        &mut child,
        &script.display().to_string(),
        Duration::from_secs(90),
    );
    assert!(
        status.success(),
        "{} failed ({status}); server log:\n{}",
        script.display(),
        p.log.lock().unwrap().join("\n")
    );
}

#[test]
fn centrifuge_js() {
    let dir = root().join("tests/compat/js");
    assert!(
        dir.join("node_modules/centrifuge").exists(),
        "centrifuge-js is not installed: run scripts/test.sh (npm ci in tests/compat/js)"
    );
    run_sdk_script(Path::new("node"), &dir.join("compat.mjs"), "chat:js-", &[]);
}

/// Server pings every second (pong within 0.8 s): the Protobuf runs stay connected through a
/// few (phase h3), so the SDK must answer Protobuf pings (an empty Reply) with pongs (an empty
/// Command) or be cut off with 3012, which the script's last check catches.
const FAST_PINGS: [(&str, &str); 2] = [
    ("SWITCHYARD_CLIENT__PING_INTERVAL", "1s"),
    ("SWITCHYARD_CLIENT__PONG_TIMEOUT", "800ms"),
];

/// centrifuge-js's Protobuf build (`centrifuge/build/protobuf`) in Node: the same scenario as
/// [`centrifuge_js`], payloads as bytes, plus binary payloads received unchanged, with
/// [`FAST_PINGS`].
#[test]
fn centrifuge_js_protobuf() {
    let dir = root().join("tests/compat/js");
    assert!(
        dir.join("node_modules/centrifuge/build/protobuf").exists(),
        "centrifuge-js is not installed: run scripts/test.sh (npm ci in tests/compat/js)"
    );
    let pb = [("SY_PROTOBUF", "1")];
    run_sdk_script_with(
        Path::new("node"),
        &dir.join("compat.mjs"),
        "chat:jspb-",
        &FAST_PINGS,
        "",
        &pb,
    );
}

/// centrifuge-js with `delta: 'fossil'` (tests/compat/js/delta.mjs): 1,000 publications of a
/// slowly changing ~4 KB document, each reconstructed exactly by the SDK (the first in full,
/// the rest from Fossil deltas), and far fewer bytes on the wire than a plain subscriber's;
/// the script prints the figures (`DELTA-RESULT`).
#[test]
fn centrifuge_js_delta() {
    let dir = root().join("tests/compat/js");
    assert!(
        dir.join("node_modules/centrifuge").exists(),
        "centrifuge-js is not installed: run scripts/test.sh (npm ci in tests/compat/js)"
    );
    let ns = "[[channel.namespaces]]\nname = \"delta\"\nhistory_size = 10\nhistory_ttl = \"5m\"\n\
              allow_subscribe_for_client = true\nallowed_delta_types = [\"fossil\"]\n";
    let script = dir.join("delta.mjs");
    run_sdk_script_with(Path::new("node"), &script, "delta:js-", &[], ns, &[]);
}

/// [`centrifuge_js_delta`] with centrifuge-js's Protobuf build: deltas are the Fossil deltas of
/// the payloads' bytes, applied by the SDK to the bytes it kept.
#[test]
fn centrifuge_js_delta_protobuf() {
    let dir = root().join("tests/compat/js");
    assert!(
        dir.join("node_modules/centrifuge/build/protobuf").exists(),
        "centrifuge-js is not installed: run scripts/test.sh (npm ci in tests/compat/js)"
    );
    let ns = "[[channel.namespaces]]\nname = \"delta\"\nhistory_size = 10\nhistory_ttl = \"5m\"\n\
              allow_subscribe_for_client = true\nallowed_delta_types = [\"fossil\"]\n";
    let script = dir.join("delta.mjs");
    let pb = [("SY_PROTOBUF", "1")];
    run_sdk_script_with(Path::new("node"), &script, "delta:jspb-", &[], ns, &pb);
}

#[test]
fn centrifuge_python() {
    let dir = root().join("tests/compat/python");
    let python = dir.join(".venv/bin/python");
    run_sdk_script(&python, &dir.join("compat.py"), "chat:py-", &[]);
}

/// centrifuge-python with `use_protobuf=True` (subprotocol `centrifuge-protobuf`): the same
/// scenario as [`centrifuge_python`], payloads as bytes, plus binary payloads (API `b64data`
/// and a client publication) received unchanged. permessage-deflate is on for this run
/// (python `websockets` offers it), so Protobuf frames are also compressed, shared slots
/// included; and [`FAST_PINGS`].
#[test]
fn centrifuge_python_protobuf() {
    let dir = root().join("tests/compat/python");
    let python = dir.join(".venv/bin/python");
    let on = [
        ("SWITCHYARD_CLIENT__WEBSOCKET_COMPRESSION", "true"),
        FAST_PINGS[0],
        FAST_PINGS[1],
    ];
    let pb = [("SY_PROTOBUF", "1")];
    run_sdk_script_with(&python, &dir.join("compat.py"), "chat:pypb-", &on, "", &pb);
}

/// Python `websockets` (compression on by default, zlib underneath) agrees permessage-deflate,
/// with its default offer and with our window limited to 512 bytes, and decodes compressed
/// publications unchanged (tests/compat/python/deflate.py).
#[test]
fn python_websockets_deflate() {
    let dir = root().join("tests/compat/python");
    let python = dir.join(".venv/bin/python");
    let on = [("SWITCHYARD_CLIENT__WEBSOCKET_COMPRESSION", "true")];
    run_sdk_script(&python, &dir.join("deflate.py"), "chat:z-", &on);
}

/// The server API through `cent`, Centrifugo's official Python API client: publish (with an
/// idempotency key), a batch (whose replies it reads at the top level), history, info, channels.
#[test]
fn cent_python_server_api() {
    let dir = root().join("tests/compat/python");
    let python = dir.join(".venv/bin/python");
    run_sdk_script(&python, &dir.join("cent_api.py"), "chat:cent-", &[]);
}

/// centrifuge-js forced onto each bidirectional-emulation fallback (`http_stream`, then
/// `sse` with the `eventsource` package): connect, subscribe, receive, publish, history,
/// presence, pongs through `/emulation`, recovery after a server-side disconnect.
#[test]
fn centrifuge_js_http_stream_and_sse_emulation() {
    let cfg = config_file("");
    let p = Proc::start(cfg.path(), &EMULATION_ENV);
    let a = p.client_addr;
    run_emulation_script((a, a, a), false, cfg.path(), "chat:emu-", &|| {
        p.log.lock().unwrap().join("\n")
    });
}

/// centrifuge-js's Protobuf build (`centrifuge/build/protobuf`) forced onto `http_stream`:
/// the connect command in the POST body and the client's commands through `/emulation` as
/// Protobuf, the stream as length-delimited Replies; connect, subscribe, receive API
/// publications (a `b64data` one byte for byte), publish, pongs, recovery after a server-side
/// disconnect (3011).
#[test]
fn centrifuge_js_protobuf_http_stream_emulation() {
    let cfg = config_file("");
    let p = Proc::start(cfg.path(), &EMULATION_ENV);
    let a = p.client_addr;
    run_emulation_script((a, a, a), true, cfg.path(), "chat:emu-pb-", &|| {
        p.log.lock().unwrap().join("\n")
    });
}

/// centrifuge-js's browser build in Debian's chromium (headless, playwright-core) on a page of
/// another origin (CORS): forced onto `http_stream`, onto `sse`, and with WebSockets blocked
/// (every WebSocket the page opens fails, as behind a proxy refusing upgrades) falling back
/// by itself; each connects,
/// subscribes, receives, publishes and recovers after a server-side disconnect
/// (tests/status-page/fallback.mjs).
#[test]
fn centrifuge_js_falls_back_in_chromium() {
    let page_origin = format!("http://127.0.0.1:{}", free_port("127.0.0.1"));
    let cfg = config_file("");
    let mut env = EMULATION_ENV.to_vec();
    let origins = format!("[\"{page_origin}\"]");
    env.push(("SWITCHYARD_CLIENT__ALLOWED_ORIGINS", origins.as_str()));
    let p = Proc::start(cfg.path(), &env);
    let sdk = root().join("tests/compat/js/node_modules/centrifuge/dist/centrifuge.js");
    assert!(
        sdk.exists(),
        "centrifuge-js is not installed: run scripts/test.sh"
    );
    let shot = artifact("fallback.png");
    let args = [
        page_origin.clone(),
        format!("http://{}", p.client_addr),
        sdk.display().to_string(),
        token("browser"),
        API_KEY.to_string(),
        "chat:browser-".to_string(),
        shot.display().to_string(),
    ];
    let out = status_page_check("fallback.mjs", &args);
    assert!(out.contains("blocked: over http_stream"), "{out}");
    assert!(out.contains("absent: over http_stream"), "{out}");
}
