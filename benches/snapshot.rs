//! Snapshot and restore of a partition holding 1,000,000 open deals
//! (`KPISTREAM_BENCH_DEALS` sets the count): encode and durably write the
//! file, then read and decode it back into an engine.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

use kpistream::config::EngineConfig;
use kpistream::processor::Processor;
use kpistream::snapshot::{self, Store};

fn deals() -> usize {
    std::env::var("KPISTREAM_BENCH_DEALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn snapshot(c: &mut Criterion) {
    let n = deals();
    let cfg = EngineConfig::on_event_clock();
    let mut p = Processor::new(cfg.clone());
    let stages = [
        "prospecting",
        "qualification",
        "demo",
        "proposal",
        "negotiation",
    ];
    for i in 0..n {
        let msg = format!(
            r#"{{"id":"e{i}","type":"deal.created","occurred_at":"2026-03-01T{:02}:{:02}:{:02}Z","deal_id":"deal-{i}","rep_id":"rep-{:04}","amount":{}.5,"stage":"{}"}}"#,
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60,
            i % 200,
            1000 + i % 5000,
            stages[i % 5]
        );
        p.process(msg.as_bytes(), 0);
    }
    assert_eq!(p.engine.sizes().deals, n);
    let dir = std::env::temp_dir().join(format!("kpistream-bench-snap-{}", std::process::id()));
    let store = Store::new(&dir, 2);
    let mut size = 0;
    let mut group = c.benchmark_group("snapshot_open_deals");
    group.sample_size(10);
    group.bench_function("encode_and_write", |b| {
        b.iter(|| {
            let image = snapshot::encode(&p, 42).unwrap();
            size = store.write("bench", 0, 42, &image).unwrap();
        })
    });
    group.bench_function("read_and_decode", |b| {
        b.iter(|| {
            let loaded = store.load("bench", 0, &cfg).unwrap();
            black_box(loaded.restored.expect("restored").processor.engine.sizes())
        })
    });
    group.finish();
    eprintln!("snapshot of {n} open deals: {size} bytes");
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
