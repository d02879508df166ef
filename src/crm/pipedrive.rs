//! Pipedrive webhooks v2: `{"meta": {...}, "data": {...}, "previous": {...}}`.
//!
//! `meta.action` is `create`, `change` or `delete`; `data` is the object
//! after the change and `previous` holds the old values of the fields that
//! changed. Webhooks v1 bodies (`current`/`previous`, actions `added`,
//! `updated`, `deleted`) are rejected as `unsupported_version`: v1 has no
//! event id, so a retry could not be told from a new change, and v1 and v2
//! webhooks side by side would count every change twice.
//!
//! | entity, action | canonical events |
//! |---|---|
//! | deal create | `deal.created` (owner, value, currency, stage), then `deal.won` / `deal.lost` if created closed |
//! | deal change | `deal.amount_changed` if `value` or `currency` changed; `deal.stage_changed` if `stage_id` changed; `deal.won` / `deal.lost` if `status` became `won` / `lost` |
//! | activity of type `call`, done | `call.logged` once per activity (duration from `duration` HH:MM) |
//! | activity of type `meeting` | create: `meeting.scheduled` (and `meeting.held` if created done); a new `due_date`/`due_time`: `meeting.rescheduled`; marked done: `meeting.held`; deleted while not done (not by a merge): `meeting.canceled` |
//! | lead create | `lead.created` (`owner_id`) |
//!
//! The activity types that are calls and meetings are `call_types` and
//! `meeting_types` (default `call` and `meeting`). Every deal event carries
//! the deal's owner as `rep_id`. Deal deletions and other activity types:
//! nothing to do; other entities: an unknown kind. Due dates and times are
//! UTC, as Pipedrive's API gives them (`due_time` may also be
//! `{timezone_id, value}`). `meta.timestamp` may be ISO 8601 or epoch
//! seconds. The dedup id is built from `meta.id`, which a retry keeps.

use serde_json::Value;

use super::{
    amount, id_text, missing, number, opt_obj, req_id, req_obj, req_str, timestamp, unmappable,
    wrong, Adapted, Canonical, Known, Mapping,
};
use crate::event::{format_timestamp, RejectReason, Rejection};

const SOURCE: &str = "pipedrive";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Create,
    Change,
    Delete,
}

pub fn adapt(doc: &Value, map: &Mapping, _known: &dyn Known) -> Result<Adapted, Rejection> {
    if !doc.is_object() {
        return Err(wrong("a Pipedrive payload", "an object"));
    }
    let meta = req_obj(doc, "meta", "meta")?;
    let v1 = doc.get("current").is_some()
        || matches!(
            meta.get("action").and_then(Value::as_str),
            Some("added" | "updated" | "deleted" | "merged")
        )
        || meta
            .get("version")
            .and_then(Value::as_str)
            .is_some_and(|v| v.starts_with('1'));
    if v1 {
        return Err(Rejection::new(
            RejectReason::UnsupportedVersion,
            "a Pipedrive webhooks v1 body: create the webhook with version 2.0",
        ));
    }
    let entity = req_str(meta, "entity", "meta.entity")?;
    let action = match req_str(meta, "action", "meta.action")? {
        "create" => Action::Create,
        "change" => Action::Change,
        "delete" => Action::Delete,
        _ => return Ok(Adapted::UnknownKind),
    };
    if !matches!(entity, "deal" | "activity" | "lead") {
        return Ok(Adapted::UnknownKind);
    }
    let event_id = req_id(meta, "id", "meta.id")?;
    let at = timestamp(
        meta.get("timestamp")
            .ok_or_else(|| missing("meta.timestamp"))?,
        "meta.timestamp",
    )?;
    let data = opt_obj(doc, "data", "data")?;
    let previous = opt_obj(doc, "previous", "previous")?;
    // A delete that merges the object into another changes no KPI.
    let merged = meta.get("merged_to_id").is_some_and(|m| !m.is_null());
    let ctx = Ctx {
        event_id,
        at,
        map,
        previous,
    };
    let events = match (entity, action) {
        (_, Action::Delete) if merged => Vec::new(),
        ("deal", Action::Delete) | ("lead", Action::Delete | Action::Change) => Vec::new(),
        ("lead", Action::Create) => ctx.lead(data.ok_or_else(|| missing("data"))?)?,
        ("deal", _) => ctx.deal(data.ok_or_else(|| missing("data"))?, action)?,
        ("activity", Action::Delete) => match data.or(previous) {
            Some(a) => ctx.activity_deleted(a)?,
            None => Vec::new(),
        },
        _ => ctx.activity(data.ok_or_else(|| missing("data"))?, action)?,
    };
    Ok(Adapted::of(events))
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

    fn lead(&self, l: &Value) -> Result<Vec<Value>, Rejection> {
        Ok(vec![self
            .event("lead", "lead.created")
            .set("lead_id", req_id(l, "id", "data.id")?)
            .set_opt("rep_id", self.owner(l))
            .done()])
    }

    fn is(
        &self,
        activity: &Value,
        types: &std::collections::BTreeSet<String>,
        default: &str,
    ) -> bool {
        let t = activity.get("type").and_then(Value::as_str);
        match t {
            Some(t) if types.is_empty() => t == default,
            Some(t) => types.contains(t),
            None => false,
        }
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
        if self.is(a, &self.map.call_types, "call") {
            if became_done {
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
        } else if self.is(a, &self.map.meeting_types, "meeting") {
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
        Ok(out)
    }

    fn activity_deleted(&self, a: &Value) -> Result<Vec<Value>, Rejection> {
        let done = a.get("done").and_then(Value::as_bool).unwrap_or(false);
        if !self.is(a, &self.map.meeting_types, "meeting") || done {
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

/// A time field that is text, or `{timezone_id, value}` (webhooks v2's
/// update bodies); empty is absent.
fn time_text<'a>(v: Option<&'a Value>, what: &str) -> Result<Option<&'a str>, Rejection> {
    let v = match v {
        Some(Value::Object(o)) => o.get("value"),
        v => v,
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong(what, "HH:MM text")),
    }
}

/// `due_date` (YYYY-MM-DD) and `due_time` (HH:MM, empty for all day), UTC.
fn due(a: &Value) -> Result<String, Rejection> {
    let date =
        time_text(a.get("due_date"), "data.due_date")?.ok_or_else(|| missing("data.due_date"))?;
    let time = time_text(a.get("due_time"), "data.due_time")?.unwrap_or("00:00");
    let seconds = if time.len() == 8 { "" } else { ":00" };
    let text = format!("{date}T{time}{seconds}Z");
    let t = timestamp(&Value::from(text), "data.due_date and data.due_time")?;
    Ok(format_timestamp(t))
}

/// Pipedrive's `duration`, `HH:MM` or `HH:MM:SS`, in seconds; empty is 0.
fn duration(v: Option<&Value>) -> Result<u64, Rejection> {
    let Some(s) = time_text(v, "data.duration")? else {
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
    use crate::crm::NothingKnown;
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
        match adapt(&doc, &mapping(), &NothingKnown).unwrap() {
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
        let evs = events(msg("deal", "change", lost, json!({"status": "open"})));
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
                &mapping(),
                &NothingKnown
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
        assert_eq!(
            adapt(&person, &mapping(), &NothingKnown).unwrap(),
            Adapted::UnknownKind
        );
        let reject = |doc: Value| adapt(&doc, &mapping(), &NothingKnown).unwrap_err().reason;
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

    #[test]
    fn epoch_seconds_timezone_objects_leads_and_v1() {
        let mut m = msg(
            "activity",
            "change",
            json!({"id": 6, "type": "meeting", "done": false, "owner_id": 7,
                   "due_date": "2026-11-06", "due_time": {"timezone_id": "Europe/Berlin", "value": "15:00"}}),
            json!({"due_time": {"timezone_id": "Europe/Berlin", "value": "14:30"}}),
        );
        m["meta"]["timestamp"] = json!(1_793_697_600i64);
        let evs = events(m);
        assert_eq!(kinds(&evs), ["meeting.rescheduled"]);
        assert_eq!(evs[0]["scheduled_for"], "2026-11-06T15:00:00.000000Z");
        assert_eq!(evs[0]["occurred_at"], "2026-11-03T09:20:00.000000Z");
        let lead = events(msg(
            "lead",
            "create",
            json!({"id": "adf21080-0e10-11eb-879b-05d71fb426ec", "owner_id": 7}),
            Value::Null,
        ));
        assert_eq!(kinds(&lead), ["lead.created"]);
        assert_eq!(lead[0]["rep_id"], "rep-ben");
        let v1 = json!({"meta": {"action": "updated", "object": "deal", "id": 1, "timestamp": 1_793_697_600i64, "v": 1},
                        "current": {"id": 1}, "previous": {"id": 1}});
        assert_eq!(
            adapt(&v1, &mapping(), &NothingKnown).unwrap_err().reason,
            RejectReason::UnsupportedVersion
        );
        let custom = Mapping {
            call_types: ["cold_call".to_owned()].into(),
            ..mapping()
        };
        let call = msg(
            "activity",
            "create",
            json!({"id": 9, "type": "cold_call", "done": true, "owner_id": 7}),
            Value::Null,
        );
        assert!(matches!(
            adapt(&call, &custom, &NothingKnown).unwrap(),
            Adapted::Events(_)
        ));
        assert_eq!(
            adapt(&call, &mapping(), &NothingKnown).unwrap(),
            Adapted::NothingToDo
        );
    }
}
