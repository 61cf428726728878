//! Shared by the `policies_*` tests: builds plugin projects with the real
//! `reins plugin build` (so the tests exercise the author's tool), once per
//! test binary, into `target/policies/`.
#![allow(dead_code)]

use reins_testing::plugins;
use reins_testing::plugins::repo_root;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Where these tests put what they build (never committed).
pub fn out_root() -> PathBuf {
    repo_root().join("target/policies")
}

/// `reins ARGS` with a compile cache shared by this test run, so a
/// component compiled once (seconds for Python/JS) is deserialized after.
pub fn reins(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reins"));
    cmd.args(args)
        .env(
            "XDG_CACHE_HOME",
            repo_root().join("target/policies/xdg-cache"),
        )
        // Rust projects share one target dir: dependencies compile once.
        .env(
            "CARGO_TARGET_DIR",
            repo_root().join("target/policies/cargo"),
        );
    cmd
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// How to get the tool a language needs, for failure messages.
pub fn install_hint(lang: &str) -> &'static str {
    match lang {
        "python" => {
            "install componentize-py: `pip install componentize-py==0.25.1` (scripts/test.sh does)"
        }
        "js" => "install componentize-js: `npm ci --prefix sdk/js` (scripts/test.sh does)",
        _ => "install the guest target: `rustup target add wasm32-wasip2` (scripts/test.sh does)",
    }
}

/// `reins plugin build DIR --out OUT`; panics with the tool's message (which
/// names the missing tool and how to install it) if the build fails.
pub fn build(lang: &str, dir: &Path, out: &Path) -> PathBuf {
    let started = Instant::now();
    let result = reins(&["plugin", "build"])
        .arg(dir)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run reins plugin build");
    assert!(
        result.status.success(),
        "reins plugin build {} failed ({}):\n{}",
        dir.display(),
        install_hint(lang),
        text(&result)
    );
    let name = dir.file_name().expect("project dir name").to_string_lossy();
    let wasm = out.join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "no {} after the build", wasm.display());
    eprintln!(
        "built {} in {:.1} s",
        wasm.display(),
        started.elapsed().as_secs_f64()
    );
    wasm
}

/// The example policies, by language and name.
pub const LANGS: [&str; 3] = ["rust", "python", "js"];
pub const EXAMPLES: [&str; 2] = ["pii-redaction", "no-unreleased-products"];

/// Builds every example in `examples/policies/` (once per test binary; the
/// three languages in parallel) and returns `target/policies/examples/LANG/`.
pub fn examples_dir(lang: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    static FAILED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    BUILT.get_or_init(|| {
        std::thread::scope(|s| {
            for lang in LANGS {
                s.spawn(move || {
                    for name in EXAMPLES {
                        let dir = repo_root().join("examples/policies").join(lang).join(name);
                        let out = out_root().join("examples").join(lang);
                        let r = std::panic::catch_unwind(|| build(lang, &dir, &out));
                        if let Err(e) = r {
                            let msg = e
                                .downcast_ref::<String>()
                                .cloned()
                                .unwrap_or_else(|| "build panicked".into());
                            FAILED.lock().unwrap_or_else(|p| p.into_inner()).push(msg);
                        }
                    }
                });
            }
        });
    });
    let failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        failed.is_empty(),
        "building the examples failed:\n{}",
        failed.join("\n\n")
    );
    static COMPILED: OnceLock<()> = OnceLock::new();
    COMPILED.get_or_init(|| {
        // Compile each component once into the tests' shared cache, so the
        // tests that load them in parallel deserialize instead of all
        // compiling the same 12-18 MB at once.
        let runtime = reins::runtime::Runtime::new(&plugins::settings()).expect("runtime");
        for lang in LANGS {
            for name in EXAMPLES {
                let wasm = out_root()
                    .join("examples")
                    .join(lang)
                    .join(format!("{name}.wasm"));
                let started = Instant::now();
                let p = runtime
                    .load_file(&wasm)
                    .unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
                eprintln!(
                    "compiled {lang}/{name} in {:.1} s (cached: {})",
                    started.elapsed().as_secs_f64(),
                    p.info().compile_cached
                );
            }
        }
    });
    out_root().join("examples").join(lang)
}

/// The Python twin of the `stamp-a` fixture, built once.
pub fn python_stamp() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = repo_root().join("crates/reins/tests/policies_support/stamp-python");
            build("python", &dir, &out_root().join("fixtures"))
        })
        .clone()
}
