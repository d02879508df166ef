//! The HTTP server over a state fed with the golden log: the JSON API equals
//! what `replay` prints, filters work and bad ones get a 400 with a JSON
//! error, readiness follows the ingest side, and the cardinality guard of
//! `/metrics` folds reps into `other` without changing any total.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use serde_json::Value;

use common::kafka::{http_get, http_get_with};
use common::{assert_json_close, fixture};
use kpistream::config::{base64, Credential, HttpLimits, Overrides, Settings};
use kpistream::http::{router, AppState};
use kpistream::kpi::Layout;
use kpistream::processor::Processor;
use kpistream::source::{StateCopy, ViewRequest};
use kpistream::telemetry::Metrics;

struct Server {
    port: u16,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    _rt: tokio::runtime::Runtime,
}

/// What a test server is started with.
struct Options {
    max_exported_reps: usize,
    max_concurrent_requests: usize,
    metrics_auth: Option<Credential>,
    api_auth: Option<Credential>,
    /// How long the stand-in ingest loop takes to answer a copy request.
    copy_delay: Duration,
    max_api_results: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_exported_reps: 5_000,
            max_concurrent_requests: 64,
            metrics_auth: None,
            api_auth: None,
            copy_delay: Duration::ZERO,
            max_api_results: 100_000,
        }
    }
}

fn serve(max_exported_reps: usize) -> Server {
    serve_with(Options {
        max_exported_reps,
        ..Options::default()
    })
}

/// Serves the golden state: a thread stands in for the ingest loop and
/// answers copy requests from a processor fed with the golden log.
fn serve_with(o: Options) -> Server {
    let settings = Settings::load(
        None,
        &Overrides {
            teams_file: Some(fixture("golden/teams.json")),
            clock: Some("event".into()),
        },
    )
    .unwrap();
    let mut p = Processor::new(settings.engine.clone());
    for line in std::fs::read(fixture("golden/events.ndjson"))
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
    {
        p.process(line, 0);
    }
    let (requests, inbox) = std::sync::mpsc::channel::<ViewRequest>();
    std::thread::spawn(move || {
        for req in inbox {
            std::thread::sleep(o.copy_delay);
            let _ = req.reply.send(StateCopy {
                view: p.engine.view(),
                counts: p.counts.clone(),
                partitions: 1,
            });
        }
    });
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    metrics.init_outcomes();
    let ready = Arc::new(AtomicBool::new(false));
    let state = AppState {
        requests,
        layout: Arc::new(Layout::new(&settings.engine)),
        ready: ready.clone(),
        max_exported_reps: o.max_exported_reps,
        limits: HttpLimits {
            max_concurrent_requests: o.max_concurrent_requests,
            max_request_bytes: 1 << 20,
            max_api_results: o.max_api_results,
        },
        metrics_auth: o.metrics_auth,
        api_auth: o.api_auth,
        registry: Arc::new(registry),
        metrics: metrics.clone(),
    };
    let registry_metrics = metrics;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move { axum::serve(listener, router(state)).await });
    Server {
        port,
        ready,
        metrics: registry_metrics,
        _rt: rt,
    }
}

fn get_json(port: u16, path: &str) -> (u16, Value) {
    let (status, body) = http_get(port, path).expect("the server answers");
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
    )
}

#[test]
fn api_equals_replay_and_filters() {
    let s = serve(5_000);
    let (status, doc) = get_json(s.port, "/api/v1/kpis");
    assert_eq!(status, 200);

    // The same document as `replay` for the same messages.
    let settings = Settings::load(
        None,
        &Overrides {
            teams_file: Some(fixture("golden/teams.json")),
            clock: None,
        },
    )
    .unwrap();
    let input = BufReader::new(std::fs::File::open(fixture("golden/events.ndjson")).unwrap());
    let (replayed, _) = kpistream::replay::replay(settings.engine, input).unwrap();
    // Byte for byte (serde_json's parser may round the last digit of a
    // float, so the text is compared, not parsed values).
    let (_, body) = http_get(s.port, "/api/v1/kpis").unwrap();
    assert!(
        body == serde_json::to_string(&replayed).unwrap(),
        "the API and replay documents differ"
    );
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixture("golden/expected.json")).unwrap()).unwrap();
    assert_json_close(&doc["outcomes"], &expected["outcomes"], "outcomes");

    let (status, teams) = get_json(s.port, "/api/v1/kpis?scope=team&window=7d");
    assert_eq!(status, 200);
    let results = teams["results"].as_array().unwrap();
    let all_teams: Vec<&Value> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["scope"] == "team" && r["window"] == "7d")
        .collect();
    assert!(!results.is_empty());
    assert_eq!(results.iter().collect::<Vec<_>>(), all_teams);

    let (status, one) = get_json(s.port, "/api/v1/kpis?scope=rep&id=rep-0001");
    assert_eq!(status, 200);
    let one = one["results"].as_array().unwrap();
    assert_eq!(one.len(), 7, "every window of one rep");
    assert!(one
        .iter()
        .all(|r| r["id"] == "rep-0001" && r["scope"] == "rep"));
}

#[test]
fn bad_filters_get_400_with_a_json_error() {
    let s = serve(5_000);
    for (path, says) in [
        ("/api/v1/kpis?scope=galaxy", "unknown scope `galaxy`"),
        ("/api/v1/kpis?window=2h", "unknown window `2h`"),
        ("/api/v1/kpis?team=emea", "unknown parameter `team`"),
        ("/api/v1/kpis?scope=rep&id=nobody", "unknown id `nobody`"),
    ] {
        let (status, body) = get_json(s.port, path);
        assert_eq!(status, 400, "{path}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(says), "{path}: {error}");
    }
}

#[test]
fn health_and_readiness() {
    let s = serve(5_000);
    // `/` lists the endpoints, each a link that answers.
    let (status, page) = http_get(s.port, "/").unwrap();
    assert_eq!(status, 200);
    let links: Vec<&str> = page
        .split("href=\"")
        .skip(1)
        .map(|l| l.split('"').next().unwrap())
        .collect();
    assert!(links.len() >= 6, "{page}");
    for l in links {
        let path = l.replace("&amp;", "&");
        let (code, _) = http_get(s.port, &path).unwrap();
        assert!(code == 200 || path == "/readyz", "{path}: {code}");
    }
    assert_eq!(http_get(s.port, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(s.port, "/readyz").unwrap().0, 503);
    s.ready.store(true, Ordering::Release);
    assert_eq!(http_get(s.port, "/readyz").unwrap().0, 200);
}

/// `name{labels} value` lines of one metric, as (labels, value).
fn series(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .map(|rest| {
            let (labels, value) = rest.rsplit_once("} ").unwrap();
            let labels = labels
                .split("\",")
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").unwrap();
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            (labels, value.parse().unwrap())
        })
        .collect()
}

#[test]
fn cardinality_guard_folds_reps_into_other() {
    let full = serve(5_000);
    let (_, all) = http_get(full.port, "/metrics").unwrap();
    let guarded = serve(5);
    let (status, folded) = http_get(guarded.port, "/metrics").unwrap();
    assert_eq!(status, 200);

    let reps = |text: &str| -> BTreeSet<String> {
        series(text, "sales_calls")
            .into_iter()
            .filter_map(|(l, _)| l.get("rep").cloned())
            .filter(|r| !r.is_empty())
            .collect()
    };
    let every = reps(&all);
    assert!(every.len() > 5, "the golden log has {} reps", every.len());
    let kept = reps(&folded);
    let first_five: BTreeSet<String> = every.iter().take(5).cloned().collect();
    assert_eq!(
        kept,
        first_five.iter().cloned().chain(["other".into()]).collect()
    );
    let count = series(&folded, "kpistream_folded_reps");
    assert_eq!(count.len(), 0, "an unlabelled gauge");
    let folded_count: f64 = folded
        .lines()
        .find_map(|l| l.strip_prefix("kpistream_folded_reps "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(folded_count as usize, every.len() - 5);

    // Folding moves values between series, never changes a team total.
    for metric in ["sales_calls", "sales_won_amount", "sales_meetings_missed"] {
        let totals = |text: &str| -> BTreeMap<(String, String), f64> {
            let mut m = BTreeMap::new();
            for (l, v) in series(text, metric) {
                *m.entry((l["team"].clone(), l["window"].clone()))
                    .or_insert(0.0) += v;
            }
            m
        };
        let (a, b) = (totals(&all), totals(&folded));
        assert_eq!(a.len(), b.len());
        for (k, v) in &a {
            assert!(
                (v - b[k]).abs() <= 1e-6 * v.abs().max(1.0),
                "{metric} {k:?}"
            );
        }
    }
}

/// A GET with an `Authorization` header: the status.
fn get_with(port: u16, path: &str, authorization: Option<&str>) -> u16 {
    http_get_with(port, path, authorization)
        .expect("the server answers")
        .0
}

fn rejected(s: &Server, endpoint: &'static str, reason: &'static str) -> u64 {
    s.metrics
        .http_rejected
        .get_or_create(&kpistream::telemetry::HttpRejectLabels { endpoint, reason })
        .get()
}

#[test]
fn metrics_and_api_are_protected_separately() {
    let s = serve_with(Options {
        metrics_auth: Some(Credential::Bearer("s3cret-token".into())),
        api_auth: Some(Credential::Basic(base64(b"revops:hunter2"))),
        ..Options::default()
    });
    // /metrics: bearer token only.
    assert_eq!(get_with(s.port, "/metrics", None), 401);
    assert_eq!(get_with(s.port, "/metrics", Some("Bearer wrong")), 401);
    assert_eq!(
        get_with(s.port, "/metrics", Some("Bearer s3cret-token2")),
        401
    );
    assert_eq!(
        get_with(s.port, "/metrics", Some("Basic s3cret-token")),
        401
    );
    assert_eq!(
        get_with(s.port, "/metrics", Some("Bearer s3cret-token")),
        200
    );
    assert_eq!(rejected(&s, "metrics", "unauthorized"), 4);
    // /api: basic auth only; the metrics token does not open it.
    let good = format!("Basic {}", base64(b"revops:hunter2"));
    let bad = format!("Basic {}", base64(b"revops:hunter3"));
    assert_eq!(get_with(s.port, "/api/v1/kpis", None), 401);
    assert_eq!(get_with(s.port, "/api/v1/kpis", Some(&bad)), 401);
    assert_eq!(
        get_with(s.port, "/api/v1/kpis", Some("Bearer s3cret-token")),
        401
    );
    assert_eq!(get_with(s.port, "/api/v1/kpis?scope=org", Some(&good)), 200);
    assert_eq!(rejected(&s, "api", "unauthorized"), 3);
    // Probes stay open.
    assert_eq!(get_with(s.port, "/healthz", None), 200);
}

#[test]
fn requests_past_the_concurrency_limit_get_503_and_probes_still_answer() {
    let s = serve_with(Options {
        max_concurrent_requests: 1,
        copy_delay: Duration::from_millis(1500),
        ..Options::default()
    });
    let port = s.port;
    let slow = std::thread::spawn(move || get_with(port, "/api/v1/kpis?scope=org", None));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(get_with(s.port, "/metrics", None), 503);
    assert_eq!(get_with(s.port, "/healthz", None), 200);
    assert_eq!(slow.join().unwrap(), 200);
    assert_eq!(rejected(&s, "metrics", "busy"), 1);
    // The permit is back once the slow request is done.
    assert_eq!(get_with(s.port, "/api/v1/kpis?scope=org", None), 200);
}

#[test]
fn basic_credentials_are_standard_base64() {
    assert_eq!(
        base64(b"Aladdin:open sesame"),
        "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    );
    assert_eq!(base64(b"a"), "YQ==");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"abc"), "YWJj");
}

#[test]
fn api_queries_past_the_result_limit_get_422() {
    let s = serve_with(Options {
        max_api_results: 20,
        ..Options::default()
    });
    let (status, body) = get_json(s.port, "/api/v1/kpis");
    assert_eq!(status, 422);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("http.max_api_results (20)"),
        "{body}"
    );
    let (status, body) = get_json(s.port, "/api/v1/kpis?scope=team&window=30d");
    assert_eq!(status, 200);
    assert!(!body["results"].as_array().unwrap().is_empty());
    let (status, _) = get_json(s.port, "/api/v1/kpis?scope=org");
    assert_eq!(status, 200, "7 results");
}
