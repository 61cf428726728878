//! Overload (BENCHMARKS.md, "Under pressure"): a busy upstream (64 calls
//! at once, 2 s each, 429 with `Retry-After: 1` past that, about 32 calls/s)
//! behind a real `reins serve`, driven by 1,000 connections that send
//! `/v1/chat/completions` back to back for 60 s, while a probe asks
//! `/healthz` ten times a second on its own connection.
//!
//! The baseline in the same run is the upstream's own capacity: what it
//! served against `64 / 2 s × duration`. It prints the completed share, the
//! refusals (429) with their latency, any other answer, the breaker's trips
//! and the `/healthz` latency throughout, on the main listener and on the
//! ops listener (`[server] ops_listen`).
//!
//! cargo bench -p reins --bench overload
//! (REINS_BENCH_SECONDS and REINS_BENCH_CONNECTIONS change the load; a
//! provider key, e.g. REINS_BENCH_PROVIDER='max_in_flight = 64', replaces
//! the provider's limits.)

use reins_testing::bench::quantile;
use reins_testing::busy::BusyUpstream;
use reins_testing::config::Config;
use reins_testing::server;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CAPACITY: usize = 64;
const HOLD: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Tally {
    by_status: BTreeMap<u16, Vec<Duration>>,
    errors: u64,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn main() {
    refusal_in_process();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}

/// What a refused request costs the server, in process (tower `oneshot`,
/// no socket): `POST /v1/chat/completions` to a saturated provider against
/// `GET /healthz` through the same router, alternating.
fn refusal_in_process() {
    use axum::body::Body;
    use tower::ServiceExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    reins::server::install_metrics();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "plugins_dir = \".\"\n[providers.busy]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n\
                  [pipelines.p]\nmodel = \"busy\"\n[state]\nkind = \"memory\"\n";
    let host = rt
        .block_on(
            reins::Host::builder()
                .config_str(config, dir.path())
                .build(),
        )
        .expect("host");
    host.breaker("busy")
        .expect("busy")
        .admission()
        .saturate(Some(Duration::from_secs(3600)));
    let settings = reins::server::ServerSettings::from_config(host.boot()).expect("[server]");
    let state = reins::server::AppState::new(std::sync::Arc::new(host), &settings).expect("state");
    let app = reins::server::router(state, settings.body_limit_bytes);
    let body = json!({"model": "p", "messages": [{"role": "user", "content": "Summarize the clause in one line."}]}).to_string();
    let sampling = reins_testing::bench::Sampling {
        warmup: 500,
        batch: 200,
        budget: Duration::from_secs(2),
    };
    let call =
        |post: bool, expect: u16| {
            let (app, body, rt) = (app.clone(), body.clone(), &rt);
            move || {
                let mut req = if post {
                    axum::http::Request::post("/v1/chat/completions")
                        .header("content-type", "application/json")
                        .body(Body::from(body.clone()))
                } else {
                    axum::http::Request::get("/healthz").body(Body::empty())
                }
                .expect("request");
                req.extensions_mut().insert(axum::extract::ConnectInfo(
                    std::net::SocketAddr::from(([127, 0, 0, 1], 40_000)),
                ));
                req.headers_mut().insert(
                    "host",
                    axum::http::HeaderValue::from_static("127.0.0.1:8080"),
                );
                let resp = rt.block_on(app.clone().oneshot(req)).expect("infallible");
                assert_eq!(resp.status().as_u16(), expect);
                let _ = rt.block_on(axum::body::to_bytes(resp.into_body(), usize::MAX));
            }
        };
    let (mut healthz, mut refused) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        healthz.push(reins_testing::bench::median_ns(&sampling, call(false, 200)));
        refused.push(reins_testing::bench::median_ns(&sampling, call(true, 429)));
    }
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (h, r) = (min(&healthz), min(&refused));
    println!("| in process | GET /healthz | refused chat completion (429) | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| median per request | {:.2} µs | {:.2} µs | {:.1}× |",
        h / 1e3,
        r / 1e3,
        r / h
    );
    println!();
}

async fn run() {
    let seconds = env_u64("REINS_BENCH_SECONDS", 60);
    let connections = env_u64("REINS_BENCH_CONNECTIONS", 1000) as usize;
    let limits = std::env::var("REINS_BENCH_PROVIDER")
        .unwrap_or_else(|_| format!("max_in_flight = {CAPACITY}"));
    let up = BusyUpstream::start(CAPACITY, HOLD, 1).await;
    // The ops listener's address (a port just free).
    let ops = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::new()
        .plugins_dir(".")
        .test_cache()
        .openai("busy", &up.base_url(), "m", &limits)
        .table(&format!(
            "[pipelines.p]\nmodel = \"busy\"\n[server]\nrequest_timeout_ms = 60000\nops_listen = \"{ops}\"\n\
             # Every client is 127.0.0.1 here; in the field they are many addresses.\n\
             max_connections_per_ip = 4096\n"
        ))
        .write(dir.path());
    let served = server::serve(&config);
    let base = served.base.clone();
    println!(
        "reins serve at {base}; upstream {CAPACITY} at once, {} s each; {connections} connections for {seconds} s; provider: {limits}",
        HOLD.as_secs()
    );

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(90))
        .build()
        .expect("client");
    let body = json!({"model": "p", "messages": [{"role": "user", "content": "Summarize the clause in one line."}]});
    // wrk when it is installed (C, one thread: it leaves the server more of
    // the two cores than an in-process client would); else reqwest tasks.
    let wrk = std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok();
    let mut tasks = Vec::new();
    let mut wrk_run = None;
    if wrk {
        let script = dir.path().join("post.lua");
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '{body}'\n"
            ),
        )
        .expect("lua");
        let child = std::process::Command::new("wrk")
            .args([
                "-t1",
                &format!("-c{connections}"),
                &format!("-d{seconds}s"),
                "--timeout",
                "60s",
                "--latency",
                "-s",
            ])
            .arg(&script)
            .arg(format!("{base}/v1/chat/completions"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("wrk");
        wrk_run = Some(tokio::task::spawn_blocking(move || {
            child.wait_with_output().expect("wrk output")
        }));
    } else {
        for _ in 0..connections {
            let (client, tally, base, body) =
                (client.clone(), tally.clone(), base.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < stop {
                    let t = Instant::now();
                    let answer = client
                        .post(format!("{base}/v1/chat/completions"))
                        .json(&body)
                        .send()
                        .await;
                    let outcome = match answer {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let _ = resp.bytes().await;
                            Some(status)
                        }
                        Err(_) => None,
                    };
                    let took = t.elapsed();
                    let mut tally = tally.lock().expect("tally");
                    match outcome {
                        Some(s) => tally.by_status.entry(s).or_default().push(took),
                        None => tally.errors += 1,
                    }
                }
            }));
        }
    }
    // The probes, each on its own connection (a client of its own), ten
    // times a second: `/healthz`, and one chat completion, whose refusals
    // are timed apart from the load's.
    let probe = |base: String, path: &'static str, post: bool| {
        let body = body.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client");
            let mut seen: BTreeMap<u16, Vec<Duration>> = BTreeMap::new();
            let mut failed = 0u64;
            while Instant::now() < stop {
                let t = Instant::now();
                let req = if post {
                    client.post(format!("{base}{path}")).json(&body)
                } else {
                    client.get(format!("{base}{path}"))
                };
                match req.send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let _ = r.bytes().await;
                        seen.entry(status).or_default().push(t.elapsed());
                    }
                    Err(_) => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for v in seen.values_mut() {
                v.sort();
            }
            (seen, failed)
        })
    };
    let health_probe = probe(base.clone(), "/healthz", false);
    let ops_probe = probe(format!("http://{ops}"), "/healthz", false);
    let chat_probe = probe(base.clone(), "/v1/chat/completions", true);
    for t in tasks {
        let _ = t.await;
    }
    let wrk_text = match wrk_run {
        Some(run) => String::from_utf8_lossy(&run.await.expect("wrk").stdout).to_string(),
        None => String::new(),
    };

    let (health, health_failed) = health_probe.await.expect("probe");
    let (ops_health, ops_failed) = ops_probe.await.expect("probe");
    let (chat_seen, chat_failed) = chat_probe.await.expect("probe");

    let providers: Value = client
        .get(format!("{base}/v1/providers"))
        .send()
        .await
        .expect("providers")
        .json()
        .await
        .expect("json");
    let busy = providers["data"]
        .as_array()
        .and_then(|d| d.first())
        .cloned()
        .unwrap_or(Value::Null);
    let tally = tally.lock().expect("tally");
    // Nothing can complete in the first 2 s: the capacity is that of the
    // rest of the window, and what the upstream completed within it.
    let capacity =
        (CAPACITY as f64 / HOLD.as_secs_f64()) * (seconds as f64 - HOLD.as_secs_f64()).max(0.0);
    let completed = up.served_by(stop);
    if wrk {
        println!("{wrk_text}");
    }
    println!();
    println!("| what | value |");
    println!("|---|---:|");
    println!(
        "| upstream capacity within the window (64 / 2 s × ({seconds} s − the first 2 s)) | {capacity:.0} |"
    );
    println!("| upstream served | {} |", up.served());
    println!("| upstream refused (429 to reins) | {} |", up.refused());
    println!(
        "| completed within the window | {completed} ({:.1} % of capacity) |",
        completed as f64 * 100.0 / capacity
    );
    for (status, lat) in tally.by_status.iter() {
        let mut lat = lat.clone();
        lat.sort();
        println!(
            "| {status}: count, p50 / p99 / max ms | {} · {} / {} / {} |",
            lat.len(),
            ms(quantile(&lat, 0.5)),
            ms(quantile(&lat, 0.99)),
            ms(lat.last().copied().unwrap_or_default())
        );
    }
    println!("| transport errors | {} |", tally.errors);
    println!("| breaker trips | {} |", busy["breaker"]["trips"]);
    println!("| saturations | {} |", busy["admission"]["saturations"]);
    let row = |what: &str, seen: &BTreeMap<u16, Vec<Duration>>, failed: u64| {
        for (status, lat) in seen {
            println!(
                "| {what} {status}: count, p50 / p99 / max ms | {} · {} / {} / {} |",
                lat.len(),
                ms(quantile(lat, 0.5)),
                ms(quantile(lat, 0.99)),
                ms(lat.last().copied().unwrap_or_default())
            );
        }
        if failed > 0 {
            println!("| {what}: failed | {failed} |");
        }
    };
    row("probe /healthz (main listener)", &health, health_failed);
    row("probe /healthz (ops_listen)", &ops_health, ops_failed);
    row("probe chat", &chat_seen, chat_failed);
}
