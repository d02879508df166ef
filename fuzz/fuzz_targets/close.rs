//! Any bytes through the close adapter and the engine.
#![no_main]
mod common;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::adapter(kpistream::crm::Format::Close, data));
