//! Config errors, through the same path `reins run` and the server take
//! (`Host::from_config` on a file): every bad key, missing or misplaced
//! plugin, bad schema, bad template and bad script names what is wrong.

mod pipeline_support;

use pipeline_support::*;
use reins::Host;
use reins_testing::plugins;
use std::path::Path;

/// Writes `reins.toml` (the shared head + `body`) into `dir` and loads it.
async fn load(dir: &Path, body: &str) -> Result<Host, String> {
    let path = dir.join("reins.toml");
    std::fs::write(&path, config(dir, body)).expect("write config");
    Host::from_config(&path).await.map_err(|e| e.to_string())
}

async fn error(dir: &Path, body: &str) -> String {
    match load(dir, body).await {
        Ok(_) => panic!("expected a config error for:\n{body}"),
        Err(e) => e,
    }
}

const P: &str = "[pipelines.p]\nmodel = \"model\"\n";

#[tokio::test]
async fn a_valid_config_loads() {
    let plugins = plugins::plugins_dir(&["normalize-text", "ranges"]);
    let host = load(
        plugins.path(),
        &format!("{P}normalizers = [\"normalize-text\"]\nvalidators = [\"ranges\"]\nschema = {{ type = \"object\" }}\n"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(host.pipeline_names(), ["p"]);
}

#[tokio::test]
async fn every_bad_key_is_named_with_file_and_line() {
    let plugins = plugins::plugins_dir(&[]);
    let dir = plugins.path();
    let file = dir.join("reins.toml").display().to_string();
    // The shared head is 9 lines; the body starts on line 10. A provider's
    // keys are reported at its table's header.
    for (body, key, line) in [
        (
            "[providers.x]\nkind = \"scripted\"\nresponses = []\nfiel = \"r.jsonl\"\n",
            "fiel",
            10,
        ),
        (
            &format!("{P}validator = [\"ranges\"]\n") as &str,
            "validator",
            12,
        ),
        (
            &format!("{P}[pipelines.p.repair]\nmax_attempt = 2\n"),
            "max_attempt",
            13,
        ),
        (
            &format!("{P}validators = [{{ plugin = \"ranges\", onfail = \"fix\" }}]\n"),
            "onfail",
            12,
        ),
        (
            "[providers.llm]\nkind = \"openai\"\nbase_url = \"http://x\"\nmodel = \"m\"\napi_key = \"sk\"\n",
            "api_key",
            10,
        ),
    ] {
        let e = error(dir, body).await;
        assert!(e.contains(&file), "names the file: {e}");
        assert!(e.contains(key), "names `{key}`: {e}");
        assert!(
            e.contains(&format!("line {line}")),
            "names line {line}: {e}"
        );
    }
    // A top-level key.
    std::fs::write(
        dir.join("top.toml"),
        "plugins_dir = \".\"\nwatch = false\nplugin_dir = \"x\"\n",
    )
    .expect("write");
    let e = Host::from_config(dir.join("top.toml"))
        .await
        .expect_err("unknown key")
        .to_string();
    assert!(
        e.contains("top.toml") && e.contains("line 3") && e.contains("unknown field `plugin_dir`"),
        "{e}"
    );
    let e = error(
        dir,
        &format!("{P}validators = [{{ plugin = \"ranges\", on_fail = \"retry\" }}]\n"),
    )
    .await;
    assert!(
        e.contains("unknown variant `retry`") && e.contains("`repair`, `fix`, `fail`"),
        "{e}"
    );
    let e = error(dir, &format!("{P}on_disconnect = \"stop\"\n")).await;
    assert!(
        e.contains("on_disconnect")
            && e.contains("unknown variant `stop`")
            && e.contains("expected `finish` or `cancel`"),
        "{e}"
    );
    let e = error(dir, &format!("{P}fallbacks = [\"gpt\"]\n")).await;
    assert!(
        e.contains("`pipelines.p.fallbacks` names provider `gpt`, which is not defined"),
        "{e}"
    );
}

#[tokio::test]
async fn a_missing_disabled_or_refused_plugin_is_named() {
    let plugins = plugins::plugins_dir(&["ranges", "coerce-numbers"]);
    let dir = plugins.path();
    let e = error(dir, &format!("{P}gates = [\"spend-limit\"]\n")).await;
    assert!(
        e.contains("pipeline `p` uses gate plugin `spend-limit`, which is not loaded from")
            && e.contains("no spend-limit.wasm there"),
        "{e}"
    );
    sidecar(dir, "ranges", "enabled = false\n");
    let e = error(dir, &format!("{P}validators = [\"ranges\"]\n")).await;
    assert!(
        e.contains("`ranges`") && e.contains("disabled in its sidecar"),
        "{e}"
    );
    sidecar(dir, "coerce-numbers", "deadline = 5\n");
    let e = error(dir, &format!("{P}validators = [\"coerce-numbers\"]\n")).await;
    assert!(
        e.contains("`coerce-numbers`") && e.contains("refused") && e.contains("deadline"),
        "{e}"
    );
}

#[tokio::test]
async fn a_plugin_in_the_wrong_layer_is_named() {
    let plugins = plugins::plugins_dir(&["normalize-text"]);
    let e = error(
        plugins.path(),
        &format!("{P}validators = [\"normalize-text\"]\n"),
    )
    .await;
    assert!(
        e.contains("pipeline `p` lists `normalize-text` as a validator plugin, but it is a normalizer plugin"),
        "{e}"
    );
}

#[tokio::test]
async fn a_bad_schema_is_named_with_its_pipeline_and_origin() {
    let plugins = plugins::plugins_dir(&[]);
    let dir = plugins.path();
    let e = error(dir, &format!("{P}schema = {{ type = \"objekt\" }}\n")).await;
    assert!(
        e.contains("pipeline `p`: schema (inline) is not a valid JSON Schema")
            && e.contains("objekt"),
        "{e}"
    );
    std::fs::write(dir.join("bad.json"), "{\"type\": \"object\",}").expect("write");
    let e = error(dir, &format!("{P}schema = \"bad.json\"\n")).await;
    assert!(e.contains("bad.json") && e.contains("not JSON"), "{e}");
    std::fs::write(
        dir.join("wrong.json"),
        "{\"properties\": {\"a\": {\"minimum\": \"3\"}}}",
    )
    .expect("write");
    let e = error(dir, &format!("{P}schema = \"wrong.json\"\n")).await;
    assert!(
        e.contains("wrong.json") && e.contains("/properties/a/minimum"),
        "{e}"
    );
    let e = error(dir, &format!("{P}schema = \"missing.json\"\n")).await;
    assert!(
        e.contains("cannot read") && e.contains("missing.json"),
        "{e}"
    );
}

#[tokio::test]
async fn a_bad_template_or_script_is_named() {
    let plugins = plugins::plugins_dir(&[]);
    let dir = plugins.path();
    let e = error(
        dir,
        &format!("{P}repair = {{ template = \"Fix: {{{{violatons}}}}\" }}\n"),
    )
    .await;
    assert!(
        e.contains("pipeline `p`: repair template: unknown placeholder `{{violatons}}`"),
        "{e}"
    );
    std::fs::write(
        dir.join("script.jsonl"),
        "\"ok\"\n{\"contnet\": \"typo\"}\n",
    )
    .expect("write");
    let e = error(
        dir,
        &format!("[providers.s]\nkind = \"scripted\"\nfile = \"script.jsonl\"\n{P}"),
    )
    .await;
    assert!(
        e.contains("script.jsonl") && e.contains("line 2") && e.contains("contnet"),
        "{e}"
    );
}
