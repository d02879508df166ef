//! HubSpot webhooks v3: a batch (JSON array) of notifications, or one.
//!
//! A notification names one object and, for a property change, one
//! property and its new value; it carries nothing else. So each maps on its
//! own:
//!
//! | notification | canonical event |
//! |---|---|
//! | deal `dealstage` | `deal.won` / `deal.lost` for a won or lost stage, else `deal.stage_changed` |
//! | deal `amount` | `deal.amount_changed` (base currency) |
//! | deal `hubspot_owner_id` | `deal.created` with that owner: opens the deal, or names the owner of one opened implicitly; no change for a deal already opened |
//! | call (`0-48`) `hs_call_disposition` | `call.logged`, once per call: its dedup id is the call's |
//! | meeting (`0-47`) `hs_meeting_start_time` | `meeting.scheduled` for a meeting not known yet, else `meeting.rescheduled` |
//! | meeting `hs_meeting_outcome` | `COMPLETED` held, `NO_SHOW` no-show, `CANCELED` canceled |
//!
//! Deal creations, deletions, merges, other properties: nothing to do.
//! Other objects (contacts, companies, tickets...): an unknown kind. Calls
//! and meetings are attributed to the user who made the change
//! (`sourceId: userId:N`, through the owners map), else `unassigned`.
//! Subscribe to deal `hubspot_owner_id` changes: HubSpot's creation notice
//! carries no owner, and the owner notification is what opens a deal.

use std::collections::HashSet;

use serde_json::Value;

use super::{
    amount, id_text, missing, number, req_id, timestamp, unmappable, wrong, Adapted, Canonical,
    Known, Mapping, StageMove,
};
use crate::event::Rejection;

const SOURCE: &str = "hubspot";

/// HubSpot's call disposition ids (its default outcomes).
const DISPOSITIONS: [(&str, &str); 4] = [
    ("f240bbac-87c9-4f6e-bf70-924b57d47db7", "connected"),
    ("73a0d17f-1163-4015-bdd5-ec830791da20", "no_answer"),
    ("b2cf5968-551e-4856-9783-52b3da59a7d0", "voicemail"),
    ("9d9162e7-6cf3-4944-bf63-4dff82258764", "busy"),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Object {
    Deal,
    Call,
    Meeting,
}

pub fn adapt(doc: &Value, map: &Mapping, known: &dyn Known) -> Result<Adapted, Rejection> {
    let items: &[Value] = match doc {
        Value::Array(a) => a,
        Value::Object(_) => std::slice::from_ref(doc),
        _ => return Err(wrong("a HubSpot payload", "an array of notifications")),
    };
    let mut out = Vec::new();
    let mut unknown = 0;
    // Meetings scheduled by an earlier notification of this same batch.
    let mut scheduled = HashSet::new();
    for (i, n) in items.iter().enumerate() {
        if !n.is_object() {
            return Err(wrong(&format!("notification [{i}]"), "an object"));
        }
        match notification(n, map, known, &mut scheduled)? {
            Some(Some(ev)) => out.push(ev),
            Some(None) => {}
            None => unknown += 1,
        }
    }
    Ok(if !out.is_empty() {
        Adapted::Events(out)
    } else if unknown == items.len() {
        Adapted::UnknownKind
    } else {
        Adapted::NothingToDo
    })
}

/// One notification: `None` for an unknown kind, `Some(None)` for nothing
/// to do, `Some(Some(event))`.
fn notification(
    n: &Value,
    map: &Mapping,
    known: &dyn Known,
    scheduled: &mut HashSet<String>,
) -> Result<Option<Option<Value>>, Rejection> {
    let Some(kind) = n.get("subscriptionType").and_then(Value::as_str) else {
        return Err(missing("subscriptionType"));
    };
    let (object, action) = kind.split_once('.').unwrap_or((kind, ""));
    let object = match (object, n.get("objectTypeId").and_then(Value::as_str)) {
        ("deal", _) | ("object", Some("0-3")) => Object::Deal,
        ("object", Some("0-48")) => Object::Call,
        ("object", Some("0-47")) => Object::Meeting,
        _ => return Ok(None),
    };
    let object_id = req_id(n, "objectId", "objectId")?;
    let at = timestamp(
        n.get("occurredAt").ok_or_else(|| missing("occurredAt"))?,
        "occurredAt",
    )?;
    if action != "propertyChange" {
        return Ok(Some(None));
    }
    let event_id = req_id(n, "eventId", "eventId")?;
    let portal = id_text(n.get("portalId")).unwrap_or_default();
    let property = n
        .get("propertyName")
        .and_then(Value::as_str)
        .ok_or_else(|| missing("propertyName"))?;
    let value = match n.get("propertyValue") {
        Some(Value::String(s)) => s.as_str(),
        None | Some(Value::Null) => "",
        Some(_) => return Err(wrong("propertyValue", "a string")),
    };
    // The notification's own identity: a retry (a new attemptNumber) keeps it.
    let id = format!(
        "hubspot:{portal}:{}:{event_id}:{object_id}:{}",
        id_text(n.get("subscriptionId")).unwrap_or_default(),
        at / 1000
    );
    let user = n
        .get("sourceId")
        .and_then(Value::as_str)
        .and_then(|s| s.strip_prefix("userId:"))
        .filter(|u| !u.is_empty())
        .map(|u| map.rep(u));
    let ev = match (object, property) {
        (Object::Deal, "dealstage") => {
            if value.is_empty() {
                return Err(unmappable("dealstage is empty"));
            }
            match map.stage_move(value) {
                StageMove::Won => Canonical::new(id, "deal.won", at, SOURCE),
                StageMove::Lost => Canonical::new(id, "deal.lost", at, SOURCE),
                StageMove::Open(stage) => {
                    Canonical::new(id, "deal.stage_changed", at, SOURCE).set("to_stage", stage)
                }
            }
            .set("deal_id", object_id)
        }
        (Object::Deal, "amount") => Canonical::new(id, "deal.amount_changed", at, SOURCE)
            .set("deal_id", object_id)
            .set(
                "amount",
                number(amount(Some(&Value::from(value)), "amount")?),
            ),
        (Object::Deal, "hubspot_owner_id") if !value.is_empty() => {
            Canonical::new(id, "deal.created", at, SOURCE)
                .set("deal_id", object_id)
                .set("rep_id", map.rep(value))
        }
        (Object::Call, "hs_call_disposition") => {
            let outcome = DISPOSITIONS
                .iter()
                .find(|(guid, _)| *guid == value)
                .map_or("other", |(_, o)| o);
            Canonical::new(
                format!("hubspot:{portal}:call:{object_id}"),
                "call.logged",
                at,
                SOURCE,
            )
            .set("call_id", object_id)
            .set("rep_id", user.unwrap_or_else(|| "unassigned".into()))
            .set("outcome", outcome)
        }
        (Object::Meeting, "hs_meeting_start_time") => {
            let when = timestamp(&Value::from(value), "hs_meeting_start_time")?;
            let when = crate::event::format_timestamp(when);
            if known.meeting_known(&object_id) || scheduled.contains(&object_id) {
                Canonical::new(id, "meeting.rescheduled", at, SOURCE)
                    .set("meeting_id", object_id)
                    .set("scheduled_for", when)
            } else {
                scheduled.insert(object_id.clone());
                Canonical::new(id, "meeting.scheduled", at, SOURCE)
                    .set("meeting_id", object_id)
                    .set("scheduled_for", when)
                    .set("rep_id", user.unwrap_or_else(|| "unassigned".into()))
            }
        }
        (Object::Meeting, "hs_meeting_outcome") => {
            let kind = match value {
                "COMPLETED" => "meeting.held",
                "NO_SHOW" => "meeting.no_show",
                "CANCELED" => "meeting.canceled",
                "SCHEDULED" | "RESCHEDULED" => return Ok(Some(None)),
                _ => return Err(unmappable("hs_meeting_outcome is not a HubSpot outcome")),
            };
            Canonical::new(id, kind, at, SOURCE).set("meeting_id", object_id)
        }
        _ => return Ok(Some(None)),
    };
    Ok(Some(Some(ev.done())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::NothingKnown;
    use crate::event::RejectReason;
    use serde_json::json;

    fn mapping() -> Mapping {
        Mapping {
            owners: [("501".to_owned(), "rep-ana".to_owned())].into(),
            stages: [("appointmentscheduled".to_owned(), "prospecting".to_owned())].into(),
            won_stages: ["closedwon".to_owned()].into(),
            lost_stages: ["closedlost".to_owned()].into(),
        }
    }

    fn change(object: &str, id: u64, prop: &str, value: &str) -> Value {
        let (kind, type_id) = match object {
            "deal" => ("deal.propertyChange", None),
            "call" => ("object.propertyChange", Some("0-48")),
            _ => ("object.propertyChange", Some("0-47")),
        };
        let mut n = json!({
            "eventId": 9001, "subscriptionId": 77, "portalId": 62515, "appId": 1,
            "occurredAt": 1_793_697_600_000i64, "subscriptionType": kind,
            "attemptNumber": 0, "objectId": id, "propertyName": prop,
            "propertyValue": value, "changeSource": "CRM_UI", "sourceId": "userId:501"
        });
        if let Some(t) = type_id {
            n["objectTypeId"] = json!(t);
        }
        n
    }

    fn one(n: Value) -> Value {
        match adapt(&json!([n]), &mapping(), &NothingKnown).unwrap() {
            Adapted::Events(mut v) => {
                assert_eq!(v.len(), 1);
                v.remove(0)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deal_stages_map_through_the_pipeline_and_close() {
        let ev = one(change("deal", 42, "dealstage", "appointmentscheduled"));
        assert_eq!(ev["type"], "deal.stage_changed");
        assert_eq!(ev["to_stage"], "prospecting");
        assert_eq!(ev["deal_id"], "42");
        assert_eq!(ev["occurred_at"], "2026-11-03T09:20:00.000000Z");
        assert_eq!(
            one(change("deal", 42, "dealstage", "closedwon"))["type"],
            "deal.won"
        );
        assert_eq!(
            one(change("deal", 42, "dealstage", "closedlost"))["type"],
            "deal.lost"
        );
    }

    #[test]
    fn owner_opens_the_deal_and_amount_revalues_it() {
        let ev = one(change("deal", 42, "hubspot_owner_id", "501"));
        assert_eq!(
            (ev["type"].as_str(), ev["rep_id"].as_str()),
            (Some("deal.created"), Some("rep-ana"))
        );
        let ev = one(change("deal", 42, "amount", "1250.5"));
        assert_eq!(ev["type"], "deal.amount_changed");
        assert_eq!(ev["amount"], 1250.5);
    }

    #[test]
    fn retries_keep_the_id_and_calls_count_once() {
        let a = one(change("deal", 42, "dealstage", "closedwon"));
        let mut retry = change("deal", 42, "dealstage", "closedwon");
        retry["attemptNumber"] = json!(3);
        assert_eq!(a["id"], one(retry)["id"]);
        let c1 = one(change("call", 7, "hs_call_disposition", DISPOSITIONS[0].0));
        let mut edit = change("call", 7, "hs_call_disposition", DISPOSITIONS[1].0);
        edit["eventId"] = json!(9002);
        assert_eq!(c1["outcome"], "connected");
        assert_eq!(c1["rep_id"], "rep-ana");
        assert_eq!(
            c1["id"],
            one(edit)["id"],
            "a re-disposition is the same call"
        );
    }

    #[test]
    fn a_meeting_is_booked_once_then_moved() {
        struct Knows;
        impl Known for Knows {
            fn meeting_known(&self, id: &str) -> bool {
                id == "88"
            }
        }
        let start = change("meeting", 88, "hs_meeting_start_time", "1793790000000");
        let new = change("meeting", 99, "hs_meeting_start_time", "1793790000000");
        let Adapted::Events(evs) =
            adapt(&json!([start, new.clone(), new]), &mapping(), &Knows).unwrap()
        else {
            panic!()
        };
        let kinds: Vec<_> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "meeting.rescheduled",
                "meeting.scheduled",
                "meeting.rescheduled"
            ]
        );
        assert_eq!(evs[1]["scheduled_for"], "2026-11-04T11:00:00.000000Z");
        let ev = one(change("meeting", 99, "hs_meeting_outcome", "NO_SHOW"));
        assert_eq!(ev["type"], "meeting.no_show");
    }

    #[test]
    fn unknown_kinds_nothing_to_do_and_bad_values() {
        let contact =
            json!([{"subscriptionType": "contact.creation", "objectId": 1, "occurredAt": 1}]);
        assert_eq!(
            adapt(&contact, &mapping(), &NothingKnown).unwrap(),
            Adapted::UnknownKind
        );
        let creation = json!([{"subscriptionType": "deal.creation", "objectId": 1, "eventId": 2, "occurredAt": 1}]);
        assert_eq!(
            adapt(&creation, &mapping(), &NothingKnown).unwrap(),
            Adapted::NothingToDo
        );
        let reject = |n: Value| {
            adapt(&json!([n]), &mapping(), &NothingKnown)
                .unwrap_err()
                .reason
        };
        assert_eq!(
            reject(change("deal", 1, "amount", "lots")),
            RejectReason::WrongType
        );
        assert_eq!(
            reject(change("meeting", 1, "hs_meeting_outcome", "MAYBE")),
            RejectReason::Unmappable
        );
        let mut no_time = change("deal", 1, "amount", "5");
        no_time.as_object_mut().unwrap().remove("occurredAt");
        assert_eq!(reject(no_time), RejectReason::MissingField);
        assert_eq!(
            adapt(&json!("deal"), &mapping(), &NothingKnown)
                .unwrap_err()
                .reason,
            RejectReason::WrongType
        );
    }
}
