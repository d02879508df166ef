//! HubSpot webhooks v3: a batch (JSON array) of notifications, or one.
//!
//! A notification names one object and, for a property change, one
//! property and its new value. A creation carries no properties: HubSpot
//! sends the properties set at creation as property notifications with the
//! same `objectId` and `occurredAt`, usually in the same batch. So the
//! adapter reads a batch as a whole:
//!
//! - it applies the notifications in `occurredAt` order, not array order
//!   (HubSpot promises no order);
//! - a creation and the property notifications of the same object and time
//!   become the creation's events (one `deal.created` with owner, stage,
//!   amount and currency); those property notifications are `merged`;
//! - property notifications of the same object and time without a creation
//!   are read together (a won stage takes the amount beside it, a lost one
//!   `closed_lost_reason`, an amount `deal_currency_code`);
//! - every notification has its own outcome: one that cannot be mapped is
//!   rejected alone.
//!
//! | object (type id) | creation | property change |
//! |---|---|---|
//! | deal (`0-3`) | `deal.created` with `hubspot_owner_id`, `dealstage`, `amount`, `deal_currency_code`; won or lost at once if created closed; without an owner the deal is known but not opened until its owner notice | `dealstage`: `deal.stage_changed`, or `deal.won` / `deal.lost`; `amount`: `deal.amount_changed`; `hubspot_owner_id`: `deal.created` with what is known of the deal (a deal already opened keeps its first owner) |
//! | contact (`0-1`) | `lead.created` (`hubspot_owner_id`) | nothing |
//! | call (`0-48`) | `call.logged`: owner, `hs_call_duration` (ms), `hs_call_disposition`, `hs_timestamp`; inbound calls are not counted | the same, once per call |
//! | meeting (`0-47`) | `meeting.scheduled` at `hs_meeting_start_time`, and its outcome | `hs_meeting_start_time`: scheduled or rescheduled; `hs_meeting_outcome`: held, no-show, canceled |
//! | feedback submission (`0-19`) | `survey.responded` from `hs_survey_type` (NPS, CSAT) and `hs_value` | the same, once per submission |
//! | subscription (`0-69`) | | `churn_field` (default `hs_status`) reaching a `churn_values` value: `subscription.canceled` |
//!
//! Calls and meetings are credited to their owner (`hubspot_owner_id`),
//! never to the user who made the change (`sourceId`); without an owner
//! they go to `unassigned`. Deletions, merges, association changes and
//! other properties: nothing to do. Other objects: an unknown kind.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::{
    amount, id_text, missing, number, timestamp, unmappable, wrong, Adapted, Canonical, Element,
    Known, Mapping, StageMove,
};
use crate::event::{format_timestamp, Rejection};

const SOURCE: &str = "hubspot";

/// HubSpot's default call dispositions (their ids are the same in every
/// portal); a portal's own ones go in `call_outcomes`.
const DISPOSITIONS: [(&str, &str); 6] = [
    ("f240bbac-87c9-4f6e-bf70-924b57d47db7", "connected"),
    ("73a0d17f-1163-4015-bdd5-ec830791da20", "no_answer"),
    ("b2cf5968-551e-4856-9783-52b3da59a7d0", "voicemail"),
    ("a4c4c377-d246-4b32-a13b-75a56a4cd0ff", "other"),
    ("9d9162e7-6cf3-4944-bf63-4dff82258764", "busy"),
    ("17b47fee-58de-441e-a44c-c6300d46f273", "other"),
];

/// `hs_call_status` values that say how a call without a disposition went.
const CALL_STATUSES: [(&str, &str); 2] = [("NO_ANSWER", "no_answer"), ("BUSY", "busy")];

const MEETING_OUTCOMES: [(&str, &str); 3] = [
    ("COMPLETED", "held"),
    ("NO_SHOW", "no_show"),
    ("CANCELED", "canceled"),
];

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Object {
    Deal,
    Contact,
    Call,
    Meeting,
    Feedback,
    Subscription,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Action {
    Creation,
    PropertyChange,
}

/// One notification, read.
struct Note<'a> {
    index: Option<usize>,
    object: Object,
    action: Action,
    object_id: String,
    at: i64,
    /// The notification's own identity: a retry (a new `attemptNumber`)
    /// keeps it.
    id: String,
    portal: String,
    property: &'a str,
    value: String,
}

type Group<'a> = (Object, &'a str, i64);

/// The notifications of one object at one time: a creation and the
/// properties set with it, or properties changed together.
struct Bag<'n, 'a> {
    notes: Vec<&'n Note<'a>>,
}

impl Bag<'_, '_> {
    fn get(&self, property: &str) -> Option<&str> {
        self.notes
            .iter()
            .rev()
            .find(|n| n.property == property)
            .map(|n| n.value.as_str())
            .filter(|v| !v.is_empty())
    }
}

pub fn adapt(doc: &Value, map: &Mapping, known: &dyn Known) -> Result<Vec<Element>, Rejection> {
    let (items, batch): (&[Value], bool) = match doc {
        Value::Array(a) => (a, true),
        Value::Object(_) => (std::slice::from_ref(doc), false),
        _ => {
            return Err(wrong(
                "a HubSpot payload",
                "an array of notifications or one",
            ))
        }
    };
    if items.is_empty() {
        return Ok(vec![Element::new(None, Ok(Adapted::NothingToDo))]);
    }
    // (time, array index, element) for what is settled while reading.
    let mut settled: Vec<(i64, usize, Element)> = Vec::new();
    let mut notes = Vec::new();
    for (i, n) in items.iter().enumerate() {
        let index = batch.then_some(i);
        match read(n, index) {
            Ok(Read::Note(note)) => notes.push(note),
            Ok(Read::Done(at, result)) => settled.push((at, i, Element::new(index, Ok(result)))),
            Err(r) => settled.push((i64::MIN, i, Element::new(index, Err(r)))),
        }
    }
    notes.sort_by_key(|n| n.at);
    let mut bags: HashMap<Group<'_>, Bag<'_, '_>> = HashMap::new();
    let mut created: HashSet<Group<'_>> = HashSet::new();
    for n in &notes {
        let g = (n.object, n.object_id.as_str(), n.at);
        bags.entry(g)
            .or_insert(Bag { notes: Vec::new() })
            .notes
            .push(n);
        if n.action == Action::Creation {
            created.insert(g);
        }
    }
    let mut batch_state = BatchState::default();
    let mut led: HashSet<Group<'_>> = HashSet::new();
    for (order, n) in notes.iter().enumerate() {
        let g = (n.object, n.object_id.as_str(), n.at);
        let bag = &bags[&g];
        let result = match n.action {
            Action::Creation => creation(n, bag, map, &mut batch_state).map(Adapted::of),
            Action::PropertyChange if created.contains(&g) => Ok(Adapted::Merged),
            // Read by the notice beside it: the lost stage takes its
            // reason, the amount its currency.
            Action::PropertyChange
                if n.object == Object::Deal
                    && ((n.property == "closed_lost_reason" && bag.get("dealstage").is_some())
                        || (n.property == "deal_currency_code" && bag.get("amount").is_some())) =>
            {
                Ok(Adapted::Merged)
            }
            Action::PropertyChange => {
                // Calls and surveys are one event per record: the first
                // notification of a group makes it from the whole group.
                let whole = matches!(n.object, Object::Call | Object::Feedback);
                if whole && !led.insert(g) {
                    Ok(Adapted::Merged)
                } else {
                    change(n, bag, map, known, &mut batch_state).map(Adapted::of)
                }
            }
        };
        settled.push((
            n.at,
            usize::MAX - notes.len() + order,
            Element::new(n.index, result),
        ));
    }
    // Stable: notes keep their time order; rejected ones come first.
    settled.sort_by_key(|(at, i, _)| (*at, *i));
    Ok(settled.into_iter().map(|(_, _, e)| e).collect())
}

/// What earlier notifications of the batch did, that the engine does not
/// know yet (it applies the batch after mapping it).
#[derive(Default)]
struct BatchState {
    meetings: HashSet<String>,
}

enum Read<'a> {
    Note(Note<'a>),
    /// Settled without its object: an unknown kind, or nothing to do.
    Done(i64, Adapted),
}

fn read(n: &Value, index: Option<usize>) -> Result<Read<'_>, Rejection> {
    if !n.is_object() {
        return Err(wrong("a notification", "an object"));
    }
    // HubSpot's payload table names it `eventType`; live bodies use
    // `subscriptionType`.
    let kind = match n.get("subscriptionType").or_else(|| n.get("eventType")) {
        None | Some(Value::Null) => return Err(missing("subscriptionType")),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(wrong("subscriptionType", "a string")),
    };
    let (object, action) = kind.split_once('.').unwrap_or((kind, ""));
    let type_id = match n.get("objectTypeId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(wrong("objectTypeId", "a string")),
    };
    let object = match (object, type_id) {
        ("deal", _) | ("object", Some("0-3")) => Object::Deal,
        ("contact", _) | ("object", Some("0-1")) => Object::Contact,
        ("object", Some("0-48")) => Object::Call,
        ("object", Some("0-47")) => Object::Meeting,
        ("object", Some("0-19")) => Object::Feedback,
        ("object", Some("0-69")) => Object::Subscription,
        ("object", None) => return Err(missing("objectTypeId")),
        _ => return Ok(Read::Done(i64::MIN, Adapted::UnknownKind)),
    };
    let at = timestamp(
        n.get("occurredAt").ok_or_else(|| missing("occurredAt"))?,
        "occurredAt",
    )?;
    let action = match action {
        "creation" => Action::Creation,
        "propertyChange" => Action::PropertyChange,
        // Deletions, merges, restores and association changes change no
        // KPI; merges and association changes carry no `objectId`.
        _ => return Ok(Read::Done(at, Adapted::NothingToDo)),
    };
    let object_id = super::req_id(n, "objectId", "objectId")?;
    let event_id = super::req_id(n, "eventId", "eventId")?;
    let portal = id_text(n.get("portalId")).unwrap_or_default();
    let (property, value) = if action == Action::PropertyChange {
        let property = match n.get("propertyName") {
            None | Some(Value::Null) => return Err(missing("propertyName")),
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            Some(_) => return Err(wrong("propertyName", "a non-empty string")),
        };
        let value = match n.get("propertyValue") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => String::new(),
            Some(Value::Number(x)) => x.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(_) => return Err(wrong("propertyValue", "a string")),
        };
        (property, value)
    } else {
        ("", String::new())
    };
    let id = format!(
        "hubspot:{portal}:{}:{event_id}:{object_id}:{property}:{}",
        id_text(n.get("subscriptionId")).unwrap_or_default(),
        at / 1000
    );
    Ok(Read::Note(Note {
        index,
        object,
        action,
        object_id,
        at,
        id,
        portal,
        property,
        value,
    }))
}

/// The rep owning an object: its `hubspot_owner_id` in the group.
fn owner(bag: &Bag<'_, '_>, map: &Mapping) -> Option<String> {
    bag.get("hubspot_owner_id").map(|o| map.rep(o))
}

fn amount_of(bag: &Bag<'_, '_>) -> Result<Option<Value>, Rejection> {
    bag.get("amount")
        .map(|a| amount(Some(&Value::from(a)), "amount").map(number))
        .transpose()
}

/// The events of a creation and the properties set with it.
fn creation(
    n: &Note<'_>,
    bag: &Bag<'_, '_>,
    map: &Mapping,
    batch: &mut BatchState,
) -> Result<Vec<Value>, Rejection> {
    let id = n.object_id.clone();
    match n.object {
        Object::Deal => {
            let stage = bag.get("dealstage").map(|s| map.stage_move(s));
            let amount = amount_of(bag)?;
            let currency = bag.get("deal_currency_code");
            let mut out = Vec::new();
            let open_stage = match &stage {
                Some(StageMove::Open(s)) => Some(s.clone()),
                _ => None,
            };
            match owner(bag, map) {
                Some(rep) => out.push(
                    Canonical::new(n.id.clone(), "deal.created", n.at, SOURCE)
                        .set("deal_id", id.clone())
                        .set("rep_id", rep)
                        .set("amount", amount.clone().unwrap_or(Value::from(0)))
                        .set_opt("currency", currency)
                        .set_opt("stage", open_stage)
                        .done(),
                ),
                // No owner yet: what is set makes the deal known; its
                // owner's notice opens it with these values.
                None => {
                    if let Some(a) = &amount {
                        out.push(
                            Canonical::new(
                                format!("{}:amount", n.id),
                                "deal.amount_changed",
                                n.at,
                                SOURCE,
                            )
                            .set("deal_id", id.clone())
                            .set("amount", a.clone())
                            .set_opt("currency", currency)
                            .done(),
                        );
                    }
                    if let Some(to) = open_stage {
                        out.push(
                            Canonical::new(
                                format!("{}:stage", n.id),
                                "deal.stage_changed",
                                n.at,
                                SOURCE,
                            )
                            .set("deal_id", id.clone())
                            .set("to_stage", to)
                            .done(),
                        );
                    }
                }
            }
            if let Some(close) = closing(n, &format!("{}:closed", n.id), bag, stage)? {
                out.push(close);
            }
            Ok(out)
        }
        Object::Contact => Ok(vec![Canonical::new(
            n.id.clone(),
            "lead.created",
            n.at,
            SOURCE,
        )
        .set("lead_id", id)
        .set_opt("rep_id", owner(bag, map))
        .done()]),
        Object::Call => call(n, bag, map),
        Object::Meeting => {
            // `hs_timestamp` is a meeting's start time too.
            let start = bag
                .get("hs_meeting_start_time")
                .or_else(|| bag.get("hs_timestamp"))
                .ok_or_else(|| missing("hs_meeting_start_time"))?;
            let when = format_timestamp(timestamp(&Value::from(start), "hs_meeting_start_time")?);
            batch.meetings.insert(id.clone());
            let mut out = vec![
                Canonical::new(n.id.clone(), "meeting.scheduled", n.at, SOURCE)
                    .set("meeting_id", id.clone())
                    .set(
                        "rep_id",
                        owner(bag, map).unwrap_or_else(|| "unassigned".into()),
                    )
                    .set("scheduled_for", when)
                    .done(),
            ];
            if let Some(o) = bag.get("hs_meeting_outcome") {
                if let Some(kind) = meeting_outcome(o, map)? {
                    out.push(
                        Canonical::new(format!("{}:outcome", n.id), kind, n.at, SOURCE)
                            .set("meeting_id", id)
                            .done(),
                    );
                }
            }
            Ok(out)
        }
        Object::Feedback => survey(n, bag, map),
        Object::Subscription => churn(n, bag, map),
    }
}

/// `deal.won` / `deal.lost` for a closing stage, with the amount and the
/// lost reason beside it.
fn closing(
    n: &Note<'_>,
    id: &str,
    bag: &Bag<'_, '_>,
    stage: Option<StageMove>,
) -> Result<Option<Value>, Rejection> {
    Ok(match stage {
        Some(StageMove::Won) => Some(
            Canonical::new(id.to_owned(), "deal.won", n.at, SOURCE)
                .set("deal_id", n.object_id.clone())
                .set_opt("amount", amount_of(bag)?)
                .set_opt("currency", bag.get("deal_currency_code"))
                .done(),
        ),
        Some(StageMove::Lost) => Some(
            Canonical::new(id.to_owned(), "deal.lost", n.at, SOURCE)
                .set("deal_id", n.object_id.clone())
                .set_opt("reason", bag.get("closed_lost_reason"))
                .done(),
        ),
        _ => None,
    })
}

fn meeting_outcome(value: &str, map: &Mapping) -> Result<Option<&'static str>, Rejection> {
    if let Some(kind) = map.meeting_outcome(value, &MEETING_OUTCOMES) {
        return Ok(Some(kind));
    }
    match value {
        "SCHEDULED" | "RESCHEDULED" => Ok(None),
        _ => Err(unmappable("hs_meeting_outcome is not a HubSpot outcome")),
    }
}

/// `call.logged` from a call's properties, once per call: its dedup id is
/// the call's.
fn call(n: &Note<'_>, bag: &Bag<'_, '_>, map: &Mapping) -> Result<Vec<Value>, Rejection> {
    if bag
        .get("hs_call_direction")
        .is_some_and(|d| d.eq_ignore_ascii_case("INBOUND"))
    {
        return Ok(Vec::new());
    }
    let at = match bag.get("hs_timestamp") {
        Some(t) => timestamp(&Value::from(t), "hs_timestamp")?,
        None => n.at,
    };
    let seconds = match bag.get("hs_call_duration") {
        Some(ms) => {
            let ms = amount(Some(&Value::from(ms)), "hs_call_duration")?;
            Some(number(ms / 1000.0))
        }
        None => None,
    };
    let outcome = match bag.get("hs_call_disposition") {
        Some(d) => map.call_outcome(d, &DISPOSITIONS),
        None => bag.get("hs_call_status").map_or_else(
            || "other".to_owned(),
            |s| map.call_outcome(s, &CALL_STATUSES),
        ),
    };
    Ok(vec![Canonical::new(
        format!("hubspot:{}:call:{}", n.portal, n.object_id),
        "call.logged",
        at,
        SOURCE,
    )
    .set("call_id", n.object_id.clone())
    .set(
        "rep_id",
        owner(bag, map).unwrap_or_else(|| "unassigned".into()),
    )
    .set_opt("duration_seconds", seconds)
    .set("outcome", outcome)
    .done()])
}

/// `survey.responded` from a feedback submission's properties, once per
/// submission.
fn survey(n: &Note<'_>, bag: &Bag<'_, '_>, map: &Mapping) -> Result<Vec<Value>, Rejection> {
    let Some(kind) = bag.get("hs_survey_type") else {
        return Ok(Vec::new());
    };
    let kind = match kind.to_ascii_uppercase().as_str() {
        "NPS" => "nps",
        "CSAT" => "csat",
        _ => return Ok(Vec::new()), // CES and custom surveys: no KPI
    };
    let score = bag.get("hs_value").ok_or_else(|| missing("hs_value"))?;
    let score = score
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.fract() == 0.0)
        .ok_or_else(|| wrong("hs_value", "an integer"))?;
    Ok(vec![Canonical::new(
        format!("hubspot:{}:survey:{}", n.portal, n.object_id),
        "survey.responded",
        n.at,
        SOURCE,
    )
    .set("kind", kind)
    .set("score", score as i64)
    .set_opt("rep_id", owner(bag, map))
    .done()])
}

/// `subscription.canceled` when the configured property reaches a churn
/// value; the subscription is the account.
fn churn(n: &Note<'_>, bag: &Bag<'_, '_>, map: &Mapping) -> Result<Vec<Value>, Rejection> {
    let field = if map.churn_field.is_empty() {
        "hs_status"
    } else {
        map.churn_field.as_str()
    };
    let churned = bag
        .get(field)
        .is_some_and(|v| map.churn_values.iter().any(|c| c.eq_ignore_ascii_case(v)));
    if !churned {
        return Ok(Vec::new());
    }
    Ok(vec![Canonical::new(
        format!("hubspot:{}:churn:{}", n.portal, n.object_id),
        "subscription.canceled",
        n.at,
        SOURCE,
    )
    .set("account_id", n.object_id.clone())
    .set_opt("rep_id", owner(bag, map))
    .done()])
}

/// The events of a property change without a creation beside it.
fn change(
    n: &Note<'_>,
    bag: &Bag<'_, '_>,
    map: &Mapping,
    known: &dyn Known,
    batch: &mut BatchState,
) -> Result<Vec<Value>, Rejection> {
    let id = n.object_id.clone();
    let value = n.value.as_str();
    let ev = match (n.object, n.property) {
        (Object::Deal, "dealstage") => {
            if value.is_empty() {
                return Err(unmappable("dealstage is empty"));
            }
            let stage = map.stage_move(value);
            if let StageMove::Open(to) = &stage {
                Canonical::new(n.id.clone(), "deal.stage_changed", n.at, SOURCE)
                    .set("deal_id", id)
                    .set("to_stage", to.clone())
            } else {
                return Ok(closing(n, &n.id, bag, Some(stage))?.into_iter().collect());
            }
        }
        (Object::Deal, "amount") => {
            Canonical::new(n.id.clone(), "deal.amount_changed", n.at, SOURCE)
                .set("deal_id", id)
                .set("amount", amount_of(bag)?.unwrap_or(Value::from(0)))
                .set_opt("currency", bag.get("deal_currency_code"))
        }
        (Object::Deal, "hubspot_owner_id") if !value.is_empty() => {
            // Opens the deal with what is known of it: the amount and stage
            // set earlier (or beside this notice), not a zero. A deal
            // already opened keeps its owner (the engine moves no KPI on an
            // owner change), and a redelivered notice is a duplicate.
            let deal = known.deal(&id);
            let amount = match (amount_of(bag)?, &deal) {
                (Some(a), _) => a,
                (None, Some(d)) => super::from_micros(d.amount),
                (None, None) => Value::from(0),
            };
            let stage = match bag.get("dealstage").map(|s| map.stage_move(s)) {
                Some(StageMove::Open(s)) => Some(s),
                _ => deal.and_then(|d| d.stage),
            };
            Canonical::new(n.id.clone(), "deal.created", n.at, SOURCE)
                .set("deal_id", id)
                .set("rep_id", map.rep(value))
                .set("amount", amount)
                .set_opt(
                    "currency",
                    bag.get("deal_currency_code")
                        .filter(|_| bag.get("amount").is_some()),
                )
                .set_opt("stage", stage)
        }
        (Object::Call, _) => return call(n, bag, map),
        (Object::Feedback, _) => return survey(n, bag, map),
        (Object::Subscription, _) => return churn(n, bag, map),
        (Object::Meeting, "hs_meeting_start_time") => {
            let when = timestamp(&Value::from(value), "hs_meeting_start_time")?;
            let when = format_timestamp(when);
            if known.meeting_known(&id) || batch.meetings.contains(&id) {
                Canonical::new(n.id.clone(), "meeting.rescheduled", n.at, SOURCE)
                    .set("meeting_id", id)
                    .set("scheduled_for", when)
            } else {
                batch.meetings.insert(id.clone());
                Canonical::new(n.id.clone(), "meeting.scheduled", n.at, SOURCE)
                    .set("meeting_id", id)
                    .set("scheduled_for", when)
                    .set(
                        "rep_id",
                        owner(bag, map).unwrap_or_else(|| "unassigned".into()),
                    )
            }
        }
        (Object::Meeting, "hs_meeting_outcome") => match meeting_outcome(value, map)? {
            Some(kind) => Canonical::new(n.id.clone(), kind, n.at, SOURCE).set("meeting_id", id),
            None => return Ok(Vec::new()),
        },
        _ => return Ok(Vec::new()),
    };
    Ok(vec![ev.done()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::{KnownDeal, NothingKnown};
    use crate::event::RejectReason;
    use serde_json::json;

    fn mapping() -> Mapping {
        Mapping {
            owners: [("501".to_owned(), "rep-ana".to_owned())].into(),
            stages: [("appointmentscheduled".to_owned(), "prospecting".to_owned())].into(),
            won_stages: ["closedwon".to_owned()].into(),
            lost_stages: ["closedlost".to_owned()].into(),
            churn_values: ["canceled".to_owned()].into(),
            ..Mapping::default()
        }
    }

    fn note(object: &str, action: &str, id: u64, prop: Option<(&str, &str)>) -> Value {
        let (kind, type_id) = match object {
            "deal" => (format!("deal.{action}"), None),
            "contact" => (format!("contact.{action}"), None),
            "call" => (format!("object.{action}"), Some("0-48")),
            "feedback" => (format!("object.{action}"), Some("0-19")),
            "subscription" => (format!("object.{action}"), Some("0-69")),
            _ => (format!("object.{action}"), Some("0-47")),
        };
        let mut n = json!({
            "eventId": 9001, "subscriptionId": 77, "portalId": 62515, "appId": 1,
            "occurredAt": 1_793_697_600_000i64, "subscriptionType": kind,
            "attemptNumber": 0, "objectId": id, "changeSource": "CRM_UI", "sourceId": "userId:999"
        });
        if let Some((p, v)) = prop {
            n["propertyName"] = json!(p);
            n["propertyValue"] = json!(v);
            n["eventId"] = json!(9001 + p.len());
        }
        if let Some(t) = type_id {
            n["objectTypeId"] = json!(t);
        }
        n
    }

    fn change(object: &str, id: u64, prop: &str, value: &str) -> Value {
        note(object, "propertyChange", id, Some((prop, value)))
    }

    fn all(doc: Value, known: &dyn Known) -> Vec<Element> {
        adapt(&doc, &mapping(), known).unwrap()
    }

    fn evs(doc: Value) -> Vec<Value> {
        all(doc, &NothingKnown)
            .into_iter()
            .flat_map(|e| match e.result {
                Ok(Adapted::Events(v)) => v,
                _ => Vec::new(),
            })
            .collect()
    }

    fn one(n: Value) -> Value {
        let mut v = evs(json!([n]));
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0)
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
    fn a_creation_batch_is_one_deal_created_with_everything_set() {
        let batch = json!([
            change("deal", 42, "amount", "1250.5"),
            note("deal", "creation", 42, None),
            change("deal", 42, "hubspot_owner_id", "501"),
            change("deal", 42, "dealstage", "appointmentscheduled"),
            change("deal", 42, "deal_currency_code", "EUR"),
        ]);
        let elements = all(batch, &NothingKnown);
        assert_eq!(elements.len(), 5);
        let created: Vec<_> = elements
            .iter()
            .filter_map(|e| match &e.result {
                Ok(Adapted::Events(v)) => Some((e.index, v.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(created.len(), 1);
        let (index, v) = &created[0];
        assert_eq!(*index, Some(1));
        assert_eq!(v.len(), 1);
        let d = &v[0];
        assert_eq!(d["type"], "deal.created");
        assert_eq!(d["rep_id"], "rep-ana");
        assert_eq!(d["amount"], 1250.5);
        assert_eq!(d["currency"], "EUR");
        assert_eq!(d["stage"], "prospecting");
        let merged = elements
            .iter()
            .filter(|e| e.result == Ok(Adapted::Merged))
            .count();
        assert_eq!(merged, 4);
    }

    #[test]
    fn a_batch_applies_in_time_order() {
        let mut late = change("deal", 42, "dealstage", "closedwon");
        late["occurredAt"] = json!(1_793_697_700_000i64);
        let early = change("deal", 42, "dealstage", "appointmentscheduled");
        let v = evs(json!([late, early]));
        let kinds: Vec<_> = v.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["deal.stage_changed", "deal.won"]);
    }

    #[test]
    fn one_bad_notification_takes_no_neighbour_with_it() {
        let mut bad = change("deal", 42, "amount", "5");
        bad.as_object_mut().unwrap().remove("objectId");
        let assoc = json!({"subscriptionType": "deal.associationChange", "eventId": 5,
            "occurredAt": 1_793_697_600_000i64, "fromObjectId": 42, "toObjectId": 7});
        let good = change("deal", 43, "dealstage", "closedwon");
        let e = all(json!([bad, assoc, good]), &NothingKnown);
        let by_index = |i: usize| e.iter().find(|x| x.index == Some(i)).unwrap();
        assert_eq!(
            by_index(0).result.as_ref().unwrap_err().reason,
            RejectReason::MissingField
        );
        assert_eq!(by_index(1).result, Ok(Adapted::NothingToDo));
        assert!(matches!(by_index(2).result, Ok(Adapted::Events(_))));
    }

    #[test]
    fn the_owner_opens_a_known_deal_with_its_amount() {
        struct Knows;
        impl Known for Knows {
            fn meeting_known(&self, _: &str) -> bool {
                false
            }
            fn deal(&self, id: &str) -> Option<KnownDeal> {
                (id == "42").then(|| KnownDeal {
                    opened: false,
                    closed: false,
                    amount: 12_000_000_000,
                    stage: Some("demo".into()),
                })
            }
        }
        let e = all(
            json!([change("deal", 42, "hubspot_owner_id", "501")]),
            &Knows,
        );
        let Ok(Adapted::Events(v)) = &e[0].result else {
            panic!("{e:?}")
        };
        assert_eq!(v[0]["type"], "deal.created");
        assert_eq!(v[0]["amount"], 12000);
        assert_eq!(v[0]["stage"], "demo");
    }

    #[test]
    fn calls_go_to_their_owner_with_their_duration() {
        let batch = json!([
            note("call", "creation", 7, None),
            change("call", 7, "hubspot_owner_id", "501"),
            change("call", 7, "hs_call_duration", "65500"),
            change("call", 7, "hs_call_disposition", DISPOSITIONS[0].0),
        ]);
        let v = evs(batch);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["type"], "call.logged");
        assert_eq!(
            v[0]["rep_id"], "rep-ana",
            "the owner, not the sourceId user"
        );
        assert_eq!(v[0]["duration_seconds"], 65.5);
        assert_eq!(v[0]["outcome"], "connected");
        let inbound = json!([
            note("call", "creation", 8, None),
            change("call", 8, "hs_call_direction", "INBOUND"),
        ]);
        assert!(evs(inbound).is_empty());
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
        let mut later = new.clone();
        later["occurredAt"] = json!(1_793_697_700_000i64);
        let e = all(json!([start, new, later]), &Knows);
        let kinds: Vec<_> = e
            .iter()
            .flat_map(|e| match &e.result {
                Ok(Adapted::Events(v)) => v.clone(),
                _ => Vec::new(),
            })
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            kinds,
            [
                "meeting.rescheduled",
                "meeting.scheduled",
                "meeting.rescheduled"
            ]
        );
        let ev = one(change("meeting", 99, "hs_meeting_outcome", "NO_SHOW"));
        assert_eq!(ev["type"], "meeting.no_show");
    }

    #[test]
    fn contacts_surveys_and_churn() {
        let lead = evs(json!([
            note("contact", "creation", 5, None),
            change("contact", 5, "hubspot_owner_id", "501")
        ]));
        assert_eq!(lead[0]["type"], "lead.created");
        assert_eq!(lead[0]["rep_id"], "rep-ana");
        let nps = evs(json!([
            note("feedback", "creation", 6, None),
            change("feedback", 6, "hs_survey_type", "NPS"),
            change("feedback", 6, "hs_value", "9"),
        ]));
        assert_eq!(
            (nps[0]["kind"].as_str(), nps[0]["score"].as_i64()),
            (Some("nps"), Some(9))
        );
        let churn = one(change("subscription", 3, "hs_status", "canceled"));
        assert_eq!(churn["type"], "subscription.canceled");
        assert_eq!(churn["account_id"], "3");
        assert!(evs(json!([change("subscription", 3, "hs_status", "active")])).is_empty());
    }

    #[test]
    fn unknown_kinds_nothing_to_do_and_bad_values() {
        let contact =
            json!([{"subscriptionType": "company.creation", "objectId": 1, "occurredAt": 1}]);
        assert_eq!(
            all(contact, &NothingKnown)[0].result,
            Ok(Adapted::UnknownKind)
        );
        let alias =
            json!([{"eventType": "deal.deletion", "objectId": 1, "eventId": 2, "occurredAt": 1}]);
        assert_eq!(
            all(alias, &NothingKnown)[0].result,
            Ok(Adapted::NothingToDo)
        );
        let reject = |n: Value| {
            all(json!([n]), &NothingKnown)[0]
                .result
                .clone()
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
        let mut bad_kind = change("deal", 1, "amount", "5");
        bad_kind["subscriptionType"] = json!(5);
        assert_eq!(reject(bad_kind), RejectReason::WrongType);
        assert_eq!(
            adapt(&json!("deal"), &mapping(), &NothingKnown)
                .unwrap_err()
                .reason,
            RejectReason::WrongType
        );
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
        assert_eq!(
            c1["id"],
            one(edit)["id"],
            "a re-disposition is the same call"
        );
    }
}
