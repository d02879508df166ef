//! The Grafana dashboards of deploy/: they import cleanly (a valid model,
//! unique panel ids, the provisioned datasource everywhere, a query and a
//! unit on every panel), and against a real Prometheus evaluating the rules
//! of deploy/prometheus while scraping kpistream fed with the golden log,
//! every panel query returns data and chosen panels equal the JSON API.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use common::kafka::{golden_service, wait_until, GOLDEN_MESSAGES};
use common::prometheus::Prometheus;

const UID: &str = "kpistream-prometheus";

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn dashboards() -> Vec<(String, Value)> {
    ["sales-kpis.json", "kpistream-operations.json"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(deploy(&format!("grafana/dashboards/{f}"))).unwrap();
            (f.to_string(), serde_json::from_str(&text).unwrap())
        })
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

#[test]
fn dashboards_import_cleanly() {
    let provisioned =
        std::fs::read_to_string(deploy("grafana/provisioning/datasources/prometheus.yml")).unwrap();
    assert!(provisioned.contains(&format!("uid: {UID}")));
    for (file, d) in dashboards() {
        assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()), "{file}");
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "{file}");
        let all = panels(&d);
        let ids: BTreeSet<i64> = all.iter().map(|p| p["id"].as_i64().unwrap()).collect();
        assert_eq!(ids.len(), all.len(), "{file}: panel ids are unique");
        let mut queries = 0;
        for p in all.iter().filter(|p| p["type"] != "row") {
            let title = p["title"].as_str().unwrap();
            assert_eq!(p["datasource"]["uid"], UID, "{file}: {title}");
            assert!(
                p["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .is_some_and(|u| !u.is_empty()),
                "{file}: {title} has a unit"
            );
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{file}: {title} has a query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], UID, "{file}: {title}");
                assert!(t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()));
                queries += 1;
            }
        }
        assert!(queries > 10, "{file}: {queries} queries");
    }
    let (_, sales) = &dashboards()[0];
    let vars: Vec<&str> = sales["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["team", "rep", "window"]);
}

/// A panel query with the dashboard variables set as a user would.
fn substitute(expr: &str, window: &str) -> String {
    expr.replace("$team", "team-01")
        .replace("$rep", "rep-0001")
        .replace("$window", window)
        .replace("$__rate_interval", "1m")
}

/// The golden log leaves some KPIs null in some windows (no deal won by a
/// team in 7 days, no customer at the start of 30 days): a panel must show
/// data in at least one of these windows.
const WINDOWS: [&str; 4] = ["7d", "30d", "mtd", "qtd"];

#[test]
fn every_panel_query_returns_data_and_chosen_panels_equal_the_spec() {
    let (scratch, _broker, svc) = golden_service("dashboards", &[], &[]);
    let doc = svc.kpis().unwrap();
    let rules = deploy("prometheus/rules/kpistream.yml");
    let prom = Prometheus::start(&scratch.0, &[svc.http], &[&rules]);
    wait_until(
        "the rules evaluated on the final state",
        Duration::from_secs(60),
        || {
            prom.query("sum(kpistream_events_total)")
                .first()
                .is_some_and(|(_, v)| *v as u64 == GOLDEN_MESSAGES)
                && !prom.query("org_window:win_rate").is_empty()
        },
    );
    // Rates need two scrapes of the final state within their range.
    std::thread::sleep(Duration::from_secs(4));

    let mut checked = 0;
    for (file, d) in dashboards() {
        for p in panels(&d).into_iter().filter(|p| p["type"] != "row") {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                assert!(
                    WINDOWS
                        .iter()
                        .any(|w| !prom.query(&substitute(expr, w)).is_empty()),
                    "{file}: panel `{}` returns no data: {expr}",
                    p["title"]
                );
                checked += 1;
            }
        }
    }
    eprintln!("{checked} panel queries returned data");

    // Chosen panels: the value Prometheus computes from the exported parts
    // equals the JSON API's, which the golden test holds to the spec.
    let api = |scope: &str, id: &str, window: &str, key: &str| -> f64 {
        doc["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["scope"] == scope && r["id"] == id && r["window"] == window)
            .unwrap_or_else(|| panic!("{scope} {id} {window}"))["kpis"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} of {scope} {id} {window} is null"))
    };
    let one = |expr: &str| -> f64 {
        let s = prom.query(expr);
        assert_eq!(s.len(), 1, "{expr}: {s:?}");
        s[0].1
    };
    let close = |a: f64, b: f64, what: &str| {
        assert!(
            (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
            "{what}: {a} != {b}"
        );
    };
    // (panel query, (scope, id, window, KPI key))
    type Case<'a> = (&'a str, (&'a str, &'a str, &'a str, &'a str));
    let cases: [Case<'_>; 9] = [
        (
            r#"team_window:win_rate{team="team-01",window="7d"}"#,
            ("team", "team-01", "7d", "win_rate"),
        ),
        (
            r#"team_window:avg_deal_size{team="team-01",window="30d"}"#,
            ("team", "team-01", "30d", "avg_deal_size"),
        ),
        (
            r#"team_window:meeting_booking_rate{team="team-01",window="7d"}"#,
            ("team", "team-01", "7d", "meeting_booking_rate"),
        ),
        (
            r#"org_window:churn_rate{window="7d"}"#,
            ("org", "all", "7d", "churn_rate"),
        ),
        (
            r#"org_window:nps{window="30d"}"#,
            ("org", "all", "30d", "nps"),
        ),
        (
            r#"org_window:cac{window="30d"}"#,
            ("org", "all", "30d", "cac"),
        ),
        (
            r#"org_window:pipeline_velocity_per_day{window="30d"}"#,
            ("org", "all", "30d", "pipeline_velocity_per_day"),
        ),
        (
            r#"team_window:quota_attainment_month{team="team-01"}"#,
            ("team", "team-01", "7d", "quota_attainment_month"),
        ),
        (
            r#"rep_team_window:selling_time_ratio{rep="rep-0001",window="7d"}"#,
            ("rep", "rep-0001", "7d", "selling_time_ratio"),
        ),
    ];
    for (expr, (scope, id, window, key)) in cases {
        close(one(expr), api(scope, id, window, key), expr);
    }
    let demo = one(r#"org_window:stage_conversion{window="30d",stage="demo"}"#);
    let want = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["scope"] == "org" && r["window"] == "30d")
        .unwrap()["kpis"]["stage_conversion"]["demo"]
        .as_f64()
        .unwrap();
    close(demo, want, "stage_conversion demo");
}
