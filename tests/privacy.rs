//! `privacy.pseudonymize_reps`: no real rep id reaches the KPI document or
//! the Prometheus exposition, pseudonyms are stable for a key and differ
//! between keys, and team and org KPIs are exactly those of the golden run.

mod common;

use std::fs::File;
use std::io::BufReader;

use serde_json::Value;

use common::{assert_json_close, fixture};
use kpistream::config::{Overrides, Settings};
use kpistream::kpi::Layout;
use kpistream::processor::Processor;

fn settings(key: Option<&str>) -> Settings {
    let mut env = vec![(
        "KPISTREAM__TEAMS_FILE".to_owned(),
        fixture("golden/teams.json").display().to_string(),
    )];
    if let Some(k) = key {
        env.push((
            "KPISTREAM__PRIVACY__PSEUDONYMIZE_REPS".into(),
            "true".into(),
        ));
        env.push(("KPISTREAM_PSEUDONYM_SECRET".into(), k.into()));
    }
    Settings::load_with_env(
        None,
        &Overrides {
            clock: Some("event".into()),
            ..Overrides::default()
        },
        env,
    )
    .unwrap()
}

fn golden_reps() -> Vec<String> {
    let teams: serde_json::Map<String, Value> =
        serde_json::from_reader(File::open(fixture("golden/teams.json")).unwrap()).unwrap();
    teams.keys().cloned().collect()
}

/// The replay document and the /metrics text of the golden log.
fn run(key: Option<&str>) -> (Value, String) {
    let s = settings(key);
    let layout = Layout::new(&s.engine);
    let mut p = Processor::new(s.engine.clone());
    let input = BufReader::new(File::open(fixture("golden/events.ndjson")).unwrap());
    kpistream::replay::for_each_line(input, |l| {
        p.process(l, 0);
    })
    .unwrap();
    let mut text = String::new();
    kpistream::exposition::render(&layout, &p.engine.view(), usize::MAX, &mut text);
    let (doc, _) = kpistream::replay::replay(
        s.engine,
        BufReader::new(File::open(fixture("golden/events.ndjson")).unwrap()),
    )
    .unwrap();
    (doc, text)
}

fn scoped(doc: &Value, scope: &str) -> Value {
    let mut m = serde_json::Map::new();
    for r in doc["results"].as_array().unwrap() {
        if r["scope"] == scope {
            m.insert(format!("{}/{}", r["id"], r["window"]), r["kpis"].clone());
        }
    }
    Value::Object(m)
}

fn rep_ids(doc: &Value) -> Vec<String> {
    let mut ids: Vec<String> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["scope"] == "rep")
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn pseudonyms_replace_every_rep_id_and_keep_every_total() {
    let (plain, _) = run(None);
    let (private, text) = run(Some("key-one"));
    let (again, _) = run(Some("key-one"));
    let (other, _) = run(Some("key-two"));

    let reps = golden_reps();
    let doc_text = private.to_string();
    for rep in &reps {
        assert!(
            !doc_text.contains(&format!("\"{rep}\"")),
            "{rep} in the document"
        );
        assert!(
            !text.contains(&format!("rep=\"{rep}\"")),
            "{rep} in /metrics"
        );
    }
    let ids = rep_ids(&private);
    assert_eq!(ids.len(), rep_ids(&plain).len(), "one pseudonym per rep");
    for id in ids.iter().filter(|i| *i != "unassigned") {
        assert!(id.starts_with("rep-") && id.len() == 16, "{id}");
        assert!(text.contains(&format!("rep=\"{id}\"")), "{id} on /metrics");
    }
    assert_eq!(ids, rep_ids(&again), "stable for a key");
    assert_ne!(ids, rep_ids(&other), "another key, other pseudonyms");

    // Teams still come from the map of real rep ids: team and org KPIs are
    // those of the plain run, to the last digit.
    for scope in ["team", "org"] {
        assert_json_close(&scoped(&private, scope), &scoped(&plain, scope), scope);
    }
    assert_eq!(private["outcomes"], plain["outcomes"]);
}

#[test]
fn the_pseudonym_key_is_required_and_never_shown() {
    let err = Settings::load_with_env(
        None,
        &Overrides::default(),
        [(
            "KPISTREAM__PRIVACY__PSEUDONYMIZE_REPS".to_owned(),
            "true".to_owned(),
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("privacy.pseudonym_secret_file"), "{err}");
    let s = settings(Some("a-secret-key"));
    assert!(!format!("{s:?}").contains("a-secret-key"));
}
