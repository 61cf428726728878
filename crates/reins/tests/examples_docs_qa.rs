//! `examples/docs-qa` run as its README says (`reins run` on each question,
//! reading the built plugins): BM25 retrieval over the example's docs, the
//! context-budget plugin under 600 tokens, answers whose citations the
//! citations validator checked (one repaired); and the same pipeline on the
//! real local model (llama-cpp-python serving SmolLM2-135M, started by
//! `scripts/llama-server.sh`), where whatever the model answers, a served
//! answer cites only chunks it was given.

use reins_testing::plugins;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// `reins run ... --trace json` on one question: (exit code, output, the run result).
fn ask(config: &Path, question: &Path) -> (i32, Value, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_reins"))
        .args([
            "run",
            "--pipeline",
            "docs-qa",
            "--trace",
            "json",
            "--config",
        ])
        .arg(config)
        .arg("--input")
        .arg(question)
        .env("REINS_LOG", "off")
        .output()
        .expect("run reins");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let output = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    let at = stderr.find('{').unwrap_or(0);
    let result = serde_json::from_str(stderr[at..].trim())
        .unwrap_or_else(|_| panic!("trace JSON on stderr: {stderr}"));
    (out.status.code().unwrap_or(-1), output, result)
}

fn kept(result: &Value) -> Vec<String> {
    result["context"]["kept"]
        .as_array()
        .map(|k| {
            k.iter()
                .filter_map(|c| c["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The ids an answer cites, `[path#n]`.
fn cited(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        if let Some(close) = rest.find(']') {
            let id = &rest[..close];
            if id.contains('#') && !id.contains(char::is_whitespace) {
                out.push(id.to_owned());
            }
            rest = &rest[close..];
        }
    }
    out
}

#[test]
fn the_docs_qa_example_answers_with_citations_from_its_context() {
    let dir = plugins::example("docs-qa");
    let config = dir.path().join("reins.toml");

    let (code, output, result) = ask(&config, &dir.path().join("argon2.txt"));
    assert_eq!(code, 0, "{result}");
    let answer = output.as_str().expect("a prose answer");
    assert!(answer.contains("64 MiB"), "{answer}");
    let ids = cited(answer);
    assert_eq!(ids, ["guide/encryption.md#2"], "{answer}");
    assert!(kept(&result).contains(&ids[0]), "{result}");
    assert_eq!(result["attempts"].as_array().map(Vec::len), Some(1));
    let context = &result["context"];
    assert!(
        context["used_tokens"].as_u64().unwrap_or(u64::MAX) <= 600,
        "{context}"
    );
    assert_eq!(context["sources"][0]["retriever"], "docs");
    // Every dropped chunk says why.
    for d in context["dropped"].as_array().expect("dropped") {
        assert!(d["reason"].as_str().is_some_and(|r| !r.is_empty()), "{d}");
    }

    // The first answer cites a chunk that is not in the context: repaired.
    let (code, output, result) = ask(&config, &dir.path().join("retention.txt"));
    assert_eq!(code, 0, "{result}");
    assert_eq!(
        result["attempts"].as_array().map(Vec::len),
        Some(2),
        "{result}"
    );
    assert_eq!(
        result["attempts"][0]["violations"][0]["code"], "unknown-citation",
        "{result}"
    );
    let answer = output.as_str().expect("answer");
    assert!(answer.contains("03:15"), "{answer}");
    for id in cited(answer) {
        assert!(kept(&result).contains(&id), "{id} not in {result}");
    }
}

#[test]
fn the_docs_qa_example_runs_on_the_real_local_model() {
    let url = std::env::var("REINS_TEST_LLAMA_URL").unwrap_or_else(|_| {
        panic!(
            "REINS_TEST_LLAMA_URL is not set: run the tests through `bash scripts/test.sh` \
             (or `. scripts/llama-server.sh` yourself)"
        )
    });
    let dir = plugins::example("docs-qa");
    let config = dir.path().join("reins.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace("model = \"writer\"", "model = \"local\"")
        + &format!(
            "\n[providers.local]\nkind = \"openai\"\nbase_url = \"{url}\"\nmodel = \"smollm2\"\nmax_tokens = 120\ntemperature = 0.0\n"
        );
    std::fs::write(&config, text).expect("write");
    for question in ["argon2.txt", "retention.txt", "rate-limit.txt"] {
        let (code, output, result) = ask(&config, &dir.path().join(question));
        // The model was reached with the retrieved context, and the harness
        // judged its answer: served answers cite only what it was given.
        let attempts = result["attempts"].as_array().expect("attempts");
        assert!(!attempts.is_empty(), "{result}");
        assert!(
            attempts.iter().all(|a| a["provider"] == "local"),
            "{result}"
        );
        assert!(!kept(&result).is_empty(), "{result}");
        assert_eq!(
            result["context"]["tokenizer"], "heuristic",
            "smollm2 is not a known tokenizer"
        );
        match code {
            0 => {
                let answer = output.as_str().expect("answer");
                let ids = cited(answer);
                assert!(!ids.is_empty(), "require = true: {answer}");
                for id in ids {
                    assert!(kept(&result).contains(&id), "{id}: {result}");
                }
            }
            _ => {
                assert_eq!(result["status"], "failed", "{result}");
                assert_eq!(result["error"]["kind"], "validation_failed", "{result}");
                let codes: Vec<&str> = attempts
                    .iter()
                    .flat_map(|a| a["violations"].as_array().into_iter().flatten())
                    .filter_map(|v| v["code"].as_str())
                    .collect();
                assert!(
                    codes
                        .iter()
                        .all(|c| ["no-citation", "unknown-citation", "not-in-context"].contains(c)),
                    "{codes:?}"
                );
            }
        }
    }
}
