//! What the network layers cost a request (see BENCHMARKS.md, "Network
//! defaults"): `GET /healthz` through the router with the layers
//! (`reins::server::router`: security headers, failed-auth slowing, the
//! Host/Origin guard) and without them (`reins::server::routes`), in the
//! same run, alternating:
//!
//! 1. in-process (tower `oneshot`, no socket): the layers' own cost;
//! 2. over a loopback socket (HTTP/1.1 keep-alive, reqwest): what a client sees.
//!
//! The server is open (no tokens), so the guard checks `Host` and the
//! `Origin` every request carries.
//!
//! cargo bench -p reins --bench network

use axum::body::Body;
use axum::extract::ConnectInfo;
use reins::Host;
use reins::server::{self, AppState, ServerSettings};
use reins_testing::bench::{Sampling, median_ns};
use reins_testing::plugins;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

fn request() -> axum::http::Request<Body> {
    let mut req = axum::http::Request::get("/healthz")
        .header("host", "127.0.0.1:8080")
        .header("origin", "http://localhost:3000")
        .body(Body::empty())
        .expect("request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    req
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    server::install_metrics();
    let dir = plugins::plugins_dir(&[]);
    let host = rt
        .block_on(
            Host::builder()
                .config_str("plugins_dir = \".\"\n", dir.path())
                .build(),
        )
        .expect("host");
    let settings = ServerSettings::from_config(host.boot()).expect("[server]");
    let state = AppState::new(Arc::new(host), &settings).expect("state");
    let layered = server::router(state.clone(), settings.body_limit_bytes);
    let bare = server::routes(state, settings.body_limit_bytes);

    let sampling = Sampling {
        warmup: 2_000,
        batch: 500,
        budget: Duration::from_secs(2),
    };
    let rt = &rt;
    let oneshot = |app: &axum::Router| {
        let app = app.clone();
        move || {
            let resp = rt
                .block_on(app.clone().oneshot(request()))
                .expect("infallible");
            assert!(resp.status().is_success());
        }
    };
    // Alternate three times so drift (frequency, caches) hits both alike.
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        without.push(median_ns(&sampling, oneshot(&bare)));
        with.push(median_ns(&sampling, oneshot(&layered)));
    }
    let (with_ns, without_ns) = (min(&with), min(&without));

    let socket_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let base_layered = socket_rt.block_on(reins_testing::server::listen(layered));
    let base_bare = socket_rt.block_on(reins_testing::server::listen(bare));
    let client = reqwest::Client::new();
    let socket_sampling = Sampling {
        warmup: 500,
        batch: 50,
        budget: Duration::from_secs(2),
    };
    let http = |base: &str| {
        let url = format!("{base}/healthz");
        let client = client.clone();
        let rt = &socket_rt;
        move || {
            let status = rt.block_on(async {
                client
                    .get(&url)
                    .header("origin", "http://localhost:3000")
                    .send()
                    .await
                    .expect("healthz")
                    .status()
            });
            assert!(status.is_success());
        }
    };
    let (mut with_http, mut without_http) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        without_http.push(median_ns(&socket_sampling, http(&base_bare)));
        with_http.push(median_ns(&socket_sampling, http(&base_layered)));
    }
    let (with_http_ns, without_http_ns) = (min(&with_http), min(&without_http));

    println!("| GET /healthz | without layers | with layers | added | ratio |");
    println!("|---|---:|---:|---:|---:|");
    for (name, without, with) in [
        ("in-process (oneshot)", without_ns, with_ns),
        ("loopback HTTP/1.1", without_http_ns, with_http_ns),
    ] {
        println!(
            "| {name} | {:.2} µs | {:.2} µs | {:.2} µs | {:.2}× |",
            without / 1e3,
            with / 1e3,
            (with - without) / 1e3,
            with / without
        );
    }
}

/// The best of the alternated medians: the least disturbed measurement.
fn min(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::INFINITY, f64::min)
}
