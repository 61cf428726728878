//! The approvals web page in headless Chromium (selenium + Debian's
//! chromium/chromium-driver, installed by `.ci/run`): sign in with a token,
//! approve a pending refund, and check that the webhook sink received it
//! exactly once.

use reins_testing::config::Config;
use reins_testing::webhook::Sink;
use reins_testing::{plugins, server};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread")]
async fn approve_a_refund_through_the_web_page() {
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: apt-get install chromium chromium-driver (see .ci/run)"
        );
    }
    let sink = Sink::start().await;
    let sink_url = sink.url();

    let token = "approver-secret-token";
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let agent_token = "agent-secret-token";
    let agent_hash = hex::encode(Sha256::digest(agent_token.as_bytes()));
    let dir = plugins::plugins_dir(&["tool-manifest", "spend-limit"]);
    std::fs::write(dir.path().join("tool-manifest.toml"), plugins::REFUND_TOOL).expect("sidecar");
    std::fs::write(
        dir.path().join("spend-limit.toml"),
        "[config]\nescalate_above = 100\n",
    )
    .expect("sidecar");
    let config_path = Config::new()
        .plugins_dir(".")
        .test_cache()
        // The agent starts the run; alice (same tenant) approves it on the page.
        .table(&format!(
            "[[server.tokens]]\nname = \"alice\"\nsha256 = \"{hash}\"\nscopes = [\"run\", \"approve\"]\nclaims = {{ tenant = \"acme\" }}\n\
             [[server.tokens]]\nname = \"agent\"\nsha256 = \"{agent_hash}\"\nscopes = [\"run\"]\nclaims = {{ tenant = \"acme\" }}\n"
        ))
        .scripted(
            "script",
            r#"[ { match = "refund", tool_calls = [ { name = "issue_refund", arguments = { order = "A-77", amount = 500 } } ] } ]"#,
        )
        .table(&format!(
            r#"[pipelines.refunds]
model = "script"
constraints = "tool-manifest"
gates = ["spend-limit"]

[pipelines.refunds.executors.issue_refund]
kind = "webhook"
url = "{sink_url}"
"#
        ))
        .write(dir.path());

    let served = server::serve(&config_path);
    let base = served.base.clone();

    let client = reqwest::Client::new();
    let run: Value = client
        .post(format!("{base}/v1/pipelines/refunds/runs"))
        .bearer_auth(agent_token)
        .json(&json!({"input": "please refund order A-77"}))
        .send()
        .await
        .expect("post run")
        .json()
        .await
        .expect("json");
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    assert!(sink.counts().is_empty(), "nothing is sent before approval");

    let script = plugins::repo_root().join("tests/clients/approvals_ui.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&base)
        .arg(token)
        .output()
        .await
        .expect("run python3");
    drop(served);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
    let seen = sink.counts();
    assert_eq!(seen.len(), 1, "one action: {seen:?}");
    assert_eq!(
        seen.values().copied().collect::<Vec<_>>(),
        vec![1],
        "sent exactly once: {seen:?}"
    );
}
