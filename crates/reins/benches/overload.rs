//! Overload (BENCHMARKS.md, "Under pressure"): a busy upstream (64 calls
//! at once, 2 s each, 429 with `Retry-After: 1` past that, about 32 calls/s)
//! behind a real `reins serve`, driven by 1,000 connections that send
//! `/v1/chat/completions` back to back for 60 s, while a probe asks
//! `/healthz` ten times a second on its own connection.
//!
//! The baseline in the same run is the upstream's own capacity: what it
//! served against `64 / 2 s × duration`. It prints the completed share, the
//! refusals (429) with their latency, any other answer, the breaker's trips
//! and the `/healthz` latency throughout.
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
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}

async fn run() {
    let seconds = env_u64("REINS_BENCH_SECONDS", 60);
    let connections = env_u64("REINS_BENCH_CONNECTIONS", 1000) as usize;
    let limits = std::env::var("REINS_BENCH_PROVIDER").unwrap_or_else(|_| format!("max_in_flight = {CAPACITY}"));
    let up = BusyUpstream::start(CAPACITY, HOLD, 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::new()
        .plugins_dir(".")
        .test_cache()
        .openai("busy", &up.base_url(), "m", &limits)
        .table("[pipelines.p]\nmodel = \"busy\"\n[server]\nrequest_timeout_ms = 60000\n")
        .write(dir.path());
    let served = server::serve(&config);
    let base = served.base.clone();
    println!("reins serve at {base}; upstream {CAPACITY} at once, {} s each; {connections} connections for {seconds} s; provider: {limits}", HOLD.as_secs());

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(90))
        .build()
        .expect("client");
    let body = json!({"model": "p", "messages": [{"role": "user", "content": "Summarize the clause in one line."}]});
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, tally, base, body) = (client.clone(), tally.clone(), base.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let t = Instant::now();
                let answer = client.post(format!("{base}/v1/chat/completions")).json(&body).send().await;
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
    // The probe: its own client, so it never waits behind the load's pool.
    let probe = {
        let base = base.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
            let (mut ok, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
            while Instant::now() < stop {
                let t = Instant::now();
                match client.get(format!("{base}/healthz")).send().await {
                    Ok(r) if r.status().is_success() => {
                        ok += 1;
                        latencies.push(t.elapsed());
                    }
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (ok, failed, latencies)
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    let (probe_ok, probe_failed, mut probe_lat) = probe.await.expect("probe");
    probe_lat.sort();

    let providers: Value = client
        .get(format!("{base}/v1/providers"))
        .send()
        .await
        .expect("providers")
        .json()
        .await
        .expect("json");
    let busy = providers["data"].as_array().and_then(|d| d.first()).cloned().unwrap_or(Value::Null);
    let tally = tally.lock().expect("tally");
    let capacity = (CAPACITY as f64 / HOLD.as_secs_f64()) * seconds as f64;
    let completed = tally.by_status.get(&200).map_or(0, Vec::len);
    println!();
    println!("| what | value |");
    println!("|---|---:|");
    println!("| upstream capacity (64 / 2 s × {seconds} s) | {capacity:.0} |");
    println!("| upstream served | {} |", up.served());
    println!("| upstream refused (429 to reins) | {} |", up.refused());
    println!("| completed (200) | {completed} ({:.1} % of capacity) |", completed as f64 * 100.0 / capacity);
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
    println!(
        "| /healthz: ok / failed, p50 / p99 / max ms | {probe_ok} / {probe_failed}, {} / {} / {} |",
        ms(quantile(&probe_lat, 0.5)),
        ms(quantile(&probe_lat, 0.99)),
        ms(probe_lat.last().copied().unwrap_or_default())
    );
}
