//! The embedded default (`kpistream demo`) and the Kafka side of
//! `kpistream simulate`: the simulator producing to a topic, and the whole
//! service on librdkafka's in-process mock cluster.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tracing::info;

use crate::config::{ClockMode, Settings};
use crate::sim::{SimConfig, Simulator};

const TOPIC: &str = "crm-events";
const DLQ: &str = "crm-events-dlq";

fn wall_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// How `produce` paces messages.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// `rate` messages per second of wall time; 0 is as fast as possible.
    Rate(f64),
    /// Each message when the wall clock reaches its `occurred_at`
    /// (earlier ones at once): a live stream after a backfill.
    Live,
}

/// Produces simulator messages to `topic` until `count` (if any) or `stop`.
pub fn produce(
    sim: Simulator,
    brokers: &str,
    topic: &str,
    rate: f64,
    count: Option<u64>,
    stop: Option<Arc<AtomicBool>>,
) -> anyhow::Result<()> {
    produce_paced(sim, brokers, topic, Pace::Rate(rate), count, stop)
}

pub fn produce_paced(
    mut sim: Simulator,
    brokers: &str,
    topic: &str,
    pace: Pace,
    count: Option<u64>,
    stop: Option<Arc<AtomicBool>>,
) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let started = Instant::now();
    let mut sent: u64 = 0;
    while count.is_none_or(|c| sent < c) {
        if stop.as_ref().is_some_and(|s| s.load(Ordering::Acquire)) {
            break;
        }
        let msg = sim.next_message();
        match pace {
            Pace::Rate(r) if r > 0.0 => {
                let due = started + Duration::from_secs_f64(sent as f64 / r);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            Pace::Live => {
                let ahead = msg.at - wall_micros();
                if ahead > 0 {
                    std::thread::sleep(Duration::from_micros(ahead as u64));
                }
            }
            Pace::Rate(_) => {}
        }
        let mut record = BaseRecord::to(topic).payload(&msg.payload);
        if let Some(k) = &msg.key {
            record = record.key(k.as_str());
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        sent += 1;
        if sent % 1_000_000 == 0 {
            info!(sent, "simulator progress");
        }
    }
    producer.flush(Duration::from_secs(60))?;
    info!(
        sent,
        secs = started.elapsed().as_secs_f64(),
        "simulator done"
    );
    Ok(())
}

/// The demo: mock cluster, live simulator, and the service on them.
pub async fn run(mut settings: Settings, rate: f64, backfill: i64) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1)?;
    cluster.create_topic(TOPIC, 3, 1)?;
    cluster.create_topic(DLQ, 1, 1)?;
    let brokers = cluster.bootstrap_servers();
    let sim = Simulator::new(SimConfig {
        seed: 42,
        reps: 12,
        teams: 3,
        start: wall_micros() - backfill,
        events_per_second: rate,
        faults: true,
    });
    settings.engine.teams = sim.teams();
    settings.engine.clock = ClockMode::Wall;
    settings.kafka.brokers = brokers.clone();
    settings.kafka.topics = vec![TOPIC.to_owned()];
    settings.kafka.dead_letter_topic = Some(DLQ.to_owned());
    let dir = std::env::temp_dir().join(format!("kpistream-demo-{}", std::process::id()));
    settings.snapshot.dir = dir.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let producer_stop = stop.clone();
    let producer = std::thread::spawn(move || {
        produce_paced(sim, &brokers, TOPIC, Pace::Live, None, Some(producer_stop))
    });
    let addr = settings.http_listen;
    info!(
        "demo: live KPIs at http://{addr}/api/v1/kpis?scope=team&window=24h and http://{addr}/metrics (Ctrl-C stops)"
    );
    let result = crate::service::run(settings, crate::service::signal()).await;
    stop.store(true, Ordering::Release);
    let _ = producer.join();
    let _ = std::fs::remove_dir_all(dir);
    drop(cluster);
    result
}
