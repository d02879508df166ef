//! The Prometheus mixin in deploy/: the generated files are up to date,
//! `promtool check rules` finds nothing, and `promtool test rules` passes
//! its unit tests (every recording rule against values computed from
//! kpis.md, every alert firing and not firing).

use std::path::PathBuf;
use std::process::Command;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (tests/run.sh installs promtool and python3)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn generated_files_are_up_to_date() {
    run(Command::new("python3")
        .arg(deploy().join("generate.py"))
        .arg("--check"));
}

#[test]
fn promtool_checks_the_rules() {
    let text = run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(deploy().join("prometheus/rules/kpistream.yml")));
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn promtool_unit_tests_pass() {
    let text = run(Command::new("promtool")
        .args(["test", "rules"])
        .arg("tests/kpistream_test.yml")
        .arg("tests/kpistream_slow_test.yml")
        .current_dir(deploy().join("prometheus")));
    assert_eq!(text.matches("SUCCESS").count(), 2, "{text}");
}
