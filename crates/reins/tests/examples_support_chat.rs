//! `examples/support-chat` run exactly as its README says (`reins run` on
//! each question, reading the built plugins and setting them up itself): PII
//! and a secret redacted with no model call, a blocked phrase repaired, a
//! judge's fail repaired with the judge's tokens in the usage.

use reins_testing::plugins;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// `reins run ... --trace json` on one question: (exit code, output, the run result).
fn ask(dir: &Path, question: &str) -> (i32, Value, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_reins"))
        .args([
            "run",
            "--pipeline",
            "support",
            "--trace",
            "json",
            "--config",
        ])
        .arg(dir.join("reins.toml"))
        .arg("--input")
        .arg(dir.join(question))
        .output()
        .expect("run reins");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let output = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    let result = serde_json::from_str(stderr.trim())
        .unwrap_or_else(|_| panic!("trace JSON on stderr: {stderr}"));
    (out.status.code().unwrap_or(-1), output, result)
}

#[test]
fn the_support_chat_example_runs_as_its_readme_says() {
    let dir = plugins::example("support-chat");

    let (code, output, result) = ask(dir.path(), "order.txt");
    assert_eq!(code, 0, "{result}");
    let text = output.as_str().expect("a prose answer");
    assert!(
        text.contains("[EMAIL]")
            && text.contains("[PHONE]")
            && text.contains("[SECRET:openai-api-key]"),
        "{text}"
    );
    assert!(
        !text.contains("help@shop.example") && !text.contains("7946") && !text.contains("sk-proj-"),
        "{text}"
    );
    assert_eq!(
        result["attempts"].as_array().map(Vec::len),
        Some(1),
        "redactions need no model call"
    );
    // The trace notes each redaction by kind and position, never the value.
    let notes = result["attempts"][0]["violations"].to_string();
    assert!(
        notes.contains("redacted")
            && !notes.contains("help@shop.example")
            && !notes.contains("sk-proj-"),
        "{notes}"
    );

    let (code, output, result) = ask(dir.path(), "invest.txt");
    assert_eq!(code, 0, "{result}");
    assert!(
        output
            .as_str()
            .is_some_and(|t| t.starts_with("I can't give financial advice")),
        "{output}"
    );
    assert_eq!(
        result["attempts"][0]["violations"][0]["source"],
        "blocklist"
    );

    let (code, output, result) = ask(dir.path(), "compare.txt");
    assert_eq!(code, 0, "{result}");
    assert!(
        !output.as_str().unwrap_or_default().contains("Acme"),
        "{output}"
    );
    let first = &result["attempts"][0]["violations"][0];
    assert_eq!(first["source"], "judge");
    assert!(
        first["message"]
            .as_str()
            .is_some_and(|m| m.contains("competitor")),
        "{first}"
    );
    // The judge's tokens (138 + 115 as it reported them) are in the run's usage.
    assert!(
        result["tokens"]["total"]
            .as_u64()
            .is_some_and(|t| t >= 138 + 115),
        "{}",
        result["tokens"]
    );
}
