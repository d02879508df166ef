//! Any snapshot body, with a correct length and checksum so that decoding
//! goes past them: a processor or an error, never a panic. The corpus
//! starts from real snapshots (fuzz/run.sh makes them).
#![no_main]
use libfuzzer_sys::fuzz_target;
mod common;
use common::cfg;

fuzz_target!(|data: &[u8]| {
    let image = kpistream::snapshot::seal(data);
    if let Ok(mut r) = kpistream::snapshot::decode(&image, cfg()) {
        let _ = r.processor.engine.view();
    }
});
