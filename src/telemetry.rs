//! The service's own metrics, under the `kpistream_` namespace: one typed
//! struct, registered once. The ingest loop counts locally and publishes in
//! batches where it is hot (outcomes).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use crate::event::RejectReason;
use crate::processor::{Counts, IgnoreReason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpRejectLabels {
    pub endpoint: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub crm: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every operational metric of the service.
pub struct Metrics {
    pub events: Family<OutcomeLabels, Counter>,
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    pub apply_duration: Histogram,
    pub snapshot_age: Family<PartitionLabels, FloatGauge>,
    pub snapshot_last_success: Family<PartitionLabels, FloatGauge>,
    pub snapshot_duration: Histogram,
    pub snapshot_size: Family<PartitionLabels, Gauge>,
    pub snapshot_failures: Counter,
    pub restore_fallbacks: Counter,
    pub rebalances: Family<KindLabels, Counter>,
    pub partitions_assigned: Gauge,
    pub dead_letters: Family<ResultLabels, Counter>,
    pub kafka_errors: Counter,
    pub scrape_duration: Histogram,
    pub scrape_series: Gauge,
    pub scrape_bytes: Gauge,
    pub folded_reps: Gauge,
    pub output_messages: Family<ResultLabels, Counter>,
    pub http_rejected: Family<HttpRejectLabels, Counter>,
    pub webhook_requests: Family<WebhookLabels, Counter>,
    pub limit_folded: Family<KindLabels, Gauge>,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            events: Family::default(),
            consumer_lag: Family::default(),
            apply_duration: Histogram::new(exponential_buckets(1e-7, 4.0, 10)),
            snapshot_age: Family::default(),
            snapshot_last_success: Family::default(),
            snapshot_duration: Histogram::new(exponential_buckets(0.001, 4.0, 9)),
            snapshot_size: Family::default(),
            snapshot_failures: Counter::default(),
            restore_fallbacks: Counter::default(),
            rebalances: Family::default(),
            partitions_assigned: Gauge::default(),
            dead_letters: Family::default(),
            kafka_errors: Counter::default(),
            scrape_duration: Histogram::new(exponential_buckets(0.001, 3.0, 8)),
            scrape_series: Gauge::default(),
            scrape_bytes: Gauge::default(),
            folded_reps: Gauge::default(),
            output_messages: Family::default(),
            http_rejected: Family::default(),
            webhook_requests: Family::default(),
            limit_folded: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("kpistream");
        r.register(
            "events",
            "Input messages by outcome (applied, duplicate, ignored, rejected) and reason",
            m.events.clone(),
        );
        r.register(
            "consumer_lag_messages",
            "Messages in the partition not yet processed by this instance",
            m.consumer_lag.clone(),
        );
        r.register_with_unit(
            "apply_duration",
            "Time to parse, validate and apply one message",
            Unit::Seconds,
            m.apply_duration.clone(),
        );
        r.register_with_unit(
            "snapshot_age",
            "Time since the partition's last successful snapshot while it has messages no snapshot covers (0 when every message is covered)",
            Unit::Seconds,
            m.snapshot_age.clone(),
        );
        r.register(
            "snapshot_last_success_timestamp_seconds",
            "Unix time of the partition's last successful snapshot",
            m.snapshot_last_success.clone(),
        );
        r.register_with_unit(
            "snapshot_duration",
            "Time to encode and durably write one partition snapshot",
            Unit::Seconds,
            m.snapshot_duration.clone(),
        );
        r.register_with_unit(
            "snapshot_size",
            "Size of the partition's last snapshot",
            Unit::Bytes,
            m.snapshot_size.clone(),
        );
        r.register(
            "snapshot_failures",
            "Snapshots that could not be written (the partition keeps its older one)",
            m.snapshot_failures.clone(),
        );
        r.register(
            "snapshot_restore_fallbacks",
            "Snapshots skipped on restore because they were corrupt or unreadable",
            m.restore_fallbacks.clone(),
        );
        r.register(
            "rebalances",
            "Partition assignments and revocations",
            m.rebalances.clone(),
        );
        r.register(
            "partitions_assigned",
            "Partitions this instance owns",
            m.partitions_assigned.clone(),
        );
        r.register(
            "dead_letter_messages",
            "Rejected messages written to the dead-letter topic, by result",
            m.dead_letters.clone(),
        );
        r.register(
            "kafka_errors",
            "Errors reported by the Kafka client (it reconnects by itself)",
            m.kafka_errors.clone(),
        );
        r.register_with_unit(
            "scrape_render_duration",
            "Time to render the KPI part of /metrics",
            Unit::Seconds,
            m.scrape_duration.clone(),
        );
        r.register(
            "scrape_series",
            "KPI series in the last /metrics response",
            m.scrape_series.clone(),
        );
        r.register_with_unit(
            "scrape_size",
            "Size of the last /metrics response",
            Unit::Bytes,
            m.scrape_bytes.clone(),
        );
        r.register(
            "folded_reps",
            "Reps exported as rep=\"other\" by the cardinality guard",
            m.folded_reps.clone(),
        );
        r.register(
            "output_messages",
            "KPI documents produced to the output topic, by result",
            m.output_messages.clone(),
        );
        r.register(
            "http_rejected_requests",
            "HTTP requests refused, by endpoint and reason (unauthorized, busy)",
            m.http_rejected.clone(),
        );
        r.register(
            "webhook_requests",
            "CRM webhook requests, by CRM and result (accepted, produce_failed, \
             missing_credentials, expired, bad_signature, redelivered)",
            m.webhook_requests.clone(),
        );
        r.register(
            "limit_folded_events",
            "Events whose rep (kind=rep) or team (kind=team) was counted as `other` \
             because limits.max_reps / max_teams were reached, in the partitions held",
            m.limit_folded.clone(),
        );
        m
    }

    /// Adds a batch of locally counted outcomes.
    pub fn add_counts(&self, c: &Counts) {
        if c.applied > 0 {
            self.outcome("applied", "").inc_by(c.applied);
        }
        if c.duplicate > 0 {
            self.outcome("duplicate", "").inc_by(c.duplicate);
        }
        for r in IgnoreReason::ALL {
            let n = c.ignored[r as usize];
            if n > 0 {
                self.outcome("ignored", r.as_str()).inc_by(n);
            }
        }
        for r in RejectReason::ALL {
            let n = c.rejected[r as usize];
            if n > 0 {
                self.outcome("rejected", r.as_str()).inc_by(n);
            }
        }
    }

    fn outcome(&self, outcome: &'static str, reason: &'static str) -> Counter {
        self.events
            .get_or_create(&OutcomeLabels { outcome, reason })
            .clone()
    }

    /// Makes every outcome and reason series exist at zero, so that rates
    /// and alerts work before the first bad message.
    pub fn init_outcomes(&self) {
        self.outcome("applied", "");
        self.outcome("duplicate", "");
        for r in IgnoreReason::ALL {
            self.outcome("ignored", r.as_str());
        }
        for r in RejectReason::ALL {
            self.outcome("rejected", r.as_str());
        }
        for result in ["ok", "error"] {
            let _ = self.dead_letters.get_or_create(&ResultLabels { result });
            let _ = self.output_messages.get_or_create(&ResultLabels { result });
        }
        for endpoint in ["metrics", "api"] {
            let _ = self.http_rejected.get_or_create(&HttpRejectLabels {
                endpoint,
                reason: "unauthorized",
            });
        }
        for kind in ["rep", "team"] {
            let _ = self.limit_folded.get_or_create(&KindLabels { kind });
        }
        for kind in ["assign", "revoke"] {
            let _ = self.rebalances.get_or_create(&KindLabels { kind });
        }
    }
}
