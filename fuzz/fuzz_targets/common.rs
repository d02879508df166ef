//! What the fuzz targets share: the settings, loaded once, and the run of a
//! CRM adapter.
use std::sync::OnceLock;

use kpistream::config::EngineConfig;
use kpistream::crm::Format;
use kpistream::processor::Processor;

/// Loading the settings is slow (TOML); once per process.
pub fn cfg() -> EngineConfig {
    static CFG: OnceLock<EngineConfig> = OnceLock::new();
    CFG.get_or_init(EngineConfig::on_event_clock).clone()
}

/// Any bytes, one payload per line, through the `format` adapter and the
/// engine, as on a topic with that format: outcomes, never a panic.
#[allow(dead_code)]
pub fn adapter(format: Format, data: &[u8]) {
    let mut p = Processor::new(cfg()).with_format(format);
    let mut outcomes = 0u64;
    for line in data.split(|&b| b == b'\n') {
        p.process_each(line, 0, |_| outcomes += 1);
    }
    let _ = p.engine.view();
    assert_eq!(p.counts.total(), outcomes);
}
