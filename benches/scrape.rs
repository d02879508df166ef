//! `/metrics` at scale: 2,000 reps in 40 teams, every default window.
//!
//! - `scrape/copy`: the copy of the state the ingest loop makes for a
//!   scrape (the only time a scrape holds ingestion up);
//! - `scrape/render`: rendering that copy as Prometheus text (on the HTTP
//!   side, while ingestion goes on);
//! - then, outside criterion, ingestion throughput with and without a
//!   scrape every second, as the service runs them: one thread applies
//!   messages and answers copy requests between two messages, another
//!   requests a copy every second and renders it. Runs alternate (without,
//!   with, without, with, ...) and the medians are compared.
//!
//! `KPISTREAM_BENCH_EVENTS` sets the messages per throughput run (default
//! 2,000,000).

use std::hint::black_box;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::Criterion;

use kpistream::config::EngineConfig;
use kpistream::engine::View;
use kpistream::exposition;
use kpistream::kpi::Layout;
use kpistream::processor::Processor;
use kpistream::sim::{SimConfig, Simulator};

const REPS: usize = 2_000;
const TEAMS: usize = 40;
const WARMUP: usize = 200_000;

fn simulator() -> Simulator {
    Simulator::new(SimConfig {
        seed: 11,
        reps: REPS,
        teams: TEAMS,
        events_per_second: 5.0,
        faults: false,
        ..SimConfig::default()
    })
}

fn config(sim: &Simulator) -> EngineConfig {
    EngineConfig {
        teams: sim.teams(),
        ..EngineConfig::on_event_clock()
    }
}

/// A processor that has seen `WARMUP` messages, so that every rep has
/// state, and the simulator to go on with.
fn warmed_up() -> (Processor, Simulator) {
    let mut sim = simulator();
    let mut p = Processor::new(config(&sim));
    for _ in 0..WARMUP {
        p.process(&sim.next_message().payload, 0);
    }
    (p, sim)
}

fn scrape(c: &mut Criterion) {
    let (mut p, sim) = warmed_up();
    let layout = Layout::new(&config(&sim));
    let mut group = c.benchmark_group("scrape");
    group.sample_size(20);
    group.bench_function("copy", |b| b.iter(|| black_box(p.engine.view())));
    let view = p.engine.view();
    let mut body = String::new();
    let stats = exposition::render(&layout, &view, 5_000, &mut body);
    group.bench_function("render", |b| {
        b.iter(|| {
            let mut out = String::with_capacity(body.len() + 4096);
            black_box(exposition::render(&layout, &view, 5_000, &mut out));
            out
        })
    });
    group.finish();
    println!(
        "scrape of {REPS} reps in {TEAMS} teams, {} windows: {} series, {} bytes ({} pairs of rep and team)",
        layout.windows.len(),
        stats.series,
        body.len(),
        view.rows.len()
    );
}

/// Applies `msgs` on a warmed-up processor; with `scrape`, a second thread
/// asks for a copy every second and renders it. Returns messages per second.
fn ingest(msgs: &[Vec<u8>], layout: &Layout, scrape: bool) -> (f64, usize) {
    let (mut p, _) = warmed_up();
    let (tx, rx) = mpsc::channel::<mpsc::Sender<View>>();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = scrape.then(|| {
        let done = done.clone();
        let layout = layout.clone();
        std::thread::spawn(move || {
            let mut scrapes = 0;
            let mut next = Instant::now() + Duration::from_secs(1);
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                next += Duration::from_secs(1);
                let (reply, view) = mpsc::channel();
                if tx.send(reply).is_err() {
                    break;
                }
                let Ok(view) = view.recv() else { break };
                let mut out = String::with_capacity(8 << 20);
                black_box(exposition::render(&layout, &view, 5_000, &mut out));
                scrapes += 1;
            }
            scrapes
        })
    });
    let start = Instant::now();
    for m in msgs {
        black_box(p.process(m, 0));
        if let Ok(reply) = rx.try_recv() {
            let _ = reply.send(p.engine.view());
        }
    }
    let rate = msgs.len() as f64 / start.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Release);
    let scrapes = scraper.map_or(0, |s| s.join().unwrap());
    (rate, scrapes)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    scrape(&mut c);
    c.final_summary();

    let n: usize = std::env::var("KPISTREAM_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let (_, mut sim) = warmed_up();
    let layout = Layout::new(&config(&sim));
    let msgs: Vec<Vec<u8>> = (0..n).map(|_| sim.next_message().payload).collect();
    let rounds = if std::env::args().any(|a| a == "--bench") {
        3
    } else {
        1
    };
    let (mut without, mut with, mut scrapes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..rounds {
        without.push(ingest(&msgs, &layout, false).0);
        let (rate, s) = ingest(&msgs, &layout, true);
        with.push(rate);
        scrapes += s;
    }
    let (a, b) = (median(without), median(with));
    println!(
        "ingestion of {n} messages, {REPS} reps: {a:.0} msg/s without scrapes, {b:.0} msg/s with a scrape every second ({scrapes} scrapes): {:.1}%",
        100.0 * b / a
    );
}
