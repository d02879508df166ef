//! Fault injection with librdkafka's mock cluster: failed and slow commits,
//! a broker that goes down and comes back. The service (a child process)
//! connects to the mock cluster's loopback listener; the KPIs must stay the
//! golden ones.

mod common;

use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::ClientConfig;
use serde_json::Value;

use common::kafka::{golden_lines, outcomes_total, produce, wait_until, Scratch, Service};
use common::{assert_json_close, fixture};

const TOTAL: u64 = common::kafka::GOLDEN_MESSAGES;

fn mock() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("crm-events", 3, 1).unwrap();
    cluster.create_topic("crm-events-dlq", 1, 1).unwrap();
    cluster
}

fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "0")
        .create()
        .unwrap()
}

fn assert_golden_kpis(doc: &Value) {
    let want: Value =
        serde_json::from_slice(&std::fs::read(fixture("golden/expected.json")).unwrap()).unwrap();
    assert_eq!(doc["outcomes"]["applied"], want["outcomes"]["applied"]);
    assert_eq!(outcomes_total(doc), TOTAL);
    let keyed = |d: &Value| -> Value {
        d["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    format!("{}/{}/{}", r["scope"], r["id"], r["window"]),
                    r["kpis"].clone(),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    assert_json_close(&keyed(doc), &keyed(&want), "results");
}

#[test]
fn failed_and_slow_commits_do_not_change_the_kpis() {
    let scratch = Scratch::new("commitfail");
    let cluster = mock();
    let bootstrap = cluster.bootstrap_servers();
    // Every offset commit fails for a while, and the broker is slow.
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 20],
    );
    cluster
        .broker_round_trip_time(1, Duration::from_millis(150))
        .unwrap();
    let lines = golden_lines();
    produce(&producer(&bootstrap), "crm-events", &lines, 0);
    let snaps = scratch.0.join("snapshots");
    let mut svc = Service::start_on(&bootstrap, "f1", &snaps, &scratch.0.join("svc.log"), &[]);
    wait_until("all consumed", Duration::from_secs(120), || {
        svc.accounted() >= TOTAL
    });
    assert_golden_kpis(&svc.kpis().unwrap());
    // Snapshots, not commits, are the truth: a kill -9 after failed commits
    // resumes from the snapshots and counts nothing twice.
    svc.restart();
    wait_until("restored", Duration::from_secs(120), || {
        svc.accounted() >= TOTAL
    });
    assert_golden_kpis(&svc.kpis().unwrap());
}

#[test]
fn broker_down_then_up_resumes_with_exact_kpis() {
    let scratch = Scratch::new("brokerdown");
    let cluster = mock();
    let bootstrap = cluster.bootstrap_servers();
    let lines = golden_lines();
    let (first, rest) = lines.split_at(6_000);
    let p = producer(&bootstrap);
    produce(&p, "crm-events", first, 0);
    let snaps = scratch.0.join("snapshots");
    let svc = Service::start_on(&bootstrap, "f2", &snaps, &scratch.0.join("svc.log"), &[]);
    wait_until("first part", Duration::from_secs(120), || {
        svc.accounted() >= 6_000
    });
    cluster.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let (status, _) = svc.get("/api/v1/kpis?scope=org").unwrap();
    assert_eq!(status, 200, "still serving during the outage");
    assert_eq!(svc.get("/healthz").unwrap().0, 200);
    cluster.broker_up(1).unwrap();
    produce(&p, "crm-events", rest, 0);
    wait_until("the rest", Duration::from_secs(120), || {
        svc.accounted() >= TOTAL
    });
    assert_golden_kpis(&svc.kpis().unwrap());
}
