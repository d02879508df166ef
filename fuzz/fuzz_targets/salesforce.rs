//! Any bytes through the salesforce adapter and then the engine, as on a topic
//! with that format: outcomes, never a panic.
#![no_main]
use kpistream::config::EngineConfig;
use kpistream::crm::{Adapter, Format};
use kpistream::processor::Processor;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// Loading the settings is slow (TOML); once per process.
fn cfg() -> EngineConfig {
    static CFG: OnceLock<EngineConfig> = OnceLock::new();
    CFG.get_or_init(EngineConfig::on_event_clock).clone()
}

fuzz_target!(|data: &[u8]| {
    let cfg = cfg();
    let adapter = Adapter {
        format: Format::SalesforceCdc,
        config: cfg.crm.clone(),
    };
    let mut p = Processor::new(cfg).with_adapter(Some(adapter));
    let mut outcomes = 0u64;
    for line in data.split(|&b| b == b'\n') {
        p.process_each(line, 0, |_| outcomes += 1);
    }
    let _ = p.engine.view();
    assert_eq!(p.counts.total(), outcomes);
});
