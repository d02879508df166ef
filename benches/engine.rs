//! Engine throughput.
//!
//! - `apply/<reps>`: `Engine::offer` over pre-parsed events, no parsing.
//! - `replay/envelope_only/<reps>`: serde_json parsing of each line's
//!   envelope (`id`, `type`, `occurred_at`), the baseline.
//! - `replay/parse_validate/<reps>`: parsing and validation alone, to show
//!   how the whole path divides.
//! - `replay/parse_validate_apply/<reps>`: the whole replay path, as
//!   `kpistream replay` runs it (`Processor::process_run`), in the same run
//!   as the baseline, so the two can be compared as a ratio.
//! - `replay/parse_validate_apply_each/<reps>`: the same, one message at a
//!   time (`Processor::process`), as the Kafka consumer runs it.
//!
//! Each is measured for 16 reps in 3 teams, 300 in 39 and 2,000 in 252: the
//! engine's cost grows with the reps at the same number of events. The
//! event files are made by the simulator (seed 7, with faults) and cached
//! under `target/`; `KPISTREAM_BENCH_EVENTS` sets their size (default 1e6).

use std::borrow::Cow;
use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use serde::Deserialize;

use kpistream::config::EngineConfig;
use kpistream::engine::Engine;
use kpistream::event::{self, Parsed};
use kpistream::processor::Processor;
use kpistream::sim::{SimConfig, Simulator};

fn n_events() -> usize {
    std::env::var("KPISTREAM_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// An NDJSON file of `n` simulated messages for `reps` reps, made once.
fn event_file(n: usize, reps: usize, faults: bool) -> (PathBuf, Simulator) {
    let cfg = SimConfig {
        seed: 7,
        reps,
        teams: teams_of(reps),
        events_per_second: 1.0,
        faults,
        ..SimConfig::default()
    };
    let mut sim = Simulator::new(cfg);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    let path = dir.join(format!("events-{n}-{reps}-{faults}.ndjson"));
    if !path.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let mut buf = Vec::with_capacity(n * 200);
        for _ in 0..n {
            buf.extend_from_slice(&sim.next_message().payload);
            buf.push(b'\n');
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &buf).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    (path, sim)
}

/// The sales orgs measured: reps, and teams of about eight.
const ORGS: [usize; 3] = [16, 300, 2_000];

fn teams_of(reps: usize) -> usize {
    if reps <= 16 {
        3
    } else {
        reps / 8 + 2
    }
}

fn config_for(sim: &Simulator) -> EngineConfig {
    EngineConfig {
        teams: sim.teams(),
        ..EngineConfig::on_event_clock()
    }
}

fn lines(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

fn apply(c: &mut Criterion) {
    let n = n_events().min(200_000);
    let mut group = c.benchmark_group("apply");
    group.sample_size(10);
    for reps in ORGS {
        let (path, sim) = event_file(n, reps, false);
        let data = std::fs::read(path).unwrap();
        let cfg = config_for(&sim);
        let events: Vec<event::Event<'_>> = lines(&data)
            .into_iter()
            .filter_map(|l| match event::parse(l, &cfg.parse) {
                Ok(Parsed::Event(e)) => Some(e),
                _ => None,
            })
            .collect();
        group.throughput(Throughput::Elements(events.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(reps), &events, |b, events| {
            b.iter_batched(
                || Engine::new(cfg.clone()),
                |mut engine| {
                    for e in events {
                        let _ = black_box(engine.offer(e));
                    }
                    engine
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    occurred_at: Cow<'a, str>,
}

fn replay(c: &mut Criterion) {
    let n = n_events();
    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    for reps in ORGS {
        let (path, sim) = event_file(n, reps, true);
        let data = std::fs::read(path).unwrap();
        let cfg = config_for(&sim);
        let lines = lines(&data);
        group.throughput(Throughput::Elements(lines.len() as u64));
        group.bench_function(BenchmarkId::new("envelope_only", reps), |b| {
            b.iter(|| {
                let mut ok = 0usize;
                for l in &lines {
                    if let Ok(e) = serde_json::from_slice::<Envelope<'_>>(l) {
                        ok += e.id.len() + e.kind.len() + e.occurred_at.len();
                    }
                }
                black_box(ok)
            })
        });
        group.bench_function(BenchmarkId::new("parse_validate", reps), |b| {
            b.iter(|| {
                let mut ok = 0usize;
                for l in &lines {
                    if let Ok(Parsed::Event(e)) = event::parse(l, &cfg.parse) {
                        ok += e.id.len();
                    }
                }
                black_box(ok)
            })
        });
        group.bench_function(BenchmarkId::new("parse_validate_apply", reps), |b| {
            b.iter_batched(
                || Processor::new(cfg.clone()),
                |mut p| {
                    p.process_run(&lines, 0, |o| {
                        black_box(o);
                    });
                    p
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function(BenchmarkId::new("parse_validate_apply_each", reps), |b| {
            b.iter_batched(
                || Processor::new(cfg.clone()),
                |mut p| {
                    for l in &lines {
                        black_box(p.process(l, 0));
                    }
                    p
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, apply, replay);
criterion_main!(benches);
