//! The service's outputs beside the JSON API, fed with the golden log
//! through a real tansu broker: a real Prometheus scraping `/metrics` holds
//! the same value for every KPI part as the JSON API, and the KPI topic
//! holds the latest document of every scope and window.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use serde_json::Value;

use common::assert_json_close;
use common::kafka::{golden_service, produce, wait_until, Broker, GOLDEN_MESSAGES};
use common::prometheus::{assert_promtool_clean, Prometheus};

const KPI_TOPIC: &str = "kpistream-kpis";

/// Exported metric name -> JSON key, for the additive parts, written from
/// kpis.md independently of the code under test.
const SCALARS: &[(&str, &str)] = &[
    ("sales_leads_created", "leads_created"),
    ("sales_leads_converted", "leads_converted"),
    ("sales_prospects_contacted", "prospects_contacted"),
    (
        "sales_lead_response_seconds_sum",
        "lead_response_seconds_sum",
    ),
    (
        "sales_lead_response_seconds_count",
        "lead_response_seconds_count",
    ),
    ("sales_calls", "calls"),
    ("sales_calls_connected", "calls_connected"),
    ("sales_call_duration_seconds", "call_seconds"),
    ("sales_emails", "emails"),
    ("sales_meetings_booked", "meetings_booked"),
    ("sales_meetings_due", "meetings_due"),
    ("sales_meetings_held", "meetings_held"),
    ("sales_meetings_missed", "meetings_missed"),
    ("sales_deals_created", "deals_created"),
    ("sales_deals_won", "deals_won"),
    ("sales_deals_lost", "deals_lost"),
    ("sales_won_amount", "won_amount"),
    ("sales_sales_cycle_seconds_sum", "sales_cycle_seconds_sum"),
    (
        "sales_sales_cycle_seconds_count",
        "sales_cycle_seconds_count",
    ),
    ("sales_selling_time_seconds", "selling_seconds"),
    ("sales_logged_time_seconds", "logged_seconds"),
    ("sales_customers_new", "customers_new"),
    ("sales_mrr_new", "mrr_new"),
    ("sales_customers_expanded", "customers_expanded"),
    ("sales_mrr_expansion", "mrr_expansion"),
    ("sales_mrr_contraction", "mrr_contraction"),
    ("sales_customers_churned", "customers_churned"),
    ("sales_mrr_churned", "mrr_churned"),
    ("sales_nps_responses", "nps_responses"),
    ("sales_nps_promoters", "nps_promoters"),
    ("sales_nps_detractors", "nps_detractors"),
    ("sales_csat_responses", "csat_responses"),
    ("sales_csat_satisfied", "csat_satisfied"),
    ("sales_csat_score", "csat_score_sum"),
    ("sales_acquisition_spend", "acquisition_spend"),
];

/// Current-state gauges (no window label) -> JSON key.
/// An extra label matcher, as (name, value).
type Matcher = Option<(&'static str, &'static str)>;

const CURRENT: &[(&str, &str, Matcher)] = &[
    ("sales_customers_active", "customers_active", None),
    ("sales_mrr", "mrr", None),
    ("sales_meetings_upcoming", "meetings_upcoming", None),
    ("sales_quota", "quota_month", Some(("period", "month"))),
    ("sales_quota", "quota_quarter", Some(("period", "quarter"))),
];

fn window_of(l: &BTreeMap<String, String>) -> String {
    l.get("window")
        .unwrap_or_else(|| panic!("no window label in {l:?}"))
        .clone()
}

fn close(a: f64, e: f64) -> bool {
    (a - e).abs() <= 1e-9 * a.abs().max(e.abs()).max(1.0)
}

/// The JSON API's results keyed by (scope, id, window).
fn api_results(doc: &Value) -> BTreeMap<(String, String, String), Value> {
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                (
                    r["scope"].as_str().unwrap().to_owned(),
                    r["id"].as_str().unwrap().to_owned(),
                    r["window"].as_str().unwrap().to_owned(),
                ),
                r["kpis"].clone(),
            )
        })
        .collect()
}

#[test]
fn prometheus_holds_the_json_api_values() {
    let (scratch, _broker, svc) = golden_service("prom", &[], &[]);
    let doc = svc.kpis().unwrap();
    let api = api_results(&doc);
    let prom = Prometheus::start(&scratch.0, &[svc.http], &[]);
    // A scrape that saw every message.
    wait_until(
        "a scrape of the final state",
        Duration::from_secs(60),
        || {
            prom.query("sum(kpistream_events_total)")
                .first()
                .is_some_and(|(_, v)| *v as u64 == GOLDEN_MESSAGES)
        },
    );
    let windows: Vec<String> = ["1h", "24h", "7d", "30d", "90d", "mtd", "qtd"]
        .map(String::from)
        .to_vec();
    let mut compared = 0usize;
    // Per scope, Prometheus sums the rep series (a rep can appear under
    // several teams when events carry their own team_id).
    for (scope, by) in [("rep", "rep"), ("team", "team"), ("org", "")] {
        // The grouping labels before `window`/`stage`: "rep, ", "team, ", "".
        let byc = if by.is_empty() {
            String::new()
        } else {
            format!("{by}, ")
        };
        let id_of = |l: &BTreeMap<String, String>| {
            if by.is_empty() {
                "all".to_owned()
            } else {
                l.get(by)
                    .unwrap_or_else(|| panic!("no {by} label in {l:?}"))
                    .clone()
            }
        };
        let ids: Vec<&String> = api
            .keys()
            .filter(|(s, _, _)| s == scope)
            .map(|(_, id, _)| id)
            .collect();
        assert!(!ids.is_empty(), "the API has {scope} results");

        // Contributions without a rep (acquisition spend) are exported with
        // rep="" (and team="" without a team): they belong to the team
        // and org scopes only, and Prometheus drops empty labels.
        let scoped = |samples: Vec<common::prometheus::Sample>| -> Vec<common::prometheus::Sample> {
            samples
                .into_iter()
                .filter(|(l, _)| by.is_empty() || l.contains_key(by))
                .collect()
        };
        for (metric, key) in SCALARS {
            let samples = scoped(prom.query(&format!("sum by ({byc}window) ({metric})")));
            let got: HashMap<(String, String), f64> = samples
                .iter()
                .map(|(l, v)| ((id_of(l), window_of(l)), *v))
                .collect();
            for ((s, id, w), kpis) in &api {
                if s != scope {
                    continue;
                }
                let want = kpis[key].as_f64().unwrap();
                let have = got
                    .get(&(id.clone(), w.clone()))
                    .unwrap_or_else(|| panic!("no {metric} for {scope} {id} {w}"));
                assert!(
                    close(*have, want),
                    "{metric} {scope} {id} {w}: {have} != {want}"
                );
                compared += 1;
            }
            assert_eq!(
                got.len(),
                ids.len(),
                "{metric}: one series per {scope} and window"
            );
        }

        // Histograms: _count equals the +Inf bucket, and buckets grow.
        for h in ["sales_lead_response_seconds", "sales_sales_cycle_seconds"] {
            let inf =
                scoped(prom.query(&format!("sum by ({byc}window) ({h}_bucket{{le=\"+Inf\"}})")));
            for (l, v) in &inf {
                let kpis = &api[&(scope.to_owned(), id_of(l), window_of(l))];
                assert_eq!(*v, kpis[format!("{}_count", &h[6..])].as_f64().unwrap());
                compared += 1;
            }
            let not_cumulative = prom.query(&format!(
                "sum by ({byc}window, le) ({h}_bucket) < on ({byc}window) group_left \
                 sum by ({byc}window) ({h}_bucket{{le=\"{}\"}})",
                if h.contains("lead") { "60" } else { "86400" }
            ));
            assert!(not_cumulative.is_empty(), "{h}: {not_cumulative:?}");
        }

        // Stage exits: a series per stage and outcome; the API lists the
        // non-zero ones.
        let exits = scoped(prom.query(&format!(
            "sum by ({byc}window, stage, outcome) (sales_stage_exits)"
        )));
        assert_eq!(exits.len(), ids.len() * 5 * 3);
        for (l, v) in &exits {
            let kpis = &api[&(scope.to_owned(), id_of(l), window_of(l))];
            let want = kpis["stage_exits"][&l["stage"]][&l["outcome"]]
                .as_f64()
                .unwrap_or(0.0);
            assert_eq!(*v, want, "stage_exits {l:?}");
            compared += 1;
        }

        // Current state: the same in every window of the API.
        for (metric, key, extra) in CURRENT {
            let selector = extra.map_or(String::new(), |(k, v)| format!("{{{k}=\"{v}\"}}"));
            let samples = scoped(prom.query(&format!("sum by ({by}) ({metric}{selector})")));
            assert_eq!(samples.len(), ids.len() / windows.len(), "{metric}");
            for (l, v) in &samples {
                for w in &windows {
                    let kpis = &api[&(scope.to_owned(), id_of(l), w.clone())];
                    assert!(close(*v, kpis[key].as_f64().unwrap()), "{metric} {l:?} {w}");
                    compared += 1;
                }
            }
        }
        for (metric, total, by_stage) in [
            ("sales_open_deals", "open_deals", "open_deals_by_stage"),
            (
                "sales_open_pipeline_amount",
                "open_pipeline_amount",
                "open_pipeline_amount_by_stage",
            ),
        ] {
            for (l, v) in scoped(prom.query(&format!("sum by ({by}) ({metric})"))) {
                let kpis = &api[&(scope.to_owned(), id_of(&l), "7d".to_owned())];
                assert!(close(v, kpis[total].as_f64().unwrap()), "{metric} {l:?}");
                compared += 1;
            }
            for (l, v) in scoped(prom.query(&format!(
                "sum by ({byc}stage) ({metric}{{stage!=\"none\"}})"
            ))) {
                let kpis = &api[&(scope.to_owned(), id_of(&l), "7d".to_owned())];
                let want = kpis[by_stage][&l["stage"]].as_f64().unwrap_or(0.0);
                assert!(close(v, want), "{metric} {l:?}");
                compared += 1;
            }
        }
    }
    // Every part of every API result was compared, and more.
    assert!(
        compared > SCALARS.len() * api.len(),
        "{compared} values compared"
    );
    let reps = api.keys().filter(|(s, _, _)| s == "rep").count() / windows.len();
    eprintln!("{compared} values compared over {reps} reps");

    // Nothing the service exports is malformed for Prometheus.
    let up = prom.query("up{job=\"kpistream\"}");
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].1, 1.0);
    let (_, body) = svc.get("/metrics").unwrap();
    assert_promtool_clean(&body);
}

/// Reads a whole topic until it has been quiet for a while: the latest
/// value of each key, and how many messages there were.
fn latest_by_key(broker: &Broker, topic: &str) -> (BTreeMap<String, Value>, usize) {
    let consumer = broker.reader(topic);
    let mut latest = BTreeMap::new();
    let mut n = 0;
    let start = Instant::now();
    let mut last = Instant::now();
    while start.elapsed() < Duration::from_secs(90)
        && (n == 0 || last.elapsed() < Duration::from_secs(3))
    {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let value: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            latest.insert(key, value);
            n += 1;
            last = Instant::now();
        }
    }
    (latest, n)
}

#[test]
fn kpi_topic_holds_the_latest_document_of_every_kpi() {
    let (_scratch, broker, mut svc) = golden_service(
        "kpitopic",
        &[KPI_TOPIC],
        &[
            ("KPISTREAM__OUTPUT__TOPIC", KPI_TOPIC),
            ("KPISTREAM__OUTPUT__INTERVAL", "1s"),
        ],
    );
    // Two rounds after every message is in: the state is steady.
    std::thread::sleep(Duration::from_millis(2500));
    let first = svc.kpis().unwrap();
    let api = api_results(&first);
    let (latest, before) = latest_by_key(&broker, KPI_TOPIC);
    assert_eq!(latest.len(), api.len(), "one key per scope, id and window");

    // One more call of rep-0000 (team-02) at T: its rep, team and org
    // documents change in all 7 windows, and only those are produced again.
    let as_of = first["as_of"].as_str().unwrap();
    let call = format!(
        r#"{{"id":"evt-extra","type":"call.logged","occurred_at":"{as_of}","call_id":"c-extra","rep_id":"rep-0000","outcome":"connected","duration_seconds":30}}"#
    );
    produce(&broker.producer(), "crm-events", &[call.into_bytes()], 0);
    wait_until("the extra call", Duration::from_secs(60), || {
        svc.accounted() > GOLDEN_MESSAGES
    });
    std::thread::sleep(Duration::from_millis(2500));
    let doc = svc.kpis().unwrap();
    assert_eq!(doc["as_of"].as_str(), Some(as_of), "T did not move");
    // Stop: a last round is produced and flushed at shutdown.
    let (status, _) = svc.terminate();
    assert!(status.success());
    let (latest, after) = latest_by_key(&broker, KPI_TOPIC);
    assert_eq!(after - before, 3 * 7, "only the changed documents");

    let api = api_results(&doc);
    assert_eq!(latest.len(), api.len());
    for ((scope, id, window), kpis) in &api {
        let key = format!("{scope}/{id}/{window}");
        let v = latest
            .get(&key)
            .unwrap_or_else(|| panic!("no document for {key}"));
        assert_eq!(v["scope"], scope.as_str());
        assert_eq!(v["id"], id.as_str());
        assert_eq!(v["window"], window.as_str());
        // `as_of` is T when the document last changed.
        assert!(v["as_of"].as_str().unwrap() <= as_of, "{key}");
        assert_json_close(&v["kpis"], kpis, &key);
    }
    let calls = |key: &str| latest[key]["kpis"]["calls"].as_i64().unwrap();
    let old = api_results(&first);
    for key in ["rep/rep-0000/90d", "team/team-02/90d", "org/all/90d"] {
        let parts: Vec<&str> = key.split('/').collect();
        let was = &old[&(parts[0].into(), parts[1].into(), parts[2].into())];
        assert_eq!(calls(key), was["calls"].as_i64().unwrap() + 1, "{key}");
    }
    eprintln!("{after} KPI documents for {} keys", latest.len());
}
