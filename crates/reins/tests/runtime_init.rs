//! Pre-initialized plugins (`init` + a wizer snapshot): the same verdicts
//! as before, a failing `init` refuses the plugin (and a reload keeps the
//! old version), plugins without `init` unchanged, and the snapshot cache.

use reins::runtime::{
    CallContext, CallFailure, InitMode, PluginHost, Runtime, RuntimeError, RuntimeSettings,
};
use reins_testing::plugins;
use serde_json::json;

fn ctx() -> CallContext {
    plugins::call_context(json!({}))
}

/// Answers that exercise json-schema's bundled contract-risks schema:
/// valid, wrong types, a missing field, an extra field, not JSON.
const ANSWERS: [&str; 5] = [
    r#"[{"clause":"Limitation of liability","risk":"high","damage_cap":500000,"rationale":"Caps damages."}]"#,
    r#"[{"clause":"Limitation of liability","risk":"severe","damage_cap":"$500,000","rationale":"Caps damages."}]"#,
    r#"[{"clause":"Indemnity","risk":"low","rationale":"Mutual."}]"#,
    r#"[{"clause":"x","risk":"low","damage_cap":null,"rationale":"r","extra":1}]"#,
    r#"not json"#,
];

fn verdicts(host: &PluginHost, name: &str) -> Vec<String> {
    let set = host.current();
    let plugin = set
        .get(name)
        .unwrap_or_else(|| panic!("{name} not loaded: {:?}", host.statuses()));
    ANSWERS
        .iter()
        .map(|a| {
            let v = plugin.validate(&ctx(), a).expect("validates");
            format!("{:?}", v.violations)
        })
        .collect()
}

#[test]
fn a_snapshotted_per_call_plugin_gives_the_verdicts_of_a_pooled_one_and_of_no_init() {
    let dir = plugins::plugins_dir(&["json-schema"]);
    let d = dir.path();
    let sidecar = std::fs::read_to_string(d.join("json-schema.toml")).expect("sidecar");
    plugins::install(d, "json-schema", "per-call");
    plugins::sidecar(
        d,
        "per-call",
        &sidecar.replace("isolation = \"pooled\"", "isolation = \"per-call\""),
    );
    let host = PluginHost::open(d, &plugins::settings(), false).expect("host");
    let set = host.current();
    for name in ["json-schema", "per-call"] {
        let info = set
            .get(name)
            .unwrap_or_else(|| panic!("{name} not loaded: {:?}", host.statuses()))
            .info()
            .clone();
        assert_eq!(info.init, "snapshot", "{name}: {info:?}");
    }
    let pooled = verdicts(&host, "json-schema");
    let per_call = verdicts(&host, "per-call");
    assert_eq!(pooled, per_call);
    assert!(
        pooled[0] == "[]" && pooled[1].contains("damage_cap"),
        "{pooled:?}"
    );

    // The old host path: init never called, set-up done lazily by the call.
    let off = RuntimeSettings {
        init: InitMode::Off,
        ..plugins::settings()
    };
    let lazy = PluginHost::open(d, &off, false).expect("host");
    assert_eq!(
        lazy.current().get("per-call").expect("loaded").info().init,
        "off"
    );
    assert_eq!(verdicts(&lazy, "per-call"), per_call);

    // Init on every fresh instance (what a component wizer cannot rewrite gets).
    let each = RuntimeSettings {
        init: InitMode::PerInstance,
        ..plugins::settings()
    };
    let each = PluginHost::open(d, &each, false).expect("host");
    assert_eq!(
        each.current().get("per-call").expect("loaded").info().init,
        "per-instance"
    );
    assert_eq!(verdicts(&each, "per-call"), per_call);
}

#[test]
fn a_failing_init_refuses_the_plugin_with_its_own_message() {
    let dir = plugins::plugins_dir(&["json-schema"]);
    let d = dir.path();
    plugins::sidecar(
        d,
        "json-schema",
        "isolation = \"per-call\"\n[config]\nschema = 5\n",
    );
    let runtime = Runtime::new(&plugins::settings()).expect("runtime");
    let path = d.join("json-schema.wasm");
    match runtime.load_file(&path) {
        Err(RuntimeError::Init {
            path: p,
            cause: CallFailure::Refused { message },
        }) => {
            assert_eq!(p, path);
            assert!(
                message.contains("config.schema: must be an object"),
                "{message}"
            );
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a plugin whose init fails was loaded"),
    }
    let text = runtime
        .load_file(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        text.contains("json-schema.wasm") && text.contains("config.schema"),
        "{text}"
    );

    // Out of fuel inside init is a refusal too, typed.
    plugins::sidecar(
        d,
        "json-schema",
        &format!(
            "isolation = \"per-call\"\n[limits]\nfuel = 1000\n{}",
            std::fs::read_to_string(plugins::sidecar_path("json-schema").expect("sidecar"))
                .expect("sidecar")
                .split_once("[config]")
                .map(|(_, c)| format!("[config]{c}"))
                .expect("config")
        ),
    );
    match runtime.load_file(&path) {
        Err(RuntimeError::Init {
            cause: CallFailure::OutOfFuel { .. },
            ..
        }) => {}
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a plugin whose init runs out of fuel was loaded"),
    }
}

#[test]
fn a_reload_whose_init_fails_keeps_the_old_version_serving() {
    let dir = plugins::plugins_dir(&["json-schema"]);
    let d = dir.path();
    let host = PluginHost::open(d, &plugins::settings(), false).expect("host");
    let before = verdicts(&host, "json-schema");
    let old_generation = host.current().generation();

    plugins::sidecar(
        d,
        "json-schema",
        "isolation = \"per-call\"\n[config]\nschema = \"{not json\"\n",
    );
    host.reload().expect("reload");
    let statuses = host.statuses();
    let status = statuses
        .iter()
        .find(|s| s.name == "json-schema")
        .expect("status");
    assert_eq!(status.status, "refused");
    let error = status.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("init") && error.contains("config.schema"),
        "{error}"
    );
    assert!(host.current().generation() > old_generation);
    // Still the old version, with its old schema.
    assert_eq!(verdicts(&host, "json-schema"), before);
}

#[test]
fn a_plugin_without_init_works_as_before() {
    let dir = plugins::plugins_dir(&["stamp-a"]);
    let host = PluginHost::open(dir.path(), &plugins::settings(), false).expect("host");
    let set = host.current();
    let plugin = set.get("stamp-a").expect("loaded");
    assert_eq!(plugin.info().init, "none");
    for _ in 0..3 {
        plugin.validate(&ctx(), "{}").expect("validates");
    }
}

#[test]
fn the_snapshot_is_cached_and_a_new_config_makes_a_new_one() {
    // A config no other test uses, so the first load cannot hit the cache.
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let dir = plugins::plugins_dir(&["tool-manifest"]);
    let d = dir.path();
    let tools = |description: &str| {
        format!(
            "isolation = \"per-call\"\n[[config.tools]]\nname = \"lookup\"\ndescription = \"{description}\"\naccess = \"read\"\n[config.tools.parameters]\ntype = \"object\"\n"
        )
    };
    let load = |description: &str| {
        plugins::sidecar(d, "tool-manifest", &tools(description));
        let runtime = Runtime::new(&plugins::settings()).expect("runtime");
        let plugin = runtime
            .load_file(&d.join("tool-manifest.wasm"))
            .expect("loads");
        let listed = plugin.tools(&ctx()).expect("tools");
        assert_eq!(listed[0].description, description);
        plugin.info().clone()
    };
    let first = load(&format!("look up {nonce}"));
    assert_eq!(first.init, "snapshot");
    assert!(!first.init_cached, "{first:?}");
    let second = load(&format!("look up {nonce}"));
    assert!(
        second.init_cached,
        "the second load did not reuse the snapshot: {second:?}"
    );
    let changed = load(&format!("look up {nonce}, changed"));
    assert!(
        !changed.init_cached,
        "a changed config reused the old snapshot: {changed:?}"
    );
}
