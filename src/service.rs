//! `kpistream run`: the ingest thread and the HTTP server, and their
//! shutdown: stop fetching, snapshot and commit, then stop serving.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_client::registry::Registry;
use tracing::{debug, error, info};

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::kpi::Layout;
use crate::output::Publisher;
use crate::source::{self, Control, ViewRequest};
use crate::telemetry::Metrics;

/// Runs the service until `shutdown` completes or ingestion fails.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    metrics.init_outcomes();
    let (requests, inbox) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));

    let listener = tokio::net::TcpListener::bind(settings.http_listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.http_listen))?;
    info!(addr = %listener.local_addr()?, "http listening");
    let layout = Arc::new(Layout::new(&settings.engine));
    let publisher = match &settings.output {
        Some(o) => Some((
            Publisher::new(&settings, &o.topic, layout.clone(), metrics.clone())?,
            o.interval,
        )),
        None => None,
    };
    let output_requests = requests.clone();
    let app = http::router(AppState {
        requests,
        registry: Arc::new(registry),
        metrics: metrics.clone(),
        layout,
        ready: ready.clone(),
        max_exported_reps: settings.max_exported_reps,
        limits: settings.http_limits,
        metrics_auth: settings.metrics_auth.clone(),
        api_auth: settings.api_auth.clone(),
    });
    let app = match crate::webhook::Hooks::new(&settings, metrics.clone())? {
        Some(hooks) => {
            info!("CRM webhook receiver on");
            app.merge(crate::webhook::router(
                hooks,
                settings.http_limits.max_request_bytes,
            ))
        }
        None => app,
    };
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let tls = match &settings.http_tls {
        Some((cert, key)) => Some(http::tls_config(cert, key).await.with_context(|| {
            format!(
                "http.tls_cert_file / http.tls_key_file: cannot load {} and {}",
                cert.display(),
                key.display()
            )
        })?),
        None => None,
    };
    let server = tokio::spawn(http::serve(listener, app, tls, async move {
        let _ = http_stopped.await;
    }));

    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let ingest_settings = settings.clone();
    let control = Control {
        shutdown: stop.clone(),
        ready,
    };
    std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || {
            let result = source::run(&ingest_settings, metrics, inbox, control);
            let _ = done_tx.send(result);
        })?;

    let output = publisher.map(|(publisher, interval)| {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("output".into())
            .spawn(move || publish_loop(publisher, interval, output_requests, &stop))
    });
    let output = output.transpose()?;

    tokio::pin!(done_rx);
    let result = tokio::select! {
        r = &mut done_rx => r.unwrap_or_else(|_| Err(anyhow::anyhow!("ingest thread panicked")))
            .context("ingestion stopped"),
        () = shutdown => {
            info!("shutdown requested");
            stop.store(true, Ordering::Release);
            match tokio::time::timeout(settings.shutdown_timeout, &mut done_rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(anyhow::anyhow!("ingest thread panicked")),
                Err(_) => Err(anyhow::anyhow!(
                    "ingest did not stop within shutdown.timeout ({:?})",
                    settings.shutdown_timeout
                )),
            }
        }
    };
    stop.store(true, Ordering::Release);
    if let Some(o) = output {
        let _ = tokio::task::spawn_blocking(move || o.join()).await;
    }
    let _ = stop_http.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server).await;
    match &result {
        Ok(()) => info!("stopped cleanly"),
        Err(e) => error!(error = %format!("{e:#}"), "stopped with an error"),
    }
    result
}

/// Every `interval`, asks the ingest loop for a copy of the state and
/// produces the KPI documents that changed; once more at shutdown.
fn publish_loop(
    mut publisher: Publisher,
    interval: Duration,
    requests: Sender<ViewRequest>,
    stop: &AtomicBool,
) {
    let mut next = Instant::now() + interval;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        if stopping || Instant::now() >= next {
            let (reply, rx) = tokio::sync::oneshot::channel();
            if requests.send(ViewRequest { reply }).is_ok() {
                if let Ok(copy) = rx.blocking_recv() {
                    let n = publisher.publish(&copy.view);
                    debug!(documents = n, "KPI documents produced");
                }
            }
            next = Instant::now() + interval;
        }
        if stopping {
            publisher.flush(Duration::from_secs(5));
            return;
        }
        std::thread::sleep(Duration::from_millis(50).min(interval));
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
