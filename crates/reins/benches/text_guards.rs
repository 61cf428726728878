//! Output guardrails for prose: `pii`, `redact-secrets` and `blocklist` on a
//! 2 KB answer, each per call (fresh instance) and pooled, and a text
//! pipeline with all three against the same pipeline with none, in one run
//! (see BENCHMARKS.md).
//!
//! cargo bench -p reins --bench text_guards

use reins::Host;
use reins::pipeline::Request;
use reins::runtime::{CallContext, PluginHost};
use reins_testing::plugins;
use serde_json::json;
use std::hint::black_box;
use std::time::Duration;

/// This bench's sampling: see `reins_testing::bench::median_ns`.
fn measure(f: impl FnMut()) -> f64 {
    let sampling = reins_testing::bench::Sampling {
        warmup: 50,
        batch: 20,
        budget: Duration::from_millis(800),
    };
    reins_testing::bench::median_ns(&sampling, f)
}

/// About 2 KB of support-chat prose; `with_pii` puts an address, a phone
/// number and a card number in it.
fn answer(with_pii: bool) -> String {
    let sentence = "Thanks for reaching out about your order. The parcel left our warehouse this morning and the courier \
                    expects to deliver it within two working days; you will get a tracking link by text message. ";
    let mut text = String::new();
    while text.len() < 2048 {
        text.push_str(sentence);
    }
    if with_pii {
        text.push_str("Write to jane.doe@example.com or call +44 20 7946 0958; the card on file is 4111 1111 1111 1111.");
    }
    text
}

const GUARDS: [&str; 3] = ["pii", "redact-secrets", "blocklist"];

fn main() {
    let dir = plugins::plugins_dir(&GUARDS);
    let d = dir.path();
    for name in GUARDS {
        plugins::install(d, name, &format!("{name}-pooled"));
        let sidecar = std::fs::read_to_string(d.join(format!("{name}.toml"))).expect("sidecar");
        let pooled = sidecar.replace(
            "isolation = \"per-call\"",
            "isolation = \"pooled\"\npool_size = 4\nmax_uses = 1000000",
        );
        std::fs::write(d.join(format!("{name}-pooled.toml")), pooled).expect("pooled sidecar");
    }
    let host = PluginHost::open(d, &plugins::settings(), false).expect("plugins");
    let set = host.current();
    let ctx = CallContext {
        run_id: "bench".into(),
        pipeline: "bench".into(),
        attempt: 1,
        metadata: json!({}),
        ..Default::default()
    };
    let clean = serde_json::to_string(&answer(false)).expect("json");
    let dirty = serde_json::to_string(&answer(true)).expect("json");
    let kb = answer(false).len() as f64 / 1024.0;

    println!(
        "\n2 KB answer ({:.2} KB), one validator call (median):\n",
        kb
    );
    println!("| plugin | isolation | clean answer | µs per KB | answer with PII | µs per KB |");
    println!("|---|---|---:|---:|---:|---:|");
    for name in GUARDS {
        for (isolation, plugin) in [
            ("per-call", name.to_owned()),
            ("pooled", format!("{name}-pooled")),
        ] {
            let p = set
                .get(&plugin)
                .unwrap_or_else(|| panic!("{plugin} not loaded"))
                .clone();
            let time = |input: &str| {
                let (p, ctx, input) = (p.clone(), ctx.clone(), input.to_owned());
                measure(move || {
                    black_box(p.validate(&ctx, black_box(&input)).expect("call"));
                }) / 1000.0
            };
            let (c, x) = (time(&clean), time(&dirty));
            println!(
                "| {name} | {isolation} | {c:.1} µs | {:.1} | {x:.1} µs | {:.1} |",
                c / kb,
                x / kb
            );
        }
    }

    // The whole run: a scripted model answering the 2 KB text, with the three guards or none.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let text = answer(true);
    let config = format!(
        "plugins_dir = {plugins:?}\n[runtime]\ncache_dir = {cache:?}\n[state]\nkind = \"memory\"\n\
         [providers.model]\nkind = \"scripted\"\nresponses = [{text:?}]\n\
         [pipelines.bare]\nmodel = \"model\"\noutput = \"text\"\n\
         [pipelines.guarded]\nmodel = \"model\"\noutput = \"text\"\n\
         validators = [{{ plugin = \"pii-pooled\", on_fail = \"fix\" }}, {{ plugin = \"redact-secrets-pooled\", on_fail = \"fix\" }}, \"blocklist-pooled\"]\n",
        plugins = d.display().to_string(),
        cache = plugins::settings()
            .resolved_cache_dir()
            .display()
            .to_string(),
    );
    let host = rt
        .block_on(Host::builder().config_str(config, d).build())
        .expect("host");
    let run = |pipeline: &str| {
        let pipeline = pipeline.to_owned();
        measure(|| {
            let r = rt.block_on(host.run(&pipeline, Request::text("where is my parcel?")));
            assert_eq!(
                r.status,
                reins::pipeline::RunStatus::Completed,
                "{:?}",
                r.error
            );
            black_box(r);
        }) / 1000.0
    };
    let bare = run("bare");
    let guarded = run("guarded");
    println!(
        "\nA text run on the 2 KB answer with PII (scripted model, in-memory state; median):\n"
    );
    println!("| pipeline | µs per run | ratio |");
    println!("|---|---:|---:|");
    println!("| no validators | {bare:.0} | 1.00 |");
    println!(
        "| pii + redact-secrets (fix) + blocklist, pooled | {guarded:.0} | {:.2} |",
        guarded / bare
    );
}
