//! State kept per partition sums to the same KPIs as one state over the whole
//! stream: the golden log split by its Kafka key (events.md) over several
//! engines, each on its own clock while ingesting, reproduces the golden
//! document once every engine is read at the instance clock.

mod common;

use std::fs;

use serde_json::Value;

use common::{assert_json_close, fixture};
use kpistream::config::EngineConfig;
use kpistream::engine::View;
use kpistream::kpi::{self, Filter, Layout};
use kpistream::processor::{Counts, Processor};

/// The message key of events.md: the entity the event belongs to.
fn key(msg: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(msg).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let kind = s("type")?;
    let by = match kind.as_str() {
        k if k.starts_with("lead.") => "lead_id",
        "call.logged" | "email.sent" if s("lead_id").is_some() => "lead_id",
        k if k.starts_with("meeting.") => "meeting_id",
        k if k.starts_with("deal.") => "deal_id",
        k if k.starts_with("subscription.") || k == "customer.churned" => "account_id",
        "survey.responded" if s("account_id").is_some() => "account_id",
        _ => return s("rep_id").or_else(|| s("team_id")),
    };
    s(by)
}

fn partition(key: Option<&str>, n: usize) -> usize {
    key.map_or(0, |k| {
        (xxhash_rust::xxh3::xxh3_64(k.as_bytes()) % n as u64) as usize
    })
}

fn golden_config() -> EngineConfig {
    let teams = fs::read_to_string(fixture("golden/teams.json")).unwrap();
    EngineConfig {
        teams: serde_json::from_str(&teams).unwrap(),
        ..EngineConfig::on_event_clock()
    }
}

#[test]
fn partitioned_state_sums_to_the_golden_document() {
    let data = fs::read(fixture("golden/events.ndjson")).unwrap();
    for n in [1, 3, 7] {
        let mut parts: Vec<Processor> = (0..n).map(|_| Processor::new(golden_config())).collect();
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let p = partition(key(line).as_deref(), n);
            parts[p].process(line, 0);
        }
        let now = parts.iter().filter_map(|p| p.engine.now()).max().unwrap();
        let mut view = View::default();
        let mut counts = Counts::default();
        for p in &mut parts {
            p.engine.set_now(now);
            view.merge(p.engine.view());
            counts.merge(&p.counts);
        }
        let layout = Layout::new(&golden_config());
        let mut doc = kpi::document(&layout, &view, &Filter::default());
        doc["outcomes"] = counts.to_json();
        let want: Value =
            serde_json::from_slice(&fs::read(fixture("golden/expected.json")).unwrap()).unwrap();
        // A corrupted redelivery may carry another key than its original (the
        // golden README lets invalid messages go to any partition); on another
        // partition it is rejected instead of dropped as a duplicate. Applied
        // and ignored messages, and every KPI, are the same.
        let (got, exp) = (&doc["outcomes"], &want["outcomes"]);
        assert_eq!(got["applied"], exp["applied"], "{n} partitions");
        assert_eq!(got["ignored"], exp["ignored"], "{n} partitions");
        let dup_or_rej =
            |o: &Value| o["duplicate"].as_u64().unwrap() + o["rejected"].as_u64().unwrap();
        assert_eq!(dup_or_rej(got), dup_or_rej(exp), "{n} partitions");
        if n == 1 {
            assert_eq!(got, exp);
        }
        assert_json_close(
            &doc["results"],
            &want["results"],
            &format!("{n} partitions"),
        );
    }
}

/// A crash at any point and a restart from the last snapshot image gives the
/// uninterrupted result: state, counts and offset round-trip exactly.
#[test]
fn restoring_from_a_snapshot_anywhere_gives_the_golden_document() {
    let data = fs::read(fixture("golden/events.ndjson")).unwrap();
    let lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let want: Value =
        serde_json::from_slice(&fs::read(fixture("golden/expected.json")).unwrap()).unwrap();
    for cut in [1, 2_000, 6_421, 12_846] {
        let mut p = Processor::new(golden_config());
        for l in &lines[..cut] {
            p.process(l, 0);
        }
        let image = kpistream::snapshot::encode(&p, cut as i64).unwrap();
        drop(p);
        let restored = kpistream::snapshot::decode(&image, golden_config()).unwrap();
        assert_eq!(restored.next_offset, cut as i64);
        let mut p = restored.processor;
        for l in &lines[cut..] {
            p.process(l, 0);
        }
        let mut doc = common::doc(&mut p);
        doc["outcomes"] = p.counts.to_json();
        assert_eq!(doc["outcomes"], want["outcomes"], "cut at {cut}");
        assert_json_close(&doc["results"], &want["results"], &format!("cut at {cut}"));
    }
}
