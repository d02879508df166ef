//! Close webhooks: `{"event": {...}, "subscription_id": "..."}`.
//!
//! `event` is an entry of Close's event log: `object_type`, `object_id`,
//! `action` (`created`, `updated`, `deleted`), `date_created`, `data` (the
//! whole object after the change) and, for updates, `changed_fields` and
//! `previous_data` (the old values of the changed fields).
//!
//! | object, action | canonical events |
//! |---|---|
//! | `lead` created | `lead.created` |
//! | `opportunity` created | `deal.created` (`user_id`, `value` in cents, `value_currency`, `status_id`), then `deal.won` / `deal.lost` if created closed |
//! | `opportunity` updated | `deal.amount_changed` if `value` changed; `deal.won` / `deal.lost` when `status_type` becomes `won` / `lost`; else `deal.stage_changed` when `status_id` changed |
//! | `activity.call` created or updated | `call.logged` once per call, when it is not in progress: `duration` (s), `disposition`, its own `date_created`; inbound calls are not counted |
//! | `activity.meeting` | created: `meeting.scheduled` at `starts_at`; `starts_at` changed: `meeting.rescheduled`; status `canceled`, `declined-by-lead`, `declined-by-org`: `meeting.canceled`; deleted before it starts: `meeting.canceled` |
//! | `activity.email` outgoing, sent | `email.sent` once per email |
//!
//! Close's `completed` meeting status says the calendar event ended, not
//! that anyone came: it is no `meeting.held` unless `meeting_outcomes`
//! says so (`completed = "held"`); otherwise the meeting's timer counts it
//! as due and, without a held event, missed. Stages are `status_id`s
//! (mapped through `stages`, else by `status_label`). The dedup id is
//! `event.id`; calls and emails use their own id, so they count once.

use serde_json::Value;

use super::{
    amount, missing, number, opt_id, opt_obj, opt_text, req_id, req_obj, req_str, timestamp, wrong,
    Adapted, Canonical, Known, Mapping,
};
use crate::event::{format_timestamp, Rejection};

const SOURCE: &str = "close";

/// Close's call dispositions.
const DISPOSITIONS: [(&str, &str); 8] = [
    ("answered", "connected"),
    ("no-answer", "no_answer"),
    ("vm-answer", "voicemail"),
    ("vm-left", "voicemail"),
    ("busy", "busy"),
    ("blocked", "other"),
    ("error", "other"),
    ("abandoned", "other"),
];

const MEETING_STATUSES: [(&str, &str); 3] = [
    ("canceled", "canceled"),
    ("declined-by-lead", "canceled"),
    ("declined-by-org", "canceled"),
];

/// Call statuses of a call that is not over yet.
const CALL_UNDER_WAY: [&str; 4] = ["in-progress", "ringing", "queued", "created"];

pub fn adapt(doc: &Value, map: &Mapping, known: &dyn Known) -> Result<Adapted, Rejection> {
    if !doc.is_object() {
        return Err(wrong("a Close payload", "an object"));
    }
    let e = req_obj(doc, "event", "event")?;
    let object = req_str(e, "object_type", "event.object_type")?;
    let action = req_str(e, "action", "event.action")?;
    if !matches!(
        object,
        "lead" | "opportunity" | "activity.call" | "activity.meeting" | "activity.email"
    ) {
        return Ok(Adapted::UnknownKind);
    }
    let event_id = req_id(e, "id", "event.id")?;
    let object_id = req_id(e, "object_id", "event.object_id")?;
    let at = timestamp(
        e.get("date_created")
            .ok_or_else(|| missing("event.date_created"))?,
        "event.date_created",
    )?;
    let data = opt_obj(e, "data", "event.data")?;
    let previous = opt_obj(e, "previous_data", "event.previous_data")?;
    let changed: Vec<&str> = match e.get("changed_fields") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(_) => return Err(wrong("event.changed_fields", "an array")),
    };
    let ctx = Ctx {
        event_id,
        object_id,
        at,
        map,
        previous,
        changed,
        lead: opt_id(e, "lead_id", "event.lead_id")?,
    };
    let events = match (object, action, data) {
        (_, "deleted", _) if object == "activity.meeting" => ctx.meeting_deleted(known),
        (_, "created" | "updated", Some(d)) => match object {
            "lead" if action == "created" => ctx.lead(d)?,
            "lead" => Vec::new(),
            "opportunity" => ctx.opportunity(d, action == "created")?,
            "activity.call" => ctx.call(d)?,
            "activity.email" => ctx.email(d)?,
            _ => ctx.meeting(d, action == "created")?,
        },
        (_, "created" | "updated", None) => return Err(missing("event.data")),
        _ => Vec::new(),
    };
    Ok(Adapted::of(events))
}

struct Ctx<'a> {
    event_id: String,
    object_id: String,
    at: i64,
    map: &'a Mapping,
    previous: Option<&'a Value>,
    changed: Vec<&'a str>,
    lead: Option<String>,
}

impl Ctx<'_> {
    fn event(&self, suffix: &str, kind: &str) -> Canonical {
        Canonical::new(
            format!("close:{}:{suffix}", self.event_id),
            kind,
            self.at,
            SOURCE,
        )
    }

    fn changed(&self, field: &str) -> bool {
        self.changed.contains(&field) || self.previous.is_some_and(|p| p.get(field).is_some())
    }

    fn rep(&self, d: &Value) -> Result<Option<String>, Rejection> {
        Ok(opt_id(d, "user_id", "data.user_id")?.map(|u| self.map.rep(&u)))
    }

    fn lead(&self, d: &Value) -> Result<Vec<Value>, Rejection> {
        Ok(vec![self
            .event("lead", "lead.created")
            .set("lead_id", self.object_id.clone())
            .set_opt("rep_id", self.rep(d)?)
            .done()])
    }

    /// The pipeline stage of an opportunity status.
    fn stage(&self, d: &Value) -> Result<Option<String>, Rejection> {
        let Some(id) = opt_text(d, "status_id", "data.status_id")? else {
            return Ok(None);
        };
        if let Some(s) = self.map.stages.get(id) {
            return Ok(Some(s.clone()));
        }
        Ok(Some(
            match opt_text(d, "status_label", "data.status_label")? {
                Some(label) => self.map.stage(label),
                None => id.to_owned(),
            },
        ))
    }

    fn opportunity(&self, d: &Value, created: bool) -> Result<Vec<Value>, Rejection> {
        let deal = self.object_id.clone();
        // `value` is in cents.
        let value = number(amount(d.get("value"), "data.value")? / 100.0);
        let currency = opt_text(d, "value_currency", "data.value_currency")?;
        let status = opt_text(d, "status_type", "data.status_type")?.unwrap_or("active");
        let rep = self.rep(d)?;
        let mut out = Vec::new();
        if created {
            out.push(
                self.event("created", "deal.created")
                    .set("deal_id", deal.clone())
                    .set(
                        "rep_id",
                        rep.clone().ok_or_else(|| missing("data.user_id"))?,
                    )
                    .set("amount", value.clone())
                    .set_opt("currency", currency)
                    .set_opt(
                        "stage",
                        if status == "active" {
                            self.stage(d)?
                        } else {
                            None
                        },
                    )
                    .done(),
            );
        } else if self.changed("value") || self.changed("value_currency") {
            out.push(
                self.event("amount", "deal.amount_changed")
                    .set("deal_id", deal.clone())
                    .set("amount", value.clone())
                    .set_opt("currency", currency)
                    .done(),
            );
        }
        let was = self
            .previous
            .and_then(|p| p.get("status_type"))
            .and_then(Value::as_str);
        let closes = created || (self.changed("status_type") && was != Some(status));
        match status {
            "won" if closes => out.push(
                self.event("won", "deal.won")
                    .set("deal_id", deal)
                    .set("amount", value)
                    .set_opt("currency", currency)
                    .set_opt("rep_id", rep)
                    .done(),
            ),
            "lost" if closes => out.push(
                self.event("lost", "deal.lost")
                    .set("deal_id", deal)
                    .set_opt("rep_id", rep)
                    .set_opt("reason", opt_text(d, "status_label", "data.status_label")?)
                    .done(),
            ),
            "active" if !created && self.changed("status_id") => {
                let to = self.stage(d)?.ok_or_else(|| missing("data.status_id"))?;
                let from = match self.previous.and_then(|p| p.get("status_id")) {
                    Some(Value::String(id)) => Some(
                        self.map
                            .stages
                            .get(id.as_str())
                            .cloned()
                            .unwrap_or_else(|| id.clone()),
                    ),
                    _ => None,
                };
                out.push(
                    self.event("stage", "deal.stage_changed")
                        .set("deal_id", deal)
                        .set("to_stage", to)
                        .set_opt("from_stage", from)
                        .set_opt("rep_id", rep)
                        .done(),
                );
            }
            "active" | "won" | "lost" => {}
            _ => {
                return Err(super::unmappable(
                    "data.status_type is not active, won or lost",
                ))
            }
        }
        Ok(out)
    }

    /// When an activity happened: its own `date_created`, else the event's.
    fn activity_time(&self, d: &Value) -> Result<i64, Rejection> {
        match d.get("date_created") {
            None | Some(Value::Null) => Ok(self.at),
            Some(t) => timestamp(t, "data.date_created"),
        }
    }

    fn call(&self, d: &Value) -> Result<Vec<Value>, Rejection> {
        let direction = opt_text(d, "direction", "data.direction")?;
        if direction.is_some_and(|x| x.eq_ignore_ascii_case("inbound")) {
            return Ok(Vec::new());
        }
        if opt_text(d, "status", "data.status")?.is_some_and(|s| CALL_UNDER_WAY.contains(&s)) {
            return Ok(Vec::new()); // logged when it is over
        }
        let rep = self.rep(d)?.ok_or_else(|| missing("data.user_id"))?;
        let seconds = amount(d.get("duration"), "data.duration")?;
        let outcome = match opt_text(d, "disposition", "data.disposition")? {
            Some(x) => self.map.call_outcome(x, &DISPOSITIONS),
            None => "other".to_owned(),
        };
        let lead = opt_id(d, "lead_id", "data.lead_id")?.or_else(|| self.lead.clone());
        Ok(vec![Canonical::new(
            format!("close:call:{}", self.object_id),
            "call.logged",
            self.activity_time(d)?,
            SOURCE,
        )
        .set("call_id", self.object_id.clone())
        .set("rep_id", rep)
        .set("duration_seconds", number(seconds))
        .set("outcome", outcome)
        .set_opt("lead_id", lead)
        .done()])
    }

    fn email(&self, d: &Value) -> Result<Vec<Value>, Rejection> {
        let outgoing = opt_text(d, "direction", "data.direction")?
            .is_some_and(|x| x.eq_ignore_ascii_case("outgoing"));
        let sent = opt_text(d, "status", "data.status")?.is_some_and(|s| s == "sent");
        if !(outgoing && sent) {
            return Ok(Vec::new());
        }
        let rep = self.rep(d)?.ok_or_else(|| missing("data.user_id"))?;
        let lead = opt_id(d, "lead_id", "data.lead_id")?.or_else(|| self.lead.clone());
        Ok(vec![Canonical::new(
            format!("close:email:{}", self.object_id),
            "email.sent",
            self.at,
            SOURCE,
        )
        .set("email_id", self.object_id.clone())
        .set("rep_id", rep)
        .set_opt("lead_id", lead)
        .done()])
    }

    fn meeting(&self, d: &Value, created: bool) -> Result<Vec<Value>, Rejection> {
        let meeting = self.object_id.clone();
        let start = || -> Result<String, Rejection> {
            let t = d
                .get("starts_at")
                .ok_or_else(|| missing("data.starts_at"))?;
            Ok(format_timestamp(timestamp(t, "data.starts_at")?))
        };
        let mut out = Vec::new();
        if created {
            let rep = self.rep(d)?.ok_or_else(|| missing("data.user_id"))?;
            let lead = opt_id(d, "lead_id", "data.lead_id")?.or_else(|| self.lead.clone());
            out.push(
                self.event("scheduled", "meeting.scheduled")
                    .set("meeting_id", meeting.clone())
                    .set("rep_id", rep)
                    .set("scheduled_for", start()?)
                    .set_opt("lead_id", lead)
                    .done(),
            );
        } else if self.changed("starts_at") {
            out.push(
                self.event("rescheduled", "meeting.rescheduled")
                    .set("meeting_id", meeting.clone())
                    .set("scheduled_for", start()?)
                    .done(),
            );
        }
        if created || self.changed("status") {
            if let Some(status) = opt_text(d, "status", "data.status")? {
                if let Some(kind) = self.map.meeting_outcome(status, &MEETING_STATUSES) {
                    out.push(self.event("status", kind).set("meeting_id", meeting).done());
                }
            }
        }
        Ok(out)
    }

    /// A meeting deleted before it starts is canceled; one deleted after
    /// (a clean-up) changes nothing.
    fn meeting_deleted(&self, known: &dyn Known) -> Vec<Value> {
        match known.meeting_time(&self.object_id) {
            Some(t) if t > self.at => vec![self
                .event("canceled", "meeting.canceled")
                .set("meeting_id", self.object_id.clone())
                .done()],
            _ => Vec::new(),
        }
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
            owners: [("user_1".to_owned(), "rep-fay".to_owned())].into(),
            stages: [("stat_demo".to_owned(), "demo".to_owned())].into(),
            ..Mapping::default()
        }
    }

    fn msg(object: &str, action: &str, data: Value, changed: &[&str], previous: Value) -> Value {
        json!({"subscription_id": "whsub_1", "event": {
            "id": "ev_1", "object_type": object, "object_id": "oppo_1", "action": action,
            "date_created": "2026-11-03T09:20:00.123456", "organization_id": "orga_1",
            "user_id": "user_9", "lead_id": "lead_1", "request_id": "req_1",
            "changed_fields": changed, "previous_data": previous, "data": data}})
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
    fn opportunities_open_in_cents_move_and_close() {
        let o = json!({"id": "oppo_1", "user_id": "user_1", "value": 100000, "value_currency": "USD",
                       "status_id": "stat_demo", "status_type": "active", "status_label": "Demo"});
        let evs = events(msg("opportunity", "created", o.clone(), &[], Value::Null));
        assert_eq!(kinds(&evs), ["deal.created"]);
        assert_eq!(evs[0]["amount"], 1000);
        assert_eq!(evs[0]["rep_id"], "rep-fay");
        assert_eq!(evs[0]["stage"], "demo");
        assert_eq!(evs[0]["occurred_at"], "2026-11-03T09:20:00.123456Z");
        let mut won = o.clone();
        won["status_type"] = json!("won");
        won["status_id"] = json!("stat_won");
        let evs = events(msg(
            "opportunity",
            "updated",
            won,
            &["status_id", "status_type"],
            json!({"status_id": "stat_demo", "status_type": "active"}),
        ));
        assert_eq!(kinds(&evs), ["deal.won"]);
        assert_eq!(evs[0]["amount"], 1000);
        let mut moved = o;
        moved["status_id"] = json!("stat_prop");
        moved["status_label"] = json!("Proposal");
        let evs = events(msg(
            "opportunity",
            "updated",
            moved,
            &["status_id"],
            json!({"status_id": "stat_demo"}),
        ));
        assert_eq!(kinds(&evs), ["deal.stage_changed"]);
        assert_eq!(
            (evs[0]["to_stage"].as_str(), evs[0]["from_stage"].as_str()),
            (Some("Proposal"), Some("demo"))
        );
    }

    #[test]
    fn calls_meetings_and_what_is_not_counted() {
        let call = json!({"id": "acti_1", "user_id": "user_1", "duration": 95, "direction": "outbound",
                          "disposition": "vm-left", "date_created": "2026-11-03T09:00:00+00:00", "status": "completed"});
        let evs = events(msg(
            "activity.call",
            "created",
            call.clone(),
            &[],
            Value::Null,
        ));
        assert_eq!(evs[0]["outcome"], "voicemail");
        assert_eq!(evs[0]["duration_seconds"], 95);
        assert_eq!(evs[0]["occurred_at"], "2026-11-03T09:00:00.000000Z");
        assert_eq!(evs[0]["lead_id"], "lead_1");
        let mut inbound = call;
        inbound["direction"] = json!("inbound");
        assert_eq!(
            adapt(
                &msg("activity.call", "created", inbound, &[], Value::Null),
                &mapping(),
                &NothingKnown
            )
            .unwrap(),
            Adapted::NothingToDo
        );
        let m = json!({"id": "acti_2", "user_id": "user_1", "starts_at": "2026-11-05T15:00:00+00:00", "status": "upcoming"});
        assert_eq!(
            kinds(&events(msg(
                "activity.meeting",
                "created",
                m.clone(),
                &[],
                Value::Null
            ))),
            ["meeting.scheduled"]
        );
        let mut done = m.clone();
        done["status"] = json!("completed");
        assert_eq!(
            adapt(
                &msg(
                    "activity.meeting",
                    "updated",
                    done.clone(),
                    &["status"],
                    json!({"status": "upcoming"})
                ),
                &mapping(),
                &NothingKnown
            )
            .unwrap(),
            Adapted::NothingToDo,
            "completed says nothing about attendance"
        );
        let held = Mapping {
            meeting_outcomes: [("completed".to_owned(), "held".to_owned())].into(),
            ..mapping()
        };
        let Adapted::Events(evs) = adapt(
            &msg(
                "activity.meeting",
                "updated",
                done,
                &["status"],
                json!({"status": "upcoming"}),
            ),
            &held,
            &NothingKnown,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(kinds(&evs), ["meeting.held"]);
        let mut declined = m;
        declined["status"] = json!("declined-by-lead");
        assert_eq!(
            kinds(&events(msg(
                "activity.meeting",
                "updated",
                declined,
                &["status"],
                json!({"status": "upcoming"})
            ))),
            ["meeting.canceled"]
        );
    }

    #[test]
    fn unknown_objects_and_bad_bodies() {
        assert_eq!(
            adapt(
                &msg("contact", "created", json!({}), &[], Value::Null),
                &mapping(),
                &NothingKnown
            )
            .unwrap(),
            Adapted::UnknownKind
        );
        let reject = |d: Value| adapt(&d, &mapping(), &NothingKnown).unwrap_err().reason;
        assert_eq!(
            reject(json!({"subscription_id": "x"})),
            RejectReason::MissingField
        );
        assert_eq!(reject(json!({"event": []})), RejectReason::WrongType);
        let no_owner = msg(
            "opportunity",
            "created",
            json!({"value": 5}),
            &[],
            Value::Null,
        );
        assert_eq!(reject(no_owner), RejectReason::MissingField);
        let mut late = msg("lead", "created", json!({}), &[], Value::Null);
        late["event"]["date_created"] = json!("later");
        assert_eq!(reject(late), RejectReason::BadTimestamp);
    }
}
