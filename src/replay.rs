//! `kpistream replay`: the engine over an NDJSON file, always on the event
//! clock.

use std::io::BufRead;

use crate::config::{ClockMode, EngineConfig};
use crate::crm::Format;
use crate::kpi::{self, Filter, Layout};
use crate::processor::{Counts, Outcome, Processor};

/// Runs every line of `input` through one processor and returns the KPI
/// document with its `outcomes`. Empty lines are not messages and are skipped.
pub fn replay(
    cfg: EngineConfig,
    input: impl BufRead,
) -> std::io::Result<(serde_json::Value, Counts)> {
    replay_format(cfg, Format::Canonical, input)
}

/// As [`replay`], each line a payload in `format` (one native JSON
/// document per line for a CRM format).
pub fn replay_format(
    mut cfg: EngineConfig,
    format: Format,
    input: impl BufRead,
) -> std::io::Result<(serde_json::Value, Counts)> {
    cfg.clock = ClockMode::Event;
    let layout = Layout::new(&cfg);
    let mut p = Processor::new(cfg).with_format(format);
    for_each_line(input, |line| {
        p.process_each(line, 0, |outcome| {
            if let Outcome::Rejected(r) = outcome {
                tracing::debug!(reason = %r.reason, detail = %r.detail, "rejected");
            }
        });
    })?;
    let view = p.engine.view();
    let mut doc = kpi::document(&layout, &view, &Filter::default());
    doc["outcomes"] = p.counts.to_json();
    Ok((doc, p.counts))
}

/// Calls `f` with each line of `input`, without its line ending, reusing one
/// buffer. Lines that are not UTF-8 are passed as they are.
pub fn for_each_line(mut input: impl BufRead, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        let mut line = buf.as_slice();
        if let Some(l) = line.strip_suffix(b"\n") {
            line = l;
        }
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if !line.is_empty() {
            f(line);
        }
    }
}
