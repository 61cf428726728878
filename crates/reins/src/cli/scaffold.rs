//! `reins plugin new`: writes a ready plugin project for one layer in one
//! language, from the templates in `host/templates/` (embedded at build
//! time). The project builds with `reins plugin build` (or its own
//! `build.sh`) and passes `reins plugin test NAME.wasm cases.json` unchanged.

use anyhow::{Context, bail};
use clap::ValueEnum;
use std::path::{Path, PathBuf};

/// The languages `plugin new` and `plugin build` know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }
}

/// The layers, as `--layer` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayerArg {
    Validator,
    Normalizer,
    Gate,
    Constraints,
    Context,
}

impl LayerArg {
    /// The name used in sidecars (`layer = "..."`) and WIT worlds.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerArg::Validator => "validator",
            LayerArg::Normalizer => "normalizer",
            LayerArg::Gate => "gate",
            LayerArg::Constraints => "constraints",
            LayerArg::Context => "context",
        }
    }

    pub fn world(self) -> String {
        format!("{}-plugin", self.as_str())
    }
}

pub const WIT: &str = include_str!("../../../../wit/reins.wit");
pub const PYTHON_SDK: &str = include_str!("../../../../sdk/python/reins_sdk.py");
pub const JS_SDK: &str = include_str!("../../../../sdk/js/reins.js");

const README: &str = include_str!("../../templates/common/README.md");
const GITIGNORE: &str = include_str!("../../templates/common/gitignore");
const CONFIGS: &str = include_str!("../../templates/config.toml");

const RUST_CARGO: &str = include_str!("../../templates/rust/Cargo.toml");
/// Pins the versions the template was tested with (wit-bindgen 0.63 builds on Rust 1.95).
const RUST_LOCK: &str = include_str!("../../templates/rust/Cargo.lock");
const RUST_COMMON: &str = include_str!("../../templates/rust/common.rs");
const RUST_BUILD: &str = include_str!("../../templates/rust/build.sh");
const RUST_SIDECAR: &str = include_str!("../../templates/rust/sidecar.toml");
const PY_BUILD: &str = include_str!("../../templates/python/build.sh");
const PY_SIDECAR: &str = include_str!("../../templates/python/sidecar.toml");
const JS_BUILD: &str = include_str!("../../templates/js/build.sh");
const JS_SIDECAR: &str = include_str!("../../templates/js/sidecar.toml");
const JS_PACKAGE: &str = include_str!("../../templates/js/package.json");

/// The code template of one layer in one language.
fn code(lang: Lang, layer: LayerArg) -> &'static str {
    use LayerArg::*;
    match (lang, layer) {
        (Lang::Rust, Validator) => include_str!("../../templates/rust/validator.rs"),
        (Lang::Rust, Normalizer) => include_str!("../../templates/rust/normalizer.rs"),
        (Lang::Rust, Gate) => include_str!("../../templates/rust/gate.rs"),
        (Lang::Rust, Constraints) => include_str!("../../templates/rust/constraints.rs"),
        (Lang::Rust, Context) => include_str!("../../templates/rust/context.rs"),
        (Lang::Python, Validator) => include_str!("../../templates/python/validator.py"),
        (Lang::Python, Normalizer) => include_str!("../../templates/python/normalizer.py"),
        (Lang::Python, Gate) => include_str!("../../templates/python/gate.py"),
        (Lang::Python, Constraints) => include_str!("../../templates/python/constraints.py"),
        (Lang::Python, Context) => include_str!("../../templates/python/context.py"),
        (Lang::Js, Validator) => include_str!("../../templates/js/validator.js"),
        (Lang::Js, Normalizer) => include_str!("../../templates/js/normalizer.js"),
        (Lang::Js, Gate) => include_str!("../../templates/js/gate.js"),
        (Lang::Js, Constraints) => include_str!("../../templates/js/constraints.js"),
        (Lang::Js, Context) => include_str!("../../templates/js/context.js"),
    }
}

fn cases(layer: LayerArg) -> &'static str {
    match layer {
        LayerArg::Validator => include_str!("../../templates/cases/validator.json"),
        LayerArg::Normalizer => include_str!("../../templates/cases/normalizer.json"),
        LayerArg::Gate => include_str!("../../templates/cases/gate.json"),
        LayerArg::Constraints => include_str!("../../templates/cases/constraints.json"),
        LayerArg::Context => include_str!("../../templates/cases/context.json"),
    }
}

/// The `[config]` section for `layer` from `templates/config.toml`.
fn config_section(layer: LayerArg) -> String {
    let marker = format!("#--- {}", layer.as_str());
    let Some(start) = CONFIGS.find(&marker) else {
        return "[config]\n".to_string();
    };
    let body = &CONFIGS[start + marker.len()..];
    let end = body.find("#--- ").unwrap_or(body.len());
    body[..end].trim_start_matches('\n').to_string()
}

/// Whether `name` can be a plugin, file and crate name: lowercase ASCII
/// letters, digits and single hyphens, starting with a letter.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Writes the project `parent/name` and returns its directory and files.
pub fn scaffold(
    parent: &Path,
    name: &str,
    layer: LayerArg,
    lang: Lang,
) -> anyhow::Result<(PathBuf, Vec<String>)> {
    if !valid_name(name) {
        bail!(
            "invalid plugin name {name:?}: use lowercase letters, digits and hyphens, starting with a letter (e.g. `refund-guard`)"
        );
    }
    let dir = parent.join(name);
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} already exists and is not empty", dir.display());
    }
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{name_snake}}", &name.replace('-', "_"))
            .replace("{{layer}}", layer.as_str())
            .replace("{{world}}", &layer.world())
            .replace("{{lang_name}}", lang.name())
    };
    let sidecar = |header: &str| format!("{}\n{}", fill(header), config_section(layer));
    let mut files: Vec<(String, String)> = vec![
        ("wit/reins.wit".into(), WIT.to_string()),
        (format!("{name}.toml"), String::new()),
        ("cases.json".into(), cases(layer).to_string()),
        (".gitignore".into(), GITIGNORE.to_string()),
    ];
    let (table, tool, notes) = match lang {
        Lang::Rust => {
            files[1].1 = sidecar(RUST_SIDECAR);
            files.push(("Cargo.toml".into(), fill(RUST_CARGO)));
            files.push(("Cargo.lock".into(), fill(RUST_LOCK)));
            files.push((
                "src/lib.rs".into(),
                format!("{}{}", fill(code(lang, layer)), RUST_COMMON),
            ));
            files.push(("build.sh".into(), fill(RUST_BUILD)));
            (
                "| `src/lib.rs` | the plugin (wit-bindgen bindings of `wit/reins.wit`) |\n| `Cargo.toml` | a standalone crate; `cdylib` for `wasm32-wasip2` |\n",
                "cargo, target wasm32-wasip2",
                "- Needs `rustup target add wasm32-wasip2`. A panic aborts: the host sees a trap.\n",
            )
        }
        Lang::Python => {
            files[1].1 = sidecar(PY_SIDECAR);
            files.push(("app.py".into(), fill(code(lang, layer))));
            files.push(("reins_sdk.py".into(), PYTHON_SDK.to_string()));
            files.push(("build.sh".into(), fill(PY_BUILD)));
            (
                "| `app.py` | the plugin |\n| `reins_sdk.py` | the Reins Python SDK (a copy of `sdk/python/reins_sdk.py`) |\n",
                "componentize-py",
                "- Needs `pip install componentize-py==0.25.1`. The standard library is there (`json`, `re`, ...); pure-Python packages can be vendored next to `app.py`.\n- The component is ~18 MB: the host compiles it once (seconds) and caches the result; a reload keeps the old version serving until the new one is ready.\n",
            )
        }
        Lang::Js => {
            files[1].1 = sidecar(JS_SIDECAR);
            files.push(("app.js".into(), fill(code(lang, layer))));
            files.push(("reins.js".into(), JS_SDK.to_string()));
            files.push(("package.json".into(), fill(JS_PACKAGE)));
            files.push(("build.sh".into(), fill(JS_BUILD)));
            (
                "| `app.js` | the plugin (an ES module) |\n| `reins.js` | the Reins JavaScript SDK (a copy of `sdk/js/reins.js`) |\n| `package.json` | lists componentize-js; `npm install` before the first build |\n",
                "componentize-js",
                "- Needs `npm install` here (componentize-js). Imports must stay inside this directory. No `fetch`: the host offers no HTTP.\n- The component is ~12 MB: the host compiles it once (seconds) and caches the result; a reload keeps the old version serving until the new one is ready.\n",
            )
        }
    };
    let readme = fill(README)
        .replace("{{files}}", table)
        .replace("{{tool}}", tool)
        .replace("{{notes}}", notes);
    files.push(("README.md".into(), readme));

    let mut written = Vec::new();
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        if rel.ends_with(".sh") {
            make_executable(&path)?;
        }
        written.push(rel.clone());
    }
    Ok((dir, written))
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("refund-guard"));
        assert!(valid_name("a1"));
        for bad in ["", "Refund", "-a", "a-", "a--b", "a_b", "1a", "a b", "a/b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn every_layer_has_a_config_section_and_parseable_cases() {
        for layer in LayerArg::value_variants() {
            let section = config_section(*layer);
            assert!(section.starts_with("[config]"), "{layer:?}: {section}");
            assert!(!section.contains("#---"), "{layer:?}: {section}");
            let cases: serde_json::Value =
                serde_json::from_str(cases(*layer)).expect("cases parse");
            assert!(cases.as_array().is_some_and(|c| !c.is_empty()));
        }
    }

    #[test]
    fn sidecars_parse_as_manifests_of_their_layer() {
        for lang in Lang::value_variants() {
            for layer in LayerArg::value_variants() {
                let dir = tempfile::tempdir().expect("tempdir");
                let (project, files) =
                    scaffold(dir.path(), "my-policy", *layer, *lang).expect("scaffold");
                assert!(files.iter().any(|f| f == "README.md"));
                let path = project.join("my-policy.toml");
                let text = std::fs::read_to_string(&path).expect("sidecar");
                let m = crate::runtime::Manifest::parse(&text, &path).expect("sidecar parses");
                assert_eq!(m.layer.map(|l| l.as_str()), Some(layer.as_str()));
                let again = scaffold(dir.path(), "my-policy", *layer, *lang);
                assert!(again.is_err(), "refuses to overwrite");
            }
        }
    }
}
