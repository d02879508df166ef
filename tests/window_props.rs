//! Property tests: windowed sums equal a naive recomputation from every
//! contribution, for random event times, arrival orders and clock advances.

mod common;

use proptest::prelude::*;
use serde_json::json;

use common::{doc, ev, feed, num};
use kpistream::config::{Calendar, EngineConfig, Sliding, SECOND};
use kpistream::engine::window::{calendar_period, Clock, Series, WindowPlan};
use kpistream::event::format_timestamp;

const MIN: i64 = 60 * SECOND;
/// 2026-03-30T00:00:00Z: near a month and quarter boundary.
const BASE: i64 = 1_774_828_800 * SECOND;

fn small_windows() -> EngineConfig {
    EngineConfig {
        sliding: vec![
            Sliding {
                name: "10m".into(),
                length: 10 * MIN,
                granularity: MIN,
            },
            Sliding {
                name: "1h".into(),
                length: 60 * MIN,
                granularity: 5 * MIN,
            },
            Sliding {
                name: "3h".into(),
                length: 180 * MIN,
                granularity: MIN,
            },
            Sliding {
                name: "2d".into(),
                length: 2 * 1_440 * MIN,
                granularity: 1_440 * MIN,
            },
        ],
        calendar: vec![Calendar::Month, Calendar::Quarter],
        ..EngineConfig::on_event_clock()
    }
}

/// Does a contribution at `t` count in the window at `now`? (kpis.md)
fn in_window(cfg: &EngineConfig, w: usize, t: i64, now: i64) -> bool {
    if w < cfg.sliding.len() {
        let s = &cfg.sliding[w];
        let (b, h) = (t.div_euclid(s.granularity), now.div_euclid(s.granularity));
        b <= h && b > h - s.length / s.granularity
    } else {
        let cal = cfg.calendar[w - cfg.sliding.len()];
        let (start, _) = calendar_period(cal, cfg.timezone, now);
        start <= t && t <= now
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Advance the clock by this many seconds.
    Advance(i64),
    /// Add `v` to `part` at `back` seconds before now.
    Add { back: i64, part: usize, v: i64 },
    /// Retract the n-th earlier addition (modulo the number made).
    Retract(usize),
    /// Carry on with the series as a snapshot restores it.
    Restore,
}

/// Operations on a series of `parts` parts.
fn op(parts: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        (0i64..4 * 3_600).prop_map(Op::Advance),
        add(3 * 86_400, parts),
        any::<usize>().prop_map(Op::Retract),
        Just(Op::Restore),
    ]
}

/// An addition to one of `parts` parts, less than `max_back` seconds ago.
fn add(max_back: i64, parts: usize) -> impl Strategy<Value = Op> {
    (0..max_back, 0..parts, -5i64..50).prop_map(|(back, part, v)| Op::Add { back, part, v })
}

/// Eleven windows: sums of a part span two lanes of eight.
fn many_windows() -> EngineConfig {
    let mut cfg = small_windows();
    for (minutes, granularity) in [(20, 1), (30, 5), (90, 15), (240, 60), (360, 30)] {
        cfg.sliding.push(Sliding {
            name: format!("{minutes}m"),
            length: minutes * MIN,
            granularity: granularity * MIN,
        });
    }
    cfg
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn series_sums_equal_a_naive_recount(ops in prop::collection::vec(op(3), 1..200)) {
        recount(small_windows(), 3, ops)?;
    }

    #[test]
    fn series_sums_equal_a_naive_recount_past_eight_windows(
        ops in prop::collection::vec(op(3), 1..200)
    ) {
        let cfg = many_windows();
        prop_assert_eq!(cfg.sliding.len() + cfg.calendar.len(), 11);
        recount(cfg, 3, ops)?;
    }

    /// Sparse series: rare additions, long idle gaps (hours to days), and
    /// clock jumps past the longest window (two days), which must empty
    /// every sliding window and leave no bucket behind.
    #[test]
    fn sparse_series_with_idle_gaps_and_long_jumps(
        ops in prop::collection::vec(
            prop_oneof![
                3 => (3_600i64..6 * 86_400).prop_map(Op::Advance),
                1 => (0i64..30).prop_map(Op::Advance),
                2 => add(4 * 86_400, 3),
                1 => any::<usize>().prop_map(Op::Retract),
                1 => Just(Op::Restore),
            ],
            1..120,
        )
    ) {
        recount(small_windows(), 3, ops)?;
    }

    /// Many series on one clock, each touched now and then: each equals its
    /// own naive recount whenever it is read, however many buckets the
    /// clock passed while it sat idle.
    #[test]
    fn many_series_on_one_clock(
        steps in prop::collection::vec(
            (0usize..40, 0i64..7_200, 0i64..4 * 3_600, 0usize..3, -5i64..50),
            1..300,
        )
    ) {
        let cfg = small_windows();
        let plan = WindowPlan::new(&cfg, 3);
        let mut clock = Clock::new(&plan);
        clock.set(&plan, BASE);
        let mut series: Vec<Series> = (0..40).map(|_| Series::new(&plan, &clock)).collect();
        let mut live: Vec<Vec<(i64, usize, i64)>> = vec![Vec::new(); 40];
        for (s, advance, back, part, v) in steps {
            clock.set(&plan, clock.now + advance * SECOND);
            let t = clock.now - back * SECOND;
            series[s].add(&plan, &clock, t, part, v);
            live[s].push((t, part, v));
            // Read another series, idle since it was last touched.
            let r = (s * 7 + 3) % 40;
            series[r].advance(&plan, &clock);
            for w in 0..plan.n_windows {
                for part in 0..3 {
                    let naive: i64 = live[r]
                        .iter()
                        .filter(|(t, p, _)| *p == part && in_window(&cfg, w, *t, clock.now))
                        .map(|(_, _, v)| v)
                        .sum();
                    prop_assert_eq!(series[r].window(&plan, w)[part], naive);
                }
            }
        }
    }

    /// Seventy parts, added to in bursts: buckets with more than twelve
    /// turn dense, and heads gather many parts before they move.
    #[test]
    fn series_sums_equal_a_naive_recount_with_dense_buckets(
        ops in prop::collection::vec(
            prop_oneof![1 => op(70), 3 => add(600, 70)],
            1..300,
        )
    ) {
        recount(small_windows(), 70, ops)?;
    }
}

/// Runs `ops` on a series and checks every window's sums against a naive
/// recount after each one.
fn recount(cfg: EngineConfig, parts: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let plan = WindowPlan::new(&cfg, parts);
    let mut clock = Clock::new(&plan);
    clock.set(&plan, BASE);
    let mut series = Series::new(&plan, &clock);
    let mut live: Vec<(i64, usize, i64)> = Vec::new();
    let mut made: Vec<(i64, usize, i64)> = Vec::new();
    for op in ops {
        match op {
            Op::Advance(s) => clock.set(&plan, clock.now + s * SECOND),
            Op::Add { back, part, v } => {
                let t = clock.now - back * SECOND;
                series.add(&plan, &clock, t, part, v);
                live.push((t, part, v));
                made.push((t, part, v));
            }
            Op::Retract(n) if !made.is_empty() => {
                let (t, part, v) = made[n % made.len()];
                series.add(&plan, &clock, t, part, -v);
                live.push((t, part, -v));
            }
            Op::Retract(_) => {}
            Op::Restore => {
                let bytes = postcard::to_allocvec(&series).unwrap();
                let restored: Series = postcard::from_bytes(&bytes).unwrap();
                prop_assert_eq!(&restored, &series);
                series = restored;
            }
        }
        series.advance(&plan, &clock);
        // It holds no more buckets than its contributions still in a ring
        // occupy: none for the time it sat idle.
        let in_rings: usize = plan
            .rings
            .iter()
            .zip(&clock.heads)
            .map(|(rp, &head)| {
                let mut b: Vec<i64> = live
                    .iter()
                    .map(|(t, _, _)| t.div_euclid(rp.granularity))
                    .filter(|&b| b <= head && b > head - rp.len)
                    .collect();
                b.sort_unstable();
                b.dedup();
                b.len()
            })
            .sum();
        prop_assert!(
            series.occupied() <= in_rings,
            "{} buckets held, {} occupied",
            series.occupied(),
            in_rings
        );
        for w in 0..plan.n_windows {
            for part in 0..parts {
                let naive: i64 = live
                    .iter()
                    .filter(|(t, p, _)| *p == part && in_window(&cfg, w, *t, clock.now))
                    .map(|(_, _, v)| v)
                    .sum();
                prop_assert_eq!(
                    series.window(&plan, w)[part],
                    naive,
                    "window {} part {}",
                    w,
                    part
                );
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Call {
    /// Seconds after BASE.
    at: i64,
    rep: usize,
    secs: u32,
}

fn call() -> impl Strategy<Value = Call> {
    (0i64..4 * 86_400, 0usize..3, 0u32..600).prop_map(|(at, rep, secs)| Call { at, rep, secs })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Calls in a random arrival order: every rep, team and org count and
    /// duration equals the recount over the calls in the window at the end.
    #[test]
    fn engine_counts_equal_a_naive_recount(calls in prop::collection::vec(call(), 1..80)) {
        let mut cfg = small_windows();
        cfg.teams.insert("r0".into(), "t0".into());
        cfg.teams.insert("r1".into(), "t0".into());
        let msgs: Vec<String> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                ev(
                    &format!("e{i}"),
                    "call.logged",
                    &format_timestamp(BASE + c.at * SECOND),
                    json!({"call_id": "c", "rep_id": format!("r{}", c.rep), "duration_seconds": c.secs}),
                )
            })
            .collect();
        let (mut p, _) = feed(cfg.clone(), &msgs);
        let d = doc(&mut p);
        let now = BASE + calls.iter().map(|c| c.at).max().unwrap() * SECOND;
        for (w, name) in cfg.window_names().iter().enumerate() {
            let live = |pred: &dyn Fn(&Call) -> bool| -> (f64, f64) {
                calls
                    .iter()
                    .filter(|c| pred(c) && in_window(&cfg, w, BASE + c.at * SECOND, now))
                    .fold((0.0, 0.0), |(n, s), c| (n + 1.0, s + c.secs as f64))
            };
            for rep in 0..3 {
                if !calls.iter().any(|c| c.rep == rep) {
                    continue;
                }
                let (n, s) = live(&|c| c.rep == rep);
                prop_assert_eq!(num(&d, "rep", &format!("r{rep}"), name, "calls"), n);
                prop_assert_eq!(num(&d, "rep", &format!("r{rep}"), name, "call_seconds"), s);
            }
            if calls.iter().any(|c| c.rep < 2) {
                prop_assert_eq!(num(&d, "team", "t0", name, "calls"), live(&|c| c.rep < 2).0);
            }
            prop_assert_eq!(num(&d, "org", "all", name, "calls"), live(&|_| true).0);
        }
    }
}

#[derive(Debug, Clone)]
enum MeetingOp {
    Schedule { m: usize, at: i64, sf: i64 },
    Held { m: usize, at: i64 },
    NoShow { m: usize, at: i64 },
    Cancel { m: usize, at: i64 },
}

fn meeting_op() -> impl Strategy<Value = MeetingOp> {
    // Times on a 10-minute grid, so that the 30-minute grace and the bucket
    // edges are hit exactly and often.
    let m = 0usize..6;
    let at = (0i64..288).prop_map(|x| x * 600);
    prop_oneof![
        (m.clone(), at.clone(), (0i64..432).prop_map(|x| x * 600))
            .prop_map(|(m, at, sf)| MeetingOp::Schedule { m, at, sf }),
        (m.clone(), at.clone()).prop_map(|(m, at)| MeetingOp::Held { m, at }),
        (m.clone(), at.clone()).prop_map(|(m, at)| MeetingOp::NoShow { m, at }),
        (m, at).prop_map(|(m, at)| MeetingOp::Cancel { m, at }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Meetings scheduled, held, missed and canceled in any order: due, held
    /// and missed equal the recount from each meeting's final state and T.
    #[test]
    fn meeting_counts_equal_a_naive_recount(ops in prop::collection::vec(meeting_op(), 1..40), tail in (0i64..144).prop_map(|x| x * 600)) {
        #[derive(Clone, Copy, PartialEq)]
        enum S { Scheduled, Held, NoShow, Canceled }
        let cfg = small_windows();
        let grace = cfg.no_show_grace;
        let mut msgs = Vec::new();
        let mut state: Vec<Option<(Option<i64>, S)>> = vec![None; 6];
        let mut max_at = 0;
        for (i, op) in ops.iter().enumerate() {
            let id = format!("e{i}");
            let (m, at, kind, extra, next) = match *op {
                MeetingOp::Schedule { m, at, sf } => (m, at, "meeting.scheduled",
                    json!({"rep_id": "r1", "scheduled_for": format_timestamp(BASE + sf * SECOND)}),
                    (Some(BASE + sf * SECOND), S::Scheduled)),
                MeetingOp::Held { m, at } => (m, at, "meeting.held", json!({"rep_id": "r1"}),
                    (state[m].map_or(Some(BASE + at * SECOND), |s| s.0), S::Held)),
                MeetingOp::NoShow { m, at } => (m, at, "meeting.no_show", json!({"rep_id": "r1"}),
                    (state[m].and_then(|s| s.0), S::NoShow)),
                MeetingOp::Cancel { m, at } => (m, at, "meeting.canceled", json!({"rep_id": "r1"}),
                    (state[m].and_then(|s| s.0), S::Canceled)),
            };
            let mut fields = extra;
            fields["meeting_id"] = json!(format!("m{m}"));
            msgs.push(ev(&id, kind, &format_timestamp(BASE + at * SECOND), fields));
            state[m] = Some(next);
            max_at = max_at.max(at);
        }
        let end = max_at + tail;
        msgs.push(ev("tick", "time.logged", &format_timestamp(BASE + end * SECOND),
            json!({"rep_id": "r9", "category": "admin", "duration_seconds": 1})));
        let now = BASE + end * SECOND;
        let (mut p, _) = feed(cfg.clone(), &msgs);
        let d = doc(&mut p);
        for (w, name) in cfg.window_names().iter().enumerate() {
            let (mut due, mut held, mut missed, mut upcoming) = (0.0, 0.0, 0.0, 0.0);
            for (sf, s) in state.iter().flatten() {
                let Some(sf) = *sf else { continue };
                if s == &S::Scheduled && sf > now {
                    upcoming += 1.0;
                }
                if s == &S::Canceled || sf > now || !in_window(&cfg, w, sf, now) {
                    continue;
                }
                due += 1.0;
                if *s == S::Held { held += 1.0; }
                if *s == S::NoShow || (*s == S::Scheduled && sf + grace <= now) { missed += 1.0; }
            }
            prop_assert_eq!(num(&d, "org", "all", name, "meetings_due"), due, "due in {}", name);
            prop_assert_eq!(num(&d, "org", "all", name, "meetings_held"), held, "held in {}", name);
            prop_assert_eq!(num(&d, "org", "all", name, "meetings_missed"), missed, "missed in {}", name);
            prop_assert_eq!(num(&d, "org", "all", name, "meetings_upcoming"), upcoming);
        }
    }
}
