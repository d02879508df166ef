//! Limits that hold under abuse: JSON depth, reps and teams tracked (the
//! excess folded into `other` and counted), entities per partition; each
//! from its configuration key. (Message size, HTTP body size, concurrency
//! and API query cost are tested in event.rs and tests/http.rs.)

mod common;

use serde_json::json;

use common::{doc, ev, feed, num};
use kpistream::config::{EngineConfig, Overrides, Settings};
use kpistream::event::RejectReason;
use kpistream::processor::Outcome;

fn cfg(vars: &[(&str, &str)]) -> EngineConfig {
    Settings::load_with_env(
        None,
        &Overrides {
            clock: Some("event".into()),
            ..Overrides::default()
        },
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .unwrap()
    .engine
}

fn rejected(o: &Outcome) -> Option<RejectReason> {
    match o {
        Outcome::Rejected(r) => Some(r.reason),
        _ => None,
    }
}

#[test]
fn json_nested_deeper_than_the_limit_is_rejected() {
    let nested = |depth: usize| {
        let mut v = json!(1);
        for _ in 0..depth - 1 {
            v = json!([v]);
        }
        v
    };
    // The event object itself is level 1; `nested(d)` adds d - 1 levels.
    let msg = |depth| {
        ev(
            "e1",
            "email.sent",
            "2026-11-02T10:00:00Z",
            json!({"rep_id": "r", "email_id": "m", "x": nested(depth)}),
        )
    };
    let c = cfg(&[("KPISTREAM__LIMITS__MAX_JSON_DEPTH", "5")]);
    let (_, out) = feed(c.clone(), &[msg(5)]);
    assert_eq!(out, [Outcome::Applied], "depth 5: at the limit");
    let (_, out) = feed(c.clone(), &[msg(6)]);
    assert_eq!(rejected(&out[0]), Some(RejectReason::TooDeep));
    // Brackets inside strings are text, not nesting.
    let text = ev(
        "e2",
        "email.sent",
        "2026-11-02T10:00:00Z",
        json!({"rep_id": "r", "email_id": "m", "note": "[[[[[[[[{{{{{{"}),
    );
    let (_, out) = feed(c, &[text]);
    assert_eq!(out, [Outcome::Applied]);
    // The default is 32 (serde_json's own limit, 128, stands behind it).
    let (_, out) = feed(cfg(&[]), &[msg(40)]);
    assert_eq!(rejected(&out[0]), Some(RejectReason::TooDeep));
}

#[test]
fn reps_and_teams_past_their_limits_are_folded_into_other_and_counted() {
    let c = cfg(&[
        ("KPISTREAM__LIMITS__MAX_REPS", "3"),
        ("KPISTREAM__LIMITS__MAX_TEAMS", "2"),
    ]);
    let msgs: Vec<String> = (0..10)
        .map(|i| {
            ev(
                &format!("c{i}"),
                "call.logged",
                "2026-11-02T10:00:00Z",
                json!({
                    "call_id": format!("call-{i}"), "rep_id": format!("rep-{i}"),
                    "team_id": format!("team-{}", i % 5), "outcome": "connected"
                }),
            )
        })
        .collect();
    let (mut p, out) = feed(c, &msgs);
    assert!(
        out.iter().all(|o| *o == Outcome::Applied),
        "folded, not dropped"
    );
    let d = doc(&mut p);
    for i in 0..3 {
        assert_eq!(num(&d, "rep", &format!("rep-{i}"), "24h", "calls"), 1.0);
    }
    assert_eq!(num(&d, "rep", "other", "24h", "calls"), 7.0);
    assert_eq!(
        num(&d, "team", "team-0", "24h", "calls"),
        2.0,
        "calls 0 and 5"
    );
    assert_eq!(
        num(&d, "team", "team-1", "24h", "calls"),
        2.0,
        "calls 1 and 6"
    );
    assert_eq!(num(&d, "team", "other", "24h", "calls"), 6.0);
    assert_eq!(
        num(&d, "org", "all", "24h", "calls"),
        10.0,
        "every call still counts"
    );
    assert_eq!(p.engine.folded(), [7, 6]);
    // Known reps stay themselves after the limit is reached.
    let again = ev(
        "c10",
        "call.logged",
        "2026-11-02T11:00:00Z",
        json!({"call_id": "x", "rep_id": "rep-1", "team_id": "team-1"}),
    );
    let o = p.process(again.as_bytes(), 0);
    assert_eq!(o, Outcome::Applied);
    assert_eq!(num(&doc(&mut p), "rep", "rep-1", "24h", "calls"), 2.0);
}

#[test]
fn new_entities_past_the_limit_are_rejected_and_known_ones_still_apply() {
    let c = cfg(&[("KPISTREAM__LIMITS__MAX_ENTITIES", "2")]);
    let deal = |id: &str, n: &str| {
        ev(
            id,
            "deal.created",
            "2026-11-02T10:00:00Z",
            json!({"deal_id": n, "rep_id": "r", "amount": 100}),
        )
    };
    let (mut p, out) = feed(c, &[deal("d1", "A"), deal("d2", "B"), deal("d3", "C")]);
    assert_eq!(out[..2], [Outcome::Applied, Outcome::Applied]);
    assert_eq!(rejected(&out[2]), Some(RejectReason::OverLimit));
    let won = ev(
        "w1",
        "deal.won",
        "2026-11-02T11:00:00Z",
        json!({"deal_id": "A"}),
    );
    assert_eq!(
        p.process(won.as_bytes(), 0),
        Outcome::Applied,
        "a known deal"
    );
    let meeting = ev(
        "m1",
        "meeting.held",
        "2026-11-02T11:00:00Z",
        json!({"meeting_id": "M"}),
    );
    assert_eq!(
        rejected(&p.process(meeting.as_bytes(), 0)),
        Some(RejectReason::OverLimit)
    );
    let call = ev(
        "c1",
        "call.logged",
        "2026-11-02T11:00:00Z",
        json!({"call_id": "c", "rep_id": "r"}),
    );
    assert_eq!(
        p.process(call.as_bytes(), 0),
        Outcome::Applied,
        "no entity involved"
    );
    assert_eq!(p.counts.rejected[RejectReason::OverLimit as usize], 2);
}

#[test]
fn limits_are_validated() {
    for (key, v) in [
        ("KPISTREAM__LIMITS__MAX_JSON_DEPTH", "500"),
        ("KPISTREAM__LIMITS__MAX_REPS", "0"),
        ("KPISTREAM__HTTP__MAX_API_RESULTS", "0"),
    ] {
        let err = Settings::load_with_env(
            None,
            &Overrides::default(),
            [(key.to_owned(), v.to_owned())],
        )
        .unwrap_err()
        .to_string();
        let name = key
            .trim_start_matches("KPISTREAM__")
            .replace("__", ".")
            .to_lowercase();
        assert!(err.contains(&name), "{err} should name {name}");
    }
}

/// Request bodies past `http.max_request_bytes` get 413 before any check or
/// produce; within it, an unsigned webhook gets 401.
#[test]
fn webhook_bodies_past_the_request_limit_get_413() {
    let settings = Settings::load_with_env(
        None,
        &Overrides::default(),
        [
            ("KPISTREAM__KAFKA__BROKERS", "127.0.0.1:9"),
            ("KPISTREAM__KAFKA__FORMATS__CRM-EVENTS", "pipedrive"),
            ("KPISTREAM__WEBHOOKS__PIPEDRIVE_TOPIC", "crm-events"),
            ("KPISTREAM_PIPEDRIVE_SECRET", "u:p"),
            ("KPISTREAM__HTTP__MAX_REQUEST_BYTES", "1024"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = std::sync::Arc::new(kpistream::telemetry::Metrics::new(&mut registry));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let hooks = kpistream::webhook::Hooks::new(&settings, metrics)
        .unwrap()
        .unwrap();
    let app = kpistream::webhook::router(hooks, settings.http_limits.max_request_bytes);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move { axum::serve(listener, app).await });
    let post = |body: &[u8]| {
        common::kafka::http_request(port, "POST", "/webhooks/pipedrive", &[], body)
            .unwrap()
            .0
    };
    assert_eq!(post(&vec![b' '; 2048]), 413);
    assert_eq!(post(b"{}"), 401);
}
