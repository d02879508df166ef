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
    amount, id_text, missing, number, timestamp, unmappable, wrong, Adapted, Canonical, Mapping,
    SalesforceObjects, StageMove,
};
use crate::event::{format_timestamp, Rejection};

const SOURCE: &str = "salesforce";

pub fn adapt(
    doc: &Value,
    map: &Mapping,
    objects: &SalesforceObjects,
) -> Result<Adapted, Rejection> {
    // A CometD message wraps the event in `data.payload`.
    let ev = doc
        .pointer("/data/payload")
        .filter(|p| p.is_object())
        .unwrap_or(doc);
    if !ev.is_object() {
        return Err(wrong("a change event", "an object"));
    }
    let h = ev
        .get("ChangeEventHeader")
        .filter(|h| h.is_object())
        .ok_or_else(|| missing("ChangeEventHeader"))?;
    let entity = h
        .get("entityName")
        .and_then(Value::as_str)
        .ok_or_else(|| missing("ChangeEventHeader.entityName"))?;
    let change = h
        .get("changeType")
        .and_then(Value::as_str)
        .ok_or_else(|| missing("ChangeEventHeader.changeType"))?;
    let kind = match entity {
        "Opportunity" => Kind::Opportunity,
        "Task" => Kind::Task,
        "Event" => Kind::Event,
        e if e == objects.subscription_object => Kind::Subscription,
        _ => return Ok(Adapted::UnknownKind),
    };
    let records: Vec<String> = match h.get("recordIds") {
        Some(Value::Array(ids)) if !ids.is_empty() => ids
            .iter()
            .map(|v| id_text(Some(v)).ok_or_else(|| wrong("recordIds", "an array of ids")))
            .collect::<Result<_, _>>()?,
        _ => return Err(missing("ChangeEventHeader.recordIds")),
    };
    let at = timestamp(
        h.get("commitTimestamp")
            .ok_or_else(|| missing("ChangeEventHeader.commitTimestamp"))?,
        "ChangeEventHeader.commitTimestamp",
    )?;
    let tx = id_text(h.get("transactionKey"))
        .ok_or_else(|| missing("ChangeEventHeader.transactionKey"))?;
    let seq = id_text(h.get("sequenceNumber")).unwrap_or_default();
    let changed: Vec<&str> = h
        .get("changedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let nulled: Vec<&str> = h
        .get("nulledFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let ctx = Ctx {
        ev,
        map,
        objects,
        at,
        create: change == "CREATE",
        changed,
        nulled,
        owner: id_text(ev.get("OwnerId")).map(|o| map.rep(&o)),
    };
    let mut out = Vec::new();
    for record in &records {
        let id = |suffix: &str| format!("salesforce:{tx}:{seq}:{record}:{suffix}");
        match (kind, change) {
            (Kind::Opportunity, "CREATE" | "UPDATE") => ctx.opportunity(record, &id, &mut out)?,
            (Kind::Task, "CREATE") => ctx.task(record, &id, &mut out)?,
            (Kind::Event, "CREATE" | "UPDATE" | "DELETE") => {
                ctx.meeting(record, change == "DELETE", &id, &mut out)?
            }
            (Kind::Subscription, "CREATE" | "UPDATE") => ctx.subscription(record, &id, &mut out)?,
            _ => {}
        }
    }
    Ok(if out.is_empty() {
        Adapted::NothingToDo
    } else {
        Adapted::Events(out)
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Opportunity,
    Task,
    Event,
    Subscription,
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
        if !self.sets("StageName") {
            return Ok(());
        }
        let ev = match stage.ok_or_else(|| unmappable("StageName is empty"))? {
            StageMove::Open(_) if self.create => return Ok(()),
            StageMove::Open(to) => self
                .event(id("stage"), "deal.stage_changed")
                .set("to_stage", to),
            StageMove::Won => {
                let won = self.event(id("won"), "deal.won");
                if self.sets("Amount") {
                    won.set("amount", value).set_opt("currency", currency)
                } else {
                    won
                }
            }
            StageMove::Lost => self.event(id("lost"), "deal.lost"),
        };
        out.push(
            ev.set("deal_id", record)
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
        let rep = self.owner.clone().ok_or_else(|| missing("OwnerId"))?;
        let mut ev = self.links(
            self.event(id("task"), kind)
                .set(field, record)
                .set("rep_id", rep),
        );
        if kind == "call.logged" {
            let seconds = amount(
                self.ev.get("CallDurationInSeconds"),
                "CallDurationInSeconds",
            )?;
            ev = ev
                .set("duration_seconds", number(seconds))
                .set("outcome", disposition(self.text("CallDisposition")));
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
            let kind = match self.text(field).map(str::to_ascii_lowercase).as_deref() {
                Some("held" | "completed") => "meeting.held",
                Some("no show" | "no_show" | "no-show") => "meeting.no_show",
                Some("canceled" | "cancelled") => "meeting.canceled",
                Some(_) | None => return Ok(()),
            };
            out.push(
                self.event(id("status"), kind)
                    .set("meeting_id", record)
                    .done(),
            );
        }
        Ok(())
    }

    fn subscription(
        &self,
        record: &str,
        id: &dyn Fn(&str) -> String,
        out: &mut Vec<Value>,
    ) -> Result<(), Rejection> {
        let field = &self.objects.mrr_field;
        if !self.sets(field) {
            return Ok(());
        }
        let account = if self.objects.account_field.is_empty() {
            record.to_owned()
        } else {
            id_text(self.ev.get(&self.objects.account_field))
                .ok_or_else(|| missing(&self.objects.account_field))?
        };
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

    fn events(doc: Value, objects: &SalesforceObjects) -> Vec<Value> {
        match adapt(&doc, &mapping(), objects).unwrap() {
            Adapted::Events(v) => v,
            other => panic!("{other:?}"),
        }
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
            adapt(&cdc("Case", "CREATE", &[], json!({})), &mapping(), &o).unwrap(),
            Adapted::UnknownKind
        );
        assert_eq!(
            adapt(
                &cdc("Opportunity", "UPDATE", &["Description"], json!({})),
                &mapping(),
                &o
            )
            .unwrap(),
            Adapted::NothingToDo
        );
        assert_eq!(
            adapt(
                &cdc("Opportunity", "GAP_UPDATE", &[], json!({})),
                &mapping(),
                &o
            )
            .unwrap(),
            Adapted::NothingToDo
        );
        let reject = |doc: Value| adapt(&doc, &mapping(), &o).unwrap_err().reason;
        assert_eq!(
            reject(json!({"StageName": "x"})),
            RejectReason::MissingField
        );
        assert_eq!(
            reject(cdc("Opportunity", "CREATE", &[], json!({"Amount": 1}))),
            RejectReason::MissingField
        );
        let mut bad_time = cdc("Task", "CREATE", &[], json!({}));
        bad_time["ChangeEventHeader"]["commitTimestamp"] = json!("noon");
        assert_eq!(reject(bad_time), RejectReason::BadTimestamp);
    }
}
