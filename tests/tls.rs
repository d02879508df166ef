//! HTTPS on the listener (rustls): with a certificate and key, the same
//! routes answer over TLS to a client that trusts the certificate, and
//! neither plain HTTP nor a client that does not trust it gets an answer.

mod common;

use std::process::Command;

use axum::routing::get;
use axum::Router;

use common::kafka::Scratch;

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_listener_speaks_https_with_the_configured_certificate() {
    let dir = Scratch::new("tls");
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=kpistream-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // The settings accept the pair, and refuse half of it.
    let env = |pairs: &[(&str, &std::path::Path)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.display().to_string()))
            .collect::<Vec<_>>()
    };
    let s = kpistream::config::Settings::load_with_env(
        None,
        &Default::default(),
        env(&[
            ("KPISTREAM__HTTP__TLS_CERT_FILE", &cert),
            ("KPISTREAM__HTTP__TLS_KEY_FILE", &key),
        ]),
    )
    .unwrap();
    assert_eq!(s.http_tls, Some((cert.clone(), key.clone())));
    let err = kpistream::config::Settings::load_with_env(
        None,
        &Default::default(),
        env(&[("KPISTREAM__HTTP__TLS_CERT_FILE", &cert)]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("http.tls_cert_file"), "{err}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let tls = rt
        .block_on(kpistream::http::tls_config(&cert, &key))
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().route("/healthz", get(|| async { "ok\n" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(kpistream::http::serve(
        listener,
        app,
        Some(tls),
        async move {
            let _ = stopped.await;
        },
    ));

    let url = format!("https://127.0.0.1:{port}/healthz");
    let cacert = cert.display().to_string();
    assert_eq!(curl(&["--cacert", &cacert, &url]), (true, "ok\n".into()));
    assert!(
        !curl(&[&url]).0,
        "an untrusted certificate is refused by the client"
    );
    let (plain_ok, body) = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert!(!plain_ok || body != "ok\n", "plain HTTP gets no answer");

    let _ = stop.send(());
    rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(5), server).await })
        .expect("the server stops")
        .unwrap()
        .unwrap();
}
