//! A real Prometheus server (Debian's `prometheus` package, installed by
//! tests/run.sh) in its own process, scraping kpistream, and its HTTP API.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::kafka::{free_port, http_get, wait_until};

pub struct Prometheus {
    pub port: u16,
    child: Child,
}

/// One sample of an instant vector: its labels (with `__name__` when kept)
/// and value.
pub type Sample = (BTreeMap<String, String>, f64);

impl Prometheus {
    /// Starts Prometheus scraping `/metrics` of each port every second, with
    /// `rule_files` evaluated every second.
    pub fn start(dir: &Path, targets: &[u16], rule_files: &[&Path]) -> Prometheus {
        let port = free_port();
        let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|r| format!("  - '{}'\n", r.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{}\
             scrape_configs:\n  - job_name: kpistream\n    static_configs:\n      - targets: [{}]\n",
            if rules.is_empty() {
                "  []\n".to_owned()
            } else {
                rules.concat()
            },
            targets.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus is installed by tests/run.sh (Debian package `prometheus`)");
        let p = Prometheus { port, child };
        wait_until("prometheus ready", Duration::from_secs(60), || {
            http_get(port, "/-/ready").is_some_and(|(s, _)| s == 200)
        });
        p
    }

    /// Runs an instant query; panics on an API error.
    pub fn query(&self, expr: &str) -> Vec<Sample> {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let (status, body) = http_get(self.port, &path).expect("prometheus answers");
        let doc: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert!(
            status == 200 && doc["status"] == "success",
            "query `{expr}` failed: {status} {body}"
        );
        let result = &doc["data"]["result"];
        if doc["data"]["resultType"] == "scalar" {
            return vec![(BTreeMap::new(), parse(&result[1]))];
        }
        result
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                (labels, parse(&s["value"][1]))
            })
            .collect()
    }
}

fn parse(v: &Value) -> f64 {
    match v.as_str().unwrap() {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().unwrap(),
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `promtool check metrics` on a scrape; fails the test on any
/// finding.
pub fn assert_promtool_clean(scrape: &str) {
    use std::io::Write;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by tests/run.sh");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "{findings}"
    );
}

/// Percent-encodes a query parameter.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
