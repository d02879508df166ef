//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod kafka;
pub mod prometheus;

use std::path::PathBuf;

use serde_json::Value;

use kpistream::config::EngineConfig;
use kpistream::kpi::{self, Filter, Layout};
use kpistream::processor::{Outcome, Processor};

/// The lines of a fixture file.
#[allow(dead_code)]
pub fn fixture_lines(name: &str) -> Vec<String> {
    std::fs::read_to_string(fixture(name))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs `kpistream <command>` with `args` and returns what it prints; fails
/// the test with the command's stderr if it fails.
pub fn run_command<S: AsRef<std::ffi::OsStr>>(
    command: &str,
    args: impl IntoIterator<Item = S>,
) -> Vec<u8> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kpistream"))
        .arg(command)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `kpistream replay` with `args` and returns the document it prints.
pub fn replay_command<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Value {
    serde_json::from_slice(&run_command("replay", args)).unwrap()
}

/// Feeds messages (JSON text) to a fresh processor; returns it.
pub fn feed(cfg: EngineConfig, msgs: &[String]) -> (Processor, Vec<Outcome>) {
    let mut p = Processor::new(cfg);
    let outcomes = msgs.iter().map(|m| p.process(m.as_bytes(), 0)).collect();
    (p, outcomes)
}

/// The KPI document of a processor's current state.
pub fn doc(p: &mut Processor) -> Value {
    let layout = Layout::new(p.engine.config());
    let view = p.engine.view();
    kpi::document(&layout, &view, &Filter::default())
}

/// One KPI value from a document; panics if the scope or window is absent.
pub fn kpi<'a>(doc: &'a Value, scope: &str, id: &str, window: &str, key: &str) -> &'a Value {
    let r = doc["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["scope"] == scope && r["id"] == id && r["window"] == window)
        .unwrap_or_else(|| panic!("no result for {scope}/{id}/{window}"));
    r["kpis"]
        .get(key)
        .unwrap_or_else(|| panic!("no kpi {key} in {scope}/{id}/{window}"))
}

pub fn num(doc: &Value, scope: &str, id: &str, window: &str, key: &str) -> f64 {
    kpi(doc, scope, id, window, key)
        .as_f64()
        .unwrap_or_else(|| panic!("{key} of {scope}/{id}/{window} is not a number"))
}

/// Builds one event message: `ev("e1", "call.logged", "2026-03-02T10:00:00Z", json!({...}))`.
pub fn ev(id: &str, kind: &str, at: &str, fields: Value) -> String {
    let mut obj = serde_json::json!({"id": id, "type": kind, "occurred_at": at});
    if let Value::Object(f) = fields {
        obj.as_object_mut().unwrap().extend(f);
    }
    obj.to_string()
}

/// Numbers equal to a relative 1e-9, nulls and keys exactly.
pub fn assert_json_close(actual: &Value, expected: &Value, path: &str) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            let mut ak: Vec<_> = a.keys().collect();
            let mut ek: Vec<_> = e.keys().collect();
            ak.sort();
            ek.sort();
            assert_eq!(ak, ek, "keys differ at {path}");
            for (k, v) in e {
                assert_json_close(&a[k], v, &format!("{path}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "length differs at {path}");
            for (i, (x, y)) in a.iter().zip(e).enumerate() {
                assert_json_close(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(a), Value::Number(e)) => {
            let (a, e) = (a.as_f64().unwrap(), e.as_f64().unwrap());
            let tol = 1e-9 * a.abs().max(e.abs());
            assert!((a - e).abs() <= tol, "{path}: {a} != {e}");
        }
        (a, e) => assert_eq!(a, e, "at {path}"),
    }
}
