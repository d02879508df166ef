//! The golden event log reproduces the golden document, through the library
//! and through the `kpistream replay` command.

mod common;

use std::fs::File;
use std::io::BufReader;
use std::process::Command;

use serde_json::Value;

use common::{assert_json_close, fixture, replay_command};
use kpistream::config::{Overrides, Settings};

fn expected() -> Value {
    serde_json::from_reader(File::open(fixture("golden/expected.json")).unwrap()).unwrap()
}

/// Results keyed by (scope, id, window), so order does not matter.
fn keyed(doc: &Value) -> Value {
    let mut m = serde_json::Map::new();
    for r in doc["results"].as_array().unwrap() {
        let k = format!("{}/{}/{}", r["scope"], r["id"], r["window"]);
        assert!(
            m.insert(k.clone(), r["kpis"].clone()).is_none(),
            "{k} twice"
        );
    }
    Value::Object(m)
}

fn check(doc: &Value) {
    let want = expected();
    assert_eq!(doc["outcomes"], want["outcomes"]);
    let t = |v: &Value| kpistream::event::parse_timestamp(v.as_str().unwrap()).unwrap();
    assert_eq!(t(&doc["as_of"]), t(&want["as_of"]));
    assert_json_close(&keyed(doc), &keyed(&want), "results");
    let order = |d: &Value| -> Vec<String> {
        d["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{}/{}/{}", r["scope"], r["id"], r["window"]))
            .collect()
    };
    assert_eq!(order(doc), order(&want), "results in the golden order");
}

#[test]
fn library_replay_reproduces_the_golden_document() {
    let settings = Settings::load_with_env(
        None,
        &Overrides {
            teams_file: Some(fixture("golden/teams.json")),
            clock: Some("event".into()),
        },
        std::iter::empty(),
    )
    .unwrap();
    let input = BufReader::new(File::open(fixture("golden/events.ndjson")).unwrap());
    let (doc, counts) = kpistream::replay::replay(settings.engine, input).unwrap();
    assert_eq!(
        counts.total(),
        12_847,
        "every message has exactly one outcome"
    );
    check(&doc);
}

#[test]
fn replay_command_reproduces_the_golden_document() {
    let doc = replay_command([
        "--input".into(),
        fixture("golden/events.ndjson"),
        "--teams".into(),
        fixture("golden/teams.json"),
    ]);
    check(&doc);
}

/// `--summary` gives the golden outcomes and clock, and no KPIs.
#[test]
fn replay_summary_gives_the_outcomes_alone() {
    let doc = replay_command([
        "--summary".into(),
        "--input".into(),
        fixture("golden/events.ndjson"),
        "--teams".into(),
        fixture("golden/teams.json"),
    ]);
    let want = expected();
    assert_eq!(doc["outcomes"], want["outcomes"]);
    assert_eq!(doc["as_of"], want["as_of"]);
    assert!(doc.get("results").is_none());
}

#[test]
fn replay_reads_stdin() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kpistream"))
        .args(["replay", "--input", "-", "--teams"])
        .arg(fixture("golden/teams.json"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let data = std::fs::read(fixture("golden/events.ndjson")).unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    check(&doc);
}

#[test]
fn invalid_configuration_stops_start_up_naming_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_kpistream"))
        .args(["replay", "--input", "-"])
        .env("KPISTREAM__MEETINGS__NO_SHOW_GRACE", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("meetings.no_show_grace"), "{err}");
}
