//! The CRM adapters over fixtures written from each vendor's documented
//! payloads (creation batches, out-of-order and redelivered bodies, unmapped
//! owners and stages, unknown kinds, malformed bodies): the canonical
//! events they map to, each element's outcome, and the KPIs.
//!
//! `tests/fixtures/crm/<crm>.ndjson` holds one native request body per line.
//! `<crm>.adapted.ndjson` is what `kpistream adapt` prints for it: one row
//! per canonical event (with its outcome) and per element that became no
//! event (with its outcome and reason). `<crm>.canonical.ndjson` holds those
//! events alone, in order. The KPIs asserted below are worked out by hand
//! from the fixtures (see the comments).

mod common;

use std::fs;
use std::io::BufReader;

use serde_json::{json, Value};

use common::{fixture, fixture_lines, num, replay_command, run_command};
use kpistream::config::{Overrides, Settings};
use kpistream::crm::Format;

fn settings() -> Settings {
    Settings::load_with_env(
        Some(&fixture("crm/crm.toml")),
        &Overrides::default(),
        std::iter::empty(),
    )
    .unwrap()
}

/// The rows `kpistream adapt` writes for a fixture.
fn adapted(format: Format, crm: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let input = BufReader::new(fs::File::open(fixture(&format!("crm/{crm}.ndjson"))).unwrap());
    kpistream::replay::adapt(settings().engine, format, input, &mut out).unwrap();
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// Every row equals the reviewed one; returns them.
fn check_rows(format: Format, crm: &str) -> Vec<Value> {
    let rows = adapted(format, crm);
    let want: Vec<Value> = fixture_lines(&format!("crm/{crm}.adapted.ndjson"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, (got, want)) in rows.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "{crm}: row {i}");
    }
    assert_eq!(rows.len(), want.len(), "{crm}: number of rows");
    let events: Vec<Value> = rows
        .iter()
        .filter_map(|r| r.get("event").cloned())
        .collect();
    let canonical: Vec<Value> = fixture_lines(&format!("crm/{crm}.canonical.ndjson"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events, canonical, "{crm}: the canonical events");
    rows
}

/// How many rows have `outcome` (and `reason`, when given).
fn count(rows: &[Value], outcome: &str, reason: Option<&str>) -> usize {
    rows.iter()
        .filter(|r| r["outcome"] == outcome && reason.is_none_or(|x| r["reason"] == x))
        .count()
}

/// The rows of fixture line `line`, as `outcome[:reason][ type]`.
fn line(rows: &[Value], n: u64) -> Vec<String> {
    rows.iter()
        .filter(|r| r["line"] == n)
        .map(|r| {
            let mut s = r["outcome"].as_str().unwrap().to_owned();
            if let Some(x) = r["reason"].as_str() {
                s = format!("{s}:{x}");
            }
            if let Some(t) = r.pointer("/event/type").and_then(Value::as_str) {
                s = format!("{s} {t}");
            }
            s
        })
        .collect()
}

/// The native replay's KPIs equal those of the expected canonical events,
/// and its outcome counts are the rows'.
fn replay_agrees(format: Format, crm: &str, rows: &[Value]) -> Value {
    let file = |n: String| BufReader::new(fs::File::open(fixture(&n)).unwrap());
    let (native, counts) = kpistream::replay::replay_format(
        settings().engine,
        format,
        file(format!("crm/{crm}.ndjson")),
    )
    .unwrap();
    let (canonical, _) = kpistream::replay::replay(
        settings().engine,
        file(format!("crm/{crm}.canonical.ndjson")),
    )
    .unwrap();
    assert_eq!(native["results"], canonical["results"], "{crm}: KPIs");
    assert_eq!(native["as_of"], canonical["as_of"]);
    let c = |o| count(rows, o, None) as u64;
    assert_eq!(
        native["outcomes"],
        json!({"applied": c("applied"), "duplicate": c("duplicate"),
               "ignored": c("ignored"), "rejected": c("rejected")})
    );
    assert_eq!(counts.total(), rows.len() as u64);
    native
}

#[test]
fn hubspot_batches_map_to_the_expected_events_and_kpis() {
    let rows = check_rows(Format::Hubspot, "hubspot");
    // A retried batch: every event a duplicate.
    assert_eq!(
        line(&rows, 2),
        [
            "duplicate deal.created",
            "duplicate deal.stage_changed",
            "duplicate deal.amount_changed"
        ]
    );
    // A creation batch, shuffled: one deal.created, its properties merged.
    assert_eq!(
        line(&rows, 18),
        [
            "ignored:merged",
            "applied deal.created",
            "ignored:merged",
            "ignored:merged",
            "ignored:merged"
        ]
    );
    let created = rows
        .iter()
        .find(|r| r["line"] == 18 && r["outcome"] == "applied")
        .unwrap();
    assert_eq!(
        created["event"],
        json!({"id": "hubspot:62515:4002:200102:1003::1793646000000", "type": "deal.created",
               "occurred_at": "2026-11-02T19:00:00.000000Z", "source": "hubspot", "deal_id": "1003",
               "rep_id": "rep-bo", "amount": 5000, "currency": "EUR", "stage": "qualification"})
    );
    assert_eq!(line(&rows, 19)[1], "duplicate deal.created");
    // Out of order in the array: applied by occurredAt.
    assert_eq!(
        line(&rows, 20),
        ["applied deal.stage_changed", "applied deal.won"]
    );
    // A bad element rejects itself only; the association change is nothing to do.
    let l21 = line(&rows, 21);
    assert_eq!(l21[0], "rejected:missing_field");
    assert_eq!(l21[1], "ignored:no_kpi_change");
    assert_eq!(l21[2], "applied call.logged");
    assert_eq!(line(&rows, 30), ["rejected:wrong_type"]);
    assert_eq!(
        line(&rows, 31),
        ["rejected:wrong_type", "applied deal.stage_changed"]
    );
    assert_eq!(line(&rows, 33), ["ignored:no_kpi_change"], "an empty batch");
    let doc = replay_agrees(Format::Hubspot, "hubspot", &rows);
    let org = |k| num(&doc, "org", "all", "30d", k);
    // 1001, 1002, 1003 (the creation batch) and 1005 (unmapped owner 777).
    assert_eq!(org("deals_created"), 4.0);
    // 1001 for 12000, and 1003 for 5000 EUR at 1.08: the amount of its
    // creation batch, not reset to 0 by a later notice.
    assert_eq!(org("won_amount"), 12000.0 + 5400.0);
    assert_eq!(org("deals_lost"), 2.0);
    assert_eq!(num(&doc, "rep", "777", "30d", "deals_lost"), 1.0);
    // Calls 2001 (owner 501, 95 s) and 2003 (owner 501, 125000 ms) are
    // rep-ana's; 2002 has no owner: unassigned, not its sourceId's user;
    // 2004's disposition is the portal's own no-answer; 2005 is inbound.
    assert_eq!(org("calls"), 4.0);
    assert_eq!(num(&doc, "rep", "rep-ana", "30d", "calls_connected"), 2.0);
    assert_eq!(num(&doc, "rep", "rep-ana", "30d", "call_seconds"), 220.0);
    assert_eq!(num(&doc, "rep", "unassigned", "30d", "calls"), 1.0);
    assert_eq!(num(&doc, "rep", "rep-bo", "30d", "calls"), 1.0);
    assert_eq!(num(&doc, "rep", "rep-bo", "30d", "calls_connected"), 0.0);
    // Meeting 3001 held (rep-ana), 3002 booked with its owner, a no-show.
    assert_eq!(num(&doc, "rep", "rep-ana", "30d", "meetings_held"), 1.0);
    assert_eq!(num(&doc, "rep", "rep-bo", "30d", "meetings_missed"), 1.0);
    assert_eq!(org("leads_created"), 2.0);
    assert_eq!(num(&doc, "rep", "rep-ana", "30d", "leads_created"), 1.0);
    assert_eq!(org("nps_responses"), 1.0);
    assert_eq!(org("nps"), 100.0);
    // 1006 only: moved once, never closed.
    assert_eq!(org("open_deals"), 1.0);
}

#[test]
fn pipedrive_webhooks_map_to_the_expected_events_and_kpis() {
    let rows = check_rows(Format::Pipedrive, "pipedrive");
    // Epoch seconds are seconds, not milliseconds: 2026, not 1970.
    let r16 = rows.iter().find(|r| r["line"] == 16).unwrap();
    assert_eq!(r16["event"]["occurred_at"], "2026-11-02T21:00:00.000000Z");
    // The first change retried after a later one is a duplicate.
    assert_eq!(line(&rows, 19), ["duplicate deal.stage_changed"]);
    // due_time as {timezone_id, value}.
    let r21 = rows.iter().find(|r| r["line"] == 21).unwrap();
    assert_eq!(r21["event"]["scheduled_for"], "2026-11-04T11:30:00.000000Z");
    assert_eq!(line(&rows, 22), ["applied lead.created"]);
    assert_eq!(
        line(&rows, 23),
        ["applied call.logged"],
        "a configured call type"
    );
    assert_eq!(
        line(&rows, 25),
        ["ignored:no_kpi_change"],
        "deleted by a merge: not canceled"
    );
    assert_eq!(line(&rows, 27), ["rejected:unsupported_version"]);
    let doc = replay_agrees(Format::Pipedrive, "pipedrive", &rows);
    let org = |k| num(&doc, "org", "all", "30d", k);
    assert_eq!(org("deals_created"), 3.0);
    assert_eq!(org("deals_won"), 1.0);
    assert_eq!(org("won_amount"), 800.0);
    assert_eq!(org("deals_lost"), 1.0);
    // Call 5 (00:12) and the cold call 8 (00:05).
    assert_eq!(org("calls"), 2.0);
    assert_eq!(org("call_seconds"), 720.0 + 300.0);
    assert_eq!(org("meetings_booked"), 2.0);
    assert_eq!(org("meetings_held"), 1.0);
    assert_eq!(org("leads_created"), 1.0);
    // 101 at 1500 EUR (1.08), 105 at 3000, 106 (owner 99, stage 42) at 40.
    assert_eq!(org("open_deals"), 3.0);
    assert!((org("open_pipeline_amount") - (1620.0 + 3000.0 + 40.0)).abs() < 1e-9);
    assert_eq!(num(&doc, "rep", "99", "30d", "open_deals"), 1.0);
    assert_eq!(num(&doc, "rep", "rep-dee", "30d", "won_amount"), 800.0);
}

#[test]
fn salesforce_change_events_map_to_the_expected_events_and_kpis() {
    let rows = check_rows(Format::SalesforceCdc, "salesforce");
    assert_eq!(
        line(&rows, 13),
        ["rejected:incomplete_payload"],
        "a gap event"
    );
    assert_eq!(line(&rows, 15), ["applied deal.lost", "applied deal.lost"]);
    assert_eq!(
        rows.iter()
            .filter(|r| r["line"] == 15)
            .map(|r| r["element"].clone())
            .collect::<Vec<_>>(),
        [json!(0), json!(1)]
    );
    assert_eq!(
        line(&rows, 18),
        ["applied deal.created"],
        "CometD's {{schema, payload, event}}"
    );
    assert_eq!(
        line(&rows, 19),
        ["applied deal.won"],
        "IsWon, whatever the stage's name"
    );
    assert_eq!(line(&rows, 24), ["applied lead.converted"]);
    assert_eq!(line(&rows, 27), ["rejected:encoded_fields"]);
    assert_eq!(
        line(&rows, 28),
        ["applied deal.amount_changed", "applied deal.stage_changed"]
    );
    assert_eq!(
        line(&rows, 29),
        ["rejected:incomplete_payload"],
        "wildcard record ids"
    );
    assert_eq!(
        line(&rows, 34),
        ["rejected:wrong_type"],
        "recordIds a string"
    );
    let doc = replay_agrees(Format::SalesforceCdc, "salesforce", &rows);
    let org = |k| num(&doc, "org", "all", "30d", k);
    assert_eq!(org("deals_created"), 5.0);
    assert_eq!(org("deals_won"), 2.0);
    // 5200 GBP at 1.27, and 8000.
    assert!((org("won_amount") - (6604.0 + 8000.0)).abs() < 1e-9);
    assert_eq!(org("deals_lost"), 2.0);
    assert_eq!(org("calls"), 2.0, "the inbound call is not counted");
    assert_eq!(org("call_seconds"), 95.0 + 240.0);
    assert_eq!(org("emails"), 1.0);
    assert_eq!(org("meetings_held"), 1.0);
    assert_eq!(org("leads_created"), 1.0);
    assert_eq!(org("leads_converted"), 1.0);
    assert_eq!(org("customers_new"), 1.0);
    assert_eq!(org("mrr_expansion"), 200.0);
    // Status__c = Canceled churns the account and its 1100 of MRR.
    assert_eq!(org("customers_churned"), 1.0);
    assert_eq!(org("mrr_churned"), 1100.0);
    assert_eq!(org("nps_responses"), 1.0);
    // 006Aa000011 at 4200 (decoded from the bitmap) and 006Aa000012 at 50.
    assert_eq!(org("open_pipeline_amount"), 4250.0);
    assert_eq!(num(&doc, "rep", "005Zz999999", "30d", "open_deals"), 1.0);
}

#[test]
fn close_events_map_to_the_expected_events_and_kpis() {
    let rows = check_rows(Format::Close, "close");
    assert_eq!(line(&rows, 3), ["duplicate deal.created"]);
    assert_eq!(
        line(&rows, 8),
        ["ignored:no_kpi_change"],
        "a call still in progress"
    );
    assert_eq!(
        line(&rows, 12),
        ["ignored:no_kpi_change"],
        "completed records no attendance"
    );
    assert_eq!(
        line(&rows, 16),
        ["applied meeting.canceled"],
        "deleted before it starts"
    );
    let doc = replay_agrees(Format::Close, "close", &rows);
    let org = |k| num(&doc, "org", "all", "30d", k);
    // value 300000 is cents: 3000.
    assert_eq!(org("won_amount"), 3000.0);
    assert_eq!(org("deals_lost"), 1.0);
    assert_eq!(num(&doc, "rep", "user_new", "30d", "deals_lost"), 1.0);
    assert_eq!(org("calls"), 2.0);
    assert_eq!(org("calls_connected"), 1.0);
    assert_eq!(org("call_seconds"), 310.0 + 45.0);
    assert_eq!(num(&doc, "rep", "rep-hal", "30d", "calls"), 1.0);
    assert_eq!(org("emails"), 1.0);
    assert_eq!(org("meetings_booked"), 3.0);
    // acti_m1 passed without a held event; m2 declined and m3 deleted early.
    assert_eq!(org("meetings_held"), 0.0);
    assert_eq!(org("meetings_missed"), 1.0);
}

#[test]
fn zoho_callbacks_and_workflow_webhooks_map_to_the_expected_events_and_kpis() {
    let rows = check_rows(Format::Zoho, "zoho");
    assert_eq!(
        line(&rows, 2),
        ["applied lead.created"],
        "a lead needs no values"
    );
    assert_eq!(line(&rows, 3), ["rejected:incomplete_payload"]);
    assert_eq!(
        line(&rows, 5),
        ["duplicate deal.created", "duplicate deal.created"],
        "another channel, the same change"
    );
    assert_eq!(
        line(&rows, 9),
        ["applied deal.stage_changed", "rejected:incomplete_payload"]
    );
    assert_eq!(
        line(&rows, 19),
        ["ignored:no_kpi_change"],
        "an edit that changes nothing"
    );
    assert_eq!(
        line(&rows, 20),
        ["applied deal.amount_changed", "applied deal.stage_changed"]
    );
    assert_eq!(line(&rows, 23), ["applied meeting.canceled"]);
    assert_eq!(line(&rows, 26), ["rejected:unsupported_version"]);
    let doc = replay_agrees(Format::Zoho, "zoho", &rows);
    let org = |k| num(&doc, "org", "all", "30d", k);
    // ...0010 (rep-ivy), ...0011 (rep-jo), ...0020 (rep-jo, by workflow),
    // ...0030 (an edit of an unseen deal, unmapped owner).
    assert_eq!(org("deals_created"), 4.0);
    assert_eq!(num(&doc, "rep", "rep-jo", "30d", "won_amount"), 9000.0);
    assert_eq!(num(&doc, "rep", "rep-jo", "30d", "deals_lost"), 1.0);
    assert_eq!(
        num(&doc, "rep", "rep-ivy", "30d", "open_pipeline_amount"),
        15000.0
    );
    // The outbound call, with its seconds and its result mapped.
    assert_eq!(org("calls"), 1.0);
    assert_eq!(org("calls_connected"), 1.0);
    assert_eq!(org("call_seconds"), 125.0);
    assert_eq!(org("meetings_booked"), 2.0);
    assert_eq!(org("leads_created"), 2.0);
    assert_eq!(org("leads_converted"), 2.0);
}

/// `kpistream replay --format` and `kpistream adapt` run the same adapter.
#[test]
fn the_commands_take_a_format() {
    let doc = replay_command([
        "--format".into(),
        "zoho".into(),
        "--config".into(),
        fixture("crm/crm.toml"),
        "--input".into(),
        fixture("crm/zoho.ndjson"),
    ]);
    assert_eq!(
        doc["outcomes"],
        json!({"applied": 22, "duplicate": 2, "ignored": 3, "rejected": 8})
    );
    let out = run_command(
        "adapt",
        [
            "--format".into(),
            "close".into(),
            "--config".into(),
            fixture("crm/crm.toml"),
            "--input".into(),
            fixture("crm/close.ndjson"),
        ],
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        fs::read_to_string(fixture("crm/close.adapted.ndjson")).unwrap()
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_kpistream"))
        .args(["replay", "--format", "sugarcrm", "--input", "-"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`sugarcrm`"));
}

/// What the thin payloads need of the engine (a deal's stage and amount, a
/// meeting's time) survives a snapshot: the second half of a fixture after
/// a restore maps exactly as in one run.
#[test]
fn state_the_adapters_read_survives_a_snapshot() {
    for (format, crm) in [
        (Format::Hubspot, "hubspot"),
        (Format::Zoho, "zoho"),
        (Format::Close, "close"),
    ] {
        let lines = fixture_lines(&format!("crm/{crm}.ndjson"));
        let cfg = || {
            let mut c = settings().engine;
            c.clock = kpistream::config::ClockMode::Event;
            c
        };
        let run = |p: &mut kpistream::processor::Processor, ls: &[String]| {
            let mut out = Vec::new();
            for l in ls {
                p.process_traced(l.as_bytes(), 0, |o, e, ev| {
                    out.push((o.clone(), e, ev.cloned()));
                });
            }
            out
        };
        let mut whole = kpistream::processor::Processor::new(cfg()).with_format(format);
        let all = run(&mut whole, &lines);
        let half = lines.len() / 2;
        let mut first = kpistream::processor::Processor::new(cfg()).with_format(format);
        let mut got = run(&mut first, &lines[..half]);
        let image = kpistream::snapshot::encode(&first, 0).unwrap();
        let mut restored = kpistream::snapshot::decode(&image, cfg())
            .unwrap()
            .processor
            .with_format(format);
        got.extend(run(&mut restored, &lines[half..]));
        assert_eq!(got, all, "{crm}");
    }
}
