//! The HTTP server: `/`, `/metrics`, `/api/v1/kpis`, `/healthz`, `/readyz`.
//!
//! Handlers never touch engine state: they ask the ingest loop for a copy
//! ([`StateCopy`]), which costs the loop one copy of the window sums, and
//! render from that copy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::config::{Credential, HttpLimits};
use crate::crm::signature::constant_time_eq;
use crate::exposition;
use crate::kpi::{self, Filter, Layout, Scope};
use crate::source::{StateCopy, ViewRequest};
use crate::telemetry::{HttpRejectLabels, Metrics};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub requests: Sender<ViewRequest>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub layout: Arc<Layout>,
    pub ready: Arc<AtomicBool>,
    pub max_exported_reps: usize,
    pub limits: HttpLimits,
    pub metrics_auth: Option<Credential>,
    pub api_auth: Option<Credential>,
}

/// What a protected route checks, and where it counts refusals.
#[derive(Clone)]
struct Guard {
    endpoint: &'static str,
    credential: Option<Credential>,
    metrics: Arc<Metrics>,
}

pub fn router(state: AppState) -> Router {
    let guard = |endpoint, credential: &Option<Credential>| Guard {
        endpoint,
        credential: credential.clone(),
        metrics: state.metrics.clone(),
    };
    let metrics_guard = guard("metrics", &state.metrics_auth);
    let api_guard = guard("api", &state.api_auth);
    let busy = Busy {
        permits: Arc::new(tokio::sync::Semaphore::new(
            state.limits.max_concurrent_requests,
        )),
        metrics: state.metrics.clone(),
    };
    // The layer added last runs first: the concurrency limit, then auth.
    let metrics_routes = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(metrics_guard, authorize))
        .route_layer(middleware::from_fn_with_state(busy.clone(), shed));
    let api_routes = Router::new()
        .route("/api/v1/kpis", get(kpis))
        .route_layer(middleware::from_fn_with_state(api_guard, authorize))
        .route_layer(middleware::from_fn_with_state(busy, shed));
    // Probes are neither limited nor protected.
    Router::new()
        .merge(metrics_routes)
        .merge(api_routes)
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(state.limits.max_request_bytes))
        .with_state(state)
}

/// `/`: what this server serves, with links. It holds no data, so it is
/// neither limited nor protected (the pages it links to are).
async fn index() -> axum::response::Html<&'static str> {
    axum::response::Html(INDEX)
}

const INDEX: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kpistream</title>
<style>body{font-family:system-ui,sans-serif;max-width:44em;margin:2em auto;line-height:1.5}code{background:#f3f3f3;padding:0 .2em}</style>
</head><body>
<h1>kpistream</h1>
<p>Live sales KPIs from CRM events.</p>
<ul>
<li><a href="/api/v1/kpis?scope=org&amp;window=24h">/api/v1/kpis</a>: every KPI as JSON, filtered by
<code>scope</code> (<a href="/api/v1/kpis?scope=team&amp;window=7d">team</a>,
<a href="/api/v1/kpis?scope=rep&amp;window=mtd">rep</a>, org), <code>id</code> and <code>window</code></li>
<li><a href="/metrics">/metrics</a>: the KPI parts and kpistream's own metrics, for Prometheus</li>
<li><a href="/healthz">/healthz</a>: liveness</li>
<li><a href="/readyz">/readyz</a>: readiness (partitions assigned and restored)</li>
</ul>
</body></html>
"#;

/// The requests /metrics and /api serve at once.
#[derive(Clone)]
struct Busy {
    permits: Arc<tokio::sync::Semaphore>,
    metrics: Arc<Metrics>,
}

/// Sheds load rather than queueing it: a request that cannot start now
/// gets 503 and is retried by its client (Prometheus scrapes again).
async fn shed(State(b): State<Busy>, req: Request, next: Next) -> Response {
    match b.permits.clone().try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => {
            let endpoint = if req.uri().path() == "/metrics" {
                "metrics"
            } else {
                "api"
            };
            b.metrics
                .http_rejected
                .get_or_create(&HttpRejectLabels {
                    endpoint,
                    reason: "busy",
                })
                .inc();
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests at once (http.max_concurrent_requests)",
            )
        }
    }
}

/// Lets a request through when its `Authorization` header carries the
/// route's credential; 401 otherwise. Nothing about the header is logged.
async fn authorize(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let Some(credential) = &g.credential else {
        return next.run(req).await;
    };
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|h| h.as_bytes())
        .unwrap_or_default();
    let (scheme, expected, challenge) = match credential {
        Credential::Bearer(t) => ("Bearer ", t, "Bearer realm=\"kpistream\""),
        Credential::Basic(b) => ("Basic ", b, "Basic realm=\"kpistream\""),
    };
    let given = header.strip_prefix(scheme.as_bytes()).unwrap_or_default();
    if !given.is_empty() && constant_time_eq(given, expected.as_bytes()) {
        return next.run(req).await;
    }
    g.metrics
        .http_rejected
        .get_or_create(&HttpRejectLabels {
            endpoint: g.endpoint,
            reason: "unauthorized",
        })
        .inc();
    let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong credentials");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static(challenge),
    );
    r
}

/// The listener's TLS: the certificate chain and private key (PEM files).
pub async fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::io::Result<axum_server::tls_rustls::RustlsConfig> {
    // One process-wide crypto provider; a second install is a no-op error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await
}

/// Serves `app` on `listener`, over TLS when `tls` is given, until `stop`
/// completes; then lets open requests finish (at most two seconds).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await;
    };
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        stop.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(2)));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, tls)?
        .handle(handle)
        .serve(app.into_make_service())
        .await
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
    let cost = kpi::result_count(&s.layout, &copy.view, &filter);
    if cost > s.limits.max_api_results {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "this query would return {cost} results, more than http.max_api_results ({}); \
                 filter by scope, id or window",
                s.limits.max_api_results
            ),
        );
    }
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
