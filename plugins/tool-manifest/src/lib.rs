//! `tool-manifest`: the tools a request may use come from the operator's
//! config, not from the prompt. Each tool may be limited to some `roles`
//! and `tenants` (of the verified caller); a tool without such a list is
//! for everyone. The model never sees a tool it may not call.
//!
//! Behind the MCP gateway the same config decides which upstream tools
//! (`reins_sdk::upstream_tools()`, `SERVER__TOOL`) are offered: an MCP server
//! advertises everything it can do, and what it advertises may change while
//! the config does not. So by default (`upstream = "listed"`) only the
//! tools named in `tools` are offered; `upstream = "all"` offers every
//! upstream tool except the `hide` globs. An entry named like an upstream
//! tool stands for it and takes its description and schema unless the
//! config gives them; `upstream = "fs__write_file"` offers that tool under
//! the entry's own name. The upstream list is read per call, not at set-up:
//! servers come and go, and a tool whose server is down is left out rather
//! than refused.

use reins_sdk::constraints::{Access, Guest, Tool};
use reins_sdk::{CallContext, Level, describe_value, log};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// The key of a returned tool's `parameters` that tells the host which
/// upstream tool a renamed entry stands for (the host routes by it and
/// strips it before the model sees the schema).
const UPSTREAM_KEY: &str = "x-reins-upstream";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    tools: Vec<ToolConfig>,
    /// `listed` (default) or `all`.
    upstream: Option<String>,
    /// Globs of upstream tools `all` does not offer.
    hide: Option<Vec<String>>,
    /// The access of a tool `all` offers (default `write`): upstream tools
    /// carry no trustworthy grade of their own.
    default_access: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolConfig {
    name: String,
    /// Absent: the upstream tool's, or "" for a tool of the config's own.
    description: Option<String>,
    /// JSON Schema of the arguments: a table, or JSON text. Absent: the
    /// upstream tool's, or any object.
    parameters: Option<Value>,
    /// `read`, `write` or `irreversible`.
    access: String,
    /// The upstream tool (`SERVER__TOOL`) this entry offers under `name`.
    upstream: Option<String>,
    roles: Option<Vec<String>>,
    tenants: Option<Vec<String>>,
}

fn any_object() -> Map<String, Value> {
    let mut schema = Map::new();
    schema.insert("type".into(), Value::String("object".into()));
    schema
}

/// One checked entry of `config.tools`. Description and parameters stay
/// optional here because an absent one is filled from the upstream tool at
/// call time, when it is known whether that tool exists.
struct Entry {
    name: String,
    description: Option<String>,
    parameters: Option<Map<String, Value>>,
    access: Access,
    upstream: Option<String>,
    roles: Option<Vec<String>>,
    tenants: Option<Vec<String>>,
}

enum Mode {
    Listed,
    All { hide: Vec<String>, access: Access },
}

struct Manifest {
    entries: Vec<Entry>,
    mode: Mode,
}

/// The set-up: the config parsed and every tool checked, once (in `init`,
/// or on the first call with this config).
static SETUP: reins_sdk::Setup<Manifest> = reins_sdk::Setup::new();

fn prepare(config_text: &str) -> Result<Manifest, String> {
    let config: Config = reins_sdk::parse_config_text(config_text)?;
    let mut seen = HashSet::new();
    let mut entries = Vec::new();
    for (i, t) in config.tools.into_iter().enumerate() {
        let at = format!("config.tools[{i}]");
        if t.name.trim().is_empty() {
            return Err(format!("{at}.name: must not be empty"));
        }
        if !seen.insert(t.name.clone()) {
            return Err(format!("{at}.name: the tool {:?} is listed twice", t.name));
        }
        let access = Access::parse(&t.access).map_err(|e| format!("{at}.access: {e}"))?;
        let parameters = match t.parameters {
            None => None,
            Some(p) => Some(schema_object(p, &at)?),
        };
        if t.upstream.as_ref().is_some_and(|u| u.trim().is_empty()) {
            return Err(format!(
                "{at}.upstream: must not be empty; write the upstream tool's name (\"SERVER__TOOL\") or leave upstream out"
            ));
        }
        entries.push(Entry {
            name: t.name,
            description: t.description,
            parameters,
            access,
            upstream: t.upstream,
            roles: t.roles,
            tenants: t.tenants,
        });
    }
    let mode = match config.upstream.as_deref() {
        None | Some("listed") => {
            // Ignoring these would offer fewer tools than the operator
            // believes, or grade them differently: say so instead.
            if config.hide.is_some() {
                return Err("config.hide: only applies with upstream = \"all\"; set upstream = \"all\" or remove hide"
                    .to_string());
            }
            if config.default_access.is_some() {
                return Err("config.default_access: only applies with upstream = \"all\"; set upstream = \"all\" \
                            or give each tool its access in config.tools"
                    .to_string());
            }
            Mode::Listed
        }
        Some("all") => {
            let hide = config.hide.unwrap_or_default();
            if let Some(i) = hide.iter().position(|g| g.trim().is_empty()) {
                return Err(format!(
                    "config.hide[{i}]: must not be empty; write a tool name or a glob like \"*__delete*\""
                ));
            }
            let access = match &config.default_access {
                None => Access::Write,
                Some(a) => Access::parse(a).map_err(|e| format!("config.default_access: {e}"))?,
            };
            Mode::All { hide, access }
        }
        Some(other) => {
            return Err(format!(
                "config.upstream: unknown mode {other:?}; write \"listed\" (only the tools in config.tools) \
                 or \"all\" (every upstream tool not hidden)"
            ));
        }
    };
    Ok(Manifest { entries, mode })
}

/// A configured schema: a table, or JSON text (for schemas that TOML
/// cannot write), which must be an object.
fn schema_object(parameters: Value, at: &str) -> Result<Map<String, Value>, String> {
    let parameters = match parameters {
        Value::String(text) => serde_json::from_str::<Value>(&text)
            .map_err(|e| format!("{at}.parameters: the string is not valid JSON: {e}"))?,
        p => p,
    };
    let Value::Object(schema) = parameters else {
        return Err(format!(
            "{at}.parameters: must be a JSON Schema object, got {}",
            describe_value(&parameters)
        ));
    };
    if schema.contains_key(UPSTREAM_KEY) {
        return Err(format!(
            "{at}.parameters: \"{UPSTREAM_KEY}\" is set by the plugin; remove it and write upstream = \"SERVER__TOOL\" \
             in the tool instead"
        ));
    }
    Ok(schema)
}

/// One tool of `upstream-tools`. Only what an offer needs; `server` and
/// `tool` (and whatever a newer host adds) are ignored.
#[derive(Deserialize)]
struct Upstream {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Value,
}

impl Upstream {
    /// The upstream's schema without any routing key: a server must not
    /// steer calls to another tool by advertising `x-reins-upstream`
    /// itself. `None` (and the tool is not offered) for a schema that is
    /// not an object, which no model could be given.
    fn schema(&self) -> Option<Map<String, Value>> {
        match &self.parameters {
            Value::Null => Some(any_object()),
            Value::Object(schema) => {
                let mut schema = schema.clone();
                schema.remove(UPSTREAM_KEY);
                Some(schema)
            }
            other => {
                log(
                    Level::Warn,
                    &format!(
                        "upstream tool {} left out: its parameters are {}, not a JSON Schema object",
                        self.name,
                        describe_value(other)
                    ),
                );
                None
            }
        }
    }
}

/// The upstream tools as the host answers now (an empty answer, from a
/// host without MCP, is none).
fn upstream_tools() -> Result<Vec<Upstream>, String> {
    let text = reins_sdk::upstream_tools();
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&text).map_err(|e| format!("upstream-tools is not a JSON array of tools: {e}"))
}


impl Entry {
    fn visible_to(&self, roles: &[String], tenant: Option<&String>) -> bool {
        self.roles.as_ref().is_none_or(|allowed| roles.iter().any(|r| allowed.contains(r)))
            && self.tenants.as_ref().is_none_or(|allowed| tenant.is_some_and(|t| allowed.contains(t)))
    }

    /// The tool this entry offers now; `None` when the upstream tool it
    /// names is not there (its server may be down: that is no reason to
    /// refuse the whole request).
    fn offer(&self, upstream: &HashMap<&str, &Upstream>) -> Option<Tool> {
        let source = match &self.upstream {
            Some(target) => match upstream.get(target.as_str()) {
                Some(u) => Some(*u),
                None => {
                    log(
                        Level::Debug,
                        &format!("tool {} left out: upstream tool {target} is not available", self.name),
                    );
                    return None;
                }
            },
            None => upstream.get(self.name.as_str()).copied(),
        };
        let description = match (&self.description, source) {
            (Some(d), _) => d.clone(),
            (None, Some(u)) => u.description.clone().unwrap_or_default(),
            (None, None) => String::new(),
        };
        let mut parameters = match (&self.parameters, source) {
            (Some(p), _) => p.clone(),
            (None, Some(u)) => u.schema()?,
            (None, None) => any_object(),
        };
        // An entry bound by `upstream` carries the route (harmless under the
        // same name); one matched by its name is routed by that name.
        if let Some(target) = &self.upstream {
            parameters.insert(UPSTREAM_KEY.into(), Value::String(target.clone()));
        }
        Some(Tool {
            name: self.name.clone(),
            description,
            parameters: Value::Object(parameters).to_string(),
            access: self.access,
        })
    }
}

fn offer(manifest: &Manifest, upstream: &[Upstream], roles: &[String], tenant: Option<&String>) -> Vec<Tool> {
    let by_name: HashMap<&str, &Upstream> = upstream.iter().map(|u| (u.name.as_str(), u)).collect();
    let mut tools: Vec<Tool> = manifest
        .entries
        .iter()
        .filter(|e| e.visible_to(roles, tenant))
        .filter_map(|e| e.offer(&by_name))
        .collect();
    if let Mode::All { hide, access } = &manifest.mode {
        // Every entry claims its name and its upstream tool, whether or not
        // this caller may see it: otherwise an entry limited to managers
        // would hand everyone else the same upstream tool through `all`,
        // and a renamed tool would be offered twice.
        let claimed: HashSet<&str> = manifest
            .entries
            .iter()
            .flat_map(|e| std::iter::once(e.name.as_str()).chain(e.upstream.as_deref()))
            .collect();
        for u in upstream {
            if claimed.contains(u.name.as_str()) || hide.iter().any(|g| reins_sdk::glob_match(g, &u.name)) {
                continue;
            }
            let Some(schema) = u.schema() else { continue };
            tools.push(Tool {
                name: u.name.clone(),
                description: u.description.clone().unwrap_or_default(),
                parameters: Value::Object(schema).to_string(),
                access: *access,
            });
        }
    }
    tools
}

struct ToolManifest;

impl Guest for ToolManifest {
    fn tools(ctx: CallContext) -> Result<Vec<Tool>, String> {
        let manifest = SETUP.get(&ctx.config, prepare)?;
        // Nothing can stand for an upstream tool: skip the import.
        let upstream = if manifest.entries.is_empty() && matches!(manifest.mode, Mode::Listed) {
            Vec::new()
        } else {
            upstream_tools()?
        };
        // The verified caller's roles and tenant, never the body's metadata.
        Ok(offer(&manifest, &upstream, &ctx.caller.roles, ctx.caller.tenant.as_ref()))
    }
}

impl reins_sdk::init::Guest for ToolManifest {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, prepare)
    }
}

reins_sdk::export_init!(ToolManifest);
reins_sdk::export_constraints!(ToolManifest);

#[cfg(test)]
mod tests;
