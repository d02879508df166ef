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

pub mod close;
pub mod hubspot;
pub mod pipedrive;
pub mod salesforce;
pub mod signature;
pub mod zoho;

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
    /// Close webhooks: `{"event": {...}, "subscription_id"}`.
    Close,
    /// Zoho CRM: Notification API callbacks and `zoho-wf/1` workflow
    /// webhooks.
    Zoho,
}

impl Format {
    pub const ALL: [Format; 6] = [
        Format::Canonical,
        Format::Hubspot,
        Format::Pipedrive,
        Format::SalesforceCdc,
        Format::Close,
        Format::Zoho,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Canonical => "canonical",
            Format::Hubspot => "hubspot",
            Format::Pipedrive => "pipedrive",
            Format::SalesforceCdc => "salesforce_cdc",
            Format::Close => "close",
            Format::Zoho => "zoho",
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
                format!(
                    "`{s}` is not one of canonical, hubspot, pipedrive, salesforce_cdc, close, zoho"
                )
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
    /// CRM call results (HubSpot disposition ids, Close dispositions, Zoho
    /// `Call_Result` values, Salesforce `CallDisposition` texts) to call
    /// outcomes, over each adapter's built-in ones.
    pub call_outcomes: BTreeMap<String, String>,
    /// CRM meeting outcomes or statuses to `held`, `no_show` or
    /// `canceled`, over each adapter's built-in ones.
    pub meeting_outcomes: BTreeMap<String, String>,
    /// A meeting field holding its outcome (Zoho: a custom picklist such
    /// as `Meeting_Outcome`); empty: none.
    pub meeting_outcome_field: String,
    /// Pipedrive activity types that are calls, and meetings.
    pub call_types: BTreeSet<String>,
    pub meeting_types: BTreeSet<String>,
    /// The object (HubSpot object type id, Zoho module) whose field
    /// `churn_field` reaching one of `churn_values` churns an account.
    pub churn_object: String,
    pub churn_field: String,
    pub churn_values: BTreeSet<String>,
    /// Zoho lead statuses that mean the lead was converted.
    pub converted_statuses: BTreeSet<String>,
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

    /// The call outcome of a CRM call result: the configured one, else the
    /// adapter's built-in one, else `other`.
    pub(crate) fn call_outcome(&self, value: &str, builtin: &[(&str, &'static str)]) -> String {
        if let Some(o) = self.call_outcomes.get(value) {
            return o.clone();
        }
        builtin
            .iter()
            .find(|(v, _)| v.eq_ignore_ascii_case(value))
            .map_or("other", |(_, o)| o)
            .to_owned()
    }

    /// The canonical meeting event a CRM meeting outcome means: the
    /// configured one, else the adapter's built-in one.
    pub(crate) fn meeting_outcome(
        &self,
        value: &str,
        builtin: &[(&str, &'static str)],
    ) -> Option<&'static str> {
        let o = match self.meeting_outcomes.get(value) {
            Some(o) => o.as_str(),
            None => builtin
                .iter()
                .find(|(v, _)| v.eq_ignore_ascii_case(value))
                .map(|(_, o)| *o)?,
        };
        match o {
            "held" => Some("meeting.held"),
            "no_show" => Some("meeting.no_show"),
            "canceled" => Some("meeting.canceled"),
            _ => None,
        }
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
    /// A field of the subscription object whose reaching one of
    /// `churn_values` churns the account (e.g. `Status__c`); empty: none.
    #[serde(default)]
    pub churn_field: String,
    #[serde(default)]
    pub churn_values: Vec<String>,
    /// The object holding survey answers (e.g. `Survey_Response__c`);
    /// empty: none.
    #[serde(default)]
    pub survey_object: String,
    /// Its field holding the score.
    #[serde(default)]
    pub survey_score_field: String,
    /// Its field holding the kind (`NPS`, `CSAT`); empty: every answer is
    /// of `survey_kind`.
    #[serde(default)]
    pub survey_kind_field: String,
    /// The kind of every answer when there is no kind field.
    #[serde(default)]
    pub survey_kind: String,
    /// Its lookup field naming the account; empty: none.
    #[serde(default)]
    pub survey_account_field: String,
}

impl Default for SalesforceObjects {
    fn default() -> Self {
        SalesforceObjects {
            subscription_object: "Account".into(),
            mrr_field: "MRR__c".into(),
            account_field: String::new(),
            meeting_status_field: String::new(),
            churn_field: String::new(),
            churn_values: Vec::new(),
            survey_object: String::new(),
            survey_score_field: String::new(),
            survey_kind_field: String::new(),
            survey_kind: "nps".into(),
            survey_account_field: String::new(),
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
    pub close: Mapping,
    pub zoho: Mapping,
}

/// What an adapter may ask of the partition's state. Keyed by entity, like
/// the messages, so a partition's own state answers it; the state is the
/// engine's, so it is snapshotted and restored with it.
pub trait Known {
    /// Whether the meeting is known (so a new time is a reschedule).
    fn meeting_known(&self, meeting_id: &str) -> bool;
    /// When a known meeting is scheduled for (microseconds since the epoch).
    fn meeting_time(&self, _meeting_id: &str) -> Option<i64> {
        None
    }
    /// What is known of a deal.
    fn deal(&self, _deal_id: &str) -> Option<KnownDeal> {
        None
    }
}

/// A deal as the engine knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownDeal {
    /// Opened by a `deal.created`, not only implicitly by a later event.
    pub opened: bool,
    pub closed: bool,
    /// In millionths of the base currency.
    pub amount: i64,
    /// Its pipeline stage, when it is in one.
    pub stage: Option<String>,
}

/// Nothing is known: every meeting and deal is new.
pub struct NothingKnown;

impl Known for NothingKnown {
    fn meeting_known(&self, _: &str) -> bool {
        false
    }
}

/// What one element of a native payload became.
#[derive(Debug, Clone, PartialEq)]
pub enum Adapted {
    /// Canonical events, in the order they are to be applied.
    Events(Vec<Value>),
    /// A valid element of a kind kpistream does not track (an unknown
    /// subscription type or object).
    UnknownKind,
    /// A valid element that carries no KPI change (a deletion, a property
    /// kpistream does not use).
    NothingToDo,
    /// A valid element whose content went into another element's events
    /// (HubSpot's property notices of a creation).
    Merged,
}

impl Adapted {
    /// What an element whose events are `events` became: nothing to do
    /// when there are none.
    pub fn of(events: Vec<Value>) -> Self {
        if events.is_empty() {
            Adapted::NothingToDo
        } else {
            Adapted::Events(events)
        }
    }
}

/// One element of a native payload (a notification of a HubSpot batch, a
/// record of a Salesforce or Zoho change) and what it became.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// Its position in the payload: the array index of a HubSpot batch, the
    /// record index of a Salesforce or Zoho change naming several; `None`
    /// for a payload that is one element.
    pub index: Option<usize>,
    pub result: Result<Adapted, Rejection>,
}

impl Element {
    pub fn new(index: Option<usize>, result: Result<Adapted, Rejection>) -> Self {
        Element { index, result }
    }

    /// An element of `events`: nothing to do when there are none.
    pub fn events(index: Option<usize>, events: Result<Vec<Value>, Rejection>) -> Self {
        Element {
            index,
            result: events.map(Adapted::of),
        }
    }
}

/// A format with its settings: maps native payloads.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub format: Format,
    pub config: std::sync::Arc<CrmConfig>,
}

impl Adapter {
    /// Maps one native payload to its elements, in the order their events
    /// are to be applied. A payload that is not even a document of the
    /// format (not JSON, not an object or array) is one rejection. For
    /// `canonical` this is never called. The limits of `opts` (size,
    /// depth) hold for native payloads too.
    pub fn adapt(
        &self,
        bytes: &[u8],
        opts: &ParseOptions,
        known: &dyn Known,
    ) -> Result<Vec<Element>, Rejection> {
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
        let one = |r: Result<Adapted, Rejection>| Ok(vec![Element::new(None, r)]);
        match self.format {
            Format::Canonical => Err(Rejection::new(
                RejectReason::NotObject,
                "canonical messages take no adapter",
            )),
            Format::Hubspot => hubspot::adapt(&doc, &cfg.hubspot, known),
            Format::Pipedrive => one(pipedrive::adapt(&doc, &cfg.pipedrive, known)),
            Format::SalesforceCdc => {
                salesforce::adapt(&doc, &cfg.salesforce, &cfg.salesforce_objects, known)
            }
            Format::Close => one(close::adapt(&doc, &cfg.close, known)),
            Format::Zoho => zoho::adapt(&doc, &cfg.zoho, known),
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

/// A required id field: missing when absent or null, of the wrong type
/// when present as anything but a non-empty string or an integer.
pub(crate) fn req_id(obj: &Value, key: &str, what: &str) -> Result<String, Rejection> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(missing(what)),
        v => id_text(v).ok_or_else(|| wrong(what, "a non-empty string or an integer")),
    }
}

/// An optional id field: absent when missing, null or empty.
pub(crate) fn opt_id(obj: &Value, key: &str, what: &str) -> Result<Option<String>, Rejection> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        v => id_text(v)
            .map(Some)
            .ok_or_else(|| wrong(what, "a string or an integer")),
    }
}

/// An optional text field: absent when missing, null or empty.
pub(crate) fn opt_text<'a>(
    obj: &'a Value,
    key: &str,
    what: &str,
) -> Result<Option<&'a str>, Rejection> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong(what, "a string")),
    }
}

/// A required text field: missing when absent or null, of the wrong type
/// when anything but a string.
pub(crate) fn req_str<'a>(obj: &'a Value, key: &str, what: &str) -> Result<&'a str, Rejection> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(missing(what)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(wrong(what, "a string")),
    }
}

/// An optional object member: absent when missing or null, of the wrong
/// type when anything but an object.
pub(crate) fn opt_obj<'a>(
    obj: &'a Value,
    key: &str,
    what: &str,
) -> Result<Option<&'a Value>, Rejection> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) if v.is_object() => Ok(Some(v)),
        Some(_) => Err(wrong(what, "an object")),
    }
}

/// A required object member.
pub(crate) fn req_obj<'a>(obj: &'a Value, key: &str, what: &str) -> Result<&'a Value, Rejection> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(missing(what)),
        Some(v) if v.is_object() => Ok(v),
        Some(_) => Err(wrong(what, "an object")),
    }
}

/// An optional boolean: JSON `true`/`false` or the text `"true"`/`"false"`.
pub(crate) fn opt_bool(obj: &Value, key: &str, what: &str) -> Result<Option<bool>, Rejection> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(wrong(what, "a boolean")),
    }
}

/// A stable 64-bit hash of some values, as 16 hex digits: dedup ids for
/// CRMs that send no event id of their own.
pub(crate) fn digest(parts: &[&str]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    format!("{:016x}", h.digest())
}

/// Numbers below this are seconds since the epoch, not milliseconds: as
/// milliseconds they would be before March 1973, no CRM's time; as seconds
/// they reach the year 5138.
const SECONDS_BELOW: i64 = 100_000_000_000;

/// A timestamp: seconds or milliseconds since the epoch (number or digits;
/// ten digits are seconds, thirteen milliseconds), or text in RFC 3339,
/// with a `±HHMM` offset, or without an offset (UTC), or a date (midnight
/// UTC). Microseconds since the epoch.
pub(crate) fn timestamp(v: &Value, what: &str) -> Result<i64, Rejection> {
    let bad = || {
        Rejection::new(
            RejectReason::BadTimestamp,
            format!("{what} is not a timestamp"),
        )
    };
    let n = match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => i,
            // Fractional seconds (Pipedrive v1's `timestamp_micro` style).
            None => {
                let f = n.as_f64().ok_or_else(bad)?;
                if !(0.0..SECONDS_BELOW as f64).contains(&f) {
                    return Err(bad());
                }
                return Ok((f * 1e6).round() as i64);
            }
        },
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<i64>().map_err(|_| bad())?
        }
        Value::String(s) => return text_timestamp(s).ok_or_else(bad),
        _ => return Err(bad()),
    };
    let ms = if (0..SECONDS_BELOW).contains(&n) {
        n * 1000
    } else {
        n
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
    if let Ok(dt) = chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%z") {
        return Some(dt.timestamp_micros());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(dt) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|dt| dt.and_utc().timestamp_micros());
    }
    None
}

/// A decimal amount as a JSON number for an event field, from millionths.
pub(crate) fn from_micros(m: i64) -> Value {
    number(m as f64 / crate::event::MICRO)
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
            serde_json::json!(1_793_697_600i64),
            serde_json::json!("1793697600"),
            serde_json::json!("2026-11-03T14:50:00+0530"),
            serde_json::json!("2026-11-03T14:50:00+05:30"),
            serde_json::json!("2026-11-03T09:20:00.000000"),
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
        assert!("sugar".parse::<Format>().unwrap_err().contains("`sugar`"));
    }
}
