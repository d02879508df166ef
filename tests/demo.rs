//! The README's first command: `kpistream demo` runs the whole service on
//! the in-process mock cluster with a live simulator, with nothing else
//! installed, and serves live KPIs.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::kafka::{free_port, http_get, wait_until};

#[test]
fn demo_serves_live_kpis_and_stops_cleanly() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kpistream"))
        .args(["demo", "--backfill", "2h", "--rate", "20"])
        .env("KPISTREAM__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let applied = || -> u64 {
        http_get(port, "/api/v1/kpis?scope=org&window=24h")
            .and_then(|(s, body)| (s == 200).then_some(body))
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|d| d["outcomes"]["applied"].as_u64())
            .unwrap_or(0)
    };
    wait_until("the demo applies events", Duration::from_secs(120), || {
        applied() > 10_000
    });
    let first = applied();
    wait_until("live events keep arriving", Duration::from_secs(30), || {
        applied() > first
    });
    let (status, body) = http_get(port, "/api/v1/kpis?scope=org&window=24h").unwrap();
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let kpis = &doc["results"][0]["kpis"];
    assert!(kpis["calls"].as_f64().unwrap() > 0.0, "{kpis}");
    let (status, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("sales_calls{"));
    // The live scrape passes promtool's checks with no finding.
    common::prometheus::assert_promtool_clean(&metrics);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}
