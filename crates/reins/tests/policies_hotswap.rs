//! Hot swap across languages on a real `reins serve`: the validator `stamp`
//! is the Rust fixture `stamp-a` (message "a"); under load its file is
//! replaced by a Python build (message "python"). Every request succeeds,
//! the requests made while the 18 MB component compiles (cold cache, seconds)
//! are still served by the Rust version without waiting for the compile,
//! and then the new behaviour shows.

mod policies_support;

use reins_testing::plugins;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
plugins_dir = "plugins"
watch = true

[runtime]
cache_dir = "CACHE_DIR"

[providers.script]
kind = "scripted"
responses = [ { content = { answer = 42 } } ]

[pipelines.stamped]
model = "script"
validators = ["stamp"]
"#;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One answered request: when it started and finished (since the test
/// start), how long it took, and the stamp the validator left (or what went wrong).
#[derive(Debug, Clone)]
struct Sample {
    started: Duration,
    done: Duration,
    latency: Duration,
    stamp: Result<String, String>,
}

fn stamp_of(status: u16, body: &Value) -> Result<String, String> {
    if status != 200 || body["status"] != "completed" {
        return Err(format!("HTTP {status}: {body}"));
    }
    body["attempts"][0]["violations"]
        .as_array()
        .and_then(|v| v.iter().find(|f| f["code"] == "stamp"))
        .and_then(|f| f["message"].as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("no stamp in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_validator_is_replaced_by_python_under_load_without_failures() {
    let python = policies_support::python_stamp();
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    plugins::install(&plugins, "stamp-a", "stamp");
    let config = dir.path().join("reins.toml");
    // A fresh compile cache: the Python component compiles cold (seconds).
    let cache = dir.path().join("cache");
    std::fs::write(
        &config,
        CONFIG.replace("CACHE_DIR", &cache.to_string_lossy()),
    )
    .expect("config");

    let mut child = Command::new(env!("CARGO_BIN_EXE_reins"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start reins serve");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let base = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break Some(url.to_string());
                    }
                }
                _ => break None,
            }
        };
        // Keep draining so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        url
    })
    .await
    .expect("join")
    .expect("reins serve exited before listening");
    let url = format!("{base}/v1/pipelines/stamped/runs");

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (url, stop) = (url.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut samples = Vec::new();
            // Bounded: at most 3 minutes or 100k requests.
            while !stop.load(Ordering::Relaxed)
                && samples.len() < 100_000
                && start.elapsed() < Duration::from_secs(180)
            {
                let t = Instant::now();
                let started = start.elapsed();
                let res = http
                    .post(&url)
                    .json(&json!({"input": "stamp this"}))
                    .send()
                    .await;
                let stamp = match res {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        match r.json::<Value>().await {
                            Ok(body) => stamp_of(status, &body),
                            Err(e) => Err(format!("HTTP {status}: bad body: {e}")),
                        }
                    }
                    Err(e) => Err(format!("request failed: {e}")),
                };
                samples.push(Sample {
                    started,
                    done: start.elapsed(),
                    latency: t.elapsed(),
                    stamp,
                });
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            samples
        }));
    }

    // Rust serves for a while, then the Python file (and its sidecar) replace it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let swap_at = start.elapsed();
    let sidecar = python.with_extension("toml");
    for (from, to) in [
        (&sidecar, plugins.join("stamp.toml")),
        (&python, plugins.join("stamp.wasm")),
    ] {
        let tmp = to.with_extension("partial");
        std::fs::copy(from, &tmp).expect("copy");
        std::fs::rename(&tmp, &to).expect("rename");
    }

    // Wait for the new behaviour (bounded), then a little more load.
    let probe = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut swapped_at = None;
    while Instant::now() < deadline {
        if let Ok(r) = probe
            .post(&url)
            .json(&json!({"input": "probe"}))
            .send()
            .await
        {
            let status = r.status().as_u16();
            if let Ok(body) = r.json::<Value>().await
                && stamp_of(status, &body).as_deref() == Ok("python")
            {
                swapped_at = Some(start.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples: Vec<Sample> = Vec::new();
    for c in clients {
        samples.extend(c.await.expect("client"));
    }
    drop(server);

    let swapped_at = swapped_at.expect("the Python version never answered within 150 s");
    let failures: Vec<&Sample> = samples.iter().filter(|s| s.stamp.is_err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        samples.len(),
        &failures[..failures.len().min(5)]
    );

    // While the Python component compiled, the Rust version kept answering.
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.done > swap_at && s.done < swapped_at)
        .collect();
    let window = swapped_at - swap_at;
    let max_latency = during.iter().map(|s| s.latency).max().unwrap_or_default();
    eprintln!(
        "swap: {} requests in total; {} served during the {:.1} s compile window (max latency {:.0} ms); python from {:.1} s",
        samples.len(),
        during.len(),
        window.as_secs_f64(),
        max_latency.as_secs_f64() * 1e3,
        swapped_at.as_secs_f64()
    );
    assert!(
        window > Duration::from_secs(1),
        "the compile should take seconds on a cold cache, took {window:?}"
    );
    assert!(
        during.len() >= 20,
        "only {} requests were served while the new version compiled",
        during.len()
    );
    assert!(
        during
            .iter()
            .all(|s| s.stamp.as_deref() == Ok("a") || s.stamp.as_deref() == Ok("python")),
        "unexpected stamps during the swap"
    );
    // No request waited for the compile: each took a fraction of the window.
    assert!(
        max_latency < window / 3,
        "a request took {max_latency:?} while the compile took {window:?}: requests waited for the compile"
    );
    // Once Python answered, the old version never came back: every request
    // that started after that saw the new version.
    let after: Vec<&Sample> = samples.iter().filter(|s| s.started > swapped_at).collect();
    assert!(!after.is_empty(), "no requests after the swap");
    assert!(
        after.iter().all(|s| s.stamp.as_deref() == Ok("python")),
        "old behaviour after the swap: {:?}",
        after
            .iter()
            .filter(|s| s.stamp.as_deref() != Ok("python"))
            .take(3)
            .collect::<Vec<_>>()
    );
}
