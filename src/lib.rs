//! kpistream: live sales KPIs from CRM events.
//!
//! The pure core (no I/O, no clock reads):
//! - [`event`]: the canonical event schema; parsing and validation into
//!   borrowed [`event::Event`]s, or a rejection with a fixed reason code.
//! - [`engine`]: entity state (leads, deals, meetings, accounts, quotas),
//!   windowed additive parts ([`engine::window`]: bucketed rings with running
//!   sums) and current-state gauges, per (rep, team) pair, for one partition.
//! - [`processor`]: bytes to [`processor::Outcome`] (applied, duplicate,
//!   ignored, rejected), counted.
//! - [`kpi`]: per-scope totals, derived KPIs and the JSON document.
//!
//! Around it:
//! - [`config`]: settings from `config/default.toml`, files and environment.
//! - [`replay`]: runs the engine over an NDJSON file on the event clock.
//! - [`snapshot`]: the versioned, checksummed snapshot format and the
//!   directory that keeps each partition's newest snapshots.

pub mod config;
pub mod engine;
pub mod event;
pub mod kpi;
pub mod processor;
pub mod replay;
pub mod snapshot;
