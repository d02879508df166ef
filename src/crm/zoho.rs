//! Zoho CRM: Notification API callbacks and `zoho-wf/1` workflow webhooks.
//!
//! Zoho has no record-change feed like the other CRMs, so two shapes are
//! read, told apart by the body:
//!
//! - a **Notification API callback** (`channel_id`, `module`, `operation`,
//!   `ids`, `server_time`, and with `return_affected_field_values` the new
//!   values of the changed fields per record in `affected_values`). Each
//!   record id is an element with its own outcome. Its time is
//!   `server_time` (when Zoho sent it: the only time a callback carries),
//!   a call's `Call_Start_Time` when it has one. Its dedup id is a hash of
//!   module, operation, record, `server_time` and the record's values (not
//!   the channel, so overlapping channels count a change once).
//! - a **workflow webhook** whose body is kpistream's `zoho-wf/1` template
//!   (docs/crm.md): one record as its values after the change. A `create`
//!   opens the record; an `edit` is compared with what the engine knows
//!   (stage, amount, meeting time). Its time is `modified_time`
//!   (`created_time` on create).
//!
//! | module | created | changed |
//! |---|---|---|
//! | `Leads` | `lead.created` (`Owner`) | `Converted__s` true, or a status in `converted_statuses`: `lead.converted` |
//! | `Deals` | `deal.created` (`Owner`, `Stage`, `Amount`, `Currency`), won or lost at once if created closed | `Stage`: `deal.won` / `deal.lost` (`Reason_For_Loss__s`) for a won or lost stage, else `deal.stage_changed`; `Amount`: `deal.amount_changed` |
//! | `Calls` (callbacks only) | `call.logged` for outbound calls (`Owner`, `Call_Duration_in_seconds`, `Call_Result` through `call_outcomes`, `What_Id` of `Deals`) | nothing |
//! | `Events` (meetings) | `meeting.scheduled` (`Owner`, `Start_DateTime`) | `Start_DateTime`: `meeting.rescheduled`; `$event_cancelled`: `meeting.canceled`; `meeting_outcome_field` through `meeting_outcomes`: held, no-show, canceled; deleted before it starts: `meeting.canceled` |
//! | `churn_object` | | `churn_field` reaching a `churn_values` value: `subscription.canceled` |
//!
//! A callback that says a record was created or changed without its values
//! (no `return_affected_field_values`, or an insert Zoho sent bare) cannot
//! give a rep, an amount or a time: it is rejected as `incomplete_payload`
//! (dead-lettered, to be reconciled through Zoho's API), except a lead's
//! creation, which needs none of them.

use serde_json::Value;

use super::{
    amount, digest, id_text, missing, number, opt_bool, req_id, req_str, timestamp, unmappable,
    wrong, Adapted, Canonical, Element, Known, Mapping, StageMove,
};
use crate::event::{format_timestamp, RejectReason, Rejection};

const SOURCE: &str = "zoho";
const TEMPLATE: &str = "zoho-wf/1";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Module {
    Leads,
    Deals,
    Calls,
    Meetings,
    Churn,
}

fn module(name: &str, map: &Mapping) -> Option<Module> {
    Some(match name {
        "Leads" => Module::Leads,
        "Deals" | "Potentials" => Module::Deals,
        "Calls" => Module::Calls,
        "Events" | "Meetings" => Module::Meetings,
        m if !map.churn_object.is_empty() && m == map.churn_object => Module::Churn,
        _ => return None,
    })
}

pub fn adapt(doc: &Value, map: &Mapping, known: &dyn Known) -> Result<Vec<Element>, Rejection> {
    if !doc.is_object() {
        return Err(wrong("a Zoho payload", "an object"));
    }
    if let Some(v) = doc.get("kpistream") {
        let one = |r| Ok(vec![Element::new(None, r)]);
        return match v.as_str() {
            Some(TEMPLATE) => one(workflow(doc, map, known)),
            _ => one(Err(Rejection::new(
                RejectReason::UnsupportedVersion,
                format!("a workflow webhook body must be the {TEMPLATE} template"),
            ))),
        };
    }
    if doc.get("channel_id").is_none() && doc.get("ids").is_none() {
        return Err(missing(
            "channel_id and ids (a Notification API callback) or kpistream (a workflow webhook)",
        ));
    }
    notification(doc, map, known)
}

/// A text value: a string (empty is absent), a number as its digits, or a
/// lookup or user object's `id`.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Object(o) => id_text(o.get("id")),
        v => id_text(Some(v)),
    }
}

fn notification(doc: &Value, map: &Mapping, known: &dyn Known) -> Result<Vec<Element>, Rejection> {
    let name = req_str(doc, "module", "module")?;
    let operation = req_str(doc, "operation", "operation")?;
    let ids: Vec<String> = match doc.get("ids") {
        None | Some(Value::Null) => return Err(missing("ids")),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| id_text(Some(v)).ok_or_else(|| wrong("ids", "an array of record ids")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(wrong("ids", "an array of record ids")),
    };
    let at = timestamp(
        doc.get("server_time")
            .ok_or_else(|| missing("server_time"))?,
        "server_time",
    )?;
    let Some(module) = module(name, map) else {
        return Ok(vec![Element::new(None, Ok(Adapted::UnknownKind))]);
    };
    if !matches!(operation, "insert" | "update" | "delete") {
        return Err(unmappable("operation is not insert, update or delete"));
    }
    // The new values per record, when the channel asked for them.
    let mut values: std::collections::HashMap<String, &Value> = Default::default();
    match doc.get("affected_values") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for v in a {
                let (Some(id), Some(vals)) = (text(v.get("record_id")), v.get("values")) else {
                    return Err(wrong("affected_values", "an array of {record_id, values}"));
                };
                if !vals.is_object() {
                    return Err(wrong("affected_values", "an array of {record_id, values}"));
                }
                values.insert(id, vals);
            }
        }
        Some(_) => return Err(wrong("affected_values", "an array")),
    }
    if ids.is_empty() {
        return Ok(vec![Element::new(None, Ok(Adapted::NothingToDo))]);
    }
    let several = ids.len() > 1;
    Ok(ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let vals = values.get(id).copied();
            let body = vals.map(Value::to_string).unwrap_or_default();
            let rec = Record {
                module,
                id: id.clone(),
                dedup: format!(
                    "zoho:{}",
                    digest(&[name, operation, id, &(at / 1000).to_string(), &body])
                ),
                at,
                map,
                values: vals,
            };
            let result = match operation {
                "delete" => rec.deleted(known),
                "insert" => rec.created(),
                _ => rec.changed(),
            };
            Element::events(several.then_some(i), result)
        })
        .collect())
}

/// One record of a callback: its id and, when sent, its new values.
struct Record<'a> {
    module: Module,
    id: String,
    dedup: String,
    at: i64,
    map: &'a Mapping,
    /// The record's new values: a JSON object.
    values: Option<&'a Value>,
}

impl Record<'_> {
    fn get(&self, field: &str) -> Option<&Value> {
        self.values?.get(field).filter(|v| !v.is_null())
    }

    fn has(&self, field: &str) -> bool {
        self.values.is_some_and(|v| v.get(field).is_some())
    }

    fn flag(&self, field: &str) -> Result<Option<bool>, Rejection> {
        opt_bool(self.values.unwrap_or(&Value::Null), field, field)
    }

    fn str(&self, field: &str) -> Result<Option<String>, Rejection> {
        match self.get(field) {
            None => Ok(None),
            Some(v @ (Value::String(_) | Value::Number(_) | Value::Object(_))) => Ok(text(Some(v))),
            Some(_) => Err(wrong(field, "text")),
        }
    }

    fn owner(&self) -> Result<Option<String>, Rejection> {
        Ok(self.str("Owner")?.map(|o| self.map.rep(&o)))
    }

    fn event(&self, suffix: &str, kind: &str) -> Canonical {
        Canonical::new(format!("{}:{suffix}", self.dedup), kind, self.at, SOURCE)
    }

    fn incomplete(&self, what: &str) -> Rejection {
        Rejection::new(
            RejectReason::IncompletePayload,
            format!(
                "the callback names the record but not its {what}: enable return_affected_field_values, or reconcile it through Zoho's API"
            ),
        )
    }

    /// The deal a call or meeting is related to (`What_Id` of `Deals`).
    fn deal_link(&self) -> Option<String> {
        let module = self.get("$se_module").and_then(Value::as_str);
        (module == Some("Deals"))
            .then(|| text(self.get("What_Id")))
            .flatten()
    }

    fn created(&self) -> Result<Vec<Value>, Rejection> {
        if self.values.is_none() && self.module != Module::Leads {
            return Err(self.incomplete("values (owner, amount, time)"));
        }
        match self.module {
            Module::Leads => Ok(vec![self
                .event("lead", "lead.created")
                .set("lead_id", self.id.clone())
                .set_opt("rep_id", self.owner()?)
                .done()]),
            Module::Deals => {
                let rep = self.owner()?.ok_or_else(|| self.incomplete("Owner"))?;
                let stage = self.str("Stage")?;
                deal_created(
                    self,
                    &self.id,
                    rep,
                    stage.as_deref(),
                    self.get("Amount"),
                    "Amount",
                    self.str("Currency")?,
                    self.str("Reason_For_Loss__s")?,
                )
            }
            Module::Calls => self.call(),
            Module::Meetings => {
                let rep = self.owner()?.ok_or_else(|| self.incomplete("Owner"))?;
                let start = self
                    .get("Start_DateTime")
                    .ok_or_else(|| self.incomplete("Start_DateTime"))?;
                Ok(vec![self
                    .event("scheduled", "meeting.scheduled")
                    .set("meeting_id", self.id.clone())
                    .set("rep_id", rep)
                    .set(
                        "scheduled_for",
                        format_timestamp(timestamp(start, "Start_DateTime")?),
                    )
                    .set_opt("deal_id", self.deal_link())
                    .done()])
            }
            Module::Churn => self.changed(),
        }
    }

    fn call(&self) -> Result<Vec<Value>, Rejection> {
        let kind = self.str("Call_Type")?;
        if kind
            .as_deref()
            .is_some_and(|k| !k.eq_ignore_ascii_case("Outbound"))
        {
            return Ok(Vec::new()); // inbound and missed calls are not counted
        }
        let rep = self.owner()?.ok_or_else(|| self.incomplete("Owner"))?;
        let at = match self.get("Call_Start_Time") {
            Some(t) => timestamp(t, "Call_Start_Time")?,
            None => self.at,
        };
        // `Call_Duration` is "HH:mm" in the docs and "mm:ss" in practice:
        // only the seconds field is read.
        let seconds = match self.get("Call_Duration_in_seconds") {
            Some(s) => Some(number(amount(Some(s), "Call_Duration_in_seconds")?)),
            None => None,
        };
        let outcome = match self.str("Call_Result")? {
            Some(r) => self.map.call_outcome(&r, &[]),
            None => "other".to_owned(),
        };
        Ok(vec![Canonical::new(
            format!("zoho:call:{}", self.id),
            "call.logged",
            at,
            SOURCE,
        )
        .set("call_id", self.id.clone())
        .set("rep_id", rep)
        .set_opt("duration_seconds", seconds)
        .set("outcome", outcome)
        .set_opt("deal_id", self.deal_link())
        .done()])
    }

    fn changed(&self) -> Result<Vec<Value>, Rejection> {
        if self.values.is_none() {
            return Err(self.incomplete("values"));
        }
        let mut out = Vec::new();
        match self.module {
            Module::Leads => {
                let converted = self.flag("Converted__s")? == Some(true)
                    || self
                        .str("Lead_Status")?
                        .is_some_and(|s| self.map.converted_statuses.contains(&s));
                if converted {
                    out.push(
                        self.event("converted", "lead.converted")
                            .set("lead_id", self.id.clone())
                            .done(),
                    );
                }
            }
            Module::Deals => {
                if self.has("Amount") {
                    out.push(
                        self.event("amount", "deal.amount_changed")
                            .set("deal_id", self.id.clone())
                            .set("amount", number(amount(self.get("Amount"), "Amount")?))
                            .set_opt("currency", self.str("Currency")?)
                            .done(),
                    );
                }
                if let Some(stage) = self.str("Stage")? {
                    out.push(stage_event(
                        self,
                        &self.id,
                        &stage,
                        self.get("Amount").filter(|_| self.has("Amount")),
                        self.str("Currency")?,
                        self.str("Reason_For_Loss__s")?,
                    )?);
                }
            }
            Module::Calls => {}
            Module::Meetings => {
                if let Some(start) = self.get("Start_DateTime") {
                    out.push(
                        self.event("rescheduled", "meeting.rescheduled")
                            .set("meeting_id", self.id.clone())
                            .set(
                                "scheduled_for",
                                format_timestamp(timestamp(start, "Start_DateTime")?),
                            )
                            .done(),
                    );
                }
                let outcome = if self.flag("$event_cancelled")? == Some(true) {
                    Some("meeting.canceled")
                } else if self.map.meeting_outcome_field.is_empty() {
                    None
                } else {
                    self.str(&self.map.meeting_outcome_field)?
                        .and_then(|v| self.map.meeting_outcome(&v, &[]))
                };
                if let Some(kind) = outcome {
                    out.push(
                        self.event("outcome", kind)
                            .set("meeting_id", self.id.clone())
                            .done(),
                    );
                }
            }
            Module::Churn => {
                let churned = self.str(&self.map.churn_field)?.is_some_and(|v| {
                    self.map
                        .churn_values
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case(&v))
                });
                if churned {
                    out.push(
                        Canonical::new(
                            format!("zoho:churn:{}", self.id),
                            "subscription.canceled",
                            self.at,
                            SOURCE,
                        )
                        .set("account_id", self.id.clone())
                        .set_opt("rep_id", self.owner()?)
                        .done(),
                    );
                }
            }
        }
        Ok(out)
    }

    /// A meeting deleted before it starts is canceled.
    fn deleted(&self, known: &dyn Known) -> Result<Vec<Value>, Rejection> {
        if self.module != Module::Meetings {
            return Ok(Vec::new());
        }
        Ok(match known.meeting_time(&self.id) {
            Some(t) if t > self.at => vec![self
                .event("canceled", "meeting.canceled")
                .set("meeting_id", self.id.clone())
                .done()],
            _ => Vec::new(),
        })
    }
}

/// A deal's creation from its values, closed at once if its stage is a
/// won or lost one.
#[allow(clippy::too_many_arguments)]
fn deal_created(
    r: &Record<'_>,
    deal: &str,
    rep: String,
    stage: Option<&str>,
    value: Option<&Value>,
    what: &str,
    currency: Option<String>,
    reason: Option<String>,
) -> Result<Vec<Value>, Rejection> {
    let value = number(amount(value, what)?);
    let moved = stage.map(|s| r.map.stage_move(s));
    let open = match &moved {
        Some(StageMove::Open(s)) => Some(s.clone()),
        _ => None,
    };
    let mut out = vec![r
        .event("created", "deal.created")
        .set("deal_id", deal)
        .set("rep_id", rep)
        .set("amount", value.clone())
        .set_opt("currency", currency.clone())
        .set_opt("stage", open)
        .done()];
    match moved {
        Some(StageMove::Won) => out.push(
            r.event("won", "deal.won")
                .set("deal_id", deal)
                .set("amount", value)
                .set_opt("currency", currency)
                .done(),
        ),
        Some(StageMove::Lost) => out.push(
            r.event("lost", "deal.lost")
                .set("deal_id", deal)
                .set_opt("reason", reason)
                .done(),
        ),
        _ => {}
    }
    Ok(out)
}

/// A deal's new stage: won, lost (with its reason), or a stage change.
fn stage_event(
    r: &Record<'_>,
    deal: &str,
    stage: &str,
    value: Option<&Value>,
    currency: Option<String>,
    reason: Option<String>,
) -> Result<Value, Rejection> {
    Ok(match r.map.stage_move(stage) {
        StageMove::Won => {
            let won = r.event("won", "deal.won").set("deal_id", deal);
            match value {
                Some(v) => won
                    .set("amount", number(amount(Some(v), "Amount")?))
                    .set_opt("currency", currency),
                None => won,
            }
        }
        StageMove::Lost => r
            .event("lost", "deal.lost")
            .set("deal_id", deal)
            .set_opt("reason", reason),
        StageMove::Open(to) => r
            .event("stage", "deal.stage_changed")
            .set("deal_id", deal)
            .set("to_stage", to),
    }
    .done())
}

/// A `zoho-wf/1` workflow webhook: one record's values after a create or
/// an edit. Every value is a string; empty is absent.
fn workflow(doc: &Value, map: &Mapping, known: &dyn Known) -> Result<Adapted, Rejection> {
    let field = |k: &str| -> Result<Option<String>, Rejection> {
        match doc.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(v @ (Value::String(_) | Value::Number(_))) => Ok(id_text(Some(v))),
            Some(_) => Err(wrong(k, "a string")),
        }
    };
    let name = field("module")?.ok_or_else(|| missing("module"))?;
    let create = match field("event")?.as_deref() {
        Some("create") => true,
        Some("edit") => false,
        Some(_) => return Err(unmappable("event is not create or edit")),
        None => return Err(missing("event")),
    };
    let id = req_id(doc, "id", "id")?;
    let time_field = if create {
        "created_time"
    } else {
        "modified_time"
    };
    let time = field(time_field)?
        .or(field("modified_time")?)
        .ok_or_else(|| missing(time_field))?;
    let at = timestamp(&Value::from(time.as_str()), time_field)?;
    let Some(module) = module(&name, map) else {
        return Ok(Adapted::UnknownKind);
    };
    let body = doc.to_string();
    let r = Record {
        module,
        id: id.clone(),
        dedup: format!(
            "zoho:wf:{}",
            digest(&[
                &name,
                &id,
                if create { "create" } else { "edit" },
                &time,
                &body
            ])
        ),
        at,
        map,
        values: None,
    };
    let owner = field("owner")?.map(|o| map.rep(&o));
    let events = match module {
        Module::Leads => {
            if create {
                vec![r
                    .event("lead", "lead.created")
                    .set("lead_id", id)
                    .set_opt("rep_id", owner)
                    .done()]
            } else if field("status")?.is_some_and(|s| map.converted_statuses.contains(&s)) {
                vec![r
                    .event("converted", "lead.converted")
                    .set("lead_id", id)
                    .done()]
            } else {
                Vec::new()
            }
        }
        Module::Deals => {
            let stage = field("stage")?;
            let value = field("amount")?.map(Value::from);
            let currency = field("currency")?;
            let reason = field("loss_reason")?;
            match known.deal(&id).filter(|_| !create) {
                // A create, or an edit of a deal kpistream has not seen:
                // the values open it.
                None => {
                    let rep = owner.ok_or_else(|| missing("owner"))?;
                    deal_created(
                        &r,
                        &id,
                        rep,
                        stage.as_deref(),
                        value.as_ref(),
                        "amount",
                        currency,
                        reason,
                    )?
                }
                Some(d) => {
                    let mut out = Vec::new();
                    let moved = stage.as_deref().map(|s| map.stage_move(s));
                    let closing = matches!(moved, Some(StageMove::Won | StageMove::Lost));
                    if let Some(v) = &value {
                        let micros =
                            (amount(Some(v), "amount")? * crate::event::MICRO).round() as i64;
                        if !closing && (micros != d.amount || currency.is_some()) {
                            out.push(
                                r.event("amount", "deal.amount_changed")
                                    .set("deal_id", id.clone())
                                    .set("amount", number(amount(Some(v), "amount")?))
                                    .set_opt("currency", currency.clone())
                                    .done(),
                            );
                        }
                    }
                    match moved {
                        Some(StageMove::Open(to)) if d.stage.as_deref() == Some(to.as_str()) => {}
                        Some(_) => out.push(stage_event(
                            &r,
                            &id,
                            stage.as_deref().expect("a stage was read"),
                            value.as_ref(),
                            currency,
                            reason,
                        )?),
                        None => {}
                    }
                    out
                }
            }
        }
        Module::Meetings => {
            let start = match field("start")? {
                Some(s) => Some(timestamp(&Value::from(s.as_str()), "start")?),
                None => None,
            };
            let deal = field("deal_id")?;
            let mut out = Vec::new();
            match known.meeting_time(&id).filter(|_| !create) {
                None => {
                    let rep = owner.ok_or_else(|| missing("owner"))?;
                    out.push(
                        r.event("scheduled", "meeting.scheduled")
                            .set("meeting_id", id.clone())
                            .set("rep_id", rep)
                            .set(
                                "scheduled_for",
                                format_timestamp(start.ok_or_else(|| missing("start"))?),
                            )
                            .set_opt("deal_id", deal)
                            .done(),
                    );
                }
                Some(t) => {
                    if let Some(s) = start.filter(|s| *s != t) {
                        out.push(
                            r.event("rescheduled", "meeting.rescheduled")
                                .set("meeting_id", id.clone())
                                .set("scheduled_for", format_timestamp(s))
                                .done(),
                        );
                    }
                }
            }
            if let Some(kind) = field("outcome")?.and_then(|o| map.meeting_outcome(&o, &[])) {
                out.push(r.event("outcome", kind).set("meeting_id", id).done());
            }
            out
        }
        // Calls cannot have workflow webhooks; a churn module is read from
        // callbacks.
        Module::Calls | Module::Churn => Vec::new(),
    };
    Ok(Adapted::of(events))
}
