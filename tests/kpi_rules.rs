//! One focused test per KPI rule of kpis.md, through the processor and the
//! JSON document, on the event clock.

mod common;

use serde_json::{json, Value};

use common::{doc, ev, feed, kpi, num};
use kpistream::config::EngineConfig;
use kpistream::processor::{IgnoreReason, Outcome};

fn cfg() -> EngineConfig {
    let mut c = EngineConfig::on_event_clock();
    c.teams.insert("r1".into(), "t1".into());
    c.teams.insert("r2".into(), "t2".into());
    c
}

fn run(msgs: &[String]) -> Value {
    let (mut p, outcomes) = feed(cfg(), msgs);
    for (o, m) in outcomes.iter().zip(msgs) {
        assert!(
            matches!(
                o,
                Outcome::Applied | Outcome::Duplicate | Outcome::Ignored(_)
            ),
            "{m}: {o:?}"
        );
    }
    doc(&mut p)
}

/// A clock tick: an applied event that moves T and counts nothing we check.
fn tick(id: &str, at: &str) -> String {
    ev(
        id,
        "time.logged",
        at,
        json!({"rep_id": "r9", "category": "admin", "duration_seconds": 1}),
    )
}

#[test]
fn leads_created_and_converted_count_each_lead_once() {
    let d = run(&[
        ev(
            "1",
            "lead.created",
            "2026-03-02T10:00:00Z",
            json!({"lead_id": "L1", "rep_id": "r1"}),
        ),
        ev(
            "2",
            "lead.created",
            "2026-03-02T10:01:00Z",
            json!({"lead_id": "L1", "rep_id": "r1"}),
        ),
        ev(
            "3",
            "lead.converted",
            "2026-03-02T10:02:00Z",
            json!({"lead_id": "L1"}),
        ),
        ev(
            "4",
            "lead.converted",
            "2026-03-02T10:03:00Z",
            json!({"lead_id": "L1", "rep_id": "r2"}),
        ),
    ]);
    assert_eq!(num(&d, "rep", "r1", "1h", "leads_created"), 1.0);
    assert_eq!(
        num(&d, "rep", "r1", "1h", "leads_converted"),
        1.0,
        "owner gets it"
    );
    assert_eq!(num(&d, "rep", "r1", "1h", "lead_conversion_rate"), 1.0);
    assert_eq!(num(&d, "team", "t1", "1h", "leads_converted"), 1.0);
    assert_eq!(num(&d, "org", "all", "1h", "leads_converted"), 1.0);
}

#[test]
fn first_touch_counts_prospects_and_lead_response() {
    let d = run(&[
        ev(
            "1",
            "lead.created",
            "2026-03-02T10:00:00Z",
            json!({"lead_id": "L1", "rep_id": "r1"}),
        ),
        ev(
            "2",
            "email.sent",
            "2026-03-02T10:05:00Z",
            json!({"email_id": "m", "lead_id": "L1", "rep_id": "r1"}),
        ),
        ev(
            "3",
            "call.logged",
            "2026-03-02T10:06:00Z",
            json!({"call_id": "c", "lead_id": "L1", "rep_id": "r1"}),
        ),
        // Touched before its creation was seen: contacted, but no response time.
        ev(
            "4",
            "call.logged",
            "2026-03-02T10:07:00Z",
            json!({"call_id": "c2", "lead_id": "L2", "rep_id": "r1"}),
        ),
        ev(
            "5",
            "lead.created",
            "2026-03-02T10:00:30Z",
            json!({"lead_id": "L2", "rep_id": "r1"}),
        ),
    ]);
    assert_eq!(num(&d, "rep", "r1", "1h", "prospects_contacted"), 2.0);
    assert_eq!(
        num(&d, "rep", "r1", "1h", "lead_response_seconds_count"),
        1.0
    );
    assert_eq!(
        num(&d, "rep", "r1", "1h", "lead_response_seconds_sum"),
        300.0
    );
    assert_eq!(
        num(&d, "rep", "r1", "1h", "avg_lead_response_seconds"),
        300.0
    );
    assert_eq!(num(&d, "rep", "r1", "1h", "leads_created"), 2.0);
}

#[test]
fn calls_emails_and_activities() {
    let d = run(&[
        ev(
            "1",
            "call.logged",
            "2026-03-02T10:00:00Z",
            json!({"call_id": "a", "rep_id": "r1", "outcome": "connected", "duration_seconds": 120.5}),
        ),
        ev(
            "2",
            "call.logged",
            "2026-03-02T10:01:00Z",
            json!({"call_id": "b", "rep_id": "r1", "outcome": "voicemail", "duration_seconds": 30}),
        ),
        ev(
            "3",
            "call.logged",
            "2026-03-02T10:02:00Z",
            json!({"call_id": "c", "rep_id": "r1"}),
        ),
        ev(
            "4",
            "email.sent",
            "2026-03-02T10:03:00Z",
            json!({"email_id": "m", "rep_id": "r1"}),
        ),
    ]);
    assert_eq!(num(&d, "rep", "r1", "1h", "calls"), 3.0);
    assert_eq!(num(&d, "rep", "r1", "1h", "calls_connected"), 1.0);
    assert_eq!(num(&d, "rep", "r1", "1h", "call_seconds"), 150.5);
    assert!((num(&d, "rep", "r1", "1h", "connect_rate") - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(num(&d, "rep", "r1", "1h", "emails"), 1.0);
    assert_eq!(num(&d, "rep", "r1", "1h", "activities"), 4.0);
}

#[test]
fn meetings_become_due_at_their_time_and_missed_after_the_grace() {
    let sched = |id: &str, m: &str, at: &str, sf: &str| {
        ev(
            id,
            "meeting.scheduled",
            at,
            json!({"meeting_id": m, "rep_id": "r1", "scheduled_for": sf}),
        )
    };
    let mut msgs = vec![
        sched("1", "held", "2026-03-02T08:00:00Z", "2026-03-02T10:00:00Z"),
        sched(
            "2",
            "noshow",
            "2026-03-02T08:00:00Z",
            "2026-03-02T10:00:00Z",
        ),
        sched(
            "3",
            "silent",
            "2026-03-02T08:00:00Z",
            "2026-03-02T10:00:00Z",
        ),
        sched(
            "4",
            "canceled",
            "2026-03-02T08:00:00Z",
            "2026-03-02T10:00:00Z",
        ),
        sched("5", "later", "2026-03-02T08:00:00Z", "2026-03-02T12:00:00Z"),
        ev(
            "6",
            "meeting.held",
            "2026-03-02T10:20:00Z",
            json!({"meeting_id": "held"}),
        ),
        ev(
            "7",
            "meeting.no_show",
            "2026-03-02T10:15:00Z",
            json!({"meeting_id": "noshow"}),
        ),
        ev(
            "8",
            "meeting.canceled",
            "2026-03-02T09:00:00Z",
            json!({"meeting_id": "canceled"}),
        ),
        tick("9", "2026-03-02T10:29:59Z"),
    ];
    let d = run(&msgs);
    assert_eq!(num(&d, "rep", "r1", "24h", "meetings_booked"), 5.0);
    assert_eq!(num(&d, "rep", "r1", "24h", "meetings_due"), 3.0);
    assert_eq!(num(&d, "rep", "r1", "24h", "meetings_held"), 1.0);
    assert_eq!(
        num(&d, "rep", "r1", "24h", "meetings_missed"),
        1.0,
        "grace not over"
    );
    assert_eq!(num(&d, "rep", "r1", "24h", "meetings_upcoming"), 1.0);
    msgs.push(tick("10", "2026-03-02T10:30:00Z"));
    let d = run(&msgs);
    assert_eq!(
        num(&d, "rep", "r1", "24h", "meetings_missed"),
        2.0,
        "silent one missed"
    );
    assert_eq!(num(&d, "rep", "r1", "24h", "missed_meeting_gap"), 2.0);
    assert!((num(&d, "rep", "r1", "24h", "missed_meeting_ratio") - 2.0 / 3.0).abs() < 1e-12);
    assert!((num(&d, "rep", "r1", "24h", "meeting_show_rate") - 1.0 / 3.0).abs() < 1e-12);
    // A late `held` turns the missed meeting into a held one.
    msgs.push(ev(
        "11",
        "meeting.held",
        "2026-03-02T10:05:00Z",
        json!({"meeting_id": "silent"}),
    ));
    let d = run(&msgs);
    assert_eq!(num(&d, "rep", "r1", "24h", "meetings_missed"), 1.0);
    assert_eq!(num(&d, "rep", "r1", "24h", "meetings_held"), 2.0);
    assert_eq!(num(&d, "rep", "r1", "24h", "activities"), 2.0);
}

#[test]
fn meeting_counts_sit_at_scheduled_for_and_move_when_rescheduled() {
    let d = run(&[
        ev(
            "1",
            "meeting.scheduled",
            "2026-03-02T08:00:00Z",
            json!({"meeting_id": "m", "rep_id": "r1", "scheduled_for": "2026-03-02T09:00:00Z"}),
        ),
        ev(
            "2",
            "meeting.rescheduled",
            "2026-03-02T08:30:00Z",
            json!({"meeting_id": "m", "scheduled_for": "2026-03-03T09:00:00Z"}),
        ),
        tick("3", "2026-03-03T09:10:00Z"),
    ]);
    assert_eq!(
        num(&d, "rep", "r1", "1h", "meetings_due"),
        1.0,
        "due at the new time"
    );
    assert_eq!(
        num(&d, "rep", "r1", "1h", "meetings_booked"),
        0.0,
        "booked at occurred_at"
    );
    assert_eq!(num(&d, "rep", "r1", "7d", "meetings_booked"), 1.0);
    assert_eq!(num(&d, "rep", "r1", "7d", "meetings_due"), 1.0);
}

#[test]
fn held_for_an_unknown_meeting_creates_it_and_owner_keeps_meeting_kpis() {
    let d = run(&[
        ev(
            "1",
            "meeting.held",
            "2026-03-02T10:00:00Z",
            json!({"meeting_id": "adhoc", "rep_id": "r2"}),
        ),
        // First seen canceled without a rep: owned by `unassigned` from then on.
        ev(
            "2",
            "meeting.canceled",
            "2026-03-02T10:01:00Z",
            json!({"meeting_id": "m"}),
        ),
        ev(
            "3",
            "meeting.scheduled",
            "2026-03-02T10:02:00Z",
            json!({"meeting_id": "m", "rep_id": "r1", "scheduled_for": "2026-03-02T10:03:00Z"}),
        ),
        tick("4", "2026-03-02T10:40:00Z"),
    ]);
    assert_eq!(num(&d, "rep", "r2", "1h", "meetings_held"), 1.0);
    assert_eq!(num(&d, "rep", "r2", "1h", "meetings_due"), 1.0);
    assert_eq!(num(&d, "rep", "r1", "1h", "meetings_booked"), 1.0);
    assert_eq!(num(&d, "rep", "unassigned", "1h", "meetings_missed"), 1.0);
}

fn deal(id: &str, kind: &str, at: &str, fields: Value) -> String {
    ev(id, kind, at, fields)
}

#[test]
fn deal_lifecycle_stage_exits_win_and_cycle() {
    let d = run(&[
        deal(
            "1",
            "deal.created",
            "2026-03-01T10:00:00Z",
            json!({"deal_id": "D", "rep_id": "r1", "amount": 1000, "stage": "prospecting"}),
        ),
        deal(
            "2",
            "deal.stage_changed",
            "2026-03-01T11:00:00Z",
            json!({"deal_id": "D", "to_stage": "demo"}),
        ),
        deal(
            "3",
            "deal.stage_changed",
            "2026-03-01T12:00:00Z",
            json!({"deal_id": "D", "to_stage": "qualification"}),
        ),
        deal(
            "4",
            "deal.stage_changed",
            "2026-03-01T12:30:00Z",
            json!({"deal_id": "D", "to_stage": "qualification"}),
        ),
        deal(
            "5",
            "deal.won",
            "2026-03-03T10:00:00Z",
            json!({"deal_id": "D", "amount": 1200}),
        ),
        deal(
            "6",
            "deal.created",
            "2026-03-02T10:00:00Z",
            json!({"deal_id": "E", "rep_id": "r1", "amount": 50, "stage": "demo"}),
        ),
        deal(
            "7",
            "deal.lost",
            "2026-03-03T10:00:00Z",
            json!({"deal_id": "E", "reason": "price"}),
        ),
    ]);
    let w = "7d";
    assert_eq!(num(&d, "rep", "r1", w, "deals_created"), 2.0);
    assert_eq!(num(&d, "rep", "r1", w, "deals_won"), 1.0);
    assert_eq!(num(&d, "rep", "r1", w, "deals_lost"), 1.0);
    assert_eq!(
        num(&d, "rep", "r1", w, "won_amount"),
        1200.0,
        "the won event's amount"
    );
    assert_eq!(num(&d, "rep", "r1", w, "win_rate"), 0.5);
    assert_eq!(num(&d, "rep", "r1", w, "avg_deal_size"), 1200.0);
    assert_eq!(
        num(&d, "rep", "r1", w, "sales_cycle_seconds_sum"),
        2.0 * 86_400.0
    );
    assert_eq!(num(&d, "rep", "r1", w, "avg_sales_cycle_days"), 2.0);
    assert_eq!(
        kpi(&d, "rep", "r1", w, "stage_exits"),
        &json!({
            "prospecting": {"advanced": 1},
            "demo": {"regressed": 1, "lost": 1},
            "qualification": {"advanced": 1},
        })
    );
    assert_eq!(
        kpi(&d, "rep", "r1", w, "stage_conversion"),
        &json!({"prospecting": 1.0, "demo": 0.0, "qualification": 1.0})
    );
    assert_eq!(num(&d, "rep", "r1", w, "open_deals"), 0.0);
}

#[test]
fn implicit_deal_is_filled_in_by_a_late_created() {
    let d = run(&[
        deal(
            "1",
            "deal.amount_changed",
            "2026-03-01T08:00:00Z",
            json!({"deal_id": "D", "amount": 100, "currency": "EUR"}),
        ),
        deal(
            "2",
            "deal.created",
            "2026-03-01T10:00:00Z",
            json!({"deal_id": "D", "rep_id": "r1", "amount": 100, "currency": "EUR", "stage": "demo"}),
        ),
        deal(
            "3",
            "deal.won",
            "2026-03-02T08:00:00Z",
            json!({"deal_id": "D"}),
        ),
    ]);
    assert_eq!(num(&d, "rep", "r1", "7d", "deals_created"), 1.0);
    assert_eq!(
        num(&d, "rep", "r1", "7d", "won_amount"),
        108.0,
        "EUR at 1.08"
    );
    assert_eq!(
        num(&d, "rep", "r1", "7d", "avg_sales_cycle_days"),
        1.0,
        "created-at moved back"
    );
    assert_eq!(num(&d, "rep", "unassigned", "7d", "open_deals"), 0.0);
}

#[test]
fn closed_deal_events_are_ignored_and_do_not_move_the_clock() {
    let msgs = [
        deal(
            "1",
            "deal.created",
            "2026-03-01T10:00:00Z",
            json!({"deal_id": "D", "rep_id": "r1", "stage": "demo"}),
        ),
        deal(
            "2",
            "deal.lost",
            "2026-03-01T11:00:00Z",
            json!({"deal_id": "D"}),
        ),
        deal(
            "3",
            "deal.stage_changed",
            "2026-03-09T10:00:00Z",
            json!({"deal_id": "D", "to_stage": "proposal"}),
        ),
    ];
    let (mut p, outcomes) = feed(cfg(), &msgs);
    assert_eq!(outcomes[2], Outcome::Ignored(IgnoreReason::ClosedDeal));
    let d = doc(&mut p);
    assert_eq!(d["as_of"], "2026-03-01T11:00:00.000000Z");
    assert_eq!(num(&d, "rep", "r1", "1h", "deals_lost"), 1.0);
}

#[test]
fn open_pipeline_by_stage_and_velocity() {
    let d = run(&[
        deal(
            "1",
            "deal.created",
            "2026-03-01T10:00:00Z",
            json!({"deal_id": "A", "rep_id": "r1", "amount": 100, "stage": "demo"}),
        ),
        deal(
            "2",
            "deal.created",
            "2026-03-01T10:00:00Z",
            json!({"deal_id": "B", "rep_id": "r1", "amount": 300, "stage": "demo"}),
        ),
        deal(
            "3",
            "deal.created",
            "2026-03-01T10:00:00Z",
            json!({"deal_id": "C", "rep_id": "r1", "amount": 50, "stage": "closed-ish"}),
        ),
        deal(
            "4",
            "deal.created",
            "2026-03-01T10:00:00Z",
            json!({"deal_id": "W", "rep_id": "r1", "amount": 1000}),
        ),
        deal(
            "5",
            "deal.won",
            "2026-03-03T10:00:00Z",
            json!({"deal_id": "W"}),
        ),
    ]);
    assert_eq!(num(&d, "rep", "r1", "30d", "open_deals"), 3.0);
    assert_eq!(num(&d, "rep", "r1", "30d", "open_pipeline_amount"), 450.0);
    assert_eq!(
        kpi(&d, "rep", "r1", "30d", "open_deals_by_stage"),
        &json!({"demo": 2})
    );
    assert_eq!(
        kpi(&d, "rep", "r1", "30d", "open_pipeline_amount_by_stage"),
        &json!({"demo": 400.0})
    );
    // 3 open × 1000 average × 100% won / 2 days.
    assert_eq!(
        num(&d, "rep", "r1", "30d", "pipeline_velocity_per_day"),
        1500.0
    );
    assert_eq!(
        num(&d, "rep", "r1", "1h", "open_deals"),
        3.0,
        "in every window"
    );
}

#[test]
fn subscriptions_new_expansion_contraction_churn() {
    let d = run(&[
        ev(
            "1",
            "subscription.started",
            "2026-03-01T10:00:00Z",
            json!({"account_id": "A", "mrr": 100, "rep_id": "r1"}),
        ),
        ev(
            "2",
            "subscription.changed",
            "2026-03-02T10:00:00Z",
            json!({"account_id": "A", "mrr": 150}),
        ),
        ev(
            "3",
            "subscription.changed",
            "2026-03-03T10:00:00Z",
            json!({"account_id": "A", "mrr": 120}),
        ),
        ev(
            "4",
            "subscription.started",
            "2026-03-01T10:00:00Z",
            json!({"account_id": "B", "mrr": 80, "rep_id": "r1"}),
        ),
        ev(
            "5",
            "customer.churned",
            "2026-03-04T10:00:00Z",
            json!({"account_id": "B"}),
        ),
        ev(
            "6",
            "subscription.canceled",
            "2026-03-04T11:00:00Z",
            json!({"account_id": "B"}),
        ),
        ev(
            "7",
            "subscription.changed",
            "2026-03-01T10:00:00Z",
            json!({"account_id": "C", "mrr": 10, "rep_id": "r1"}),
        ),
    ]);
    let k = |key| num(&d, "rep", "r1", "30d", key);
    assert_eq!(
        k("customers_new"),
        3.0,
        "a change of an inactive account starts it"
    );
    assert_eq!(k("mrr_new"), 190.0);
    assert_eq!(k("customers_expanded"), 1.0);
    assert_eq!(k("mrr_expansion"), 50.0);
    assert_eq!(k("mrr_contraction"), 30.0);
    assert_eq!(
        k("customers_churned"),
        1.0,
        "a second cancel changes nothing"
    );
    assert_eq!(k("mrr_churned"), 80.0);
    assert_eq!(k("customers_active"), 2.0);
    assert_eq!(k("mrr"), 130.0);
    assert_eq!(k("arr"), 1560.0);
    // churned / (active - new + churned) = 1 / (2 - 3 + 1): null, denominator 0.
    assert_eq!(kpi(&d, "rep", "r1", "30d", "churn_rate"), &Value::Null);
    assert_eq!(kpi(&d, "rep", "r1", "30d", "retention_rate"), &Value::Null);
    assert_eq!(kpi(&d, "rep", "r1", "30d", "clv"), &Value::Null);
}

#[test]
fn churn_retention_upsell_and_clv() {
    let d = run(&[
        ev(
            "1",
            "subscription.started",
            "2026-01-01T10:00:00Z",
            json!({"account_id": "A", "mrr": 100, "rep_id": "r1"}),
        ),
        ev(
            "2",
            "subscription.started",
            "2026-01-01T10:00:00Z",
            json!({"account_id": "B", "mrr": 100, "rep_id": "r1"}),
        ),
        ev(
            "3",
            "subscription.started",
            "2026-01-01T10:00:00Z",
            json!({"account_id": "C", "mrr": 100, "rep_id": "r1"}),
        ),
        ev(
            "4",
            "subscription.changed",
            "2026-03-02T10:00:00Z",
            json!({"account_id": "A", "mrr": 200}),
        ),
        ev(
            "5",
            "subscription.canceled",
            "2026-03-03T10:00:00Z",
            json!({"account_id": "C"}),
        ),
        ev(
            "6",
            "spend.recorded",
            "2026-03-03T10:00:00Z",
            json!({"amount": 500, "category": "sales", "team_id": "t1"}),
        ),
    ]);
    let k = |key| num(&d, "rep", "r1", "30d", key);
    // Base: active 2 - new 0 + churned 1 = 3.
    assert!((k("churn_rate") - 1.0 / 3.0).abs() < 1e-12);
    assert!((k("retention_rate") - 2.0 / 3.0).abs() < 1e-12);
    assert!((k("upsell_rate") - 1.0 / 3.0).abs() < 1e-12);
    // (300 / 2) / (1/3) = 450.
    assert!((k("clv") - 450.0).abs() < 1e-9);
    assert_eq!(num(&d, "team", "t1", "30d", "acquisition_spend"), 500.0);
    assert_eq!(
        num(&d, "rep", "r1", "30d", "acquisition_spend"),
        0.0,
        "spend has no rep"
    );
    assert_eq!(
        kpi(&d, "team", "t1", "30d", "cac"),
        &Value::Null,
        "no new customers"
    );
}

#[test]
fn cac_and_clv_cac_ratio() {
    let d = run(&[
        ev(
            "1",
            "subscription.started",
            "2026-03-01T10:00:00Z",
            json!({"account_id": "A", "mrr": 100, "rep_id": "r1"}),
        ),
        ev(
            "2",
            "subscription.started",
            "2026-03-01T10:00:00Z",
            json!({"account_id": "B", "mrr": 100, "rep_id": "r1"}),
        ),
        ev(
            "3",
            "subscription.canceled",
            "2026-03-02T10:00:00Z",
            json!({"account_id": "B"}),
        ),
        ev(
            "4",
            "spend.recorded",
            "2026-03-02T10:00:00Z",
            json!({"amount": 300, "category": "marketing"}),
        ),
    ]);
    // Org: new 2, spend 300 -> cac 150. churn = 1 / (1 - 2 + 1) -> null.
    assert_eq!(num(&d, "org", "all", "30d", "cac"), 150.0);
    assert_eq!(kpi(&d, "org", "all", "30d", "clv_cac_ratio"), &Value::Null);
    assert_eq!(
        num(&d, "team", "t1", "30d", "acquisition_spend"),
        0.0,
        "org only"
    );
}

#[test]
fn nps_and_csat() {
    let s = |id: &str, kind: &str, score: i64| {
        ev(
            id,
            "survey.responded",
            "2026-03-02T10:00:00Z",
            json!({"kind": kind, "score": score, "rep_id": "r1"}),
        )
    };
    let d = run(&[
        s("1", "nps", 10),
        s("2", "nps", 9),
        s("3", "nps", 7),
        s("4", "nps", 0),
        s("5", "csat", 5),
        s("6", "csat", 3),
    ]);
    let k = |key| num(&d, "rep", "r1", "1h", key);
    assert_eq!(k("nps_responses"), 4.0);
    assert_eq!(k("nps_promoters"), 2.0);
    assert_eq!(k("nps_detractors"), 1.0);
    assert_eq!(k("nps"), 25.0);
    assert_eq!(k("csat_responses"), 2.0);
    assert_eq!(k("csat_satisfied"), 1.0);
    assert_eq!(k("csat_score_sum"), 8.0);
    assert_eq!(k("csat"), 4.0);
    assert_eq!(k("csat_satisfied_ratio"), 0.5);
}

#[test]
fn survey_without_rep_goes_to_the_account_owner() {
    let d = run(&[
        ev(
            "1",
            "subscription.started",
            "2026-03-02T09:00:00Z",
            json!({"account_id": "A", "mrr": 1, "rep_id": "r2"}),
        ),
        ev(
            "2",
            "survey.responded",
            "2026-03-02T10:00:00Z",
            json!({"kind": "nps", "score": 10, "account_id": "A"}),
        ),
        ev(
            "3",
            "survey.responded",
            "2026-03-02T10:00:00Z",
            json!({"kind": "nps", "score": 10}),
        ),
    ]);
    assert_eq!(num(&d, "rep", "r2", "1h", "nps_promoters"), 1.0);
    assert_eq!(num(&d, "team", "t2", "1h", "nps_promoters"), 1.0);
    assert_eq!(num(&d, "rep", "unassigned", "1h", "nps_promoters"), 1.0);
    assert_eq!(num(&d, "team", "unassigned", "1h", "nps_promoters"), 1.0);
}

#[test]
fn selling_time_ratio() {
    let t = |id: &str, cat: &str, secs: f64| {
        ev(
            id,
            "time.logged",
            "2026-03-02T10:00:00Z",
            json!({"rep_id": "r1", "category": cat, "duration_seconds": secs}),
        )
    };
    let d = run(&[
        t("1", "selling", 3000.0),
        t("2", "admin", 1000.0),
        t("3", "other", 1000.0),
    ]);
    assert_eq!(num(&d, "rep", "r1", "1h", "selling_seconds"), 3000.0);
    assert_eq!(num(&d, "rep", "r1", "1h", "logged_seconds"), 5000.0);
    assert_eq!(num(&d, "rep", "r1", "1h", "selling_time_ratio"), 0.6);
}

#[test]
fn quotas_latest_wins_and_attainment_uses_calendar_windows() {
    let d = run(&[
        ev(
            "1",
            "quota.set",
            "2026-03-01T00:00:00Z",
            json!({"rep_id": "r1", "period": "month", "amount": 1000}),
        ),
        ev(
            "2",
            "quota.set",
            "2026-03-01T00:01:00Z",
            json!({"rep_id": "r1", "period": "month", "amount": 2000}),
        ),
        ev(
            "3",
            "quota.set",
            "2026-03-01T00:02:00Z",
            json!({"rep_id": "r1", "period": "quarter", "amount": 8000}),
        ),
        ev(
            "4",
            "quota.set",
            "2026-03-01T00:03:00Z",
            json!({"rep_id": "r2", "period": "month", "amount": 500, "team_id": "t1"}),
        ),
        deal(
            "5",
            "deal.won",
            "2026-02-27T10:00:00Z",
            json!({"deal_id": "F", "rep_id": "r1", "amount": 400}),
        ),
        deal(
            "6",
            "deal.won",
            "2026-03-02T10:00:00Z",
            json!({"deal_id": "M", "rep_id": "r1", "amount": 1000}),
        ),
    ]);
    assert_eq!(num(&d, "rep", "r1", "1h", "quota_month"), 2000.0);
    assert_eq!(num(&d, "rep", "r1", "mtd", "won_amount"), 1000.0);
    assert_eq!(num(&d, "rep", "r1", "qtd", "won_amount"), 1400.0);
    assert_eq!(num(&d, "rep", "r1", "1h", "quota_attainment_month"), 0.5);
    assert_eq!(
        num(&d, "rep", "r1", "7d", "quota_attainment_quarter"),
        1400.0 / 8000.0
    );
    assert_eq!(
        num(&d, "team", "t1", "mtd", "quota_month"),
        2500.0,
        "team sums its reps"
    );
    assert_eq!(
        kpi(&d, "rep", "r2", "mtd", "quota_attainment_quarter"),
        &Value::Null
    );
}

#[test]
fn sliding_windows_follow_the_bucket_rule() {
    // 1h window, 1m buckets: at T = 11:00:30 it holds buckets 10:01 .. 11:00.
    let c = |id: &str, at: &str| {
        ev(
            id,
            "call.logged",
            at,
            json!({"call_id": id, "rep_id": "r1"}),
        )
    };
    let d = run(&[
        c("1", "2026-03-02T10:00:59Z"),
        c("2", "2026-03-02T10:01:00Z"),
        c("3", "2026-03-02T11:00:30Z"),
    ]);
    assert_eq!(num(&d, "rep", "r1", "1h", "calls"), 2.0);
    assert_eq!(num(&d, "rep", "r1", "24h", "calls"), 3.0);
}

#[test]
fn calendar_windows_start_at_the_month_in_the_configured_zone() {
    let c = |id: &str, at: &str| {
        ev(
            id,
            "call.logged",
            at,
            json!({"call_id": id, "rep_id": "r1"}),
        )
    };
    let msgs = [
        c("1", "2026-03-31T22:30:00Z"),
        c("2", "2026-04-01T00:30:00Z"),
    ];
    let d = run(&msgs);
    assert_eq!(num(&d, "rep", "r1", "mtd", "calls"), 1.0);
    assert_eq!(num(&d, "rep", "r1", "qtd", "calls"), 1.0);
    let mut berlin = cfg();
    berlin.timezone = "Europe/Berlin".parse().unwrap();
    let (mut p, _) = feed(berlin, &msgs);
    let d = doc(&mut p);
    assert_eq!(
        num(&d, "rep", "r1", "mtd", "calls"),
        2.0,
        "22:30Z is April 1st in Berlin"
    );
}

#[test]
fn scope_fallbacks_rep_owner_team_map_unassigned() {
    let d = run(&[
        deal(
            "1",
            "deal.created",
            "2026-03-02T10:00:00Z",
            json!({"deal_id": "D", "rep_id": "r1", "stage": "demo"}),
        ),
        // No rep: the owner r1; no team: r1's team from the map.
        deal(
            "2",
            "deal.lost",
            "2026-03-02T10:01:00Z",
            json!({"deal_id": "D"}),
        ),
        // An event team_id wins over the map.
        ev(
            "3",
            "call.logged",
            "2026-03-02T10:02:00Z",
            json!({"call_id": "c", "rep_id": "r1", "team_id": "t2"}),
        ),
        // A rep in no map: team unassigned.
        ev(
            "4",
            "call.logged",
            "2026-03-02T10:03:00Z",
            json!({"call_id": "c", "rep_id": "r7"}),
        ),
    ]);
    assert_eq!(num(&d, "rep", "r1", "1h", "deals_lost"), 1.0);
    assert_eq!(num(&d, "team", "t1", "1h", "deals_lost"), 1.0);
    assert_eq!(num(&d, "team", "t2", "1h", "calls"), 1.0);
    assert_eq!(num(&d, "rep", "r1", "1h", "calls"), 1.0);
    assert_eq!(num(&d, "team", "unassigned", "1h", "calls"), 1.0);
    assert_eq!(num(&d, "org", "all", "1h", "calls"), 2.0);
}

#[test]
fn duplicates_within_the_horizon_are_dropped_and_counted() {
    let c = |id: &str, at: &str| {
        ev(
            id,
            "call.logged",
            at,
            json!({"call_id": "c", "rep_id": "r1"}),
        )
    };
    let msgs = [
        c("a", "2026-03-01T10:00:00Z"),
        c("a", "2026-03-01T10:00:00Z"),
        c("b", "2026-03-08T10:00:00Z"),
        c("a", "2026-03-01T10:00:00Z"),
        c("c", "2026-03-08T10:00:01Z"),
        c("a", "2026-03-01T10:00:00Z"),
    ];
    let (_, outcomes) = feed(cfg(), &msgs);
    assert_eq!(outcomes[1], Outcome::Duplicate);
    assert_eq!(
        outcomes[3],
        Outcome::Duplicate,
        "exactly 7 days: still remembered"
    );
    assert_eq!(outcomes[5], Outcome::Applied, "past the 7-day horizon");
}

#[test]
fn a_corrupted_redelivery_of_an_applied_event_is_a_duplicate() {
    let msgs = [
        ev(
            "a",
            "call.logged",
            "2026-03-01T10:00:00Z",
            json!({"call_id": "c", "rep_id": "r1"}),
        ),
        ev(
            "a",
            "call.logged",
            "2026-03-01T10:00:00Z",
            json!({"call_id": "c", "rep_id": null}),
        ),
        ev(
            "b",
            "call.logged",
            "2026-03-01T10:00:00Z",
            json!({"call_id": "c", "rep_id": null}),
        ),
    ];
    let (_, outcomes) = feed(cfg(), &msgs);
    assert_eq!(outcomes[1], Outcome::Duplicate);
    assert!(matches!(outcomes[2], Outcome::Rejected(_)));
}

#[test]
fn unknown_types_are_ignored_and_do_not_move_the_clock() {
    let msgs = [
        ev(
            "a",
            "call.logged",
            "2026-03-01T10:00:00Z",
            json!({"call_id": "c", "rep_id": "r1"}),
        ),
        ev("b", "note.added", "2026-03-05T10:00:00Z", json!({})),
    ];
    let (mut p, outcomes) = feed(cfg(), &msgs);
    assert_eq!(outcomes[1], Outcome::Ignored(IgnoreReason::UnknownType));
    assert_eq!(doc(&mut p)["as_of"], "2026-03-01T10:00:00.000000Z");
}

#[test]
fn every_reject_reason_is_counted_by_reason() {
    use kpistream::event::RejectReason;
    let mut c = cfg();
    c.parse.max_message_bytes = 256;
    let msgs: Vec<Vec<u8>> = vec![
        format!(r#"{{"id":"{}"}}"#, "x".repeat(300)).into_bytes(),
        b"\xff\xfe".to_vec(),
        b"{nope".to_vec(),
        b"[1]".to_vec(),
        br#"{"id":"a","type":"lead.created","occurred_at":"2026-03-01T10:00:00Z"}"#.to_vec(),
        br#"{"id":"b","type":"lead.created","occurred_at":"2026-03-01T10:00:00Z","lead_id":5}"#.to_vec(),
        br#"{"id":"c","type":"lead.created","occurred_at":"yesterday","lead_id":"l"}"#.to_vec(),
        br#"{"id":"d","type":"quota.set","occurred_at":"2026-03-01T10:00:00Z","rep_id":"r","period":"week","amount":1}"#.to_vec(),
        br#"{"id":"e","type":"quota.set","occurred_at":"2026-03-01T10:00:00Z","rep_id":"r","period":"month","amount":1,"currency":"JPY"}"#.to_vec(),
    ];
    let mut p = kpistream::processor::Processor::new(c);
    for m in &msgs {
        assert!(matches!(p.process(m, 0), Outcome::Rejected(_)));
    }
    for r in &RejectReason::ALL[..9] {
        assert_eq!(p.counts.rejected[*r as usize], 1, "{r}");
    }
    assert_eq!(p.counts.total(), msgs.len() as u64);
}

#[test]
fn wall_clock_rejects_events_too_far_in_the_future() {
    let mut c = cfg();
    c.clock = kpistream::config::ClockMode::Wall;
    let now = kpistream::event::parse_timestamp("2026-03-01T10:00:00Z").unwrap();
    let mut p = kpistream::processor::Processor::new(c);
    let at = |id: &str, t: &str| {
        ev(
            id,
            "call.logged",
            t,
            json!({"call_id": "c", "rep_id": "r1"}),
        )
    };
    assert_eq!(
        p.process(at("a", "2026-03-01T10:04:59Z").as_bytes(), now),
        Outcome::Applied
    );
    let o = p.process(at("b", "2026-03-01T10:05:01Z").as_bytes(), now);
    assert!(
        matches!(&o, Outcome::Rejected(r) if r.reason == kpistream::event::RejectReason::FutureTimestamp),
        "{o:?}"
    );
}

#[test]
fn memory_is_bounded_by_live_entities_not_by_events() {
    // A year of daily traffic: 20 new leads, calls and closed deals a day.
    let (mut p, _) = feed(cfg(), &[]);
    let day0 = kpistream::event::parse_timestamp("2026-01-01T00:00:00Z").unwrap();
    let mut n = 0;
    for day in 0..365i64 {
        for i in 0..20 {
            let at =
                kpistream::event::format_timestamp(day0 + day * 86_400_000_000 + i * 60_000_000);
            let lead = format!("L{day}-{i}");
            let deal = format!("D{day}-{i}");
            for m in [
                ev(
                    &format!("e{n}a"),
                    "lead.created",
                    &at,
                    json!({"lead_id": lead, "rep_id": "r1"}),
                ),
                ev(
                    &format!("e{n}b"),
                    "call.logged",
                    &at,
                    json!({"call_id": "c", "lead_id": lead, "rep_id": "r1"}),
                ),
                ev(
                    &format!("e{n}c"),
                    "deal.created",
                    &at,
                    json!({"deal_id": deal, "rep_id": "r1"}),
                ),
                ev(&format!("e{n}d"), "deal.won", &at, json!({"deal_id": deal})),
            ] {
                assert_eq!(p.process(m.as_bytes(), 0), Outcome::Applied);
            }
            n += 1;
        }
    }
    let s = p.engine.sizes();
    // Kept: what the last 92 days (the longest window, or a quarter) touched,
    // plus up to an eighth of that before the next sweep, and the ids of the
    // last 7 days (the dedup horizon, 80 a day) with those past it that the
    // table has room for, at most 9/4 of the horizon's.
    assert!(s.leads <= 104 * 20, "{s:?}");
    assert!(s.deals <= 104 * 20, "{s:?}");
    assert!(s.dedup_ids <= 7 * 80 * 9 / 4, "{s:?}");
    assert_eq!(s.aggregates, 1);
    let d = doc(&mut p);
    assert_eq!(num(&d, "rep", "r1", "90d", "deals_won"), 90.0 * 20.0);
}
