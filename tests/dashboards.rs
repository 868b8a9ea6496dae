//! The shipped Grafana dashboard and alert rules use only metric names the node exposes.

mod common;

use std::collections::BTreeSet;

use common::*;

/// `switchyard_*` names in `text`, with histogram suffixes folded onto the histogram.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("switchyard_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let mut name = &text[start..end];
        for suffix in ["_bucket", "_count", "_sum"] {
            if let Some(n) = name.strip_suffix(suffix) {
                name = n;
            }
        }
        out.insert(name.to_string());
        i = end;
    }
    out
}

#[tokio::test]
async fn dashboard_and_alerts_reference_exposed_metrics() {
    // A configured proxy, so its series are exposed (registered at zero; never called).
    let s = TestServer::start_with("[proxy.rpc]\nendpoint = \"http://127.0.0.1:9/rpc\"\n").await;
    let admin = s.server.as_ref().unwrap().admin_addr;
    // Ready = its own leader, which is when the per-follower lag series exist.
    eventually("ready", || async {
        http_get(admin, "/readyz").await.0 == 200
    })
    .await;
    let (st, body) = http_get(admin, "/metrics").await;
    assert_eq!(st, 200);
    let exposed = names(&String::from_utf8(body).unwrap());
    assert!(
        exposed.contains("switchyard_delivery_latency_seconds"),
        "{exposed:?}"
    );

    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard =
        std::fs::read_to_string(format!("{root}/contrib/grafana-dashboard.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let exprs: Vec<String> = json["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("expr").to_string())
        .collect();
    assert!(exprs.len() >= 12, "every panel has queries");
    let used = names(&exprs.join("\n"));
    let alerts = std::fs::read_to_string(format!("{root}/contrib/prometheus-alerts.yml")).unwrap();
    let used_alerts = names(&alerts);
    assert!(used_alerts.len() >= 6);
    for name in used.iter().chain(&used_alerts) {
        assert!(exposed.contains(name), "{name} is used but not exposed");
    }
    for alert in [
        "SwitchyardConnectionsDropping",
        "SwitchyardDeliveryLatencyHigh",
        "SwitchyardReconnectStorm",
        "SwitchyardMemoryHigh",
        "SwitchyardErrorRateHigh",
        "SwitchyardLeaderLost",
        "SwitchyardNodeDown",
        "SwitchyardClusterDown",
        "SwitchyardQuorumLost",
    ] {
        assert!(
            alerts.contains(&format!("alert: {alert}")),
            "{alert} missing"
        );
    }
}
