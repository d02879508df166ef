//! Kafka ingestion: a consumer group member that keeps one [`Processor`]
//! per assigned partition, snapshots it, and commits offsets only as far as
//! a durable snapshot covers.
//!
//! The loop runs on its own thread and owns the consumer. Rebalance
//! callbacks run inside `poll` on that same thread: an assignment restores
//! each partition from its newest valid snapshot and starts consuming at the
//! offset that snapshot covers (the beginning without one); a revocation
//! snapshots and commits the partition before it is released. Rejected
//! messages go to the dead-letter topic; a snapshot (and so a commit) waits
//! until every dead letter before it is acknowledged, so none is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use tracing::{error, info, warn};

use crate::config::{ClockMode, EngineConfig, Settings};
use crate::engine::View;
use crate::processor::{Counts, Outcome, Processor};
use crate::snapshot::{self, Store};
use crate::telemetry::{Metrics, PartitionLabels, ResultLabels};

/// Dead-letter headers, beside the message's own.
pub const HEADER_SOURCE_TOPIC: &str = "kpistream.source.topic";
pub const HEADER_SOURCE_PARTITION: &str = "kpistream.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "kpistream.source.offset";
pub const HEADER_REASON: &str = "kpistream.reason";
pub const HEADER_DETAIL: &str = "kpistream.detail";
/// The index of the rejected element in a native payload of several.
pub const HEADER_ELEMENT: &str = "kpistream.element";

/// What the HTTP side asks the ingest loop for: a copy of the KPI state.
pub struct ViewRequest {
    pub reply: tokio::sync::oneshot::Sender<StateCopy>,
}

/// A copy of every assigned partition's KPI state at the instance clock.
pub struct StateCopy {
    pub view: View,
    pub counts: Counts,
    pub partitions: usize,
}

struct Part {
    topic: String,
    partition: i32,
    processor: Processor,
    /// The next offset to process.
    next: i64,
    /// The offset the newest durable snapshot covers.
    snapshotted: i64,
    /// Bytes of the newest snapshot written (0 before the first).
    snapshot_size: usize,
    last_snapshot: Instant,
    last_snapshot_unix: f64,
    /// The partition's high watermark, from client statistics.
    high: Option<i64>,
    /// [`Inner::assignments`] when it was assigned: a message polled
    /// before that belongs to an earlier assignment, and the client
    /// fetches it again from the restored offset.
    assigned: u64,
}

struct Inner {
    /// Counts partition assignments; read by the poll loop after each poll.
    assignments: Arc<std::sync::atomic::AtomicU64>,
    cfg: EngineConfig,
    /// Topics whose payloads a CRM adapter maps.
    formats: std::collections::BTreeMap<String, crate::crm::Format>,
    store: Store,
    every_events: u64,
    interval: Duration,
    metrics: Arc<Metrics>,
    dlq: Option<DeadLetters>,
    parts: Vec<Part>,
    /// Outcomes counted since the last publication to the metrics.
    pending: Counts,
}

/// The consumer's context: rebalances and statistics land here.
struct Ctx {
    inner: Arc<Mutex<Inner>>,
    ready: Arc<AtomicBool>,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        let mut inner = lock(&self.inner);
        let folded = inner.parts.iter().fold([0u64; 2], |acc, p| {
            let f = p.processor.engine.folded();
            [acc[0] + f[0], acc[1] + f[1]]
        });
        for (kind, n) in [("rep", folded[0]), ("team", folded[1])] {
            inner
                .metrics
                .limit_folded
                .get_or_create(&crate::telemetry::KindLabels { kind })
                .set(n as i64);
        }
        for part in &mut inner.parts {
            if let Some(p) = stats
                .topics
                .get(&part.topic)
                .and_then(|t| t.partitions.get(&part.partition))
            {
                if p.hi_offset >= 0 {
                    part.high = Some(p.hi_offset);
                }
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        lock(&self.inner).metrics.kafka_errors.inc();
        warn!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            rdkafka::consumer::RebalanceProtocol::Cooperative
        );
        let mut inner = lock(&self.inner);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let wanted: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                for (topic, partition) in wanted {
                    let offset = inner.restore(&topic, partition);
                    if let Err(e) = tpl.set_partition_offset(&topic, partition, offset) {
                        error!(%e, topic, partition, "cannot set the start offset");
                    }
                }
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = result {
                    error!(%e, "assignment failed");
                }
                inner
                    .metrics
                    .rebalances
                    .get_or_create(&kind("assign"))
                    .inc();
                self.ready.store(true, Ordering::Release);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                let revoked: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                for (topic, partition) in revoked {
                    if let Some(i) = inner.find(&topic, partition) {
                        if lost {
                            warn!(
                                topic,
                                partition, "partition lost: its state is dropped unsaved"
                            );
                        } else {
                            inner.snapshot(i, consumer, CommitMode::Sync);
                        }
                        inner.parts.swap_remove(i);
                        // Its series go with it: a stale lag or snapshot
                        // age must not feed alerts on another instance's
                        // partition.
                        let l = labels(&topic, partition);
                        let m = &inner.metrics;
                        m.consumer_lag.remove(&l);
                        m.snapshot_age.remove(&l);
                        m.snapshot_size.remove(&l);
                        m.snapshot_last_success.remove(&l);
                    }
                }
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    error!(%e, "unassignment failed");
                }
                inner
                    .metrics
                    .rebalances
                    .get_or_create(&kind("revoke"))
                    .inc();
            }
            other => {
                error!(error = ?other, "rebalance error");
                if !cooperative {
                    let _ = consumer.unassign();
                }
            }
        }
        inner
            .metrics
            .partitions_assigned
            .set(inner.parts.len() as i64);
    }

    fn pre_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {}
}

fn kind(kind: &'static str) -> crate::telemetry::KindLabels {
    crate::telemetry::KindLabels { kind }
}

fn labels(topic: &str, partition: i32) -> PartitionLabels {
    PartitionLabels {
        topic: topic.to_owned(),
        partition,
    }
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Inner {
    fn find(&self, topic: &str, partition: i32) -> Option<usize> {
        self.parts
            .iter()
            .position(|p| p.partition == partition && p.topic == topic)
    }

    /// Restores a newly assigned partition; returns where to start reading.
    fn restore(&mut self, topic: &str, partition: i32) -> Offset {
        if let Some(i) = self.find(topic, partition) {
            return Offset::Offset(self.parts[i].next);
        }
        let loaded = match self.store.load(topic, partition, &self.cfg) {
            Ok(l) => l,
            Err(e) => {
                error!(%e, topic, partition, "cannot read the snapshot directory");
                snapshot::Loaded {
                    restored: None,
                    skipped: Vec::new(),
                }
            }
        };
        for (path, why) in &loaded.skipped {
            warn!(path = %path.display(), %why, topic, partition, "snapshot unusable, falling back to an older one");
            self.metrics.restore_fallbacks.inc();
        }
        let format = self.formats.get(topic).copied().unwrap_or_default();
        let (processor, next) = match loaded.restored {
            Some(r) => {
                info!(
                    topic,
                    partition,
                    offset = r.next_offset,
                    "partition restored from snapshot"
                );
                (r.processor.with_format(format), r.next_offset)
            }
            None => {
                info!(
                    topic,
                    partition, "no snapshot: partition starts from the beginning"
                );
                (Processor::new(self.cfg.clone()).with_format(format), 0)
            }
        };
        let assigned = self.assignments.fetch_add(1, Ordering::AcqRel) + 1;
        self.parts.push(Part {
            assigned,
            topic: topic.to_owned(),
            partition,
            processor,
            next,
            snapshotted: next,
            snapshot_size: 0,
            last_snapshot: Instant::now(),
            last_snapshot_unix: unix_micros() as f64 / 1e6,
            high: None,
        });
        if next == 0 {
            Offset::Beginning
        } else {
            Offset::Offset(next)
        }
    }

    /// Processes messages as polled, in order: each run of consecutive
    /// messages of one partition of a canonical topic is parsed ahead and
    /// applied as the replay does ([`Processor::process_run`]), with
    /// exactly the outcomes and state of one message at a time; messages of
    /// CRM topics one by one.
    /// Each message comes with [`Inner::assignments`] as it was polled.
    fn handle_batch(&mut self, batch: &[(BorrowedMessage<'_>, u64)]) {
        let mut start = 0;
        while start < batch.len() {
            let (topic, partition) = (batch[start].0.topic(), batch[start].0.partition());
            let end = start
                + batch[start..]
                    .iter()
                    .take_while(|(m, _)| m.topic() == topic && m.partition() == partition)
                    .count();
            self.handle_run(&batch[start..end]);
            start = end;
        }
    }

    /// Processes consecutive messages of one partition.
    fn handle_run(&mut self, run: &[(BorrowedMessage<'_>, u64)]) {
        let Some(i) = self.find(run[0].0.topic(), run[0].0.partition()) else {
            return;
        };
        let part = &mut self.parts[i];
        // Messages polled before the partition's assignment are fetched
        // again from its restored offset; those a restored snapshot
        // already covers are skipped.
        let (next, assigned) = (part.next, part.assigned);
        let run: Vec<&BorrowedMessage<'_>> = run
            .iter()
            .filter(|(m, polled)| *polled >= assigned && m.offset() >= next)
            .map(|(m, _)| m)
            .collect();
        if !part.processor.is_canonical() || run.len() <= 1 {
            for m in run {
                self.handle(m);
            }
            return;
        }
        let Some(last) = run.last() else {
            return;
        };
        let last = last.offset();
        let payloads: Vec<&[u8]> = run
            .iter()
            .map(|m| m.payload().unwrap_or_default())
            .collect();
        let started = Instant::now();
        let (pending, dlq) = (&mut self.pending, &self.dlq);
        // A canonical message has exactly one outcome, in order.
        let mut k = 0;
        part.processor
            .process_run(&payloads, unix_micros(), |outcome| {
                pending.record(outcome);
                if let (Outcome::Rejected(r), Some(dlq)) = (outcome, dlq) {
                    dlq.send(run[k], r.reason.as_str(), &r.detail, None);
                }
                k += 1;
            });
        debug_assert_eq!(k, run.len());
        let each = started.elapsed().as_secs_f64() / run.len() as f64;
        for _ in 0..run.len() {
            self.metrics.apply_duration.observe(each);
        }
        part.next = last + 1;
    }

    /// Processes one message of an assigned partition.
    fn handle(&mut self, m: &BorrowedMessage<'_>) {
        let Some(i) = self.find(m.topic(), m.partition()) else {
            return;
        };
        let part = &mut self.parts[i];
        if m.offset() < part.next {
            return; // already covered by the restored snapshot
        }
        let payload = m.payload().unwrap_or_default();
        let started = Instant::now();
        let (pending, dlq) = (&mut self.pending, &self.dlq);
        part.processor
            .process_elements(payload, unix_micros(), |outcome, element| {
                pending.record(outcome);
                if let (Outcome::Rejected(r), Some(dlq)) = (outcome, dlq) {
                    dlq.send(m, r.reason.as_str(), &r.detail, element);
                }
            });
        self.metrics
            .apply_duration
            .observe(started.elapsed().as_secs_f64());
        part.next = m.offset() + 1;
    }

    /// Snapshots a partition and commits the offset it covers. Returns
    /// false (and keeps the older snapshot) when it could not.
    fn snapshot(&mut self, i: usize, consumer: &BaseConsumer<Ctx>, mode: CommitMode) -> bool {
        if let Some(dlq) = &self.dlq {
            if let Err(e) = dlq.settle() {
                warn!(%e, "dead letters not yet acknowledged: snapshot postponed");
                self.metrics.snapshot_failures.inc();
                return false;
            }
        }
        let part = &mut self.parts[i];
        let (topic, partition, next) = (part.topic.clone(), part.partition, part.next);
        if next != part.snapshotted {
            let started = Instant::now();
            let capacity = part.snapshot_size + part.snapshot_size / 4;
            let written = snapshot::encode_with_capacity(&part.processor, next, capacity)
                .map_err(|e| e.to_string())
                .and_then(|image| {
                    self.store
                        .write(&topic, partition, next, &image)
                        .map_err(|e| e.to_string())
                });
            match written {
                Ok(size) => {
                    self.metrics
                        .snapshot_duration
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics
                        .snapshot_size
                        .get_or_create(&labels(&topic, partition))
                        .set(size as i64);
                    part.snapshotted = next;
                    part.snapshot_size = size as usize;
                }
                Err(e) => {
                    error!(error = e, topic, partition, "snapshot failed");
                    self.metrics.snapshot_failures.inc();
                    return false;
                }
            }
        }
        part.last_snapshot = Instant::now();
        part.last_snapshot_unix = unix_micros() as f64 / 1e6;
        self.metrics
            .snapshot_last_success
            .get_or_create(&labels(&topic, partition))
            .set(part.last_snapshot_unix);
        if next > 0 {
            let mut tpl = TopicPartitionList::new();
            if tpl
                .add_partition_offset(&topic, partition, Offset::Offset(next))
                .is_ok()
            {
                if let Err(e) = consumer.commit(&tpl, mode) {
                    warn!(%e, topic, partition, "offset commit failed; the snapshot stands");
                }
            }
        }
        true
    }

    /// Periodic work: publish counts and gauges, snapshot what is due.
    fn tick(&mut self, consumer: &BaseConsumer<Ctx>) {
        self.metrics.add_counts(&self.pending);
        self.pending = Counts::default();
        for i in 0..self.parts.len() {
            let p = &self.parts[i];
            let new = (p.next - p.snapshotted).max(0) as u64;
            let due =
                new >= self.every_events || (new > 0 && p.last_snapshot.elapsed() >= self.interval);
            if due {
                self.snapshot(i, consumer, CommitMode::Async);
            }
            let p = &self.parts[i];
            let l = labels(&p.topic, p.partition);
            if let Some(high) = p.high {
                self.metrics
                    .consumer_lag
                    .get_or_create(&l)
                    .set((high - p.next).max(0));
            }
            // The age of the state not yet covered by a snapshot: zero for a
            // quiet partition whose snapshot covers every message, so that
            // nights and weekends do not look like stale snapshots.
            let age = if p.next == p.snapshotted {
                0.0
            } else {
                p.last_snapshot.elapsed().as_secs_f64()
            };
            self.metrics.snapshot_age.get_or_create(&l).set(age);
        }
    }

    /// A copy of the KPI state, every partition read at the instance clock.
    fn copy(&mut self) -> StateCopy {
        let now = match self.cfg.clock {
            ClockMode::Wall => Some(unix_micros()),
            ClockMode::Event => self
                .parts
                .iter()
                .filter_map(|p| p.processor.engine.now())
                .max(),
        };
        let mut view = View::default();
        let mut counts = Counts::default();
        for p in &mut self.parts {
            if let Some(now) = now {
                p.processor.engine.set_now(now);
            }
            view.merge(p.processor.engine.view());
            counts.merge(&p.processor.counts);
        }
        StateCopy {
            view,
            counts,
            partitions: self.parts.len(),
        }
    }
}

/// The dead-letter producer: idempotent, retrying without a deadline.
struct DeadLetters {
    topic: String,
    producer: ThreadedProducer<DlqCtx>,
    failed: Arc<Mutex<Vec<FailedLetter>>>,
}

struct FailedLetter {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: OwnedHeaders,
}

struct DlqCtx {
    failed: Arc<Mutex<Vec<FailedLetter>>>,
    metrics: Arc<Metrics>,
}

impl ClientContext for DlqCtx {}

impl ProducerContext for DlqCtx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let ok = result.is_ok();
        self.metrics
            .dead_letters
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        if let Err((e, m)) = result {
            warn!(%e, "dead letter not delivered; it will be sent again");
            let letter = FailedLetter {
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers: m.headers().map(|h| h.detach()).unwrap_or_default(),
            };
            self.failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(letter);
        }
    }
}

impl DeadLetters {
    /// Dead-letters message `m`, whole, for one rejection: of the message,
    /// or of its element `element` (a HubSpot batch's notification, a
    /// record of a change naming several), named in `kpistream.element`.
    fn send(&self, m: &BorrowedMessage<'_>, reason: &str, detail: &str, element: Option<usize>) {
        let mut headers = OwnedHeaders::new();
        if let Some(h) = m.headers() {
            for h in h.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let (partition, offset) = (m.partition().to_string(), m.offset().to_string());
        if let Some(i) = element {
            headers = headers.insert(Header {
                key: HEADER_ELEMENT,
                value: Some(&i.to_string()),
            });
        }
        for (key, value) in [
            (HEADER_SOURCE_TOPIC, m.topic()),
            (HEADER_SOURCE_PARTITION, &partition),
            (HEADER_SOURCE_OFFSET, &offset),
            (HEADER_REASON, reason),
            (HEADER_DETAIL, detail),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        self.enqueue(FailedLetter {
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }

    fn enqueue(&self, letter: FailedLetter) {
        let mut record = BaseRecord::to(&self.topic)
            .payload(&letter.payload)
            .headers(letter.headers.clone());
        if let Some(k) = &letter.key {
            record = record.key(k);
        }
        let mut record = record;
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((e, r)) => {
                    // Queue full: wait for deliveries to drain, then retry.
                    warn!(%e, "dead-letter queue full, waiting");
                    std::thread::sleep(Duration::from_millis(50));
                    record = r;
                }
            }
        }
    }

    /// Waits until every dead letter sent so far is acknowledged; sends
    /// failed ones again. An error means some are still outstanding.
    fn settle(&self) -> KafkaResult<()> {
        let failed: Vec<FailedLetter> =
            std::mem::take(&mut *self.failed.lock().unwrap_or_else(|e| e.into_inner()));
        for letter in failed {
            self.enqueue(letter);
        }
        self.producer.flush(Duration::from_secs(10))?;
        if self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            Ok(())
        } else {
            Err(rdkafka::error::KafkaError::Flush(
                rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
            ))
        }
    }
}

/// The librdkafka configuration shared by the consumer and producers.
pub fn client_config(settings: &Settings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.kafka.brokers);
    for (k, v) in &settings.kafka.properties {
        c.set(k, v);
    }
    c
}

/// Handles the HTTP side keeps to the ingest loop.
pub struct Control {
    pub shutdown: Arc<AtomicBool>,
    pub ready: Arc<AtomicBool>,
}

/// Runs the ingest loop until `shutdown` is set, then snapshots and commits
/// every partition and returns.
pub fn run(
    settings: &Settings,
    metrics: Arc<Metrics>,
    requests: Receiver<ViewRequest>,
    control: Control,
) -> anyhow::Result<()> {
    let dlq = match &settings.kafka.dead_letter_topic {
        None => None,
        Some(topic) => {
            let failed = Arc::new(Mutex::new(Vec::new()));
            let producer: ThreadedProducer<DlqCtx> = client_config(settings)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("message.timeout.ms", "0")
                .create_with_context(DlqCtx {
                    failed: failed.clone(),
                    metrics: metrics.clone(),
                })?;
            Some(DeadLetters {
                topic: topic.clone(),
                producer,
                failed,
            })
        }
    };
    let assignments = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let inner = Arc::new(Mutex::new(Inner {
        assignments: assignments.clone(),
        cfg: settings.engine.clone(),
        formats: settings.kafka.formats.clone(),
        store: Store::new(&settings.snapshot.dir, settings.snapshot.keep),
        every_events: settings.snapshot.every_events,
        interval: settings.snapshot.interval,
        metrics: metrics.clone(),
        dlq,
        parts: Vec::new(),
        pending: Counts::default(),
    }));
    let mut config = client_config(settings);
    config
        .set("group.id", &settings.kafka.group_id)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "5000")
        // Prefetch at most 16 MiB per partition (librdkafka's default is
        // 64 MiB): memory stays bounded by state, not by the fetch queue.
        .set("queued.max.messages.kbytes", "16384");
    for (k, v) in &settings.kafka.properties {
        config.set(k, v);
    }
    let consumer: BaseConsumer<Ctx> = config.create_with_context(Ctx {
        inner: inner.clone(),
        ready: control.ready.clone(),
    })?;
    let topics: Vec<&str> = settings.kafka.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    info!(topics = ?topics, group = %settings.kafka.group_id, "consuming");

    let mut last_tick = Instant::now();
    while !control.shutdown.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(m)) => {
                // What the client has fetched already, up to a run: its
                // state lookups overlap, as in the replay.
                let mut batch = vec![(m, assignments.load(Ordering::Acquire))];
                while batch.len() < crate::processor::RUN {
                    match consumer.poll(Duration::ZERO) {
                        Some(Ok(m)) => batch.push((m, assignments.load(Ordering::Acquire))),
                        Some(Err(e)) => {
                            metrics.kafka_errors.inc();
                            warn!(%e, "consumer error");
                            break;
                        }
                        None => break,
                    }
                }
                lock(&inner).handle_batch(&batch);
            }
            Some(Err(e)) => {
                metrics.kafka_errors.inc();
                warn!(%e, "consumer error");
            }
            None => {}
        }
        while let Ok(req) = requests.try_recv() {
            let copy = lock(&inner).copy();
            let _ = req.reply.send(copy);
        }
        if last_tick.elapsed() >= Duration::from_millis(200) {
            lock(&inner).tick(&consumer);
            last_tick = Instant::now();
        }
    }

    info!("shutting down: final snapshots");
    {
        let mut inner = lock(&inner);
        inner.metrics.add_counts(&inner.pending.clone());
        inner.pending = Counts::default();
        for i in 0..inner.parts.len() {
            inner.snapshot(i, &consumer, CommitMode::Sync);
        }
    }
    consumer.unsubscribe();
    drop(consumer);
    // Answer the requests that raced the shutdown.
    while let Ok(req) = requests.try_recv() {
        let _ = req.reply.send(lock(&inner).copy());
    }
    info!("ingest stopped");
    Ok(())
}
