//! `reins plugin build [DIR]`: builds a plugin project with its language's
//! tool and writes `NAME.wasm` (atomically, so a watched plugins directory
//! never sees half a file).
//!
//! | project has | tool | command |
//! |---|---|---|
//! | `Cargo.toml` | cargo | `cargo build --release --target wasm32-wasip2` |
//! | `app.py` / `pyproject.toml` | componentize-py | `componentize-py -d WIT -w WORLD componentize app -p DIR -p SDK -o OUT` |
//! | `package.json` / `app.js` | componentize-js | `componentize-js --wit WIT --world-name WORLD -d http fetch-event -o OUT app.js` |
//!
//! Python and JavaScript need the world, so the layer comes from `--layer` or
//! the sidecar's `layer = "..."`; code that exports `init` (calls the SDK's
//! `reins.init(...)`) gets the layer's `-init` world. WIT is the project's `wit/` if it has one,
//! else the copy built into this binary; the Python SDK (`reins_sdk`) is put
//! on the path after the project's own directory.

use super::scaffold::{Lang, LayerArg, PYTHON_SDK, WIT};
use crate::runtime::Manifest;
use anyhow::{Context, anyhow, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// What `plugin build` produced.
pub struct Built {
    pub wasm: PathBuf,
    pub lang: Lang,
    pub seconds: f64,
    pub bytes: u64,
}

/// Which language a project directory is written in.
pub fn detect(dir: &Path) -> anyhow::Result<Lang> {
    if dir.join("Cargo.toml").is_file() {
        Ok(Lang::Rust)
    } else if dir.join("app.py").is_file() || dir.join("pyproject.toml").is_file() {
        Ok(Lang::Python)
    } else if dir.join("package.json").is_file() || dir.join("app.js").is_file() {
        Ok(Lang::Js)
    } else {
        bail!(
            "{}: not a plugin project (no Cargo.toml, app.py or package.json/app.js); create one with `reins plugin new`",
            dir.display()
        )
    }
}

/// Builds the project in `dir` into `out_dir/NAME.wasm` (and copies the
/// sidecar there when `out_dir` is another directory).
pub fn build(
    dir: &Path,
    name: Option<&str>,
    layer: Option<LayerArg>,
    out_dir: Option<&Path>,
) -> anyhow::Result<Built> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{}: no such project directory", dir.display()))?;
    let lang = detect(&dir)?;
    let name = match name {
        Some(n) => n.to_string(),
        None => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                anyhow!(
                    "{}: cannot name the plugin after this directory; pass --name",
                    dir.display()
                )
            })?,
    };
    let out_dir = match out_dir {
        Some(o) => {
            std::fs::create_dir_all(o).with_context(|| format!("creating {}", o.display()))?;
            o.canonicalize()?
        }
        None => dir.clone(),
    };
    let sidecar = dir.join(format!("{name}.toml"));
    let started = Instant::now();
    let scratch = Scratch::new()?;
    let tmp_out = scratch.path().join(format!("{name}.wasm"));
    match lang {
        Lang::Rust => build_rust(&dir, &tmp_out)?,
        Lang::Python => {
            let world = with_init(world(&dir, &sidecar, layer)?, &dir.join("app.py"));
            build_python(&dir, &world, scratch.path(), &tmp_out)?
        }
        Lang::Js => {
            let world = with_init(world(&dir, &sidecar, layer)?, &js_entry(&dir)?);
            build_js(&dir, &world, scratch.path(), &tmp_out)?
        }
    }
    let bytes = std::fs::metadata(&tmp_out)
        .with_context(|| format!("the {} build wrote no component", lang.name()))?
        .len();
    if out_dir != dir && sidecar.is_file() {
        // The sidecar first: a watcher that sees the new .wasm also sees its limits.
        install(&sidecar, &out_dir.join(format!("{name}.toml")))?;
    }
    let wasm = out_dir.join(format!("{name}.wasm"));
    install(&tmp_out, &wasm)?;
    Ok(Built {
        wasm,
        lang,
        seconds: started.elapsed().as_secs_f64(),
        bytes,
    })
}

/// A private temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("reins-build-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies `from` next to `to` under a temporary name, then renames it over `to`.
fn install(from: &Path, to: &Path) -> anyhow::Result<()> {
    let tmp = to.with_extension(format!("partial{}", std::process::id()));
    std::fs::copy(from, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("writing {}", to.display()))
}

/// The WIT world of a Python/JS project: `--layer`, else the sidecar's `layer`.
fn world(dir: &Path, sidecar: &Path, layer: Option<LayerArg>) -> anyhow::Result<String> {
    if let Some(l) = layer {
        return Ok(l.world());
    }
    let declared = match std::fs::read_to_string(sidecar) {
        Ok(text) => Manifest::parse(&text, sidecar)?.layer,
        Err(_) => None,
    };
    declared.map(|l| l.world().to_string()).ok_or_else(|| {
        anyhow!(
            "cannot tell which layer {} implements: add `layer = \"validator\"` (or normalizer, gate, constraints, context) to {} or pass --layer",
            dir.display(),
            sidecar.display()
        )
    })
}

/// A project whose code exports `init` (it calls the SDK's `reins.init(...)`)
/// builds against the layer's `-init` world, which adds that export.
fn with_init(world: String, source: &Path) -> String {
    let code = std::fs::read_to_string(source).unwrap_or_default();
    if code.contains("reins.init(") {
        format!("{world}-init")
    } else {
        world
    }
}

/// The project's `wit/` directory, or the built-in WIT written to `scratch`.
fn wit_dir(dir: &Path, scratch: &Path) -> anyhow::Result<PathBuf> {
    let own = dir.join("wit");
    if own.is_dir() {
        return Ok(own);
    }
    let wit = scratch.join("wit");
    std::fs::create_dir_all(&wit)?;
    std::fs::write(wit.join("reins.wit"), WIT)?;
    Ok(wit)
}

/// Runs `cmd`, naming `tool` and how to install it if it cannot be started.
fn run(
    mut cmd: Command,
    tool: &str,
    install_hint: &str,
    show_stdout: bool,
) -> anyhow::Result<std::process::Output> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("{tool} not found: {install_hint}")
        } else {
            anyhow!("cannot run {tool}: {e}")
        }
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = if show_stdout {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            String::new()
        };
        bail!(
            "{tool} failed ({}):{}{}",
            out.status,
            tail(&stdout, 20),
            tail(&stderr, 60)
        );
    }
    Ok(out)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    let mut s = all[from..].join("\n");
    if !s.is_empty() {
        s.insert(0, '\n');
    }
    s
}

const PY_HINT: &str = "install it with `pip install componentize-py==0.25.1` (or set REINS_COMPONENTIZE_PY to its path)";
const JS_HINT: &str = "run `npm install` in the project (its package.json lists @bytecodealliance/componentize-js), or `npm install -g @bytecodealliance/componentize-js@0.23.0`, or set REINS_COMPONENTIZE_JS to its path";

fn build_python(dir: &Path, world: &str, scratch: &Path, out: &Path) -> anyhow::Result<()> {
    if !dir.join("app.py").is_file() {
        bail!(
            "{}: a Python plugin's code is app.py (the module componentize-py wraps)",
            dir.display()
        );
    }
    let tool =
        std::env::var_os("REINS_COMPONENTIZE_PY").unwrap_or_else(|| "componentize-py".into());
    let sdk = scratch.join("sdk");
    std::fs::create_dir_all(&sdk)?;
    std::fs::write(sdk.join("reins_sdk.py"), PYTHON_SDK)?;
    let mut cmd = Command::new(&tool);
    cmd.current_dir(dir)
        .arg("-q")
        .arg("-d")
        .arg(wit_dir(dir, scratch)?)
        .args(["-w", world, "componentize", "app", "-p"])
        .arg(dir)
        .arg("-p")
        .arg(&sdk)
        .arg("-o")
        .arg(out);
    run(cmd, "componentize-py", PY_HINT, true).map(|_| ())
}

fn build_js(dir: &Path, world: &str, scratch: &Path, out: &Path) -> anyhow::Result<()> {
    let entry = js_entry(dir)?;
    let tool =
        find_componentize_js(dir).ok_or_else(|| anyhow!("componentize-js not found: {JS_HINT}"))?;
    if on_path("node").is_none() {
        bail!(
            "node not found: componentize-js runs on Node.js (>= 18); install it (Debian: `apt-get install nodejs npm`)"
        );
    }
    // componentize-js lets the code import only files under its working
    // directory: run it from the project's repository root (or the project).
    let root = repo_root(dir).unwrap_or_else(|| dir.to_owned());
    let rel = entry.strip_prefix(&root).unwrap_or(&entry).to_owned();
    let mut cmd = Command::new(&tool);
    cmd.current_dir(&root)
        .arg("--wit")
        .arg(wit_dir(dir, scratch)?)
        .args(["--world-name", world, "-d", "http", "fetch-event", "-o"])
        .arg(out)
        .arg(rel);
    run(cmd, "componentize-js", JS_HINT, true).map(|_| ())
}

/// `app.js`, or the `main` of package.json.
fn js_entry(dir: &Path) -> anyhow::Result<PathBuf> {
    let app = dir.join("app.js");
    if app.is_file() {
        return Ok(app);
    }
    let text = std::fs::read_to_string(dir.join("package.json")).unwrap_or_default();
    let main = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("main").and_then(|m| m.as_str()).map(str::to_string));
    match main.map(|m| dir.join(m)).filter(|p| p.is_file()) {
        Some(p) => Ok(p),
        None => bail!(
            "{}: a JavaScript plugin's code is app.js (or package.json's \"main\")",
            dir.display()
        ),
    }
}

fn repo_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|a| a.join(".git").exists())
        .map(Path::to_owned)
}

/// REINS_COMPONENTIZE_JS, then node_modules/.bin of the project and its
/// parents, then the Reins repository's `sdk/js` (when this binary was built
/// from one), then PATH.
fn find_componentize_js(dir: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REINS_COMPONENTIZE_JS") {
        return Some(PathBuf::from(p));
    }
    let bin = Path::new("node_modules/.bin/componentize-js");
    if let Some(found) = dir.ancestors().map(|a| a.join(bin)).find(|p| p.is_file()) {
        return Some(found);
    }
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../sdk/js")
        .join(bin);
    if bundled.is_file() {
        return Some(bundled);
    }
    on_path("componentize-js")
}

fn on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn build_rust(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    if let Ok(o) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        && o.status.success()
        && !String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.trim() == "wasm32-wasip2")
    {
        bail!(
            "the Rust target wasm32-wasip2 is not installed: run `rustup target add wasm32-wasip2`"
        );
    }
    let manifest = dir.join("Cargo.toml");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stderr(Stdio::inherit());
    let output = run(
        cmd,
        "cargo",
        "install Rust (https://rustup.rs) and `rustup target add wasm32-wasip2`",
        false,
    )?;
    // The artifact of this package's cdylib, wherever the target dir is.
    let wanted = manifest.canonicalize().unwrap_or(manifest);
    let mut found = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let same = msg["manifest_path"]
            .as_str()
            .and_then(|p| Path::new(p).canonicalize().ok())
            .is_some_and(|p| p == wanted);
        let cdylib = msg["target"]["crate_types"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "cdylib"));
        if same && cdylib {
            found = msg["filenames"]
                .as_array()
                .and_then(|f| {
                    f.iter()
                        .filter_map(|f| f.as_str())
                        .find(|f| f.ends_with(".wasm"))
                })
                .map(PathBuf::from);
        }
    }
    let wasm = found.ok_or_else(|| {
        anyhow!(
            "cargo built no .wasm for {}: the package needs `[lib] crate-type = [\"cdylib\"]`",
            wanted.display()
        )
    })?;
    std::fs::copy(&wasm, out).with_context(|| format!("copying {}", wasm.display()))?;
    Ok(())
}
