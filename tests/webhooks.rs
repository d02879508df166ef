//! End to end: CRM webhook requests posted to `kpistream run`'s receiver
//! reach the tansu topics and then the KPIs. Every request of the CRM
//! fixtures is signed (or authenticated) as its CRM does it; forged and
//! expired requests are refused with 401 and counted; a signed request
//! delivered again is accepted and its events are duplicates; with the
//! broker down the receiver answers 503, never 200, and the CRM's retry
//! lands once the broker is back.

mod common;

use std::fs;
use std::io::BufReader;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use common::kafka::{http_request, outcomes_total, wait_until, Broker, Scratch, Service};
use common::{assert_json_close, fixture, fixture_lines, num};
use kpistream::crm::signature::{close_signature, hubspot_v3_signature, relay_signature};

const HUBSPOT_SECRET: &str = "hubspot-app-client-secret";
const PIPEDRIVE_AUTH: &str = "kpistream:pipedrive-pw";
const SALESFORCE_SECRET: &str = "salesforce-relay-secret";
/// Close's `signature_key`, hex as Close returns it.
const CLOSE_KEY: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
/// The tokens of the fixtures' two Zoho channels, and of workflow webhooks.
const ZOHO_TOKENS: &str = "1000000068001=kpi-tok-1,1000000068002=kpi-tok-1,workflow=wf-tok-9";

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

impl Crm<'_> {
    fn close(&self, body: &str, key_hex: &str) -> u16 {
        let key = kpistream::crm::signature::unhex(key_hex).unwrap();
        let ts = (now_ms().parse::<i64>().unwrap() / 1000).to_string();
        let sig = close_signature(&key, &ts, body.as_bytes());
        http_request(
            self.svc.http,
            "POST",
            "/webhooks/close",
            &[("close-sig-hash", &sig), ("close-sig-timestamp", &ts)],
            body.as_bytes(),
        )
        .unwrap()
        .0
    }

    fn zoho(&self, body: &str, token: &str) -> u16 {
        http_request(
            self.svc.http,
            "POST",
            "/webhooks/zoho",
            &[("X-Kpistream-Token", token)],
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
    broker.create_topic("crm-close", 2);
    broker.create_topic("crm-zoho", 2);
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
                "crm-hubspot,crm-pipedrive,crm-salesforce,crm-close,crm-zoho",
            ),
            ("KPISTREAM__WEBHOOKS__HUBSPOT_TOPIC", "crm-hubspot"),
            ("KPISTREAM__WEBHOOKS__CLOSE_TOPIC", "crm-close"),
            ("KPISTREAM__WEBHOOKS__ZOHO_TOPIC", "crm-zoho"),
            ("KPISTREAM_CLOSE_SECRET", CLOSE_KEY),
            ("KPISTREAM_ZOHO_SECRET", ZOHO_TOKENS),
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
    let close = fixture_lines("crm/close.ndjson");
    let wrong_key = "00".repeat(32);
    assert_eq!(crm.close(&close[0], &wrong_key), 401);
    let zoho = fixture_lines("crm/zoho.ndjson");
    assert_eq!(
        crm.zoho(&zoho[0].replace("kpi-tok-1", "kpi-tok-X"), ""),
        401
    );
    assert_eq!(
        crm.zoho(&zoho[17], "kpi-tok-1"),
        401,
        "a workflow webhook with a channel's token"
    );
    assert_eq!(webhook_count(&svc, "close", "bad_signature"), 1.0);
    assert_eq!(webhook_count(&svc, "zoho", "bad_signature"), 2.0);
    // HubSpot signs the URI with its listed escapes decoded.
    let query = "/webhooks/hubspot?portal=%2862515%29";
    let plain = format!(
        "https://127.0.0.1:{}/webhooks/hubspot?portal=(62515)",
        svc.http
    );
    let empty_ts = now_ms();
    let sig_q = hubspot_v3_signature(HUBSPOT_SECRET, "POST", &plain, b"[]", &empty_ts);
    let (status, _) = http_request(
        svc.http,
        "POST",
        query,
        &[
            ("X-HubSpot-Signature-v3", &sig_q),
            ("X-HubSpot-Request-Timestamp", &empty_ts),
        ],
        b"[]",
    )
    .unwrap();
    assert_eq!(status, 200);
    // Pipedrive's scheme name in any case.
    let auth = format!(
        "BASIC {}",
        kpistream::config::base64(PIPEDRIVE_AUTH.as_bytes())
    );
    let (status, _) = http_request(
        svc.http,
        "POST",
        "/webhooks/pipedrive",
        &[("Authorization", &auth)],
        b"[]",
    )
    .unwrap();
    assert_eq!(status, 200);

    // Accepted: every fixture request, in order. The first HubSpot request
    // is the one signed above; delivered again (HubSpot missed our answer)
    // it is accepted too, and its three events are duplicates.
    assert_eq!(crm.hubspot_signed(body, &ts, &sig), 200);
    assert_eq!(crm.hubspot_signed(body, &ts, &sig), 200);
    assert_eq!(webhook_count(&svc, "hubspot", "redelivered"), 1.0);
    for l in &fixture_lines("crm/hubspot.ndjson")[1..] {
        assert_eq!(crm.hubspot(l), 200, "{l}");
    }
    for l in fixture_lines("crm/pipedrive.ndjson") {
        assert_eq!(crm.pipedrive_as(&l, PIPEDRIVE_AUTH), 200, "{l}");
    }
    for l in &close {
        assert_eq!(crm.close(l, CLOSE_KEY), 200, "{l}");
    }
    // Zoho bodies carry their token; the two that are not callbacks at all
    // (cut short, and no channel) cannot be verified and are refused.
    for (i, l) in zoho.iter().enumerate() {
        let want = if i >= zoho.len() - 2 { 401 } else { 200 };
        assert_eq!(crm.zoho(l, "wf-tok-9"), want, "{l}");
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

    // The outcomes of the reviewed rows of every fixture (what replay and
    // `kpistream adapt` give), less the two Zoho bodies refused, plus the
    // three duplicates of the HubSpot request delivered again, plus the
    // two empty bodies posted above (an empty HubSpot batch, and a
    // Pipedrive body that is not an object).
    let mut expected = std::collections::BTreeMap::<String, u64>::new();
    let crms = ["hubspot", "pipedrive", "salesforce", "close", "zoho"];
    for c in crms {
        let rows = fixture_lines(&format!("crm/{c}.adapted.ndjson"));
        let last_line = fixture_lines(&format!("crm/{c}.ndjson")).len() as u64;
        for r in rows {
            let r: Value = serde_json::from_str(&r).unwrap();
            if c == "zoho" && r["line"].as_u64().unwrap() >= last_line - 1 {
                continue;
            }
            *expected
                .entry(r["outcome"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    *expected.entry("duplicate".into()).or_default() += 3;
    *expected.entry("ignored".into()).or_default() += 1; // the empty HubSpot batch
    *expected.entry("rejected".into()).or_default() += 1; // `[]` is no Pipedrive payload
    let total: u64 = expected.values().sum();
    wait_until(
        "every webhook event accounted",
        Duration::from_secs(120),
        || svc.kpis().is_some_and(|d| outcomes_total(&d) >= total),
    );
    let doc = svc.kpis().unwrap();
    assert_eq!(
        doc["outcomes"],
        serde_json::json!({"applied": expected["applied"], "duplicate": expected["duplicate"],
                           "ignored": expected["ignored"], "rejected": expected["rejected"]})
    );
    // Every 30-day KPI equals the replay of the expected canonical events.
    let canonical: Vec<u8> = crms
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
    // HubSpot 2, Pipedrive 1, Salesforce 2, Close 1, Zoho 1.
    assert_eq!(num(&doc, "org", "all", "30d", "deals_won"), 7.0);
    // The unparseable bodies and unmappable payloads are in the dead-letter
    // topic, each once: read until it has been quiet for a while, so that
    // too many would show. A rejected element's dead letter is its whole
    // message, with the element's index.
    use rdkafka::message::{Headers, Message};
    let dlq = broker.reader("crm-events-dlq");
    let mut dead = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut quiet_since = std::time::Instant::now();
    while std::time::Instant::now() < deadline
        && (dead.len() < expected["rejected"] as usize
            || quiet_since.elapsed() < Duration::from_secs(5))
    {
        if let Some(Ok(m)) = dlq.poll(Duration::from_millis(200)) {
            let header = |k: &str| {
                m.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == k)
                        .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                })
            };
            dead.push((
                header("kpistream.detail"),
                header("kpistream.element"),
                m.payload().unwrap_or_default().to_vec(),
            ));
            quiet_since = std::time::Instant::now();
        }
    }
    assert_eq!(dead.len() as u64, expected["rejected"]);
    let (_, element, payload) = dead
        .iter()
        .find(|(d, _, _)| d.as_deref() == Some("objectId is missing"))
        .expect("the HubSpot notice without objectId is dead-lettered");
    assert_eq!(element.as_deref(), Some("1"));
    let whole: Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(
        whole.as_array().map(Vec::len),
        Some(2),
        "its message, with the association change beside it"
    );
}
