//! Bundled plugins through the real host, isolation modes, and hot reload
//! under load.

use reins::cases::{read_cases, run_cases};
use reins::runtime::{CallContext, PluginHost, Runtime};
use reins_testing::plugins;
use serde_json::json;

fn ctx() -> CallContext {
    plugins::call_context(json!({}))
}

#[test]
fn every_bundled_plugin_passes_its_case_file() {
    let runtime = Runtime::new(&plugins::settings()).expect("runtime");
    let mut failures = Vec::new();
    for name in plugins::BUNDLED {
        let dir = plugins::plugins_dir(&[name]);
        let cases = read_cases(&plugins::cases_path(name)).expect("case file");
        assert!(cases.len() >= 5, "{name} ships only {} cases", cases.len());
        let outcomes = run_cases(&runtime, &dir.path().join(format!("{name}.wasm")), &cases)
            .expect("run cases");
        for o in outcomes.iter().filter(|o| !o.passed) {
            failures.push(format!("{name} / {}: {}", o.name, o.detail));
        }
    }
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
}

#[test]
fn damage_cap_string_is_caught_by_json_schema_and_fixed_by_coerce_numbers() {
    let dir = plugins::plugins_dir(&["json-schema", "coerce-numbers"]);
    let host = PluginHost::open(dir.path(), &plugins::settings(), false).expect("host");
    let set = host.current();
    let output = r#"[{"clause":"Limitation of liability","risk":"high","damage_cap":"$500,000","rationale":"Caps damages."}]"#;

    let verdict = set
        .get("json-schema")
        .expect("json-schema")
        .validate(&ctx(), output)
        .expect("validates");
    let v = verdict
        .violations
        .iter()
        .find(|v| v.path == "/0/damage_cap")
        .unwrap_or_else(|| panic!("no violation at /0/damage_cap: {:?}", verdict.violations));
    assert_eq!(v.code, "type");
    assert!(
        v.message.contains("$500,000") && v.message.contains("number"),
        "{}",
        v.message
    );

    let fix = set
        .get("coerce-numbers")
        .expect("coerce-numbers")
        .validate(&ctx(), output)
        .expect("fixes");
    let fixed = fix.fixed.expect("a fixed document");
    assert_eq!(fixed[0]["damage_cap"], json!(500000));
    let again = set
        .get("json-schema")
        .expect("json-schema")
        .validate(&ctx(), &fixed.to_string())
        .expect("validates");
    assert!(again.violations.is_empty(), "{:?}", again.violations);
}

#[test]
fn per_call_isolation_leaks_no_state_and_pooled_reuses_instances() {
    let dir = plugins::plugins_dir(&["leak"]);
    plugins::install(dir.path(), "leak", "leak-pooled");
    std::fs::write(
        dir.path().join("leak-pooled.toml"),
        "isolation = \"pooled\"\npool_size = 1\nmax_uses = 3\n",
    )
    .expect("sidecar");
    let host = PluginHost::open(dir.path(), &plugins::settings(), false).expect("host");
    let set = host.current();
    let count = |name: &str| -> String {
        let v = set
            .get(name)
            .expect(name)
            .validate(&ctx(), "{}")
            .expect("answers");
        v.violations[0].message.clone()
    };
    let per_call: Vec<String> = (0..4).map(|_| count("leak")).collect();
    assert_eq!(
        per_call,
        ["1", "1", "1", "1"],
        "state leaked between per-call instances"
    );
    // Pooled: one instance serves three calls, then a fresh one takes over.
    let pooled: Vec<String> = (0..4).map(|_| count("leak-pooled")).collect();
    assert_eq!(pooled, ["1", "2", "3", "1"]);
}

#[test]
fn pooled_instance_is_discarded_after_a_trap() {
    let dir = plugins::plugins_dir(&["infinite-loop"]);
    std::fs::write(
        dir.path().join("infinite-loop.toml"),
        "isolation = \"pooled\"\n[limits]\ndeadline_ms = 10\n",
    )
    .expect("sidecar");
    let host = PluginHost::open(dir.path(), &plugins::settings(), false).expect("host");
    let set = host.current();
    let p = set.get("infinite-loop").expect("loaded");
    for _ in 0..3 {
        // Each call must time out cleanly: a poisoned instance put back in the
        // pool would instead fail with "cannot enter component".
        assert_eq!(
            p.validate(&ctx(), "{}").expect_err("loops").kind(),
            "timeout"
        );
    }
}

#[test]
fn counters_are_kept_by_the_host_across_fresh_instances() {
    let dir = plugins::plugins_dir(&["spend-limit"]);
    std::fs::write(
        dir.path().join("spend-limit.toml"),
        "[config]\nescalate_above = 1000\ndaily_budget = 250\n",
    )
    .expect("sidecar");
    let host = PluginHost::open(dir.path(), &plugins::settings(), false).expect("host");
    let set = host.current();
    let gate = set.get("spend-limit").expect("loaded");
    let spend = |amount: f64| {
        let action = reins::runtime::Action {
            tool: "refund".into(),
            arguments: json!({"amount": amount}),
            access: reins::runtime::Access::Write,
        };
        let c = CallContext {
            caller: reins::runtime::Caller {
                tenant: Some("acme".into()),
                ..Default::default()
            },
            ..ctx()
        };
        gate.check(&c, &action).expect("answers").kind()
    };
    assert_eq!(spend(100.0), "allow");
    assert_eq!(spend(100.0), "allow");
    assert_eq!(spend(100.0), "deny", "third refund exceeds the 250 budget");
    assert_eq!(spend(50.0), "allow", "a denied spend is released");
}

#[test]
fn deleting_a_file_unloads_the_plugin() {
    let dir = plugins::plugins_dir(&["stamp-a", "stamp-b"]);
    let host = PluginHost::open(dir.path(), &plugins::settings(), false).expect("host");
    let before = host.current();
    std::fs::remove_file(dir.path().join("stamp-b.wasm")).expect("rm");
    host.reload().expect("reload");
    assert!(host.current().get("stamp-b").is_none());
    // A request that started before the reload still holds its set.
    assert!(
        before
            .get("stamp-b")
            .expect("old set")
            .validate(&ctx(), "{}")
            .is_ok()
    );
}
