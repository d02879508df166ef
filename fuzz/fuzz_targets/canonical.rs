//! Any bytes through the canonical parser, validation and the engine: an
//! outcome, never a panic; the outcome counts add up.
#![no_main]
use kpistream::processor::Processor;
use libfuzzer_sys::fuzz_target;
mod common;
use common::cfg;

fuzz_target!(|data: &[u8]| {
    let mut p = Processor::new(cfg());
    // Each line a message, so one input can build state and then hit it.
    for line in data.split(|&b| b == b'\n') {
        p.process(line, 0);
    }
    let _ = p.engine.view();
    assert_eq!(p.counts.total(), data.split(|&b| b == b'\n').count() as u64);
});
