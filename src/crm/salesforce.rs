//! Salesforce Change Data Capture events, as JSON (the Pub/Sub API's
//! decoded record, or a CometD message's `payload`).
//!
//! A change event has a `ChangeEventHeader` (entity, change type, record
//! ids, transaction key, sequence number, commit time and user, changed
//! fields) and the record's fields: all set fields on `CREATE`, the changed
//! ones on `UPDATE`. One event may name several records (a bulk change);
//! each gets its events.
//!
//! | entity, change | canonical events |
//! |---|---|
//! | Opportunity CREATE | `deal.created` (`OwnerId`, `Amount`, `CurrencyIsoCode`, `StageName`), then `deal.won` / `deal.lost` if created in a closed stage |
//! | Opportunity UPDATE | `deal.amount_changed` if `Amount` changed; `deal.stage_changed`, `deal.won` or `deal.lost` if `StageName` changed |
//! | Task CREATE, `TaskSubtype` `Call` | `call.logged` (`CallDurationInSeconds`, `CallDisposition`, `WhoId` lead `00Q…`, `WhatId` deal `006…`) |
//! | Task CREATE, `TaskSubtype` `Email` | `email.sent` |
//! | Event CREATE / UPDATE of `StartDateTime` / DELETE | `meeting.scheduled` / `meeting.rescheduled` / `meeting.canceled`; the configured status field gives held, no-show, canceled |
//! | the subscription object (default `Account`) with its MRR field set or changed | `subscription.changed` (starts an inactive account), or `subscription.canceled` when it becomes 0 or empty |
//!
//! Other changes (deletes, undeletes, GAP and OVERFLOW events, other
//! fields): nothing to do; other entities: an unknown kind. The dedup id is
//! the transaction key, sequence number and record id, which a redelivery
//! keeps.

use serde_json::Value;

use super::{
    amount, missing, number, opt_bool, opt_id, timestamp, unmappable, wrong, Adapted, Canonical,
    Element, Known, Mapping, SalesforceObjects, StageMove,
};
use crate::event::{format_timestamp, RejectReason, Rejection};

const SOURCE: &str = "salesforce";

/// Values of the configured meeting status field (any case).
const MEETING_STATUSES: [(&str, &str); 7] = [
    ("held", "held"),
    ("completed", "held"),
    ("no show", "no_show"),
    ("no_show", "no_show"),
    ("no-show", "no_show"),
    ("canceled", "canceled"),
    ("cancelled", "canceled"),
];

/// The change event inside the shapes relays forward: the bare event (the
/// Pub/Sub API's decoded record), CometD's `{schema, payload, event}`, and
/// the older `{channel, data: {schema, payload, event}}`. With it, the Avro
/// schema when the message carries one (to decode bitmap `changedFields`).
fn unwrap(doc: &Value) -> Result<(&Value, Option<&Value>), Rejection> {
    if !doc.is_object() {
        return Err(wrong("a change event", "an object"));
    }
    let has_header = |v: &Value| v.get("ChangeEventHeader").is_some();
    for outer in [Some(doc), doc.get("data").filter(|d| d.is_object())]
        .into_iter()
        .flatten()
    {
        if has_header(outer) {
            return Ok((outer, None));
        }
        if let Some(p) = outer.get("payload") {
            if !p.is_object() {
                return Err(wrong("payload", "an object"));
            }
            return Ok((p, outer.get("schema")));
        }
    }
    Err(missing("ChangeEventHeader"))
}

/// The field names of an Avro record schema given as JSON (an object, or
/// its text).
fn schema_fields(schema: Option<&Value>) -> Option<Vec<String>> {
    let parsed;
    let schema = match schema? {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s).ok()?;
            &parsed
        }
        v => v,
    };
    schema
        .get("fields")?
        .as_array()?
        .iter()
        .map(|f| f.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// `changedFields` or `nulledFields`: names, or the Pub/Sub API's bitmaps
/// (`0x…` for top-level fields: bit i, counted from the least significant,
/// is the schema's field i; `p-0x…` for the fields of compound field p).
fn field_list(
    header: &Value,
    key: &str,
    schema: &Option<Vec<String>>,
) -> Result<Vec<String>, Rejection> {
    let items = match header.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(wrong(&format!("ChangeEventHeader.{key}"), "an array")),
    };
    let mut out = Vec::new();
    for item in items {
        let Some(text) = item.as_str() else {
            return Err(wrong(
                &format!("ChangeEventHeader.{key}"),
                "an array of field names",
            ));
        };
        let bitmap = text.strip_prefix("0x");
        let nested = text
            .split_once("-0x")
            .filter(|(p, _)| p.bytes().all(|b| b.is_ascii_digit()));
        if bitmap.is_none() && nested.is_none() {
            out.push(text.to_owned());
            continue;
        }
        let Some(fields) = schema else {
            return Err(Rejection::new(
                RejectReason::EncodedFields,
                format!(
                    "ChangeEventHeader.{key} is a Pub/Sub bitmap and the message carries no schema to decode it: forward the decoded field names, or the schema"
                ),
            ));
        };
        let bad = || wrong(&format!("ChangeEventHeader.{key}"), "a hex bitmap");
        let (parent, hex) = match (bitmap, nested) {
            (Some(hex), _) => (None, hex),
            (None, Some((p, hex))) => (Some(p.parse::<usize>().map_err(|_| bad())?), hex),
            (None, None) => unreachable!("one of them is set"),
        };
        // Compound fields' own schemas are not read: their parent stands
        // for them, which is what a KPI field needs.
        if let Some(p) = parent {
            out.push(fields.get(p).ok_or_else(bad)?.clone());
            continue;
        }
        let digits: Vec<u32> = hex
            .chars()
            .map(|c| c.to_digit(16).ok_or_else(bad))
            .collect::<Result<_, _>>()?;
        for (from_low, d) in digits.iter().rev().enumerate() {
            for bit in 0..4 {
                if d & (1 << bit) != 0 {
                    let i = from_low * 4 + bit;
                    out.push(fields.get(i).ok_or_else(bad)?.clone());
                }
            }
        }
    }
    Ok(out)
}

/// A Salesforce id field: ids are text (a number is the wrong type);
/// absent when missing, null or empty.
fn sf_id(obj: &Value, key: &str, what: &str) -> Result<Option<String>, Rejection> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(wrong(what, "a Salesforce id (text)")),
    }
}

pub fn adapt(
    doc: &Value,
    map: &Mapping,
    objects: &SalesforceObjects,
    _known: &dyn Known,
) -> Result<Vec<Element>, Rejection> {
    let (ev, schema) = unwrap(doc)?;
    let h = match ev.get("ChangeEventHeader") {
        None | Some(Value::Null) => return Err(missing("ChangeEventHeader")),
        Some(h) if h.is_object() => h,
        Some(_) => return Err(wrong("ChangeEventHeader", "an object")),
    };
    let text = |key: &str| -> Result<&str, Rejection> {
        match h.get(key) {
            None | Some(Value::Null) => Err(missing(&format!("ChangeEventHeader.{key}"))),
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(wrong(&format!("ChangeEventHeader.{key}"), "a string")),
        }
    };
    let entity = text("entityName")?;
    let change = text("changeType")?;
    let kind = match entity {
        "Opportunity" => Kind::Opportunity,
        "Task" => Kind::Task,
        "Event" => Kind::Event,
        "Lead" => Kind::Lead,
        e if e == objects.subscription_object => Kind::Subscription,
        e if !objects.survey_object.is_empty() && e == objects.survey_object => Kind::Survey,
        _ => return Ok(vec![Element::new(None, Ok(Adapted::UnknownKind))]),
    };
    if change.starts_with("GAP_") {
        return Err(Rejection::new(
            RejectReason::IncompletePayload,
            format!("a {change} event carries no fields: reconcile its records from Salesforce"),
        ));
    }
    let not_ids = || wrong("ChangeEventHeader.recordIds", "an array of ids");
    let records: Vec<String> = match h.get("recordIds") {
        Some(Value::Array(ids)) if !ids.is_empty() => ids
            .iter()
            .map(|v| {
                v.as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(not_ids)
            })
            .collect::<Result<_, _>>()?,
        None | Some(Value::Null) | Some(Value::Array(_)) => {
            return Err(missing("ChangeEventHeader.recordIds"))
        }
        Some(_) => return Err(not_ids()),
    };
    if records.iter().any(|r| r.ends_with('*')) {
        return Err(Rejection::new(
            RejectReason::IncompletePayload,
            "recordIds names records by a wildcard: reconcile them from Salesforce",
        ));
    }
    let at = timestamp(
        h.get("commitTimestamp")
            .ok_or_else(|| missing("ChangeEventHeader.commitTimestamp"))?,
        "ChangeEventHeader.commitTimestamp",
    )?;
    let tx = sf_id(h, "transactionKey", "ChangeEventHeader.transactionKey")?
        .ok_or_else(|| missing("ChangeEventHeader.transactionKey"))?;
    let seq = opt_id(h, "sequenceNumber", "ChangeEventHeader.sequenceNumber")?.unwrap_or_default();
    let fields = schema_fields(schema);
    let changed = field_list(h, "changedFields", &fields)?;
    let nulled = field_list(h, "nulledFields", &fields)?;
    let owner = sf_id(ev, "OwnerId", "OwnerId")?.map(|o| map.rep(&o));
    if !matches!(change, "CREATE" | "UPDATE" | "DELETE" | "UNDELETE") {
        return Err(unmappable(
            "ChangeEventHeader.changeType is not a CDC change type",
        ));
    }
    let ctx = Ctx {
        ev,
        map,
        objects,
        at,
        create: change == "CREATE",
        changed: changed.iter().map(String::as_str).collect(),
        nulled: nulled.iter().map(String::as_str).collect(),
        owner,
    };
    let several = records.len() > 1;
    Ok(records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let id = |suffix: &str| format!("salesforce:{tx}:{seq}:{record}:{suffix}");
            let mut out = Vec::new();
            let done = match (kind, change) {
                (Kind::Opportunity, "CREATE" | "UPDATE") => ctx.opportunity(record, &id, &mut out),
                (Kind::Task, "CREATE") => ctx.task(record, &id, &mut out),
                (Kind::Event, "CREATE" | "UPDATE" | "DELETE") => {
                    ctx.meeting(record, change == "DELETE", &id, &mut out)
                }
                (Kind::Lead, "CREATE" | "UPDATE") => ctx.lead(record, &id, &mut out),
                (Kind::Subscription, "CREATE" | "UPDATE") => {
                    ctx.subscription(record, &id, &mut out)
                }
                (Kind::Survey, "CREATE") => ctx.survey(record, &id, &mut out),
                _ => Ok(()),
            };
            Element::events(several.then_some(i), done.map(|()| out))
        })
        .collect())
}

#[derive(Clone, Copy)]
enum Kind {
    Opportunity,
    Task,
    Event,
    Lead,
    Subscription,
    Survey,
}

struct Ctx<'a> {
    ev: &'a Value,
    map: &'a Mapping,
    objects: &'a SalesforceObjects,
    at: i64,
    create: bool,
    changed: Vec<&'a str>,
    nulled: Vec<&'a str>,
    owner: Option<String>,
}

impl Ctx<'_> {
    /// Whether this event sets `field`: present on a create, changed on an
    /// update.
    fn sets(&self, field: &str) -> bool {
        if self.create {
            self.ev.get(field).is_some_and(|v| !v.is_null())
        } else {
            self.changed.contains(&field) || self.nulled.contains(&field)
        }
    }

    fn text(&self, field: &str) -> Option<&str> {
        self.ev
            .get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    fn event(&self, id: String, kind: &str) -> Canonical {
        Canonical::new(id, kind, self.at, SOURCE)
    }

    /// The lead (`WhoId`, a `00Q…` id) and opportunity (`WhatId`, a `006…`
    /// id) an activity is linked to.
    fn links(&self, ev: Canonical) -> Canonical {
        ev.set_opt(
            "lead_id",
            self.text("WhoId").filter(|w| w.starts_with("00Q")),
        )
        .set_opt(
            "deal_id",
            self.text("WhatId").filter(|w| w.starts_with("006")),
        )
    }

    fn opportunity(
        &self,
        record: &str,
        id: &dyn Fn(&str) -> String,
        out: &mut Vec<Value>,
    ) -> Result<(), Rejection> {
        let value = number(amount(self.ev.get("Amount"), "Amount")?);
        let currency = self.text("CurrencyIsoCode");
        let stage = self.text("StageName").map(|s| self.map.stage_move(s));
        // `IsWon` and `IsClosed` flip in the same event as `StageName` and
        // say what a stage means whatever its name; the stage lists decide
        // only when the flags are not sent.
        let won = opt_bool(self.ev, "IsWon", "IsWon")?;
        let closed = opt_bool(self.ev, "IsClosed", "IsClosed")?;
        let close = if won.is_some() || closed.is_some() {
            let flagged = match (closed, won) {
                (_, Some(true)) => Some(StageMove::Won),
                (Some(true), _) => Some(StageMove::Lost),
                _ => None,
            };
            flagged.filter(|_| self.sets("IsWon") || self.sets("IsClosed"))
        } else if self.sets("StageName") {
            stage
                .clone()
                .filter(|s| matches!(s, StageMove::Won | StageMove::Lost))
        } else {
            None
        };
        if self.create {
            let rep = self.owner.clone().ok_or_else(|| missing("OwnerId"))?;
            let open = match &stage {
                Some(StageMove::Open(s)) => Some(s.clone()),
                _ => None,
            };
            out.push(
                self.event(id("created"), "deal.created")
                    .set("deal_id", record)
                    .set("rep_id", rep)
                    .set("amount", value.clone())
                    .set_opt("currency", currency)
                    .set_opt("stage", open)
                    .done(),
            );
        } else if self.sets("Amount") {
            out.push(
                self.event(id("amount"), "deal.amount_changed")
                    .set("deal_id", record)
                    .set("amount", value.clone())
                    .set_opt("currency", currency)
                    .done(),
            );
        }
        let ev = match close {
            Some(StageMove::Won) => {
                let won = self.event(id("won"), "deal.won");
                if self.sets("Amount") {
                    won.set("amount", value).set_opt("currency", currency)
                } else {
                    won
                }
            }
            Some(StageMove::Lost) => self.event(id("lost"), "deal.lost"),
            _ if self.create || !self.sets("StageName") => return Ok(()),
            _ => match stage {
                Some(StageMove::Open(to)) => self
                    .event(id("stage"), "deal.stage_changed")
                    .set("to_stage", to),
                // A closing stage name with flags that say open: no move.
                Some(_) => return Ok(()),
                None => return Err(unmappable("StageName is empty")),
            },
        };
        out.push(
            ev.set("deal_id", record)
                .set_opt("rep_id", self.owner.clone())
                .done(),
        );
        Ok(())
    }

    fn lead(
        &self,
        record: &str,
        id: &dyn Fn(&str) -> String,
        out: &mut Vec<Value>,
    ) -> Result<(), Rejection> {
        if self.create {
            out.push(
                self.event(id("lead"), "lead.created")
                    .set("lead_id", record)
                    .set_opt("rep_id", self.owner.clone())
                    .done(),
            );
        }
        // A conversion is one transaction; its Lead update carries
        // `IsConverted` and the opportunity it became.
        if self.sets("IsConverted")
            && opt_bool(self.ev, "IsConverted", "IsConverted")? == Some(true)
        {
            let deal = sf_id(self.ev, "ConvertedOpportunityId", "ConvertedOpportunityId")?;
            out.push(
                self.event(id("converted"), "lead.converted")
                    .set("lead_id", record)
                    .set_opt("deal_id", deal)
                    .set_opt("rep_id", self.owner.clone())
                    .done(),
            );
        }
        Ok(())
    }

    fn survey(
        &self,
        _record: &str,
        id: &dyn Fn(&str) -> String,
        out: &mut Vec<Value>,
    ) -> Result<(), Rejection> {
        let o = self.objects;
        let kind = if o.survey_kind_field.is_empty() {
            o.survey_kind.to_ascii_lowercase()
        } else {
            match self.text(&o.survey_kind_field) {
                Some(k) => k.to_ascii_lowercase(),
                None => return Err(missing(&o.survey_kind_field)),
            }
        };
        if kind != "nps" && kind != "csat" {
            return Ok(()); // another kind of survey: no KPI
        }
        let score = match self.ev.get(&o.survey_score_field) {
            None | Some(Value::Null) => return Err(missing(&o.survey_score_field)),
            Some(v) => amount(Some(v), &o.survey_score_field)?,
        };
        if score.fract() != 0.0 {
            return Err(wrong(&o.survey_score_field, "an integer"));
        }
        let account = if o.survey_account_field.is_empty() {
            None
        } else {
            sf_id(self.ev, &o.survey_account_field, &o.survey_account_field)?
        };
        out.push(
            self.event(id("survey"), "survey.responded")
                .set("kind", kind)
                .set("score", score as i64)
                .set_opt("account_id", account)
                .set_opt("rep_id", self.owner.clone())
                .done(),
        );
        Ok(())
    }

    fn task(
        &self,
        record: &str,
        id: &dyn Fn(&str) -> String,
        out: &mut Vec<Value>,
    ) -> Result<(), Rejection> {
        let subtype = self.text("TaskSubtype").or(self.text("Type"));
        let (kind, field) = match subtype {
            Some("Call") => ("call.logged", "call_id"),
            Some("Email") => ("email.sent", "email_id"),
            _ => return Ok(()),
        };
        if kind == "call.logged" && self.text("CallType").is_some_and(|t| t != "Outbound") {
            return Ok(()); // inbound and internal calls are not counted
        }
        let rep = self.owner.clone().ok_or_else(|| missing("OwnerId"))?;
        // When the call happened, when the task says so.
        let at = match self.ev.get("CompletedDateTime") {
            None | Some(Value::Null) => self.at,
            Some(t) => timestamp(t, "CompletedDateTime")?,
        };
        let mut ev = self.links(
            Canonical::new(id("task"), kind, at, SOURCE)
                .set(field, record)
                .set("rep_id", rep),
        );
        if kind == "call.logged" {
            let seconds = amount(
                self.ev.get("CallDurationInSeconds"),
                "CallDurationInSeconds",
            )?;
            ev = ev.set("duration_seconds", number(seconds)).set(
                "outcome",
                match self.text("CallDisposition") {
                    Some(d) if self.map.call_outcomes.contains_key(d) => {
                        self.map.call_outcome(d, &[])
                    }
                    d => disposition(d).to_owned(),
                },
            );
        }
        out.push(ev.done());
        Ok(())
    }

    fn meeting(
        &self,
        record: &str,
        deleted: bool,
        id: &dyn Fn(&str) -> String,
        out: &mut Vec<Value>,
    ) -> Result<(), Rejection> {
        if deleted {
            out.push(
                self.event(id("canceled"), "meeting.canceled")
                    .set("meeting_id", record)
                    .done(),
            );
            return Ok(());
        }
        if self.sets("StartDateTime") {
            let start = self
                .ev
                .get("StartDateTime")
                .ok_or_else(|| missing("StartDateTime"))?;
            let start = format_timestamp(timestamp(start, "StartDateTime")?);
            let ev = if self.create {
                let rep = self.owner.clone().ok_or_else(|| missing("OwnerId"))?;
                self.links(
                    self.event(id("scheduled"), "meeting.scheduled")
                        .set("rep_id", rep),
                )
            } else {
                self.event(id("rescheduled"), "meeting.rescheduled")
            };
            out.push(
                ev.set("meeting_id", record)
                    .set("scheduled_for", start)
                    .done(),
            );
        }
        let field = &self.objects.meeting_status_field;
        if !field.is_empty() && self.sets(field) {
            let Some(kind) = self
                .text(field)
                .and_then(|v| self.map.meeting_outcome(v, &MEETING_STATUSES))
            else {
                return Ok(());
            };
            out.push(
                self.event(id("status"), kind)
                    .set("meeting_id", record)
                    .done(),
            );
        }
        Ok(())
    }

    /// The account of a subscription record.
    fn account(&self, record: &str) -> Result<String, Rejection> {
        if self.objects.account_field.is_empty() {
            Ok(record.to_owned())
        } else {
            sf_id(
                self.ev,
                &self.objects.account_field,
                &self.objects.account_field,
            )?
            .ok_or_else(|| missing(&self.objects.account_field))
        }
    }

    fn subscription(
        &self,
        record: &str,
        id: &dyn Fn(&str) -> String,
        out: &mut Vec<Value>,
    ) -> Result<(), Rejection> {
        let churn = &self.objects.churn_field;
        if !churn.is_empty()
            && self.sets(churn)
            && self.text(churn).is_some_and(|v| {
                self.objects
                    .churn_values
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(v))
            })
        {
            let account = self.account(record)?;
            out.push(
                self.event(id("churn"), "subscription.canceled")
                    .set("account_id", account)
                    .set_opt("rep_id", self.owner.clone())
                    .done(),
            );
            return Ok(());
        }
        let field = &self.objects.mrr_field;
        if !self.sets(field) {
            return Ok(());
        }
        let account = self.account(record)?;
        let mrr = amount(self.ev.get(field), field)?;
        let ev = if mrr > 0.0 {
            self.event(id("mrr"), "subscription.changed")
                .set("mrr", number(mrr))
                .set_opt("currency", self.text("CurrencyIsoCode"))
        } else {
            self.event(id("mrr"), "subscription.canceled")
        };
        out.push(
            ev.set("account_id", account)
                .set_opt("rep_id", self.owner.clone())
                .done(),
        );
        Ok(())
    }
}

/// A `CallDisposition` (free text in Salesforce) as a call outcome.
fn disposition(d: Option<&str>) -> &'static str {
    let d = d.unwrap_or_default().to_ascii_lowercase();
    if d.contains("no answer") || d.contains("no_answer") {
        "no_answer"
    } else if d.contains("voicemail") {
        "voicemail"
    } else if d.contains("busy") {
        "busy"
    } else if d.contains("connect") || d.contains("reached") {
        "connected"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::NothingKnown;
    use crate::event::RejectReason;
    use serde_json::json;

    fn mapping() -> Mapping {
        Mapping {
            owners: [("005A".to_owned(), "rep-cai".to_owned())].into(),
            stages: [
                ("Prospecting".to_owned(), "prospecting".to_owned()),
                ("Id. Decision Makers".to_owned(), "demo".to_owned()),
            ]
            .into(),
            won_stages: ["Closed Won".to_owned()].into(),
            lost_stages: ["Closed Lost".to_owned()].into(),
            ..Mapping::default()
        }
    }

    fn cdc(entity: &str, change: &str, changed: &[&str], fields: Value) -> Value {
        let mut ev = json!({"ChangeEventHeader": {
            "entityName": entity, "recordIds": ["006R1"], "changeType": change,
            "changeOrigin": "com/salesforce/api/soap/61.0", "transactionKey": "tx-1",
            "sequenceNumber": 1, "commitTimestamp": 1_793_697_600_000i64, "commitNumber": 1,
            "commitUser": "005A", "changedFields": changed, "nulledFields": [], "diffFields": []
        }});
        for (k, v) in fields.as_object().unwrap() {
            ev[k] = v.clone();
        }
        ev
    }

    fn elements(doc: &Value, objects: &SalesforceObjects) -> Vec<Element> {
        adapt(doc, &mapping(), objects, &NothingKnown).unwrap()
    }

    /// The one result of a change naming one record (a rejection of the
    /// whole change included).
    fn result(doc: &Value, objects: &SalesforceObjects) -> Result<Adapted, Rejection> {
        let mut e = adapt(doc, &mapping(), objects, &NothingKnown)?;
        assert_eq!(e.len(), 1);
        e.remove(0).result
    }

    fn events(doc: Value, objects: &SalesforceObjects) -> Vec<Value> {
        elements(&doc, objects)
            .into_iter()
            .flat_map(|e| match e.result {
                Ok(Adapted::Events(v)) => v,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn kinds(evs: &[Value]) -> Vec<&str> {
        evs.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn opportunities_open_move_and_close() {
        let o = SalesforceObjects::default();
        let evs = events(
            cdc(
                "Opportunity",
                "CREATE",
                &[],
                json!({"OwnerId": "005A", "Amount": 5000.0, "CurrencyIsoCode": "GBP", "StageName": "Prospecting"}),
            ),
            &o,
        );
        assert_eq!(kinds(&evs), ["deal.created"]);
        assert_eq!(
            (evs[0]["rep_id"].as_str(), evs[0]["stage"].as_str()),
            (Some("rep-cai"), Some("prospecting"))
        );
        assert_eq!(evs[0]["amount"], 5000);
        let evs = events(
            cdc(
                "Opportunity",
                "UPDATE",
                &["StageName", "Amount", "LastModifiedDate"],
                json!({"StageName": "Id. Decision Makers", "Amount": 6000}),
            ),
            &o,
        );
        assert_eq!(kinds(&evs), ["deal.amount_changed", "deal.stage_changed"]);
        assert_eq!(evs[1]["to_stage"], "demo");
        let evs = events(
            cdc(
                "Opportunity",
                "UPDATE",
                &["StageName"],
                json!({"StageName": "Closed Won"}),
            ),
            &o,
        );
        assert_eq!(kinds(&evs), ["deal.won"]);
        assert!(
            evs[0].get("amount").is_none(),
            "an unchanged Amount is not sent"
        );
        let mut bulk = cdc(
            "Opportunity",
            "UPDATE",
            &["StageName"],
            json!({"StageName": "Closed Lost"}),
        );
        bulk["ChangeEventHeader"]["recordIds"] = json!(["006R1", "006R2"]);
        let evs = events(bulk, &o);
        assert_eq!(kinds(&evs), ["deal.lost", "deal.lost"]);
        assert_ne!(evs[0]["id"], evs[1]["id"]);
        assert_eq!(evs[1]["deal_id"], "006R2");
    }

    #[test]
    fn tasks_events_and_subscriptions() {
        let o = SalesforceObjects {
            meeting_status_field: "Meeting_Status__c".into(),
            ..SalesforceObjects::default()
        };
        let evs = events(
            cdc(
                "Task",
                "CREATE",
                &[],
                json!({"OwnerId": "005A", "TaskSubtype": "Call", "CallDurationInSeconds": 95, "CallDisposition": "Connected - interested", "WhoId": "00Q9", "WhatId": "001X"}),
            ),
            &o,
        );
        assert_eq!(kinds(&evs), ["call.logged"]);
        assert_eq!(
            (evs[0]["outcome"].as_str(), evs[0]["lead_id"].as_str()),
            (Some("connected"), Some("00Q9"))
        );
        assert!(
            evs[0].get("deal_id").is_none(),
            "001 is an account, not a deal"
        );
        let evs = events(
            cdc(
                "Event",
                "CREATE",
                &[],
                json!({"OwnerId": "005A", "StartDateTime": "2026-11-05T15:00:00.000+0000"}),
            ),
            &o,
        );
        assert_eq!(kinds(&evs), ["meeting.scheduled"]);
        assert_eq!(evs[0]["scheduled_for"], "2026-11-05T15:00:00.000000Z");
        let evs = events(
            cdc(
                "Event",
                "UPDATE",
                &["Meeting_Status__c"],
                json!({"Meeting_Status__c": "No Show"}),
            ),
            &o,
        );
        assert_eq!(kinds(&evs), ["meeting.no_show"]);
        let evs = events(
            cdc("Account", "UPDATE", &["MRR__c"], json!({"MRR__c": 900})),
            &o,
        );
        assert_eq!(
            (kinds(&evs)[0], evs[0]["mrr"].as_i64()),
            ("subscription.changed", Some(900))
        );
        let mut gone = cdc("Account", "UPDATE", &[], json!({}));
        gone["ChangeEventHeader"]["nulledFields"] = json!(["MRR__c"]);
        assert_eq!(kinds(&events(gone, &o)), ["subscription.canceled"]);
    }

    #[test]
    fn unknown_entities_nothing_to_do_and_rejections() {
        let o = SalesforceObjects::default();
        assert_eq!(
            result(&cdc("Case", "CREATE", &[], json!({})), &o),
            Ok(Adapted::UnknownKind)
        );
        assert_eq!(
            result(
                &cdc("Opportunity", "UPDATE", &["Description"], json!({})),
                &o
            ),
            Ok(Adapted::NothingToDo)
        );
        let reject = |doc: Value| result(&doc, &o).unwrap_err().reason;
        assert_eq!(
            reject(cdc("Opportunity", "GAP_UPDATE", &[], json!({}))),
            RejectReason::IncompletePayload
        );
        let mut wildcard = cdc("Opportunity", "UPDATE", &["Amount"], json!({"Amount": 1}));
        wildcard["ChangeEventHeader"]["recordIds"] = json!(["006*"]);
        assert_eq!(reject(wildcard), RejectReason::IncompletePayload);
        assert_eq!(
            adapt(&json!({"StageName": "x"}), &mapping(), &o, &NothingKnown)
                .unwrap_err()
                .reason,
            RejectReason::MissingField
        );
        assert_eq!(
            reject(cdc("Opportunity", "CREATE", &[], json!({"Amount": 1}))),
            RejectReason::MissingField
        );
        let mut not_a_list = cdc("Opportunity", "UPDATE", &[], json!({}));
        not_a_list["ChangeEventHeader"]["recordIds"] = json!("006R1");
        assert_eq!(reject(not_a_list), RejectReason::WrongType);
        let mut bad_owner = cdc("Opportunity", "CREATE", &[], json!({"OwnerId": 5005}));
        bad_owner["ChangeEventHeader"]["recordIds"] = json!(["006R1"]);
        assert_eq!(reject(bad_owner), RejectReason::WrongType);
        let mut bad_time = cdc("Task", "CREATE", &[], json!({}));
        bad_time["ChangeEventHeader"]["commitTimestamp"] = json!("noon");
        assert_eq!(reject(bad_time), RejectReason::BadTimestamp);
        let mut bitmap = cdc("Opportunity", "UPDATE", &["0x06"], json!({"Amount": 7}));
        assert_eq!(reject(bitmap.clone()), RejectReason::EncodedFields);
        // With the schema, bit 1 is the schema's second field, bit 2 its third.
        bitmap = json!({"schema": {"type": "record", "name": "OpportunityChangeEvent", "fields": [
            {"name": "ChangeEventHeader"}, {"name": "Name"}, {"name": "Amount"}, {"name": "StageName"}]},
            "payload": bitmap, "event": {"replayId": 12}});
        let evs = events(bitmap, &o);
        assert_eq!(kinds(&evs), ["deal.amount_changed"]);
    }

    #[test]
    fn every_relay_shape_is_read() {
        let o = SalesforceObjects::default();
        let bare = cdc("Opportunity", "UPDATE", &["Amount"], json!({"Amount": 7}));
        let cometd = json!({"schema": "abc123", "payload": bare.clone(), "event": {"replayId": 5}});
        let channel = json!({"channel": "/data/OpportunityChangeEvent", "data": {"schema": "abc123", "payload": bare.clone(), "event": {"replayId": 5}}});
        for doc in [bare, cometd, channel] {
            assert_eq!(kinds(&events(doc, &o)), ["deal.amount_changed"]);
        }
    }

    #[test]
    fn flags_close_deals_and_leads_convert() {
        let o = SalesforceObjects::default();
        let evs = events(
            cdc(
                "Opportunity",
                "UPDATE",
                &["StageName", "IsWon", "IsClosed"],
                json!({"StageName": "Signed", "IsWon": true, "IsClosed": true}),
            ),
            &o,
        );
        assert_eq!(
            kinds(&evs),
            ["deal.won"],
            "IsWon decides, whatever the stage's name"
        );
        let evs = events(
            cdc(
                "Opportunity",
                "UPDATE",
                &["StageName", "IsClosed"],
                json!({"StageName": "Dead", "IsWon": false, "IsClosed": true}),
            ),
            &o,
        );
        assert_eq!(kinds(&evs), ["deal.lost"]);
        let mut lead = cdc("Lead", "CREATE", &[], json!({"OwnerId": "005A"}));
        lead["ChangeEventHeader"]["recordIds"] = json!(["00QL1"]);
        let evs = events(lead, &o);
        assert_eq!(
            (kinds(&evs)[0], evs[0]["lead_id"].as_str()),
            ("lead.created", Some("00QL1"))
        );
        let mut conv = cdc(
            "Lead",
            "UPDATE",
            &["IsConverted", "ConvertedOpportunityId"],
            json!({"IsConverted": true, "ConvertedOpportunityId": "006N1"}),
        );
        conv["ChangeEventHeader"]["recordIds"] = json!(["00QL1"]);
        let evs = events(conv, &o);
        assert_eq!(kinds(&evs), ["lead.converted"]);
        assert_eq!(evs[0]["deal_id"], "006N1");
    }

    #[test]
    fn churn_and_surveys_come_from_configured_fields() {
        let o = SalesforceObjects {
            churn_field: "Status__c".into(),
            churn_values: vec!["Canceled".into()],
            survey_object: "Survey_Response__c".into(),
            survey_score_field: "Score__c".into(),
            survey_kind_field: "Kind__c".into(),
            survey_account_field: "Account__c".into(),
            ..SalesforceObjects::default()
        };
        let evs = events(
            cdc(
                "Account",
                "UPDATE",
                &["Status__c"],
                json!({"Status__c": "Canceled"}),
            ),
            &o,
        );
        assert_eq!(kinds(&evs), ["subscription.canceled"]);
        let evs = events(
            cdc(
                "Survey_Response__c",
                "CREATE",
                &[],
                json!({"Score__c": 9, "Kind__c": "NPS", "Account__c": "001A"}),
            ),
            &o,
        );
        assert_eq!(kinds(&evs), ["survey.responded"]);
        assert_eq!(
            (
                evs[0]["kind"].as_str(),
                evs[0]["score"].as_i64(),
                evs[0]["account_id"].as_str()
            ),
            (Some("nps"), Some(9), Some("001A"))
        );
        let inbound = cdc(
            "Task",
            "CREATE",
            &[],
            json!({"OwnerId": "005A", "TaskSubtype": "Call", "CallType": "Inbound"}),
        );
        assert_eq!(result(&inbound, &o), Ok(Adapted::NothingToDo));
    }
}
