//! The CRM adapters over fixtures written from each vendor's documented
//! payloads (retries, out-of-order deliveries, unknown kinds, malformed
//! bodies): the canonical events they map to, their outcomes, and the KPIs.
//!
//! `tests/fixtures/crm/<crm>.ndjson` holds one native request body per line;
//! `<crm>.canonical.ndjson` the canonical events expected from it, in order.

mod common;

use std::fs;
use std::io::BufReader;

use serde_json::{json, Value};

use common::{fixture, fixture_lines, num, replay_command};
use kpistream::config::{Overrides, Settings};
use kpistream::crm::{Adapted, Adapter, Format};
use kpistream::processor::{Outcome, Processor};

fn settings() -> Settings {
    Settings::load_with_env(
        Some(&fixture("crm/crm.toml")),
        &Overrides::default(),
        std::iter::empty(),
    )
    .unwrap()
}

/// Maps every native line as the service does (the partition's engine
/// answering what the adapter asks) and applies the events. Returns the
/// events in order and one outcome label per event or unmapped payload.
fn mapped(format: Format, name: &str) -> (Vec<Value>, Vec<String>) {
    let cfg = settings().engine;
    let adapter = Adapter {
        format,
        config: cfg.crm.clone(),
    };
    let mut p = Processor::new(cfg);
    let (mut events, mut outcomes) = (Vec::new(), Vec::new());
    for line in fixture_lines(name) {
        let label = |o: &Outcome| match o {
            Outcome::Ignored(r) => format!("ignored:{}", r.as_str()),
            Outcome::Rejected(r) => format!("rejected:{}", r.reason),
            o => o.label().to_owned(),
        };
        match adapter.adapt(line.as_bytes(), &p.engine.config().parse, &p.engine) {
            Ok(Adapted::Events(evs)) => {
                for ev in evs {
                    outcomes.push(label(&p.process(ev.to_string().as_bytes(), 0)));
                    events.push(ev);
                }
            }
            Ok(Adapted::UnknownKind) => outcomes.push("ignored:unknown_type".into()),
            Ok(Adapted::NothingToDo) => outcomes.push("ignored:no_kpi_change".into()),
            Err(r) => outcomes.push(format!("rejected:{}", r.reason)),
        }
    }
    (events, outcomes)
}

fn check_events(format: Format, crm: &str) -> Vec<String> {
    let (events, outcomes) = mapped(format, &format!("crm/{crm}.ndjson"));
    let want: Vec<Value> = fixture_lines(&format!("crm/{crm}.canonical.ndjson"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, (got, want)) in events.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "{crm}: canonical event {i}");
    }
    assert_eq!(
        events.len(),
        want.len(),
        "{crm}: number of canonical events"
    );
    outcomes
}

/// The native replay's KPIs equal those of the expected canonical events,
/// and its outcome counts are those of `mapped`.
fn replay_agrees(format: Format, crm: &str, outcomes: &[String]) -> Value {
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
    let count = |prefix: &str| outcomes.iter().filter(|o| o.starts_with(prefix)).count() as u64;
    assert_eq!(
        native["outcomes"],
        json!({"applied": count("applied"), "duplicate": count("duplicate"),
               "ignored": count("ignored"), "rejected": count("rejected")})
    );
    assert_eq!(counts.total(), outcomes.len() as u64);
    native
}

#[test]
fn hubspot_notifications_map_to_the_expected_events_and_kpis() {
    let outcomes = check_events(Format::Hubspot, "hubspot");
    assert_eq!(
        outcomes,
        [
            "applied",
            "applied",
            "applied", // owner opens deal 1001, stage, amount
            "duplicate",
            "duplicate",
            "duplicate", // the batch retried
            "applied",
            "applied", // 1002's stage before its owner: opened implicitly, then owned
            "applied", // 1001 to demo
            "applied",
            "applied",   // two calls
            "duplicate", // call 2001's outcome edited: still one call
            "applied",
            "applied", // meeting booked, then moved
            "applied",
            "applied",
            "applied",               // 1001 won, meeting held, 1002 lost
            "ignored:unknown_type",  // contact.creation
            "ignored:no_kpi_change", // deal.creation carries no owner
            "rejected:invalid_json",
            "rejected:missing_field", // no occurredAt
            "rejected:unmappable",    // an outcome HubSpot does not have
        ]
    );
    let doc = replay_agrees(Format::Hubspot, "hubspot", &outcomes);
    let org = |k| num(&doc, "org", "all", "30d", k);
    assert_eq!(org("deals_created"), 2.0);
    assert_eq!(org("deals_won"), 1.0);
    assert_eq!(org("deals_lost"), 1.0);
    assert_eq!(org("won_amount"), 12000.0);
    assert_eq!(org("calls"), 2.0);
    assert_eq!(org("calls_connected"), 1.0);
    assert_eq!(org("meetings_booked"), 1.0);
    assert_eq!(org("meetings_held"), 1.0);
    assert_eq!(org("open_deals"), 0.0);
    assert_eq!(num(&doc, "rep", "rep-ana", "30d", "won_amount"), 12000.0);
    assert_eq!(num(&doc, "rep", "rep-bo", "30d", "deals_lost"), 1.0);
    assert_eq!(num(&doc, "team", "east", "30d", "calls_connected"), 1.0);
    // 1001 left prospecting and demo forward; 1002 was lost in qualification.
    assert_eq!(num(&doc, "org", "all", "30d", "win_rate"), 0.5);
}

#[test]
fn pipedrive_webhooks_map_to_the_expected_events_and_kpis() {
    let outcomes = check_events(Format::Pipedrive, "pipedrive");
    assert_eq!(
        outcomes,
        [
            "applied",   // deal 101 created
            "duplicate", // its retry (meta.attempt 2)
            "applied",
            "applied",               // revalued and moved to demo
            "ignored:no_kpi_change", // a call planned, not done
            "applied",               // the call done
            "applied",               // meeting booked
            "applied",               // meeting moved
            "applied",               // deal 102 won before its creation arrived
            "ignored:closed_deal",   // ... so the late creation is ignored
            "applied",               // meeting held
            "ignored:unknown_type",  // a person
            "ignored:no_kpi_change", // a deal deleted
            "rejected:invalid_json",
            "rejected:missing_field", // a deal without owner
            "applied",                // deal 104 lost (opened implicitly)
        ]
    );
    let doc = replay_agrees(Format::Pipedrive, "pipedrive", &outcomes);
    let org = |k| num(&doc, "org", "all", "30d", k);
    assert_eq!(org("deals_created"), 1.0);
    assert_eq!(org("deals_won"), 1.0);
    assert_eq!(org("won_amount"), 800.0);
    assert_eq!(org("deals_lost"), 1.0);
    assert_eq!(org("calls"), 1.0);
    assert_eq!(org("call_seconds"), 720.0);
    assert_eq!(org("meetings_booked"), 1.0);
    assert_eq!(org("meetings_held"), 1.0);
    assert_eq!(org("open_deals"), 1.0);
    // 1500 EUR at 1.08.
    assert!((org("open_pipeline_amount") - 1620.0).abs() < 1e-9);
    assert_eq!(num(&doc, "rep", "rep-dee", "30d", "won_amount"), 800.0);
    assert_eq!(num(&doc, "rep", "rep-dee", "30d", "meetings_held"), 1.0);
}

#[test]
fn salesforce_change_events_map_to_the_expected_events_and_kpis() {
    let outcomes = check_events(Format::SalesforceCdc, "salesforce");
    assert_eq!(
        outcomes,
        [
            "applied",   // opportunity created
            "duplicate", // redelivered
            "applied",   // to demo
            "applied",
            "applied", // a call and an email task
            "applied",
            "applied", // meeting booked and moved
            "applied",
            "applied", // revalued and won
            "applied", // meeting held (status field)
            "applied",
            "applied",               // account starts paying, then expands
            "ignored:unknown_type",  // a Case
            "ignored:no_kpi_change", // a GAP event
            "applied",               // a CometD-wrapped creation
            "applied",
            "applied", // a bulk update closing two deals
            "rejected:wrong_type",
            "rejected:missing_field", // no ChangeEventHeader
        ]
    );
    let doc = replay_agrees(Format::SalesforceCdc, "salesforce", &outcomes);
    let org = |k| num(&doc, "org", "all", "30d", k);
    assert_eq!(org("deals_created"), 2.0);
    assert_eq!(org("deals_won"), 1.0);
    // 5200 GBP at 1.27.
    assert!((org("won_amount") - 6604.0).abs() < 1e-9);
    assert_eq!(org("deals_lost"), 2.0);
    assert_eq!(org("calls_connected"), 1.0);
    assert_eq!(org("call_seconds"), 95.0);
    assert_eq!(org("emails"), 1.0);
    assert_eq!(org("meetings_held"), 1.0);
    assert_eq!(org("customers_new"), 1.0);
    assert_eq!(org("mrr_new"), 900.0);
    assert_eq!(org("mrr_expansion"), 200.0);
    assert_eq!(org("mrr"), 1100.0);
    assert_eq!(num(&doc, "rep", "rep-cai", "30d", "deals_won"), 1.0);
    assert_eq!(num(&doc, "rep", "rep-eli", "30d", "emails"), 1.0);
}

/// `kpistream replay --format` runs the same adapter.
#[test]
fn the_replay_command_takes_a_format() {
    let doc = replay_command([
        "--format".into(),
        "pipedrive".into(),
        "--config".into(),
        fixture("crm/crm.toml"),
        "--input".into(),
        fixture("crm/pipedrive.ndjson"),
    ]);
    assert_eq!(
        doc["outcomes"],
        json!({"applied": 9, "duplicate": 1, "ignored": 4, "rejected": 2})
    );
    assert_eq!(num(&doc, "org", "all", "30d", "won_amount"), 800.0);
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_kpistream"))
        .args(["replay", "--format", "zoho", "--input", "-"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`zoho`"));
}
