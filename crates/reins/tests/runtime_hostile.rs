//! Hostile and broken plugins: each yields its typed error, the host keeps
//! serving other calls, and nothing a plugin does escapes its sandbox.

use reins::runtime::{CallContext, CallFailure, PluginError, PluginHost, Runtime, RuntimeError};
use reins_testing::plugins;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

fn ctx() -> CallContext {
    plugins::call_context(json!({"tenant": "acme"}))
}

fn runtime() -> Arc<Runtime> {
    Runtime::new(&plugins::settings()).expect("runtime")
}

fn validate_err(host: &PluginHost, name: &str) -> PluginError {
    let set = host.current();
    let plugin = set
        .get(name)
        .unwrap_or_else(|| panic!("{name} not loaded: {:?}", host.statuses()));
    plugin
        .validate(&ctx(), "{}")
        .expect_err("hostile plugin must fail")
}

/// The healthy plugin still answers, from another thread, after each failure.
fn still_serving(host: &PluginHost) {
    let set = host.current();
    let stamp = set.get("stamp-a").expect("stamp-a loaded").clone();
    let v = std::thread::spawn(move || stamp.validate(&ctx(), "{}"))
        .join()
        .expect("thread")
        .expect("healthy plugin answers");
    assert_eq!(v.violations[0].code, "stamp");
}

fn write_sidecar(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(format!("{name}.toml")), text).expect("write sidecar");
}

#[test]
fn infinite_loop_times_out_and_host_keeps_serving() {
    let dir = plugins::plugins_dir(&["infinite-loop", "stamp-a"]);
    write_sidecar(dir.path(), "infinite-loop", "[limits]\ndeadline_ms = 20\n");
    let host = PluginHost::open(dir.path(), &plugins::settings(), false).expect("host");
    let err = validate_err(&host, "infinite-loop");
    assert_eq!(err.cause, CallFailure::Timeout { deadline_ms: 20 }, "{err}");
    assert_eq!(err.plugin, "infinite-loop");
    assert!(
        err.to_string().contains("infinite-loop") && err.to_string().contains(&err.digest[..12])
    );
    still_serving(&host);
    // A second call gets a fresh instance and fails the same way: the trap
    // poisoned only the instance, not the plugin.
    assert_eq!(validate_err(&host, "infinite-loop").kind(), "timeout");
}

#[test]
fn fuel_limit_stops_a_loop_deterministically() {
    let dir = plugins::plugins_dir(&["infinite-loop", "stamp-a"]);
    write_sidecar(
        dir.path(),
        "infinite-loop",
        "[limits]\ndeadline_ms = 5000\nfuel = 1000000\n",
    );
    let host = PluginHost::open(dir.path(), &plugins::settings(), false).expect("host");
    let err = validate_err(&host, "infinite-loop");
    assert_eq!(err.cause, CallFailure::OutOfFuel { fuel: 1_000_000 });
    still_serving(&host);
}

#[test]
fn memory_bomb_hits_its_cap() {
    let dir = plugins::plugins_dir(&["memory-bomb", "stamp-a"]);
    write_sidecar(
        dir.path(),
        "memory-bomb",
        "[limits]\nmemory_mib = 16\ndeadline_ms = 2000\n",
    );
    let host = PluginHost::open(dir.path(), &plugins::settings(), false).expect("host");
    let err = validate_err(&host, "memory-bomb");
    assert_eq!(
        err.cause,
        CallFailure::MemoryLimit { limit_mib: 16 },
        "{err}"
    );
    still_serving(&host);
}

#[test]
fn panic_is_a_trap() {
    let dir = plugins::plugins_dir(&["panic", "stamp-a"]);
    let host = PluginHost::open(dir.path(), &plugins::settings(), false).expect("host");
    let err = validate_err(&host, "panic");
    assert_eq!(err.kind(), "trap", "{err}");
    still_serving(&host);
}

#[test]
fn huge_output_is_stopped_by_memory_cap_or_output_limit() {
    let dir = plugins::plugins_dir(&["huge-output", "stamp-a"]);
    // 300 MiB cannot even be built inside a 64 MiB plugin.
    let host = PluginHost::open(dir.path(), &plugins::settings(), false).expect("host");
    let err = validate_err(&host, "huge-output");
    assert_eq!(
        err.cause,
        CallFailure::MemoryLimit { limit_mib: 64 },
        "{err}"
    );
    // 4 MiB fits in memory but is over the 1 MiB result limit.
    write_sidecar(dir.path(), "huge-output", "[config]\nmib = 4\n");
    host.reload().expect("reload");
    let err = validate_err(&host, "huge-output");
    assert_eq!(err.kind(), "malformed", "{err}");
    assert!(err.to_string().contains("over the limit"), "{err}");
    still_serving(&host);
}

#[test]
fn malformed_json_from_a_plugin_is_a_typed_error() {
    let dir = plugins::plugins_dir(&["bad-json", "stamp-a"]);
    let host = PluginHost::open(dir.path(), &plugins::settings(), false).expect("host");
    let err = validate_err(&host, "bad-json");
    assert_eq!(err.kind(), "malformed", "{err}");
    assert!(err.to_string().contains("fixed is not valid JSON"), "{err}");
    still_serving(&host);
}

#[test]
fn sandbox_denies_files_network_clock_and_randomness() {
    let dir = plugins::plugins_dir(&["open-file", "echo-gate", "stamp-a"]);
    let host = PluginHost::open(dir.path(), &plugins::settings(), false).expect("host");
    let set = host.current();
    let v = set
        .get("open-file")
        .expect("open-file")
        .validate(&ctx(), "{}")
        .expect("answers");
    let codes: Vec<&str> = v.violations.iter().map(|v| v.code.as_str()).collect();
    assert!(codes.contains(&"fs-denied"), "{:?}", v.violations);
    assert!(codes.contains(&"net-denied"), "{:?}", v.violations);
    assert!(
        !v.violations.iter().any(|v| v.message.contains("root:")),
        "file content leaked"
    );

    // The clock reads as the epoch unless granted.
    let action = reins::runtime::Action {
        tool: "t".into(),
        arguments: json!({"a": 1}),
        access: reins::runtime::Access::Write,
    };
    let gate = set.get("echo-gate").expect("echo-gate");
    assert_eq!(
        gate.check(&ctx(), &action).expect("answers"),
        reins::runtime::Decision::Allow
    );
    write_sidecar(dir.path(), "echo-gate", "[grants]\nclock = true\n");
    host.reload().expect("reload");
    let set = host.current();
    let d = set
        .get("echo-gate")
        .expect("echo-gate")
        .check(&ctx(), &action)
        .expect("answers");
    assert_eq!(d, reins::runtime::Decision::Deny("clock granted".into()));
}

#[test]
fn broken_files_are_refused_with_clear_reasons_and_never_stop_the_host() {
    let dir = plugins::plugins_dir(&["stamp-a", "wrong-world"]);
    let d = dir.path();
    std::fs::write(
        d.join("random.wasm"),
        (0..4096u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .expect("write");
    // A core module, not a component.
    std::fs::write(
        d.join("core.wasm"),
        [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    )
    .expect("write");
    plugins::install(d, "stamp-b", "pinned");
    write_sidecar(d, "pinned", &format!("sha256 = \"{}\"\n", "0".repeat(64)));
    plugins::install(d, "stamp-b", "typo");
    write_sidecar(d, "typo", "[limits]\ndeadline = 5\n");
    plugins::install(d, "stamp-b", "off");
    write_sidecar(d, "off", "enabled = false\n");
    plugins::install(d, "stamp-b", "layer-lie");
    write_sidecar(d, "layer-lie", "layer = \"gate\"\n");

    let host = PluginHost::open(d, &plugins::settings(), false).expect("host");
    let statuses = host.statuses();
    let status = |n: &str| {
        statuses
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no status for {n}"))
    };
    let refused = |n: &str, needle: &str| {
        let s = status(n);
        assert_eq!(s.status, "refused", "{n}: {s:?}");
        let e = s.last_error.as_deref().unwrap_or_default();
        assert!(e.contains(needle), "{n}: {e:?} should mention {needle:?}");
    };
    refused("random", "not a WebAssembly component");
    refused("core", "core WebAssembly module");
    refused("wrong-world", "exports no Reins world");
    refused("pinned", "sha256 pin mismatch");
    refused("typo", "deadline");
    refused("layer-lie", "manifest says layer gate");
    assert_eq!(status("off").status, "disabled");
    assert_eq!(status("stamp-a").status, "loaded");
    let set = host.current();
    assert!(set.get("off").is_none() && set.get("random").is_none());
    still_serving(&host);

    // The same checks, one file at a time, as `plugin check` sees them.
    let rt = runtime();
    match rt.load_file(&d.join("wrong-world.wasm")) {
        Err(RuntimeError::UnknownWorld { found, .. }) => assert!(found.contains("run"), "{found}"),
        other => panic!(
            "expected UnknownWorld, got {:?}",
            other.map(|p| p.name().to_string())
        ),
    }
}

#[test]
fn fail_mode_is_read_from_the_manifest() {
    let dir = plugins::plugins_dir(&["panic", "stamp-a"]);
    write_sidecar(dir.path(), "panic", "fail_mode = \"open\"\n");
    let host = PluginHost::open(dir.path(), &plugins::settings(), false).expect("host");
    let set = host.current();
    assert_eq!(
        set.get("panic").expect("panic").fail_mode(),
        reins::runtime::FailMode::Open
    );
    assert_eq!(
        set.get("stamp-a").expect("stamp-a").fail_mode(),
        reins::runtime::FailMode::Closed
    );
}

#[test]
fn calling_the_wrong_layer_is_an_error_not_a_crash() {
    let dir = plugins::plugins_dir(&["stamp-a"]);
    let host = PluginHost::open(dir.path(), &plugins::settings(), false).expect("host");
    let set = host.current();
    let err = set
        .get("stamp-a")
        .expect("stamp-a")
        .tools(&ctx())
        .expect_err("validator has no tools");
    assert_eq!(err.kind(), "wrong_layer");
}
