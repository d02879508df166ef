//! kpistream: live sales KPIs from CRM events.
//!
//! The pure core (no I/O, no clock reads):
//! - [`event`]: the canonical event schema; parsing and validation into
//!   borrowed [`event::Event`]s, or a rejection with a fixed reason code.
//! - [`engine`]: entity state (leads, deals, meetings, accounts, quotas),
//!   windowed additive parts ([`engine::window`]: bucketed rings with running
//!   sums) and current-state gauges, per (rep, team) pair, for one partition.
//! - [`privacy`]: keyed pseudonyms replacing rep ids.
//! - [`processor`]: bytes to [`processor::Outcome`] (applied, duplicate,
//!   ignored, rejected), counted.
//! - [`kpi`]: per-scope totals, derived KPIs and the JSON document.
//! - [`exposition`]: the Prometheus text exposition of the KPI parts.
//! - [`crm`]: HubSpot, Pipedrive, Salesforce CDC, Close and Zoho payloads to
//!   canonical events, element by element, and how each CRM's webhook
//!   requests are authenticated.
//!
//! Around it:
//! - [`config`]: settings from `config/default.toml`, files and environment.
//! - [`replay`]: runs the engine over an NDJSON file on the event clock
//!   (`kpistream replay`), and shows what native payloads become
//!   (`kpistream adapt`).
//! - [`demo`]: the simulator producing to Kafka, and `kpistream demo` on
//!   librdkafka's in-process mock cluster.
//! - [`sim`]: a seeded, deterministic generator of realistic event streams.
//! - [`snapshot`]: the versioned, checksummed snapshot format and the
//!   directory that keeps each partition's newest snapshots.
//! - [`source`]: the Kafka consumer-group member: one processor per assigned
//!   partition, restore and seek on assignment, snapshot and commit on
//!   revocation, dead letters for rejected messages.
//! - [`http`]: `/`, `/metrics`, `/api/v1/kpis`, `/healthz`, `/readyz` (axum).
//! - [`webhook`]: the CRM webhook receiver: checks each request and
//!   produces it to its input topic before answering.
//! - [`telemetry`]: the service's own metrics.
//! - [`service`]: `kpistream run`: wires the ingest thread, the HTTP server
//!   and graceful shutdown.

pub mod config;
pub mod crm;
pub mod demo;
pub mod engine;
pub mod event;
pub mod exposition;
pub mod http;
pub mod kpi;
pub mod output;
pub mod privacy;
pub mod processor;
pub mod replay;
pub mod service;
pub mod sim;
pub mod snapshot;
pub mod source;
pub mod telemetry;
pub mod webhook;
