//! The author's loop, as the docs promise it, for every layer × language:
//! `reins plugin new` → `reins plugin build` → `reins plugin test` passes
//! unchanged. Plus: a missing toolchain is named with how to install it.

mod policies_support;

use policies_support::{install_hint, out_root, reins, text};
use std::path::Path;

const LAYERS: [&str; 5] = ["validator", "normalizer", "gate", "constraints", "context"];

/// Scaffolds, builds and tests one project; returns an error message if any step fails.
fn author_loop(parent: &Path, lang: &str, layer: &str) -> Result<(), String> {
    let name = format!("my-{layer}-{lang}");
    let dir = parent.join(&name);
    let step = |args: &[&str]| -> Result<String, String> {
        let out = reins(args)
            .output()
            .map_err(|e| format!("run reins: {e}"))?;
        let t = text(&out);
        if out.status.success() {
            Ok(t)
        } else {
            Err(format!(
                "`reins {}` failed ({}):\n{t}",
                args.join(" "),
                install_hint(lang)
            ))
        }
    };
    let parent_s = parent.to_string_lossy();
    let created = step(&[
        "plugin", "new", &name, "--layer", layer, "--lang", lang, "--dir", &parent_s,
    ])?;
    for f in [
        "wit/reins.wit",
        "cases.json",
        "README.md",
        "build.sh",
        &format!("{name}.toml"),
    ] {
        if !dir.join(f).is_file() || !created.contains(f) {
            return Err(format!(
                "{name}: `plugin new` did not write {f}:\n{created}"
            ));
        }
    }
    let dir_s = dir.to_string_lossy();
    step(&["plugin", "build", &dir_s])?;
    let wasm = dir.join(format!("{name}.wasm"));
    let cases = dir.join("cases.json");
    let tested = step(&[
        "plugin",
        "test",
        &wasm.to_string_lossy(),
        &cases.to_string_lossy(),
    ])?;
    if !tested.contains(" passed, 0 failed") {
        return Err(format!("{name}: {tested}"));
    }
    let checked = step(&["plugin", "check", &wasm.to_string_lossy()])?;
    if !checked.contains(&format!("layer    {layer}")) || !checked.contains("answered") {
        return Err(format!("{name}: plugin check: {checked}"));
    }
    eprintln!("{name}: new + build + test + check ok");
    Ok(())
}

fn every_layer(lang: &str) {
    let parent = out_root().join("scaffold").join(lang);
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).expect("scaffold dir");
    let failures: Vec<String> = LAYERS
        .iter()
        .filter_map(|layer| author_loop(&parent, lang, layer).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn rust_projects_for_every_layer_build_and_pass_their_cases() {
    every_layer("rust");
}

#[test]
fn python_projects_for_every_layer_build_and_pass_their_cases() {
    every_layer("python");
}

#[test]
fn js_projects_for_every_layer_build_and_pass_their_cases() {
    every_layer("js");
}

#[test]
fn a_missing_toolchain_is_named_with_how_to_install_it() {
    let parent = tempfile::tempdir().expect("tempdir");
    for (lang, var, tool, hint) in [
        (
            "python",
            "REINS_COMPONENTIZE_PY",
            "componentize-py",
            "pip install componentize-py",
        ),
        (
            "js",
            "REINS_COMPONENTIZE_JS",
            "componentize-js",
            "npm install",
        ),
    ] {
        let name = format!("missing-{lang}");
        let new = reins(&[
            "plugin",
            "new",
            &name,
            "--layer",
            "validator",
            "--lang",
            lang,
            "--dir",
        ])
        .arg(parent.path())
        .output()
        .expect("run reins");
        assert!(new.status.success(), "{}", text(&new));
        let out = reins(&["plugin", "build"])
            .arg(parent.path().join(&name))
            .env(var, "/nonexistent/bin/tool")
            .output()
            .expect("run reins");
        let t = text(&out);
        assert!(!out.status.success(), "{t}");
        assert!(
            t.contains(&format!("{tool} not found")) && t.contains(hint),
            "{lang}: {t}"
        );
    }
}

#[test]
fn build_refuses_what_it_cannot_build_and_new_refuses_bad_names() {
    let parent = tempfile::tempdir().expect("tempdir");
    let out = reins(&["plugin", "build"])
        .arg(parent.path())
        .output()
        .expect("run reins");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not a plugin project"),
        "{}",
        text(&out)
    );

    // A Python project whose sidecar does not say its layer.
    let dir = parent.path().join("no-layer");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("app.py"), "").expect("app.py");
    let out = reins(&["plugin", "build"])
        .arg(&dir)
        .output()
        .expect("run reins");
    assert!(text(&out).contains("--layer"), "{}", text(&out));

    let out = reins(&["plugin", "new", "Bad_Name", "--layer", "gate", "--dir"])
        .arg(parent.path())
        .output()
        .expect("run reins");
    assert!(!out.status.success());
    assert!(text(&out).contains("invalid plugin name"), "{}", text(&out));
}
