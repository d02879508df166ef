//! Pipedrive webhooks v2: `{"meta": {...}, "data": {...}, "previous": {...}}`.
//!
//! `meta.action` is `create`, `change` or `delete` (v1's `added`, `updated`,
//! `deleted` are read too); `data` is the object after the change and
//! `previous` holds the old values of the fields that changed.
//!
//! | entity, action | canonical events |
//! |---|---|
//! | deal create | `deal.created` (owner, value, currency, stage), then `deal.won` / `deal.lost` if created closed |
//! | deal change | `deal.amount_changed` if `value` or `currency` changed; `deal.stage_changed` if `stage_id` changed; `deal.won` / `deal.lost` if `status` became `won` / `lost` |
//! | activity of type `call`, done | `call.logged` once per activity (duration from `duration` HH:MM) |
//! | activity of type `meeting` | create: `meeting.scheduled` (and `meeting.held` if created done); a new `due_date`/`due_time`: `meeting.rescheduled`; marked done: `meeting.held`; deleted while not done: `meeting.canceled` |
//!
//! Every deal event carries the deal's owner as `rep_id`. Deal deletions
//! and other activity types: nothing to do; other entities:
//! an unknown kind. Due dates and times are UTC, as Pipedrive's API gives
//! them. The dedup id is built from `meta.id`, which a retry keeps.

use serde_json::Value;

use super::{
    amount, id_text, missing, number, req_id, timestamp, unmappable, wrong, Adapted, Canonical,
    Mapping,
};
use crate::event::{format_timestamp, Rejection};

const SOURCE: &str = "pipedrive";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Create,
    Change,
    Delete,
}

pub fn adapt(doc: &Value, map: &Mapping) -> Result<Adapted, Rejection> {
    if !doc.is_object() {
        return Err(wrong("a Pipedrive payload", "an object"));
    }
    let meta = doc.get("meta").ok_or_else(|| missing("meta"))?;
    let entity = meta
        .get("entity")
        .or_else(|| meta.get("object"))
        .and_then(Value::as_str)
        .ok_or_else(|| missing("meta.entity"))?;
    let action = match meta.get("action").and_then(Value::as_str) {
        Some("create" | "added") => Action::Create,
        Some("change" | "updated") => Action::Change,
        Some("delete" | "deleted") => Action::Delete,
        Some(_) => return Ok(Adapted::UnknownKind),
        None => return Err(missing("meta.action")),
    };
    if entity != "deal" && entity != "activity" {
        return Ok(Adapted::UnknownKind);
    }
    let event_id = req_id(meta, "id", "meta.id")?;
    let at = timestamp(
        meta.get("timestamp")
            .ok_or_else(|| missing("meta.timestamp"))?,
        "meta.timestamp",
    )?;
    let data = doc.get("data").filter(|d| d.is_object());
    let previous = doc.get("previous").filter(|p| p.is_object());
    let ctx = Ctx {
        event_id,
        at,
        map,
        previous,
    };
    let events = match (entity, action) {
        ("deal", Action::Delete) => Vec::new(),
        ("deal", _) => ctx.deal(data.ok_or_else(|| missing("data"))?, action)?,
        ("activity", Action::Delete) => match data.or(previous) {
            Some(a) => ctx.activity_deleted(a)?,
            None => Vec::new(),
        },
        _ => ctx.activity(data.ok_or_else(|| missing("data"))?, action)?,
    };
    Ok(if events.is_empty() {
        Adapted::NothingToDo
    } else {
        Adapted::Events(events)
    })
}

struct Ctx<'a> {
    event_id: String,
    at: i64,
    map: &'a Mapping,
    previous: Option<&'a Value>,
}

impl Ctx<'_> {
    fn event(&self, suffix: &str, kind: &str) -> Canonical {
        Canonical::new(
            format!("pipedrive:{}:{suffix}", self.event_id),
            kind,
            self.at,
            SOURCE,
        )
    }

    fn changed(&self, field: &str) -> bool {
        self.previous.is_some_and(|p| p.get(field).is_some())
    }

    fn owner(&self, obj: &Value) -> Option<String> {
        id_text(obj.get("owner_id").or_else(|| obj.get("user_id"))).map(|o| self.map.rep(&o))
    }

    fn deal(&self, d: &Value, action: Action) -> Result<Vec<Value>, Rejection> {
        let deal = req_id(d, "id", "data.id")?;
        let status = d.get("status").and_then(Value::as_str).unwrap_or("open");
        let value = number(amount(d.get("value"), "data.value")?);
        let currency = d
            .get("currency")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty());
        let stage = id_text(d.get("stage_id")).map(|s| self.map.stage(&s));
        let owner = self.owner(d);
        let mut out = Vec::new();
        if action == Action::Create {
            let rep = owner.clone().ok_or_else(|| missing("data.owner_id"))?;
            out.push(
                self.event("created", "deal.created")
                    .set("deal_id", deal.clone())
                    .set("rep_id", rep)
                    .set("amount", value.clone())
                    .set_opt("currency", currency)
                    .set_opt("stage", stage.clone())
                    .done(),
            );
        } else {
            if self.changed("value") || self.changed("currency") {
                out.push(
                    self.event("amount", "deal.amount_changed")
                        .set("deal_id", deal.clone())
                        .set("amount", value.clone())
                        .set_opt("currency", currency)
                        .done(),
                );
            }
            if self.changed("stage_id") && status == "open" {
                let to = stage.ok_or_else(|| missing("data.stage_id"))?;
                let from = self
                    .previous
                    .and_then(|p| id_text(p.get("stage_id")))
                    .map(|s| self.map.stage(&s));
                out.push(
                    self.event("stage", "deal.stage_changed")
                        .set("deal_id", deal.clone())
                        .set("to_stage", to)
                        .set_opt("from_stage", from)
                        .set_opt("rep_id", owner.clone())
                        .done(),
                );
            }
        }
        let closed_now = action == Action::Create || self.changed("status");
        match status {
            "won" if closed_now => out.push(
                self.event("won", "deal.won")
                    .set("deal_id", deal)
                    .set("amount", value)
                    .set_opt("currency", currency)
                    .set_opt("rep_id", owner)
                    .done(),
            ),
            "lost" if closed_now => out.push(
                self.event("lost", "deal.lost")
                    .set("deal_id", deal)
                    .set_opt("rep_id", owner)
                    .set_opt(
                        "reason",
                        d.get("lost_reason")
                            .and_then(Value::as_str)
                            .filter(|r| !r.is_empty()),
                    )
                    .done(),
            ),
            "open" | "won" | "lost" | "deleted" => {}
            _ => return Err(unmappable("data.status is not open, won or lost")),
        }
        Ok(out)
    }

    fn activity(&self, a: &Value, action: Action) -> Result<Vec<Value>, Rejection> {
        let id = req_id(a, "id", "data.id")?;
        let done = a.get("done").and_then(Value::as_bool).unwrap_or(false);
        let became_done = done && (action == Action::Create || self.changed("done"));
        let mut out = Vec::new();
        match a.get("type").and_then(Value::as_str) {
            Some("call") if became_done => {
                let rep = self.owner(a).ok_or_else(|| missing("data.owner_id"))?;
                // Once per call: marking it done again is a duplicate.
                let call = Canonical::new(
                    format!("pipedrive:call:{id}"),
                    "call.logged",
                    self.at,
                    SOURCE,
                )
                .set("call_id", id)
                .set("rep_id", rep)
                .set("duration_seconds", duration(a.get("duration"))?);
                out.push(links(call, a).done());
            }
            Some("meeting") => {
                let due = due(a)?;
                if action == Action::Create {
                    let rep = self.owner(a).ok_or_else(|| missing("data.owner_id"))?;
                    let booked = self
                        .event("scheduled", "meeting.scheduled")
                        .set("meeting_id", id.clone())
                        .set("rep_id", rep)
                        .set("scheduled_for", due);
                    out.push(links(booked, a).done());
                } else if !done && (self.changed("due_date") || self.changed("due_time")) {
                    out.push(
                        self.event("rescheduled", "meeting.rescheduled")
                            .set("meeting_id", id.clone())
                            .set("scheduled_for", due)
                            .done(),
                    );
                }
                if became_done {
                    out.push(
                        self.event("held", "meeting.held")
                            .set("meeting_id", id)
                            .done(),
                    );
                }
            }
            _ => {}
        }
        Ok(out)
    }

    fn activity_deleted(&self, a: &Value) -> Result<Vec<Value>, Rejection> {
        let done = a.get("done").and_then(Value::as_bool).unwrap_or(false);
        if a.get("type").and_then(Value::as_str) != Some("meeting") || done {
            return Ok(Vec::new());
        }
        Ok(vec![self
            .event("canceled", "meeting.canceled")
            .set("meeting_id", req_id(a, "id", "data.id")?)
            .done()])
    }
}

/// `ev` with the deal and lead `activity` is linked to.
fn links(ev: Canonical, activity: &Value) -> Canonical {
    ev.set_opt("deal_id", id_text(activity.get("deal_id")))
        .set_opt("lead_id", id_text(activity.get("lead_id")))
}

/// `due_date` (YYYY-MM-DD) and `due_time` (HH:MM, empty for all day), UTC.
fn due(a: &Value) -> Result<String, Rejection> {
    let date = a
        .get("due_date")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| missing("data.due_date"))?;
    let time = a
        .get("due_time")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .unwrap_or("00:00");
    let seconds = if time.len() == 8 { "" } else { ":00" };
    let text = format!("{date}T{time}{seconds}Z");
    let t = timestamp(&Value::from(text), "data.due_date and data.due_time")?;
    Ok(format_timestamp(t))
}

/// Pipedrive's `duration`, `HH:MM` or `HH:MM:SS`, in seconds; empty is 0.
fn duration(v: Option<&Value>) -> Result<u64, Rejection> {
    let Some(s) = v.and_then(Value::as_str).filter(|s| !s.is_empty()) else {
        return Ok(0);
    };
    let parts: Vec<_> = s.split(':').map(str::parse::<u64>).collect();
    match parts.as_slice() {
        [Ok(h), Ok(m)] if *m < 60 => Ok(h * 3600 + m * 60),
        [Ok(h), Ok(m), Ok(s)] if *m < 60 && *s < 60 => Ok(h * 3600 + m * 60 + s),
        _ => Err(wrong("data.duration", "HH:MM")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RejectReason;
    use serde_json::json;

    fn mapping() -> Mapping {
        Mapping {
            owners: [("7".to_owned(), "rep-ben".to_owned())].into(),
            stages: [
                ("1".to_owned(), "prospecting".to_owned()),
                ("3".to_owned(), "demo".to_owned()),
            ]
            .into(),
            ..Mapping::default()
        }
    }

    fn msg(entity: &str, action: &str, data: Value, previous: Value) -> Value {
        json!({
            "meta": {"action": action, "entity": entity, "entity_id": "1", "id": "e-1",
                     "timestamp": "2026-11-03T09:20:00.000Z", "version": "2.0", "attempt": 1},
            "data": data, "previous": previous
        })
    }

    fn events(doc: Value) -> Vec<Value> {
        match adapt(&doc, &mapping()).unwrap() {
            Adapted::Events(v) => v,
            other => panic!("{other:?}"),
        }
    }

    fn kinds(evs: &[Value]) -> Vec<&str> {
        evs.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn deals_open_move_revalue_and_close() {
        let deal = json!({"id": 101, "owner_id": 7, "value": 1200, "currency": "EUR", "stage_id": 1, "status": "open"});
        let evs = events(msg("deal", "create", deal.clone(), Value::Null));
        assert_eq!(kinds(&evs), ["deal.created"]);
        assert_eq!(evs[0]["rep_id"], "rep-ben");
        assert_eq!(evs[0]["stage"], "prospecting");
        assert_eq!(evs[0]["currency"], "EUR");
        let mut moved = deal.clone();
        moved["stage_id"] = json!(3);
        moved["value"] = json!(1500);
        let evs = events(msg(
            "deal",
            "change",
            moved,
            json!({"stage_id": 1, "value": 1200}),
        ));
        assert_eq!(kinds(&evs), ["deal.amount_changed", "deal.stage_changed"]);
        assert_eq!(evs[1]["to_stage"], "demo");
        assert_eq!(evs[1]["from_stage"], "prospecting");
        let mut won = deal.clone();
        won["status"] = json!("won");
        let evs = events(msg("deal", "change", won, json!({"status": "open"})));
        assert_eq!(kinds(&evs), ["deal.won"]);
        assert_eq!(evs[0]["amount"], 1200);
        let mut lost = deal;
        lost["status"] = json!("lost");
        lost["lost_reason"] = json!("budget");
        let evs = events(msg("deal", "updated", lost, json!({"status": "open"})));
        assert_eq!(
            (kinds(&evs)[0], evs[0]["reason"].as_str()),
            ("deal.lost", Some("budget"))
        );
    }

    #[test]
    fn calls_count_when_done_and_meetings_follow_their_activity() {
        let call = json!({"id": 5, "type": "call", "done": false, "owner_id": 7, "duration": "00:12", "deal_id": 101});
        assert_eq!(
            adapt(
                &msg("activity", "create", call.clone(), Value::Null),
                &mapping()
            )
            .unwrap(),
            Adapted::NothingToDo
        );
        let mut done = call;
        done["done"] = json!(true);
        let evs = events(msg("activity", "change", done, json!({"done": false})));
        assert_eq!(kinds(&evs), ["call.logged"]);
        assert_eq!(evs[0]["id"], "pipedrive:call:5");
        assert_eq!(evs[0]["duration_seconds"], 720);
        assert_eq!(evs[0]["deal_id"], "101");

        let meeting = json!({"id": 6, "type": "meeting", "done": false, "owner_id": 7, "due_date": "2026-11-05", "due_time": "14:30"});
        let evs = events(msg("activity", "create", meeting.clone(), Value::Null));
        assert_eq!(kinds(&evs), ["meeting.scheduled"]);
        assert_eq!(evs[0]["scheduled_for"], "2026-11-05T14:30:00.000000Z");
        let mut moved = meeting.clone();
        moved["due_date"] = json!("2026-11-06");
        let evs = events(msg(
            "activity",
            "change",
            moved,
            json!({"due_date": "2026-11-05"}),
        ));
        assert_eq!(kinds(&evs), ["meeting.rescheduled"]);
        let evs = events(msg("activity", "delete", Value::Null, meeting));
        assert_eq!(kinds(&evs), ["meeting.canceled"]);
    }

    #[test]
    fn other_entities_are_unknown_and_bad_payloads_rejected() {
        let person = msg("person", "create", json!({"id": 1}), Value::Null);
        assert_eq!(adapt(&person, &mapping()).unwrap(), Adapted::UnknownKind);
        let reject = |doc: Value| adapt(&doc, &mapping()).unwrap_err().reason;
        assert_eq!(reject(json!([1])), RejectReason::WrongType);
        assert_eq!(reject(json!({"data": {}})), RejectReason::MissingField);
        let no_owner = msg("deal", "create", json!({"id": 1, "value": 3}), Value::Null);
        assert_eq!(reject(no_owner), RejectReason::MissingField);
        let odd = msg(
            "deal",
            "change",
            json!({"id": 1, "status": "frozen"}),
            json!({"status": "open"}),
        );
        assert_eq!(reject(odd), RejectReason::Unmappable);
        let mut late = msg("deal", "change", json!({"id": 1}), Value::Null);
        late["meta"]["timestamp"] = json!("soon");
        assert_eq!(reject(late), RejectReason::BadTimestamp);
    }
}
