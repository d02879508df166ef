//! `kpistream run` against a real Kafka-protocol broker (tansu) in its own
//! process, on a 3-partition topic: the golden log gives the golden KPIs,
//! through `kill -9` and restarts, a broker restart, and a second instance
//! taking over; every malformed message reaches the dead-letter topic.

mod common;

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

use rdkafka::message::{Headers, Message};
use serde_json::Value;

use common::kafka::{golden_lines, outcomes_total, produce, wait_until, Broker, Scratch, Service};
use common::{assert_json_close, fixture};

const TOPIC: &str = "crm-events";
const DLQ: &str = "crm-events-dlq";
const TOTAL: u64 = common::kafka::GOLDEN_MESSAGES;

fn expected() -> Value {
    serde_json::from_slice(&fs::read(fixture("golden/expected.json")).unwrap()).unwrap()
}

fn keyed(doc: &Value) -> Value {
    let mut m = serde_json::Map::new();
    for r in doc["results"].as_array().unwrap() {
        m.insert(
            format!("{}/{}/{}", r["scope"], r["id"], r["window"]),
            r["kpis"].clone(),
        );
    }
    Value::Object(m)
}

/// Every KPI equals the golden document; applied and ignored counts too. (A
/// corrupted redelivery keyed differently from its original lands on another
/// partition and is rejected there rather than dropped as a duplicate, so
/// only their sum is fixed; see tests/partitioned.rs.)
fn assert_golden(doc: &Value) {
    let want = expected();
    let (got, exp) = (&doc["outcomes"], &want["outcomes"]);
    assert_eq!(got["applied"], exp["applied"], "outcomes {got}");
    assert_eq!(got["ignored"], exp["ignored"], "outcomes {got}");
    assert_eq!(outcomes_total(doc), TOTAL, "every message accounted once");
    assert_json_close(&keyed(doc), &keyed(&want), "results");
}

fn setup(name: &str) -> (Scratch, Broker) {
    let scratch = Scratch::new(name);
    let broker = Broker::start(&scratch.0);
    broker.create_topic(TOPIC, 3);
    broker.create_topic(DLQ, 1);
    (scratch, broker)
}

fn wait_all(s: &Service, timeout: Duration) -> Value {
    wait_until("every message accounted", timeout, || {
        s.accounted() >= TOTAL
    });
    s.kpis().unwrap()
}

/// A message read back: its payload and headers.
type Record = (Vec<u8>, HashMap<String, String>);

/// Reads a whole topic: (partition, offset) -> (payload, headers).
fn read_topic(broker: &Broker, topic: &str, expect: usize) -> HashMap<(i32, i64), Record> {
    let consumer = broker.reader(topic);
    let mut out = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while out.len() < expect && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let mut headers = HashMap::new();
            if let Some(h) = m.headers() {
                for h in h.iter() {
                    headers.insert(
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            out.insert(
                (m.partition(), m.offset()),
                (m.payload().unwrap_or_default().to_vec(), headers),
            );
        }
    }
    out
}

#[test]
fn golden_log_through_kafka_gives_golden_kpis_and_dead_letters() {
    let (scratch, broker) = setup("golden");
    let lines = golden_lines();
    produce(&broker.producer(), TOPIC, &lines, 0);
    let snaps = scratch.0.join("snapshots");
    let mut svc = Service::start(&broker, "g1", &snaps, &scratch.0.join("svc.log"), &[]);
    wait_until("readiness", Duration::from_secs(60), || {
        svc.get("/readyz").is_some_and(|(s, _)| s == 200)
    });
    let doc = wait_all(&svc, Duration::from_secs(120));
    assert_golden(&doc);

    // Every rejected message is on the dead-letter topic, byte for byte, with
    // its source coordinates and reason.
    let rejected = doc["outcomes"]["rejected"].as_u64().unwrap() as usize;
    let dlq = read_topic(&broker, DLQ, rejected);
    assert_eq!(dlq.len(), rejected);
    let input = read_topic(&broker, TOPIC, lines.len());
    assert_eq!(input.len(), lines.len());
    let reasons: Vec<&str> = kpistream::event::RejectReason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    for (payload, headers) in dlq.values() {
        let src = (
            headers["kpistream.source.partition"]
                .parse::<i32>()
                .unwrap(),
            headers["kpistream.source.offset"].parse::<i64>().unwrap(),
        );
        assert_eq!(headers["kpistream.source.topic"], TOPIC);
        assert!(reasons.contains(&headers["kpistream.reason"].as_str()));
        assert_eq!(&input[&src].0, payload, "original bytes at {src:?}");
    }

    // SIGTERM: final snapshot, commit, exit 0 in bounded time.
    let (status, took) = svc.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    // A restart resumes from the snapshots: nothing counted twice.
    let svc = Service::start(&broker, "g1", &snaps, &scratch.0.join("svc2.log"), &[]);
    let doc = wait_all(&svc, Duration::from_secs(60));
    assert_golden(&doc);
}

#[test]
fn kill_9_at_random_points_then_restart_gives_golden_kpis() {
    let (scratch, broker) = setup("kill9");
    let lines = golden_lines();
    let snaps = scratch.0.join("snapshots");
    let log = scratch.0.join("svc.log");
    let mut svc = Service::start(&broker, "k1", &snaps, &log, &[]);
    let producer = broker.producer();
    let feeder = std::thread::spawn(move || produce(&producer, TOPIC, &lines, 2_500));
    // Kill points spread over the ~5 s of live production, seeded by pid.
    let seed = u64::from(std::process::id());
    let mut waits: Vec<u64> = (0..4)
        .map(|i| 400 + (seed * (i + 7) * 7919) % 1_300)
        .collect();
    waits.sort_unstable();
    for w in waits {
        std::thread::sleep(Duration::from_millis(w));
        svc.restart();
    }
    feeder.join().unwrap();
    let doc = wait_all(&svc, Duration::from_secs(120));
    assert_golden(&doc);
    // And once more after everything was consumed.
    svc.restart();
    let doc = wait_all(&svc, Duration::from_secs(60));
    assert_golden(&doc);
}

#[test]
fn broker_restart_mid_stream_stops_progress_not_the_service() {
    let (scratch, mut broker) = setup("brokerrestart");
    let lines = golden_lines();
    let (first, rest) = lines.split_at(5_000);
    let snaps = scratch.0.join("snapshots");
    let svc = Service::start(&broker, "b1", &snaps, &scratch.0.join("svc.log"), &[]);
    let producer = broker.producer();
    produce(&producer, TOPIC, first, 0);
    wait_until("first part consumed", Duration::from_secs(60), || {
        svc.accounted() >= 5_000
    });
    broker.stop();
    std::thread::sleep(Duration::from_secs(2));
    // The service keeps serving the last KPIs while the broker is away.
    let (status, _) = svc.get("/api/v1/kpis").unwrap();
    assert_eq!(status, 200);
    assert_eq!(svc.accounted(), 5_000);
    broker.restart();
    produce(&broker.producer(), TOPIC, rest, 0);
    let doc = wait_all(&svc, Duration::from_secs(180));
    assert_golden(&doc);
}

#[test]
fn two_instances_split_partitions_and_one_takes_over_from_snapshots() {
    let (scratch, broker) = setup("twoinst");
    let lines = golden_lines();
    let snaps = scratch.0.join("snapshots");
    let mut a = Service::start(&broker, "pair", &snaps, &scratch.0.join("a.log"), &[]);
    let b = Service::start(&broker, "pair", &snaps, &scratch.0.join("b.log"), &[]);
    // Both in the group with partitions of their own before any message.
    wait_until("both instances ready", Duration::from_secs(60), || {
        [&a, &b]
            .iter()
            .all(|s| s.get("/readyz").is_some_and(|(st, _)| st == 200))
    });
    produce(&broker.producer(), TOPIC, &lines, 0);
    wait_until(
        "both instances share all messages",
        Duration::from_secs(120),
        || a.accounted() + b.accounted() >= TOTAL,
    );
    let (da, db) = (a.kpis().unwrap(), b.kpis().unwrap());
    assert!(
        outcomes_total(&da) > 0 && outcomes_total(&db) > 0,
        "both own partitions"
    );
    // Per-instance partial counted KPIs add up to the single-instance value.
    let want = keyed(&expected());
    let (ka, kb) = (keyed(&da), keyed(&db));
    for (key, kpis) in want.as_object().unwrap() {
        for name in [
            "calls",
            "won_amount",
            "meetings_missed",
            "open_deals",
            "mrr",
        ] {
            let part = |k: &Value| k.get(key).map_or(0.0, |v| v[name].as_f64().unwrap());
            let sum = part(&ka) + part(&kb);
            let exp = kpis[name].as_f64().unwrap();
            assert!(
                (sum - exp).abs() <= 1e-9 * exp.abs().max(1.0),
                "{key} {name}: {sum} != {exp}"
            );
        }
    }
    // Each instance exports partition series for its own partitions only
    // (a partition it gave up in a rebalance takes its series with it).
    let owned = |s: &Service| -> std::collections::BTreeSet<String> {
        let (_, text) = s.get("/metrics").unwrap();
        text.lines()
            .filter(|l| l.starts_with("kpistream_snapshot_age_seconds{"))
            .filter_map(|l| {
                l.split("partition=\"")
                    .nth(1)?
                    .split('"')
                    .next()
                    .map(String::from)
            })
            .collect()
    };
    wait_until(
        "the tick exports every owned partition",
        Duration::from_secs(10),
        || owned(&a).len() + owned(&b).len() >= 3,
    );
    let (pa, pb) = (owned(&a), owned(&b));
    assert!(pa.is_disjoint(&pb), "{pa:?} {pb:?}");
    assert_eq!(pa.len() + pb.len(), 3, "{pa:?} {pb:?}");
    // Killed without a word: the survivor takes its partitions over from
    // their snapshots and ends with every KPI of the single instance.
    a.kill9();
    let doc = wait_all(&b, Duration::from_secs(120));
    assert_golden(&doc);
}
