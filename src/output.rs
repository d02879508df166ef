//! The KPI topic: every `output.interval`, the KPI documents that changed
//! since the last publication are produced to `output.topic`, keyed
//! `scope/id/window`, so that a compacted topic holds the latest value of
//! every KPI. Which documents changed is pure ([`Changes`]); producing them
//! is the thin part around it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::config::Settings;
use crate::engine::View;
use crate::event::format_timestamp;
use crate::kpi::{self, Layout};
use crate::telemetry::{Metrics, ResultLabels};

/// One message of the KPI topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `scope/id/window`, e.g. `team/emea/7d`.
    pub key: String,
    /// `{"as_of", "scope", "id", "window", "kpis"}` as JSON.
    pub value: Vec<u8>,
}

/// Remembers what was last published for every key, by a hash of its KPIs
/// (not of `as_of`, which moves on every publication).
#[derive(Debug, Default)]
pub struct Changes {
    last: HashMap<String, u64>,
}

impl Changes {
    /// The records whose KPIs differ from the last ones returned for the
    /// same key (all of them the first time). A record is remembered as
    /// published when it is returned; [`Changes::forget`] undoes that for a
    /// record that could not be produced, so the next round retries it.
    pub fn diff(&mut self, layout: &Layout, view: &View) -> Vec<Record> {
        let doc = kpi::document(layout, view, &kpi::Filter::default());
        let as_of = view.now.map(format_timestamp);
        let mut out = Vec::new();
        let Value::Object(mut doc) = doc else {
            return out;
        };
        let Some(Value::Array(results)) = doc.remove("results") else {
            return out;
        };
        for r in results {
            let (Some(scope), Some(id), Some(window)) =
                (r["scope"].as_str(), r["id"].as_str(), r["window"].as_str())
            else {
                continue;
            };
            let key = format!("{scope}/{id}/{window}");
            let kpis = serde_json::to_vec(&r["kpis"]).unwrap_or_default();
            let hash = xxhash_rust::xxh3::xxh3_64(&kpis);
            if self.last.get(&key) == Some(&hash) {
                continue;
            }
            self.last.insert(key.clone(), hash);
            let value = json!({
                "as_of": as_of,
                "scope": scope,
                "id": id,
                "window": window,
                "kpis": r["kpis"],
            });
            out.push(Record {
                key,
                value: serde_json::to_vec(&value).unwrap_or_default(),
            });
        }
        out
    }

    /// Makes the next [`Changes::diff`] return `key` again.
    pub fn forget(&mut self, key: &str) {
        self.last.remove(key);
    }
}

struct OutCtx {
    metrics: Arc<Metrics>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ClientContext for OutCtx {}

impl ProducerContext for OutCtx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let result = match result {
            Ok(_) => "ok",
            Err((e, m)) => {
                warn!(%e, "KPI document not delivered; it is sent again next round");
                if let Some(Ok(key)) = rdkafka::Message::key_view::<str>(m) {
                    if let Ok(mut f) = self.failed.lock() {
                        f.push(key.to_owned());
                    }
                }
                "error"
            }
        };
        self.metrics
            .output_messages
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}

/// Produces the changed KPI documents of the views it is given.
pub struct Publisher {
    topic: String,
    producer: ThreadedProducer<OutCtx>,
    changes: Changes,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    layout: Arc<Layout>,
}

impl Publisher {
    pub fn new(
        settings: &Settings,
        topic: &str,
        layout: Arc<Layout>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let producer = crate::source::client_config(settings)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "100")
            .set("compression.type", "lz4")
            .create_with_context(OutCtx {
                metrics,
                failed: failed.clone(),
            })?;
        info!(topic, "publishing KPI documents");
        Ok(Publisher {
            topic: topic.to_owned(),
            producer,
            changes: Changes::default(),
            failed,
            layout,
        })
    }

    /// Produces every document that changed since the last round; returns
    /// how many were queued.
    pub fn publish(&mut self, view: &View) -> usize {
        if let Ok(mut failed) = self.failed.lock() {
            for key in failed.drain(..) {
                self.changes.forget(&key);
            }
        }
        let mut queued = 0;
        for r in self.changes.diff(&self.layout, view) {
            let record = BaseRecord::to(&self.topic).key(&r.key).payload(&r.value);
            match self.producer.send(record) {
                Ok(()) => queued += 1,
                Err((e, _)) => {
                    warn!(%e, key = %r.key, "KPI document not queued; it is sent again next round");
                    self.changes.forget(&r.key);
                }
            }
        }
        queued
    }

    /// Waits up to `timeout` for queued documents to be delivered.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            warn!(%e, "KPI documents still queued at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;
    use crate::processor::Processor;

    fn processor() -> (Processor, Layout) {
        let cfg = EngineConfig::on_event_clock();
        (Processor::new(cfg.clone()), Layout::new(&cfg))
    }

    fn call(id: &str, rep: &str, at: &str) -> Vec<u8> {
        format!(
            r#"{{"id":"{id}","call_id":"{id}","type":"call.logged","occurred_at":"{at}","rep_id":"{rep}","team_id":"emea","outcome":"connected","duration_seconds":60}}"#
        )
        .into_bytes()
    }

    #[test]
    fn first_round_publishes_everything_then_only_what_changed() {
        let (mut p, layout) = processor();
        p.process(&call("c1", "ann", "2026-11-20T10:00:00Z"), 0);
        p.process(&call("c2", "bob", "2026-11-20T10:00:00Z"), 0);
        let mut changes = Changes::default();
        let first = changes.diff(&layout, &p.engine.view());
        // org/all, rep/ann, rep/bob, team/emea, for each of 7 windows.
        assert_eq!(first.len(), 4 * 7);
        let doc: Value = serde_json::from_slice(&first[0].value).unwrap();
        assert_eq!(first[0].key, "org/all/1h");
        assert_eq!(doc["scope"], "org");
        assert_eq!(doc["id"], "all");
        assert_eq!(doc["window"], "1h");
        assert_eq!(doc["as_of"], "2026-11-20T10:00:00.000000Z");
        assert_eq!(doc["kpis"]["calls"], 2);

        assert!(changes.diff(&layout, &p.engine.view()).is_empty());

        // A call of ann at the same instant changes ann, emea and org in
        // every window, and nothing of bob.
        p.process(&call("c3", "ann", "2026-11-20T10:00:00Z"), 0);
        let keys: Vec<String> = changes
            .diff(&layout, &p.engine.view())
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys.len(), 3 * 7);
        assert!(keys.iter().all(|k| !k.starts_with("rep/bob/")), "{keys:?}");
        assert!(keys.contains(&"rep/ann/30d".to_owned()));

        changes.forget("rep/bob/7d");
        let again = changes.diff(&layout, &p.engine.view());
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].key, "rep/bob/7d");
    }

    #[test]
    fn documents_equal_the_api_results() {
        let (mut p, layout) = processor();
        p.process(&call("c1", "ann", "2026-11-20T10:00:00Z"), 0);
        let view = p.engine.view();
        let doc = kpi::document(&layout, &view, &kpi::Filter::default());
        let records = Changes::default().diff(&layout, &view);
        for (r, api) in records.iter().zip(doc["results"].as_array().unwrap()) {
            let v: Value = serde_json::from_slice(&r.value).unwrap();
            assert_eq!(v["kpis"], api["kpis"]);
            assert_eq!(
                r.key,
                format!(
                    "{}/{}/{}",
                    api["scope"].as_str().unwrap(),
                    api["id"].as_str().unwrap(),
                    api["window"].as_str().unwrap()
                )
            );
        }
        assert_eq!(records.len(), doc["results"].as_array().unwrap().len());
    }
}
