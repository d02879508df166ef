//! CRM adapters: a CRM's own webhook payload in, canonical events out.
//!
//! An input topic has a [`Format`]. For `canonical` the message is an event
//! of events.md; for a CRM format, [`Adapter::adapt`] maps the native
//! payload to zero or more canonical events, which then take the same path
//! (validation, dedup, engine) as any other event. Pure: no I/O, no clock.
//!
//! What every adapter does:
//! - owner and user ids become rep ids through the CRM's `owners` map, else
//!   stay the CRM's id;
//! - stage ids become pipeline stages through its `stages` map, else stay
//!   as they are (a stage not in the pipeline counts as no exit); won and
//!   lost stages (or statuses) become `deal.won` / `deal.lost`;
//! - the dedup `id` is derived from the native event's own id, never from a
//!   delivery attempt, so a CRM's retry is a duplicate;
//! - native timestamps (milliseconds, or text with or without an offset,
//!   UTC when it has none) become RFC 3339 `occurred_at`.
//!
//! A payload of a known kind that cannot be mapped is rejected with a
//! reason; one of a kind kpistream does not track is ignored.

pub mod hubspot;
pub mod pipedrive;
pub mod salesforce;
pub mod signature;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::event::{format_timestamp, ParseOptions, RejectReason, Rejection};

/// The payload format of an input topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// events.md.
    #[default]
    Canonical,
    /// HubSpot webhooks v3: a JSON array of notifications (or one of them).
    Hubspot,
    /// Pipedrive webhooks v2: `{"meta", "data", "previous"}`.
    Pipedrive,
    /// Salesforce Change Data Capture events, as JSON.
    SalesforceCdc,
}

impl Format {
    pub const ALL: [Format; 4] = [
        Format::Canonical,
        Format::Hubspot,
        Format::Pipedrive,
        Format::SalesforceCdc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Canonical => "canonical",
            Format::Hubspot => "hubspot",
            Format::Pipedrive => "pipedrive",
            Format::SalesforceCdc => "salesforce_cdc",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                format!("`{s}` is not one of canonical, hubspot, pipedrive, salesforce_cdc")
            })
    }
}

/// How one CRM's ids map onto kpistream's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    /// CRM owner or user id to rep id; an id not listed is used as it is.
    pub owners: BTreeMap<String, String>,
    /// CRM stage id to pipeline stage; a stage not listed is used as it is.
    pub stages: BTreeMap<String, String>,
    /// CRM stages that close a deal as won (HubSpot, Salesforce).
    pub won_stages: BTreeSet<String>,
    /// CRM stages that close a deal as lost (HubSpot, Salesforce).
    pub lost_stages: BTreeSet<String>,
}

/// What a CRM stage means for a deal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StageMove {
    Open(String),
    Won,
    Lost,
}

impl Mapping {
    /// The rep id of a CRM owner or user id.
    pub fn rep(&self, crm_id: &str) -> String {
        self.owners
            .get(crm_id)
            .cloned()
            .unwrap_or_else(|| crm_id.to_owned())
    }

    /// The pipeline stage of a CRM stage id.
    pub fn stage(&self, crm_stage: &str) -> String {
        self.stages
            .get(crm_stage)
            .cloned()
            .unwrap_or_else(|| crm_stage.to_owned())
    }

    fn stage_move(&self, crm_stage: &str) -> StageMove {
        if self.won_stages.contains(crm_stage) {
            StageMove::Won
        } else if self.lost_stages.contains(crm_stage) {
            StageMove::Lost
        } else {
            StageMove::Open(self.stage(crm_stage))
        }
    }
}

/// Salesforce objects and fields beyond the standard ones, as configured
/// (`[crm.salesforce_objects]`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceObjects {
    /// The object whose MRR field drives subscriptions (`Account`, or a
    /// custom subscription object).
    pub subscription_object: String,
    /// Its field holding the monthly recurring revenue.
    pub mrr_field: String,
    /// Its lookup field naming the account; empty: the record itself is the
    /// account.
    pub account_field: String,
    /// A picklist field of `Event` saying whether the meeting was held
    /// (`Held`, `Completed`), missed (`No Show`) or canceled; empty: none.
    pub meeting_status_field: String,
}

impl Default for SalesforceObjects {
    fn default() -> Self {
        SalesforceObjects {
            subscription_object: "Account".into(),
            mrr_field: "MRR__c".into(),
            account_field: String::new(),
            meeting_status_field: String::new(),
        }
    }
}

/// The settings of every adapter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrmConfig {
    pub hubspot: Mapping,
    pub pipedrive: Mapping,
    pub salesforce: Mapping,
    pub salesforce_objects: SalesforceObjects,
}

/// What an adapter may ask of the partition's state. Keyed by entity, like
/// the messages, so a partition's own state answers it.
pub trait Known {
    /// Whether the meeting is known (so a new time is a reschedule).
    fn meeting_known(&self, meeting_id: &str) -> bool;
}

/// Nothing is known: every meeting is new.
pub struct NothingKnown;

impl Known for NothingKnown {
    fn meeting_known(&self, _: &str) -> bool {
        false
    }
}

/// What a native payload became.
#[derive(Debug, Clone, PartialEq)]
pub enum Adapted {
    /// Canonical events, in the order they are to be applied.
    Events(Vec<Value>),
    /// A valid payload of a kind kpistream does not track (an unknown
    /// subscription type or object).
    UnknownKind,
    /// A valid payload that carries no KPI change (a deletion, a property
    /// kpistream does not use).
    NothingToDo,
}

/// A format with its settings: maps native payloads.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub format: Format,
    pub config: std::sync::Arc<CrmConfig>,
}

impl Adapter {
    /// Maps one native payload. For `canonical` this is never called.
    /// The limits of `opts` (size, depth) hold for native payloads too.
    pub fn adapt(
        &self,
        bytes: &[u8],
        opts: &ParseOptions,
        known: &dyn Known,
    ) -> Result<Adapted, Rejection> {
        crate::event::check_size(bytes, opts.max_message_bytes)?;
        crate::event::check_depth(bytes, opts.max_json_depth)?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Rejection::new(RejectReason::NotUtf8, "the payload is not UTF-8"))?;
        let doc: Value = serde_json::from_str(text).map_err(|e| {
            Rejection::new(
                RejectReason::InvalidJson,
                format!(
                    "the payload is not JSON: line {} column {}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let cfg = &self.config;
        match self.format {
            Format::Canonical => Err(Rejection::new(
                RejectReason::NotObject,
                "canonical messages take no adapter",
            )),
            Format::Hubspot => hubspot::adapt(&doc, &cfg.hubspot, known),
            Format::Pipedrive => pipedrive::adapt(&doc, &cfg.pipedrive),
            Format::SalesforceCdc => {
                salesforce::adapt(&doc, &cfg.salesforce, &cfg.salesforce_objects)
            }
        }
    }
}

/// Builds one canonical event.
pub(crate) struct Canonical(Map<String, Value>);

impl Canonical {
    pub fn new(id: String, kind: &str, at_micros: i64, source: &str) -> Self {
        let mut m = Map::new();
        m.insert("id".into(), id.into());
        m.insert("type".into(), kind.into());
        m.insert("occurred_at".into(), format_timestamp(at_micros).into());
        m.insert("source".into(), source.into());
        Canonical(m)
    }

    pub fn set(mut self, key: &str, v: impl Into<Value>) -> Self {
        self.0.insert(key.into(), v.into());
        self
    }

    pub fn set_opt(self, key: &str, v: Option<impl Into<Value>>) -> Self {
        match v {
            Some(v) => self.set(key, v),
            None => self,
        }
    }

    pub fn done(self) -> Value {
        Value::Object(self.0)
    }
}

pub(crate) fn missing(what: &str) -> Rejection {
    Rejection::new(RejectReason::MissingField, format!("{what} is missing"))
}

pub(crate) fn wrong(what: &str, should: &str) -> Rejection {
    Rejection::new(RejectReason::WrongType, format!("{what} must be {should}"))
}

pub(crate) fn unmappable(detail: impl Into<String>) -> Rejection {
    Rejection::new(RejectReason::Unmappable, detail)
}

/// An id that may be a JSON string or integer, as text.
pub fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A required id field.
pub(crate) fn req_id(obj: &Value, key: &str, what: &str) -> Result<String, Rejection> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(missing(what)),
        v => id_text(v).ok_or_else(|| wrong(what, "a non-empty string or an integer")),
    }
}

/// A timestamp: milliseconds since the epoch (number or digits), or text in
/// RFC 3339, or `YYYY-MM-DD HH:MM:SS` / `YYYY-MM-DDTHH:MM:SS[.fff]` in UTC.
/// Microseconds since the epoch.
pub(crate) fn timestamp(v: &Value, what: &str) -> Result<i64, Rejection> {
    let bad = || {
        Rejection::new(
            RejectReason::BadTimestamp,
            format!("{what} is not a timestamp"),
        )
    };
    let ms = match v {
        Value::Number(n) => n.as_i64().ok_or_else(bad)?,
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<i64>().map_err(|_| bad())?
        }
        Value::String(s) => return text_timestamp(s).ok_or_else(bad),
        _ => return Err(bad()),
    };
    // Years 1970..=9999 only: anything else is not a real CRM time.
    if !(0..=253_402_300_799_999).contains(&ms) {
        return Err(bad());
    }
    Ok(ms * 1000)
}

fn text_timestamp(s: &str) -> Option<i64> {
    if let Some(t) = crate::event::parse_timestamp(s) {
        return Some(t);
    }
    // Salesforce writes +0000 offsets.
    if let Ok(dt) = chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(dt.timestamp_micros());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(dt) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    None
}

/// An amount: a JSON number, or a decimal in text (HubSpot sends property
/// values as text); empty text or null is 0.
pub(crate) fn amount(v: Option<&Value>, what: &str) -> Result<f64, Rejection> {
    let x = match v {
        None | Some(Value::Null) => 0.0,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) if s.trim().is_empty() => 0.0,
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| wrong(what, "a number"))?,
        Some(_) => return Err(wrong(what, "a number")),
    };
    if !x.is_finite() || x < 0.0 {
        return Err(Rejection::new(
            RejectReason::OutOfRange,
            format!("{what} must be a number >= 0"),
        ));
    }
    Ok(x)
}

/// A JSON number for an event field: integral amounts stay integers.
pub(crate) fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_every_native_shape_agree() {
        let want = 1_793_697_600_000_000; // 2026-11-03T09:20:00Z
        for v in [
            serde_json::json!(1_793_697_600_000i64),
            serde_json::json!("1793697600000"),
            serde_json::json!("2026-11-03T09:20:00Z"),
            serde_json::json!("2026-11-03T10:20:00+01:00"),
            serde_json::json!("2026-11-03T09:20:00.000+0000"),
            serde_json::json!("2026-11-03 09:20:00"),
        ] {
            assert_eq!(timestamp(&v, "t").unwrap(), want, "{v}");
        }
        for v in [
            serde_json::json!("yesterday"),
            serde_json::json!(-1),
            serde_json::json!(true),
        ] {
            assert_eq!(
                timestamp(&v, "t").unwrap_err().reason,
                RejectReason::BadTimestamp
            );
        }
    }

    #[test]
    fn amounts_accept_numbers_and_decimal_text_only() {
        assert_eq!(
            amount(Some(&serde_json::json!("1250.50")), "a").unwrap(),
            1250.5
        );
        assert_eq!(amount(Some(&serde_json::json!("")), "a").unwrap(), 0.0);
        assert_eq!(amount(None, "a").unwrap(), 0.0);
        assert_eq!(
            amount(Some(&serde_json::json!("12k")), "a")
                .unwrap_err()
                .reason,
            RejectReason::WrongType
        );
        assert_eq!(
            amount(Some(&serde_json::json!(-3)), "a")
                .unwrap_err()
                .reason,
            RejectReason::OutOfRange
        );
    }

    #[test]
    fn formats_parse_by_name() {
        for f in Format::ALL {
            assert_eq!(f.as_str().parse::<Format>().unwrap(), f);
        }
        assert!("zoho".parse::<Format>().unwrap_err().contains("`zoho`"));
    }
}
