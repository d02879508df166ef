//! The HTTP server: `/metrics`, `/api/v1/kpis`, `/healthz`, `/readyz`.
//!
//! Handlers never touch engine state: they ask the ingest loop for a copy
//! ([`StateCopy`]), which costs the loop one copy of the window sums, and
//! render from that copy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::exposition;
use crate::kpi::{self, Filter, Layout, Scope};
use crate::source::{StateCopy, ViewRequest};
use crate::telemetry::Metrics;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub requests: Sender<ViewRequest>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub layout: Arc<Layout>,
    pub ready: Arc<AtomicBool>,
    pub max_exported_reps: usize,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/kpis", get(kpis))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

impl AppState {
    /// A copy of the KPI state from the ingest loop.
    async fn copy(&self) -> Result<StateCopy, Response> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.requests
            .send(ViewRequest { reply })
            .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "ingestion has stopped"))?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(copy)) => Ok(copy),
            _ => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the ingest loop did not answer in time",
            )),
        }
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no partition assigned and restored yet\n",
        )
            .into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let copy = match s.copy().await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let started = std::time::Instant::now();
    let mut body = String::with_capacity(1 << 20);
    let stats = exposition::render(&s.layout, &copy.view, s.max_exported_reps, &mut body);
    s.metrics
        .scrape_duration
        .observe(started.elapsed().as_secs_f64());
    s.metrics.scrape_series.set(stats.series as i64);
    s.metrics.folded_reps.set(stats.folded_reps as i64);
    let mut om = String::with_capacity(1 << 14);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut om, &s.registry) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    exposition::openmetrics_to_text(&om, &mut body);
    s.metrics.scrape_bytes.set(body.len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Parses the query of `/api/v1/kpis`: `scope`, `id` and `window`.
pub fn parse_filter(layout: &Layout, query: &HashMap<String, String>) -> Result<Filter, String> {
    let mut f = Filter::default();
    for (k, v) in query {
        match k.as_str() {
            "scope" => {
                f.scope = Some(
                    Scope::parse(v)
                        .ok_or_else(|| format!("unknown scope `{v}`: use org, rep or team"))?,
                )
            }
            "window" => {
                if !layout.windows.contains(v) {
                    return Err(format!(
                        "unknown window `{v}`: use one of {}",
                        layout.windows.join(", ")
                    ));
                }
                f.window = Some(v.clone());
            }
            "id" => f.id = Some(v.clone()),
            other => {
                return Err(format!(
                    "unknown parameter `{other}`: use scope, id, window"
                ))
            }
        }
    }
    Ok(f)
}

async fn kpis(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let filter = match parse_filter(&s.layout, &q) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let copy = match s.copy().await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut doc = kpi::document(&s.layout, &copy.view, &filter);
    if filter.id.is_some() && doc["results"].as_array().is_some_and(Vec::is_empty) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown id `{}` for this scope",
                filter.id.unwrap_or_default()
            ),
        );
    }
    doc["outcomes"] = copy.counts.to_json();
    Json(doc).into_response()
}
