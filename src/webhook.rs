//! The CRM webhook receiver: `POST /webhooks/hubspot`, `/webhooks/pipedrive`,
//! `/webhooks/salesforce`, `/webhooks/close` and `/webhooks/zoho`, on the
//! HTTP listener.
//!
//! Each request is authenticated the way its CRM signs it
//! ([`crate::crm::signature`]); a refused one gets 401 and is counted. An
//! accepted payload is produced to the route's input topic by an
//! idempotent producer (acks=all), and only when the broker has acknowledged
//! it is the CRM answered 200: a failure answers 503 and the CRM retries,
//! so nothing is lost, and the retry is a duplicate for the dedup set if
//! the first attempt did land. A correctly signed request that comes again
//! (the CRM missed the first answer) is accepted and produced again: its
//! events are duplicates, never lost. HubSpot batches are split into one
//! message per object (the array of that object's notifications, so that a
//! creation and its properties stay together), keyed by its object id;
//! the other CRMs' payloads are produced as they came, keyed by their
//! entity or record id, so all messages of one CRM object share a
//! partition. A payload that is not even JSON is produced too, unkeyed: the
//! processor rejects it to the dead-letter topic, where it can be seen.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use tracing::warn;

use crate::config::{Settings, WebhookSettings};
use crate::crm::id_text;
use crate::crm::signature::{self, Refusal, ReplayGuard, Signed};
use crate::telemetry::{Metrics, WebhookLabels};

/// What the webhook routes share.
pub struct Hooks {
    settings: WebhookSettings,
    producer: FutureProducer,
    replays: Mutex<ReplayGuard>,
    metrics: Arc<Metrics>,
}

impl Hooks {
    /// The receiver of `settings.webhooks`, with its idempotent producer.
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> anyhow::Result<Option<Arc<Self>>> {
        let Some(hooks) = settings.webhooks.clone() else {
            return Ok(None);
        };
        let producer: FutureProducer = crate::source::client_config(settings)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "10000")
            .set("linger.ms", "5")
            .create()?;
        Ok(Some(Arc::new(Hooks {
            replays: Mutex::new(ReplayGuard::new(hooks.max_age_ms, 1 << 20)),
            settings: hooks,
            producer,
            metrics,
        })))
    }
}

/// The routes that are configured.
pub fn router(hooks: Arc<Hooks>, max_request_bytes: usize) -> Router {
    let mut r = Router::new();
    if hooks.settings.hubspot.is_some() {
        r = r.route("/webhooks/hubspot", post(hubspot));
    }
    if hooks.settings.pipedrive.is_some() {
        r = r.route("/webhooks/pipedrive", post(pipedrive));
    }
    if hooks.settings.salesforce.is_some() {
        r = r.route("/webhooks/salesforce", post(salesforce));
    }
    if hooks.settings.close.is_some() {
        r = r.route("/webhooks/close", post(close));
    }
    if hooks.settings.zoho.is_some() {
        r = r.route("/webhooks/zoho", post(zoho));
    }
    r.layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(hooks)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Hooks {
    fn count(&self, crm: &'static str, result: &'static str) {
        self.metrics
            .webhook_requests
            .get_or_create(&WebhookLabels { crm, result })
            .inc();
    }

    fn refuse(&self, crm: &'static str, why: Refusal) -> Response {
        self.count(crm, why.as_str());
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": format!("webhook refused: {}", why.as_str())})),
        )
            .into_response()
    }

    /// Produces the messages and answers once all are acknowledged.
    /// `signature` (if any) is looked up in the replay guard first: a
    /// request seen before is a CRM's retry, counted as `redelivered` and
    /// produced again (its events are duplicates downstream).
    async fn deliver(
        &self,
        crm: &'static str,
        topic: &str,
        signature: Option<&str>,
        messages: Vec<(Option<String>, Vec<u8>)>,
    ) -> Response {
        let now = now_ms();
        if let Some(sig) = signature {
            let mut replays = self.replays.lock().expect("replay guard lock");
            if replays.check(sig, now).is_err() {
                drop(replays);
                self.count(crm, "redelivered");
            }
        }
        let mut pending = Vec::with_capacity(messages.len());
        let mut failed = None;
        for (key, payload) in &messages {
            let mut record = FutureRecord::<String, Vec<u8>>::to(topic).payload(payload);
            if let Some(k) = key {
                record = record.key(k);
            }
            match self.producer.send_result(record) {
                Ok(f) => pending.push(f),
                Err((e, _)) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        for f in pending {
            match tokio::time::timeout(Duration::from_secs(15), f).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err((e, _)))) => failed = Some(e.to_string()),
                Ok(Err(_)) => failed = Some("delivery canceled".into()),
                Err(_) => failed = Some("no acknowledgement in time".into()),
            }
        }
        if let Some(e) = failed {
            warn!(crm, error = %e, "webhook payload not produced; answering 503 so the CRM retries");
            self.count(crm, "produce_failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "not stored yet; retry"})),
            )
                .into_response();
        }
        self.count(crm, "accepted");
        (StatusCode::OK, Json(json!({"accepted": messages.len()}))).into_response()
    }
}

async fn hubspot(
    State(h): State<Arc<Hooks>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (topic, secret, url) = h.settings.hubspot.as_ref().expect("route is on");
    let signed_url = match url {
        Some(u) => u.clone(),
        None => format!(
            "https://{}{}",
            header(&headers, "host").unwrap_or_default(),
            uri.path_and_query().map_or("", |p| p.as_str())
        ),
    };
    let sig = header(&headers, "x-hubspot-signature-v3");
    let req = Signed {
        method: method.as_str(),
        uri: &signed_url,
        body: &body,
        timestamp: header(&headers, "x-hubspot-request-timestamp"),
        signature: sig,
    };
    if let Err(why) = signature::verify_hubspot(secret, &req, now_ms(), h.settings.max_age_ms) {
        return h.refuse("hubspot", why);
    }
    let messages = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => by_object(items),
        _ => vec![(None, body.to_vec())],
    };
    h.deliver("hubspot", topic, sig, messages).await
}

/// A HubSpot batch as one message per object: the array of that object's
/// notifications, in their order, keyed by the object id (notifications
/// without one, such as association changes, together and unkeyed).
pub fn by_object(items: Vec<Value>) -> Vec<(Option<String>, Vec<u8>)> {
    let mut groups: Vec<(Option<String>, Vec<Value>)> = Vec::new();
    for n in items {
        let key = id_text(n.get("objectId"));
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(n),
            None => groups.push((key, vec![n])),
        }
    }
    if groups.is_empty() {
        groups.push((None, Vec::new())); // an empty batch is still one message
    }
    groups
        .into_iter()
        .map(|(k, g)| {
            let bytes = serde_json::to_vec(&g).expect("a JSON value serializes");
            (k, bytes)
        })
        .collect()
}

async fn pipedrive(State(h): State<Arc<Hooks>>, headers: HeaderMap, body: Bytes) -> Response {
    let (topic, expected) = h.settings.pipedrive.as_ref().expect("route is on");
    if let Err(why) = signature::verify_basic(expected, header(&headers, "authorization")) {
        return h.refuse("pipedrive", why);
    }
    let key = serde_json::from_slice::<Value>(&body).ok().and_then(|doc| {
        id_text(doc.pointer("/meta/entity_id")).or_else(|| id_text(doc.pointer("/data/id")))
    });
    h.deliver("pipedrive", topic, None, vec![(key, body.to_vec())])
        .await
}

async fn salesforce(State(h): State<Arc<Hooks>>, headers: HeaderMap, body: Bytes) -> Response {
    let (topic, secret) = h.settings.salesforce.as_ref().expect("route is on");
    let sig = header(&headers, "x-kpistream-signature");
    if let Some(secret) = secret {
        let req = Signed {
            method: "POST",
            uri: "",
            body: &body,
            timestamp: header(&headers, "x-kpistream-timestamp"),
            signature: sig,
        };
        if let Err(why) = signature::verify_relay(secret, &req, now_ms(), h.settings.max_age_ms) {
            return h.refuse("salesforce", why);
        }
    }
    let messages = match serde_json::from_slice::<Value>(&body) {
        Ok(doc) => by_record(doc, &body, SF_HEADERS, "recordIds", |_, _| {}),
        Err(_) => vec![(None, body.to_vec())],
    };
    let sig = secret.as_ref().and(sig);
    h.deliver("salesforce", topic, sig, messages).await
}

async fn close(State(h): State<Arc<Hooks>>, headers: HeaderMap, body: Bytes) -> Response {
    let (topic, key) = h.settings.close.as_ref().expect("route is on");
    let sig = header(&headers, "close-sig-hash");
    if let Err(why) =
        signature::verify_close(key, &body, header(&headers, "close-sig-timestamp"), sig)
    {
        return h.refuse("close", why);
    }
    let key = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|doc| id_text(doc.pointer("/event/object_id")));
    h.deliver("close", topic, sig, vec![(key, body.to_vec())])
        .await
}

async fn zoho(State(h): State<Arc<Hooks>>, headers: HeaderMap, body: Bytes) -> Response {
    let (topic, tokens) = h.settings.zoho.as_ref().expect("route is on");
    // Zoho signs nothing: the token is in the body, so a body that is not
    // JSON cannot be verified, and is refused.
    let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
        return h.refuse("zoho", Refusal::Missing);
    };
    if let Err(why) = tokens.verify(&doc, header(&headers, "x-kpistream-token")) {
        return h.refuse("zoho", why);
    }
    let messages = if doc.get("kpistream").is_some() {
        vec![(id_text(doc.get("id")), body.to_vec())]
    } else {
        by_record(doc, &body, &[""], "ids", |doc, id| {
            // Keep only this record's values.
            for key in ["affected_values", "affected_fields"] {
                if let Some(Value::Array(a)) = doc.get_mut(key) {
                    a.retain(|v| {
                        id_text(v.get("record_id")).as_deref() == Some(id) || v.get(id).is_some()
                    });
                }
            }
        })
    };
    h.deliver("zoho", topic, None, messages).await
}

/// Where a Salesforce change event's header is, in the shapes relays send.
const SF_HEADERS: &[&str] = &[
    "/ChangeEventHeader",
    "/payload/ChangeEventHeader",
    "/data/payload/ChangeEventHeader",
];

/// A change naming several records as one message per record, keyed by
/// it, so that each record's messages share its partition: `ids` (under
/// the first of `headers` that exists) cut to the one record, and `trim`
/// applied to the copy. The dedup ids the adapters make do not depend on
/// the other records, so a split change counts exactly as the whole. A
/// document naming one record (or none) is produced as it came.
fn by_record(
    doc: Value,
    body: &[u8],
    headers: &[&str],
    ids: &str,
    trim: impl Fn(&mut Value, &str),
) -> Vec<(Option<String>, Vec<u8>)> {
    let Some(at) = headers.iter().find(|p| doc.pointer(p).is_some()) else {
        return vec![(None, body.to_vec())];
    };
    let records: Vec<String> = match doc.pointer(at).and_then(|h| h.get(ids)) {
        Some(Value::Array(a)) => a.iter().filter_map(|v| id_text(Some(v))).collect(),
        _ => Vec::new(),
    };
    if records.len() < 2 {
        return vec![(records.into_iter().next(), body.to_vec())];
    }
    records
        .into_iter()
        .map(|id| {
            let mut copy = doc.clone();
            if let Some(h) = copy.pointer_mut(at) {
                h[ids] = Value::from(vec![Value::from(id.as_str())]);
            }
            trim(&mut copy, &id);
            let bytes = serde_json::to_vec(&copy).expect("a JSON value serializes");
            (Some(id), bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(messages: &[(Option<String>, Vec<u8>)]) -> Vec<(Option<String>, Value)> {
        messages
            .iter()
            .map(|(k, b)| (k.clone(), serde_json::from_slice(b).unwrap()))
            .collect()
    }

    #[test]
    fn a_hubspot_batch_is_one_message_per_object() {
        let batch = serde_json::json!([
            {"objectId": 1, "propertyName": "amount"},
            {"objectId": 2, "propertyName": "dealstage"},
            {"objectId": 1, "propertyName": "dealstage"},
            {"fromObjectId": 1, "toObjectId": 9}
        ]);
        let Value::Array(items) = batch else { panic!() };
        let m = docs(&by_object(items));
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].0.as_deref(), Some("1"));
        assert_eq!(
            m[0].1.as_array().unwrap().len(),
            2,
            "a creation stays with its properties"
        );
        assert_eq!(m[2].0, None);
        assert_eq!(
            docs(&by_object(Vec::new())),
            [(None, serde_json::json!([]))]
        );
    }

    #[test]
    fn a_change_of_several_records_is_one_message_per_record() {
        let zoho = serde_json::json!({"module": "Deals", "ids": ["a", "b"], "channel_id": "1",
            "affected_fields": [{"a": ["Stage"]}, {"b": ["Amount"]}],
            "affected_values": [{"record_id": "a", "values": {"Stage": "Won"}},
                                {"record_id": "b", "values": {"Amount": 5}}]});
        let body = zoho.to_string();
        let m = docs(&by_record(
            zoho,
            body.as_bytes(),
            &[""],
            "ids",
            |doc, id| {
                for key in ["affected_values", "affected_fields"] {
                    if let Some(Value::Array(a)) = doc.get_mut(key) {
                        a.retain(|v| {
                            id_text(v.get("record_id")).as_deref() == Some(id)
                                || v.get(id).is_some()
                        });
                    }
                }
            },
        ));
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].0.as_deref(), Some("b"));
        assert_eq!(m[1].1["ids"], serde_json::json!(["b"]));
        assert_eq!(
            m[1].1["affected_values"],
            serde_json::json!([{"record_id": "b", "values": {"Amount": 5}}])
        );
        let sf = serde_json::json!({"channel": "/data/X", "data": {"payload": {"ChangeEventHeader": {"recordIds": ["006A", "006B"]}}}});
        let body = sf.to_string();
        let m = docs(&by_record(
            sf,
            body.as_bytes(),
            SF_HEADERS,
            "recordIds",
            |_, _| {},
        ));
        assert_eq!(
            m[0].1.pointer("/data/payload/ChangeEventHeader/recordIds"),
            Some(&serde_json::json!(["006A"]))
        );
        let one = serde_json::json!({"ChangeEventHeader": {"recordIds": ["006A"]}});
        let body = one.to_string();
        assert_eq!(
            by_record(one, body.as_bytes(), SF_HEADERS, "recordIds", |_, _| {}),
            [(Some("006A".to_owned()), body.into_bytes())]
        );
    }
}
