//! Changing a pipeline without a restart: `reins serve` reloads `reins.toml`
//! and every file it reads when they change (and on SIGHUP and
//! `POST /v1/admin/reload`), refuses a broken config while the old one keeps
//! serving, and lets pipelines set their plugins up each their own way.

use reins_testing::config::Config;
use reins_testing::plugins;
use reins_testing::server::{Served, serve_env};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the config of change `n` says; each change alters one of the four
/// things the issue names, and each is visible from outside.
#[derive(Clone, Copy, Debug)]
struct Knobs {
    /// The provider's answer carries this version.
    answer: u64,
    /// The pii validator's e-mail placeholder (its config, per pipeline).
    placeholder: u64,
    /// schema.json wants `qty` a string (coerce-numbers, which reads the
    /// pipeline's schema, then leaves "3" alone) or a number.
    qty_text: bool,
    /// The pipeline's gates.
    gated: bool,
}

const PLUGINS: [&str; 3] = ["coerce-numbers", "pii", "spend-limit"];

fn config_text(k: Knobs) -> String {
    let answer = format!(
        r#"['{{"total": "12 EUR", "qty": "3", "contact": "write to ann@example.com", "v": {}}}']"#,
        k.answer
    );
    Config::new()
        .plugins_dir("plugins")
        .test_cache()
        .table(STATE)
        .scripted("model", &answer)
        .table(&format!(
            r#"[pipelines.p]
model = "model"
schema = "schema.json"
gates = {gates}
validators = [
    {{ plugin = "coerce-numbers", on_fail = "fix", config = {{ schema = "@pipeline" }} }},
    {{ plugin = "pii", on_fail = "fix", stage = 1, config = {{ placeholders = {{ email = "[MAIL-{placeholder}]", phone = "[PHONE]", card = "[CARD]", iban = "[IBAN]" }} }} }},
]
"#,
            placeholder = k.placeholder,
            gates = if k.gated { r#"["spend-limit"]"# } else { "[]" },
        ))
        .to_string()
}

/// Runs and everything else in memory: these tests are about the config.
const STATE: &str = "[state]\nkind = \"memory\"\n";

fn schema_text(qty_text: bool) -> String {
    let qty = if qty_text {
        json!({"type": "string"})
    } else {
        json!({"type": "number"})
    };
    json!({
        "type": "object",
        "required": ["total", "qty", "v"],
        "properties": {"total": {"type": "number"}, "qty": qty, "contact": {"type": "string"}, "v": {"type": "integer"}}
    })
    .to_string()
}

/// Replaces `path` the way editors save: a new file renamed over the old.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-save");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn setup(k: Knobs) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin_dir = dir.path().join("plugins");
    std::fs::create_dir(&plugin_dir).expect("plugins dir");
    for name in PLUGINS {
        plugins::install(&plugin_dir, name, name);
    }
    std::fs::write(dir.path().join("schema.json"), schema_text(k.qty_text)).expect("schema");
    std::fs::write(dir.path().join("reins.toml"), config_text(k)).expect("config");
    dir
}

fn serve(dir: &Path) -> Served {
    serve_env(&dir.join("reins.toml"), &[], &[], None)
}

/// One run of pipeline `p`: its output, or why there is none.
async fn run(client: &reqwest::Client, base: &str) -> Result<Value, String> {
    let r = client
        .post(format!("{base}/v1/pipelines/p/runs"))
        .json(&json!({"input": "the order"}))
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = r.status();
    let body: Value = r.json().await.map_err(|e| format!("body: {e}"))?;
    if status != 200 || body["status"] != "completed" {
        return Err(format!("{status}: {body}"));
    }
    Ok(body["output"].clone())
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    client
        .get(url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// Does the server now show what `k` says?
async fn shows(client: &reqwest::Client, base: &str, k: Knobs) -> bool {
    differs(client, base, k).await.is_none()
}

/// What the server shows that `k` does not say, if anything.
async fn differs(client: &reqwest::Client, base: &str, k: Knobs) -> Option<String> {
    let out = match run(client, base).await {
        Ok(out) => out,
        Err(e) => return Some(e),
    };
    let qty_ok = if k.qty_text {
        out["qty"] == "3"
    } else {
        out["qty"] == 3
    };
    let pipelines = get(client, format!("{base}/v1/pipelines")).await;
    let gates = &pipelines["data"][0]["gates"];
    let gates_ok = if k.gated {
        *gates == json!(["spend-limit"])
    } else {
        *gates == json!([])
    };
    let ok = out["v"] == k.answer
        && out["contact"] == format!("write to [MAIL-{}]", k.placeholder)
        && qty_ok
        && gates_ok;
    (!ok).then(|| format!("output {out}, gates {gates}"))
}

async fn wait_for(client: &reqwest::Client, base: &str, k: Knobs) -> Duration {
    let started = Instant::now();
    while let Some(why) = differs(client, base, k).await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server never showed {k:?} ({why}): {}",
            get(client, format!("{base}/v1/config")).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_changes_under_load_each_seen_with_no_failed_request_and_broken_configs_refused() {
    let mut k = Knobs {
        answer: 0,
        placeholder: 0,
        qty_text: false,
        gated: false,
    };
    let dir = setup(k);
    let served = serve(dir.path());
    let base = served.base.clone();
    let client = reqwest::Client::new();
    wait_for(&client, &base, k).await;

    // Several clients keep the pipeline busy the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut loaders = Vec::new();
    for _ in 0..4 {
        let (stop, done, base, client) = (stop.clone(), done.clone(), base.clone(), client.clone());
        loaders.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match run(&client, &base).await {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e),
                }
            }
            failures
        }));
    }

    let config = dir.path().join("reins.toml");
    let schema = dir.path().join("schema.json");
    let mut seen = Vec::new();
    for n in 1..=50u64 {
        match n % 4 {
            0 => k.gated = !k.gated,
            1 => k.answer = n,
            2 => k.placeholder = n % 3,
            _ => k.qty_text = !k.qty_text,
        }
        if n % 4 == 3 {
            write_atomically(&schema, &schema_text(k.qty_text));
        } else {
            write_atomically(&config, &config_text(k));
        }
        seen.push(wait_for(&client, &base, k).await);
        if n == 20 || n == 40 {
            // A broken config: refused, with every error named; the old one serves.
            let before = get(&client, format!("{base}/v1/config")).await;
            let broken = config_text(k)
                .replace("model = \"model\"", "model = \"nobody\"")
                .replace("\"spend-limit\"", "\"no-such-gate\"");
            let broken = format!(
                "{broken}\n[pipelines.q]\nmodel = \"model\"\nvalidators = [\"pii\", \"pii\"]\n"
            );
            write_atomically(&config, &broken);
            let started = Instant::now();
            let status = loop {
                let status = get(&client, format!("{base}/v1/config")).await;
                if status["refused"].as_u64() > before["refused"].as_u64() {
                    break status;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "never refused: {status}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let refused_at = status["version"].clone();
            let errors = status["last_error"]["errors"].to_string();
            assert!(
                errors.contains("pipelines.p.model") && errors.contains("`nobody`"),
                "{errors}"
            );
            assert!(
                errors.contains("pipelines.q.validators") && errors.contains("listed twice"),
                "{errors}"
            );
            assert!(
                shows(&client, &base, k).await,
                "the previous config keeps serving"
            );
            let after = get(&client, format!("{base}/v1/config")).await;
            assert_eq!(after["version"], refused_at, "nothing was swapped");
            // Fixed again: the next good write serves.
            write_atomically(&config, &config_text(k));
            let started = Instant::now();
            loop {
                let status = get(&client, format!("{base}/v1/config")).await;
                if status["last_error"].is_null() {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "never recovered: {status}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for l in loaders {
        failures.extend(l.await.expect("loader"));
    }
    let requests = done.load(Ordering::Relaxed);
    seen.sort();
    eprintln!(
        "50 changes under load: {requests} runs, {} failed; change seen after p50 {:?}, p90 {:?}, max {:?}",
        failures.len(),
        seen[seen.len() / 2],
        seen[seen.len() * 9 / 10],
        seen[seen.len() - 1]
    );
    assert!(
        failures.is_empty(),
        "failed requests: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(
        requests > 50,
        "the clients kept the pipeline busy ({requests} runs)"
    );
    let status = get(&client, format!("{base}/v1/config")).await;
    assert!(status["version"].as_u64() >= Some(51), "{status}");
    assert_eq!(status["refused"], 2, "{status}");
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("reins_config_reloads_total{outcome=\"refused\"} 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("config"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_and_the_admin_endpoint_reload_what_no_watcher_saw() {
    let k = Knobs {
        answer: 1,
        placeholder: 1,
        qty_text: false,
        gated: false,
    };
    let dir = setup(k);
    // reins.toml is a link to a file in another directory: the watcher
    // (on the link's directory) never sees that file change.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let real = elsewhere.path().join("real.toml");
    std::fs::rename(dir.path().join("reins.toml"), &real).expect("move");
    std::os::unix::fs::symlink(&real, dir.path().join("reins.toml")).expect("link");
    let served = serve(dir.path());
    let base = served.base.clone();
    let client = reqwest::Client::new();
    wait_for(&client, &base, k).await;

    let k2 = Knobs { answer: 2, ..k };
    std::fs::write(&real, config_text(k2)).expect("write");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        shows(&client, &base, k).await,
        "nothing reloads without a signal"
    );
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &served.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    wait_for(&client, &base, k2).await;
    let status = get(&client, format!("{base}/v1/config")).await;
    assert_eq!(status["version"], 2, "{status}");

    // POST /v1/admin/reload: the same, and a refused config is a 422 with its errors.
    let k3 = Knobs { answer: 3, ..k };
    std::fs::write(&real, config_text(k3)).expect("write");
    let r = client
        .post(format!("{base}/v1/admin/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        (body["reloaded"].clone(), body["version"].clone()),
        (json!(true), json!(3)),
        "{body}"
    );
    assert!(shows(&client, &base, k3).await);
    // A key only a restart can apply is reported, and the rest applies.
    let k4 = Knobs { answer: 4, ..k };
    std::fs::write(
        &real,
        config_text(k4).replace("kind = \"memory\"", "kind = \"sqlite\""),
    )
    .expect("write");
    let body: Value = client
        .post(format!("{base}/v1/admin/reload"))
        .send()
        .await
        .expect("reload")
        .json()
        .await
        .expect("json");
    assert_eq!(body["restart_required"], json!(["state.kind"]), "{body}");
    assert!(shows(&client, &base, k4).await);
    assert_eq!(
        get(&client, format!("{base}/v1/config")).await["restart_required"],
        json!(["state.kind"])
    );
    std::fs::write(
        &real,
        "plugins_dir = \"plugins\"\n[pipelines.p]\nmodel = \"gone\"\n",
    )
    .expect("write");
    let r = client
        .post(format!("{base}/v1/admin/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"]["errors"].to_string().contains("`gone`"),
        "{body}"
    );
    assert!(
        shows(&client, &base, k4).await,
        "the refused config changed nothing"
    );
}

/// Two pipelines, one plugin, two settings: each run gets its pipeline's.
#[tokio::test(flavor = "multi_thread")]
async fn two_pipelines_use_one_plugin_with_different_settings() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin_dir = plugins::plugins_dir(&["pii"]);
    let text = Config::new()
        .plugins_dir(plugin_dir.path())
        .test_cache()
        .table(STATE)
        .scripted(
            "model",
            r#"["call me on +44 20 7946 0958 or mail ann@example.com"]"#,
        )
        .table(
            r#"[pipelines.support]
model = "model"
validators = [{ plugin = "pii", on_fail = "fix", config = { email = "redact", phone = "off" } }]

[pipelines.billing]
model = "model"
validators = [{ plugin = "pii", on_fail = "fix", config = { email = "off" } }]

[pipelines.default]
model = "model"
validators = [{ plugin = "pii", on_fail = "fix" }]
"#,
        )
        .to_string();
    let path = dir.path().join("reins.toml");
    std::fs::write(&path, text).expect("write");
    let host = reins::Host::builder()
        .config_file(&path)
        .build()
        .await
        .expect("host");
    let answer = |name: &'static str| {
        let host = &host;
        async move {
            let r = host.run(name, reins::pipeline::Request::text("hi")).await;
            assert_eq!(
                r.status,
                reins::pipeline::RunStatus::Completed,
                "{name}: {:?}",
                r.error
            );
            r.output
                .and_then(|o| o.as_str().map(str::to_owned))
                .expect("text")
        }
    };
    let support = answer("support").await;
    let billing = answer("billing").await;
    let default = answer("default").await;
    assert!(
        support.contains("+44 20 7946 0958") && !support.contains("ann@example.com"),
        "{support}"
    );
    assert!(
        !billing.contains("7946") && billing.contains("ann@example.com"),
        "{billing}"
    );
    assert!(
        !default.contains("7946") && !default.contains("ann@example.com"),
        "{default}"
    );
    // One file, three ways of setting it up: the sidecar's and two variants.
    let set = host.plugins().current();
    let keys: Vec<&str> = set.variants().iter().map(|v| v.plugin.as_str()).collect();
    assert_eq!(keys, ["pii", "pii"]);
    let live = host.live();
    let key = |p: &str| {
        live.pipeline(p)
            .expect("pipeline")
            .plugin_key(reins::runtime::Layer::Validator, "pii")
            .to_owned()
    };
    assert_ne!(key("support"), key("billing"));
    assert_eq!(key("default"), "pii");
}

#[test]
fn reins_check_accepts_a_good_config_and_lists_every_error_of_a_bad_one() {
    let k = Knobs {
        answer: 1,
        placeholder: 1,
        qty_text: false,
        gated: true,
    };
    let dir = setup(k);
    // No [state]: the default is a SQLite file next to the config, which a
    // check must not create.
    let text = config_text(k).replace(STATE, "");
    assert!(!text.contains("[state]"));
    std::fs::write(dir.path().join("reins.toml"), &text).expect("write");
    let check = |config: &Path| {
        std::process::Command::new(reins_testing::server::reins_exe())
            .args(["check", "--config"])
            .arg(config)
            .output()
            .expect("reins check")
    };
    let good = check(&dir.path().join("reins.toml"));
    let out = String::from_utf8_lossy(&good.stdout);
    assert_eq!(
        good.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(out.contains("ok, 1 pipeline(s)"), "{out}");
    assert!(
        !dir.path().join("reins-state.db").exists(),
        "a check writes no state"
    );

    // The file's own mistakes, all of them.
    let bad = config_text(k).replace("model = \"model\"", "model = \"nobody\"")
        + "\n[pipelines.q]\nmodel = \"model\"\nrepair = { max_attempts = 0 }\nvalidators = [\"pii\", \"pii\"]\n";
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, bad).expect("write");
    let out = check(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for expected in [
        "pipelines.p.model",
        "pipelines.q.repair.max_attempts",
        "listed twice",
        "3 error(s)",
    ] {
        assert!(err.contains(expected), "missing {expected}: {err}");
    }
    // What only loading finds, all of it: a missing plugin, a plugin of
    // the wrong layer, and settings a plugin's init refuses.
    let bad = config_text(k)
        .replace("\"spend-limit\"", "\"no-such-gate\", \"pii\"")
        .replace("email = \"[MAIL-1]\"", "email = 42");
    std::fs::write(&path, bad).expect("write");
    let out = check(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for expected in [
        "`no-such-gate`",
        "no no-such-gate.wasm there",
        "`pii` as a gate plugin",
        "does not load with this pipeline's settings",
        "3 error(s)",
    ] {
        assert!(err.contains(expected), "missing {expected}: {err}");
    }
}

/// A reload keeps what an unchanged provider and pipeline built up (the
/// breaker's state, the response cache) and starts a changed one afresh.
#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_provider_keeps_its_breaker_and_a_pipeline_its_cache() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin_dir = plugins::plugins_dir(&[]);
    let config = |answer: &str, other: &str, prompt: &str| {
        Config::new()
            .plugins_dir(plugin_dir.path())
            .test_cache()
            .table(STATE)
            .scripted("model", &format!("['{answer}']"))
            .scripted("other", &format!("['{other}']"))
            .table(&format!(
                "[pipelines.p]\nmodel = \"model\"\ncache = \"read-write\"\nsystem_prompt = \"{prompt}\"\n"
            ))
            .to_string()
    };
    let path = dir.path().join("reins.toml");
    std::fs::write(&path, config("a", "b", "one")).expect("write");
    let host = reins::Host::builder()
        .config_file(&path)
        .build()
        .await
        .expect("host");
    let (model, other) = (
        host.breaker("model").expect("model"),
        host.breaker("other").expect("other"),
    );
    let cache = host
        .pipeline("p")
        .and_then(|p| p.cache())
        .expect("cache on");

    // The pipeline's prompt and provider `other` change; provider `model` does not.
    std::fs::write(&path, config("a", "c", "two")).expect("write");
    let outcome = host.reload().expect("reload");
    assert!(outcome.swapped && outcome.version == 2, "{outcome:?}");
    assert!(
        Arc::ptr_eq(&model, &host.breaker("model").expect("model")),
        "unchanged: the same breaker"
    );
    assert!(
        !Arc::ptr_eq(&other, &host.breaker("other").expect("other")),
        "changed: a new breaker"
    );
    let kept = host
        .pipeline("p")
        .and_then(|p| p.cache())
        .expect("cache on");
    assert!(
        Arc::ptr_eq(&cache, &kept),
        "the recompiled pipeline keeps its response cache"
    );

    // The same files again: nothing is built, nothing moves.
    let again = host.reload().expect("reload");
    assert!(!again.swapped && again.version == 2, "{again:?}");
}
