//! Hot reload under load, in its own test binary so that no other test's
//! compile competes with the watcher for the two cores while it is timed.

use reins::runtime::{CallContext, PluginHost};
use reins_testing::plugins;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn ctx() -> CallContext {
    plugins::call_context(json!({}))
}

#[test]
fn hot_reload_under_load_swaps_versions_without_failing_a_call() {
    let dir = plugins::plugins_dir(&["stamp-a"]);
    let d = dir.path().to_owned();
    let wasm_a = std::fs::read(plugins::wasm_path("stamp-a")).expect("a");
    let wasm_b = std::fs::read(plugins::wasm_path("stamp-b")).expect("b");
    let mut settings = plugins::settings();
    settings.reload_debounce_ms = 20;
    let host = PluginHost::open(&d, &settings, true).expect("host");

    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (host, stop, calls, failures) =
                (host.clone(), stop.clone(), calls.clone(), failures.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let set = host.current();
                    let ok = set
                        .get("stamp-a")
                        .map(|p| p.validate(&ctx(), "{}"))
                        .is_some_and(|r| r.is_ok_and(|v| v.violations.len() == 1));
                    calls.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    let stamp_now = |host: &PluginHost| -> Option<String> {
        let set = host.current();
        let v = set.get("stamp-a")?.validate(&ctx(), "{}").ok()?;
        Some(v.violations[0].message.clone())
    };
    let wait_for = |want: &str| -> Duration {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(1) {
            if stamp_now(&host).as_deref() == Some(want) {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!(
            "version {want} not observed within 1 s; statuses {:?}",
            host.statuses()
        );
    };

    let target = d.join("stamp-a.wasm");
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        if i == 17 || i == 33 {
            // A broken file: refused, and the previous version keeps serving.
            let before = stamp_now(&host).expect("serving");
            std::fs::write(&target, b"\0asm\x0d\0\x01\0 definitely not a component")
                .expect("write");
            let started = Instant::now();
            loop {
                let s = host
                    .statuses()
                    .into_iter()
                    .find(|s| s.name == "stamp-a")
                    .expect("status");
                if s.status == "refused" {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "broken file not noticed: {s:?}"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            assert_eq!(
                stamp_now(&host).as_deref(),
                Some(before.as_str()),
                "old version must keep serving"
            );
        }
        let (bytes, want) = if i % 2 == 0 {
            (&wasm_b, "b")
        } else {
            (&wasm_a, "a")
        };
        // Replace atomically, as deploy tools do.
        let tmp = d.join(".stamp.tmp");
        std::fs::write(&tmp, bytes).expect("write");
        std::fs::rename(&tmp, &target).expect("rename");
        slowest = slowest.max(wait_for(want));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let (reloads, refused) = host.reload_counts();
    eprintln!(
        "calls {} failures {} reloads {reloads} refused {refused} slowest swap {slowest:?}",
        calls.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed)
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "calls failed during reloads"
    );
    assert!(calls.load(Ordering::Relaxed) > 100);
    assert!(reloads >= 50, "expected at least 50 swaps, saw {reloads}");
    assert!(refused >= 2);
}
