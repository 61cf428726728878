//! The official `openai` Python client against a real `reins serve` process
//! (installed by `scripts/test.sh` / `.ci/run` from tests/clients/requirements.txt).

use reins_testing::{plugins, server};
use std::process::Command;
use std::time::Duration;

const CONFIG: &str = r#"
plugins_dir = "."

[providers.script]
kind = "scripted"
responses = [
  { match = "maximum", attempt = 2, content = { answer = 7 } },
  { match = "good", content = { answer = 42 } },
  { match = "bad", content = "{\"answer\": \"forty-two\"}" },
  { match = "refund", tool_calls = [ { name = "issue_refund", arguments = { order = "A-1", amount = 20 } } ] },
  { attempt = 2, content = "{\"answer\": \"still words\"}" },
]

[pipelines.answer]
model = "script"
normalizers = ["normalize-text"]
schema = '{"type":"object","required":["answer"],"properties":{"answer":{"type":"integer"}}}'

[pipelines.answer.repair]
max_attempts = 2

[pipelines.refunds]
model = "script"
normalizers = ["normalize-text"]
constraints = "tool-manifest"
gates = ["spend-limit"]
"#;

/// Appended to `plugins::REFUND_TOOL`: a tool this caller is not given.
const MORE_TOOLS: &str = r#"
[[config.tools]]
name = "delete_account"
description = "Not for this caller"
access = "irreversible"
parameters = { type = "object" }
"#;

#[test]
fn official_openai_python_client_works_against_reins_serve() {
    let dir = plugins::plugins_dir(&["normalize-text", "spend-limit", "tool-manifest"]);
    std::fs::write(
        dir.path().join("tool-manifest.toml"),
        format!("{}{MORE_TOOLS}", plugins::REFUND_TOOL),
    )
    .expect("tools sidecar");
    let config = dir.path().join("reins.toml");
    std::fs::write(&config, CONFIG).expect("config");

    let mut served = server::serve(&config);
    let base = format!("{}/v1", served.base);

    let script = plugins::repo_root().join("tests/clients/openai_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&base)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'openai'") {
        panic!(
            "the `openai` Python package is missing: pip install -r tests/clients/requirements.txt"
        );
    }

    // SIGTERM: the server finishes what it has and exits 0.
    let child = &mut served.child;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            waited < Duration::from_secs(20),
            "reins serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    };

    assert!(
        out.status.success(),
        "python client checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("7 passed, 0 failed"), "{stdout}");
    assert!(
        status.success(),
        "reins serve exited with {status:?} after SIGTERM"
    );
}
