//! End to end: CRM webhook requests posted to `kpistream run`'s receiver
//! reach the tansu topics and then the KPIs. Every request of the CRM
//! fixtures is signed (or authenticated) as its CRM does it; forged,
//! expired and replayed requests are refused with 401 and counted; with the
//! broker down the receiver answers 503, never 200, and the CRM's retry
//! lands once the broker is back.

mod common;

use std::fs;
use std::io::BufReader;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use common::kafka::{http_request, outcomes_total, wait_until, Broker, Scratch, Service};
use common::{assert_json_close, fixture, fixture_lines, num};
use kpistream::crm::signature::{hubspot_v3_signature, relay_signature};

const HUBSPOT_SECRET: &str = "hubspot-app-client-secret";
const PIPEDRIVE_AUTH: &str = "kpistream:pipedrive-pw";
const SALESFORCE_SECRET: &str = "salesforce-relay-secret";

fn now_ms() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string()
}

struct Crm<'a> {
    svc: &'a Service,
}

impl Crm<'_> {
    fn hubspot_signed(&self, body: &str, ts: &str, sig: &str) -> u16 {
        http_request(
            self.svc.http,
            "POST",
            "/webhooks/hubspot",
            &[
                ("X-HubSpot-Signature-v3", sig),
                ("X-HubSpot-Request-Timestamp", ts),
            ],
            body.as_bytes(),
        )
        .unwrap()
        .0
    }

    fn hubspot_signature(&self, body: &str, ts: &str) -> String {
        let url = format!("https://127.0.0.1:{}/webhooks/hubspot", self.svc.http);
        hubspot_v3_signature(HUBSPOT_SECRET, "POST", &url, body.as_bytes(), ts)
    }

    /// As HubSpot sends it: signed now.
    fn hubspot(&self, body: &str) -> u16 {
        let ts = now_ms();
        self.hubspot_signed(body, &ts, &self.hubspot_signature(body, &ts))
    }

    fn pipedrive_as(&self, body: &str, user_password: &str) -> u16 {
        let auth = format!(
            "Basic {}",
            kpistream::config::base64(user_password.as_bytes())
        );
        http_request(
            self.svc.http,
            "POST",
            "/webhooks/pipedrive",
            &[("Authorization", &auth)],
            body.as_bytes(),
        )
        .unwrap()
        .0
    }

    fn salesforce(&self, body: &str) -> u16 {
        let ts = now_ms();
        let sig = relay_signature(SALESFORCE_SECRET, body.as_bytes(), &ts);
        http_request(
            self.svc.http,
            "POST",
            "/webhooks/salesforce",
            &[
                ("X-Kpistream-Signature", &sig),
                ("X-Kpistream-Timestamp", &ts),
            ],
            body.as_bytes(),
        )
        .unwrap()
        .0
    }
}

/// `kpistream_webhook_requests_total{crm, result}` from /metrics.
fn webhook_count(svc: &Service, crm: &str, result: &str) -> f64 {
    let (_, text) = svc.get("/metrics").unwrap();
    let want = format!("kpistream_webhook_requests_total{{crm=\"{crm}\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[test]
fn crm_webhooks_reach_the_topics_and_the_kpis() {
    let scratch = Scratch::new("webhooks");
    let mut broker = Broker::start(&scratch.0);
    broker.create_topic("crm-hubspot", 3);
    broker.create_topic("crm-pipedrive", 2);
    broker.create_topic("crm-salesforce", 2);
    broker.create_topic("crm-events-dlq", 1);
    let config = fixture("crm/crm.toml").display().to_string();
    let mut svc = Service::start(
        &broker,
        "webhooks",
        &scratch.0.join("snapshots"),
        &scratch.0.join("svc.log"),
        &[
            ("KPISTREAM_CONFIG", &config),
            (
                "KPISTREAM__KAFKA__TOPICS",
                "crm-hubspot,crm-pipedrive,crm-salesforce",
            ),
            ("KPISTREAM__WEBHOOKS__HUBSPOT_TOPIC", "crm-hubspot"),
            ("KPISTREAM__WEBHOOKS__PIPEDRIVE_TOPIC", "crm-pipedrive"),
            ("KPISTREAM__WEBHOOKS__SALESFORCE_TOPIC", "crm-salesforce"),
            ("KPISTREAM_HUBSPOT_SECRET", HUBSPOT_SECRET),
            ("KPISTREAM_PIPEDRIVE_SECRET", PIPEDRIVE_AUTH),
            ("KPISTREAM_SALESFORCE_SECRET", SALESFORCE_SECRET),
        ],
    );
    let crm = Crm { svc: &svc };

    // Refused: forged, tampered, expired, replayed, unauthenticated.
    let body = &fixture_lines("crm/hubspot.ndjson")[0];
    let ts = now_ms();
    let sig = crm.hubspot_signature(body, &ts);
    let tampered = body.replace("12000", "99000");
    assert_eq!(crm.hubspot_signed(&tampered, &ts, &sig), 401);
    assert_eq!(crm.hubspot_signed(body, &ts, "bm90IGEgc2lnbmF0dXJl"), 401);
    let old = (ts.parse::<i64>().unwrap() - 600_000).to_string();
    assert_eq!(
        crm.hubspot_signed(body, &old, &crm.hubspot_signature(body, &old)),
        401
    );
    assert_eq!(crm.pipedrive_as("{}", "kpistream:wrong"), 401);
    assert_eq!(
        http_request(svc.http, "POST", "/webhooks/salesforce", &[], b"{}")
            .unwrap()
            .0,
        401
    );
    assert_eq!(webhook_count(&svc, "hubspot", "bad_signature"), 2.0);
    assert_eq!(webhook_count(&svc, "hubspot", "expired"), 1.0);
    assert_eq!(webhook_count(&svc, "pipedrive", "bad_signature"), 1.0);
    assert_eq!(
        webhook_count(&svc, "salesforce", "missing_credentials"),
        1.0
    );

    // Accepted: every fixture request, in order. The first HubSpot request
    // is the one signed above; played again it is refused as a replay.
    assert_eq!(crm.hubspot_signed(body, &ts, &sig), 200);
    assert_eq!(crm.hubspot_signed(body, &ts, &sig), 401);
    assert_eq!(webhook_count(&svc, "hubspot", "replayed"), 1.0);
    for l in &fixture_lines("crm/hubspot.ndjson")[1..] {
        assert_eq!(crm.hubspot(l), 200, "{l}");
    }
    for l in fixture_lines("crm/pipedrive.ndjson") {
        assert_eq!(crm.pipedrive_as(&l, PIPEDRIVE_AUTH), 200, "{l}");
    }
    let sf = fixture_lines("crm/salesforce.ndjson");
    for l in &sf[..sf.len() - 1] {
        assert_eq!(crm.salesforce(l), 200, "{l}");
    }

    // The broker goes down: the receiver does not answer 200 for what it
    // could not store; the CRM retries once it is back. (The service is
    // restarted with the broker: tansu 0.6 loses its idempotent-producer
    // state on restart and its storage fails on the old producer id's next
    // batch, which a Kafka broker answers normally.)
    broker.stop();
    let last = sf.last().unwrap();
    assert_eq!(crm.salesforce(last), 503);
    assert_eq!(webhook_count(&svc, "salesforce", "produce_failed"), 1.0);
    svc.kill9();
    broker.restart();
    svc.restart();
    let crm = Crm { svc: &svc };
    wait_until("the retry is stored", Duration::from_secs(90), || {
        crm.salesforce(last) == 200
    });

    // 22 + 16 + 19 outcomes, as the replay of the same fixtures gives.
    wait_until(
        "every webhook event accounted",
        Duration::from_secs(120),
        || svc.kpis().is_some_and(|d| outcomes_total(&d) >= 57),
    );
    let doc = svc.kpis().unwrap();
    assert_eq!(
        doc["outcomes"],
        serde_json::json!({"applied": 36, "duplicate": 6, "ignored": 8, "rejected": 7})
    );
    // Every 30-day KPI equals the replay of the expected canonical events.
    let canonical: Vec<u8> = ["hubspot", "pipedrive", "salesforce"]
        .iter()
        .flat_map(|c| fs::read(fixture(&format!("crm/{c}.canonical.ndjson"))).unwrap())
        .collect();
    let settings = kpistream::config::Settings::load_with_env(
        Some(&fixture("crm/crm.toml")),
        &Default::default(),
        std::iter::empty(),
    )
    .unwrap();
    let (want, _) =
        kpistream::replay::replay(settings.engine, BufReader::new(canonical.as_slice())).unwrap();
    let month = |d: &Value| -> Value {
        let mut m = serde_json::Map::new();
        for r in d["results"].as_array().unwrap() {
            if r["window"] == "30d" {
                m.insert(format!("{}/{}", r["scope"], r["id"]), r["kpis"].clone());
            }
        }
        Value::Object(m)
    };
    assert_json_close(&month(&doc), &month(&want), "30d results");
    assert_eq!(num(&doc, "org", "all", "30d", "deals_won"), 3.0);
    assert_eq!(num(&doc, "org", "all", "30d", "meetings_held"), 3.0);
    // The unparseable bodies and unmappable payloads are in the dead-letter topic.
    let dlq = broker.reader("crm-events-dlq");
    let mut dead = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dead < 7 && std::time::Instant::now() < deadline {
        if let Some(Ok(_)) = dlq.poll(Duration::from_millis(200)) {
            dead += 1;
        }
    }
    assert_eq!(dead, 7);
}
