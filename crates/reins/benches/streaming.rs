//! What streaming through Reins costs (see BENCHMARKS.md, "Streaming"):
//! time to the first content byte and to the end of the answer, for the
//! same upstream stream (`reins_testing::model::Step::Stream`: 60 words,
//! one event every 2 ms), read three ways in one run, alternating:
//!
//! 1. straight from the upstream;
//! 2. through `reins serve`, `stream = "checked"` with the `redact-secrets`
//!    and `blocklist` stream checkers (a 24-character hold-back window);
//! 3. through `reins serve`, `stream = "checked"` with no checkers (what the
//!    run itself costs the first byte);
//! 4. through `reins serve`, `stream = "buffered"` (validated whole, then sent).
//!
//! The hold-back window delays the first byte by design: the upstream's own
//! time to the window (the event that brings its text to 24 characters,
//! when Reins offers the first piece to its checkers) is reported too, so the checked stream's own
//! cost is its first byte minus that.
//!
//! cargo bench -p reins --bench streaming [-- REQUESTS]

use reins_testing::config::Config;
use reins_testing::model::{Step, StreamEnd, Upstream, stream_words};
use reins_testing::{plugins, server};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const WINDOW: usize = 24;

/// Time to the first non-empty content delta, to the window, and to the end.
struct Timing {
    first: Duration,
    window: Duration,
    total: Duration,
}

async fn read(client: &reqwest::Client, url: &str, token: Option<&str>, model: &str) -> Timing {
    let body = json!({"model": model, "stream": true,
        "messages": [{"role": "user", "content": "tell me a story"}]});
    let start = Instant::now();
    let mut req = client.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let mut response = req.send().await.expect("send");
    assert!(response.status().is_success(), "{}", response.status());
    let (mut first, mut window) = (None, None);
    let mut text = String::new();
    let mut buf = String::new();
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if let Some(t) = v
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                && !t.is_empty()
            {
                first.get_or_insert_with(|| start.elapsed());
                text.push_str(t);
                if text.chars().count() >= WINDOW {
                    window.get_or_insert_with(|| start.elapsed());
                }
            }
        }
    }
    let total = start.elapsed();
    Timing {
        first: first.unwrap_or(total),
        window: window.unwrap_or(total),
        total,
    }
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let story = "Once upon a time a harness watched every word a model said, and it let each \
        one go only after its checkers had read it, so nothing that should stay private ever \
        left the building, and the people who used it slept well at night because of it, \
        knowing their keys and cards were safe.";
    let upstream = rt.block_on(Upstream::start(move |_| Step::Stream {
        pieces: stream_words(story, Duration::from_millis(2)),
        end: StreamEnd::Done {
            prompt_tokens: 12,
            completion_tokens: 60,
        },
    }));
    let dir = plugins::plugins_dir(&["redact-secrets", "blocklist"]);
    let config = Config::new()
        .plugins_dir(".")
        .test_cache()
        .openai("up", &upstream.base_url(), "up-model", "max_retries = 0")
        .table(
            r#"[pipelines.checked]
model = "up"
output = "text"
stream = "checked"
stream_checkers = ["redact-secrets", "blocklist"]

[pipelines.bare]
model = "up"
output = "text"
stream = "checked"

[pipelines.buffered]
model = "up"
output = "text"
stream = "buffered"
"#,
        )
        .write(dir.path());
    let served = server::serve(&config);
    let client = reqwest::Client::new();
    let direct_url = format!("{}/chat/completions", upstream.base_url());
    let reins_url = format!("{}/v1/chat/completions", served.base);
    let (mut direct, mut checked, mut bare, mut buffered) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        for i in 0..n + 10 {
            let d = read(&client, &direct_url, None, "up-model").await;
            let c = read(&client, &reins_url, None, "checked").await;
            let n = read(&client, &reins_url, None, "bare").await;
            let b = read(&client, &reins_url, None, "buffered").await;
            if i >= 10 {
                direct.push(d);
                checked.push(c);
                bare.push(n);
                buffered.push(b);
            }
        }
    });
    let col =
        |v: &[Timing], f: fn(&Timing) -> Duration| -> Vec<Duration> { v.iter().map(f).collect() };
    println!("{n} requests each, alternating; ms (p50 / p99)");
    println!("| path | first byte | upstream's window | total |");
    println!("|---|---:|---:|---:|");
    for (name, v) in [
        ("straight from the upstream", &direct),
        ("Reins, checked (2 stream checkers)", &checked),
        ("Reins, checked (no checkers)", &bare),
        ("Reins, buffered", &buffered),
    ] {
        let mut first = col(v, |t| t.first);
        let mut window = col(v, |t| t.window);
        let mut total = col(v, |t| t.total);
        println!(
            "| {name} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
            pct(&mut first, 0.5),
            pct(&mut first, 0.99),
            pct(&mut window, 0.5),
            pct(&mut window, 0.99),
            pct(&mut total, 0.5),
            pct(&mut total, 0.99)
        );
    }
    // The checked stream's own cost to the first byte: beyond the upstream
    // reaching the window, per request pair.
    let mut added: Vec<Duration> = checked
        .iter()
        .zip(&direct)
        .map(|(c, d)| c.first.saturating_sub(d.window))
        .collect();
    println!(
        "checked first byte minus the upstream's time to the window: p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut added, 0.5),
        pct(&mut added, 0.99)
    );
    let mut unchecked: Vec<Duration> = bare
        .iter()
        .zip(&direct)
        .map(|(c, d)| c.first.saturating_sub(d.window))
        .collect();
    println!(
        "the same without checkers (the run's own start): p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut unchecked, 0.5),
        pct(&mut unchecked, 0.99)
    );
    drop(served);
}
